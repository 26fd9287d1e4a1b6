"""The main job end to end through the RunPod handler, real photos, tiny models, moto S3."""

from __future__ import annotations

import io
import re
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image

from core.imageio import decode_image
from core.masking.post import dilate
from tests.conftest import BUCKET, data_url, png_bytes

STEPS = 3


def _rect_mask(w: int, h: int, box) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 255
    return m


def _job(image: bytes, mask: np.ndarray | None, **kw) -> dict:
    inp = {"image": data_url(image), "prompt": "a red leather jacket",
           "num_inference_steps": STEPS, "seed": 1234, "protect_face": False,
           "mask_dilate_px": 6, "mask_feather_px": 5}
    if mask is not None:
        inp["mask"] = data_url(png_bytes(mask), "image/png")
    inp.update(kw)
    return inp


def _get(s3, key: str) -> tuple[bytes, str]:
    obj = s3.get_object(Bucket=BUCKET, Key=key)
    return obj["Body"].read(), obj["ContentType"]


@pytest.mark.parametrize("name,box", [("bus", (250, 420, 560, 760)), ("astronaut", (150, 260, 380, 500))])
def test_provided_mask_job_stores_outputs_and_keeps_unmasked_pixels(
    runpod_handler, s3, photos, name, box
):
    raw = photos[name].read_bytes()
    original = decode_image(raw)
    h, w = original.shape[:2]
    mask = _rect_mask(w, h, box)
    out = runpod_handler({"id": f"job-{name}", "input": _job(raw, mask, output={"format": "png"})})
    assert "error" not in out, out

    # three objects, right content types, under <prefix>/<job_id>/
    for kind, ctype in (("image", "image/png"), ("mask", "image/png"), ("overlay", "image/jpeg")):
        art = out[kind]
        assert art["key"].startswith(f"maskpaint/job-{name}/")
        body, stored_type = _get(s3, art["key"])
        assert stored_type == ctype == art["content_type"]
        assert len(body) == art["bytes"]
        # the URL is a SigV4 presigned GET for exactly that key
        u = urlparse(art["url"])
        q = parse_qs(u.query)
        assert u.path.endswith(art["key"])
        assert q["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert int(q["X-Amz-Expires"][0]) == 3600
        assert "X-Amz-Signature" in q

    result = np.asarray(Image.open(io.BytesIO(_get(s3, out["image"]["key"])[0])).convert("RGB"))
    assert result.shape == original.shape
    assert out["size"] == [w, h]
    band = dilate(mask > 0, 6 + 5)  # mask grown by dilate + feather: the only pixels allowed to move
    assert np.array_equal(result[~band], original[~band])
    assert not np.array_equal(result[mask > 0], original[mask > 0])  # the masked part did change
    assert out["mask_info"]["source"] == "provided"
    assert out["seed"] == 1234
    assert out["models"][0]["key"] == "sd15-inpaint" and out["models"][0]["dev"] is True
    t = out["timings_ms"]
    assert {"fetch", "decode", "mask", "inpaint", "safety", "encode", "upload", "total"} <= set(t)
    # the model call's own time: a job's overhead is total - sum of *.forward
    assert 0 < t["inpaint.forward"] <= t["inpaint"]
    assert "mask.garments.forward" not in t and "mask.sam.forward" not in t  # mask provided


@pytest.mark.parametrize("name,fmt,ctype", [("bus", "JPEG", "image/jpeg"),
                                            ("astronaut", "PNG", "image/png")])
def test_auto_output_format_is_the_inputs(runpod_handler, s3, photos, name, fmt, ctype):
    raw = photos[name].read_bytes()
    original = decode_image(raw)
    h, w = original.shape[:2]
    out = runpod_handler({"id": f"auto-{name}", "input": _job(raw, _rect_mask(w, h, (100, 100, 300, 300)),
                                                             output={"quality": 90})})
    assert "error" not in out, out
    body, stored = _get(s3, out["image"]["key"])
    assert stored == ctype == out["image"]["content_type"]
    result = Image.open(io.BytesIO(body))
    assert result.format == fmt and result.size == (w, h)
    if fmt == "PNG":  # lossless: the unmasked part is the input's, bit for bit
        keep = np.ones((h, w), bool)
        keep[100 - 11:300 + 11, 100 - 11:300 + 11] = False
        assert np.array_equal(np.asarray(result.convert("RGB"))[keep], original[keep])


def test_same_seed_same_bytes_and_absent_seed_is_returned(runpod_handler, photos):
    raw = photos["astronaut"].read_bytes()
    mask = _rect_mask(512, 512, (200, 300, 330, 460))
    a = runpod_handler({"id": "seed-a", "input": _job(raw, mask)})
    b = runpod_handler({"id": "seed-b", "input": _job(raw, mask)})
    c = runpod_handler({"id": "seed-c", "input": _job(raw, mask, seed=99)})
    assert a["image"]["sha256"] == b["image"]["sha256"] != c["image"]["sha256"]
    d = runpod_handler({"id": "seed-d", "input": _job(raw, mask, seed=None)})
    assert isinstance(d["seed"], int) and 0 <= d["seed"] < 2**32


def test_redelivered_job_returns_its_own_objects(runpod_handler, photos):
    """At-least-once delivery: the same job id twice succeeds with the same stored objects."""
    raw = photos["astronaut"].read_bytes()
    mask = _rect_mask(512, 512, (200, 300, 330, 460))
    job = {"id": "again", "input": _job(raw, mask, seed=None)}
    first, second = runpod_handler(job), runpod_handler(job)
    assert "error" not in second, second
    assert first["seed"] == second["seed"]
    assert first["image"]["sha256"] == second["image"]["sha256"]


def test_mask_of_other_size_same_aspect_is_resized(runpod_handler, photos):
    raw = photos["bus"].read_bytes()  # 810 x 1080
    small = _rect_mask(405, 540, (120, 200, 280, 380))
    out = runpod_handler({"id": "half-mask", "input": _job(raw, small)})
    assert "error" not in out, out
    assert out["mask"]["width"] == 810 and out["mask"]["height"] == 1080


@pytest.mark.parametrize(
    "patch,code,field",
    [
        ({"image": "!!!not base64!!!"}, "invalid_image", "image"),
        ({"image": data_url(b"GIF89a this is not an allowed image at all")}, "invalid_image", "image"),
        ({"image": data_url(b"just some text, not an image")}, "invalid_image", "image"),
        ({"prompt": None}, "invalid_input", "prompt"),
        ({"prompt": "   "}, "invalid_input", "prompt"),
        ({"num_inference_steps": 0}, "invalid_input", "num_inference_steps"),
        ({"guidance_scale": "lots"}, "invalid_input", "guidance_scale"),
        ({"model": "nope"}, "model_not_found", "model"),
        ({"mask": data_url(png_bytes(np.zeros((100, 300), np.uint8)), "image/png")}, "invalid_image", "mask"),
        ({"mask": data_url(png_bytes(np.zeros((512, 512), np.uint8)), "image/png")}, "empty_mask", "mask"),
    ],
)
def test_bad_input_gets_code_and_worker_keeps_serving(runpod_handler, photos, patch, code, field):
    raw = photos["astronaut"].read_bytes()
    inp = _job(raw, _rect_mask(512, 512, (200, 300, 330, 460)))
    inp.update(patch)
    out = runpod_handler({"id": "bad", "input": inp})
    assert out["error_code"] == code, out
    assert out["error"].startswith(f"{code}: ")
    assert out["field"] == field
    assert out["retryable"] is False
    assert len(out["error"]) < 300  # the payload is never echoed
    ok = runpod_handler({"id": "after-bad", "input": _job(raw, _rect_mask(512, 512, (200, 300, 330, 460)))})
    assert "error" not in ok, ok


def test_mask_task_returns_mask_and_overlay_only(runpod_handler, s3, photos):
    raw = photos["bus"].read_bytes()
    out = runpod_handler({"id": "mask-only", "input": {"image": data_url(raw), "task": "mask"}})
    assert "error" not in out, out
    assert "image" not in out and "seed" not in out
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="maskpaint/mask-only/")["Contents"]]
    names = sorted(k.rsplit("/", 1)[1] for k in keys)  # content-addressed, plus the job record
    assert re.fullmatch(r"job\.json mask-[0-9a-f]{16}\.png overlay-[0-9a-f]{16}\.jpg",
                        " ".join(names)), names
    assert out["mask_info"]["source"] in ("detector+sam", "pose", "pose+sam", "grabcut")
    assert 0 < out["mask_info"]["coverage"] < 0.6


