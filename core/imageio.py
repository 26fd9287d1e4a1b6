"""Image decoding and encoding with Pillow, with the limits checked before pixels are allocated.

Arrays in the pipeline are numpy: photos H x W x 3 uint8 RGB (0-255), masks H x W uint8
(0 = keep, 255 = repaint) or float32 alpha (0.0-1.0).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from core.errors import ErrorCode, JobError
from core.settings import Settings

#: Formats accepted as input (Pillow format names).
ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
#: zlib level for PNG outputs: 1 is several times faster than the usual 6 for ~10% larger files
#: on photos (bench/ measures it); outputs are transient, upload is cheap next to encode time.
PNG_COMPRESS_LEVEL = 1


def _default(name: str):
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class Limits:
    """Decoder limits. Units: bytes, px (width x height for ``max_pixels``), ratio.

    Defaults are the deployment settings' defaults (:class:`core.settings.Settings`).
    """

    max_bytes: int = _default("max_input_bytes")
    max_pixels: int = _default("max_image_pixels")
    max_side: int = _default("max_image_side")
    max_aspect_ratio: float = _default("max_aspect_ratio")

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(max_bytes=s.max_input_bytes, max_pixels=s.max_image_pixels,
                   max_side=s.max_image_side, max_aspect_ratio=s.max_aspect_ratio)


def _open_checked(data: bytes, field: str, limits: Limits) -> Image.Image:
    """Open (header only) and check format and dimensions before any pixel is decoded."""
    if len(data) > limits.max_bytes:
        raise JobError(ErrorCode.image_too_large,
                       f"{field}: {len(data)} bytes exceeds {limits.max_bytes}", field=field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=sorted(ALLOWED_FORMATS))
    except Image.DecompressionBombError:
        # Not an OSError: Pillow raises it from open() when pixels > 2x MAX_IMAGE_PIXELS.
        raise JobError(ErrorCode.image_too_large, f"{field}: too many pixels", field=field) from None
    except Exception:
        raise JobError(ErrorCode.invalid_image,
                       f"{field}: not a PNG, JPEG or WebP image", field=field) from None
    w, h = img.size
    if w < 1 or h < 1:
        raise JobError(ErrorCode.invalid_image, f"{field}: empty image", field=field)
    if w * h > limits.max_pixels or max(w, h) > limits.max_side:
        raise JobError(ErrorCode.image_too_large,
                       f"{field}: {w}x{h} px exceeds the limit ({limits.max_pixels} px, "
                       f"{limits.max_side} px per side)", field=field)
    if max(w, h) / min(w, h) > limits.max_aspect_ratio:
        raise JobError(ErrorCode.image_too_large,
                       f"{field}: aspect ratio {w}x{h} exceeds {limits.max_aspect_ratio}:1",
                       field=field)
    return img


def _load(img: Image.Image, field: str) -> Image.Image:
    """Decode pixels (first frame of an animation), applying EXIF orientation.

    ``load()`` rather than ``verify()``: verify passes truncated JPEGs, only load fails on them.
    """
    try:
        img.seek(0)
        img.load()
        return ImageOps.exif_transpose(img)
    except Exception:
        raise JobError(ErrorCode.invalid_image,
                       f"{field}: truncated or corrupt image data", field=field) from None


def _to_8bit(img: Image.Image) -> Image.Image:
    """16/32-bit greyscale ("I;16", "I", "F") -> "L" by scaling the full range to 0-255."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        scale = 255.0 / 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 1.0
        return Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8), "L")
    return img


def decode_image(data: bytes, *, field: str = "image", limits: Limits = Limits()) -> np.ndarray:
    """Decode a photo to H x W x 3 uint8 RGB, EXIF orientation applied.

    Animated images: the first frame is used. Transparent pixels are composited over white.
    CMYK, palette, greyscale and 16-bit inputs are converted to 8-bit RGB.

    Raises:
        JobError(invalid_image): not PNG/JPEG/WebP, truncated or corrupt.
        JobError(image_too_large): bytes, pixels, a side or the aspect ratio over ``limits``
            (checked from the header, before pixels are decoded).
    """
    img = _load(_open_checked(data, field, limits), field)
    img = _to_8bit(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def decode_mask(
    data: bytes, size: tuple[int, int], *, field: str = "mask", limits: Limits = Limits()
) -> np.ndarray:
    """Decode a mask to H x W bool (True = repaint) at ``size`` = (width, height) px.

    RGBA masks are composited over black first (white strokes on a transparent layer = repaint),
    then luminance >= 128 means repaint. A mask of another size with the same aspect ratio (within
    1%) is resized with nearest-neighbour; another aspect ratio is rejected.

    Raises:
        JobError(invalid_image): undecodable, or an aspect ratio that does not match the image.
        JobError(image_too_large): over ``limits``.
    """
    img = _to_8bit(_load(_open_checked(data, field, limits), field))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    grey = img.convert("L")
    w, h = size
    if grey.size != (w, h):
        mw, mh = grey.size
        if abs(mw / mh - w / h) > 0.01 * (w / h):
            raise JobError(ErrorCode.invalid_image,
                           f"{field}: {mw}x{mh} px does not match the image's aspect ratio "
                           f"({w}x{h} px)", field=field)
        grey = grey.resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(grey, dtype=np.uint8) >= 128


def encode_image(arr: np.ndarray, fmt: str = "png", quality: int = 92) -> bytes:
    """Encode H x W x 3 uint8 RGB, or H x W uint8 greyscale, as ``fmt`` (png, jpeg, webp).

    ``quality`` (1-100) applies to jpeg and webp; PNG uses :data:`PNG_COMPRESS_LEVEL`.
    """
    if fmt == "png":
        # OpenCV's PNG writer (one fixed row filter) is ~1.6x faster than Pillow's adaptive
        # filtering at the same zlib level for ~5% larger files (bench/RESULTS.md); lossless
        import cv2

        # row filter: "up" for photos; none for masks (0/255 runs compress well unfiltered)
        bgr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr
        row_filter = cv2.IMWRITE_PNG_FILTER_UP if arr.ndim == 3 else cv2.IMWRITE_PNG_FILTER_NONE
        ok, png = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL,
                                             cv2.IMWRITE_PNG_FILTER, row_filter])
        if not ok:
            raise ValueError("PNG encoding failed")
        return png.tobytes()
    img = Image.fromarray(arr)
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    elif fmt == "webp":
        img.save(buf, format="WEBP", quality=quality, method=4)
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    return buf.getvalue()
