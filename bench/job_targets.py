"""The per-job targets (overhead, automatic masking, PNG output, 12 MP memory) that need their own jobs: measured in the children
(:func:`png_jobs`, :func:`rss_12mp` with :func:`rss_by_stage` in the ``jobs`` mode;
:func:`auto_vs_provided` in the ``auto`` mode), summarised and judged in the parent
(:func:`summarise`, :func:`targets`, :func:`memory_rows`).

Definitions (the Targets rows and RESULTS.md's "How to read it" say the same):

- overhead of a job = ``timings_ms["total"] - sum(timings_ms[k] for k ending in ".forward")``
  (the worker's own account, ``core.timing``).
- automatic masking: each 2 MP job with automatic masking (the ``auto`` mode's worker: with dev
  weights a rigged garment detector, so detect -> SAM -> clean runs) is paired with a
  provided-mask 2 MP job on the same worker, run right before or after it (the order alternates);
  ratio = auto job overhead / provided-mask job overhead, target <= 2 on the median pair.
- PNG output: 2 MP, provided mask, ``"output": {"format": "png"}``: ``timings_ms["encode"] +
  timings_ms["upload"]`` (the result PNG, the mask PNG and the overlay JPEG are encoded in
  parallel threads, each uploaded when its encode ends, to the moto S3 server in the bench's
  parent process over a real socket), target <= 150 ms on the median job.
- 12 MP memory: a frame = H x W x 3 uint8 of the 12 MP photo (3000 x 4000 x 3 B = 34.3 MiB).
  Idle worker = RSS after cold start and the 2 MP warm-up jobs, just before the first 12 MP job.
  Each 12 MP job's peak RSS is read with :class:`bench.instrument.PeakRSS`; target: the worst
  job's peak - idle <= 4 frames. Growth: RSS after the last 12 MP job vs after the 5th,
  target <= 5 %.

Keep the top of this module light (standard library only): children import it after their
timings of interpreter start and imports.
"""

from __future__ import annotations

import statistics

from bench.common import SIZES, centre_mask

#: one full-resolution frame of the 12 MP photo: H x W x 3 uint8, bytes
FRAME_BYTES = SIZES["12MP"][0] * SIZES["12MP"][1] * 3
GOALS = {"auto_vs_provided": 2.0, "png_store_ms": 150.0, "peak_frames": 4.0, "growth_pct": 5.0}
#: the growth window's first job (1-based): RSS after this job vs after the last
GROWTH_FROM_JOB = 5


def overhead_ms(timings: dict) -> float:
    """Worker overhead of one job, ms: ``total`` - sum of its ``*.forward`` timings."""
    return timings["total"] - sum(v for k, v in timings.items() if k.endswith(".forward"))


def forwards_overlap(timings: dict) -> bool:
    """True when a stage's ``*.forward`` times add up to more than the stage itself: model calls
    ran in parallel threads, so ``total`` - their sum understates the overhead (asks for the
    union of the forward intervals then, which ``timings_ms`` cannot give)."""
    return any(sum(v for k, v in timings.items() if k.startswith(st + ".") and
                   k.endswith(".forward")) > timings[st] + 0.5
               for st in ("mask", "inpaint") if st in timings)


def mask_nonforward_ms(timings: dict) -> float:
    """The mask stage outside its model calls, ms: ``mask`` - sum of ``mask.*.forward``."""
    return timings.get("mask", 0.0) - sum(
        v for k, v in timings.items() if k.startswith("mask.") and k.endswith(".forward"))


# ------------------------------------------------------------------------------ child side
def png_jobs(runner, inputs: dict, n: int, label: str = "2MP") -> list[dict]:
    """``n`` provided-mask jobs with PNG output (after one warm-up), records as ``Runner.run``."""
    mask = centre_mask(inputs[label]["file"])
    out = {"format": "png"}
    runner.run(label, mask, out)  # warm-up
    return [runner.run(label, mask, out) for _ in range(n)]


