"""Detection-to-mask logic with controlled inputs (synthetic detections, SAM masks and faces fed
to the masking stage), and the fallback on real photos."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from core.contract import JobRequest
from core.errors import JobError
from core.masking.auto import make_mask
from core.masking.fallback import fallback_mask
from core.masking.detectors import BoxDetection
from core.masking.garments import GarmentDetection

H, W = 300, 200


def _det(label, group, box, score=0.9):
    x0, y0, x1, y1 = box
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return GarmentDetection(label=label, class_id=0, group=group, score=score,
                            box=(float(x0), float(y0), float(x1), float(y1)), mask=m)


class _Detector:
    def __init__(self, dets):
        self.dets = dets

    def detect(self, image, *, masks=True):
        return [d if masks else replace(d, mask=None) for d in self.dets]


class _Sam:
    """Returns, per box, a mask of the box shrunk by 2 px with a hole and a stray island."""

    def __init__(self):
        self.calls = []

    def refine(self, image, boxes):
        self.calls.append(len(boxes))
        out = []
        for x0, y0, x1, y1 in boxes:
            m = np.zeros((H, W), bool)
            m[int(y0) + 2:int(y1) - 2, int(x0) + 2:int(x1) - 2] = True
            cy, cx = int((y0 + y1) / 2), int((x0 + x1) / 2)
            m[cy - 2:cy + 2, cx - 2:cx + 2] = False  # hole
            m[1, 1] = True  # island
            out.append((m, 0.88))
        return out


class _Faces:
    name = "test-faces"
    identity = {"key": "test-faces", "source": "test", "revision": "0", "dev": True}

    def __init__(self, boxes):
        self.boxes = boxes

    def detect(self, image, *faces):
        return [BoxDetection(box=b, score=0.99, detectors=[self.name]) for b in self.boxes]


def _models(dets=(), sam=None, faces=(), hands=None):
    return SimpleNamespace(garments=_Detector(dets), sam=sam, pose=None,
                           face_detectors=[_Faces(list(faces))],
                           hand_detectors=[hands] if hands is not None else [],
                           missing={}, load_issues=[])


def _req(**kw):
    base = dict(image="x", task="mask", mask_dilate_px=0, mask_feather_px=0)
    base.update(kw)
    return JobRequest(**base).masking


IMG = np.full((H, W, 3), 128, np.uint8)
SHIRT = _det("long_sleeved_shirt", "upper", (40, 80, 160, 170))
TROUSERS = _det("trousers", "lower", (50, 170, 150, 290))
JACKET = _det("long_sleeved_outwear", "outerwear", (30, 70, 170, 180), score=0.7)


@pytest.mark.parametrize("targets,expected", [
    (["upper"], {"long_sleeved_shirt"}),
    (["lower"], {"trousers"}),
    (["upper", "lower"], {"long_sleeved_shirt", "trousers"}),
    (["outerwear"], {"long_sleeved_outwear"}),
    (["full"], {"long_sleeved_shirt", "trousers", "long_sleeved_outwear"}),
])
def test_class_mapping_per_target(targets, expected):
    out = make_mask(_models([SHIRT, TROUSERS, JACKET]), IMG, _req(targets=targets), None)
    assert out.source == "detector"
    assert {d.label for d in out.detections} == expected
    union = np.zeros((H, W), bool)
    for d in (SHIRT, TROUSERS, JACKET):
        if d.label in expected:
            union |= d.mask
    assert np.array_equal(out.binary, union)


def test_sam_refines_each_box_once_and_cleans_islands_and_holes():
    sam = _Sam()
    out = make_mask(_models([SHIRT, TROUSERS], sam=sam), IMG, _req(targets=["upper", "lower"]), None)
    assert sam.calls == [2]  # one call (one set_image) for both boxes
    assert out.source == "detector+sam"
    assert not out.binary[1, 1]  # island removed
    assert out.binary[125, 100]  # hole at the shirt's centre filled
    assert all(d.sam_score == pytest.approx(0.88) for d in out.detections)
    assert not out.binary[80:82, 40:160].any()  # SAM's tighter edge, not the detector's box


def test_with_sam_the_detector_skips_full_size_masks_and_a_sam_failure_still_masks():
    """SAM refines the detector's boxes, so the detector is asked for boxes only; when SAM
    fails, the detector's own masks are made after all and used."""
    calls = []

    class Detector(_Detector):
        def detect(self, image, *, masks=True):
            calls.append(masks)
            return super().detect(image, masks=masks)

    class BrokenSam:
        def refine(self, image, boxes):
            raise RuntimeError("SAM broke")

    models = _models([SHIRT, TROUSERS], sam=_Sam())
    models.garments = Detector([SHIRT, TROUSERS])
    make_mask(models, IMG, _req(targets=["upper", "lower"]), None)
    assert calls == [False]
    calls.clear()
    models.sam = BrokenSam()
    out = make_mask(models, IMG, _req(targets=["upper", "lower"]), None)
    assert calls == [False, True] and out.source == "detector"
    assert np.array_equal(out.binary, SHIRT.mask | TROUSERS.mask)


