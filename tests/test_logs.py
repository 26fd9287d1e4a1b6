"""Logs: one handler, ours, whatever imports ran; nothing a caller sends can
forge a line or get a payload printed.

The process-level test runs the real worker entry point (``python runpod_handler.py
--test_input ...``) over hostile jobs and reads everything it printed.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FORGED = '\n{"level": "ERROR", "logger": "maskpaint.job", "msg": "FORGED"}\x1b[2J\x1b[31m'
B64_RUN = "QUJD" * 100  # 400 base64 characters
#: tqdm progress bars (diffusers/transformers at cold start) and the SDK's start banner are
#: printed with print()/tqdm, not logging: the only non-JSON text allowed.
_NOT_LOG = re.compile(r"(\d+%\|.*\|)|(^--- Starting Serverless Worker \|)|(^\x1b\[A)|(^\s*$)")


@pytest.fixture
def clean_root(monkeypatch):
    """Run with the root logger's handlers and level restored afterwards."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    return root


def test_one_console_handler_ours_after_runpod_and_library_handlers(clean_root):
    import runpod  # noqa: F401  (its import runs logging.basicConfig)

    from core.logs import setup_logging

    clean_root.addHandler(logging.StreamHandler(sys.stderr))  # what basicConfig leaves
    lib = logging.getLogger("maskpaint.test.lib")  # what ultralytics does to its logger
    lib_handler = logging.StreamHandler(sys.stdout)
    lib.addHandler(lib_handler)
    lib.propagate = False
    try:
        setup_logging()
        setup_logging()  # idempotent
        console = [h for h in clean_root.handlers if isinstance(h, logging.StreamHandler)
                   and not isinstance(h, logging.FileHandler)  # pytest's own (/dev/null)
                   and not isinstance(h.stream, io.StringIO)  # pytest's caplog buffers
                   and type(h).__name__ != "LogCaptureHandler"]
        assert len(console) == 1 and getattr(console[0], "_maskpaint", False)
        assert lib.handlers == [] and lib.propagate is True
    finally:
        lib.removeHandler(lib_handler)
        lib.propagate = True


def test_log_level_comes_from_settings(clean_root, monkeypatch):
    from core.logs import setup_logging

    monkeypatch.setenv("MASKPAINT_LOG_LEVEL", "warning")  # any case, validated by Settings
    setup_logging()
    assert clean_root.level == logging.WARNING
    monkeypatch.setenv("MASKPAINT_LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match="log_level"):
        setup_logging()


def test_a_record_cannot_forge_a_line_or_carry_a_payload():
    from core.logs import JsonFormatter

    rec = logging.LogRecord("maskpaint.job", logging.INFO, __file__, 1, "job %s field %s",
                            ("id" + FORGED, "x" + FORGED + B64_RUN), None)
    rec.job_id = "id" + FORGED + B64_RUN
    line = JsonFormatter().format(rec)
    assert "\n" not in line and "\x1b" not in line and B64_RUN not in line
    assert json.loads(line)["msg"].startswith("job id\n{")  # the text survives, escaped


def _job_input(kind: str, photo: Path) -> dict:
    img = Image.open(photo).convert("RGB")
    img.thumbnail((256, 256))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    image = base64.b64encode(buf.getvalue()).decode()
    if kind == "ok":
        inp = {"image": image, "prompt": "a coat" + FORGED + B64_RUN, "num_inference_steps": 2,
               "seed": 3}
    else:  # an unknown field named to forge a line, carrying a base64 run
        inp = {"image": image, "prompt": "a coat", "x" + FORGED + B64_RUN * 5: 1}
    return {"id": "job" + FORGED + B64_RUN, "input": inp}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ok", "hostile-field"])
def test_worker_process_prints_each_line_once_as_redacted_json(photos, dev_weights, tmp_path,
                                                               kind):
    env = {**os.environ, "MASKPAINT_WEIGHTS_DIR": str(dev_weights),
           "MASKPAINT_OUTPUT_DIR": str(tmp_path), "PYTHONPATH": str(REPO),
           "MASKPAINT_LOG_LEVEL": "INFO"}
    env.pop("MASKPAINT_S3_BUCKET", None)
    job = _job_input(kind, photos["bus"])
    r = subprocess.run([sys.executable, "runpod_handler.py", "--test_input", json.dumps(job)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == (0 if kind == "ok" else 1), r.stderr[-3000:]
    text = r.stdout + r.stderr

    assert not re.search(r"[A-Za-z0-9+/=]{200,}", text), "a base64 run was printed"
    records = []
    for line in re.split(r"[\r\n]", text):
        if _NOT_LOG.search(line):
            continue
        rec = json.loads(line)  # every other line is one of our JSON records...
        assert set(rec) >= {"ts", "level", "logger", "msg"}, line
        assert rec.get("msg") != "FORGED", "a forged line"  # ...and none was forged
        records.append(rec)
    assert "\x1b[2J" not in text and "\x1b[31m" not in text  # escapes arrive escaped
    lines = Counter((r["logger"], r["msg"]) for r in records)
    assert lines and max(lines.values()) == 1, lines.most_common(3)  # each line once
    msgs = [r["msg"] for r in records]
    assert sum("cold start" in m for m in msgs) == 1
    if kind == "ok":
        stages = [r["stage"] for r in records if "stage" in r]
        assert stages == ["fetch", "decode", "mask", "inpaint", "safety", "encode", "upload"]
    else:
        failed = [r for r in records if "failed" in r["msg"] and r["level"] in ("WARNING", "ERROR")]
        assert failed and all(len(r["msg"]) < 600 for r in failed)
