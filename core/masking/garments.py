"""Garment detection and instance segmentation with an ultralytics YOLOv8-seg model.

The production model is ``deepfashion2_yolov8s-seg.pt`` (13 DeepFashion2 classes, manifest key
``garments-yolov8s-seg``); ``weights.tiny.masking.write_tiny_yolo`` writes a random model of the
same format for tests. Which garment classes a request's ``targets`` select is configuration:
:data:`DEFAULT_CLASS_GROUPS`, overridable per detector (``class_map``).

Arrays: images are H x W x 3 uint8 RGB; masks H x W bool (True = garment) at the original
size; boxes ``(x0, y0, x1, y1)`` float px of the original image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core import timing
from core.masking.detectors import check_rgb
from weights.resolve import ModelMissing, set_offline_env

set_offline_env()  # before ultralytics: it does DNS/hub lookups on import otherwise

from ultralytics import YOLO  # noqa: E402

#: Groups a DeepFashion2 class can belong to. The request's ``full`` target is not a class
#: group: it selects every detection, whatever its group (including None).
GARMENT_GROUPS: tuple[str, ...] = ("upper", "lower", "dress", "outerwear")

#: DeepFashion2 class name -> target group (Ge et al., CVPR 2019, "DeepFashion2": 13
#: categories). Tops without sleeves (``vest`` = tank top, ``sling`` = strap top) count as
#: ``upper``; ``*_outwear`` (jackets, coats) as ``outerwear``; shorts/trousers/skirt as
#: ``lower``; all four dress classes as ``dress``. Override per detector with ``class_map``.
DEFAULT_CLASS_GROUPS: dict[str, str] = {
    "short_sleeved_shirt": "upper",
    "long_sleeved_shirt": "upper",
    "vest": "upper",
    "sling": "upper",
    "short_sleeved_outwear": "outerwear",
    "long_sleeved_outwear": "outerwear",
    "shorts": "lower",
    "trousers": "lower",
    "skirt": "lower",
    "short_sleeved_dress": "dress",
    "long_sleeved_dress": "dress",
    "vest_dress": "dress",
    "sling_dress": "dress",
}


@dataclass
class GarmentDetection:
    """One detected garment instance.

    Attributes:
        label: the model's class name (e.g. ``"trousers"``).
        class_id: the model's class index (0-based; 0..12 for DeepFashion2).
        group: target group from the detector's class map, or None for an unmapped class.
        score: detection confidence in [0, 1].
        box: ``(x0, y0, x1, y1)`` float px in the original image, clipped to it.
        mask: H x W bool instance mask at the original image size (True = garment); None
            when :meth:`GarmentDetector.detect` was asked for boxes only (``masks=False``).
    """

    label: str
    class_id: int
    group: str | None
    score: float
    box: tuple[float, float, float, float]
    mask: np.ndarray | None


def _norm(label: str) -> str:
    """Class-name key for the map: lower case, spaces/hyphens as underscores."""
    return label.strip().lower().replace(" ", "_").replace("-", "_")


def _check_class_map(class_map: Mapping[str, str | None]) -> dict[str, str | None]:
    out = dict(class_map)
    bad = {k: v for k, v in out.items() if v is not None and v not in GARMENT_GROUPS}
    if bad:
        raise ValueError(f"class_map groups must be one of {GARMENT_GROUPS} or None: {bad}")
    return out


class GarmentDetector:
    """A loaded YOLOv8-seg garment segmenter. Build with :meth:`load`; one per container."""

    def __init__(self, model: YOLO, *, device: str, conf: float, iou: float, max_det: int,
                 imgsz: int, class_map: Mapping[str, str | None]) -> None:
        self.model = model
        self.device = device
        self.conf = conf
        self.iou = iou
        self.max_det = max_det
        self.imgsz = imgsz
        self.class_map = _check_class_map(class_map)
        self._groups = {_norm(k): v for k, v in self.class_map.items()}
        self.names: dict[int, str] = {int(k): str(v) for k, v in model.names.items()}

    @classmethod
    def load(
        cls,
        path: Path | str,
        device: str = "cpu",
        conf: float = 0.25,
        max_det: int = 20,
        class_map: Mapping[str, str | None] | None = None,
        *,
        iou: float = 0.7,
        imgsz: int = 640,
        warmup: bool = True,
        key: str = "garments-yolov8s-seg",
    ) -> GarmentDetector:
        """Load a YOLOv8-seg ``.pt`` with ``ultralytics.YOLO`` (never downloads anything).

        Args:
            path: the ``.pt`` file (``<weights_dir>/yolo/deepfashion2_yolov8s-seg.pt``).
            device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; fp16 inference on CUDA.
            conf: minimum detection confidence, 0-1 (0.25 is ultralytics' predict default).
            max_det: most detections returned per image.
            class_map: class name -> group (one of :data:`GARMENT_GROUPS`) or None; replaces
                :data:`DEFAULT_CLASS_GROUPS` entirely (tweak with ``{**DEFAULT_CLASS_GROUPS,
                "vest": "outerwear"}``). Classes absent from it get ``group=None``. Names
                match case-insensitively, with spaces/hyphens read as underscores.
            iou: NMS IoU threshold, 0-1 (0.7 is ultralytics' predict default).
            imgsz: inference size, px of the letterboxed long side (the model's training size).
            warmup: run one 64 x 64 black image so the predictor (fusing, backend setup, CUDA
                kernels) is built now, at cold start, not in the first job.
            key: manifest key, only used in the :class:`ModelMissing` message.

        Raises:
            ModelMissing: ``path`` is not a file.
            ValueError: the checkpoint is not a segmentation model, or ``class_map`` names a
                group outside :data:`GARMENT_GROUPS`.
        """
        path = Path(path)
        class_map = _check_class_map(DEFAULT_CLASS_GROUPS if class_map is None else class_map)
        if not path.is_file():
            raise ModelMissing(key, path)
        model = YOLO(str(path))
        if model.task != "segment":
            raise ValueError(f"{path.name}: a {model.task!r} model, expected a 'segment' model")
        det = cls(model, device=device, conf=conf, iou=iou, max_det=max_det, imgsz=imgsz,
                  class_map=class_map)
        if warmup:
            det.detect(np.zeros((64, 64, 3), np.uint8))
        return det

    def to(self, device: str) -> GarmentDetector:
        """Run on ``device`` from now on (e.g. after a CPU-side memory snapshot). ultralytics 8.4
        rebuilds its predictor when ``device`` changes; the warm-up makes that happen now, at
        cold start, not in the first job."""
        self.device = device
        self.detect(np.zeros((64, 64, 3), np.uint8))
        return self

    def detect(self, image: np.ndarray, *, masks: bool = True) -> list[GarmentDetection]:
        """Detect and segment garments.

        Args:
            image: H x W x 3 uint8 RGB (converted to ultralytics' BGR here).
            masks: False when only the boxes will be used (SAM refines them): the masks are
                then left at the model's input size and not returned (``mask=None``), instead
                of being computed at the photo's full size (ultralytics' ``retina_masks``
                upsample every instance's mask to H x W).

        Returns:
            Detections sorted by descending score (at most ``max_det``), each with its box in
            original-image px and an H x W bool mask (ultralytics ``retina_masks``: masks are
            computed at the original resolution and cropped to their box), or None without
            ``masks``. Empty when nothing reaches ``conf``.

        Raises:
            ValueError: ``image`` is not H x W x 3 uint8.
        """
        check_rgb(image)
        h, w = image.shape[:2]
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        with timing.forward():
            result = self._predict(bgr, retina_masks=masks)
        if result.masks is None or result.boxes is None or len(result.boxes) == 0:
            return []
        boxes = result.boxes.xyxy.float().cpu().numpy()
        scores = result.boxes.conf.float().cpu().numpy()
        classes = result.boxes.cls.cpu().numpy().astype(int)
        full = result.masks.data.cpu().numpy() > 0 if masks else [None] * len(boxes)
        return self._detections(boxes, scores, classes, full, w, h)

    def _predict(self, bgr: np.ndarray, retina_masks: bool = True):
        result = self.model.predict(
            bgr, conf=self.conf, iou=self.iou, max_det=self.max_det, imgsz=self.imgsz,
            device=self.device, retina_masks=retina_masks, verbose=False, save=False,
            show=False,
            **({"quantize": 16} if self.device.startswith("cuda") else {}),  # fp16 on CUDA
        )[0]
        # ultralytics' predictor keeps its last batch, loader and results (each holding the
        # full-size photo) until its next call, which builds them anew: one frame held between
        # jobs, and through every later job's peak (found on a 12 MP photo)
        predictor = getattr(self.model, "predictor", None)
        if predictor is not None:
            predictor.results = predictor.batch = predictor.dataset = None
        return result

    def _detections(self, boxes, scores, classes, masks, w: int, h: int
                    ) -> list[GarmentDetection]:
        if isinstance(masks, np.ndarray) and masks.shape[1:] != (h, w):
            # retina masks are at the original size; be sure
            raise RuntimeError(f"mask size {masks.shape[1:]} != image size {(h, w)}")
        out = []
        for box, score, cid, mask in zip(boxes, scores, classes, masks):
            x0, y0, x1, y1 = (float(v) for v in box)
            label = self.names.get(int(cid), str(int(cid)))
            out.append(GarmentDetection(
                label=label, class_id=int(cid), group=self._groups.get(_norm(label)),
                score=float(score),
                box=(min(max(x0, 0.0), w), min(max(y0, 0.0), h),
                     min(max(x1, 0.0), w), min(max(y1, 0.0), h)),
                mask=mask,
            ))
        out.sort(key=lambda d: -d.score)
        return out
