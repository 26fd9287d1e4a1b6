"""Model forward times of the running job: ``timings_ms`` keys ending in ``.forward``.

A stage names its scope (``with scope("mask.sam"):``) and the model call inside it is wrapped
in ``with forward():``; the elapsed ms are added to the job's collector (:func:`collect`) under
``"<scope>.forward"``. Only the model call is inside ``forward()``, so for any job
``overhead = timings_ms["total"] - sum(v for k, v in timings_ms.items() if k.endswith(".forward"))``.

Hand-written (a context variable and a dict) because no library records per-call wall times
into a per-job result; outside :func:`collect` (unit tests calling a detector directly) the
wrappers cost one context-variable read and record nothing. Context variables do not follow
work into other threads: scope and forward must be entered in the thread that calls the model.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_times: ContextVar[dict[str, float] | None] = ContextVar("maskpaint_forward_ms", default=None)
_scope: ContextVar[str] = ContextVar("maskpaint_forward_scope", default="model")


@contextmanager
def collect() -> Iterator[dict[str, float]]:
    """Collect the forward times (ms, summed per key) of everything run inside the block."""
    out: dict[str, float] = {}
    token = _times.set(out)
    try:
        yield out
    finally:
        _times.reset(token)


def current() -> dict[str, float]:
    """The forward times collected so far in the enclosing :func:`collect` ({} outside one)."""
    return dict(_times.get() or {})


@contextmanager
def scope(name: str) -> Iterator[None]:
    """Name the model calls inside the block: they are recorded as ``"<name>.forward"``."""
    token = _scope.set(name)
    try:
        yield
    finally:
        _scope.reset(token)


@contextmanager
def forward() -> Iterator[None]:
    """Time one model call (wall ms, ``time.perf_counter``), also when it raises.

    On CUDA the block must end with the results on the host (``.cpu()``, a PIL image), or the
    time would miss the queued kernels.
    """
    times = _times.get()
    if times is None:
        yield
        return
    t = time.perf_counter()
    try:
        yield
    finally:
        key = f"{_scope.get()}.forward"
        times[key] = times.get(key, 0.0) + (time.perf_counter() - t) * 1000
