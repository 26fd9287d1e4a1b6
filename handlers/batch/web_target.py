"""The batch adapter for the web API (``handlers/web.py``): on Modal, or ``make serve`` locally.

``POST /jobs`` with the ``Idempotency-Key`` header (a repeated submit within the API's TTL
answers the same job) and the id as ``input.idempotency_key`` (the worker's record key, which
outlives the API's TTL); ``GET /jobs/{id}`` until ``done`` / ``failed`` / ``cancelled``
(``queued``, ``running`` and the older ``pending`` mean not yet); ``DELETE /jobs/{id}`` on
Ctrl-C (on Modal it cancels the function call). The bearer token comes from
``MASKPAINT_API_TOKEN``, the variable the API itself reads.
"""

from __future__ import annotations

import threading
from urllib.parse import quote

from handlers.batch.jobs import BatchError, BatchJob
from handlers.batch.loop import Outcome
from handlers.batch.net import Http, RetryPolicy, Unreachable, error_of

#: Environment variable with the web API's bearer token (as ``handlers.web.TOKEN_ENV``).
TOKEN_ENV = "MASKPAINT_API_TOKEN"
#: Poll statuses that mean the job has not ended.
_WAITING = {"queued", "running", "pending"}


class WebTarget:
    """Jobs through the maskpaint web API.

    Args:
        base_url: ``https://<workspace>--maskpaint-api.modal.run`` or ``http://127.0.0.1:8000``.
        token: the API's bearer token (required).
        policy: HTTP retries (429/5xx/connection).
        poll_s: longest wait between polls, s (polls start at 0.25 s and double).
        concurrency: connection pool size.

    Raises:
        BatchError: no token (before any request).
    """

    name = "web"

    def __init__(self, base_url: str, token: str | None, *, policy: RetryPolicy = RetryPolicy(),
                 poll_s: float = 2.0, concurrency: int = 8) -> None:
        if not token:
            raise BatchError(f"{TOKEN_ENV} is not set: the web API needs its bearer token; "
                             "nothing was submitted")
        self.http = Http(base_url, {"Authorization": f"Bearer {token}"}, policy,
                         pool_size=concurrency)
        self.poll_s = poll_s

    def check(self) -> None:
        """Two requests, no retries: ``/health`` answers ok, and the token is accepted."""
        one = RetryPolicy(attempts=1)
        try:
            health = self.http.call("GET", "/health", policy=one, timeout_s=10)
            probe = self.http.call("GET", "/jobs/batch-token-check", policy=one, timeout_s=10)
        except Unreachable as exc:
            raise BatchError(f"cannot reach the web API ({exc}); nothing was submitted") from None
        if health.status != 200:
            reason = health.body.get("reason") if isinstance(health.body, dict) else None
            raise BatchError(f"the web API is not ready (HTTP {health.status}"
                             + (f": {reason}" if reason else "") + "); nothing was submitted")
        if probe.status in (401, 403):
            raise BatchError(f"the web API refused the token in {TOKEN_ENV}; nothing was submitted")

    def submit(self, job: BatchJob, attempt: int) -> str | Outcome:
        # a retry after a failure needs a new API job: the first key would answer the failed one
        key = job.id if attempt == 1 else f"{job.id}.{attempt}"
        r = self.http.call("POST", "/jobs", {"input": {**job.input, "idempotency_key": job.id}},
                           headers={"Idempotency-Key": key})
        if r.status in (401, 403):
            raise BatchError("the web API refused the token")
        if r.status in (200, 201, 202) and isinstance(r.body, dict) and isinstance(r.body.get("id"), str):
            return r.body["id"]
        return Outcome("failed", error=error_of(r, "invalid_input"))

    def wait(self, handle: str, stop: threading.Event) -> Outcome:
        path = f"/jobs/{quote(handle, safe='')}"
        delay = 0.25
        while True:
            r = self.http.call("GET", path)
            body = r.body if isinstance(r.body, dict) else {}
            status = body.get("status")
            if r.status == 200 and status == "done" and isinstance(body.get("output"), dict):
                return Outcome("done", output=body["output"])
            if r.status == 200 and status == "failed":
                return Outcome("failed", error=error_of(r, "internal") if not isinstance(
                    body.get("error"), dict) else {"retryable": False, "field": None,
                                                   **body["error"]})
            if r.status == 200 and status == "cancelled":
                # e.g. by our own DELETE in an interrupted run, whose key this rerun reused:
                # retryable, so the loop resubmits under a fresh API key (same record key)
                return Outcome("failed", error={"code": "cancelled", "field": None,
                                                "message": "cancelled on the server",
                                                "retryable": True})
            if r.status != 200 or status not in _WAITING:
                # 404 / 410 expired / 5xx after retries: submitting again is safe (same key)
                err = error_of(r, "not_found")
                return Outcome("failed", error={**err, "retryable": True})
            if stop.is_set():
                self.cancel(handle)
                return Outcome("cancelled")
            if stop.wait(delay):
                continue
            delay = min(self.poll_s, delay * 2)

    def cancel(self, handle: str) -> None:
        """``DELETE /jobs/{id}``, best effort (an API without it answers 405; ignored)."""
        try:
            self.http.call("DELETE", f"/jobs/{quote(handle, safe='')}",
                           policy=RetryPolicy(attempts=2), timeout_s=10)
        except Unreachable:
            pass
