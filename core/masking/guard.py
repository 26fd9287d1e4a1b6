"""The human guard: every face and hand detector on the worker, unioned, failures reported.

Faces and hands are only ever *removed* from a mask, so the guard errs towards more boxes:
each detector runs on the photo, overlapping boxes from different detectors are merged into
their enclosing box (the merged box names every detector that found it), and a detector that
raises is logged and reported while the others go on. A blind or failing detector can never
switch protection off; when *no* face detector could run and the request protects faces, the
job fails with ``face_detection_unavailable`` rather than repaint unprotected.

Arrays: image H x W x 3 uint8 RGB; boxes ``(x0, y0, x1, y1)`` float px of the original image.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core import timing
from core.contract import DetectorIssue
from core.masking.detectors import Box, BoxDetection

log = logging.getLogger("maskpaint.guard")

#: Boxes from different detectors are the same face/hand when their IoU reaches this, or when
#: this share of the smaller box lies inside the larger one (a tight and a loose box of one face).
MERGE_IOU = 0.3
MERGE_CONTAINED = 0.6


def _area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _same_object(a: Box, b: Box) -> bool:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return False
    inter = iw * ih
    union = _area(a) + _area(b) - inter
    return inter / union >= MERGE_IOU or inter / max(1e-9, min(_area(a), _area(b))) >= MERGE_CONTAINED


def merge_boxes(found: Sequence[BoxDetection]) -> list[BoxDetection]:
    """Union of detections: overlapping boxes merge into their enclosing box.

    Args:
        found: detections from any number of detectors (``detectors`` names each one's source).

    Returns:
        Disjoint groups, each as one :class:`BoxDetection` whose box encloses the group, whose
        score is the group's highest and whose ``detectors`` lists every source once; sorted by
        descending score. Merging repeats until no two results overlap, so the result does not
        depend on the order of ``found``'s members beyond ties.
    """
    groups = [BoxDetection(box=tuple(float(v) for v in d.box), score=float(d.score),
                           detectors=list(dict.fromkeys(d.detectors)),
                           keypoints=list(d.keypoints)) for d in found]
    merged = True
    while merged:
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                a, b = groups[i], groups[j]
                if _same_object(a.box, b.box):
                    a.box = (min(a.box[0], b.box[0]), min(a.box[1], b.box[1]),
                             max(a.box[2], b.box[2]), max(a.box[3], b.box[3]))
                    a.score = max(a.score, b.score)
                    a.detectors = list(dict.fromkeys(a.detectors + b.detectors))
                    a.keypoints = a.keypoints or b.keypoints
                    del groups[j]
                    merged = True
                    break
            if merged:
                break
    groups.sort(key=lambda d: -d.score)
    return groups


@dataclass
class GuardRun:
    """What one kind of detector found on one photo."""

    boxes: list[BoxDetection] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)  #: detectors that completed
    identities: list[dict] = field(default_factory=list)  #: of the detectors that completed
    issues: list[DetectorIssue] = field(default_factory=list)
    ms: float = 0.0


def run_detectors(detectors: Sequence, image: np.ndarray, *args,
                  scope: str | None = None) -> GuardRun:
    """Run every detector's ``detect(image, *args)``; union the boxes; report failures.

    ``scope``: the :mod:`core.timing` scope of the model calls; ``{name}`` is replaced by each
    detector's name (``"mask.faces.{name}"`` records ``mask.faces.scrfd.forward``).

    A detector that raises is logged with its traceback and reported as a ``run`` issue; the
    others still run.
    """
    out = GuardRun()
    t = time.perf_counter()
    found: list[BoxDetection] = []
    for det in detectors:
        name = getattr(det, "name", type(det).__name__)
        try:
            with timing.scope((scope or "mask.{name}").format(name=name)):
                boxes = det.detect(image, *args)
        except Exception as exc:
            log.exception("detector %s failed", name)
            out.issues.append(DetectorIssue(detector=name, stage="run",
                                            message=f"failed ({type(exc).__name__})"))
            continue
        for b in boxes:
            if not b.detectors:
                b.detectors = [name]
        found += boxes
        out.ran.append(name)
        if getattr(det, "identity", None):
            out.identities.append(det.identity)
    out.boxes = merge_boxes(found)
    out.ms = (time.perf_counter() - t) * 1000
    return out
