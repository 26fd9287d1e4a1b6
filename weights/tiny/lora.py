"""Tiny random-weight LCM-LoRA files in the key layout of the real ones.

The published ``latent-consistency/lcm-lora-sdv1-5`` and ``lcm-lora-sdxl``
``pytorch_lora_weights.safetensors`` hold kohya-style keys over diffusers' own UNet module names
(``lora_unet_up_blocks_2_attentions_0_proj_in.lora_up.weight``, as quoted in the
latent-consistency-model repository's issue on loading LoRA weights), each module with
``.lora_down.weight`` (rank x in), ``.lora_up.weight`` (out x rank) and a scalar ``.alpha``;
UNet only. The modules are those LCM-LoRA was trained on (the diffusers LCM-LoRA distillation
script's target list): attention ``to_q/to_k/to_v/to_out.0``, ``proj_in/proj_out``,
``ff.net.0.proj/ff.net.2``, resnet ``conv1/conv2/conv_shortcut/time_emb_proj`` and the down- and
upsampler convolutions. A convolution's down weight is rank x in x k x k, its up weight
out x rank x 1 x 1 (PEFT's LoRA ``Conv2d``).

The file goes through diffusers' production path: ``pipe.load_lora_weights(dir,
weight_name=..., adapter_name=..., local_files_only=True)`` detects the kohya layout and converts
it (``_convert_non_diffusers_lora_to_diffusers``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from weights.manifest import ReceiptEntry, load_manifest, write_receipt_entry

#: Module name suffixes LCM-LoRA adapts (diffusers UNet names).
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj",
           "ff.net.2", "conv1", "conv2", "conv_shortcut", "time_emb_proj",
           "downsamplers.0.conv", "upsamplers.0.conv")
RANK = 4


def lora_modules(unet) -> list[str]:
    """The UNet's module names (diffusers spelling) that an LCM-LoRA adapts, in model order."""
    return [name for name, _ in unet.named_modules()
            if any(name == t or name.endswith("." + t) for t in TARGETS)]


def write_tiny_lcm_lora(weights_dir: Path, key: str, seed: int = 0) -> Path:
    """Write a tiny random LCM-LoRA for the manifest entry ``key``, shaped for its ``base``
    model's tiny UNet (that model's tiny weights must be written first).

    The up weights are random (not zero, as a fresh LoRA's are), so switching the LoRA on
    visibly changes the output. Returns the file's path (a few hundred kB).
    """
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    manifest = load_manifest()
    entry = manifest.models[key]
    unet = UNet2DConditionModel.from_pretrained(
        Path(weights_dir) / manifest.models[entry.base].path, subfolder="unet", variant="fp16",
        local_files_only=True)
    g = torch.Generator().manual_seed(seed)
    modules = dict(unet.named_modules())
    sd = {}
    for name in lora_modules(unet):
        mod = modules[name]
        prefix = "lora_unet_" + name.replace(".", "_")
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.kernel_size
            down = torch.randn(RANK, mod.in_channels, *k, generator=g)
            up = torch.randn(mod.out_channels, RANK, 1, 1, generator=g)
        else:
            down = torch.randn(RANK, mod.in_features, generator=g)
            up = torch.randn(mod.out_features, RANK, generator=g)
        sd[f"{prefix}.lora_down.weight"] = (down * 0.1).to(torch.float16)
        sd[f"{prefix}.lora_up.weight"] = (up * 0.1).to(torch.float16)
        sd[f"{prefix}.alpha"] = torch.tensor(float(RANK), dtype=torch.float16)
    out = Path(weights_dir) / entry.path
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(out))
    data = out.read_bytes()
    write_receipt_entry(weights_dir, key, ReceiptEntry(
        source="dev-random", revision=f"dev-random-seed{seed}", dev=True,
        files=[{"path": out.name, "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data)}]))
    return out
