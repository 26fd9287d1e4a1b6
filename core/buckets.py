"""Generation buckets: a fixed set of model working sizes, so the UNet sees repeating shapes.

Without buckets the model's working size follows the crop around the mask (long side = the
model's native side, each side a multiple of 8): nearly every job has a new shape, which a
compiled UNet (:mod:`core.compile`) would have to recompile. With buckets
(``MASKPAINT_GENERATION_BUCKETS``) the working size is one of a few (width, height) pairs at the
model's native pixel count, each side a multiple of 64, and the crop grows (more context, never
less) to the bucket's aspect ratio before it is resized, so nothing is stretched. Paste-back is
unchanged: only pixels with alpha > 0 are written (:func:`core.inpaint.composite`).

Sources: :data:`SDXL_BUCKETS` are SDXL's training resolutions as published in its paper's
multi-aspect table (Podell et al. 2023, "SDXL", appendix; the nine widely used ones, aspect 1 to
2.4 both ways). Other native sizes get the same aspect ratios by :func:`buckets_for` (for SD
1.5 at 512 px: 512x512, 576x448, 640x448, 704x384, 768x320 and their transposes). Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Size = tuple[int, int]  # (width, height) px

#: SDXL's training resolutions (1024^2 pixel count, multiples of 64), (width, height) px.
SDXL_BUCKETS: tuple[Size, ...] = (
    (1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216),
    (1344, 768), (768, 1344), (1536, 640), (640, 1536),
)
#: Bucket sides are multiples of this (px): the VAE's 8x times the UNet's 3 halvings.
STEP_PX = 64
#: A bucket's pixel count may differ from native^2 by at most this fraction.
AREA_TOLERANCE = 0.2


def buckets_for(resolution: int) -> tuple[Size, ...]:
    """The buckets of a model whose native size is ``resolution`` x ``resolution`` px.

    For each aspect ratio of :data:`SDXL_BUCKETS`, the (w, h) pair of multiples of 64 whose
    area is within 20 % of ``resolution``^2 and whose aspect is closest (ties: area closest);
    duplicates dropped. At 1024 px this gives :data:`SDXL_BUCKETS` itself.
    """
    target = resolution * resolution
    sides = range(STEP_PX, 4 * resolution + 1, STEP_PX)
    cands = [(w, h) for w in sides for h in sides
             if abs(w * h / target - 1) <= AREA_TOLERANCE]
    if not cands:  # a native size under 64 px: one square bucket
        side = max(STEP_PX, int(round(resolution / STEP_PX)) * STEP_PX)
        return ((side, side),)
    out: list[Size] = []
    for bw, bh in SDXL_BUCKETS:
        aspect = math.log(bw / bh)
        best = min(cands, key=lambda c: (round(abs(math.log(c[0] / c[1]) - aspect), 9),
                                         abs(c[0] * c[1] - target)))
        if best not in out:
            out.append(best)
    return tuple(out)


def nearest_bucket(width: int, height: int, buckets: Sequence[Size]) -> Size:
    """The bucket whose aspect ratio is closest (in log ratio) to ``width`` / ``height``."""
    aspect = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - aspect))


def _grow(lo: int, hi: int, length: int, limit: int) -> tuple[int, int]:
    """[lo, hi) grown to ``length`` (<= ``limit``) around its centre, shifted inside [0, limit)."""
    length = min(limit, max(length, hi - lo))
    lo = lo - (length - (hi - lo)) // 2
    lo = min(max(0, lo), limit - length)
    return lo, lo + length


def fit_bucket(box: tuple[int, int, int, int], image_size: Size,
               buckets: Sequence[Size]) -> tuple[tuple[int, int, int, int], Size]:
    """The crop box grown to its nearest bucket's aspect ratio, and that bucket.

    Args:
        box: ``(x0, y0, x1, y1)`` px (exclusive ends), the padded box around the mask.
        image_size: (width, height) px of the photo; the grown box stays inside it (when the
            photo is too narrow for the bucket's aspect, the box takes its full width or height
            and the resize to the bucket stretches the rest, slightly).
        buckets: from :func:`buckets_for`.

    Returns:
        (grown box containing ``box``, (width, height) px of the bucket).
    """
    x0, y0, x1, y1 = box
    w, h = image_size
    bw, bh = nearest_bucket(x1 - x0, y1 - y0, buckets)
    if (x1 - x0) * bh < (y1 - y0) * bw:  # narrower than the bucket: widen
        x0, x1 = _grow(x0, x1, int(round((y1 - y0) * bw / bh)), w)
    else:
        y0, y1 = _grow(y0, y1, int(round((x1 - x0) * bh / bw)), h)
    return (x0, y0, x1, y1), (bw, bh)
