"""MediaPipe pose (ai-edge-litert) and the pose-based garment region, on real photos.

Models: ``pose_detection.tflite`` and ``pose_landmark_full.tflite`` of the ``mediapipe==0.10.21``
wheel, as the dev weights bake them (``<weights_dir>/mediapipe/pose``; see
:func:`tests.conftest.mediapipe_model`). The region tests on synthetic poses need no model.

Boxes below were drawn by eye on the originals, ``(x0, y0, x1, y1)`` px: faces as in
tests/test_mediapipe_detectors.py (hairline to chin, cheek to cheek); jacket/suit patches on
cloth only; background patches on flag, sky, wall and table, clear of the person.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from core.masking.detectors import POSE_LANDMARKS, Pose, PoseEstimator
from core.masking.mediapipe.pose import DETECTOR_FILE, LANDMARK_FILE, MediaPipePose
from core.masking.pose_region import group_region, pose_region
from tests.conftest import mediapipe_model


PHOTOS = {
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "astronaut": ("skimage", "data/astronaut.png"),
    "coffee": ("skimage", "data/coffee.png"),
}
ANNOTATIONS = {
    "grace_hopper": {
        "face": (172, 150, 365, 335),
        "cloth": [(40, 420, 180, 580), (330, 420, 490, 490), (100, 530, 200, 590),
                  (280, 540, 480, 590)],
        "background": [(380, 0, 512, 300), (0, 0, 140, 300), (430, 300, 512, 370)],
        "left_shoulder": (400, 370, 490, 460),  # the person's left: the image's right
        "right_shoulder": (60, 370, 150, 460),
    },
    "astronaut": {
        "face": (182, 78, 280, 178),
        "cloth": [(60, 260, 130, 380), (300, 250, 350, 330), (40, 400, 120, 480),
                  (200, 330, 240, 420)],
        "background": [(0, 0, 140, 150), (310, 0, 380, 180), (380, 290, 512, 340)],
        "left_shoulder": (260, 210, 350, 300),
        "right_shoulder": (60, 200, 150, 290),
    },
}


_find = mediapipe_model


@pytest.fixture(scope="module")
def pose_dir(tmp_path_factory) -> Path:
    """A folder holding both pose models (links to the wheel layout's two subfolders)."""
    det, lm = _find(DETECTOR_FILE), _find(LANDMARK_FILE)
    if det.parent == lm.parent:
        return det.parent
    folder = tmp_path_factory.mktemp("pose")
    (folder / DETECTOR_FILE).symlink_to(det)
    (folder / LANDMARK_FILE).symlink_to(lm)
    return folder


@pytest.fixture(scope="module")
def estimator(pose_dir) -> MediaPipePose:
    return MediaPipePose.load(pose_dir, num_threads=2)


def load_photo(name: str) -> np.ndarray:
    pkg, rel = PHOTOS[name]
    spec = importlib.util.find_spec(pkg)
    assert spec is not None, f"{pkg} is not installed (requirements-dev.lock has it)"
    return np.asarray(Image.open(Path(spec.origin).parent / rel).convert("RGB"))


def share(mask: np.ndarray, box) -> float:
    x0, y0, x1, y1 = box
    return float(mask[y0:y1, x0:x1].mean())


def inside(point, box) -> bool:
    return box[0] <= point[0] < box[2] and box[1] <= point[1] < box[3]


def kp(pose: Pose, name: str) -> np.ndarray:
    return pose.keypoints[POSE_LANDMARKS.index(name)]


# --- the estimator on real photos ---------------------------------------------------------

def test_implements_the_pose_protocol(estimator):
    assert isinstance(estimator, PoseEstimator)
    assert estimator.name == "mediapipe-pose"
    assert set(estimator.identity) == {"key", "source", "revision", "dev"}


@pytest.mark.parametrize("photo", sorted(ANNOTATIONS))
def test_keypoints_land_on_the_person(estimator, photo):
    image, ann = load_photo(photo), ANNOTATIONS[photo]
    pose = estimator.estimate(image)
    assert pose is not None
    assert pose.keypoints.shape == (33, 3) and pose.keypoints.dtype == np.float32
    for side in ("left_shoulder", "right_shoulder"):
        x, y, visibility = kp(pose, side)
        assert inside((x, y), ann[side]) and visibility > 0.9, side
    for name in ("nose", "left_eye", "right_eye", "mouth_left", "mouth_right"):
        assert inside(kp(pose, name)[:2], ann["face"]), name
    # both photos end at the waist: the hips lie below the frame and are not visible
    for hip in ("left_hip", "right_hip"):
        assert kp(pose, hip)[2] < 0.5 and kp(pose, hip)[1] > image.shape[0] * 0.9
    assert 0.5 <= pose.score <= 1.0
    x0, y0, x1, y1 = pose.box
    assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]


