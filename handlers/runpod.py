"""RunPod serverless handler: ``job`` dict -> core -> result dict.

Reply shapes (RunPod marks a job FAILED when the handler's dict has a top-level ``error``):
- success: the ``JobResult`` dict;
- failure: ``{"error": "<code>: <message>", "error_code", "message", "field", "retryable"}``,
  plus ``refresh_worker: true`` when the accelerator is unusable (RunPod then recycles the
  worker).

Progress goes through ``runpod.serverless.progress_update`` (stage changes and denoising steps,
at most every ``handlers.common.PROGRESS_MIN_INTERVAL_S``) when running on RunPod; locally it is logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from handlers.common import execute, throttled

if TYPE_CHECKING:
    from core.pipeline import Worker

log = logging.getLogger("maskpaint.runpod")


def _progress_sender(job: dict) -> Callable[[dict], None]:
    if os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):  # on RunPod: its progress channel
        import runpod

        return throttled(lambda update: runpod.serverless.progress_update(job, update))
    return throttled(lambda update: log.debug("progress %s", update))


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
