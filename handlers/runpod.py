"""RunPod serverless handler: ``job`` dict -> core -> result dict.

Reply shapes (RunPod marks a job FAILED when the handler's dict has a top-level ``error``):
- success: the ``JobResult`` dict;
- failure: ``{"error": "<code>: <message>", "error_code", "message", "field", "retryable"}``,
  plus ``refresh_worker: true`` when the accelerator is unusable (RunPod then recycles the
  worker);
- with ``MASKPAINT_ONE_JOB_PER_WORKER=1`` every reply, success or failure, carries
  ``refresh_worker: true``: one job per worker process (the SDK pops the key from the output).

Progress goes through ``runpod.serverless.progress_update`` (stage changes and denoising steps,
at most every ``handlers.common.PROGRESS_MIN_INTERVAL_S``) when running on RunPod; locally it is logged.
The SDK's own log lines go through our JSON handler too (:func:`route_sdk_logs`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.contract import JobResult
from core.errors import ErrorCode
from handlers.common import JobProgress, execute, throttled

if TYPE_CHECKING:
    from core.pipeline import Worker

log = logging.getLogger("maskpaint.runpod")

RunpodStatus = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]


# ------------------------------------------------------------------------------- reply models
class RunpodErrorOutput(BaseModel):
    """`output` of a FAILED RunPod job: the error body, RunPod-style field names."""

    error_code: ErrorCode
    message: str
    field: str | None = None
    retryable: bool


class RunpodJobResponse(BaseModel):
    """RunPod's reply to `/run`, `/runsync` and `/status/{id}` for a maskpaint job."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: RunpodStatus
    output: JobResult | RunpodErrorOutput | JobProgress | None = Field(
        None,
        description="COMPLETED: the JobResult. FAILED: RunpodErrorOutput (hosted API only). "
        "IN_PROGRESS: the latest JobProgress, if any.",
    )
    error: str | None = Field(
        None, description='FAILED: `"<code>: <message>"` (code from ErrorCode).'
    )
    delayTime: int | None = Field(None, description="ms in queue (hosted API).")
    executionTime: int | None = Field(None, description="ms running (hosted API).")


# ------------------------------------------------------------------------------- the SDK
def _cpu_brand() -> dict:
    """``{"brand_raw": <CPU model name>}`` from ``/proc/cpuinfo`` (``platform.processor()``
    elsewhere): what the SDK keeps from py-cpuinfo's answer, without its subprocess."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return {"brand_raw": line.split(":", 1)[1].strip()}
    except OSError:
        pass
    import platform

    return {"brand_raw": platform.processor() or "unknown"}


def import_sdk():
    """``import runpod`` without py-cpuinfo's subprocess; returns the ``runpod`` module.

    Why a hand-written piece: runpod 1.12's ``runpod/serverless/utils/rp_debugger.py`` calls
    ``cpuinfo.get_cpu_info()`` at import time (no setting or environment variable turns it off)
    only to keep ``["brand_raw"]`` for the ``--rp_debugger`` output; py-cpuinfo 9 answers by
    starting a second Python interpreter (``python cpuinfo.py --json``), which cost about 1.1 s of
    the worker's cold start here (bench "Cold start": fresh ``import runpod`` 1,633 ms vs 478 ms).
    During this import only, ``cpuinfo.get_cpu_info`` is replaced by :func:`_cpu_brand` (the
    same ``brand_raw`` on Linux, read from ``/proc/cpuinfo``), then restored, so anything else
    that asks py-cpuinfo gets its full answer. Idempotent; without py-cpuinfo it is a plain
    import.
    """
    if "runpod" in sys.modules:
        return sys.modules["runpod"]
    try:
        import cpuinfo
    except ImportError:  # a future SDK without py-cpuinfo
        cpuinfo = None
    original = getattr(cpuinfo, "get_cpu_info", None)
    if original is not None:
        cpuinfo.get_cpu_info = _cpu_brand
    try:
        import runpod
    finally:
        if original is not None:
            cpuinfo.get_cpu_info = original
    return runpod


# ------------------------------------------------------------------------------- handler


def _progress_sender(job: dict) -> Callable[[dict], None]:
    if os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):  # on RunPod: its progress channel
        runpod = import_sdk()

        return throttled(lambda update: runpod.serverless.progress_update(job, update))
    return throttled(lambda update: log.debug("progress %s", update))


#: RunPod SDK level names -> logging levels (``TIP`` lines are hints, ``TRACE`` below DEBUG).
_SDK_LEVELS = {"TRACE": 5, "DEBUG": logging.DEBUG, "INFO": logging.INFO, "TIP": logging.INFO,
               "WARN": logging.WARNING, "ERROR": logging.ERROR}


def route_sdk_logs() -> None:
    """Send the runpod SDK's own log lines through :mod:`logging` (our JSON handler).

    Why: the SDK's ``RunPodLogger`` prints straight to stdout (plain text locally, its own JSON on
    RunPod), past our redaction; locally it prints each job's result (presigned URLs included)
    and error messages. Its level filter (``RUNPOD_LOG_LEVEL``) is kept; job ids go to the
    record's ``job_id``. Idempotent.
    """
    import_sdk()
    from runpod.serverless.modules import rp_logger

    sdk_log = logging.getLogger("runpod")
    levels = rp_logger.LOG_LEVELS

    def log_line(self, message, message_level="INFO", job_id=None):
        if self.level == "NOTSET":
            return
        if (message_level != "TIP" and message_level in levels
                and levels.index(self.level) > levels.index(message_level)):
            return
        sdk_log.log(_SDK_LEVELS.get(message_level, logging.INFO), "%s", message,
                    extra={"job_id": str(job_id)} if job_id else None)

    rp_logger.RunPodLogger.log = log_line


def make_handler(worker: Worker) -> Callable[[dict], dict]:
    """Build the function given to ``runpod.serverless.start({"handler": ...})``."""

    one_job = bool(getattr(getattr(worker, "settings", None), "one_job_per_worker", False))

    def handler(job: dict[str, Any]) -> dict:
        job_id = str(job.get("id") or "local")
        reply, err = execute(worker, job_id, job.get("input"), _progress_sender(job))
        if err is None:
            # the SDK pops the flag before storing the output, and stops the worker after it
            return {**reply, "refresh_worker": True} if one_job else reply
        body = reply["error"]
        out = RunpodErrorOutput(error_code=body["code"], message=body["message"],
                                field=body["field"], retryable=body["retryable"])
        # RunPod marks the job FAILED on a top-level ``error`` string and keeps the rest as output
        out = {"error": f"{body['code']}: {body['message']}", **out.model_dump(mode="json")}
        if err.refresh_worker or one_job:
            out["refresh_worker"] = True
        return out

    return handler
