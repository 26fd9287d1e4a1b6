"""The GPU bench: real-size random-weight models through the production loaders and the RunPod
handler, on one CUDA GPU. ``python -m bench.gpu [--quick] [--weights DIR] [--out DIR]``.

This process only orchestrates (no torch): every measurement runs in a fresh child process
(:mod:`bench.gpu_child`) with a time limit, so one hang or crash costs one phase, not the run.

1. ``weights``: real-size random models in the baked layout (:mod:`bench.gpu_weights`), built
   on the GPU and saved fp16; the MediaPipe face and pose models from a local mirror.
2. ``main``: every model of the weights dir loaded by the worker's cold start, then the job
   matrix (:func:`bench.gpu_jobs.matrix`) with the anchor (bare diffusers
   ``AutoPipelineForInpainting`` at the native size, same weights) after the first cells, and
   generation buckets off vs on.
3. ``warmup``: a fresh cold start with ``MASKPAINT_WARMUP=1``: its first job against its warm
   ones.
4. ``compile``: ``python -m core.compile`` for SD 1.5 at the bucket the 0.9 MP job lands in.
5. ``floor``, ``cold``, ``compiled``: each after the page cache is dropped
   (``/proc/sys/vm/drop_caches``, where writable): a fresh process measures the cold start's
   floor (imports, CUDA init, one read of the weight bytes); another the worker's cold start,
   its first job and warm jobs; the last the same with the compile artefacts, warm-up and
   buckets on.

``--quick`` sizes the phases to end within about 6 minutes on an H100 / H200 (setup included):
the deadline is checked before each phase and each child is killed at its share. ``--tiny
--device cpu`` runs the same code with the dev weights (CI: ``tests/test_bench_gpu.py``).
Results: ``<out>/gpu.json``, ``<out>/gpu.md``, and the ``## GPU`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import parse_child_stdout

REPO = Path(__file__).resolve().parents[1]
#: Seconds each phase may take at most (quick mode); full mode doubles them (compile x4).
QUICK_BUDGET_S = {"weights": 80, "main": 75, "warmup": 30, "compile": 90, "floor": 40,
                  "cold": 45, "compiled": 75}
#: Tiny (CPU check): generous, so a loaded shared machine finishes rather than times out.
TINY_BUDGET_S = {"weights": 300, "floor": 300, "cold": 300, "main": 300, "warmup": 300,
                 "compile": 600, "compiled": 300}
#: The models a cold-start child loads (a view of the weights dir; the face and pose models are
#: small and keep the masking stage as in production).
COLD_KEYS = ("sd15-inpaint", "faces-blazeface-full", "pose-mediapipe-full")
TINY_MAIN_KEYS = ("sd15-inpaint", "sdxl-inpaint", "ip-adapter-sd15", "controlnet-openpose-sd15",
                  "faces-blazeface-full", "pose-mediapipe-full")


def drop_caches() -> bool:
    """Drop Linux's page cache (root only); False when not allowed."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


def make_view(weights: Path, keys: tuple[str, ...], dst: Path) -> Path:
    """A weights dir holding only ``keys``: symlinks to ``weights``' model files and its own
    receipt, so a worker loads just those (``weights.resolve`` follows the links)."""
    from weights.manifest import load_manifest, load_receipt, write_receipt_entry

    manifest = load_manifest()
    receipt = load_receipt(weights).models
    dst.mkdir(parents=True, exist_ok=True)
    for key in keys:
        if key not in receipt:
            continue
        rel = manifest.models[key].path
        link = dst / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to((weights / rel).resolve())
        write_receipt_entry(dst, key, receipt[key])
    return dst


#: Each model with both add-ons: the heaviest profile a card must hold.
PROFILE_KEYS = {"sd15-inpaint": ("sd15-inpaint", "ip-adapter-sd15", "controlnet-openpose-sd15"),
                "sdxl-inpaint": ("sdxl-inpaint", "ip-adapter-sdxl-vith",
                                 "controlnet-openpose-sdxl")}


def profile_weight_gib(weights: Path) -> dict[str, float]:
    """GiB of safetensors per :data:`PROFILE_KEYS` entry in ``weights`` (fp16 on disk: what the
    GPU holds), for the models present."""
    from weights.manifest import load_manifest

    manifest = load_manifest()
    out = {}
    for base, keys in PROFILE_KEYS.items():
        total = sum(f.stat().st_size for k in keys
                    for f in (weights / manifest.models[k].path).rglob("*.safetensors"))
        out[base] = round(total / 2 ** 30, 3)
    return out


