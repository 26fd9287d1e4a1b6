"""Outfit swap end to end: a reference garment (IP-Adapter), pose lock (OpenPose ControlNet) and a
gallery of outputs, through the RunPod handler, on real photos, with the tiny dev models loaded
through diffusers' own loaders (``load_ip_adapter``, ``ControlNetModel.from_pretrained``) and the
real MediaPipe pose model."""

from __future__ import annotations

import copy
import hashlib
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from core.openpose import (COLOURS, LIMB_SHADE, LIMBS, OPENPOSE_KEYPOINTS, draw_openpose,
                           openpose_keypoints)
from core.imageio import decode_image
from core.masking.post import dilate
from tests.conftest import BUCKET, _asset, data_url, png_bytes

STEPS = 2
#: astronaut.png (512 x 512): her suit's chest and arms, a box to repaint
BOX = (120, 300, 420, 500)
DILATE, FEATHER = 4, 4


def _mask(w: int, h: int, box=BOX) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 255
    return m


@pytest.fixture(scope="module")
def astronaut(photos) -> bytes:
    return photos["astronaut"].read_bytes()


@pytest.fixture(scope="module")
def shop_photo(photos) -> bytes:
    """The 'shop photo' of a garment: bus.jpg (a man in a dark coat)."""
    return photos["bus"].read_bytes()


def _job(image: bytes, **kw) -> dict:
    h, w = decode_image(image).shape[:2]
    inp = {"image": data_url(image, "image/png"), "mask": data_url(png_bytes(_mask(w, h)), "image/png"),
           "prompt": "a red leather jacket", "num_inference_steps": STEPS, "seed": 77,
           "protect_face": False, "protect_hands": False, "mask_dilate_px": DILATE,
           "mask_feather_px": FEATHER}
    inp.update(kw)
    return inp


