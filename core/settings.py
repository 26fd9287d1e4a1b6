"""Deployment settings, read from ``MASKPAINT_*`` environment variables (pydantic-settings).

These are the operator's knobs (where weights and outputs live, limits, deadlines); the caller's
knobs are the job contract (:mod:`core.contract`). Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal


from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Worker settings. Every field maps to ``MASKPAINT_<FIELD>`` (e.g. ``MASKPAINT_S3_BUCKET``)."""

    model_config = SettingsConfigDict(env_prefix="MASKPAINT_", extra="ignore")

    weights_dir: Path = Field(Path(".weights"), description="Root of the baked weights layout.")
    inpaint_models: list[str] | None = Field(
        None, description="Inpaint model keys to load at cold start (default: all baked ones)."
    )
    default_model: str | None = Field(
        None, description="Inpainting model key for jobs that name none (default: the first "
        "inpainting model baked, in manifest order)."
    )
    device: str | None = Field(None, description="`cuda`, `cpu`; default cuda when available.")
    verify_weights: bool = Field(
        False, description="Re-hash weight files against the receipt at cold start; a mismatch "
        "makes that model unavailable (jobs needing it get `model_not_found`). The only reader "
        "of `MASKPAINT_VERIFY_WEIGHTS`."
    )

    # outputs
    s3_bucket: str | None = Field(None, description="Output bucket; unset = local output dir.")
    s3_prefix: str = Field("maskpaint", description="Key prefix: <prefix>/<job_id>/<name>.")
    s3_endpoint_url: str | None = Field(None, description="R2 / MinIO / B2 endpoint URL.")
    s3_region: str | None = Field(None)
    s3_max_attempts: int = Field(4, ge=1, le=10, description="Attempts per S3 call in all, the "
                                 "first included (botocore standard mode, `total_max_attempts`).")
    s3_connect_timeout_s: float = Field(5.0, gt=0)
    s3_read_timeout_s: float = Field(30.0, gt=0)
    output_dir: Path = Field(Path("outputs"), description="Local outputs when no bucket is set.")

    # inputs
    input_buckets: list[str] = Field(
        default_factory=list,
        description="Buckets (optionally `bucket/prefix`) that `s3://` inputs may read; nothing "
        "else is readable (not the output bucket, and never its output prefix).",
    )
    allow_private_urls: bool = Field(
        False, description="Let https inputs reach private addresses (self-hosted only)."
    )
    allow_private_webhooks: bool = Field(
        False, description="DEVELOPMENT ONLY: let `webhook` URLs be http, on any port and on "
        "private or loopback addresses (a receiver on 127.0.0.1); off by default, where webhooks "
        "must be https on port 443 to a public address."
    )
    max_input_bytes: int = Field(25 * 1024 * 1024, ge=1, description="Per input, bytes.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Width x height, px.")
    max_image_side: int = Field(12_000, ge=16, description="Longest side, px.")
    max_aspect_ratio: float = Field(8.0, ge=1.0, description="Long side / short side.")
    fetch_deadline_s: float = Field(20.0, gt=0, description="Whole download, seconds.")

    # runtime
    job_deadline_s: float = Field(
        270.0, gt=0, description="Internal deadline; keep below the platform's job timeout."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="Root log level (any case in the environment)."
    )
    one_job_per_worker: bool = Field(
        False, description="Isolation: after each job the RunPod handler replies "
        "`refresh_worker: true`, so RunPod recycles the worker and no two customers' photos "
        "share a process; each job then pays a cold start (docs/commercial.md). On Modal the "
        "same is `MASKPAINT_MODAL_SINGLE_USE=1`."
    )
    malloc_mmap_threshold_bytes: int = Field(
        1 << 20, ge=0, description="glibc's mmap threshold, set at cold start: freed blocks of at "
        "least this size go back to the OS (core.memory; a 12 MP job's peak RSS ~1.2 "
        "frames lower, its overhead ~0.1 s higher on 2 cores); 0 leaves glibc's own dynamic "
        "threshold."
    )

    # content moderation (core.moderation; docs/safety.md). Operator-only: no job field
    # changes any of these.
    safety: Literal["block", "off"] = Field(
        "block", description="`block`: prompts are checked against the term list and every "
        "repainted image (and, with `moderate_inputs`, every input photo) by the image "
        "moderation models; a hit fails the job with `content_blocked` and nothing is stored; no "
        "moderation model loaded = every job fails with `safety_unavailable`. `off`: nothing is "
        "checked (self-hosted use that moderates elsewhere)."
    )
    moderate_inputs: bool = Field(
        False, description="Also run the image check on the input photo (and the reference "
        "garment) right after decoding, before any masking; a hit is `content_blocked` with "
        "check `input`."
    )
    moderation_terms_path: Path | None = Field(
        None, description="A JSON term list in the packaged format (core/moderation/terms.json) "
        "whose terms, context rules and combos are added to the packaged ones."
    )
    nudenet_threshold: float = Field(
        0.45, ge=0.0, le=1.0, description="NudeNet 320n score (0-1) from which an exposed-body "
        "detection (`*_GENITALIA_EXPOSED`, `FEMALE_BREAST_EXPOSED`, `BUTTOCKS_EXPOSED`, "
        "`ANUS_EXPOSED`) blocks. NudeNet itself reports detections from 0.25 (nudenet.py's NMS "
        "score); on clothed real photos and their crops the highest exposed score measured here "
        "was 0.32 (a coffee cup read as BUTTOCKS_EXPOSED). Lower blocks more."
    )
    opennsfw_threshold: float = Field(
        0.7, ge=0.0, le=1.0, description="open_nsfw NSFW probability (0-1) from which an image "
        "(whole, or the repainted region's crop) blocks. Yahoo's open_nsfw README: below 0.2 "
        "likely safe, above 0.8 likely NSFW; clothed real photos and crops measured here scored "
        "at most 0.17 (a group photo). Lower blocks more."
    )

    # speed: each off until the GPU bench (python -m bench.gpu) shows it pays; docs/gpu.md
    warmup: bool = Field(
        False, description="At cold start, one 2-step denoising pass per loaded pipeline (plain, "
        "reference garment, pose) at its native size, so the first job does not pay CUDA's lazy "
        "kernel loading and library handle set-up (core.warmup)."
    )
    generation_buckets: bool = Field(
        False, description="Snap the model's working size to a fixed set of aspect buckets at "
        "its native pixel count, multiples of 64 (SDXL's training resolutions; the same aspects "
        "at 512^2 for SD 1.5): the crop around the mask grows to the bucket's aspect, so shapes "
        "repeat and a compiled UNet is reused (core.buckets). Pixels outside the mask stay "
        "unchanged."
    )
    compile_unet: bool = Field(
        False, description="Load the torch.compile cache artefacts made by `python -m "
        "core.compile` for this GPU arch, torch and triton version, and run the UNet "
        "compiled for the shapes they cover (other shapes: eager). Missing or mismatching "
        "artefacts: eager, with one log line (core.compile)."
    )

    # web API (handlers.web)
    api_token: SecretStr | None = Field(
        None, description="Bearer token of the web API (at least 16 characters); the API refuses "
        "to start without one."
    )
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key that signs webhook deliveries (`X-Maskpaint-Signature`"
        "); jobs with a `webhook` are refused while it is unset."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Browser origins allowed by the web API's CORS, a comma "
        "list (e.g. `https://app.example.com`); empty = no CORS headers."
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, v: object) -> object:
        if isinstance(v, str):
            return [o.strip().rstrip("/") for o in v.split(",") if o.strip()]
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, v: object) -> object:
        return v.strip().upper() if isinstance(v, str) else v
