"""Modal glue: deploy knobs, job shaping, worker set-up and the web API for ``modal_app.py``.

``modal_app.py`` only declares Modal objects; everything that can be tested without a Modal
account lives here:

- :class:`ModalConfig`: the deploy knobs (``MASKPAINT_MODAL_*`` environment variables).
- :func:`load_models` / :func:`make_worker`: cold start split in two for memory snapshots (load
  on CPU before the snapshot, move to the GPU and open storage after the restore).
- :func:`run_job`: one job dict -> :func:`handlers.common.execute` (the same translation as
  RunPod) -> the reply dict; an accelerator failure stops the container taking more inputs.
- :func:`create_web_app`: the FastAPI app (``POST /jobs``, ``GET /jobs/{id}``, ``GET /health``)
  behind one seam, a :class:`Dispatcher` (:class:`ModalDispatcher` spawns and polls the GPU
  class; :class:`ThreadDispatcher` runs jobs in a local thread pool for tests and local serving).

Reply shapes of the GPU method (``MaskPaint.run``):

- success: the ``JobResult`` dict, field for field what the RunPod handler returns;
- failure: ``{"error": {"code", "message", "field", "retryable"}}`` (the neutral body of
  :func:`handlers.common.execute`; RunPod flattens it into a string, Modal needs no such thing).

Web API (JSON; every error is ``{"error": {"code", "message", "field", "retryable"}}``):

===================  =====================================================================
``GET /health``      200 ``{"status": "ok"}``; 503 ``{"status": "not_ready", "reason"}`` when
                     the image has no usable inpainting model baked (the GPU class would
                     answer every job with ``model_not_found``); no token needed.
``POST /jobs``       body: the job input (``core.contract.JobRequest``), bare or as
                     ``{"input": {...}}``. 202 ``{"id", "status": "queued"}``; 400
                     ``invalid_input`` (not JSON / not an object / bad envelope); 422
                     ``invalid_input`` with ``field`` (fails the contract); 413
                     ``image_too_large`` (body over :data:`MAX_BODY_BYTES`); 401
                     ``unauthorized``; 503 ``unavailable`` (Modal could not take the call).
``GET /jobs/{id}``   200 ``{"status": "pending"}`` | ``{"status": "done", "output": {...}}`` |
                     ``{"status": "failed", "error": {...}}``; 410 ``{"status": "expired"}``
                     (Modal no longer holds the result); 404 ``not_found`` (also for any id
                     this API did not hand out in the last :data:`ISSUED_TTL_S`); 401; 503.
===================  =====================================================================

Bodies nested too deeply for the JSON decoder are 400 ``invalid_input``; field names in error
messages are capped and sanitised (:func:`core.contract.safe_field`); Modal failing to take or
report a call (connection, service, auth) is 503 ``unavailable`` on both routes.

Web-only error codes (not job failures): ``unauthorized``, ``not_found``, ``expired``,
``unavailable``. The job id is the Modal function-call id (``fc-...``); the worker also uses it
as the storage job id, so outputs land under ``<prefix>/<call id>/`` and a retried call (same id)
finds its own objects.

Torch-free and image-free like every handler: ``modal`` is imported lazily (inside functions),
``core.models`` / ``core.pipeline`` only for type checking or inside functions.
"""

# No ``from __future__ import annotations`` here: FastAPI resolves a route's annotations in the
# module's globals, and ``Request`` is imported inside :func:`create_web_app` (lazily, so that
# ``modal deploy`` does not need fastapi locally); real annotation objects avoid that lookup.
import hmac
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from core.contract import MAX_INPUT_CHARS, parse_job, safe_field
from core.errors import JobError
from handlers.common import DEMO_PROMPT, demo_job, execute, throttled  # noqa: F401 (re-exported for modal_app)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from core.models import ModelSet
    from core.pipeline import Worker

log = logging.getLogger("maskpaint.modal")

