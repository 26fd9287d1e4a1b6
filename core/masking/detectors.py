"""Detector interface of the human guard: box and pose types, one RGB check, one Protocol per kind.

Every detector the masking stage uses implements one of three Protocols:

- :class:`FaceDetector` (``kind`` ``"face"``): ``detect(image) -> list[BoxDetection]``;
- :class:`HandDetector` (``kind`` ``"hand"``): ``detect(image, faces) -> list[BoxDetection]``
  (hands kept only inside a person and outside the given face boxes);
- :class:`PoseEstimator` (``kind`` ``"pose"``): ``estimate(image) -> Pose | None`` for the main
  person (33 MediaPipe keypoints plus a person segmentation).

Each carries ``name`` (short id reported in ``mask_info``, e.g. ``"blazeface"``, ``"scrfd"``,
``"haar"``) and ``identity`` (``{key, source, revision, dev}``, reported in the result's
``models``). The masking stage holds *lists* of face and hand detectors and unions their boxes,
so one blind or failing detector cannot switch protection off.

Arrays: images H x W x 3 uint8 RGB; boxes ``(x0, y0, x1, y1)`` float px of the original image
(x1/y1 exclusive edges), clipped to it; segmentation H x W float32 in [0, 1].

Torch-free and free of any detector library, so every detector module can import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

Box = tuple[float, float, float, float]

#: MediaPipe Pose's 33 landmark names, in output order (MediaPipe "Pose landmark model",
#: https://ai.google.dev/edge/mediapipe/solutions/vision/pose_landmarker).
POSE_LANDMARKS: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)


def check_rgb(image: object) -> None:
    """Raise ``ValueError`` unless ``image`` is a non-empty H x W x 3 uint8 array (RGB)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError("image must be an H x W x 3 uint8 RGB array")


def clip_box(box: Box, width: int, height: int) -> Box | None:
    """Clip ``box`` to a ``width`` x ``height`` image; None when nothing of it is left."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = min(max(x0, 0.0), float(width)), min(max(x1, 0.0), float(width))
    y0, y1 = min(max(y0, 0.0), float(height)), min(max(y1, 0.0), float(height))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


@dataclass
class BoxDetection:
    """One detected face or hand.

    Attributes:
        box: ``(x0, y0, x1, y1)`` float px of the original image, clipped to it (no margin).
        score: confidence in [0, 1] (1.0 for detectors that give none, e.g. Haar).
        detectors: names of the detectors that found it (one, until boxes are merged).
        keypoints: optional ``(x, y)`` px landmarks the detector gives (BlazeFace: 6, palm: 7).
    """

    box: Box
    score: float
    detectors: list[str] = field(default_factory=list)
    keypoints: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Pose:
    """The main person's pose.

    Attributes:
        keypoints: 33 x 3 float32: x px, y px (original image), visibility in [0, 1], in
            :data:`POSE_LANDMARKS` order.
        segmentation: H x W float32 in [0, 1], the person's probability map at the original size.
        score: the pose detector's confidence in [0, 1].
        box: the person's ``(x0, y0, x1, y1)`` px region of interest (clipped).
    """

    keypoints: np.ndarray
    segmentation: np.ndarray
    score: float
    box: Box

    def point(self, name: str, min_visibility: float = 0.5) -> tuple[float, float] | None:
        """``(x, y)`` px of landmark ``name`` when its visibility reaches ``min_visibility``."""
        x, y, v = self.keypoints[POSE_LANDMARKS.index(name)]
        return (float(x), float(y)) if v >= min_visibility else None


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces. ``detect`` raises ``ValueError`` for a non-RGB image."""

    name: str
    identity: dict

    def detect(self, image: np.ndarray) -> list[BoxDetection]: ...


@runtime_checkable
class HandDetector(Protocol):
    """Finds hands, keeping only those inside a person and outside ``faces`` (boxes px).

    ``detect`` raises ``ValueError`` for a non-RGB image.
    """

    name: str
    identity: dict

    def detect(self, image: np.ndarray, faces: Sequence[Box] = ()) -> list[BoxDetection]: ...


@runtime_checkable
class PoseEstimator(Protocol):
    """Estimates the main person's pose; None when no person is found."""

    name: str
    identity: dict

    def estimate(self, image: np.ndarray) -> Pose | None: ...
