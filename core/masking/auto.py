"""The masking stage: provided mask, or garments -> SAM, or the pose (-> SAM); then minus the guard.

The guard first (:mod:`core.masking.guard`): every face detector (unioned), then every hand
detector (hands inside a person, outside faces). Chain for an automatic mask (no mask in the
request); ``mask_info.source`` names the path that made it:
  1. ``detector+sam`` / ``detector``: garment detector (YOLOv8-seg) -> detections whose class
     maps to a requested target group (inside ``person_box`` when given); SAM refines each
     kept box (``set_image`` once per image) -> the best-scoring mask each; without SAM the
     detector's own segmentation masks are used; union, remove islands, fill holes;
  2. no detector (the commercial profiles), nothing found, or a model failing -> ``pose`` /
     ``pose+sam``: the target person's region from MediaPipe pose keypoints and segmentation
     (:func:`core.masking.pose_region.pose_region`; the largest person, or the one in
     ``person_box``), refined by SAM prompted from the pose when SAM is baked
     (:mod:`core.masking.pose_sam`);
  3. no pose found -> ``grabcut``: :func:`core.masking.fallback.fallback_mask` (GrabCut below
     the largest face).
Then for every source: dilate, feather, and finally zero every face box grown by
``face_margin`` and every hand box grown by ``hand_margin``.

Arrays: image H x W x 3 uint8 RGB; masks H x W bool; alpha H x W float32 [0, 1].
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from core import timing
from core.contract import Detection, DetectorIssue, Face, MaskingOptions, PoseInfo
from core.errors import ErrorCode, JobError
from core.masking import post
from core.masking.fallback import fallback_mask
from core.masking.guard import run_detectors
from core.masking.pose_region import pose_region
from core.masking.pose_sam import refine_with_sam

log = logging.getLogger("maskpaint.mask")


@dataclass
class MaskOutcome:
    """Result of the masking stage."""

    binary: np.ndarray  # H x W bool, before dilation/feather, faces and hands removed
    alpha: np.ndarray  # H x W float32, the blend weights actually applied
    source: str  # core.result.MaskSource: provided | detector(+sam) | pose(+sam) | grabcut
    reason: str | None = None
    fallback: str | None = None  # pose | grabcut: the detector's path gave no mask
    detections: list[Detection] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)
    hands: list[Face] = field(default_factory=list)
    pose: PoseInfo | None = None
    issues: list[DetectorIssue] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    identities: list[dict] = field(default_factory=list)  # of every masking model that ran
    #: 33 x 3 pose keypoints when the pose model ran (the pose ControlNet's hint)
    pose_keypoints: np.ndarray | None = None
    _coverage: float | None = field(default=None, repr=False)

    @property
    def coverage(self) -> float:
        """Fraction (0-1) of the photo's pixels with alpha > 0 (alpha is never negative, so a
        count of non-zero values: OpenCV's, without a 1 B/px temporary)."""
        if self._coverage is None:
            return cv2.countNonZero(self.alpha) / self.alpha.size
        return self._coverage

    def drop_alpha(self) -> None:
        """Let the full-size alpha go once the repaint is pasted back (the overlay has its own
        scaled copy, :func:`core.outputs.preview_source`): up to 4 B/px, 1.33 frames of a 12 MP
        photo, less held through the encodes. :attr:`coverage` is kept; ``alpha`` is
        None from here on."""
        self._coverage = self.coverage
        self.alpha = None

    def ran(self, model) -> None:
        """Record that ``model`` ran (its identity goes into the result's ``models``)."""
        identity = getattr(model, "identity", None)
        if identity and identity not in self.identities:
            self.identities.append(identity)


def _as_faces(boxes) -> list[Face]:
    return [Face(score=round(float(b.score), 4), box=[float(v) for v in b.box],
                 detectors=list(b.detectors)) for b in boxes]


def _guard(models, image: np.ndarray, opts: MaskingOptions, out: MaskOutcome,
           need_faces: bool) -> None:
    """Faces (every face detector, unioned) and hands (every hand detector, outside faces).

    Raises:
        JobError(face_detection_unavailable): ``protect_face`` is set and no face detector
            completed on this image.
    """
    if opts.protect_face or need_faces:
        run = run_detectors(models.face_detectors, image, scope="mask.faces.{name}")
        out.timings_ms["faces"] = run.ms
        out.issues += run.issues
        out.identities += [i for i in run.identities if i not in out.identities]
        if opts.protect_face and not run.ran:
            raise JobError(ErrorCode.face_detection_unavailable,
                           "protect_face: no face detector could run on this worker, so faces "
                           "cannot be protected; nothing was repainted", retryable=False)
        out.faces = _as_faces(run.boxes)
    if opts.protect_hands and models.hand_detectors:
        run = run_detectors(models.hand_detectors, image, [f.box for f in out.faces],
                            scope="mask.hands")
        out.timings_ms["hands"] = run.ms
        out.issues += run.issues
        out.identities += [i for i in run.identities if i not in out.identities]
        out.hands = _as_faces(run.boxes)


