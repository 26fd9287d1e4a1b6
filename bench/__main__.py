"""``python -m bench [--quick] [--out bench/results]``: the worker benchmark.

Runs in this (parent) process: a moto S3 server on 127.0.0.1 (a real socket for every fetch and
upload), the benchmark photos, the weight-file read floor, and the children that are measured
(``bench.child``): floor imports, cold starts, the warm-job runs and the auto-path scenario.
Then writes ``<out>/latest.json`` (raw + summaries + target verdicts),
``<out>/latest.md``, ``<out>/stages.png``, ``<out>/memory.png`` and ``bench/RESULTS.md``; scratch
(children's logs, ``raw.json``, ``profile_*.prof``) goes to ``<out>/tmp/``.

Weights: ``MASKPAINT_WEIGHTS_DIR`` (``Settings().weights_dir``; default ``.weights``); dev weights
run 4 denoising steps, real ones 20 (``--steps``). Device: ``MASKPAINT_DEVICE`` or CUDA when
available (the children decide, as the worker does).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import SIZES, make_photo, parse_child_stdout

REPO = Path(__file__).resolve().parents[1]
BUCKET = "maskpaint-bench"
#: Inputs live in their own bucket: the worker never reads its output bucket
#: (``MASKPAINT_INPUT_BUCKETS``).
INPUT_BUCKET = "maskpaint-bench-inputs"

FULL = {"floor_runs": 3, "sdk_runs": 2, "cold_runs": 3, "flat_jobs": 50, "reps_0.5MP": 8,
        "reps_12MP": 5, "profile_reps": 1, "auto_reps_2MP": 5, "auto_reps_12MP": 3,
        "reps_provided": 5, "reps_png": 5, "rss_12MP_jobs": 50}
QUICK = {"floor_runs": 2, "sdk_runs": 1, "cold_runs": 2, "flat_jobs": 10, "reps_0.5MP": 2,
         "reps_12MP": 2, "profile_reps": 1, "auto_reps_2MP": 3, "auto_reps_12MP": 0,
         "reps_provided": 3, "reps_png": 3, "rss_12MP_jobs": 10}
#: the garment class the rigged dev detector "finds" in the auto-path scenario
AUTO_BIAS_CLASS = "long_sleeved_shirt"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------- machine & load
def machine_info() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    ram_gb = None
    try:
        import psutil

        ram_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() \
        or str(os.cpu_count())
    return {"nproc": int(nproc), "cpu_model": cpu, "ram_gb": ram_gb,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "hostname_hash": abs(hash(platform.node())) % 10**6}


class LoadProbe:
    """CPU used by *other* processes during a phase: system busy CPU-seconds minus this
    process's and its children's, per second of wall time (i.e. cores' worth), plus loadavg."""

    def __init__(self) -> None:
        self.phases: dict[str, dict] = {}

    def _busy(self) -> float | None:
        try:
            import psutil

            t = psutil.cpu_times()
            return t.user + t.system + getattr(t, "nice", 0) + getattr(t, "irq", 0) \
                + getattr(t, "softirq", 0) + getattr(t, "steal", 0)
        except ImportError:
            return None

    def start(self, name: str) -> None:
        ot = os.times()
        self.phases[name] = {"_t": time.perf_counter(), "_busy": self._busy(),
                             "_own": ot.user + ot.system + ot.children_user + ot.children_system,
                             "loadavg_start": [round(x, 2) for x in os.getloadavg()]}

    def stop(self, name: str) -> None:
        p = self.phases[name]
        wall = time.perf_counter() - p.pop("_t")
        ot = os.times()
        own = ot.user + ot.system + ot.children_user + ot.children_system - p.pop("_own")
        busy0 = p.pop("_busy")
        busy = self._busy()
        p["wall_s"] = round(wall, 1)
        p["own_cores"] = round(own / wall, 2) if wall > 0 else None
        if busy0 is not None and busy is not None and wall > 0:
            p["other_cores"] = round(max(0.0, (busy - busy0) - own) / wall, 2)
        p["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------- weights
def weight_files(wd: Path) -> list[Path]:
    return sorted(p for p in wd.rglob("*") if p.is_file())


def evict(files: list[Path]) -> bool:
    """Drop the weight files from the page cache (``posix_fadvise DONTNEED``) so reads hit the
    disk, as in a fresh container. Returns False where unsupported."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for p in files:
        try:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        except OSError:
            return False
    return True


def read_all(files: list[Path]) -> tuple[float, int]:
    """ms to read every byte of ``files``; total bytes."""
    t = time.perf_counter()
    n = 0
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while chunk := f.read(16 << 20):
                n += len(chunk)
    return (time.perf_counter() - t) * 1000, n


def make_auto_weights(wd: Path, tmp: Path, env: dict, logfile: Path) -> Path:
    """A copy of the dev weights dir (files symlinked, receipt copied) whose tiny garment
    detector is rewritten with ``bias_class`` so that it detects one garment on any photo."""
    import shutil

    out = tmp / "weights-auto"
    for p in weight_files(wd):
        rel = p.relative_to(wd)
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel.name == "receipt.json" or rel.suffix == ".pt":
            shutil.copyfile(p, dst)
        else:
            dst.symlink_to(p)
    code = ("import sys; from pathlib import Path; from weights.tiny.masking import write_tiny_yolo; "
            f"write_tiny_yolo(Path(sys.argv[1]), bias_class={AUTO_BIAS_CLASS!r})")
    with open(logfile, "a") as lf:
        subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, env=env, check=True,
                       stdout=lf, stderr=lf, timeout=300)
    return out


# ---------------------------------------------------------------------------------- child
def run_child(mode: str, env: dict, logfile: Path, timeout: float = 900) -> tuple[dict, float]:
    """Spawn ``python -m bench.child mode``; returns (its result, wall clock at spawn)."""
    env = dict(env)
    t_spawn = time.time()
    env["BENCH_T_SPAWN"] = repr(t_spawn)
    with open(logfile, "a") as lf:
        lf.write(f"\n===== {mode} {dt.datetime.now().isoformat(timespec='seconds')}\n")
        lf.flush()
        proc = subprocess.run([sys.executable, "-m", "bench.child", mode], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=lf, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = logfile.read_text()[-3000:]
        raise RuntimeError(f"bench child {mode!r} failed (exit {proc.returncode}); log tail:\n{tail}")
    return parse_child_stdout(proc.stdout), t_spawn


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (~3 min on 2 cores)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results",
                    help="results directory (default bench/results)")
    ap.add_argument("--steps", type=int, help="denoising steps (default: 4 dev / 20 real)")
    ap.add_argument("--flat-jobs", type=int, help="warm 2 MP jobs for memory flatness "
                    "(default 50, --quick 10)")
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile'd jobs")
    ap.add_argument("--no-results-md", action="store_true", help="do not rewrite bench/RESULTS.md")
    ap.add_argument("--report-only", action="store_true",
                    help="re-render the reports from <out>/tmp/raw.json without measuring")
    a = ap.parse_args(argv)
    if a.report_only:
        raw = json.loads((a.out.resolve() / "tmp" / "raw.json").read_text())
        return write_reports(raw, a.out.resolve(), not a.no_results_md)

    from weights.resolve import set_offline_env

    set_offline_env()
    from core.settings import Settings
    from weights.manifest import load_manifest, load_receipt
    from weights.resolve import ModelMissing, resolve

    plan = dict(QUICK if a.quick else FULL)
    if a.flat_jobs:
        plan["flat_jobs"] = max(6, a.flat_jobs)
    if a.no_profile:
        plan["profile_reps"] = 0
    settings = Settings()
    wd = Path(settings.weights_dir).resolve()
    manifest = load_manifest()
    inpaint_keys = [k for k, e in manifest.models.items() if e.kind == "diffusers_inpaint"]
    try:
        resolved = [resolve(k, wd, manifest) for k in inpaint_keys
                    if (wd / manifest.models[k].path).exists()] or \
            [resolve(manifest.roles["inpaint_default"], wd, manifest)]
    except ModelMissing as exc:
        print(f"no inpainting weights under {wd}: {exc}\n"
              f"write dev weights with: python -m weights.tiny --out {wd}", file=sys.stderr)
        return 2
    receipt = load_receipt(wd)
    dev = {k: v.dev for k, v in receipt.models.items()}
    all_dev = all(dev.get(r.key, True) for r in resolved)
    steps = a.steps or (4 if all_dev else 20)
    out_dir = a.out.resolve()
    scratch = out_dir / "tmp"  # logs, raw results, profiles (git-ignored under bench/results)
    scratch.mkdir(parents=True, exist_ok=True)
    logfile = scratch / "children.log"
    logfile.write_text("")
    t_run = time.perf_counter()
    probe = LoadProbe()
    meta = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "mode": "quick" if a.quick else "full", "plan": plan, "steps": steps,
            "weights_dir": str(wd), "dev_weights": dev, "dev_inpaint": all_dev,
            "machine": machine_info(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "models_baked": sorted(receipt.models)}
    log(f"{meta['mode']} run: weights {wd} ({'dev' if all_dev else 'real'}), {steps} steps, "
        f"loadavg {meta['loadavg_start']}")

    # ---- S3 server + inputs
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the S3 server's request log
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the worker images and runpod_handler set it
    env.update({
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MASKPAINT_S3_BUCKET": BUCKET, "MASKPAINT_S3_ENDPOINT_URL": endpoint,
        "MASKPAINT_INPUT_BUCKETS": json.dumps([INPUT_BUCKET]),
        "MASKPAINT_S3_REGION": "us-east-1", "MASKPAINT_WEIGHTS_DIR": str(wd),
        "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p]),
        "BENCH_STEPS": str(steps), "BENCH_PLAN": json.dumps(plan), "BENCH_OUT": str(scratch),
        "PYTHONWARNINGS": "ignore",
    })
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_SESSION_TOKEN", None)
    results: dict = {"meta": meta}
    try:
        import boto3
        from botocore.config import Config

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench",
                          config=Config(signature_version="s3v4"))
        s3.create_bucket(Bucket=BUCKET)
        s3.create_bucket(Bucket=INPUT_BUCKET)
        tmp = Path(tempfile.mkdtemp(prefix="maskpaint-bench-"))
        inputs = {}
        for label, size in SIZES.items():
            data = make_photo(size)
            path = tmp / f"{label}.jpg"
            path.write_bytes(data)
            s3.put_object(Bucket=INPUT_BUCKET, Key=f"inputs/{label}.jpg", Body=data,
                          ContentType="image/jpeg")
            inputs[label] = {"url": f"s3://{INPUT_BUCKET}/inputs/{label}.jpg", "file": str(path),
                             "size": list(size), "bytes": len(data)}
        env["BENCH_INPUTS"] = json.dumps(inputs)
        meta["inputs"] = {k: {"size": v["size"], "bytes": v["bytes"]} for k, v in inputs.items()}
        meta["s3"] = f"moto ThreadedMotoServer at {endpoint} (in the bench parent process)"

        # ---- floor (its import runs are paired with the cold starts below)
        files = weight_files(wd)
        probe.start("floor")
        reads = {"evicted": [], "warm": []}
        for _ in range(3):
            evicted_ok = evict(files)
            ms, nbytes = read_all(files)
            reads["evicted"].append(round(ms, 2))
            ms, _ = read_all(files)
            reads["warm"].append(round(ms, 2))
        sdk = []
        for _ in range(plan["sdk_runs"]):
            for stub in ("0", "1"):
                try:
                    r, _t = run_child("sdk", {**env, "BENCH_STUB_CPUINFO": stub}, logfile)
                    sdk.append(r)
                except RuntimeError as exc:  # runpod not installed
                    log(f"runpod import probe skipped: {str(exc).splitlines()[0]}")
                    break
        probe.stop("floor")
        results["sdk_import_raw"] = sdk

        # ---- cold starts, each right after a floor import run (same moment, same load)
        probe.start("cold")
        cold, floor_runs = [], []
        for i in range(plan["cold_runs"]):
            evict(files)
            r, t_spawn = run_child("floor", env, logfile)
            floor_runs.append({"spawn_to_imported_ms": round((r["t_done"] - t_spawn) * 1000, 1),
                               "interpreter_ms": round((r["t_main"] - t_spawn) * 1000, 1),
                               "import_ms": r["import_ms"],
                               "spawn_to_pipeline_class_ms": round(
                                   (r["t_pipeline_done"] - t_spawn) * 1000, 1)})
            evict(files)
            r, t_spawn = run_child("cold", env, logfile)
            r["stages_ms"]["interpreter"] = round((r["marks"]["main"] - t_spawn) * 1000, 1)
            r["spawn_to_ready_ms"] = round((r["marks"]["ready"] - t_spawn) * 1000, 1)
            r["spawn_to_first_job_done_ms"] = round(
                (r["marks"]["first_job_done"] - t_spawn) * 1000, 1)
            cold.append(r)
            log(f"cold start {i + 1}/{plan['cold_runs']}: floor import "
                f"{floor_runs[-1]['spawn_to_imported_ms']:.0f} ms; ready "
                f"{r['spawn_to_ready_ms']:.0f} ms, first tiny job done "
                f"{r['spawn_to_first_job_done_ms']:.0f} ms")
        probe.stop("cold")
        results["cold_raw"] = cold
        results["floor_raw"] = {"imports": floor_runs, "read_ms": reads, "bytes": nbytes,
                                "files": len(files), "evict_supported": evicted_ok,
                                "paired_with_cold": True}

        # ---- warm jobs
        probe.start("jobs")
        log(f"warm jobs: {plan['flat_jobs']} x 2MP, {plan['rss_12MP_jobs']} x 12MP (peak RSS), "
            f"{plan['reps_0.5MP']} x 0.5MP, {plan['reps_12MP']} x 12MP, "
            f"{plan['reps_provided']} x 2MP/12MP provided mask, {plan['reps_png']} x 2MP PNG "
            "(+1 warm-up each)"
            + (", then profiles" if plan["profile_reps"] else ""))
        jobs, _ = run_child("jobs", env, logfile)
        probe.stop("jobs")
        results["jobs_raw"] = jobs
        log(f"warm jobs done on {jobs['device']}")

        # ---- the auto masking path (dev weights: a rigged garment detector; real weights
        # find the garments on the photo themselves), paired with provided-mask jobs at 2 MP
        auto_wd = None
        if "garments-yolov8s-seg" in receipt.models and plan.get("auto_reps_2MP"):
            probe.start("auto")
            try:
                auto_wd = make_auto_weights(wd, tmp, env, logfile) if all_dev else wd
                how = f"rigged dev detector: {AUTO_BIAS_CLASS}" if all_dev else "real weights"
                log(f"auto masking path ({how}): "
                    f"{plan['auto_reps_2MP']} x (2MP auto + 2MP provided mask), "
                    f"{plan['auto_reps_12MP']} x 12MP (+1 warm-up each)")
                r, _t = run_child("auto", {**env, "MASKPAINT_WEIGHTS_DIR": str(auto_wd)}, logfile)
                results["auto_raw"] = r
            except (RuntimeError, subprocess.SubprocessError) as exc:
                log(f"auto path scenario skipped: {str(exc).splitlines()[0]}")
            probe.stop("auto")
    finally:
        server.stop()

    meta["load_by_phase"] = probe.phases
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["duration_s"] = round(time.perf_counter() - t_run, 1)
    (scratch / "raw.json").write_text(json.dumps(results, indent=1, default=str))
    return write_reports(results, out_dir, not a.no_results_md)


def write_reports(raw: dict, out_dir: Path, results_md: bool) -> int:
    """raw results -> latest.json (raw + summaries + targets), latest.md, plots, RESULTS.md."""
    from bench import report, summary

    results = dict(raw)
    results.update(summary.summarise(raw))
    (out_dir / "latest.json").write_text(json.dumps(results, indent=1, default=str))
    md = report.markdown(results, out_dir)
    (out_dir / "latest.md").write_text(md)
    report.plots(results, out_dir)
    if results_md:
        (REPO / "bench" / "RESULTS.md").write_text(report.results_md(results, out_dir))
    log(f"done in {raw['meta']['duration_s']:.0f} s: {out_dir / 'latest.md'}")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
