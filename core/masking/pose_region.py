"""Garment regions of the main person from a MediaPipe pose: the fallback when no garment is found.

Each target group is drawn as convex polygons and thick limb segments between the 33 pose
keypoints (:data:`core.masking.detectors.POSE_LANDMARKS`), then cut by the person segmentation
(``segmentation > 0.5``), minus the head, the hands and the feet. The segmentation gives the
outline; the keypoints only decide *which part* of the person belongs to the group, so the
polygons are drawn generously and the segmentation trims them.

Scale: every length is a multiple of the body unit ``u`` (px): the distance between the shoulder
keypoints, or the shoulder-to-hip length / 1.5 when that is larger (a person turned sideways
has narrow shoulders on the photo). 1.5 is the median shoulder-to-hip / shoulder ratio of the
main person in bus.jpg, zidane.jpg, t1.jpg, grace_hopper.jpg and astronaut.png (1.09-1.76). The
fractions below are rough proportions of an adult figure, checked by eye on those photos.

Keypoints: a region needs its anchor keypoints (shoulders for ``upper``/``outerwear``/``dress``,
hips for ``lower``) at visibility >= :data:`MIN_VISIBILITY`. The other joints (elbows, wrists,
hips, knees, ankles) are used at their predicted positions even when hidden: the landmark model
extrapolates joints outside the frame, and the segmentation and the frame cut what does not exist.
Hands and feet are subtracted only where seen (a hidden hand needs no protection, and its
guessed place would bite into the garment), the head always.

Why hand-written: no library turns pose keypoints into garment regions; this is a few polygons.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from core.masking.detectors import POSE_LANDMARKS, Pose

#: MediaPipe's own threshold for drawing a landmark as visible (``drawing_utils``).
MIN_VISIBILITY = 0.5
#: Person pixels: the segmentation probability above even odds (the person's area changes by
#: 9-15 % between cut-offs 0.1 and 0.9 on grace_hopper.jpg, astronaut.png and bus.jpg).
SEGMENTATION_THRESHOLD = 0.5
#: Shoulder-to-hip length over shoulder width (see the module docstring).
TORSO_PER_SHOULDER = 1.5

#: Per garment group (all in body units u):
#: ``top``: how far above the shoulder (or waist above the hip) joints the garment starts - the
#: top of the shoulder sits ~0.1-0.15 u above the shoulder joint; a waistband ~0.3 u above the
#: hip joints. ``neck``: the collar, beside the neck (a quarter of the way in from each
#: shoulder), rises to ~0.25 u above the shoulder line (the trapezius slope; 0.25 on
#: grace_hopper.jpg).
#: ``side``: outward margin on the torso polygon (loose cloth; the segmentation trims it).
#: ``hem``: how far below the hip joints (upper/outerwear) or the knees (dress) the hem goes.
#: ``arm``/``forearm``/``thigh``/``shin``: limb band widths (a sleeve or trouser leg is at most
#: ~0.5 u wide; wider bands are harmless as the segmentation trims them).
UPPER = {"top": 0.12, "neck": 0.25, "side": 0.15, "hem": 0.15, "arm": 0.5, "forearm": 0.4}
OUTERWEAR = {"top": 0.18, "neck": 0.3, "side": 0.25, "hem": 0.6, "arm": 0.6, "forearm": 0.5}
LOWER = {"top": 0.3, "side": 0.2, "thigh": 0.6, "shin": 0.5}
DRESS = {"top": 0.12, "neck": 0.25, "side": 0.3, "hem": 0.15, "arm": 0.5, "forearm": 0.4}
#: Head: the face keypoints' hull, grown to the chin (0.9 x eyes-to-mouth below the mouth; the
#: chin is ~0.6 of that below the mouth on grace_hopper.jpg), the crown (2.2 x above the eyes,
#: hair or a cap) and a margin of 0.35 x eyes-to-mouth all round.
HEAD_CHIN, HEAD_CROWN, HEAD_MARGIN = 0.9, 2.2, 0.35
#: Hand: the wrist/pinky/index/thumb hull, extended past the knuckles by 1.0 x the
#: wrist-to-knuckle distance (the fingers), plus a margin of 0.08 u.
HAND_FINGERS, HAND_MARGIN = 1.0, 0.08
#: Foot (a shoe is not a garment): the heel-to-toe strip raised half-way to the ankle (the top
#: of a shoe), plus a margin of 0.08 u.
FOOT_RISE, FOOT_MARGIN = 0.5, 0.08
GROUPS = ("upper", "lower", "dress", "outerwear", "full")

_IDX = {name: i for i, name in enumerate(POSE_LANDMARKS)}
_FACE = [_IDX[n] for n in POSE_LANDMARKS[:11]]


def _xy(pose: Pose, name: str) -> np.ndarray:
    return pose.keypoints[_IDX[name], :2].astype(np.float64)


def _seen(pose: Pose, *names: str, limit: float = MIN_VISIBILITY) -> bool:
    return all(pose.keypoints[_IDX[n], 2] >= limit for n in names)


def body_unit(pose: Pose) -> float:
    """The body unit u (px): shoulder distance, or shoulder-to-hip / 1.5 when larger."""
    ls, rs = _xy(pose, "left_shoulder"), _xy(pose, "right_shoulder")
    lh, rh = _xy(pose, "left_hip"), _xy(pose, "right_hip")
    torso = float(np.linalg.norm((ls + rs) / 2 - (lh + rh) / 2))
    return max(float(np.linalg.norm(ls - rs)), torso / TORSO_PER_SHOULDER, 1.0)


def _poly(canvas: np.ndarray, points: Iterable[np.ndarray], margin: float, value: int = 1
          ) -> None:
    """Fill the convex hull of ``points`` grown by ``margin`` px (Minkowski sum with a disc)."""
    pts = np.round(np.asarray(list(points), np.float64)).astype(np.int32)
    hull = cv2.convexHull(pts)
    cv2.fillConvexPoly(canvas, hull, value)
    if margin >= 0.5:
        cv2.polylines(canvas, [hull], True, value, thickness=max(1, int(round(2 * margin))))


def _band(canvas: np.ndarray, a: np.ndarray, b: np.ndarray, width: float) -> None:
    """A limb segment ``a`` -> ``b`` ``width`` px wide, round at the joint ``a`` (shoulder,
    elbow, hip, knee), cut square at ``b``: a cuff or a hem ends at the wrist or ankle, and the
    next segment's round end covers an elbow or knee."""
    n = _unit(b - a)[::-1] * (-1.0, 1.0) * width / 2  # the normal, half a width long
    _poly(canvas, [a + n, a - n, b - n, b + n], 0)
    centre = (int(round(a[0])), int(round(a[1])))
    cv2.circle(canvas, centre, max(1, int(round(width / 2))), 1, thickness=-1)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-6)


