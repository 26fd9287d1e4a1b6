"""Outfit swap conditioning: a reference garment (IP-Adapter), pose lock (OpenPose
ControlNet) and a gallery of outputs per job.

Everything goes through diffusers' own support:

- **Reference garment**: ``pipe.load_ip_adapter(...)`` at cold start (h94/IP-Adapter layout, the
  ViT-H image encoder), ``pipe.set_ip_adapter_scale(garment_scale)`` and ``ip_adapter_image`` per
  job. ``load_ip_adapter`` swaps the UNet's cross-attention processors for IP-Adapter ones and
  from then on the UNet wants image embeddings on every call; a job without ``garment_image``
  passes zero embeddings at scale 0, which diffusers' ``IPAdapterAttnProcessor2_0`` skips
  (``if scale == 0``), so the result is the plain text-conditioned repaint.
- **Pose lock**: ``ControlNetModel.from_pretrained(local_files_only=True)`` and
  ``StableDiffusion(XL)ControlNetInpaintPipeline.from_pipe(base, controlnet=cn)``, which shares
  the already-loaded UNet, VAE, text encoders and image encoder (nothing loads twice). The hint
  image is the main person's MediaPipe pose (33 landmarks) mapped to OpenPose's 18 COCO
  keypoints and drawn as OpenPose ControlNets were trained (:func:`draw_openpose`).
- **Gallery**: ``num_images_per_prompt`` with one ``torch.Generator`` per output seeded
  ``seed + i`` (diffusers draws each image's initial noise from its own generator), in one
  batch; when the batch does not fit in GPU memory, one image at a time.

Arrays: H x W x 3 uint8 RGB; alpha H x W float32 in [0, 1]; keypoints in px.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import ErrorCode, JobError
from core.openpose import openpose_keypoints, pose_hint  # noqa: F401 (the hint's home)

log = logging.getLogger("maskpaint.conditioning")

# ------------------------------------------------------------------ garment reference crop
#: Context kept around a detected garment, as a fraction of its box's longer side.
GARMENT_PAD_FRAC = 0.05

def garment_reference(garments, rgb: np.ndarray, targets: list[str]) -> tuple[np.ndarray, dict]:
    """The part of a shop photo that shows the garment, for the IP-Adapter's image encoder.

    The garment detector (the masking chain's YOLOv8-seg) runs on the photo; the best-scoring
    detection of a requested target group (else of any group) is cut out with a 5 % margin.
    Nothing found (always with the random dev weights), no detector, or a detector failure: the
    whole photo, and the facts say why.

    Args:
        garments: a :class:`core.masking.garments.GarmentDetector` or None.
        rgb: H x W x 3 uint8 sRGB (transparency over white).
        targets: the request's target groups (``full`` = any).

    Returns:
        (h x w x 3 uint8 crop, facts: ``source`` (``detected`` / ``whole_photo``), ``reason``,
        ``label``, ``score``, ``box`` [x0, y0, x1, y1] px of the garment photo).
    """
    h, w = rgb.shape[:2]
    whole = {"source": "whole_photo", "box": [0.0, 0.0, float(w), float(h)]}
    if garments is None:
        return rgb, {**whole, "reason": "no garment detector on this worker"}
    try:
        found = garments.detect(rgb)
    except Exception as exc:  # a detector failure must not fail the job
        log.exception("garment detection on garment_image failed")
        return rgb, {**whole, "reason": f"garment detector failed ({type(exc).__name__})"}
    wanted = [d for d in found if d.group is not None
              and ("full" in targets or d.group in targets)] or found
    if not wanted:
        return rgb, {**whole, "reason": "no garment found in garment_image; the whole photo "
                     "is the reference"}
    best = max(wanted, key=lambda d: d.score)
    x0, y0, x1, y1 = best.box
    pad = GARMENT_PAD_FRAC * max(x1 - x0, y1 - y0)
    bx = (max(0, int(x0 - pad)), max(0, int(y0 - pad)), min(w, int(math.ceil(x1 + pad))),
          min(h, int(math.ceil(y1 + pad))))
    if bx[2] - bx[0] < 8 or bx[3] - bx[1] < 8:
        return rgb, {**whole, "reason": "the garment found is too small; the whole photo is "
                     "the reference"}
    return rgb[bx[1]:bx[3], bx[0]:bx[2]], {
        "source": "detected", "reason": None, "label": best.label, "score": round(best.score, 4),
        "box": [float(v) for v in bx]}


# ------------------------------------------------------------------ loaded add-ons
@dataclass
class Conditioners:
    """The conditioning add-ons loaded for one inpainting model.

    ``ip_adapter`` / ``controlnet`` are manifest keys (None: not loaded), ``missing`` maps a key
    of this base to why it is not loaded; ``control_pipe`` is the ControlNet inpainting pipeline
    sharing the base pipeline's modules.
    """

    base: str
    ip_adapter: str | None = None
    ip_identity: dict | None = None
    image_embed_dim: int = 0
    controlnet: str | None = None
    control_identity: dict | None = None
    control_pipe: Any = None
    scale_sticks: bool = False
    missing: dict[str, str] = field(default_factory=dict)


def _vacuous_fp32_warning(record: logging.LogRecord) -> bool:
    """Drop diffusers' "modules ... should be kept in float32: []" warning: ``load_ip_adapter``,
    ``from_pipe`` and the SDXL pipelines' VAE upcast call ``ModelMixin.to(dtype)``, which warns
    even when the list of modules to keep in float32 is empty (nothing to keep). At cold start
    it would reach stderr raw, past our JSON log handler."""
    return "should be kept in float32: []" not in record.getMessage()


def load_conditioning(models, manifest, weights_dir: Path, *, verify: bool, device: str) -> None:
    """Load every baked IP-Adapter and ControlNet of every loaded inpainting model into
    ``models.conditioning`` (base key -> :class:`Conditioners`).

    ControlNets are built before ``load_ip_adapter`` runs (it changes the UNet's config), and the
    ControlNet pipeline is made with ``from_pipe`` afterwards so it shares the image encoder too.
    A missing or broken add-on never stops the worker: the jobs that ask for it get
    ``model_not_found`` naming it.
    """
    import torch
    from weights.resolve import ModelMissing, resolve

    noisy = logging.getLogger("diffusers.models.modeling_utils")
    if _vacuous_fp32_warning not in noisy.filters:
        noisy.addFilter(_vacuous_fp32_warning)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    for base, inp in models.inpainters.items():
        cond = models.conditioning.setdefault(base, Conditioners(base=base))
        entries = [(k, e) for k, e in manifest.models.items()
                   if e.kind in ("ip_adapter", "controlnet") and e.base == base]
        controlnet = None
        for key, entry in sorted(entries, key=lambda ke: ke[1].kind != "controlnet"):
            try:
                res = resolve(key, weights_dir, manifest, verify=verify)
                if entry.kind == "controlnet":
                    if cond.controlnet is not None:
                        continue
                    from diffusers import ControlNetModel

                    fp16 = any(".fp16." in f.name for f in res.path.glob("*.safetensors"))
                    controlnet = ControlNetModel.from_pretrained(
                        res.path, dtype=dtype, variant="fp16" if fp16 else None,
                        use_safetensors=True, local_files_only=True).to(device)
                    cond.controlnet, cond.control_identity = key, res.identity
                    cond.scale_sticks = "xinsir" in (entry.source.repo or "")
                else:
                    if cond.ip_adapter is not None:
                        continue
                    inp.pipe.load_ip_adapter(
                        str(res.path), subfolder=str(Path(entry.weight_name).parent),
                        weight_name=Path(entry.weight_name).name,
                        image_encoder_folder="models/image_encoder", local_files_only=True)
                    inp.pipe.image_encoder.to(device, dtype)
                    cond.ip_adapter, cond.ip_identity = key, res.identity
                    cond.image_embed_dim = int(inp.pipe.image_encoder.config.projection_dim)
            except ModelMissing:
                cond.missing[key] = "not baked"
            except Exception as exc:  # corrupt files: the jobs that need it get model_not_found
                cond.missing[key] = "weights failed to load"
                log.error("conditioning model %s failed to load: %s", key, exc)
        if controlnet is not None:
            import diffusers

            cls = getattr(diffusers, "StableDiffusionXLControlNetInpaintPipeline"
                          if "XL" in type(inp.pipe).__name__ else
                          "StableDiffusionControlNetInpaintPipeline")
            cond.control_pipe = cls.from_pipe(inp.pipe, controlnet=controlnet)
            cond.control_pipe.set_progress_bar_config(disable=True)


def _missing_error(cond: Conditioners | None, kind: str, field_name: str) -> JobError:
    from weights.manifest import load_manifest

    manifest = load_manifest()
    keys = [k for k, e in manifest.models.items()
            if e.kind == kind and cond is not None and e.base == cond.base]
    what = "an IP-Adapter (reference garment)" if kind == "ip_adapter" else "a pose ControlNet"
    why = "; ".join(f"{k!r} {cond.missing.get(k, 'not baked')}" for k in keys) if keys else \
        "no such model for this inpainting model"
    return JobError(ErrorCode.model_not_found,
                    f"{field_name}: needs {what}, which this worker lacks ({why})",
                    field=field_name, retryable=False)


def check_available(models, inpaint_key: str, req) -> Conditioners | None:
    """The add-ons a request needs, before anything is fetched.

    Raises:
        JobError(model_not_found): ``garment_image`` without an IP-Adapter or ``control`` without
            a ControlNet for the inpainting model that runs, naming the manifest key(s).
    """
    cond = getattr(models, "conditioning", {}).get(inpaint_key)
    if req.garment_image and (cond is None or cond.ip_adapter is None):
        raise _missing_error(cond or Conditioners(base=inpaint_key), "ip_adapter",
                             "garment_image")
    if req.control == "pose" and (cond is None or cond.control_pipe is None):
        raise _missing_error(cond or Conditioners(base=inpaint_key), "controlnet", "control")
    return cond


def prepare(models, req, image: np.ndarray, mask_outcome, garment_photo):
    """The reference garment crop, the OpenPose keypoints and the facts a job reports.

    Args:
        models: the :class:`core.models.ModelSet` (its garment detector and pose model).
        req: the :class:`core.contract.JobRequest`.
        image: H x W x 3 uint8 sRGB photo (what the models see).
        mask_outcome: the masking stage's outcome; its pose keypoints are reused when the pose
            model already ran (the pose fallback), else the pose model runs here once.
        garment_photo: the decoded ``garment_image`` (:class:`core.imageio.Photo`) or None.

    Returns:
        (h x w x 3 uint8 garment or None, 18 x 3 keypoints or None,
        :class:`core.contract.ConditioningInfo` or None).

    Raises:
        JobError(model_not_found): ``control`` on a worker without the pose model.
        JobError(invalid_input): ``control`` and no person's pose is found in ``image``.
    """
    from core.contract import ConditioningInfo, ControlInfo, GarmentInfo

    garment = pose18 = None
    info = ConditioningInfo()
    if garment_photo is not None:
        rgb = garment_photo.srgb()
        garment, facts = garment_reference(models.garments, rgb, list(req.targets))
        info.garment = GarmentInfo(**facts, scale=req.garment_scale,
                                   size=[rgb.shape[1], rgb.shape[0]])
    if req.control == "pose":
        kp33 = getattr(mask_outcome, "pose_keypoints", None)
        if kp33 is None:
            if models.pose is None:
                raise JobError(ErrorCode.model_not_found, "control: the pose model "
                               "('pose-mediapipe-full') is not on this worker", field="control",
                               retryable=False)
            pose = models.pose.estimate(image)
            mask_outcome.ran(models.pose)
            kp33 = None if pose is None else pose.keypoints
        pose18 = None if kp33 is None else openpose_keypoints(kp33)
        if pose18 is None or (pose18[:, 2] > 0).sum() < 2:
            raise JobError(ErrorCode.invalid_input, "control: no person's pose was found in "
                           "image; send the job without control", field="control")
        info.control = ControlInfo(type="pose", scale=req.control_scale,
                                   keypoints=[[round(float(v), 2) for v in k] for k in pose18])
    if info.garment is None and info.control is None:
        return garment, pose18, None
    return garment, pose18, info


# ------------------------------------------------------------------ the diffusers call
def call_extra(pipe, cond: Conditioners | None, *, guidance_scale: float,
               garment: np.ndarray | None = None, garment_scale: float = 0.0,
               pose18: np.ndarray | None = None, control_scale: float = 1.0):
    """The :data:`core.inpaint.Extra` hook of one job: which pipeline to call and its added
    keywords.

    Args:
        pipe: the base inpainting pipeline; cond: its loaded add-ons (None: none loaded).
        guidance_scale: the job's (under classifier-free guidance the zero IP-Adapter
            embeddings need a negative and a positive row).
        garment: h x w x 3 uint8 sRGB reference garment for the IP-Adapter (None: none).
        garment_scale: IP-Adapter scale (0-1.5).
        pose18: 18 x 3 OpenPose keypoints (px of the photo) for the pose ControlNet (None: off).
        control_scale: ``controlnet_conditioning_scale``.
    """
    import torch

    def extra(box: tuple[int, int, int, int], size: tuple[int, int]):
        kwargs: dict[str, Any] = {}
        run_pipe = pipe
        if pose18 is not None:
            assert cond is not None and cond.control_pipe is not None
            run_pipe = cond.control_pipe
            kwargs["control_image"] = pose_hint(pose18, box, size, scale_sticks=cond.scale_sticks)
            kwargs["controlnet_conditioning_scale"] = float(control_scale)
        # (a stand-in pipeline without diffusers' IP-Adapter mixin, as in tests, is called
        # plainly)
        if cond is not None and cond.ip_adapter is not None \
                and hasattr(pipe, "set_ip_adapter_scale"):
            if garment is not None:
                pipe.set_ip_adapter_scale(float(garment_scale))
                kwargs["ip_adapter_image"] = Image.fromarray(garment)
            else:  # the UNet now wants image embeddings: zeros at scale 0 (skipped by diffusers)
                pipe.set_ip_adapter_scale(0.0)
                n = 2 if guidance_scale > 1 else 1  # negative + positive under CFG
                kwargs["ip_adapter_image_embeds"] = [torch.zeros(
                    n, 1, cond.image_embed_dim, dtype=pipe.unet.dtype, device=pipe.unet.device)]
        return run_pipe, kwargs

    return extra
