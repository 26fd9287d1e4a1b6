"""Webhooks: when a web API job finishes, its poll body is POSTed, signed, to the caller's URL.

Body (JSON, the ``GET /jobs/{id}`` body plus the id): ``{"id", "status": "done", "output"}`` or
``{"id", "status": "failed", "error"}``. Header :data:`SIGNATURE_HEADER`:
``sha256=<hex HMAC-SHA256 of the raw body, keyed with MASKPAINT_WEBHOOK_SECRET>`` (the scheme of
GitHub's ``X-Hub-Signature-256``); the TypeScript client's ``verifyWebhook`` checks it. The
receiver should dedupe on ``id``: a delivery may arrive more than once.

Delivery: :func:`core.netpost.post_once` (the input URLs' SSRF rules: https, default port,
public addresses only, unless the deployment sets ``MASKPAINT_ALLOW_PRIVATE_URLS``), retried on a
network error, 429 or 5xx up to :data:`MAX_ATTEMPTS` times with exponential backoff from
:data:`BACKOFF_S` (bounded: at most about a minute); any other status ends it. A failed delivery
is logged and never changes the job's result (poll it).
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
from core.netpost import check_post_url, post_once
from core.settings import Settings
from handlers.dispatch import status_from_reply

log = logging.getLogger("maskpaint.webhook")

SIGNATURE_HEADER = "X-Maskpaint-Signature"
MAX_ATTEMPTS = 5
BACKOFF_S = 2.0  # then 4, 8, 16 s: 30 s of pauses at most
ATTEMPT_DEADLINE_S = 10.0


@dataclass(frozen=True)
class WebhookPolicy:
    """Where webhooks may go. The defaults are production's; ``allow_http`` / ``allow_any_port``
    / ``allow_private`` exist for tests (a loopback receiver) and self-hosted use."""

    allow_private: bool | None = None  # None: Settings().allow_private_urls
    allow_http: bool = False
    allow_any_port: bool = False
    max_attempts: int = MAX_ATTEMPTS
    backoff_s: float = BACKOFF_S


def sign(body: bytes, secret: str) -> str:
    """The :data:`SIGNATURE_HEADER` value for ``body``: ``sha256=`` + hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_secret() -> str | None:
    """``MASKPAINT_WEBHOOK_SECRET`` through :class:`core.settings.Settings` (None when unset)."""
    secret = Settings().webhook_secret
    return secret.get_secret_value() if secret is not None else None


def check_webhook(url: object, policy: WebhookPolicy = WebhookPolicy()) -> None:
    """Reject a bad ``webhook`` at submit time (no network).

    Raises:
        JobError: ``invalid_input`` (malformed, or the server has no webhook secret) or
            ``blocked_url``, with ``field="webhook"``.
    """
    check_post_url(url, allow_http=policy.allow_http, allow_any_port=policy.allow_any_port)
    if not webhook_secret():
        raise JobError(ErrorCode.invalid_input, "webhook: this server has no webhook secret "
                       "(MASKPAINT_WEBHOOK_SECRET)", field="webhook")


def deliver(url: str, job_id: str, reply: dict, *, policy: WebhookPolicy = WebhookPolicy(),
            secret: str | None = None, sleep: Callable[[float], None] = time.sleep) -> bool:
    """POST the finished job's body to ``url``, signed; True when the receiver answered 2xx.

    Never raises: every failure is logged (scheme + host at most) and returns False.
    """
    secret = secret if secret is not None else webhook_secret()
    if not secret:
        log.error("job %s: webhook skipped, no MASKPAINT_WEBHOOK_SECRET", job_id)
        return False
    body = json.dumps({"id": job_id, **status_from_reply(reply)}, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret)}
    allow_private = (Settings().allow_private_urls if policy.allow_private is None
                     else policy.allow_private)
    for attempt in range(policy.max_attempts):
        try:
            status = post_once(url, body, headers, deadline_s=ATTEMPT_DEADLINE_S,
                               allow_private=allow_private, allow_http=policy.allow_http,
                               allow_any_port=policy.allow_any_port)
        except JobError as err:
            log.warning("job %s: webhook refused: %s", job_id, err.message)
            return False
        except ConnectionError as exc:
            status, why = None, str(exc)
        else:
            if 200 <= status < 300:
                return True
            why = f"HTTP {status}"
            if status != 429 and status < 500:
                log.warning("job %s: webhook answered %s; not retried", job_id, why)
                return False
        if attempt + 1 < policy.max_attempts:
            sleep(policy.backoff_s * 2 ** attempt)
    log.warning("job %s: webhook failed after %d attempts (%s)", job_id, policy.max_attempts, why)
    return False
