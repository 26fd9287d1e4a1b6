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


def _jpeg_variants(photos) -> dict[str, bytes]:
    """Real camera/web JPEGs and Pillow-made ones of every chroma subsampling, baseline and
    progressive, odd sizes, low and high quality."""
    import importlib.util
    from pathlib import Path

    out = {name: photos[name].read_bytes() for name in ("bus", "zidane")}
    spec = importlib.util.find_spec("matplotlib")
    out["grace_hopper"] = (Path(spec.origin).parent / "mpl-data/sample_data/grace_hopper.jpg"
                           ).read_bytes()
    src = Image.open(photos["bus"]).convert("RGB")
    for sub in (0, 1, 2):  # 4:4:4, 4:2:2, 4:2:0
        for q, prog, size in ((50, False, (1001, 777)), (95, True, (810, 1080)),
                              (100, False, (17, 9)), (90, True, (333, 501))):
            out[f"sub{sub}-q{q}-prog{prog}-{size}"] = _save(
                src.resize(size), "JPEG", quality=q, subsampling=sub, progressive=prog)
    return out


def test_jpeg_fast_path_gives_pillows_pixels(photos):
    """Plain RGB JPEGs decode with OpenCV; every pixel equals Pillow's decode (a libjpeg
    upgrade on either side that changed a pixel would fail here)."""
    from core.imageio import _fast_jpeg, decode_photo

    for name, data in _jpeg_variants(photos).items():
        opened = Image.open(io.BytesIO(data))
        assert _fast_jpeg(opened, data) is not None, name  # the fast path is the one tested
        photo = decode_photo(data)
        ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert photo.rgb.shape == ref.shape and np.array_equal(photo.rgb, ref), name
        assert photo.format == "JPEG" and photo.alpha is None and photo.rgb.flags.writeable


def test_jpeg_fast_path_leaves_what_it_cannot_do_to_pillow(photos):
    """Oriented, greyscale, CMYK and truncated JPEGs and ones with a trailer after the EOI
    marker go through Pillow: orientation applied, truncation still ``invalid_image``."""
    from core.imageio import _fast_jpeg, decode_photo

    src = Image.open(photos["bus"]).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    oriented = _save(src, "JPEG", exif=exif.tobytes())
    plain = _save(src, "JPEG")
    cases = {"oriented": oriented, "grey": _save(src.convert("L"), "JPEG"),
             "cmyk": _save(src.convert("CMYK"), "JPEG"), "trailer": plain + b"MOTIONPHOTO",
             "truncated": plain[: len(plain) // 2]}
    for name, data in cases.items():
        assert _fast_jpeg(Image.open(io.BytesIO(data)), data) is None, name
    assert decode_photo(oriented).size == (1080, 810)
    assert np.array_equal(decode_photo(cases["trailer"]).rgb, decode_photo(plain).rgb)
    with pytest.raises(JobError) as e:
        decode_photo(cases["truncated"])
    assert e.value.code.value == "invalid_image"


@pytest.mark.parametrize("with_alpha", [False, True])
def test_photo_png_decodes_bit_exact_with_pillow_and_opencv(monkeypatch, with_alpha):
    """A photo PNG from core.png (ISA-L deflate, rows filtered and fed a strip at a time;
    here ~1 kB strips: dozens, the last of two rows) reads back with Pillow, OpenCV and zlib
    (which checks the stream's Adler-32) as the exact pixels, alpha and ICC profile."""
    import zlib

    import cv2

    from core import png
    from core.colour import display_p3_profile

    monkeypatch.setattr(png, "STRIP_BYTES", 1000)
    rng = np.random.default_rng(5)
    h, w = 97, 61  # (61 x 3 + 1 = 184 B a row: 5 rows a strip, 97 = 19 x 5 + 2)
    arr = rng.integers(0, 256, (h, w, 3), np.uint8)
    arr[40:60] = arr[39]  # flat runs too, so the Up filter gives zeros
    alpha = rng.integers(0, 256, (h, w), np.uint8) if with_alpha else None
    icc = display_p3_profile()
    data = encode_image(arr, "png", icc=icc, alpha=alpha)
    img = Image.open(io.BytesIO(data))
    assert img.info.get("icc_profile") == icc
    want = arr if alpha is None else np.dstack([arr, alpha])
    assert np.array_equal(np.asarray(img), want)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGBA if with_alpha
                                       else cv2.COLOR_BGR2RGB), want)
    # the IDAT stream, checked by zlib (header, every piece, the Adler-32 at its end)
    pos, idat = 8, b""
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        if data[pos + 4:pos + 8] == b"IDAT":
            idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    raw = zlib.decompress(idat)
    assert len(raw) == h * (w * want.shape[2] + 1)
