"""The web API's dispatcher on Modal: spawn, poll and cancel calls of the GPU class.

Torch-free; ``modal`` is imported inside the methods (``modal deploy`` imports this module).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from handlers.dispatch import (FINAL, DispatchUnavailable, ProgressStore, UnknownJob, failed,
                               queued, running, status_from_reply)

log = logging.getLogger("maskpaint.modal")

#: Modal function-call ids, e.g. ``fc-01JD...``; anything else is unknown without asking Modal.
_CALL_ID = re.compile(r"fc-[A-Za-z0-9]{1,64}")


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    import modal.exception as mx

    return (mx.ConnectionError, mx.ServiceError, mx.InternalError, mx.ResourceExhaustedError,
            mx.AuthError)


class ModalDispatcher:
    """Jobs on the GPU class: ``Function.spawn`` to submit, ``FunctionCall.get(timeout=0)`` to
    poll, ``FunctionCall.cancel()`` to cancel.

    Args:
        method: returns the Modal method to spawn (``lambda: MaskPaint().run``); looked up per
            call so the web container resolves it lazily.
        progress: where the GPU containers write each call's latest progress (a
            :class:`handlers.dispatch.DictProgress` over a ``modal.Dict`` keyed by call id);
            read while the call is pending: a call with progress is ``running``, one without
            is ``queued`` (Modal tells no queue position, so none is given).

    Poll mapping (modal 1.6): builtin ``TimeoutError`` = not finished; ``OutputExpiredError``
    (a subclass of ``modal.exception.TimeoutError``, not of the builtin) = result gone;
    ``FunctionTimeoutError`` = Modal killed the input at its timeout (after retries);
    ``InputCancellation`` = cancelled; ``NotFoundError``/``InvalidError`` = unknown id;
    connection/service errors = unavailable; any other exception is the remote call's own
    failure (a crash after retries) = ``internal``.
    """

    def __init__(self, method: Callable[[], Any], progress: ProgressStore | None = None) -> None:
        self._method = method
        self.progress = progress

    def submit(self, job: dict) -> str:
        try:
            return self._method().spawn(job).object_id
        except _unavailable_errors() as exc:
            log.warning("spawn failed: %s", type(exc).__name__)
            raise DispatchUnavailable("could not queue the job") from None

    def poll(self, job_id: str) -> dict:
        if not _CALL_ID.fullmatch(job_id):
            raise UnknownJob(job_id)
        import modal
        import modal.exception as mx

        try:
            reply = modal.FunctionCall.from_id(job_id).get(timeout=0)
        except mx.OutputExpiredError:
            return {"status": "expired"}
        except mx.FunctionTimeoutError:
            return failed("timeout", "the job ran past the worker's time limit", retryable=True)
        except TimeoutError:  # builtin: no output yet
            update = self.progress.get(job_id) if self.progress is not None else None
            return running(update) if update is not None else queued()
        except (mx.NotFoundError, mx.InvalidError):
            raise UnknownJob(job_id) from None
        except _unavailable_errors() as exc:
            log.warning("poll %s failed: %s", job_id, type(exc).__name__)
            raise DispatchUnavailable("could not read the job status") from None
        except mx.InputCancellation:
            return {"status": "cancelled"}
        except Exception as exc:  # the remote call raised / crashed after its retries
            log.error("job %s failed remotely: %s", job_id, type(exc).__name__)
            return failed("internal", "the worker failed; details are in its log",
                          retryable=True)
        return status_from_reply(reply)

    def cancel(self, job_id: str) -> dict:
        """Cancel the call unless it has ended (then its final status is returned). A running
        input is interrupted by Modal; whatever it had uploaded stays, but no record is
        written after the interruption and polls answer ``cancelled``."""
        status = self.poll(job_id)
        if status.get("status") in FINAL or status.get("status") == "expired":
            return status
        import modal

        try:
            modal.FunctionCall.from_id(job_id).cancel()
        except _unavailable_errors() as exc:
            log.warning("cancel %s failed: %s", job_id, type(exc).__name__)
            raise DispatchUnavailable("could not cancel the job") from None
        return {"status": "cancelled"}
