"""Where web API jobs run, behind one seam: the :class:`Dispatcher` protocol.

Provider-neutral (no Modal, no torch): :class:`handlers.localjobs.ThreadDispatcher` runs jobs
in local threads over a durable SQLite job table (tests, ``make serve``);
``handlers.modal_dispatch.ModalDispatcher`` spawns, polls and cancels the GPU class. The ids a
web API hands out are remembered in an :class:`IssuedIds` store (:class:`MemoryIssuedIds` in
one process, :class:`DictIssuedIds` over a shared mapping such as a ``modal.Dict``, the job
table locally), with each job's metadata (its URL lifetime, a cancel mark) and the
``Idempotency-Key`` bindings, so that polls answer for those ids only.

Poll statuses (the ``GET /jobs/{id}`` body without its ``id``):

- ``{"status": "queued", "position"?: int}``: waiting; ``position`` 1 = the next to start (only
  where the dispatcher knows its queue: locally, not on Modal);
- ``{"status": "running", "progress"?: {"stage", "step"?, "steps"?}}``;
- ``{"status": "done", "output": JobResult}``, ``{"status": "failed", "error": {...}}``,
  ``{"status": "cancelled"}``; ``{"status": "expired"}`` (the result is gone: 410).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

log = logging.getLogger("maskpaint.web")

#: How long the web API answers polls for a job it queued, seconds: 7 days, as long as a Modal
#: Dict keeps an untouched entry and as long as a presigned URL can live. An
#: ``Idempotency-Key`` is bound to its job for as long.
ISSUED_TTL_S = 7 * 24 * 3600
#: Terminal statuses: a job in one of these never changes again.
FINAL = frozenset({"done", "failed", "cancelled"})


class UnknownJob(LookupError):
    """No job with this id (never submitted, or not a job id at all)."""


class DispatchUnavailable(RuntimeError):
    """The job service could not be reached; the request may be repeated."""


class Dispatcher(Protocol):
    """The one seam between the web API and where jobs run.

    ``submit``, ``poll`` and ``cancel`` must return at once (never wait for the GPU). A
    dispatcher that knows its queue may also have ``position(job_id) -> int | None`` (1-based,
    None once started): ``POST /jobs`` replies then carry it.
    """

    def submit(self, job: dict) -> str:
        """Queue ``{"input": {...}, "webhook"?}``; return the job id.

        Raises:
            DispatchUnavailable: the job could not be queued.
        """
        ...

    def poll(self, job_id: str) -> dict:
        """The job's poll status (see the module docstring).

        Raises:
            UnknownJob: no such job.
            DispatchUnavailable: the status could not be read.
        """
        ...

    def cancel(self, job_id: str) -> dict:
        """Cancel a queued or running job; return its status afterwards: ``cancelled``, or the
        final status when it had already ended (then nothing changes).

        Raises:
            UnknownJob, DispatchUnavailable: as for :meth:`poll`.
        """
        ...


def status_from_reply(reply: Any) -> dict:
    """A finished job's reply dict -> its poll status (a ``cancelled`` error -> ``cancelled``)."""
    if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
        if reply["error"].get("code") == "cancelled":
            return {"status": "cancelled"}
        return {"status": "failed", "error": reply["error"]}
    if not isinstance(reply, dict):
        return failed("internal", "the job returned no result", retryable=True)
    return {"status": "done", "output": reply}


def failed(code: str, message: str, retryable: bool) -> dict:
    """A ``{"status": "failed", "error": {...}}`` poll status for a failure of the service."""
    return {"status": "failed",
            "error": {"code": code, "message": message, "field": None, "retryable": retryable}}


def queued(position: int | None = None) -> dict:
    """A ``{"status": "queued"}`` poll status, with the 1-based queue ``position`` when known."""
    return {"status": "queued"} if position is None else {"status": "queued",
                                                          "position": position}


def running(progress: Any) -> dict:
    """A ``{"status": "running"}`` poll status, with the job's latest ``progress``
    (``{"stage", "step", "steps"}``, a :class:`handlers.common.JobProgress` dict) when known."""
    if isinstance(progress, dict) and isinstance(progress.get("stage"), str):
        return {"status": "running", "progress": progress}
    return {"status": "running"}


