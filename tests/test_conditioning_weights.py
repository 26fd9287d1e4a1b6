"""Outfit-swap weights: the IP-Adapter and OpenPose ControlNet entries are pinned like the others
(repo + commit + per-file sha256 + license, the image encoder included), the one unpinnable file
is a stated gap the bake refuses, and the tiny dev models sit in the real on-disk layout and load
through diffusers' own loaders."""

from __future__ import annotations

import json

import pytest

from weights.bake import UnpinnedError, check_pinned
from weights.manifest import load_manifest
from weights.resolve import resolve

H94 = "018e402774aeeddd60609b4ecdb7e298259dc729"


@pytest.fixture(scope="module")
def manifest():
    return load_manifest()


def test_conditioning_entries_are_pinned_with_their_image_encoder(manifest):
    ip = manifest.models["ip-adapter-sd15"]
    assert ip.source.repo == "h94/IP-Adapter" and ip.source.revision == H94
    assert ip.license == "Apache-2.0" and ip.commercial_use and ip.base == "sd15-inpaint"
    files = {f.path: f for f in ip.source.files}
    assert set(files) == {"models/image_encoder/config.json", "models/image_encoder/model.safetensors",
                          "models/ip-adapter_sd15.safetensors"}
    assert files["models/image_encoder/model.safetensors"].sha256 == (
        "6ca9667da1ca9e0b0f75e46bb030f7e011f44f86cbfb8d5a36590fcd7507b030")
    assert files["models/ip-adapter_sd15.safetensors"].size == 44642768
    xl = manifest.models["ip-adapter-sdxl-vith"]
    assert xl.base == "sdxl-inpaint" and xl.weight_name == "sdxl_models/ip-adapter_sdxl_vit-h.safetensors"
    # the SDXL vit-h adapter uses the SD 1.5 adapter's ViT-H encoder (same bytes), in its own
    # directory (the bake replaces a model's directory as a whole)
    assert xl.path != ip.path
    assert {f.path: f.sha256 for f in xl.source.files if "image_encoder" in f.path} == {
        p: f.sha256 for p, f in files.items() if "image_encoder" in p}
    cn = manifest.models["controlnet-openpose-sd15"]
    assert cn.source.repo == "lllyasviel/control_v11p_sd15_openpose" and cn.control == "pose"
    assert [f.path for f in cn.source.files] == ["config.json", "diffusion_pytorch_model.fp16.safetensors"]
    for key in ("ip-adapter-sd15", "ip-adapter-sdxl-vith", "controlnet-openpose-sd15"):
        assert manifest.models[key].pin_gaps() == [], key
    for profile in ("sd15-outfit", "sdxl-outfit", "full-outfit"):
        assert set(manifest.profile(profile[:-len("-outfit")])) < set(manifest.profile(profile))
        check_pinned(manifest, manifest.profile(profile))


def test_the_sdxl_controlnet_config_is_a_stated_gap_the_bake_refuses(manifest):
    e = manifest.models["controlnet-openpose-sdxl"]
    assert e.source.repo == "xinsir/controlnet-openpose-sdxl-1.0" and e.license == "Apache-2.0"
    assert e.pin_gaps() == ["config.json: sha256 unknown", "config.json: size unknown"]
    assert e.profiles == [] and "KNOWN GAP" in (e.notes or "")
    with pytest.raises(UnpinnedError, match="config.json"):
        check_pinned(manifest, ["controlnet-openpose-sdxl"])


def test_tiny_models_sit_in_the_real_layout_and_stay_tiny(dev_weights, manifest):
    for key in ("ip-adapter-sd15", "ip-adapter-sdxl-vith", "controlnet-openpose-sd15",
                "controlnet-openpose-sdxl"):
        res = resolve(key, dev_weights, manifest, verify=True)
        entry = manifest.models[key]
        assert res.identity["dev"] is True
        for f in entry.source.files:
            assert (dev_weights / entry.destination(f)).is_file(), (key, f.path)
        size = sum((dev_weights / entry.destination(f)).stat().st_size for f in entry.source.files)
        assert size < 4_000_000, (key, size)
    enc = json.loads((dev_weights / "ip-adapter/sd15/models/image_encoder/config.json").read_text())
    assert enc["architectures"] == ["CLIPVisionModelWithProjection"]


def test_loaded_through_diffusers_loaders_sharing_the_base_modules(model_set):
    for base, ip_key, cn_key in (("sd15-inpaint", "ip-adapter-sd15", "controlnet-openpose-sd15"),
                                 ("sdxl-inpaint", "ip-adapter-sdxl-vith", "controlnet-openpose-sdxl")):
        cond = model_set.conditioning[base]
        pipe = model_set.inpainters[base].pipe
        assert cond.ip_adapter == ip_key and cond.controlnet == cn_key and not cond.missing
        assert pipe.image_encoder is not None  # registered by load_ip_adapter
        assert pipe.unet.config.encoder_hid_dim_type == "ip_image_proj"
        # from_pipe: one UNet, VAE, text encoder and image encoder, not a second copy
        cp = cond.control_pipe
        assert cp.unet is pipe.unet and cp.vae is pipe.vae and cp.text_encoder is pipe.text_encoder
        assert cp.image_encoder is pipe.image_encoder
        assert type(cp).__name__.endswith("ControlNetInpaintPipeline")