@pytest.mark.parametrize("photo", sorted(ANNOTATIONS))
def test_segmentation_separates_person_from_background(estimator, photo):
    image, ann = load_photo(photo), ANNOTATIONS[photo]
    seg = estimator.estimate(image).segmentation
    assert seg.shape == image.shape[:2] and seg.dtype == np.float32
    assert 0.0 <= seg.min() and seg.max() <= 1.0
    person = seg > 0.5
    assert share(person, ann["face"]) > 0.9
    assert min(share(person, b) for b in ann["cloth"]) > 0.9
    assert max(share(person, b) for b in ann["background"]) < 0.05


@pytest.mark.parametrize("photo", sorted(ANNOTATIONS))
def test_upper_region_covers_the_jacket_not_the_face_nor_background(estimator, photo):
    image, ann = load_photo(photo), ANNOTATIONS[photo]
    pose = estimator.estimate(image)
    upper = pose_region(pose, ["upper"], image.shape[:2])
    assert upper is not None and upper.dtype == bool and upper.shape == image.shape[:2]
    for box in ann["cloth"]:
        assert share(upper, box) > 0.9, box
    assert share(upper, ann["face"]) == 0.0
    for box in ann["background"]:
        assert share(upper, box) < 0.02, box
    # the lower body is out of the frame: no hips, no trousers
    assert pose_region(pose, ["lower"], image.shape[:2]) is None


def test_rotated_photo_gives_the_same_pose(estimator):
    """The ROI follows the body's direction: a photo turned 90 degrees still maps back."""
    image = load_photo("astronaut")
    turned = np.ascontiguousarray(np.rot90(image, k=-1))  # clockwise: (x, y) -> (h-1-y, x)
    pose = estimator.estimate(turned)
    assert pose is not None
    h = image.shape[0]
    for side in ("left_shoulder", "right_shoulder"):
        x0, y0, x1, y1 = ANNOTATIONS["astronaut"][side]
        box = (h - y1, x0, h - y0, x1)
        assert inside(kp(pose, side)[:2], box), side


def test_large_photo_gives_the_same_pose(estimator):
    """A 4x upscaled photo (4.9 MP) gives the same keypoints, scaled (within 2 % of the side)."""
    image = load_photo("grace_hopper")
    big = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    small_pose, big_pose = estimator.estimate(image), estimator.estimate(big)
    visible = (small_pose.keypoints[:, 2] > 0.5) & (big_pose.keypoints[:, 2] > 0.5)
    assert visible.sum() >= 13
    error = np.abs(big_pose.keypoints[visible, :2] / 4 - small_pose.keypoints[visible, :2])
    assert error.max() < 0.02 * max(image.shape[:2])
    assert big_pose.segmentation.shape == big.shape[:2]


@pytest.mark.parametrize("make", [
    lambda: np.full((480, 640, 3), (90, 140, 200), np.uint8),
    lambda: load_photo("coffee"),
], ids=["flat", "coffee"])
def test_no_person_gives_none(estimator, make):
    assert estimator.estimate(make()) is None


@pytest.mark.parametrize("bad", [
    np.zeros((64, 64), np.uint8),
    np.zeros((64, 64, 4), np.uint8),
    np.zeros((64, 64, 3), np.float32),
    np.zeros((0, 64, 3), np.uint8),
    "not an image",
])
def test_non_rgb_input_raises(estimator, bad):
    with pytest.raises(ValueError):
        estimator.estimate(bad)


def test_missing_model_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        MediaPipePose.load(tmp_path)


# --- the region on synthetic poses (no model needed) --------------------------------------

def figure(scale: float = 1.0, hidden: tuple[str, ...] = (), shape=(900, 600),
           head_drop: float = 0.0) -> Pose:
    """An upright frontal stick figure (the person's left on the image's right), all visible
    unless ``hidden``, the face moved ``head_drop`` px down (a bowed head); the segmentation is
    a box a little narrower than the arms' bands (so the cut shows)."""
    joints = {
        "nose": (300, 120), "left_eye_inner": (310, 105), "left_eye": (318, 105),
        "left_eye_outer": (326, 105), "right_eye_inner": (290, 105), "right_eye": (282, 105),
        "right_eye_outer": (274, 105), "left_ear": (340, 115), "right_ear": (260, 115),
        "mouth_left": (315, 140), "mouth_right": (285, 140),
        "left_shoulder": (370, 220), "right_shoulder": (230, 220),
        "left_elbow": (400, 340), "right_elbow": (200, 340),
        "left_wrist": (410, 450), "right_wrist": (190, 450),
        "left_pinky": (420, 480), "right_pinky": (180, 480),
        "left_index": (412, 488), "right_index": (188, 488),
        "left_thumb": (400, 475), "right_thumb": (200, 475),
        "left_hip": (345, 410), "right_hip": (255, 410),
        "left_knee": (350, 600), "right_knee": (250, 600),
        "left_ankle": (350, 780), "right_ankle": (250, 780),
        "left_heel": (345, 800), "right_heel": (255, 800),
        "left_foot_index": (360, 820), "right_foot_index": (240, 820),
    }
    h, w = int(shape[0] * scale), int(shape[1] * scale)
    keypoints = np.zeros((33, 3), np.float32)
    for i, name in enumerate(POSE_LANDMARKS):
        x, y = joints[name]
        y += head_drop if i < 11 else 0.0
        keypoints[i] = (x * scale, y * scale, 0.0 if name in hidden else 0.99)
    seg = np.zeros((h, w), np.float32)
    cv2.rectangle(seg, (int(180 * scale), int(60 * scale)), (int(420 * scale), int(840 * scale)),
                  1.0, -1)
    return Pose(keypoints=keypoints, segmentation=seg, score=0.9, box=(0.0, 0.0, w, h))


