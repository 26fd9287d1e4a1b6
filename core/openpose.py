"""The pose hint of the pose-lock ControlNet: MediaPipe's 33 pose landmarks mapped to OpenPose's 18
COCO keypoints and drawn the way OpenPose ControlNets were trained.

Arrays: keypoints in px; images H x W x 3 uint8 RGB.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

#: OpenPose BODY_18 (COCO) keypoint order, as ControlNet's annotator and controlnet_aux use it.
OPENPOSE_KEYPOINTS: tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
)
#: MediaPipe Pose landmark index for each OpenPose keypoint (``core.masking.detectors.
#: POSE_LANDMARKS`` order); the neck (None) is the midpoint of the shoulders (11, 12).
MEDIAPIPE_FOR_OPENPOSE: tuple[int | None, ...] = (
    0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7,
)
#: Limbs as 1-based keypoint pairs and the colours (RGB) of ``draw_bodypose`` in
#: huggingface/controlnet_aux (``open_pose/util.py``), itself lllyasviel/ControlNet's annotator.
LIMBS: tuple[tuple[int, int], ...] = (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12),
    (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18),
)
COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
#: ``draw_bodypose``: limb half-width 4 px, limbs at 60 % of their colour, 4 px joint discs.
STICK_WIDTH_PX, LIMB_SHADE, JOINT_RADIUS_PX = 4, 0.6, 4
#: A landmark is drawn when MediaPipe's visibility reaches this (MediaPipe's own default for
#: drawing landmarks, ``drawing_utils._VISIBILITY_THRESHOLD``).
MIN_VISIBILITY = 0.5


def openpose_keypoints(keypoints33: np.ndarray, min_visibility: float = MIN_VISIBILITY
                       ) -> np.ndarray:
    """MediaPipe's 33 pose landmarks as OpenPose's 18 (COCO order, :data:`OPENPOSE_KEYPOINTS`).

    Args:
        keypoints33: 33 x 3 float (x px, y px, visibility 0-1), ``Pose.keypoints``.
        min_visibility: landmarks below it are marked missing.

    Returns:
        18 x 3 float32: x px, y px, visibility; a missing keypoint has visibility 0 (and x, y 0).
        The neck is the shoulders' midpoint, visible when both are (its visibility their
        minimum).
    """
    kp = np.asarray(keypoints33, np.float32)
    if kp.shape != (33, 3):
        raise ValueError(f"expected 33 x 3 keypoints, got {kp.shape}")
    out = np.zeros((18, 3), np.float32)
    for i, j in enumerate(MEDIAPIPE_FOR_OPENPOSE):
        if j is None:
            pair = kp[[11, 12]]
            out[i] = (*pair[:, :2].mean(0), pair[:, 2].min())
        else:
            out[i] = kp[j]
    out[out[:, 2] < min_visibility] = 0.0
    return out


def stick_scale(width: int, height: int) -> int:
    """xinsir's SDXL OpenPose ControlNet was trained with thicker sticks on large images:
    ``1 if max side < 500 else min(2 + max side // 1000, 7)`` (controlnet_aux's
    ``xinsr_stick_scaling``, from the model card of xinsir/controlnet-openpose-sdxl-1.0)."""
    side = max(width, height)
    return 1 if side < 500 else min(2 + side // 1000, 7)


def draw_openpose(keypoints18: np.ndarray, width: int, height: int, *, scale_sticks: bool = False
                  ) -> np.ndarray:
    """Draw an OpenPose skeleton the way OpenPose ControlNets were trained.

    Black canvas; each limb an ellipse (``cv2.ellipse2Poly``, half-width 4 px) filled with 60 %
    of its colour, then each keypoint a 4 px disc in full colour - controlnet_aux's
    ``draw_bodypose``. Written here because controlnet_aux pulls in timm, mediapipe and more for
    these thirty lines.

    Args:
        keypoints18: 18 x 3 (x px, y px, visibility) in the canvas' px; visibility 0 = missing.
        width, height: canvas size px.
        scale_sticks: :func:`stick_scale` the limb width (xinsir's SDXL ControlNet).

    Returns:
        height x width x 3 uint8 RGB.
    """
    canvas = np.zeros((height, width, 3), np.uint8)
    sw = STICK_WIDTH_PX * (stick_scale(width, height) if scale_sticks else 1)
    kp = np.asarray(keypoints18, np.float32)
    for (a, b), colour in zip(LIMBS, COLOURS):
        p, q = kp[a - 1], kp[b - 1]
        if p[2] <= 0 or q[2] <= 0:
            continue
        length = math.hypot(p[0] - q[0], p[1] - q[1])
        angle = math.degrees(math.atan2(p[1] - q[1], p[0] - q[0]))
        centre = (int((p[0] + q[0]) / 2), int((p[1] + q[1]) / 2))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), sw), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, [int(c * LIMB_SHADE) for c in colour])
    for (x, y, v), colour in zip(kp, COLOURS):
        if v > 0:
            cv2.circle(canvas, (int(x), int(y)), JOINT_RADIUS_PX, colour, thickness=-1)
    return canvas


def pose_hint(keypoints18: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int],
              *, scale_sticks: bool = False) -> Image.Image:
    """The OpenPose hint for the model's crop: keypoints moved into ``box`` (x0, y0, x1, y1 px
    of the photo) scaled to ``size`` (width, height px), drawn at that size (drawing after a
    resize would blur the sticks the ControlNet learnt). Returns an RGB PIL image."""
    x0, y0, x1, y1 = box
    w, h = size
    kp = np.asarray(keypoints18, np.float32).copy()
    kp[:, 0] = (kp[:, 0] - x0) * (w / (x1 - x0))
    kp[:, 1] = (kp[:, 1] - y0) * (h / (y1 - y0))
    return Image.fromarray(draw_openpose(kp, w, h, scale_sticks=scale_sticks))
