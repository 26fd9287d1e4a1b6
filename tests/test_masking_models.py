"""The masking models: tiny random-weight files in the production layout, loaded through the
production loaders (``GarmentDetector``, ``SamRefiner``, ``ScrfdFaceDetector``), run on real photos.

Each tiny model is written once per module (``tmp_path_factory``). Timings here are CPU.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from weights.manifest import load_manifest, load_receipt
from weights.resolve import ModelMissing, resolve

pytestmark = pytest.mark.slow

MANIFEST = load_manifest()


def _rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return np.ascontiguousarray(img[..., ::-1])


@pytest.fixture(scope="module")
def images(photos) -> dict[str, np.ndarray]:
    return {k: _rgb(p) for k, p in photos.items()}


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    """One weights dir holding the tiny biased YOLO, the tiny SAM and the tiny SCRFD."""
    from weights.tiny.faces import write_tiny_scrfd
    from weights.tiny.masking import write_tiny_sam, write_tiny_yolo

    d = tmp_path_factory.mktemp("weights")
    write_tiny_yolo(d, bias_class="trousers")
    write_tiny_sam(d)
    write_tiny_scrfd(d)
    return d


@pytest.fixture(scope="module")
def plain_yolo(tmp_path_factory) -> Path:
    from weights.tiny.masking import write_tiny_yolo

    return write_tiny_yolo(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def garments(weights_dir):
    from core.masking.garments import GarmentDetector

    return GarmentDetector.load(resolve("garments-yolov8s-seg", weights_dir).path)


@pytest.fixture(scope="module")
def sam(weights_dir):
    from core.masking.sam import SamRefiner

    r = resolve("sam-vit-b", weights_dir)
    return SamRefiner.load(r.path, arch=r.entry.arch, arch_overrides=r.receipt.arch)


@pytest.fixture(scope="module")
def faces(weights_dir):
    from core.masking.faces import ScrfdFaceDetector as FaceDetector

    entry = MANIFEST.models["faces-scrfd"]
    return FaceDetector.load(weights_dir / "insightface", entry.pack)


# --- the class -> group table --------------------------------------------------------------


def test_class_map_covers_all_13_deepfashion2_classes():
    from core.masking.garments import DEFAULT_CLASS_GROUPS, GARMENT_GROUPS
    from weights.tiny.masking import DEEPFASHION2_CLASSES

    assert len(DEEPFASHION2_CLASSES) == 13 == len(set(DEEPFASHION2_CLASSES))
    assert set(DEFAULT_CLASS_GROUPS) == set(DEEPFASHION2_CLASSES)
    assert set(DEFAULT_CLASS_GROUPS.values()) == set(GARMENT_GROUPS)
    assert "full" not in GARMENT_GROUPS
    expect = {"short_sleeved_shirt": "upper", "long_sleeved_shirt": "upper", "vest": "upper",
              "sling": "upper", "short_sleeved_outwear": "outerwear",
              "long_sleeved_outwear": "outerwear", "shorts": "lower", "trousers": "lower",
              "skirt": "lower", "short_sleeved_dress": "dress", "long_sleeved_dress": "dress",
              "vest_dress": "dress", "sling_dress": "dress"}
    assert DEFAULT_CLASS_GROUPS == expect


# --- files, layout, receipt ----------------------------------------------------------------


def test_files_in_manifest_layout_with_dev_receipt(weights_dir):
    receipt = load_receipt(weights_dir)
    sizes = {}
    for key in ("garments-yolov8s-seg", "sam-vit-b", "faces-scrfd"):
        r = resolve(key, weights_dir, verify=True)  # missing file/receipt, bad sha -> raises
        assert r.path == weights_dir / MANIFEST.models[key].path and r.path.is_file()
        entry = receipt.models[key]
        assert entry.dev and entry.source == "dev-random"
        [f] = entry.files
        data = r.path.read_bytes()
        assert f == {"path": r.path.name, "sha256": hashlib.sha256(data).hexdigest(),
                     "size": len(data)}
        sizes[key] = len(data)
    assert sizes["garments-yolov8s-seg"] < 1.5e6
    assert sizes["faces-scrfd"] < 100e3
    assert receipt.models["sam-vit-b"].arch["encoder_embed_dim"] < 768
    assert receipt.models["garments-yolov8s-seg"].revision.endswith("bias-trousers")


def test_yolo_reloads_as_deepfashion2_segmenter(weights_dir):
    from ultralytics import YOLO

    from weights.tiny.masking import DEEPFASHION2_CLASSES

    m = YOLO(str(weights_dir / MANIFEST.models["garments-yolov8s-seg"].path))
    assert m.task == "segment"
    assert m.names == dict(enumerate(DEEPFASHION2_CLASSES))


def test_yolo_bias_class_must_be_a_deepfashion2_class(tmp_path):
    from weights.tiny.masking import write_tiny_yolo

    with pytest.raises(ValueError):
        write_tiny_yolo(tmp_path, bias_class="hat")
    assert not (tmp_path / "receipt.json").exists()


# --- garments ------------------------------------------------------------------------------


def test_random_yolo_detects_nothing(plain_yolo, images):
    from core.masking.garments import GarmentDetector

    det = GarmentDetector.load(plain_yolo, conf=0.01)
    assert det.detect(images["bus"]) == []


@pytest.mark.parametrize("name", ["bus", "zidane", "astronaut"])
def test_biased_yolo_detects_its_class_on_real_photos(garments, images, name):
    img = images[name]
    h, w = img.shape[:2]
    dets = garments.detect(img)
    assert len(dets) == 1  # the rig singles out the top-left stride-32 anchor
    d = dets[0]
    assert (d.label, d.class_id, d.group) == ("trousers", 7, "lower")
    assert isinstance(d.score, float) and 0.99 < d.score <= 1.0
    # the rig's box: letterboxed [0, 0, 496, 496] at imgsz 640 -> 0.775 x the long side
    assert all(isinstance(v, float) for v in d.box)
    x0, y0, x1, y1 = d.box
    reach = 496 / 640 * max(h, w)
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert (x0, y0) == (0.0, 0.0)
    assert x1 == pytest.approx(min(w, reach), abs=2)
    assert y1 == pytest.approx(min(h, reach), abs=2)
    assert d.mask.shape == (h, w) and d.mask.dtype == bool
    box_mask = np.zeros((h, w), bool)
    box_mask[:round(y1), :round(x1)] = True
    iou = (d.mask & box_mask).sum() / (d.mask | box_mask).sum()
    assert iou > 0.98  # the rig's mask fills its box, at the original size


def test_garment_detector_feeds_ultralytics_bgr_at_original_size(garments, images, monkeypatch):
    seen = {}
    real = garments.model.predict

    def spy(source, **kw):
        seen["source"], seen["kw"] = source, kw
        return real(source, **kw)

    monkeypatch.setattr(garments.model, "predict", spy)
    img = images["zidane"]
    garments.detect(img)
    assert np.array_equal(seen["source"], img[..., ::-1])  # ultralytics reads arrays as BGR
    assert seen["kw"]["retina_masks"] is True


def test_garment_detector_keeps_no_photo_after_a_call(garments, images, monkeypatch):
    """Ultralytics' predictor would keep its last batch and results, each with the photo
    (a full-size frame held between jobs); none of it outlives the call."""
    import weakref

    seen = []
    real = garments.model.predict

    def spy(source, **kw):
        seen.append(weakref.ref(source))  # the BGR copy the detector hands over
        return real(source, **kw)

    monkeypatch.setattr(garments.model, "predict", spy)
    garments.detect(images["zidane"])
    import gc

    gc.collect()
    assert seen and seen[0]() is None


def test_class_map_is_configuration(weights_dir, images):
    from core.masking.garments import DEFAULT_CLASS_GROUPS, GarmentDetector

    path = weights_dir / MANIFEST.models["garments-yolov8s-seg"].path
    det = GarmentDetector.load(path, class_map={**DEFAULT_CLASS_GROUPS, "trousers": "dress"},
                               warmup=False)
    assert det.detect(images["astronaut"])[0].group == "dress"
    det = GarmentDetector.load(path, class_map={"skirt": "lower"}, warmup=False)
    assert det.detect(images["astronaut"])[0].group is None
    with pytest.raises(ValueError):
        GarmentDetector.load(path, class_map={"trousers": "hats"})


def test_garment_detector_input_and_missing_file(garments, tmp_path):
    from core.masking.garments import GarmentDetector

    with pytest.raises(ValueError):
        garments.detect(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError):
        garments.detect(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ModelMissing):
        GarmentDetector.load(tmp_path / "nope.pt")


# --- SAM -----------------------------------------------------------------------------------


def test_sam_refine_one_best_mask_per_box_one_encoder_run(sam, images, monkeypatch):
    """One encoder run; per box the mask and score of the best of SAM's 3 candidates, equal to
    what segment-anything's ``predict_torch`` gives (refine upsamples only that one)."""
    import torch

    img = images["astronaut"]
    h, w = img.shape[:2]
    calls = {"set_image": 0}
    real_set_image = sam.predictor.set_image

    def spy_set_image(*a, **k):
        calls["set_image"] += 1
        return real_set_image(*a, **k)

    monkeypatch.setattr(sam.predictor, "set_image", spy_set_image)
    boxes = [(40.0, 30.0, 300.0, 400.0), (150.0, 0.0, 512.0, 512.0), (-20.0, 100.0, 90.0, 600.0)]
    out = sam.refine(img, boxes)
    assert calls["set_image"] == 1
    assert len(out) == len(boxes)
    # the reference: all 3 candidates at full size from predict_torch, boxes clipped likewise
    clipped = np.asarray(boxes)
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, h)
    with torch.inference_mode():
        real_set_image(img, image_format="RGB")
        tb = sam.predictor.transform.apply_boxes_torch(
            torch.as_tensor(clipped, dtype=torch.float32), (h, w))
        masks, ious, _ = sam.predictor.predict_torch(point_coords=None, point_labels=None,
                                                     boxes=tb, multimask_output=True)
        sam.predictor.reset_image()
    masks, ious = masks.cpu().numpy(), ious.cpu().numpy()
    assert ious.shape == (3, 3) and masks.shape == (3, 3, h, w)  # 3 candidates per box
    for i, (mask, score) in enumerate(out):
        assert mask.shape == (h, w) and mask.dtype == bool
        assert isinstance(score, float)
        best = int(np.argmax(ious[i]))
        assert score == pytest.approx(float(ious[i, best]))
        assert np.array_equal(mask, masks[i, best])
    assert sam.refine(img, []) == [] and calls["set_image"] == 1  # no boxes: no encoder run


