"""Tiny random-weight masking models in the production on-disk layout.

Three writers, one per masking role, each writing its model to
``weights_dir / manifest.models[key].path`` (the same file the bake puts there for the real
model) and recording it in ``<weights_dir>/receipt.json`` with ``dev=True``. The files load
through the *same* loaders production uses (``core.masking.garments.GarmentDetector``,
``core.masking.sam.SamRefiner``, ``core.masking.faces.ScrfdFaceDetector``); nothing here bypasses
a loader.

- :func:`write_tiny_yolo`: an ultralytics YOLOv8-seg built from ultralytics' packaged
  ``yolov8-seg.yaml`` with the 13 DeepFashion2 classes at a sub-"n" width (about 1.0 MB).
  Random weights detect nothing; ``bias_class`` rigs the head so that class *is* detected,
  once, on any photo (a test aid, see the function).
- :func:`write_tiny_sam`: segment-anything's ``Sam`` with a 2-block, 32-wide ViT image encoder
  (still 1024 px input; about 19 MB, mostly SAM's fixed-size mask decoder); the dims go into
  the receipt's ``arch`` so the loader can rebuild it.
- ``weights.tiny.faces.write_tiny_scrfd``: a hand-built ONNX graph with SCRFD's 9-output
  signature that reports one "face" exactly where the image shows a marker colour (a test aid),
  loadable through ``insightface.app.FaceAnalysis`` (about 13 kB).

Writers are deterministic for a given seed (same bytes, same sha256) and leave torch's global
RNG untouched.

The receipt's per-file ``path`` is the file name inside the model's manifest ``path`` parent
(these three models are single files), with its sha256 and size in bytes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from weights.files import sha256_file
from weights.manifest import ReceiptEntry, load_manifest, write_receipt_entry

#: DeepFashion2's 13 categories, in the order of its category ids 1..13 (Ge et al., CVPR 2019,
#: "DeepFashion2"; the same order as the class ids 0..12 of ``deepfashion2_yolov8s-seg.pt``).
DEEPFASHION2_CLASSES: tuple[str, ...] = (
    "short_sleeved_shirt",
    "long_sleeved_shirt",
    "short_sleeved_outwear",
    "long_sleeved_outwear",
    "vest",
    "sling",
    "shorts",
    "trousers",
    "skirt",
    "short_sleeved_dress",
    "long_sleeved_dress",
    "vest_dress",
    "sling_dress",
)

#: Width multiplier of the tiny YOLO (ultralytics' own "n" scale is 0.25): every layer gets
#: ``max(8, round8(channels * 0.0625))`` channels: 0.43 M parameters, a 1.0 MB fp16 ``.pt``.
TINY_YOLO_SCALE = {"t": [0.33, 0.0625, 1024]}  # [depth, width, max_channels] as in the yaml

#: Tiny SAM image-encoder dims. ``_build_sam`` keyword names (segment_anything/build_sam.py);
#: the real vit_b is 768 / 12 / 12 / [2, 5, 8, 11].
TINY_SAM_ARCH: dict[str, Any] = {
    "encoder_embed_dim": 32,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": [1],
}

#: Default marker colour of the tiny SCRFD, RGB. Not symmetric under an R<->B swap on purpose,
#: so feeding the detector RGB where insightface expects BGR finds nothing.
DEFAULT_FACE_MARKER_RGB: tuple[int, int, int] = (255, 0, 128)


#: The ``date`` stamped in the tiny YOLO checkpoint (ultralytics stores one; any fixed value).
_FIXED_DATE = "2026-01-01T00:00:00+00:00"


def _entry_path(weights_dir: Path, key: str) -> Path:
    entry = load_manifest().models[key]
    out = Path(weights_dir) / entry.path
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _tmp(path: Path) -> Path:
    """Sibling temp name: files are written there, then renamed over ``path`` (atomic)."""
    return path.with_name(path.name + ".tmp")


def _file_record(path: Path) -> dict[str, Any]:
    digest, size = sha256_file(path)
    return {"path": path.name, "sha256": digest, "size": size}


# --------------------------------------------------------------------------------------------
# YOLOv8-seg (garments)
# --------------------------------------------------------------------------------------------


def _bias_yolo_head(model: Any, class_id: int) -> None:
    """Rig a YOLOv8 ``Segment`` head so that every image yields one detection of ``class_id``.

    Only the head's last layers are set (the backbone, neck and all of the loader's letterbox,
    decode, NMS and mask code run unchanged). A conv head has no notion of position except its
    zero padding, which is what singles out one anchor:

    - class branch of the stride-32 level (``cv3[2]``, legacy v8 layout Conv3x3, Conv3x3,
      Conv1x1): layer 0 outputs the constant SiLU(3) on every cell; layer 1 copies it from the
      cell above (channel 0) and from the cell to the left (channel 1), so those channels are 0
      exactly on the top row / left column (zero padding); the 1x1 logit is
      ``6 - 30 * (ch0 + ch1) / SiLU(SiLU(3))``: sigmoid(6) = 0.9975 on the top-left cell
      only, below 1e-10 elsewhere.
      Every other class and level: logit -20.
    - box branch (``cv2[i][-1]``, DFL with ``reg_max`` 16): left/top put half the mass on bins
      0 and 1 (0.5 stride), right/bottom all on bin 15; the top-left anchor (16, 16) thus gives
      the box [0, 0, 496, 496] in letterboxed px (clipped to the image by the loader).
    - mask coefficients (``cv4[i][-1]``) = (1, 0, ..., 0) and prototypes (``proto.cv3``) =
      SiLU(3) everywhere, so the instance mask fills its box.
    """
    import torch

    head = model.model[-1]
    if not getattr(head, "legacy", False) or head.nl != 3 or head.reg_max != 16:
        raise RuntimeError("the bias rig expects the legacy YOLOv8 Segment head (3 levels, DFL 16)")
    silu3 = 3.0 / (1.0 + math.exp(-3.0))

    def set_bn(conv: Any, beta: float) -> None:
        conv.bn.weight.fill_(1.0)
        conv.bn.bias.fill_(beta)
        conv.bn.running_mean.zero_()
        conv.bn.running_var.fill_(1.0 - conv.bn.eps)  # (x - 0) / sqrt(var + eps) = x

    with torch.no_grad():
        for i, (box, cls, coef) in enumerate(zip(head.cv2, head.cv3, head.cv4)):
            cls[-1].weight.zero_()
            cls[-1].bias.fill_(-20.0)
            box[-1].weight.zero_()
            bins = box[-1].bias.view(4, head.reg_max)  # (l, t, r, b) x bins, DFL's layout
            bins.fill_(-20.0)
            bins[:2, :2] = 20.0  # left/top: 0.5 stride
            bins[2:, head.reg_max - 1] = 20.0  # right/bottom: 15 strides
            coef[-1].weight.zero_()
            coef[-1].bias.zero_()
            coef[-1].bias[0] = 1.0
        cls = head.cv3[head.nl - 1]
        cls[0].conv.weight.zero_()
        set_bn(cls[0], 3.0)  # constant SiLU(3) on every cell
        cls[1].conv.weight.zero_()
        cls[1].conv.weight[0, 0, 0, 1] = 1.0  # out(i, j) = in(i - 1, j): 0 on the top row
        cls[1].conv.weight[1, 0, 1, 0] = 1.0  # out(i, j) = in(i, j - 1): 0 on the left column
        set_bn(cls[1], 0.0)
        cls[2].weight[class_id, :2] = -30.0 / (silu3 / (1.0 + math.exp(-silu3)))
        cls[2].bias[class_id] = 6.0
        proto_out = head.proto.cv3  # Conv(c_, nm, 1) = conv -> BN -> SiLU
        proto_out.conv.weight.zero_()
        set_bn(proto_out, 3.0)


def write_tiny_yolo(
    weights_dir: Path,
    key: str = "garments-yolov8s-seg",
    bias_class: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny random YOLOv8-seg garment segmenter at the manifest path of ``key``.

    Built by ultralytics from its packaged ``yolov8-seg.yaml`` (the architecture of
    ``deepfashion2_yolov8s-seg.pt``) with ``nc=13`` and the class names of
    :data:`DEEPFASHION2_CLASSES`, at the width :data:`TINY_YOLO_SCALE`, ``model.task =
    "segment"``, saved as an ultralytics checkpoint (fp16 module under ``"model"``, like
    ``Model.save``) that ``ultralytics.YOLO(path)`` reloads as a segmenter. About 1.0 MB.

    Args:
        weights_dir: the weights root (``MASKPAINT_WEIGHTS_DIR``).
        key: manifest key of a ``yolo_seg`` entry.
        bias_class: TEST AID. None: plain random weights, which detect nothing on real photos.
            A DeepFashion2 class name: the head is rigged (last layers only, see
            :func:`_bias_yolo_head`) so that every image, whatever its content, yields exactly
            one detection: that class, score sigmoid(6) = 0.9975, box [0, 0, 496, 496] in the
            640 px letterboxed input, i.e. in original px ``(0, 0, min(W, 0.775 L),
            min(H, 0.775 L))`` with L = max(H, W) (less the letterbox padding when the short
            side is padded past 496 px), and a mask filling that box. Use it to exercise the
            label -> group mapping and the stages after detection (SAM, union, faces).
        seed: torch seed for the random init (same seed -> same weights).

    Returns:
        The written ``.pt`` path.

    Raises:
        ValueError: ``bias_class`` is not one of the 13 class names.
        KeyError: ``key`` is not in the manifest.
    """
    from weights.resolve import set_offline_env

    set_offline_env()
    import copy

    import torch
    import ultralytics
    from ultralytics.nn.tasks import SegmentationModel, yaml_model_load

    if bias_class is not None and bias_class not in DEEPFASHION2_CLASSES:
        raise ValueError(f"bias_class must be one of {DEEPFASHION2_CLASSES}, got {bias_class!r}")
    out = _entry_path(weights_dir, key)
    cfg = dict(yaml_model_load("yolov8-seg.yaml"))
    cfg["scales"] = dict(TINY_YOLO_SCALE)
    cfg["scale"] = "t"
    cfg["nc"] = len(DEEPFASHION2_CLASSES)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SegmentationModel(cfg, nc=len(DEEPFASHION2_CLASSES), verbose=False)
    model.names = dict(enumerate(DEEPFASHION2_CLASSES))
    if bias_class is not None:
        _bias_yolo_head(model, DEEPFASHION2_CLASSES.index(bias_class))
    model.eval()
    model.task = "segment"  # else the loader's default args make it reload as a detector
    model.args = {"task": "segment", "imgsz": 640}
    ckpt = {
        "date": _FIXED_DATE,  # fixed, so the same seed writes the same bytes
        "version": ultralytics.__version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "epoch": -1,
        "best_fitness": None,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": {"task": "segment", "imgsz": 640, "model": "yolov8-seg.yaml"},
        "train_metrics": {},
        "model": copy.deepcopy(model).half(),
    }
    torch.save(ckpt, _tmp(out))
    _tmp(out).replace(out)
    rev = f"dev-random-seed{seed}" + (f"-bias-{bias_class}" if bias_class else "")
    write_receipt_entry(
        Path(weights_dir), key,
        ReceiptEntry(source="dev-random", revision=rev, dev=True, files=[_file_record(out)]),
    )
    return out


