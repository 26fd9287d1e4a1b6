"""The local web API as a real process (``python -m handlers.serve``), tried as a hostile or
careless client would: wide and oversized bodies while ``/health`` is polled, idle and
half-sent connections, a client leaving mid-body, a webhook receiver that never answers,
cancel / idempotency / queued vs running over HTTP, job records behind the token, and
``kill -9`` with jobs in flight. Bounds are generous (a loaded 2-core machine): the checks are
on outcomes, not on speed."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import data_url
from tests.live_server import local_web

POLL_S, BOUND = 0.2, 600  # polls at most: 2 minutes


def _conn(srv, timeout: float = 30) -> http.client.HTTPConnection:
    host, port = srv["url"].removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def _req(srv, method: str, path: str, body=None, headers=None, timeout: float = 30):
    c = _conn(srv, timeout)
    try:
        hdrs = {"Authorization": f"Bearer {srv['token']}", **(headers or {})}
        if isinstance(body, (dict, list)):
            body, hdrs["Content-Type"] = json.dumps(body).encode(), "application/json"
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        raw = r.read()
        return r.status, (json.loads(raw) if raw[:1] in (b"{", b"[") else raw)
    finally:
        c.close()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _wait(srv, job_id: str, statuses=("done", "failed", "cancelled")) -> dict:
    for _ in range(BOUND):
        status, body = _req(srv, "GET", f"/jobs/{job_id}")
        assert status == 200, (status, body)
        if body["status"] in statuses:
            return body
        time.sleep(POLL_S)
    pytest.fail(f"job {job_id} stuck: {body}")


@pytest.fixture(scope="module")
def job(photos):
    """A small inpaint job (tiny dev model, provided mask): seconds on CPU."""
    from PIL import Image
    import io

    img = Image.open(photos["bus"]).convert("RGB").resize((192, 256))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    mask = Image.new("L", (192, 256), 0)
    mask.paste(255, (40, 60, 150, 200))
    mbuf = io.BytesIO()
    mask.save(mbuf, "PNG")
    return {"image": data_url(buf.getvalue(), "image/png"),
            "mask": data_url(mbuf.getvalue(), "image/png"), "prompt": "a red jacket",
            "num_inference_steps": 4, "seed": 7}


@pytest.fixture(scope="module")
def srv(dev_weights, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live")
    with local_web(dev_weights, tmp / "out", tmp / "serve.log",
                   args=("--header-timeout-s", "1", "--body-timeout-s", "2")) as s:
        yield s


def test_wide_bodies_never_stall_health_or_polls(srv):
    wide = b"{" + b",".join(b'"k%07d":1' % i for i in range(1_000_000)) + b"}"  # ~13 MiB
    results, health = [], []
    done = threading.Event()

    def post():
        results.append(_req(srv, "POST", "/jobs", wide, {"Content-Type": "application/json"},
                            timeout=120))

    def poll_health():
        while not done.is_set():
            status, _ = _req(srv, "GET", "/health", timeout=10)  # a 6 s stall per body would fail
            health.append(status)
            time.sleep(0.05)

    hp = threading.Thread(target=poll_health)
    hp.start()
    posts = [threading.Thread(target=post) for _ in range(3)]
    for t in posts:
        t.start()
    for t in posts:
        t.join(180)
    done.set()
    hp.join(30)
    assert [r[0] for r in results] == [400] * 3, results
    assert all(r[1]["error"]["message"] == "body: more than 10000 keys and items"
               for r in results)
    assert health and set(health) == {200}


def test_a_chunked_body_is_cut_at_the_cap_without_being_buffered(srv):
    pid = srv["proc"].pid
    base = _rss_mib(pid)
    peak = {"v": base}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak["v"] = max(peak["v"], _rss_mib(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    host, port = srv["url"].removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(b"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + srv["token"].encode()
                 + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % (1 << 20) + b'"' + b"A" * ((1 << 20) - 1) + b"\r\n"
    sent = 0
    try:
        for _ in range(1200):  # up to 1.2 GiB, stopped by the server
            sock.sendall(chunk)
            sent += 1 << 20
    except (BrokenPipeError, ConnectionResetError):
        pass
    sock.settimeout(30)
    reply = b""
    try:
        while b"\r\n\r\n" not in reply:
            part = sock.recv(65536)
            if not part:
                break
            reply += part
    except (ConnectionResetError, socket.timeout):
        pass
    sock.close()
    stop.set()
    sampler.join()
    print(f"chunked: sent {sent >> 20} MiB, server RSS {base:.0f} -> {peak['v']:.0f} MiB")
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert sent < 1200 << 20, "the server stopped reading at the cap"
    grew = peak["v"] - base
    assert grew < 600, f"server RSS grew {grew:.0f} MiB for a body cut at ~144 MiB"
    assert _req(srv, "GET", "/health")[0] == 200


def test_idle_and_half_sent_connections_are_closed(srv):
    host, port = srv["url"].removeprefix("http://").split(":")
    idle = socket.create_connection((host, int(port)), timeout=30)
    half = socket.create_connection((host, int(port)), timeout=30)
    half.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    assert idle.recv(1) == b"" and half.recv(1) == b""  # closed by the server (1 s deadline)
    idle.close()
    half.close()
    slow = socket.create_connection((host, int(port)), timeout=30)
    slow.sendall(b"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 + srv["token"].encode() + b"\r\nContent-Length: 1000\r\n\r\n{\"image\"")
    reply = b""
    while True:  # the body stopped: 408 after 2 s, then the server closes
        part = slow.recv(65536)
        if not part:
            break
        reply += part
    slow.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b'"code":"timeout"' in reply


def test_a_client_leaving_mid_body_logs_one_json_warning(srv):
    host, port = srv["url"].removeprefix("http://").split(":")
    before = srv["log"].read_text(errors="replace")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(b"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + srv["token"].encode()
              + b"\r\nContent-Length: 5000000\r\n\r\n" + b"{" + b" " * 100_000)
    time.sleep(0.3)
    s.close()
    for _ in range(100):
        new = srv["log"].read_text(errors="replace")[len(before):]
        if "disconnected" in new:
            break
        time.sleep(0.1)
    lines = [ln for ln in new.splitlines() if ln.strip()]
    hits = [json.loads(ln) for ln in lines if "disconnected" in ln]
    assert len(hits) == 1 and hits[0]["level"] == "WARNING", lines
    assert "Traceback" not in new and all(ln.startswith("{") for ln in lines), lines


def test_queued_running_cancel_and_idempotency_over_http(srv, job):
    slow = {**job, "num_inference_steps": 150}
    ids = []
    for i in range(3):
        status, body = _req(srv, "POST", "/jobs", slow, {"Idempotency-Key": f"live-{i}"})
        assert status == 202, body
        assert i == 0 or body["position"] >= 1, body  # later ones wait behind the first
        ids.append(body["id"])
    again = _req(srv, "POST", "/jobs", slow, {"Idempotency-Key": "live-2"})
    assert again == (200, {"id": ids[2], "status": "queued"})
    running = _wait(srv, ids[0], ("running",))
    assert "position" not in running
    assert _req(srv, "GET", f"/jobs/{ids[2]}")[1] == {"id": ids[2], "status": "queued",
                                                      "position": 2}
    for job_id in (ids[2], ids[0]):  # a queued one, then the running one
        assert _req(srv, "DELETE", f"/jobs/{job_id}") == (200, {"id": job_id,
                                                                "status": "cancelled"})
    assert _wait(srv, ids[1], ("running",))["status"] == "running"  # the next one started
    assert _req(srv, "DELETE", f"/jobs/{ids[1]}")[1]["status"] == "cancelled"
    time.sleep(1.0)
    for job_id in ids:
        assert _req(srv, "GET", f"/jobs/{job_id}")[1]["status"] == "cancelled"
        assert not list((srv["out_dir"] / job_id).glob("*")), "no outputs of a cancelled job"


def test_a_hanging_webhook_receiver_never_holds_the_worker(srv, job):
    hung: list[socket.socket] = []
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)

    def accept():  # takes connections, reads nothing, answers nothing
        while True:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            hung.append(c)

    threading.Thread(target=accept, daemon=True).start()
    hook = f"http://127.0.0.1:{lsock.getsockname()[1]}/hook"
    status, a = _req(srv, "POST", "/jobs", {"input": job, "webhook": hook})
    assert status == 202, a
    assert _wait(srv, a["id"])["status"] == "done"
    status, b = _req(srv, "POST", "/jobs", job)
    assert _wait(srv, b["id"])["status"] == "done"  # the next job ran meanwhile
    assert hung, "the delivery reached the receiver, which still hangs"
    lsock.close()
    for c in hung:
        c.close()


def test_job_records_need_the_token_and_the_job_table_is_never_served(srv, job):
    status, body = _req(srv, "POST", "/jobs", job)
    done = _wait(srv, body["id"])
    assert done["status"] == "done"
    art = done["output"]["image"]
    assert not art["key"].startswith("/") and art["url"].endswith(art["key"])
    record = f"/outputs/{body['id']}/job.json"
    assert _req(srv, "GET", record, headers={"Authorization": ""})[0] == 401
    status, rec = _req(srv, "GET", record)
    assert status == 200 and rec["job_id"] == body["id"]
    assert _req(srv, "GET", "/outputs/.maskpaint/jobs.sqlite3")[0] == 404
    assert _req(srv, "GET", "/" + art["url"].split("/", 3)[3], headers={"Authorization": ""}
                )[0] == 200  # artefacts stay open to a page's <img src>


def test_kill_9_and_restart_loses_no_job(dev_weights, tmp_path, job):
    out, log = tmp_path / "out", tmp_path / "serve.log"
    with local_web(dev_weights, out, log) as one:
        ids = [_req(one, "POST", "/jobs", job)[1]["id"] for _ in range(6)]
        first = _wait(one, ids[0])
        assert first["status"] == "done"
        states = {i: _req(one, "GET", f"/jobs/{i}")[1]["status"] for i in ids}
        os.killpg(one["proc"].pid, signal.SIGKILL)
        one["proc"].wait(10)
    assert any(s in ("queued", "running") for s in states.values()), states
    with local_web(dev_weights, out, log) as two:
        assert _req(two, "GET", f"/jobs/{ids[0]}")[1]["status"] == "done"  # from the table
        for job_id in ids:
            status, body = _req(two, "GET", f"/jobs/{job_id}")
            assert status == 200, (job_id, body)  # never 404
            final = _wait(two, job_id)
            assert final["status"] == "done", final  # queued ones ran again, same id
            assert final["output"]["job_id"] == job_id
            assert final["output"]["image"]["url"].startswith(two["url"])  # re-signed here
