"""The masking stage: provided mask, or garments -> SAM -> minus faces, or the fallback.

Chain for ``auto`` (no mask in the request):
  1. garment detector (YOLOv8-seg) -> detections whose class maps to a requested target group;
  2. SAM refines each kept box (``set_image`` once per image) -> the best-scoring mask each;
     without SAM the detector's own segmentation masks are used;
  3. union, remove islands, fill holes;
  4. nothing found / a model missing or failing -> :func:`core.masking.fallback.fallback_mask`.
Then for every source: dilate, feather, and finally zero every face box grown by the margin.

Arrays: image H x W x 3 uint8 RGB; masks H x W bool; alpha H x W float32 [0, 1].
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from core.contract import Detection, Face, JobRequest
from core.errors import ErrorCode, JobError
from core.masking import post
from core.masking.fallback import fallback_mask

log = logging.getLogger("maskpaint.mask")


@dataclass
class MaskOutcome:
    """Result of the masking stage."""

    binary: np.ndarray  # H x W bool, before dilation/feather, faces removed
    alpha: np.ndarray  # H x W float32, the blend weights actually applied
    source: str  # provided | auto | fallback
    reason: str | None = None
    detections: list[Detection] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    used_roles: list[str] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        return float((self.alpha > 0).mean())


def _detect_faces(models, image: np.ndarray, out: MaskOutcome) -> None:
    if models.faces is None:
        return
    t = time.perf_counter()
    try:
        found = models.faces.detect(image)
    except Exception:
        log.exception("face detection failed")
        found = []
    out.timings_ms["faces"] = (time.perf_counter() - t) * 1000
    out.used_roles.append("faces")
    out.faces = [Face(score=float(f.score), box=[float(v) for v in f.box]) for f in found]


def _auto(models, image: np.ndarray, req: JobRequest, out: MaskOutcome) -> np.ndarray | None:
    """Garments -> SAM. Returns the union mask, or None with ``out.reason`` set."""
    if models.garments is None:
        out.reason = f"garment detector unavailable ({models.missing.get('garments', 'not loaded')})"
        return None
    targets = set(req.targets)
    t = time.perf_counter()
    try:
        dets = models.garments.detect(image)
    except Exception:
        log.exception("garment detection failed")
        out.reason = "garment detector failed"
        return None
    out.timings_ms["detect"] = (time.perf_counter() - t) * 1000
    out.used_roles.append("garments")
    kept = [d for d in dets if "full" in targets or d.group in targets]
    out.detections = [Detection(label=d.label, group=d.group, score=float(d.score),
                                box=[float(v) for v in d.box]) for d in kept]
    if not kept:
        out.reason = f"no garment found for targets {sorted(targets)}"
        return None
    masks = [d.mask for d in kept]
    if models.sam is not None:
        t = time.perf_counter()
        try:
            refined = models.sam.refine(image, [d.box for d in kept])
            masks = [m for m, _ in refined]
            for det, (_, score) in zip(out.detections, refined):
                det.sam_score = float(score)
            out.used_roles.append("sam")
        except Exception:
            log.exception("SAM refinement failed; using the detector's masks")
        out.timings_ms["sam"] = (time.perf_counter() - t) * 1000
    union = np.zeros(image.shape[:2], dtype=bool)
    for m in masks:
        union |= m
    union = post.clean(union)
    if not union.any():
        out.reason = "detections produced an empty mask"
        return None
    return union


def make_mask(models, image: np.ndarray, req: JobRequest, provided: np.ndarray | None) -> MaskOutcome:
    """Run the masking stage for one job.

    Args:
        models: a :class:`core.models.ModelSet` (``garments``/``sam``/``faces`` may be None).
        image: H x W x 3 uint8 RGB.
        req: the job request (targets, face protection, dilate/feather px).
        provided: H x W bool decoded from the request's ``mask``, or None for automatic.

    Raises:
        JobError(empty_mask): nothing is left to repaint (e.g. the mask lay inside a face).
    """
    h, w = image.shape[:2]
    out = MaskOutcome(binary=np.zeros((h, w), bool), alpha=np.zeros((h, w), np.float32),
                      source="provided")
    # faces are found for every source: protection, and the fallback's anchor
    if req.protect_face or provided is None:
        _detect_faces(models, image, out)
    t = time.perf_counter()
    if provided is not None:
        binary = provided
    else:
        binary = _auto(models, image, req, out)
        out.source = "auto"
        if binary is None:
            tf = time.perf_counter()
            binary, how = fallback_mask(image, req.targets, [f.box for f in out.faces])
            out.timings_ms["fallback"] = (time.perf_counter() - tf) * 1000
            out.source = "fallback"
            out.reason = f"{out.reason}; {how}"
    face_boxes = [f.box for f in out.faces] if req.protect_face else []
    out.binary = post.subtract_boxes(binary, face_boxes, req.face_margin)
    out.alpha = post.finalize(binary, dilate_px=req.mask_dilate_px,
                              feather_px=req.mask_feather_px, protect_boxes=face_boxes,
                              face_margin=req.face_margin)
    out.timings_ms["post"] = (time.perf_counter() - t) * 1000 - sum(
        out.timings_ms.get(k, 0.0) for k in ("detect", "sam", "fallback"))
    if not (out.alpha > 0).any():
        raise JobError(ErrorCode.empty_mask,
                       "mask: nothing to repaint (empty, or entirely inside protected faces)",
                       field="mask" if provided is not None else None)
    return out