ARTEFACTS = ("image", "mask", "overlay")


def artefacts(output: dict) -> list[tuple[str, dict]]:
    """``(name, artefact dict)`` of every stored file of a JobResult dict: ``image``, ``mask``,
    ``overlay`` and ``images.<i>``."""
    named = [(n, output[n]) for n in ARTEFACTS if isinstance(output.get(n), dict)]
    named += [(f"images.{i}", a) for i, a in enumerate(output.get("images") or ())
              if isinstance(a, dict)]
    return named


def map_artefacts(output: dict, change) -> dict:
    """A copy of the JobResult dict ``output`` with ``change(name, artefact) -> artefact``
    applied to each stored file (:func:`artefacts`); the input is left untouched."""
    out = dict(output)
    for n in ARTEFACTS:
        if isinstance(out.get(n), dict):
            out[n] = change(n, dict(out[n]))
    if isinstance(out.get("images"), list):
        out["images"] = [change(f"images.{i}", dict(a)) if isinstance(a, dict) else a
                         for i, a in enumerate(out["images"])]
    return out


def split_inline(output: dict) -> tuple[dict, dict[str, str]]:
    """``(output without base64, {artefact name: base64})`` of a JobResult dict."""
    parts = {n: a["base64"] for n, a in artefacts(output) if isinstance(a.get("base64"), str)}
    if not parts:
        return output, {}
    return map_artefacts(output, lambda n, a: {**a, "base64": None}), parts


def merge_inline(output: dict, parts: dict[str, str]) -> dict:
    """The inverse of :func:`split_inline`."""
    return map_artefacts(output, lambda n, a: {**a, "base64": parts[n]} if n in parts else a)


# ------------------------------------------------------------------------------ progress
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


# ------------------------------------------------------------------------------ issued ids
class IssuedIds(Protocol):
    """The ids this web API handed out (so that ``GET /jobs/{id}`` answers for those only, not
    for any function-call id of the workspace), each with a small metadata dict
    (``url_expires_s``, ``cancelled``), and the ``Idempotency-Key`` -> job id bindings.
    Every method may raise :class:`DispatchUnavailable`."""

    def add(self, job_id: str, meta: dict | None = None) -> None:
        """Remember ``job_id`` (with ``meta``) for :data:`ISSUED_TTL_S`."""
        ...

    def meta(self, job_id: str) -> dict | None:
        """The metadata of an id issued here and not yet expired, else None."""
        ...

    def update(self, job_id: str, **changes: Any) -> None:
        """Merge ``changes`` into an issued id's metadata."""
        ...

    def key_get(self, key: str) -> tuple[str, str] | None:
        """``(job id, request fingerprint)`` bound to an idempotency key, or None."""
        ...

    def key_bind(self, key: str, job_id: str, fingerprint: str) -> tuple[str, str]:
        """Bind ``key`` to ``job_id`` unless it is bound already; return the binding that holds
        (the first writer's when two submits race)."""
        ...


