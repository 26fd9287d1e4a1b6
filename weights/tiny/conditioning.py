"""Tiny random-weight conditioning models (issue #15) in the exact on-disk layout of the real ones.

- IP-Adapter (:func:`write_tiny_ip_adapter`), layout of ``h94/IP-Adapter``::

      <path>/models/image_encoder/config.json          CLIPVisionModelWithProjection
      <path>/models/image_encoder/model.safetensors
      <path>/models/ip-adapter_sd15.safetensors         (SD 1.5)
      <path>/sdxl_models/ip-adapter_sdxl_vit-h.safetensors  (SDXL, same ViT-H encoder)

  The adapter file holds ``image_proj.proj.{weight,bias}`` (``(cross_dim * 4, projection_dim)``),
  ``image_proj.norm.{weight,bias}`` and, for each cross-attention processor of the UNet (in
  ``unet.attn_processors`` order), ``ip_adapter.{k}.to_k_ip.weight`` / ``to_v_ip.weight`` of shape
  ``(hidden, cross_dim)``, k = 1, 3, 5, ... - the key scheme diffusers'
  ``_convert_ip_adapter_attn_to_diffusers`` reads (self-attention processors take the even ids
  in the original checkpoints). The encoder follows diffusers' IP-Adapter tests (hidden 32,
  projection 32, 2 layers, 32 px images, 4 px patches); no ``preprocessor_config.json`` (the real
  folder has none: ``load_ip_adapter`` builds a ``CLIPImageProcessor`` at the encoder's
  ``image_size``).
- ControlNet (:func:`write_tiny_controlnet`), diffusers layout (``config.json`` +
  ``diffusion_pytorch_model[.fp16].safetensors``), sized like the tiny UNet it conditions (block
  and attention settings copied from it) with ``in_channels=4`` (a ControlNet sees the latents,
  not the inpainting UNet's 9 channels) and four ``conditioning_embedding_out_channels`` so its
  hint encoder downsamples 8x like the tiny 4-block VAE.

Everything loads through the real loaders: ``pipe.load_ip_adapter(dir, subfolder=...,
weight_name=..., image_encoder_folder=..., local_files_only=True)`` and
``ControlNetModel.from_pretrained(dir, local_files_only=True)``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from weights.manifest import ReceiptEntry, load_manifest, write_receipt_entry

#: Image encoder folder inside an IP-Adapter dir (h94 keeps the ViT-H encoder there for both the
#: SD 1.5 adapter and the SDXL ``vit-h`` adapter).
IMAGE_ENCODER_DIR = "models/image_encoder"


def _record(weights_dir: Path, key: str, seed: int) -> None:
    entry = load_manifest().models[key]
    root = Path(weights_dir) / entry.path
    files = []
    for f in entry.source.files:
        rel = f.target or f.path
        data = (root / rel).read_bytes()
        files.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    write_receipt_entry(
        weights_dir, key,
        ReceiptEntry(source="dev-random", revision=f"dev-random-seed{seed}", dev=True, files=files))


def _tiny_unet(weights_dir: Path, base: str):
    from diffusers import UNet2DConditionModel

    entry = load_manifest().models[base]
    return UNet2DConditionModel.from_pretrained(Path(weights_dir) / entry.path, subfolder="unet",
                                                variant="fp16", local_files_only=True)


def _write_image_encoder(root: Path, seed: int) -> None:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    dst = root / IMAGE_ENCODER_DIR
    if (dst / "model.safetensors").exists():
        return
    torch.manual_seed(seed)
    enc = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, image_size=32, patch_size=4, num_channels=3))
    enc.to(torch.float16).save_pretrained(dst, safe_serialization=True)


def write_tiny_ip_adapter(weights_dir: Path, key: str, seed: int = 0) -> Path:
    """Write a tiny random IP-Adapter for the manifest entry ``key`` (its ``base`` model's UNet
    sets the shapes; that model's tiny weights must be written first).

    Returns:
        The adapter directory (about 0.2 MB).
    """
    import torch
    from safetensors.torch import save_file

    entry = load_manifest().models[key]
    root = Path(weights_dir) / entry.path
    _write_image_encoder(root, seed)
    unet = _tiny_unet(weights_dir, entry.base)
    cross = int(unet.config.cross_attention_dim)
    proj_dim = 32
    g = torch.Generator().manual_seed(seed + 1)

    def rnd(*shape):
        # scaled so the image tokens move the cross-attention noticeably even in fp16
        return (torch.randn(*shape, generator=g) * 0.5).to(torch.float16)

    sd = {"image_proj.proj.weight": rnd(cross * 4, proj_dim),
          "image_proj.proj.bias": rnd(cross * 4),
          "image_proj.norm.weight": torch.ones(cross, dtype=torch.float16),
          "image_proj.norm.bias": torch.zeros(cross, dtype=torch.float16)}
    k = 1
    blocks = list(unet.config.block_out_channels)
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = blocks[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(blocks))[int(name[len("up_blocks.")])]
        else:
            hidden = blocks[int(name[len("down_blocks.")])]
        sd[f"ip_adapter.{k}.to_k_ip.weight"] = rnd(hidden, cross)
        sd[f"ip_adapter.{k}.to_v_ip.weight"] = rnd(hidden, cross)
        k += 2
    weight = root / entry.weight_name
    weight.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(weight))
    _record(Path(weights_dir), key, seed)
    return root


def write_tiny_controlnet(weights_dir: Path, key: str, seed: int = 0) -> Path:
    """Write a tiny random ControlNet for the manifest entry ``key``, shaped like its ``base``
    model's tiny UNet, under the file names of the real repo (``.fp16`` variant when the
    manifest's entry has one).

    Returns:
        The ControlNet directory (about 1 MB).
    """
    import torch
    from diffusers import ControlNetModel

    entry = load_manifest().models[key]
    out = Path(weights_dir) / entry.path
    unet = _tiny_unet(weights_dir, entry.base)
    c = unet.config
    torch.manual_seed(seed)
    kw = {}
    if c.addition_embed_type == "text_time":  # SDXL
        kw = dict(addition_embed_type="text_time", addition_time_embed_dim=c.addition_time_embed_dim,
                  projection_class_embeddings_input_dim=c.projection_class_embeddings_input_dim,
                  transformer_layers_per_block=c.transformer_layers_per_block,
                  use_linear_projection=c.use_linear_projection)
    cn = ControlNetModel(
        in_channels=4, block_out_channels=c.block_out_channels, layers_per_block=c.layers_per_block,
        down_block_types=c.down_block_types, cross_attention_dim=c.cross_attention_dim,
        attention_head_dim=c.attention_head_dim, norm_num_groups=c.norm_num_groups,
        conditioning_embedding_out_channels=(16, 32, 32, 32), **kw)
    # a zero-initialised ControlNet (its zero convolutions) changes nothing; random dev weights
    # must move the output, so the zero convolutions get small random values
    with torch.no_grad():
        for mod in [*cn.controlnet_down_blocks, cn.controlnet_mid_block,
                    cn.controlnet_cond_embedding.conv_out]:
            mod.weight.normal_(0.0, 0.3)
    cn.to(torch.float16).save_pretrained(out, safe_serialization=True, variant=entry.variant)
    _record(Path(weights_dir), key, seed)
    return out