def test_region_scales_with_the_photo():
    small, big = figure(1.0), figure(2.0)
    for group in ("upper", "lower", "dress", "outerwear", "full"):
        a = pose_region(small, [group], small.segmentation.shape)
        b = pose_region(big, [group], big.segmentation.shape)
        assert a is not None and b is not None
        assert b.sum() / a.sum() == pytest.approx(4.0, rel=0.05), group


def test_region_excludes_head_and_hands_and_respects_segmentation():
    pose = figure(head_drop=80)  # chin down to the collar: inside the torso polygon
    region = pose_region(pose, ["full"], pose.segmentation.shape)
    chin = kp(pose, "mouth_left")[:2] + (0, 25)
    for name in ("nose", "mouth_left", "mouth_right", "right_thumb", "left_thumb", "left_heel",
                 "right_foot_index"):
        x, y = kp(pose, name)[:2].astype(int)
        assert not region[y, x], name
    assert not region[int(chin[1]), int(chin[0])]
    assert region[330, 300] and region[600, 250]  # belly, right knee
    assert not region[:, :180].any() and not region[:, 421:].any()  # outside the person


def test_groups_cover_their_part_of_the_body():
    pose = figure()
    shape = pose.segmentation.shape
    upper, lower = (pose_region(pose, [g], shape) for g in ("upper", "lower"))
    dress, outer = (pose_region(pose, [g], shape) for g in ("dress", "outerwear"))
    assert upper[300, 300] and not upper[650, 300]  # chest, not the thighs
    assert lower[650, 260] and not lower[300, 300]  # thigh, not the chest
    assert dress[300, 300] and dress[560, 300] and not dress[760, 250]  # chest..knees, no shin
    assert outer.sum() > upper.sum() and outer[470, 300] and not upper[470, 300]  # longer
    both = pose_region(pose, ["upper", "lower"], shape)
    assert np.array_equal(both, upper | lower)


def test_region_is_none_without_its_keypoints():
    shape = (900, 600)
    no_hips = figure(hidden=("left_hip", "right_hip"))
    assert pose_region(no_hips, ["lower"], shape) is None
    assert pose_region(no_hips, ["upper"], shape) is not None
    no_shoulders = figure(hidden=("left_shoulder",))
    for group in ("upper", "dress", "outerwear"):
        assert group_region(no_shoulders, group, shape) is None
    assert pose_region(no_shoulders, ["upper", "lower"], shape) is not None  # lower only
    nothing = figure(hidden=("left_shoulder", "right_shoulder", "left_hip", "right_hip"))
    assert pose_region(nothing, ["full"], shape) is None


def test_bad_targets_and_shapes_raise():
    pose = figure()
    with pytest.raises(ValueError, match="targets"):
        pose_region(pose, ["hat"], (900, 600))
    with pytest.raises(ValueError, match="shape"):
        pose_region(pose, ["upper"], (450, 300))


def test_region_turns_with_the_body():
    """A figure lying on its side (the photo turned 90 degrees) gets the same region, turned."""
    pose = figure()
    h, w = pose.segmentation.shape
    turned = Pose(keypoints=pose.keypoints.copy(), segmentation=np.rot90(pose.segmentation, -1),
                  score=pose.score, box=pose.box)
    turned.keypoints[:, 0] = h - 1 - pose.keypoints[:, 1]  # clockwise: (x, y) -> (h-1-y, x)
    turned.keypoints[:, 1] = pose.keypoints[:, 0]
    for group in ("upper", "lower", "dress"):
        upright = np.rot90(pose_region(pose, [group], (h, w)), -1)
        lying = pose_region(turned, [group], (w, h))
        iou = (upright & lying).sum() / (upright | lying).sum()
        assert iou > 0.97, group