def test_sam_needs_the_receipt_arch(weights_dir, tmp_path):
    from core.masking.sam import SamRefiner
    from weights.tiny.masking import TINY_SAM_ARCH

    path = weights_dir / MANIFEST.models["sam-vit-b"].path
    with pytest.raises(ValueError):
        SamRefiner.load(path, arch_overrides={**TINY_SAM_ARCH, "encoder_depth": 3})
    with pytest.raises(ValueError):
        SamRefiner.load(path, arch_overrides={"embed_dim": 32})
    with pytest.raises(ModelMissing):
        SamRefiner.load(tmp_path / "none.pth")


# --- faces ---------------------------------------------------------------------------------


def _paint(img: np.ndarray, box: tuple[int, int, int, int], rgb) -> np.ndarray:
    out = img.copy()
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = rgb
    return out


def test_scrfd_routes_to_scrfd_through_face_analysis(faces):
    from insightface.model_zoo.scrfd import SCRFD

    assert isinstance(faces.app.det_model, SCRFD)
    assert list(faces.app.models) == ["detection"]


@pytest.mark.parametrize("name,box", [("zidane", (600, 100, 760, 300)),
                                      ("bus", (330, 180, 470, 360))])
def test_face_detector_reports_the_marked_face(faces, images, name, box):
    from weights.tiny.masking import DEFAULT_FACE_MARKER_RGB

    img = images[name]
    h, w = img.shape[:2]
    assert faces.detect(img) == []  # nothing marked, no face
    found = faces.detect(_paint(img, box, DEFAULT_FACE_MARKER_RGB))
    assert len(found) == 1
    f = found[0]
    assert isinstance(f.score, float) and f.score == pytest.approx(0.95, abs=1e-4)
    assert all(isinstance(v, float) for v in f.box)
    assert 0 <= f.box[0] < f.box[2] <= w and 0 <= f.box[1] < f.box[3] <= h
    tol = max(h, w) / 640 + 1.5  # one detector-input px at det_size 640, plus resize blending
    assert f.box == pytest.approx(tuple(float(v) for v in box), abs=tol)


