"""The web API: ``POST /jobs``, ``GET /jobs/{id}``, ``GET /health`` (FastAPI), provider-neutral.

Jobs go through a :class:`handlers.dispatch.Dispatcher` (on Modal ``ModalDispatcher`` spawns the
GPU class; locally a ``ThreadDispatcher``); the reply bodies are the models below, which
``python -m handlers.schema`` exports (their ``Modal*`` names are kept: the published schema and
the TypeScript client use them).

Web API (JSON; every error is ``{"error": {"code", "message", "field", "retryable"}}``):

===================  =====================================================================
``GET /health``      200 ``{"status": "ok"}``; 503 ``{"status": "not_ready", "reason"}`` when
                     the image has no usable inpainting model baked (the GPU class would
                     answer every job with ``model_not_found``); no token needed.
``POST /jobs``       body: the job input (``core.contract.JobRequest``), bare or as
                     ``{"input": {...}, "webhook": "https://..."}`` (optional; signed POST of
                     the finished body, :mod:`handlers.webhook`). 202 ``{"id", "status": "queued"}``; 400
                     ``invalid_input`` (not JSON / not an object / bad envelope); 422
                     ``invalid_input`` with ``field`` (fails the contract); 422
                     ``content_blocked`` (the prompt is refused by the content policy,
                     :mod:`core.moderation`; nothing is queued); 413
                     ``image_too_large`` (body over :data:`MAX_BODY_BYTES`); 401
                     ``unauthorized``; 503 ``unavailable`` (the dispatcher could not take the job).
``GET /jobs/{id}``   200 ``{"status": "pending", "progress"?: {"stage", "step"?, "steps"?}}`` | ``{"status": "done", "output": {...}}`` |
                     ``{"status": "failed", "error": {...}}``; 410 ``{"status": "expired"}``
                     (the dispatcher no longer holds the result); 404 ``not_found`` (also
                     for any id this API did not hand out in the last
                     :data:`handlers.dispatch.ISSUED_TTL_S`); 401; 503.
===================  =====================================================================

Bodies nested too deeply for the JSON decoder are 400 ``invalid_input``; field names in error
messages are capped and sanitised (:func:`core.contract.safe_field`); Modal failing to take or
report a call (connection, service, auth) is 503 ``unavailable`` on both routes.

Web-only error codes (not job failures): ``unauthorized``, ``not_found``, ``expired``,
``unavailable``. The job id is the dispatcher's (on Modal the function-call id, ``fc-...``).

Serving it elsewhere needs only a dispatcher: ``create_web_app(ThreadDispatcher(runner))`` with
``runner = lambda job, job_id, progress: run_job(worker, job, job_id, progress=progress)`` runs
jobs in this process; :mod:`handlers.serve` (``make serve``) does that, with static files.
"""

# No ``from __future__ import annotations`` here: FastAPI resolves a route's annotations in the
# module's globals, and ``Request`` is imported inside :func:`create_web_app` (lazily, so that
# ``modal deploy`` does not need fastapi locally); real annotation objects avoid that lookup.
import hmac
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import BaseModel, Field, RootModel

from core.contract import (IMAGE_INPUTS, MAX_INPUT_CHARS, JobErrorBody, JobResult, parse_job,
                           safe_field)
from core.errors import ErrorCode, JobError
from core.moderation.stage import screen_prompt
from core.settings import Settings
from handlers.common import JobProgress
from handlers.dispatch import (Dispatcher, DispatchUnavailable, IssuedIds, MemoryIssuedIds,
                               UnknownJob)
from handlers.webhook import WebhookPolicy, check_webhook

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("maskpaint.web")

#: Environment variable holding the web API bearer token (read through ``Settings.api_token``).
TOKEN_ENV = "MASKPAINT_API_TOKEN"
#: Shortest accepted API token, characters: a short token is guessable, refuse to serve with it.
MIN_TOKEN_CHARS = 16
#: Largest accepted ``POST /jobs`` body, bytes: every image input at the contract's string cap,
#: plus room for the other fields.
MAX_BODY_BYTES = len(IMAGE_INPUTS) * MAX_INPUT_CHARS + 256 * 1024


# ------------------------------------------------------------------------------ reply bodies
class ModalSubmitResponse(BaseModel):
    """`POST /jobs` -> 202 Accepted."""

    id: str
    status: Literal["queued"]


class ModalJobPending(BaseModel):
    status: Literal["pending"]
    progress: JobProgress | None = Field(
        None, description="The worker's latest progress (stage; denoising step of `inpaint`), "
        "once it has started.")


