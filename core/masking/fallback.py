"""Heuristic garment mask for when the detector finds nothing or a masking model is missing.

Geometry: the garment regions hang below the largest face, in units of that face's box
(width ``fw``, height ``fh``), from the usual proportions of an upright adult figure (the head is
about 1/7.5 of body height, the shoulders about 3 head-widths wide; e.g. Loomis, *Figure Drawing
for All It's Worth*, 1943). Without a face, a centred box is used. The box is then refined with
OpenCV's GrabCut (Rother et al. 2004), run on the region plus some context at a 320 px long side
to bound its cost (1-7 s here at full size), and the result is kept only when it covers a sane
share of the box.

All regions are fractions of the face box or the image, so they scale with the photo.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

#: (x half-width, y top, y bottom) in face units, measured from the face centre / face bottom.
FACE_REGIONS: dict[str, tuple[float, float, float]] = {
    "upper": (1.6, 0.25, 3.2),
    "outerwear": (1.9, 0.25, 3.6),
    "lower": (1.3, 3.0, 7.0),
    "dress": (1.7, 0.25, 6.0),
    "full": (1.9, 0.25, 7.0),
}
#: (x0, y0, x1, y1) as fractions of the image, used when no face is known.
CENTRE_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "upper": (0.28, 0.30, 0.72, 0.62),
    "outerwear": (0.25, 0.28, 0.75, 0.66),
    "lower": (0.32, 0.58, 0.68, 0.95),
    "dress": (0.28, 0.30, 0.72, 0.92),
    "full": (0.25, 0.28, 0.75, 0.95),
}
GRABCUT_SIDE = 320
GRABCUT_ITERS = 2  # a third iteration changed no pixel on the test photos (bench/RESULTS.md)
#: Background context around the region box given to GrabCut, as a fraction of the box size.
GRABCUT_CONTEXT = 0.3
GRABCUT_SEED = 12345
#: GrabCut's result is trusted when it keeps this share of the region box.
GRABCUT_KEEP = (0.25, 0.98)


def region_boxes(
    width: int, height: int, targets: Sequence[str], face_box: Sequence[float] | None
) -> list[tuple[int, int, int, int]]:
    """Integer ``(x0, y0, x1, y1)`` px boxes for each target group, clipped to the image."""
    boxes = []
    for t in targets:
        if face_box is not None:
            fx0, fy0, fx1, fy1 = face_box
            fw, fh, cx = fx1 - fx0, fy1 - fy0, (fx0 + fx1) / 2
            hw, top, bottom = FACE_REGIONS[t]
            box = (cx - hw * fw, fy1 + top * fh, cx + hw * fw, fy1 + bottom * fh)
        else:
            x0, y0, x1, y1 = CENTRE_REGIONS[t]
            box = (x0 * width, y0 * height, x1 * width, y1 * height)
        bx0, by0 = max(0, int(box[0])), max(0, int(box[1]))
        bx1, by1 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
        if bx1 - bx0 >= 2 and by1 - by0 >= 2:
            boxes.append((bx0, by0, bx1, by1))
    return boxes


def _grabcut(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
    """GrabCut inside ``box``; H x W bool at full size, or None.

    Runs on a crop of the box plus :data:`GRABCUT_CONTEXT` of its size on each side (enough
    background for the colour model), downscaled to :data:`GRABCUT_SIDE`: the cost then follows
    the garment region, not the photo.
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = int((x1 - x0) * GRABCUT_CONTEXT), int((y1 - y0) * GRABCUT_CONTEXT)
    cx0, cy0, cx1, cy1 = max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)
    crop = image[cy0:cy1, cx0:cx1]
    ch, cw = crop.shape[:2]
    scale = min(1.0, GRABCUT_SIDE / max(ch, cw))
    small = cv2.resize(crop, (max(1, round(cw * scale)), max(1, round(ch * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else crop
    rx0, ry0 = int(round((x0 - cx0) * scale)), int(round((y0 - cy0) * scale))
    rx1, ry1 = int(round((x1 - cx0) * scale)), int(round((y1 - cy0) * scale))
    if rx1 - rx0 < 8 or ry1 - ry0 < 8:
        return None
    if rx0 == 0 and ry0 == 0 and rx1 >= small.shape[1] and ry1 >= small.shape[0]:
        return None  # the box is the whole crop: no background to learn from
    gc = np.zeros(small.shape[:2], np.uint8)  # GC_BGD outside the rect
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        # GrabCut's k-means init draws from OpenCV's global RNG: seed it so the same photo gives
        # the same mask (a redelivered job must repaint the same region)
        cv2.setRNGSeed(GRABCUT_SEED)
        cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), gc, (rx0, ry0, rx1 - rx0, ry1 - ry0),
                    bgd, fgd, GRABCUT_ITERS, cv2.GC_INIT_WITH_RECT)
    except cv2.error:
        return None
    fg = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.uint8)
    out = np.zeros((h, w), dtype=bool)
    out[cy0:cy1, cx0:cx1] = cv2.resize(fg, (cw, ch), interpolation=cv2.INTER_NEAREST).astype(bool)
    return out


def fallback_mask(
    image: np.ndarray,
    targets: Sequence[str],
    face_boxes: Sequence[Sequence[float]] = (),
    refine: bool = True,
) -> tuple[np.ndarray, str]:
    """Heuristic mask for ``targets`` below the largest face (or centred).

    Args:
        image: H x W x 3 uint8 RGB.
        targets: target groups (keys of :data:`FACE_REGIONS`).
        face_boxes: ``(x0, y0, x1, y1)`` px; the largest anchors the regions.
        refine: run GrabCut inside each box.

    Returns:
        (H x W bool mask, a short description of how it was made).
    """
    h, w = image.shape[:2]
    face = max(face_boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), default=None)
    mask = np.zeros((h, w), dtype=bool)
    how = "below the largest face" if face is not None else "centred (no face found)"
    refined = False
    for box in region_boxes(w, h, targets, face):
        x0, y0, x1, y1 = box
        region = np.zeros((h, w), dtype=bool)
        region[y0:y1, x0:x1] = True
        if refine:
            gc = _grabcut(image, box)
            if gc is not None:
                gc &= region
                share = gc.sum() / region.sum()
                if GRABCUT_KEEP[0] <= share <= GRABCUT_KEEP[1]:
                    region, refined = gc, True
        mask |= region
    return mask, f"torso heuristic {how}" + (", GrabCut-refined" if refined else "")
