"""Moderation in whole jobs: a refused prompt through the RunPod handler and the web API, an
image refused through the classifier interface (nothing stored, the refusal recorded, a
redelivery refused again without repainting, one audit line without the prompt), a worker whose
moderation model is missing, and ``MASKPAINT_SAFETY=off``. Tiny inpainting models, the real
classifiers where a job passes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

import numpy as np
import pytest

import core.inpaint
from core.moderation import load_moderation
from core.moderation.base import Label
from core.pipeline import Worker
from core.storage import LocalStorage, S3Storage
from handlers.runpod import make_handler
from tests.conftest import BUCKET, data_url, png_bytes
from weights.manifest import load_manifest

PROMPT = "a red leather jacket, studio light"


class _Exposed:
    """An image classifier that sees an exposed breast in every image (the classifier
    interface, :class:`core.moderation.base.ImageClassifier`)."""

    name = "nudenet"
    threshold_setting = "nudenet_threshold"
    identity = {"key": "moderation-test", "source": "test", "revision": "0", "dev": True}

    def __init__(self) -> None:
        self.calls = 0

    def classify(self, image: np.ndarray) -> list[Label]:
        self.calls += 1
        return [Label("FACE_FEMALE", 0.81, None, (1.0, 1.0, 9.0, 9.0)),
                Label("FEMALE_BREAST_EXPOSED", 0.93, "nudity", (10.0, 10.0, 40.0, 40.0))]


@pytest.fixture
def inpaint_calls(monkeypatch):
    """Counts repaints (the pipeline imports ``core.inpaint.inpaint`` at call time)."""
    calls = []
    real = core.inpaint.inpaint

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(core.inpaint, "inpaint", counting)
    return calls


def _input(photos, prompt=PROMPT, **kw) -> dict:
    mask = np.zeros((512, 512), np.uint8)
    mask[260:500, 150:380] = 255
    return {"image": data_url(photos["astronaut"].read_bytes(), "image/png"),
            "mask": data_url(png_bytes(mask), "image/png"), "prompt": prompt,
            "num_inference_steps": 2, "seed": 7, "protect_face": False, **kw}


def _stored(root, job_id) -> list[str]:
    folder = root / job_id
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _worker(model_set, settings, root, **models) -> Worker:
    return Worker(settings, dataclasses.replace(model_set, **models), LocalStorage(root))


def test_nudity_prompt_through_runpod_is_refused_with_nothing_stored(runpod_handler, s3, photos,
                                                                     inpaint_calls):
    out = runpod_handler({"id": "nude-prompt", "input": _input(photos, "make her naked")})
    assert out["error_code"] == "content_blocked" and out["retryable"] is False, out
    assert out["field"] == "prompt" and out["error"].startswith("content_blocked: prompt:")
    assert "naked" not in out["error"]
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0  # not even a record
    assert inpaint_calls == []


def test_a_passing_job_reports_what_moderation_ran(runpod_handler, photos):
    out = runpod_handler({"id": "clean", "input": _input(
        photos, negative_prompt="nude, naked, nsfw")})  # a negative prompt is never checked
    assert "error" not in out, out
    mod = out["moderation"]
    assert mod["policy"] == "block" and mod["checks"] == ["prompt", "output"]
    assert mod["classifiers"] == ["moderation-nudenet", "moderation-opennsfw"]
    assert mod["max_scores"]["moderation-opennsfw"]["nsfw"] < 0.7
    assert {"moderation-nudenet", "moderation-opennsfw"} <= {m["key"] for m in out["models"]}
    assert out["timings_ms"]["safety"] > 0 and out["timings_ms"]["safety.forward"] > 0


def test_blocked_output_is_never_stored_and_redelivery_is_refused_again(
        model_set, settings_factory, tmp_path, photos, inpaint_calls, caplog):
    clf = _Exposed()
    handler = make_handler(_worker(model_set, settings_factory(), tmp_path, moderation=[clf]))
    job = {"id": "blocked-out", "input": _input(photos)}
    with caplog.at_level(logging.INFO):
        out = handler(job)
    assert out["error_code"] == "content_blocked" and out["retryable"] is False, out
    assert out["error"].startswith("content_blocked: output:") and "nudity" in out["error"]
    assert out["field"] is None and len(inpaint_calls) == 1 and clf.calls >= 1
    # no result, mask or overlay: only the record, which holds the refusal
    assert _stored(tmp_path, "blocked-out") == ["job.json"]
    record = json.loads((tmp_path / "blocked-out" / "job.json").read_text())
    assert record["refusal"]["code"] == "content_blocked" and "result" not in record
    audit = [r.getMessage() for r in caplog.records if r.name == "maskpaint.safety"]
    assert len(audit) == 1, audit
    line = audit[0]
    assert "job=blocked-out" in line and "check=output" in line
    assert "FEMALE_BREAST_EXPOSED" in line and "0.93" in line and "FACE" not in line
    assert hashlib.sha256(PROMPT.encode()).hexdigest() in line
    all_logs = "\n".join(r.getMessage() for r in caplog.records)
    assert PROMPT not in all_logs and "leather" not in all_logs

    calls = clf.calls
    again = handler(job)  # a redelivery of the same job: the recorded refusal, no work at all
    assert again["error_code"] == "content_blocked" and again["error"] == out["error"]
    assert len(inpaint_calls) == 1 and clf.calls == calls
    assert _stored(tmp_path, "blocked-out") == ["job.json"]


def test_blocked_output_on_s3_leaves_only_the_record(model_set, settings_factory, s3, photos):
    settings = settings_factory(s3_bucket=BUCKET, s3_region="us-east-1")
    worker = Worker(settings, dataclasses.replace(model_set, moderation=[_Exposed()]),
                    S3Storage(s3, BUCKET, settings.s3_prefix))
    out = make_handler(worker)({"id": "s3-blocked", "input": _input(photos, num_outputs=2)})
    assert out["error_code"] == "content_blocked", out
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert keys == [f"{settings.s3_prefix}/s3-blocked/job.json"]


def test_moderated_input_is_refused_before_any_model_work(model_set, settings_factory, tmp_path,
                                                          photos, inpaint_calls):
    clf = _Exposed()
    worker = _worker(model_set, settings_factory(moderate_inputs=True), tmp_path,
                     moderation=[clf])
    out = make_handler(worker)({"id": "blocked-in", "input": _input(photos)})
    assert out["error_code"] == "content_blocked" and out["error"].startswith(
        "content_blocked: input:"), out
    assert inpaint_calls == [] and clf.calls == 1
    assert _stored(tmp_path, "blocked-in") == ["job.json"]


def test_missing_moderation_model_fails_closed(model_set, settings_factory, tmp_path, photos,
                                               inpaint_calls):
    loaded, missing, _ = load_moderation(load_manifest(), tmp_path / "empty", False, "cpu")
    assert loaded == [] and set(missing.values()) == {"not baked"}
    assert set(missing) == {"moderation-nudenet", "moderation-opennsfw"}
    worker = _worker(model_set, settings_factory(), tmp_path, moderation=loaded,
                     moderation_missing=missing)
    out = make_handler(worker)({"id": "no-safety", "input": _input(photos)})
    assert out["error_code"] == "safety_unavailable" and out["retryable"] is False, out
    assert inpaint_calls == [] and _stored(tmp_path, "no-safety") == []


def test_safety_off_runs_without_moderation(model_set, settings_factory, tmp_path, photos,
                                            monkeypatch):
    monkeypatch.setenv("MASKPAINT_SAFETY", "off")
    worker = _worker(model_set, settings_factory(), tmp_path, moderation=[])
    out = make_handler(worker)({"id": "off", "input": _input(photos)})
    assert "error" not in out, out
    assert out["moderation"] == {"policy": "off", "checks": [], "classifiers": [],
                                 "max_scores": {}}
    assert not any(k.startswith("safety") for k in out["timings_ms"])


def test_web_api_refuses_a_nudity_prompt_at_submit():
    from fastapi.testclient import TestClient

    from handlers import web as web_api

    class _Recorder:
        submitted: list = []

        def submit(self, job):
            self.submitted.append(job)
            return "job-1"

        def poll(self, job_id):
            return {"status": "queued"}

    disp = _Recorder()
    token = "test-token-0123456789abcdef"
    client = TestClient(web_api.create_web_app(disp, token=token))
    auth = {"Authorization": f"Bearer {token}"}
    r = client.post("/jobs", json={"image": "aGVsbG8=", "prompt": "quítale la ropa"},
                    headers=auth)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert (err["code"], err["field"], err["retryable"]) == ("content_blocked", "prompt", False)
    assert disp.submitted == []  # never queued: no GPU work, nothing stored
    ok = client.post("/jobs", json={"input": {"image": "aGVsbG8=", "prompt": "nude heels",
                                              "negative_prompt": "naked"}}, headers=auth)
    assert ok.status_code == 202, ok.text
