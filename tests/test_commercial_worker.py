"""A worker started from a commercial bake: one job end to end through the RunPod handler and
the runpod SDK's own job runner, in a fresh process, then its ``sys.modules``: neither
ultralytics (AGPL-3.0) nor insightface (non-commercial models) was ever imported. With
``MASKPAINT_ONE_JOB_PER_WORKER=1`` the SDK is told to stop the worker after the job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import asyncio, json, os, sys
if os.environ.get("BLOCK_NON_COMMERCIAL"):  # as if uninstalled: importing them raises
    sys.modules.update(ultralytics=None, insightface=None)
from runpod_handler import cold_start
from handlers.common import demo_job
from handlers.runpod import make_handler
from runpod.serverless.modules.rp_job import run_job

worker = cold_start()
after_cold_start = sorted(m for m in sys.modules if m.split(".")[0] in ("ultralytics", "insightface")
                          and sys.modules[m] is not None)
job = demo_job(sys.argv[1], steps=2, targets=["upper"], job_id="commercial-1")
result = asyncio.run(run_job(make_handler(worker), job))
out = result.get("output", {})
print("RESULT " + json.dumps({
    "error": result.get("error"), "stop": result.get("stopPod", False),
    "refresh_in_output": "refresh_worker" in out,
    "mask_info": out.get("mask_info"), "models": [m["key"] for m in out.get("models", [])],
    "moderation": out.get("moderation"),
    "after_cold_start": after_cold_start,
    "after_job": sorted(m for m in sys.modules if m.split(".")[0] in ("ultralytics", "insightface")
                        and sys.modules[m] is not None),
    "load_issues": [i.detector for i in worker.models.load_issues],
}))
"""


def _run(weights: Path, tmp_path: Path, photo: Path, **env_extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASKPAINT_", "RUNPOD_"))}
    env.update(MASKPAINT_WEIGHTS_DIR=str(weights), MASKPAINT_DEVICE="cpu",
               MASKPAINT_OUTPUT_DIR=str(tmp_path / "outputs"), MASKPAINT_INPAINT_MODELS='["sd15-inpaint"]',
               PYTHONPATH=str(REPO), **env_extra)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(photo)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
def test_commercial_worker_never_imports_ultralytics_or_insightface(commercial_weights, photos,
                                                                    tmp_path):
    r = _run(commercial_weights, tmp_path, photos["astronaut"], MASKPAINT_ONE_JOB_PER_WORKER="1")
    assert r["error"] is None, r
    assert r["after_cold_start"] == [] and r["after_job"] == [], r
    # the job masked with the commercial models: pose (+ SAM), faces by BlazeFace
    info = r["mask_info"]
    assert info["source"] in ("pose", "pose+sam"), info
    assert info["faces"] and all(f["detectors"] == ["blazeface"] for f in info["faces"]), info
    assert "garments-yolov8s-seg" not in r["models"] and "faces-scrfd" not in r["models"]
    # moderated by open_nsfw alone (NudeNet is AGPL-3.0: not in a commercial bake)
    assert r["moderation"]["policy"] == "block", r["moderation"]
    assert r["moderation"]["classifiers"] == ["moderation-opennsfw"], r["moderation"]
    assert "moderation-nudenet" not in r["models"]
    # one job per worker: the SDK stops the worker, and the flag is not left in the output
    assert r["stop"] is True and r["refresh_in_output"] is False


@pytest.mark.slow
def test_a_commercial_worker_runs_with_both_packages_uninstalled(commercial_weights, photos,
                                                               tmp_path):
    """docs/commercial.md says a derived image may uninstall them: nothing the worker loads or
    runs needs them (every import of them would raise here)."""
    r = _run(commercial_weights, tmp_path, photos["astronaut"], BLOCK_NON_COMMERCIAL="1")
    assert r["error"] is None and r["load_issues"] == [], r
    assert r["mask_info"]["detector_issues"] == [], r["mask_info"]


@pytest.mark.slow
def test_the_same_worker_on_the_full_dev_bake_does_import_them(dev_weights, photos, tmp_path):
    """The check above can fail: with the non-commercial models baked, both libraries load (and
    without the isolation setting the worker is kept)."""
    r = _run(dev_weights, tmp_path, photos["astronaut"])
    assert r["error"] is None, r
    assert any(m == "ultralytics" for m in r["after_job"]), r
    assert any(m == "insightface" for m in r["after_job"]), r
    assert r["stop"] is False


@pytest.mark.parametrize("one_job", [True, False])
def test_one_job_per_worker_also_recycles_after_a_failed_job(one_job):
    """A refused job is a job too: its photo may have been read. Off by default."""
    from types import SimpleNamespace

    from core.settings import Settings
    from handlers.runpod import make_handler

    worker = SimpleNamespace(settings=Settings(one_job_per_worker=one_job))
    out = make_handler(worker)({"id": "bad", "input": {"image": ""}})
    assert out["error_code"] == "invalid_input"
    assert out.get("refresh_worker", False) is one_job


def test_the_setting_reads_its_environment_variable(monkeypatch):
    from core.settings import Settings

    monkeypatch.setenv("MASKPAINT_ONE_JOB_PER_WORKER", "1")
    assert Settings().one_job_per_worker is True
    monkeypatch.delenv("MASKPAINT_ONE_JOB_PER_WORKER")
    assert Settings().one_job_per_worker is False
