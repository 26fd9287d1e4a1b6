"""The human guard's logic with controlled detectors: union, failures, hands, the hard stop.

Real detectors on real photos are in tests/test_human_guard.py; here every detector is a small
fake with known boxes, so each rule is checked exactly.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from core.contract import DetectorIssue, JobRequest
from core.errors import JobError
from core.masking.auto import make_mask
from core.masking.detectors import BoxDetection
from core.masking.guard import merge_boxes

H, W = 200, 300
IMG = np.full((H, W, 3), 100, np.uint8)
ALL = np.ones((H, W), bool)


class _Boxes:
    """A detector that returns fixed boxes (or raises), and records what it was given."""

    def __init__(self, name, boxes=(), fail=False):
        self.name = name
        self.identity = {"key": name, "source": "test", "revision": "0", "dev": True}
        self.boxes, self.fail, self.calls = list(boxes), fail, []

    def detect(self, image, *args):
        self.calls.append(args)
        if self.fail:
            raise RuntimeError("boom")
        return [BoxDetection(box=b, score=0.9, detectors=[self.name]) for b in self.boxes]


def _models(faces=(), hands=(), load_issues=()):
    return SimpleNamespace(garments=None, sam=None, pose=None, face_detectors=list(faces),
                           hand_detectors=list(hands), missing={"garments": "not baked"},
                           load_issues=list(load_issues))


def _req(**kw):
    base = dict(image="x", task="mask", mask_dilate_px=4, mask_feather_px=4, face_margin=0.0,
                hand_margin=0.0)
    base.update(kw)
    return JobRequest(**base).masking


def _zero_inside(alpha, box):
    x0, y0, x1, y1 = (int(v) for v in box)
    return alpha[y0:y1, x0:x1].max() == 0.0


def test_every_face_detector_counts_and_overlaps_merge():
    a = _Boxes("blazeface", [(10, 10, 50, 60), (200, 20, 240, 70)])
    b = _Boxes("scrfd", [(14, 6, 54, 58)])  # the same face, a slightly different box
    out = make_mask(_models([a, b]), IMG, _req(), ALL)
    assert len(out.faces) == 2
    first = next(f for f in out.faces if f.box[0] < 100)
    assert first.box == [10.0, 6.0, 54.0, 60.0]  # the enclosing box of both
    assert sorted(first.detectors) == ["blazeface", "scrfd"]
    for f in out.faces:
        assert _zero_inside(out.alpha, f.box) and not out.binary[int(f.box[1]):int(f.box[3]),
                                                                 int(f.box[0]):int(f.box[2])].any()
    assert {i["key"] for i in out.identities} == {"blazeface", "scrfd"}


def test_a_blind_detector_cannot_switch_protection_off():
    blind = _Boxes("blind", [])
    seeing = _Boxes("seeing", [(100, 50, 150, 110)])
    for order in ([blind, seeing], [seeing, blind]):
        out = make_mask(_models(order), IMG, _req(), ALL)
        assert [f.detectors for f in out.faces] == [["seeing"]]
        assert _zero_inside(out.alpha, (100, 50, 150, 110))


def test_a_failing_detector_is_reported_and_the_others_still_protect():
    broken = _Boxes("broken", fail=True)
    seeing = _Boxes("seeing", [(100, 50, 150, 110)])
    out = make_mask(_models([broken, seeing]), IMG, _req(), ALL)
    assert _zero_inside(out.alpha, (100, 50, 150, 110))
    assert out.issues == [DetectorIssue(detector="broken", stage="run", message="failed (RuntimeError)")]


def test_no_face_detector_able_to_run_stops_the_job():
    with pytest.raises(JobError) as e:
        make_mask(_models([_Boxes("broken", fail=True)]), IMG, _req(), ALL)
    assert e.value.code.value == "face_detection_unavailable" and not e.value.retryable
    with pytest.raises(JobError) as e:
        make_mask(_models([]), IMG, _req(), ALL)
    assert e.value.code.value == "face_detection_unavailable"
    # without face protection the same worker still serves the job
    out = make_mask(_models([_Boxes("broken", fail=True)]), IMG, _req(protect_face=False), ALL)
    assert out.alpha.min() == 1.0


def test_load_issues_are_reported_in_every_job():
    issue = DetectorIssue(detector="faces-blazeface-full", stage="load", message="failed to load")
    out = make_mask(_models([_Boxes("ok")], load_issues=[issue]), IMG, _req(), ALL)
    assert out.issues == [issue]


def test_hands_are_removed_after_feathering_with_their_margin():
    face = (20, 20, 60, 70)
    hand = (150, 100, 190, 150)
    hands = _Boxes("palm", [hand])
    out = make_mask(_models([_Boxes("f", [face])], [hands]), IMG,
                    _req(hand_margin=0.25, mask_dilate_px=20, mask_feather_px=20), ALL)
    assert hands.calls == [([[20.0, 20.0, 60.0, 70.0]],)]  # hand detectors see the faces
    assert [h.box for h in out.hands] == [[150.0, 100.0, 190.0, 150.0]]
    assert _zero_inside(out.alpha, (140, 87.5, 200, 162.5))  # grown by 25 % of 40 x 50 px
    assert out.alpha[100, 139] > 0 and out.alpha[86, 170] > 0  # just outside the margin


def test_protect_hands_false_leaves_hands_in_the_mask():
    hands = _Boxes("palm", [(150, 100, 190, 150)])
    out = make_mask(_models([_Boxes("f")], [hands]), IMG, _req(protect_hands=False), ALL)
    assert hands.calls == [] and out.hands == [] and out.alpha.min() == 1.0


def test_a_failing_hand_detector_is_reported_not_fatal():
    out = make_mask(_models([_Boxes("f")], [_Boxes("palm", fail=True)]), IMG, _req(), ALL)
    assert [i.detector for i in out.issues] == ["palm"] and out.alpha.min() == 1.0


def test_merge_is_transitive_and_keeps_disjoint_boxes():
    chain = [BoxDetection(box=(0, 0, 10, 10), score=0.5, detectors=["a"]),
             BoxDetection(box=(4, 0, 14, 10), score=0.7, detectors=["b"]),
             BoxDetection(box=(8, 0, 18, 10), score=0.6, detectors=["c"]),
             BoxDetection(box=(100, 100, 110, 110), score=0.9, detectors=["a"])]
    merged = merge_boxes(chain)
    assert [m.box for m in merged] == [(100.0, 100.0, 110.0, 110.0), (0.0, 0.0, 18.0, 10.0)]
    assert merged[1].detectors == ["a", "b", "c"] and merged[1].score == 0.7
