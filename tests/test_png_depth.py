"""16-bit and greyscale PNG photos come back in their own depth and mode, with every pixel
outside the mask bit-identical (in 16 bits), through the RunPod handler. The photos are real
ones (scikit-image's astronaut, ultralytics' bus) made 16-bit with a low byte that carries
information, so an 8-bit round trip would show."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from core.imageio import decode_photo
from core.masking.post import dilate
from core.png import encode_png
from tests.conftest import BUCKET, data_url, png_bytes

DILATE, FEATHER = 4, 6


def _sixteen(rgb8: np.ndarray, seed: int = 5) -> np.ndarray:
    """A 16-bit version of an 8-bit photo: v * 256 plus a random low byte."""
    rng = np.random.default_rng(seed)
    return rgb8.astype(np.uint16) * 256 + rng.integers(0, 256, rgb8.shape, dtype=np.uint16)


def _png(pixels: np.ndarray, alpha: np.ndarray | None = None) -> bytes:
    """A PNG of ``pixels``' own depth and mode, written by OpenCV (libpng)."""
    if pixels.ndim == 3:
        arr = pixels[..., ::-1] if alpha is None else np.dstack([pixels[..., ::-1], alpha])
    else:
        assert alpha is None
        arr = pixels
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def _read(body: bytes) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(pixels RGB or grey, alpha or None, Pillow's mode) of a PNG, in its own depth."""
    arr = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
    mode = Image.open(io.BytesIO(body)).mode
    if arr.ndim == 2:
        return arr, None, mode
    if arr.shape[2] == 4:
        return arr[..., 2::-1], arr[..., 3], mode
    return arr[..., ::-1], None, mode


@pytest.fixture(scope="module")
def astro(photos) -> np.ndarray:
    return np.asarray(Image.open(photos["astronaut"]).convert("RGB"))


def _mask(h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[h // 2: h // 2 + 150, w // 3: w // 3 + 140] = 255
    return m


def _run(handler, s3, job_id: str, photo: bytes, mask: np.ndarray, **out) -> tuple[dict, bytes]:
    reply = handler({"id": job_id, "input": {
        "image": data_url(photo, "image/png"), "mask": data_url(png_bytes(mask), "image/png"),
        "prompt": "a red jacket", "num_inference_steps": 2, "seed": 11, "protect_face": False,
        "mask_dilate_px": DILATE, "mask_feather_px": FEATHER, "output": out}})
    assert "error" not in reply, reply
    return reply, s3.get_object(Bucket=BUCKET, Key=reply["image"]["key"])["Body"].read()


@pytest.mark.parametrize("kind", ["rgb16", "grey16", "grey8"])
def test_png_keeps_depth_mode_and_pixels_outside_the_mask(runpod_handler, s3, astro, kind):
    grey8 = cv2.cvtColor(astro, cv2.COLOR_RGB2GRAY)
    photo = {"rgb16": _sixteen(astro), "grey16": _sixteen(grey8), "grey8": grey8}[kind]
    mask = _mask(*photo.shape[:2])
    reply, body = _run(runpod_handler, s3, f"depth-{kind}", _png(photo), mask)
    assert reply["image"]["content_type"] == "image/png"
    pixels, alpha, mode = _read(body)
    assert pixels.dtype == photo.dtype and pixels.shape == photo.shape and alpha is None
    assert mode == {"rgb16": "RGB", "grey16": "I;16", "grey8": "L"}[kind]
    band = dilate(mask > 0, DILATE + FEATHER)
    assert np.array_equal(pixels[~band], photo[~band])  # bit-identical, in the file's depth
    assert not np.array_equal(pixels[mask > 0], photo[mask > 0])  # the mask was repainted
    if kind == "rgb16":  # the repaint is 8-bit precision (v * 257) where it is not blended
        inner = ~dilate(~(mask > 0), FEATHER + 1) & (mask > 0)
        assert np.all(pixels[inner] % 257 == 0)


def test_sixteen_bit_alpha_is_kept_unchanged(runpod_handler, s3, astro):
    photo = _sixteen(astro)
    h, w = photo.shape[:2]
    alpha = np.broadcast_to(np.linspace(1000, 65535, w).astype(np.uint16), (h, w)).copy()
    alpha[:40] = 0  # a transparent strip
    mask = _mask(h, w)
    _, body = _run(runpod_handler, s3, "depth-rgba16", _png(photo, alpha), mask)
    pixels, got_alpha, mode = _read(body)
    assert mode == "RGBA" and pixels.dtype == np.uint16
    assert np.array_equal(got_alpha, alpha)  # everywhere, inside the mask too
    band = dilate(mask > 0, DILATE + FEATHER)
    assert np.array_equal(pixels[~band], photo[~band])


def test_other_formats_of_a_sixteen_bit_photo_are_8_bit_rgb(runpod_handler, s3, photos):
    bus = np.asarray(Image.open(photos["bus"]).convert("RGB"))
    grey = _sixteen(cv2.cvtColor(bus, cv2.COLOR_RGB2GRAY))
    _, body = _run(runpod_handler, s3, "depth-jpeg", _png(grey), _mask(*grey.shape), format="jpeg")
    img = Image.open(io.BytesIO(body))
    assert img.format == "JPEG" and img.mode == "RGB" and img.size == (810, 1080)


def test_decoded_photo_keeps_both_copies(astro):
    photo16 = _sixteen(astro)
    p = decode_photo(_png(photo16))
    assert p.native is not None and np.array_equal(p.native, photo16)
    assert p.rgb.dtype == np.uint8 and p.rgb.shape == astro.shape
    assert np.abs(p.rgb.astype(int) - astro).max() <= 1  # round(v / 257)
    assert decode_photo(_png(astro)).native is None  # 8-bit RGB: the usual path
    grey = photo16[..., 1]
    alpha = np.full(grey.shape, 65535, np.uint16)
    alpha[:, :100] = 300
    g = decode_photo(encode_png(grey, alpha=alpha))  # a 16-bit grey+alpha file
    assert np.array_equal(g.native, grey) and np.array_equal(g.native_alpha, alpha)
    assert g.alpha is not None and g.alpha[0, 0] == 1 and g.alpha[0, -1] == 255


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_png_writer_round_trips_every_depth_and_mode(dtype, channels, with_alpha):
    rng = np.random.default_rng(1)
    top = np.iinfo(dtype).max + 1
    shape = (67, 45) if channels == 1 else (67, 45, 3)
    pixels = rng.integers(0, top, shape).astype(dtype)
    alpha = rng.integers(0, top, (67, 45)).astype(dtype) if with_alpha else None
    got, got_alpha, _ = _read(encode_png(pixels, alpha=alpha))
    if channels == 1 and with_alpha:
        got = got[..., 0]  # OpenCV reads grey+alpha as RGBA with R = G = B
    assert got.dtype == dtype and np.array_equal(got, pixels)
    assert (got_alpha is None) if alpha is None else np.array_equal(got_alpha, alpha)
