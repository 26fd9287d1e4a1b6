"""The job contract's result half: what a finished job returns (pydantic v2).

:mod:`core.contract` (the request, the job and its errors) re-exports every name here, so
``from core.contract import JobResult`` keeps working. Units as in the contract: px of the
oriented original, ms, bytes.

Torch-free on purpose: handlers import this module.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

TargetGroup = Literal["upper", "lower", "dress", "outerwear", "full"]


class Artifact(BaseModel):
    """One stored output."""

    key: str = Field(..., description="Storage key (S3) or file path (local output dir).")
    url: str = Field(..., description="Presigned GET URL (S3) or `file://` URL (local).")
    content_type: str
    width: int = Field(..., description="px of this file: the photo's width for the result "
                       "and the mask; the overlay is a preview of at most 2 MP (2,000,000 px), "
                       "scaled down with its aspect ratio kept.")
    height: int = Field(..., description="px of this file (see `width`).")
    bytes: int = Field(..., description="Encoded size in bytes.")
    sha256: str
    base64: str | None = Field(None, description="Inline copy when `output.return_base64`.")


class Detection(BaseModel):
    label: str
    group: TargetGroup | None = None
    score: float
    box: list[float] = Field(..., description="[x0, y0, x1, y1] px in the original image.")
    sam_score: float | None = None


class Face(BaseModel):
    """A protected region (face or hand): the union of every detector's overlapping boxes."""

    score: float = Field(..., description="Highest score among the detectors that found it.")
    box: list[float] = Field(..., description="[x0, y0, x1, y1] px, before the margin.")
    detectors: list[str] = Field(
        default_factory=list, description="Detectors that found it, e.g. `blazeface`, `scrfd`."
    )


class PoseInfo(BaseModel):
    """The target person's pose, when the pose model ran (the largest person, or the one in
    the request's ``person_box``)."""

    score: float
    box: list[float] = Field(..., description="[x0, y0, x1, y1] px, the person's region.")


class DetectorIssue(BaseModel):
    """A masking model that could not load or failed on this image; the job went on without it."""

    detector: str = Field(..., description="Detector name or manifest key.")
    stage: Literal["load", "run"]
    message: str


#: How a mask was made (``MaskInfo.source``).
MaskSource = Literal["provided", "detector", "detector+sam", "pose", "pose+sam", "grabcut"]


class MaskInfo(BaseModel):
    source: MaskSource = Field(
        ..., description="How the mask was made: `provided` (the request's `mask`); "
        "`detector+sam` (garment detector boxes, segmented by SAM) or `detector` (the "
        "detector's own masks, no SAM); `pose+sam` (the target person's pose region, refined by "
        "SAM prompted from the pose) or `pose` (pose keypoints cut by the person "
        "segmentation); `grabcut` (no pose found: GrabCut below the largest face).")
    reason: str | None = Field(
        None, description="Why the garment detector's path was not used (no detector baked, "
        "nothing found), and why SAM's refinement was not kept, when it was not.")
    fallback: Literal["pose", "grabcut"] | None = Field(
        None, description="Set when the garment detector's path gave no mask: the region came "
        "from the target person's pose (`source` `pose` or `pose+sam`) or from GrabCut."
    )
    coverage: float = Field(..., description="Fraction of the image repainted (alpha > 0).")
    detections: list[Detection] = Field(default_factory=list)
    faces: list[Face] = Field(default_factory=list, description="Faces removed from the mask.")
    hands: list[Face] = Field(default_factory=list, description="Hands removed from the mask.")
    pose: PoseInfo | None = Field(None, description="Set when the pose model ran.")
    detector_issues: list[DetectorIssue] = Field(default_factory=list)


class ModelInfo(BaseModel):
    key: str
    source: str = Field(..., description="Repo or URL the weights came from.")
    revision: str
    dev: bool = Field(False, description="True for the random-weight dev models.")


