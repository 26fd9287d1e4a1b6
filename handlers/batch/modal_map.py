"""Modal-native bulk: the GPU class's ``run`` mapped over a JSONL file of jobs.

``modal run modal_app.py::batch --jobs jobs.jsonl [--max-containers 10] [--results out.jsonl]``
hands the whole list to Modal's ``map`` (``return_exceptions=True``: one crashed input does not
stop the map), so Modal's own input queue and autoscaler (capped by ``--max-containers``, through
``MaskPaint.with_options``) do the scheduling that ``handlers.batch.loop`` does by hand for
HTTP targets. The results file has the same lines as the CLI's, so either can resume the other's
JSONL batch (both key the worker's record by ``input.idempotency_key``).

Provider-neutral on purpose: :func:`run_mapped` takes anything with ``.map(inputs, ids,
return_exceptions=..., order_outputs=...)``, so it is tested without a Modal account.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

from handlers.batch.jobs import BatchError, ResultsFile, pending_jobs, read_jsonl
from handlers.batch.loop import _without_inline
from handlers.batch.summary import summarize

#: Exception class names (Modal's, by name: this module must not need ``modal``) that mean the
#: input ran out of time; any other exception is ``internal`` (a crash), both retryable.
_TIMEOUTS = {"FunctionTimeoutError", "TimeoutError", "InputCancellation"}


class Mappable(Protocol):
    """A Modal method (``MaskPaint().run``) or a stand-in with the same ``map``."""

    def map(self, *iterables: Any, return_exceptions: bool = False,
            order_outputs: bool = True) -> Any: ...


def _error_of_exception(exc: BaseException) -> dict:
    code = "timeout" if type(exc).__name__ in _TIMEOUTS else "internal"
    return {"code": code, "message": f"{type(exc).__name__} on Modal (see the app's logs)",
            "field": None, "retryable": True}


def run_mapped(run: Mappable, jobs_path: Path, results_path: Path | None = None, *,
               price_per_s: float = 0.0, progress: bool = True) -> dict:
    """Map ``run`` over the jobs of ``jobs_path`` not yet settled in the results file.

    Args:
        run: the GPU class's method (``MaskPaint.with_options(max_containers=n)().run``).
        jobs_path: JSONL of job inputs (``handlers.batch.jobs.read_jsonl``).
        results_path: default ``<jobs>.results.jsonl``.
        price_per_s: cost of one GPU second, for the summary.
        progress: show a tqdm bar on stderr.

    Returns:
        The summary (``handlers.batch.summary.summarize``). Lines are written as results
        arrive (in input order), so an interrupted map keeps what finished before it.

    Raises:
        BatchError: unreadable jobs file, or a results file of a templated batch.
    """
    jobs, problems = read_jsonl(jobs_path)
    results = ResultsFile(results_path or jobs_path.with_suffix(".results.jsonl"), None)
    todo = pending_jobs(jobs, results.load())
    if not jobs:
        raise BatchError(f"no job in {jobs_path}")
    from tqdm import tqdm

    counts = {"to_run": len(todo), "done": 0, "failed": 0}
    t0 = time.monotonic()
    inputs = [{"id": j.id, "input": {**j.input, "idempotency_key": j.id}} for j in todo]
    outputs = run.map(inputs, [j.id for j in todo], return_exceptions=True, order_outputs=True)
    with tqdm(total=len(todo), unit="job", disable=not progress or None) as bar:
        for job, out in zip(todo, outputs):
            rec: dict[str, Any] = {"id": job.id, "source": job.source, "attempts": 1,
                                   "latency_ms": round((time.monotonic() - t0) * 1000)}
            if isinstance(out, BaseException):
                rec.update(status="failed", error=_error_of_exception(out))
            elif isinstance(out, dict) and isinstance(out.get("error"), dict):
                rec.update(status="failed", error=out["error"])
            elif isinstance(out, dict):
                rec.update(status="done", output=_without_inline(out))
            else:
                rec.update(status="failed", error={"code": "internal", "field": None,
                                                   "message": "no result", "retryable": True})
            results.append(rec)
            counts[rec["status"]] += 1
            bar.update(1)
            bar.set_postfix(done=counts["done"], failed=counts["failed"], refresh=False)
    return summarize(jobs, results.load(), problems, price_per_s=price_per_s, this_run=counts)
