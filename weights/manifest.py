"""The weights manifest (``weights/manifest.json``) and the receipt a bake leaves behind.

The manifest says, for every model key, what kind of model it is, where its files live under the
weights directory (the *layout*), where they come from (pinned source, per-file sha256 and size),
its license and which image profiles carry it. The *receipt* (``<weights_dir>/receipt.json``) is
written by the bake (real weights) and by ``python -m weights.tiny`` (random dev weights, same
layout): it records what is actually on disk, and its entries are what every result reports.

Torch-free: handlers and the bake import it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_PATH = Path(__file__).with_name("manifest.json")
RECEIPT_NAME = "receipt.json"

ModelKind = Literal["diffusers_inpaint", "yolo_seg", "sam", "insightface_det"]


class SourceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(..., description="Path inside the source (repo file or archive member).")
    target: str | None = Field(None, description="Path under the model's `path` (default: same).")
    sha256: str
    size: int = Field(..., description="bytes")


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["hf", "url", "s3"]
    repo: str | None = None
    revision: str | None = None
    url: str | None = None
    files: list[SourceFile] = Field(default_factory=list)


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: ModelKind
    path: str = Field(..., description="File or directory, relative to the weights directory.")
    license: str
    commercial_use: bool
    profiles: list[str]
    source: Source
    pipeline: str | None = Field(None, description="diffusers pipeline class (diffusers_inpaint).")
    arch: str | None = Field(None, description="segment-anything registry key (sam).")
    pack: str | None = Field(None, description="insightface model pack name (insightface_det).")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    models: dict[str, ManifestEntry]
    roles: dict[str, str] = Field(
        ..., description="inpaint_default / garments / sam / faces -> model key."
    )

    def profile(self, name: str) -> list[str]:
        """Model keys an image built with profile ``name`` carries.

        Raises:
            KeyError: unknown profile.
        """
        keys = [k for k, e in self.models.items() if name in e.profiles]
        if not keys:
            raise KeyError(f"unknown weights profile {name!r}")
        return keys


class ReceiptEntry(BaseModel):
    """What is on disk for one model (written by the bake or the dev-model writer)."""

    source: str = Field(..., description="Repo id, URL or `dev-random`.")
    revision: str
    dev: bool = False
    files: list[dict[str, Any]] = Field(default_factory=list, description="path, sha256, size")
    arch: dict[str, Any] | None = Field(
        None, description="Architecture overrides (the tiny SAM's dims); None = manifest's arch."
    )


class Receipt(BaseModel):
    models: dict[str, ReceiptEntry] = Field(default_factory=dict)


def load_manifest(path: Path = MANIFEST_PATH) -> Manifest:
    """Read and validate the manifest. Raises ``pydantic.ValidationError`` / ``OSError``."""
    return Manifest.model_validate(json.loads(Path(path).read_text()))


def load_receipt(weights_dir: Path) -> Receipt:
    """Read ``<weights_dir>/receipt.json``; an absent file is an empty receipt."""
    p = Path(weights_dir) / RECEIPT_NAME
    if not p.exists():
        return Receipt()
    return Receipt.model_validate(json.loads(p.read_text()))


def write_receipt_entry(weights_dir: Path, key: str, entry: ReceiptEntry) -> None:
    """Add or replace one model's receipt entry (atomic rename, so readers never see half)."""
    weights_dir = Path(weights_dir)
    receipt = load_receipt(weights_dir)
    receipt.models[key] = entry
    tmp = weights_dir / (RECEIPT_NAME + ".tmp")
    tmp.write_text(receipt.model_dump_json(indent=2))
    tmp.replace(weights_dir / RECEIPT_NAME)