def environment(device: str) -> dict:
    """GPU name, driver and memory (``nvidia-smi``), library versions, Python, CPUs."""
    import platform
    from importlib import metadata

    env = {"python": platform.python_version(), "cpus": os.cpu_count(), "device": device,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for name in ("torch", "diffusers", "transformers", "triton", "numpy", "pillow",
                 "opencv-python", "opencv-python-headless", "safetensors", "accelerate"):
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        name, driver, mem = [v.strip() for v in q.stdout.splitlines()[0].split(",")]
        env.update(gpu=name, driver=driver, gpu_memory=mem)
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        env["gpu"] = None
    return env


class Runner:
    """Runs the phases' children against one deadline; logs go to ``<scratch>/<phase>.log``."""

    def __init__(self, deadline: float, scratch: Path, budgets: dict[str, float],
                 only: list[str] | None = None, drop: bool = True) -> None:
        self.only = only
        self.drop = drop  # (never on a shared CPU machine: the tiny check must not evict others)
        self.deadline = deadline
        self.scratch = scratch
        self.budgets = budgets
        self.phases: dict[str, dict] = {}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def child(self, phase: str, argv: list[str], env: dict[str, str] | None = None,
              drop: bool = False) -> dict | None:
        budget = min(self.budgets[phase], self.left())
        if self.only and phase not in self.only:
            self.phases[phase] = {"skipped": "not asked for (--phases)"}
            return None
        if budget < 10:
            self.phases[phase] = {"skipped": "out of time"}
            print(f"[gpu bench] {phase}: skipped (out of time)", flush=True)
            return None
        t = time.monotonic()
        dropped = drop_caches() if drop and self.drop else None
        drop_s = round(time.monotonic() - t, 1)  # (the sync writes back what is still dirty)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_T0": repr(time.time()),
                    **(env or {})}
        log = self.scratch / f"{phase}.log"
        t = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, *argv], cwd=REPO, env=full_env, text=True,
                                  stdout=subprocess.PIPE, stderr=log.open("w"), timeout=budget)
            stdout, rc = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as exc:
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            rc = "timeout"
        wall = round(time.monotonic() - t, 1)
        info = {"wall_s": wall, "rc": rc, "budget_s": round(budget), "caches_dropped": dropped,
                "drop_s": drop_s}
        try:
            info["result"] = parse_child_stdout(stdout)
        except ValueError:  # (core.compile prints no result line: its rc says it all)
            if rc != 0:
                info["error"] = (log.read_text()[-2000:] if log.exists() else "") or "no result"
        self.phases[phase] = info
        print(f"[gpu bench] {phase}: rc={rc} in {wall} s", flush=True)
        return info.get("result")


def compile_size(resolution: int) -> tuple[int, int]:
    """The bucket the 0.9 MP job's crop lands in (its mask grown by the contract's default
    dilate + feather, which moves the box by a few px: the same bucket)."""
    import numpy as np

    from bench.gpu_jobs import MASK_BOX, SIZES
    from core.buckets import buckets_for, fit_bucket
    from core.inpaint import crop_box

    w, h = SIZES["0.9MP"]
    alpha = np.zeros((h, w), np.float32)
    x0, y0, x1, y1 = MASK_BOX
    grow = 8 + 8
    alpha[max(0, int(h * y0) - grow):int(h * y1) + grow,
          max(0, int(w * x0) - grow):int(w * x1) + grow] = 1
    return fit_bucket(crop_box(alpha), (w, h), buckets_for(resolution))[1]


