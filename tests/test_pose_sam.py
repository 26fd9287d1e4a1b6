"""SAM prompted from the pose: the prompts checked against keypoints drawn by hand (a standing
figure facing the camera on a 400 x 600 canvas), then the path through the real SAM loader with
the tiny dev SAM, then how SAM's mask is trimmed and when it is kept."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.masking.detectors import POSE_LANDMARKS, Pose
from core.masking.pose_region import drawn_region, pose_region
from core.masking.pose_sam import (MIN_AGREEMENT, iou, pose_prompt, prompt_box,
                                   refine_with_sam)

H, W = 600, 400
#: A person facing the camera, drawn by hand (x, y px); MediaPipe's "left" is the person's
#: left, the image's right. Shoulders 120 px apart, so the body unit u = 120 px.
KEYPOINTS = {
    "nose": (200, 80), "left_eye_inner": (205, 72), "left_eye": (210, 72),
    "left_eye_outer": (215, 72), "right_eye_inner": (195, 72), "right_eye": (190, 72),
    "right_eye_outer": (185, 72), "left_ear": (225, 78), "right_ear": (175, 78),
    "mouth_left": (207, 95), "mouth_right": (193, 95),
    "left_shoulder": (260, 150), "right_shoulder": (140, 150),
    "left_elbow": (285, 240), "right_elbow": (115, 240),
    "left_wrist": (295, 320), "right_wrist": (105, 320),
    "left_pinky": (298, 340), "right_pinky": (102, 340),
    "left_index": (295, 345), "right_index": (105, 345),
    "left_thumb": (288, 335), "right_thumb": (112, 335),
    "left_hip": (235, 320), "right_hip": (165, 320),
    "left_knee": (240, 440), "right_knee": (160, 440),
    "left_ankle": (242, 550), "right_ankle": (158, 550),
    "left_heel": (240, 565), "right_heel": (160, 565),
    "left_foot_index": (255, 580), "right_foot_index": (145, 580),
}
TORSO = np.array([KEYPOINTS[k] for k in ("left_shoulder", "right_shoulder", "right_hip",
                                         "left_hip")], np.float32)
THIGHS = [np.array([KEYPOINTS[f"{s}_hip"], KEYPOINTS[f"{s}_knee"]], np.float64)
          for s in ("left", "right")]
#: Hips and thighs: the hips-knees quadrilateral.
HIPS_THIGHS = np.array([KEYPOINTS[k] for k in ("left_hip", "right_hip", "right_knee",
                                               "left_knee")], np.float32)


def _figure() -> tuple[np.ndarray, Pose]:
    """The drawn figure: a grey person on a white background, and its pose with a
    segmentation of exactly the person's pixels."""
    k = {n: tuple(int(v) for v in p) for n, p in KEYPOINTS.items()}
    person = np.zeros((H, W), np.uint8)
    cv2.circle(person, (200, 85), 35, 1, -1)
    cv2.fillConvexPoly(person, np.array([k["left_shoulder"], k["right_shoulder"],
                                         k["right_hip"], k["left_hip"]], np.int32), 1)
    for a, b in (("shoulder", "elbow"), ("elbow", "wrist"), ("hip", "knee"), ("knee", "ankle")):
        for s in ("left", "right"):
            cv2.line(person, k[f"{s}_{a}"], k[f"{s}_{b}"], 1, 40)
    cv2.line(person, (200, 110), (200, 150), 1, 40)  # the neck
    cv2.fillConvexPoly(person, np.array([(255, 320), (145, 320), (150, 360), (250, 360)],
                                        np.int32), 1)  # the pelvis, down to the crotch
    image = np.full((H, W, 3), 255, np.uint8)
    image[person.astype(bool)] = (90, 90, 140)
    kp = np.array([[*KEYPOINTS[n], 0.99] for n in POSE_LANDMARKS], np.float32)
    pose = Pose(keypoints=kp, segmentation=person.astype(np.float32), score=0.99,
                box=(60.0, 30.0, 340.0, 590.0))
    return image, pose


