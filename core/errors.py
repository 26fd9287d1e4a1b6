"""Stable error codes for maskpaint jobs.

Every failure a caller can see is a :class:`JobError` carrying one of the codes in
:class:`ErrorCode`. The code and ``retryable`` are the API; the message is for humans, names the
offending field where there is one, and never echoes the payload (no base64, no URL query, no
credentials).

Torch-free on purpose: handlers import this module and must stay light.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    """The stable error codes. Values never change once published; new ones may be added."""

    invalid_input = "invalid_input"  # a field is missing, of the wrong type or out of bounds
    invalid_image = "invalid_image"  # bytes are not a decodable PNG/JPEG/WebP (or a bad mask)
    image_too_large = "image_too_large"  # bytes, pixels or a side over the configured limits
    blocked_url = "blocked_url"  # URL scheme/host/bucket not allowed (SSRF guard, s3 allow-list)
    input_not_found = "input_not_found"  # 404 / NoSuchKey for an input URL or s3 object
    input_fetch_failed = "input_fetch_failed"  # network error / 5xx fetching an input
    empty_mask = "empty_mask"  # the final mask has no pixel to repaint
    face_detection_unavailable = "face_detection_unavailable"  # protect_face, but no face detector could run
    content_blocked = "content_blocked"  # the prompt or an image was refused by the content policy
    safety_unavailable = "safety_unavailable"  # safety is on but no image moderation model could run
    model_not_found = "model_not_found"  # `model` is not in the manifest or not baked
    storage_error = "storage_error"  # writing outputs failed
    storage_conflict = "storage_conflict"  # a different object already exists at an output key
    gpu_oom = "gpu_oom"  # CUDA out of memory; memory was freed, a smaller job may pass
    device_error = "device_error"  # the accelerator is unusable; the worker should be recycled
    timeout = "timeout"  # the job (storage calls included) passed its internal deadline
    internal = "internal"  # a bug; details are in the worker log only
    interrupted = "interrupted"  # the job was cut by a restart of the server; submit it again
    cancelled = "cancelled"  # the caller cancelled the job (DELETE /jobs/{id}); nothing was stored


#: Codes for which the same request may succeed when retried later.
RETRYABLE = frozenset(
    {
        ErrorCode.input_fetch_failed,
        ErrorCode.storage_error,
        ErrorCode.gpu_oom,
        ErrorCode.device_error,
        ErrorCode.timeout,
        ErrorCode.internal,
        ErrorCode.interrupted,
    }
)


class JobError(Exception):
    """A job failure with a stable :class:`ErrorCode`.

    Args:
        code: the stable code.
        message: human-readable, names ``field`` if any; must not contain payload data.
        field: dotted name of the request field at fault (``"image"``, ``"output.quality"``).
        retryable: overrides the default taken from :data:`RETRYABLE`.
        refresh_worker: ask the platform to recycle this worker (accelerator left unusable).
    """

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        *,
        field: str | None = None,
        retryable: bool | None = None,
        refresh_worker: bool = False,
    ) -> None:
        self.code = ErrorCode(code)
        self.message = message
        self.field = field
        self.retryable = self.code in RETRYABLE if retryable is None else retryable
        self.refresh_worker = refresh_worker
        super().__init__(f"{self.code.value}: {message}")


class StartupError(Exception):
    """The worker cannot start (e.g. its output directory is a file or read-only): a one-line
    reason for the operator. Entry points print it and exit non-zero, before models load."""


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an accelerator out-of-memory error (torch's ``OutOfMemoryError`` or a
    backend's "out of memory" message), told apart without importing torch."""
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()