#: Environment variable (set through the API Modal secret) holding the web API bearer token.
TOKEN_ENV = "MASKPAINT_API_TOKEN"
#: Comma-separated browser origins allowed by CORS (e.g. ``https://app.example.com``).
CORS_ENV = "MASKPAINT_CORS_ORIGINS"
#: Shortest accepted API token, characters: a short token is guessable, refuse to serve with it.
MIN_TOKEN_CHARS = 16
#: Largest accepted ``POST /jobs`` body, bytes: an image and a mask at the contract's
#: string cap, plus room for the other fields.
MAX_BODY_BYTES = 2 * MAX_INPUT_CHARS + 256 * 1024
#: Modal function-call ids, e.g. ``fc-01JD...``; anything else is unknown without asking Modal.
_CALL_ID = re.compile(r"fc-[A-Za-z0-9]{1,64}")
#: How long the web API answers polls for a job it queued, seconds: 7 days, as long as a Modal
#: Dict keeps an untouched entry and as long as a presigned URL can live.
ISSUED_TTL_S = 7 * 24 * 3600


# ------------------------------------------------------------------------------ deploy knobs
def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: expected a boolean (1/0, true/false), got {raw!r}")


def _env_int(env: Mapping[str, str], name: str, default: int | None, lo: int,
             hi: int) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{name}: {value} is outside {lo}..{hi}")
    return value


