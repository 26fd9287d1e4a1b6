"""The GPU bench's report: ``gpu.json`` -> the ``## GPU`` Markdown section, the targets' status.

Every figure is computed from the run's own records; a target whose inputs are missing says
"not measured" (never a number from elsewhere).
"""

from __future__ import annotations

import statistics
from pathlib import Path

HEADING = "## GPU (`python -m bench.gpu`)"


def _med(values) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 1) if vals else None


def _ratio(a, b) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _result(res: dict, phase: str) -> dict:
    return res.get(phase) or {}


def cells(main: dict) -> dict[str, dict]:
    """Cell name -> first job, warm medians (wall, total, forward, stages) and peak VRAM."""
    out: dict[str, dict] = {}
    for rec in main.get("jobs", []):
        c = out.setdefault(rec["cell"], {"first": None, "warm": [], "errors": []})
        if "error" in rec:
            c["errors"].append(rec["error"])
            continue
        if rec.get("tag") == "first":
            c["first"] = rec
        else:
            c["warm"].append(rec)
    for c in out.values():
        warm = c["warm"] or ([c["first"]] if c["first"] else [])
        t = [r["timings_ms"] for r in warm]
        c["total_ms"] = _med(x.get("total") for x in t)
        c["forward_ms"] = _med(r.get("forward_ms") for r in warm)
        for stage in ("decode", "mask", "conditioning", "inpaint", "encode", "upload"):
            c[f"{stage}_ms"] = _med(x.get(stage) for x in t)
        peaks = [r.get("peak_vram_gib") for r in ([c["first"]] if c["first"] else []) + c["warm"]]
        c["peak_vram_gib"] = max((p for p in peaks if p is not None), default=None)
        c["n_warm"] = len(c["warm"])
    return out


def _first_vs_warm(child: dict) -> tuple[float | None, float | None]:
    jobs = [j for j in child.get("jobs", []) if "error" not in j]
    first = next((j["timings_ms"]["total"] for j in jobs if j["rep"] == 0), None)
    warm = _med(j["timings_ms"]["total"] for j in jobs if j["rep"] > 0)
    return first, warm


def _warm_forward(child: dict) -> float | None:
    return _med(j.get("forward_ms") for j in child.get("jobs", [])
                if "error" not in j and j["rep"] > 0)


def targets(res: dict) -> list[tuple[str, float | None, float, str]]:
    """(target, measured, limit, unit) rows."""
    main = _result(res, "main")
    cs = cells(main)
    anchor = {a["model"]: a["median_ms"] for a in main.get("anchor", [])}
    floor = _result(res, "floor").get("from_spawn_ms")
    rows = []
    for model, limit in (("sd15-inpaint", 0.45), ("sdxl-inpaint", 0.6)):
        fwd = cs.get(f"{model}/0.9MP/plain", {}).get("forward_ms")
        rows.append((f"{model} 0.9 MP forward / bare diffusers (eager)",
                     _ratio(fwd, anchor.get(model)), limit, "x"))
    rows.append(("sd15-inpaint 0.9 MP forward / bare diffusers (compiled, buckets)",
                 _ratio(_warm_forward(_result(res, "compiled")), anchor.get("sd15-inpaint")),
                 0.45, "x"))
    for phase, label in (("cold", "warm-up off"), ("warmup", "warm-up on"),
                         ("compiled", "compiled + warm-up")):
        first, warm = _first_vs_warm(_result(res, phase))
        rows.append((f"first job / warm job, SD 1.5 ({label})", _ratio(first, warm), 1.1, "x"))
    for phase, label, limit in (("cold", "eager", 1.3), ("compiled", "compile artefacts", 1.3)):
        ready = _result(res, phase).get("ready_from_spawn_ms")
        rows.append((f"cold start / floor, SD 1.5 ({label})", _ratio(ready, floor), limit, "x"))
    for model in ("sd15-inpaint", "sdxl-inpaint"):
        for fmt, suffix in (("PNG", ""), ("JPEG", "/jpeg")):
            c = cs.get(f"{model}/12MP/plain{suffix}", {})
            rows.append((f"{model} 12 MP end-to-end / forward ({fmt})",
                         _ratio(c.get("total_ms"), c.get("forward_ms")), 1.1, "x"))
    idle = main.get("idle_vram_gib")
    for model, limit in (("sd15-inpaint", 16), ("sdxl-inpaint", 24)):
        peak = cs.get(f"{model}/12MP/all", {}).get("peak_vram_gib")
        weights = (res.get("profile_weight_gib") or {}).get(model)
        est = (round(weights + peak - idle, 2)
               if None not in (peak, idle, weights) else None)
        rows.append((f"{model} + IP-Adapter + ControlNet, heaviest job (12 MP, garment + pose + "
                     "4 outputs): their weights + the job's peak above the idle worker", est,
                     limit, "GiB"))
    sd15_peak = max((j.get("peak_vram_gib") or 0 for j in _result(res, "cold").get("jobs", [])),
                    default=None) or None
    rows.append(("peak VRAM, SD 1.5 alone (cold process), 0.9 MP job", sd15_peak, 16, "GiB"))
    return rows


