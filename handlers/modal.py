"""Modal glue for ``modal_app.py``: deploy settings, the cold start around the snapshot, one job,
and the Modal dispatcher of the web API.

``modal_app.py`` only declares Modal objects; everything that can be tested without a Modal
account lives here:

- :class:`ModalConfig`: the deploy settings (``MASKPAINT_MODAL_*``, pydantic-settings).
- :func:`load_models` / :func:`make_worker`: :func:`core.pipeline.load_models` and
  :func:`core.pipeline.build_worker` on either side of the memory snapshot (load on CPU before
  it; move to the GPU and open storage after the restore).
- :func:`run_job`: one job dict -> :func:`handlers.common.execute` (the same translation as
  RunPod) -> the reply dict; an accelerator failure stops the container taking more inputs.
- :class:`ModalDispatcher` (in :mod:`handlers.modal_dispatch`): the web API's dispatcher.

Reply shapes of the GPU method (``MaskPaint.run``):

- success: the ``JobResult`` dict, field for field what the RunPod handler returns;
- failure: ``{"error": {"code", "message", "field", "retryable"}}`` (the neutral body of
  :func:`handlers.common.execute`; RunPod flattens it into a string, Modal needs no such thing).

The web job id is the Modal function-call id (``fc-...``); the worker also uses it as the
storage job id, so outputs land under ``<prefix>/<call id>/`` and a retried call (same id) finds
its own objects.

Torch-free and image-free like every handler: ``modal`` is imported lazily (inside functions),
``core.models`` / ``core.pipeline`` only for type checking or inside functions.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from handlers.common import DEMO_PROMPT, demo_job, execute, throttled  # noqa: F401 (re-exported for modal_app)
from handlers.dispatch import split_inline, status_from_reply
from handlers.webhook import WebhookPolicy, deliver

if TYPE_CHECKING:
    from core.models import ModelSet
    from core.pipeline import Worker

log = logging.getLogger("maskpaint.modal")

#: Worker/web settings that are not Modal knobs but must reach the containers (``Settings``).
FORWARDED_ENV = ("MASKPAINT_CORS_ORIGINS",)


# ------------------------------------------------------------------------------ deploy settings
class ModalConfig(BaseSettings):
    """Deploy-time settings for ``modal_app.py``, from ``MASKPAINT_MODAL_*`` variables.

    Read where ``modal deploy`` runs; :meth:`container_env` passes the same values into the
    containers so that their re-import of ``modal_app.py`` declares the same class. Unset or
    empty variables keep the defaults; a bad value raises ``ValueError`` (pydantic's
    ``ValidationError``) naming the variable, so ``modal deploy`` fails before anything is
    deployed.

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
        gpu_snapshot: Modal's GPU memory snapshot (alpha; ``MASKPAINT_MODAL_GPU_SNAPSHOT``, off
            by default; needs ``memory_snapshot``): the models load straight onto the GPU before
            the snapshot, and a restore brings GPU memory back too, so the move to the GPU
            after each restore disappears (``experimental_options={"enable_gpu_snapshot":
            True}``; docs/gpu.md).
        s3_secret: Modal secret with the storage settings and credentials
            (``MASKPAINT_MODAL_S3_SECRET``).
        api_secret: Modal secret with ``MASKPAINT_API_TOKEN`` (``MASKPAINT_MODAL_API_SECRET``).
        weights_profile: weights profile baked into the image (``MASKPAINT_WEIGHTS_PROFILE``).
        hf_secret: Modal secret setting ``HF_TOKEN`` for the image's bake
            (``MASKPAINT_MODAL_HF_SECRET``; unset = anonymous downloads of public repos).
        webhook_secret: Modal secret holding ``MASKPAINT_WEBHOOK_SECRET`` (the HMAC key of
            webhook deliveries), given to both functions (``MASKPAINT_MODAL_WEBHOOK_SECRET``;
            unset: jobs with a ``webhook`` are refused).
    """

    model_config = SettingsConfigDict(env_prefix="MASKPAINT_MODAL_", env_ignore_empty=True,
                                      extra="ignore", frozen=True)

    app_name: str = Field("maskpaint", validation_alias="MASKPAINT_MODAL_APP")
    gpu: Annotated[str | list[str] | None, NoDecode] = Field(
        "L40S", validation_alias="MASKPAINT_MODAL_GPU")
    timeout_s: int = Field(420, ge=10, le=24 * 3600, validation_alias="MASKPAINT_MODAL_TIMEOUT_S")
    startup_timeout_s: int = Field(900, ge=10, le=24 * 3600,
                                   validation_alias="MASKPAINT_MODAL_STARTUP_TIMEOUT_S")
    max_retries: int = Field(2, ge=0, le=10, validation_alias="MASKPAINT_MODAL_RETRIES")
    single_use: bool = Field(False, validation_alias="MASKPAINT_MODAL_SINGLE_USE")
    scaledown_window_s: int = Field(120, ge=2, le=3600,
                                    validation_alias="MASKPAINT_MODAL_SCALEDOWN_S")
    min_containers: int = Field(0, ge=0, le=1000,
                                validation_alias="MASKPAINT_MODAL_MIN_CONTAINERS")
    max_containers: int | None = Field(None, ge=1, le=1000,
                                       validation_alias="MASKPAINT_MODAL_MAX_CONTAINERS")
    memory_snapshot: bool = Field(True, validation_alias="MASKPAINT_MODAL_SNAPSHOT")
    gpu_snapshot: bool = Field(False, validation_alias="MASKPAINT_MODAL_GPU_SNAPSHOT")
    s3_secret: str = Field("maskpaint-s3", validation_alias="MASKPAINT_MODAL_S3_SECRET")
    api_secret: str = Field("maskpaint-api", validation_alias="MASKPAINT_MODAL_API_SECRET")
    weights_profile: str = Field("sd15", validation_alias="MASKPAINT_WEIGHTS_PROFILE")
    hf_secret: str | None = Field(None, validation_alias="MASKPAINT_MODAL_HF_SECRET")
    webhook_secret: str | None = Field(None, validation_alias="MASKPAINT_MODAL_WEBHOOK_SECRET")

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu_list(cls, v: object) -> object:
        if not isinstance(v, str):
            return v
        if v.strip().lower() in ("none", "cpu"):
            return None
        gpus = [g.strip() for g in v.split(",") if g.strip()]
        return gpus[0] if len(gpus) == 1 else gpus

    @model_validator(mode="after")
    def _gpu_snapshot_needs_snapshot(self) -> ModalConfig:
        if self.gpu_snapshot and not (self.memory_snapshot and self.gpu):
            raise ValueError("MASKPAINT_MODAL_GPU_SNAPSHOT needs MASKPAINT_MODAL_SNAPSHOT on "
                             "and a GPU (MASKPAINT_MODAL_GPU)")
        return self

    @property
    def load_on_cpu(self) -> bool:
        """Load the models on CPU before the snapshot (a CPU-only snapshot: no GPU is attached
        then); with the GPU snapshot they load on the GPU and are snapshotted there."""
        return self.memory_snapshot and not self.gpu_snapshot

    @property
    def experimental_options(self) -> dict[str, bool] | None:
        """``experimental_options`` of the GPU class (modal 1.6 ``App.cls``)."""
        return {"enable_gpu_snapshot": True} if self.gpu_snapshot else None

    @classmethod
    def env_vars(cls) -> tuple[str, ...]:
        """Every variable the settings read (and :meth:`container_env` forwards)."""
        return tuple(f.validation_alias for f in cls.model_fields.values()) + FORWARDED_ENV

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ModalConfig:
        """The settings from ``env`` only (default: the process environment)."""
        if env is None:
            return cls()
        names = set(cls.env_vars())
        return cls.model_validate({k: v.strip() for k, v in env.items()
                                   if k in names and v.strip()})

    @property
    def default_device(self) -> str:
        """Where models run after the restore: ``cuda`` on a GPU class (a broken GPU then fails
        the container start loudly instead of running on CPU), else ``cpu``.
        ``MASKPAINT_DEVICE`` overrides it."""
        return "cuda" if self.gpu else "cpu"

    def container_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The deploy-time values of :meth:`env_vars`, for ``env=`` of the Modal objects."""
        import os

        env = os.environ if env is None else env
        return {k: env[k] for k in self.env_vars() if env.get(k, "").strip()}

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



