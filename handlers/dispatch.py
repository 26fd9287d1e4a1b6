"""Where web API jobs run, behind one seam: the :class:`Dispatcher` protocol.

Provider-neutral (no Modal, no torch): :class:`ThreadDispatcher` runs jobs in a local thread
pool (tests, local serving); ``handlers.modal.ModalDispatcher`` spawns and polls the GPU class.
The ids a web API hands out are remembered in an :class:`IssuedIds` store
(:class:`MemoryIssuedIds` in one process, :class:`DictIssuedIds` over a shared mapping such as a
``modal.Dict``), so that polls answer for those ids only.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

log = logging.getLogger("maskpaint.web")

#: How long the web API answers polls for a job it queued, seconds: 7 days, as long as a Modal
#: Dict keeps an untouched entry and as long as a presigned URL can live.
ISSUED_TTL_S = 7 * 24 * 3600

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
        """``{"status": "pending"}`` (with ``"progress"`` when known), ``{"status": "done", "output": {...}}``,
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
        return failed("internal", "the job returned no result", retryable=True)
    return {"status": "done", "output": reply}


def failed(code: str, message: str, retryable: bool) -> dict:
    """A ``{"status": "failed", "error": {...}}`` poll status for a failure of the service."""
    return {"status": "failed",
            "error": {"code": code, "message": message, "field": None, "retryable": retryable}}


def pending(progress: Any) -> dict:
    """A ``{"status": "pending"}`` poll status, with the job's latest ``progress``
    (``{"stage", "step", "steps"}``, a :class:`handlers.common.JobProgress` dict) when known."""
    if isinstance(progress, dict) and isinstance(progress.get("stage"), str):
        return {"status": "pending", "progress": progress}
    return {"status": "pending"}


class ProgressStore(Protocol):
    """The latest progress update of each running job, written by the job's progress callback
    and read by ``poll``: this process's memory locally (:class:`MemoryProgress`), a
    ``modal.Dict`` on Modal (:class:`DictProgress`), so that it crosses containers."""

    def set(self, job_id: str, update: dict) -> None: ...

    def get(self, job_id: str) -> dict | None: ...


class MemoryProgress:
    """Progress updates in this process's memory (thread-safe); bounded to ``max_jobs`` entries
    (the oldest dropped first)."""

    def __init__(self, max_jobs: int = 1024) -> None:
        self.max_jobs = max_jobs
        self._latest: dict[str, dict] = {}
        self._lock = threading.Lock()

    def set(self, job_id: str, update: dict) -> None:
        with self._lock:
            self._latest.pop(job_id, None)
            self._latest[job_id] = dict(update)
            while len(self._latest) > self.max_jobs:
                self._latest.pop(next(iter(self._latest)))

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            return self._latest.get(job_id)


class DictProgress:
    """Progress updates in a shared mapping (a ``modal.Dict``: the GPU container writes, the web
    containers read). A failing write or read is logged and ignored: progress is best effort
    and never fails a job or a poll. Entries of a ``modal.Dict`` expire after 7 days unused."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def set(self, job_id: str, update: dict) -> None:
        try:
            self.store[job_id] = dict(update)
        except Exception as exc:
            log.warning("recording progress failed: %s", type(exc).__name__)

    def get(self, job_id: str) -> dict | None:
        try:
            value = self.store.get(job_id)
        except Exception as exc:
            log.warning("reading progress failed: %s", type(exc).__name__)
            return None
        return value if isinstance(value, dict) else None


class ThreadDispatcher:
    """Jobs in a local thread pool: the web API without Modal (tests, local serving).

    Args:
        runner: ``runner(job, job_id, progress) -> reply dict`` where ``progress(update)``
            records the job's latest ``{"stage", "step", "steps"}`` for ``poll``; e.g.
            ``lambda job, jid, progress: run_job(worker, job, jid, progress=progress)``.
            A two-argument ``runner(job, job_id)`` is accepted too (no progress shown).
        max_workers: concurrent jobs (1 = one GPU/CPU worker, like one container).
        progress: where progress updates are kept (default: :class:`MemoryProgress`).

    Results are kept in memory for the life of the process; not for production.
    """

    def __init__(self, runner: Callable[[dict, str, Callable[[dict], None]], dict],
                 max_workers: int = 1, progress: ProgressStore | None = None) -> None:
        try:
            inspect.signature(runner).bind(None, None, None)
            self._runner = runner
        except TypeError:  # a two-argument runner: no progress
            self._runner = lambda job, jid, _progress: runner(job, jid)  # type: ignore[call-arg]
        self._pool = ThreadPoolExecutor(max_workers=max_workers,
                                        thread_name_prefix="maskpaint-job")
        self._jobs: dict[str, Future] = {}
        self._lock = threading.Lock()
        self.progress = progress if progress is not None else MemoryProgress()

    def submit(self, job: dict) -> str:
        job_id = f"local-{uuid.uuid4().hex}"

        def report(update: dict, _jid: str = job_id) -> None:
            self.progress.set(_jid, update)

        with self._lock:
            self._jobs[job_id] = self._pool.submit(self._runner, job, job_id, report)
        return job_id

    def poll(self, job_id: str) -> dict:
        with self._lock:
            fut = self._jobs.get(job_id)
        if fut is None:
            raise UnknownJob(job_id)
        if not fut.done():
            return pending(self.progress.get(job_id))
        if fut.exception() is not None:
            log.error("job %s raised %s", job_id, type(fut.exception()).__name__)
            return failed("internal", "the worker failed; details are in its log", True)
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