def _fmt(v, unit="") -> str:
    if v is None:
        return "not measured"
    return f"{v:,.3g}{unit}" if isinstance(v, float) and v < 10 else f"{v:,.0f}{unit}"


def markdown(res: dict) -> str:
    env = res.get("env", {})
    lines = [HEADING, ""]
    gpu = env.get("gpu") or f"no GPU ({env.get('device')})"
    libs = ", ".join(f"{k} {env[k]}" for k in (
        "torch", "triton", "diffusers", "transformers", "accelerate", "safetensors",
        "opencv-python", "opencv-python-headless", "numpy", "pillow") if env.get(k))
    lines.append(f"Ran {env.get('date')}: **{gpu}**"
                 + (f", driver {env['driver']}, {env['gpu_memory']}" if env.get("driver") else "")
                 + f"; {env.get('cpus')} CPUs; Python {env.get('python')}; {libs}.")
    weights = "dev (tiny random) weights" if res.get("mode") == "tiny" else \
        "real-size random-weight models in the baked layout (bench/gpu_weights.py)"
    prec = "fp16 on CUDA" if str(env.get("device", "")).startswith("cuda") else "fp32 on CPU"
    lines.append(f"Mode {res.get('mode')}, {res.get('steps')} steps, {prec}, {weights}; "
                 f"jobs through the RunPod handler, provided mask, PNG output unless noted; "
                 f"run took {res.get('total_s')} s.")
    lines += ["", "| target | measured | limit | status |", "| --- | --- | --- | --- |"]
    for name, value, limit, unit in targets(res):
        status = "not measured" if value is None else ("met" if value <= limit else "not met")
        lines.append(f"| {name} | {_fmt(value, ' ' + unit if unit != 'x' else 'x')} | "
                     f"{limit}{'x' if unit == 'x' else ' ' + unit} | {status} |")
    main = _result(res, "main")
    lines += ["", "Jobs (median of the warm repeats; first = the first job at that shape in the "
              "process; peak VRAM = `torch.cuda.max_memory_allocated`, reset per job, every "
              "model of the weights dir resident):", "",
              "| cell | first ms | total ms | forward ms | decode | mask | inpaint | encode | "
              "peak VRAM GiB | n |", "| --- | " + "--- | " * 9]
    for name, c in cells(main).items():
        if c["errors"] and not c["warm"] and not c["first"]:
            lines.append(f"| {name} | error: {c['errors'][0][:80]} |" + " |" * 8)
            continue
        first = (c["first"] or {}).get("timings_ms", {}).get("total")
        lines.append(f"| {name} | {_fmt(first)} | {_fmt(c['total_ms'])} | "
                     f"{_fmt(c['forward_ms'])} | {_fmt(c['decode_ms'])} | {_fmt(c['mask_ms'])} | "
                     f"{_fmt(c['inpaint_ms'])} | {_fmt(c['encode_ms'])} | "
                     f"{_fmt(c['peak_vram_gib'])} | {c['n_warm']} |")
    if main.get("skipped"):
        lines.append(f"\nSkipped (out of the phase's time): {', '.join(main['skipped'])}.")
    anchors = main.get("anchor", [])
    if anchors:
        lines.append("\nAnchor (bare diffusers `AutoPipelineForInpainting`, native size, same "
                     "weights): " + "; ".join(f"{a['model']} {a['size'][0]} px "
                                              f"{_fmt(a['median_ms'])} ms" for a in anchors) + ".")
    b = main.get("buckets", [])
    if b:
        parts = []
        for model in sorted({r["cell"].split("/")[0] for r in b}):
            f = {tag: _med(r.get("forward_ms") for r in b if r["cell"].startswith(model)
                           and r["tag"] == tag and "error" not in r)
                 for tag in ("buckets-off", "buckets-on")}
            parts.append(f"{model} forward {_fmt(f['buckets-off'])} ms off, "
                         f"{_fmt(f['buckets-on'])} ms on")
        lines.append("\nGeneration buckets, 0.9 MP plain, same process: " + "; ".join(parts) + ".")
    fl = _result(res, "floor")
    lines += ["", "Cold start (fresh processes; SD 1.5 + the face and pose models):", "",
              "| process | page cache dropped | ready from spawn ms | first job ms | warm job ms |"
              " warm forward ms |", "| --- | --- | --- | --- | --- | --- |"]
    phases = res.get("phases", {})
    if fl:
        lines.append(f"| floor: import torch {_fmt(fl.get('import_torch_ms'))} + CUDA init "
                     f"{_fmt(fl.get('cuda_init_ms'))} + import diffusers "
                     f"{_fmt(fl.get('import_diffusers_ms'))} + read "
                     f"{fl.get('read_bytes', 0) / 1e9:.2f} GB {_fmt(fl.get('read_ms'))} ms "
                     f"({fl.get('read_mb_s')} MB/s) | "
                     f"{phases.get('floor', {}).get('caches_dropped')}"
                     f" | {_fmt(fl.get('from_spawn_ms'))} | | | |")
    for phase, label in (("cold", "worker, eager"), ("warmup", "worker, warm-up on"),
                         ("compiled", "worker, compiled + warm-up + buckets")):
        ch = _result(res, phase)
        if not ch:
            why = phases.get(phase, {}).get("skipped") or phases.get(phase, {}).get("error", "")
            lines.append(f"| {label} | not run: {str(why)[-120:]!r} | | | | |")
            continue
        first, warm = _first_vs_warm(ch)
        lines.append(f"| {label} | {phases.get(phase, {}).get('caches_dropped')} | "
                     f"{_fmt(ch.get('ready_from_spawn_ms'))} | {_fmt(first)} | {_fmt(warm)} | "
                     f"{_fmt(_warm_forward(ch))} |")
    if _result(res, "compiled").get("dispatch"):
        lines.append(f"\nCompiled UNet at {res.get('compile_size')} px: UNet calls "
                     f"{_result(res, 'compiled')['dispatch']} (compiled vs eager); artefacts "
                     f"made in {phases.get('compile', {}).get('wall_s')} s.")
    return "\n".join(lines) + "\n"


def splice(path: Path, md: str) -> None:
    """Replace the ``## GPU`` section of ``path`` (to the next ``## `` heading) with ``md``, or
    append it."""
    text = path.read_text() if path.exists() else ""
    start = text.find(HEADING)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + md
    else:
        end = text.find("\n## ", start + len(HEADING))
        text = text[:start] + md + (text[end + 1:] if end >= 0 else "")
    path.write_text(text)


def summary(res: dict) -> str:
    """A short plain-text table of the targets (the last lines a device run prints)."""
    rows = [f"{name}: {_fmt(v)} (limit {limit})" for name, v, limit, _ in targets(res)]
    return "\n".join(["GPU bench " + str(res.get("env", {}).get("gpu")), *rows])
