"""Inpainting: crop around the mask, run the diffusers pipeline, paste back through the alpha.

Why the crop / paste-back is ours and not diffusers' ``padding_mask_crop``: diffusers pastes the
generated crop back through the *binary* mask after resampling, so pixels outside the mask are
not guaranteed bit-identical and there is no feathered blend. Here every pixel with alpha == 0 is
copied from the input untouched (``np.where``), and the band 0 < alpha < 1 blends.

Arrays: photo H x W x 3 uint8 RGB; alpha H x W float32 in [0, 1].
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from core import timing
from core.buckets import fit_bucket
from core.cvshape import nonzero_xy
from core.errors import is_oom
from core.masking.post import bbox
from core.sampling import SamplingPlan, applied

log = logging.getLogger("maskpaint.inpaint")

#: Context around the mask's bounding box, as a fraction of its longer side (min 32 px): the
#: model needs surroundings to match lighting and style.
CROP_PAD_FRAC = 0.15
CROP_PAD_MIN_PX = 32


@dataclass(frozen=True)
class InpaintParams:
    """The caller's settings for one repaint.

    Attributes:
        call_kwargs: keywords for the diffusers call (prompt, sampler settings), from
            :meth:`core.contract.JobRequest.inpaint_kwargs`.
        seed: seed of the CPU ``torch.Generator`` (same seed, same noise on any device).
        sampling: the scheduler to swap in and whether the draft LoRA is on
            (:func:`core.sampling.plan`); None: the pipeline's own scheduler, no LoRA.
    """

    call_kwargs: Mapping[str, Any]
    seed: int
    sampling: SamplingPlan | None = None


def crop_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    """Padded ``(x0, y0, x1, y1)`` px box (exclusive ends) around ``alpha > 0``.

    Raises:
        ValueError: the mask is empty.
    """
    h, w = alpha.shape
    box = bbox(alpha > 0)
    if box is None:
        raise ValueError("empty mask")
    x0, y0, x1, y1 = box
    pad = max(CROP_PAD_MIN_PX, int(CROP_PAD_FRAC * max(x1 - x0, y1 - y0)))
    return max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)


def model_size(crop_w: int, crop_h: int, resolution: int) -> tuple[int, int]:
    """(width, height) px for the model: the crop scaled so its long side is ``resolution``,
    each side rounded to a multiple of 8 (the VAE's downsampling factor), at least 64."""
    s = resolution / max(crop_w, crop_h)
    return (max(64, int(round(crop_w * s / 8)) * 8), max(64, int(round(crop_h * s / 8)) * 8))


def shrink(img: np.ndarray, size: tuple[int, int],
           last: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Downscale H x W (x C) ``img`` (uint8 or float32) to ``size`` = (width, height) px, which
    must not be larger: halvings with OpenCV ``INTER_AREA`` (2 x 2 means; an odd last row or
    column is dropped) while the image is at least twice ``size``, then one resize with
    ``last`` (a factor between 1 and 2: with ``INTER_LINEAR`` every source pixel still
    contributes; ``INTER_AREA`` is the exact area mean).

    Why not one ``INTER_AREA`` resize: for a non-integer factor OpenCV takes its generic path,
    measured (2 cores) 80 ms for 3000 x 4000 -> 1224 x 1632 RGB against 9 ms this way.
    """
    w, h = size
    while img.shape[1] >= 2 * w and img.shape[0] >= 2 * h:
        hh, ww = img.shape[0] // 2, img.shape[1] // 2
        img = cv2.resize(img[:2 * hh, :2 * ww], (ww, hh), interpolation=cv2.INTER_AREA)
    if (img.shape[1], img.shape[0]) != (w, h):
        img = cv2.resize(img, (w, h), interpolation=last)
    return img


def _resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H x W x 3 uint8 -> ``size`` = (width, height) px with OpenCV: area means when shrinking
    (:func:`shrink`, last step ``INTER_AREA``; anti-aliased), ``INTER_CUBIC`` when enlarging.
    Measured (2 cores) against Pillow's LANCZOS: 384 x 512 -> 2000 x 2600 in 7 ms instead
    of 142, 2000 x 2600 -> 384 x 512 in 27 ms instead of 60 (a single ``INTER_AREA``; ~8 ms
    with the halvings). Only repainted pixels pass through it."""
    w, h = size
    if w <= arr.shape[1] and h <= arr.shape[0]:
        return shrink(arr, (w, h), cv2.INTER_AREA)
    smaller = w * h < arr.shape[0] * arr.shape[1]  # (one side grows: a thin crop's 64 px floor)
    return cv2.resize(arr, (w, h), interpolation=cv2.INTER_AREA if smaller else cv2.INTER_CUBIC)


_TINY = float(np.finfo(np.float32).tiny)
_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


def composite(original: np.ndarray, generated: np.ndarray, alpha: np.ndarray,
              out: np.ndarray | None = None) -> np.ndarray:
    """Blend ``generated`` over ``original`` by ``alpha``: alpha == 0 pixels are ``original``'s,
    alpha == 1 pixels ``generated``'s, both copied exactly; the band 0 < alpha < 1 is
    ``round(original * (1 - alpha) + generated * alpha)`` in float32.

    ``original`` and ``generated`` are the same H x W x 3 or H x W, uint8 or uint16 (a 16-bit
    or greyscale photo, :mod:`core.pngdepth`), ``alpha`` H x W float32; returns ``original``'s
    shape and dtype: ``out`` when given (it must hold ``original``'s pixels already, e.g. a
    view of the photo's copy; written in place), else a new array.

    Only the band is computed in float (gathered by index): on a 12 MP photo with a quarter of
    it masked that is ~60k pixels instead of the 4.8 MP crop, and the alpha == 1 part is an
    OpenCV masked copy; measured (2 cores) 30 ms instead of 199 ms, with identical pixels.
    """
    if out is None:
        out = original.copy()
    copied = cv2.copyTo(generated, cv2.compare(alpha, 1.0, cv2.CMP_GE), out)
    if copied is not out:  # (OpenCV writes into ``out`` when it can; else it returns a copy)
        out[...] = copied
    # the band; an alpha under float32's smallest normal number would round to the original
    xs, ys = nonzero_xy(cv2.inRange(alpha, _TINY, _BELOW_ONE))
    if not len(xs):
        return out
    a = alpha[ys, xs].reshape(-1, *([1] * (original.ndim - 2)))  # (per pixel, per channel)
    out[ys, xs] = (original[ys, xs].astype(np.float32) * (1 - a)
                   + generated[ys, xs].astype(np.float32) * a + 0.5).astype(out.dtype)
    return out


def _repaint_mask(alpha: np.ndarray) -> np.ndarray:
    """H x W uint8, 255 where ``alpha`` (H x W float32) > 0, else 0: OpenCV's comparison, 1 B/px
    (``(alpha > 0) * 255`` made an int64 temporary, 8 B/px: 1.3 frames for a 5.5 MP crop of a
    12 MP photo)."""
    return cv2.compare(alpha, 0.0, cv2.CMP_GT)


def step_ends(pipe) -> dict[int, int]:
    """Model call index -> the denoising step (1-based) it completes, for the run a diffusers
    pipeline has just set up; ``{}`` when the pipeline does not say.

    A step is a run of equal timesteps: PNDM's first PLMS step evaluates its timestep twice
    (8 steps are 9 model calls), Heun's second-order steps every timestep after the first twice;
    counting calls reported "step 9 / 9" for 8 steps. The run's timesteps are the last
    ``pipe.num_timesteps`` of ``pipe.scheduler.timesteps`` (diffusers' ``get_timesteps`` drops
    the first ones when ``strength`` < 1). With ``strength`` 1 the count is the steps asked
    for; below 1 it is ``int(steps * strength)``, or one more where the slice diffusers takes
    starts inside PNDM's repeated timestep (5 steps at 0.6: timesteps 600, 400, 200, 0).
    """
    n = int(getattr(pipe, "num_timesteps", 0) or 0)
    ts = getattr(getattr(pipe, "scheduler", None), "timesteps", None)
    if n <= 0 or ts is None or len(ts) < n:
        return {}
    ts = [float(t) for t in ts[len(ts) - n:]]
    ends, step = {}, 0
    for i in range(n):
        if i == n - 1 or ts[i + 1] != ts[i]:  # the last call of this timestep
            step += 1
            ends[i] = step
    return ends


#: ``extra(crop_box, (model_w, model_h)) -> (pipeline, call keywords)``: what a conditioned job
#: calls instead (e.g. the ControlNet pipeline with its pose hint, the IP-Adapter image).
Extra = Callable[[tuple[int, int, int, int], tuple[int, int]], tuple[Any, dict[str, Any]]]


def inpaint(
    pipe,
    resolution: int,
    image: np.ndarray,
    alpha: np.ndarray,
    params: InpaintParams,
    on_step: Callable[[int, int], None] | None = None,
    *,
    model_image: np.ndarray | None = None,
    from_model: Callable[[np.ndarray], np.ndarray] | None = None,
    num_outputs: int = 1,
    extra: Extra | None = None,
    in_place: bool = False,
    buckets: Sequence[tuple[int, int]] | None = None,
) -> tuple[list[np.ndarray], dict]:
    """Repaint ``alpha > 0`` of ``image`` ``num_outputs`` times with a diffusers inpainting
    pipeline (seeds ``params.seed + i``), as one ``num_images_per_prompt`` batch, or one image
    at a time after a GPU out-of-memory error.

    Args:
        pipe: a loaded ``StableDiffusion(XL)InpaintPipeline``.
        resolution: the model's native side in px (512 for SD 1.5, 1024 for SDXL).
        image: H x W x 3 uint8 RGB, the pixels composited with the painted ones (and copied
            unchanged where alpha == 0); or a photo's own H x W (x 3) uint8/uint16 samples
            (:meth:`core.imageio.Photo.paint_target`), with ``from_model`` mapping into them.
        alpha: H x W float32 in [0, 1]; must have a pixel > 0.
        params: prompt and sampler settings; each seed drives a CPU ``torch.Generator`` so the
            same seed gives the same noise on any device.
        on_step: called as ``on_step(step, total)`` once per denoising step, steps 1 to
            ``total`` in order (:func:`step_ends`: a step the scheduler evaluates twice is
            reported once); may raise to abort (e.g. a deadline).
        model_image: H x W x 3 uint8 RGB the model sees (default ``image``): the photo in sRGB,
            transparency over white, when ``image`` is in another colour space.
        from_model: maps the model's H x W x 3 uint8 sRGB output into ``image``'s colour
            space, mode and dtype before compositing (default: unchanged).
        num_outputs: images to make (1-4).
        extra: conditioning hook (see :data:`Extra`); default: ``pipe`` with no extra keywords.
        in_place: the caller hands ``image`` over: the last output is painted into ``image``
            itself instead of a copy (on a 12 MP photo one frame, 34 MiB, less held from here
            to the end of the job). The caller must not need ``image``'s original pixels
            afterwards (nor ``model_image``'s, when it is the same array).
        buckets: fixed (width, height) px working sizes (:func:`core.buckets.buckets_for`):
            the crop grows to the nearest one's aspect and the model runs at that size
            (default: the crop's own aspect, long side ``resolution``).

    Returns:
        (``num_outputs`` results of ``image``'s shape and dtype in seed order, facts: crop
        box and model size in px, the batch size used, the diffusers scheduler class that ran).
    """
    import torch

    x0, y0, x1, y1 = crop_box(alpha)
    if buckets:  # repeating shapes for a compiled UNet: the crop grows to a bucket's aspect
        (x0, y0, x1, y1), (mw, mh) = fit_bucket((x0, y0, x1, y1), alpha.shape[::-1], buckets)
    else:
        mw, mh = model_size(x1 - x0, y1 - y0, resolution)
    crop = image[y0:y1, x0:x1]
    crop_alpha = alpha[y0:y1, x0:x1]
    seen = (image if model_image is None else model_image)[y0:y1, x0:x1]
    crop_img = Image.fromarray(_resize(seen, (mw, mh)))
    # the model repaints the whole band alpha > 0; the blend weights come back at paste time
    crop_mask = Image.fromarray(_repaint_mask(crop_alpha)).resize((mw, mh),
                                                                  Image.Resampling.NEAREST)
    run_pipe, kwargs = extra((x0, y0, x1, y1), (mw, mh)) if extra is not None else (pipe, {})

    steps: dict[int, int] = {}  # model call index -> denoising step it completes (1-based)
    total = [0]

    def _cb(pipe_, i, _t, kw):
        if on_step is None:
            return kw
        if i == 0:  # the first call of a run: the scheduler now holds this run's timesteps
            steps.clear()
            steps.update(step_ends(pipe_))
            total[0] = max(steps.values(), default=0)
        if not steps:  # (a pipeline without the usual attributes: one step per call)
            on_step(i + 1, max(i + 1, int(getattr(pipe_, "num_timesteps", 0))))
        elif i in steps:
            on_step(steps[i], total[0])
        return kw

    sp = params.sampling or SamplingPlan("default", "standard",
                                         int(params.call_kwargs.get("num_inference_steps", 0)),
                                         float(params.call_kwargs.get("guidance_scale", 0.0)))
    ran: list[str] = []

    def call(seeds: list[int]) -> list[Image.Image]:
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        # the job's scheduler (and draft LoRA) for this call only: restored afterwards
        with torch.inference_mode(), timing.scope("inpaint"), timing.forward(), \
                applied(run_pipe, sp, lora_pipe=pipe) as scheduler_class:
            ran.append(scheduler_class)
            return run_pipe(
                **params.call_kwargs, image=crop_img, mask_image=crop_mask, height=mh, width=mw,
                num_images_per_prompt=len(seeds), generator=gens[0] if len(gens) == 1 else gens,
                callback_on_step_end=_cb, output_type="pil", **kwargs,
            ).images

    seeds = [params.seed + i for i in range(num_outputs)]
    batch = num_outputs
    try:
        outs = call(seeds)
    except Exception as exc:
        if num_outputs == 1 or not is_oom(exc):
            raise
        log.warning("gallery of %d did not fit in GPU memory; one image at a time", num_outputs)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        batch = 1
        outs = [call([s])[0] for s in seeds]
    results = []
    for i, out in enumerate(outs):
        gen = _resize(np.asarray(out.convert("RGB")), (x1 - x0, y1 - y0))
        if from_model is not None:
            gen = from_model(gen)
        # (in place: ``crop`` is a view of ``result``; composite reads only pixels it has not
        # written yet, the band, so the blend is the same)
        last = in_place and i == len(outs) - 1 and image.flags.writeable
        result = image if last else image.copy()
        composite(crop, gen, crop_alpha, out=result[y0:y1, x0:x1])
        results.append(result)
    return results, {"crop_box": [x0, y0, x1, y1], "model_size": [mw, mh], "batch": batch,
                     "scheduler_class": ran[-1]}
