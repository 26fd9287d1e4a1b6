"""The TypeScript examples of README.md and docs/, built and run in their real runtimes.

- ``clients/ts/examples/nextjs-route.ts`` and ``worker.ts`` are the README's code blocks
  (``npm run examples:check`` fails on any difference; run here too).
- The client is packed with ``npm pack`` (as the README says to install it) and unpacked into
  ``clients/ts/e2e/node_modules/@maskpaint/client``; ``clients/ts/e2e`` holds the app's own
  lock file (Next.js 16, React, wrangler, and Node 22 from npm's ``node`` package, since
  wrangler wants Node >= 22.12), installed with ``npm ci``.
- The route is copied to ``e2e/app/api/edit/route.ts``, built with ``next build`` with no
  ``RUNPOD_*`` variable set (as in CI or a Docker build) and served by ``next start``; the
  Worker is copied to ``e2e/worker/index.ts`` and served by ``wrangler dev`` (workerd).
- Both talk to the runpod SDK's local server (``python runpod_handler.py --rp_serve_api``) with
  the dev weights and a moto S3 server: a real photo job, caller mistakes (4xx), a non-JSON body.
- docs/typescript.md's Next.js pattern (``nextjs-submit-route.ts``, ``nextjs-poll-route.ts``,
  ``nextjs-page.tsx`` with ``useMaskpaintJob`` from ``@maskpaint/client/react``) is built into
  the same app and served against the local web API (``python -m handlers.serve``, dev
  weights); ``e2e/hook.mjs`` opens the page in headless Chromium and runs a photo job through it.
- The README's upload flow for large photos: a presigned PUT (boto3) into the input bucket, a
  job naming ``s3://bucket/key`` through the Next.js route, the bucket CORS rule a browser needs,
  and a bucket outside ``MASKPAINT_INPUT_BUCKETS`` (``blocked_url``).

Like tests/test_ts_client.py it skips only when ``node`` is missing, and fails in CI (``CI``
set) then.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.test_ts_client import (
    BUCKET,
    NPM_CI_TIMEOUT_S,
    READY_TIMEOUT_S,
    TS,
    _ensure_node_modules,
    _free_port,
    _get,
    _node,
    _run,
    _stop,
    _wait_http,
)

REPO = Path(__file__).resolve().parents[1]
E2E = TS / "e2e"
E2E_STAMP = E2E / "node_modules" / ".maskpaint-lock.sha256"
INPUT_BUCKET = "maskpaint-ts-inputs"
OTHER_BUCKET = "maskpaint-ts-private"
ORIGIN = "https://app.example.com"
CORS = {"CORSRules": [{"AllowedOrigins": [ORIGIN], "AllowedMethods": ["GET", "HEAD", "PUT"],
                       "AllowedHeaders": ["content-type"], "ExposeHeaders": ["ETag"],
                       "MaxAgeSeconds": 3600}]}

pytestmark = pytest.mark.slow

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _request(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
             timeout: float = 180) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _direct.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def _post_json(url: str, payload, raw: bytes | None = None) -> tuple[int, dict]:
    body = raw if raw is not None else json.dumps(payload).encode()
    status, _, data = _request("POST", url, body, {"content-type": "application/json"})
    try:
        return status, json.loads(data)
    except ValueError:
        pytest.fail(f"POST {url} answered {status} with a non-JSON body: {data[:300]!r}")


def _png_from_moto(url: str, s3_url: str, ctype: str = "image/png") -> tuple[int, int]:
    """Fetch an output URL (it must point at moto), check its type, return its size in px."""
    from PIL import Image

    assert url.startswith(s3_url + f"/{BUCKET}/"), url
    status, headers, body = _get(url)
    assert status == 200 and headers.get("Content-Type", headers.get("content-type")) == ctype
    return Image.open(io.BytesIO(body)).size


JPEG = "image/jpeg"  # a JPEG photo gives a JPEG result (output format `auto`)


@pytest.fixture(scope="module")
def photo(photos) -> bytes:
    """bus.jpg downscaled to 192x256 px, JPEG bytes (a real photo, small enough for CPU)."""
    from PIL import Image

    img = Image.open(photos["bus"]).convert("RGB")
    img.thumbnail((256, 256))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _data_url(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def apps() -> dict:
    """clients/ts packed, e2e's npm ci, the README examples copied in; returns timings (s)."""
    node = _node()
    npm = shutil.which("npm")
    assert npm, "node is installed but npm is not on PATH"
    t0 = time.monotonic()
    _ensure_node_modules()  # clients/ts's own devDependencies (tsc) for prepack
    _run([npm, "run", "examples:check", "--silent"], 60)

    lock_sha = hashlib.sha256((E2E / "package-lock.json").read_bytes()).hexdigest()
    if not (E2E_STAMP.exists() and E2E_STAMP.read_text().strip() == lock_sha):
        env = {**os.environ, "npm_config_update_notifier": "false"}
        ci = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=E2E,
                            env=env, capture_output=True, text=True, timeout=NPM_CI_TIMEOUT_S)
        assert ci.returncode == 0, f"npm ci in {E2E} failed\n{ci.stdout[-3000:]}\n{ci.stderr[-3000:]}"
        E2E_STAMP.write_text(lock_sha + "\n")
    t1 = time.monotonic()

    with tempfile.TemporaryDirectory() as tmp:
        _run([npm, "pack", "--silent", "--pack-destination", tmp], 180)
        (tgz,) = Path(tmp).glob("maskpaint-client-*.tgz")
        with tarfile.open(tgz) as tar:
            names = set(tar.getnames())
            assert "package/LICENSE" in names, "the tarball must carry the license"
            assert "Apache License" in tar.extractfile("package/LICENSE").read(200).decode()
            assert {"package/dist/index.js", "package/dist/index.d.ts"} <= names
            dest = E2E / "node_modules" / "@maskpaint" / "client"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            for m in tar.getmembers():
                if m.isfile():
                    out = dest / m.name.removeprefix("package/")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(tar.extractfile(m).read())

    # The installed package works with require() and import (package.json "exports"), and
    # so does its React entry point.
    for code in ("const m = require('@maskpaint/client'); console.log(typeof m.httpStatusFor)",
                 "import('@maskpaint/client').then(m => console.log(typeof m.httpStatusFor))",
                 "import('@maskpaint/client/react').then(m => console.log(typeof m.useMaskpaintJob))"):
        out = subprocess.run([node, "-e", code], cwd=E2E, capture_output=True, text=True,
                             timeout=60)
        assert out.stdout.strip() == "function", out.stderr[-2000:]

    shutil.rmtree(E2E / "app", ignore_errors=True)
    for src, dest in (("nextjs-route.ts", "api/edit/route.ts"),
                      ("nextjs-submit-route.ts", "api/maskpaint/jobs/route.ts"),
                      ("nextjs-poll-route.ts", "api/maskpaint/jobs/[id]/route.ts"),
                      ("nextjs-page.tsx", "outfit/page.tsx")):
        (E2E / "app" / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TS / "examples" / src, E2E / "app" / dest)
    shutil.copyfile(E2E / "layout.tsx", E2E / "app" / "layout.tsx")
    shutil.copyfile(TS / "examples" / "worker.ts", E2E / "worker" / "index.ts")

    # next build with no endpoint variables: the client is built at module scope.
    shutil.rmtree(E2E / ".next", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "MASKPAINT_"))}
    env["NEXT_TELEMETRY_DISABLED"] = "1"
    t2 = time.monotonic()
    build = subprocess.run([node, "node_modules/next/dist/bin/next", "build"], cwd=E2E, env=env,
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, f"next build failed\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    assert "/api/edit" in build.stdout
    assert "/api/maskpaint/jobs/[id]" in build.stdout and "/outfit" in build.stdout, build.stdout[-3000:]
    return {"pack_and_npm_ci_s": round(t1 - t0, 1), "next_build_s": round(time.monotonic() - t2, 1)}


@pytest.fixture(scope="module")
def stack(request, dev_weights, tmp_path_factory):
    """moto S3 + the local RunPod server (input bucket allowed) + next start + wrangler dev."""
    node = _node()
    logs = tmp_path_factory.mktemp("ts-examples-logs")
    procs: list[subprocess.Popen] = []

    def start(name: str, cmd: list[str], cwd: Path, env: dict) -> subprocess.Popen:
        log = logs / f"{name}.log"
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log.open("wb"),
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        p.log = log  # type: ignore[attr-defined]
        procs.append(p)
        return p

    web = contextlib.ExitStack()
    try:
        t0 = time.monotonic()
        from tests.live_server import local_web

        api = web.enter_context(local_web(dev_weights, logs / "web-out", logs / "web.log"))
        base_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("MASKPAINT_", "RUNPOD_", "AWS_"))}
        base_env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                        AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                        PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO), NO_PROXY="*", no_proxy="*")
        s3_port, rp_port, next_port, wk_port = (_free_port() for _ in range(4))
        s3_url = f"http://127.0.0.1:{s3_port}"
        rp_url = f"http://127.0.0.1:{rp_port}"
        moto = start("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                              "-p", str(s3_port)], REPO, base_env)
        worker = start("runpod", [sys.executable, "runpod_handler.py", "--rp_serve_api",
                                  "--rp_api_host", "127.0.0.1", "--rp_api_port", str(rp_port)],
                       REPO, {**base_env, "MASKPAINT_WEIGHTS_DIR": str(dev_weights),
                              "MASKPAINT_S3_BUCKET": BUCKET, "MASKPAINT_S3_ENDPOINT_URL": s3_url,
                              "MASKPAINT_S3_REGION": "us-east-1", "MASKPAINT_DEVICE": "cpu",
                              "MASKPAINT_INPUT_BUCKETS": json.dumps([INPUT_BUCKET]),
                              "UVICORN_LOG_LEVEL": "warning"})
        _wait_http(f"{s3_url}/", moto, moto.log, time.monotonic() + 60)
        import boto3

        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        for b in (BUCKET, INPUT_BUCKET, OTHER_BUCKET):
            s3.create_bucket(Bucket=b)

        timings = dict(request.getfixturevalue("apps"))  # overlaps the worker's cold start
        app_env = {k: v for k, v in base_env.items() if not k.startswith("AWS_")}
        app_env.update(RUNPOD_BASE_URL=rp_url, NEXT_TELEMETRY_DISABLED="1",
                       MASKPAINT_API_URL=api["url"], MASKPAINT_API_TOKEN=api["token"])
        nxt = start("next", [node, "node_modules/next/dist/bin/next", "start",
                             "-H", "127.0.0.1", "-p", str(next_port)], E2E, app_env)
        node22 = E2E / "node_modules" / "node" / "bin" / "node"
        wk_env = {**app_env, "WRANGLER_SEND_METRICS": "false", "CI": "1",
                  "XDG_CONFIG_HOME": str(logs / "xdg"), "WRANGLER_LOG_PATH": str(logs)}
        wk = start("wrangler", [str(node22), str(E2E / "node_modules" / "wrangler" / "bin" /
                                                 "wrangler.js"),
                                "dev", "--ip", "127.0.0.1", "--port", str(wk_port),
                                "--inspector-port", str(_free_port()),
                                "--var", f"RUNPOD_BASE_URL:{rp_url}",
                                "--show-interactive-dev-session=false"], E2E / "worker", wk_env)
        deadline = time.monotonic() + READY_TIMEOUT_S
        _wait_http(f"{rp_url}/openapi.json", worker, worker.log, deadline)
        _wait_http(f"http://127.0.0.1:{next_port}/api/edit", nxt, nxt.log, deadline)
        _wait_http(f"http://127.0.0.1:{wk_port}/", wk, wk.log, deadline)
        timings["stack_ready_s"] = round(time.monotonic() - t0, 1)
        print("ts examples timings:", json.dumps(timings))
        yield {"s3": s3, "s3_url": s3_url, "next": f"http://127.0.0.1:{next_port}",
               "worker": f"http://127.0.0.1:{wk_port}", "procs": procs, "api": api}
    finally:
        for p in reversed(procs):
            _stop(p)
        web.close()


def _logs(stack) -> str:
    return "\n".join(f"--- {p.log.name}\n" + p.log.read_text(errors="replace")[-2500:]
                     for p in stack["procs"])


def test_nextjs_route_runs_a_photo_job(stack, photo):
    url = stack["next"] + "/api/edit"
    status, body = _post_json(url, {"image": _data_url(photo), "prompt": "a red leather jacket"})
    assert status == 200, f"{status} {body}\n{_logs(stack)}"
    assert isinstance(body["seed"], int)
    assert _png_from_moto(body["url"], stack["s3_url"], JPEG) == (192, 256)


def test_nextjs_route_answers_4xx_for_the_callers_mistakes(stack, photo):
    url = stack["next"] + "/api/edit"
    # not JSON at all: 400 from the route itself
    status, body = _post_json(url, None, raw=b"image=photo.jpg")
    assert (status, body["code"]) == (400, "invalid_input"), body
    # a photo that does not decode: the worker's invalid_image, 400 (was 502)
    status, body = _post_json(url, {"image": _data_url(b"not a jpeg at all" * 10), "prompt": "x"})
    assert (status, body["code"]) == (400, "invalid_image"), body
    # a missing prompt: invalid_input, 400
    status, body = _post_json(url, {"image": _data_url(photo)})
    assert (status, body["code"]) == (400, "invalid_input") and "prompt" in body["message"], body
    # 12 MB of base64: refused by the client before sending (RunPod's /run cap is 10 MB)
    big = "data:image/jpeg;base64," + "A" * 12_000_000
    status, body = _post_json(url, {"image": big, "prompt": "x"})
    assert (status, body["code"]) == (413, "payload_too_large"), body
    assert "s3://" in body["message"]


def test_worker_queues_then_answers_a_photo_job(stack, photo):
    base = stack["worker"]
    status, body = _post_json(base + "/edit", {"image": _data_url(photo),
                                                "prompt": "a red leather jacket",
                                                "num_inference_steps": 2, "seed": 7})
    assert status == 202 and body["id"], f"{status} {body}\n{_logs(stack)}"
    status, _, data = _request("GET", f"{base}/edit/{body['id']}")
    done = json.loads(data)
    assert status == 200 and done["status"] == "done", f"{status} {done}\n{_logs(stack)}"
    assert _png_from_moto(done["image"], stack["s3_url"], JPEG) == (192, 256)
    assert _png_from_moto(done["mask"], stack["s3_url"]) == (192, 256)


def test_worker_answers_4xx_for_the_callers_mistakes(stack):
    base = stack["worker"]
    status, body = _post_json(base + "/edit", None, raw=b"{not json")
    assert (status, body["code"]) == (400, "invalid_input"), body
    # an undecodable photo: queued (the local /run validates nothing), then invalid_image
    status, body = _post_json(base + "/edit", {"image": _data_url(b"\x00" * 300), "prompt": "x"})
    assert status == 202, body
    status, _, data = _request("GET", f"{base}/edit/{body['id']}")
    failed = json.loads(data)
    assert (status, failed["status"], failed["code"]) == (400, "failed", "invalid_image"), failed
    assert failed["retryable"] is False
    # an id nobody handed out: 404
    status, _, data = _request("GET", f"{base}/edit/test-unknown")
    assert (status, json.loads(data)["code"]) == (404, "not_found")
    status, _, _ = _request("GET", f"{base}/other")
    assert status == 404


def test_upload_flow_presigned_put_then_s3_key(stack, photo):
    """README "Large photos": presigned PUT, the browser's upload, a job naming the key."""
    import boto3
    from botocore.config import Config

    s3 = stack["s3"]
    key = "uploads/3f1c.jpg"
    # SigV4 query signing, as AWS SDK v3's getSignedUrl does
    signer = boto3.client("s3", endpoint_url=stack["s3_url"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(signature_version="s3v4"))
    put_url = signer.generate_presigned_url(
        "put_object", Params={"Bucket": INPUT_BUCKET, "Key": key, "ContentType": "image/jpeg"},
        ExpiresIn=600)
    s3.put_bucket_cors(Bucket=INPUT_BUCKET, CORSConfiguration=CORS)
    # the browser's preflight, answered by the README's CORS rule
    # (sent without the query: S3 answers a preflight from the CORS rule alone, moto checks
    # the PUT's signature on it and refuses)
    status, headers, _ = _request("OPTIONS", put_url.split("?")[0], headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type"})
    assert status == 200, status
    assert headers.get("access-control-allow-origin") == ORIGIN, headers
    assert "PUT" in headers.get("access-control-allow-methods", ""), headers
    # the upload itself: no AWS credentials, only the URL
    status, _, _ = _request("PUT", put_url, photo, {"content-type": "image/jpeg", "Origin": ORIGIN})
    assert status == 200
    assert s3.head_object(Bucket=INPUT_BUCKET, Key=key)["ContentLength"] == len(photo)

    url = stack["next"] + "/api/edit"
    status, body = _post_json(url, {"image": f"s3://{INPUT_BUCKET}/{key}", "prompt": "a red coat"})
    assert status == 200, f"{status} {body}\n{_logs(stack)}"
    assert _png_from_moto(body["url"], stack["s3_url"], JPEG) == (192, 256)

    # a bucket outside MASKPAINT_INPUT_BUCKETS is the caller's mistake
    s3.put_object(Bucket=OTHER_BUCKET, Key=key, Body=photo)
    status, body = _post_json(url, {"image": f"s3://{OTHER_BUCKET}/{key}", "prompt": "a red coat"})
    assert (status, body["code"]) == (400, "blocked_url"), body
    # and so is the output bucket (another job's outputs)
    status, body = _post_json(url, {"image": f"s3://{BUCKET}/{key}", "prompt": "a red coat"})
    assert (status, body["code"]) == (400, "blocked_url"), body


def test_output_bucket_cors_lets_a_canvas_read_outputs(stack, photo):
    """The same rule on the output bucket: a cross-origin GET of a presigned output carries
    Access-Control-Allow-Origin, so a mask editor can draw it into a canvas and read it back."""
    s3 = stack["s3"]
    s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration=CORS)
    status, body = _post_json(stack["next"] + "/api/edit",
                              {"image": _data_url(photo), "prompt": "a green shirt"})
    assert status == 200, body
    status, headers, data = _request("GET", body["url"], headers={"Origin": ORIGIN})
    assert status == 200 and data[:3] == b"\xff\xd8\xff"  # JPEG in, JPEG out (auto)
    assert headers.get("access-control-allow-origin") == ORIGIN, headers


def test_nextjs_hook_runs_a_job_through_the_submit_and_poll_routes(stack, photo, tmp_path):
    """docs/typescript.md's pattern in a browser: the page's ``useMaskpaintJob`` submits
    through ``POST /api/maskpaint/jobs`` (202 at once, no wait in the route), polls
    ``GET /api/maskpaint/jobs/{id}``, shows the job queued (then running) and the result; then
    Cancel on a job held in the queue sends ``DELETE`` and shows it cancelled."""
    from tests.test_mask_editor import _chromium

    chromium = _chromium()
    jpg = tmp_path / "photo.jpg"
    jpg.write_bytes(photo)
    out = subprocess.run([_node(), "hook.mjs", "--url", stack["next"] + "/outfit", "--photo",
                          str(jpg), "--chromium", chromium], cwd=E2E, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}\n{_logs(stack)}"
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["errors"] == [] and report["alert"] is None, (report, _logs(stack))
    assert report["requests"][0] == "POST /api/maskpaint/jobs"
    assert any(r.startswith("GET /api/maskpaint/jobs/") for r in report["requests"])
    assert any(s.startswith("queued") for s in report["seen"]), report["seen"]
    assert report["final"].startswith("done"), report
    assert report["result"]["src"].startswith(stack["api"]["url"] + "/outputs/")
    assert (report["result"]["width"], report["result"]["height"]) == (192, 256)
    # Cancel on a job held in the queue: the hook sends DELETE and shows it cancelled
    assert report["heldStatus"].startswith("queued (1 ahead)"), report
    assert "DELETE /api/maskpaint/jobs/held-1" in report["held"], report["held"]
    assert report["cancelled"].startswith("cancelled"), report


def test_nextjs_submit_and_poll_routes_answer_the_web_api_shapes(stack, photo):
    """The routes alone: 400 with the error body for a missing image, 202 + id, a poll, a
    DELETE of a finished job (its final status), a 404 with ``field`` for an unknown id."""
    base = stack["next"] + "/api/maskpaint/jobs"
    status, body = _post_json(base, {"prompt": "x"})
    assert (status, body["error"]["code"], body["error"]["field"]) == (400, "invalid_input", "image")
    status, body = _post_json(base, {"image": _data_url(photo), "prompt": "a red coat"})
    assert status == 202 and body["id"] and body["status"] in ("queued", "running", "pending"), body
    job_id = body["id"]
    for _ in range(600):
        status, _, data = _request("GET", f"{base}/{job_id}")
        st = json.loads(data)
        if st["status"] not in ("queued", "running", "pending"):
            break
        time.sleep(0.2)
    assert status == 200 and st["status"] == "done", (st, _logs(stack))
    assert st["output"]["image"]["url"].startswith(stack["api"]["url"] + "/outputs/")
    api = stack["api"]
    direct, _, _ = _request("DELETE", f"{api['url']}/jobs/{job_id}",
                            headers={"authorization": f"Bearer {api['token']}"})
    if direct != 405:  # a web API with DELETE /jobs/{id}: the route relays it
        status, _, data = _request("DELETE", f"{base}/{job_id}")
        assert status == 200 and json.loads(data)["status"] == "done", data
    status, _, data = _request("GET", f"{base}/no-such-job")
    assert status == 404 and json.loads(data)["error"]["code"] == "not_found"
