"""Masking with the commercial profiles' models alone (a commercial dev bake: the dev weights
minus the garment detector and InsightFace): the real MediaPipe face, palm and pose models,
the tiny random SAM through the real loader. What a paying customer gets must be good:

- faces 12/12 and the required hands on the guard's photos (boxes drawn by eye in
  tests/test_mediapipe_detectors.py), protected from an all-white mask;
- ``upper`` on grace_hopper and the astronaut as the pose fallback measured (every cloth box
  >= 90 % covered, background <= 2 %; tests/test_pose.py's boxes);
- ``lower`` and ``dress`` on bus.jpg's two men, each picked with a ``person_box``: legs (or
  coat and thighs) covered, background and shoes not, beyond a small margin. All boxes here
  were drawn by hand on the photo (a 50 px grid over it), not taken from any model.

The tiny SAM is random, so its mask never agrees with the pose region: these jobs report
``pose`` with the reason, and the region is the pose's.
"""

from __future__ import annotations

import numpy as np
import pytest

from core.contract import MaskingOptions
from core.masking.auto import make_mask
from tests.test_mediapipe_detectors import FACES, HANDS, load_photo
from tests.test_pose import ANNOTATIONS

pytestmark = pytest.mark.slow

#: bus.jpg (810 x 1080): the man in the beige coat (left) and the man in the black coat
#: (middle), ``person_box`` as a caller would draw it, and regions of each drawn by hand.
BUS = {
    "left": {
        "box": [40, 390, 250, 905],
        "coat": [(72, 610, 118, 680), (75, 470, 112, 540)],
        "thighs": [(82, 715, 110, 745), (148, 715, 175, 745)],
        # below the knees; the first stops above the hand of the person at the photo's edge
        "shins": [(68, 828, 86, 852), (170, 805, 192, 835)],
        "shoes": [(55, 868, 100, 895), (185, 865, 235, 893)],
        "background": [(122, 775, 138, 800), (200, 720, 235, 780), (110, 850, 165, 870)],
    },
    "middle": {
        "box": [220, 400, 350, 862],
        "coat": [(232, 580, 250, 640), (312, 590, 332, 650)],
        "thighs": [(295, 712, 325, 740)],  # the bent leg, above its knee
        "shins": [(250, 760, 275, 800)],
        "shoes": [(258, 830, 288, 855)],
        "background": [(302, 795, 340, 815), (200, 720, 235, 780)],
    },
}


@pytest.fixture(scope="module")
def models(commercial_weights):
    from core.models import ModelSet
    from core.settings import Settings

    ms = ModelSet.load(Settings(weights_dir=commercial_weights, device="cpu"))
    assert ms.garments is None and ms.sam is not None and ms.pose is not None
    assert [d.name for d in ms.face_detectors] == ["blazeface"]
    assert [d.name for d in ms.hand_detectors] == ["palm"]
    return ms


def _opts(targets, person_box=None) -> MaskingOptions:
    return MaskingOptions(targets=targets, protect_face=True, face_margin=0.25,
                          protect_hands=True, hand_margin=0.1, mask_dilate_px=0,
                          mask_feather_px=0, person_box=person_box)


def _cover(mask: np.ndarray, boxes) -> list[float]:
    return [float(mask[y0:y1, x0:x1].mean()) for x0, y0, x1, y1 in boxes]


@pytest.mark.parametrize("name", sorted(FACES))
def test_blazeface_and_palm_alone_protect_every_face_and_the_required_hands(models, name):
    img = load_photo(name)
    out = make_mask(models, img, _opts(["upper"]), np.ones(img.shape[:2], bool))
    for x0, y0, x1, y1 in FACES[name]:  # 12 faces over the five photos
        assert out.alpha[y0:y1, x0:x1].max() == 0, f"face {(x0, y0, x1, y1)} left in the mask"
    if name in HANDS:
        x0, y0, x1, y1 = HANDS[name]
        dx, dy = int((x1 - x0) * 0.15), int((y1 - y0) * 0.15)
        assert out.alpha[y0 + dy:y1 - dy, x0 + dx:x1 - dx].max() == 0, "hand left in the mask"
    assert all(f.detectors == ["blazeface"] for f in out.faces)
    assert out.coverage > 0.3


@pytest.mark.parametrize("name", sorted(ANNOTATIONS))
def test_upper_from_the_pose_covers_the_jacket_not_the_background(models, name):
    img, ann = load_photo(name), ANNOTATIONS[name]
    out = make_mask(models, img, _opts(["upper"]), None)
    assert out.source == "pose" and out.fallback == "pose", out.reason
    assert "garments-yolov8s-seg not baked" in out.reason and "SAM not used" in out.reason
    x0, y0, x1, y1 = ann["face"]
    assert not out.binary[y0:y1, x0:x1].any()
    assert min(_cover(out.binary, ann["cloth"])) >= 0.9
    assert max(_cover(out.binary, ann["background"])) <= 0.02


@pytest.mark.parametrize("who", sorted(BUS))
def test_lower_on_a_boxed_person_covers_the_legs_not_the_shoes(models, who):
    img, p = load_photo("bus"), BUS[who]
    out = make_mask(models, img, _opts(["lower"], p["box"]), None)
    assert out.source == "pose" and "the boxed person" in out.reason
    legs = _cover(out.binary, p["thighs"] + p["shins"])
    assert min(legs) >= 0.8 and np.mean(legs) >= 0.9, legs
    # a small margin: the shoe's top may touch the hem, no more
    assert max(_cover(out.binary, p["shoes"])) <= 0.1
    assert max(_cover(out.binary, p["background"])) <= 0.02
    # the pose is the boxed person's: hips, knees and ankles (landmarks 23-28) in the box
    bx0, by0, bx1, by1 = p["box"]
    for x, y, _v in out.pose_keypoints[23:29]:
        assert bx0 <= x <= bx1 and by0 <= y <= by1, (x, y)


@pytest.mark.parametrize("who", sorted(BUS))
def test_dress_on_a_boxed_person_covers_coat_and_thighs_not_shins_or_shoes(models, who):
    img, p = load_photo("bus"), BUS[who]
    out = make_mask(models, img, _opts(["dress"], p["box"]), None)
    assert out.source == "pose"
    assert min(_cover(out.binary, p["coat"])) >= 0.7
    if who == "left":  # the middle man's coat hides his thighs
        assert min(_cover(out.binary, p["thighs"])) >= 0.9
    assert max(_cover(out.binary, p["shins"] + p["shoes"])) <= 0.1
    assert max(_cover(out.binary, p["background"])) <= 0.02


def test_without_a_box_the_largest_person_is_masked_and_a_box_picks_another(models):
    img = load_photo("bus")
    largest = make_mask(models, img, _opts(["lower"]), None).binary
    middle = make_mask(models, img, _opts(["lower"], BUS["middle"]["box"]), None).binary
    # the man in the beige coat is the largest: his legs, not the middle man's
    assert min(_cover(largest, BUS["left"]["thighs"])) >= 0.9
    assert max(_cover(largest, BUS["middle"]["shins"])) <= 0.1
    assert max(_cover(middle, BUS["left"]["thighs"])) <= 0.02


def test_a_person_box_outside_the_photo_is_an_invalid_input(models):
    from core.errors import JobError

    img = load_photo("bus")
    with pytest.raises(JobError) as e:
        make_mask(models, img, _opts(["lower"], [900, 100, 1000, 200]), None)
    assert e.value.code.value == "invalid_input" and e.value.field == "person_box"
