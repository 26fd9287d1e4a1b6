"""Where the non-model time goes: a cProfile of whole jobs, split into model / non-model.

A function counts as *model* when its code lives in a model library (torch, diffusers,
transformers, ultralytics, segment_anything, insightface, onnxruntime, ...) or it is a torch /
onnxruntime builtin. Functions of general libraries (numpy, Pillow, OpenCV, ...) and C builtins are
split by their callers: the share of their own time spent on behalf of model-library callers is
model time, the rest non-model. The result lists the biggest non-model functions (own time) and
the cumulative time of every maskpaint function (core/, handlers/).
"""

from __future__ import annotations

import pstats
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL_LIBS = {"torch", "torchvision", "diffusers", "transformers", "ultralytics",
              "segment_anything", "insightface", "onnxruntime", "safetensors", "accelerate",
              "tokenizers", "huggingface_hub"}
_SITE = re.compile(r"(?:site|dist)-packages/([A-Za-z0-9_]+)")


def lib_of(func: tuple[str, int, str]) -> str:
    file, _, name = func
    if file == "~":
        if "torch" in name:
            return "torch"
        if "onnxruntime" in name:
            return "onnxruntime"
        return "builtin"
    m = _SITE.search(file)
    if m:
        return m.group(1)
    try:
        rel = Path(file).resolve().relative_to(REPO)
        return rel.parts[0]
    except (ValueError, OSError):
        return "stdlib"


def _label(func: tuple[str, int, str]) -> str:
    file, line, name = func
    if file == "~":
        return name
    try:
        file = str(Path(file).resolve().relative_to(REPO))
    except (ValueError, OSError):
        m = _SITE.search(file)
        file = file[m.start(1):] if m else Path(file).name
    return f"{file}:{line}({name})"


def analyse(prof, jobs: list[dict], top: int = 18) -> dict:
    """Per-job averages (ms) of model vs non-model own time, the top non-model functions and the
    maskpaint functions' cumulative time."""
    st = pstats.Stats(prof)
    stats = st.stats  # func -> (cc, nc, tt, ct, callers)
    n = max(1, len(jobs))
    model_direct = {f for f in stats if lib_of(f) in MODEL_LIBS}

    def model_share(func) -> float:
        if func in model_direct:
            return 1.0
        callers = stats[func][4]
        tot = sum(v[2] for v in callers.values())
        if tot <= 0:
            return 0.0
        return sum(v[2] for c, v in callers.items() if c in model_direct) / tot

    rows = []
    model_s = nonmodel_s = 0.0
    for func, (cc, nc, tt, ct, _callers) in stats.items():
        share = model_share(func)
        model_s += tt * share
        nonmodel_s += tt * (1 - share)
        if share < 1.0:
            rows.append((tt * (1 - share), func, nc))
    rows.sort(reverse=True)
    hot = [{"function": _label(f), "lib": lib_of(f), "own_ms_per_job": round(v * 1000 / n, 2),
            "calls_per_job": round(nc / n, 1)} for v, f, nc in rows[:top]]
    ours = sorted(((v[3], f) for f, v in stats.items() if lib_of(f) in ("core", "handlers")),
                  reverse=True)
    cum = [{"function": _label(f), "cum_ms_per_job": round(ct * 1000 / n, 2)}
           for ct, f in ours[:25]]
    return {
        "jobs": n,
        "profiled_total_ms_per_job": round(st.total_tt * 1000 / n, 1),
        "model_own_ms_per_job": round(model_s * 1000 / n, 1),
        "nonmodel_own_ms_per_job": round(nonmodel_s * 1000 / n, 1),
        "top_nonmodel": hot,
        "maskpaint_cumulative": cum,
    }
