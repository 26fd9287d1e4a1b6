"""RunPod serverless handler: ``job`` dict -> core -> result dict.

Reply shapes (RunPod marks a job FAILED when the handler's dict has a top-level ``error``):
- success: the ``JobResult`` dict;
- failure: ``{"error": "<code>: <message>", "error_code", "message", "field", "retryable"}``,
  plus ``refresh_worker: true`` when the accelerator is unusable (RunPod then recycles the
  worker).

Progress goes through ``runpod.serverless.progress_update`` (stage changes and denoising steps,
at most every :data:`PROGRESS_MIN_INTERVAL_S`) when running on RunPod; locally it is logged.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from handlers.common import execute

if TYPE_CHECKING:
    from core.pipeline import Worker

log = logging.getLogger("maskpaint.runpod")
PROGRESS_MIN_INTERVAL_S = 0.5


def _progress_sender(job: dict) -> Callable[[dict], None]:
    on_runpod = bool(os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"))
    last = {"t": 0.0, "stage": None}

    def send(update: dict) -> None:
        now = time.monotonic()
        if update.get("stage") == last["stage"] and now - last["t"] < PROGRESS_MIN_INTERVAL_S:
            return
        last.update(t=now, stage=update.get("stage"))
        if on_runpod:
            import runpod

            runpod.serverless.progress_update(job, update)
        else:
            log.debug("progress %s", update)

    return send


def make_handler(worker: Worker) -> Callable[[dict], dict]:
    """Build the function given to ``runpod.serverless.start({"handler": ...})``."""

    def handler(job: dict[str, Any]) -> dict:
        job_id = str(job.get("id") or "local")
        reply, err = execute(worker, job_id, job.get("input"), _progress_sender(job))
        if err is None:
            return reply
        body = reply["error"]
        out = {"error": f"{body['code']}: {body['message']}", "error_code": body["code"],
               "message": body["message"], "field": body["field"],
               "retryable": body["retryable"]}
        if err.refresh_worker:
            out["refresh_worker"] = True
        return out

    return handler
