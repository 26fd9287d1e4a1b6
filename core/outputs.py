"""A job's artefacts: the result image(s), the mask PNG and the preview overlay, each encoded
in its own thread and uploaded as soon as its own encode is done (encodes overlap uploads).

Sizes: the result images and the mask are the photo's full size; the overlay is a preview of at
most :data:`OVERLAY_MAX_PIXELS` (the photo scaled down, aspect ratio kept), and each
:class:`~core.contract.Artifact` carries its own file's width and height in px.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from core.contract import Artifact
from core.imageio import CONTENT_TYPES, Photo, encode_image
from core.inpaint import shrink
from core.storage import Storage, artefact_name

OVERLAY_JPEG_QUALITY = 85
#: The overlay's pixel budget (width x height): a preview for a person to check the mask, so
#: at most about what a full-HD screen shows (1920 x 1080 = 2.07 MP). Measured (2 cores,
#: a 12 MP photo): rendering and JPEG-encoding it at full size took ~150 + ~100 ms; scaling the
#: photo down to 2 MP first costs ~10 ms (:func:`core.inpaint.shrink`), and the render and
#: encode then take a sixth (269 -> 51 ms in all, same-run A/B).
OVERLAY_MAX_PIXELS = 2_000_000


@dataclass(frozen=True)
class Encoded:
    """One encoded artefact: the file's bytes, name (``result.png``), content type, size px."""

    data: bytes
    filename: str
    content_type: str
    width: int
    height: int


Encoder = Callable[[], Encoded]


def overlay_scale(width: int, height: int, max_pixels: int = OVERLAY_MAX_PIXELS) -> float:
    """The factor (<= 1) that brings ``width`` x ``height`` px within ``max_pixels``."""
    return min(1.0, math.sqrt(max_pixels / (width * height)))


@dataclass(frozen=True)
class PreviewSource:
    """What the overlay is drawn from, already scaled to at most :data:`OVERLAY_MAX_PIXELS`:
    ``image`` h x w x 3 uint8 sRGB, ``alpha`` h x w float32, and the factors ``sx``, ``sy``
    from full-size px to preview px (boxes are scaled by them at render time).

    Made right after masking (:func:`preview_source`), so the full-size sRGB photo need not be
    kept until the encodes: the job may then repaint the photo's own buffer in place."""

    image: np.ndarray
    alpha: np.ndarray
    sx: float
    sy: float


def preview_source(image: np.ndarray, alpha: np.ndarray) -> PreviewSource:
    """``image`` (H x W x 3 uint8 sRGB) and ``alpha`` (H x W float32) scaled with
    :func:`shrink` by :func:`overlay_scale` (h/w = H/W x the factor, rounded down, at least
    1 px); unscaled (the same arrays) when already within the budget."""
    h, w = image.shape[:2]
    s = overlay_scale(w, h)
    if s >= 1.0:
        return PreviewSource(image, alpha, 1.0, 1.0)
    size = (max(1, int(w * s)), max(1, int(h * s)))  # (floor: within the budget)
    return PreviewSource(shrink(image, size), shrink(alpha, size), size[0] / w, size[1] / h)


def render_preview(image: np.ndarray | PreviewSource, mo) -> np.ndarray:
    """The overlay for ``image`` (H x W x 3 uint8 sRGB, or its :class:`PreviewSource`) and a
    masking outcome (:class:`core.masking.auto.MaskOutcome`), scaled to at most
    :data:`OVERLAY_MAX_PIXELS`: the photo and alpha with :func:`shrink`, the boxes by the same
    factor.

    Returns h x w x 3 uint8 RGB, h/w = H/W x :func:`overlay_scale` rounded down (at least 1 px).
    """
    from core import overlay  # at call time: the bench times ``overlay.render_overlay``

    src = image if isinstance(image, PreviewSource) else preview_source(image, mo.alpha)
    sx, sy = src.sx, src.sy

    def scaled(box):
        x0, y0, x1, y1 = box
        return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)

    return overlay.render_overlay(src.image, src.alpha,
                                  [(d.label, d.score, scaled(d.box)) for d in mo.detections],
                                  [(f.score, scaled(f.box)) for f in mo.faces],
                                  [(hd.score, scaled(hd.box)) for hd in mo.hands])


