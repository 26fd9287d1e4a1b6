"""The GPU bench's fresh processes: ``python -m bench.gpu_child floor|cold|main ...``.

Each prints one ``@@BENCH@@ <json>`` line (:mod:`bench.common`). ``BENCH_T0`` (the parent's
``time.time()`` just before it started this process) makes ``*_from_spawn_ms`` include the
interpreter's own start.

- ``floor``: what no cold start can avoid: ``import torch``, CUDA initialisation, importing the
  diffusers / transformers classes the worker loads with, and reading every byte of the
  weights dir's files once (64 MiB reads).
- ``cold``: the worker's cold start (:meth:`core.pipeline.Worker.cold_start`, settings from the
  ``MASKPAINT_*`` environment the parent set), then the first job and ``--reps`` more of the
  same cell, each through the RunPod handler.
- ``main``: the model set of the whole weights dir, then the job matrix (:func:`bench.gpu_jobs.
  matrix`), generation buckets on vs off, and the bare diffusers anchor, within ``--budget-s``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench.common import emit


def _since_spawn_ms() -> float | None:
    t0 = os.environ.get("BENCH_T0")
    return round((time.time() - float(t0)) * 1000, 1) if t0 else None


def floor(weights: Path, device: str) -> dict:
    out: dict = {}
    t = time.perf_counter()
    import torch

    out["import_torch_ms"] = round((time.perf_counter() - t) * 1000, 1)
    t = time.perf_counter()
    if device.startswith("cuda"):
        torch.cuda.init()
        torch.empty(1, device=device)
        torch.cuda.synchronize()
    out["cuda_init_ms"] = round((time.perf_counter() - t) * 1000, 1)
    t = time.perf_counter()
    import diffusers  # noqa: F401
    from diffusers import (ControlNetModel, StableDiffusionInpaintPipeline,  # noqa: F401
                           StableDiffusionXLInpaintPipeline)
    from transformers import CLIPTextModel, CLIPVisionModelWithProjection  # noqa: F401

    out["import_diffusers_ms"] = round((time.perf_counter() - t) * 1000, 1)
    t = time.perf_counter()
    total = 0
    files = sorted(Path(root) / n for root, _, names in os.walk(weights, followlinks=True)
                   for n in names)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while chunk := fh.read(64 << 20):
                total += len(chunk)
    out["read_ms"] = round((time.perf_counter() - t) * 1000, 1)
    out["read_bytes"] = total
    out["read_mb_s"] = round(total / 1e6 / max(1e-9, out["read_ms"] / 1000), 1)
    out["from_spawn_ms"] = _since_spawn_ms()
    return out


def cold(cell_names: list[str], steps: int, reps: int, tiny: bool) -> dict:
    from bench.gpu_jobs import SIZES, TINY_SIZES, Cell, Inputs, run_job
    from core.logs import setup_logging
    from core.pipeline import Worker
    from core.settings import Settings
    from handlers.runpod import make_handler

    setup_logging()
    settings = Settings()
    t = time.perf_counter()
    worker = Worker.cold_start(settings)
    out: dict = {"cold_start_ms": round((time.perf_counter() - t) * 1000, 1),
                 "ready_from_spawn_ms": _since_spawn_ms(),
                 "worker_cold_start_ms": worker.cold_start_ms, "jobs": []}
    handler = make_handler(worker)
    inputs = Inputs(TINY_SIZES if tiny else SIZES)
    for name in cell_names:
        model, size, variant = name.split("/")[:3]
        cell = Cell(model, size, variant)
        for i in range(reps + 1):
            job_id = f"cold-{os.getpid()}-{i}"  # (a reused id returns the recorded result)
            rec = run_job(handler, inputs.job(cell, steps), job_id,
                          settings.output_dir / settings.s3_prefix)
            out["jobs"].append({"cell": cell.name, "rep": i, **rec})
    out["dispatch"] = {k: getattr(m.pipe.unet.forward, "calls", None)
                       for k, m in worker.models.inpainters.items()}
    return out


def main(steps: int, quick: bool, tiny: bool, budget_s: float, anchor_reps: int,
         device: str) -> dict:
    import torch

    from bench.gpu_jobs import MODELS, SIZES, TINY_SIZES, Cell, Inputs, anchor, matrix, run_job
    from core.logs import setup_logging
    from core.pipeline import Worker
    from core.settings import Settings
    from handlers.runpod import make_handler

    deadline = time.perf_counter() + budget_s
    setup_logging()
    settings = Settings()
    t = time.perf_counter()
    worker = Worker.cold_start(settings)
    out: dict = {"cold_start_ms": round((time.perf_counter() - t) * 1000, 1),
                 "worker_cold_start_ms": worker.cold_start_ms,
                 "idle_vram_gib": round(torch.cuda.memory_allocated() / 2 ** 30, 3)
                 if torch.cuda.is_available() else None,
                 "jobs": [], "skipped": [], "buckets": [], "anchor": []}
    handler = make_handler(worker)
    inputs = Inputs(TINY_SIZES if tiny else SIZES)
    reps = 0 if tiny else (1 if quick else 2)
    last: dict[tuple[str, str], float] = {}
    n = 0

    def job(cell: Cell, tag: str) -> dict | None:
        nonlocal n
        est = last.get((cell.model, cell.size), 0) * 1.3 / 1000
        if time.perf_counter() + est > deadline:
            return None
        n += 1
        job_id = f"main-{os.getpid()}-{n}"  # (a reused id returns the recorded result)
        rec = run_job(handler, inputs.job(cell, steps), job_id,
                      settings.output_dir / settings.s3_prefix)
        last[(cell.model, cell.size)] = max(last.get((cell.model, cell.size), 0),
                                            rec["wall_ms"])
        return {"cell": cell.name, "tag": tag, **rec}

    # the matrix: each cell once cold (its first job at that shape) and ``reps`` times warm;
    # the anchor runs after the plain 0.9 MP cells (the targets need it), on a copy of the
    # pipeline loaded from the same files
    cells = matrix(quick, tiny)
    n_first = sum(1 for c in cells if c.size == "0.9MP" and c.variant == "plain")
    for i_cell, cell in enumerate(cells):
        recs = [job(cell, "first" if i == 0 else "warm") for i in range(reps + 1)]
        if any(r is None for r in recs):
            out["skipped"].append(cell.name)
        out["jobs"] += [r for r in recs if r is not None]
        if i_cell + 1 == n_first:
            for model in MODELS[:1] if tiny else MODELS:
                if time.perf_counter() > deadline:
                    out["skipped"].append(f"anchor/{model}")
                    continue
                try:  # (beside the worker's models: a small card may not hold both)
                    out["anchor"].append(anchor(Path(settings.weights_dir), model, steps,
                                                anchor_reps, device, warm_up=not tiny))
                except Exception as exc:
                    out["skipped"].append(f"anchor/{model}: {type(exc).__name__}: {exc}"[:300])

    # generation buckets off vs on, alternating, same cell, same process
    for model in MODELS[:1] if tiny else MODELS:
        cell = Cell(model, "0.9MP", "plain")
        for i in range(2 if tiny else 4):
            on = bool(i % 2)
            worker.settings.generation_buckets = on
            r = job(cell, "buckets-on" if on else "buckets-off")
            if r is None:
                break
            out["buckets"].append(r)
        worker.settings.generation_buckets = False

    return out


def cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("floor", "cold", "main"))
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--cells", nargs="*", default=["sd15-inpaint/0.9MP/plain"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--budget-s", type=float, default=300)
    ap.add_argument("--anchor-reps", type=int, default=3)
    a = ap.parse_args(argv)
    from weights.resolve import set_offline_env

    set_offline_env()
    if a.mode == "floor":
        emit(floor(a.weights, a.device))
    elif a.mode == "cold":
        emit(cold(a.cells, a.steps, a.reps, a.tiny))
    else:
        emit(main(a.steps, a.quick, a.tiny, a.budget_s, a.anchor_reps, a.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
