"""SAM prompted from the target person's pose: the garment masking of a worker without a garment
detector (the commercial profiles), when SAM is baked.

The pose region (:mod:`core.masking.pose_region`: polygons between keypoints, cut by the person
segmentation) knows *which part* of the person a garment covers, but its outline is the
segmentation's: skin of bare arms, a bag held against the body, a neighbour's sleeve. SAM
(Kirillov et al. 2023) draws the garment's own outline when told where it is. The prompts, all
from the 33 MediaPipe keypoints (:data:`core.masking.detectors.POSE_LANDMARKS`):

- positive points on the body parts the targets cover: the torso for ``upper`` / ``outerwear``
  (upper chest, chest and belly on the centre line, and each flank), the hips and thighs for
  ``lower`` (the pelvis and each thigh's middle), both for ``dress`` / ``full``; a point is kept
  only where the pose region is (so never on the head, a hand or the background);
- negative points on the face (the nose), on each seen hand (the mean of its wrist, pinky,
  index and thumb keypoints), on the parts of the person the targets leave out (the knees for
  ``upper`` / ``outerwear``, the chest for ``lower``), and on the background: the prompt box's
  corners and edge midpoints (inset by :data:`BACKGROUND_INSET`) where the segmentation says
  no person;
- a box around the keypoints of the targets' body parts, sleeves included (shoulders, elbows,
  wrists, hips; hips, knees, ankles for ``lower``), grown by :data:`BOX_MARGIN` body units.

SAM's mask is then trimmed to the groups' polygons (the garment cannot extend beyond the
generous region the pose allows) minus the head, hands and feet, and to the person segmentation
grown by :data:`PERSON_MARGIN` (SAM refines the outline; it never adds background), and is
kept only when it agrees
with the pose region (IoU >= :data:`MIN_AGREEMENT`); otherwise the pose region stands and
``mask_info.reason`` says why.

Why hand-written: no library turns pose keypoints into SAM prompts.
Arrays: image H x W x 3 uint8 RGB; masks H x W bool; points N x 2 float px (x, y).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from core.masking.detectors import POSE_LANDMARKS, Pose
from core.masking.pose_region import (MIN_VISIBILITY, SEGMENTATION_THRESHOLD, _check_groups,
                                      body_unit, drawn_region)

#: Box margin around the keypoints, body units: the top of the shoulders and a loose sleeve
#: stand ~0.1-0.3 u beyond the joints (pose_region's UPPER/OUTERWEAR ``top``/``side``).
BOX_MARGIN = 0.3
#: Background points sit this fraction of the box's size inside its corners and edges.
BACKGROUND_INSET = 0.03
#: SAM's mask is kept when its IoU with the pose region reaches this. The pose region is
#: generous (a shirt's region includes bare forearms), so a good garment mask can lose a third
#: of it; below a half, SAM has taken something else (the whole person, the background).
#: Not measured against the real SAM here (no real SAM weights offline): check it on a GPU run.
MIN_AGREEMENT = 0.5

#: How far (body units) SAM's mask may pass the person segmentation's edge (cut there): the
#: segmentation is a 256 px map warped to the photo, soft by a few px at a person's outline.
PERSON_MARGIN = 0.1

_IDX = {name: i for i, name in enumerate(POSE_LANDMARKS)}
_TORSO_GROUPS = {"upper", "outerwear", "dress", "full"}
_LEG_GROUPS = {"lower", "dress", "full"}


@dataclass
class PosePrompt:
    """SAM prompts for one person: ``box`` ``(x0, y0, x1, y1)`` px, ``points`` N x 2 float px,
    ``labels`` N int (1 = garment, 0 = not)."""

    box: tuple[float, float, float, float]
    points: np.ndarray
    labels: np.ndarray


def _xy(pose: Pose, name: str) -> np.ndarray:
    return pose.keypoints[_IDX[name], :2].astype(np.float64)


def _seen(pose: Pose, name: str) -> bool:
    return bool(pose.keypoints[_IDX[name], 2] >= MIN_VISIBILITY)


def positive_points(pose: Pose, groups: Sequence[str]) -> list[np.ndarray]:
    """Points on the garment's body parts for ``groups`` (before the region check)."""
    ls, rs = _xy(pose, "left_shoulder"), _xy(pose, "right_shoulder")
    lh, rh = _xy(pose, "left_hip"), _xy(pose, "right_hip")
    s, hip = (ls + rs) / 2, (lh + rh) / 2
    pts: list[np.ndarray] = []
    if _TORSO_GROUPS & set(groups):
        # the centre line at 20/45/70 % of the way down (upper chest, chest, belly: a
        # portrait cut at the waist keeps the first two); each flank at 30 %, a quarter in
        pts += [s + (hip - s) * f for f in (0.2, 0.45, 0.7)]
        for a, b in ((ls, lh), (rs, rh)):
            flank = a + (b - a) * 0.3
            pts.append(flank + (s + (hip - s) * 0.3 - flank) * 0.25)
    if _LEG_GROUPS & set(groups):
        lk, rk = _xy(pose, "left_knee"), _xy(pose, "right_knee")
        # the pelvis, a little below the hip line; each thigh's middle
        pts += [hip + ((lk + rk) / 2 - hip) * 0.15, (lh + lk) / 2, (rh + rk) / 2]
    return pts


