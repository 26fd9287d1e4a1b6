"""PNG photos kept in their own depth and mode: 16 bits per sample, and greyscale.

Why: Pillow reads a 16-bit RGB(A) PNG as 8-bit (it has no 48-bit mode) and the pipeline
worked in 8-bit RGB, so a 16-bit photo came back 8-bit and a greyscale one as RGB, although
pixels outside the mask are promised unchanged. Here the file's own samples are read with
OpenCV (libpng, ``IMREAD_UNCHANGED``: uint16 for 16-bit files) and kept beside the 8-bit RGB
copy the models see; the repaint is composited into them and the result is written back in
the same depth and mode (:func:`core.png.encode_png`).

Arrays: ``pixels`` H x W (grey) or H x W x 3 (RGB), ``alpha`` H x W or None, both uint8
(8-bit file) or uint16 (16-bit file), the file's values.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import ExifTags, Image

#: PNG colour types (PNG spec 11.2.2) kept in their own mode: grey, RGB, grey+alpha, RGBA.
_GREY_TYPES = (0, 4)
_ALPHA_TYPES = (4, 6)


def png_header(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's ``IHDR`` (the first chunk, at a fixed offset:
    8-byte signature, 4-byte length, ``IHDR``, width, height, then depth and colour type)."""
    if len(data) < 26 or data[12:16] != b"IHDR":
        return None
    return data[24], data[25]


def native_png(opened: Image.Image, data: bytes, rgb_profile: bool
               ) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The file's own samples when a PNG is 16-bit or greyscale, else None (the 8-bit RGB path
    decodes it as before).

    Args:
        opened: the file opened by Pillow (header checked against the limits already).
        data: the file's bytes.
        rgb_profile: the file carries an RGB ICC profile (kept on the output); a profile of
            another kind (a grey one) leaves the photo to the 8-bit path, which converts it.

    Taken only where nothing else changes the pixels: no palette, no ``tRNS`` transparent
    colour, no EXIF orientation to apply, 8 or 16 bits (1, 2 and 4-bit greys go the 8-bit way).

    Returns:
        (pixels, alpha or None when fully opaque), as the module docstring says.
    """
    head = png_header(data) if opened.format == "PNG" else None
    if head is None:
        return None
    depth, colour_type = head
    grey = colour_type in _GREY_TYPES
    if colour_type not in (0, 2, 4, 6) or depth not in (8, 16) or (depth == 8 and not grey):
        return None
    if "transparency" in opened.info or opened.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        return None
    if opened.info.get("icc_profile") and (grey or not rgb_profile):
        return None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8),
                       cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    dtype = np.uint16 if depth == 16 else np.uint8
    if arr is None or arr.dtype != dtype or arr.shape[:2] != (opened.height, opened.width):
        return None  # (Pillow's path then decodes it, or says what is wrong)
    alpha = None
    if arr.ndim == 2:
        pixels = arr
    elif grey:  # OpenCV gives grey+alpha as BGRA with B = G = R
        pixels = np.ascontiguousarray(arr[..., 0])
        alpha = arr[..., 3] if colour_type in _ALPHA_TYPES and arr.shape[2] == 4 else None
    else:
        pixels = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB if arr.shape[2] == 4 else
                              cv2.COLOR_BGR2RGB)
        alpha = arr[..., 3] if arr.shape[2] == 4 else None
    if alpha is not None:
        alpha = None if int(alpha.min()) == np.iinfo(dtype).max else alpha.copy()
    return pixels, alpha


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 by ``round(v / 257)`` (65535 -> 255, 257 -> 1); uint8 unchanged."""
    if arr.dtype == np.uint8:
        return arr
    return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB of ``pixels`` (grey repeated into R, G and B)."""
    px = to_8bit(pixels)
    return cv2.cvtColor(px, cv2.COLOR_GRAY2RGB) if px.ndim == 2 else px


def like_native(rgb8: np.ndarray, native: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB (what a model painted) in ``native``'s mode and depth: grey by
    ITU-R BT.601 luma (OpenCV's ``RGB2GRAY``: 0.299 R + 0.587 G + 0.114 B, as Pillow's "L"),
    16-bit by ``v * 257`` (0 -> 0, 255 -> 65535)."""
    out = cv2.cvtColor(rgb8, cv2.COLOR_RGB2GRAY) if native.ndim == 2 else rgb8
    return out.astype(np.uint16) * np.uint16(257) if native.dtype == np.uint16 else out
