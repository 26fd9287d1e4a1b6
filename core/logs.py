"""Structured logging: one JSON object per line, payload-safe, through exactly one handler.

A filter on the root handler redacts what must never reach a log even if a library logs it:
long base64 runs (image payloads), presigned-URL signatures and AWS credential parameters, and
secret-looking ``key=value`` pairs. Each record is one ``json.dumps`` line, so a newline or an
ANSI escape inside a message (a prompt, a field name, a job id) is escaped and cannot start a
forged line. Noisy client loggers are held at WARNING.

Why :func:`setup_logging` takes the handlers away from everyone else: ``import runpod`` calls
``logging.basicConfig`` (``runpod/serverless/utils/rp_upload.py``) and ultralytics gives its own
logger a plain stream handler with ``propagate=False``; either prints lines a second time, raw,
past the redaction. So the root logger keeps exactly one handler, ours; console stream handlers
found on other loggers are removed and those loggers propagate to it; Python warnings are
routed into logging too. Call it again after a cold start has imported the heavy libraries
(it is idempotent); the worker's entry points do.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import time

NOISY = ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "httpcore", "aiohttp",
         "PIL", "diffusers", "transformers", "ultralytics", "matplotlib", "filelock")

_REDACTIONS = [
    (re.compile(r"data:[^;,\s]{0,64}(;[^,\s]{0,64})?,[A-Za-z0-9+/=_-]{16,}"), "data:<redacted>"),
    (re.compile(r"[A-Za-z0-9+/=_-]{200,}"), "<redacted-blob>"),
    (re.compile(r"(X-Amz-(Signature|Credential|Security-Token)=)[^&\s\"']+", re.I),
     r"\1<redacted>"),
    (re.compile(r"((?:Signature|AWSAccessKeyId|token|secret|password|api[_-]?key)=)"
                r"[^&\s\"']+", re.I), r"\1<redacted>"),
    (re.compile(r"(AKIA|ASIA)[A-Z0-9]{16}"), "<redacted-key-id>"),
]


def redact(text: str) -> str:
    """Remove payloads, signatures and credentials from ``text``."""
    for pat, repl in _REDACTIONS:
        text = pat.sub(repl, text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record (``ts``, ``level``, ``logger``, ``msg``, optional ``job_id``,
    ``stage``, ``ms``, ``code``, ``exc``); every string redacted, control characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key in ("job_id", "stage", "ms", "code"):
            if hasattr(record, key):
                value = getattr(record, key)
                out[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=lambda o: redact(str(o)))


def _is_console(handler: logging.Handler) -> bool:
    """A handler printing to a terminal/pipe (not ours, not a file, not an in-memory buffer)."""
    return (isinstance(handler, logging.StreamHandler)
            and not isinstance(handler, logging.FileHandler)
            and not isinstance(getattr(handler, "stream", None), io.StringIO)
            and not getattr(handler, "_maskpaint", False))


def setup_logging(level: str | None = None) -> None:
    """Make our JSON handler the only console output of :mod:`logging` (idempotent).

    Args:
        level: root level name; default ``Settings().log_level`` (``MASKPAINT_LOG_LEVEL``).

    Removes every other console handler of the root logger (e.g. the one ``runpod``'s
    ``basicConfig`` added) and of other loggers (which then propagate to ours); file handlers and
    in-memory ones (tests) stay.
    """
    if level is None:
        from core.settings import Settings

        level = Settings().log_level
    root = logging.getLogger()
    root.setLevel(level.upper())
    ours = [h for h in root.handlers if getattr(h, "_maskpaint", False)]
    for h in list(root.handlers):
        if _is_console(h) or h in ours[1:]:
            root.removeHandler(h)
    if not ours:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(JsonFormatter())
        h._maskpaint = True  # type: ignore[attr-defined]
        root.addHandler(h)
    for logger in list(logging.root.manager.loggerDict.values()):
        if not isinstance(logger, logging.Logger):
            continue  # a PlaceHolder
        console = [h for h in logger.handlers if _is_console(h)]
        for h in console:
            logger.removeHandler(h)
        if console:
            logger.propagate = True
    logging.captureWarnings(True)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