def test_faces_are_subtracted_from_auto_masks():
    face = (80.0, 60.0, 120.0, 100.0)  # overlaps the jacket
    out = make_mask(_models([JACKET], faces=[face]), IMG,
                    _req(targets=["outerwear"], mask_dilate_px=12, mask_feather_px=10,
                         face_margin=0.25), None)
    assert out.alpha[50:110, 70:130].max() == 0.0  # face box grown by 25% = 10 px each side
    assert out.faces[0].box == list(face)
    assert out.binary[50:110, 70:130].sum() == 0


def test_nothing_found_falls_back_with_reason():
    out = make_mask(_models([TROUSERS]), IMG, _req(targets=["dress"]), None)
    assert out.source == "grabcut" and out.fallback == "grabcut"
    assert "no garment found" in out.reason and "torso heuristic" in out.reason
    assert out.coverage > 0


def test_missing_detector_falls_back():
    models = _models()
    models.garments = None
    models.missing = {"garments": "garments-yolov8s-seg not baked"}
    out = make_mask(models, IMG, _req(), None)
    assert out.source == "grabcut" and "not baked" in out.reason


def test_person_box_picks_the_garments_and_the_face_that_anchors_grabcut():
    """Two people: the detector's garments and GrabCut's face are the boxed person's."""
    left, right = _det("short_sleeved_shirt", "upper", (10, 80, 90, 170)), SHIRT
    out = make_mask(_models([left, right]), IMG, _req(person_box=[0, 0, 95, 300]), None)
    assert out.source == "detector" and [d.box for d in out.detections] == [list(left.box)]
    faces = [(20.0, 20.0, 50.0, 50.0), (130.0, 20.0, 160.0, 50.0)]
    out = make_mask(_models([], faces=faces), IMG, _req(person_box=[110, 0, 200, 300]), None)
    assert out.source == "grabcut"
    ys, xs = np.nonzero(out.binary)
    assert abs(xs.mean() - 145) < 20 and ys.min() >= 50  # hung below the right face


def test_mask_entirely_inside_a_face_is_empty_mask():
    provided = np.zeros((H, W), bool)
    provided[65:95, 85:115] = True
    with pytest.raises(JobError) as e:
        make_mask(_models(faces=[(80.0, 60.0, 120.0, 100.0)]), IMG, _req(), provided)
    assert e.value.code.value == "empty_mask"


# face boxes measured by eye on the photos (x0, y0, x1, y1 px)
FACES = {"astronaut": (175, 60, 275, 170), "bus": (105, 400, 160, 475), "zidane": (905, 80, 1060, 280)}


@pytest.mark.parametrize("name", ["astronaut", "bus", "zidane"])
def test_fallback_is_a_plausible_torso_below_the_face(photos, name):
    img = np.asarray(Image.open(photos[name]).convert("RGB"))
    face = FACES[name]
    mask, how = fallback_mask(img, ["upper"], [face])
    ys, xs = np.nonzero(mask)
    fw, fh = face[2] - face[0], face[3] - face[1]
    assert "below the largest face" in how
    assert ys.min() >= face[3]  # starts below the chin
    assert abs(xs.mean() - (face[0] + face[2]) / 2) < 0.75 * fw  # centred under the face
    assert ys.mean() < face[3] + 3.5 * fh
    # documented band: 0.5..8 face areas (a torso is ~3-5 face areas; clipped by the frame)
    assert 0.5 * fw * fh <= mask.sum() <= 8 * fw * fh


def test_haar_stands_in_when_no_face_model_is_baked(dev_weights, tmp_path, photos):
    """Without SCRFD weights the worker still protects faces (OpenCV's cascade)."""
    import shutil

    from core.models import ModelSet
    from core.settings import Settings
    from weights.manifest import load_receipt, write_receipt_entry

    shutil.copytree(dev_weights / "diffusers", tmp_path / "diffusers")
    write_receipt_entry(tmp_path, "sd15-inpaint", load_receipt(dev_weights).models["sd15-inpaint"])
    ms = ModelSet.load(Settings(weights_dir=tmp_path, device="cpu"))
    assert [d.identity["key"] for d in ms.face_detectors] == ["opencv-haar-frontalface"]
    img = np.asarray(Image.open(photos["astronaut"]).convert("RGB"))
    out = make_mask(ms, img, _req(targets=["upper"]), None)
    assert out.source == "grabcut"
    (face,) = out.faces
    fx0, fy0, fx1, fy1 = FACES["astronaut"]
    bx0, by0, bx1, by1 = face.box
    assert bx0 < (fx0 + fx1) / 2 < bx1 and by0 < (fy0 + fy1) / 2 < by1  # on the real face
    assert "below the largest face" in out.reason
    assert out.alpha[int(by0):int(by1), int(bx0):int(bx1)].max() == 0


def test_fallback_is_repeatable(photos):
    """A redelivered job must repaint the same region (GrabCut draws from OpenCV's RNG)."""
    img = np.asarray(Image.open(photos["bus"]).convert("RGB"))
    masks = [fallback_mask(img, ["upper"], [])[0] for _ in range(3)]
    assert all(np.array_equal(masks[0], m) for m in masks[1:])
