"""`python runpod_handler.py --test_input ...` through the runpod SDK's own local mode."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _run(inp: dict, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "runpod_handler.py", "--test_input", json.dumps({"input": inp})],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow
def test_local_test_input_runs_one_job_and_fails_bad_ones(photos, dev_weights, tmp_path):
    img = Image.open(photos["zidane"]).convert("RGB")
    img.thumbnail((320, 320))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    b64 = base64.b64encode(buf.getvalue()).decode()
    env = {**os.environ, "MASKPAINT_WEIGHTS_DIR": str(dev_weights),
           "MASKPAINT_OUTPUT_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    env.pop("MASKPAINT_S3_BUCKET", None)
    ok = _run({"image": b64, "prompt": "a green shirt", "num_inference_steps": 2, "seed": 5}, env)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert [f.split("-")[0] for f in files] == ["job.json", "mask", "overlay", "result"], files
    bad = _run({"image": b64}, env)  # no prompt
    assert bad.returncode == 1
    assert "invalid_input" in bad.stdout + bad.stderr
