"""A ``task: "mask"`` job refuses the repaint's fields by name instead of ignoring them."""

from __future__ import annotations

import numpy as np
import pytest

from core.contract import JobRequest, OutputOptions
from core.taskfields import INPAINT_ONLY, SHARED_FIELDS
from tests.conftest import BUCKET, data_url, png_bytes

MASK = np.zeros((512, 512), np.uint8)
MASK[300:460, 200:330] = 255

#: One value a caller might set for each repaint-only field (each valid for an inpaint job).
SET = {
    "prompt": "a red jacket", "negative_prompt": "blurry", "num_inference_steps": 10,
    "guidance_scale": 5.0, "strength": 0.5, "seed": 1, "model": "sd15-inpaint",
    "scheduler": "euler", "speed": "draft",
    "garment_image": "https://10.0.0.1/shirt.jpg", "garment_scale": 0.5, "control": "pose",
    "control_scale": 0.5, "num_outputs": 2, "output.format": "png", "output.quality": 80,
}


def test_every_request_field_is_classified_once():
    names = [*JobRequest.model_fields, *(f"output.{n}" for n in OutputOptions.model_fields)]
    assert sorted(INPAINT_ONLY + SHARED_FIELDS) == sorted(names)
    assert set(SET) == set(INPAINT_ONLY)


def _mask_job(astro: bytes, **fields) -> dict:
    inp = {"image": data_url(astro, "image/png"), "mask": data_url(png_bytes(MASK), "image/png"),
           "task": "mask", "protect_face": False}
    for name, value in fields.items():
        owner, _, sub = name.partition(".")
        if sub:
            inp.setdefault(owner, {})[sub] = value
        else:
            inp[name] = value
    return inp


@pytest.mark.parametrize("name", INPAINT_ONLY)
def test_mask_job_setting_a_repaint_field_is_refused_by_name(runpod_handler, s3, photos, name):
    astro = photos["astronaut"].read_bytes()
    out = runpod_handler({"id": f"mask-{name}", "input": _mask_job(astro, **{name: SET[name]})})
    assert out.get("error_code") == "invalid_input", out
    assert out["field"] == name and out["retryable"] is False
    assert out["error"] == (f"invalid_input: {name}: only used when task is 'inpaint'; leave it "
                            "out of a 'mask' job")
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"maskpaint/mask-{name}/")


def test_mask_job_with_shared_fields_and_nulls_still_runs(runpod_handler, photos):
    """Only what the caller set is refused: defaults, explicit nulls (JSON's "not given") and
    the delivery options of `output` are fine."""
    astro = photos["astronaut"].read_bytes()
    inp = _mask_job(astro, prompt=None, seed=None, model=None, control=None,
                    garment_image=None, **{"output.return_base64": True,
                                           "output.url_expires_s": 600})
    out = runpod_handler({"id": "mask-shared", "input": inp})
    assert "error" not in out, out
    assert out["mask"]["base64"] and "image" not in out
    assert out["mask_info"]["source"] == "provided"
