"""Shared runtime for MediaPipe's legacy ``.tflite`` models: interpreter, anchors, letterbox,
SSD decoding and weighted NMS.

Why hand-written: the ``mediapipe`` wheel that ships these models (0.10.21) needs numpy<2 and an
old protobuf, and the 1.x line ships no model files, so only the models are taken from it and
run with Google's own TFLite runtime (``ai-edge-litert``). The graph code around the models
(C++ calculators) is not available from Python; this module re-implements the few calculators
the detectors need, following their sources in ``google-ai-edge/mediapipe``:
``ImageToTensorCalculator`` with ``keep_aspect_ratio: true`` (a centred letterbox, zero pad)
here; anchors, SSD decoding and weighted NMS in :mod:`.ssd` (re-exported here); plus the
whole-image + 2 x 2 tiles driver the notes (§4) call for.

Conventions: images H x W x 3 uint8 RGB; model inputs 1 x S x S x 3 float32; decoded boxes
``(x0, y0, x1, y1)`` and keypoints ``(x, y)`` normalised to the model input ([0, 1] of S px).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from core import timing
from core.masking.mediapipe.ssd import decode_ssd, iou, sigmoid, ssd_anchors, weighted_nms

__all__ = ["Letterbox", "Model", "decode_ssd", "default_threads", "detect_tiled", "iou",
           "letterbox", "load_interpreter", "shrink", "sigmoid", "ssd_anchors", "tiles",
           "weighted_nms"]

log = logging.getLogger("maskpaint.litert")

#: Default interpreter threads: all cores, at most 4 (these models are small; more threads
#: mostly add synchronisation cost).
MAX_DEFAULT_THREADS = 4


def default_threads() -> int:
    """``os.cpu_count()`` capped at :data:`MAX_DEFAULT_THREADS` (at least 1)."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_THREADS))


