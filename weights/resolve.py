"""Run-time resolution of model files: local disk only, never the network.

Torch-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from weights.manifest import Manifest, ManifestEntry, ReceiptEntry, load_manifest, load_receipt

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


@dataclass(frozen=True)
class ResolvedModel:
    key: str
    path: Path
    entry: ManifestEntry
    receipt: ReceiptEntry

    @property
    def identity(self) -> dict:
        """``{key, source, revision, dev}`` as reported in every result."""
        return {"key": self.key, "source": self.receipt.source,
                "revision": self.receipt.revision, "dev": self.receipt.dev}


def resolve(key: str, weights_dir: Path, manifest: Manifest | None = None) -> ResolvedModel:
    """Find model ``key`` under ``weights_dir``.

    Raises:
        KeyError: ``key`` is not in the manifest.
        ModelMissing: the file/directory is absent or the receipt has no entry for it.
    """
    manifest = manifest or load_manifest()
    entry = manifest.models[key]
    path = Path(weights_dir) / entry.path
    receipt = load_receipt(Path(weights_dir)).models.get(key)
    if not path.exists() or receipt is None:
        raise ModelMissing(key, path)
    return ResolvedModel(key=key, path=path, entry=entry, receipt=receipt)
