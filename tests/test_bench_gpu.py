"""The GPU bench runs end to end on CPU with the dev weights (``--tiny --device cpu``), so the
script cannot rot between GPU runs: every phase's child process, the job matrix through the
RunPod handler, the anchor, the JSON and the Markdown section it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_gpu_bench_tiny_on_cpu_writes_json_and_results_section(dev_weights, tmp_path):
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Bench results\n\nkept\n\n## GPU (`python -m bench.gpu`)\n\nold\n\n"
                          "## After\n\nkept too\n")
    env = {**os.environ, "MASKPAINT_TEST_WEIGHTS_DIR": str(dev_weights)}
    r = subprocess.run([sys.executable, "-m", "bench.gpu", "--tiny", "--device", "cpu",
                        "--weights", str(dev_weights), "--out", str(tmp_path / "out"),
                        "--results-md", str(results_md), "--phases", "floor", "cold", "main"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert res["mode"] == "tiny"
    for phase in ("floor", "cold", "main"):
        assert res["phases"][phase]["rc"] == 0, res["phases"][phase]
    assert res["floor"]["read_bytes"] > 1_000_000  # the weights' bytes, through the symlinks
    jobs = res["main"]["jobs"]
    cells = {j["cell"] for j in jobs}
    assert {"sd15-inpaint/0.9MP/plain", "sd15-inpaint/0.9MP/garment",
            "sdxl-inpaint/0.9MP/plain"} <= cells
    assert all("error" not in j and j["forward_ms"] > 0 for j in jobs), jobs
    assert res["main"]["anchor"][0]["median_ms"] > 0
    assert {b["tag"] for b in res["main"]["buckets"]} == {"buckets-off", "buckets-on"}
    assert res["cold"]["jobs"][0]["timings_ms"]["total"] > 0
    md = results_md.read_text()
    assert "kept\n" in md and "## After\n\nkept too" in md and "\nold\n" not in md
    assert md.count("## GPU") == 1 and "| target | measured | limit | status |" in md
    assert "sd15-inpaint/0.9MP/garment" in (tmp_path / "out" / "gpu.md").read_text()


def test_real_size_writers_make_the_baked_layout_the_worker_loads(tmp_path, monkeypatch):
    """bench/gpu_weights.py's code path (pinned SD 1.5 configs written byte for byte, SDXL,
    IP-Adapters with a given image encoder, ControlNets by ``from_unet``) with every size shrunk
    so it runs here; the worker's own loaders then load all six models and their add-ons."""
    from bench import gpu_weights as gw
    from core.models import ModelSet
    from core.settings import Settings
    from weights.tiny.conditioning import TINY_IMAGE_ENCODER

    pins = {k: json.loads(v) for k, v in gw.sd15_pins().items()}
    pins["unet/config.json"].update(block_out_channels=[32, 64, 64, 64], layers_per_block=1,
                                    cross_attention_dim=32, sample_size=8)
    pins["vae/config.json"].update(block_out_channels=[32, 32, 64, 64], layers_per_block=1,
                                   sample_size=64)
    pins["text_encoder/config.json"].update(hidden_size=32, intermediate_size=37,
                                            num_attention_heads=4, num_hidden_layers=2,
                                            projection_dim=32)
    shrunk = {k: (json.dumps(v, indent=2) + "\n").encode() for k, v in pins.items()}
    monkeypatch.setattr(gw, "sd15_pins", lambda: shrunk)
    small = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                 projection_dim=32)
    monkeypatch.setattr(gw, "CLIP_L", {**gw.CLIP_L, **small})
    monkeypatch.setattr(gw, "CLIP_BIGG", {**gw.CLIP_BIGG, **small})
    monkeypatch.setattr(gw, "SDXL_UNET", {
        **gw.SDXL_UNET, "block_out_channels": [32, 64, 64], "attention_head_dim": [2, 4, 4],
        "transformer_layers_per_block": [1, 1, 1], "layers_per_block": 1,
        "cross_attention_dim": 64, "addition_time_embed_dim": 8, "sample_size": 8,
        "projection_class_embeddings_input_dim": 6 * 8 + 32})
    monkeypatch.setattr(gw, "SDXL_VAE", {**gw.SDXL_VAE, "block_out_channels": [32, 32, 64, 64],
                                         "layers_per_block": 1, "sample_size": 64})
    monkeypatch.setattr(gw, "image_encoder_config", lambda: TINY_IMAGE_ENCODER)

    took = gw.write_real(tmp_path, list(gw.REAL_KEYS), "cpu", log=lambda _m: None)
    assert list(took) == list(gw.REAL_KEYS)
    unet_cfg = tmp_path / "diffusers/sd15-inpaint/unet/config.json"
    assert unet_cfg.read_bytes() == shrunk["unet/config.json"]  # the given bytes, exactly
    models = ModelSet.load(Settings(weights_dir=tmp_path, device="cpu"))
    assert set(models.inpainters) == {"sd15-inpaint", "sdxl-inpaint"}
    for base in ("sd15-inpaint", "sdxl-inpaint"):
        cond = models.conditioning[base]
        assert cond.ip_adapter and cond.control_pipe is not None, cond.missing
    assert models.inpainters["sd15-inpaint"].identity["dev"] is True


