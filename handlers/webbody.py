"""Reading and checking a ``POST /jobs`` body without ever stalling the web API.

- :func:`read_body` streams the body (``Content-Length`` or chunked alike), counting bytes as
  they arrive: past the cap it stops reading and answers 413; a body that stops arriving for
  ``idle_timeout_s`` is 408. Nothing beyond the cap is ever held.
- :func:`parse_submit` (run in a worker thread by the web API, a bounded number at a time)
  counts the body's keys and items before parsing it (a few thousand fields make the contract's
  validation slow and large), then parses and validates it against the job contract.

Why hand-written: Starlette's ``Request.body()`` buffers the whole body before any cap can
apply, and neither the JSON decoder nor pydantic can bound a document's size as it parses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from core.contract import parse_job, safe_field
from core.errors import JobError
from core.moderation.stage import screen_prompt
from core.settings import Settings

#: Most ``,`` and ``:`` outside strings in a body, i.e. keys plus list items: a job has a few
#: dozen fields and short lists; a body with more is refused before it is parsed.
MAX_JSON_TOKENS = 10_000
#: A body that sends nothing for this long, seconds, is cut (408).
BODY_IDLE_TIMEOUT_S = 20.0
#: The longest accepted ``Idempotency-Key`` (or body ``id``), characters.
MAX_KEY_CHARS = 255
_KEY = re.compile(r"[\x21-\x7e]{1,%d}" % MAX_KEY_CHARS)
# A JSON string, unrolled (no backtracking): Friedl's "normal* (special normal*)*".
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)


class BodyError(Exception):
    """A body refused before it reached a dispatcher: HTTP status + a stable error body."""

    def __init__(self, status: int, code: str, message: str, field: str | None = "body",
                 retryable: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field, self.retryable = field, retryable


async def read_body(request: Any, max_bytes: int,
                    idle_timeout_s: float = BODY_IDLE_TIMEOUT_S) -> bytearray:
    """The request body, read chunk by chunk.

    Raises:
        BodyError: 413 ``image_too_large`` past ``max_bytes`` (bytes; checked on the declared
            ``Content-Length`` first, then while reading); 408 ``timeout`` when no chunk comes
            for ``idle_timeout_s`` seconds.
        starlette.requests.ClientDisconnect: the client went away mid-body.
    """
    too_large = BodyError(413, "image_too_large", f"body: over {max_bytes} bytes")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise too_large
    buf = bytearray()
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), idle_timeout_s)
        except StopAsyncIteration:
            return buf
        except asyncio.TimeoutError:
            raise BodyError(408, "timeout", "body: not received in time",
                            retryable=True) from None
        buf += chunk
        if len(buf) > max_bytes:
            raise too_large


def count_tokens(raw: bytes | bytearray) -> int:
    """Keys plus list items of a JSON text, roughly: ``,`` and ``:`` outside strings."""
    bare = _STRING.sub(b"", raw)
    return bare.count(b",") + bare.count(b":")


@dataclass
class Submit:
    """A checked ``POST /jobs`` body."""

    job: dict  # {"input": {...}, "webhook"?: str}: what the dispatcher gets
    key: str | None  # the body's ``id`` (an idempotency key), if any
    fingerprint: str  # sha256 of the raw body: one key, one request
    url_expires_s: int  # the request's URL lifetime (polls re-sign with it)


def check_key(value: object, field: str) -> str:
    """An idempotency key as given, or 400 ``invalid_input`` naming ``field``."""
    if not isinstance(value, str) or not _KEY.fullmatch(value):
        raise BodyError(400, "invalid_input", f"{field}: 1 to {MAX_KEY_CHARS} printable ASCII "
                        "characters, no spaces", field=field)
    return value


def parse_submit(raw: bytes | bytearray, max_tokens: int = MAX_JSON_TOKENS,
                 settings: Settings | None = None) -> Submit:
    """Parse and validate a ``POST /jobs`` body: the job input, bare or as
    ``{"input": {...}, "webhook"?, "id"?}`` (a bare input may carry ``id`` too).

    Raises:
        BodyError: 400 ``invalid_input`` (too many keys/items, not JSON, a number too large,
            nested too deeply, not an object, a bad envelope or ``id``); 422 (or 400 for a
            non-object ``input``) with the contract's code and ``field``, or
            ``content_blocked`` (the prompt screen of :mod:`core.moderation`).
    """
    tokens = count_tokens(raw)
    if tokens > max_tokens:
        raise BodyError(400, "invalid_input", f"body: more than {max_tokens} keys and items")
    try:
        body = json.loads(raw)
    except RecursionError:  # json's decoder recurses per nesting level
        raise BodyError(400, "invalid_input", "body: JSON nested too deeply") from None
    except ValueError as exc:
        if "digits" in str(exc):  # int() refuses > sys.get_int_max_str_digits() digits
            raise BodyError(400, "invalid_input", "body: number too large") from None
        raise BodyError(400, "invalid_input", "body: not valid JSON") from None
    if not isinstance(body, dict):
        raise BodyError(400, "invalid_input", "body: must be a JSON object")
    key = check_key(body.pop("id"), "id") if "id" in body else None
    webhook = None
    if "input" in body:
        webhook = body.pop("webhook", None)
        extra = sorted(set(body) - {"input"})
        if extra:
            name = safe_field(extra[0])
            raise BodyError(400, "invalid_input", f"{name}: unknown field beside 'input'",
                            field=name)
        payload = body["input"]
    else:
        payload = body
    try:
        job = parse_job("validate", payload)  # the worker validates again; this fails fast
        screen_prompt(job, settings or Settings())  # a refused prompt is answered now, never queued
    except JobError as err:
        raise BodyError(422 if isinstance(payload, dict) else 400, err.code.value, err.message,
                        field=err.field, retryable=err.retryable) from None
    out: dict = {"input": payload}
    if webhook is not None:
        out["webhook"] = webhook
    return Submit(job=out, key=key, fingerprint=hashlib.sha256(raw).hexdigest(),
                  url_expires_s=int(job.request.output.url_expires_s))
