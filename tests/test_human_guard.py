"""The promise, end to end on real photos: faces and hands are never repainted.

Every job runs through the RunPod handler on the worker the dev weights build, which carries the
real MediaPipe detectors (BlazeFace full-range, palm + hand landmarks, pose) next to the random
dev SCRFD. The face and hand boxes were drawn by eye on the originals
(tests/test_mediapipe_detectors.py), not taken from any detector.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import BUCKET, data_url, png_bytes
from tests.test_mediapipe_detectors import FACES, HANDS, load_photo
from tests.test_pose import ANNOTATIONS


def _get(s3, artefact) -> np.ndarray:
    body = s3.get_object(Bucket=BUCKET, Key=artefact["key"])["Body"].read()
    return np.asarray(Image.open(io.BytesIO(body)))


def _run(handler, job_id, **input_):
    out = handler({"id": job_id, "input": input_})
    assert "error" not in out, out
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FACES))
def test_an_all_white_mask_spares_every_face_and_the_visible_hands(runpod_handler, s3, name):
    img = load_photo(name)
    white = png_bytes(np.full(img.shape[:2], 255, np.uint8))
    out = _run(runpod_handler, f"guard-{name}", image=data_url(png_bytes(img), "image/png"),
               mask=data_url(white, "image/png"), task="mask")
    mask = _get(s3, out["mask"])
    for x0, y0, x1, y1 in FACES[name]:
        assert mask[y0:y1, x0:x1].max() == 0, f"face {(x0, y0, x1, y1)} left in the mask"
    if name in HANDS:
        x0, y0, x1, y1 = HANDS[name]
        # the hand's core (its box less a 15 % rim drawn loosely by eye) is out of the mask
        dx, dy = int((x1 - x0) * 0.15), int((y1 - y0) * 0.15)
        assert mask[y0 + dy:y1 - dy, x0 + dx:x1 - dx].max() == 0, "hand left in the mask"
    info = out["mask_info"]
    assert any("blazeface" in f["detectors"] for f in info["faces"])
    assert info["coverage"] > 0.3  # the rest of the photo is still repainted


@pytest.mark.slow
def test_inpainting_bus_leaves_faces_and_the_hand_bit_identical(runpod_handler, s3):
    img = load_photo("bus")
    white = png_bytes(np.full(img.shape[:2], 255, np.uint8))
    out = _run(runpod_handler, "guard-bus-inpaint", image=data_url(png_bytes(img), "image/png"),
               mask=data_url(white, "image/png"), prompt="a red jacket", num_inference_steps=2,
               seed=1, output={"format": "png"})
    result = _get(s3, out["image"])
    assert result.shape == img.shape
    assert not np.array_equal(result, img)  # it did repaint
    for x0, y0, x1, y1 in [*FACES["bus"], HANDS["bus"]]:
        assert np.array_equal(result[y0:y1, x0:x1], img[y0:y1, x0:x1])
    overlay = _get(s3, out["overlay"])
    assert overlay.shape == img.shape
    kinds = {"faces": len(out["mask_info"]["faces"]), "hands": len(out["mask_info"]["hands"])}
    assert kinds["faces"] >= 2 and kinds["hands"] >= 1, kinds


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ANNOTATIONS))
def test_automatic_upper_mask_falls_back_to_the_pose_region(runpod_handler, s3, name):
    """The dev garment model finds nothing, so the pose region is the mask: jacket, not face."""
    img = load_photo(name)
    out = _run(runpod_handler, f"pose-{name}", image=data_url(png_bytes(img), "image/png"),
               task="mask", targets=["upper"], mask_dilate_px=0, mask_feather_px=0)
    info = out["mask_info"]
    # the dev SAM is random: its mask disagrees with the pose region, which stands
    assert info["source"] == "pose" and info["fallback"] == "pose", info["reason"]
    assert "SAM not used" in info["reason"], info["reason"]
    assert info["pose"] is not None
    mask = _get(s3, out["mask"]) > 0
    ann = ANNOTATIONS[name]
    x0, y0, x1, y1 = ann["face"]
    assert not mask[y0:y1, x0:x1].any()
    for x0, y0, x1, y1 in ann["cloth"]:
        assert mask[y0:y1, x0:x1].mean() > 0.8
    for x0, y0, x1, y1 in ann["background"]:
        assert mask[y0:y1, x0:x1].mean() < 0.05
    assert "mediapipe-pose" not in {m["key"] for m in out["models"]}  # keys, not names
    assert any(m["key"] == "pose-mediapipe-full" for m in out["models"])