def _fallback(models, image: np.ndarray, opts: MaskingOptions, out: MaskOutcome) -> np.ndarray:
    """The target person's pose region (refined by SAM when baked); GrabCut below the largest
    face when no pose is found. Sets ``out.source``."""
    if models.pose is not None:
        t = time.perf_counter()
        pose = None
        try:
            with timing.scope("mask.pose"):
                pose = (models.pose.estimate(image) if opts.person_box is None
                        else models.pose.estimate(image, person_box=opts.person_box))
            out.ran(models.pose)
        except Exception as exc:
            log.exception("pose estimation failed")
            out.issues.append(DetectorIssue(detector=getattr(models.pose, "name", "pose"),
                                            stage="run", message=f"failed ({type(exc).__name__})"))
        out.timings_ms["pose"] = (time.perf_counter() - t) * 1000
        if pose is not None:
            out.pose = PoseInfo(score=round(float(pose.score), 4),
                                box=[float(v) for v in pose.box])
            out.pose_keypoints = pose.keypoints
            region = pose_region(pose, opts.targets, image.shape[:2])
            if region is not None and region.any():
                out.fallback = out.source = "pose"
                who = "the main person" if opts.person_box is None else "the boxed person"
                out.reason = f"{out.reason}; region from {who}'s pose"
                return _pose_sam(models, image, opts, out, pose, region)
    t = time.perf_counter()
    faces = [f.box for f in out.faces  # the boxed person's face anchors GrabCut's region
             if opts.person_box is None or _in_box(f.box, opts.person_box)]
    binary, how = fallback_mask(image, opts.targets, faces)
    out.timings_ms["fallback"] = (time.perf_counter() - t) * 1000
    out.fallback = out.source = "grabcut"
    no_pose = "no pose model" if models.pose is None else "no pose found"
    out.reason = f"{out.reason}; {no_pose}: {how}"
    return binary


def _pose_sam(models, image: np.ndarray, opts: MaskingOptions, out: MaskOutcome, pose,
              region: np.ndarray) -> np.ndarray:
    """SAM prompted from the pose (``pose+sam``), or the pose region when SAM is not baked,
    fails, or disagrees with it (``reason`` says which)."""
    if models.sam is None:
        return region
    t = time.perf_counter()
    try:
        with timing.scope("mask.sam"):
            mask, note = refine_with_sam(models.sam, image, pose, opts.targets, region)
        out.ran(models.sam)
    except Exception as exc:
        log.exception("SAM from the pose failed; keeping the pose region")
        out.issues.append(DetectorIssue(detector="sam", stage="run",
                                        message=f"failed ({type(exc).__name__})"))
        mask, note = None, "SAM failed"
    out.timings_ms["sam"] = (time.perf_counter() - t) * 1000
    if mask is None or not mask.any():
        out.reason = f"{out.reason}; SAM not used: {note}"
        return region
    out.source = "pose+sam"
    out.reason = f"{out.reason}, refined by SAM ({note})"
    # islands only: filling holes would give back the hands cut out of the torso
    return post.clean(mask, fill=False)


