"""The batch adapter for a RunPod endpoint: ``POST /run``, ``/status/{id}``, ``POST /cancel/{id}``.

Hosted (``https://api.runpod.ai/v2/<endpoint id>``, key from ``RUNPOD_API_KEY``) or the runpod
SDK's local server (``python runpod_handler.py --rp_serve_api``: no key, ``POST /status`` that
runs the job during the request, no ``/cancel``, no ``/health``).

RunPod assigns its own job ids; the batch id travels as ``input.idempotency_key``, which our
worker uses as the key of its write-once record, so a resubmitted job returns its stored result.
A FAILED job's code comes from ``output.error_code`` (hosted) or the ``"<code>: <message>"``
prefix of ``error`` (the local server keeps only that string).
"""

from __future__ import annotations

import ipaddress
import threading
from urllib.parse import quote, urlsplit

from core.errors import RETRYABLE, ErrorCode
from handlers.batch.jobs import BatchError, BatchJob
from handlers.batch.loop import Outcome
from handlers.batch.net import Http, RetryPolicy, Unreachable, error_of

#: Hosted API base (RunPod docs, "Endpoint operations").
RUNPOD_API_BASE = "https://api.runpod.ai/v2"
#: Environment variable with the RunPod API key (the name RunPod's SDK and docs use).
API_KEY_ENV = "RUNPOD_API_KEY"
#: Statuses that end a job (``RunpodJobResponse.status``).
_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
_CODES = {c.value for c in ErrorCode}


def is_loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def runpod_error(body: dict) -> dict:
    """``{code, message, field, retryable}`` of a FAILED / CANCELLED / TIMED_OUT status body."""
    status = body.get("status")
    if status == "CANCELLED":
        return {"code": "cancelled", "message": "cancelled on RunPod", "field": None,
                "retryable": True}
    if status == "TIMED_OUT":
        return {"code": "timeout", "message": "RunPod's execution timeout passed", "field": None,
                "retryable": True}
    out = body.get("output") if isinstance(body.get("output"), dict) else {}
    text = str(body.get("error") or out.get("message") or "failed")
    code = out.get("error_code") or text.split(":", 1)[0].strip()
    if code not in _CODES:  # not our worker's reply (RunPod's own failure, a lost job)
        return {"code": "internal", "message": text[:300], "field": None, "retryable": True}
    retryable = out.get("retryable")
    return {"code": code, "message": str(out.get("message") or text.split(":", 1)[-1].strip())[:500],
            "field": out.get("field"),
            "retryable": bool(ErrorCode(code) in RETRYABLE if retryable is None else retryable)}


class RunpodTarget:
    """Jobs through a RunPod endpoint.

    Args:
        base_url: ``https://api.runpod.ai/v2/<endpoint id>`` or a local server's URL.
        api_key: required unless ``base_url`` is a loopback address.
        policy: HTTP retries (429/5xx/connection).
        poll_s: seconds between status polls (hosted).
        concurrency: connection pool size.

    Raises:
        BatchError: no API key for a remote endpoint (before any request).
    """

    name = "runpod"

    def __init__(self, base_url: str, api_key: str | None, *, policy: RetryPolicy = RetryPolicy(),
                 poll_s: float = 2.0, concurrency: int = 8) -> None:
        if not api_key and not is_loopback(base_url):
            raise BatchError(f"{API_KEY_ENV} is not set: RunPod needs an API key "
                             "(runpod.io console, Settings, API Keys); nothing was submitted")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # the local server answers /status only when the job has run: allow minutes per reply
        self.http = Http(base_url, headers, policy, read_timeout_s=900.0, pool_size=concurrency)
        self.poll_s = poll_s
        self.status_method = "GET"  # the local server has POST only (405 switches)

    def check(self) -> None:
        """One request, no retries: reachable, and the key not refused."""
        try:
            r = self.http.call("GET", "/health", policy=RetryPolicy(attempts=1), timeout_s=10)
        except Unreachable as exc:
            raise BatchError(f"cannot reach the RunPod endpoint ({exc}); nothing was submitted") from None
        if r.status in (401, 403):
            raise BatchError(f"RunPod refused the API key (HTTP {r.status}); nothing was submitted")
        if r.status >= 500:
            raise BatchError(f"the RunPod endpoint answered HTTP {r.status}; nothing was submitted")

    def submit(self, job: BatchJob, attempt: int) -> str | Outcome:
        body = {"input": {**job.input, "idempotency_key": job.id}}
        r = self.http.call("POST", "/run", body)
        if r.status in (401, 403):
            raise BatchError(f"RunPod refused the API key (HTTP {r.status})")
        if 200 <= r.status < 300 and isinstance(r.body, dict) and isinstance(r.body.get("id"), str):
            return r.body["id"]
        return Outcome("failed", error=error_of(r, "invalid_input"))

    def _status(self, handle: str) -> dict:
        path = f"/status/{quote(handle, safe='')}"
        method = self.status_method
        r = self.http.call(method, path)
        if r.status == 405 and method == "GET":  # (other threads may have switched already)
            self.status_method = "POST"
            r = self.http.call("POST", path)
        if not (200 <= r.status < 300) or not isinstance(r.body, dict):
            return {"status": "FAILED", "error": f"status: HTTP {r.status}",
                    "_http": error_of(r, "internal")}
        return r.body

    def wait(self, handle: str, stop: threading.Event) -> Outcome:
        delay = min(0.5, self.poll_s)
        while True:
            body = self._status(handle)
            status = body.get("status")
            if status == "COMPLETED" and isinstance(body.get("output"), dict):
                out = body["output"]
                if "error" in out:  # a handler reply RunPod did not mark FAILED
                    return Outcome("failed", error=runpod_error({**body, "error": out["error"]}))
                return Outcome("done", output=out)
            if status in _ENDED:
                return Outcome("failed", error=body.get("_http") or runpod_error(body))
            if stop.is_set():
                self.cancel(handle)
                return Outcome("cancelled")
            if stop.wait(delay):
                continue  # cancel on the next turn
            delay = min(self.poll_s, delay * 2)

    def cancel(self, handle: str) -> None:
        """``POST /cancel/{id}``, best effort (the local server has no such route)."""
        try:
            self.http.call("POST", f"/cancel/{quote(handle, safe='')}",
                           policy=RetryPolicy(attempts=2), timeout_s=10)
        except Unreachable:
            pass


def endpoint_url(endpoint_id: str | None, url: str | None) -> str:
    """The base URL from ``--endpoint-id`` (hosted) or ``--url`` (any, e.g. a local server).

    Raises:
        BatchError: neither or both given.
    """
    if bool(endpoint_id) == bool(url):
        raise BatchError("give either --endpoint-id (hosted RunPod) or --url (e.g. a local "
                         "`runpod_handler.py --rp_serve_api`)")
    return url.rstrip("/") if url else f"{RUNPOD_API_BASE}/{quote(endpoint_id, safe='')}"
