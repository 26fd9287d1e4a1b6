"""ModelSet.load: the masking models load beside the inpainting pipelines, each once,
and a broken one is still reported the same way (logged, in ``load_issues``, never fatal)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

BROKEN = {"sam-vit-b": "sam/sam_vit_b_01ec64.pth",
          "faces-scrfd": "insightface/models/buffalo_l/det_10g.onnx",
          "hands-palm-full": "mediapipe/hands/palm_detection_full.tflite"}


def _copy_with_broken_files(src: Path, dst: Path, broken: dict[str, str]) -> None:
    """A weights dir whose files link to ``src`` except ``broken``'s, which hold junk bytes."""
    for p in src.rglob("*"):
        if not p.is_file():
            continue
        rel = p.relative_to(src)
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if str(rel) in broken.values():
            out.write_bytes(b"not a model" * 100)
        elif rel.name == "receipt.json":
            shutil.copyfile(p, out)
        else:
            out.symlink_to(p.resolve())


@pytest.mark.slow
def test_broken_masking_models_are_reported_and_the_rest_load_once(dev_weights, tmp_path,
                                                                      monkeypatch, caplog):
    from core import models as core_models
    from core.models import MASKING_LOADERS, ModelSet
    from core.settings import Settings

    _copy_with_broken_files(dev_weights, tmp_path / "w", BROKEN)
    calls: dict[str, int] = {}

    def counting(kind, loader):
        def load(res, device):
            calls[res.key] = calls.get(res.key, 0) + 1
            return loader(res, device)
        return kind, load

    for kind, (slot, loader) in list(MASKING_LOADERS.items()):
        monkeypatch.setitem(core_models.MASKING_LOADERS, kind, counting(slot, loader))
    with caplog.at_level(logging.WARNING, logger="maskpaint.models"):
        ms = ModelSet.load(Settings(weights_dir=tmp_path / "w", device="cpu"))

    # every baked masking model was tried exactly once, the broken ones included
    assert calls == {"garments-yolov8s-seg": 1, "sam-vit-b": 1, "faces-scrfd": 1,
                     "faces-blazeface-full": 1, "hands-palm-full": 1,
                     "pose-mediapipe-full": 1}
    # broken ones: in load_issues in manifest order, their roles marked missing, logged with
    # the exception type (never the file's bytes)
    assert [(i.detector, i.stage) for i in ms.load_issues] == [
        ("sam-vit-b", "load"), ("faces-scrfd", "load"), ("hands-palm-full", "load")]
    assert all(i.message.startswith("failed to load (") for i in ms.load_issues)
    assert ms.missing["sam"] == "sam-vit-b failed to load"
    assert ms.missing["hand_detectors"] == "hands-palm-full failed to load"
    assert ms.sam is None and ms.hand_detectors == []
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert {r.args[0] for r in errors} == set(BROKEN)
    assert all(r.exc_info for r in errors)  # the traceback went to the log
    # the rest loaded, with a load time each, and the worker can inpaint
    assert [d.identity["key"] for d in ms.face_detectors] == ["faces-blazeface-full"]
    assert ms.garments is not None and ms.pose is not None
    # YOLO's weights are real tensors: a torch model built while diffusers' from_pretrained
    # runs in another thread gets its parameters left on the meta device
    assert {p.device.type for p in ms.garments.model.model.parameters()} == {"cpu"}
    assert {"sd15-inpaint", "sdxl-inpaint"} <= set(ms.inpainters)
    assert set(ms.load_ms) == {"sd15-inpaint", "sdxl-inpaint", "garments-yolov8s-seg",
                               "faces-blazeface-full", "pose-mediapipe-full",
                               "moderation-nudenet", "moderation-opennsfw"}
    assert all(v > 0 for v in ms.load_ms.values())