def _in_torso(p) -> bool:
    return cv2.pointPolygonTest(TORSO, (float(p[0]), float(p[1])), False) >= 0


def _on_thigh(p, tol: float = 25.0) -> bool:
    """Within ``tol`` px of a hip-knee segment."""
    for a, b in THIGHS:
        t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0, 1)
        if np.linalg.norm(p - (a + t * (b - a))) <= tol:
            return True
    return False


def _on_hips_or_thighs(p) -> bool:
    return cv2.pointPolygonTest(HIPS_THIGHS, (float(p[0]), float(p[1])), True) >= -25


def _near(points, xy, tol=6.0) -> bool:
    return any(np.linalg.norm(p - np.asarray(xy, float)) <= tol for p in points)


def _hand(side: str) -> np.ndarray:
    return np.mean([KEYPOINTS[f"{side}_{j}"] for j in ("wrist", "pinky", "index", "thumb")], 0)


@pytest.mark.parametrize("targets", [["upper"], ["outerwear"]])
def test_a_top_is_prompted_on_the_torso_away_from_face_hands_and_legs(targets):
    image, pose = _figure()
    region = pose_region(pose, targets, (H, W))
    p = pose_prompt(pose, targets, region)
    pos, neg = p.points[p.labels == 1], p.points[p.labels == 0]
    assert len(pos) == 5 and all(_in_torso(q) for q in pos)
    assert not any(_on_thigh(q) for q in pos)
    assert _near(neg, KEYPOINTS["nose"]) and _near(neg, _hand("left")) and _near(neg, _hand("right"))
    assert _near(neg, KEYPOINTS["left_knee"]) and _near(neg, KEYPOINTS["right_knee"])
    background = [q for q in neg if pose.segmentation[int(q[1]), int(q[0])] == 0]
    assert len(background) >= 3
    # the box holds the sleeves: shoulders, elbows, wrists and hips, 0.3 u = 36 px beyond
    assert p.box == pytest.approx((105 - 36, 150 - 36, 295 + 36, 320 + 36))


def test_lower_is_prompted_on_hips_and_thighs_with_the_chest_negative():
    image, pose = _figure()
    region = pose_region(pose, ["lower"], (H, W))
    p = pose_prompt(pose, ["lower"], region)
    pos, neg = p.points[p.labels == 1], p.points[p.labels == 0]
    assert len(pos) == 3 and all(_on_hips_or_thighs(q) for q in pos)
    assert sum(_on_thigh(q) for q in pos) == 2  # one on each thigh
    assert not any(_in_torso(q) for q in pos)
    assert _near(neg, (200, 150 + 0.3 * 170))  # the chest
    assert not _near(neg, KEYPOINTS["left_knee"], 30)
    x0, y0, x1, y1 = p.box  # hips to ankles
    assert y0 <= 320 - 30 and y1 >= 550 and x0 <= 158 and x1 >= 242


@pytest.mark.parametrize("targets", [["dress"], ["full"]])
def test_dress_and_full_are_prompted_on_torso_and_thighs(targets):
    image, pose = _figure()
    p = pose_prompt(pose, targets, pose_region(pose, targets, (H, W)))
    pos = p.points[p.labels == 1]
    assert sum(map(_in_torso, pos)) >= 5 and sum(_on_thigh(q) for q in pos) >= 2
    assert not _near(p.points[p.labels == 0], KEYPOINTS["left_knee"], 30)
    assert prompt_box(pose, targets, (H, W))[3] >= (440 if targets == ["dress"] else 550)


def test_points_off_the_region_are_dropped():
    image, pose = _figure()
    region = np.zeros((H, W), bool)
    assert pose_prompt(pose, ["upper"], region) is None


