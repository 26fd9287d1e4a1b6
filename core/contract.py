"""The job contract: request and error models (pydantic v2); the result models live in
:mod:`core.result` and are re-exported here.

One set of models validates every provider's input (RunPod ``input``, Modal call or web body,
local CLI) and shapes every reply. ``schema/`` holds their JSON Schema export.

Units: pixels (px) of the *original* image after EXIF orientation; milliseconds (ms); bytes.
Masks follow the diffusers convention: white (255) = repaint, black (0) = keep.

Torch-free on purpose: handlers import this module.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from core.errors import ErrorCode, JobError
from core.person_box import DESCRIPTION as PERSON_BOX_DESCRIPTION, PersonBox
from core.taskfields import INPAINT_ONLY_MESSAGE, TASK_DESCRIPTION, inpaint_field_set
from core.result import (  # noqa: F401 (the contract's result half, re-exported)
    Artifact, ConditioningInfo, ControlInfo, Detection, DetectorIssue, Face, GarmentInfo,
    JobResult, MaskInfo, MaskSource, ModelInfo, ModerationInfo, PoseInfo, SamplingInfo, TargetGroup,
)
from core.sampling import SamplingPlan, SchedulerName, Speed, combination_error, plan

#: S3 caps SigV4 presigned URLs at 7 days (AWS S3 docs, "Sharing objects with presigned URLs").
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
MAX_PROMPT_CHARS = 2000
#: Upper bound on an image/mask string (base64 of the byte cap, plus a data-URL header); the
#: byte cap itself is a setting (``MASKPAINT_MAX_INPUT_BYTES``) checked before decoding.
MAX_INPUT_CHARS = 48 * 1024 * 1024
#: The contract's image inputs, in fetch order: each is a string in one of the accepted forms
#: (data URL, base64, https, s3) that the worker fetches and decodes. Fetching, decoding, the
#: input limits and the web API's body cap all go by this tuple.
IMAGE_INPUTS: tuple[str, ...] = ("image", "mask", "garment_image")

OutputFormat = Literal["auto", "png", "jpeg", "webp"]
#: The record key of a job sent with an ``idempotency_key`` is this prefix plus the key, so a
#: caller's key never names the folder of a provider-assigned id (``fc-…``, RunPod UUIDs).
IDEMPOTENCY_PREFIX = "key-"

_JOB_ID_SAFE = re.compile(r"[^A-Za-z0-9._-]")
#: A job id kept exactly as given: key-safe characters only, no ``..``, not starting or ending
#: with ``.``, at most :data:`JOB_ID_MAX_CHARS`, and not ending like a hashed id (see below).
_JOB_ID_KEEP = re.compile(r"[A-Za-z0-9_-]([A-Za-z0-9._-]{0,126}[A-Za-z0-9_-])?")
JOB_ID_MAX_CHARS = 128
#: Hex digits of sha256(raw id) appended to an id that had to be changed: 64 bits, so two
#: different raw ids of one deployment never share a key (birthday bound ~4e9 changed ids).
JOB_ID_HASH_CHARS = 16
_JOB_ID_HASHED = re.compile(rf"--[0-9a-f]{{{JOB_ID_HASH_CHARS}}}$")
#: Field paths in error messages: at most this many characters per part and in all, printable
#: letters, digits and ``_.-[]`` only (anything else becomes ``?``), so a caller's field names can
#: neither flood a reply nor forge a log line.
FIELD_PART_MAX_CHARS = 64
FIELD_MAX_CHARS = 160
_FIELD_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-\[\]]")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_max_length=MAX_INPUT_CHARS)


class OutputOptions(_Strict):
    """How the result image is encoded and delivered."""

    format: OutputFormat = Field("auto", description="Result image format. `auto`: JPEG in, JPEG "
                                 "out (at `quality`); PNG in, PNG out; other inputs (WebP, HEIC, "
                                 "AVIF) give JPEG, or PNG when transparent.")
    quality: int = Field(92, ge=1, le=100, description="JPEG/WebP quality (ignored for PNG).")
    url_expires_s: int = Field(
        3600,
        ge=1,
        le=MAX_PRESIGN_SECONDS,
        description="Presigned URL lifetime in seconds; S3 allows at most 7 days (604800 s).",
    )
    return_base64: bool = Field(
        False, description="Also return each artefact inline as base64 (mind RunPod's payload cap)."
    )


class JobRequest(_Strict):
    """One masking / inpainting job, as sent by a client."""

    image: str = Field(
        ...,
        min_length=1,
        description="Input photo: `data:<type>;base64,...`, bare base64, `https://...` or "
        "`s3://bucket/key`. PNG, JPEG, WebP, HEIC/HEIF or AVIF (the content decides, not the "
        "stated type). Base64 may be line-wrapped, URL-safe or unpadded. An embedded colour "
        "profile (e.g. Display P3) is kept on the result, and transparency too (PNG/WebP).",
    )
    mask: str | None = Field(
        None,
        description="Optional mask in the same forms. A mask with transparent pixels (a layer "
        "from a canvas editor) is its alpha channel: strokes of any colour repaint. An opaque "
        "mask uses its brightest channel: white (or grey, or any colour) = repaint, black = keep. "
        "Either value repaints from 26 of 255 (10 %) up, so a 47 % grey brush counts and JPEG "
        "noise does not. A mask of another size but the same aspect ratio is resized (nearest); "
        "otherwise rejected. When absent the mask is made automatically (garments, faces "
        "protected).",
    )
    task: Literal["inpaint", "mask"] = Field(
        "inpaint",
        description=TASK_DESCRIPTION,
    )
    targets: list[TargetGroup] = Field(
        default_factory=lambda: ["upper"], min_length=1, max_length=5,
        description="Garment groups to mask automatically (ignored when `mask` is given).",
    )
    person_box: PersonBox | None = Field(None, description=PERSON_BOX_DESCRIPTION)
    protect_face: bool = Field(
        True,
        description="Never repaint detected faces: every face detector on the worker runs and "
        "the union of their boxes is removed from the mask last, after dilation and feathering.",
    )
    face_margin: float = Field(
        0.25,
        ge=0.0,
        le=2.0,
        description="Grow each face box by this fraction of its width/height on every side "
        "before it is removed from the mask.",
    )
    protect_hands: bool = Field(
        True,
        description="Never repaint detected hands (kept only inside a person and outside "
        "faces); removed from the mask last, like faces.",
    )
    hand_margin: float = Field(
        0.1,
        ge=0.0,
        le=2.0,
        description="Grow each hand box by this fraction of its width/height on every side "
        "before it is removed from the mask.",
    )
    mask_dilate_px: int = Field(8, ge=0, le=256, description="Grow the mask by this many px.")
    mask_feather_px: int = Field(
        8, ge=0, le=256, description="Soft blend band, px outside the grown mask."
    )
    prompt: str | None = Field(
        None, max_length=MAX_PROMPT_CHARS, description="What to paint (required for `inpaint`)."
    )
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    num_inference_steps: int = Field(30, ge=1, le=150, description="Denoising steps.")
    guidance_scale: float = Field(7.5, ge=0.0, le=30.0, description="Classifier-free guidance.")
    strength: float = Field(
        1.0, gt=0.0, le=1.0, description="How far to move from the original (1 = full repaint)."
    )
    scheduler: SchedulerName = Field(
        "default", description="Sampler, by name: `default` (the model's own), `euler`, "
        "`euler_a`, `dpmpp_2m`, `dpmpp_2m_karras`, `unipc`, `ddim`; `lcm` and `tcd` only with "
        "`speed: draft`. The result's `sampling` says which one ran.")
    speed: Speed = Field(
        "standard", description="`draft`: a quick preview through the model's baked LCM-LoRA "
        "(`lcm` sampler, 4-8 steps, guidance 1-2: unsent values take the low end, sent ones are "
        "clamped; `sampling` reports what ran); `model_not_found` on a worker without it. "
        "`standard`: the request's steps and guidance as sent.")
    seed: int | None = Field(
        None,
        ge=0,
        le=2**32 - 1,
        description="Random seed. When absent one is derived from the job id (so a retried job "
        "repeats its output exactly) and returned.",
    )
    model: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Inpainting model key (`sd15-inpaint`, `sdxl-inpaint`). Absent: the "
        "worker's default (`MASKPAINT_DEFAULT_MODEL`, else the first inpainting model baked); "
        "the result's `model` says which one ran.",
    )
    output: OutputOptions = Field(default_factory=OutputOptions)
    idempotency_key: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$",
        description="A caller-chosen key (1-64 of `A-Za-z0-9._-`) that replaces the provider's "
        "job id as the key of the worker's write-once job record and output folder "
        f"(`{IDEMPOTENCY_PREFIX}<key>`): the same request sent again with the same key, under "
        "any provider job id, returns the recorded result without running the models "
        "(a batch resubmitting after an interruption). The same key with a different request "
        "is `storage_conflict`.",
    )
    # ---- outfit swap (reference garment, pose lock, gallery)
    garment_image: str | None = Field(
        None,
        min_length=1,
        description="Optional reference garment (e.g. a shop photo), in the same forms and "
        "limits as `image`. The garment is cut out of it when the garment detector finds one "
        "(else the whole photo is used; `conditioning.garment` says which) and steers the "
        "repaint through an IP-Adapter. Needs a worker with the IP-Adapter baked "
        "(`model_not_found` otherwise).",
    )
    garment_scale: float = Field(
        0.7, ge=0.0, le=1.5,
        description="IP-Adapter scale: how strongly the reference garment steers (0 = not at "
        "all; 1 = strongly; up to 1.5).",
    )
    control: Literal["pose"] | None = Field(
        None,
        description="`pose`: keep the person's pose: the main person's pose (MediaPipe, 33 "
        "landmarks -> OpenPose's 18) is drawn as an OpenPose image and fed to a pose "
        "ControlNet. Needs a worker with that ControlNet baked (`model_not_found` otherwise).",
    )
    control_scale: float = Field(
        1.0, ge=0.0, le=2.0, description="ControlNet conditioning scale (with `control`).")
    num_outputs: int = Field(
        1, ge=1, le=4,
        description="Gallery size: this many results from one fetch, decode and mask, output i "
        "with seed `seed + i`; all are in `images` (and `seeds`), `image` is the first.",
    )

    #: Fields the caller sent that the draft ranges clamped (see :meth:`sampling_plan`).
    _adjusted: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _draft_ranges(self) -> JobRequest:
        # a draft's steps and guidance become the ones that run (core.sampling.plan), so the
        # request says what runs: its hash (job records), the step check below, every reader.
        # Idempotent: pydantic runs this again on an instance placed in a model (``Job``).
        if self.speed == "draft":
            sp = plan(self)
            self.num_inference_steps, self.guidance_scale = (sp.num_inference_steps,
                                                             sp.guidance_scale)
            self._adjusted = self._adjusted or sp.adjusted
        return self

    @model_validator(mode="after")
    def _fields_fit_the_task(self) -> JobRequest:
        if self.task == "inpaint" and not (self.prompt and self.prompt.strip()):
            raise PydanticCustomError("prompt_required", "required when task is 'inpaint'")
        if (name := inpaint_field_set(self)) is not None:  # a mask job would ignore it
            raise PydanticCustomError("inpaint_only", INPAINT_ONLY_MESSAGE, {"field": name})
        return self

    @model_validator(mode="after")
    def _at_least_one_denoising_step(self) -> JobRequest:
        # diffusers' img2img/inpaint pipelines run int(num_inference_steps * strength) steps
        # (``get_timesteps``) and raise ValueError below one: reject it here, naming both fields.
        if self.task == "inpaint" and int(self.num_inference_steps * self.strength) < 1:
            raise PydanticCustomError(
                "too_few_steps",
                "strength x num_inference_steps must be at least 1 (the pipeline runs "
                "int(num_inference_steps * strength) denoising steps); raise strength or "
                "num_inference_steps")
        return self

    @model_validator(mode="after")
    def _sampler_fits_speed(self) -> JobRequest:
        why = combination_error(self.scheduler, self.speed)
        if why is not None:
            raise PydanticCustomError("sampler_speed", why)
        return self

    def sampling_plan(self) -> SamplingPlan:
        """Sampler, speed, steps and guidance that run (:mod:`core.sampling`)."""
        return SamplingPlan(plan(self).scheduler, self.speed, self.num_inference_steps,
                            self.guidance_scale, self._adjusted)

    @property
    def masking(self) -> MaskingOptions:
        """The fields the masking stage reads (:class:`MaskingOptions`)."""
        return MaskingOptions(**{name: getattr(self, name) for name in MaskingOptions.model_fields})

    def inpaint_kwargs(self) -> dict[str, Any]:
        """Keywords for the diffusers inpainting call, by :data:`INPAINT_KWARGS` (an unset prompt
        is ``""``, an empty negative prompt ``None``, as diffusers expects)."""
        out = {kw: getattr(self, name) for name, kw in INPAINT_KWARGS.items()}
        out["prompt"] = out["prompt"] or ""
        out["negative_prompt"] = out["negative_prompt"] or None
        return out


#: Contract field -> keyword of the diffusers inpainting call
#: (``StableDiffusion(XL)InpaintPipeline.__call__``): a new sampler setting is a contract field
#: plus one line here. Image, mask, size, generator and callback are the pipeline's own.
INPAINT_KWARGS: dict[str, str] = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "num_inference_steps": "num_inference_steps",
    "guidance_scale": "guidance_scale",
    "strength": "strength",
}


class MaskingOptions(BaseModel):
    """What the masking stage takes from a job (not the whole request); field meanings and
    ranges are :class:`JobRequest`'s."""

    model_config = ConfigDict(frozen=True)

    targets: list[TargetGroup]
    protect_face: bool
    face_margin: float
    protect_hands: bool
    hand_margin: float
    mask_dilate_px: int
    mask_feather_px: int
    person_box: list[float] | None = None


