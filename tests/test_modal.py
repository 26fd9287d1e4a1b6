"""The Modal app without a Modal account: declarations, the GPU class's job logic, the web API.

- ``modal_app`` imports with no credentials, no GPU and no torch (a clean-env subprocess), and
  the deploy knobs reach ``@app.cls`` (its keyword arguments are recorded).
- ``MaskPaint.run`` is called through Modal's own ``.local()`` (which runs both ``@enter``
  phases) on a real photo with the tiny models and moto S3, and must return what the RunPod
  handler returns for the same job and seed, down to the output image's bytes.
- The web API runs in FastAPI's TestClient with :class:`handlers.dispatch.ThreadDispatcher` at the
  dispatch seam, running the same ``run_job`` on the same worker.
- :class:`handlers.modal.ModalDispatcher` maps modal 1.6's real exception classes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.errors import ErrorCode, JobError
from handlers import dispatch
from handlers import web as web_api
from handlers import modal as glue
from tests.conftest import BUCKET, data_url, png_bytes

REPO = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789abcdef"
ORIGIN = "https://app.example.com"
STEPS = 3
BOX = (200, 300, 330, 460)  # astronaut's suit, px


def _rect_mask(w: int, h: int, box) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 255
    return m


def _input(photos, **kw) -> dict:
    raw = photos["astronaut"].read_bytes()
    inp = {"image": data_url(raw, "image/png"), "prompt": "a red leather jacket",
           "mask": data_url(png_bytes(_rect_mask(512, 512, BOX)), "image/png"),
           "num_inference_steps": STEPS, "seed": 1234, "protect_face": False,
           "mask_dilate_px": 6, "mask_feather_px": 5}
    inp.update(kw)
    return inp


def _shape(obj):
    """Keys and value types, recursively (values such as timings and URLs differ per run)."""
    if isinstance(obj, dict):
        return {k: _shape(v) for k, v in sorted(obj.items())}
    if isinstance(obj, list):
        return [_shape(v) for v in obj[:1]]
    return type(obj).__name__


def _s3_sha(s3, key: str) -> str:
    return hashlib.sha256(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()).hexdigest()


# ------------------------------------------------------------------------ declarations
_PROBE = r"""
import json, sys
import modal
calls = {}
for name in ("cls", "function"):
    orig = getattr(modal.App, name)
    def rec(self, *a, _orig=orig, _name=name, **kw):
        calls[_name] = kw
        return _orig(self, *a, **kw)
    setattr(modal.App, name, rec)
