"""Real-size random-weight models in the baked layout, for the GPU bench (``bench.gpu``).

Same architectures, sizes and file names as the real bake, random weights (the outputs are noise;
every timing and memory figure is the real model's):

- SD 1.5 inpainting from the pinned real configs (``bench/pins/sd15-inpainting-configs.json``,
  the exact bytes the manifest pins: UNet 860 M, VAE 84 M, CLIP-L text encoder 123 M), 2.06 GB
  fp16; the config files are written byte for byte, so their sha256 match the manifest;
- SDXL inpainting at its published sizes (:data:`SDXL_UNET` from
  ``diffusers/stable-diffusion-xl-1.0-inpainting-0.1``; CLIP-L 768 x 12 and OpenCLIP bigG
  1280 x 32 text encoders; VAE with scaling 0.13025 and ``force_upcast``), 6.74 GB fp16;
- the IP-Adapters with the real ViT-H/14 image encoder (h94's config; written fp16, 1.26 GB,
  where h94's file is fp32, 2.53 GB: the worker casts it to fp16 on load, so only the bytes read
  at cold start differ) and adapters shaped by each UNet (SD 1.5 44.6 MB, SDXL vit-h 698 MB,
  as h94's);
- ControlNets by ``ControlNetModel.from_unet`` (SD 1.5 0.72 GB, SDXL 2.5 GB);
- the real MediaPipe face and pose models, baked from a local mirror (no network on the GPU
  machine; ``make gpu-wheels`` stages them).

The tokenizers are the dev writer's byte-level ones (the real 1.6 MB vocabularies are not in the
repository); prompts still encode to 77 tokens, so the text encoders do the real work. Modules
are built on the GPU in fp32 and saved fp16 with ``variant="fp16"`` through
:mod:`weights.tiny`'s own savers, which also write the receipt ``weights.resolve`` reads.

``python -m bench.gpu_weights --out DIR [--device cuda] [--mirror DIR]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

PINS = Path(__file__).resolve().parent / "pins"
#: SDXL inpainting UNet (``unet/config.json`` of diffusers/stable-diffusion-xl-1.0-inpainting-0.1).
SDXL_UNET = {
    "act_fn": "silu", "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280], "center_input_sample": False,
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 9,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "out_channels": 4, "projection_class_embeddings_input_dim": 2816, "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}
SDXL_VAE = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 1024,
    "scaling_factor": 0.13025, "force_upcast": True, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
#: CLIP ViT-L/14 text tower (SDXL's ``text_encoder``; SD 1.5's pinned one has the same sizes).
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
              num_hidden_layers=12, hidden_act="quick_gelu", projection_dim=768,
              vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=2,
              pad_token_id=1)
#: OpenCLIP ViT-bigG/14 text tower with projection (SDXL's ``text_encoder_2``).
CLIP_BIGG = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
                 num_hidden_layers=32, hidden_act="gelu", projection_dim=1280,
                 vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=2,
                 pad_token_id=1)
SDXL_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      steps_offset=1, timestep_spacing="leading", interpolation_type="linear",
                      prediction_type="epsilon", use_karras_sigmas=False)

#: What the real-size bench writes, in order (the add-ons after their base models).
REAL_KEYS = ("sd15-inpaint", "sdxl-inpaint", "ip-adapter-sd15", "ip-adapter-sdxl-vith",
             "controlnet-openpose-sd15", "controlnet-openpose-sdxl")
MEDIAPIPE_KEYS = ("faces-blazeface-full", "pose-mediapipe-full")


def sd15_pins() -> dict[str, bytes]:
    """The pinned SD 1.5 inpainting config files: relative path -> exact bytes."""
    pins = json.loads((PINS / "sd15-inpainting-configs.json").read_text())
    return {f["path"]: f["content"].encode() for f in pins["files"] if f.get("content")}


def image_encoder_config() -> dict:
    """h94/IP-Adapter ``models/image_encoder/config.json`` (OpenCLIP ViT-H/14 vision tower)."""
    pin = json.loads((PINS / "ip-adapter-image-encoder-config.json").read_text())
    cfg = json.loads(pin["content"])
    return {k: v for k, v in cfg.items() if not k.startswith("_") and k not in (
        "architectures", "torch_dtype", "transformers_version", "model_type")}


def _on(device: str, build):
    import torch

    with torch.device(device):
        return build()


def write_sd15(weights_dir: Path, device: str, seed: int = 0) -> Path:
    """SD 1.5 inpainting at real size from the pinned configs (see the module docstring)."""
    import torch
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from weights.manifest import load_manifest
    from weights.tiny.sd import _save, _write_tokenizer

    out = Path(weights_dir) / load_manifest().models["sd15-inpaint"].path
    pins = sd15_pins()
    cfg = {k: json.loads(v) for k, v in pins.items()}
    torch.manual_seed(seed)
    _write_tokenizer(out / "tokenizer")
    text_cfg = {k: v for k, v in cfg["text_encoder/config.json"].items()
                if not k.startswith("_") and k != "architectures"}
    pipe = StableDiffusionInpaintPipeline(
        unet=_on(device, lambda: UNet2DConditionModel.from_config(cfg["unet/config.json"])),
        vae=_on(device, lambda: AutoencoderKL.from_config(cfg["vae/config.json"])),
        text_encoder=_on(device, lambda: CLIPTextModel(CLIPTextConfig(**text_cfg))),
        tokenizer=CLIPTokenizer.from_pretrained(out / "tokenizer"),
        scheduler=DDIMScheduler.from_config(cfg["scheduler/scheduler_config.json"]),
        safety_checker=None, requires_safety_checker=False,
        feature_extractor=CLIPImageProcessor(**cfg["feature_extractor/preprocessor_config.json"]),
    )
    # the pinned bytes of every config the real bake ships (not the tokenizer's: its vocabulary
    # is the dev writer's)
    over = {k: v for k, v in pins.items() if not k.startswith("tokenizer/")}
    return _save(pipe, Path(weights_dir), "sd15-inpaint", out, seed, files_over=over)


def write_sdxl(weights_dir: Path, device: str, seed: int = 0) -> Path:
    """SDXL inpainting at its published sizes (see the module docstring)."""
    import torch
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler,
                           StableDiffusionXLInpaintPipeline, UNet2DConditionModel)
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection,
                              CLIPTokenizer)

    from weights.manifest import load_manifest
    from weights.tiny.sd import _save, _write_tokenizer

    out = Path(weights_dir) / load_manifest().models["sdxl-inpaint"].path
    torch.manual_seed(seed)
    _write_tokenizer(out / "tokenizer")
    _write_tokenizer(out / "tokenizer_2")
    pipe = StableDiffusionXLInpaintPipeline(
        unet=_on(device, lambda: UNet2DConditionModel.from_config(SDXL_UNET)),
        vae=_on(device, lambda: AutoencoderKL.from_config(SDXL_VAE)),
        text_encoder=_on(device, lambda: CLIPTextModel(CLIPTextConfig(**CLIP_L))),
        text_encoder_2=_on(device, lambda: CLIPTextModelWithProjection(
            CLIPTextConfig(**CLIP_BIGG))),
        tokenizer=CLIPTokenizer.from_pretrained(out / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(out / "tokenizer_2"),
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
        requires_aesthetics_score=False, force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    return _save(pipe, Path(weights_dir), "sdxl-inpaint", out, seed)


def write_real(weights_dir: Path, keys: list[str], device: str, log=print) -> dict[str, float]:
    """Write the real-size random models ``keys`` (of :data:`REAL_KEYS`, in that order) on
    ``device``. Returns key -> seconds."""
    import torch

    from weights.tiny.conditioning import write_controlnet_from_unet, write_tiny_ip_adapter

    writers = {
        "sd15-inpaint": lambda: write_sd15(weights_dir, device),
        "sdxl-inpaint": lambda: write_sdxl(weights_dir, device),
        **{k: (lambda k=k: write_tiny_ip_adapter(
            weights_dir, k, image_encoder=image_encoder_config(), device=device))
           for k in ("ip-adapter-sd15", "ip-adapter-sdxl-vith")},
        **{k: (lambda k=k: write_controlnet_from_unet(weights_dir, k, device=device))
           for k in ("controlnet-openpose-sd15", "controlnet-openpose-sdxl")},
    }
    took = {}
    for key in [k for k in REAL_KEYS if k in keys]:
        t = time.perf_counter()
        with torch.no_grad():
            writers[key]()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        took[key] = round(time.perf_counter() - t, 1)
        log(f"wrote {key} in {took[key]} s")
    return took


def bake_mediapipe(weights_dir: Path, mirror: Path, log=print) -> list[str]:
    """The real MediaPipe face and pose models from ``mirror`` (``<mirror>/<key>/<member
    path>``, verified against the manifest by the bake). Returns the keys baked."""
    from weights.bake import bake
    from weights.manifest import load_manifest

    manifest = load_manifest()
    keys = [k for k in MEDIAPIPE_KEYS if (Path(mirror) / k).is_dir()]
    if keys:
        bake(manifest, keys, weights_dir, mirror=mirror, log=log)
    return keys


def present(weights_dir: Path) -> set[str]:
    """Keys with a receipt entry and their files in ``weights_dir``."""
    from weights.manifest import load_manifest, load_receipt

    manifest = load_manifest()
    receipt = load_receipt(Path(weights_dir)).models
    return {k for k in receipt if k in manifest.models
            and (Path(weights_dir) / manifest.models[k].path).exists()}


def main(argv: list[str] | None = None) -> int:
    from bench.common import emit
    from weights.resolve import set_offline_env

    set_offline_env()
    ap = argparse.ArgumentParser(description="Write real-size random-weight models.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--keys", nargs="*", default=list(REAL_KEYS))
    ap.add_argument("--mirror", type=Path, default=None, help="MediaPipe models mirror")
    ap.add_argument("--rewrite", action="store_true")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    have = set() if a.rewrite else present(a.out)
    t = time.perf_counter()
    took = write_real(a.out, [k for k in a.keys if k not in have], a.device)
    baked = bake_mediapipe(a.out, a.mirror) if a.mirror and a.mirror.is_dir() else []
    emit({"written_s": took, "kept": sorted(have & set(a.keys)), "mediapipe": baked,
          "seconds": round(time.perf_counter() - t, 1)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