def rss_12mp(runner, n: int, label: str = "12MP") -> dict:
    """Idle RSS, then ``n`` jobs, each inside :class:`PeakRSS`; MiB."""
    from bench import instrument as ins

    idle = ins.rss_mb()
    jobs = []
    method = ""
    for _ in range(n):
        with ins.PeakRSS() as peak:
            rec = runner.run(label)
        method = peak.method
        jobs.append({"peak_rss_mb": round(peak.peak_mib, 1), "rss_after_mb": rec["rss_mb"],
                     "cuda_peak_mb": None if peak.cuda_peak_mib is None
                     else round(peak.cuda_peak_mib, 1),
                     "total_ms": rec["timings_ms"]["total"], "mask_source": rec["mask_source"]})
    return {"idle_rss_mb": round(idle, 1), "jobs": jobs, "method": method, "size": label,
            "frame_bytes": FRAME_BYTES, "by_stage": rss_by_stage(runner, label)}


def rss_by_stage(runner, label: str = "12MP", interval_s: float = 0.002) -> dict:
    """One more job with a thread sampling RSS every ``interval_s``: the highest RSS (MiB)
    within each stage, stage boundaries laid end to end from the job's own ``timings_ms``
    (fetch, decode, mask, inpaint, encode, upload) from the handler call's start, so a few ms
    of event parsing shift them slightly. A diagnostic for where the peak is, not a target."""
    import threading
    import time

    from bench import instrument as ins

    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            samples.append((time.perf_counter(), ins.rss_mb()))

    idle = ins.rss_mb()
    th = threading.Thread(target=sample, daemon=True, name="bench-rss-by-stage")
    th.start()
    t0 = time.perf_counter()
    try:
        rec = runner.run(label)
    finally:
        stop.set()
        th.join()
    out, start = {}, t0
    for st in ("fetch", "decode", "mask", "inpaint", "encode", "upload"):
        end = start + rec["timings_ms"].get(st, 0.0) / 1000
        vals = [r for t, r in samples if start <= t < end]
        out[st] = round(max(vals) - idle, 1) if vals else None
        start = end
    return {"idle_rss_mb": round(idle, 1), "max_above_idle_mb": out, "samples": len(samples),
            "interval_ms": interval_s * 1000}


def auto_vs_provided(runner, inputs: dict, n: int, label: str = "2MP") -> dict:
    """One warm-up of each, then ``n`` pairs (automatic masking, provided mask) on the same
    worker, the order alternating (A B, B A, ...) so neither always runs second."""
    mask = centre_mask(inputs[label]["file"])
    warm = runner.run(label)
    runner.run(label, mask)
    pairs = []
    for i in range(n):
        if i % 2 == 0:
            a = runner.run(label)
            p = runner.run(label, mask)
        else:
            p = runner.run(label, mask)
            a = runner.run(label)
        pairs.append({"auto": a, "provided": p})
    return {"warmup": warm, "pairs": pairs}


# ----------------------------------------------------------------------------- parent side
def _spread(values: list[float], nd: int = 2) -> dict:
    return {"n": len(values), "median": round(statistics.median(values), nd),
            "min": round(min(values), nd), "max": round(max(values), nd)}


