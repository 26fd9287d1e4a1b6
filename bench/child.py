"""The measured processes. ``python -m bench.child MODE`` (spawned by ``python -m bench``).

Modes:
  floor      bare ``import torch, diffusers``; reports when it finished (wall clock), then the
             inpainting pipeline class import (context, not part of the floor).
  sdk        ``import runpod``, plain or as the worker does it (``BENCH_STUB_CPUINFO=1``:
             ``handlers.runpod.import_sdk``, without py-cpuinfo's subprocess).
  cold       a worker's cold start as production runs it: interpreter -> imports -> model set
             loaded (``runpod_handler.cold_start``) -> first job, a tiny one (0.5 MP) -> a second
             job of the same size (the first-job penalty).
  jobs       one worker: N warm jobs at 2 MP (memory flatness), then the 0.5 MP and 12 MP sweeps,
             then (optionally) cProfile'd 2 MP / 12 MP jobs; model-load counters and seam timers.
  auto       the production masking path with a rigged dev garment detector (detect -> SAM ->
             union -> clean): warm jobs and a profile.

Configuration comes from the environment the parent sets: ``MASKPAINT_*`` (weights dir, S3 bucket
and endpoint), ``BENCH_T_SPAWN`` (parent's wall clock just before spawning), ``BENCH_INPUTS``
(JSON: size label -> s3:// URL and local file), ``BENCH_STEPS``, ``BENCH_PLAN`` (JSON counts),
``BENCH_OUT`` (results dir for profile dumps).

The top of this module imports only the standard library, so ``interpreter`` is just that.
"""

import time

T_MAIN = time.time()
P_MAIN = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from bench.common import PROMPT, bare_codec_ms, centre_mask, emit  # noqa: E402


def _env_json(name: str, default):
    raw = os.environ.get(name)
    return json.loads(raw) if raw else default


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


# ----------------------------------------------------------------------------------- floor
def mode_floor() -> dict:
    """The floor: bare ``import torch, diffusers``; then (reported apart, not part of the floor)
    the inpainting pipeline classes, which every worker must import too."""
    t = time.perf_counter()
    import torch  # noqa: F401
    import diffusers

    import_ms = _ms(t)
    t_done = time.time()
    from weights.manifest import load_manifest

    for e in load_manifest().models.values():
        if e.kind == "diffusers_inpaint":
            getattr(diffusers, e.pipeline or "StableDiffusionInpaintPipeline")
    return {"t_main": T_MAIN, "t_done": t_done, "import_ms": import_ms,
            "t_pipeline_done": time.time()}


def mode_sdk() -> dict:
    """``import runpod`` in a fresh process: plain (runpod 1.12 runs py-cpuinfo's subprocess at
    import time), or, with ``BENCH_STUB_CPUINFO=1``, the way the worker imports it
    (``handlers.runpod.import_sdk``). ``handlers.runpod`` itself is imported first, untimed,
    in both."""
    stub = os.environ.get("BENCH_STUB_CPUINFO") == "1"
    from handlers.runpod import import_sdk

    t = time.perf_counter()
    if stub:
        import_sdk()
    else:
        import runpod  # noqa: F401

    return {"stub": stub, "import_ms": _ms(t)}


# ----------------------------------------------------------------------------------- jobs
def _event(inputs: dict, label: str, job_id: str, steps: int, mask: str | None = None,
           output: dict | None = None) -> dict:
    return {"id": job_id, "input": {
        "image": inputs[label]["url"], "prompt": PROMPT, "targets": ["upper"],
        "num_inference_steps": steps, "seed": 42, **({"mask": mask} if mask else {}),
        **({"output": output} if output else {}),
    }}