def job_outputs(photo: Photo, image: np.ndarray | PreviewSource, mo, results: list[np.ndarray],
                fmt: str, quality: int,
                encode: Callable[..., bytes] = encode_image) -> dict[str, Encoder]:
    """Artefact name (``image``, ``image.1``, ..., ``mask``, ``overlay``) -> its encoder.

    Args:
        photo: the decoded photo (its ICC profile and alpha go on every result image).
        image: H x W x 3 uint8 sRGB, what the models saw (the overlay's background), or its
            :class:`PreviewSource` made before the photo was repainted.
        mo: the masking outcome (binary mask, alpha, detections, faces, hands).
        results: the repainted images, in the photo's space, each the shape and dtype of
            :meth:`Photo.paint_target`'s array (none for a mask job).
        fmt: ``png``, ``jpeg`` or ``webp`` (:meth:`Photo.output_format`).
        quality: JPEG/WebP quality, 1-100.
        encode: the encoder, :func:`core.imageio.encode_image` (the caller passes its own name
            for it, so a profiler wrapping ``core.pipeline.encode_image`` sees every encode).
    """
    w, h = photo.size
    outputs: dict[str, Encoder] = {}

    def result_file(img: np.ndarray) -> Encoder:
        # PNG and WebP keep the photo's alpha channel unchanged, inside the mask too (the
        # silhouette stays; the repaint changes colour only); JPEG is flattened over white. A
        # PNG keeps a 16-bit or greyscale photo's depth and mode (Photo.result_pixels).
        def make() -> Encoded:
            pixels, alpha = photo.result_pixels(img, fmt)
            return Encoded(encode(pixels, fmt, quality, icc=photo.colour.icc, alpha=alpha),
                           f"result.{'jpg' if fmt == 'jpeg' else fmt}", CONTENT_TYPES[fmt], w, h)

        return make

    for i, result_img in enumerate(results):  # a gallery: "image", "image.1", ...
        outputs["image" if i == 0 else f"image.{i}"] = result_file(result_img)
    outputs["mask"] = lambda: Encoded(encode(np.multiply(mo.binary, 255, dtype=np.uint8), "png"),
                                      "mask.png", CONTENT_TYPES["png"], w, h)

    def overlay() -> Encoded:
        img = render_preview(image, mo)
        return Encoded(encode(img, "jpeg", OVERLAY_JPEG_QUALITY), "overlay.jpg",
                       CONTENT_TYPES["jpeg"], img.shape[1], img.shape[0])

    outputs["overlay"] = overlay
    return outputs


def store(storage: Storage, job_id: str, outputs: dict[str, Encoder], expires_s: int,
          inline: bool) -> tuple[dict[str, Artifact], float]:
    """Encode and upload every artefact, one thread each (encoders release the GIL; boto3
    clients are thread-safe): an artefact uploads as soon as its own encode is done.

    Returns the artifacts by name and the ``time.perf_counter()`` at which the last encode ended.

    Raises:
        JobError(storage_conflict | storage_error): from :meth:`Storage.put`.
    """
    encoded: list[float] = []

    def put(item: tuple[str, Encoder]) -> tuple[str, Artifact]:
        name, make = item
        enc = make()
        encoded.append(time.perf_counter())
        # content-addressed names: another attempt's different bytes never overwrite these
        key = storage.key_for(job_id, artefact_name(enc.filename, enc.data))
        st = storage.put(key, enc.data, enc.content_type, expires_s)
        return name, Artifact(key=st.key, url=st.url, content_type=enc.content_type,
                              width=enc.width, height=enc.height, bytes=st.bytes,
                              sha256=st.sha256,
                              base64=base64.b64encode(enc.data).decode() if inline else None)

    with ThreadPoolExecutor(max_workers=len(outputs)) as ex:
        artifacts = dict(ex.map(put, outputs.items()))
    return artifacts, max(encoded)
