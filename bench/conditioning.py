"""What a reference garment (IP-Adapter), pose lock (ControlNet) and a gallery cost.

``python -m bench.conditioning [--repeats 3] [--steps 4]`` prints one JSON document:

- ``cpu_tiny``: the same job on astronaut.png (provided 300 x 200 px mask, the tiny dev models
  at their native 256 px, ``--steps`` steps) through :class:`core.pipeline.Worker`: plain, with
  ``garment_image``, with ``control: "pose"``, both, and a gallery of 3; median wall ms of
  ``--repeats`` round-robin rounds (after one warm-up round) and the add-ons' parameter bytes.
- ``gpu_estimate``: from the real models' sizes, not a GPU run: fp16 weight bytes each add-on
  puts on the GPU (the manifest's pinned sizes), and the extra compute as FLOPs counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on the real architectures built on the ``meta``
  device (no weights, no memory): one UNet step (CFG batch of 2) vs one ControlNet step, and one
  ViT-H/14 image-encoder pass (once per job). SD 1.5 configs are the pinned ones
  (``/work/shared/pins`` text, also in the manifest notes); SDXL's UNet config is written out
  below from ``diffusers/stable-diffusion-xl-1.0-inpainting-0.1`` and its ControlNet copies
  that UNet's encoder settings with 4 input channels (the ``from_unet`` architecture, which
  xinsir's ControlNet uses).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

SD15_UNET = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], "downsample_padding": 1,
    "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 9, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4,
    "sample_size": 64, "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}
SDXL_UNET = {
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280],
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "in_channels": 9, "layers_per_block": 2, "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816, "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}
#: h94/IP-Adapter models/image_encoder/config.json (OpenCLIP ViT-H/14).
VIT_H = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=16,
             num_hidden_layers=32, patch_size=14, image_size=224, projection_dim=1024,
             hidden_act="gelu")


def _flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def gpu_estimate() -> dict:
    """FLOPs and fp16 bytes of the real architectures (meta device: nothing is allocated)."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from weights.manifest import load_manifest

    m = load_manifest()
    size = lambda key: sum(f.size or 0 for f in m.models[key].source.files)  # noqa: E731
    out = {}
    with torch.device("meta"):
        enc = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_H))
        enc_flops = _flops(lambda: enc(pixel_values=torch.zeros(1, 3, 224, 224)))
        for name, cfg, side, ctx, extra in (
                ("sd15", SD15_UNET, 64, 768, {}),
                ("sdxl", SDXL_UNET, 128, 2048, "xl")):
            unet = UNet2DConditionModel(**cfg)
            # the ControlNet of an inpainting UNet sees the 4 latent channels, not the 9 inputs
            import inspect

            accepted = inspect.signature(ControlNetModel.__init__).parameters
            cn = ControlNetModel(**{**{k: v for k, v in cfg.items() if k in accepted},
                                    "in_channels": 4})
            b = 2  # classifier-free guidance
            sample = torch.zeros(b, 9, side, side)
            text = torch.zeros(b, 77, ctx)
            t = torch.zeros(b)
            added = ({"text_embeds": torch.zeros(b, 1280), "time_ids": torch.zeros(b, 6)}
                     if extra else None)
            unet_flops = _flops(lambda: unet(sample, t, text, added_cond_kwargs=added))
            cn_flops = _flops(lambda: cn(sample[:, :4], t, text,
                                         controlnet_cond=torch.zeros(b, 3, side * 8, side * 8),
                                         added_cond_kwargs=added))
            params = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
            ip_key = "ip-adapter-sd15" if name == "sd15" else "ip-adapter-sdxl-vith"
            cn_key = "controlnet-openpose-sd15" if name == "sd15" else "controlnet-openpose-sdxl"
            out[name] = {
                "resolution_px": side * 8,
                "unet_params_M": round(params(unet) / 1e6, 1),
                "controlnet_params_M": round(params(cn) / 1e6, 1),
                "unet_step_GFLOP": round(unet_flops / 1e9, 1),
                "controlnet_step_GFLOP": round(cn_flops / 1e9, 1),
                "controlnet_extra_per_step": round(cn_flops / unet_flops, 3),
                "image_encoder_GFLOP_per_job": round(enc_flops / 1e9, 1),
                "ip_adapter_encoder_vs_one_unet_step": round(enc_flops / unet_flops, 3),
                "ip_adapter_fp16_bytes": size(ip_key),
                "controlnet_fp16_bytes": size(cn_key),
            }
    return out


