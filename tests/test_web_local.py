"""The local web API (``handlers.serve``): progress while polling, http artefact URLs, static
page, and signed webhooks to a loopback receiver (allowed by the development policy)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from handlers import webhook as wh
from handlers.dispatch import MemoryProgress, ThreadDispatcher
from handlers.serve import local_app
from handlers.web import create_web_app
from tests.conftest import data_url

TOKEN = "local-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "whsec-test-0123456789"
LOOPBACK = wh.WebhookPolicy(allow_private=True, allow_http=True, allow_any_port=True,
                            backoff_s=0.05)
POLL_LIMIT = 600  # polls of 0.1 s at most: a bounded loop


class Recording(MemoryProgress):
    """Keeps every update, to check what the worker reported."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict] = []

    def set(self, job_id: str, update: dict) -> None:
        self.seen.append(dict(update))
        super().set(job_id, update)


@pytest.fixture
def receiver():
    """A loopback HTTP server that records POSTs; answers 503 first ``fail_first`` times."""
    got: list[tuple[bytes, str | None]] = []
    state = {"fail_first": 0}

    class H(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if state["fail_first"] > 0:
                state["fail_first"] -= 1
                self.send_response(503)
            else:
                got.append((body, self.headers.get(wh.SIGNATURE_HEADER),
                            self.headers.get(wh.TIMESTAMP_HEADER)))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/hook", got, state
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def local(settings_factory, model_set, monkeypatch, dev_weights):
    from core.pipeline import build_worker

    monkeypatch.setenv("MASKPAINT_WEIGHTS_DIR", str(dev_weights))
    monkeypatch.setenv("MASKPAINT_WEBHOOK_SECRET", SECRET)
    worker = build_worker(model_set, settings_factory())
    app = local_app(worker, public_url="http://testserver", token=TOKEN, webhook_policy=LOOPBACK)
    progress = Recording()
    app.state.dispatcher.progress = progress
    with TestClient(app) as client:
        yield client, worker, progress


def _wait(client, job_id: str) -> tuple[dict, list[dict]]:
    pendings = []
    for _ in range(POLL_LIMIT):
        r = client.get(f"/jobs/{job_id}", headers=AUTH)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] == job_id
        if body["status"] not in ("queued", "running"):
            return body, pendings
        pendings.append(body)
        time.sleep(0.1)
    pytest.fail("the job did not finish in time")


def test_local_inpaint_job_reports_progress_and_serves_its_result_over_http(local, photos,
                                                                            receiver):
    client, worker, progress = local
    url, got, state = receiver
    state["fail_first"] = 1  # one 503 first: the delivery is retried
    body = {"input": {"image": data_url(photos["bus"].read_bytes()), "prompt": "a red jacket",
                      "num_inference_steps": 2, "seed": 1}, "webhook": url}
    r = client.post("/jobs", json=body, headers=AUTH)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    done, pendings = _wait(client, job_id)
    assert done["status"] == "done", done
    for p in pendings:  # whatever a poll showed is a well-formed queued or running status
        assert set(p) <= {"id", "status", "progress", "position"}
        assert ("progress" not in p) or p["status"] == "running"
    stages = [u["stage"] for u in progress.seen]
    assert stages[0] == "fetch" and "mask" in stages and stages[-1] == "upload", stages
    steps = [u for u in progress.seen if u["stage"] == "inpaint" and "steps" in u]
    # step updates within a stage are throttled (0.5 s), so a fast job may show none
    assert all(0 < u["step"] <= u["steps"] for u in steps), progress.seen

    out = done["output"]
    assert out["image"]["url"].startswith("http://testserver/outputs/")
    for art in [out["image"], out["mask"], out["overlay"], *out["images"]]:
        assert art["url"].startswith("http://testserver/outputs/"), art["url"]
        assert art["key"] == art["url"].removeprefix("http://testserver/outputs/")
        assert not art["key"].startswith("/")
    img = client.get(out["image"]["url"].removeprefix("http://testserver"))
    assert img.status_code == 200
    assert hashlib.sha256(img.content).hexdigest() == out["image"]["sha256"]

    for _ in range(100):  # the webhook follows the result (bounded wait)
        if got:
            break
        time.sleep(0.1)
    raw, sig, ts = got[0]
    assert sig == "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + raw,
                                       hashlib.sha256).hexdigest()
    assert wh.verify_signature(raw, sig, ts, SECRET)
    delivered = json.loads(raw)
    assert delivered["id"] == job_id and delivered["status"] == "done"
    assert delivered["output"] == out, "the webhook carries what a poll shows (http URLs)"


