"""Results -> summaries, target verdicts, Markdown (latest.md, RESULTS.md) and plots."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from bench.common import summary

STAGES = ("fetch", "decode", "mask", "inpaint", "encode", "upload")
SIZE_ORDER = ("0.5MP", "2MP", "12MP")

TARGETS = {
    "overhead_2MP_ms": 150.0,     # median handler overhead (job - model forward), 2 MP
    "cold_vs_floor": 1.5,         # cold start to ready / floor
    "memory_growth_pct": 5.0,     # RSS after job N vs after job 5
}


# ------------------------------------------------------------------------------ summaries
def _med(values):
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 2) if vals else None


def _split(rec: dict) -> dict:
    """Per-job model / non-model split of the stages (ms)."""
    f = rec["forward_ms"]
    mask_model = sum(v for k, v in f.items() if k.startswith("mask."))
    inpaint_model = sum(v for k, v in f.items() if k.startswith("inpaint."))
    t = rec["timings_ms"]
    return {
        "mask_model": mask_model, "mask_other": t.get("mask", 0) - mask_model,
        "inpaint_model": inpaint_model, "inpaint_other": t.get("inpaint", 0) - inpaint_model,
        "handler_other": rec["wall_ms"] - t.get("total", 0),
        "overhead": rec["wall_ms"] - rec["model_forward_ms"],
        "overhead_ratio": ((rec["wall_ms"] - rec["model_forward_ms"]) / rec["model_forward_ms"]
                           if rec["model_forward_ms"] > 0 else None),
    }


def size_summary(recs: list[dict]) -> dict:
    splits = [_split(r) for r in recs]
    keys_f = sorted({k for r in recs for k in r["forward_ms"]})
    keys_d = sorted({k for r in recs for k in r["detail_ms"]})
    keys_m = sorted({k for r in recs for k in r["timings_ms"] if k.startswith("mask.")})
    return {
        "n": len(recs),
        "stages": {s: summary([r["timings_ms"].get(s) for r in recs]) for s in STAGES + ("total",)},
        "wall": summary([r["wall_ms"] for r in recs]),
        "model_forward": summary([r["model_forward_ms"] for r in recs]),
        "overhead": summary([s["overhead"] for s in splits]),
        "overhead_ratio": summary([s["overhead_ratio"] for s in splits]),
        "split_median": {k: _med([s[k] for s in splits]) for k in splits[0]} if splits else {},
        "forward_median": {k: _med([r["forward_ms"].get(k, 0.0) for r in recs]) for k in keys_f},
        "detail_median": {k: _med([r["detail_ms"].get(k, 0.0) for r in recs]) for k in keys_d},
        "mask_timings_median": {k: _med([r["timings_ms"].get(k) for r in recs]) for k in keys_m},
        "mask_source": dict(Counter(r["mask_source"] for r in recs)),
        "bytes_median": {k: _med([r["bytes"].get(k) for r in recs])
                         for k in ("image", "mask", "overlay")},
    }


def summarise(results: dict) -> dict:
    out: dict = {}
    # floor
    fr = results.get("floor_raw")
    if fr:
        imp = _med([r["spawn_to_imported_ms"] for r in fr["imports"]])
        read_cold = _med(fr["read_ms"]["evicted"])
        read_warm = _med(fr["read_ms"]["warm"])
        pipe_cls = _med([r.get("spawn_to_pipeline_class_ms") for r in fr["imports"]])
        out["floor"] = {"import_torch_diffusers_ms": imp, "read_weights_evicted_ms": read_cold,
                        "import_plus_pipeline_class_ms": pipe_cls,
                        "read_weights_warm_ms": read_warm, "weights_bytes": fr["bytes"],
                        "weights_files": fr["files"], "floor_ms": round(imp + read_cold, 1),
                        "interpreter_ms": _med([r["interpreter_ms"] for r in fr["imports"]])}
    sdk = results.get("sdk_import_raw") or []
    if sdk:
        out["sdk_import"] = {
            "runpod_import_ms": _med([r["import_ms"] for r in sdk if not r["stub"]]),
            "runpod_import_cpuinfo_stubbed_ms": _med([r["import_ms"] for r in sdk if r["stub"]]),
            "runs": len(sdk) // 2}
    # cold start
    cold = results.get("cold_raw") or []
    if cold:
        stages = {k: _med([c["stages_ms"].get(k) for c in cold])
                  for k in ("interpreter", "imports", "load", "load_storage_client", "first_job")}
        imports = {k: _med([c["imports_ms"][k] for c in cold]) for k in cold[0]["imports_ms"]}
        ready = _med([c["spawn_to_ready_ms"] for c in cold])
        done = _med([c["spawn_to_first_job_done_ms"] for c in cold])
        second = _med([c["second_job"]["wall_ms"] for c in cold])
        models = {k: _med([c["cold_start_ms"].get(k) for c in cold]) for k in cold[0]["cold_start_ms"]}
        out["cold_start"] = {
            "runs": len(cold), "stages_ms": stages, "imports_ms": imports,
            "spawn_to_ready_ms": ready, "spawn_to_first_job_done_ms": done,
            "second_job_ms": second, "first_job_penalty_ms": round(stages["first_job"] - second, 1),
            "model_load_ms": models, "rss_ready_mb": _med([c["rss_ready_mb"] for c in cold]),
            "ready_all_runs_ms": [c["spawn_to_ready_ms"] for c in cold],
        }
        if "floor" in out:
            out["cold_start"]["ready_vs_floor"] = round(ready / out["floor"]["floor_ms"], 2)
            if out["floor"].get("import_plus_pipeline_class_ms"):
                ext = out["floor"]["import_plus_pipeline_class_ms"] + out["floor"]["read_weights_evicted_ms"]
                out["floor"]["extended_floor_ms"] = round(ext, 1)
                out["cold_start"]["ready_vs_extended_floor"] = round(ready / ext, 2)
            out["cold_start"]["first_job_done_vs_floor"] = round(done / out["floor"]["floor_ms"], 2)
    # jobs
    jobs = results.get("jobs_raw")
    if jobs:
        flat = jobs["flat_jobs"]
        per_size = {"2MP": size_summary(flat[1:])}
        for label, sw in jobs["sweeps"].items():
            per_size[label] = size_summary(sw["jobs"])
        out["jobs"] = {k: per_size[k] for k in SIZE_ORDER if k in per_size}
        out["device"] = {k: jobs.get(k) for k in ("device", "torch", "torch_threads", "gpu")}
        rss = [r["rss_mb"] for r in flat]
        n = len(rss)
        i5 = min(4, n - 1)
        growth = (rss[-1] - rss[i5]) / rss[i5] * 100
        out["memory"] = {
            "rss_ready_mb": jobs["rss_ready_mb"], "rss_after_job1_mb": rss[0],
            "rss_after_job5_mb": rss[i5], "rss_after_last_mb": rss[-1], "jobs": n,
            "growth_pct": round(growth, 2), "rss_min_mb": min(rss[i5:]), "rss_max_mb": max(rss[i5:]),
            "peak_rss_mb": jobs["peak_rss_mb"], "cuda": jobs.get("cuda_memory"),
            "rss_series_mb": rss,
        }
        loads = jobs["loads"]
        core_loads = {k: v for k, v in loads["end"].items() if k.startswith("core.models.")}
        ids = jobs["model_ids"]
        seq = [r for r in flat]
        for lbl in ("0.5MP", "12MP"):
            if lbl in jobs["sweeps"]:
                seq += [jobs["sweeps"][lbl]["warmup"]] + jobs["sweeps"][lbl]["jobs"]
        base = sum(loads["after_cold_start"].values())
        load_jobs = [i + 1 for i, r in enumerate(seq)
                     if r.get("load_calls_total", base) > (seq[i - 1].get("load_calls_total", base)
                                                           if i else base)]
        out["models_loaded_once"] = {
            "jobs_that_loaded": load_jobs,
            "loader_calls_after_cold_start": loads["after_cold_start"],
            "loader_calls_at_end": loads["end"],
            "new_loads_during_jobs": {k: v - loads["after_cold_start"].get(k, 0)
                                      for k, v in loads["end"].items()
                                      if v != loads["after_cold_start"].get(k, 0)},
            "each_model_loader_called_once": all(v == 1 for v in core_loads.values()),
            "model_ids_stable": ids["after_cold_start"] == ids["after_flatness"] == ids["end"],
            "models": sorted(ids["after_cold_start"]),
            "missing_models": jobs.get("missing_models"),
        }
        out["profile"] = {label: p["analysis"] for label, p in (jobs.get("profiles") or {}).items()}
    auto = results.get("auto_raw")
    if auto:
        out["auto_path"] = {k: size_summary(auto["sweeps"][k]["jobs"]) for k in SIZE_ORDER
                            if k in auto["sweeps"]}
        for label, pr in (auto.get("profiles") or {}).items():
            out.setdefault("profile", {})[f"{label} auto path"] = pr["analysis"]
    out["targets"] = targets(out)
    return out


def targets(s: dict) -> list[dict]:
    t = []
    j2 = (s.get("jobs") or {}).get("2MP")
    if j2:
        v = j2["overhead"]["median"]
        t.append({"target": "handler overhead (job - model forward), 2 MP, median",
                  "goal": f"< {TARGETS['overhead_2MP_ms']:.0f} ms", "measured": f"{v:.0f} ms",
                  "pass": v < TARGETS["overhead_2MP_ms"]})
    a2 = (s.get("auto_path") or {}).get("2MP")
    if a2:
        v = a2["overhead"]["median"]
        t.append({"target": "same, production masking path (rigged dev garment detector -> SAM; "
                            "no GrabCut)",
                  "goal": f"< {TARGETS['overhead_2MP_ms']:.0f} ms", "measured": f"{v:.0f} ms",
                  "pass": v < TARGETS["overhead_2MP_ms"]})
    cs = s.get("cold_start")
    if cs and "ready_vs_floor" in cs:
        v = cs["ready_vs_floor"]
        t.append({"target": "cold start to ready vs floor (import torch+diffusers + read weights)",
                  "goal": f"<= {TARGETS['cold_vs_floor']}x",
                  "measured": f"{v:.2f}x ({cs['spawn_to_ready_ms'] / 1000:.1f} s vs "
                              f"{s['floor']['floor_ms'] / 1000:.1f} s)",
                  "pass": v <= TARGETS["cold_vs_floor"]})
    mo = s.get("models_loaded_once")
    if mo:
        ok = mo["each_model_loader_called_once"] and mo["model_ids_stable"] \
            and not mo["new_loads_during_jobs"]
        t.append({"target": "no model loaded more than once per process",
                  "goal": "each loader once; 0 loads during jobs; same objects",
                  "measured": ("yes" if ok else "NO") + f" ({len(mo['models'])} model objects, "
                  f"{sum(mo['loader_calls_at_end'].values())} loader calls, all at cold start)"
                  if ok else f"new loads during jobs: {mo['new_loads_during_jobs']} "
                  f"(in job(s) {mo.get('jobs_that_loaded')} after cold start)",
                  "pass": ok})
    m = s.get("memory")
    if m:
        t.append({"target": f"memory flat over {m['jobs']} warm jobs (RSS job {m['jobs']} vs job 5)",
                  "goal": f"growth <= {TARGETS['memory_growth_pct']:.0f}%",
                  "measured": f"{m['growth_pct']:+.1f}% ({m['rss_after_job5_mb']:.0f} -> "
                              f"{m['rss_after_last_mb']:.0f} MiB)",
                  "pass": m["growth_pct"] <= TARGETS["memory_growth_pct"]})
    return t


# -------------------------------------------------------------------------------- markdown
def _f(v, nd=0):
    if v is None:
        return "–"
    return f"{v:,.{nd}f}"


def _mp(s: dict, nd=0) -> str:
    return f"{_f(s['median'], nd)} / {_f(s['p95'], nd)}"


def jobs_table(jobs: dict) -> str:
    sizes = [k for k in SIZE_ORDER if k in jobs]
    hdr = "| ms, median / p95 | " + " | ".join(
        f"{k} ({jobs[k]['n']} jobs)" for k in sizes) + " |\n|---|" + "---:|" * len(sizes)
    rows = []
    for s in STAGES:
        line = f"| {s} | " + " | ".join(_mp(jobs[k]["stages"][s]) for k in sizes) + " |"
        rows.append(line)
        if s == "mask":
            rows.append("| &nbsp;&nbsp;of which model forward (faces, garments, SAM) | " + " | ".join(
                _f(jobs[k]["split_median"]["mask_model"]) + " (" + ", ".join(
                    f"{n.split('.')[-1]} {_f(v)}" for n, v in jobs[k]["forward_median"].items()
                    if n.startswith("mask.")) + ")" for k in sizes) + " |")
            rows.append("| &nbsp;&nbsp;of which GrabCut (fallback) | " + " | ".join(
                _f(jobs[k]["detail_median"].get("mask.grabcut")) for k in sizes) + " |")
            rows.append("| &nbsp;&nbsp;of which `post.finalize` (distance transforms) | " + " | ".join(
                _f(jobs[k]["detail_median"].get("mask.finalize")) for k in sizes) + " |")
        if s == "inpaint":
            rows.append("| &nbsp;&nbsp;of which `pipe.__call__` (model forward) | " + " | ".join(
                _f(jobs[k]["split_median"]["inpaint_model"]) for k in sizes) + " |")
        if s == "encode":
            for d, name in (("encode.result_png", "result PNG"), ("encode.mask_png", "mask PNG"),
                            ("encode.overlay_render", "overlay render"),
                            ("encode.overlay_jpeg", "overlay JPEG")):
                rows.append(f"| &nbsp;&nbsp;of which {name} | " + " | ".join(
                    _f(jobs[k]["detail_median"].get(d)) for k in sizes) + " |")
    rows.append("| **total** (worker `timings_ms.total`) | " + " | ".join(
        _mp(jobs[k]["stages"]["total"]) for k in sizes) + " |")
    rows.append("| **job** (handler call, wall) | " + " | ".join(
        _mp(jobs[k]["wall"]) for k in sizes) + " |")
    rows.append("| model forward (all seams) | " + " | ".join(
        _mp(jobs[k]["model_forward"]) for k in sizes) + " |")
    rows.append("| **overhead** = job - model forward | " + " | ".join(
        _mp(jobs[k]["overhead"]) for k in sizes) + " |")
    rows.append("| **overhead ratio** = overhead / model forward | " + " | ".join(
        _mp(jobs[k]["overhead_ratio"], 2) for k in sizes) + " |")
    rows.append("| output bytes (result PNG / overlay JPEG) | " + " | ".join(
        f"{_f(jobs[k]['bytes_median']['image'] / 1e6, 1)} MB / "
        f"{_f(jobs[k]['bytes_median']['overlay'] / 1e6, 2)} MB" for k in sizes) + " |")
    rows.append("| mask source | " + " | ".join(
        ", ".join(f"{a} x{b}" for a, b in jobs[k]["mask_source"].items()) for k in sizes) + " |")
    return hdr + "\n" + "\n".join(rows)


def cold_table(r: dict) -> str:
    c, f = r["cold_start"], r["floor"]
    im = c["imports_ms"]
    lines = [
        f"| stage (median of {c['runs']} fresh processes) | ms |", "|---|---:|",
        f"| interpreter start (spawn -> first line of `bench.child`) | {_f(c['stages_ms']['interpreter'])} |",
        f"| imports | {_f(c['stages_ms']['imports'])} |",
        f"| &nbsp;&nbsp;torch | {_f(im.get('torch'))} |",
        f"| &nbsp;&nbsp;diffusers | {_f(im.get('diffusers'))} |",
        f"| &nbsp;&nbsp;pipeline classes (transformers etc.) | {_f(im.get('pipeline_classes'))} |",
        f"| &nbsp;&nbsp;masking libs (ultralytics, segment_anything, insightface, onnxruntime) | {_f(im.get('masking_libs'))} |",
        f"| &nbsp;&nbsp;core, handler, boto3, runpod SDK | {_f(im.get('core_handler_sdk'))} |",
        f"| model set loaded (`Worker.cold_start`) | {_f(c['stages_ms']['load'])} |",
    ] + [f"| &nbsp;&nbsp;{k} | {_f(v)} |" for k, v in c["model_load_ms"].items() if k != "models"] + [
        f"| &nbsp;&nbsp;storage (boto3 S3 client) and the rest | {_f(c['stages_ms'].get('load_storage_client'))} |",
        f"| **ready** (spawn -> models loaded) | **{_f(c['spawn_to_ready_ms'])}** |",
        f"| first job (2 MP) | {_f(c['stages_ms']['first_job'])} |",
        f"| **first job done** (spawn -> first result) | **{_f(c['spawn_to_first_job_done_ms'])}** |",
        f"| second job (same size; first-job penalty = {_f(c['first_job_penalty_ms'])} ms) | {_f(c['second_job_ms'])} |",
        f"| RSS when ready | {_f(c['rss_ready_mb'])} MiB |",
        "| | |",
        f"| floor: fresh `python -c 'import torch, diffusers'` (spawn -> imported) | {_f(f['import_torch_diffusers_ms'])} |",
        f"| floor: read every weight file ({f['weights_files']} files, {f['weights_bytes'] / 1e6:.1f} MB; page cache evicted / warm) | {_f(f['read_weights_evicted_ms'], 1)} / {_f(f['read_weights_warm_ms'], 1)} |",
        f"| **floor** | **{_f(f['floor_ms'])}** |",
        f"| ready / floor | **{c['ready_vs_floor']:.2f}x** |",
        f"| first job done / floor | {c['first_job_done_vs_floor']:.2f}x |",
    ]
    if f.get("extended_floor_ms"):
        lines += [
            f"| (context) floor + the inpaint pipeline class import (transformers etc.), same fresh process | {_f(f['extended_floor_ms'])} |",
            f"| (context) ready / that extended floor | {c['ready_vs_extended_floor']:.2f}x |"]
    sdk = r.get("sdk_import")
    if sdk:
        lines += [
            f"| (context) fresh `import runpod` / with py-cpuinfo's `get_cpu_info` stubbed first | "
            f"{_f(sdk['runpod_import_ms'])} / {_f(sdk['runpod_import_cpuinfo_stubbed_ms'])} |"]
    return "\n".join(lines)


def memory_table(r: dict) -> str:
    m = r["memory"]
    n = m["jobs"]
    lines = ["| memory | MiB |", "|---|---:|",
             f"| RSS after cold start | {_f(m['rss_ready_mb'])} |",
             f"| RSS after 2 MP job 1 / 5 / {n} | {_f(m['rss_after_job1_mb'])} / "
             f"{_f(m['rss_after_job5_mb'])} / {_f(m['rss_after_last_mb'])} |",
             f"| growth job 5 -> {n} | {m['growth_pct']:+.2f}% (min {_f(m['rss_min_mb'])}, max {_f(m['rss_max_mb'])}) |",
             f"| peak RSS after the 2 MP jobs / after 0.5 + 12 MP | "
             f"{_f(m['peak_rss_mb']['after_2MP_flatness'])} / {_f(m['peak_rss_mb']['after_all_sizes'])} |"]
    if m.get("cuda"):
        lines.append(f"| CUDA max allocated / reserved ({m['cuda']['device']}) | "
                     f"{_f(m['cuda']['max_allocated_mb'])} / {_f(m['cuda']['max_reserved_mb'])} |")
    else:
        lines.append("| CUDA max allocated | – (no GPU) |")
    return "\n".join(lines)


def targets_table(r: dict) -> str:
    lines = ["| target | goal | measured | |", "|---|---|---|---|"]
    for t in r["targets"]:
        lines.append(f"| {t['target']} | {t['goal']} | {t['measured']} | "
                     f"{'PASS' if t['pass'] else '**FAIL**'} |")
    return "\n".join(lines)


def profile_table(r: dict) -> str:
    prof = r.get("profile") or {}
    if not prof:
        return "(profiling skipped)"
    out = []
    for label, a in prof.items():
        out.append(f"**{label}** (cProfile, {a['jobs']} job(s); per job: profiled "
                   f"{_f(a['profiled_total_ms_per_job'])} ms, model own time "
                   f"{_f(a['model_own_ms_per_job'])} ms, non-model own time "
                   f"{_f(a['nonmodel_own_ms_per_job'])} ms)\n")
        out.append("| non-model function (own time) | lib | ms / job | calls |\n|---|---|---:|---:|")
        for h in a["top_nonmodel"][:12]:
            out.append(f"| `{h['function']}` | {h['lib']} | {_f(h['own_ms_per_job'], 1)} | "
                       f"{_f(h['calls_per_job'])} |")
        out.append("")
    return "\n".join(out)


PROPOSAL_TEXT = {
    "encode_cv2_png": "Result PNG: `cv2.imencode` at zlib level 1 with one fixed row filter "
                      "(`IMWRITE_PNG_FILTER`, best measured) instead of the current encoder "
                      "(Pillow's adaptive filtering before 94ed7dd, OpenCV's default since)",
    "encode_mask_png": "Mask PNG (0/255, 8-bit): `cv2.imencode` with `IMWRITE_PNG_FILTER_NONE` "
                       "instead of the current encoder",
    "finalize_crop": "`post.finalize`: distance transforms on the mask's box grown by "
                     "dilate+feather+2 px (core does this since e2da955; the rest is the faster bbox)",
    "clean_crop": "`post.clean` (auto path: islands + holes, 2 connected-component passes) on the "
                  "mask's box grown by 1 px",
    "overlay_crop": "`render_overlay`: blend and find contours only inside the mask's box "
                    "(core does this since e2da955)",
    "composite_band": "`inpaint.composite`: float blend only in the 0<alpha<1 band, copies elsewhere",
    "decode_fewer_copies": "`decode_image`: `exif_transpose(in_place=True)`, no `convert('RGB')` of "
                           "an RGB image, one `np.array` (4 full-size copies -> 2)",
    "fast_bbox": "`post.bbox` via `any()` row/column projections instead of `np.nonzero` "
                 "(`crop_box`, `finalize`, `render_overlay` each call it)",
    "mask_to_uint8": "`(binary * 255).astype(uint8)` makes an int64 temporary: "
                     "`np.multiply(binary, 255, dtype=uint8)`",
    "bgr_cvtcolor": "`garments/faces.detect`: `cv2.cvtColor(RGB2BGR)` instead of "
                    "`np.ascontiguousarray(image[..., ::-1])` (2 per job)",
    "overlay_jpeg_cv2": "overlay JPEG via `cv2.imencode` (a preview)",
}


def _exact_cell(key: str, vals: list[dict]) -> str:
    if key == "finalize_crop":
        if all(v["identical"] for v in vals):
            return "yes"
        return ("repaint region identical; alpha differs by <= "
                f"{max(v['alpha_max_abs_diff'] for v in vals):.1e} in "
                f"{max(v['alpha_px_differing'] for v in vals)} px (float rounding of OpenCV's "
                "exact DT, which also varies with cv2's thread count in the baseline)"
                if all(v["repaint_region_identical"] for v in vals) else "NO")
    if key == "overlay_jpeg_cv2":
        return "same bytes" if all(v["same_bytes"] for v in vals) else (
            f"decoded max diff {max(v['max_abs_diff'] for v in vals)} (lossy preview)")
    ok = [v.get("identical", v.get("same_pixels")) for v in vals]
    return "yes" if all(x is True for x in ok) else f"NO {ok}"


def proposals_md(r: dict) -> str:
    p = r.get("proposals")
    if not p:
        return "(proposals skipped)"
    mi = p["micro"]
    sizes = [k for k in ("2MP", "12MP") if k in mi]
    lines = ["| proposal | " + " | ".join(f"{s}: current core -> proposal, ms (saved/job)" for s in sizes)
             + " | same output? (checked) |", "|---|" + "---:|" * len(sizes) + "---|"]
    best = p["e2e_config"]["png_filter"]
    status = p.get("core_status") or {}
    for key in ("encode_cv2_png", "encode_mask_png", "finalize_crop", "clean_crop", "overlay_crop",
                "composite_band", "decode_fewer_copies", "fast_bbox", "mask_to_uint8",
                "bgr_cvtcolor", "overlay_jpeg_cv2"):
        cells, vals = [], []
        for s in sizes:
            if key == "encode_cv2_png":
                e = mi[s]["encode_result_png"]
                v = e["variants"][f"cv2_{best}"]
                cells.append(f"{_f(e['before_ms'])} -> {_f(v['ms'])} ({_f(e['before_ms'] - v['ms'])}); "
                             f"{e['before_bytes'] / 1e6:.1f} -> {v['bytes'] / 1e6:.1f} MB")
                vals.append({"same_pixels": v.get("same_pixels")})
                continue
            m = mi[s][key]
            calls = m.get("calls_per_job", 1)
            extra = f", x{calls}/job" if calls > 1 else ""
            cells.append(f"{_f(m['before_ms'], 1)} -> {_f(m['after_ms'], 1)} "
                         f"({_f(m['saved_ms'] * calls, 1)}{extra})")
            vals.append(m)
        if key == "encode_mask_png":
            e = mi[sizes[-1]][key]
            cells[-1] += (f"; {e['bytes_before'] / 1e3:.0f} -> {e['bytes_after'] / 1e3:.0f} kB "
                          f"(1-bit `IMWRITE_PNG_BILEVEL`: {_f(e['bilevel_ms'], 1)} ms, "
                          f"{e['bilevel_bytes'] / 1e3:.0f} kB, but a 1-bit PNG changes the artefact)")
        done = " **(in core now)**" if status.get(key) else ""
        lines.append(f"| {PROPOSAL_TEXT[key]}{done} | " + " | ".join(cells)
                     + f" | {_exact_cell(key, vals)} |")
    cells = []
    for s in sizes:
        pe = mi[s]["parallel_encode"]
        cells.append(f"current encoder {_f(pe['sequential'])} -> {_f(pe['parallel'])}; "
                     f"with the proposed PNG filters {_f(pe['sequential_cv2png'])} -> "
                     f"{_f(pe['parallel_cv2png'])}")
    lines.append("| encode the 3 artefacts (result, mask, overlay render+JPEG) in 3 threads "
                 "instead of one after another (a change in `Worker._run`, not patchable: "
                 "micro only) | " + " | ".join(cells) + " | yes (same calls) |")
    if all("torch_threads" in mi[s] for s in sizes):
        cells = [f"{_f(mi[s]['torch_threads']['before_ms'])} -> {_f(mi[s]['torch_threads']['after_ms'])} "
                 f"({mi[s]['torch_threads']['threads_before']} -> {mi[s]['torch_threads']['threads_after']} threads)"
                 for s in sizes]
        lines.append("| CPU only: restore torch's thread count after loading the "
                     "garment detector (ultralytics' `select_device` sets min(8, cpus-1) = 1 here); "
                     "timed: the whole `core.inpaint.inpaint()`"
                     + (" **(in core now)**" if status.get("torch_threads") else "") + " | "
                     + " | ".join(cells)
                     + " | model numerics (thread count) |")
    cells = []
    for s in sizes:
        g = mi[s]["grabcut_side"]
        cells.append("; ".join(f"{k.replace('_', ' ')} {_f(v['median_ms'])} ms, IoU "
                               f"{v['iou_vs_current_same_seed']:.2f}" for k, v in g.items()))
    gd = mi[sizes[0]].get("grabcut_determinism") or {}
    lines.append(f"| `fallback.GRABCUT_SIDE` {gd.get('grabcut_side')} px (current) -> 3/4, 1/2, or "
                 f"`GRABCUT_ITERS` {gd.get('grabcut_iters')} -> one fewer (whole `fallback_mask`; IoU "
                 "vs the current setting with the same RNG seed; for scale, the current setting's own "
                 f"unseeded run-to-run IoU goes down to {gd.get('min_pairwise_iou', float('nan')):.2f}) | "
                 + " | ".join(cells) + " | no (mask changes) |")
    cells = []
    for s in sizes:
        c = mi[s]["crop_resize_reducing_gap"]
        cells.append(f"{_f(c['before_ms'], 1)} -> {_f(c['after_ms'], 1)} "
                     f"(crop {c['crop_px'][0]}x{c['crop_px'][1]} -> {c['model_px'][0]}x{c['model_px'][1]})")
    lines.append("| crop -> model size: Pillow LANCZOS with `reducing_gap=3.0` | " + " | ".join(cells)
                 + " | no: model input max diff " + ", ".join(
                     str(mi[s]["crop_resize_reducing_gap"]["max_abs_diff"]) for s in sizes) + " levels |")
    cells = []
    for s in sizes:
        d = mi[s]["decode_fewer_copies"]
        cells.append(f"{_f(d['before_ms'], 1)} -> {_f(d['cv2_imdecode_ms'], 1)}")
    lines.append("| (alternative) JPEG decode by `cv2.imdecode` + RGB conversion (EXIF orientation "
                 "then needs its own handling) | " + " | ".join(cells) + " | max diff " + ", ".join(
                     str(mi[s]["decode_fewer_copies"]["cv2_imdecode_max_abs_diff"]) for s in sizes) + " |")
    out = "\n".join(lines)

    gd = mi[sizes[0]].get("grabcut_determinism")
    if gd and gd["distinct_masks"] == 1:
        out += (f"\n\nThe fallback mask is repeatable: {gd['runs']} calls on the same photo gave "
                "one mask (GrabCut seeded).\n")
    elif gd:
        out += (f"\n\n**Finding: the fallback mask is not repeatable.** `fallback_mask` on the same "
                f"{sizes[0]} photo, {gd['runs']} calls in one process: {gd['distinct_masks']} "
                f"distinct masks, pairwise IoU down to {gd['min_pairwise_iou']:.3f} (coverage "
                f"{', '.join(str(c) for c in gd['coverage'])}). GrabCut's k-means init draws from "
                f"OpenCV's global RNG (`cv::theRNG()`), whose state carries from call to call; with "
                f"`cv2.setRNGSeed(...)` right before `grabCut` it is repeatable "
                f"({gd['seeded_repeatable']}). A redelivered job can therefore paint a different "
                f"region and then hit `storage_conflict` on its own output keys.\n")
    fc = p.get("first_call")
    if fc:
        new_loads = (r.get("models_loaded_once") or {}).get("new_loads_during_jobs")
        out += ("\nFirst detector call after cold start vs the second (64x64 blank image): " + "; ".join(
            f"{k} {_f(v['first_detect_ms'])} ms vs {_f(v['second_detect_ms'])} ms"
            for k, v in fc.items()) + ". "
            + ("Loads still happen during jobs (see Models loaded once): insightface 2.1 opens an "
               "ONNX session per detector input size on first use unless the loader warms it up.\n"
               if new_loads else "No model loads during jobs (both detectors are warmed up at load).\n"))
    e2e = p.get("e2e")
    if e2e:
        cfg = p["e2e_config"]
        out += ("\nEnd to end (whole jobs through the handler, arms interleaved, cv2 RNG seeded alike "
                f"before each job; B = every exact proposal that patches: {', '.join(cfg['exact'])} "
                f"(PNG filter `{cfg['png_filter']}`)"
                + ("; C = B + torch threads = CPU count" if any(
                    "C_" in a for d in e2e.values() for a in d["arms"]) else "") + "):\n\n")
        out += _e2e_table(e2e)
    return out


def _e2e_table(e2e: dict) -> str:
    out = ("| size | arm | n | job ms | model forward ms | overhead ms | decode | mask | inpaint "
           "| encode | upload | px differing from A (image, mask, overlay) |\n")
    out += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    for s, d in e2e.items():
        for arm, v in d["arms"].items():
            diff = d["pixels_differing_from_baseline"].get(arm)
            diff_s = "–" if diff is None else ", ".join(str(x) for x in diff.values())
            st = v["stages_ms"]
            out += (f"| {s} | {arm} | {v['n']} | {_f(v['wall_ms'])} | {_f(v['model_forward_ms'])} | "
                    f"**{_f(v['overhead_ms'])}** | {_f(st['decode'])} | {_f(st['mask'])} | "
                    f"{_f(st['inpaint'])} | {_f(st['encode'])} | {_f(st['upload'])} | {diff_s} |\n")
    return out


def _load_lines(meta: dict) -> str:
    lines = []
    for name, p in meta.get("load_by_phase", {}).items():
        lines.append(f"{name}: {p['wall_s']} s, bench used {p.get('own_cores')} cores, "
                     f"other processes {p.get('other_cores')} cores, loadavg "
                     f"{p['loadavg_start'][0]} -> {p['loadavg_end'][0]}")
    return "; ".join(lines)


def markdown(r: dict, out_dir: Path) -> str:
    meta = r["meta"]
    mach = meta["machine"]
    dev = r.get("device") or {}
    mo = r["models_loaded_once"]
    parts = [
        f"# maskpaint bench — {meta['date']} ({meta['mode']})\n",
        f"Machine: {mach['nproc']} CPUs (`nproc`), {mach['cpu_model']}, {mach['ram_gb']} GiB RAM, "
        f"{mach['os']}, Python {mach['python']}; device **{dev.get('device')}**"
        + (f" ({dev.get('gpu')})" if dev.get("gpu") else "")
        + f", torch {dev.get('torch')} (intra-op threads during jobs: {dev.get('torch_threads')}). "
        f"Weights: {meta['weights_dir']} ({'dev (tiny random)' if all(meta['dev_weights'].values()) else 'real'}: "
        f"{', '.join(meta['models_baked'])}), {meta['steps']} denoising steps. "
        f"Inputs: bus.jpg resized (LANCZOS, 3:4) to " + ", ".join(
            f"{k} {v['size'][0]}x{v['size'][1]} ({v['bytes'] / 1e6:.2f} MB JPEG q90)"
            for k, v in meta["inputs"].items())
        + f", fetched as `s3://` inputs from and uploaded to {meta['s3']}. "
        f"Run took {meta['duration_s']:.0f} s.\n",
        f"Load from other processes (2 cores shared with other engineers' test runs; "
        f"`other` = CPU-seconds used by other processes per second): {_load_lines(meta)}.\n",
        "## Targets\n", targets_table(r), "",
        "## Per-job stages (warm jobs)\n",
        "Model forward = time inside the model seams, wrapped from the bench: the diffusers "
        "`pipe.__call__` (whole call), `YOLO.predict`, `SamPredictor.set_image/predict_torch`, "
        "insightface `FaceAnalysis.get`. Everything else is overhead, including `core.inpaint`'s "
        "crop/resize/paste-back and the detectors' RGB->BGR copies. 2 MP = jobs 2..N of the "
        "memory-flatness run (job 1 is the first job after cold start). With dev weights the "
        "garment detector finds nothing, so these jobs take the **fallback** masking path "
        "(GrabCut).\n",
        jobs_table(r["jobs"]), "",
        "![stage breakdown](stages.png)\n",
    ]
    if r.get("auto_path"):
        parts += [
            "### Production masking path (dev weights with a rigged garment detector)\n",
            "Same jobs, but the tiny YOLO's head is rigged (`weights.tiny.masking.write_tiny_yolo("
            "bias_class=...)`) to find one garment on any photo, so the path real weights take runs: "
            "detect (retina masks at full size) -> SAM refine (tiny encoder, 1024 px input) -> union "
            "-> `post.clean` -> finalize; no GrabCut.\n",
            jobs_table(r["auto_path"]), ""]
        ae = (r.get("auto_raw") or {}).get("e2e")
        if ae:
            parts += ["On this path, baseline (A) vs every exact proposal applied by patching (B; "
                      "see Proposals), arms interleaved:\n", _e2e_table(ae), ""]
    parts += [
        "## Cold start\n", cold_table(r), "",
        "## Memory\n", memory_table(r), "", "![memory](memory.png)\n",
        "## Models loaded once\n",
        f"Loader calls, counted by wrapping every loader before cold start: "
        f"`{mo['loader_calls_after_cold_start']}`. New loads during the jobs: "
        f"`{mo['new_loads_during_jobs'] or 'none'}`. Model object ids unchanged across all jobs: "
        f"{mo['model_ids_stable']} ({', '.join(mo['models'])}).\n",
        "## Where non-model time goes (cProfile)\n", profile_table(r), "",
        "## Proposals (measured by monkeypatching from the bench; core/ untouched)\n",
        "Micro benchmarks on the real intermediate arrays of a 2 MP and a 12 MP job (2 MP only with "
        "`--quick`), arms alternated, medians. Rows marked **(in core now)** are already applied at "
        "this commit (detected from core's source): their numbers show what is left, or the old "
        "expression against the new one where the micro benchmark keeps both.\n",
        proposals_md(r), "",
    ]
    return "\n".join(parts)


def results_md(r: dict, out_dir: Path) -> str:
    meta = r["meta"]
    rel = "results"
    try:
        rel = str(out_dir.relative_to(Path(__file__).resolve().parent))
    except ValueError:
        rel = str(out_dir)
    body = markdown(r, out_dir).replace("](stages.png)", f"]({rel}/stages.png)")
    head = (
        "# Bench results\n\n"
        "Written by `python -m bench` (`make bench`; `--quick` for a shorter run). Raw numbers: "
        f"`bench/{rel}/latest.json`; the same report alone: `bench/{rel}/latest.md`; plots "
        f"`bench/{rel}/stages.png`, `bench/{rel}/memory.png`; profiles and the children's logs "
        f"in `bench/{rel}/tmp/` (`profile_*.prof`: `python -m pstats`).\n\n"
        f"Ran on {meta['date']}: `nproc` = {meta['machine']['nproc']}, "
        f"{meta['machine']['cpu_model']}, {meta['machine']['ram_gb']} GiB RAM.\n\n"
        "```bash\n"
        "make bench                                   # = MASKPAINT_WEIGHTS_DIR=.weights python -m bench\n"
        "python -m bench --quick                      # ~2.5 min here instead of ~9\n"
        "python -m bench --out /tmp/b --no-results-md # elsewhere, leave this file alone\n"
        "python -m bench --report-only                # re-render from bench/results/tmp/raw.json\n"
        "```\n\n"
        "How to read it:\n\n"
        "- **Dev weights on CPU** (tiny random models): the model forward times are tiny and the "
        "*overhead* (everything but the model seams) is the point. On a GPU with real weights the "
        "same command measures the real thing (20 steps by default, `--steps`).\n"
        "- With dev weights the garment detector finds nothing, so the main jobs take the "
        "**fallback** masking path (GrabCut). The *auto path* section re-runs 2 MP / 12 MP jobs "
        "with a rigged dev detector so the production path (detect -> SAM -> clean) is measured.\n"
        "- The S3 server (moto) runs in the bench's parent process on the same 2 cores: uploads "
        "cross a real socket but also take CPU from the worker; real S3 costs network time instead.\n"
        "- Other engineers run tests on the same 2 cores; the `other processes` figure per phase "
        "says how much CPU they took during the run. All job figures are medians (p95 beside).\n"
        "- Proposals are measured by monkeypatching from `bench/proposals.py`; nothing in `core/` "
        "is changed by the bench.\n\n"
    )
    return head + body.split("\n", 1)[1]


# ----------------------------------------------------------------------------------- plots
def plots(r: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jobs = {f"{k}\nfallback path": v for k, v in (r.get("jobs") or {}).items()}
    jobs.update({f"{k}\nauto path": v for k, v in (r.get("auto_path") or {}).items()})
    sizes = list(jobs)
    segs = [("fetch", "#8da0cb", None), ("decode", "#66c2a5", None),
            ("mask_model", "#fc8d62", "//"), ("mask_other", "#fc8d62", None),
            ("inpaint_model", "#e78ac3", "//"), ("inpaint_other", "#e78ac3", None),
            ("encode", "#a6d854", None), ("upload", "#ffd92f", None),
            ("handler_other", "#b3b3b3", None)]
    labels = {"mask_model": "mask: model forward", "mask_other": "mask: other (GrabCut, post)",
              "inpaint_model": "inpaint: pipe.__call__", "inpaint_other": "inpaint: crop/resize/paste",
              "handler_other": "handler (parse, reply)"}

    def val(k, seg):
        j = jobs[k]
        if seg in j["split_median"]:
            return max(0.0, j["split_median"][seg] or 0.0)
        return j["stages"][seg]["median"] or 0.0

    fig, axes = plt.subplots(1, 2, figsize=(7 + 1.6 * len(sizes), 5.4))
    for ax, norm in zip(axes, (False, True)):
        bottom = [0.0] * len(sizes)
        for seg, colour, hatch in segs:
            vals = [val(k, seg) for k in sizes]
            if norm:
                tot = [sum(val(k, s) for s, _, _ in segs) for k in sizes]
                vals = [100 * v / t if t else 0 for v, t in zip(vals, tot)]
            ax.bar(sizes, vals, bottom=bottom, color=colour, hatch=hatch, edgecolor="white",
                   label=labels.get(seg, seg))
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_ylabel("% of job" if norm else "ms (median)")
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title("share of the job" if norm else "job time by stage (hatched = model forward)")
        if not norm:
            for i, k in enumerate(sizes):
                ax.text(i, bottom[i], f"{bottom[i]:.0f} ms\noverhead {jobs[k]['overhead']['median']:.0f}",
                        ha="center", va="bottom", fontsize=8)
            ax.set_ylim(0, max(bottom) * 1.15 if bottom else 1)
    axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    meta = r["meta"]
    dev = (r.get("device") or {}).get("device")
    fig.suptitle(f"maskpaint per-job stages, {meta['machine']['nproc']} CPU "
                 f"{meta['machine']['cpu_model'][:40]}, device {dev}, {meta['steps']} steps, "
                 f"{meta['date'][:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "stages.png", dpi=110)
    plt.close(fig)

    m = r.get("memory")
    if m:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        xs = list(range(1, len(m["rss_series_mb"]) + 1))
        ax.plot(xs, m["rss_series_mb"], marker=".", lw=1)
        ax.axvline(5, color="grey", ls=":", lw=1)
        ax.set_xlabel("2 MP job # after cold start")
        ax.set_ylabel("RSS after job (MiB)")
        ax.set_title(f"memory flatness: {m['growth_pct']:+.2f}% from job 5 to job {m['jobs']}")
        fig.tight_layout()
        fig.savefig(out_dir / "memory.png", dpi=110)
        plt.close(fig)