import modal_app
kw = calls["cls"]
print(json.dumps({
    "app": modal_app.app.name,
    "heavy": [m for m in ("torch", "diffusers", "cv2", "ultralytics") if m in sys.modules],
    "gpu": kw["gpu"], "single_use": kw["single_use_containers"],
    "scaledown": kw["scaledown_window"], "snapshot": kw["enable_memory_snapshot"],
    "timeout": kw["timeout"], "retries": kw["retries"].max_retries,
    "max_containers": kw["max_containers"], "image": type(kw["image"]).__name__,
    "secrets": [repr(s) for s in kw["secrets"]],
    "container_env": sorted(kw["env"]),
    "web_secrets": [repr(s) for s in calls["function"]["secrets"]],
    "has_run": hasattr(modal_app.MaskPaint, "run"),
    "experimental": kw.get("experimental_options"),
}))
"""


def _probe(extra_env: dict) -> dict:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent-home",
           "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", **extra_env}
    r = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_modal_app_imports_without_credentials_gpu_or_torch():
    out = _probe({})
    assert out["app"] == "maskpaint" and out["has_run"]
    assert out["heavy"] == []  # `modal deploy` runs on a laptop without the ML stack
    assert out["image"] == "Image"  # the real recipe from image_build.modal_image
    assert out["gpu"] == "L40S" and out["snapshot"] is True
    assert out["single_use"] is False and out["scaledown"] == 120  # warm reuse by default
    assert out["timeout"] > 270  # above the worker's own MASKPAINT_JOB_DEADLINE_S default
    assert out["retries"] == 2
    assert any("maskpaint-s3" in s for s in out["secrets"])
    assert any("maskpaint-api" in s for s in out["web_secrets"])  # token only on the web side
    assert not any("maskpaint-api" in s for s in out["secrets"])


def test_gpu_snapshot_is_off_by_default_and_a_setting():
    assert _probe({})["experimental"] is None
    out = _probe({"MASKPAINT_MODAL_GPU_SNAPSHOT": "1"})
    assert out["experimental"] == {"enable_gpu_snapshot": True} and out["snapshot"] is True
    from handlers.modal import ModalConfig

    on = ModalConfig.from_env({"MASKPAINT_MODAL_GPU_SNAPSHOT": "1"})
    assert on.load_on_cpu is False  # loaded on the GPU, snapshotted there
    assert ModalConfig.from_env({}).load_on_cpu is True
    with pytest.raises(ValueError, match="MASKPAINT_MODAL_SNAPSHOT"):
        ModalConfig.from_env({"MASKPAINT_MODAL_GPU_SNAPSHOT": "1", "MASKPAINT_MODAL_SNAPSHOT": "0"})


def test_deploy_knobs_reach_the_class():
    out = _probe({"MASKPAINT_MODAL_SINGLE_USE": "1", "MASKPAINT_MODAL_GPU": "A100-80GB, L40S",
                  "MASKPAINT_MODAL_SCALEDOWN_S": "30", "MASKPAINT_MODAL_RETRIES": "0",
                  "MASKPAINT_MODAL_SNAPSHOT": "0", "MASKPAINT_MODAL_MAX_CONTAINERS": "4",
                  "MASKPAINT_MODAL_S3_SECRET": "r2-prod"})
    assert out["single_use"] is True and out["scaledown"] == 30
    assert out["gpu"] == ["A100-80GB", "L40S"] and out["snapshot"] is False
    assert out["retries"] == 0 and out["max_containers"] == 4
    assert any("r2-prod" in s for s in out["secrets"])
    # containers re-import modal_app.py: they get the same knobs
    assert {"MASKPAINT_MODAL_SINGLE_USE", "MASKPAINT_MODAL_SNAPSHOT"} <= set(out["container_env"])


@pytest.mark.parametrize("env,name", [
    ({"MASKPAINT_MODAL_SCALEDOWN_S": "1"}, "MASKPAINT_MODAL_SCALEDOWN_S"),  # Modal: 2..3600
    ({"MASKPAINT_MODAL_SINGLE_USE": "maybe"}, "MASKPAINT_MODAL_SINGLE_USE"),
    ({"MASKPAINT_MODAL_RETRIES": "two"}, "MASKPAINT_MODAL_RETRIES"),
])
def test_bad_knobs_fail_the_deploy_naming_the_variable(env, name):
    with pytest.raises(ValueError, match=name):
        glue.ModalConfig.from_env(env)


def test_cpu_only_knob():
    cfg = glue.ModalConfig.from_env({"MASKPAINT_MODAL_GPU": "none"})
    assert cfg.gpu is None and cfg.default_device == "cpu"
    assert glue.ModalConfig.from_env({}).default_device == "cuda"


# ------------------------------------------------------------------------ job logic
def test_split_job_accepts_runpod_and_bare_shapes():
    assert glue.split_job({"id": "a", "input": {"x": 1}}) == ("a", {"x": 1})
    assert glue.split_job({"id": "a", "input": {"x": 1}}, "b") == ("b", {"x": 1})
    assert glue.split_job({"id": "c", "image": "i"}) == ("c", {"image": "i"})
    jid, payload = glue.split_job({"image": "i"})
    assert jid.startswith("modal-") and payload == {"image": "i"}  # no call id outside Modal
    assert glue.split_job(["not", "a", "dict"], "d") == ("d", ["not", "a", "dict"])


@pytest.fixture
def modal_app_module():
    import modal_app

    return modal_app


@pytest.fixture
def modal_env(monkeypatch, dev_weights, model_set, s3, tmp_path):
    """Container-like env for the class: settings from MASKPAINT_* variables (as the Modal
    secret sets them), S3 on moto; ModelSet.load answers with the session's models (the cost
    of loading is the conftest's, once) and records the settings it was given."""
    from core.models import ModelSet

    for k in ("MASKPAINT_S3_ENDPOINT_URL", "MASKPAINT_S3_PREFIX", "MASKPAINT_INPUT_BUCKETS"):
        monkeypatch.delenv(k, raising=False)
    for k, v in {"MASKPAINT_WEIGHTS_DIR": str(dev_weights), "MASKPAINT_S3_BUCKET": BUCKET,
                 "MASKPAINT_S3_REGION": "us-east-1", "MASKPAINT_DEVICE": "cpu",
                 "MASKPAINT_OUTPUT_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    seen = []

    def load(settings, manifest=None):
        seen.append(settings)
        return model_set

    monkeypatch.setattr(ModelSet, "load", staticmethod(load))
    return seen


@pytest.mark.slow
def test_class_run_matches_runpod_handler_byte_for_byte(modal_app_module, modal_env,
                                                        runpod_handler, s3, photos):
    inp = _input(photos)
    rp = runpod_handler({"id": "rp-same", "input": inp})
    assert "error" not in rp, rp

    obj = modal_app_module.MaskPaint()
    out = obj.run.local({"id": "modal-same", "input": inp})  # runs both @modal.enter phases
    assert "error" not in out, out
    assert [s.device for s in modal_env] == ["cpu"]  # snapshot phase: loaded on CPU
    assert _shape(out) == _shape(rp)
    assert out["job_id"] == "modal-same" and out["seed"] == rp["seed"] == 1234
    assert out["image"]["key"].startswith("maskpaint/modal-same/result-")
    assert out["image"]["sha256"] == rp["image"]["sha256"]
    assert _s3_sha(s3, out["image"]["key"]) == _s3_sha(s3, rp["image"]["key"]) \
        == out["image"]["sha256"]
    assert "X-Amz-Signature=" in out["image"]["url"]  # presigned, like RunPod's

    # a bare input with its id, on the same (warm) instance: same bytes again
    bare = obj.run.local({"id": "modal-bare", **inp})
    assert bare["job_id"] == "modal-bare" and bare["image"]["sha256"] == rp["image"]["sha256"]
    assert len(modal_env) == 1  # models loaded once per container, not per job

    # errors: the neutral body, the same code/field/retryable RunPod reports
    bad = {**inp, "num_inference_steps": 0}
    rp_err = runpod_handler({"id": "rp-bad", "input": bad})
    err = obj.run.local({"id": "modal-bad", "input": bad})
    assert set(err) == {"error"}
    assert err["error"] == {"code": rp_err["error_code"], "message": rp_err["message"],
                            "field": "num_inference_steps", "retryable": False}


class _FakeModels:
    def __init__(self, device: str) -> None:
        self.device, self.load_ms, self.moves = device, {"sd15-inpaint": 1.0}, []

    def to(self, device: str):
        self.moves.append(device)
        self.device = device
        return self


def test_cold_start_loads_on_cpu_before_snapshot_then_moves(monkeypatch, tmp_path):
    from core.models import ModelSet
    from core.storage import LocalStorage

    seen = []
    monkeypatch.setattr(ModelSet, "load", staticmethod(
        lambda settings, manifest=None: seen.append(settings.device) or _FakeModels("cpu")))
    monkeypatch.setenv("MASKPAINT_DEVICE", "cuda:0")  # the operator's choice...
    monkeypatch.setenv("MASKPAINT_OUTPUT_DIR", str(tmp_path))
    for k in ("MASKPAINT_S3_BUCKET", "MASKPAINT_INPUT_BUCKETS"):
        monkeypatch.delenv(k, raising=False)
    models = glue.load_models(on_cpu=True)
    assert seen == ["cpu"]  # ...is ignored before the snapshot (no GPU, no CUDA init then)
    worker = glue.make_worker(models, default_device="cuda")
    assert models.moves == ["cuda:0"] and worker.settings.device == "cuda:0"  # ...honoured after
    assert isinstance(worker.storage, LocalStorage)  # no bucket in the secret: local dir

    monkeypatch.delenv("MASKPAINT_DEVICE")
    models = glue.load_models(on_cpu=False)
    worker = glue.make_worker(models, default_device="cuda")
    assert models.moves == ["cuda"]  # the GPU class's default
    worker = glue.make_worker(_FakeModels("cpu"), default_device="cpu")
    assert worker.models.moves == []  # already there: no move


class _RaisingWorker:
    def __init__(self, err: Exception) -> None:
        self.err = err

    def run(self, job, progress=None):
        raise self.err


@pytest.mark.parametrize("err,stops", [
    (JobError(ErrorCode.device_error, "accelerator failed", refresh_worker=True), True),
    (JobError(ErrorCode.gpu_oom, "out of memory"), False),
    (JobError(ErrorCode.empty_mask, "mask: nothing to repaint", field="mask"), False),
    (RuntimeError("boom"), False),
])
def test_only_accelerator_failures_stop_the_container(err, stops):
    calls = []
    reply = glue.run_job(_RaisingWorker(err), {"id": "j", "input": {"image": "x", "prompt": "p"}},
                         on_refresh=lambda: calls.append(1))
    assert set(reply) == {"error"}  # returned, never raised: Modal does not retry it
    code = err.code.value if isinstance(err, JobError) else "internal"
    assert reply["error"]["code"] == code
    assert calls == ([1] if stops else [])


def test_stop_fetching_inputs_outside_modal_is_harmless():
    assert glue.stop_fetching_inputs() is False


def test_demo_job_is_a_valid_job_on_bus_jpg():
    from core.contract import parse_job

    job = glue.demo_job(steps=5)
    assert job["input"]["image"].startswith("data:image/jpeg;base64,/9j/")  # a JPEG
    parsed = parse_job(job["id"], job["input"])
    assert parsed.request.num_inference_steps == 5 and parsed.request.prompt


# ------------------------------------------------------------------------ web API
@pytest.fixture
def gate():
    ev = threading.Event()
    ev.set()
    return ev


@pytest.fixture
def web(s3_worker, gate):
    from fastapi.testclient import TestClient

    def runner(job, job_id):
        assert gate.wait(60)
        return glue.run_job(s3_worker, job, job_id)

    disp = dispatch.ThreadDispatcher(runner)
    app = web_api.create_web_app(disp, token=TOKEN, cors_origins=[ORIGIN])
    with TestClient(app) as client:
        client.dispatcher = disp
        yield client
    gate.set()
    disp.shutdown()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _wait(client, job_id: str, timeout_s: float = 60.0) -> dict:
    t = time.monotonic()
    while time.monotonic() - t < timeout_s:
        r = client.get(f"/jobs/{job_id}", headers=AUTH)
        assert r.status_code == 200, r.text
        if r.json()["status"] not in ("queued", "running"):
            return r.json()
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_health_needs_no_token(web):
    r = web.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong-token-0123456789abcdef"},
    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": TOKEN},
])
def test_missing_or_bad_token_is_401_and_queues_nothing(web, photos, headers):
    r = web.post("/jobs", json=_input(photos), headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in r.text
    assert web.get("/jobs/local-anything", headers=headers).status_code == 401
    assert web.dispatcher.table.count() == 0


@pytest.mark.parametrize("body,status,code,field", [
    (b"{not json", 400, "invalid_input", "body"),
    (b"[1, 2]", 400, "invalid_input", "body"),
    (json.dumps({"input": "text"}).encode(), 400, "invalid_input", "input"),
    (json.dumps({"input": {"image": "x", "prompt": "p"}, "webhook": "u"}).encode(), 400,
     "invalid_input", "webhook"),
    (json.dumps({"image": "x"}).encode(), 422, "invalid_input", "prompt"),
    (json.dumps({"image": "x", "prompt": "p", "num_inference_steps": 0}).encode(), 422,
     "invalid_input", "num_inference_steps"),
    (json.dumps({"input": {"image": "x", "prompt": "p", "colour": "red"}}).encode(), 422,
     "invalid_input", "colour"),
])
def test_invalid_body_is_rejected_at_once_with_its_code(web, body, status, code, field):
    r = web.post("/jobs", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert (err["code"], err["field"], err["retryable"]) == (code, field, False)
    assert web.dispatcher.table.count() == 0  # never reached the GPU


def test_oversized_body_is_413(s3_worker):
    from fastapi.testclient import TestClient

    app = web_api.create_web_app(dispatch.ThreadDispatcher(lambda j, i: {}), token=TOKEN,
                              max_body_bytes=1000)
    r = TestClient(app).post("/jobs", content=b"x" * 2000, headers=AUTH)
    assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large"


@pytest.mark.slow
def test_submit_then_poll_queued_running_then_done(web, s3, photos, gate):
    gate.clear()  # hold the job so "running" is observed deterministically
    r = web.post("/jobs", json={"input": _input(photos)}, headers=AUTH)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["id"].startswith("local-")
    assert r.headers["location"] == f"/jobs/{body['id']}"
    for _ in range(200):  # queued until the worker thread picks it up, then running
        now = web.get(f"/jobs/{body['id']}", headers=AUTH).json()
        if now["status"] == "running":
            break
        assert now == {"id": body["id"], "status": "queued", "position": 1}
        time.sleep(0.05)
    assert now == {"id": body["id"], "status": "running"}
    gate.set()
    done = _wait(web, body["id"])
    assert done["status"] == "done", done
    out = done["output"]
    assert out["job_id"] == body["id"] and out["seed"] == 1234  # the poll id is the job id
    assert out["image"]["key"] == f"maskpaint/{body['id']}/result-{out['image']['sha256'][:16]}.png"
    assert _s3_sha(s3, out["image"]["key"]) == out["image"]["sha256"]
    again = web.get(f"/jobs/{body['id']}", headers=AUTH).json()  # results can be re-read
    assert again["output"]["image"]["sha256"] == out["image"]["sha256"]


def test_a_job_that_fails_in_the_worker_polls_as_failed_with_its_code(web, photos):
    black = data_url(png_bytes(np.zeros((512, 512), np.uint8)), "image/png")
    r = web.post("/jobs", json=_input(photos, mask=black), headers=AUTH)  # valid, but empty
    assert r.status_code == 202, r.text
    res = _wait(web, r.json()["id"])
    assert res["status"] == "failed"
    assert res["error"]["code"] == "empty_mask" and res["error"]["field"] == "mask"
    assert res["error"]["retryable"] is False


def test_unknown_id_is_404(web):
    r = web.get("/jobs/local-doesnotexist", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_cors_preflight_from_an_allowed_origin(web):
    pre = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type"}
    r = web.options("/jobs", headers=pre)
    assert r.status_code == 200, r.text  # answered before auth: preflights carry no token
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    r = web.options("/jobs", headers={**pre, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    r = web.get("/health", headers={"Origin": ORIGIN})
    assert r.headers["access-control-allow-origin"] == ORIGIN


def test_web_app_refuses_to_start_without_a_real_token(monkeypatch):
    monkeypatch.delenv(web_api.TOKEN_ENV, raising=False)
    disp = dispatch.ThreadDispatcher(lambda j, i: {})
    with pytest.raises(ValueError, match=web_api.TOKEN_ENV):
        web_api.create_web_app(disp)
    with pytest.raises(ValueError):
        web_api.create_web_app(disp, token="short")
    monkeypatch.setenv(web_api.TOKEN_ENV, TOKEN)
    assert web_api.create_web_app(disp) is not None


# ------------------------------------------------------------------------ Modal dispatcher
class _FakeCall:
    def __init__(self, outcome) -> None:
        self.outcome = outcome

    def get(self, timeout=None):
        assert timeout == 0  # a poll never waits
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def _mx():
    import modal.exception as mx

    return mx


@pytest.mark.parametrize("outcome,expect", [
    (TimeoutError(), {"status": "queued"}),
    (_mx().InputCancellation("c"), {"status": "cancelled"}),
    (_mx().OutputExpiredError(), {"status": "expired"}),
    (_mx().FunctionTimeoutError("t"), ("failed", "timeout")),
    ({"job_id": "fc-1", "mask": {}}, {"status": "done", "output": {"job_id": "fc-1", "mask": {}}}),
    ({"error": {"code": "empty_mask", "message": "m", "field": "mask", "retryable": False}},
     ("failed", "empty_mask")),
    (ValueError("remote crash"), ("failed", "internal")),
    (_mx().InternalFailure("x"), ("failed", "internal")),
    (_mx().NotFoundError("gone"), LookupError),
    (_mx().ConnectionError("down"), RuntimeError),
])
def test_modal_dispatcher_maps_modal_outcomes(monkeypatch, outcome, expect):
    import modal

    asked = []
    monkeypatch.setattr(modal.FunctionCall, "from_id",
                        lambda call_id, client=None: asked.append(call_id) or _FakeCall(outcome))
    disp = glue.ModalDispatcher(lambda: None)
    if isinstance(expect, type):
        with pytest.raises(expect):
            disp.poll("fc-01ABC")
    elif isinstance(expect, tuple):
        got = disp.poll("fc-01ABC")
        assert (got["status"], got["error"]["code"]) == expect
    else:
        assert disp.poll("fc-01ABC") == expect
    assert asked == ["fc-01ABC"]


def test_modal_dispatcher_submit_spawns_and_rejects_foreign_ids(monkeypatch):
    import modal

    spawned = []

    class _Method:
        def spawn(self, job):
            spawned.append(job)
            return type("Call", (), {"object_id": "fc-01XYZ"})()

    disp = glue.ModalDispatcher(lambda: _Method())
    assert disp.submit({"input": {"image": "x"}}) == "fc-01XYZ"
    assert spawned == [{"input": {"image": "x"}}]
    monkeypatch.setattr(modal.FunctionCall, "from_id",
                        lambda *a, **k: pytest.fail("Modal asked about a non-call id"))
    for bad in ("local-1", "fc-", "fc-../x", "in-01ABC"):
        with pytest.raises(dispatch.UnknownJob):
            disp.poll(bad)


def test_expired_result_is_410_through_the_web_api():
    from fastapi.testclient import TestClient

    class _Expired:
        def submit(self, job):
            return "fc-1"

        def poll(self, job_id):
            return {"status": "expired"}

    client = TestClient(web_api.create_web_app(_Expired(), token=TOKEN))
    assert client.post("/jobs", json={"image": "x", "prompt": "p"}, headers=AUTH).json()["id"] == "fc-1"
    r = client.get("/jobs/fc-1", headers=AUTH)  # polls answer only for ids the API issued
    assert r.status_code == 410
    assert r.json()["status"] == "expired" and r.json()["error"]["code"] == "expired"


def test_a_dispatcher_bug_is_a_json_500_without_details():
    from fastapi.testclient import TestClient

    class _Broken:
        def submit(self, job):
            raise KeyError("secret-internal-detail")

        def poll(self, job_id):
            raise KeyError("secret-internal-detail")

    client = TestClient(web_api.create_web_app(_Broken(), token=TOKEN), raise_server_exceptions=False)
    r = client.post("/jobs", json={"image": "x", "prompt": "p"}, headers=AUTH)
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
    assert "secret-internal-detail" not in r.text


def test_web_error_bodies_match_the_published_schema(web, photos):
    """Every error the web API returns validates against schema/modal.schema.json's
    ModalErrorResponse (what the TypeScript client's types are generated from)."""
    from handlers.web import ModalErrorResponse

    bodies = [
        web.post("/jobs", json=_input(photos), headers={}),  # 401
        web.get("/jobs/local-doesnotexist", headers=AUTH),  # 404
        web.post("/jobs", json={"image": "x"}, headers=AUTH),  # 4xx invalid body
    ]
    for r in bodies:
        assert r.status_code >= 400
        ModalErrorResponse.model_validate(r.json())
