"""README "RunPod": ``python -m handlers.cli test-input --image photo.jpg > test_input.json``
then ``python runpod_handler.py`` (runpod 1.12 reads ``test_input.json`` from the working
directory when no ``--test_input`` is given: ``runpod/serverless/modules/rp_local.py``).

bus.jpg is 137 KB (183 KB as base64): more than ``--test_input '<json>'`` can carry. Two runs
in a row both succeed: each file has a fresh id, so the second is a new job, not a clash with
the first one's write-once record (runpod's own default id is always ``local_test``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _test_input(cwd: Path, *args: str) -> dict:
    with (cwd / "test_input.json").open("w") as f:
        proc = subprocess.run([sys.executable, "-m", "handlers.cli", "test-input", *args],
                              cwd=REPO, stdout=f, stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads((cwd / "test_input.json").read_text())


def test_test_input_file_has_the_photo_and_a_fresh_id(photos, tmp_path):
    a = _test_input(tmp_path, "--image", str(photos["bus"]), "--prompt", "a red coat")
    b = _test_input(tmp_path, "--image", str(photos["bus"]))
    assert a["id"] != b["id"] and a["id"].startswith("local-")
    assert a["input"]["image"].startswith("data:image/jpeg;base64,")
    assert len(a["input"]["image"]) > 180_000  # the whole photo, no argv limit on a file
    assert a["input"]["prompt"] == "a red coat"


def test_runpod_handler_runs_test_input_json_twice(photos, dev_weights, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASKPAINT_", "RUNPOD_"))}
    env.update(MASKPAINT_WEIGHTS_DIR=str(dev_weights), MASKPAINT_DEVICE="cpu",
               MASKPAINT_OUTPUT_DIR=str(tmp_path / "outputs"), PYTHONPATH=str(REPO))
    ids = []
    for _ in range(2):
        job = _test_input(tmp_path, "--image", str(photos["bus"]), "--steps", "2")
        proc = subprocess.run([sys.executable, str(REPO / "runpod_handler.py")], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=600)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-4000:]
        assert "Using test_input.json as job input" in log, log[-4000:]
        assert f"Job {job['id']} completed successfully" in log, log[-4000:]
        ids.append(job["id"])
    assert ids[0] != ids[1]
    # both jobs' outputs are there, under their own ids
    for job_id in ids:
        assert list((tmp_path / "outputs").rglob(f"*{job_id}*")), job_id
