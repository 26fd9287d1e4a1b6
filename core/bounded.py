"""Storage calls bounded by the job's deadline.

Why: botocore bounds one attempt (connect and read timeouts) and the attempts
(``total_max_attempts``), but not a job: a store that accepts connections and never answers
held each call for attempts x read timeout (150 s with the old settings), and a job makes
three such calls one after another (record read, uploads, record write), past the platforms'
own limits (Modal cuts a function at its timeout: 420 s by default,
``MASKPAINT_MODAL_TIMEOUT_S``). A thread of our own is the only general way to stop *waiting*
for a blocking boto3 (or file system) call: boto3 has no per-call deadline and its sockets
cannot be interrupted from outside.

What happens to a call that passes the deadline: the job fails at once with ``timeout``
(retryable; the message names the storage call); the call itself goes on in its daemon thread
until botocore gives up. Whatever it writes late is safe by the storage's own rules
(:mod:`core.storage`): an artefact is content-addressed and written once, and a job record
written late is the result a retry of the same job id then returns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from core.errors import ErrorCode, JobError
from core.storage import Storage, Stored

T = TypeVar("T")


def late(what: str, deadline_s: float) -> Callable[[], JobError]:
    """The error for ``what`` (``"writing output"``) cut at a job's deadline of ``deadline_s``
    s: ``timeout`` (retryable), nothing recorded."""
    return lambda: JobError(ErrorCode.timeout, f"{what} did not finish within the job's "
                            f"deadline ({deadline_s:g} s); no result was recorded")


def within(deadline: float, call: Callable[[], T], late: Callable[[], JobError]) -> T:
    """``call()``'s value (or its exception), if it ends by ``deadline`` (a
    ``time.perf_counter()`` value, s); else ``late()`` is raised at the deadline (at once when
    the time is already up) while ``call`` goes on in a daemon thread."""
    left = deadline - time.perf_counter()
    if left <= 0:
        raise late()
    box: dict[str, object] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the waiting caller below
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="bounded call", daemon=True).start()
    if not done.wait(left):
        raise late()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


class DeadlineStorage:
    """A :class:`~core.storage.Storage` whose every network call (``put``, ``create``, ``get``)
    returns or fails by ``deadline`` (a ``time.perf_counter()`` value, s).

    Args:
        inner: the storage that does the work.
        deadline: when the job's time is up; each call waits at most until then.
        deadline_s: the job's whole deadline, s (only for the message).

    Raises (every call): JobError(timeout, retryable) naming the call when storage did not
    answer before the deadline (or the time was already up); otherwise ``inner``'s own errors.
    """

    def __init__(self, inner: Storage, deadline: float, deadline_s: float) -> None:
        self.inner = inner
        self.deadline = deadline
        self.deadline_s = deadline_s

    def _bounded(self, what: str, call: Callable[[], T]) -> T:
        return within(self.deadline, call, late(what, self.deadline_s))

    def put(self, key: str, data: bytes, content_type: str, url_expires_s: int) -> Stored:
        return self._bounded("writing output",
                             lambda: self.inner.put(key, data, content_type, url_expires_s))

    def create(self, key: str, data: bytes, content_type: str) -> bytes | None:
        return self._bounded("writing the job record",
                             lambda: self.inner.create(key, data, content_type))

    def get(self, key: str) -> bytes | None:
        return self._bounded("reading stored output", lambda: self.inner.get(key))

    def url(self, key: str, url_expires_s: int) -> str:
        return self.inner.url(key, url_expires_s)  # (presigning is local: no network)

    def key_for(self, job_id: str, name: str) -> str:
        return self.inner.key_for(job_id, name)
