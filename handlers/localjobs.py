"""The local dispatcher: jobs in local threads over a durable job table (``make serve``, tests).

:class:`ThreadDispatcher` keeps every job it issued in a :class:`handlers.jobtable.JobTable`
(SQLite beside the outputs under ``make serve``; in memory by default), so that a restart
loses no job: finished jobs answer from the table, queued and running ones run again (same id;
the worker's job record makes a second run of a finished job return its first result), and a
job cut twice answers ``failed`` / ``interrupted``. Jobs wait in submit order (``queued`` with
its ``position``), run one at a time per worker thread (``running`` with progress), and can be
cancelled: a queued job never starts; a running one stops at its next stage or denoising step
(its progress callback raises ``cancelled``), before anything is uploaded.

A webhook is handed to a :class:`handlers.webhook_sender.WebhookSender` once the job's final
status is in the table: the worker is free for the next job at once. Inline base64 copies
(``output.return_base64``) are kept apart in an :class:`InlineStore`, bounded by age and total
bytes, and served by the first poll that sees the job done; later polls (and the webhook) carry
the URLs only.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from core.errors import ErrorCode, JobError
from handlers.dispatch import (FINAL, MemoryProgress, ProgressStore, UnknownJob, failed,
                               merge_inline, queued, running, split_inline, status_from_reply)
from handlers.jobtable import JobTable
from handlers.webhook_sender import WebhookSender

log = logging.getLogger("maskpaint.web")

#: Inline base64 results are held at most this long, seconds, waiting for their first poll.
INLINE_TTL_S = 15 * 60
#: ... and at most this many bytes in all (the oldest dropped first).
INLINE_MAX_BYTES = 256 * 1024 * 1024
#: Expired jobs are dropped from the table every this many submits (and at start).
SWEEP_EVERY = 100


class InlineStore:
    """Inline base64 copies of finished jobs' artefacts, served once (thread-safe)."""

    def __init__(self, ttl_s: float = INLINE_TTL_S, max_bytes: int = INLINE_MAX_BYTES) -> None:
        self.ttl_s, self.max_bytes = ttl_s, max_bytes
        self._items: OrderedDict[str, tuple[float, int, dict[str, str]]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, job_id: str, parts: dict[str, str]) -> None:
        size = sum(len(v) for v in parts.values())
        if not parts or size > self.max_bytes:
            return
        with self._lock:
            self._evict(time.monotonic(), size)
            self._items[job_id] = (time.monotonic() + self.ttl_s, size, parts)
            self._bytes += size

    def take(self, job_id: str) -> dict[str, str] | None:
        with self._lock:
            self._evict(time.monotonic(), 0)
            entry = self._items.pop(job_id, None)
            if entry is None:
                return None
            self._bytes -= entry[1]
            return entry[2]

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def _evict(self, now: float, room: int) -> None:
        while self._items:
            job_id, (expiry, size, _) = next(iter(self._items.items()))
            if expiry > now and self._bytes + room <= self.max_bytes:
                break
            self._items.pop(job_id)
            self._bytes -= size


