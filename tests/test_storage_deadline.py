"""S3 that accepts connections and never answers: each call stops after its set number of
attempts, and the job ends by its deadline, with a clear code, whichever call hangs (record read,
an s3:// input, artefact uploads, record write). A real TCP server stands in for the store."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

import numpy as np
import pytest

from core.errors import JobError
from tests.conftest import BUCKET, data_url, png_bytes

MASK = np.zeros((512, 512), np.uint8)
MASK[300:460, 200:330] = 255


class StallingS3:
    """An HTTP server on 127.0.0.1 that answers S3 like an empty bucket (GET/HEAD 404
    ``NoSuchKey``, PUT 200), except that requests matching ``stall(method, path)`` are read and
    never answered. ``seen`` counts requests by ``(method, stalled)``."""

    def __init__(self, stall) -> None:
        self.stall = stall
        self.seen: Counter = Counter()
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        buf = b""
        with conn:
            while not self.stop.is_set():
                while b"\r\n\r\n" not in buf:
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        if self.stop.is_set():
                            return
                        continue
                    except OSError:
                        return
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {k.strip().lower(): v.strip() for k, v in
                           (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                stalled = bool(self.stall(method, path))
                self.seen[(method, stalled)] += 1
                if stalled:
                    self.stop.wait()  # read, never answered
                    return
                if headers.get("expect", "").lower() == "100-continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                need = int(headers.get("content-length", 0))
                while len(buf) < need:
                    try:
                        buf += conn.recv(65536)
                    except TimeoutError:
                        continue
                buf = buf[need:]
                if method == "PUT":
                    conn.sendall(b'HTTP/1.1 200 OK\r\nETag: "0"\r\nContent-Length: 0\r\n\r\n')
                else:
                    body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey"
                            b"</Code><Message>none</Message></Error>")
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\n"
                                 b"Content-Length: %d\r\n\r\n" % len(body)
                                 + (body if method == "GET" else b""))

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def stalling_s3(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    servers = []

    def start(stall) -> StallingS3:
        servers.append(StallingS3(stall))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_s3_max_attempts_counts_the_first_try(stalling_s3, settings_factory):
    """``s3_max_attempts=2`` is two requests in all (botocore's ``max_attempts`` made it 3)."""
    from core.storage import S3Storage, make_s3_client

    server = stalling_s3(lambda method, path: True)
    s = settings_factory(s3_bucket=BUCKET, s3_endpoint_url=server.url, s3_region="us-east-1",
                         s3_max_attempts=2, s3_read_timeout_s=0.3, s3_connect_timeout_s=2)
    storage = S3Storage(make_s3_client(s), BUCKET)
    with pytest.raises(JobError) as err:
        storage.get("maskpaint/any/job.json")
    assert err.value.code.value == "storage_error" and err.value.retryable
    assert "ReadTimeout" in err.value.message
    assert server.seen == {("GET", True): 2}


#: which call hangs -> the store's stall rule, the job's deadline (s) and the call named
HANGS = {
    "record read": (lambda m, p: True, 3.0, "reading stored output"),
    "uploads": (lambda m, p: m == "PUT", 20.0, "writing output"),
    "record write": (lambda m, p: m == "PUT" and p.endswith("/job.json"), 20.0,
                     "writing the job record"),
}


def test_hanging_s3_input_fails_the_job_by_its_deadline(stalling_s3, model_set,
                                                        settings_factory):
    from core.pipeline import Worker
    from core.storage import S3Storage, make_s3_client
    from handlers.runpod import make_handler

    server = stalling_s3(lambda m, p: "/inputs/" in p)
    s = settings_factory(s3_bucket=BUCKET, s3_endpoint_url=server.url, s3_region="us-east-1",
                         s3_read_timeout_s=120, job_deadline_s=3.0,
                         input_buckets=[f"{BUCKET}/inputs/"])
    client = make_s3_client(s)
    handler = make_handler(Worker(s, model_set, S3Storage(client, BUCKET), lambda: client))
    t0 = time.monotonic()
    out = handler({"id": "hang-input", "input": {"image": f"s3://{BUCKET}/inputs/photo.png",
                                                 "task": "mask"}})
    assert out.get("error_code") == "timeout" and out["retryable"] is True, out
    assert out["message"] == ("fetching the inputs did not finish within the job's deadline "
                              "(3 s); no result was recorded")
    assert time.monotonic() - t0 < 3 + 60  # far below 4 attempts x 120 s
    assert sum(n for (_, stalled), n in server.seen.items() if stalled) >= 1


@pytest.mark.parametrize("hang", list(HANGS))
def test_hanging_store_fails_the_job_by_its_deadline(stalling_s3, model_set, settings_factory,
                                                     photos, hang):
    from core.pipeline import Worker
    from core.storage import S3Storage, make_s3_client
    from handlers.runpod import make_handler

    stall, deadline_s, what = HANGS[hang]
    server = stalling_s3(stall)
    # unbounded, each hanging call would wait 4 attempts x 120 s read timeout = 8 minutes
    s = settings_factory(s3_bucket=BUCKET, s3_endpoint_url=server.url, s3_region="us-east-1",
                         s3_max_attempts=4, s3_read_timeout_s=120, job_deadline_s=deadline_s)
    handler = make_handler(Worker(s, model_set, S3Storage(make_s3_client(s), BUCKET)))
    astro = photos["astronaut"].read_bytes()
    job = {"image": data_url(astro, "image/png"), "mask": data_url(png_bytes(MASK), "image/png"),
           "task": "mask", "protect_face": False}
    t0 = time.monotonic()
    out = handler({"id": f"hang-{hang.replace(' ', '-')}", "input": job})
    took = time.monotonic() - t0
    assert out.get("error_code") == "timeout", out
    assert out["retryable"] is True
    assert out["message"] == (f"{what} did not finish within the job's deadline "
                              f"({deadline_s:g} s); no result was recorded"), out
    # the bound itself: the deadline plus slack for a loaded machine, far below 8 minutes
    assert took < deadline_s + 60
    assert server.seen[(("GET" if hang == "record read" else "PUT"), True)] >= 1