def test_real_size_configs_have_the_published_parameter_counts():
    """The configs the GPU bench builds from, counted on the meta device (no memory): SD 1.5
    inpainting UNet 859.5 M, SDXL's UNet 2.567 G, bigG text tower 694.7 M, ViT-H 632 M."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    from bench import gpu_weights as gw

    def count(build) -> float:
        with torch.device("meta"):
            return sum(p.numel() for p in build().parameters()) / 1e6

    sd15 = json.loads(gw.sd15_pins()["unet/config.json"])
    assert round(count(lambda: UNet2DConditionModel.from_config(sd15)), 1) == 859.5
    assert round(count(lambda: UNet2DConditionModel.from_config(gw.SDXL_UNET)) / 1e3, 3) == 2.567
    assert round(count(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**gw.CLIP_BIGG)))) == 695
    vit = count(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(
        **gw.image_encoder_config())))
    assert 630 < vit < 640


def test_gpu_carry_stages_mediapipe_models_the_bake_verifies(dev_weights, tmp_path, capsys):
    """What `make gpu-wheels` carries: the MediaPipe models as a bake mirror, which the GPU
    machine's weights step bakes offline (sha256 checked against the manifest)."""
    from bench.common import parse_child_stdout
    from bench.gpu_carry import stage_mediapipe
    from bench.gpu_weights import MEDIAPIPE_KEYS, main, present

    carry = tmp_path / "whl"
    assert stage_mediapipe(dev_weights, carry) > 1_000_000
    out = tmp_path / "weights"
    assert main(["--out", str(out), "--device", "cpu", "--keys", "--mirror",
                 str(carry / "mediapipe")]) == 0
    assert parse_child_stdout(capsys.readouterr().out)["mediapipe"] == list(MEDIAPIPE_KEYS)
    assert set(MEDIAPIPE_KEYS) <= present(out)


def test_gpu_carry_refuses_two_versions_of_a_wheel_and_an_upload_over_the_limit(
        tmp_path, monkeypatch):
    import pytest

    from bench import gpu_carry

    (tmp_path / "pydantic-2.14.3-py3-none-any.whl").write_bytes(b"x" * 100)
    carried, tree = gpu_carry.check(tmp_path)
    assert carried == 100 and tree > 0
    (tmp_path / "pydantic-2.14.2-py3-none-any.whl").write_bytes(b"x")
    with pytest.raises(SystemExit, match="two versions"):
        gpu_carry.check(tmp_path)
    (tmp_path / "pydantic-2.14.2-py3-none-any.whl").unlink()
    monkeypatch.setattr(gpu_carry, "UPLOAD_LIMIT", tree)  # the tree alone is 100 % of it
    with pytest.raises(SystemExit, match="over"):
        gpu_carry.check(tmp_path)
