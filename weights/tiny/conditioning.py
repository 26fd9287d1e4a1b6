"""Tiny random-weight conditioning models in the exact on-disk layout of the real ones.

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

from pathlib import Path

from weights.files import sha256_file
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
        sha, size = sha256_file(root / rel)
        files.append({"path": rel, "sha256": sha, "size": size})
    write_receipt_entry(
        weights_dir, key,
        ReceiptEntry(source="dev-random", revision=f"dev-random-seed{seed}", dev=True, files=files))


#: The tiny image encoder (diffusers' IP-Adapter tests' sizes); real size: the ViT-H config.
TINY_IMAGE_ENCODER = dict(hidden_size=32, projection_dim=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=37, image_size=32,
                          patch_size=4, num_channels=3)


def _tiny_unet(weights_dir: Path, base: str, in_channels: int | None = None):
    """The base model's UNet built from its saved config on the ``meta`` device: shapes and
    attention processor names without reading (or allocating) any weight."""
    import torch
    from diffusers import UNet2DConditionModel

    entry = load_manifest().models[base]
    config = dict(UNet2DConditionModel.load_config(Path(weights_dir) / entry.path / "unet"))
    if in_channels is not None:
        config["in_channels"] = in_channels
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(config)


def _write_image_encoder(root: Path, seed: int, config: dict | None = None,
                         device: str = "cpu") -> int:
    """Write the random image encoder (``config``: a ``CLIPVisionConfig``'s keywords, default
    :data:`TINY_IMAGE_ENCODER`) unless present. Returns its ``projection_dim``."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    dst = root / IMAGE_ENCODER_DIR
    cfg = CLIPVisionConfig(**(config or TINY_IMAGE_ENCODER))
    if (dst / "model.safetensors").exists():
        return int(CLIPVisionConfig.from_pretrained(dst).projection_dim)
    torch.manual_seed(seed)
    with torch.device(device):
        enc = CLIPVisionModelWithProjection(cfg)
    enc.to(torch.float16).save_pretrained(dst, safe_serialization=True)
    return int(cfg.projection_dim)


def write_tiny_ip_adapter(weights_dir: Path, key: str, seed: int = 0, *,
                          image_encoder: dict | None = None, device: str = "cpu") -> Path:
    """Write a random IP-Adapter for the manifest entry ``key`` (its ``base`` model's UNet
    config sets the shapes; that model must be written first): tiny by default, real size with
    ``image_encoder`` = the real encoder's config (the adapter's shapes follow the UNet).

    Args:
        device: where the random tensors are drawn (``cuda`` for the real sizes: seconds).

    Returns:
        The adapter directory (tiny: about 0.2 MB).
    """
    import torch
    from safetensors.torch import save_file

    entry = load_manifest().models[key]
    root = Path(weights_dir) / entry.path
    proj_dim = _write_image_encoder(root, seed, image_encoder, device)
    unet = _tiny_unet(weights_dir, entry.base)
    cross = int(unet.config.cross_attention_dim)
    g = torch.Generator(device).manual_seed(seed + 1)

    def rnd(*shape):
        # scaled so the image tokens move the cross-attention noticeably even in fp16
        return (torch.randn(*shape, generator=g, device=device) * 0.5).to(torch.float16).cpu()

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
    return _save_controlnet(cn, Path(weights_dir), key, seed)


def _save_controlnet(cn, weights_dir: Path, key: str, seed: int) -> Path:
    """Unzero ``cn``'s zero convolutions, save it as fp16 under the manifest's file names and
    record it in the receipt."""
    import torch

    entry = load_manifest().models[key]
    out = Path(weights_dir) / entry.path
    # a zero-initialised ControlNet (its zero convolutions) changes nothing; random dev weights
    # must move the output, so the zero convolutions get small random values
    with torch.no_grad():
        for mod in [*cn.controlnet_down_blocks, cn.controlnet_mid_block,
                    cn.controlnet_cond_embedding.conv_out]:
            mod.weight.normal_(0.0, 0.3)
    cn.to(torch.float16).save_pretrained(out, safe_serialization=True, variant=entry.variant)
    _record(weights_dir, key, seed)
    return out


def write_controlnet_from_unet(weights_dir: Path, key: str, seed: int = 0,
                               device: str = "cpu") -> Path:
    """Write a random ControlNet of the real architecture for ``key``: diffusers'
    ``ControlNetModel.from_unet`` on its base model's UNet config (4 input channels: the
    ControlNet sees the latents), built on ``device``. For SD 1.5 that is
    ``lllyasviel/control_v11p_sd15_openpose``'s architecture (0.72 GB fp16); for SDXL a full
    ControlNet like xinsir's (2.5 GB)."""
    import torch
    from diffusers import ControlNetModel

    entry = load_manifest().models[key]
    unet = _tiny_unet(weights_dir, entry.base, in_channels=4)
    torch.manual_seed(seed)
    with torch.device(device):
        cn = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    return _save_controlnet(cn, Path(weights_dir), key, seed)
