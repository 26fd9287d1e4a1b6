"""What real clients do to the Modal web API: a body nested 100k deep, field
names of kilobytes with newlines and ANSI escapes, Modal refusing our credentials, and polls for
function-call ids this API never issued. No models: a stub dispatcher or
:class:`handlers.modal.ModalDispatcher` over faked Modal calls sits at the dispatch seam.
"""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from handlers import dispatch
from handlers import web as web_api
from handlers import modal as glue

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD = {"image": "aGVsbG8=", "prompt": "a red coat"}
FORGED = '\n{"level": "ERROR", "msg": "FORGED"}\x1b[2J\x1b[31m'


class _Recorder:
    """A dispatcher that queues nothing and answers every poll as done."""

    def __init__(self) -> None:
        self.submitted: list[dict] = []
        self.polled: list[str] = []

    def submit(self, job: dict) -> str:
        self.submitted.append(job)
        return f"fc-01ISSUED{len(self.submitted)}"

    def poll(self, job_id: str) -> dict:
        self.polled.append(job_id)
        return {"status": "done", "output": {"job_id": job_id}}


@pytest.fixture
def api():
    disp = _Recorder()
    client = TestClient(web_api.create_web_app(disp, token=TOKEN), raise_server_exceptions=False)
    client.dispatcher = disp
    return client


def _error(r) -> dict:
    err = r.json()["error"]
    assert set(err) == {"code", "message", "field", "retryable"}
    return err


def test_deeply_nested_body_is_400_invalid_input_without_a_traceback(api, caplog):
    deep = b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with caplog.at_level(logging.DEBUG):
        r = api.post("/jobs", content=deep, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    err = _error(r)
    assert (err["code"], err["field"], err["retryable"]) == ("invalid_input", "body", False)
    assert not any(rec.exc_info for rec in caplog.records)
    assert api.dispatcher.submitted == []


@pytest.mark.parametrize("wrap", [False, True], ids=["bare", "enveloped"])
def test_huge_hostile_field_names_are_capped_and_sanitised(api, wrap):
    name = "x" + FORGED + "QUJD" * 2000  # ~8 kB, newline, ANSI escapes, a base64 run
    body = {"input": GOOD, name: 1} if wrap else {**GOOD, name: 1}
    r = api.post("/jobs", json=body, headers=AUTH)
    assert r.status_code in (400, 422), r.text
    err = _error(r)
    assert err["code"] == "invalid_input"
    assert len(r.content) < 600
    for text in (err["field"], err["message"]):
        assert len(text) <= 200
        assert "\n" not in text and "\x1b" not in text and '"' not in text
        assert "QUJDQUJDQUJDQUJDQUJDQUJD" * 3 not in text
    assert err["field"].startswith("x?")  # still recognisable
    assert api.dispatcher.submitted == []


def _modal_api(monkeypatch, spawn_error=None, get_error=None):
    import modal

    class _Method:
        def spawn(self, job):
            if spawn_error is not None:
                raise spawn_error
            return type("Call", (), {"object_id": "fc-01MINE"})()

    asked: list[str] = []

    class _Call:
        def __init__(self, call_id):
            self.call_id = call_id

        def get(self, timeout=None):
            if get_error is not None:
                raise get_error
            return {"job_id": self.call_id, "mask": {}}

    monkeypatch.setattr(modal.FunctionCall, "from_id",
                        lambda call_id, client=None: asked.append(call_id) or _Call(call_id))
    client = TestClient(web_api.create_web_app(glue.ModalDispatcher(lambda: _Method()), token=TOKEN),
                        raise_server_exceptions=False)
    return client, asked


def test_modal_auth_failure_is_503_on_submit_and_on_poll(monkeypatch):
    import modal.exception as mx

    client, _ = _modal_api(monkeypatch, spawn_error=mx.AuthError("token revoked"))
    r = client.post("/jobs", json=GOOD, headers=AUTH)
    assert r.status_code == 503, r.text
    assert _error(r)["code"] == "unavailable" and _error(r)["retryable"] is True

    client, _ = _modal_api(monkeypatch, get_error=mx.AuthError("token revoked"))
    job_id = client.post("/jobs", json=GOOD, headers=AUTH).json()["id"]
    r = client.get(f"/jobs/{job_id}", headers=AUTH)
    assert r.status_code == 503 and _error(r)["code"] == "unavailable"


def test_poll_answers_only_for_ids_this_api_issued(monkeypatch):
    client, asked = _modal_api(monkeypatch)
    r = client.get("/jobs/fc-01SOMEONEELSES", headers=AUTH)  # a real-looking workspace call id
    assert r.status_code == 404 and _error(r)["code"] == "not_found"
    assert asked == []  # Modal was never asked about it
    job_id = client.post("/jobs", json=GOOD, headers=AUTH).json()["id"]
    r = client.get(f"/jobs/{job_id}", headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "done"
    assert asked == [job_id]


def test_issued_ids_expire_after_their_ttl(monkeypatch):
    clock = {"t": 1000.0}
    monkeypatch.setattr(dispatch.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(dispatch.time, "time", lambda: clock["t"])
    for issued in (dispatch.MemoryIssuedIds(ttl_s=60), dispatch.DictIssuedIds({}, ttl_s=60)):
        issued.add("fc-01A")
        assert "fc-01A" in issued and "fc-01B" not in issued
        clock["t"] += 61
        assert "fc-01A" not in issued
        clock["t"] -= 61


def test_shared_issued_ids_serve_every_web_container(monkeypatch):
    """Two app instances over one shared store (a ``modal.Dict`` on Modal): an id issued by one
    is answered by the other; a store failure is 503, never a wrong 404."""
    shared: dict = {}
    one = TestClient(web_api.create_web_app(_Recorder(), token=TOKEN,
                                         issued=dispatch.DictIssuedIds(shared)))
    two = TestClient(web_api.create_web_app(_Recorder(), token=TOKEN,
                                         issued=dispatch.DictIssuedIds(shared)))
    job_id = one.post("/jobs", json=GOOD, headers=AUTH).json()["id"]
    assert two.get(f"/jobs/{job_id}", headers=AUTH).status_code == 200

    class _Down(dict):
        def get(self, *a, **k):
            raise ConnectionError("dict service down")

    three = TestClient(web_api.create_web_app(_Recorder(), token=TOKEN,
                                           issued=dispatch.DictIssuedIds(_Down())))
    r = three.get(f"/jobs/{job_id}", headers=AUTH)
    assert r.status_code == 503 and _error(r)["code"] == "unavailable"