@pytest.fixture(scope="module")
def tiny_sam(dev_weights):
    """The dev SAM through the production loader (resolve + core.models' SAM loader)."""
    from core.models import MASKING_LOADERS
    from weights.resolve import resolve

    return MASKING_LOADERS["sam"][1](resolve("sam-vit-b", dev_weights), "cpu")


@pytest.mark.slow
def test_the_pose_prompts_run_through_the_real_sam(tiny_sam):
    image, pose = _figure()
    region = pose_region(pose, ["upper"], (H, W))
    p = pose_prompt(pose, ["upper"], region)
    mask, score = tiny_sam.segment(image, p.box, p.points, p.labels)
    assert mask.shape == (H, W) and mask.dtype == bool and np.isfinite(score)
    assert tiny_sam.predictor.features is None  # no image state kept
    kept, note = refine_with_sam(tiny_sam, image, pose, ["upper"], region)
    # random weights: whatever it drew, a kept mask stays inside the allowed region
    if kept is None:
        assert "disagreed" in note
    else:
        assert not (kept & ~drawn_region(pose, ["upper"], (H, W))).any()


class _Sam:
    """A SAM stand-in returning a fixed mask, to test what is kept of SAM's answer."""

    def __init__(self, mask: np.ndarray) -> None:
        self.mask, self.prompts = mask, []

    def segment(self, image, box, points, labels):
        self.prompts.append((box, points, labels))
        return self.mask.copy(), 0.9


def test_sams_mask_is_trimmed_to_the_person_and_kept_when_it_agrees():
    image, pose = _figure()
    region = pose_region(pose, ["upper"], (H, W))
    everything = np.ones((H, W), bool)
    kept, note = refine_with_sam(_Sam(everything), image, pose, ["upper"], region)
    assert kept is not None and "IoU" in note
    # trimmed: nothing beyond the person's edge (+ 0.1 u = 12 px), none of the head or legs
    far = cv2.dilate(pose.segmentation.astype(np.uint8), np.ones((27, 27), np.uint8)) == 0
    assert not (kept & far).any()
    assert not kept[60:110, 180:220].any() and not kept[430:600].any()
    assert iou(kept, region) >= MIN_AGREEMENT
    # SAM taking a sliver of the torso disagrees with the pose: not kept
    sliver = np.zeros((H, W), bool)
    sliver[200:210, 190:210] = True
    kept, note = refine_with_sam(_Sam(sliver), image, pose, ["upper"], region)
    assert kept is None and "disagreed" in note


def test_the_masking_stage_reports_pose_sam_and_keeps_the_hands_out():
    """Through make_mask with no garment detector: SAM's answer kept -> ``pose+sam``; the
    hands it surrounded stay out (islands removed, holes not filled)."""
    from types import SimpleNamespace

    from core.contract import MaskingOptions
    from core.masking.auto import make_mask

    image, pose = _figure()

    class Estimator:
        name = "hand-drawn"

        def estimate(self, img, person_box=None):
            return pose

    models = SimpleNamespace(garments=None, sam=_Sam(np.ones((H, W), bool)), pose=Estimator(),
                             face_detectors=[], hand_detectors=[],
                             missing={"garments": "garments-yolov8s-seg not baked"},
                             load_issues=[])
    opts = MaskingOptions(targets=["upper"], protect_face=False, face_margin=0.25,
                          protect_hands=True, hand_margin=0.1, mask_dilate_px=0,
                          mask_feather_px=0)
    out = make_mask(models, image, opts, None)
    assert out.source == "pose+sam" and out.fallback == "pose" and "refined by SAM" in out.reason
    for side in ("left", "right"):
        x, y = _hand(side)
        assert not out.binary[int(y), int(x)], side
    assert out.binary[200, 200]  # the chest
    models.sam = _Sam(np.zeros((H, W), bool))
    out = make_mask(models, image, opts, None)
    assert out.source == "pose" and "SAM not used" in out.reason
