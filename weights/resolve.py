"""Run-time resolution of model files: local disk only, never the network.

Optional cold-start integrity check: :func:`verify` re-hashes a model's files against its
receipt; :func:`resolve` runs it when asked (``verify=True``; the worker passes
``core.settings.Settings.verify_weights``, the one reader of ``MASKPAINT_VERIFY_WEIGHTS``).

Torch-free.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from weights.files import sha256_file
from weights.manifest import (
    Manifest,
    ManifestEntry,
    ReceiptEntry,
    WeightsError,
    load_manifest,
    load_receipt,
)

#: Environment set before any hub-aware library is imported, so nothing tries the network
#: (huggingface_hub, diffusers, transformers, ultralytics all honour these).
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "YOLO_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}


def set_offline_env() -> None:
    """Force offline mode for the hub-aware libraries (call before importing them)."""
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)


class ModelMissing(LookupError):
    """A model's files are not in the weights directory."""

    def __init__(self, key: str, path: Path) -> None:
        self.key = key
        self.path = path
        super().__init__(
            f"model {key!r} not found at {path}; bake it with "
            f"`python -m weights.bake --profile <profile> --out <weights_dir>` "
            f"(or `python -m weights.tiny --out <weights_dir>` for random dev weights)"
        )


class WeightsIntegrityError(WeightsError):
    """A model's files on disk do not match its receipt (missing, wrong size or sha256)."""


@dataclass(frozen=True)
class ResolvedModel:
    key: str
    path: Path
    entry: ManifestEntry
    receipt: ReceiptEntry
    verify_ms: float | None = None  #: set when :func:`verify` ran during :func:`resolve`

    @property
    def identity(self) -> dict:
        """``{key, source, revision, dev}`` as reported in every result."""
        return {"key": self.key, "source": self.receipt.source,
                "revision": self.receipt.revision, "dev": self.receipt.dev}


def resolve(
    key: str, weights_dir: Path, manifest: Manifest | None = None, verify: bool = False
) -> ResolvedModel:
    """Find model ``key`` under ``weights_dir``.

    Args:
        verify: re-hash the files against the receipt (see :func:`verify`).

    Raises:
        KeyError: ``key`` is not in the manifest.
        ModelMissing: the file/directory is absent or the receipt has no entry for it.
        WeightsIntegrityError: verification ran and a file is missing or differs.
    """
    manifest = manifest or load_manifest()
    entry = manifest.models[key]
    path = Path(weights_dir) / entry.path
    receipt = load_receipt(Path(weights_dir)).models.get(key)
    if not path.exists() or receipt is None:
        raise ModelMissing(key, path)
    resolved = ResolvedModel(key=key, path=path, entry=entry, receipt=receipt)
    if verify:
        ms = _run_verify(resolved)  # the module function (the argument shadows it)
        resolved = ResolvedModel(key=key, path=path, entry=entry, receipt=receipt, verify_ms=ms)
    return resolved


def _sha256(path: Path) -> str:
    return sha256_file(path)[0]


def verify(resolved: ResolvedModel) -> float:
    """Re-hash every file the receipt lists and compare size and sha256.

    Receipt paths are relative to the model's directory (``resolved.path`` for a directory
    model, its parent for a single-file model). Cost: one full read of the weights (about
    1 s per GB from local NVMe).

    Returns:
        Wall time spent, in milliseconds.

    Raises:
        WeightsIntegrityError: the receipt lists no files, or a file is missing, has another
            size or another sha256 (the message names model, file, expected and actual).
    """
    t0 = time.perf_counter()
    key = resolved.key
    files = resolved.receipt.files
    if not files:
        raise WeightsIntegrityError(key, "receipt lists no files; nothing to verify against")
    base = resolved.path if resolved.path.is_dir() else resolved.path.parent
    for rec in files:
        rel = str(rec.get("path", ""))
        p = base / rel
        if not rel or not p.is_file():
            raise WeightsIntegrityError(key, f"missing on disk (expected at {p})", rel)
        want_size = rec.get("size")
        size = p.stat().st_size
        if want_size is not None and size != int(want_size):
            raise WeightsIntegrityError(
                key, f"size mismatch: expected {want_size} bytes, got {size}", rel
            )
        want_sha = rec.get("sha256")
        if not want_sha:
            raise WeightsIntegrityError(key, "receipt has no sha256 for this file", rel)
        sha = _sha256(p)
        if sha != want_sha:
            raise WeightsIntegrityError(
                key, f"sha256 mismatch: expected {want_sha}, got {sha}", rel
            )
    return (time.perf_counter() - t0) * 1000.0


_run_verify = verify


def baked_inpainters(weights_dir: Path, manifest: Manifest | None = None) -> list[str]:
    """Keys of the inpainting models present under ``weights_dir`` (receipt entry and files).

    A cheap readiness check for processes that do not load the models (Modal's web API): no
    hashing, no torch.
    """
    manifest = manifest or load_manifest()
    receipt = load_receipt(Path(weights_dir)).models
    return [
        k for k, e in manifest.models.items()
        if e.kind == "diffusers_inpaint" and k in receipt
        and (Path(weights_dir) / e.path).exists()
    ]