def test_pending_poll_carries_the_latest_progress():
    release = threading.Event()

    def runner(job, job_id, progress):
        progress({"stage": "inpaint", "step": 1, "steps": 2})
        release.wait(30)
        return {"error": {"code": "empty_mask", "message": "mask: empty", "field": "mask",
                          "retryable": False}}

    app = create_web_app(ThreadDispatcher(runner), token=TOKEN)
    with TestClient(app) as client:
        job_id = client.post("/jobs", json={"image": "https://example.com/a.jpg", "prompt": "p"},
                             headers=AUTH).json()["id"]
        for _ in range(POLL_LIMIT):
            body = client.get(f"/jobs/{job_id}", headers=AUTH).json()
            if "progress" in body:
                break
            time.sleep(0.05)
        assert body == {"id": job_id, "status": "running",
                        "progress": {"stage": "inpaint", "step": 1, "steps": 2}}
        release.set()
        done, _ = _wait(client, job_id)
        assert done["status"] == "failed" and done["error"]["code"] == "empty_mask"


def test_static_page_and_client_are_served(local):
    client, _, _ = local
    page = client.get("/mask-editor/page/")
    assert page.status_code == 200 and "importmap" in page.text
    assert client.get("/mask-editor/src/index.js").status_code == 200
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/outputs/../pyproject.toml").status_code == 404


