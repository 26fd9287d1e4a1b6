"""The TypeScript client (clients/ts) against the real RunPod handler, end to end.

Starts a moto S3 server and the runpod SDK's own local API server
(``python runpod_handler.py --rp_serve_api``) with the dev weights, builds the client
(``npm ci`` when needed, ``npm run build``), then runs ``test/integration/local-runpod.mjs``:
a real photo job through ``/runsync`` and through ``/run`` + ``/status/{id}``, and bad jobs.

What the runpod 1.12 local server does (``runpod/serverless/modules/rp_fastapi.py``), and so
what this test relies on:

- ``POST /runsync`` runs the handler inside the request and answers
  ``{"id": "test-<uuid>", "status": "COMPLETED", "output": <result>}``, or on failure
  ``{"id", "status": "FAILED", "error": "<code>: <message>"}`` -- the rest of the handler's
  failure dict (``error_code``, ``field``, ``retryable``), which the hosted API keeps in
  ``output``, is dropped. It never answers IN_QUEUE / IN_PROGRESS.
- ``POST /run`` only stores the job and answers ``{"id", "status": "IN_PROGRESS"}``; nothing
  runs until the status route is called.
- ``/status/{id}`` accepts POST only (GET is 405; the hosted API uses GET). The first call runs
  the job inside the request and answers COMPLETED / FAILED like ``/runsync``, then forgets the
  job: a second call answers ``{"status": "FAILED", "error": "Job ID not found"}``.
- An invalid envelope (``input`` not an object) is FastAPI's 422 ``{"detail": [...]}``.
- No progress updates are visible (the handler sends them only on RunPod).

The client's defaults cover this: it polls with GET and switches to POST after a 405.

Skips only when ``node`` is not on PATH.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import data_url, png_bytes
from tests.live_server import free_port as _free_port, stop as _stop

REPO = Path(__file__).resolve().parents[1]
TS = REPO / "clients" / "ts"
BUCKET = "maskpaint-ts-it"
READY_TIMEOUT_S = 120
NPM_CI_TIMEOUT_S = 300
BUILD_TIMEOUT_S = 120
STAMP = TS / "node_modules" / ".maskpaint-lock.sha256"

pytestmark = pytest.mark.slow

# urllib would honour *_proxy variables; local servers must be reached directly.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):  # CI must not go green with the client untested
            pytest.fail("node is not on PATH: CI needs Node.js 20+ for the TypeScript client")
        pytest.skip("node is not on PATH: the TypeScript client tests need Node.js 20+")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
    major = int(version.strip().lstrip("v").split(".")[0] or 0)
    assert major >= 20, f"clients/ts needs Node.js 20+, found {version.strip()}"
    return node


def _run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false",
           "npm_config_audit": "false"}
    proc = subprocess.run(cmd, cwd=TS, env=env, capture_output=True, text=True, timeout=timeout,
                          **kw)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _ensure_node_modules() -> None:
    """``npm ci`` unless node_modules was installed from this exact package-lock.json."""
    lock_sha = hashlib.sha256((TS / "package-lock.json").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == lock_sha:
        return
    npm = shutil.which("npm")
    assert npm, "node is installed but npm is not on PATH"
    _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], NPM_CI_TIMEOUT_S)
    STAMP.write_text(lock_sha + "\n")


@pytest.fixture(scope="module")
def ts_pkg() -> dict:
    """clients/ts with node_modules installed and dist/ freshly built; returns timings (s)."""
    _node()
    t0 = time.monotonic()
    _ensure_node_modules()
    t1 = time.monotonic()
    _run([shutil.which("npm"), "run", "build", "--silent"], BUILD_TIMEOUT_S)
    return {"npm_ci_s": round(t1 - t0, 1), "build_s": round(time.monotonic() - t1, 1)}


def _get(url: str, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    try:
        with _direct.open(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _wait_http(url: str, proc: subprocess.Popen, log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[1]} exited {proc.returncode} before serving:\n"
                        + log.read_text(errors="replace")[-4000:])
        try:
            if _get(url, timeout=2)[0] < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} not ready in time:\n" + log.read_text(errors="replace")[-4000:])


@pytest.fixture(scope="module")
def local_runpod(request, dev_weights, tmp_path_factory):
    """moto S3 + ``runpod_handler.py --rp_serve_api`` on free ports; both stopped at the end."""
    _node()
    logs = tmp_path_factory.mktemp("ts-it-logs")
    procs: list[subprocess.Popen] = []
    try:
        t0 = time.monotonic()
        base_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("MASKPAINT_", "RUNPOD_", "AWS_"))}
        base_env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                        AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                        PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO), NO_PROXY="*", no_proxy="*")

        s3_port = _free_port()
        s3_url = f"http://127.0.0.1:{s3_port}"
        s3_log = logs / "moto.log"
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
            cwd=REPO, env=base_env, stdout=s3_log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True))
        moto = procs[-1]

        rp_port = _free_port()
        rp_url = f"http://127.0.0.1:{rp_port}"
        rp_log = logs / "runpod.log"
        rp_env = {**base_env, "MASKPAINT_WEIGHTS_DIR": str(dev_weights),
                  "MASKPAINT_S3_BUCKET": BUCKET, "MASKPAINT_S3_ENDPOINT_URL": s3_url,
                  "MASKPAINT_S3_REGION": "us-east-1", "MASKPAINT_DEVICE": "cpu",
                  "UVICORN_LOG_LEVEL": "warning"}
        # The bucket must exist before the first job, not before the worker starts: start the
        # worker (slow cold start) first, create the bucket while it loads.
        procs.append(subprocess.Popen(
            [sys.executable, "runpod_handler.py", "--rp_serve_api",
             "--rp_api_host", "127.0.0.1", "--rp_api_port", str(rp_port)],
            cwd=REPO, env=rp_env, stdout=rp_log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True))
        worker = procs[-1]

        _wait_http(f"{s3_url}/", moto, s3_log, time.monotonic() + 60)
        import boto3

        boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing"
                     ).create_bucket(Bucket=BUCKET)

        timings = dict(request.getfixturevalue("ts_pkg"))  # npm ci / build overlap the cold start
        _wait_http(f"{rp_url}/openapi.json", worker, rp_log, time.monotonic() + READY_TIMEOUT_S)
        timings["stack_ready_s"] = round(time.monotonic() - t0, 1)
        yield {"url": rp_url, "s3_url": s3_url, "log": rp_log, "timings": timings}
    finally:
        for p in reversed(procs):
            _stop(p)


@pytest.fixture(scope="module")
def job_file(photos, tmp_path_factory) -> Path:
    """A downscaled bus.jpg and a torso mask, as data URLs."""
    import numpy as np
    from PIL import Image

    img = Image.open(photos["bus"]).convert("RGB")
    img.thumbnail((256, 256))  # 192x256
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    w, h = img.size
    mask = np.zeros((h, w), np.uint8)
    mask[int(h * 0.35):int(h * 0.7), int(w * 0.3):int(w * 0.7)] = 255
    path = tmp_path_factory.mktemp("ts-it") / "job.json"
    path.write_text(json.dumps({"image": data_url(buf.getvalue()),
                                "mask": data_url(png_bytes(mask), "image/png")}))
    return path


def test_client_against_local_runpod_server(local_runpod, job_file):
    node = _node()
    t0 = time.monotonic()
    env = {**os.environ, "MASKPAINT_RUNPOD_URL": local_runpod["url"],
           "MASKPAINT_JOB_FILE": str(job_file)}
    proc = subprocess.run([node, "test/integration/local-runpod.mjs"], cwd=TS, env=env,
                          capture_output=True, text=True, timeout=180)
    log = local_runpod["log"].read_text(errors="replace")[-4000:]
    assert proc.returncode == 0, (
        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n--- worker log\n{log}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    results = {}
    for route in ("runsync", "run"):
        r = out[route]
        res = r["result"]
        assert res["task"] == "inpaint" and res["seed"] == 1234, route
        assert res["size"] == [192, 256], route
        assert res["mask_info"]["source"] == "provided", route
        assert res["job_id"].startswith("test-"), route  # the local server's job ids
        img = res["image"]
        assert img["content_type"] == "image/png", route
        # fetched by the client's runtime (Node fetch) ...
        assert r["image"] == {"status": 200, "contentType": "image/png", "bytes": img["bytes"],
                              "sha256": img["sha256"]}, route
        assert r["mask"]["status"] == 200 and r["mask"]["contentType"] == "image/png", route
        # ... and independently here, from moto
        assert img["url"].startswith(local_runpod["s3_url"] + f"/{BUCKET}/"), route
        status, headers, body = _get(img["url"])
        assert status == 200, route
        assert {k.lower(): v for k, v in headers.items()}["content-type"] == "image/png", route
        assert body[:8] == b"\x89PNG\r\n\x1a\n", route
        assert hashlib.sha256(body).hexdigest() == img["sha256"], route
        from PIL import Image

        assert Image.open(io.BytesIO(body)).size == (192, 256), route
        results[route] = res

    assert results["runsync"]["job_id"] != results["run"]["job_id"]
    # Same input and seed through either route: the same pixels.
    assert results["runsync"]["image"]["sha256"] == results["run"]["image"]["sha256"]
    # /run answers IN_PROGRESS (reported once); the local server shows no progress payloads.
    progress = out["run"]["progress"]
    assert progress and all(p["status"] == "IN_PROGRESS" for p in progress), progress

    for route in ("badRunsync", "badRun"):
        bad = out[route]
        assert "unexpectedResult" not in bad, bad
        assert bad["isMaskpaintError"] and bad["name"] == "MaskpaintError", bad
        assert bad["code"] == "invalid_input", bad
        assert bad["retryable"] is False, bad
        assert "prompt" in bad["message"], bad
        assert bad["field"] in (None, "prompt"), bad  # local server drops `output` -> no field
        assert bad["httpStatus"] is None and bad["jobId"].startswith("test-"), bad

    envelope = out["notAnObject"]
    assert envelope["isMaskpaintError"] and envelope["code"] == "invalid_input", envelope
    assert envelope["httpStatus"] == 422 and envelope["field"] == "input", envelope
    assert envelope["retryable"] is False, envelope

    timings = {**local_runpod["timings"], "node_script_s": round(time.monotonic() - t0, 1),
               "runsync_ms": out["runsync"]["ms"], "run_ms": out["run"]["ms"]}
    print("ts client timings:", json.dumps(timings))


def test_ts_unit_tests(ts_pkg):
    """``npm test``: build, type-check the README examples, and the client's own tests with a
    mocked fetch (backoff + jitter, progress, runsync fallback, typed errors, abort, timeout,
    Modal pending -> done / failed)."""
    _run([shutil.which("npm"), "test", "--silent"], 180)


def test_generated_types_are_up_to_date(ts_pkg):
    """src/types.generated.ts is what json-schema-to-typescript makes of schema/ (no rewrite)."""
    _run([shutil.which("npm"), "run", "gen:check", "--silent"], 120)


def test_modal_client_against_the_local_web_api(ts_pkg, dev_weights, job_file, tmp_path):
    """``ModalClient`` against ``python -m handlers.serve`` (the web API Modal serves, with a
    local dispatcher): a job with progress while polling, its artefacts fetched over http from
    the server's ``/outputs``, a webhook delivered to a loopback receiver and checked with
    ``verifyWebhook``, an undecodable image, a wrong token."""
    from tests.live_server import local_web

    node = _node()
    with local_web(dev_weights, tmp_path / "out", tmp_path / "serve.log") as srv:
        env = {**os.environ, "MASKPAINT_WEB_URL": srv["url"], "MASKPAINT_API_TOKEN": srv["token"],
               "MASKPAINT_WEBHOOK_SECRET": srv["secret"], "MASKPAINT_JOB_FILE": str(job_file),
               "NO_PROXY": "*", "no_proxy": "*"}
        proc = subprocess.run([node, "test/integration/local-web.mjs"], cwd=TS, env=env,
                              capture_output=True, text=True, timeout=240)
        log = srv["log"].read_text(errors="replace")[-4000:]
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n--- server\n{log}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["health"] == {"status": "ok"}

    run = out["run"]
    res = run["result"]
    assert res["job_id"].startswith("local-") and res["size"] == [192, 256]
    assert res["mask_info"]["source"] == "provided"
    assert res["image"]["url"].startswith(srv["url"] + "/outputs/")
    assert run["image"] == {"status": 200, "contentType": "image/png",
                            "bytes": res["image"]["bytes"], "sha256": res["image"]["sha256"]}
    assert run["mask"]["status"] == 200
    statuses = [p["status"] for p in run["progress"]]
    assert statuses[0] == "queued" and set(statuses) <= {"queued", "running"}
    for p in run["progress"]:  # whatever progress a poll showed is well formed
        if p["progress"] is not None:
            assert p["progress"]["stage"] in {"fetch", "decode", "mask", "inpaint", "safety",
                                              "encode", "upload"}

    (hook,) = out["deliveries"]
    assert hook["verified"] is True and hook["forgedVerified"] is False
    assert hook["body"]["id"] == res["job_id"] and hook["body"]["status"] == "done"
    assert hook["body"]["output"] == res, "the webhook carries what a poll shows"

    assert out["badImage"] == {"thrown": True, "isMaskpaintError": True,
                               "code": "invalid_image", "field": "image"}
    assert out["badToken"] == {"thrown": True, "code": "unauthorized", "status": 401}
