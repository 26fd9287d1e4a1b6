"""Hand boxes: MediaPipe palm detection, each palm verified by MediaPipe's hand-landmark model.

Models (``mediapipe==0.10.21`` wheel, Apache-2.0, run with ai-edge-litert), in
``<weights_dir>/mediapipe/hands/``: ``palm_detection_full.tflite`` and
``palm_detection_lite.tflite`` (192 px SSDs, RGB in [0, 1], 7 keypoints) and
``hand_landmark_full.tflite`` (224 px, [0, 1]; outputs 21 landmarks and a hand-presence
probability). Both palm models run and their palms are pooled: on the annotated hands of the
five test photos the full model finds 6 of 13, the lite one 8 of 13 (a superset here), neither
with a false hand after verification (``python -m bench.guard``); the pool never finds fewer than
either, at ~11 ms per extra palm run.

The pipeline is MediaPipe's ``hand_landmark_tracking_cpu`` graph for one frame: palms (whole
image + 2 x 2 tiles, weighted NMS), then per palm the hand ROI of
``palm_detection_detection_to_roi.pbtxt`` (rotation from the wrist, keypoint 0, to the middle
finger's MCP, keypoint 2, pointing up; ``scale 2.6``, ``shift_y -0.5``, ``square_long``), the
rotated crop through the landmark model, and MediaPipe's hand-presence threshold 0.5.

Why the landmark model rather than "inside a person" evidence: palm detection also fires on
necks, chins, zips, glasses and blur. Measured on the five test photos (bus, zidane,
grace_hopper, astronaut, insightface t1) at palm score >= 0.5: 14 palms, 6 real hands, 8 false.
Hand presence: real hands 0.87-1.00, false palms 0.000-0.30 (all 14 right at 0.5).
Selfie segmentation (person probability, mean over the palm box): 1.00 for 6 of the 8 false
palms (table glass and nut bowl in t1 included) - it rejects only 2. The pose detector's person
circles (multi-person, with tiles) contain 13 of 14 palms. So neither "inside a person" signal
separates hands from look-alikes on a person; the presence score does, and a real hand is a
person's. A palm box mostly (>= 50 %) inside a given face box is dropped before the landmark
run. The reported box is the bounds of the 21 landmarks grown by :data:`HAND_MARGIN` (much
tighter than the 2.6x ROI, which would carve a 2-3x larger hole in a garment mask).

Arrays: image H x W x 3 uint8 RGB; boxes ``(x0, y0, x1, y1)`` float px, clipped; keypoints
``(x, y)`` px: the palm detector's 7 (wrist, then index/middle/ring/pinky MCPs, thumb CMC/MCP).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from core.masking.detectors import Box, BoxDetection, check_rgb, clip_box
from core.masking.mediapipe.runtime import (
    Model, detect_tiled, iou, load_interpreter, ssd_anchors,
)

#: SsdAnchorsCalculator options of palm_detection_full (192 px, 2 anchors per layer).
STRIDES, NUM_KEYPOINTS = [8, 16, 16, 16], 7
#: ``palm_detection_detection_to_roi.pbtxt``: rotation keypoints, scale and shift of the ROI.
WRIST, MIDDLE_MCP, ROI_SCALE, ROI_SHIFT_Y = 0, 2, 2.6, -0.5
#: MediaPipe's hand-presence threshold (``hand_landmark_cpu.pbtxt``, ThresholdingCalculator).
PRESENCE_THRESHOLD = 0.5
#: Fraction of the landmark box's size added on each side (the landmarks are joint centres).
HAND_MARGIN = 0.15
#: A palm box whose area lies at least this much inside a face box is dropped.
FACE_OVERLAP = 0.5
#: Palms from different palm models with at least this IoU are one palm (verified once).
SAME_PALM_IOU = 0.5


def hand_roi(palm: np.ndarray, keypoints: np.ndarray) -> tuple[float, float, float, float]:
    """MediaPipe's hand ROI from a palm: ``(centre_x, centre_y, side, rotation)`` px / radians.

    Args:
        palm: ``x0, y0, x1, y1`` px; keypoints: 7 x 2 px.

    Rotation is 90 deg minus the angle of wrist -> middle MCP (0 when the fingers point up,
    positive clockwise on screen); the square's side is 2.6 x the palm's long side, its centre
    shifted half a palm height towards the fingers.
    """
    w, h = palm[2] - palm[0], palm[3] - palm[1]
    (x0, y0), (x1, y1) = keypoints[WRIST], keypoints[MIDDLE_MCP]
    rotation = np.pi / 2 - np.arctan2(-(y1 - y0), x1 - x0)
    cx = (palm[0] + palm[2]) / 2 - h * ROI_SHIFT_Y * np.sin(rotation)
    cy = (palm[1] + palm[3]) / 2 + h * ROI_SHIFT_Y * np.cos(rotation)
    return float(cx), float(cy), float(max(w, h) * ROI_SCALE), float(rotation)


def roi_affine(cx: float, cy: float, side: float, rotation: float, size: int) -> np.ndarray:
    """2 x 3 affine from ``size`` x ``size`` crop px to image px for a rotated square ROI."""
    c, s, k = np.cos(rotation), np.sin(rotation), side / size
    m = np.array([[c * k, -s * k, 0.0], [s * k, c * k, 0.0]])
    m[:, 2] = np.array([cx, cy]) - m[:, :2] @ np.array([size / 2, size / 2])
    return m


def inside_fraction(box: np.ndarray | Box, other: Box) -> float:
    """Fraction of ``box``'s area that lies inside ``other`` (both ``x0, y0, x1, y1``)."""
    ix = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
    iy = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
    return float(ix * iy / area)


