"""A full disk, a read-only output directory and an output "directory" that is a file: each
named in the error (ENOSPC, EROFS, "is a file"), with retry advice that fits, and the worker
keeps serving. Injected at the file descriptor (os.write) and, where this machine allows
mounts, on a real full tmpfs and a real read-only bind mount."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DEV_WEIGHTS, REPO, data_url, png_bytes

MASK = np.zeros((512, 512), np.uint8)
MASK[300:460, 200:330] = 255


def _job(astro: bytes) -> dict:
    return {"image": data_url(astro, "image/png"), "mask": data_url(png_bytes(MASK), "image/png"),
            "prompt": "a red jacket", "num_inference_steps": 1, "seed": 3,
            "protect_face": False, "output": {"format": "png"}}


@pytest.fixture
def local_handler(model_set, settings_factory, tmp_path):
    from core.pipeline import Worker
    from core.storage import LocalStorage
    from handlers.runpod import make_handler

    def make(root: Path):
        return make_handler(Worker(settings_factory(output_dir=root), model_set,
                                   LocalStorage(root)))

    return make


def _fail_writes_under(monkeypatch, root: Path, err: int) -> None:
    """Every ``os.write`` to a file under ``root`` fails with ``err`` (a disk's answer)."""
    real = os.write
    root = str(root.resolve())

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(root + os.sep):
            raise OSError(err, os.strerror(err))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("err,name,refresh", [(errno.ENOSPC, "ENOSPC", True),
                                              (errno.EROFS, "EROFS", False)])
def test_write_fault_is_named_and_not_retryable(local_handler, photos, tmp_path, monkeypatch,
                                                err, name, refresh):
    root = tmp_path / "out"
    handler = local_handler(root)
    astro = photos["astronaut"].read_bytes()
    with monkeypatch.context() as m:
        _fail_writes_under(m, root, err)
        out = handler({"id": f"fault-{name}", "input": _job(astro)})
    assert out.get("error_code") == "storage_error", out
    assert f"({name})" in out["message"] and out["retryable"] is False
    assert out.get("refresh_worker", False) is refresh  # a full disk: recycle this worker
    assert str(root) not in out["message"]  # no server paths in the reply
    assert _files(root) == []  # nothing half-written left behind (temporary files removed)
    again = handler({"id": f"fault-{name}", "input": _job(astro)})  # the disk is back
    assert "error" not in again, again


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def real_mount(tmp_path):
    """Mount points made and removed by the test; skipped where this process may not mount."""
    made: list[Path] = []

    def mount(kind: str) -> Path:
        point = tmp_path / kind
        point.mkdir()
        if kind == "full":
            ok = _mount("-t", "tmpfs", "-o", "size=48k", "tmpfs", str(point))
        else:
            src = tmp_path / "src"
            src.mkdir()
            ok = _mount("--bind", str(src), str(point))
            if ok:
                made.append(point)
                ok = _mount("-o", "remount,ro,bind", str(point))
        if not ok:
            pytest.skip("this machine does not let the tests mount file systems")
        if point not in made:
            made.append(point)
        return point

    yield mount
    for point in reversed(made):
        subprocess.run(["umount", str(point)], capture_output=True)


def test_real_full_disk_names_enospc(local_handler, photos, real_mount):
    root = real_mount("full")
    handler = local_handler(root)
    out = handler({"id": "real-full", "input": _job(photos["astronaut"].read_bytes())})
    assert out.get("error_code") == "storage_error", out
    assert "no space left on device (ENOSPC)" in out["message"]
    assert out["retryable"] is False and out["refresh_worker"] is True
    assert not [f for f in _files(root) if f.rsplit("/", 1)[-1].startswith(".tmp-")]


def test_real_read_only_dir_names_erofs(local_handler, photos, real_mount):
    root = real_mount("ro")
    handler = local_handler(root)
    out = handler({"id": "real-ro", "input": _job(photos["astronaut"].read_bytes())})
    assert out.get("error_code") == "storage_error", out
    assert "read-only file system (EROFS)" in out["message"] and out["retryable"] is False


# ------------------------------------------------------------------------ at start
def _start(cmd: list[str], output_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MASKPAINT_OUTPUT_DIR": str(output_dir),
           "MASKPAINT_WEIGHTS_DIR": str(DEV_WEIGHTS), "MASKPAINT_DEVICE": "cpu",
           "MASKPAINT_API_TOKEN": "t" * 24}
    env.pop("MASKPAINT_S3_BUCKET", None)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


ENTRY_POINTS = {
    "serve": [sys.executable, "-m", "handlers.serve", "--port", "0"],
    "runpod": [sys.executable, str(REPO / "runpod_handler.py"), "--test_input",
               json.dumps({"input": {"image": "x", "task": "mask"}})],
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("case", ["file", "under-a-file"])
def test_unusable_output_dir_stops_the_start_with_one_line(tmp_path, entry, case):
    afile = tmp_path / "outputs.txt"
    afile.write_text("not a directory")
    output_dir = afile if case == "file" else afile / "jobs"
    cmd = ENTRY_POINTS[entry]
    proc = _start(cmd, output_dir)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("maskpaint: cannot start")]
    want = (f"MASKPAINT_OUTPUT_DIR={output_dir} is a file, not a directory" if case == "file"
            else f"MASKPAINT_OUTPUT_DIR={output_dir} is not a writable directory: not a "
                 "directory (ENOTDIR)")
    assert lines == [f"maskpaint: cannot start: {want}"]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "models loaded" not in proc.stderr + proc.stdout  # refused before the models load
