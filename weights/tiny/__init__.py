"""Tiny random-weight models in the exact on-disk layout of the production weights.

They load through the same loaders as the real models (diffusers ``from_pretrained``,
ultralytics ``YOLO(path)``, the segment-anything builder, insightface ``FaceAnalysis``), so tests
and the local demo exercise the production code path; their outputs are noise.

``python -m weights.tiny --out .weights`` writes whatever is missing (``--force`` rewrites).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from weights.manifest import load_manifest, load_receipt


def writers() -> dict[str, Callable[[Path], object]]:
    """Manifest key -> function writing its tiny model under a weights dir."""
    import importlib

    def lazy(module: str, fn: str) -> Callable[[Path], object]:
        return lambda out: getattr(importlib.import_module(f"weights.tiny.{module}"), fn)(out)

    return {
        "sd15-inpaint": lazy("sd", "write_tiny_sd_inpaint"),
        "garments-yolov8s-seg": lazy("masking", "write_tiny_yolo"),
        "sam-vit-b": lazy("masking", "write_tiny_sam"),
        "faces-scrfd": lazy("masking", "write_tiny_scrfd"),
    }


def ensure_dev_weights(out: Path, keys: list[str] | None = None, force: bool = False) -> list[str]:
    """Write the tiny models that are missing under ``out``. Returns the keys written.

    A model already recorded as real (non-dev) in the receipt is never overwritten.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest()
    written = []
    for key, write in writers().items():
        if keys and key not in keys:
            continue
        have = load_receipt(out).models.get(key)
        present = have is not None and (out / manifest.models[key].path).exists()
        if present and (not force or not have.dev):
            continue
        write(out)
        written.append(key)
    return written
