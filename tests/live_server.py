"""Start the local web API (``python -m handlers.serve``) as a subprocess, for the tests that
drive it over HTTP (the TypeScript client, the mask editor's page in Chromium)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKEN = "live-test-token-0123456789abcdef"
WEBHOOK_SECRET = "live-webhook-secret-0123456789"
READY_TIMEOUT_S = 180

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started in its own session (``start_new_session=True``) and its children."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server we started
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def local_web(weights_dir: Path, out_dir: Path, log: Path, *, args: tuple[str, ...] = (),
              port: int | None = None) -> Iterator[dict]:
    """The local web API on a free loopback port (or ``port``), with the dev weights, local
    outputs in ``out_dir`` (its job table under it) and loopback webhooks allowed
    (``--webhook-loopback``, development only); ``args`` are passed on. Yields
    ``{"url", "token", "secret", "log", "out_dir", "proc"}``; the server is stopped at exit.

    Raises:
        RuntimeError: the server exited or did not answer ``/health`` within
            :data:`READY_TIMEOUT_S` (its log tail in the message).
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASKPAINT_", "AWS_"))}
    env.update(MASKPAINT_WEIGHTS_DIR=str(weights_dir), MASKPAINT_OUTPUT_DIR=str(out_dir),
               MASKPAINT_DEVICE="cpu", MASKPAINT_API_TOKEN=TOKEN,
               MASKPAINT_WEBHOOK_SECRET=WEBHOOK_SECRET, PYTHONUNBUFFERED="1",
               PYTHONPATH=str(REPO), NO_PROXY="*", no_proxy="*")
    proc = subprocess.Popen([sys.executable, "-m", "handlers.serve", "--port", str(port),
                             "--webhook-loopback", *args], cwd=REPO, env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"handlers.serve exited {proc.returncode}:\n"
                                   + log.read_text(errors="replace")[-4000:])
            try:
                with _direct.open(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("handlers.serve not ready in time:\n"
                                   + log.read_text(errors="replace")[-4000:])
            time.sleep(0.3)
        yield {"url": url, "token": TOKEN, "secret": WEBHOOK_SECRET, "log": log,
               "out_dir": out_dir, "proc": proc}
    finally:
        stop(proc)
