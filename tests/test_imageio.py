"""Decoding real-world image variants and rejecting broken ones."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.errors import JobError
from core.imageio import Limits, decode_image, decode_mask, encode_image


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_exif_orientation_is_applied(photos):
    src = Image.open(photos["bus"])  # 810 x 1080
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    arr = decode_image(_save(src, "JPEG", exif=exif.tobytes(), quality=95))
    assert arr.shape == (810, 1080, 3)  # displayed landscape


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "CMYK", "LA", "I;16"])
def test_modes_become_rgb_uint8(photos, mode):
    src = Image.open(photos["astronaut"]).convert("RGB")
    if mode == "I;16":
        img = Image.fromarray(np.asarray(src.convert("L"), np.uint16) * 257)
    else:
        img = src.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    arr = decode_image(_save(img, fmt))
    assert arr.dtype == np.uint8 and arr.shape == (512, 512, 3)
    grey_ref = np.asarray(src.convert("L"), np.float32)
    # content survives the conversion (same picture, not black or inverted)
    assert np.corrcoef(arr.mean(axis=2).ravel(), grey_ref.ravel())[0, 1] > 0.95


def test_truncated_jpeg_is_invalid_image(photos):
    data = photos["bus"].read_bytes()
    with pytest.raises(JobError) as e:
        decode_image(data[: len(data) // 2])
    assert e.value.code.value == "invalid_image"


def test_gif_and_text_are_invalid_image():
    gif = _save(Image.new("RGB", (8, 8)), "GIF")
    for data in (gif, b"hello"):
        with pytest.raises(JobError) as e:
            decode_image(data)
        assert e.value.code.value == "invalid_image"


def test_limits_checked_before_decoding():
    big = _save(Image.new("L", (3000, 3000)), "PNG")
    with pytest.raises(JobError) as e:
        decode_image(big, limits=Limits(max_pixels=1_000_000))
    assert e.value.code.value == "image_too_large"
    thin = _save(Image.new("RGB", (2000, 100)), "PNG")
    with pytest.raises(JobError) as e:
        decode_image(thin)
    assert e.value.code.value == "image_too_large"


def test_rgba_mask_strokes_on_transparent_layer():
    layer = np.zeros((40, 60, 4), np.uint8)
    layer[10:20, 10:30] = (255, 255, 255, 255)  # painted white stroke, rest transparent
    m = decode_mask(_save(Image.fromarray(layer, "RGBA"), "PNG"), (60, 40))
    assert m.dtype == bool and m.shape == (40, 60)
    assert m[10:20, 10:30].all() and m.sum() == 200


def test_mask_other_aspect_rejected_same_aspect_resized():
    m = np.zeros((20, 30), np.uint8)
    m[5:10, 5:10] = 255
    data = _save(Image.fromarray(m), "PNG")
    assert decode_mask(data, (60, 40)).sum() == 100  # 2x nearest
    with pytest.raises(JobError) as e:
        decode_mask(data, (60, 60))
    assert e.value.code.value == "invalid_image" and e.value.field == "mask"


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encode_roundtrip(fmt):
    arr = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    out = np.asarray(Image.open(io.BytesIO(encode_image(arr, fmt, 95))).convert("RGB"))
    assert out.shape == arr.shape
    if fmt == "png":
        assert np.array_equal(out, arr)