def load_models(*, on_cpu: bool) -> ModelSet:
    """Phase 1 of the cold start (:func:`core.pipeline.load_models`), before the snapshot.

    Args:
        on_cpu: load on CPU whatever ``MASKPAINT_DEVICE`` says. Used before a memory snapshot:
            no GPU is attached then, and CUDA must not be initialised before the snapshot.

    Without a usable inpainting model the container still starts and every job is answered
    with ``model_not_found`` (the web API's ``/health`` reports ``not_ready``).
    """
    from core.pipeline import load_models as load
    from core.settings import Settings

    settings = Settings()
    return load(settings.model_copy(update={"device": "cpu"}) if on_cpu else settings)


def make_worker(models: ModelSet, default_device: str, s3_client: Any = None) -> Worker:
    """Phase 2 of the cold start (:func:`core.pipeline.build_worker`), after the restore.

    Args:
        models: from :func:`load_models`.
        default_device: target when ``MASKPAINT_DEVICE`` is unset
            (:attr:`ModalConfig.default_device`).
        s3_client: a ready boto3 client (tests); default: built from the settings.

    Raises:
        RuntimeError: from torch when the device is unusable (the container fails to start and
            Modal starts another).
    """
    from core.pipeline import build_worker
    from core.settings import Settings

    settings = Settings()
    settings = settings.model_copy(update={"device": settings.device or default_device})
    worker = build_worker(models, settings, s3_client)
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


