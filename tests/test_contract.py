"""The job contract: defaults, bounds, and errors that name the field but not the payload."""

from __future__ import annotations

import pytest

from core.contract import MAX_PRESIGN_SECONDS, parse_job, safe_job_id
from core.errors import JobError

SECRET = "c2VjcmV0LXBheWxvYWQ="


def _err(payload) -> JobError:
    with pytest.raises(JobError) as e:
        parse_job("j", payload)
    assert e.value.code.value == "invalid_input"
    assert SECRET not in e.value.message
    return e.value


def test_defaults():
    job = parse_job("abc", {"image": SECRET, "prompt": "a dress"})
    r = job.request
    assert (r.task, r.targets, r.protect_face, r.model) == ("inpaint", ["upper"], True, None)
    assert r.output.format == "auto" and r.seed is None  # the input's format by default


@pytest.mark.parametrize("patch,field", [
    ({"guidance_scale": float("nan")}, "guidance_scale"),
    ({"guidance_scale": float("inf")}, "guidance_scale"),
    ({"strength": 0}, "strength"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**40}, "seed"),
    ({"num_inference_steps": 10_000}, "num_inference_steps"),
    ({"mask_dilate_px": -3}, "mask_dilate_px"),
    ({"targets": ["hat"]}, "targets.0"),
    ({"targets": []}, "targets"),
    ({"task": "upscale"}, "task"),
    ({"output": {"url_expires_s": MAX_PRESIGN_SECONDS + 1}}, "output.url_expires_s"),
    ({"output": {"format": "gif"}}, "output.format"),
    ({"prompt": "x" * 5000}, "prompt"),
    ({"unexpected": SECRET}, "unexpected"),
    ({"image": 12}, "image"),
    ({"person_box": [10, 10, 5, 50]}, "person_box"),  # x1 < x0
    ({"person_box": [10, 50, 20, 50]}, "person_box"),  # no height
    ({"person_box": [-1, 0, 20, 50]}, "person_box"),
    ({"person_box": [0, 0, float("nan"), 50]}, "person_box.2"),
    ({"person_box": [0, 0, 20]}, "person_box"),
])
def test_bounds_name_the_field(patch, field):
    payload = {"image": SECRET, "prompt": "a dress", **patch}
    assert _err(payload).field == field


def test_person_box_reaches_the_masking_stage():
    job = parse_job("j", {"image": SECRET, "task": "mask", "person_box": [40, 390, 250, 905.5]})
    assert job.request.masking.person_box == [40, 390, 250, 905.5]
    assert parse_job("j", {"image": SECRET, "task": "mask"}).request.masking.person_box is None


def test_prompt_required_only_for_inpaint():
    assert _err({"image": SECRET}).field == "prompt"
    assert parse_job("j", {"image": SECRET, "task": "mask"}).request.prompt is None


def test_non_dict_input():
    assert _err(["image"]).field == "input"


@pytest.mark.parametrize("raw", ["../../etc/passwd", "a/b\\c", "", "x" * 500, "sync-1b2c..d"])
def test_job_ids_are_key_safe(raw):
    s = safe_job_id(raw)
    assert s and len(s) <= 128 and "/" not in s and ".." not in s and "\\" not in s
