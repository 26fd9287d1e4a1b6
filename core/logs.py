"""Structured logging: one JSON object per line, payload-safe.

A filter on the root handler redacts what must never reach a log even if a library logs it:
long base64 runs (image payloads), presigned-URL signatures and AWS credential parameters, and
secret-looking ``key=value`` pairs. Noisy client loggers are held at WARNING.
"""

from __future__ import annotations

import json
import logging
import os
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
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


def setup_logging(level: str | None = None) -> None:
    """Install the JSON formatter on the root logger (idempotent) and quiet noisy libraries."""
    root = logging.getLogger()
    level = level or os.environ.get("MASKPAINT_LOG_LEVEL", "INFO")
    root.setLevel(level)
    if not any(getattr(h, "_maskpaint", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(JsonFormatter())
        h._maskpaint = True  # type: ignore[attr-defined]
        root.addHandler(h)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