# --------------------------------------------------------------------------------------------
# SAM
# --------------------------------------------------------------------------------------------


def write_tiny_sam(weights_dir: Path, key: str = "sam-vit-b", seed: int = 0) -> Path:
    """Write a tiny random SAM checkpoint (a plain ``state_dict``) at the manifest path of ``key``.

    Built by segment-anything's ``build_sam._build_sam`` (the function behind
    ``sam_model_registry``) with the encoder dims of :data:`TINY_SAM_ARCH`; the prompt encoder
    and mask decoder keep SAM's fixed sizes (256-wide), the image encoder still takes 1024 px.
    Saved fp32 with ``torch.save(state_dict)`` like ``sam_vit_b_01ec64.pth`` (about 19 MB,
    mostly the mask decoder; ``set_image`` about 0.3-0.7 s on 2 CPU cores). The dims are
    recorded in the receipt's ``arch`` so :meth:`core.masking.sam.SamRefiner.load` rebuilds the
    same shapes (the real ``vit_b`` dims come from segment-anything's registry, ``arch=None``
    in the receipt).

    Args:
        weights_dir: the weights root.
        key: manifest key of a ``sam`` entry.
        seed: torch seed for the random init.

    Returns:
        The written ``.pth`` path.
    """
    import torch
    from segment_anything.build_sam import _build_sam

    out = _entry_path(weights_dir, key)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = _build_sam(checkpoint=None, **TINY_SAM_ARCH)
    torch.save(sam.state_dict(), _tmp(out))
    _tmp(out).replace(out)
    write_receipt_entry(
        Path(weights_dir), key,
        ReceiptEntry(source="dev-random", revision=f"dev-random-seed{seed}", dev=True,
                     files=[_file_record(out)], arch=dict(TINY_SAM_ARCH)),
    )
    return out