class Runner:
    """Runs jobs through the RunPod handler (what a RunPod event does) and records each."""

    def __init__(self, worker, inputs: dict, steps: int, tag: str) -> None:
        from handlers.runpod import make_handler

        self.worker = worker
        self.handler = make_handler(worker)
        self.inputs = inputs
        self.steps = steps
        self.tag = tag
        self.n = 0
        self.client = worker._s3_factory() if worker._s3_factory else None

    def run(self, label: str, mask: str | None = None, output: dict | None = None) -> dict:
        """One job (``mask``: a provided mask; ``output``: the request's ``output`` options)."""
        from bench import instrument as ins

        self.n += 1
        job_id = f"bench-{self.tag}-{os.getpid()}-{self.n:04d}-{label}"
        ev = _event(self.inputs, label, job_id, self.steps, mask, output)
        ins.reset()
        t = time.perf_counter()
        out = self.handler(ev)
        wall = (time.perf_counter() - t) * 1000
        if "error" in out:
            raise RuntimeError(f"job failed: {out}")
        forward = dict(ins.FORWARD_MS)
        rec = {
            "size": label, "job_id": job_id, "wall_ms": round(wall, 2),
            "timings_ms": out["timings_ms"],
            "forward_ms": {k: round(v, 2) for k, v in forward.items()},
            "model_forward_ms": round(sum(forward.values()), 2),
            # the worker's own account: total - sum of its timings_ms["*.forward"]
            "overhead_ms": round(out["timings_ms"]["total"] - sum(
                v for k, v in out["timings_ms"].items() if k.endswith(".forward")), 2),
            "detail_ms": {k: round(v, 2) for k, v in ins.DETAIL_MS.items()},
            "rss_mb": round(ins.rss_mb(), 1),
            "load_calls_total": sum(ins.LOAD_CALLS.values()),
            "mask_source": out["mask_info"]["source"],
            "coverage": out["mask_info"]["coverage"],
            "bytes": {k: out[k]["bytes"] for k in ("image", "mask", "overlay") if k in out},
        }
        self._cleanup(out)
        return rec

    def _cleanup(self, out: dict) -> None:
        """Delete this job's outputs from the S3 server (outside the timing) so the server's
        memory does not grow through the run."""
        if self.client is None:
            return
        bucket = self.worker.settings.s3_bucket
        for k in ("image", "mask", "overlay"):
            if k in out:
                try:
                    self.client.delete_object(Bucket=bucket, Key=out[k]["key"])
                except Exception:
                    pass


def _device_info(worker) -> dict:
    import platform

    import torch

    info = {"device": worker.models.device, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version()}
    if worker.models.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


#: The "tiny job" of the cold-start target: the smallest bench photo.
COLD_JOB_SIZE = "0.5MP"


def mode_cold() -> dict:
    """Cold start as production runs it, stage by stage (no bench instrumentation installed):
    the imports (timed in groups, in the order the worker needs them), ``runpod_handler``'s own
    ``cold_start()``, then the first job, a tiny one (:data:`COLD_JOB_SIZE` photo from S3,
    automatic masking, ``BENCH_STEPS`` steps) through the RunPod handler, then a second job of
    the same size (the first-job penalty)."""
    stages: dict[str, float] = {"interpreter": None}  # filled by the parent (spawn -> T_MAIN)
    marks = {"main": T_MAIN}
    from core.logs import setup_logging
    from weights.resolve import set_offline_env

    setup_logging()
    set_offline_env()
    imports: dict[str, float] = {}
    t0 = time.perf_counter()
    t = time.perf_counter()  # first, as in production: the entry point (torch-free) + boto3
    import boto3  # noqa: F401

    import runpod_handler  # the runpod SDK, core.pipeline, handlers.runpod; its env defaults

    imports["core_handler_sdk"] = _ms(t)
    t = time.perf_counter()
    import torch  # noqa: F401

    imports["torch"] = _ms(t)
    t = time.perf_counter()
    import diffusers

    imports["diffusers"] = _ms(t)
    t = time.perf_counter()
    from weights.manifest import load_manifest

    for e in load_manifest().models.values():
        if e.kind == "diffusers_inpaint":
            getattr(diffusers, e.pipeline or "StableDiffusionInpaintPipeline")
    imports["pipeline_classes"] = _ms(t)
    t = time.perf_counter()
    import core.masking.faces  # noqa: F401
    import core.masking.garments  # noqa: F401
    import core.masking.sam  # noqa: F401

    imports["masking_libs"] = _ms(t)
    stages["imports"] = _ms(t0)
    marks["imports_done"] = time.time()

    t = time.perf_counter()
    worker = runpod_handler.cold_start()  # what `python runpod_handler.py` runs before serving
    stages["load"] = _ms(t)
    marks["ready"] = time.time()
    from bench import instrument as ins

    stages["load_storage_client"] = round(stages["load"] - worker.cold_start_ms["models"], 1)

    rss_ready = ins.rss_mb()
    inputs = _env_json("BENCH_INPUTS", {})
    steps = int(os.environ.get("BENCH_STEPS", "4"))
    runner = Runner(worker, inputs, steps, "cold")  # jobs through handlers.runpod.make_handler
    label = os.environ.get("BENCH_COLD_SIZE", COLD_JOB_SIZE)
    first = runner.run(label)
    marks["first_job_done"] = time.time()
    stages["first_job"] = first["wall_ms"]
    second = runner.run(label)
    return {
        "marks": marks, "stages_ms": stages, "imports_ms": imports,
        "cold_start_ms": worker.cold_start_ms, "rss_ready_mb": round(rss_ready, 1),
        "peak_rss_mb": round(ins.peak_rss_mb(), 1), "first_job": first, "second_job": second,
        "size": label, **_device_info(worker),
    }


