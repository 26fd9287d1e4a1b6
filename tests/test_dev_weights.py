"""Dev weights follow the manifest: a real model baked from an older pin is baked again."""

from __future__ import annotations

import json
import shutil

from weights.tiny import ensure_dev_weights, real_dev_keys


def test_a_real_dev_model_whose_pinned_files_changed_is_baked_again(dev_weights, tmp_path):
    out = tmp_path / "w"
    for real in ("mediapipe", "moderation"):  # every real dev model (real_dev_keys)
        shutil.copytree(dev_weights / real, out / real)
    receipt = json.loads((dev_weights / "receipt.json").read_text())
    receipt["models"] = {k: v for k, v in receipt["models"].items() if k in real_dev_keys()}
    # as baked before the hands entry gained its lite palm model
    receipt["models"]["hands-palm-full"]["files"] = [
        f for f in receipt["models"]["hands-palm-full"]["files"]
        if f["path"] != "palm_detection_lite.tflite"]
    (out / "mediapipe" / "hands" / "palm_detection_lite.tflite").unlink()
    (out / "receipt.json").write_text(json.dumps(receipt))

    assert ensure_dev_weights(out, real_dev_keys(), log=lambda *a: None) == ["hands-palm-full"]
    assert (out / "mediapipe" / "hands" / "palm_detection_lite.tflite").is_file()
    assert ensure_dev_weights(out, real_dev_keys(), log=lambda *a: None) == []  # now current


def test_dev_weights_carry_the_real_moderation_models(dev_weights):
    """The image moderation classifiers are real in the dev weights too (a random one would
    block nothing and prove nothing)."""
    receipt = json.loads((dev_weights / "receipt.json").read_text())["models"]
    for key in ("moderation-nudenet", "moderation-opennsfw"):
        assert key in real_dev_keys() and receipt[key]["dev"] is False, key
    assert (dev_weights / "moderation" / "nudenet-320n.onnx").stat().st_size == 12_150_158
    assert (dev_weights / "moderation" / "open-nsfw.onnx").stat().st_size == 23_590_724
