"""Which inpainting model a job runs: SDXL end to end through the RunPod handler, the
worker's default when a job names no model, and a worker whose weights are missing or corrupt
(it still starts and answers every job at once with ``model_not_found``)."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.imageio import decode_image
from core.masking.post import dilate
from tests.conftest import BUCKET, DEV_WEIGHTS, copy_moderation_models, data_url, png_bytes

pytestmark = pytest.mark.slow

STEPS = 2
BOX = (200, 300, 330, 460)  # on the 512 x 512 astronaut


def _rect_mask(w: int, h: int, box) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 255
    return m


def _job(photo: Path, **kw) -> dict:
    inp = {"image": data_url(photo.read_bytes(), "image/png"),
           "mask": data_url(png_bytes(_rect_mask(512, 512, BOX)), "image/png"),
           "prompt": "a red leather jacket", "num_inference_steps": STEPS, "seed": 7,
           "protect_face": False, "mask_dilate_px": 6, "mask_feather_px": 5}
    if kw.get("task") == "mask":  # a mask job refuses the repaint's fields
        for name in ("prompt", "num_inference_steps", "seed"):
            inp.pop(name, None)
    inp.update(kw)
    return inp


def _copy_model(src_weights: Path, dst_weights: Path, key: str) -> None:
    """Copy one baked model and its receipt entry into another weights dir."""
    from weights.manifest import load_manifest, load_receipt, write_receipt_entry

    path = load_manifest().models[key].path
    if (src_weights / path).is_file():  # a one-file model (the moderation classifiers)
        (dst_weights / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src_weights / path, dst_weights / path)
    else:
        shutil.copytree(src_weights / path, dst_weights / path)
    write_receipt_entry(dst_weights, key, load_receipt(src_weights).models[key])


def _handler(settings):
    from core.models import ModelSet
    from core.pipeline import Worker
    from core.storage import LocalStorage
    from handlers.runpod import make_handler

    # every image profile carries the moderation classifiers (without one: safety_unavailable)
    copy_moderation_models(DEV_WEIGHTS, Path(settings.weights_dir))
    models = ModelSet.load(settings)
    return make_handler(Worker(settings, models, LocalStorage(settings.output_dir))), models


def test_sdxl_job_through_the_runpod_handler(runpod_handler, s3, photos):
    """The tiny SDXL (two text encoders, text_time UNet) through the production loader."""
    original = decode_image(photos["astronaut"].read_bytes())
    a = runpod_handler({"id": "sdxl-a", "input": _job(photos["astronaut"], model="sdxl-inpaint")})
    assert "error" not in a, a
    assert a["model"] == "sdxl-inpaint"
    assert a["models"][0] == {"key": "sdxl-inpaint", "source": "dev-random",
                              "revision": "dev-random-seed0", "dev": True}
    body = s3.get_object(Bucket=BUCKET, Key=a["image"]["key"])["Body"].read()
    result = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    mask = _rect_mask(512, 512, BOX) > 0
    band = dilate(mask, 6 + 5)
    assert np.array_equal(result[~band], original[~band])  # outside the band: untouched
    assert not np.array_equal(result[mask], original[mask])  # the masked part was repainted

    b = runpod_handler({"id": "sdxl-b", "input": _job(photos["astronaut"], model="sdxl-inpaint")})
    c = runpod_handler({"id": "sdxl-c", "input": _job(photos["astronaut"], model="sdxl-inpaint",
                                                      seed=8)})
    assert a["image"]["sha256"] == b["image"]["sha256"] != c["image"]["sha256"]


def test_a_job_without_model_runs_the_default(runpod_handler, model_set, photos):
    assert set(model_set.inpainters) == {"sd15-inpaint", "sdxl-inpaint"}
    out = runpod_handler({"id": "default", "input": _job(photos["astronaut"])})
    assert "error" not in out, out
    assert out["model"] == model_set.default_inpaint == "sd15-inpaint"  # first in the manifest
    assert out["models"][0]["key"] == "sd15-inpaint"
    mask_only = runpod_handler({"id": "mask-only", "input": _job(photos["astronaut"],
                                                                 task="mask")})
    assert "model" not in mask_only  # no inpainting model ran (None is left out of the reply)


def test_sdxl_only_worker_answers_a_job_without_model(dev_weights, tmp_path, photos):
    from core.settings import Settings

    wd = tmp_path / "weights"
    _copy_model(dev_weights, wd, "sdxl-inpaint")
    handler, models = _handler(Settings(weights_dir=wd, output_dir=tmp_path / "out",
                                        device="cpu"))
    assert list(models.inpainters) == ["sdxl-inpaint"] and models.default_inpaint == "sdxl-inpaint"
    assert [c.name for c in models.moderation] == ["nudenet", "open_nsfw"]
    out = handler({"id": "xl-only", "input": _job(photos["astronaut"])})
    assert "error" not in out, out
    assert out["model"] == "sdxl-inpaint"
    # asking for the model this image lacks names it and says it is not baked
    miss = handler({"id": "xl-only-2", "input": _job(photos["astronaut"], model="sd15-inpaint")})
    assert miss["error_code"] == "model_not_found" and miss["retryable"] is False
    assert "'sd15-inpaint' is not available on this worker (not baked)" in miss["message"]
    assert "['sdxl-inpaint']" in miss["message"]


def test_default_model_setting_picks_the_model(dev_weights, tmp_path, photos, monkeypatch):
    from core.settings import Settings

    wd = tmp_path / "weights"
    for key in ("sd15-inpaint", "sdxl-inpaint"):
        _copy_model(dev_weights, wd, key)
    monkeypatch.setenv("MASKPAINT_DEFAULT_MODEL", "sdxl-inpaint")
    handler, models = _handler(Settings(weights_dir=wd, output_dir=tmp_path / "out",
                                        device="cpu"))
    assert models.default_inpaint == "sdxl-inpaint"
    out = handler({"id": "dflt", "input": _job(photos["astronaut"])})
    assert "error" not in out, out
    assert out["model"] == "sdxl-inpaint"
    out = handler({"id": "named", "input": _job(photos["astronaut"], model="sd15-inpaint")})
    assert out["model"] == "sd15-inpaint"


def test_worker_without_weights_starts_and_answers_model_not_found(tmp_path, caplog):
    from core.settings import Settings

    empty = tmp_path / "no-weights"
    empty.mkdir()
    with caplog.at_level(logging.INFO):
        handler, models = _handler(Settings(weights_dir=empty, output_dir=tmp_path / "out",
                                            device="cpu"))
    assert models.inpainters == {}

    def bake_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if "inpainting model" in r.getMessage() and "python -m weights.bake" in r.getMessage()]

    assert len(bake_lines()) == 1, bake_lines()  # logged once, at cold start
    assert str(empty) in bake_lines()[0]

    # An unreachable image URL: the reply comes before any fetch is tried.
    for inp in ({"image": "https://203.0.113.9/photo.jpg", "prompt": "x"},
                {"image": "https://203.0.113.9/photo.jpg", "task": "mask"},
                {"image": "https://203.0.113.9/photo.jpg", "prompt": "x",
                 "model": "sdxl-inpaint"}):
        out = handler({"id": "nothing", "input": inp})
        assert out["error_code"] == "model_not_found", out
        assert out["field"] == "model" and out["retryable"] is False
        assert "is not available on this worker (not baked)" in out["message"]
        assert ("'sdxl-inpaint'" if "model" in inp else "'sd15-inpaint'") in out["message"]
        assert "203.0.113.9" not in out["message"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))
    assert len(bake_lines()) == 1  # not repeated per job


def test_corrupt_weights_with_verification_answer_model_not_found(dev_weights, tmp_path,
                                                                  monkeypatch, photos):
    from core.settings import Settings

    wd = tmp_path / "weights"
    _copy_model(dev_weights, wd, "sd15-inpaint")
    unet = wd / "diffusers/sd15-inpaint/unet/diffusion_pytorch_model.fp16.safetensors"
    data = bytearray(unet.read_bytes())
    data[-10] ^= 0xFF
    unet.write_bytes(bytes(data))

    monkeypatch.setenv("MASKPAINT_VERIFY_WEIGHTS", "1")  # read once, by Settings
    settings = Settings(weights_dir=wd, output_dir=tmp_path / "out", device="cpu")
    assert settings.verify_weights is True
    handler, models = _handler(settings)
    assert models.inpainters == {}
    assert "failed to load" in models.inpaint_missing["sd15-inpaint"]
    out = handler({"id": "corrupt", "input": _job(photos["astronaut"])})
    assert out["error_code"] == "model_not_found" and out["retryable"] is False
    assert "'sd15-inpaint' is not available on this worker (weights failed to load)" \
        in out["message"]


def test_modal_health_says_not_ready_without_weights(dev_weights, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from handlers.web import create_web_app, weights_readiness

    class NoDispatch:
        def submit(self, job):  # pragma: no cover - not reached
            raise AssertionError

        def poll(self, job_id):  # pragma: no cover - not reached
            raise AssertionError

    app = create_web_app(NoDispatch(), token="t" * 32, readiness=weights_readiness)
    client = TestClient(app)
    monkeypatch.setenv("MASKPAINT_WEIGHTS_DIR", str(tmp_path / "empty"))
    r = client.get("/health")
    assert r.status_code == 503
    assert r.json()["status"] == "not_ready" and "weights.bake" in r.json()["reason"]

    monkeypatch.setenv("MASKPAINT_WEIGHTS_DIR", str(dev_weights))
    assert client.get("/health").json() == {"status": "ok"}
    monkeypatch.setenv("MASKPAINT_DEFAULT_MODEL", "sdxl-inpaint")
    assert client.get("/health").status_code == 200
    wd = tmp_path / "sd15-only"
    _copy_model(dev_weights, wd, "sd15-inpaint")
    monkeypatch.setenv("MASKPAINT_WEIGHTS_DIR", str(wd))
    r = client.get("/health")
    assert r.status_code == 503 and "'sdxl-inpaint' is not baked" in r.json()["reason"]