def summarise(raw: dict) -> dict:
    """Raw results -> ``{"auto_vs_provided", "png_output", "rss_12MP"}`` (those measured)."""
    out: dict = {}
    avp = (raw.get("auto_raw") or {}).get("auto_vs_provided")
    if avp and avp.get("pairs"):
        pairs = avp["pairs"]
        oa = [overhead_ms(p["auto"]["timings_ms"]) for p in pairs]
        op = [overhead_ms(p["provided"]["timings_ms"]) for p in pairs]
        ma = [mask_nonforward_ms(p["auto"]["timings_ms"]) for p in pairs]
        mp = [mask_nonforward_ms(p["provided"]["timings_ms"]) for p in pairs]
        sources = sorted({p["auto"]["mask_source"] for p in pairs})
        overlap = sum(forwards_overlap(p[k]["timings_ms"]) for p in pairs for k in p)
        out["auto_vs_provided"] = {
            "ratio": _spread([a / p for a, p in zip(oa, op)]),
            "auto_overhead_ms": _spread(oa, 1), "provided_overhead_ms": _spread(op, 1),
            "auto_mask_nonforward_ms": _spread(ma, 1),
            "provided_mask_nonforward_ms": _spread(mp, 1), "auto_mask_sources": sources,
            "jobs_with_overlapping_forwards": overlap}
    png = (raw.get("jobs_raw") or {}).get("png_output")
    if png:
        store = [j["timings_ms"].get("encode", 0.0) + j["timings_ms"].get("upload", 0.0)
                 for j in png]
        out["png_output"] = {
            "encode_upload_ms": _spread(store, 1),
            "encode_ms": _spread([j["timings_ms"].get("encode", 0.0) for j in png], 1),
            "upload_ms": _spread([j["timings_ms"].get("upload", 0.0) for j in png], 1),
            "result_png_encode_ms": _spread([j["detail_ms"].get("encode.result_png", 0.0)
                                             for j in png], 1),
            "result_png_mb": round(statistics.median(j["bytes"].get("image", 0) for j in png)
                                   / 1e6, 2)}
    mem = (raw.get("jobs_raw") or {}).get("rss_12MP")
    if mem and mem.get("jobs"):
        frame_mib = mem["frame_bytes"] / 2**20
        above = [j["peak_rss_mb"] - mem["idle_rss_mb"] for j in mem["jobs"]]
        after = [j["rss_after_mb"] for j in mem["jobs"]]
        i0 = min(GROWTH_FROM_JOB, len(after)) - 1
        cuda = [j["cuda_peak_mb"] for j in mem["jobs"] if j.get("cuda_peak_mb") is not None]
        out["rss_12MP"] = {
            "idle_rss_mb": mem["idle_rss_mb"], "frame_mib": round(frame_mib, 1),
            "peak_above_idle_mb": _spread(above, 1),
            "peak_above_idle_frames_max": round(max(above) / frame_mib, 2),
            "jobs": len(after), "growth_from_job": i0 + 1,
            "rss_from_mb": after[i0], "rss_last_mb": after[-1],
            "growth_pct": round((after[-1] - after[i0]) / after[i0] * 100, 2),
            "rss_series_mb": after, "method": mem["method"], "by_stage": mem.get("by_stage"),
            "cuda_peak_mb": _spread(cuda, 1) if cuda else None}
    return out


