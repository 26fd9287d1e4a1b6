"""No surprise network: during a job a worker starts no process (no pip),
downloads nothing and connects nowhere but its configured endpoints, even on undecodable input
and on a host where ultralytics believes it is online.

ultralytics replaces ``PIL.Image.open`` on import; on bytes Pillow cannot identify the patch
calls ``check_requirements("pi-heif")``, which runs ``pip``/``uv pip install`` when the host
looks online (``core/offline.py`` has the details). The guard is a ``sitecustomize`` module put
first on ``PYTHONPATH`` of the real worker process (``python runpod_handler.py --test_input``):
an audit hook (PEP 578) that, while ``handlers.common.execute`` runs, records and refuses every
process start and every connection, and records every DNS lookup. It also makes the two hosts
ultralytics probes at import resolve, as on a machine with network.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

GUARD = r'''
import importlib.abc, importlib.util, json, os, socket, sys

_LOG = os.environ["MASKPAINT_GUARD_LOG"]
_ALLOW = set(filter(None, os.environ.get("MASKPAINT_GUARD_ALLOW", "").split(",")))
_armed = [os.environ.get("MASKPAINT_GUARD_ARMED") == "1"]
_PROCESS = {"subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.spawn", "os.fork",
            "os.forkpty", "pty.spawn"}


def _record(kind, detail):
    with open(_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps({"kind": kind, "detail": detail[:300], "armed": _armed[0]}) + "\n")


def _hook(event, args):
    if event in _PROCESS and _armed[0]:
        _record("process", repr(args))
        raise RuntimeError("guard: no process may start during a job")
    if event == "socket.connect":
        addr = args[1]
        where = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        if where not in _ALLOW:
            _record("connect", where)
            raise OSError("guard: connection refused")
    if event == "socket.getaddrinfo" and _armed[0]:
        _record("dns", str(args[0]))


sys.addaudithook(_hook)

# a host with network, as far as ultralytics' import-time probe can tell
_real_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host, *a, **kw):
    if host in ("one.one.one.one", "dns.google"):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 0))]
    return _real_getaddrinfo(host, *a, **kw)


socket.getaddrinfo = _getaddrinfo


class _ArmDuringJobs(importlib.abc.MetaPathFinder):
    """Wrap handlers.common.execute (before anyone imports the name) to arm the guard."""

    def find_spec(self, name, path=None, target=None):
        if name != "handlers.common":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        real_exec = spec.loader.exec_module

        def exec_module(module):
            real_exec(module)
            real = module.execute

            def execute(*a, **kw):
                _armed[0] = True
                try:
                    return real(*a, **kw)
                finally:
                    _armed[0] = False

            module.execute = execute

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _ArmDuringJobs())
'''


def _guard_env(tmp_path: Path, **extra) -> tuple[dict, Path]:
    site = tmp_path / "guard"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(GUARD, encoding="utf-8")
    log = tmp_path / "guard.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
           "MASKPAINT_GUARD_LOG": str(log), **extra}
    return env, log


def _events(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def test_the_guard_sees_processes_and_connections(tmp_path):
    """The guard is not vacuous: armed, it records and refuses a process and a connection."""
    env, log = _guard_env(tmp_path, MASKPAINT_GUARD_ARMED="1")
    code = ("import socket, subprocess\n"
            "for f in (lambda: subprocess.run(['true']),"
            " lambda: socket.create_connection(('192.0.2.1', 443), timeout=1)):\n"
            "    try:\n        f()\n    except Exception as e:\n        print(type(e).__name__)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    kinds = [e["kind"] for e in _events(log) if e["armed"]]
    assert "process" in kinds and "connect" in kinds, kinds


@pytest.mark.slow
def test_undecodable_input_installs_and_downloads_nothing(dev_weights, tmp_path):
    env, log = _guard_env(tmp_path, MASKPAINT_WEIGHTS_DIR=str(dev_weights),
                          MASKPAINT_OUTPUT_DIR=str(tmp_path / "out"), YOLO_OFFLINE="0",
                          YOLO_AUTOINSTALL="true")
    env.pop("MASKPAINT_S3_BUCKET", None)
    junk = base64.b64encode(os.urandom(3000)).decode()  # valid base64, not an image
    job = {"id": "junk", "input": {"image": junk, "prompt": "a coat", "num_inference_steps": 2}}
    r = subprocess.run([sys.executable, "runpod_handler.py", "--test_input", json.dumps(job)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "invalid_image" in out, out[-3000:]
    during_job = [e for e in _events(log) if e["armed"]]
    assert during_job == []  # no pip, no process, no DNS, no connection
    assert "AutoUpdate" not in out and "pi-heif" not in out and "pip install" not in out
