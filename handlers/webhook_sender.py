"""The local server's background webhook sender: deliveries never hold a job worker.

Why hand-written: the delivery rules (SSRF-checked POST, signed per attempt, retry on network
errors / 429 / 5xx with exponential backoff) are :func:`handlers.webhook.attempt`; what is left
is a scheduler. A thread pool alone would sleep through a backoff inside a worker thread, so a
receiver that hangs would hold the others up; here one scheduler thread keeps a heap of due
attempts and a small pool runs them, so a slow receiver costs at most one pool thread per
attempt (each attempt is bounded by :data:`handlers.webhook.ATTEMPT_DEADLINE_S`) and a backoff
costs nothing. Bounded: at most :data:`MAX_PENDING` deliveries wait; more are dropped, logged.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from handlers.webhook import WebhookPolicy, attempt, webhook_body, webhook_secret

log = logging.getLogger("maskpaint.webhook")

#: Deliveries waiting or in flight at most; beyond it new ones are dropped (and logged).
MAX_PENDING = 10_000
#: Concurrent attempts.
SENDERS = 4


class WebhookSender:
    """Deliver job bodies in the background.

    Args:
        policy: where webhooks may go (:class:`handlers.webhook.WebhookPolicy`).
        secret: the HMAC key (default ``MASKPAINT_WEBHOOK_SECRET``, read per delivery).
        senders: concurrent attempts.
    """

    def __init__(self, policy: WebhookPolicy = WebhookPolicy(), secret: str | None = None,
                 senders: int = SENDERS) -> None:
        self.policy, self.secret = policy, secret
        self._heap: list[tuple[float, int, dict]] = []
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._pending = 0
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="maskpaint-hook")
        self._thread = threading.Thread(target=self._schedule, name="maskpaint-hook-sched",
                                        daemon=True)
        self._thread.start()

    def send(self, url: str, job_id: str, status: dict,
             done: Callable[[str, bool], None] | None = None) -> bool:
        """Queue the delivery of ``{"id": job_id, **status}`` to ``url``; returns at once
        (False when the queue is full or closed). ``done(job_id, delivered)`` is called once it
        succeeded or was given up."""
        item = {"url": url, "job_id": job_id, "body": webhook_body(job_id, status), "n": 0,
                "done": done}
        with self._cv:
            if self._closed or self._pending >= MAX_PENDING:
                log.warning("job %s: webhook dropped, %d deliveries pending", job_id,
                            self._pending)
                return False
            self._pending += 1
            heapq.heappush(self._heap, (time.monotonic(), next(self._order), item))
            self._cv.notify()
        return True

    @property
    def pending(self) -> int:
        with self._cv:
            return self._pending

    def _schedule(self) -> None:
        while True:
            with self._cv:
                while not self._closed and (not self._heap
                                            or self._heap[0][0] > time.monotonic()):
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(wait)
                if self._closed:
                    return
                _, _, item = heapq.heappop(self._heap)
            try:
                self._pool.submit(self._attempt, item)
            except RuntimeError:  # the pool was shut down
                return

    def _attempt(self, item: dict) -> None:
        secret = self.secret if self.secret is not None else webhook_secret()
        if not secret:
            log.error("job %s: webhook skipped, no MASKPAINT_WEBHOOK_SECRET", item["job_id"])
            return self._end(item, False)
        outcome, why = attempt(item["url"], item["body"], secret, self.policy)
        item["n"] += 1
        if outcome == "ok":
            return self._end(item, True)
        if outcome == "retry" and item["n"] < self.policy.max_attempts:
            due = time.monotonic() + self.policy.backoff_s * 2 ** (item["n"] - 1)
            with self._cv:
                heapq.heappush(self._heap, (due, next(self._order), item))
                self._cv.notify()
            return None
        log.warning("job %s: webhook failed after %d attempt(s) (%s)", item["job_id"],
                    item["n"], why)
        return self._end(item, False)

    def _end(self, item: dict, delivered: bool) -> None:
        with self._cv:
            self._pending -= 1
        if item["done"] is not None:
            try:
                item["done"](item["job_id"], delivered)
            except Exception as exc:  # the record of a delivery is best effort
                log.warning("recording a webhook delivery failed: %s", type(exc).__name__)

    def close(self) -> None:
        """Stop scheduling (deliveries still waiting are left; their state stays pending)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)
