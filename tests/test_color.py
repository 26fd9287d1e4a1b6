"""What phones and editors send: colour-managed photos (Display P3, Adobe RGB), HEIC/AVIF, and
transparent photos, through the RunPod handler (tiny models, moto S3).

"Looks unchanged" is checked as a colour-managed viewer shows it: every file is converted to
sRGB through its embedded profile (untagged = sRGB) with LittleCMS before comparing.
"""

from __future__ import annotations

import io
import types

import numpy as np
import pytest
from PIL import Image, ImageCms

from core.colour import (ADOBE_RGB_GAMMA, ADOBE_RGB_PRIMARIES_XY, SRGB_PRIMARIES_XY, ColourSpace,
                         display_p3_profile, matrix_profile)
from core.masking.post import dilate
from tests.conftest import BUCKET, data_url, png_bytes

DILATE, FEATHER = 4, 4
BOX = (150, 260, 380, 500)  # x0, y0, x1, y1 on the 512 x 512 astronaut (her suit)
P3 = display_p3_profile()
ADOBE = matrix_profile("Adobe RGB (1998)", ADOBE_RGB_PRIMARIES_XY, trc=ADOBE_RGB_GAMMA)
#: The hand-made test profile the brief describes: P3 primaries, D65 -> D50, gamma 2.2.
P3_GAMMA22 = matrix_profile("P3 gamma 2.2", ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)),
                            trc=2.2)


