"""NudeNet v3's ``320n`` detector (a YOLOv8n exported to ONNX) run with onnxruntime.

The weights are ``nudenet/320n.onnx`` from the pinned ``nudenet==3.4.2`` wheel (manifest key
``moderation-nudenet``); the ``nudenet`` package itself is never imported (it pulls its own
onnxruntime pin and reads files by path). Pre- and post-processing follow the wheel's
``nudenet/nudenet.py`` (``_read_image``, ``_postprocess``):

- the image is padded at the bottom and right with black to a square of its long side, resized
  to 320 x 320 (``cv2.dnn.blobFromImage``, bilinear), scaled to [0, 1], NCHW float32, **RGB**.
  On channel order we differ from the wheel on purpose: ``_read_image`` converts a
  ``cv2.imread`` (BGR) image with ``COLOR_RGBA2BGR`` (which on three channels swaps R and B)
  and then ``blobFromImage(swapRB=True)`` swaps them back, so it feeds the model BGR; but the
  model is an Ultralytics YOLOv8 export (its ONNX metadata), trained and exported on RGB, and
  measured here it finds faces with higher confidence in RGB (astronaut 0.81 vs 0.72,
  grace_hopper 0.76 vs 0.61, t1 0.74 vs 0.74), so RGB is the order it learnt;
- the output ``1 x 22 x N`` holds per candidate ``cx, cy, w, h`` (input px) and 18 class scores
  in the order of :data:`LABELS` (the same order as the ONNX file's own ``names`` metadata);
  candidates under :data:`MIN_SCORE` are dropped and the rest go through OpenCV NMS
  (score 0.25, IoU 0.45), as there.

Images: H x W x 3 uint8 RGB; boxes ``(x0, y0, x1, y1)`` float px of the given image.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from core import timing
from core.moderation.base import Label, check_rgb, onnx_session

#: Class order of the model's output (``nudenet/nudenet.py`` ``__labels``, and the ONNX
#: metadata ``names``).
LABELS = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED",
    "BELLY_COVERED", "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE",
    "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
#: The labels that can block (category ``nudity``). Covered parts, faces, feet, belly, armpits
#: and a bare male chest never block: swimwear and crop tops are ordinary outfit swaps.
BLOCKING = frozenset({"FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED",
                      "FEMALE_BREAST_EXPOSED", "BUTTOCKS_EXPOSED", "ANUS_EXPOSED"})
CATEGORY = "nudity"
INPUT_SIZE = 320  #: px, the model's square input (ONNX metadata ``imgsz``)
#: Candidate score floor and the NMS score / IoU thresholds of ``nudenet.py``'s ``_postprocess``.
MIN_SCORE = 0.2
NMS_SCORE = 0.25
NMS_IOU = 0.45


class NudeNetDetector:
    """A loaded 320n detector. Build with :meth:`load`; implements
    :class:`core.moderation.base.ImageClassifier` (name ``nudenet``)."""

    name = "nudenet"
    threshold_setting = "nudenet_threshold"

    def __init__(self, session, identity: dict | None = None) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.identity = identity or {"key": "moderation-nudenet", "source": "nudenet",
                                     "revision": "unknown", "dev": False}

    @classmethod
    def load(cls, path: Path | str, device: str = "cpu") -> NudeNetDetector:
        """Open ``320n.onnx`` and run it once on a blank image (so the first job does not pay
        for the session's lazy initialisation).

        Raises:
            weights.resolve.ModelMissing: no file at ``path``.
            ValueError: the file is not an 18-class detector (wrong output shape).
        """
        det = cls(onnx_session(path, device))
        try:
            out = det._forward(np.zeros((32, 32, 3), np.uint8))
        except Exception as exc:  # onnxruntime's own errors: wrong input rank, type, ...
            raise ValueError(f"{path}: not a NudeNet v3 detector ({type(exc).__name__})") \
                from None
        if out.ndim != 3 or out.shape[1] != 4 + len(LABELS):
            raise ValueError(f"{path}: output has {out.shape[1]} rows, expected "
                             f"{4 + len(LABELS)} (a NudeNet v3 detector)")
        return det

    def _forward(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        side = max(h, w)
        padded = cv2.copyMakeBorder(image, 0, side - h, 0, side - w,
                                    cv2.BORDER_CONSTANT, value=(0, 0, 0))
        blob = cv2.dnn.blobFromImage(padded, 1 / 255.0, (INPUT_SIZE, INPUT_SIZE), (0, 0, 0),
                                     swapRB=False, crop=False)
        with timing.forward():
            return self.session.run(None, {self.input_name: blob})[0]

    def classify(self, image: np.ndarray) -> list[Label]:
        """Detect body parts and faces.

        Args:
            image: H x W x 3 uint8 RGB.

        Returns:
            The detections after NMS, highest score first (boxes in px of ``image``), then,
            for every :data:`BLOCKING` label not among them, its highest score over all
            candidates (below :data:`MIN_SCORE`, or suppressed by NMS), without a box.

        Raises:
            ValueError: ``image`` is not H x W x 3 uint8.
        """
        check_rgb(image)
        h, w = image.shape[:2]
        rows = np.asarray(self._forward(image))[0].T  # N x 22
        scores = rows[:, 4:]
        raw_max = scores.max(axis=0) if len(rows) else np.zeros(len(LABELS))
        cls_ids = scores.argmax(axis=1)
        best = scores[np.arange(len(rows)), cls_ids]
        keep = best >= MIN_SCORE
        rows, cls_ids, best = rows[keep], cls_ids[keep], best[keep]
        scale = max(h, w) / INPUT_SIZE
        boxes = []
        for cx, cy, bw, bh in rows[:, :4] * scale:
            x0, y0 = max(0.0, min(cx - bw / 2, w)), max(0.0, min(cy - bh / 2, h))
            boxes.append([float(x0), float(y0), float(min(bw, w - x0)), float(min(bh, h - y0))])
        idx = cv2.dnn.NMSBoxes(boxes, best.astype(float).tolist(), NMS_SCORE, NMS_IOU)
        found: list[Label] = []
        for i in np.asarray(idx, dtype=int).reshape(-1):
            name = LABELS[int(cls_ids[i])]
            x, y, bw, bh = boxes[i]
            found.append(Label(name, round(float(best[i]), 4),
                               CATEGORY if name in BLOCKING else None, (x, y, x + bw, y + bh)))
        found.sort(key=lambda d: -d.score)
        seen = {d.label for d in found}
        return found + [Label(n, round(float(raw_max[LABELS.index(n)]), 4), CATEGORY)
                        for n in sorted(BLOCKING - seen)]