def _in_box(box, person_box) -> bool:
    """Whether ``box``'s centre lies in ``person_box`` (both ``(x0, y0, x1, y1)`` px)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return person_box[0] <= cx <= person_box[2] and person_box[1] <= cy <= person_box[3]


def _auto(models, image: np.ndarray, opts: MaskingOptions, out: MaskOutcome) -> np.ndarray | None:
    """Garments -> SAM. Returns the union mask, or None with ``out.reason`` set."""
    if models.garments is None:
        out.reason = f"garment detector unavailable ({models.missing.get('garments', 'not loaded')})"
        return None
    targets = set(opts.targets)
    t = time.perf_counter()
    try:
        with timing.scope("mask.garments"):
            # with SAM the detector's boxes are all that is used: no full-size masks
            dets = (models.garments.detect(image) if models.sam is None
                    else models.garments.detect(image, masks=False))
    except Exception:
        log.exception("garment detection failed")
        out.reason = "garment detector failed"
        return None
    out.timings_ms["detect"] = (time.perf_counter() - t) * 1000
    out.ran(models.garments)
    kept = [d for d in dets if ("full" in targets or d.group in targets)
            and (opts.person_box is None or _in_box(d.box, opts.person_box))]
    out.detections = [Detection(label=d.label, group=d.group, score=float(d.score),
                                box=[float(v) for v in d.box]) for d in kept]
    if not kept:
        out.reason = f"no garment found for targets {sorted(targets)}"
        return None
    masks = [d.mask for d in kept]  # (None with SAM: set below)
    out.source = "detector"
    if models.sam is not None:
        t = time.perf_counter()
        try:
            with timing.scope("mask.sam"):
                refined = models.sam.refine(image, [d.box for d in kept])
            masks = [m for m, _ in refined]
            for det, (_, score) in zip(out.detections, refined):
                det.sam_score = float(score)
            out.ran(models.sam)
            out.source = "detector+sam"
        except Exception:
            log.exception("SAM refinement failed; using the detector's masks")
            try:  # the full-size masks were not made: the detector runs again for them
                with timing.scope("mask.garments"):
                    found = models.garments.detect(image)
                masks = [next(f.mask for f in found if f.box == d.box and f.label == d.label)
                         for d in kept]
            except Exception:
                log.exception("garment masks after SAM's failure")
                out.reason = "SAM failed and the garment detector's masks are unavailable"
                return None
        out.timings_ms["sam"] = (time.perf_counter() - t) * 1000
    union = np.zeros(image.shape[:2], dtype=bool)
    for m in masks:
        union |= m
    union = post.clean(union)
    if not union.any():
        out.reason = "detections produced an empty mask"
        return None
    return union


def _clip_person_box(opts: MaskingOptions, w: int, h: int) -> MaskingOptions:
    """``opts`` with ``person_box`` clipped to the ``w`` x ``h`` photo.

    Raises:
        JobError(invalid_input, field person_box): the box lies outside the photo.
    """
    if opts.person_box is None:
        return opts
    x0, y0, x1, y1 = opts.person_box
    box = [min(x0, w), min(y0, h), min(x1, w), min(y1, h)]
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        raise JobError(ErrorCode.invalid_input,
                       f"person_box: lies outside the {w} x {h} px photo", field="person_box",
                       retryable=False)
    return opts.model_copy(update={"person_box": box})


def make_mask(models, image: np.ndarray, opts: MaskingOptions,
              provided: np.ndarray | None) -> MaskOutcome:
    """Run the masking stage for one job.

    Args:
        models: a :class:`core.models.ModelSet` (``garments``/``sam``/``pose`` may be None; the
            detector lists may be empty).
        image: H x W x 3 uint8 RGB.
        opts: the job's masking options (targets, face/hand protection and margins,
            dilate/feather px): ``JobRequest.masking``.
        provided: H x W bool decoded from the request's ``mask``, or None for automatic.

    Raises:
        JobError(face_detection_unavailable): faces must be protected but no detector ran.
        JobError(empty_mask): nothing is left to repaint (e.g. the mask lay inside a face).
    """
    h, w = image.shape[:2]
    out = MaskOutcome(binary=np.zeros((h, w), bool), alpha=np.zeros((h, w), np.float32),
                      source="provided", issues=list(getattr(models, "load_issues", [])))
    # faces are found for every source: protection, and the GrabCut fallback's anchor
    _guard(models, image, opts, out, need_faces=provided is None)
    t = time.perf_counter()
    if provided is not None:
        binary = provided
    else:
        opts = _clip_person_box(opts, w, h)
        binary = _auto(models, image, opts, out)
        if binary is None:
            binary = _fallback(models, image, opts, out)
    protect = [(f.box, opts.face_margin) for f in out.faces] if opts.protect_face else []
    protect += [(hd.box, opts.hand_margin) for hd in out.hands]
    out.binary = post.subtract_boxes(binary, protect)
    out.alpha = post.finalize(binary, dilate_px=opts.mask_dilate_px,
                              feather_px=opts.mask_feather_px, protect=protect)
    out.timings_ms["post"] = (time.perf_counter() - t) * 1000 - sum(
        out.timings_ms.get(k, 0.0) for k in ("detect", "sam", "pose", "fallback"))
    if not cv2.countNonZero(out.alpha):  # (alpha >= 0: non-zero is > 0)
        raise JobError(ErrorCode.empty_mask,
                       "mask: nothing to repaint (empty, or entirely inside protected faces "
                       "and hands)", field="mask" if provided is not None else None)
    return out
