"""HTTP for the batch targets: urllib3 with its own retry policy (``urllib3.util.Retry``).

Transient failures (connection errors, 429 and 5xx) are retried by urllib3 with exponential
backoff plus random jitter, capped, honouring ``Retry-After`` (AWS Architecture Blog,
"Exponential Backoff And Jitter", 2015: jitter spreads a burst of retries). Every method is
retried, POSTs included: each job carries its idempotency key, so a repeated submit cannot run a
job twice. What urllib3 gives up on comes back as the last reply (``raise_on_status=False``) or as
:class:`Unreachable`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.util import Retry

#: Replies that urllib3 retries (RFC 9110: 429 Too Many Requests, 5xx server errors).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class Unreachable(ConnectionError):
    """The endpoint did not answer (connection refused, DNS, timeouts) after the retries."""


@dataclass(frozen=True)
class Reply:
    """One HTTP reply: ``status`` and the JSON ``body`` (None when not JSON)."""

    status: int
    body: Any


@dataclass(frozen=True)
class RetryPolicy:
    """Transient-failure retries of one request.

    Args:
        attempts: tries in all (1 = no retry).
        backoff_s: first delay, s; then doubled per retry (urllib3's ``backoff_factor``).
        backoff_max_s: cap on one delay, s.
        jitter_s: up to this much random delay added to each, s.
    """

    attempts: int = 6
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    jitter_s: float = 0.5

    def retry(self) -> Retry:
        n = max(0, self.attempts - 1)
        return Retry(total=n, connect=n, read=n, status=n, other=0,
                     allowed_methods=None, status_forcelist=RETRY_STATUSES,
                     backoff_factor=self.backoff_s, backoff_max=self.backoff_max_s,
                     backoff_jitter=self.jitter_s, respect_retry_after_header=True,
                     raise_on_status=False, raise_on_redirect=False)


class Http:
    """JSON over one base URL with fixed headers (the API key), shared by the loop's threads.

    Args:
        base_url: e.g. ``https://api.runpod.ai/v2/<endpoint>`` or ``http://127.0.0.1:8000``.
        headers: sent on every request.
        policy: transient-failure retries.
        connect_timeout_s, read_timeout_s: per try, s (a RunPod local server answers
            ``/status`` only when the job has run: give it minutes).
        pool_size: connections kept per host (the loop's concurrency).
    """

    def __init__(self, base_url: str, headers: dict[str, str], policy: RetryPolicy = RetryPolicy(),
                 *, connect_timeout_s: float = 10.0, read_timeout_s: float = 60.0,
                 pool_size: int = 8) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Accept": "application/json", **headers}
        self.policy = policy
        self.timeout = urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s)
        self.pool = urllib3.PoolManager(num_pools=4, maxsize=max(1, pool_size), block=False)

    def call(self, method: str, path: str, body: Any = None, *,
             headers: dict[str, str] | None = None, policy: RetryPolicy | None = None,
             timeout_s: float | None = None) -> Reply:
        """``method`` ``base_url + path`` with an optional JSON body; the reply after retries.

        Raises:
            Unreachable: no reply at all (after the policy's retries).
        """
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        hdrs = {**self.headers, **(headers or {})}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        timeout = self.timeout if timeout_s is None else urllib3.Timeout(
            connect=min(timeout_s, self.timeout.connect_timeout or timeout_s), read=timeout_s)
        try:
            r = self.pool.request(method, self.base_url + path, body=data, headers=hdrs,
                                  retries=(policy or self.policy).retry(), timeout=timeout)
        except urllib3.exceptions.HTTPError as exc:  # MaxRetryError, ProtocolError, ...
            reason = getattr(exc, "reason", None) or exc
            raise Unreachable(f"{self.base_url}: {type(reason).__name__}: {reason}"[:300]) from None
        try:
            parsed = json.loads(r.data) if r.data else None
        except ValueError:
            parsed = None
        return Reply(r.status, parsed)


def error_of(reply: Reply, default_code: str) -> dict:
    """The ``{code, message, field, retryable}`` of an error reply (our APIs' ``error`` body), or
    one made from the HTTP status when the body has none."""
    body = reply.body if isinstance(reply.body, dict) else {}
    err = body.get("error")
    if isinstance(err, dict) and isinstance(err.get("code"), str):
        return {"code": err["code"], "message": str(err.get("message", ""))[:500],
                "field": err.get("field"), "retryable": bool(err.get("retryable", False))}
    retryable = reply.status in RETRY_STATUSES
    return {"code": "unavailable" if retryable else default_code,
            "message": f"HTTP {reply.status}" + (f": {err}"[:300] if isinstance(err, str) else ""),
            "field": None, "retryable": retryable}
