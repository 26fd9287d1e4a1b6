"""Local CLI, the third handler: run jobs on files from a shell.

``python -m handlers.cli demo`` runs one inpaint job on ultralytics' ``bus.jpg`` (a real photo)
through the RunPod handler, exactly as a RunPod event would, and prints where the outputs went.

``python -m handlers.cli run --image PHOTO [--mask MASK] [--task mask] [--prompt ...]`` runs one
job from files and prints the JSON reply (exit status 1 on error).

``python -m handlers.cli batch --jobs jobs.jsonl --target runpod|web ...`` runs a catalogue of
jobs through a provider (:mod:`handlers.batch`, ``docs/batch.md``).

``python -m handlers.cli test-input --image PHOTO [--mask MASK] ... > test_input.json`` writes
the job, with a fresh ``id``, as runpod's ``test_input.json``: ``python runpod_handler.py``
(no ``--test_input``) reads that file from the working directory (runpod 1.12,
``serverless/modules/rp_local.py``). A file has no argument-length limit (a photo passed as
``--test_input '<json>'`` fails past about 96 KB), and the fresh id keeps a second run from
colliding with the first in the write-once job record (runpod's own default id is always
``local_test``).

Reads files as bytes only; all image work happens in the core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

from handlers.common import DEMO_PROMPT, demo_job


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m handlers.cli")
    sub = ap.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="one job on bus.jpg through the RunPod handler")
    demo.add_argument("--steps", type=int, default=20)
    run = sub.add_parser("run", help="one job from files")
    run.add_argument("--image", type=Path, required=True)
    run.add_argument("--mask", type=Path)
    run.add_argument("--task", choices=["inpaint", "mask"], default="inpaint")
    run.add_argument("--prompt", default=DEMO_PROMPT)
    run.add_argument("--targets", nargs="+", default=["upper"])
    run.add_argument("--steps", type=int, default=20)
    run.add_argument("--seed", type=int)
    run.add_argument("--job-id", default=None)
    ti = sub.add_parser("test-input", help="print a job as runpod's test_input.json")
    ti.add_argument("--image", type=Path, help="photo file (default: ultralytics' bus.jpg)")
    ti.add_argument("--mask", type=Path)
    ti.add_argument("--task", choices=["inpaint", "mask"], default="inpaint")
    ti.add_argument("--prompt", default=DEMO_PROMPT)
    ti.add_argument("--targets", nargs="+", default=["upper"])
    ti.add_argument("--steps", type=int, default=20)
    ti.add_argument("--seed", type=int)
    from handlers.batch import cli as batch_cli

    batch_cli.build_parser(sub.add_parser(
        "batch", help="many jobs through RunPod or the web API (docs/batch.md)"))
    a = ap.parse_args(argv)

    if a.cmd == "batch":
        return batch_cli.main(args=a)

    if a.cmd == "test-input":
        job = demo_job(a.image, prompt=a.prompt, steps=a.steps, task=a.task, seed=a.seed,
                       targets=a.targets, mask_path=a.mask,
                       job_id=f"local-{uuid.uuid4().hex}")
        json.dump(job, sys.stdout)
        sys.stdout.write("\n")
        return 0

    from core.logs import setup_logging
    from core.pipeline import Worker
    from handlers.runpod import make_handler

    setup_logging("WARNING")
    t = time.perf_counter()
    worker = Worker.cold_start()
    cold = time.perf_counter() - t
    handler = make_handler(worker)

    if a.cmd == "demo":
        job = demo_job(prompt=DEMO_PROMPT, steps=a.steps, seed=42)
    else:
        job = demo_job(a.image, prompt=a.prompt, steps=a.steps, task=a.task, seed=a.seed,
                       targets=a.targets, mask_path=a.mask,
                       job_id=a.job_id or f"cli-{time.strftime('%Y%m%d-%H%M%S')}")

    t = time.perf_counter()
    out = handler(job)
    took = time.perf_counter() - t
    if a.cmd == "run" or "error" in out:
        print(json.dumps(out, indent=2))
        return 1 if "error" in out else 0

    dev = any(m.get("dev") for m in out["models"])
    print(json.dumps({k: out[k] for k in ("job_id", "seed", "mask_info", "models", "timings_ms")},
                     indent=2))
    print(f"\ninput:   bus.jpg ({out['size'][0]}x{out['size'][1]} px)")
    for kind in ("image", "mask", "overlay"):
        print(f"{kind + ':':8} {out[kind]['url']}")
    print(f"\ncold start (model load) {cold:.1f} s, job {took:.1f} s on {worker.models.device}")
    if dev:
        print("NOTE: dev weights are random: the masked region comes out as noise. "
              "Bake real weights for real edits (docs/weights.md).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
