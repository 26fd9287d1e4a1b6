"""The web API: ``POST /jobs``, ``GET /jobs/{id}``, ``DELETE /jobs/{id}``, ``GET /health``
(FastAPI), provider-neutral. The full reference, with examples, is ``docs/web-api.md``.

Jobs go through a :class:`handlers.dispatch.Dispatcher` (on Modal ``ModalDispatcher`` spawns the
GPU class; locally a ``ThreadDispatcher`` over a durable job table); the reply bodies are the
models below, which ``python -m handlers.schema`` exports (their ``Modal*`` names are kept: the
published schema and the TypeScript client use them).

Web API (JSON; every error is ``{"error": {"code", "message", "field", "retryable"}}``):

======================  ==================================================================
``GET /health``         200 ``{"status": "ok"}``; 503 ``{"status": "not_ready", "reason"}``
                        when no usable inpainting model is baked; no token needed.
``POST /jobs``          body: the job input (``core.contract.JobRequest``), bare or as
                        ``{"input": {...}, "webhook"?: "https://...", "id"?: key}``; header
                        ``Idempotency-Key`` (or body ``id``): the same key within
                        :data:`handlers.dispatch.ISSUED_TTL_S` returns the same job (200)
                        instead of a second one (422 when the body differs). 202
                        ``{"id", "status": "queued", "position"?}``; 400 ``invalid_input``
                        (not JSON, too many keys/items, a number too large, bad envelope)
                        or ``blocked_url`` (a webhook to a private address, checked here);
                        422 (fails the contract), or 422 ``content_blocked`` (the prompt is
                        refused by the content policy, :mod:`core.moderation`; nothing is
                        queued); 413 ``image_too_large`` (counted while
                        streaming); 408 ``timeout`` (the body stopped arriving); 401; 503.
``GET /jobs/{id}``      200 ``{"id", "status": "queued", "position"?}`` |
                        ``{"id", "status": "running", "progress"?}`` |
                        ``{"id", "status": "done", "output"}`` (URLs re-signed per poll) |
                        ``{"id", "status": "failed", "error"}`` |
                        ``{"id", "status": "cancelled"}``; 410 ``expired``; 404
                        ``not_found`` (any id this API did not hand out in the last
                        :data:`handlers.dispatch.ISSUED_TTL_S`); 401; 503.
``DELETE /jobs/{id}``   cancel: 200 ``{"id", "status": "cancelled"}`` (nothing more is
                        stored), or the final status when the job had already ended.
======================  ==================================================================

Bodies are read as a stream and checked off the event loop (:mod:`handlers.webbody`), so a
hostile body never stalls ``/health`` or a poll. Field names in error messages are capped and
sanitised (:func:`core.contract.safe_field`); a dispatcher failing to take or report a job
(Modal connection, service, auth) is 503 ``unavailable``.

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
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from core.contract import IMAGE_INPUTS, MAX_INPUT_CHARS
from core.errors import JobError
from core.settings import Settings
from handlers.dispatch import (Dispatcher, DispatchUnavailable, IssuedIds, MemoryIssuedIds,
                               UnknownJob, map_artefacts)
from handlers.webbody import (BODY_IDLE_TIMEOUT_S, MAX_JSON_TOKENS, BodyError, Submit,
                              check_key, parse_submit, read_body)
from handlers.webhook import WebhookPolicy, check_webhook
from handlers.webmodels import (ModalErrorResponse, ModalJobCancelled, ModalJobDone,  # noqa: F401
                                ModalJobFailed, ModalJobQueued, ModalJobRunning, ModalJobStatus,
                                ModalSubmitResponse, ModalWebErrorBody)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from core.storage import Storage

log = logging.getLogger("maskpaint.web")

#: Environment variable holding the web API bearer token (read through ``Settings.api_token``).
TOKEN_ENV = "MASKPAINT_API_TOKEN"
#: Shortest accepted API token, characters: a short token is guessable, refuse to serve with it.
MIN_TOKEN_CHARS = 16
#: Largest accepted ``POST /jobs`` body, bytes: every image input at the contract's string cap,
#: plus room for the other fields.
MAX_BODY_BYTES = len(IMAGE_INPUTS) * MAX_INPUT_CHARS + 256 * 1024
#: Bodies parsed and validated at once (in worker threads, off the event loop) ...
VALIDATORS = 2
#: ... and how many more may wait for a turn before submits get 503 (retryable).
MAX_WAITING_VALIDATIONS = 16


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

    @classmethod
    def of(cls, err: BodyError, headers: dict[str, str] | None = None) -> "_ApiError":
        return cls(err.status, err.code, err.message, field=err.field, retryable=err.retryable,
                   headers=headers)


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
                   webhook_policy: WebhookPolicy = WebhookPolicy(),
                   resign: Callable[[dict, int], dict] | None = None,
                   body_idle_timeout_s: float = BODY_IDLE_TIMEOUT_S,
                   max_json_tokens: int = MAX_JSON_TOKENS) -> "FastAPI":
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
        max_body_bytes: ``POST /jobs`` bodies above this get 413, counted while streaming.
        readiness: ``() -> None | reason`` for ``GET /health`` (e.g. :func:`weights_readiness`);
            default: always ready.
        issued: where the ids handed out by ``POST /jobs`` (and idempotency keys) are
            remembered; ``GET /jobs/{id}`` answers 404 for any other id without asking the
            dispatcher. Default: the dispatcher's own (``dispatcher.issued``: the local job
            table), else this process's memory; on Modal :class:`DictIssuedIds`.
        webhook_policy: the rules a submitted ``webhook`` URL is checked against (the
            delivery uses the same policy); production's by default.
        resign: ``(output, url_expires_s) -> output`` with fresh artefact URLs, applied to a
            done job at each poll (:func:`resign_with`); default: the URLs as recorded.
        body_idle_timeout_s: a body that stops arriving this long (s) is 408.
        max_json_tokens: bodies with more keys and list items are 400 before being parsed.

    Raises:
        ValueError: no token, or one shorter than :data:`MIN_TOKEN_CHARS` characters: the API
            refuses to start open or guessable.
    """
    import anyio
    from fastapi import Depends, FastAPI, Request
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect

    if issued is None:
        issued = getattr(dispatcher, "issued", None)
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
    # validation runs off the event loop, VALIDATORS at a time; more waiting than
    # MAX_WAITING_VALIDATIONS are 503 (retryable) rather than a growing pile of bodies
    limiter = anyio.CapacityLimiter(VALIDATORS)
    waiting = {"n": 0}

    app = FastAPI(title="maskpaint", docs_url=None, redoc_url=None, openapi_url=None)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
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
        if not bearer_ok(request.headers.get("authorization", ""), expected):
            raise _ApiError(401, "unauthorized", "missing or invalid bearer token",
                            headers={"WWW-Authenticate": "Bearer"})

    async def call(fn: Callable, *args: object, **kwargs: object) -> object:
        try:
            return await run_in_threadpool(fn, *args, **kwargs)
        except UnknownJob:
            raise _ApiError(404, "not_found", "no job with this id", field="id") from None
        except DispatchUnavailable as exc:
            raise _ApiError(503, "unavailable", str(exc), retryable=True) from None

    async def validate(raw: bytearray) -> Submit:
        if waiting["n"] >= MAX_WAITING_VALIDATIONS:
            raise _ApiError(503, "unavailable", "too many submits at once; retry shortly",
                            retryable=True, headers={"Retry-After": "1"})
        waiting["n"] += 1
        try:
            return await anyio.to_thread.run_sync(parse_submit, raw, max_json_tokens, settings,
                                                  limiter=limiter)
        except BodyError as err:
            raise _ApiError.of(err) from None
        finally:
            waiting["n"] -= 1

    def reply(job_id: str, status: dict, meta: dict) -> JSONResponse:
        if status.get("status") == "expired":
            raise _ApiError(410, "expired", "the result is no longer held; submit the job "
                            "again (stored outputs stay in the bucket)", retryable=True,
                            extra={"status": "expired"})
        if status.get("status") == "done" and resign is not None:
            try:
                status = {**status, "output": resign(status["output"],
                                                     int(meta.get("url_expires_s") or 3600))}
            except Exception as exc:  # the recorded URLs are still an answer
                log.warning("job %s: re-signing URLs failed: %s", job_id, type(exc).__name__)
        return JSONResponse({"id": job_id, **status})

    @app.get("/health")
    def health() -> JSONResponse:
        reason = readiness() if readiness is not None else None
        if reason is not None:
            return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.post("/jobs", status_code=202, dependencies=[Depends(require_token)])
    async def submit(request: Request) -> Response:
        header_key = request.headers.get("idempotency-key")
        try:
            if header_key is not None:
                check_key(header_key, "Idempotency-Key")
            raw = await read_body(request, max_body_bytes, body_idle_timeout_s)
        except BodyError as err:
            raise _ApiError.of(err, headers={"Connection": "close"}) from None
        except ClientDisconnect:  # one line, no traceback: the client left, nothing to answer
            log.warning("client disconnected mid-body; nothing queued")
            return Response(status_code=400)
        sub = await validate(raw)
        del raw
        if header_key is not None and sub.key is not None and sub.key != header_key:
            raise _ApiError(400, "invalid_input", "id: differs from the Idempotency-Key header",
                            field="id")
        key = header_key or sub.key
        webhook = sub.job.get("webhook")
        if webhook is not None:
            try:
                await run_in_threadpool(check_webhook, webhook, webhook_policy)
            except JobError as err:
                raise _ApiError(400, err.code.value, err.message, field=err.field) from None
        if key is not None:
            bound = await call(issued.key_get, key)
            if bound is not None:
                return await replay(key, bound, sub.fingerprint)
        job_id = await call(dispatcher.submit, sub.job)
        await call(issued.add, job_id, {"url_expires_s": sub.url_expires_s})
        if key is not None:
            bound = await call(issued.key_bind, key, job_id, sub.fingerprint)
            if bound[0] != job_id:  # another submit with this key won the race: keep its job
                await call(dispatcher.cancel, job_id)
                return await replay(key, bound, sub.fingerprint)
        log.info("job %s queued", job_id)
        body: dict = {"id": job_id, "status": "queued"}
        position = getattr(dispatcher, "position", None)  # where the dispatcher knows its queue
        if position is not None:
            place = await call(position, job_id)
            if place is not None:
                body["position"] = place
        return JSONResponse(body, status_code=202, headers={"Location": f"/jobs/{job_id}"})

    async def replay(key: str, bound: tuple[str, str], fingerprint: str) -> JSONResponse:
        job_id, first = bound
        if first != fingerprint:
            raise _ApiError(422, "invalid_input", "Idempotency-Key: already used for a "
                            "different request", field="Idempotency-Key")
        log.info("job %s: submit repeated with its idempotency key", job_id)
        return JSONResponse({"id": job_id, "status": "queued"}, status_code=200,
                            headers={"Location": f"/jobs/{job_id}"})

    async def issued_meta(job_id: str) -> dict:
        """What submit recorded of an id this API handed out; 404 ``not_found`` otherwise."""
        meta = await call(issued.meta, job_id)
        if meta is None:
            raise _ApiError(404, "not_found", "no job with this id", field="id")
        return meta

    @app.get("/jobs/{job_id}", dependencies=[Depends(require_token)])
    async def poll(job_id: str) -> JSONResponse:
        meta = await issued_meta(job_id)
        if meta.get("cancelled"):
            return JSONResponse({"id": job_id, "status": "cancelled"})
        status = await call(dispatcher.poll, job_id)
        if status.get("status") == "done" and resign is not None:
            return await run_in_threadpool(reply, job_id, status, meta)
        return reply(job_id, status, meta)

    @app.delete("/jobs/{job_id}", dependencies=[Depends(require_token)])
    async def cancel(job_id: str) -> JSONResponse:
        meta = await issued_meta(job_id)
        if meta.get("cancelled"):
            return JSONResponse({"id": job_id, "status": "cancelled"})
        status = await call(dispatcher.cancel, job_id)
        if status.get("status") == "cancelled":
            await call(issued.update, job_id, cancelled=True)
        return await run_in_threadpool(reply, job_id, status, meta)

    return app


def bearer_ok(header: str, expected: bytes) -> bool:
    """Whether an ``Authorization`` header carries the bearer token (constant-time compare)."""
    scheme, _, presented = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(),
                                                              expected)


def resign_with(storage: "Storage") -> Callable[[dict, int], dict]:
    """A ``resign`` for :func:`create_web_app`: each artefact's URL made afresh from its
    ``key`` by ``storage.url`` (a new presigned S3 URL; a ``file://`` URL locally)."""
    return lambda output, expires_s: map_artefacts(
        output, lambda _n, a: {**a, "url": storage.url(a["key"], expires_s)})
