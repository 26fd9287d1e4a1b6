"""The GPU bench's jobs: inputs, the job matrix, one job through the RunPod handler, the anchor.

Inputs: scikit-image's ``astronaut.png`` (a real photo of a person, 512 x 512; MediaPipe's pose
model finds her, which the pose cells need), cut to 3:4 portrait around her and resized
(LANCZOS) to each size, with mild Gaussian noise (sigma 2) so the encoders see photo-like
content rather than an upscaled smooth image; sent as a JPEG q90 data URL. The provided mask
is the torso and below (x 20-80 %, y 40-95 %: ~33 % of the frame), a PNG data URL. The reference
garment is scikit-image's ``coffee.png`` (any photo: the garment detector is not loaded, so the
whole photo is the reference).
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass
from pathlib import Path

#: name -> (width, height) px, 3:4 portrait.
SIZES: dict[str, tuple[int, int]] = {"0.9MP": (816, 1088), "3.5MP": (1620, 2160),
                                      "12MP": (3000, 4000)}
TINY_SIZES: dict[str, tuple[int, int]] = {"0.9MP": (816, 1088)}
VARIANTS = ("plain", "garment", "pose", "outputs4")
#: The heaviest job a profile runs: reference garment + pose + 4 outputs (peak memory).
HEAVIEST = "all"
MODELS = ("sd15-inpaint", "sdxl-inpaint")
MASK_BOX = (0.2, 0.4, 0.8, 0.95)  # fractions of (w, h, w, h)
PROMPT = "a red leather jacket, studio lighting"


@dataclass(frozen=True)
class Cell:
    model: str
    size: str
    variant: str
    fmt: str = "png"

    @property
    def name(self) -> str:
        fmt = "" if self.fmt == "png" else f"/{self.fmt}"
        return f"{self.model}/{self.size}/{self.variant}{fmt}"


def matrix(quick: bool, tiny: bool) -> list[Cell]:
    """The cells to run, most important first (a budget cuts from the end).

    Full: 2 models x 3 sizes x 4 variants, plus a JPEG output at 12 MP and the heaviest job
    (garment + pose + 4 outputs) at 12 MP. Quick: the plain 0.9 MP jobs, the plain 12 MP jobs
    (PNG and JPEG), the add-ons at 0.9 MP, the heaviest jobs. Tiny (CPU check): SD 1.5 plain
    and garment at 0.9 MP, SDXL plain. The plain 0.9 MP cells come first (the anchor follows
    them).
    """
    if tiny:
        return [Cell("sd15-inpaint", "0.9MP", "plain"), Cell("sdxl-inpaint", "0.9MP", "plain"),
                Cell("sd15-inpaint", "0.9MP", "garment")]
    if quick:
        first = [Cell(m, "0.9MP", "plain") for m in MODELS]
        first += [Cell(m, "12MP", "plain", f) for m in MODELS for f in ("png", "jpeg")]
        return (first + [Cell(m, "0.9MP", v) for v in VARIANTS[1:] for m in MODELS]
                + [Cell(m, "12MP", HEAVIEST) for m in MODELS])
    cells = [Cell(m, "0.9MP", "plain") for m in MODELS]
    cells += [Cell(m, s, v) for m in MODELS for s in SIZES for v in VARIANTS
              if (s, v) != ("0.9MP", "plain")]
    return (cells + [Cell(m, "12MP", "plain", "jpeg") for m in MODELS]
            + [Cell(m, "12MP", HEAVIEST) for m in MODELS])


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def photo(size: tuple[int, int]) -> tuple[bytes, bytes]:
    """(JPEG bytes of the person photo at ``size``, PNG bytes of its mask)."""
    import numpy as np
    from PIL import Image, ImageDraw
    from skimage import data

    w, h = size
    src = Image.fromarray(data.astronaut()).crop((64, 0, 448, 512))  # 384 x 512, 3:4
    img = np.asarray(src.resize(size, Image.Resampling.LANCZOS), np.float32)
    noise = np.random.default_rng(0).normal(0, 2, img.shape).astype(np.float32)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    m = Image.new("L", size, 0)
    x0, y0, x1, y1 = MASK_BOX
    ImageDraw.Draw(m).rectangle((int(w * x0), int(h * y0), int(w * x1), int(h * y1)), fill=255)
    mbuf = io.BytesIO()
    m.save(mbuf, format="PNG")
    return buf.getvalue(), mbuf.getvalue()


def garment() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.coffee()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Inputs:
    """Data URLs per size, made once."""

    def __init__(self, sizes: dict[str, tuple[int, int]]) -> None:
        self.sizes = sizes
        self._photos: dict[str, tuple[str, str]] = {}
        self._garment: str | None = None

    def job(self, cell: Cell, steps: int, seed: int = 1) -> dict:
        if cell.size not in self._photos:
            jpg, png = photo(self.sizes[cell.size])
            self._photos[cell.size] = (_data_url(jpg, "image/jpeg"), _data_url(png, "image/png"))
        image, mask = self._photos[cell.size]
        inp = {"image": image, "mask": mask, "prompt": PROMPT, "num_inference_steps": steps,
               "seed": seed, "model": cell.model, "protect_face": False,
               "output": {"format": cell.fmt}}
        if cell.variant in ("garment", HEAVIEST):
            if self._garment is None:
                self._garment = _data_url(garment(), "image/jpeg")
            inp["garment_image"] = self._garment
        if cell.variant in ("pose", HEAVIEST):
            inp["control"] = "pose"
        if cell.variant in ("outputs4", HEAVIEST):
            inp["num_outputs"] = 4
        return inp


def gpu_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_job(handler, job_input: dict, job_id: str, output_dir=None) -> dict:
    """One job through the RunPod handler: wall ms, the result's ``timings_ms``, peak GPU memory
    (``torch.cuda.max_memory_allocated``, reset before the job; None on CPU), error if any.
    The job's stored files are removed afterwards (``output_dir``: the worker's local outputs
    root, ``<output dir>/<prefix>``)."""
    import shutil

    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    gpu_sync()
    t = time.perf_counter()
    out = handler({"id": job_id, "input": job_input})
    gpu_sync()
    wall = (time.perf_counter() - t) * 1000
    rec = {"job": job_id, "wall_ms": round(wall, 1),
           "peak_vram_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 3) if cuda else None,
           "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2 ** 30, 3) if cuda
           else None}
    if "error" in out:
        rec["error"] = out["error"]
    else:
        t_ms = out.get("timings_ms", {})
        rec["timings_ms"] = t_ms
        rec["forward_ms"] = round(sum(v for k, v in t_ms.items() if k.endswith(".forward")), 1)
    if output_dir is not None:
        from core.contract import safe_job_id

        shutil.rmtree(Path(output_dir) / safe_job_id(job_id), ignore_errors=True)
    return rec


def anchor(weights_dir, key: str, steps: int, repeats: int, device: str,
           warm_up: bool = True) -> dict:
    """The bare diffusers call: ``AutoPipelineForInpainting.from_pretrained`` on the same baked
    weights, at the model's native square size, prompt + image + mask only; wall ms of each of
    ``repeats`` calls after one warm-up call (synchronised; ``warm_up=False``: none)."""
    import numpy as np
    import torch
    from diffusers import AutoPipelineForInpainting
    from PIL import Image

    from weights.manifest import load_manifest

    path = weights_dir / load_manifest().models[key].path
    cuda = device.startswith("cuda")
    pipe = AutoPipelineForInpainting.from_pretrained(
        path, dtype=torch.float16 if cuda else torch.float32, variant="fp16",
        use_safetensors=True, local_files_only=True,
        **({"safety_checker": None, "requires_safety_checker": False}
           if key.startswith("sd15") else {})).to(device)
    pipe.set_progress_bar_config(disable=True)
    side = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    jpg, png = photo((side, side))
    image = Image.open(io.BytesIO(jpg)).convert("RGB")
    mask = Image.open(io.BytesIO(png))
    times = []
    for i in range(repeats + 1 if warm_up else repeats):
        gpu_sync()
        t = time.perf_counter()
        pipe(prompt=PROMPT, image=image, mask_image=mask, height=side, width=side,
             num_inference_steps=steps, generator=torch.Generator("cpu").manual_seed(i))
        gpu_sync()
        if i or not warm_up:
            times.append(round((time.perf_counter() - t) * 1000, 1))
    del pipe
    if cuda:
        torch.cuda.empty_cache()
    return {"model": key, "size": [side, side], "steps": steps, "ms": times,
            "median_ms": sorted(times)[len(times) // 2] if times else None}
