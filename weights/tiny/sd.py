"""Tiny random-weight Stable Diffusion (1.5 and XL) inpainting pipelines in the production
diffusers layout.

SD 1.5 (:func:`write_tiny_sd_inpaint`): sizes follow diffusers' own test suite for
``StableDiffusionInpaintPipeline`` (UNet with
``in_channels=9``, ``block_out_channels=(32, 64)``; a 5-layer, 32-wide CLIP text encoder), except
the VAE, which gets 4 blocks so it downsamples 8x like SD's real VAE (a 2-block VAE is ~20x
slower at the same pixel size). The UNet's ``sample_size=32`` makes the pipeline's native
resolution 32 * 8 = 256 px, read back by the loader exactly as it reads 512 px from SD 1.5.

Files are written as fp16 safetensors with ``variant="fp16"`` - the same file names the bake
puts on disk for the real model - plus a CLIP tokenizer from a hand-written ``vocab.json`` and
``merges.txt`` (byte-level symbols only), so everything loads offline.

SDXL (:func:`write_tiny_sdxl_inpaint`): sizes follow diffusers' test suite for
``StableDiffusionXLInpaintPipeline`` (``tests/pipelines/stable_diffusion_xl/
test_stable_diffusion_xl_inpaint.py``: two 32-wide CLIP text encoders, the second with a
projection; a UNet with ``addition_embed_type="text_time"``, ``cross_attention_dim=64`` = both
encoders' hidden sizes concatenated), with the real SDXL inpainting model's ``in_channels=9``,
``requires_aesthetics_score=False`` (so ``projection_class_embeddings_input_dim`` = 6 time ids x
8 + the 32-wide pooled text embedding = 80, as 6 x 256 + 1280 = 2816 in the real UNet), the real
model's scheduler class (Euler) and the same 4-block, 8x VAE as the SD 1.5 writer.
"""

from __future__ import annotations

from pathlib import Path

from weights.files import sha256_file
from weights.manifest import ReceiptEntry, load_manifest, write_receipt_entry

#: The UNet layout both tiny inpainting pipelines share (9 input channels: latents, mask, masked
#: image latents); each writer adds its own attention keywords.
TINY_UNET = {
    "block_out_channels": (32, 64),
    "layers_per_block": 2,
    "sample_size": 32,
    "in_channels": 9,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
}


#: The byte-to-unicode table of GPT-2/CLIP BPE (Radford et al., openai/CLIP `simple_tokenizer`).
def _bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _write_tokenizer(dst: Path) -> int:
    """Write a byte-level CLIP tokenizer (no merges). Returns the vocab size."""
    from transformers import CLIPTokenizer

    dst.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab_list = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = CLIPTokenizer(
        vocab=vocab, merges=[], unk_token="<|endoftext|>", bos_token="<|startoftext|>",
        eos_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=77,
    )
    tok.save_pretrained(dst)  # writes vocab.json, merges.txt and tokenizer.json
    return len(vocab_list)


def write_tiny_sd_inpaint(weights_dir: Path, key: str = "sd15-inpaint", seed: int = 0) -> Path:
    """Write a tiny random SD inpainting pipeline at the manifest path of ``key``.

    Args:
        weights_dir: the weights root (``MASKPAINT_WEIGHTS_DIR``).
        key: manifest key of a ``diffusers_inpaint`` entry.
        seed: torch seed for the random init (same seed -> same weights).

    Returns:
        The pipeline directory (about 8 MB on disk).
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    entry = load_manifest().models[key]
    out = Path(weights_dir) / entry.path
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **TINY_UNET,
        cross_attention_dim=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 64, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        sample_size=256,
    )
    tok_dir = out / "tokenizer"
    vocab_size = _write_tokenizer(tok_dir)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=5,
            vocab_size=vocab_size,
            max_position_embeddings=77,
        )
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
        steps_offset=1, set_alpha_to_one=False,
    )
    pipe = StableDiffusionInpaintPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(tok_dir),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save(pipe, Path(weights_dir), key, out, seed)


def _save(pipe, weights_dir: Path, key: str, out: Path, seed: int,
          files_over: dict[str, bytes] | None = None) -> Path:
    """Save ``pipe`` as fp16 safetensors (``variant="fp16"``) and record it in the receipt.

    ``files_over``: relative path -> exact bytes written over what ``save_pretrained`` wrote
    (e.g. a model's pinned config files, so they match the manifest's sha256)."""
    import torch

    pipe.to(torch_dtype=torch.float16)
    pipe.save_pretrained(out, safe_serialization=True, variant="fp16")
    for rel, data in (files_over or {}).items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    files = []
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        sha, size = sha256_file(f)
        files.append({"path": str(f.relative_to(out)), "sha256": sha, "size": size})
    write_receipt_entry(
        weights_dir, key,
        ReceiptEntry(source="dev-random", revision=f"dev-random-seed{seed}", dev=True, files=files),
    )
    return out


def _tiny_vae():
    """A 4-block VAE (8x downsampling like SD's real one; a 2-block VAE is ~20x slower)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(32, 32, 64, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        sample_size=256,
    )


def _tiny_text_config(vocab_size: int, **kw):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=vocab_size,
        max_position_embeddings=77,
        **kw,
    )


def write_tiny_sdxl_inpaint(
    weights_dir: Path, key: str = "sdxl-inpaint", seed: int = 0
) -> Path:
    """Write a tiny random SDXL inpainting pipeline at the manifest path of ``key``.

    Same file names as the real ``diffusers/stable-diffusion-xl-1.0-inpainting-0.1`` bake
    (``text_encoder_2``, ``tokenizer_2``, fp16 safetensors); native resolution 32 * 8 = 256 px.

    Args:
        weights_dir: the weights root (``MASKPAINT_WEIGHTS_DIR``).
        key: manifest key of a ``diffusers_inpaint`` entry.
        seed: torch seed for the random init (same seed -> same weights).

    Returns:
        The pipeline directory (about 9 MB on disk).
    """
    import torch
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    entry = load_manifest().models[key]
    out = Path(weights_dir) / entry.path
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **TINY_UNET,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64,
    )
    vae = _tiny_vae()
    vocab_size = _write_tokenizer(out / "tokenizer")
    _write_tokenizer(out / "tokenizer_2")
    text_encoder = CLIPTextModel(_tiny_text_config(vocab_size, hidden_act="gelu"))
    text_encoder_2 = CLIPTextModelWithProjection(
        _tiny_text_config(vocab_size, hidden_act="gelu", projection_dim=32)
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(out / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(out / "tokenizer_2"),
        unet=unet,
        scheduler=scheduler,
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    return _save(pipe, Path(weights_dir), key, out, seed)
