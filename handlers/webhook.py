"""Webhooks: when a web API job ends, its poll body is POSTed, signed, to the caller's URL.

Body (JSON, the ``GET /jobs/{id}`` body): ``{"id", "status": "done", "output"}`` (without
inline base64: fetch the URLs), ``{"id", "status": "failed", "error"}`` or
``{"id", "status": "cancelled"}``. Headers: :data:`TIMESTAMP_HEADER` (Unix seconds of this
attempt) and :data:`SIGNATURE_HEADER`: ``sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>",
keyed with MASKPAINT_WEBHOOK_SECRET>`` (Stripe's scheme: the timestamp is signed, so a captured
delivery cannot be replayed after the tolerance). :func:`verify_signature` (Python) and the
TypeScript client's ``verifyWebhook`` check both, in constant time, and refuse deliveries older
than :data:`TOLERANCE_S`. The receiver should dedupe on ``id``: a delivery may repeat.

Delivery never holds a worker: the job is ``done`` once its record is written, and delivery
runs on its own path (locally :class:`handlers.webhook_sender.WebhookSender`, a background
sender; on Modal a small CPU function that the GPU class spawns). Each attempt goes through
:func:`core.netpost.post_once` (the input URLs' SSRF rules: https, port 443, public addresses,
unless the deployment allows private webhooks for development); a network error, 429 or 5xx is
retried up to :data:`MAX_ATTEMPTS` times with exponential backoff from :data:`BACKOFF_S`; any
other status ends it. A failed delivery is logged and never changes the job (poll it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.errors import ErrorCode, JobError
from core.netpost import check_post_destination, post_once
from core.settings import Settings

log = logging.getLogger("maskpaint.webhook")

SIGNATURE_HEADER = "X-Maskpaint-Signature"
TIMESTAMP_HEADER = "X-Maskpaint-Timestamp"
#: How old (or how far in the future) a delivery's timestamp may be, seconds: 5 minutes, as
#: Stripe's and Slack's verifiers default to.
TOLERANCE_S = 300
MAX_ATTEMPTS = 5
BACKOFF_S = 2.0  # then 4, 8, 16 s: 30 s of pauses at most
ATTEMPT_DEADLINE_S = 10.0


@dataclass(frozen=True)
class WebhookPolicy:
    """Where webhooks may go. ``None`` fields follow the settings: production's rules unless
    ``MASKPAINT_ALLOW_PRIVATE_WEBHOOKS`` (development: http, any port, private addresses) or,
    for private addresses only, ``MASKPAINT_ALLOW_PRIVATE_URLS`` (self-hosted)."""

    allow_private: bool | None = None
    allow_http: bool | None = None
    allow_any_port: bool | None = None
    max_attempts: int = MAX_ATTEMPTS
    backoff_s: float = BACKOFF_S

    def resolved(self) -> WebhookPolicy:
        """This policy with every ``None`` read from :class:`core.settings.Settings`."""
        s = Settings()
        dev = s.allow_private_webhooks
        return WebhookPolicy(
            allow_private=(dev or s.allow_private_urls) if self.allow_private is None
            else self.allow_private,
            allow_http=dev if self.allow_http is None else self.allow_http,
            allow_any_port=dev if self.allow_any_port is None else self.allow_any_port,
            max_attempts=self.max_attempts, backoff_s=self.backoff_s)


#: The development policy (``MASKPAINT_ALLOW_PRIVATE_WEBHOOKS``, ``serve --webhook-loopback``):
#: a receiver on this machine.
LOOPBACK = WebhookPolicy(allow_private=True, allow_http=True, allow_any_port=True)


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The :data:`SIGNATURE_HEADER` value: ``sha256=`` + hex HMAC-SHA256 of
    ``b"<timestamp>." + body`` under ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), str(int(timestamp)).encode() + b"." + body,
                                hashlib.sha256).hexdigest()


def verify_signature(body: bytes | str, signature: str | None, timestamp: str | int | None,
                     secret: str, *, tolerance_s: float = TOLERANCE_S,
                     now: float | None = None) -> bool:
    """Check a webhook delivery: True when ``signature`` (the :data:`SIGNATURE_HEADER` value)
    is the HMAC of ``timestamp`` and the exact raw ``body`` under ``secret``, and ``timestamp``
    (the :data:`TIMESTAMP_HEADER` value, Unix s) is within ``tolerance_s`` of ``now``.

    Compares with ``hmac.compare_digest`` (constant time). Never raises for a missing or
    malformed header (returns False). Pass the body as received, before any JSON parsing.
    """
    if not secret or not isinstance(signature, str) or timestamp is None:
        return False
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    now = time.time() if now is None else now
    if abs(now - ts) > tolerance_s:
        return False
    raw = body.encode() if isinstance(body, str) else bytes(body)
    return hmac.compare_digest(signature.strip().encode(), sign(raw, secret, ts).encode())


def webhook_secret() -> str | None:
    """``MASKPAINT_WEBHOOK_SECRET`` through :class:`core.settings.Settings` (None when unset)."""
    secret = Settings().webhook_secret
    return secret.get_secret_value() if secret is not None else None


def check_webhook(url: object, policy: WebhookPolicy = WebhookPolicy()) -> None:
    """Reject a bad ``webhook`` at submit time: the delivery's own SSRF rules (scheme, port,
    credentials, and the address: an IP literal or a name resolving to a private, loopback,
    link-local or reserved address is refused unless the policy allows private webhooks).
    Resolution is bounded (2 s); a name that does not resolve now is left to the delivery,
    which checks again (and pins the address it checked).

    Raises:
        JobError: ``invalid_input`` (malformed, or the server has no webhook secret) or
            ``blocked_url``, with ``field="webhook"``.
    """
    p = policy.resolved()
    check_post_destination(url, allow_private=bool(p.allow_private),
                           allow_http=bool(p.allow_http), allow_any_port=bool(p.allow_any_port))
    if not webhook_secret():
        raise JobError(ErrorCode.invalid_input, "webhook: this server has no webhook secret "
                       "(MASKPAINT_WEBHOOK_SECRET)", field="webhook")


def webhook_body(job_id: str, status: dict) -> bytes:
    """The delivered bytes: ``{"id", **status}`` as compact JSON."""
    return json.dumps({"id": job_id, **status}, separators=(",", ":")).encode()


def attempt(url: str, body: bytes, secret: str, policy: WebhookPolicy,
            now: Callable[[], float] = time.time) -> tuple[str, str]:
    """One signed POST. Returns ``("ok", "")``, ``("retry", why)`` (network error, 429, 5xx)
    or ``("stop", why)`` (refused URL, other status). Never raises."""
    p = policy.resolved()
    ts = int(now())
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(ts),
               SIGNATURE_HEADER: sign(body, secret, ts)}
    try:
        status = post_once(url, body, headers, deadline_s=ATTEMPT_DEADLINE_S,
                           allow_private=bool(p.allow_private), allow_http=bool(p.allow_http),
                           allow_any_port=bool(p.allow_any_port))
    except JobError as err:
        return "stop", f"refused: {err.message}"
    except ConnectionError as exc:
        return "retry", str(exc)
    if 200 <= status < 300:
        return "ok", ""
    if status == 429 or status >= 500:
        return "retry", f"HTTP {status}"
    return "stop", f"HTTP {status}"


def deliver(url: str, job_id: str, status: dict, *, policy: WebhookPolicy = WebhookPolicy(),
            secret: str | None = None, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Deliver ``{"id": job_id, **status}`` to ``url`` with retries, blocking; True on a 2xx.

    For a process whose only work is this delivery (Modal's CPU function); a worker never calls
    it inline. ``status`` is a poll status, or a job's reply dict (turned into one). Never
    raises: every failure is logged (scheme + host at most) and returns False.
    """
    from handlers.dispatch import status_from_reply

    secret = secret if secret is not None else webhook_secret()
    if not secret:
        log.error("job %s: webhook skipped, no MASKPAINT_WEBHOOK_SECRET", job_id)
        return False
    if "status" not in status:
        status = status_from_reply(status)
    body = webhook_body(job_id, status)
    why = ""
    for n in range(policy.max_attempts):
        outcome, why = attempt(url, body, secret, policy)
        if outcome == "ok":
            return True
        if outcome == "stop":
            log.warning("job %s: webhook %s; not retried", job_id, why)
            return False
        if n + 1 < policy.max_attempts:
            sleep(policy.backoff_s * 2 ** n)
    log.warning("job %s: webhook failed after %d attempts (%s)", job_id, policy.max_attempts, why)
    return False