def run(a: argparse.Namespace) -> dict:
    t_start = time.monotonic()
    budgets = dict(TINY_BUDGET_S if a.tiny else QUICK_BUDGET_S)
    if not (a.quick or a.tiny):
        budgets = {k: v * (4 if k.startswith("compile") else 2) for k, v in budgets.items()}
    budgets.update({k: float(v) for k, v in (b.split("=", 1) for b in a.budget)})
    runner = Runner(t_start + a.deadline_s, a.scratch or a.out / "tmp", budgets, a.phases,
                    drop=a.device.startswith("cuda"))
    import shutil

    shutil.rmtree(runner.scratch / "out", ignore_errors=True)  # (job records of an older run)
    runner.scratch.mkdir(parents=True, exist_ok=True)
    steps = a.steps or (2 if a.tiny else 30)
    dev = ["--device", a.device]
    res: dict = {"mode": "tiny" if a.tiny else ("quick" if a.quick else "full"), "steps": steps,
                 "env": environment(a.device), "weights": str(a.weights)}
    if not a.tiny:
        argv = ["-m", "bench.gpu_weights", "--out", str(a.weights), *dev]
        if a.mediapipe and a.mediapipe.is_dir():
            argv += ["--mirror", str(a.mediapipe)]
        res["write"] = runner.child("weights", argv)
    res["profile_weight_gib"] = profile_weight_gib(a.weights)
    views = runner.scratch / "views"
    cold_view = make_view(a.weights, COLD_KEYS, views / "cold")
    main_view = make_view(a.weights, TINY_MAIN_KEYS, views / "main") if a.tiny else a.weights
    # Moderation off: its models (ONNX on the CPU, ~12-24 MB each) are not written into the
    # bench's weights nor carried to the device (the upload is capped at 64 MiB); the CPU bench
    # reports their cost (timings_ms["safety.forward"]). Without them a worker answers every job
    # `safety_unavailable`, by design.
    common = {"MASKPAINT_DEVICE": a.device, "MASKPAINT_OUTPUT_DIR": str(runner.scratch / "out"),
              "MASKPAINT_LOG_LEVEL": "WARNING", "MASKPAINT_SAFETY": "off"}
    res["safety"] = "off"
    cold_env = {**common, "MASKPAINT_WEIGHTS_DIR": str(cold_view)}
    cell = ["--cells", "sd15-inpaint/0.9MP/plain", "--steps", str(steps)] + (
        ["--tiny", "--reps", "0"] if a.tiny else ["--reps", "2"])
    # Order: what needs every model runs while the freshly written weights are still in the
    # page cache (a cold read of ~15 GB at the ~100 MB/s seen on the lent disk would eat the
    # run); the processes measured cold come last, each after its own cache drop.
    main_argv = ["-m", "bench.gpu_child", "main", "--steps", str(steps), *dev,
                 "--budget-s", str(max(10, budgets["main"] - 20)),
                 "--anchor-reps", "1" if (a.quick or a.tiny) else "3"]
    main_argv += ["--quick"] if a.quick else []
    main_argv += ["--tiny"] if a.tiny else []
    res["main"] = runner.child("main", main_argv,
                               {**common, "MASKPAINT_WEIGHTS_DIR": str(main_view)})
    res["warmup"] = runner.child("warmup", ["-m", "bench.gpu_child", "cold", *cell],
                                 {**cold_env, "MASKPAINT_WARMUP": "1"})
    if not a.skip_compile:
        native = 256 if a.tiny else 512
        try:
            size = compile_size(native)
        except Exception as exc:  # (the bench goes on: the native square is a bucket too)
            print(f"[gpu bench] compile size: {type(exc).__name__}: {exc}", flush=True)
            size = (native, native)
        res["compile_size"] = list(size)
        res["compile"] = runner.child("compile", [
            "-m", "core.compile", "--weights", str(cold_view), "--models", "sd15-inpaint",
            "--variants", "plain", "--size", f"{size[0]}x{size[1]}", *dev],
            {**common, "MASKPAINT_LOG_LEVEL": "INFO"})
    res["floor"] = runner.child("floor", ["-m", "bench.gpu_child", "floor", "--weights",
                                          str(cold_view), *dev], drop=True)
    res["cold"] = runner.child("cold", ["-m", "bench.gpu_child", "cold", *cell], cold_env,
                               drop=True)
    if (runner.phases.get("compile") or {}).get("rc") == 0:
        res["compiled"] = runner.child("compiled", [
            "-m", "bench.gpu_child", "cold", *cell],
            {**cold_env, "MASKPAINT_WARMUP": "1", "MASKPAINT_COMPILE_UNET": "1",
             "MASKPAINT_GENERATION_BUCKETS": "1"}, drop=True)
    res["phases"] = {k: {kk: vv for kk, vv in v.items() if kk != "result"}
                     for k, v in runner.phases.items()}
    res["total_s"] = round(time.monotonic() - t_start, 1)
    return res


def main(argv: list[str] | None = None) -> int:
    from bench import gpu_report

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="about 6 minutes on an H100 / H200")
    ap.add_argument("--tiny", action="store_true", help="the dev weights (a CPU check)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--weights", type=Path, default=None,
                    help="weights dir (real-size models are written there when missing; "
                    "default /tmp/maskpaint-gpu-weights, or the dev weights with --tiny)")
    ap.add_argument("--mediapipe", type=Path, default=REPO / ".whl" / "mediapipe",
                    help="mirror of the MediaPipe face and pose models (make gpu-wheels)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--scratch", type=Path, default=None,
                    help="children's logs, weight views, job outputs (default <out>/tmp)")
    ap.add_argument("--phases", nargs="*", default=None,
                    choices=("weights", "floor", "cold", "main", "warmup", "compile", "compiled"),
                    help="only these phases (default: all)")
    ap.add_argument("--results-md", type=Path, default=REPO / "bench" / "RESULTS.md",
                    help="the Markdown file whose '## GPU' section is rewritten")
    ap.add_argument("--no-results-md", action="store_true")
    ap.add_argument("--steps", type=int, default=None, help="30 (2 with --tiny)")
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--deadline-s", type=float, default=None,
                    help="whole run (default: 350 quick, 900 tiny, 1500 full)")
    ap.add_argument("--budget", nargs="*", default=[], metavar="PHASE=S",
                    help="a phase's time limit, s (e.g. main=400 to fill the job matrix)")
    a = ap.parse_args(argv)
    if a.weights is None:
        a.weights = (Path(os.environ.get("MASKPAINT_TEST_WEIGHTS_DIR", REPO / ".weights"))
                     if a.tiny else Path("/tmp/maskpaint-gpu-weights"))
    a.deadline_s = a.deadline_s or (900 if a.tiny else 350 if a.quick else 1500)
    a.out.mkdir(parents=True, exist_ok=True)
    res = run(a)
    (a.out / "gpu.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    md = gpu_report.markdown(res)
    (a.out / "gpu.md").write_text(md)
    if not a.no_results_md:
        gpu_report.splice(a.results_md, md)
    print(gpu_report.summary(res), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
