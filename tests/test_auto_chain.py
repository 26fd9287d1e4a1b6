"""The automatic chain (garments -> SAM -> minus faces) end to end through the RunPod handler,
with tiny models loaded by the real loaders.

Random weights detect nothing, so this module writes its own weights dir with the test aids of
``weights.tiny.masking``: a YOLO head biased to detect ``long_sleeved_shirt`` once, and an SCRFD
graph that reports a face wherever the photo shows the marker colour. Each photo gets a marker
patch painted where its real face is, so the face protection is checked on real photos.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.masking.post import grow_box
from tests.conftest import BUCKET, copy_moderation_models, data_url

FACE_MARKER = (255, 0, 128)
# where each photo's (largest) face is, x0, y0, x1, y1 px; the marker is painted there
FACES = {"astronaut": (175, 60, 275, 170), "bus": (105, 400, 160, 475), "zidane": (905, 80, 1060, 280)}


@pytest.fixture(scope="module")
def chain_weights(tmp_path_factory, dev_weights):
    from weights.tiny.faces import write_tiny_scrfd
    from weights.tiny.masking import write_tiny_sam, write_tiny_yolo
    from weights.tiny.sd import write_tiny_sd_inpaint

    d = tmp_path_factory.mktemp("chain-weights")
    write_tiny_sd_inpaint(d)
    write_tiny_yolo(d, bias_class="long_sleeved_shirt")
    write_tiny_sam(d)
    write_tiny_scrfd(d, marker_rgb=FACE_MARKER)
    copy_moderation_models(dev_weights, d)
    return d


@pytest.fixture(scope="module")
def chain_models(chain_weights):
    from core.models import ModelSet
    from core.settings import Settings

    ms = ModelSet.load(Settings(weights_dir=chain_weights, device="cpu"))
    assert ms.garments is not None and ms.sam is not None and ms.face_detectors, ms.missing
    return ms


@pytest.fixture
def chain_handler(chain_models, s3, tmp_path):
    from core.pipeline import Worker
    from core.settings import Settings
    from core.storage import S3Storage
    from handlers.runpod import make_handler

    s = Settings(s3_bucket=BUCKET, device="cpu", weights_dir=tmp_path)
    return make_handler(Worker(s, chain_models, S3Storage(s3, BUCKET), lambda: s3))


def _photo_with_marker(path, face) -> tuple[bytes, np.ndarray]:
    img = np.asarray(Image.open(path).convert("RGB")).copy()
    x0, y0, x1, y1 = face
    img[y0:y1, x0:x1] = FACE_MARKER
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue(), img


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bus", "zidane", "astronaut"])
def test_inpaint_without_mask_uses_the_auto_chain_and_spares_the_face(chain_handler, s3, photos, name):
    raw, img = _photo_with_marker(photos[name], FACES[name])
    h, w = img.shape[:2]
    out = chain_handler({"id": f"auto-{name}", "input": {
        "image": data_url(raw, "image/png"), "prompt": "a green hoodie", "targets": ["upper"],
        "num_inference_steps": 2, "seed": 3, "mask_dilate_px": 10, "mask_feather_px": 8,
        "face_margin": 0.2}})
    assert "error" not in out, out
    info = out["mask_info"]
    assert info["source"] == "detector+sam", info
    det = info["detections"][0]
    assert det["label"] == "long_sleeved_shirt" and det["group"] == "upper"
    assert 0 < det["score"] <= 1 and isinstance(det["sam_score"], float)
    x0, y0, x1, y1 = det["box"]
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    # the face the detector reported is the marker patch, and it was subtracted
    (face,) = info["faces"]
    assert np.allclose(face["box"], FACES[name], atol=max(h, w) / 640 + 2)
    mask = np.asarray(Image.open(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=out["mask"]["key"])["Body"].read())))
    assert mask.dtype == np.uint8 and mask.shape == (h, w)
    gx0, gy0, gx1, gy1 = grow_box(face["box"], 0.2, w, h)
    assert mask[gy0:gy1, gx0:gx1].max() == 0
    result = np.asarray(Image.open(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=out["image"]["key"])["Body"].read())).convert("RGB"))
    assert np.array_equal(result[gy0:gy1, gx0:gx1], img[gy0:gy1, gx0:gx1])  # face pixels untouched
    assert 0 < info["coverage"] < 1
    used = {m["key"] for m in out["models"]}
    assert used == {"sd15-inpaint", "garments-yolov8s-seg", "sam-vit-b", "faces-scrfd",
                    "moderation-nudenet", "moderation-opennsfw"}
    t = out["timings_ms"]
    assert {"mask.detect", "mask.sam", "mask.faces"} <= set(t)
    # each model's own time is reported, inside its stage, so overhead = total - forwards
    assert {"inpaint.forward", "mask.garments.forward", "mask.sam.forward",
            "mask.faces.scrfd.forward"} <= set(t), t
    assert 0 < t["mask.sam.forward"] <= t["mask.sam"] and 0 < t["inpaint.forward"] <= t["inpaint"]
    assert t["mask.garments.forward"] <= t["mask.detect"]
    assert sum(v for k, v in t.items() if k.endswith(".forward")) < t["total"]


@pytest.mark.slow
def test_mask_task_stores_mask_and_overlay(chain_handler, s3, photos):
    raw, _ = _photo_with_marker(photos["bus"], FACES["bus"])
    out = chain_handler({"id": "mask-bus", "input": {"image": data_url(raw, "image/png"), "task": "mask"}})
    assert "error" not in out, out
    assert "image" not in out
    overlay = Image.open(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=out["overlay"]["key"])["Body"].read()))
    assert overlay.format == "JPEG" and overlay.size == (810, 1080)
    ov = np.asarray(overlay.convert("RGB")).astype(int)
    orig = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")).astype(int)
    # the mask is tinted: masked pixels differ visibly from the photo, far-away ones barely
    m = np.asarray(Image.open(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=out["mask"]["key"])["Body"].read()))) > 0
    assert np.abs(ov[m] - orig[m]).mean() > 30


def test_garment_boxes_without_masks_are_the_same_detections(chain_models, photos):
    """With SAM refining, the detector is asked for boxes only; they are the ones it finds
    with its full-size masks."""
    img = np.asarray(Image.open(photos["bus"]).convert("RGB"))
    full = chain_models.garments.detect(img)
    boxes = chain_models.garments.detect(img, masks=False)
    assert full and all(d.mask is not None and d.mask.shape == img.shape[:2] for d in full)
    assert [(d.label, d.score, d.box) for d in boxes] == [(d.label, d.score, d.box) for d in full]
    assert all(d.mask is None for d in boxes)
