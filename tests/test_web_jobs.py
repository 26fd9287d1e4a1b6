"""The web API's job lifecycle, in process (no models: runners at the dispatch seam): queued vs
running with a position, cancel, idempotent submit, a durable table across a restart, inline
base64 served once, URLs re-signed at each poll, hostile bodies, SSRF at submit and webhook
signatures with a timestamp."""

from __future__ import annotations

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from handlers import webhook as wh
from handlers.jobtable import JobTable
from handlers.localjobs import InlineStore, ThreadDispatcher
from handlers.web import create_web_app

TOKEN = "jobs-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JOB = {"image": "https://example.com/a.jpg", "prompt": "a red coat"}
BOUND = 400  # polls of 0.05 s at most: a bounded loop


class Gate:
    """A runner that holds each job until released, reporting a progress update first; it
    counts the jobs it ran and stops early when the job is cancelled (its progress raises)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.ran: list[str] = []
        self.stopped: list[str] = []

    def __call__(self, job, job_id, progress):
        self.ran.append(job_id)
        progress({"stage": "fetch"})
        while not self.release.wait(0.02):
            try:
                progress({"stage": "inpaint", "step": 1, "steps": 2})
            except Exception as exc:  # JobError(cancelled): what the pipeline would see
                self.stopped.append(job_id)
                return {"error": {"code": getattr(exc, "code").value, "message": str(exc),
                                  "field": None, "retryable": False}}
        return {"job_id": job_id, "mask": {"key": f"{job_id}/mask.png", "url": "file:///x"}}


def _until(client, job_id, statuses):
    for _ in range(BOUND):
        body = client.get(f"/jobs/{job_id}", headers=AUTH).json()
        if body["status"] in statuses:
            return body
        time.sleep(0.05)
    pytest.fail(f"{job_id} never reached {statuses}: {body}")


@pytest.fixture
def gated():
    gate = Gate()
    disp = ThreadDispatcher(gate)
    with TestClient(create_web_app(disp, token=TOKEN)) as client:
        yield client, gate, disp
    gate.release.set()
    disp.shutdown()


def test_queued_jobs_carry_their_position_and_running_is_distinct(gated):
    client, gate, _ = gated
    replies = [client.post("/jobs", json=JOB, headers=AUTH).json() for _ in range(3)]
    ids = [r["id"] for r in replies]
    first = _until(client, ids[0], {"running"})
    assert replies[2]["status"] == "queued" and replies[2]["position"] >= 1  # the 202 says it
    assert first["id"] == ids[0] and "position" not in first
    assert client.get(f"/jobs/{ids[1]}", headers=AUTH).json() == {
        "id": ids[1], "status": "queued", "position": 1}
    assert client.get(f"/jobs/{ids[2]}", headers=AUTH).json() == {
        "id": ids[2], "status": "queued", "position": 2}
    gate.release.set()
    for job_id in ids:
        assert _until(client, job_id, {"done"})["output"]["job_id"] == job_id


def test_cancel_a_queued_job_it_never_runs_and_a_running_one_stops(gated):
    client, gate, _ = gated
    a = client.post("/jobs", json=JOB, headers=AUTH).json()["id"]
    b = client.post("/jobs", json=JOB, headers=AUTH).json()["id"]
    _until(client, a, {"running"})
    r = client.delete(f"/jobs/{b}", headers=AUTH)  # queued
    assert r.status_code == 200 and r.json() == {"id": b, "status": "cancelled"}
    r = client.delete(f"/jobs/{a}", headers=AUTH)  # running
    assert r.json() == {"id": a, "status": "cancelled"}
    assert client.get(f"/jobs/{a}", headers=AUTH).json() == {"id": a, "status": "cancelled"}
    for _ in range(BOUND):  # the running job stops at its next progress report
        if gate.stopped:
            break
        time.sleep(0.05)
    assert gate.stopped == [a]
    assert gate.ran == [a], "a cancelled queued job never starts"
    assert client.get(f"/jobs/{b}", headers=AUTH).json()["status"] == "cancelled"
    assert client.delete("/jobs/local-nope", headers=AUTH).status_code == 404


def test_cancel_after_the_end_returns_the_final_status_unchanged(gated):
    client, gate, _ = gated
    gate.release.set()
    a = client.post("/jobs", json=JOB, headers=AUTH).json()["id"]
    _until(client, a, {"done"})
    r = client.delete(f"/jobs/{a}", headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "done"
    assert client.get(f"/jobs/{a}", headers=AUTH).json()["status"] == "done"


def test_idempotency_key_returns_the_same_job_instead_of_a_second(gated):
    client, gate, disp = gated
    hdr = {**AUTH, "Idempotency-Key": "order-1234"}
    first = client.post("/jobs", json=JOB, headers=hdr)
    again = client.post("/jobs", json=JOB, headers=hdr)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["status"] == "queued"
    body_id = client.post("/jobs", json={"input": JOB, "id": "order-77"}, headers=AUTH)
    same = client.post("/jobs", json={"input": JOB, "id": "order-77"}, headers=AUTH)
    assert (body_id.status_code, same.status_code) == (202, 200)
    assert same.json()["id"] == body_id.json()["id"]
    other = client.post("/jobs", json={**JOB, "prompt": "blue"}, headers=hdr)
    assert other.status_code == 422 and other.json()["error"]["field"] == "Idempotency-Key"
    bad = client.post("/jobs", json=JOB, headers={**AUTH, "Idempotency-Key": "has space"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "Idempotency-Key"
    assert disp.table.count() == 2, "two keys, two jobs"


def test_two_racing_submits_with_one_key_make_one_job():
    gate = Gate()
    disp = ThreadDispatcher(gate)
    app = create_web_app(disp, token=TOKEN)
    hdr = {**AUTH, "Idempotency-Key": "race-1"}
    with TestClient(app) as client:
        replies: list = []
        threads = [threading.Thread(target=lambda: replies.append(
            client.post("/jobs", json=JOB, headers=hdr))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        ids = {r.json()["id"] for r in replies}
        assert len(ids) == 1, [r.json() for r in replies]
        live = [s for s in ("queued", "running") if disp.table.count(s)]
        assert disp.table.count("queued") + disp.table.count("running") == 1, live
        gate.release.set()
    disp.shutdown()


def test_restart_answers_every_issued_id_finished_from_the_table_queued_again(tmp_path):
    db = tmp_path / "jobs.sqlite3"
    gate = Gate()
    one = ThreadDispatcher(gate, table=JobTable(db))
    done_id = one.submit({"input": JOB})
    gate.release.set()
    for _ in range(BOUND):
        if one.poll(done_id)["status"] == "done":
            break
        time.sleep(0.05)
    gate.release.clear()
    running_id = one.submit({"input": JOB})
    queued_id = one.submit({"input": JOB})
    for _ in range(BOUND):
        if one.poll(running_id)["status"] == "running":
            break
        time.sleep(0.05)
    # "kill": a second dispatcher opens the same file while the first is still mid-job
    again = Gate()
    again.release.set()
    two = ThreadDispatcher(again, table=JobTable(db))
    assert two.poll(done_id)["status"] == "done" and done_id not in again.ran
    for job_id in (running_id, queued_id):
        for _ in range(BOUND):
            if two.poll(job_id)["status"] == "done":
                break
            time.sleep(0.05)
        assert two.poll(job_id)["output"]["job_id"] == job_id  # same id, run again
    assert again.ran == [running_id, queued_id]
    gate.release.set()
    one.shutdown()
    two.shutdown()


def test_a_job_cut_by_two_restarts_fails_interrupted_and_retryable(tmp_path):
    table = JobTable(tmp_path / "jobs.sqlite3")
    table.insert("local-x", {"input": JOB})
    assert table.start("local-x") is not None  # attempt 1, then the server dies
    assert table.recover() == (["local-x"], [])
    assert table.start("local-x") is not None  # attempt 2, dies again
    assert table.recover() == ([], ["local-x"])
    body = table.final("local-x")
    assert body["status"] == "failed" and body["error"]["code"] == "interrupted"
    assert body["error"]["retryable"] is True


def test_inline_base64_is_served_once_and_bounded():
    def runner(job, job_id, progress):
        art = {"key": f"{job_id}/m.png", "url": "file:///m", "base64": "QUJD" * 64}
        return {"job_id": job_id, "mask": art, "overlay": dict(art)}

    inline = InlineStore(ttl_s=60, max_bytes=1024)
    disp = ThreadDispatcher(runner, inline=inline)
    with TestClient(create_web_app(disp, token=TOKEN)) as client:
        a = client.post("/jobs", json=JOB, headers=AUTH).json()["id"]
        first = _until(client, a, {"done"})
        assert first["output"]["mask"]["base64"] == "QUJD" * 64
        second = client.get(f"/jobs/{a}", headers=AUTH).json()
        assert second["output"]["mask"].get("base64") is None, "served once"
        assert second["output"]["mask"]["key"] == f"{a}/m.png"
        ids = [client.post("/jobs", json=JOB, headers=AUTH).json()["id"] for _ in range(4)]
        for job_id in ids:
            for _ in range(BOUND):
                if disp.table.status(job_id) == "done":
                    break
                time.sleep(0.05)
        assert inline.bytes <= 1024  # 4 results of 512 B: the oldest were dropped
        assert client.get(f"/jobs/{ids[0]}", headers=AUTH).json()["output"]["mask"].get(
            "base64") is None
        assert client.get(f"/jobs/{ids[-1]}", headers=AUTH).json()["output"]["mask"][
            "base64"] == "QUJD" * 64
    disp.shutdown()


def test_each_poll_of_a_finished_job_signs_its_urls_afresh():
    signed: list[tuple[str, int]] = []

    def resign(output, expires_s):
        signed.append((output["mask"]["key"], expires_s))
        return {**output, "mask": {**output["mask"], "url": f"https://s3/x?sig={len(signed)}"}}

    disp = ThreadDispatcher(lambda job, job_id: {"job_id": job_id, "mask": {
        "key": "maskpaint/j/mask.png", "url": "https://s3/x?sig=0"}})
    with TestClient(create_web_app(disp, token=TOKEN, resign=resign)) as client:
        a = client.post("/jobs", json={**JOB, "output": {"url_expires_s": 600}},
                        headers=AUTH).json()["id"]
        one = _until(client, a, {"done"})["output"]["mask"]["url"]
        two = client.get(f"/jobs/{a}", headers=AUTH).json()["output"]["mask"]["url"]
    assert one != two and two.startswith("https://s3/x?sig=")
    assert signed[-1] == ("maskpaint/j/mask.png", 600)  # the request's own URL lifetime
    disp.shutdown()


@pytest.mark.parametrize("body,message", [
    (b'{"image": "x", "seed": ' + b"9" * 5000 + b"}", "body: number too large"),
    (b"{" + b",".join(b'"k%d": 1' % i for i in range(20_000)) + b"}",
     "body: more than 10000 keys and items"),
    (b'{"image": [' + b"1," * 20_000 + b"1]}", "body: more than 10000 keys and items"),
])
def test_hostile_bodies_get_a_clear_400(body, message):
    disp = ThreadDispatcher(lambda j, i: {})
    with TestClient(create_web_app(disp, token=TOKEN)) as client:
        r = client.post("/jobs", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == {"code": "invalid_input", "message": message, "field": "body",
                                 "retryable": False}
    assert disp.table.count() == 0


@pytest.mark.parametrize("hook", [
    "https://127.0.0.1/h", "https://169.254.169.254/latest", "https://[::1]/h",
    "https://10.0.0.1/h", "https://0.0.0.0/h", "https://localhost/h",
])
def test_private_webhook_urls_are_refused_at_submit(monkeypatch, hook):
    monkeypatch.setenv("MASKPAINT_WEBHOOK_SECRET", "whsec-0123456789")
    monkeypatch.delenv("MASKPAINT_ALLOW_PRIVATE_WEBHOOKS", raising=False)
    disp = ThreadDispatcher(lambda j, i: {})
    with TestClient(create_web_app(disp, token=TOKEN)) as client:
        r = client.post("/jobs", json={"input": JOB, "webhook": hook}, headers=AUTH)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "blocked_url"
        assert r.json()["error"]["field"] == "webhook"
        assert disp.table.count() == 0
        # the documented development override lets a local receiver be tried
        monkeypatch.setenv("MASKPAINT_ALLOW_PRIVATE_WEBHOOKS", "1")
        local = hook.replace("https://", "http://").replace("/h", ":9000/h")
        r = client.post("/jobs", json={"input": JOB, "webhook": local}, headers=AUTH)
        assert r.status_code == 202, r.text


def test_webhook_signatures_carry_a_timestamp_and_old_ones_are_refused():
    body, secret = b'{"id":"j","status":"done"}', "whsec-0123456789"
    now = 1_800_000_000
    sig = wh.sign(body, secret, now)
    assert wh.verify_signature(body, sig, str(now), secret, now=now + 299)
    assert not wh.verify_signature(body, sig, str(now), secret, now=now + 301)  # a replay
    assert not wh.verify_signature(body, sig, str(now + 1), secret, now=now)  # swapped stamp
    assert not wh.verify_signature(body + b" ", sig, str(now), secret, now=now)
    assert not wh.verify_signature(body, sig, None, secret, now=now)
    assert not wh.verify_signature(body, sig, "soon", secret, now=now)
    assert wh.verify_signature(body.decode(), sig, now, secret, now=now, tolerance_s=10)
    parsed = json.loads(body)
    assert parsed["id"] == "j"


def test_modal_cancel_cancels_the_call_and_polls_answer_cancelled(monkeypatch):
    """On Modal: DELETE cancels the FunctionCall and marks the id cancelled in the shared ids
    store, so every web container answers ``cancelled`` without asking Modal again."""
    import modal

    from handlers.dispatch import DictIssuedIds
    from handlers.modal_dispatch import ModalDispatcher

    cancelled: list[str] = []

    class Call:
        def __init__(self, call_id):
            self.call_id = call_id

        def get(self, timeout=None):
            raise TimeoutError  # still queued

        def cancel(self, terminate_containers=False):
            cancelled.append(self.call_id)

    class Method:
        def spawn(self, job):
            return type("C", (), {"object_id": "fc-01CANCEL"})()

    monkeypatch.setattr(modal.FunctionCall, "from_id", lambda call_id, client=None: Call(call_id))
    shared: dict = {}
    app = create_web_app(ModalDispatcher(lambda: Method()), token=TOKEN,
                         issued=DictIssuedIds(shared))
    with TestClient(app) as client:
        job_id = client.post("/jobs", json=JOB, headers=AUTH).json()["id"]
        assert client.get(f"/jobs/{job_id}", headers=AUTH).json() == {"id": job_id,
                                                                      "status": "queued"}
        r = client.delete(f"/jobs/{job_id}", headers=AUTH)
        assert r.json() == {"id": job_id, "status": "cancelled"} and cancelled == [job_id]
    other = TestClient(create_web_app(ModalDispatcher(lambda: Method()), token=TOKEN,
                                      issued=DictIssuedIds(shared)))
    assert other.get(f"/jobs/{job_id}", headers=AUTH).json()["status"] == "cancelled"
    assert cancelled == [job_id]
