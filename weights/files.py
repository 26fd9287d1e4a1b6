"""File hashing for the weights layout: the one sha256 helper the bake, the offline resolve and
the dev-weight writers share."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path | str) -> tuple[str, int]:
    """``(sha256 hex digest, size in bytes)`` of a file, streamed (``hashlib.file_digest``)."""
    with Path(path).open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
        return digest, fh.tell()