class PalmDetector:
    """``detect(image, faces) -> list[BoxDetection]`` of verified hands.

    Build with :meth:`load`; one per container (one per thread: interpreters are not
    thread-safe).
    """

    name = "palm"

    def __init__(self, palms: Sequence[Model], landmark: Model, *, score_threshold: float = 0.5,
                 presence_threshold: float = PRESENCE_THRESHOLD, tiles: bool = True,
                 identity: dict | None = None) -> None:
        self.palms, self.landmark = list(palms), landmark
        self.anchors = [ssd_anchors(m.size, STRIDES) for m in self.palms]
        self.score_threshold, self.presence_threshold = score_threshold, presence_threshold
        self.tiles = tiles
        self.identity = identity or {"key": "mediapipe-hands", "source": "mediapipe==0.10.21",
                                     "revision": "+".join(Path(m.path).name for m in
                                                          [*self.palms, landmark]),
                                     "dev": False}

    @classmethod
    def load(cls, path: Path | str | Sequence[Path | str], landmark_path: Path | str, *,
             score_threshold: float = 0.5, presence_threshold: float = PRESENCE_THRESHOLD,
             tiles: bool = True, num_threads: int | None = None,
             identity: dict | None = None) -> PalmDetector:
        """Load the palm detector(s) and ``hand_landmark_full.tflite``.

        Args:
            path: a palm detector file, or several whose palms are pooled;
            landmark_path: the hand-landmark file.
            score_threshold: minimum palm score, 0-1 (MediaPipe's 0.5).
            presence_threshold: minimum hand presence, 0-1 (MediaPipe's 0.5).
            tiles: also run the palm detector on 2 x 2 overlapping tiles.
            num_threads: interpreter threads; None -> min(cpu count, 4).
            identity: ``{key, source, revision, dev}`` reported in the result's ``models``.

        Raises:
            FileNotFoundError: a file is missing.
            ValueError: a model's input or output shape is not the expected one.
        """
        landmark = load_interpreter(landmark_path, num_threads)
        shapes = [tuple(d["shape"]) for d in landmark.interpreter.get_output_details()]
        if len(shapes) < 2 or shapes[0] != (1, 63) or shapes[1] != (1, 1):
            raise ValueError(f"{Path(landmark_path).name}: not a hand-landmark model ({shapes})")
        paths = [path] if isinstance(path, (str, Path)) else list(path)
        det = cls([load_interpreter(p, num_threads) for p in paths], landmark,
                  score_threshold=score_threshold, presence_threshold=presence_threshold,
                  tiles=tiles, identity=identity)
        size = det.palms[0].size
        det.detect(np.zeros((size, size, 3), np.uint8))  # checks anchors
        return det

    def _verify(self, image: np.ndarray, palm: np.ndarray, keypoints: np.ndarray
                ) -> tuple[float, np.ndarray]:
        """Hand presence (0-1) and 21 x 2 landmark px for one palm."""
        size = self.landmark.size
        m = roi_affine(*hand_roi(palm, keypoints), size)
        crop = cv2.warpAffine(image, m, (size, size), flags=cv2.WARP_INVERSE_MAP |
                              cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        landmarks, presence = self.landmark.run(crop[None].astype(np.float32) / 255.0)[:2]
        uv = landmarks.reshape(21, 3)[:, :2]
        return float(np.clip(presence.ravel()[0], 0.0, 1.0)), uv @ m[:, :2].T + m[:, 2]

    def detect(self, image: np.ndarray, faces: Sequence[Box] = ()) -> list[BoxDetection]:
        """Detect hands.

        Args:
            image: H x W x 3 uint8 RGB, any size.
            faces: face boxes ``(x0, y0, x1, y1)`` px; a palm mostly inside one is dropped.

        Returns:
            Hands by descending palm score: box = the 21 landmarks' bounds grown by
            :data:`HAND_MARGIN` a side, clipped; score = palm score x hand presence;
            ``detectors=["palm"]``; the palm's 7 keypoints px.

        Raises:
            ValueError: ``image`` is not H x W x 3 uint8.
        """
        check_rgb(image)
        h, w = image.shape[:2]
        found = [detect_tiled(m, image, anchors, NUM_KEYPOINTS, (0.0, 1.0),
                              self.score_threshold, self.tiles)
                 for m, anchors in zip(self.palms, self.anchors)]
        palms = np.concatenate([f[0] for f in found])
        scores = np.concatenate([f[1] for f in found])
        kps = np.concatenate([f[2] for f in found])
        out, seen = [], []
        for i in np.argsort(-scores, kind="stable"):
            palm, score, points = palms[i], scores[i], kps[i]
            if any(inside_fraction(palm, face) >= FACE_OVERLAP for face in faces):
                continue
            # the same palm from another model: verify it once
            if len(seen) and iou(palm, np.asarray(seen)).max() >= SAME_PALM_IOU:
                continue
            seen.append(palm)
            presence, landmarks = self._verify(image, palm, points)
            if presence < self.presence_threshold:
                continue
            (x0, y0), (x1, y1) = landmarks.min(0), landmarks.max(0)
            mx, my = (x1 - x0) * HAND_MARGIN, (y1 - y0) * HAND_MARGIN
            box = clip_box((x0 - mx, y0 - my, x1 + mx, y1 + my), w, h)
            if box is not None:
                out.append(BoxDetection(box=box, score=float(score) * presence,
                                        detectors=[self.name],
                                        keypoints=[(float(x), float(y)) for x, y in points]))
        return out