def _profile_jobs(runner, labels: list[str], reps: int, out_dir: str | None) -> dict:
    import cProfile

    from bench import profiling

    res = {}
    for label in labels:
        prof = cProfile.Profile()
        recs = []
        for _ in range(reps):
            prof.enable()
            recs.append(runner.run(label))
            prof.disable()
        dump = None
        if out_dir:
            dump = os.path.join(out_dir, f"profile_{label}.prof")
            prof.dump_stats(dump)
        res[label] = {"jobs": recs, "analysis": profiling.analyse(prof, recs), "dump": dump}
    return res


def mode_jobs() -> dict:
    from core.logs import setup_logging
    from weights.resolve import set_offline_env

    setup_logging()
    set_offline_env()
    from bench import instrument as ins

    plan = _env_json("BENCH_PLAN", {})
    inputs = _env_json("BENCH_INPUTS", {})
    steps = int(os.environ.get("BENCH_STEPS", "4"))
    ins.install_load_counters()
    from core.pipeline import Worker

    t = time.perf_counter()
    worker = Worker.cold_start()
    cold_ms = _ms(t)
    loads_cold = dict(ins.LOAD_CALLS)
    ins.install_seam_timers(worker.models)
    ins.install_detail_timers()
    ids_before = ins.model_ids(worker.models)
    rss_ready = ins.rss_mb()
    runner = Runner(worker, inputs, steps, "jobs")

    # 1. memory flatness at 2 MP: N jobs straight after cold start (job 1 is the first job)
    flat = [runner.run("2MP") for _ in range(plan.get("flat_jobs", 50))]
    peak_after_flat = ins.peak_rss_mb()
    ids_mid = ins.model_ids(worker.models)
    # 1b. peak RSS of each 12 MP job above this idle worker, and growth over those jobs
    from bench import job_targets

    rss12 = job_targets.rss_12mp(runner, plan.get("rss_12MP_jobs", 50))
    # 2. the other sizes: one warm-up each (recorded apart), then the repeats
    sweeps = {}
    for label in ("0.5MP", "12MP"):
        warm = runner.run(label)
        sweeps[label] = {"warmup": warm,
                         "jobs": [runner.run(label) for _ in range(plan.get(f"reps_{label}", 5))]}
    peak_after_sweeps = ins.peak_rss_mb()
    # 2b. provided mask, `auto` output (JPEG in -> JPEG out): each job paired with a bare Pillow
    # decode + JPEG q92 encode of the same photo right after it, so each ratio is same-moment
    provided = {}
    for label in ("2MP", "12MP"):
        mask = centre_mask(inputs[label]["file"])
        runner.run(label, mask)  # warm-up
        pairs = []
        for _ in range(plan.get("reps_provided", 5)):
            rec = runner.run(label, mask)
            pairs.append({"job": rec, "codec_ms": round(bare_codec_ms(inputs[label]["file"]), 2)})
        provided[label] = pairs
    # 2c. PNG output at 2 MP (provided mask): encode + upload
    png = job_targets.png_jobs(runner, inputs, plan.get("reps_png", 5))
    # 3. profiles
    profiles = {}
    if plan.get("profile_reps", 0) > 0:
        profiles = _profile_jobs(runner, ["2MP", "12MP"], plan["profile_reps"],
                                 os.environ.get("BENCH_OUT"))
    ids_after = ins.model_ids(worker.models)
    return {
        "cold_start_in_process_ms": cold_ms, "cold_start_ms": worker.cold_start_ms,
        "rss_ready_mb": round(rss_ready, 1),
        "flat_jobs": flat, "sweeps": sweeps, "provided": provided, "profiles": profiles,
        "png_output": png, "rss_12MP": rss12,
        "peak_rss_mb": {"after_2MP_flatness": round(peak_after_flat, 1),
                        "after_all_sizes": round(peak_after_sweeps, 1),
                        "end": round(ins.peak_rss_mb(), 1)},
        "cuda_memory": ins.cuda_memory(),
        "loads": {"after_cold_start": loads_cold, "end": dict(ins.LOAD_CALLS)},
        "model_ids": {"after_cold_start": ids_before, "after_flatness": ids_mid,
                      "end": ids_after},
        "missing_models": worker.models.missing,
        **_device_info(worker),
    }