def _pixels(s3, art: dict) -> np.ndarray:
    body = s3.get_object(Bucket=BUCKET, Key=art["key"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == art["sha256"]
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def _run(handler, job_id: str, inp: dict) -> dict:
    out = handler({"id": job_id, "input": inp})
    assert "error" not in out, out
    return out


def _outside_band_unchanged(result: np.ndarray, original: np.ndarray) -> None:
    band = dilate(_mask(original.shape[1], original.shape[0]) > 0, DILATE + FEATHER)
    assert np.array_equal(result[~band], original[~band])


# ------------------------------------------------------------------ the pose hint
@pytest.mark.parametrize("photo", ["grace_hopper", "astronaut"])
def test_pose_image_is_drawn_at_the_landmarks(model_set, photo, tmp_path):
    """OpenPose's 18 keypoints from MediaPipe's 33 land on the person (the nose on the face, the
    neck between the shoulders, her right shoulder on the image's left), and the hint shows each
    visible keypoint as a disc of its OpenPose colour and each limb in 60 % of its colour on
    black."""
    path = (_asset("matplotlib", "mpl-data/sample_data/grace_hopper.jpg") if photo == "grace_hopper"
            else _asset("skimage", "data/astronaut.png"))
    rgb = decode_image(path.read_bytes())
    pose = model_set.pose.estimate(rgb)
    assert pose is not None
    k = openpose_keypoints(pose.keypoints)
    names = {n: i for i, n in enumerate(OPENPOSE_KEYPOINTS)}
    vis = k[:, 2] > 0
    for n in ("nose", "neck", "right_shoulder", "left_shoulder", "right_eye", "left_eye"):
        assert vis[names[n]], n
    # the face detector's box holds the nose and both eyes
    face = max((f for d in model_set.face_detectors for f in d.detect(rgb)),
               key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    x0, y0, x1, y1 = face.box
    for n in ("nose", "right_eye", "left_eye"):
        x, y = k[names[n], :2]
        assert x0 <= x <= x1 and y0 <= y <= y1, (n, (x, y), face.box)
    rs, ls, neck = k[names["right_shoulder"]], k[names["left_shoulder"]], k[names["neck"]]
    assert rs[0] < ls[0]  # facing the camera: her right shoulder is on the image's left
    assert np.allclose(neck[:2], (rs[:2] + ls[:2]) / 2)
    assert rs[1] > k[names["nose"], 1] and ls[1] > k[names["nose"], 1]  # shoulders below the nose

    h, w = rgb.shape[:2]
    hint = draw_openpose(k, w, h)
    assert hint.shape == (h, w, 3) and hint.dtype == np.uint8
    for i in np.flatnonzero(vis):
        x, y = (int(v) for v in k[i, :2])
        if not (0 <= x < w and 0 <= y < h):
            continue
        # its own disc, or the disc of a later keypoint drawn over it within 2 radii
        later = [j for j in range(i, 18) if vis[j] and np.hypot(*(k[j, :2] - k[i, :2])) <= 8]
        assert any(tuple(hint[y, x]) == COLOURS[j] for j in later), (OPENPOSE_KEYPOINTS[i], hint[y, x])
    # the neck -> right shoulder limb, at 60 % of its colour, half-way between its ends
    (a, b), colour = LIMBS[0], COLOURS[0]
    mx, my = ((k[a - 1, :2] + k[b - 1, :2]) / 2).astype(int)
    assert tuple(hint[my, mx]) == tuple(int(c * LIMB_SHADE) for c in colour)
    # black background: nothing is drawn away from the limbs and discs
    near = np.zeros((h, w), np.uint8)
    for (p, q) in LIMBS:
        if vis[p - 1] and vis[q - 1]:
            cv2.line(near, tuple(int(v) for v in k[p - 1, :2]), tuple(int(v) for v in k[q - 1, :2]),
                     1, thickness=2 * 4 + 4)
    for x, y, v in k[vis]:
        cv2.circle(near, (int(x), int(y)), 4 + 2, 1, thickness=-1)
    assert (near == 0).mean() > 0.8 and not hint[near == 0].any()
    Image.fromarray(hint).save(tmp_path / "hint.png")


# ------------------------------------------------------------------ end to end
def test_reference_garment_changes_the_repaint_and_only_inside_the_band(
        runpod_handler, s3, astronaut, shop_photo):
    original = decode_image(astronaut)
    plain = _run(runpod_handler, "g-plain", _job(astronaut))
    with_g = _run(runpod_handler, "g-ref", _job(astronaut, garment_image=data_url(shop_photo),
                                                 garment_scale=1.0))
    again = _run(runpod_handler, "g-ref-again",
                 _job(astronaut, garment_image=data_url(shop_photo), garment_scale=1.0))
    a, b = _pixels(s3, plain["image"]), _pixels(s3, with_g["image"])
    assert not np.array_equal(a, b)  # the garment steered the repaint (same seed)
    _outside_band_unchanged(b, original)
    assert again["image"]["sha256"] == with_g["image"]["sha256"]  # same inputs, same bytes
    g = with_g["conditioning"]["garment"]
    # dev weights: the garment detector finds nothing, so the whole photo is the reference
    assert g["source"] == "whole_photo" and "no garment found" in g["reason"]
    assert g["size"] == [810, 1080] and g["scale"] == 1.0
    assert "ip-adapter-sd15" in [m["key"] for m in with_g["models"]], with_g["timings_ms"]
    assert plain.get("conditioning") is None
    assert "ip-adapter-sd15" not in [m["key"] for m in plain["models"]]


def test_pose_lock_changes_the_repaint_and_only_inside_the_band(runpod_handler, s3, astronaut):
    original = decode_image(astronaut)
    plain = _run(runpod_handler, "p-plain", _job(astronaut))
    posed = _run(runpod_handler, "p-pose", _job(astronaut, control="pose", control_scale=1.0))
    again = _run(runpod_handler, "p-pose-again", _job(astronaut, control="pose"))
    b = _pixels(s3, posed["image"])
    assert not np.array_equal(_pixels(s3, plain["image"]), b)
    _outside_band_unchanged(b, original)
    assert again["image"]["sha256"] == posed["image"]["sha256"]
    c = posed["conditioning"]["control"]
    assert c["type"] == "pose" and len(c["keypoints"]) == 18
    assert "controlnet-openpose-sd15" in [m["key"] for m in posed["models"]]
    assert "pose-mediapipe-full" in [m["key"] for m in posed["models"]]


def test_gallery_of_three_stores_three_distinct_images_with_their_seeds(
        runpod_handler, s3, astronaut):
    original = decode_image(astronaut)
    out = _run(runpod_handler, "gal-3", _job(astronaut, num_outputs=3, seed=500))
    assert out["seeds"] == [500, 501, 502] and out["seed"] == 500
    assert len(out["images"]) == 3 and out["image"] == out["images"][0]
    keys = [a["key"] for a in out["images"]]
    shas = [a["sha256"] for a in out["images"]]
    assert len(set(keys)) == 3 and len(set(shas)) == 3
    for art in out["images"]:
        assert art["key"].startswith("maskpaint/gal-3/result-")
        _outside_band_unchanged(_pixels(s3, art), original)
    # redelivered: the recorded gallery, same keys in the same order, no new objects
    before = s3.list_objects_v2(Bucket=BUCKET, Prefix="maskpaint/gal-3/")["KeyCount"]
    again = _run(runpod_handler, "gal-3", _job(astronaut, num_outputs=3, seed=500))
    assert [a["key"] for a in again["images"]] == keys and again["seeds"] == [500, 501, 502]
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="maskpaint/gal-3/")["KeyCount"] == before
    # the first of a gallery is the single job with that seed
    single = _run(runpod_handler, "gal-1", _job(astronaut, seed=500))
    assert single["images"] == [single["image"]] and single["seeds"] == [500]


def test_outfit_swap_job_garment_pose_and_gallery(runpod_handler, s3, astronaut, shop_photo):
    """The issue's "done": garment_image + control pose + num_outputs 3 in one job, no mask given
    (the automatic mask), through the RunPod handler."""
    inp = _job(astronaut, garment_image=data_url(shop_photo), control="pose", num_outputs=3,
               protect_face=True, protect_hands=True)
    del inp["mask"]
    out = _run(runpod_handler, "outfit", inp)
    assert len(out["images"]) == 3 and len({a["sha256"] for a in out["images"]}) == 3
    assert out["seeds"] == [77, 78, 79]
    keys = [m["key"] for m in out["models"]]
    assert {"sd15-inpaint", "ip-adapter-sd15", "controlnet-openpose-sd15"} <= set(keys)
    assert out["conditioning"]["garment"]["source"] == "whole_photo"
    assert out["conditioning"]["control"]["type"] == "pose"
    assert out["mask_info"]["fallback"] == "pose"  # the pose ran once, in masking, and was reused
    assert {"conditioning", "inpaint"} <= set(out["timings_ms"])


def test_sdxl_takes_garment_and_pose(runpod_handler, s3, astronaut, shop_photo):
    base = _run(runpod_handler, "x-plain", _job(astronaut, model="sdxl-inpaint"))
    out = _run(runpod_handler, "x-both", _job(astronaut, model="sdxl-inpaint",
                                              garment_image=data_url(shop_photo), control="pose"))
    assert {"ip-adapter-sdxl-vith", "controlnet-openpose-sdxl"} <= {m["key"] for m in out["models"]}
    b = _pixels(s3, out["image"])
    assert not np.array_equal(_pixels(s3, base["image"]), b)
    _outside_band_unchanged(b, decode_image(astronaut))


# ------------------------------------------------------------------ bad input
def test_garment_image_that_is_not_an_image(runpod_handler, astronaut):
    out = runpod_handler({"id": "bad-g", "input": _job(
        astronaut, garment_image=data_url(b"this is not a picture at all", "image/png"))})
    assert out["error_code"] == "invalid_image" and out["field"] == "garment_image"
    assert "picture" not in out["error"]


def test_garment_image_obeys_the_input_rules(runpod_handler, astronaut):
    out = runpod_handler({"id": "bad-g-s3", "input": _job(
        astronaut, garment_image=f"s3://{BUCKET}/maskpaint/someone-else/result.png")})
    assert out["error_code"] == "blocked_url" and out["field"] == "garment_image"
    out = runpod_handler({"id": "bad-g-url", "input": _job(
        astronaut, garment_image="http://169.254.169.254/latest/meta-data/")})
    assert out["error_code"] == "blocked_url" and out["field"] == "garment_image"


@pytest.mark.parametrize("n", [0, 5])
def test_num_outputs_out_of_range(runpod_handler, astronaut, n):
    out = runpod_handler({"id": f"bad-n{n}", "input": _job(astronaut, num_outputs=n)})
    assert out["error_code"] == "invalid_input" and out["field"] == "num_outputs"


def test_worker_without_the_weights_names_them(model_set, settings_factory, astronaut):
    from core.pipeline import Worker
    from core.storage import make_storage
    from handlers.runpod import make_handler

    bare = copy.copy(model_set)
    bare.conditioning = {}
    settings = settings_factory()
    handler = make_handler(Worker(settings, bare, make_storage(settings, None)))
    out = handler({"id": "no-ip", "input": _job(astronaut, garment_image=data_url(astronaut))})
    assert out["error_code"] == "model_not_found" and out["field"] == "garment_image"
    assert "ip-adapter-sd15" in out["error"]
    out = handler({"id": "no-cn", "input": _job(astronaut, control="pose")})
    assert out["error_code"] == "model_not_found" and out["field"] == "control"
    assert "controlnet-openpose-sd15" in out["error"]


def test_garment_is_cut_out_where_the_detector_finds_it(photos):
    """With real garment weights the detector finds the garment in a shop photo: the reference is
    that box (plus 5 %), of a requested group first; a detector failure falls back to the whole
    photo and says why. (The dev detector finds nothing; a stand-in detector gives the box.)"""
    from core.conditioning import garment_reference
    from core.masking.garments import GarmentDetection

    rgb = decode_image(photos["bus"].read_bytes())
    h, w = rgb.shape[:2]

    class Found:
        def detect(self, image):
            m = np.zeros(image.shape[:2], bool)
            return [GarmentDetection(label="trousers", class_id=8, group="lower", score=0.9,
                                     box=(300.0, 700.0, 500.0, 1000.0), mask=m),
                    GarmentDetection(label="long_sleeved_outwear", class_id=3, group="outerwear",
                                     score=0.6, box=(100.0, 200.0, 300.0, 600.0), mask=m)]

    crop, facts = garment_reference(Found(), rgb, ["outerwear"])
    assert facts["source"] == "detected" and facts["label"] == "long_sleeved_outwear"
    assert facts["box"] == [80.0, 180.0, 320.0, 620.0]  # 5 % of the longer side (400 px)
    assert np.array_equal(crop, rgb[180:620, 80:320])
    _, facts = garment_reference(Found(), rgb, ["dress"])  # none of the group: the best of any
    assert facts["label"] == "trousers"

    class Broken:
        def detect(self, image):
            raise RuntimeError("boom")

    crop, facts = garment_reference(Broken(), rgb, ["upper"])
    assert crop is rgb and facts["source"] == "whole_photo" and "RuntimeError" in facts["reason"]
    crop, facts = garment_reference(None, rgb, ["upper"])
    assert crop is rgb and facts["box"] == [0.0, 0.0, float(w), float(h)]
