"""The batch loop, provider-neutral: bounded concurrency, retries, progress, Ctrl-C.

``concurrency`` threads each take the next job, submit it through the target's adapter, wait for
its end and append its results line. A job that fails with ``retryable: true`` (``gpu_oom``,
``timeout``, a 5xx that outlived the HTTP retries, ...) is submitted again, with the same id,
after a jittered exponential backoff, up to ``max_attempts``; other failures are recorded at once.

Why threads and a hand-written loop: each job is two blocking HTTP calls and a wait, and the
loop must write a line per job as it ends, stop submitting on Ctrl-C and cancel what is in
flight; ``concurrent.futures`` would hold finished jobs back until its iterator reaches them and
cannot interrupt a wait. On Ctrl-C (or :meth:`Batch.stop`) no new job starts, each waiting
thread asks the provider to cancel its job, and jobs that end meanwhile are still written.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from handlers.batch.jobs import BatchError, BatchJob, ResultsFile

log = logging.getLogger("maskpaint.batch")


@dataclass
class Outcome:
    """How one attempt ended: ``done`` (``output`` = the JobResult), ``failed`` (``error`` =
    ``{code, message, field, retryable}``) or ``cancelled``."""

    status: str
    output: dict | None = None
    error: dict | None = None


class Target(Protocol):
    """One provider's job API, as the loop needs it (see ``runpod_target``, ``web_target``)."""

    #: Shown in the summary (``runpod``, ``web``).
    name: str

    def check(self) -> None:
        """Fail fast before anything is submitted. Raises BatchError (unreachable, bad key)."""
        ...

    def submit(self, job: BatchJob, attempt: int) -> str | Outcome:
        """Queue one attempt; the provider's handle, or an Outcome when it refused the job."""
        ...

    def wait(self, handle: str, stop: threading.Event) -> Outcome:
        """Poll until the job ends; once ``stop`` is set, cancel it and return ``cancelled``."""
        ...


@dataclass
class Counts:
    """Live counters for the progress bar (guarded by the batch's lock)."""

    done: int = 0
    failed: int = 0
    in_flight: int = 0
    cancelled: int = 0
    retries: int = 0


def backoff_s(attempt: int, base_s: float = 1.0, cap_s: float = 30.0,
              rng: Callable[[], float] = random.random) -> float:
    """"Full jitter" backoff before resubmit ``attempt`` (1 = first retry), s: uniform in
    [0, min(cap, base * 2**(attempt-1))] (AWS Architecture Blog, "Exponential Backoff And
    Jitter")."""
    return rng() * min(cap_s, base_s * 2 ** (attempt - 1))


@dataclass
class Batch:
    """One run over ``jobs`` to ``target``, writing ``results``.

    Args:
        max_attempts: submits per job in all (retryable failures only).
        on_change: called (under no lock) after each counter change, e.g. to redraw a bar.
        retry_base_s, retry_cap_s: the resubmit backoff (:func:`backoff_s`).
    """

    target: Target
    results: ResultsFile
    concurrency: int = 8
    max_attempts: int = 3
    retry_base_s: float = 1.0
    retry_cap_s: float = 30.0
    on_change: Callable[[Counts], None] | None = None
    counts: Counts = field(default_factory=Counts)
    records: list[dict] = field(default_factory=list)
    #: Set when the target refused the whole batch mid-run (a revoked key): the run stops.
    fatal: BatchError | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self) -> None:
        """Stop submitting; in-flight jobs are cancelled where the provider can."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _bump(self, **delta: int) -> None:
        with self._lock:
            for k, v in delta.items():
                setattr(self.counts, k, getattr(self.counts, k) + v)
        if self.on_change is not None:
            self.on_change(self.counts)

    def _run_one(self, job: BatchJob) -> None:
        t0 = time.monotonic()
        outcome = Outcome("cancelled")
        attempt = 0
        self._bump(in_flight=1)
        try:
            while attempt < self.max_attempts and not self._stop.is_set():
                attempt += 1
                handle = self.target.submit(job, attempt)
                outcome = handle if isinstance(handle, Outcome) else self.target.wait(
                    handle, self._stop)
                retryable = outcome.status == "failed" and (outcome.error or {}).get("retryable")
                if not retryable or attempt >= self.max_attempts:
                    break
                log.info("job %s: %s, retrying", job.id, (outcome.error or {}).get("code"))
                self._bump(retries=1)
                if self._stop.wait(backoff_s(attempt, self.retry_base_s, self.retry_cap_s)):
                    outcome = Outcome("cancelled")
        except BatchError as exc:  # the key was refused: no other job can pass either
            log.error("%s; stopping the batch", exc)
            self.fatal = exc
            self.stop()
            outcome = Outcome("cancelled")
        except Exception as exc:  # an adapter bug or an unreachable endpoint mid-run
            log.warning("job %s: %s", job.id, exc)
            outcome = Outcome("failed", error={
                "code": "unavailable", "message": str(exc)[:300], "field": None,
                "retryable": True})
        finally:
            self._bump(in_flight=-1)
        if outcome.status == "cancelled":  # not written: a rerun submits it again
            self._bump(cancelled=1)
            return
        record: dict[str, Any] = {"id": job.id, "status": outcome.status, "source": job.source,
                                  "attempts": attempt,
                                  "latency_ms": round((time.monotonic() - t0) * 1000)}
        if outcome.status == "done":
            record["output"] = _without_inline(outcome.output or {})
        else:
            record["error"] = outcome.error
        self.results.append(record)
        with self._lock:
            self.records.append(record)
        self._bump(**{"done" if outcome.status == "done" else "failed": 1})

    def _worker(self, work: queue.Queue) -> None:
        while not self._stop.is_set():
            try:
                job = work.get_nowait()
            except queue.Empty:
                return
            self._run_one(job)

    def run(self, jobs: list[BatchJob], *, grace_s: float = 60.0) -> list[dict]:
        """Run ``jobs``; returns the lines written this run. Ctrl-C (KeyboardInterrupt in this,
        the main thread) stops the batch, waits up to ``grace_s`` for the cancels and the lines
        of jobs that end meanwhile, then re-raises KeyboardInterrupt.

        Raises:
            BatchError: the target refused the batch mid-run (:attr:`fatal`); what finished
                before is written.
        """
        work: queue.Queue = queue.Queue()
        for job in jobs:
            work.put(job)
        threads = [threading.Thread(target=self._worker, args=(work,), daemon=True,
                                    name=f"maskpaint-batch-{i}")
                   for i in range(max(1, min(self.concurrency, len(jobs))))]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
        except KeyboardInterrupt:
            self.stop()
            deadline = time.monotonic() + grace_s
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            raise
        if self.fatal is not None:
            raise self.fatal
        return list(self.records)


def _without_inline(output: dict) -> dict:
    """The JobResult without inline base64 copies (``return_base64``): the results file keeps
    keys, URLs and facts, not the bytes."""
    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "base64"}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    return strip(output)