def mode_auto() -> dict:
    """The production masking path (garment found -> SAM -> union -> clean) with dev weights:
    the weights dir holds a tiny YOLO whose head is rigged to detect one garment on any photo
    (``weights.tiny.masking.write_tiny_yolo(bias_class=...)``), so the stages after detection run.
    """
    from core.logs import setup_logging
    from weights.resolve import set_offline_env

    setup_logging()
    set_offline_env()
    from bench import instrument as ins

    plan = _env_json("BENCH_PLAN", {})
    inputs = _env_json("BENCH_INPUTS", {})
    steps = int(os.environ.get("BENCH_STEPS", "4"))
    from core.pipeline import Worker

    worker = Worker.cold_start()
    ins.install_seam_timers(worker.models)
    ins.install_detail_timers()
    runner = Runner(worker, inputs, steps, "auto")
    sweeps = {}
    # 2 MP: each automatic-masking job paired with a provided-mask job on this worker;
    # the automatic ones are the 2 MP sweep
    from bench import job_targets

    avp = job_targets.auto_vs_provided(runner, inputs, plan.get("auto_reps_2MP", 3))
    sweeps["2MP"] = {"warmup": avp["warmup"], "jobs": [p["auto"] for p in avp["pairs"]]}
    n = plan.get("auto_reps_12MP", 3)
    if n > 0:
        warm = runner.run("12MP")
        sweeps["12MP"] = {"warmup": warm, "jobs": [runner.run("12MP") for _ in range(n)]}
    profiles = {}
    if plan.get("profile_reps", 0) > 0:
        labels = [k for k in ("2MP", "12MP") if plan.get(f"auto_reps_{k}", 0) > 0]
        profiles = _profile_jobs(runner, labels, plan["profile_reps"], None)
    return {"sweeps": sweeps, "auto_vs_provided": avp, "profiles": profiles,
            "missing_models": worker.models.missing,
            **_device_info(worker)}


MODES = {"floor": mode_floor, "sdk": mode_sdk, "cold": mode_cold, "jobs": mode_jobs, "auto": mode_auto}

if __name__ == "__main__":
    mode = sys.argv[1]
    result = MODES[mode]()
    result.setdefault("t_main", T_MAIN)
    result["t_exit"] = time.time()
    emit(result)