class JobErrorBody(BaseModel):
    """What a failed job returns (RunPod additionally gets a top-level string `error`)."""

    code: ErrorCode
    message: str
    field: str | None = None
    retryable: bool


def error_body(err: JobError) -> JobErrorBody:
    return JobErrorBody(code=err.code, message=err.message, field=err.field, retryable=err.retryable)


class Job(BaseModel):
    """A validated request plus its platform job id (safe for use in storage keys)."""

    id: str
    request: JobRequest


def safe_job_id(raw: str) -> str:
    """Map a platform job id to a storage-key-safe token, injectively.

    An id that is already safe (``[A-Za-z0-9._-]``, 1-128 characters, no ``..``, no leading or
    trailing ``.``) is kept as it is, so RunPod (``sync-…``, UUIDs) and Modal (``fc-…``) ids
    name their own folder. Any other id becomes a slug (unsafe characters -> ``_``, cut to fit)
    plus ``--`` and the first :data:`JOB_ID_HASH_CHARS` hex digits of sha256(raw id), so ``a/b``
    and ``a_b``, ``job 2`` and ``job/2``, or two long ids sharing their first 128 characters map
    to different keys. A safe id that itself ends like a hashed one (``--`` + 16 hex) is hashed
    too, so a kept id never equals a hashed one.

    Returns:
        ``[A-Za-z0-9._-]``, 1-128 characters, no ``..``, never starting or ending with ``.``.
    """
    raw = str(raw)
    if _JOB_ID_KEEP.fullmatch(raw) and ".." not in raw and not _JOB_ID_HASHED.search(raw):
        return raw
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:JOB_ID_HASH_CHARS]
    slug = re.sub(r"\.{2,}", "_", _JOB_ID_SAFE.sub("_", raw))
    slug = slug[: JOB_ID_MAX_CHARS - JOB_ID_HASH_CHARS - 2].strip(".") or "job"
    return f"{slug}--{digest}"