@dataclass(frozen=True)
class ModalConfig:
    """Deploy-time knobs for ``modal_app.py``, read from ``MASKPAINT_MODAL_*`` variables.

    Read where ``modal deploy`` runs; :meth:`container_env` passes the same values into the
    containers so that their re-import of ``modal_app.py`` declares the same class.

    Attributes:
        app_name: Modal app name (``MASKPAINT_MODAL_APP``).
        gpu: Modal GPU type, or a fallback list in order (``MASKPAINT_MODAL_GPU``, e.g.
            ``L40S`` or ``L40S,A10G``; ``none`` = CPU only, for smoke tests with dev weights).
        timeout_s: Modal's per-input limit, seconds (``MASKPAINT_MODAL_TIMEOUT_S``). Keep it
            above the worker's own ``MASKPAINT_JOB_DEADLINE_S`` (270 s by default) plus the
            upload, so that a slow job ends as a ``timeout`` error value (not retried) rather
            than being killed by Modal (retried).
        startup_timeout_s: container start limit, seconds (``MASKPAINT_MODAL_STARTUP_TIMEOUT_S``):
            the first start loads every model and writes the memory snapshot.
        max_retries: Modal retries of an input whose container *crashed* (OOM-killed, segfault,
            preempted host, Modal timeout) (``MASKPAINT_MODAL_RETRIES``). Job failures are
            returned as values, so Modal never retries the caller's mistakes.
        single_use: one job per container (``MASKPAINT_MODAL_SINGLE_USE``): isolation between
            jobs at the price of a cold start (snapshot restore) each.
        scaledown_window_s: how long a warm container waits for the next job, seconds
            (``MASKPAINT_MODAL_SCALEDOWN_S``, Modal allows 2..3600).
        min_containers / max_containers: warm floor and concurrency ceiling
            (``MASKPAINT_MODAL_MIN_CONTAINERS`` / ``MASKPAINT_MODAL_MAX_CONTAINERS``).
        memory_snapshot: CPU memory snapshot of the loaded models (``MASKPAINT_MODAL_SNAPSHOT``).
        s3_secret: Modal secret with the storage settings and credentials
            (``MASKPAINT_MODAL_S3_SECRET``).
        api_secret: Modal secret with ``MASKPAINT_API_TOKEN`` (``MASKPAINT_MODAL_API_SECRET``).
        weights_profile: weights profile baked into the image (``MASKPAINT_WEIGHTS_PROFILE``).
        cors_origins: browser origins for the web API (``MASKPAINT_CORS_ORIGINS``, comma list).
    """

    app_name: str = "maskpaint"
    gpu: str | list[str] | None = "L40S"
    timeout_s: int = 420
    startup_timeout_s: int = 900
    max_retries: int = 2
    single_use: bool = False
    scaledown_window_s: int = 120
    min_containers: int = 0
    max_containers: int | None = None
    memory_snapshot: bool = True
    s3_secret: str = "maskpaint-s3"
    api_secret: str = "maskpaint-api"
    weights_profile: str = "sd15"
    cors_origins: tuple[str, ...] = ()

    #: Variables read by :meth:`from_env` (and forwarded by :meth:`container_env`).
    ENV_VARS = ("MASKPAINT_MODAL_APP", "MASKPAINT_MODAL_GPU", "MASKPAINT_MODAL_TIMEOUT_S",
                "MASKPAINT_MODAL_STARTUP_TIMEOUT_S", "MASKPAINT_MODAL_RETRIES",
                "MASKPAINT_MODAL_SINGLE_USE", "MASKPAINT_MODAL_SCALEDOWN_S",
                "MASKPAINT_MODAL_MIN_CONTAINERS", "MASKPAINT_MODAL_MAX_CONTAINERS",
                "MASKPAINT_MODAL_SNAPSHOT", "MASKPAINT_MODAL_S3_SECRET",
                "MASKPAINT_MODAL_API_SECRET", "MASKPAINT_WEIGHTS_PROFILE", CORS_ENV)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ModalConfig":
        """Read the knobs; unset or empty variables keep the defaults above.

        Raises:
            ValueError: a variable does not parse or is out of range (names the variable), so
                ``modal deploy`` fails before anything is deployed.
        """
        env = os.environ if env is None else env
        d = cls()
        gpu_raw = env.get("MASKPAINT_MODAL_GPU", "").strip()
        if not gpu_raw:
            gpu: str | list[str] | None = d.gpu
        elif gpu_raw.lower() in ("none", "cpu"):
            gpu = None
        else:
            gpus = [g.strip() for g in gpu_raw.split(",") if g.strip()]
            gpu = gpus[0] if len(gpus) == 1 else gpus
        origins = tuple(o.strip().rstrip("/") for o in env.get(CORS_ENV, "").split(",")
                        if o.strip())
        return cls(
            app_name=env.get("MASKPAINT_MODAL_APP", "").strip() or d.app_name,
            gpu=gpu,
            timeout_s=_env_int(env, "MASKPAINT_MODAL_TIMEOUT_S", d.timeout_s, 10, 24 * 3600),
            startup_timeout_s=_env_int(env, "MASKPAINT_MODAL_STARTUP_TIMEOUT_S",
                                       d.startup_timeout_s, 10, 24 * 3600),
            max_retries=_env_int(env, "MASKPAINT_MODAL_RETRIES", d.max_retries, 0, 10),
            single_use=_env_bool(env, "MASKPAINT_MODAL_SINGLE_USE", d.single_use),
            scaledown_window_s=_env_int(env, "MASKPAINT_MODAL_SCALEDOWN_S",
                                        d.scaledown_window_s, 2, 3600),
            min_containers=_env_int(env, "MASKPAINT_MODAL_MIN_CONTAINERS", d.min_containers,
                                    0, 1000),
            max_containers=_env_int(env, "MASKPAINT_MODAL_MAX_CONTAINERS", d.max_containers,
                                    1, 1000),
            memory_snapshot=_env_bool(env, "MASKPAINT_MODAL_SNAPSHOT", d.memory_snapshot),
            s3_secret=env.get("MASKPAINT_MODAL_S3_SECRET", "").strip() or d.s3_secret,
            api_secret=env.get("MASKPAINT_MODAL_API_SECRET", "").strip() or d.api_secret,
            weights_profile=env.get("MASKPAINT_WEIGHTS_PROFILE", "").strip() or d.weights_profile,
            cors_origins=origins,
        )

    @property
    def default_device(self) -> str:
        """Where models run after the restore: ``cuda`` on a GPU class (a broken GPU then fails
        the container start loudly instead of running on CPU), else ``cpu``.
        ``MASKPAINT_DEVICE`` overrides it."""
        return "cuda" if self.gpu else "cpu"

    def container_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The deploy-time ``MASKPAINT_MODAL_*`` values, for ``env=`` of the Modal objects."""
        env = os.environ if env is None else env
        return {k: env[k] for k in self.ENV_VARS if env.get(k, "").strip()}

    def retries(self):
        """``modal.Retries`` for crashes only (see :attr:`max_retries`), exponential from 2 s."""
        import modal

        return modal.Retries(max_retries=self.max_retries, initial_delay=2.0,
                             backoff_coefficient=2.0, max_delay=30.0)


# ------------------------------------------------------------------------------ cold start
def setup_container_logging() -> None:
    """JSON logs (payload-redacting) inside a Modal container; untouched elsewhere (tests)."""
    try:
        import modal

        if modal.is_local():
            return
    except ImportError:  # pragma: no cover - modal is a dependency
        return
    from core.logs import setup_logging

    setup_logging()


def load_models(*, on_cpu: bool) -> "ModelSet":
    """Load every baked model (phase 1 of the cold start).

    Args:
        on_cpu: load on CPU whatever ``MASKPAINT_DEVICE`` says. Used before a memory snapshot:
            no GPU is attached then, and CUDA must not be initialised before the snapshot.

    Without a usable inpainting model the container still starts and every job is answered
    with ``model_not_found`` (the web API's ``/health`` reports ``not_ready``).
    """
    from core.models import ModelSet
    from core.settings import Settings

    settings = Settings()
    if on_cpu:
        settings = settings.model_copy(update={"device": "cpu"})
    t = time.perf_counter()
    models = ModelSet.load(settings)
    log.info("models loaded on %s in %.0f ms", models.device, (time.perf_counter() - t) * 1000)
    return models


def make_worker(models: "ModelSet", default_device: str, s3_client: Any = None) -> "Worker":
    """Phase 2 of the cold start (after a snapshot restore): move models, open storage.

    Settings are read again here, not before the snapshot, so the Modal secret's values
    (bucket, endpoint, credentials) are the live ones and no network connection is carried
    through a snapshot.

    Args:
        models: from :func:`load_models`.
        default_device: target when ``MASKPAINT_DEVICE`` is unset
            (:attr:`ModalConfig.default_device`).
        s3_client: a ready boto3 client (tests); default: one built from the settings when a
            bucket or input buckets are set.

    Raises:
        RuntimeError: from torch when the device is unusable (the container fails to start and
            Modal starts another).
    """
    from core.pipeline import Worker
    from core.settings import Settings
    from core.storage import make_s3_client, make_storage

    settings = Settings()
    device = settings.device or default_device
    if models.device != device:
        t = time.perf_counter()
        models.to(device)
        log.info("models moved to %s in %.0f ms", device, (time.perf_counter() - t) * 1000)
    settings = settings.model_copy(update={"device": device})
    client = s3_client
    if client is None and (settings.s3_bucket or settings.input_buckets):
        client = make_s3_client(settings)
    worker = Worker(settings, models, make_storage(settings, client),
                    (lambda: client) if client is not None else None)
    worker.cold_start_ms = {k: round(v, 1) for k, v in getattr(models, "load_ms", {}).items()}
    setup_container_logging()  # again: libraries imported while loading add their own handlers
    return worker


# ------------------------------------------------------------------------------ one job
def _fallback_job_id() -> str:
    """The Modal function-call id inside a container (stable across Modal's retries of the same
    call, so a retried job repeats its seed and finds its own outputs), else a fresh one."""
    try:
        import modal

        call_id = modal.current_function_call_id()
    except Exception:  # pragma: no cover - not in a container / older client
        call_id = None
    return call_id or f"modal-{uuid.uuid4().hex}"


def split_job(job: Any, job_id: str | None = None) -> tuple[str, Any]:
    """Return ``(job id, job input)`` from either job shape.

    - RunPod-shaped ``{"id": ..., "input": {...}}`` (other top-level keys are ignored, as
      RunPod's own ``webhook``/``policy`` would be);
    - a bare input ``{"image": ..., ...}``, optionally with an ``"id"`` key (the contract has
      no ``id`` field, so the key is unambiguous and is removed before validation).

    The id is, first found: ``job_id``, the dict's ``id``, the Modal call id, a random one.
    Anything that is not a dict is passed on as the input; the contract then rejects it.
    """
    if not isinstance(job, dict):
        return str(job_id or _fallback_job_id()), job
    if "input" in job:
        return str(job_id or job.get("id") or _fallback_job_id()), job["input"]
    payload = dict(job)
    raw_id = payload.pop("id", None)
    return str(job_id or raw_id or _fallback_job_id()), payload


def stop_fetching_inputs() -> bool:
    """Ask Modal to send this container no more inputs; it exits after the current one.

    ``modal.experimental.stop_fetching_inputs`` (modal 1.6) raises ``RuntimeError`` outside a
    Modal container; returns False then (and on any other failure, which is logged).
    """
    try:
        from modal.experimental import stop_fetching_inputs as _stop

        _stop()
        return True
    except RuntimeError:
        log.warning("not in a Modal container: cannot stop fetching inputs")
    except Exception:
        log.exception("stop_fetching_inputs failed")
    return False


def _progress_logger(job_id: str) -> Callable[[dict], None]:
    """Modal has no progress channel for spawned calls: stage changes go to the log."""
    return throttled(lambda update: log.debug("job %s progress %s", job_id, update))


def run_job(worker: "Worker", job: Any, job_id: str | None = None, *,
            on_refresh: Callable[[], object] = stop_fetching_inputs) -> dict:
    """Run one job through :func:`handlers.common.execute`; return the reply dict.

    Never raises for a job failure: errors are reply values, so Modal's retry policy (which
    fires on exceptions and crashes only) never repeats a job that failed for the caller's
    reason (bad input, missing object, empty mask). When the error says the accelerator is
    unusable (``refresh_worker``), ``on_refresh`` runs after the reply is built so that the
    container takes no further input (Modal's answer to RunPod's ``refresh_worker``).
    """
    jid, payload = split_job(job, job_id)
    reply, err = execute(worker, jid, payload, _progress_logger(jid))
    if err is not None and err.refresh_worker:
        log.error("job %s: accelerator unusable; this container takes no more inputs", jid)
        on_refresh()
    return reply


# ------------------------------------------------------------------------------ dispatch seam
class UnknownJob(LookupError):
    """No job with this id (never submitted, or not a job id at all)."""


class DispatchUnavailable(RuntimeError):
    """The job service could not be reached; the request may be repeated."""


class Dispatcher(Protocol):
    """The one seam between the web API and where jobs run.

    ``submit`` must return at once (never wait for the GPU); ``poll`` must not block either.
    """

    def submit(self, job: dict) -> str:
        """Queue ``{"input": {...}}``; return the job id.

        Raises:
            DispatchUnavailable: the job could not be queued.
        """
        ...

    def poll(self, job_id: str) -> dict:
        """``{"status": "pending"}``, ``{"status": "done", "output": {...}}``,
        ``{"status": "failed", "error": {...}}`` or ``{"status": "expired"}``.

        Raises:
            UnknownJob: no such job.
            DispatchUnavailable: the status could not be read.
        """
        ...


def status_from_reply(reply: Any) -> dict:
    """A finished job's reply dict -> its poll status."""
    if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
        return {"status": "failed", "error": reply["error"]}
    if not isinstance(reply, dict):
        return _failed("internal", "the job returned no result", retryable=True)
    return {"status": "done", "output": reply}


def _failed(code: str, message: str, retryable: bool) -> dict:
    return {"status": "failed",
            "error": {"code": code, "message": message, "field": None, "retryable": retryable}}


class ModalDispatcher:
    """Jobs on the GPU class: ``Function.spawn`` to submit, ``FunctionCall.get(timeout=0)`` to poll.

    Args:
        method: returns the Modal method to spawn (``lambda: MaskPaint().run``); looked up per
            call so the web container resolves it lazily.

    Poll mapping (modal 1.6): builtin ``TimeoutError`` = still running; ``OutputExpiredError``
    (a subclass of ``modal.exception.TimeoutError``, not of the builtin) = result gone;
    ``FunctionTimeoutError`` = Modal killed the input at its timeout (after retries);
    ``NotFoundError``/``InvalidError`` = unknown id; connection/service errors = unavailable;
    any other exception is the remote call's own failure (a crash after retries) = ``internal``.
    """

    def __init__(self, method: Callable[[], Any]) -> None:
        self._method = method

    def submit(self, job: dict) -> str:
        import modal.exception as mx

        try:
            return self._method().spawn(job).object_id
        except (mx.ConnectionError, mx.ServiceError, mx.InternalError,
                mx.ResourceExhaustedError, mx.AuthError) as exc:
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
            return _failed("timeout", "the job ran past the worker's time limit", retryable=True)
        except TimeoutError:  # builtin: no output yet
            return {"status": "pending"}
        except (mx.NotFoundError, mx.InvalidError):
            raise UnknownJob(job_id) from None
        except (mx.ConnectionError, mx.ServiceError, mx.InternalError,
                mx.ResourceExhaustedError, mx.AuthError) as exc:
            log.warning("poll %s failed: %s", job_id, type(exc).__name__)
            raise DispatchUnavailable("could not read the job status") from None
        except mx.InputCancellation:
            return _failed("internal", "the job was cancelled", retryable=True)
        except Exception as exc:  # the remote call raised / crashed after its retries
            log.error("job %s failed remotely: %s", job_id, type(exc).__name__)
            return _failed("internal", "the worker failed; details are in its log",
                           retryable=True)
        return status_from_reply(reply)


class ThreadDispatcher:
    """Jobs in a local thread pool: the web API without Modal (tests, local serving).

    Args:
        runner: ``runner(job, job_id) -> reply dict``, e.g.
            ``lambda job, jid: run_job(worker, job, jid)``.
        max_workers: concurrent jobs (1 = one GPU/CPU worker, like one container).

    Results are kept in memory for the life of the process; not for production.
    """

    def __init__(self, runner: Callable[[dict, str], dict], max_workers: int = 1) -> None:
        self._runner = runner
        self._pool = ThreadPoolExecutor(max_workers=max_workers,
                                        thread_name_prefix="maskpaint-job")
        self._jobs: dict[str, Future] = {}
        self._lock = threading.Lock()

    def submit(self, job: dict) -> str:
        job_id = f"local-{uuid.uuid4().hex}"
        with self._lock:
            self._jobs[job_id] = self._pool.submit(self._runner, job, job_id)
        return job_id

    def poll(self, job_id: str) -> dict:
        with self._lock:
            fut = self._jobs.get(job_id)
        if fut is None:
            raise UnknownJob(job_id)
        if not fut.done():
            return {"status": "pending"}
        if fut.exception() is not None:
            log.error("job %s raised %s", job_id, type(fut.exception()).__name__)
            return _failed("internal", "the worker failed; details are in its log", True)
        return status_from_reply(fut.result())

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)