def negative_points(pose: Pose, groups: Sequence[str]) -> list[np.ndarray]:
    """Points on the face, the seen hands and the body parts ``groups`` leave out."""
    pts = [_xy(pose, "nose")]
    for side in ("left", "right"):
        names = [f"{side}_{j}" for j in ("wrist", "pinky", "index", "thumb")]
        if any(_seen(pose, n) for n in names):
            pts.append(np.mean([_xy(pose, n) for n in names], axis=0))
    g = set(groups)
    if not g & _LEG_GROUPS:  # a top: the legs are not part of it
        pts += [_xy(pose, "left_knee"), _xy(pose, "right_knee")]
    if not g & _TORSO_GROUPS:  # trousers or a skirt: the chest is not part of it
        s = (_xy(pose, "left_shoulder") + _xy(pose, "right_shoulder")) / 2
        hip = (_xy(pose, "left_hip") + _xy(pose, "right_hip")) / 2
        pts.append(s + (hip - s) * 0.3)
    return pts


def prompt_box(pose: Pose, groups: Sequence[str], shape: tuple[int, int]
               ) -> tuple[float, float, float, float]:
    """The box around the targets' keypoints (sleeves included), grown by :data:`BOX_MARGIN`
    body units and clipped to the image."""
    names = []
    if _TORSO_GROUPS & set(groups):
        names += [f"{s}_{j}" for s in ("left", "right")
                  for j in ("shoulder", "elbow", "wrist", "hip")]
    if _LEG_GROUPS & set(groups):
        names += [f"{s}_{j}" for s in ("left", "right") for j in ("hip", "knee")]
    if {"lower", "full"} & set(groups):
        names += ["left_ankle", "right_ankle"]
    pts = np.array([_xy(pose, n) for n in names])
    m = BOX_MARGIN * body_unit(pose)
    h, w = shape
    x0, y0 = np.maximum(pts.min(0) - m, 0.0)
    x1, y1 = np.minimum(pts.max(0) + m, (w, h))
    return float(x0), float(y0), float(x1), float(y1)


def _background_points(box, segmentation: np.ndarray) -> list[np.ndarray]:
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * BACKGROUND_INSET, (y1 - y0) * BACKGROUND_INSET
    xs, ys = (x0 + dx, (x0 + x1) / 2, x1 - dx), (y0 + dy, (y0 + y1) / 2, y1 - dy)
    h, w = segmentation.shape
    out = []
    for x in xs:
        for y in ys:
            if (x, y) == (xs[1], ys[1]):
                continue  # the centre is the person
            xi, yi = min(int(x), w - 1), min(int(y), h - 1)
            if segmentation[yi, xi] <= SEGMENTATION_THRESHOLD:
                out.append(np.array([x, y]))
    return out


def _inside(region: np.ndarray, p: np.ndarray) -> bool:
    h, w = region.shape
    x, y = int(round(p[0])), int(round(p[1]))
    return 0 <= x < w and 0 <= y < h and bool(region[y, x])


def pose_prompt(pose: Pose, targets: Sequence[str], region: np.ndarray) -> PosePrompt | None:
    """The SAM prompts for ``targets`` on ``pose`` (see the module docstring).

    Args:
        pose: the target person's pose (keypoints px; segmentation H x W).
        targets: garment groups.
        region: H x W bool, the pose region (:func:`core.masking.pose_region.pose_region`);
            positive points outside it are dropped.

    Returns:
        The prompts, or None when no positive point lies in the region.
    """
    groups = _check_groups(targets)
    h, w = region.shape
    pos = [p for p in positive_points(pose, groups) if _inside(region, p)]
    if not pos:
        return None
    box = prompt_box(pose, groups, (h, w))
    neg = [p for p in negative_points(pose, groups)
           if 0 <= p[0] < w and 0 <= p[1] < h and not _inside(region, p)]
    neg += _background_points(box, pose.segmentation)
    points = np.array(pos + neg, np.float64)
    labels = np.array([1] * len(pos) + [0] * len(neg), np.int64)
    return PosePrompt(box=box, points=points, labels=labels)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two H x W bool masks (0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def refine_with_sam(sam, image: np.ndarray, pose: Pose, targets: Sequence[str],
                    region: np.ndarray) -> tuple[np.ndarray | None, str]:
    """SAM's garment mask from the pose prompts, trimmed and checked against ``region``.

    Args:
        sam: a :class:`core.masking.sam.SamRefiner`.
        image: H x W x 3 uint8 RGB.
        pose: the target person's pose.
        targets: garment groups.
        region: H x W bool, the pose region.

    Returns:
        ``(mask, note)``: the H x W bool mask, or None when it is not kept, and a short note
        (why not; SAM's score and agreement when kept).

    Raises:
        Whatever SAM raises (the caller keeps the pose region and reports it).
    """
    prompt = pose_prompt(pose, targets, region)
    if prompt is None:
        return None, "no prompt point on the pose region"
    mask, score = sam.segment(image, prompt.box, prompt.points, prompt.labels)
    x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
    inside = np.zeros_like(mask)
    inside[y0:y1, x0:x1] = True
    allowed = drawn_region(pose, targets, region.shape)
    mask &= inside
    if allowed is not None:
        mask &= allowed
    # SAM draws the garment's outline inside the person; it may pass the segmentation's soft
    # edge by a little, never reach into the background beyond it
    grow = max(1, int(round(PERSON_MARGIN * body_unit(pose))))
    person = (pose.segmentation > SEGMENTATION_THRESHOLD).astype(np.uint8)
    mask &= cv2.dilate(person, cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))).view(bool)
    agreement = iou(mask, region)
    if agreement < MIN_AGREEMENT:
        return None, (f"SAM's mask disagreed with the pose region (IoU {agreement:.2f} < "
                      f"{MIN_AGREEMENT})")
    return mask, f"SAM score {score:.2f}, IoU with the pose region {agreement:.2f}"
