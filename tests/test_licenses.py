"""Commercial profiles: every weight and runtime in them commercially usable, the bake's
``--commercial`` refusal naming what is not, and docs/licenses.md generated from the manifest.
Offline; the real MediaPipe part of a commercial profile bakes from the cached pinned wheel."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from weights.bake import NotCommercialError, bake, main
from weights.licenses import (RUNTIMES, commercial_problems, is_commercial_profile,
                              licenses_markdown)
from weights.manifest import ModelKind, load_manifest, load_receipt

REPO = Path(__file__).resolve().parents[1]
COMMERCIAL = ("sd15-commercial", "sdxl-commercial", "full-commercial", "sd15-commercial-outfit",
              "sdxl-commercial-outfit", "full-commercial-outfit")
#: Kinds a commercial profile must never carry: their runtime (ultralytics) or every model of
#: them (InsightFace packs, NudeNet's AGPL YOLOv8) is non-commercial.
BANNED_KINDS = {"yolo_seg", "insightface_det", "nudenet_onnx"}


@pytest.fixture(scope="module")
def manifest():
    return load_manifest()


def test_commercial_profiles_hold_only_commercial_weights_and_runtimes(manifest):
    assert [p for p in manifest.profiles() if is_commercial_profile(p)] == sorted(COMMERCIAL)
    for profile in COMMERCIAL:
        keys = manifest.profile(profile)
        assert commercial_problems(manifest, keys) == [], profile
        kinds = {manifest.models[k].kind for k in keys}
        assert not kinds & BANNED_KINDS, profile
        # what a worker needs to protect people and mask garments without the others
        assert {"diffusers_inpaint", "mediapipe_face", "mediapipe_palm", "mediapipe_pose",
                "sam"} <= kinds, profile
        assert ("ip_adapter" in kinds) == profile.endswith("-outfit"), profile
    # the shipped non-commercial profiles are reported as such, naming both culprits
    problems = "\n".join(commercial_problems(manifest, manifest.profile("sd15")))
    assert "'garments-yolov8s-seg'" in problems and "ultralytics: AGPL-3.0" in problems
    assert "'faces-scrfd'" in problems


def test_a_non_commercial_model_entering_a_commercial_profile_is_caught(manifest):
    m = manifest.model_copy(deep=True)
    m.models["faces-scrfd"].profiles.append("sd15-commercial")
    assert "model 'faces-scrfd'" in commercial_problems(m, m.profile("sd15-commercial"))[0]
    # commercial weights on an AGPL runtime are refused too
    m = manifest.model_copy(deep=True)
    m.models["garments-yolov8s-seg"].commercial_use = True
    m.models["garments-yolov8s-seg"].profiles.append("sd15-commercial")
    [line] = commercial_problems(m, m.profile("sd15-commercial"))
    assert "'garments-yolov8s-seg'" in line and "runtime ultralytics: AGPL-3.0" in line


def test_every_model_kind_has_its_runtime_licences():
    assert set(typing.get_args(ModelKind)) <= set(RUNTIMES)


def test_bake_commercial_refuses_before_any_download(manifest, tmp_path, capsys):
    out = tmp_path / "w"
    with pytest.raises(NotCommercialError) as e:
        bake(manifest, manifest.profile("sd15"), out, mirror=tmp_path / "empty-mirror",
             commercial=True, log=lambda _m: None)
    assert "'garments-yolov8s-seg'" in str(e.value) and "'faces-scrfd'" in str(e.value)
    assert not out.exists()
    assert main(["--profile", "sd15", "--commercial", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "refusing to bake for commercial use" in err and "'faces-scrfd'" in err
    assert not out.exists()
    # alone, the flag checks every commercial profile
    assert main(["--commercial"]) == 0
    assert capsys.readouterr().out.count(": ok") == len(COMMERCIAL)


def test_bake_commercial_profile(manifest, tmp_path, capsys):
    """``--profile sd15-commercial --commercial`` bakes: the dry run lists every pinned file, and
    the real MediaPipe models (the part that fits offline) bake from the pinned wheel."""
    assert main(["--profile", "sd15-commercial", "--commercial", "--dry-run"]) == 0
    listed = capsys.readouterr().out
    for key in manifest.profile("sd15-commercial"):
        for f in manifest.models[key].source.files:
            assert f"{manifest.models[key].destination(f)}  sha256 {f.sha256}" in listed
    mediapipe = [k for k in manifest.profile("sd15-commercial")
                 if manifest.models[k].kind.startswith("mediapipe_")]
    out = tmp_path / "w"
    assert main(["--profile", "sd15-commercial", "--commercial", "--only", *mediapipe,
                 "--out", str(out)]) == 0
    receipt = load_receipt(out).models
    assert sorted(receipt) == sorted(mediapipe) and not any(r.dev for r in receipt.values())


def test_docs_licence_table_is_current(manifest, capsys):
    doc = (REPO / "docs" / "licenses.md").read_text()
    assert doc == licenses_markdown(manifest), (
        "docs/licenses.md is stale: python -m weights.bake --licenses > docs/licenses.md")
    assert main(["--licenses"]) == 0 and capsys.readouterr().out == doc
    # one table per profile, with a verdict a business can read
    for profile in manifest.profiles():
        assert f"### `{profile}`" in doc
    assert "| `sd15-commercial` | yes |" in doc and "| `sd15` | **no** |" in doc
    row = next(line for line in doc.splitlines() if line.startswith("| `garments-yolov8s-seg`"))
    assert "ultralytics (AGPL-3.0)" in row and row.endswith("| **no** |")


def test_manifest_json_round_trips_the_profiles():
    raw = json.loads((REPO / "weights" / "manifest.json").read_text())
    for key, e in raw["models"].items():
        assert len(set(e["profiles"])) == len(e["profiles"]), key


def test_a_commercial_profile_name_implies_the_check(tmp_path, capsys):
    """The Dockerfile and the Modal image bake ``--profile <name>`` without the flag: a
    commercial profile that gained a non-commercial model is refused all the same."""
    raw = json.loads((REPO / "weights" / "manifest.json").read_text())
    raw["models"]["faces-scrfd"]["profiles"].append("sd15-commercial")
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(raw))
    out = tmp_path / "w"
    assert main(["--manifest", str(path), "--profile", "sd15-commercial", "--out", str(out)]) == 1
    assert "'faces-scrfd'" in capsys.readouterr().err and not out.exists()