def test_face_detector_expects_rgb(faces, images):
    from weights.tiny.masking import DEFAULT_FACE_MARKER_RGB

    swapped = DEFAULT_FACE_MARKER_RGB[::-1]  # what an RGB/BGR mix-up would see
    assert faces.detect(_paint(images["zidane"], (600, 100, 760, 300), swapped)) == []


def test_face_detector_multiscale_and_missing_pack(weights_dir, images, tmp_path):
    from core.masking.faces import ScrfdFaceDetector as FaceDetector
    from weights.tiny.masking import DEFAULT_FACE_MARKER_RGB

    det = FaceDetector.load(weights_dir / "insightface", "buffalo_l", det_size=None)
    assert det.app.det_model.input_sizes == [(128, 128), (640, 640)]
    box = (600, 100, 760, 300)
    [f] = det.detect(_paint(images["zidane"], box, DEFAULT_FACE_MARKER_RGB))
    assert f.box == pytest.approx(tuple(float(v) for v in box), abs=1280 / 128 * 2)
    with pytest.raises(ModelMissing):  # checked before FaceAnalysis could try a download
        FaceDetector.load(tmp_path / "insightface", "buffalo_l")


def test_face_detector_opens_no_session_during_jobs(tmp_path_factory, monkeypatch):
    """insightface opens ONNX sessions lazily per resolution: all must exist after load."""
    import onnxruntime

    from core.masking.faces import ScrfdFaceDetector as FaceDetector
    from weights.tiny.faces import write_tiny_scrfd

    d = tmp_path_factory.mktemp("scrfd-sessions")
    write_tiny_scrfd(d)
    det = FaceDetector.load(d / "insightface", "buffalo_l")
    opened = []
    real = onnxruntime.InferenceSession.__init__
    monkeypatch.setattr(onnxruntime.InferenceSession, "__init__",
                        lambda self, *a, **k: (opened.append(a), real(self, *a, **k))[1])
    for shape in [(300, 400, 3), (1080, 810, 3), (720, 1280, 3)]:
        det.detect(np.zeros(shape, np.uint8))
    assert opened == []