def _widen(a: np.ndarray, b: np.ndarray, amount: float) -> list[np.ndarray]:
    """Move ``a`` and ``b`` apart along the line through them, ``amount`` px each."""
    d = _unit(a - b)
    return [a + d * amount, b - d * amount]


def _torso(canvas, pose, u, cfg, hem_at: tuple[str, str] = ("left_hip", "right_hip")) -> None:
    """Torso polygon from above the shoulders to ``cfg['hem']`` u below the ``hem_at`` joints."""
    ls, rs = _xy(pose, "left_shoulder"), _xy(pose, "right_shoulder")
    lo, ro = _xy(pose, hem_at[0]), _xy(pose, hem_at[1])
    down = _unit((lo + ro) / 2 - (ls + rs) / 2)
    top = _widen(ls - down * cfg["top"] * u, rs - down * cfg["top"] * u, cfg["side"] * u)
    neck = [ls + (rs - ls) * f - down * cfg["neck"] * u for f in (0.25, 0.75)]
    bottom = _widen(lo + down * cfg["hem"] * u, ro + down * cfg["hem"] * u, cfg["side"] * u)
    _poly(canvas, top + neck + bottom, 0)


def _arms(canvas, pose, u, cfg) -> None:
    for side in ("left", "right"):
        s, e, w = (_xy(pose, f"{side}_{j}") for j in ("shoulder", "elbow", "wrist"))
        _band(canvas, s, e, cfg["arm"] * u)
        _band(canvas, e, w, cfg["forearm"] * u)


