"""Warm start: run each loaded pipeline once at cold start, so the first job is not the slow one.

A fresh CUDA process pays on its first pass what later passes do not: kernels are loaded lazily
(``CUDA_MODULE_LOADING=LAZY``, the default since CUDA 11.7: each kernel on its first launch),
cuBLAS / cuDNN create handles and pick algorithms, PyTorch's caching allocator grows its pools,
and Pillow / diffusers import what they import lazily. A first H200 run made outside this
project (the team's notes, not this bench) saw the first SD 1.5 job take 1.70 s against 0.86 s
warm; ``python -m bench.gpu`` measures it with this setting off and on. With
``MASKPAINT_WARMUP`` on, :func:`warm_up` makes one 2-step pass per pipeline a worker holds
(plain, reference garment through the IP-Adapter's image encoder, pose through the ControlNet),
through the same :func:`core.inpaint.inpaint` a job uses, at the model's native square size; the
cold start pays it once. With a compiled UNet (:mod:`core.compile`) the same passes, at every
compiled size, are what compiles it.

Why hand-written: diffusers has no warm-up helper; this is a loop over our own job path.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

log = logging.getLogger("maskpaint.warmup")

#: Denoising steps of a warm-up pass (2: some schedulers need more than one step).
STEPS = 2
#: OpenPose's 18 keypoints of a standing figure, as fractions of the image (x, y): the pose
#: ControlNet's hint drawing and the ControlNet itself run as in a job.
FIGURE = ((.5, .15), (.5, .3), (.38, .3), (.33, .45), (.3, .6), (.62, .3), (.67, .45), (.7, .6),
          (.42, .6), (.42, .78), (.42, .95), (.58, .6), (.58, .78), (.58, .95), (.47, .12),
          (.53, .12), (.44, .13), (.56, .13))


def variants(cond: Any) -> list[str]:
    """The conditioning paths a worker can take for one inpainting model: ``plain`` always,
    ``garment`` with an IP-Adapter loaded, ``pose`` with a ControlNet pipeline."""
    out = ["plain"]
    if cond is not None and cond.ip_adapter is not None:
        out.append("garment")
    if cond is not None and cond.control_pipe is not None:
        out.append("pose")
    return out


def one_pass(inpainter: Any, cond: Any, variant: str, size: tuple[int, int],
             num_outputs: int = 1, steps: int = STEPS) -> None:
    """One job-shaped denoising pass of ``inpainter`` at exactly ``size`` (width, height) px.

    The photo is a smooth synthetic gradient of ``size`` with its centre half masked; the only
    bucket offered is ``size``, so the model runs at that shape (what a compiled UNet needs).

    Raises:
        whatever the pipeline raises (e.g. out of GPU memory).
    """
    from core.conditioning import call_extra
    from core.inpaint import InpaintParams, inpaint

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1),
                      (xx + yy) * 127 // max(1, w + h - 2)], axis=-1).astype(np.uint8)
    alpha = np.zeros((h, w), np.float32)
    alpha[h // 4:3 * h // 4, w // 4:3 * w // 4] = 1.0
    guidance = 5.0
    garment = image[: h // 2, : w // 2].copy() if variant == "garment" else None
    pose18 = (np.array([(x * w, y * h, 1.0) for x, y in FIGURE], np.float32)
              if variant == "pose" else None)
    inpaint(inpainter.pipe, inpainter.resolution, image, alpha,
            InpaintParams({"prompt": "a jacket", "num_inference_steps": steps,
                           "guidance_scale": guidance}, seed=0),
            num_outputs=num_outputs, buckets=[size],
            extra=call_extra(inpainter.pipe, cond, guidance_scale=guidance, garment=garment,
                             garment_scale=0.6, pose18=pose18, control_scale=1.0))


def warm_up(models: Any) -> dict[str, float]:
    """One :func:`one_pass` per pipeline path of every loaded inpainting model, at its native
    square size. A failing pass is logged and skipped (the jobs report their own errors).

    Returns:
        ``{"warmup.<model key>": ms}``, wall time per model.
    """
    out: dict[str, float] = {}
    for key, inp in models.inpainters.items():
        cond = getattr(models, "conditioning", {}).get(key)
        t = time.perf_counter()
        for variant in variants(cond):
            try:
                one_pass(inp, cond, variant, (inp.resolution, inp.resolution))
            except Exception:
                log.exception("warm-up pass %s/%s failed; jobs run cold", key, variant)
        out[f"warmup.{key}"] = round((time.perf_counter() - t) * 1000, 1)
        log.info("warm-up of %s took %.0f ms", key, out[f"warmup.{key}"])
    return out


def ready(models: Any, settings: Any) -> dict[str, float]:
    """The cold start's speed step, after the models are on their device: the compiled UNet
    (``settings.compile_unet``, :func:`core.compile.enable`), then the warm-up passes
    (``settings.warmup``). Returns their times, ms (empty when both are off)."""
    out: dict[str, float] = {}
    if settings.compile_unet:
        from core.compile import enable

        out.update(enable(models, settings.weights_dir))
    if settings.warmup:
        out.update(warm_up(models))
    return out
