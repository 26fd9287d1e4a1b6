"""The web API's reply bodies (pydantic), exported to ``schema/modal.schema.json`` by
``python -m handlers.schema``; :mod:`handlers.web` re-exports them. Their ``Modal*`` names are
kept: the published schema and the TypeScript client use them."""

from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field, RootModel

from core.contract import JobErrorBody, JobResult
from core.errors import ErrorCode
from handlers.common import JobProgress


# ------------------------------------------------------------------------------ reply bodies
class ModalSubmitResponse(BaseModel):
    """`POST /jobs` -> 202 Accepted (a new job), or 200 (the `Idempotency-Key` / body `id` was
    used within the TTL: the same job, no second one)."""

    id: str
    status: Literal["queued"]
    position: int | None = Field(None, description="1-based place in the queue (1 = next to "
                                 "start), where the dispatcher knows it (locally; not on Modal).")


class ModalJobQueued(BaseModel):
    id: str
    status: Literal["queued"]
    position: int | None = Field(None, description="1-based place in the queue (1 = next to "
                                 "start), where the dispatcher knows it (locally; not on Modal).")


class ModalJobRunning(BaseModel):
    id: str
    status: Literal["running"]
    progress: JobProgress | None = Field(
        None, description="The worker's latest progress (stage; denoising step of `inpaint`), "
        "once it has reported one.")


class ModalJobDone(BaseModel):
    id: str
    status: Literal["done"]
    output: JobResult = Field(..., description="The result; its URLs are signed afresh at each "
                              "poll (from the job's record), for the request's "
                              "`output.url_expires_s`.")


class ModalJobFailed(BaseModel):
    id: str
    status: Literal["failed"]
    error: JobErrorBody


class ModalJobCancelled(BaseModel):
    id: str
    status: Literal["cancelled"]


class ModalJobStatus(RootModel):
    """`GET /jobs/{id}` and `DELETE /jobs/{id}` -> 200 (404 unknown id; 410 with code
    `expired` once the result is gone)."""

    root: Annotated[
        Union[ModalJobQueued, ModalJobRunning, ModalJobDone, ModalJobFailed, ModalJobCancelled],
        Field(discriminator="status")
    ]


class ModalWebErrorBody(BaseModel):
    """Error body of the web layer: a job's code, or one of the web-only codes."""

    code: ErrorCode | Literal["unauthorized", "not_found", "expired", "unavailable"]
    message: str
    field: str | None = None
    retryable: bool


class ModalErrorResponse(BaseModel):
    """Any 4xx/5xx body from the web API: 400/413/422 invalid body (a job code), 401
    `unauthorized`, 404 `not_found`, 408 `timeout` (the body stopped arriving), 410 `expired`,
    503 `unavailable`."""

    error: ModalWebErrorBody
