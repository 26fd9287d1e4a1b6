"""What a draft job (``speed: "draft"``, the LCM-LoRA at 4 steps) costs against a standard one.

``python -m bench.drafts [--repeats 3]`` prints one JSON document and writes
``bench/results/drafts.{json,md}``:

- ``cpu_tiny``: the same job (astronaut.png, a provided 300 x 200 px mask, seed 1) through
  :class:`core.pipeline.Worker` with the tiny dev models, for SD 1.5 and SDXL: ``standard`` at
  the contract's defaults (the model's own sampler, 30 steps, guidance 7.5, so a CFG batch of 2)
  against ``draft`` (LCM sampler, 4 steps, guidance 1, no CFG: a batch of 1, the LoRA's extra
  matmuls on). Median wall ms per job and of the ``inpaint`` stage over ``--repeats``
  round-robin rounds after a warm-up round, and their ratios. The tiny UNet is cheap next to
  the tiny VAE's encode and decode (which a draft does not shrink) and the fixed per-job work,
  so the ratios here understate a GPU's with the real UNet.
- ``gpu_estimate``: not a GPU run: UNet FLOPs per job on the real architectures (counted on the
  ``meta`` device by ``torch.utils.flop_counter``; configs from :mod:`bench.conditioning`):
  steps x CFG batch x one step, the LoRA's share taken as its parameter count over the UNet's
  (the manifest's pinned bytes, both fp16), which bounds the extra work of its linear layers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

STANDARD = {}  # the contract's defaults: scheduler default, 30 steps, guidance 7.5
DRAFT = {"speed": "draft"}


def cpu_tiny(repeats: int) -> dict:
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
    out_dir = Path(tempfile.mkdtemp(prefix="maskpaint-bench-drafts-"))  # fresh job records
    worker = Worker.cold_start(Settings(weights_dir=wd, output_dir=out_dir, device="cpu"))
    astro = (Path(importlib.util.find_spec("skimage").origin).parent
             / "data/astronaut.png").read_bytes()
    mask = np.zeros((512, 512), np.uint8)
    mask[300:500, 120:420] = 255
    base = {"image": data_url(astro, "image/png"), "mask": data_url(png_bytes(mask), "image/png"),
            "prompt": "a red leather jacket", "seed": 1, "protect_face": False,
            "protect_hands": False}
    variants = {f"{model}/{speed}": {"model": f"{model}-inpaint", **extra}
                for model in ("sd15", "sdxl")
                for speed, extra in (("standard", STANDARD), ("draft", DRAFT))}
    walls: dict[str, list[float]] = {k: [] for k in variants}
    inp: dict[str, list[float]] = {k: [] for k in variants}
    ran: dict[str, dict] = {}
    n = 0
    for r in range(repeats + 1):  # round robin, a warm-up round first
        for name, extra in variants.items():
            n += 1
            job = parse_job(f"bench-drafts-{n}", {**base, **extra})
            t = time.perf_counter()
            result = worker.run(job)
            if r:
                walls[name].append((time.perf_counter() - t) * 1000)
                inp[name].append(result.timings_ms["inpaint"])
            ran[name] = result.sampling.model_dump()
    res: dict = {"repeats": repeats, "threads": torch.get_num_threads(), "ms": {},
                 "inpaint_ms": {}, "sampling": ran, "ratio_job": {}, "ratio_inpaint": {}}
    for name in variants:
        res["ms"][name] = round(statistics.median(walls[name]), 1)
        res["inpaint_ms"][name] = round(statistics.median(inp[name]), 1)
    for model in ("sd15", "sdxl"):
        for key, table in (("ratio_job", "ms"), ("ratio_inpaint", "inpaint_ms")):
            res[key][model] = round(res[table][f"{model}/standard"]
                                    / res[table][f"{model}/draft"], 2)
    return res


def gpu_estimate() -> dict:
    """UNet GFLOP per job, standard vs draft, on the real architectures (meta device)."""
    import torch
    from diffusers import UNet2DConditionModel

    from bench.conditioning import SD15_UNET, SDXL_UNET, _flops
    from core.sampling import DRAFT_STEPS
    from weights.manifest import load_manifest

    m = load_manifest()
    size = lambda key: sum(f.size or 0 for f in m.models[key].source.files)  # noqa: E731
    unet_bytes = lambda key: sum(f.size or 0 for f in m.models[key].source.files  # noqa: E731
                                 if f.path.startswith("unet/") and f.path.endswith(".safetensors"))
    out = {}
    with torch.device("meta"):
        for name, cfg, side, ctx, xl in (("sd15", SD15_UNET, 64, 768, False),
                                         ("sdxl", SDXL_UNET, 128, 2048, True)):
            unet = UNet2DConditionModel(**cfg)

            def step(b: int) -> int:
                added = ({"text_embeds": torch.zeros(b, 1280), "time_ids": torch.zeros(b, 6)}
                         if xl else None)
                return _flops(lambda: unet(torch.zeros(b, 9, side, side), torch.zeros(b),
                                           torch.zeros(b, 77, ctx), added_cond_kwargs=added))

            lora_share = size(f"lcm-lora-{name}") / unet_bytes(f"{name}-inpaint")
            standard = 30 * step(2)
            draft = DRAFT_STEPS[0] * step(1) * (1 + lora_share)
            out[name] = {"standard_unet_GFLOP": round(standard / 1e9),
                         "draft_unet_GFLOP": round(draft / 1e9),
                         "lora_share_of_unet_params": round(lora_share, 3),
                         "unet_ratio": round(standard / draft, 1)}
    return out


def markdown(report: dict) -> str:
    c = report.get("cpu_tiny")
    g = report["gpu_estimate"]
    lines = [f"## Drafts (`python -m bench.drafts`, run {report['date']})", ""]
    if c:
        lines += [
            f"CPU, tiny dev models (median of {c['repeats']} alternating rounds, {c['threads']} "
            f"threads, load average at the end {c['loadavg_end']}); standard = the contract's "
            "defaults (the model's sampler, 30 steps, guidance 7.5), draft = `speed: \"draft\"` "
            "(LCM-LoRA, 4 steps, guidance 1). Absolute ms follow the shared machine's load; "
            "the ratios are the result:", "",
            "| model | standard job ms | draft job ms | job ratio | standard inpaint ms | "
            "draft inpaint ms | inpaint ratio |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for model in ("sd15", "sdxl"):
            lines.append(
                f"| {model} | {c['ms'][model + '/standard']:.0f} | {c['ms'][model + '/draft']:.0f}"
                f" | {c['ratio_job'][model]}x | {c['inpaint_ms'][model + '/standard']:.0f} | "
                f"{c['inpaint_ms'][model + '/draft']:.0f} | {c['ratio_inpaint'][model]}x |")
        lines += ["", "The tiny UNet is cheap next to the tiny VAE's encode and decode, which a "
                  "draft does not shrink, so these ratios understate the real models'.", ""]
    lines += ["GPU estimate (UNet FLOPs per job on the real architectures, meta device; not a "
              "GPU run): 30 steps x CFG batch 2 against 4 steps x batch 1 plus the LoRA's "
              "parameter share:", ""]
    for model, v in g.items():
        lines.append(f"- {model}: {v['standard_unet_GFLOP']} vs {v['draft_unet_GFLOP']} GFLOP "
                     f"= {v['unet_ratio']}x less UNet work (LoRA {v['lora_share_of_unet_params']:.1%}"
                     " of the UNet's parameters)")
    lines += ["", "The per-job fixed work (fetch, decode, mask, VAE, encode, upload) does not "
              "shrink, so a whole job gains less than the UNet ratio.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--report-only", action="store_true",
                    help="re-render bench/results/drafts.md from drafts.json")
    args = ap.parse_args()
    out = Path(__file__).parent / "results"
    if args.report_only:
        (out / "drafts.md").write_text(markdown(json.loads((out / "drafts.json").read_text())))
        return
    report: dict = {"date": datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC"), "gpu_estimate": gpu_estimate()}
    if not args.skip_cpu:
        report["cpu_tiny"] = cpu_tiny(args.repeats)
        report["cpu_tiny"]["loadavg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))
    (out / "drafts.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "drafts.md").write_text(markdown(report))


if __name__ == "__main__":
    main()
