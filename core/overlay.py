"""Preview overlay: the photo with the mask tinted; garments, faces and hands outlined, labelled.

Drawn with OpenCV's built-in Hershey font so nothing is downloaded (ultralytics' plotting would
fetch Arial.ttf). Line widths and font scale follow the image size so labels stay legible.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from core.cvshape import external_contours, nonzero_xy
from core.masking.post import bbox

MASK_TINT = (255, 40, 120)  # RGB, magenta: distinct from skin and most garments
DET_COLOUR = (255, 200, 0)
FACE_COLOUR = (0, 220, 80)
HAND_COLOUR = (0, 170, 255)
TINT_OPACITY = 0.5


def _label(img: np.ndarray, text: str, x: int, y: int, colour, scale: float, thick: int) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    y = max(y, th + base + 2)
    cv2.rectangle(img, (x, y - th - base - 2), (x + tw + 4, y), colour, -1)
    cv2.putText(img, text, (x + 2, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick,
                cv2.LINE_AA)


#: (value + tint + 1) // 2 per channel, value 0-255: the tint at alpha == 1 as an OpenCV LUT
#: (256 x 1 x 3 uint8, one table per RGB channel).
_HALF_TINT = ((np.arange(256)[:, None] + np.asarray(MASK_TINT) + 1) // 2).astype(
    np.uint8).reshape(256, 1, 3)
_TINY = float(np.finfo(np.float32).tiny)
_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


def _tint(image: np.ndarray, alpha: np.ndarray, out: np.ndarray) -> None:
    """``out = round(image * (1 - a) + MASK_TINT * a)``, ``a = alpha * TINT_OPACITY``, where
    alpha > 0 (``out`` holds ``image`` elsewhere). Where alpha == 1 (most of a mask) that is
    ``(image + tint + 1) // 2`` exactly for the opacity 1/2: one lookup table; only the soft
    band is blended in float32 (measured 5 instead of 19 ms on a 0.5 MP box)."""
    if TINT_OPACITY == 0.5:
        copied = cv2.copyTo(cv2.LUT(image, _HALF_TINT), cv2.compare(alpha, 1.0, cv2.CMP_GE),
                            out)
        if copied is not out:
            out[...] = copied
        xs, ys = nonzero_xy(cv2.inRange(alpha, _TINY, _BELOW_ONE))
    else:
        xs, ys = nonzero_xy(cv2.compare(alpha, 0.0, cv2.CMP_GT))
    if not len(xs):
        return
    a = (alpha[ys, xs] * TINT_OPACITY)[:, None]
    out[ys, xs] = (image[ys, xs] * (1 - a) + np.asarray(MASK_TINT, np.float32) * a
                   + 0.5).astype(np.uint8)


def render_overlay(
    image: np.ndarray,
    alpha: np.ndarray,
    detections: Sequence[tuple[str, float, Sequence[float]]] = (),
    faces: Sequence[tuple[float, Sequence[float]]] = (),
    hands: Sequence[tuple[float, Sequence[float]]] = (),
) -> np.ndarray:
    """Draw the preview.

    Args:
        image: H x W x 3 uint8 RGB.
        alpha: H x W float32 in [0, 1] (the blend mask); tinted in proportion.
        detections: ``(label, score, (x0, y0, x1, y1) px)``.
        faces: ``(score, (x0, y0, x1, y1) px)``, outlined green and labelled ``face``.
        hands: ``(score, (x0, y0, x1, y1) px)``, outlined blue and labelled ``hand``.

    Returns:
        H x W x 3 uint8 RGB.
    """
    h, w = image.shape[:2]
    out = image.copy()
    thick = max(1, round(max(h, w) / 400))
    scale = max(0.4, max(h, w) / 1400)
    box = bbox(alpha > 0)
    if box is not None:
        x0, y0, x1, y1 = box
        # tint only the mask's bounding box: the cost follows the mask, not the photo
        _tint(image[y0:y1, x0:x1], alpha[y0:y1, x0:x1], out[y0:y1, x0:x1])
        # the mask's outline, so its edge is visible on busy photos
        contours = external_contours((alpha[y0:y1, x0:x1] > 0).astype(np.uint8),
                                     offset=(int(x0), int(y0)))
        cv2.drawContours(out, contours, -1, MASK_TINT, thick, cv2.LINE_AA)
    for label, score, box in detections:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), DET_COLOUR, thick, cv2.LINE_AA)
        _label(out, f"{label} {score:.2f}", x0, y0, DET_COLOUR, scale, max(1, thick - 1))
    for name, colour, boxes in (("face", FACE_COLOUR, faces), ("hand", HAND_COLOUR, hands)):
        for score, box in boxes:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(out, (x0, y0), (x1, y1), colour, thick, cv2.LINE_AA)
            _label(out, f"{name} {score:.2f}", x0, y0, colour, scale, max(1, thick - 1))
    return out
