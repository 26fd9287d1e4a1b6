"""Provider-neutral translation: raw payload -> Job -> Worker.run -> reply dict.

Every provider handler (RunPod, Modal, the local CLI) goes through :func:`execute`, so they all
validate the same way and reply with the same shapes:

- success: ``JobResult`` as a JSON-ready dict;
- failure: ``{"error": {"code", "message", "field", "retryable"}}``; providers reshape the
  envelope (RunPod wants a top-level string ``error``), never the body.

Unexpected exceptions become ``internal``: the traceback goes to the log only, never to the
caller (no host names, paths or worker ids leave the worker).
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from core.contract import error_body, parse_job
from core.errors import ErrorCode, JobError

if TYPE_CHECKING:
    from core.pipeline import Worker

log = logging.getLogger("maskpaint.handler")

class JobProgress(BaseModel):
    """A progress update (RunPod `IN_PROGRESS` `output`, sent by `progress_update`)."""

    model_config = ConfigDict(extra="allow", title="JobProgress")

    stage: str = Field(
        ..., description="Pipeline stage: `fetch`, `decode`, `mask`, `conditioning` (with "
        "`garment_image` or `control`), `inpaint`, `safety` (content moderation of the input "
        "photo with `moderate_inputs`, and of every result), `encode`, `upload`."
    )
    step: int | None = Field(None, description="Denoising step (stage `inpaint` only).")
    steps: int | None = Field(None, description="Total denoising steps (stage `inpaint` only).")


#: Denoising-step updates of one stage are sent at most this often (s); stage changes always.
PROGRESS_MIN_INTERVAL_S = 0.5


def throttled(send: Callable[[dict], None],
              min_interval_s: float = PROGRESS_MIN_INTERVAL_S) -> Callable[[dict], None]:
    """Wrap a progress sink so a stage's repeated updates go out at most every interval; what is
    sent is a :class:`JobProgress` as a JSON-ready dict (unset fields left out).

    A sink with a ``check()`` attribute has it called on every update, throttled or not, before
    anything else: the local dispatcher's cancel check, which raises ``JobError(cancelled)`` so
    that a cancelled job stops at its next stage or denoising step."""
    last = {"t": 0.0, "stage": None}
    check = getattr(send, "check", None)

    def wrapped(update: dict) -> None:
        if check is not None:
            check()
        now = time.monotonic()
        if update.get("stage") == last["stage"] and now - last["t"] < min_interval_s:
            return
        last.update(t=now, stage=update.get("stage"))
        send(JobProgress.model_validate(update).model_dump(mode="json", exclude_none=True))

    return wrapped


def execute(worker: Worker, job_id: str, payload: Any,
            progress: Callable[[dict], None] | None = None) -> tuple[dict, JobError | None]:
    """Validate and run one job.

    Returns:
        (reply dict, the JobError if the job failed else None).
    """
    try:
        job = parse_job(job_id, payload)
        result = worker.run(job, progress)
        return result.model_dump(mode="json", exclude_none=True), None
    except JobError as err:
        log.warning("job %s failed: %s (field=%s)", job_id, err.code.value, err.field)
        return {"error": error_body(err).model_dump(mode="json")}, err
    except Exception:
        log.exception("job %s: unexpected error", job_id)
        err = JobError(ErrorCode.internal, "internal error; the worker logged the details")
        return {"error": error_body(err).model_dump(mode="json")}, err


DEMO_PROMPT = "a red leather jacket, studio lighting"


def demo_job(image_path: str | Path | None = None, *, prompt: str = DEMO_PROMPT,
             steps: int = 30, task: str = "inpaint", seed: int | None = 42,
             targets: list[str] | None = None, mask_path: str | Path | None = None,
             job_id: str | None = None) -> dict:
    """A RunPod-shaped job ``{"id", "input"}`` on a photo file, sent as a data URL.

    ``image_path`` defaults to ultralytics' ``bus.jpg`` (a real photo). Reads bytes only; all
    image work happens in the worker.

    Raises:
        FileNotFoundError: no ``image_path`` and ultralytics is not installed locally.
    """
    if image_path is None:
        spec = importlib.util.find_spec("ultralytics")  # locates, does not import
        if spec is None or spec.origin is None:
            raise FileNotFoundError("bus.jpg ships with ultralytics; install it or pass an image")
        image_path = Path(spec.origin).parent / "assets" / "bus.jpg"

    def data_url(path: str | Path) -> str:
        path = Path(path)
        mime = {".png": "image/png", ".webp": "image/webp"}.get(path.suffix.lower(), "image/jpeg")
        return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()

    inp: dict[str, Any] = {"image": data_url(image_path), "task": task,
                           "targets": targets or ["upper"]}
    if mask_path is not None:
        inp["mask"] = data_url(mask_path)
    if task == "inpaint":
        inp.update(prompt=prompt, num_inference_steps=steps, seed=seed)
    return {"id": job_id or f"demo-{time.strftime('%Y%m%d-%H%M%S')}", "input": inp}
