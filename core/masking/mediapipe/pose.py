"""The main person's pose and segmentation with MediaPipe Pose (BlazePose GHUM, full model).

Models (``mediapipe==0.10.21`` wheel, Apache-2.0), run with ai-edge-litert (see :mod:`.runtime`):
``<model_dir>/pose_detection.tflite`` and ``<model_dir>/pose_landmark_full.tflite``
(``<weights_dir>/mediapipe/pose/`` in the product).

Two stages, as MediaPipe's ``pose_landmark_cpu.pbtxt`` graph runs them on one image:

1. Detector (``pose_detection_cpu.pbtxt``): 224 px letterbox, RGB in [-1, 1], SSD anchors with
   strides [8, 16, 32, 32, 32] (2254), box + 4 keypoints, score >= 0.5, weighted NMS at IoU
   0.3. Keypoint 0 is the hip centre, keypoint 1 a point above the head.
2. ROI (``pose_detection_to_roi.pbtxt``): centre = keypoint 0, side = 2 x |kp1 - kp0| x 1.25,
   rotated so that kp0 -> kp1 points up; the rotated square is warped (``cv2.warpAffine``,
   replicated border as ``ImageToTensorCalculator``) to the landmark model's 256 px input, RGB
   in [0, 1]. Outputs (``tensors_to_pose_landmarks_and_segmentation.pbtxt``): 39 x 5 landmarks
   (x, y, z px of the input, visibility and presence logits; the first 33 are the pose), a
   pose-presence probability (no activation; a pose counts at >= 0.5), a 256 x 256 segmentation
   logit map. Landmarks and segmentation map back through the inverse affine.

Left out: MediaPipe's refinement of the landmarks from the 64 x 64 heatmap output
(``RefineLandmarksFromHeatmapCalculator``, a small local correction) and the temporal filters
(video only).

Main person: of the detections, the one with the largest ROI (the nearest / most prominent
person, rather than the highest score, which favours a small bystander in full view) that the
landmark model confirms (presence >= 0.5).
The landmark model sees one person only: in a group photo it may take in a neighbour's limb.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from core.masking.detectors import Pose, check_rgb, clip_box
from core.masking.mediapipe.runtime import Model, detect_tiled, load_interpreter, shrink
from core.masking.mediapipe.ssd import sigmoid, ssd_anchors

DETECTOR_FILE, LANDMARK_FILE = "pose_detection.tflite", "pose_landmark_full.tflite"
#: SsdAnchorsCalculator options of ``pose_detection_cpu.pbtxt`` (interpolated-scale anchors).
STRIDES = [8, 16, 32, 32, 32]
NUM_KEYPOINTS = 4
#: ``min_score_thresh`` and the NMS ``min_suppression_threshold`` of the detector graph.
MIN_SCORE, NMS_IOU = 0.5, 0.3
#: ``RectTransformationCalculator`` scale of ``pose_detection_to_roi.pbtxt``.
ROI_SCALE = 1.25
#: ``ThresholdingCalculator`` threshold on the pose-presence score.
MIN_PRESENCE = 0.5
NUM_LANDMARKS, RAW_LANDMARKS = 33, 39
#: Candidates tried, largest first, until the landmark model confirms a person (presence >=
#: 0.5); one landmark run each. The detector's largest box is not always a pose the landmark
#: model can read (t1.jpg: the largest of four, a man standing behind the table, has presence
#: 0.27; the next one is taken).
MAX_CANDIDATES = 3
#: Context around a caller's ``person_box``, a fraction of its size on each side: a hand-drawn
#: box may cut off an elbow or a foot; a quarter keeps them (on bus.jpg's people) while the
#: boxed person stays the largest in the crop.
PERSON_BOX_CONTEXT = 0.25


def _roi_matrix(kp0: np.ndarray, kp1: np.ndarray, size: int) -> np.ndarray:
    """2 x 3 affine from image px to the ``size`` px landmark input.

    Rotation as ``AlignmentPointsRectsCalculator`` (target angle 90 deg): the crop's "up" is the
    direction kp0 -> kp1.
    """
    dx, dy = float(kp1[0] - kp0[0]), float(kp1[1] - kp0[1])
    side = 2.0 * math.hypot(dx, dy) * ROI_SCALE
    rotation = math.pi / 2 - math.atan2(-dy, dx)
    c, s, k = math.cos(rotation), math.sin(rotation), size / max(side, 1e-6)
    m = np.array([[c * k, s * k, 0.0], [-s * k, c * k, 0.0]])
    m[:, 2] = size / 2 - m[:, :2] @ kp0
    return m


class MediaPipePose:
    """``estimate(image) -> Pose | None`` for the main person (MediaPipe Pose, full model).

    Build with :meth:`load`; the interpreters are not thread-safe (one estimator per thread).
    """

    name = "mediapipe-pose"

    def __init__(self, detector: Model, landmarker: Model, *, identity: dict | None = None
                 ) -> None:
        self.detector, self.landmarker = detector, landmarker
        self.anchors = ssd_anchors(detector.size, STRIDES, interpolated_scale=True)
        # outputs found by shape, not position: landmarks 39 x 5, presence 1, segmentation S x S
        shapes = [tuple(int(v) for v in d["shape"][1:])
                  for d in landmarker.interpreter.get_output_details()]
        wanted = [(RAW_LANDMARKS * 5,), (1,), (landmarker.size, landmarker.size, 1)]
        if any(shape not in shapes for shape in wanted):
            raise ValueError(f"{Path(landmarker.path).name}: outputs {shapes}, expected {wanted}")
        self._landmarks, self._presence, self._segmentation = (shapes.index(s) for s in wanted)
        self.identity = identity or {"key": "mediapipe-pose-full", "source": "mediapipe==0.10.21",
                                     "revision": LANDMARK_FILE, "dev": False}

    @classmethod
    def load(cls, model_dir: Path | str, *, num_threads: int | None = None,
             identity: dict | None = None) -> MediaPipePose:
        """Load ``pose_detection.tflite`` and ``pose_landmark_full.tflite`` from ``model_dir``.

        Args:
            model_dir: the folder holding both files.
            num_threads: interpreter threads (None: all cores, at most 4).
            identity: ``{key, source, revision, dev}`` reported in the result's ``models``.

        Raises:
            FileNotFoundError: a model file is missing.
            ValueError: a model's input or output shapes are not the expected ones.
        """
        model_dir = Path(model_dir)
        detector = load_interpreter(model_dir / DETECTOR_FILE, num_threads)
        landmarker = load_interpreter(model_dir / LANDMARK_FILE, num_threads)
        return cls(detector, landmarker, identity=identity)

    def estimate(self, image: np.ndarray, person_box: Sequence[float] | None = None
                 ) -> Pose | None:
        """The main person's pose, or None when no person is found.

        Args:
            image: H x W x 3 uint8 RGB.
            person_box: ``(x0, y0, x1, y1)`` px around the wanted person (a caller's choice in a
                photo of several): the models then see only that box grown by
                :data:`PERSON_BOX_CONTEXT` of its size on each side, where the person is the
                largest; keypoints and segmentation come back in ``image``'s px (the
                segmentation is 0 outside the grown box). None: the largest person in the photo.

        Returns:
            :class:`Pose`: 33 x 3 float32 keypoints (x, y px of ``image``; visibility 0-1),
            H x W float32 segmentation (0-1), the detector score, the ROI's bounds (clipped).

        Raises:
            ValueError: ``image`` is not H x W x 3 uint8, or ``person_box`` lies outside it.
        """
        check_rgb(image)
        h, w = image.shape[:2]
        if person_box is not None:
            return self._estimate_in_box(image, person_box)
        _, scores, kps = detect_tiled(self.detector, image, self.anchors, NUM_KEYPOINTS,
                                      (-1.0, 1.0), MIN_SCORE, use_tiles=False, min_iou=NMS_IOU)
        size = self.landmarker.size
        sides = 2.0 * ROI_SCALE * np.linalg.norm(kps[:, 1] - kps[:, 0], axis=1)
        # warp from a copy shrunk to ~2 source px per input px: a 12 MP photo warped straight
        # to 256 px with INTER_LINEAR would alias
        small = shrink(image, round(max(h, w) * 2.0 * size / max(float(sides.max(initial=0)), 1)))
        sx, sy = small.shape[1] / w, small.shape[0] / h
        order = np.argsort(-sides, kind="stable")
        for main in order[:MAX_CANDIDATES]:
            m = _roi_matrix(kps[main, 0], kps[main, 1], size)
            scaled = np.hstack([m[:, :2] / (sx, sy), m[:, 2:]])  # from ``small``'s px
            crop = cv2.warpAffine(small, scaled, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
            outputs = self.landmarker.run(crop[None].astype(np.float32) / np.float32(255.0))
            if float(outputs[self._presence].reshape(-1)[0]) >= MIN_PRESENCE:
                return self._pose(outputs, m, float(scores[main]), w, h)
        return None

    def _estimate_in_box(self, image: np.ndarray, person_box: Sequence[float]) -> Pose | None:
        """:meth:`estimate` on the grown ``person_box`` crop, mapped back to ``image``."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = (float(v) for v in person_box)
        mx, my = (x1 - x0) * PERSON_BOX_CONTEXT, (y1 - y0) * PERSON_BOX_CONTEXT
        box = clip_box((x0 - mx, y0 - my, x1 + mx, y1 + my), w, h)
        if box is None:
            raise ValueError(f"person_box {list(person_box)} lies outside the {w} x {h} image")
        cx0, cy0 = int(box[0]), int(box[1])
        cx1, cy1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
        pose = self.estimate(np.ascontiguousarray(image[cy0:cy1, cx0:cx1]))
        if pose is None:
            return None
        keypoints = pose.keypoints.copy()
        keypoints[:, 0] += cx0
        keypoints[:, 1] += cy0
        segmentation = np.zeros((h, w), np.float32)
        segmentation[cy0:cy1, cx0:cx1] = pose.segmentation
        bx0, by0, bx1, by1 = pose.box
        return Pose(keypoints=keypoints, segmentation=segmentation, score=pose.score,
                    box=(bx0 + cx0, by0 + cy0, bx1 + cx0, by1 + cy0))

    def _pose(self, outputs: list[np.ndarray], m: np.ndarray, score: float, w: int, h: int
              ) -> Pose:
        """Map the landmark model's outputs back through the inverse of the ROI affine ``m``."""
        size = self.landmarker.size
        raw = outputs[self._landmarks].reshape(RAW_LANDMARKS, 5)[:NUM_LANDMARKS]
        inverse = cv2.invertAffineTransform(m)
        keypoints = np.empty((NUM_LANDMARKS, 3), np.float32)
        keypoints[:, :2] = raw[:, :2] @ inverse[:, :2].T + inverse[:, 2]
        keypoints[:, 2] = sigmoid(raw[:, 3])
        probability = sigmoid(outputs[self._segmentation][:, :, 0]).astype(np.float32)
        corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
        roi = corners @ inverse[:, :2].T + inverse[:, 2]
        box = clip_box((*roi.min(0), *roi.max(0)), w, h)
        segmentation = np.zeros((h, w), np.float32)
        if box is not None:
            # warp into the ROI's bounds only (outside it the map is 0): ~3x less work at 12 MP
            x0, y0 = int(box[0]), int(box[1])
            x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
            shifted = m.copy()
            shifted[:, 2] += m[:, :2] @ (x0, y0)
            part = cv2.warpAffine(probability, shifted, (x1 - x0, y1 - y0),
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
            segmentation[y0:y1, x0:x1] = np.clip(part, 0.0, 1.0, out=part)
        return Pose(keypoints=keypoints, segmentation=segmentation,
                    score=score, box=box or (0.0, 0.0, float(w), float(h)))
