"""MediaPipe face and hand detectors (ai-edge-litert) on real photos, plus their runtime pieces.

Models: the ``.tflite`` members of the ``mediapipe==0.10.21`` wheel as the dev weights bake them
(``<weights_dir>/mediapipe``; see :func:`tests.conftest.mediapipe_model`).

Face and hand boxes below were drawn by eye on the originals (face: hairline/forehead to chin,
cheek to cheek; hand: wrist to fingertips), checked on rendered crops.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.masking.detectors import FaceDetector, HandDetector
from tests.conftest import mediapipe_model
from core.masking.mediapipe.face import BlazeFaceDetector
from core.masking.mediapipe.palm import PalmDetector, inside_fraction
from core.masking.mediapipe.runtime import (
    decode_ssd, iou, letterbox, load_interpreter, ssd_anchors, weighted_nms,
)

model_path = mediapipe_model


FACE_MODEL = "face_detection_full_range_sparse.tflite"
PALM_MODEL, LANDMARK_MODEL = "palm_detection_full.tflite", "hand_landmark_full.tflite"
PALM_LITE = "palm_detection_lite.tflite"

PHOTOS = {
    "bus": ("ultralytics", "assets/bus.jpg"),
    "zidane": ("ultralytics", "assets/zidane.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "astronaut": ("skimage", "data/astronaut.png"),
    "t1": ("insightface", "data/images/t1.jpg"),
}

#: Every face a person can see in the photos, ``(x0, y0, x1, y1)`` px of the original. The
#: person at bus.jpg's right edge shows only the back of the head, the one at its left edge
#: no head at all: neither counts as a face.
FACES = {
    "bus": [(108, 410, 160, 475), (265, 412, 310, 470)],
    "zidane": [(540, 275, 690, 445), (915, 125, 1065, 290)],
    "grace_hopper": [(172, 150, 365, 335)],
    "astronaut": [(182, 78, 280, 178)],
    "t1": [(880, 75, 995, 205), (740, 360, 835, 470), (458, 290, 575, 410),
           (268, 168, 350, 275), (1130, 295, 1215, 392), (78, 290, 160, 388)],
}
#: Hands that must be found: the middle man's hand on his chest (bus), Zidane's pointing hand.
HANDS = {"bus": (236, 502, 288, 540), "zidane": (995, 405, 1150, 490)}
#: Every visible hand (gloved included); a hand detection must overlap one of these.
ALL_HANDS = {
    "bus": [HANDS["bus"], (258, 640, 292, 690), (40, 745, 80, 815), (715, 535, 755, 570)],
    "zidane": [HANDS["zidane"]],
    "grace_hopper": [],
    "astronaut": [(125, 470, 180, 512)],
    "t1": [(180, 420, 262, 500), (612, 395, 690, 505), (990, 425, 1095, 505),
           (905, 595, 990, 665), (695, 480, 785, 570), (295, 610, 365, 675),
           (1185, 560, 1258, 640)],
}


def load_photo(name: str) -> np.ndarray:
    pkg, rel = PHOTOS[name]
    spec = importlib.util.find_spec(pkg)
    assert spec is not None, f"{pkg} is not installed (requirements-dev.lock has it)"
    return np.asarray(Image.open(Path(spec.origin).parent / rel).convert("RGB"))


def grown(box, frac: float):
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * frac, (y1 - y0) * frac
    return (x0 - dx, y0 - dy, x1 + dx, y1 + dy)


def covers(found, truth) -> bool:
    """IoU >= 0.3, or ``truth`` mostly (>= 50 %) inside ``found`` grown by 25 %."""
    return iou(np.array(truth, float), np.array([found], float))[0] >= 0.3 \
        or inside_fraction(truth, grown(found, 0.25)) >= 0.5


@pytest.fixture(scope="module")
def faces() -> BlazeFaceDetector:
    return BlazeFaceDetector.load(model_path(FACE_MODEL), num_threads=2)


@pytest.fixture(scope="module")
def hands() -> PalmDetector:
    return PalmDetector.load([model_path(PALM_MODEL), model_path(PALM_LITE)],
                             model_path(LANDMARK_MODEL), num_threads=2)


@pytest.fixture(scope="module")
def found_faces(faces) -> dict[str, list]:
    return {name: faces.detect(load_photo(name)) for name in FACES}


def test_detectors_implement_the_guard_protocols(faces, hands):
    assert isinstance(faces, FaceDetector) and faces.name == "blazeface"
    assert isinstance(hands, HandDetector) and hands.name == "palm"


@pytest.mark.parametrize("name", list(FACES))
def test_every_annotated_face_is_found(found_faces, name):
    boxes = [d.box for d in found_faces[name]]
    missed = [t for t in FACES[name] if not any(covers(b, t) for b in boxes)]
    assert not missed, f"{name}: faces missed {missed}; found {boxes}"


@pytest.mark.parametrize("name", list(FACES))
def test_no_face_detection_away_from_a_face(found_faces, name):
    h, w = load_photo(name).shape[:2]
    for det in found_faces[name]:
        assert any(covers(det.box, t) for t in FACES[name]), f"{name}: false face {det.box}"
        x0, y0, x1, y1 = det.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert det.detectors == ["blazeface"] and 0.5 <= det.score <= 1.0
        assert len(det.keypoints) == 6
        # the eyes and nose lie inside the face box
        assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in det.keypoints[:3])


def test_small_faces_need_the_tiles(faces):
    """The whole image alone at 192 px loses small faces in group photos (notes §4)."""
    whole = BlazeFaceDetector(faces.model, tiles=False)
    total = sum(len(FACES[n]) for n in FACES)
    tiled = sum(any(covers(d.box, t) for d in faces.detect(load_photo(n)))
                for n in FACES for t in FACES[n])
    untiled = sum(any(covers(d.box, t) for d in whole.detect(load_photo(n)))
                  for n in FACES for t in FACES[n])
    assert tiled == total and untiled < total


@pytest.mark.parametrize("name", list(HANDS))
def test_the_visible_hand_is_found(hands, found_faces, name):
    found = hands.detect(load_photo(name), [d.box for d in found_faces[name]])
    assert any(covers(d.box, HANDS[name]) for d in found), \
        f"{name}: hand {HANDS[name]} missed; found {[d.box for d in found]}"
    for det in found:
        assert det.detectors == ["palm"] and len(det.keypoints) == 7 and 0 < det.score <= 1


def test_pooling_both_palm_models_finds_more_hands_than_either(hands, found_faces):
    """bus.jpg: the full palm model alone finds 1 of the 4 visible hands; pooled with the lite
    model, 3 (the gloved hand at the far left and the one on the right stay missed)."""
    img, faces = load_photo("bus"), [d.box for d in found_faces["bus"]]
    found = [d.box for d in hands.detect(img, faces)]
    full_only = PalmDetector(hands.palms[:1], hands.landmark)
    alone = [d.box for d in full_only.detect(img, faces)]

    def hits(boxes):
        return sum(any(covers(b, t) for b in boxes) for t in ALL_HANDS["bus"])

    assert hits(found) >= 3 > hits(alone)


@pytest.mark.parametrize("name", list(FACES))
def test_no_hand_inside_a_face_and_none_on_look_alikes(hands, found_faces, name):
    """Palm detection alone fires on Grace Hopper's chin and tie, the astronaut's zip, the
    bus man's neck, the blur left of Zidane, a glass and a nut bowl in t1 (palm score >= 0.5).
    Every hand kept must lie outside the faces and overlap a real hand."""
    found = hands.detect(load_photo(name), [d.box for d in found_faces[name]])
    for det in found:
        for face in FACES[name]:
            assert inside_fraction(det.box, face) < 0.5, f"{name}: hand {det.box} in a face"
        near = [iou(np.array(det.box), np.array([grown(t, 0.25)]))[0] for t in ALL_HANDS[name]]
        assert max(near, default=0.0) > 0, f"{name}: hand {det.box} where there is none"
    if name == "grace_hopper":  # shows no hand
        assert found == []


def test_a_hand_inside_a_given_face_box_is_dropped(hands):
    img = load_photo("zidane")
    assert any(covers(d.box, HANDS["zidane"]) for d in hands.detect(img))
    as_face = grown(HANDS["zidane"], 0.3)
    assert not any(covers(d.box, HANDS["zidane"]) for d in hands.detect(img, [as_face]))


@pytest.mark.parametrize("bad", [
    np.zeros((64, 64), np.uint8),                 # grey
    np.zeros((64, 64, 4), np.uint8),              # RGBA
    np.zeros((64, 64, 3), np.float32),            # float
    np.zeros((0, 64, 3), np.uint8),               # empty
    [[[0, 0, 0]]],                                # not an array
])
def test_non_rgb_images_raise_value_error(faces, hands, bad):
    with pytest.raises(ValueError):
        faces.detect(bad)
    with pytest.raises(ValueError):
        hands.detect(bad)


@pytest.mark.parametrize("name,size,strides,interpolated", [
    (FACE_MODEL, 192, [4], False),
    (PALM_MODEL, 192, [8, 16, 16, 16], True),
    (PALM_LITE, 192, [8, 16, 16, 16], True),
    ("pose_detection.tflite", 224, [8, 16, 32, 32, 32], True),
])
def test_anchor_counts_match_the_models(name, size, strides, interpolated):
    model = load_interpreter(model_path(name), 1)
    outputs = model.run(np.zeros((1, model.size, model.size, 3), np.float32))
    anchors = ssd_anchors(size, strides, interpolated)
    assert model.size == size
    assert all(len(anchors) == out.shape[0] for out in outputs)
    assert anchors.min() > 0 and anchors.max() < 1


def test_decode_rejects_a_wrong_anchor_count():
    with pytest.raises(ValueError, match="anchors"):
        decode_ssd(np.zeros((10, 16), np.float32), np.zeros((10, 1), np.float32),
                   np.zeros((9, 2), np.float32), 192, 6, 0.5)


@pytest.mark.parametrize("shape", [(1080, 810, 3), (720, 1280, 3), (300, 300, 3)])
def test_letterbox_round_trip_maps_a_box_back(shape):
    """A white box drawn on the image is found at the same place after letterbox + map back."""
    img = np.zeros(shape, np.uint8)
    h, w = shape[:2]
    box = (w // 4, h // 3, w // 2, h // 2)
    img[box[1]:box[3], box[0]:box[2]] = 255
    tensor, lb = letterbox(img, 192, (0.0, 1.0))
    assert tensor.shape == (1, 192, 192, 3) and tensor.dtype == np.float32
    ys, xs = np.nonzero(tensor[0, :, :, 0] > 0.5)
    u = np.array([[xs.min() / 192, ys.min() / 192], [(xs.max() + 1) / 192, (ys.max() + 1) / 192]])
    back = lb.to_image(u)
    assert np.abs(back - np.array(box).reshape(2, 2)).max() <= max(h, w) / 192 + 1
    # the transform itself is exactly invertible
    pts = np.array(box, float).reshape(2, 2)
    assert np.allclose(lb.to_image(lb.to_input(pts)), pts, atol=1e-9)


def test_letterbox_pads_black_in_the_models_range():
    tensor, lb = letterbox(np.full((100, 200, 3), 255, np.uint8), 192, (-1.0, 1.0))
    assert lb.pad_x == 0 and lb.pad_y == 48
    assert tensor[0, 0, 0, 0] == -1.0 and tensor[0, 96, 96, 0] == 1.0


def test_weighted_nms_merges_overlaps_by_score():
    boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.3, 0.8])
    kps = np.zeros((3, 1, 2))
    out_b, out_s, _ = weighted_nms(boxes, scores, kps, 0.3)
    assert out_s.tolist() == [0.9, 0.8]
    assert out_b[0].tolist() == pytest.approx([0.5, 0, 10.5, 10])  # (0*.9 + 2*.3) / 1.2
    assert out_b[1].tolist() == [50, 50, 60, 60]


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 2000, 3), (3000, 20, 3), (5, 7, 3)])
def test_tiny_and_extreme_images_give_no_boxes_and_no_error(faces, hands, shape):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert faces.detect(img) == [] and hands.detect(img) == []