# ------------------------------------------------------------------------------ issued ids
class IssuedIds(Protocol):
    """The ids this web API handed out, so that ``GET /jobs/{id}`` answers for those only (not
    for any function-call id of the workspace)."""

    def add(self, job_id: str) -> None:
        """Remember ``job_id`` for :data:`ISSUED_TTL_S`. Raises DispatchUnavailable."""
        ...

    def __contains__(self, job_id: object) -> bool:
        """Issued here and not yet expired. Raises DispatchUnavailable."""
        ...


class MemoryIssuedIds:
    """Issued ids in this process's memory, each kept ``ttl_s`` seconds (thread-safe).

    Enough for one process (tests, local serving); on Modal, where web containers come and go
    and several may serve at once, use :class:`DictIssuedIds` over a ``modal.Dict``.
    """

    def __init__(self, ttl_s: float = ISSUED_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, job_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._expiry) > 1024:  # drop the expired ones now and then
                self._expiry = {k: t for k, t in self._expiry.items() if t > now}
            self._expiry[job_id] = now + self.ttl_s

    def __contains__(self, job_id: object) -> bool:
        with self._lock:
            expiry = self._expiry.get(job_id)  # type: ignore[call-overload]
        return expiry is not None and expiry > time.monotonic()


class DictIssuedIds:
    """Issued ids in a shared mapping (a ``modal.Dict``: durable, seen by every web container),
    each stored with its expiry (Unix time, s). Any error of the mapping is
    :class:`DispatchUnavailable` (503), never a wrong 404.

    Args:
        store: anything with ``store[key] = value`` and ``store.get(key)`` (``modal.Dict``; a
            plain dict in tests).
    """

    def __init__(self, store: Any, ttl_s: float = ISSUED_TTL_S) -> None:
        self.store = store
        self.ttl_s = ttl_s

    def add(self, job_id: str) -> None:
        try:
            self.store[job_id] = time.time() + self.ttl_s
        except Exception as exc:
            log.warning("recording job id failed: %s", type(exc).__name__)
            raise DispatchUnavailable("could not record the job") from None

    def __contains__(self, job_id: object) -> bool:
        try:
            expiry = self.store.get(job_id)
        except Exception as exc:
            log.warning("reading job ids failed: %s", type(exc).__name__)
            raise DispatchUnavailable("could not read the job status") from None
        return isinstance(expiry, (int, float)) and expiry > time.time()


