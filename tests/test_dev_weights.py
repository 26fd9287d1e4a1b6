"""Dev weights follow the manifest: a real model baked from an older pin is baked again."""

from __future__ import annotations

import json
import shutil

from weights.tiny import ensure_dev_weights, real_dev_keys


def test_a_real_dev_model_whose_pinned_files_changed_is_baked_again(dev_weights, tmp_path):
    out = tmp_path / "w"
    shutil.copytree(dev_weights / "mediapipe", out / "mediapipe")
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
