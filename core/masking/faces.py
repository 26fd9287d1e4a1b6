"""Face boxes with InsightFace's SCRFD detector (``insightface.app.FaceAnalysis``, 2.1 API).

The production model is ``det_10g.onnx`` of the ``buffalo_l`` pack (manifest key
``faces-scrfd``) at ``<weights_dir>/insightface/models/buffalo_l/det_10g.onnx``;
``weights.tiny.faces.write_tiny_scrfd`` writes a stand-in graph of the same signature.
Faces are only used to *protect* pixels, so only the detection module is loaded.

Arrays: images are H x W x 3 uint8 RGB (converted to InsightFace's BGR here); boxes
``(x0, y0, x1, y1)`` float px of the original image. Implements
:class:`core.masking.detectors.FaceDetector` (name ``"scrfd"``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from core import timing
from core.masking.detectors import BoxDetection, check_rgb, clip_box
from weights.resolve import ModelMissing, set_offline_env

set_offline_env()

import onnxruntime  # noqa: E402
from insightface.app import FaceAnalysis  # noqa: E402

log = logging.getLogger("maskpaint.faces")

DetSize = tuple[int, int] | Sequence[tuple[int, int]] | None


def _device_index(device: str) -> int | None:
    """``"cuda"`` / ``"cuda:N"`` -> N (0 by default); anything else -> None (CPU)."""
    if not device.startswith("cuda"):
        return None
    _, _, idx = device.partition(":")
    return int(idx) if idx else 0


class ScrfdFaceDetector:
    """A loaded SCRFD face detector. Build with :meth:`load`; one per container."""

    name = "scrfd"

    def __init__(self, app: FaceAnalysis, device: str, identity: dict | None = None) -> None:
        self.app = app
        self.device = device
        self.identity = identity or {"key": "faces-scrfd", "source": "insightface",
                                     "revision": "unknown", "dev": False}

    @classmethod
    def load(
        cls,
        root: Path | str,
        pack: str,
        device: str = "cpu",
        det_size: DetSize = (640, 640),
        det_thresh: float = 0.5,
        *,
        key: str = "faces-scrfd",
    ) -> ScrfdFaceDetector:
        """Load the detection model of an InsightFace pack through ``FaceAnalysis``.

        Layout: ``<root>/models/<pack>/*.onnx`` (``root`` = ``<weights_dir>/insightface``).
        The pack directory is checked first and handed to ``FaceAnalysis`` as an absolute path:
        given a bare pack name, InsightFace 2.1 first tries ``<cwd>/<pack>`` and downloads a
        zip when ``<root>/models/<pack>`` is missing - neither is wanted in a worker.

        Args:
            root: the InsightFace root (``<weights_dir>/insightface``).
            pack: the model pack name (manifest ``pack``, e.g. ``"buffalo_l"``).
            device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (ONNX Runtime's CUDA provider, CPU
                as fallback; a warning is logged if this onnxruntime build has no CUDA).
            det_size: detector input ``(width, height)`` px, a list of them (each image is run
                at every size, boxes merged by NMS), or None for InsightFace 2.1's own default
                ``[(128, 128), (640, 640)]``. Default (640, 640): the size SCRFD was trained and
                benchmarked at (InsightFace 0.7's default), one pass per image.
            det_thresh: minimum face score, 0-1 (InsightFace's default 0.5).
            key: manifest key, only used in the :class:`ModelMissing` message.

        Raises:
            ModelMissing: ``<root>/models/<pack>`` has no ``.onnx`` file.
            ValueError: InsightFace found no detection model among the pack's files.
        """
        model_dir = Path(root) / "models" / pack
        if not model_dir.is_dir() or not any(model_dir.glob("*.onnx")):
            raise ModelMissing(key, model_dir)
        idx = _device_index(device)
        if idx is None:
            providers: list = ["CPUExecutionProvider"]
        else:
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                log.warning("onnxruntime has no CUDAExecutionProvider; faces run on CPU")
            providers = [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
        if det_size is None:
            sizes = None
        elif isinstance(det_size[0], (int, np.integer)):
            sizes = (int(det_size[0]), int(det_size[1]))
        else:
            sizes = [(int(s[0]), int(s[1])) for s in det_size]
        try:
            app = FaceAnalysis(name=str(model_dir.resolve()), root=str(root),
                               allowed_modules=["detection"], providers=providers)
        except (AssertionError, KeyError) as exc:  # FaceAnalysis asserts a detection model
            raise ValueError(f"{model_dir}: no SCRFD detection model among its .onnx files") \
                from exc
        app.prepare(ctx_id=-1 if idx is None else idx, det_thresh=det_thresh, det_size=sizes)
        det = cls(app, device)
        # insightface 2.1 opens an onnxruntime session per input resolution on first use:
        # open it now, at cold start, instead of inside the first job
        det.detect(np.zeros((64, 64, 3), np.uint8))
        return det

    def detect(self, image: np.ndarray) -> list[BoxDetection]:
        """Detect faces.

        Args:
            image: H x W x 3 uint8 RGB.

        Returns:
            Faces sorted by descending score, boxes in original-image px clipped to the image
            (faces cut by the border are kept); empty when none reaches ``det_thresh``.

        Raises:
            ValueError: ``image`` is not H x W x 3 uint8.
        """
        check_rgb(image)
        h, w = image.shape[:2]
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        out = []
        with timing.forward():
            faces = self.app.get(bgr)
        for face in faces:
            box = clip_box(face.bbox[:4], w, h)
            if box is not None:
                out.append(BoxDetection(box=box, score=float(face.det_score),
                                        detectors=[self.name]))
        out.sort(key=lambda f: -f.score)
        return out