def test_progress_stages_and_steps_in_order(s3_worker, photos):
    from core.contract import parse_job

    raw = photos["astronaut"].read_bytes()
    seen = []
    job = parse_job("progress", _job(raw, _rect_mask(512, 512, (200, 300, 330, 460))))
    s3_worker.run(job, seen.append)
    stages = list(dict.fromkeys(p["stage"] for p in seen))
    assert stages == ["fetch", "decode", "mask", "inpaint", "safety", "encode", "upload"]
    # SD 1.5's scheduler (PNDM) calls the model once more than the steps asked (its first step
    # twice): a person still sees steps 1..N of N, each once
    steps = [(p["step"], p["steps"]) for p in seen if "step" in p]
    assert steps == [(i, STEPS) for i in range(1, STEPS + 1)]


@pytest.mark.parametrize("steps,strength", [(8, 1.0), (5, 0.6)])
def test_progress_counts_the_steps_asked_for(s3_worker, photos, steps, strength):
    """strength < 1 runs int(steps x strength) of them (diffusers' get_timesteps), or one
    more where its slice starts inside PNDM's repeated timestep; each is reported once."""
    from core.contract import parse_job

    raw = photos["astronaut"].read_bytes()
    seen = []
    job = parse_job(f"progress-{steps}", _job(raw, _rect_mask(512, 512, (200, 300, 330, 460)),
                                              num_inference_steps=steps, strength=strength))
    s3_worker.run(job, seen.append)
    got = [(p["step"], p["steps"]) for p in seen if "step" in p]
    total = got[-1][1]
    assert total in (int(steps * strength), int(steps * strength) + 1)
    assert total == steps or strength < 1
    assert got == [(i, total) for i in range(1, total + 1)]


def test_return_base64_inlines_the_stored_bytes(runpod_handler, s3, photos):
    import base64

    raw = photos["astronaut"].read_bytes()
    out = runpod_handler({"id": "inline", "input": _job(
        raw, _rect_mask(512, 512, (200, 300, 330, 460)),
        output={"format": "webp", "quality": 80, "return_base64": True, "url_expires_s": 600})})
    assert out["image"]["content_type"] == "image/webp" and re.search(r"/result-[0-9a-f]{16}\.webp$", out["image"]["key"])
    stored, _ = _get(s3, out["image"]["key"])
    assert base64.b64decode(out["image"]["base64"]) == stored
    assert "X-Amz-Expires=600" in out["image"]["url"]