@pytest.mark.parametrize("hook,code", [
    ("http://127.0.0.1:9/hook", "blocked_url"),  # production rules: https and port 443 only
    ("https://user:pw@example.com/hook", "blocked_url"),
    ("not a url", "invalid_input"),
])
def test_webhook_url_checked_at_submit_under_production_rules(monkeypatch, hook, code):
    monkeypatch.setenv("MASKPAINT_WEBHOOK_SECRET", SECRET)
    app = create_web_app(ThreadDispatcher(lambda j, i: {}), token=TOKEN)
    with TestClient(app) as client:
        r = client.post("/jobs", json={"input": {"image": "https://example.com/a.jpg", "prompt": "p"},
                                       "webhook": hook}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["code"] == code
    assert r.json()["error"]["field"] == "webhook"
    assert "pw" not in r.text and "/hook" not in r.text


def test_webhook_refused_without_a_secret(monkeypatch):
    monkeypatch.delenv("MASKPAINT_WEBHOOK_SECRET", raising=False)
    app = create_web_app(ThreadDispatcher(lambda j, i: {}), token=TOKEN)
    with TestClient(app) as client:
        r = client.post("/jobs", json={"input": {"image": "https://example.com/a.jpg", "prompt": "p"},
                                       "webhook": "https://example.com/hook"}, headers=AUTH)
    assert r.status_code == 400 and "MASKPAINT_WEBHOOK_SECRET" in r.json()["error"]["message"]


def test_production_delivery_never_reaches_loopback(receiver):
    url, got, _ = receiver
    https_loopback = url.replace("http://", "https://")
    ok = wh.deliver(https_loopback, "j1", {"job_id": "j1"}, secret=SECRET,
                    policy=wh.WebhookPolicy(allow_any_port=True, allow_private=False),
                    sleep=lambda s: None)
    assert ok is False and got == []


def test_delivery_retries_are_bounded(receiver):
    url, got, state = receiver
    state["fail_first"] = 100
    pauses = []
    ok = wh.deliver(url, "j2", {"error": {"code": "internal", "message": "x", "field": None,
                                          "retryable": True}},
                    secret=SECRET, policy=LOOPBACK, sleep=pauses.append)
    assert ok is False and got == []
    assert pauses == [0.05, 0.1, 0.2, 0.4]  # MAX_ATTEMPTS = 5 tries, exponential backoff


def test_modal_dispatcher_shows_the_progress_the_gpu_class_wrote(monkeypatch):
    """On Modal the GPU container writes progress to a shared mapping (a ``modal.Dict``, here a
    dict) keyed by call id; the web API reads it while the call is pending."""
    import modal

    from handlers import modal as glue
    from handlers.dispatch import DictProgress

    class Pending:
        def get(self, timeout=None):
            raise TimeoutError

    monkeypatch.setattr(modal.FunctionCall, "from_id", lambda call_id, client=None: Pending())
    shared: dict = {}
    disp = glue.ModalDispatcher(lambda: None, DictProgress(shared))
    assert disp.poll("fc-01ABC") == {"status": "queued"}  # no progress yet: not started
    DictProgress(shared).set("fc-01ABC", {"stage": "inpaint", "step": 3, "steps": 30})
    assert disp.poll("fc-01ABC") == {"status": "running", "progress": {"stage": "inpaint",
                                                                       "step": 3, "steps": 30}}
    assert disp.poll("fc-01OTHER") == {"status": "queued"}


def test_a_broken_progress_store_never_fails_a_poll():
    from handlers.dispatch import DictProgress

    class Broken:
        def get(self, key):
            raise ConnectionError("down")

        def __setitem__(self, key, value):
            raise ConnectionError("down")

    store = DictProgress(Broken())
    store.set("fc-1", {"stage": "mask"})  # logged, not raised
    assert store.get("fc-1") is None


def test_run_job_reports_stages_and_delivers_the_webhook(settings_factory, model_set, photos,
                                                         receiver, monkeypatch):
    """``handlers.modal.run_job`` (what the GPU class runs): progress goes to the given sink and
    the finished reply to the job's ``webhook``, signed."""
    from core.pipeline import build_worker
    from handlers.modal import run_job

    monkeypatch.setenv("MASKPAINT_WEBHOOK_SECRET", SECRET)
    url, got, _ = receiver
    seen: list[dict] = []
    worker = build_worker(model_set, settings_factory())
    job = {"input": {"image": data_url(photos["bus"].read_bytes()), "task": "mask"},
           "webhook": url}
    reply = run_job(worker, job, "fc-01RUN", on_refresh=lambda: None, progress=seen.append,
                    webhook_policy=LOOPBACK)
    assert "error" not in reply, reply
    assert [u["stage"] for u in seen][:3] == ["fetch", "decode", "mask"]
    for _ in range(100):  # delivered in the background: run_job returned first
        if got:
            break
        time.sleep(0.1)
    raw, sig, ts = got[0]
    assert sig == wh.sign(raw, SECRET, int(ts))
    assert json.loads(raw)["id"] == "fc-01RUN" and json.loads(raw)["output"] == reply


def test_run_job_hands_the_webhook_off_and_returns_without_delivering(settings_factory,
                                                                      model_set, photos,
                                                                      receiver, monkeypatch):
    """On Modal the GPU class passes ``send_webhook`` (spawn the CPU delivery function): the
    job returns as soon as its record is written, having only handed the status over, without
    inline base64 (the webhook carries URLs)."""
    from core.pipeline import build_worker
    from handlers.modal import run_job

    monkeypatch.setenv("MASKPAINT_WEBHOOK_SECRET", SECRET)
    url, got, _ = receiver
    handed: list[tuple] = []
    worker = build_worker(model_set, settings_factory())
    job = {"input": {"image": data_url(photos["bus"].read_bytes()), "task": "mask",
                     "output": {"return_base64": True}}, "webhook": url}
    reply = run_job(worker, job, "fc-01HAND", on_refresh=lambda: None,
                    send_webhook=lambda *a: handed.append(a))
    assert reply["mask"]["base64"], "the reply itself keeps its inline copy"
    ((to, job_id, status),) = handed
    assert (to, job_id, status["status"]) == (url, "fc-01HAND", "done")
    assert status["output"]["mask"]["base64"] is None
    assert status["output"]["mask"]["sha256"] == reply["mask"]["sha256"]
    time.sleep(0.5)
    assert got == [], "nothing was delivered from the worker itself"