def _mask(w: int = 512, h: int = 512, box=BOX) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 255
    return m


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _get(s3, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def as_viewer_sees(data: bytes) -> np.ndarray:
    """H x W x 3 uint8 sRGB, as a colour-managed viewer shows the file (over white)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    icc = img.info.get("icc_profile")
    rgb = img.convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", rgb.size, (255, 255, 255, 255)), rgb)
    flat = flat.convert("RGB")
    if icc:
        flat = ImageCms.profileToProfile(
            flat, ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"),
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB")
    return np.asarray(flat)


@pytest.fixture(scope="module")
def astro_rgb(photos) -> Image.Image:
    return Image.open(photos["astronaut"]).convert("RGB")


def _job(image: bytes, mime: str, **kw) -> dict:
    inp = {"image": data_url(image, mime), "mask": data_url(png_bytes(_mask()), "image/png"),
           "prompt": "a green wool coat", "num_inference_steps": 2, "seed": 3,
           "protect_face": False, "mask_dilate_px": DILATE, "mask_feather_px": FEATHER}
    inp.update(kw)
    return inp


OUTSIDE = ~dilate(_mask() > 0, DILATE + FEATHER)


@pytest.mark.parametrize("name,icc", [("display-p3", P3), ("p3-gamma22", P3_GAMMA22),
                                      ("adobe-rgb", ADOBE)])
def test_wide_gamut_png_keeps_profile_and_looks_unchanged(runpod_handler, s3, astro_rgb, name, icc):
    """The file's own values, tagged with a wide-gamut profile: the PNG result carries the same
    profile, its unchanged pixels are bit-identical and look identical in a managed viewer."""
    src = _save(astro_rgb, "PNG", icc_profile=icc)
    out = runpod_handler({"id": f"cm-{name}", "input": _job(src, "image/png")})
    assert "error" not in out, out
    result = _get(s3, out["image"]["key"])
    res_img = Image.open(io.BytesIO(result))
    assert res_img.info.get("icc_profile") == icc
    seen_in, seen_out = as_viewer_sees(src), as_viewer_sees(result)
    assert np.array_equal(seen_out[OUTSIDE], seen_in[OUTSIDE])
    assert np.array_equal(np.asarray(res_img.convert("RGB"))[OUTSIDE],
                          np.asarray(astro_rgb)[OUTSIDE])  # the file's values, untouched
    # the overlay is an sRGB preview: untagged, and it looks like the photo where not tinted
    overlay = _get(s3, out["overlay"]["key"])
    assert "icc_profile" not in Image.open(io.BytesIO(overlay)).info
    far = ~dilate(_mask() > 0, 40)
    diff = np.abs(as_viewer_sees(overlay).astype(int) - seen_in.astype(int))[far]
    assert diff.mean() < 3  # JPEG q85; the untagged file values would be off by ~10 here


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_lossy_outputs_carry_the_profile(runpod_handler, s3, astro_rgb, fmt):
    src = _save(astro_rgb, "JPEG", quality=95, icc_profile=P3)
    out = runpod_handler({"id": f"cm-{fmt}", "input": _job(src, "image/jpeg",
                                                            output={"format": fmt})})
    assert "error" not in out, out
    result = _get(s3, out["image"]["key"])
    assert Image.open(io.BytesIO(result)).info.get("icc_profile") == P3
    diff = np.abs(as_viewer_sees(result).astype(int) - as_viewer_sees(src).astype(int))
    assert diff[OUTSIDE].mean() < 2.5  # lossy everywhere, but no colour shift


class _PaintingPipe:
    """Stands in for the diffusers pipeline *call*: records what the model was shown and paints
    one flat sRGB colour, so the colour path around the model can be checked exactly."""

    def __init__(self, colour):
        self.colour = colour
        self.seen: list[np.ndarray] = []
        self.num_timesteps = 1

    def __call__(self, *, image, width, height, callback_on_step_end=None, **_):
        self.seen.append(np.asarray(image.convert("RGB")))
        return types.SimpleNamespace(images=[Image.new("RGB", (width, height), self.colour)])


@pytest.fixture
def painting_pipe(model_set):
    inp = model_set.inpainters["sd15-inpaint"]
    real = inp.pipe
    fake = _PaintingPipe((200, 40, 30))
    inp.pipe = fake
    yield fake
    inp.pipe = real


def test_model_sees_srgb_and_its_paint_is_converted_back(runpod_handler, s3, painting_pipe):
    """A flat P3 photo: the model is shown the sRGB colour, and the sRGB colour it paints is
    stored as P3 values that a managed viewer shows as that same sRGB colour."""
    p3_grey_blue = (60, 110, 200)
    src = _save(Image.new("RGB", (512, 512), p3_grey_blue), "PNG", icc_profile=P3)
    out = runpod_handler({"id": "cm-paint", "input": _job(src, "image/png")})
    assert "error" not in out, out
    srgb_of_src = ColourSpace(P3).to_srgb(np.array([[p3_grey_blue]], np.uint8))[0, 0]
    seen = painting_pipe.seen[0]
    assert np.abs(seen.reshape(-1, 3).astype(int) - srgb_of_src).max() <= 1
    assert np.abs(srgb_of_src.astype(int) - p3_grey_blue).max() > 10  # a real conversion
    result = _get(s3, out["image"]["key"])
    core = _mask() > 0
    shown = as_viewer_sees(result)[core]
    assert np.abs(shown.astype(int) - (200, 40, 30)).max() <= 2
    stored = np.asarray(Image.open(io.BytesIO(result)).convert("RGB"))[core]
    assert np.abs(stored.astype(int) - (200, 40, 30)).max() > 10  # stored in P3, not sRGB


def test_srgb_like_profile_is_kept_but_not_converted():
    from core.imageio import decode_photo

    srgb_icc = matrix_profile("sRGB IEC61966-2.1 (rebuilt)", SRGB_PRIMARIES_XY)
    photo = decode_photo(_save(Image.new("RGB", (8, 8), (10, 200, 30)), "PNG",
                               icc_profile=srgb_icc))
    assert photo.colour.icc == srgb_icc and photo.colour.is_srgb


def test_broken_profile_is_ignored():
    from core.imageio import decode_photo

    photo = decode_photo(_save(Image.new("RGB", (8, 8), (10, 200, 30)), "PNG",
                               icc_profile=b"not an icc profile" * 10))
    assert photo.colour.icc is None and photo.rgb[0, 0].tolist() == [10, 200, 30]


# ------------------------------------------------------------------ HEIC / AVIF (iPhone photos)
def _rotated_upload(photos, fmt: str, **kw) -> tuple[bytes, np.ndarray]:
    """bus.jpg (810 x 1080) stored landscape with EXIF orientation 8 ("rotate 90 CW to
    display"), tagged Display P3: a viewer shows it portrait again."""
    src = Image.open(photos["bus"]).convert("RGB")
    stored = src.transpose(Image.Transpose.ROTATE_90)  # 1080 x 810, CCW
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display -> undoes the CCW turn
    return _save(stored, fmt, quality=92, exif=exif.tobytes(), **kw), np.asarray(src)


@pytest.mark.parametrize("fmt,mime", [("HEIF", "image/heic"), ("AVIF", "image/avif")])
def test_heic_and_avif_from_a_phone(runpod_handler, s3, photos, fmt, mime):
    data, upright = _rotated_upload(photos, fmt, icc_profile=P3)
    mask = _mask(810, 1080, (250, 420, 560, 760))
    out = runpod_handler({"id": f"phone-{fmt}", "input": _job(
        data, mime, mask=data_url(png_bytes(mask), "image/png"))})
    assert "error" not in out, out
    assert out["size"] == [810, 1080]  # oriented
    result = _get(s3, out["image"]["key"])
    assert Image.open(io.BytesIO(result)).info.get("icc_profile") == P3
    # oriented the right way round: the stored values match the upright photo (codec loss only)
    stored = np.asarray(Image.open(io.BytesIO(result)).convert("RGB")).astype(int)
    keep = ~dilate(mask > 0, DILATE + FEATHER)
    assert np.abs(stored - upright.astype(int))[keep].mean() < 6
    assert np.abs(stored - upright[::-1, ::-1].astype(int))[keep].mean() > 30


def test_heic_nclx_display_p3_gets_a_p3_profile(photos):
    """HEIFs may describe Display P3 with an nclx box (primaries 12, sRGB curve), no ICC."""
    from core.imageio import decode_photo

    img = Image.open(photos["bus"]).convert("RGB")
    data = _save(img, "HEIF", quality=90, color_primaries=12, transfer_characteristics=13,
                 matrix_coefficients=6, full_range_flag=1)
    assert "icc_profile" not in Image.open(io.BytesIO(data)).info
    photo = decode_photo(data)
    assert not photo.colour.is_srgb
    desc = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(photo.colour.icc)))
    assert "Display P3" in desc
    red = photo.colour.to_srgb(np.array([[[255, 0, 0]]], np.uint8))[0, 0]
    assert red[0] == 255 and red[1] == 0  # P3 red is beyond sRGB red: clipped


