"""Face boxes with MediaPipe's BlazeFace full-range detector (``face_detection_full_range_sparse``).

Model: ``<weights_dir>/mediapipe/face_detection_full_range_sparse.tflite`` from the
``mediapipe==0.10.21`` wheel (Apache-2.0), run with ai-edge-litert (see :mod:`.runtime`).
Settings follow MediaPipe's ``face_detection_full_range.pbtxt`` graph (192 px input, RGB in
[-1, 1], one stride-4 anchor per cell, weighted NMS at IoU 0.3) except two, measured on 14
hand-annotated faces (notes §4): the score threshold is 0.5 instead of 0.6 (13/14 vs 10/14
found, no false positive either way), and the image is also run as 2 x 2 tiles with 25 %
overlap (small faces in group photos shrink below what 192 px can see; 13/14 vs 12/14).

Arrays: image H x W x 3 uint8 RGB; boxes ``(x0, y0, x1, y1)`` float px of the original image,
clipped; 6 keypoints ``(x, y)`` px: right eye, left eye, nose tip, mouth, right ear tragion,
left ear tragion (the person's right/left).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.masking.detectors import BoxDetection, check_rgb, clip_box
from core.masking.mediapipe.runtime import Model, detect_tiled, load_interpreter, ssd_anchors

#: SsdAnchorsCalculator options of the full-range model: one layer, stride 4, no
#: interpolated-scale anchor (``interpolated_scale_aspect_ratio: 0.0``).
STRIDES, INTERPOLATED = [4], False
NUM_KEYPOINTS = 6
VALUE_RANGE = (-1.0, 1.0)
#: Weighted-NMS ``min_suppression_threshold`` of the MediaPipe graph.
NMS_IOU = 0.3


class BlazeFaceDetector:
    """``detect(image) -> list[BoxDetection]`` with BlazeFace full-range (+ tiles).

    Build with :meth:`load`; one per container (the interpreter is not thread-safe: use one
    detector per thread).
    """

    name = "blazeface"

    def __init__(self, model: Model, *, score_threshold: float = 0.5, tiles: bool = True,
                 identity: dict | None = None) -> None:
        self.model = model
        self.anchors = ssd_anchors(model.size, STRIDES, INTERPOLATED)
        self.score_threshold = score_threshold
        self.tiles = tiles
        self.identity = identity or {"key": "mediapipe-face-full-range",
                                     "source": "mediapipe==0.10.21",
                                     "revision": Path(model.path).name, "dev": False}

    @classmethod
    def load(cls, path: Path | str, *, score_threshold: float = 0.5, tiles: bool = True,
             num_threads: int | None = None, identity: dict | None = None
             ) -> BlazeFaceDetector:
        """Load ``face_detection_full_range_sparse.tflite``.

        Args:
            path: the ``.tflite`` file.
            score_threshold: minimum face score, 0-1 (0.5; MediaPipe's graph uses 0.6).
            tiles: also run 2 x 2 overlapping tiles (5 model runs instead of 1, ~4x the time).
            num_threads: interpreter threads; None -> min(cpu count, 4).
            identity: ``{key, source, revision, dev}`` reported in the result's ``models``.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the model's input or output shape is not the full-range detector's.
        """
        det = cls(load_interpreter(path, num_threads), score_threshold=score_threshold,
                  tiles=tiles, identity=identity)
        det.detect(np.zeros((det.model.size, det.model.size, 3), np.uint8))  # checks shapes
        return det

    def detect(self, image: np.ndarray) -> list[BoxDetection]:
        """Detect faces.

        Args:
            image: H x W x 3 uint8 RGB, any size (it is shrunk to the model's scale first).

        Returns:
            Faces by descending score, boxes in px clipped to the image (faces cut by the
            border are kept), ``detectors=["blazeface"]``, 6 keypoints px.

        Raises:
            ValueError: ``image`` is not H x W x 3 uint8.
        """
        check_rgb(image)
        h, w = image.shape[:2]
        boxes, scores, kps = detect_tiled(self.model, image, self.anchors, NUM_KEYPOINTS,
                                          VALUE_RANGE, self.score_threshold, self.tiles,
                                          NMS_IOU)
        out = []
        for box, score, points in zip(boxes, scores, kps):
            clipped = clip_box(tuple(box), w, h)
            if clipped is not None:
                out.append(BoxDetection(box=clipped, score=float(score), detectors=[self.name],
                                        keypoints=[(float(x), float(y)) for x, y in points]))
        return out