def _legs(canvas, pose, u, cfg, to_ankle: bool = True) -> None:
    for side in ("left", "right"):
        h, k, a = (_xy(pose, f"{side}_{j}") for j in ("hip", "knee", "ankle"))
        _band(canvas, h, k, cfg["thigh"] * u)
        if to_ankle:
            _band(canvas, k, a, cfg["shin"] * u)


def _lower(canvas, pose, u) -> None:
    """Waist to ankles: the hips/knees hull (covers the crotch; a skirt) plus the leg bands."""
    lh, rh = _xy(pose, "left_hip"), _xy(pose, "right_hip")
    lk, rk = _xy(pose, "left_knee"), _xy(pose, "right_knee")
    shoulders = (_xy(pose, "left_shoulder") + _xy(pose, "right_shoulder")) / 2
    up = _unit(shoulders - (lh + rh) / 2)
    side = LOWER["side"] * u
    waist = _widen(lh + up * LOWER["top"] * u, rh + up * LOWER["top"] * u, side)
    _poly(canvas, waist + _widen(lh, rh, side) + _widen(lk, rk, side), 0)
    _legs(canvas, pose, u, LOWER)


def _dress(canvas, pose, u) -> None:
    """Shoulders to just below the knees, flared, with sleeves."""
    _torso(canvas, pose, u, DRESS, hem_at=("left_knee", "right_knee"))
    _legs(canvas, pose, u, {"thigh": LOWER["thigh"]}, to_ankle=False)
    _arms(canvas, pose, u, DRESS)


def _draw_head(canvas: np.ndarray, pose: Pose, value: int) -> None:
    face = pose.keypoints[_FACE, :2].astype(np.float64)
    eyes = (_xy(pose, "left_eye") + _xy(pose, "right_eye")) / 2
    mouth = (_xy(pose, "mouth_left") + _xy(pose, "mouth_right")) / 2
    d = max(float(np.linalg.norm(eyes - mouth)), 1.0)
    up = (eyes - mouth) / d
    ears = [_xy(pose, "left_ear"), _xy(pose, "right_ear")]
    extra = [mouth - up * HEAD_CHIN * d, eyes + up * HEAD_CROWN * d]
    extra += [e + up * HEAD_CROWN * d for e in ears] + [e - up * HEAD_CHIN * d for e in ears]
    _poly(canvas, list(face) + extra, HEAD_MARGIN * d, value)


def _draw_hands(canvas: np.ndarray, pose: Pose, u: float, value: int) -> None:
    for side in ("left", "right"):
        names = [f"{side}_{j}" for j in ("wrist", "pinky", "index", "thumb")]
        if not any(_seen(pose, n) for n in names):
            continue
        wrist = _xy(pose, names[0])
        knuckles = [_xy(pose, n) for n in names[1:]]
        tips = [wrist + (k - wrist) * (1 + HAND_FINGERS) for k in knuckles]
        _poly(canvas, [wrist] + knuckles + tips, HAND_MARGIN * u, value)


def _draw_feet(canvas: np.ndarray, pose: Pose, u: float, value: int) -> None:
    for side in ("left", "right"):
        if not (_seen(pose, f"{side}_heel") or _seen(pose, f"{side}_foot_index")):
            continue
        ankle, heel, toe = (_xy(pose, f"{side}_{j}") for j in ("ankle", "heel", "foot_index"))
        rise = (ankle - heel) * FOOT_RISE
        _poly(canvas, [heel, toe, heel + rise, toe + rise], FOOT_MARGIN * u, value)