def cpu_tiny(repeats: int, steps: int) -> dict:
    """Wall ms per job on this CPU with the dev weights (see the module docstring)."""
    import importlib.util

    import numpy as np
    import torch

    from core.contract import parse_job
    from core.pipeline import Worker
    from core.settings import Settings
    from tests.conftest import data_url, png_bytes
    from weights.resolve import set_offline_env
    from weights.tiny import ensure_dev_weights

    set_offline_env()
    wd = Path(os.environ.get("MASKPAINT_WEIGHTS_DIR", ".weights"))
    ensure_dev_weights(wd)
    import tempfile

    out_dir = Path(tempfile.mkdtemp(prefix="maskpaint-bench-conditioning-"))  # fresh job records
    worker = Worker.cold_start(Settings(weights_dir=wd, output_dir=out_dir, device="cpu"))
    spec = importlib.util.find_spec
    astro = (Path(spec("skimage").origin).parent / "data/astronaut.png").read_bytes()
    bus = (Path(spec("ultralytics").origin).parent / "assets/bus.jpg").read_bytes()
    mask = np.zeros((512, 512), np.uint8)
    mask[300:500, 120:420] = 255
    base = {"image": data_url(astro, "image/png"), "mask": data_url(png_bytes(mask), "image/png"),
            "prompt": "a red leather jacket", "num_inference_steps": steps, "seed": 1,
            "protect_face": False, "protect_hands": False}
    variants = {
        "plain": {},
        "garment": {"garment_image": data_url(bus)},
        "pose": {"control": "pose"},
        "garment+pose": {"garment_image": data_url(bus), "control": "pose"},
        "gallery3": {"num_outputs": 3},
        "garment+pose+gallery3": {"garment_image": data_url(bus), "control": "pose",
                                  "num_outputs": 3},
    }
    res: dict = {"steps": steps, "repeats": repeats, "threads": torch.get_num_threads(), "ms": {},
                 "inpaint_ms": {}}
    # round robin (a warm-up round first), so load from other processes on a shared machine
    # falls on every variant alike; medians per variant
    walls: dict[str, list[float]] = {k: [] for k in variants}
    inp: dict[str, list[float]] = {k: [] for k in variants}
    n = 0
    for r in range(repeats + 1):
        for name, extra in variants.items():
            n += 1
            job = parse_job(f"bench-{n}", {**base, **extra})
            t = time.perf_counter()
            result = worker.run(job)
            if r:
                walls[name].append((time.perf_counter() - t) * 1000)
                inp[name].append(result.timings_ms["inpaint"])
    for name in variants:
        res["ms"][name] = round(statistics.median(walls[name]), 1)
        res["inpaint_ms"][name] = round(statistics.median(inp[name]), 1)
    cond = worker.models.conditioning["sd15-inpaint"]
    pipe = worker.models.inpainters["sd15-inpaint"].pipe
    nbytes = lambda mod: sum(p.numel() * p.element_size() for p in mod.parameters())  # noqa: E731
    ip_procs = sum(nbytes(p) for p in pipe.unet.attn_processors.values()
                   if isinstance(p, torch.nn.Module))
    res["addon_bytes"] = {
        "image_encoder": nbytes(pipe.image_encoder),
        "ip_adapter_proj_and_attn": nbytes(pipe.unet.encoder_hid_proj) + ip_procs,
        "controlnet": nbytes(cond.control_pipe.controlnet),
        "unet": nbytes(pipe.unet),
    }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--skip-cpu", action="store_true")
    args = ap.parse_args()
    report = {"gpu_estimate": gpu_estimate()}
    if not args.skip_cpu:
        report["cpu_tiny"] = cpu_tiny(args.repeats, args.steps)
        report["cpu_tiny"]["loadavg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))
    out = Path(__file__).parent / "results"
    (out / "conditioning.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "conditioning.md").write_text(markdown(report))


def markdown(report: dict) -> str:
    """The report as the Markdown section bench/RESULTS.md includes."""
    lines = ["| model | extra GPU memory (fp16 weights) | ControlNet extra compute per step "
             "| IP-Adapter image encoder, once per job (vs one UNet step) |",
             "| --- | --- | --- | --- |"]
    for name, g in report["gpu_estimate"].items():
        lines.append(
            f"| {name} at {g['resolution_px']} px | IP-Adapter {g['ip_adapter_fp16_bytes'] / 1e9:.2f} GB, "
            f"ControlNet {g['controlnet_fp16_bytes'] / 1e9:.2f} GB | "
            f"+{g['controlnet_extra_per_step'] * 100:.0f} % ({g['controlnet_step_GFLOP']:.0f} vs "
            f"{g['unet_step_GFLOP']:.0f} GFLOP) | {g['image_encoder_GFLOP_per_job']:.0f} GFLOP "
            f"({g['ip_adapter_encoder_vs_one_unet_step']:.3f}) |")
    text = ("GPU estimate: FLOPs counted on the real architectures (meta device, no weights "
            "loaded), sizes from the manifest pins.\n\n" + "\n".join(lines) + "\n")
    cpu = report.get("cpu_tiny")
    if cpu:
        text += (f"\nCPU, tiny dev models ({cpu['steps']} steps, median of {cpu['repeats']} "
                 f"alternating rounds, {cpu['threads']} threads, load average at the end "
                 f"{cpu.get('loadavg_end', '?')}): whole job ms " + ", ".join(
                     f"{k} {v:.0f}" for k, v in cpu["ms"].items()) +
                 ". Add-on sizes: " + ", ".join(
                     f"{k} {v / 1e6:.2f} MB" for k, v in cpu["addon_bytes"].items()) +
                 ". These tiny models show the plumbing's cost (hint drawing, the ControlNet "
                 "branch, the batch); for real weights the GPU rows above are the guide.\n")
    return text


if __name__ == "__main__":
    main()