def targets(s: dict) -> list[dict]:
    """The Targets table rows for :func:`summarise`'s figures: target, goal, measured, pass."""
    t = []
    a = s.get("auto_vs_provided")
    if a:
        r = a["ratio"]
        note = "" if a["auto_mask_sources"] == ["detector+sam"] else \
            f"; automatic masking took: {', '.join(a['auto_mask_sources'])}"
        if a.get("jobs_with_overlapping_forwards"):
            note += (f"; in {a['jobs_with_overlapping_forwards']} jobs the *.forward times overlap "
                     "(parallel model calls): overhead understated")
        t.append({"target": "automatic masking, 2MP: its job's overhead (total - sum *.forward) vs "
                            "a provided-mask job's, pairs on one worker (same run)",
                  "goal": f"<= {GOALS['auto_vs_provided']:.0f}x",
                  "measured": f"{r['median']:.2f}x (min {r['min']:.2f}, max {r['max']:.2f}, "
                  f"n={r['n']}; {a['auto_overhead_ms']['median']:.0f} ms vs "
                  f"{a['provided_overhead_ms']['median']:.0f} ms; mask stage outside forward "
                  f"{a['auto_mask_nonforward_ms']['median']:.0f} vs "
                  f"{a['provided_mask_nonforward_ms']['median']:.0f} ms{note})",
                  "pass": r["median"] <= GOALS["auto_vs_provided"]})
    p = s.get("png_output")
    if p:
        v = p["encode_upload_ms"]
        t.append({"target": "PNG output, 2MP, provided mask: encode + upload (timings_ms; result "
                            "PNG, mask PNG, overlay JPEG to moto S3 in the bench parent)",
                  "goal": f"<= {GOALS['png_store_ms']:.0f} ms",
                  "measured": f"{v['median']:.0f} ms (min {v['min']:.0f}, max {v['max']:.0f}, "
                  f"n={v['n']}; encode {p['encode_ms']['median']:.0f} + upload "
                  f"{p['upload_ms']['median']:.0f}; result PNG alone "
                  f"{p['result_png_encode_ms']['median']:.0f} ms, {p['result_png_mb']:.1f} MB)",
                  "pass": v["median"] <= GOALS["png_store_ms"]})
    m = s.get("rss_12MP")
    if m:
        v = m["peak_above_idle_mb"]
        goal_mb = GOALS["peak_frames"] * m["frame_mib"]
        t.append({"target": "peak RSS of a 12MP job above the idle worker, worst job (frame = "
                            "3000 x 4000 x 3 uint8)",
                  "goal": f"<= {GOALS['peak_frames']:.0f} frames ({goal_mb:.0f} MiB)",
                  "measured": f"{m['peak_above_idle_frames_max']:.2f} frames ({v['max']:.0f} MiB; "
                  f"median {v['median']:.0f}, min {v['min']:.0f}, n={v['n']}; idle "
                  f"{m['idle_rss_mb']:.0f} MiB)",
                  "pass": v["max"] <= goal_mb})
        t.append({"target": f"memory flat over {m['jobs']} 12MP jobs (RSS after job {m['jobs']} "
                            f"vs job {m['growth_from_job']})",
                  "goal": f"growth <= {GOALS['growth_pct']:.0f}%",
                  "measured": f"{m['growth_pct']:+.1f}% ({m['rss_from_mb']:.0f} -> "
                              f"{m['rss_last_mb']:.0f} MiB)",
                  "pass": m["growth_pct"] <= GOALS["growth_pct"]})
    return t


def memory_rows(s: dict) -> list[str]:
    """Rows for the Memory table (``| what | MiB |``) from :func:`summarise`'s ``rss_12MP``."""
    m = s.get("rss_12MP")
    if not m:
        return []
    v, ser = m["peak_above_idle_mb"], m["rss_series_mb"]
    rows = [f"| 12 MP jobs: idle worker RSS, just before the first | {m['idle_rss_mb']:,.0f} |",
            f"| 12 MP job peak RSS above idle, median / max of {v['n']} ({m['method']}) | "
            f"{v['median']:,.0f} / {v['max']:,.0f} ({m['peak_above_idle_frames_max']:.2f} "
            f"frames of {m['frame_mib']:.1f} MiB) |",
            f"| RSS after 12 MP job 1 / {m['growth_from_job']} / {m['jobs']} | {ser[0]:,.0f} / "
            f"{m['rss_from_mb']:,.0f} / {m['rss_last_mb']:,.0f} ({m['growth_pct']:+.2f}%) |"]
    b = m.get("by_stage")
    if b:
        rows.append(f"| one more 12 MP job, highest RSS above its idle per stage (VmRSS sampled every "
                    f"{b['interval_ms']:.0f} ms, stages from `timings_ms`) | " + ", ".join(
                        f"{k} {v:,.0f}" for k, v in b["max_above_idle_mb"].items()
                        if v is not None) + " |")
    c = m.get("cuda_peak_mb")
    if c:
        rows.append(f"| CUDA max allocated per 12 MP job, median / max | {c['median']:,.0f} / "
                    f"{c['max']:,.0f} |")
    return rows
