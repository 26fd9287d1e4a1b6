"""OpenCV 4 and 5 return some arrays in different shapes: ``findNonZero`` gives N x 1 x 2
points on 4.x and N x 2 on 5.0; ``findContours`` gave three values on 3.x. The pipeline must
give the same pixels with either form (here the other form is produced from the installed
OpenCV's own answer, so the test runs on whichever version is installed)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from core.imageio import decode_image
from core.inpaint import composite
from core.masking.post import dilate
from core.overlay import render_overlay
from tests.conftest import BUCKET, data_url, png_bytes

_find_nonzero = cv2.findNonZero
_find_contours = cv2.findContours


def _points_n_by_2(mask):
    """``findNonZero`` as OpenCV 5.0 answers: N x 2 (None when no pixel is set)."""
    pts = _find_nonzero(mask)
    return None if pts is None else pts.reshape(-1, 2)


def _points_n_by_1_by_2(mask):
    """``findNonZero`` as OpenCV 4.x answers: N x 1 x 2."""
    pts = _find_nonzero(mask)
    return None if pts is None else pts.reshape(-1, 1, 2)


def _contours_three_values(*args, **kw):
    """``findContours`` as OpenCV 3.x answered: (image, contours, hierarchy)."""
    contours, hierarchy = _find_contours(*args, **kw)[-2:]
    return args[0], contours, hierarchy


@pytest.fixture(params=["opencv4", "opencv5"])
def point_shape(request, monkeypatch):
    monkeypatch.setattr(cv2, "findNonZero", _points_n_by_2 if request.param == "opencv5"
                        else _points_n_by_1_by_2)
    return request.param


def _scene(seed: int = 3):
    rng = np.random.default_rng(seed)
    original = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    generated = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    alpha = np.zeros((120, 160), np.float32)
    alpha[30:90, 40:120] = 1.0
    alpha[20:30, 40:120] = np.linspace(0.05, 0.95, 10, dtype=np.float32)[:, None]  # a soft band
    return original, generated, alpha


def test_composite_is_the_same_with_either_point_shape(point_shape):
    original, generated, alpha = _scene()
    out = composite(original, generated, alpha)
    keep = alpha == 0
    assert np.array_equal(out[keep], original[keep])  # outside the mask: the photo's own bytes
    full = alpha == 1
    assert np.array_equal(out[full], generated[full])
    band = (alpha > 0) & (alpha < 1)
    a = alpha[band][:, None]
    want = (original[band] * (1 - a) + generated[band].astype(np.float32) * a
            + 0.5).astype(np.uint8)
    assert np.array_equal(out[band], want)


def test_composite_without_a_soft_band(point_shape):
    original, generated, alpha = _scene()
    alpha = (alpha == 1).astype(np.float32)  # no 0 < alpha < 1: findNonZero finds nothing
    out = composite(original, generated, alpha)
    assert np.array_equal(out[alpha == 0], original[alpha == 0])
    assert np.array_equal(out[alpha == 1], generated[alpha == 1])


def test_overlay_is_the_same_with_other_opencv_return_forms(monkeypatch):
    original, _, alpha = _scene()
    want = render_overlay(original, alpha, faces=[(0.9, (10, 10, 40, 40))])
    monkeypatch.setattr(cv2, "findNonZero", _points_n_by_2)
    monkeypatch.setattr(cv2, "findContours", _contours_three_values)
    got = render_overlay(original, alpha, faces=[(0.9, (10, 10, 40, 40))])
    assert np.array_equal(got, want)
    assert not np.array_equal(got[alpha > 0], original[alpha > 0])  # the mask is tinted


def test_job_with_opencv5_points_keeps_pixels_outside_the_mask(runpod_handler, s3, photos,
                                                               monkeypatch):
    monkeypatch.setattr(cv2, "findNonZero", _points_n_by_2)
    raw = photos["astronaut"].read_bytes()
    original = decode_image(raw)
    mask = np.zeros(original.shape[:2], np.uint8)
    mask[260:400, 180:330] = 255
    out = runpod_handler({"id": "opencv5-points", "input": {
        "image": data_url(raw, "image/png"), "mask": data_url(png_bytes(mask), "image/png"),
        "prompt": "a red jacket", "num_inference_steps": 2, "seed": 7, "protect_face": False,
        "mask_dilate_px": 4, "mask_feather_px": 6, "output": {"format": "png"}}})
    assert "error" not in out, out
    body = s3.get_object(Bucket=BUCKET, Key=out["image"]["key"])["Body"].read()
    result = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    band = dilate(mask > 0, 4 + 6)
    assert np.array_equal(result[~band], original[~band])
    assert not np.array_equal(result[mask > 0], original[mask > 0])