# ------------------------------------------------------------------ transparent photos
@pytest.fixture(scope="module")
def cutout(astro_rgb) -> tuple[bytes, np.ndarray]:
    """The astronaut as a cut-out: an opaque disc, a soft edge, transparent corners."""
    yy, xx = np.mgrid[:512, :512]
    r = np.hypot(xx - 256, yy - 256)
    alpha = np.clip((240 - r) * 8, 0, 255).astype(np.uint8)
    rgba = np.dstack([np.asarray(astro_rgb), alpha])
    return _save(Image.fromarray(rgba, "RGBA"), "PNG"), rgba


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_transparent_photo_keeps_its_alpha(runpod_handler, s3, cutout, fmt):
    data, rgba = cutout
    out = runpod_handler({"id": f"alpha-{fmt}", "input": _job(data, "image/png",
                                                               output={"format": fmt})})
    assert "error" not in out, out
    res = Image.open(io.BytesIO(_get(s3, out["image"]["key"])))
    assert res.mode == "RGBA"
    got = np.asarray(res)
    if fmt == "png":  # lossless: RGBA bit-identical outside the band, alpha unchanged inside too
        assert np.array_equal(got[OUTSIDE], rgba[OUTSIDE])
        assert np.array_equal(got[..., 3], rgba[..., 3])
        assert not np.array_equal(got[_mask() > 0, :3], rgba[_mask() > 0, :3])
    else:
        assert np.abs(got[..., 3].astype(int) - rgba[..., 3]).mean() < 2


def test_transparent_photo_as_jpeg_is_over_white(runpod_handler, s3, cutout):
    data, rgba = cutout
    out = runpod_handler({"id": "alpha-jpeg", "input": _job(data, "image/png",
                                                             output={"format": "jpeg"})})
    assert "error" not in out, out
    got = np.asarray(Image.open(io.BytesIO(_get(s3, out["image"]["key"]))).convert("RGB"))
    assert got[:20, :20].min() >= 245  # the transparent corner is white


def test_heif_primary_image_is_the_one_decoded_and_checked():
    """A HEIF holds several images; the primary (here the second) is the photo, and the limits
    were checked against it: decoding another (here a larger one) would bypass them."""
    from core.imageio import Limits, decode_photo

    other = Image.new("RGB", (64, 48), (255, 0, 0))
    primary = Image.new("RGB", (40, 40), (0, 0, 255))
    data = _save(other, "HEIF", save_all=True, append_images=[primary], primary_index=1)
    photo = decode_photo(data, limits=Limits(max_pixels=40 * 40))
    assert photo.size == (40, 40) and photo.rgb[20, 20, 2] > 200
