"""A moto S3 server plus the runpod SDK's local API server (``runpod_handler.py
--rp_serve_api``) with the dev weights, as subprocesses; and tiny jobs for them.

Used by the batch CLI's tests. GPU runs are counted from the worker's own log: each run of the
models logs a ``stage`` line for ``inpaint`` under the job's record key (``key-<id>`` for batch
jobs); a resubmission answered from the write-once record logs none.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tests.conftest import BUCKET, data_url, png_bytes
from tests.live_server import READY_TIMEOUT_S, free_port, stop

REPO = Path(__file__).resolve().parents[1]
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _wait(url: str, proc: subprocess.Popen, log: Path, deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited {proc.returncode}:\n"
                               + log.read_text(errors="replace")[-4000:])
        try:
            with _direct.open(url, timeout=2):
                return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready:\n" + log.read_text(errors="replace")[-4000:])
        time.sleep(0.3)


def clean_env() -> dict[str, str]:
    """This environment without MASKPAINT_/RUNPOD_/AWS_ settings, with moto's fake AWS keys."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MASKPAINT_", "RUNPOD_", "AWS_"))}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
               PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO), NO_PROXY="*", no_proxy="*",
               OMP_NUM_THREADS="1")
    return env


@contextlib.contextmanager
def runpod_stack(weights_dir: Path, logs: Path) -> Iterator[dict]:
    """Yields ``{"url", "s3_url", "log", "s3"}`` (``s3``: a boto3 client of the moto server);
    both servers are stopped at exit."""
    procs: list[subprocess.Popen] = []
    env = clean_env()
    try:
        s3_url = f"http://127.0.0.1:{free_port()}"
        s3_log = logs / "moto.log"
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", s3_url.rsplit(":", 1)[1]],
            cwd=REPO, env=env, stdout=s3_log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True))
        rp_port = free_port()
        rp_log = logs / "runpod.log"
        procs.append(subprocess.Popen(
            [sys.executable, "runpod_handler.py", "--rp_serve_api", "--rp_api_host", "127.0.0.1",
             "--rp_api_port", str(rp_port)], cwd=REPO,
            env={**env, "MASKPAINT_WEIGHTS_DIR": str(weights_dir), "MASKPAINT_S3_BUCKET": BUCKET,
                 "MASKPAINT_S3_ENDPOINT_URL": s3_url, "MASKPAINT_S3_REGION": "us-east-1",
                 "MASKPAINT_DEVICE": "cpu", "MASKPAINT_LOG_LEVEL": "INFO",
                 "MASKPAINT_INPUT_BUCKETS": json.dumps([f"{BUCKET}/inputs/"]),
                 "UVICORN_LOG_LEVEL": "warning"},
            stdout=rp_log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait(f"{s3_url}/", procs[0], s3_log, time.monotonic() + 60)
        import boto3

        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket=BUCKET)
        rp_url = f"http://127.0.0.1:{rp_port}"
        _wait(f"{rp_url}/openapi.json", procs[1], rp_log, time.monotonic() + READY_TIMEOUT_S)
        yield {"url": rp_url, "s3_url": s3_url, "log": rp_log, "s3": s3}
    finally:
        for p in reversed(procs):
            stop(p)


def gpu_runs(log: Path) -> Counter[str]:
    """Runs of the inpainting model per record key, from the worker's JSON log lines."""
    runs: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("stage") == "inpaint" and rec.get("job_id"):
            runs[rec["job_id"]] += 1
    return runs


def tiny_photo(photo: Path, side: int = 96) -> tuple[str, str]:
    """(photo, mask) as data URLs: ``photo`` shrunk to ``side`` px and a centred rectangle."""
    from PIL import Image

    img = Image.open(photo).convert("RGB")
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    w, h = img.size
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
    return data_url(buf.getvalue()), data_url(png_bytes(mask), "image/png")


def tiny_job(image: str, mask: str, seed: int) -> dict:
    """A one-step inpaint job on a provided mask (no face detection): about a second on CPU."""
    return {"image": image, "mask": mask, "prompt": "a red jacket", "num_inference_steps": 1,
            "seed": seed, "protect_face": False, "output": {"format": "jpeg"}}
