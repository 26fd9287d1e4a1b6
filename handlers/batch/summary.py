"""The batch summary: counts by status and error code, latency percentiles, GPU time and cost.

Computed from the results file's final line per job (so a resumed batch reports the whole
batch, not only its last run). GPU seconds are the sum of the workers' own
``timings_ms.total`` over done jobs: the time a worker spent on the job, which is what per-second
billing charges for (cold starts and idle time are billed too and are not in it).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from handlers.batch.jobs import BatchJob, InputProblem


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least ``p`` % of values at or below
    it; NIST/Wikipedia "Percentile", nearest-rank method); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summarize(jobs: Iterable[BatchJob], recorded: dict[str, dict],
              problems: list[InputProblem], *, price_per_s: float = 0.0,
              this_run: dict | None = None) -> dict:
    """The summary of a batch.

    Args:
        jobs: every job of the batch (resumed or not).
        recorded: the last results line of each id (``ResultsFile.load`` after the run).
        problems: input lines/files that were skipped.
        price_per_s: cost of one GPU second (any currency); 0 leaves ``cost`` at 0.
        this_run: counters of this run (``submitted``, ``retries``, ``cancelled``...).

    Returns:
        ``{"jobs", "done", "failed", "not_finished", "skipped_inputs", "errors": {code: n},
        "latency_ms": {"p50", "p95"}, "gpu_s", "price_per_s", "cost", "this_run"}``; latency is
        per job, first submit to final status (ms), over jobs with a line.
    """
    status: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    gpu_ms = 0.0
    n = 0
    for job in jobs:
        n += 1
        rec = recorded.get(job.id)
        if rec is None:
            status["not_finished"] += 1
            continue
        status[rec["status"]] += 1
        if isinstance(rec.get("latency_ms"), (int, float)):
            latencies.append(float(rec["latency_ms"]))
        if rec["status"] == "done":
            total = ((rec.get("output") or {}).get("timings_ms") or {}).get("total")
            gpu_ms += float(total) if isinstance(total, (int, float)) else 0.0
        else:
            errors[(rec.get("error") or {}).get("code", "unknown")] += 1
    gpu_s = round(gpu_ms / 1000, 3)
    return {
        "jobs": n, "done": status["done"], "failed": status["failed"],
        "not_finished": status["not_finished"],
        "skipped_inputs": [{"where": p.where, "message": p.message} for p in problems],
        "errors": dict(sorted(errors.items())),
        "latency_ms": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95)},
        "gpu_s": gpu_s, "price_per_s": price_per_s, "cost": round(gpu_s * price_per_s, 6),
        "this_run": this_run or {},
    }


def describe(summary: dict) -> str:
    """A few human lines for the terminal (the JSON summary goes to stdout)."""
    lat = summary["latency_ms"]
    lines = [f"{summary['done']} done, {summary['failed']} failed, "
             f"{summary['not_finished']} not finished, of {summary['jobs']} jobs"
             + (f"; {len(summary['skipped_inputs'])} input lines skipped"
                if summary["skipped_inputs"] else "")]
    if summary["errors"]:
        lines.append("errors: " + ", ".join(f"{k} x{v}" for k, v in summary["errors"].items()))
    if lat["p50"] is not None:
        lines.append(f"latency p50 {lat['p50'] / 1000:.1f} s, p95 {lat['p95'] / 1000:.1f} s")
    lines.append(f"GPU time {summary['gpu_s']:.1f} s"
                 + (f", cost {summary['cost']:.4f} at {summary['price_per_s']}/s"
                    if summary["price_per_s"] else ""))
    return "\n".join(lines)