class ModalJobDone(BaseModel):
    status: Literal["done"]
    output: JobResult


class ModalJobFailed(BaseModel):
    status: Literal["failed"]
    error: JobErrorBody


class ModalJobStatus(RootModel):
    """`GET /jobs/{id}` -> 200 (404 unknown id; 410 with code `expired` once Modal drops it)."""

    root: Annotated[
        Union[ModalJobPending, ModalJobDone, ModalJobFailed], Field(discriminator="status")
    ]


class ModalWebErrorBody(BaseModel):
    """Error body of the web layer: a job's code, or one of the web-only codes."""

    code: ErrorCode | Literal["unauthorized", "not_found", "expired", "unavailable"]
    message: str
    field: str | None = None
    retryable: bool


class ModalErrorResponse(BaseModel):
    """Any 4xx/5xx body from the Modal web endpoints: 400/413/422 invalid body (a job code),
    401 `unauthorized`, 404 `not_found`, 410 `expired`, 503 `unavailable`."""

    error: ModalWebErrorBody


# ------------------------------------------------------------------------------ web API
def error_response(code: str, message: str, *, field: str | None = None,
                   retryable: bool = False) -> dict:
    """A :class:`ModalErrorResponse` body as a JSON-ready dict (validated: an unknown code raises)."""
    body = ModalWebErrorBody(code=code, message=message, field=field, retryable=retryable)
    return ModalErrorResponse(error=body).model_dump(mode="json")


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 retryable: bool = False, headers: dict[str, str] | None = None,
                 extra: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.headers, self.extra = status, headers, extra or {}
        self.body = error_response(code, message, field=field, retryable=retryable)


def weights_readiness() -> str | None:
    """Why this image cannot serve inpainting jobs, or None when it can.

    Reads ``<MASKPAINT_WEIGHTS_DIR>/receipt.json`` (no hashing, no torch): ready when an
    inpainting model is baked, and the configured ``MASKPAINT_DEFAULT_MODEL`` (if any) is one.
    """
    from weights.resolve import baked_inpainters

    settings = Settings()
    baked = baked_inpainters(settings.weights_dir)
    if not baked:
        return (f"no inpainting model baked under {settings.weights_dir}: build the image with "
                "`python -m weights.bake --profile <sd15|sdxl|full> --out /weights`")
    if settings.default_model and settings.default_model not in baked:
        return f"default model {settings.default_model!r} is not baked (baked: {baked})"
    return None


