"""The draft LoRAs in the weights manifest: both LCM-LoRAs pinned (revision, size, sha256,
licence), tied to their base model, in the outfit / full profiles and their own ``-draft``
add-on; the bake verifies the pins and fails loudly on bytes that do not match (fed the tiny
LoRA through a mirror). Offline."""

from __future__ import annotations

import pytest

from weights.bake import VerificationError, bake, main
from weights.manifest import load_manifest, load_receipt

PINS = {
    "lcm-lora-sd15": ("latent-consistency/lcm-lora-sdv1-5",
                      "cf2fced511dbe7e26c8d1d397e728fbab875db4b", 134_621_556,
                      "8f90d840e075ff588a58e22c6586e2ae9a6f7922996ee6649a7f01072333afe4",
                      "sd15-inpaint"),
    "lcm-lora-sdxl": ("latent-consistency/lcm-lora-sdxl",
                      "a18548dd4956b174ec5b0d78d340c8dae0a129cd", 393_855_224,
                      "a764e6859b6e04047cd761c08ff0cee96413a8e004c9f07707530cd776b19141",
                      "sdxl-inpaint"),
}


@pytest.fixture(scope="module")
def manifest():
    return load_manifest()


@pytest.mark.parametrize("key", sorted(PINS))
def test_both_lcm_loras_are_pinned_and_tied_to_their_base(manifest, key):
    repo, revision, size, sha, base = PINS[key]
    e = manifest.models[key]
    assert (e.kind, e.base, e.layout, e.license) == ("lora", base, "file", "openrail++")
    assert e.commercial_use and manifest.models[base].kind == "diffusers_inpaint"
    assert (e.source.type, e.source.repo, e.source.revision) == ("hf", repo, revision)
    [f] = e.source.files
    assert (f.path, f.size, f.sha256) == ("pytorch_lora_weights.safetensors", size, sha)
    assert e.path.endswith("/pytorch_lora_weights.safetensors")
    # where the hashes come from, and that the bake checks them
    assert "public download scripts" in e.notes and "fails loudly" in e.notes


def test_profiles_carry_the_loras(manifest):
    for model, key in (("sd15", "lcm-lora-sd15"), ("sdxl", "lcm-lora-sdxl")):
        assert manifest.profile(f"{model}-draft") == [key]  # the add-on: the LoRA alone
        for profile in (f"{model}-outfit", "full", "full-outfit"):
            assert key in manifest.profile(profile), profile
        assert key not in manifest.profile(model)  # the plain profiles stay as they were


def test_bake_fails_loudly_when_the_bytes_do_not_match(manifest, dev_weights, tmp_path, capsys):
    """A mirror holding the tiny LoRA (other bytes than the pinned file): the bake refuses it,
    naming the model and file, and leaves nothing at the final path and no receipt entry."""
    key = "lcm-lora-sd15"
    entry = manifest.models[key]
    mirror = tmp_path / "mirror" / key
    mirror.mkdir(parents=True)
    (mirror / "pytorch_lora_weights.safetensors").write_bytes(
        (dev_weights / entry.path).read_bytes())
    out = tmp_path / "weights"
    with pytest.raises(VerificationError,
                       match=r"model 'lcm-lora-sd15', file 'pytorch_lora_weights.safetensors'"):
        bake(manifest, [key], out, tmp_path / "mirror", log=lambda _m: None)
    assert not (out / entry.path).exists()
    assert key not in load_receipt(out).models
    # the CLI says so and exits 1
    assert main(["--profile", "sd15-draft", "--out", str(out),
                 "--mirror", str(tmp_path / "mirror")]) == 1
    assert "FAILED" in capsys.readouterr().err


def test_tiny_lora_is_in_the_dev_weights(dev_weights, manifest):
    receipt = load_receipt(dev_weights).models
    for key in PINS:
        assert receipt[key].dev and (dev_weights / manifest.models[key].path).is_file()