@dataclass
class Model:
    """A loaded TFLite model with its input size and output tensor indices.

    Attributes:
        interpreter: the ``ai_edge_litert`` interpreter (tensors allocated).
        size: input side S px (the inputs here are square, 1 x S x S x 3 float32).
        input_index: the input tensor index.
        outputs: output tensor indices, in the model's output order.
        path: the file it was loaded from.
    """

    interpreter: Interpreter
    size: int
    input_index: int
    outputs: list[int]
    path: str

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Run on one 1 x S x S x 3 float32 input; copies of all outputs, batch dim dropped."""
        self.interpreter.set_tensor(self.input_index, tensor)
        with timing.forward():
            self.interpreter.invoke()
        return [self.interpreter.get_tensor(i)[0].copy() for i in self.outputs]


@contextlib.contextmanager
def _native_stderr_to_log() -> Iterator[None]:
    """Route what native code writes to file descriptor 2 meanwhile into our log (DEBUG).

    Why hand-written: the TFLite runtime prints C++ ``INFO:`` lines (e.g. "Created TensorFlow
    Lite XNNPACK delegate for CPU.") straight to fd 2 when an interpreter is built, past Python
    logging and our JSON log format, and ``ai-edge-litert`` exposes no log-level knob. Used only
    around interpreter creation at cold start (single-threaded).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    log.debug("litert: %s", line.strip())


def load_interpreter(path: Path | str, num_threads: int | None = None) -> Model:
    """Load a ``.tflite`` file with ``ai_edge_litert`` and allocate its tensors.

    Args:
        path: the model file.
        num_threads: interpreter (XNNPACK) threads; None -> :func:`default_threads`.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the model's input is not 1 x S x S x 3.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MediaPipe model missing: {path}")
    with _native_stderr_to_log():
        interpreter = Interpreter(model_path=str(path),
                                  num_threads=num_threads or default_threads())
        interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    shape = [int(v) for v in inp["shape"]]
    if len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2] or shape[3] != 3:
        raise ValueError(f"{path.name}: expected a 1 x S x S x 3 input, got {shape}")
    outputs = [int(d["index"]) for d in interpreter.get_output_details()]
    return Model(interpreter, shape[1], int(inp["index"]), outputs, str(path))


@dataclass
class Letterbox:
    """Where an image region went in a square model input, to map results back.

    A point ``(u, v)`` normalised to the input maps to original-image px as
    ``x = origin_x + (u * size - pad_x) / scale`` (likewise y).
    """

    size: int
    scale: float
    pad_x: float
    pad_y: float
    origin_x: float = 0.0
    origin_y: float = 0.0

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """... x 2 normalised ``(u, v)`` -> ... x 2 float px of the original image."""
        pad, origin = np.array([self.pad_x, self.pad_y]), np.array([self.origin_x, self.origin_y])
        return origin + (np.asarray(points, np.float64) * self.size - pad) / self.scale

    def to_input(self, points: np.ndarray) -> np.ndarray:
        """... x 2 float px of the original image -> normalised ``(u, v)`` (inverse of above)."""
        pad, origin = np.array([self.pad_x, self.pad_y]), np.array([self.origin_x, self.origin_y])
        return ((np.asarray(points, np.float64) - origin) * self.scale + pad) / self.size


def letterbox(image: np.ndarray, size: int, value_range: tuple[float, float] = (-1.0, 1.0),
              origin: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, Letterbox]:
    """Fit ``image`` into a centred ``size`` x ``size`` square, aspect kept, black padding.

    As ``ImageToTensorCalculator`` with ``keep_aspect_ratio: true`` and zero border: the pad is
    black, i.e. the low end of ``value_range`` after normalisation.

    Args:
        image: H x W x 3 uint8 RGB.
        size: the model's input side S px.
        value_range: output range of pixel values: (-1, 1) for face and pose detection,
            (0, 1) for palm detection, pose landmarks and selfie segmentation.
        origin: px offset of ``image`` inside the original image (for tiles), kept in the
            returned :class:`Letterbox`.

    Returns:
        (1 x S x S x 3 float32 tensor, the :class:`Letterbox` to map results back).
    """
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    canvas = np.zeros((size, size, 3), np.uint8)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas[py:py + nh, px:px + nw] = resized
    lo, hi = value_range
    tensor = canvas.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)
    # the exact scale per axis differs by rounding; use the mean so round trips stay within
    # a fraction of a px (the x and y scales differ by < 1 / min side)
    sx, sy = nw / w, nh / h
    return tensor[None], Letterbox(size, (sx + sy) / 2, float(px), float(py),
                                   float(origin[0]), float(origin[1]))


def tiles(width: int, height: int, overlap: float = 0.25) -> list[tuple[int, int, int, int]]:
    """The whole image plus a 2 x 2 grid of overlapping tiles, as ``(x0, y0, x1, y1)`` px.

    Each tile spans ``1 / (2 - overlap)`` of the side, so neighbours share ``overlap`` of a
    tile (25 % by default): small faces/hands, lost when the whole image shrinks to the
    model's 192 px, get about 1.75x the resolution in a tile (notes §4).
    """
    tw, th = round(width / (2 - overlap)), round(height / (2 - overlap))
    out = [(0, 0, width, height)]
    for y0 in (0, height - th):
        for x0 in (0, width - tw):
            out.append((x0, y0, x0 + tw, y0 + th))
    return out


def shrink(image: np.ndarray, long_side: int) -> np.ndarray:
    """``image`` (H x W x C uint8) scaled down to ``long_side`` px, aspect kept; as is if smaller.

    Area averaging (``INTER_AREA``), but a photo more than 3x too large is first brought to 3x
    the target with bilinear sampling: ``INTER_AREA`` straight from 12 MP costs ~85 ms here,
    the two steps ~3 ms, and each output pixel still averages 9 samples.
    """
    h, w = image.shape[:2]
    s = long_side / max(h, w)
    if s >= 1:
        return image
    size = (max(1, round(w * s)), max(1, round(h * s)))
    if s < 1 / 3:
        image = cv2.resize(image, (size[0] * 3, size[1] * 3), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def detect_tiled(model: Model, image: np.ndarray, anchors: np.ndarray, num_keypoints: int,
                 value_range: tuple[float, float], min_score: float, use_tiles: bool = True,
                 min_iou: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run an SSD detector on the whole image (and tiles), merge with weighted NMS.

    The image is first shrunk (:func:`shrink`) so that a tile is no larger than the model
    input: more pixels would be thrown away by the letterbox anyway, and this keeps the cost
    at 12 MP close to the cost at 0.5 MP.

    Args:
        model, anchors, num_keypoints: the detector and its decoding.
        image: H x W x 3 uint8 RGB.
        value_range: the model's input range (see :func:`letterbox`).
        min_score: score threshold (0-1).
        use_tiles: False -> the whole image only.
        min_iou: the weighted-NMS overlap threshold.

    Returns:
        (M x 4 boxes, M scores, M x K x 2 keypoints) in original-image px (not clipped).
    """
    small = shrink(image, round(model.size * ((2 - 0.25) if use_tiles else 1.0)))
    sh, sw = small.shape[:2]
    scale = np.array([sw / image.shape[1], sh / image.shape[0]])
    all_b, all_s, all_k = [], [], []
    regions = tiles(sw, sh) if use_tiles else [(0, 0, sw, sh)]
    for x0, y0, x1, y1 in regions:
        tensor, lb = letterbox(small[y0:y1, x0:x1], model.size, value_range, (x0, y0))
        raw_boxes, raw_scores = sorted(model.run(tensor)[:2], key=lambda a: -a.shape[-1])
        b, s, k = decode_ssd(raw_boxes, raw_scores, anchors, model.size, num_keypoints,
                             min_score)
        all_b.append((lb.to_image(b.reshape(-1, 2, 2)) / scale).reshape(-1, 4))
        all_k.append(lb.to_image(k) / scale)
        all_s.append(s)
    return weighted_nms(np.concatenate(all_b), np.concatenate(all_s), np.concatenate(all_k),
                        min_iou)