def safe_field(loc: object) -> str:
    """A request field path fit for an error message or a log line.

    Args:
        loc: a pydantic error ``loc`` tuple (``("output", "quality")``) or one name.

    Returns:
        Dotted path, each part cut to :data:`FIELD_PART_MAX_CHARS` and the whole to
        :data:`FIELD_MAX_CHARS` characters (``…`` marks a cut); anything but ASCII letters,
        digits and ``_.-[]`` (newlines, ANSI escapes, quotes, braces, non-ASCII) becomes ``?``.
    """
    parts = loc if isinstance(loc, (tuple, list)) else (loc,)
    out = []
    for p in parts:
        text = _FIELD_UNSAFE.sub("?", str(p))
        out.append(text if len(text) <= FIELD_PART_MAX_CHARS
                   else text[: FIELD_PART_MAX_CHARS - 1] + "…")
    path = ".".join(out)
    return path if len(path) <= FIELD_MAX_CHARS else path[: FIELD_MAX_CHARS - 1] + "…"


def parse_job(job_id: str, payload: object) -> Job:
    """Validate a raw request dict into a :class:`Job`.

    Raises:
        JobError(invalid_input): not a dict, an unknown field, a wrong type or an out-of-bounds
            value. The message names the field and the constraint but never echoes the value.
    """
    if not isinstance(payload, dict):
        raise JobError(ErrorCode.invalid_input, "job input must be a JSON object", field="input")
    try:
        req = JobRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        field = safe_field(first.get("loc", ())) or None
        if first.get("type") == "prompt_required":
            field = "prompt"
        if first.get("type") == "too_few_steps":
            field = "strength"
        if first.get("type") == "inpaint_only":
            field = (first.get("ctx") or {}).get("field") or field
        if first.get("type") == "sampler_speed":
            field = "scheduler"
        msg = first.get("msg", "invalid value")
        if first.get("type") == "extra_forbidden":
            msg = "unknown field"
        raise JobError(
            ErrorCode.invalid_input, f"{field or 'input'}: {msg}", field=field
        ) from None
    key = req.idempotency_key
    return Job(id=safe_job_id(f"{IDEMPOTENCY_PREFIX}{key}" if key else job_id), request=req)