class ThreadDispatcher:
    """Jobs in local worker threads, over a durable :class:`JobTable`.

    Args:
        runner: ``runner(job, job_id, progress) -> reply dict`` where ``job`` is
            ``{"input": {...}}`` and ``progress(update)`` records the job's latest
            ``{"stage", "step", "steps"}`` (and raises ``JobError(cancelled)`` once the job is
            cancelled: let it propagate); e.g.
            ``lambda job, jid, progress: run_job(worker, job, jid, progress=progress)``.
            A two-argument ``runner(job, job_id)`` is accepted too (no progress shown).
        max_workers: concurrent jobs (1 = one GPU/CPU worker, like one container).
        progress: where progress updates are kept (default: :class:`MemoryProgress`).
        table: the job table (default: one in memory, lost with the process).
        webhooks: the background sender (default: one with production's rules).
        inline: where inline base64 waits for its first poll (default :class:`InlineStore`).

    Starting it re-queues what the table left queued or running (see the module docstring)
    and re-sends webhooks whose delivery had not finished.
    """

    def __init__(self, runner: Callable[..., dict], max_workers: int = 1,
                 progress: ProgressStore | None = None, table: JobTable | None = None,
                 webhooks: WebhookSender | None = None,
                 inline: InlineStore | None = None) -> None:
        try:
            inspect.signature(runner).bind(None, None, None)
            self._runner = runner
        except TypeError:  # a two-argument runner: no progress
            self._runner = lambda job, jid, _progress: runner(job, jid)
        self.table = table if table is not None else JobTable()
        self.issued = self.table  # the web API's IssuedIds
        self.progress = progress if progress is not None else MemoryProgress()
        self.webhooks = webhooks if webhooks is not None else WebhookSender()
        self.inline = inline if inline is not None else InlineStore()
        self._queue: deque[str] = deque()
        self._cancels: dict[str, threading.Event] = {}
        self._cv = threading.Condition()
        self._closed = False
        self._submits = 0
        again, cut = self.table.recover()
        if again or cut:
            log.warning("restart: %d job(s) queued again, %d interrupted", len(again), len(cut))
        self._queue.extend(again)
        for job_id, url, body in self.table.hooks_pending():
            self.webhooks.send(url, job_id, body, self.table.hook_done)
        self._threads = [threading.Thread(target=self._work, name=f"maskpaint-job-{i}",
                                          daemon=True) for i in range(max_workers)]
        for t in self._threads:
            t.start()

    # -------------------------------------------------------------- Dispatcher
    def submit(self, job: dict) -> str:
        import uuid

        job_id = f"local-{uuid.uuid4().hex}"
        self.table.insert(job_id, job)
        self._submits += 1
        if self._submits % SWEEP_EVERY == 0:  # expired rows go now and then, not per request
            self.table.sweep()
        with self._cv:
            self._queue.append(job_id)
            self._cv.notify()
        return job_id

    def poll(self, job_id: str) -> dict:
        status = self.table.status(job_id)
        if status is None:
            raise UnknownJob(job_id)
        if status == "queued":
            return queued(self.table.position(job_id))
        if status == "running":
            return running(self.progress.get(job_id))
        body = self.table.final(job_id) or failed("internal", "no result recorded", True)
        if body.get("status") == "done":
            parts = self.inline.take(job_id)
            if parts:
                body = {**body, "output": merge_inline(body["output"], parts)}
        return body

    def position(self, job_id: str) -> int | None:
        """1-based place of a queued job (None once it started); ``POST /jobs`` replies carry
        it. Unlike :meth:`poll` it never hands out a result's inline copies."""
        return self.table.position(job_id)

    def cancel(self, job_id: str) -> dict:
        status = self.table.status(job_id)
        if status is None:
            raise UnknownJob(job_id)
        if status not in FINAL and self._end(job_id, {"status": "cancelled"}):
            with self._cv:
                event = self._cancels.get(job_id)
            if event is not None:
                event.set()  # running: it stops at its next stage or step
            log.info("job %s cancelled while %s", job_id, status)
        return self.poll(job_id)

    # -------------------------------------------------------------- workers
    def _end(self, job_id: str, body: dict) -> bool:
        """Record a final status (once) and hand the webhook to the sender."""
        if not self.table.finish(job_id, body):
            return False
        url = self.table.hook_url(job_id)
        if url:
            self.webhooks.send(url, job_id, body, self.table.hook_done)
        return True

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                job_id = self._queue.popleft()
                event = self._cancels[job_id] = threading.Event()
            try:
                self._run(job_id, event)
            finally:
                with self._cv:
                    self._cancels.pop(job_id, None)

    def _run(self, job_id: str, cancelled: threading.Event) -> None:
        job = self.table.start(job_id)
        if job is None:
            return  # cancelled while queued

        def check() -> None:
            if cancelled.is_set():
                raise JobError(ErrorCode.cancelled, "the job was cancelled", retryable=False)

        def report(update: dict) -> None:
            check()
            self.progress.set(job_id, update)

        report.check = check  # type: ignore[attr-defined]  # every update (handlers.common.throttled)

        try:
            reply = self._runner({"input": job.get("input")}, job_id, report)
        except Exception as exc:
            log.error("job %s raised %s", job_id, type(exc).__name__)
            reply = {"error": failed("internal", "the worker failed; details are in its log",
                                     True)["error"]}
        status = status_from_reply(reply)
        if status["status"] == "done":
            output, parts = split_inline(status["output"])
            status = {"status": "done", "output": output}
            if self._end(job_id, status):
                self.inline.put(job_id, parts)
            return
        self._end(job_id, status)

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking jobs (queued ones stay queued in the table); with ``wait``, let the
        running ones end first."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if wait:
            for t in self._threads:
                t.join()
        self.webhooks.close()