class MemoryIssuedIds:
    """Issued ids and idempotency keys in this process's memory, kept ``ttl_s`` seconds
    (thread-safe). Enough for one process (tests); on Modal, where web containers come and go,
    :class:`DictIssuedIds` over a ``modal.Dict``; locally the SQLite job table."""

    def __init__(self, ttl_s: float = ISSUED_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._ids: dict[str, tuple[float, dict]] = {}
        self._keys: dict[str, tuple[float, str, str]] = {}
        self._lock = threading.Lock()

    def _sweep(self, now: float) -> None:
        if len(self._ids) + len(self._keys) > 1024:  # drop the expired ones now and then
            self._ids = {k: v for k, v in self._ids.items() if v[0] > now}
            self._keys = {k: v for k, v in self._keys.items() if v[0] > now}

    def add(self, job_id: str, meta: dict | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            self._sweep(now)
            self._ids[job_id] = (now + self.ttl_s, dict(meta or {}))

    def meta(self, job_id: str) -> dict | None:
        with self._lock:
            entry = self._ids.get(job_id)
        return dict(entry[1]) if entry is not None and entry[0] > time.monotonic() else None

    def __contains__(self, job_id: object) -> bool:
        return isinstance(job_id, str) and self.meta(job_id) is not None

    def update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            if job_id in self._ids:
                expiry, meta = self._ids[job_id]
                self._ids[job_id] = (expiry, {**meta, **changes})

    def key_get(self, key: str) -> tuple[str, str] | None:
        with self._lock:
            entry = self._keys.get(key)
        return entry[1:] if entry is not None and entry[0] > time.monotonic() else None

    def key_bind(self, key: str, job_id: str, fingerprint: str) -> tuple[str, str]:
        now = time.monotonic()
        with self._lock:
            entry = self._keys.get(key)
            if entry is None or entry[0] <= now:
                entry = self._keys[key] = (now + self.ttl_s, job_id, fingerprint)
        return entry[1], entry[2]


class DictIssuedIds:
    """Issued ids in a shared mapping (a ``modal.Dict``: durable, seen by every web container),
    each stored as ``{"exp": Unix time s, **meta}`` (a bare expiry number, the earlier format,
    is read too); idempotency keys as ``"key:<key>" -> {"exp", "id", "fp"}``, bound with
    ``put(..., skip_if_exists=True)`` where the mapping has it (``modal.Dict``), so two web
    containers racing on one key agree. Any error of the mapping is
    :class:`DispatchUnavailable` (503), never a wrong 404.

    Args:
        store: anything with ``store[key] = value`` and ``store.get(key)`` (``modal.Dict``; a
            plain dict in tests).
    """

    def __init__(self, store: Any, ttl_s: float = ISSUED_TTL_S) -> None:
        self.store = store
        self.ttl_s = ttl_s

    def _get(self, key: str) -> Any:
        try:
            return self.store.get(key)
        except Exception as exc:
            log.warning("reading job ids failed: %s", type(exc).__name__)
            raise DispatchUnavailable("could not read the job status") from None

    def _put(self, key: str, value: Any) -> None:
        try:
            self.store[key] = value
        except Exception as exc:
            log.warning("recording job id failed: %s", type(exc).__name__)
            raise DispatchUnavailable("could not record the job") from None

    def add(self, job_id: str, meta: dict | None = None) -> None:
        self._put(job_id, {**(meta or {}), "exp": time.time() + self.ttl_s})

    def meta(self, job_id: str) -> dict | None:
        value = self._get(job_id)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = {"exp": value}
        if not isinstance(value, dict) or not isinstance(value.get("exp"), (int, float)):
            return None
        if value["exp"] <= time.time():
            return None
        return {k: v for k, v in value.items() if k != "exp"}

    def __contains__(self, job_id: object) -> bool:
        return isinstance(job_id, str) and self.meta(job_id) is not None

    def update(self, job_id: str, **changes: Any) -> None:
        value = self._get(job_id)
        if isinstance(value, dict):
            self._put(job_id, {**value, **changes})

    def key_get(self, key: str) -> tuple[str, str] | None:
        value = self._get(f"key:{key}")
        if (isinstance(value, dict) and isinstance(value.get("exp"), (int, float))
                and value["exp"] > time.time()):
            return str(value.get("id")), str(value.get("fp"))
        return None

    def key_bind(self, key: str, job_id: str, fingerprint: str) -> tuple[str, str]:
        entry = {"exp": time.time() + self.ttl_s, "id": job_id, "fp": fingerprint}
        put = getattr(self.store, "put", None)
        try:
            if callable(put):  # modal.Dict: atomic "first writer wins"
                put(f"key:{key}", entry, skip_if_exists=True)
            elif self.key_get(key) is None:
                self.store[f"key:{key}"] = entry
        except DispatchUnavailable:
            raise
        except Exception as exc:
            log.warning("recording an idempotency key failed: %s", type(exc).__name__)
            raise DispatchUnavailable("could not record the job") from None
        return self.key_get(key) or (job_id, fingerprint)


def __getattr__(name: str) -> Any:
    # ThreadDispatcher moved to handlers.localjobs (it grew a durable table); old imports work
    if name == "ThreadDispatcher":
        from handlers.localjobs import ThreadDispatcher

        return ThreadDispatcher
    raise AttributeError(name)