class GarmentInfo(BaseModel):
    """The reference garment as the IP-Adapter saw it."""

    source: Literal["detected", "whole_photo"] = Field(
        ..., description="`detected`: cut out where the garment detector found it; "
        "`whole_photo`: nothing found (or no detector), so the whole photo.")
    reason: str | None = Field(None, description="Why the whole photo was used.")
    label: str | None = Field(None, description="The garment class found.")
    score: float | None = None
    box: list[float] = Field(..., description="[x0, y0, x1, y1] px of `garment_image` used.")
    scale: float = Field(..., description="The IP-Adapter scale used.")
    size: list[int] = Field(..., description="[width, height] px of `garment_image`.")


class ControlInfo(BaseModel):
    """The pose hint fed to the ControlNet."""

    type: Literal["pose"]
    scale: float
    keypoints: list[list[float]] = Field(
        ..., description="18 OpenPose (COCO) keypoints [x px, y px, visibility] of the photo; "
        "visibility 0 = not drawn.")


class ConditioningInfo(BaseModel):
    garment: GarmentInfo | None = None
    control: ControlInfo | None = None


class SamplingInfo(BaseModel):
    """How the repaint was sampled: what ran, after draft ranges were applied."""

    scheduler: str = Field(..., description="The `scheduler` name that ran (`default`: the "
                           "model's own; a draft's `default` runs `lcm`).")
    scheduler_class: str = Field(..., description="The diffusers scheduler class that ran.")
    speed: Literal["draft", "standard"]
    num_inference_steps: int = Field(..., description="Steps asked of the scheduler (the "
                                     "pipeline runs int(steps x strength) of them).")
    guidance_scale: float
    lora: str | None = Field(None, description="Manifest key of the few-step LoRA applied "
                             "(draft), else null.")
    adjusted: list[str] = Field(
        default_factory=list, description="Fields the request sent that were clamped into "
        "the draft ranges (LCM-LoRA: 4-8 steps, guidance 1-2).")


class ModerationInfo(BaseModel):
    """What the content moderation did for this job (docs/safety.md)."""

    policy: Literal["block", "off"] = Field(
        ..., description="The worker's `MASKPAINT_SAFETY`: `off` = nothing was checked.")
    checks: list[Literal["prompt", "input", "output"]] = Field(
        default_factory=list, description="The checks that ran and passed, in order.")
    classifiers: list[str] = Field(
        default_factory=list, description="Manifest keys of the image moderation models that "
        "ran (also in `models`).")
    max_scores: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Per classifier (manifest key), the highest score "
        "(0-1) of each blocking label over every image checked; all stayed below the worker's "
        "thresholds.")


class JobResult(BaseModel):
    """What a successful job returns."""

    job_id: str
    task: Literal["inpaint", "mask"]
    seed: int | None = Field(None, description="The seed used (inpaint only).")
    image: Artifact | None = Field(None, description="The edited photo (inpaint only); with "
                                   "`num_outputs` > 1 the first of `images`.")
    images: list[Artifact] = Field(
        default_factory=list, description="Every edited photo (inpaint only), in seed order: "
        "`images[i]` was made with `seeds[i]`.")
    seeds: list[int] = Field(default_factory=list, description="The seed of each of `images`.")
    conditioning: ConditioningInfo | None = Field(
        None, description="What steered the repaint besides the prompt (reference garment, "
        "pose), when asked for.")
    sampling: SamplingInfo | None = Field(
        None, description="Sampler, speed, steps and guidance that ran (inpaint only).")
    mask: Artifact
    overlay: Artifact = Field(..., description="Preview: photo, tinted mask, boxes, labels.")
    mask_info: MaskInfo
    model: str | None = Field(
        None, description="Key of the inpainting model that ran (inpaint only)."
    )
    models: list[ModelInfo] = Field(default_factory=list)
    moderation: ModerationInfo | None = Field(
        None, description="What the content moderation checked (absent only in results "
        "recorded by a worker that had no moderation).")
    timings_ms: dict[str, float] = Field(default_factory=dict, description="ms per stage; keys "
                                         "ending `.forward`: model calls (overhead = total - sum)")
    size: list[int] = Field(..., description="[width, height] px of the (oriented) input.")