def _progress_sink(job_id: str, progress: Callable[[dict], None] | None
                   ) -> Callable[[dict], None]:
    """Throttled progress: to ``progress`` (on Modal a ``modal.Dict`` the web API reads; locally
    the dispatcher's memory) or, without one, to the debug log."""
    return throttled(progress or (lambda update: log.debug("job %s progress %s", job_id, update)))


def run_job(worker: "Worker", job: Any, job_id: str | None = None, *,
            on_refresh: Callable[[], object] = stop_fetching_inputs,
            progress: Callable[[dict], None] | None = None,
            webhook_policy: WebhookPolicy | None = None,
            send_webhook: Callable[[str, str, dict], object] | None = None) -> dict:
    """Run one job through :func:`handlers.common.execute`; return the reply dict.

    Never raises for a job failure: errors are reply values, so Modal's retry policy (which
    fires on exceptions and crashes only) never repeats a job that failed for the caller's
    reason (bad input, missing object, empty mask). When the error says the accelerator is
    unusable (``refresh_worker``), ``on_refresh`` runs after the reply is built so that the
    container takes no further input (Modal's answer to RunPod's ``refresh_worker``).

    ``progress(update)`` receives ``{"stage", "step", "steps"}`` updates (throttled). When the
    job dict carries a top-level ``webhook`` URL (the web API's submit puts it there), the
    finished job's poll status is handed to ``send_webhook(url, job_id, status)`` (on Modal:
    spawn the CPU delivery function) and this returns at once: delivery never holds the
    worker. Without ``send_webhook`` a daemon thread delivers it (under ``webhook_policy``).
    """
    jid, payload = split_job(job, job_id)
    reply, err = execute(worker, jid, payload, _progress_sink(jid, progress))
    if err is not None and err.refresh_worker:
        log.error("job %s: accelerator unusable; this container takes no more inputs", jid)
        on_refresh()
    url = job.get("webhook") if isinstance(job, dict) and "input" in job else None
    if isinstance(url, str) and url:
        status = status_from_reply(reply)
        if status.get("status") == "done":  # the webhook carries URLs, not inline copies
            status = {**status, "output": split_inline(status["output"])[0]}
        try:
            if send_webhook is not None:
                send_webhook(url, jid, status)
            else:
                import threading

                threading.Thread(target=deliver, args=(url, jid, status),
                                 kwargs={"policy": webhook_policy or WebhookPolicy()},
                                 name="maskpaint-webhook", daemon=True).start()
        except Exception as exc:  # a lost delivery never fails the job (poll it)
            log.warning("job %s: webhook not handed off: %s", jid, type(exc).__name__)
    return reply


def __getattr__(name: str) -> Any:
    # the Modal dispatcher lives in handlers.modal_dispatch; modal_app and tests use this name
    if name == "ModalDispatcher":
        from handlers.modal_dispatch import ModalDispatcher

        return ModalDispatcher
    raise AttributeError(name)