# ------------------------------------------------------------------------------ web API
class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 retryable: bool = False, headers: dict[str, str] | None = None,
                 extra: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.headers, self.extra = status, headers, extra or {}
        self.body = {"code": code, "message": message, "field": field, "retryable": retryable}


def _token_from_env() -> str | None:
    return os.environ.get(TOKEN_ENV) or None


def weights_readiness() -> str | None:
    """Why this image cannot serve inpainting jobs, or None when it can.

    Reads ``<MASKPAINT_WEIGHTS_DIR>/receipt.json`` (no hashing, no torch): ready when an
    inpainting model is baked, and the configured ``MASKPAINT_DEFAULT_MODEL`` (if any) is one.
    """
    from core.settings import Settings
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
                   issued: IssuedIds | None = None) -> "FastAPI":
    """The web API as one FastAPI app (see the module docstring for routes and shapes).

    Args:
        dispatcher: where jobs go (:class:`ModalDispatcher` on Modal).
        token: bearer token; default ``$MASKPAINT_API_TOKEN`` (from the API Modal secret).
            Compared with ``hmac.compare_digest`` (constant time).
        cors_origins: allowed browser origins; default ``$MASKPAINT_CORS_ORIGINS`` (comma list).
            Empty: no CORS headers (server-to-server callers such as a Cloudflare Worker or a
            Next.js route handler need none).
        max_body_bytes: ``POST /jobs`` bodies above this get 413 before being read.
        readiness: ``() -> None | reason`` for ``GET /health`` (e.g. :func:`weights_readiness`);
            default: always ready.
        issued: where the ids handed out by ``POST /jobs`` are remembered; ``GET /jobs/{id}``
            answers 404 for any other id without asking the dispatcher. Default: this
            process's memory (:class:`MemoryIssuedIds`); on Modal :class:`DictIssuedIds`.

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
    token = token if token is not None else _token_from_env()
    if not token or len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{TOKEN_ENV} must be set to a token of at least {MIN_TOKEN_CHARS} "
                         "characters (put it in the API Modal secret)")
    expected = token.encode()
    if cors_origins is None:
        cors_origins = [o.strip().rstrip("/") for o in os.environ.get(CORS_ENV, "").split(",")
                        if o.strip()]

    app = FastAPI(title="maskpaint", docs_url=None, redoc_url=None, openapi_url=None)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type"],
                           allow_credentials=False, max_age=600)

    @app.exception_handler(_ApiError)
    async def _api_error(_request: Request, exc: _ApiError) -> JSONResponse:
        return JSONResponse({**exc.extra, "error": exc.body}, status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "invalid_request"
        return JSONResponse({"error": {"code": code, "message": str(exc.detail), "field": None,
                                       "retryable": False}}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("web request failed: %s", type(exc).__name__)  # no payload, no traceback out
        return JSONResponse({"error": {"code": "internal", "message": "internal error",
                                       "field": None, "retryable": True}}, status_code=500)

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
            parse_job("validate", payload)  # the worker validates again; this fails fast
        except JobError as err:
            raise _ApiError(422 if isinstance(payload, dict) else 400, err.code.value,
                            err.message, field=err.field, retryable=err.retryable) from None
        try:
            job_id = await run_in_threadpool(dispatcher.submit, {"input": payload})
            await run_in_threadpool(issued.add, job_id)
        except DispatchUnavailable as exc:
            raise _ApiError(503, "unavailable", str(exc), retryable=True) from None
        log.info("job %s queued", job_id)
        return JSONResponse({"id": job_id, "status": "queued"}, status_code=202,
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