def create_web_app(dispatcher: Dispatcher, *, token: str | None = None,
                   cors_origins: list[str] | tuple[str, ...] | None = None,
                   max_body_bytes: int = MAX_BODY_BYTES,
                   readiness: Callable[[], str | None] | None = None,
                   issued: IssuedIds | None = None,
                   webhook_policy: WebhookPolicy = WebhookPolicy()) -> "FastAPI":
    """The web API as one FastAPI app (see the module docstring for routes and shapes).

    Args:
        dispatcher: where jobs go (:class:`ModalDispatcher` on Modal).
        token: bearer token; default ``Settings().api_token`` (``MASKPAINT_API_TOKEN``, on
            Modal from the API secret).
            Compared with ``hmac.compare_digest`` (constant time).
        cors_origins: allowed browser origins; default ``Settings().cors_origins``
            (``MASKPAINT_CORS_ORIGINS``, comma list).
            Empty: no CORS headers (server-to-server callers such as a Cloudflare Worker or a
            Next.js route handler need none).
        max_body_bytes: ``POST /jobs`` bodies above this get 413 before being read.
        readiness: ``() -> None | reason`` for ``GET /health`` (e.g. :func:`weights_readiness`);
            default: always ready.
        issued: where the ids handed out by ``POST /jobs`` are remembered; ``GET /jobs/{id}``
            answers 404 for any other id without asking the dispatcher. Default: this
            process's memory (:class:`MemoryIssuedIds`); on Modal :class:`DictIssuedIds`.
        webhook_policy: the rules a submitted ``webhook`` URL is checked against (the
            dispatcher's runner delivers under the same policy); production's by default.

    Raises:
        ValueError: no token, or one shorter than :data:`MIN_TOKEN_CHARS` characters: the API
            refuses to start open or guessable.
    """
    from fastapi import Depends, FastAPI, Request
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    issued = issued if issued is not None else MemoryIssuedIds()
    settings = Settings()
    if token is None and settings.api_token is not None:
        token = settings.api_token.get_secret_value()
    if not token or len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{TOKEN_ENV} must be set to a token of at least {MIN_TOKEN_CHARS} "
                         "characters (put it in the API Modal secret)")
    expected = token.encode()
    if cors_origins is None:
        cors_origins = settings.cors_origins

    app = FastAPI(title="maskpaint", docs_url=None, redoc_url=None, openapi_url=None)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type"],
                           allow_credentials=False, max_age=600)

    @app.exception_handler(_ApiError)
    async def _api_error(_request: Request, exc: _ApiError) -> JSONResponse:
        return JSONResponse({**exc.extra, **exc.body}, status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # any other routing error (405 method) is the caller's: invalid_input, a published code
        code = "not_found" if exc.status_code == 404 else "invalid_input"
        return JSONResponse(error_response(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("web request failed: %s", type(exc).__name__)  # no payload, no traceback out
        return JSONResponse(error_response("internal", "internal error", retryable=True),
                            status_code=500)

    def require_token(request: Request) -> None:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(),
                                                                 expected)
        if not ok:
            raise _ApiError(401, "unauthorized", "missing or invalid bearer token",
                            headers={"WWW-Authenticate": "Bearer"})

    @app.get("/health")
    def health() -> JSONResponse:
        reason = readiness() if readiness is not None else None
        if reason is not None:
            return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.post("/jobs", status_code=202, dependencies=[Depends(require_token)])
    async def submit(request: Request) -> JSONResponse:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            raise _ApiError(413, "image_too_large", f"body: over {max_body_bytes} bytes",
                            field="body")
        raw = await request.body()
        if len(raw) > max_body_bytes:
            raise _ApiError(413, "image_too_large", f"body: over {max_body_bytes} bytes",
                            field="body")
        try:
            body = json.loads(raw)
        except ValueError:
            raise _ApiError(400, "invalid_input", "body: not valid JSON", field="body") from None
        except RecursionError:  # json's decoder recurses per nesting level
            raise _ApiError(400, "invalid_input", "body: JSON nested too deeply",
                            field="body") from None
        if not isinstance(body, dict):
            raise _ApiError(400, "invalid_input", "body: must be a JSON object", field="body")
        webhook = body.pop("webhook", None) if "input" in body else None
        if "input" in body:
            extra = sorted(set(body) - {"input"})
            if extra:
                name = safe_field(extra[0])
                raise _ApiError(400, "invalid_input", f"{name}: unknown field beside 'input'",
                                field=name)
            payload = body["input"]
        else:
            payload = body
        try:
            job_in = parse_job("validate", payload)  # the worker validates again; this fails fast
            screen_prompt(job_in, settings)  # a refused prompt is answered now, never queued
        except JobError as err:
            raise _ApiError(422 if isinstance(payload, dict) else 400, err.code.value,
                            err.message, field=err.field, retryable=err.retryable) from None
        job: dict = {"input": payload}
        if webhook is not None:
            try:
                check_webhook(webhook, webhook_policy)
            except JobError as err:
                raise _ApiError(400, err.code.value, err.message, field=err.field) from None
            job["webhook"] = webhook
        try:
            job_id = await run_in_threadpool(dispatcher.submit, job)
            await run_in_threadpool(issued.add, job_id)
        except DispatchUnavailable as exc:
            raise _ApiError(503, "unavailable", str(exc), retryable=True) from None
        log.info("job %s queued", job_id)
        return JSONResponse(ModalSubmitResponse(id=job_id, status="queued").model_dump(),
                            status_code=202,
                            headers={"Location": f"/jobs/{job_id}"})

    @app.get("/jobs/{job_id}", dependencies=[Depends(require_token)])
    async def poll(job_id: str) -> JSONResponse:
        try:
            if not await run_in_threadpool(issued.__contains__, job_id):
                raise UnknownJob(job_id)  # not queued through this API (or expired)
            status = await run_in_threadpool(dispatcher.poll, job_id)
        except UnknownJob:
            raise _ApiError(404, "not_found", "no job with this id", field="id") from None
        except DispatchUnavailable as exc:
            raise _ApiError(503, "unavailable", str(exc), retryable=True) from None
        if status.get("status") == "expired":
            raise _ApiError(410, "expired", "the result is no longer held; submit the job "
                            "again (stored outputs stay in the bucket)", retryable=True,
                            extra={"status": "expired"})
        return JSONResponse(status)

    return app