def _draw_group(canvas: np.ndarray, pose: Pose, group: str) -> bool:
    """Draw ``group``'s polygons (value 1); False when its anchor keypoints are not visible."""
    if group == "full":
        drawn = [_draw_group(canvas, pose, g) for g in ("outerwear", "lower", "dress")]
        return any(drawn)
    anchors = ("left_hip", "right_hip") if group == "lower" else ("left_shoulder",
                                                                   "right_shoulder")
    if not _seen(pose, *anchors):
        return False
    u = body_unit(pose)
    if group == "lower":
        _lower(canvas, pose, u)
    elif group == "dress":
        _dress(canvas, pose, u)
    else:
        cfg = UPPER if group == "upper" else OUTERWEAR
        _torso(canvas, pose, u, cfg)
        _arms(canvas, pose, u, cfg)
    return True


def _check_groups(groups: Iterable[str]) -> list[str]:
    groups = list(dict.fromkeys(groups))
    for g in groups:
        if g not in GROUPS:
            raise ValueError(f"targets: unknown garment group {g!r}")
    return groups


def head_mask(pose: Pose, shape: tuple[int, int]) -> np.ndarray:
    """H x W bool: the head (face keypoints' hull grown to chin, crown and a margin)."""
    canvas = np.zeros(shape, np.uint8)
    _draw_head(canvas, pose, 1)
    return canvas.view(bool)


def hands_mask(pose: Pose, shape: tuple[int, int]) -> np.ndarray:
    """H x W bool: the hands seen (wrist/pinky/index/thumb hull plus fingers and a margin)."""
    canvas = np.zeros(shape, np.uint8)
    _draw_hands(canvas, pose, body_unit(pose), 1)
    return canvas.view(bool)


def group_region(pose: Pose, group: str, shape: tuple[int, int]) -> np.ndarray | None:
    """H x W bool polygon region of one garment ``group`` (before segmentation and subtraction).

    Returns None when the group's anchor keypoints are not visible (``lower``: both hips; the
    others: both shoulders; ``full``: either). Raises ``ValueError`` for an unknown group.
    """
    _check_groups([group])
    canvas = np.zeros(shape, np.uint8)
    return canvas.view(bool) if _draw_group(canvas, pose, group) else None


def pose_region(pose: Pose, targets: Sequence[str], shape: tuple[int, int]) -> np.ndarray | None:
    """The main person's garment region for ``targets`` from a pose.

    Args:
        pose: the person's :class:`Pose` (keypoints px of this image, segmentation H x W).
        targets: garment groups, any of ``upper``, ``lower``, ``dress``, ``outerwear``, ``full``.
        shape: ``(H, W)`` of the image (the segmentation's shape).

    Returns:
        H x W bool: the union of the groups that could be drawn, cut to person pixels
        (``segmentation > 0.5``), minus the head and the seen hands and feet; None when no
        group's anchor keypoints are visible or nothing is left.

    Raises:
        ValueError: an unknown group, or a segmentation whose shape is not ``shape``.
    """
    shape = (int(shape[0]), int(shape[1]))
    if pose.segmentation.shape != shape:
        raise ValueError(f"shape: segmentation is {pose.segmentation.shape}, image is {shape}")
    region = drawn_region(pose, targets, shape)
    if region is None:
        return None
    region &= pose.segmentation > SEGMENTATION_THRESHOLD
    return region if region.any() else None


def drawn_region(pose: Pose, targets: Sequence[str], shape: tuple[int, int]
                 ) -> np.ndarray | None:
    """H x W bool: the groups' polygons minus the head and the seen hands and feet, before the
    segmentation cuts them (what SAM's mask is trimmed to); None when no group could be drawn.

    Raises:
        ValueError: an unknown group.
    """
    groups = _check_groups(targets)
    # one uint8 canvas: groups drawn as 1, then head and hands drawn over them as 0 (a few
    # full-size passes in all: ~20 ms at 12 MP here)
    canvas = np.zeros((int(shape[0]), int(shape[1])), np.uint8)
    drawn = [_draw_group(canvas, pose, g) for g in groups]
    if not any(drawn):
        return None
    _draw_head(canvas, pose, 0)
    _draw_hands(canvas, pose, body_unit(pose), 0)
    _draw_feet(canvas, pose, body_unit(pose), 0)
    return canvas.view(bool)
