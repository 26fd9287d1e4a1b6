"""Outfit swap conditioning (issue #15): a reference garment (IP-Adapter), pose lock (OpenPose
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from core.errors import ErrorCode, JobError
from core.inpaint import InpaintParams, composite, crop_box, model_size

log = logging.getLogger("maskpaint.conditioning")

# ------------------------------------------------------------------ pose -> OpenPose hint
#: OpenPose BODY_18 (COCO) keypoint order, as ControlNet's annotator and controlnet_aux use it.
OPENPOSE_KEYPOINTS: tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
)
#: MediaPipe Pose landmark index for each OpenPose keypoint (``core.masking.detectors.
#: POSE_LANDMARKS`` order); the neck (None) is the midpoint of the shoulders (11, 12).
MEDIAPIPE_FOR_OPENPOSE: tuple[int | None, ...] = (
    0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7,
)
#: Limbs as 1-based keypoint pairs and the colours (RGB) of ``draw_bodypose`` in
#: huggingface/controlnet_aux (``open_pose/util.py``), itself lllyasviel/ControlNet's annotator.
LIMBS: tuple[tuple[int, int], ...] = (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12),
    (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18),
)
COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
#: ``draw_bodypose``: limb half-width 4 px, limbs at 60 % of their colour, 4 px joint discs.
STICK_WIDTH_PX, LIMB_SHADE, JOINT_RADIUS_PX = 4, 0.6, 4
#: A landmark is drawn when MediaPipe's visibility reaches this (MediaPipe's own default for
#: drawing landmarks, ``drawing_utils._VISIBILITY_THRESHOLD``).
MIN_VISIBILITY = 0.5


def openpose_keypoints(keypoints33: np.ndarray, min_visibility: float = MIN_VISIBILITY
                       ) -> np.ndarray:
    """MediaPipe's 33 pose landmarks as OpenPose's 18 (COCO order, :data:`OPENPOSE_KEYPOINTS`).

    Args:
        keypoints33: 33 x 3 float (x px, y px, visibility 0-1), ``Pose.keypoints``.
        min_visibility: landmarks below it are marked missing.

    Returns:
        18 x 3 float32: x px, y px, visibility; a missing keypoint has visibility 0 (and x, y 0).
        The neck is the shoulders' midpoint, visible when both are (its visibility their
        minimum).
    """
    kp = np.asarray(keypoints33, np.float32)
    if kp.shape != (33, 3):
        raise ValueError(f"expected 33 x 3 keypoints, got {kp.shape}")
    out = np.zeros((18, 3), np.float32)
    for i, j in enumerate(MEDIAPIPE_FOR_OPENPOSE):
        if j is None:
            pair = kp[[11, 12]]
            out[i] = (*pair[:, :2].mean(0), pair[:, 2].min())
        else:
            out[i] = kp[j]
    out[out[:, 2] < min_visibility] = 0.0
    return out


def stick_scale(width: int, height: int) -> int:
    """xinsir's SDXL OpenPose ControlNet was trained with thicker sticks on large images:
    ``1 if max side < 500 else min(2 + max side // 1000, 7)`` (controlnet_aux's
    ``xinsr_stick_scaling``, from the model card of xinsir/controlnet-openpose-sdxl-1.0)."""
    side = max(width, height)
    return 1 if side < 500 else min(2 + side // 1000, 7)


def draw_openpose(keypoints18: np.ndarray, width: int, height: int, *, scale_sticks: bool = False
                  ) -> np.ndarray:
    """Draw an OpenPose skeleton the way OpenPose ControlNets were trained.

    Black canvas; each limb an ellipse (``cv2.ellipse2Poly``, half-width 4 px) filled with 60 %
    of its colour, then each keypoint a 4 px disc in full colour - controlnet_aux's
    ``draw_bodypose``. Written here because controlnet_aux pulls in timm, mediapipe and more for
    these thirty lines.

    Args:
        keypoints18: 18 x 3 (x px, y px, visibility) in the canvas' px; visibility 0 = missing.
        width, height: canvas size px.
        scale_sticks: :func:`stick_scale` the limb width (xinsir's SDXL ControlNet).

    Returns:
        height x width x 3 uint8 RGB.
    """
    canvas = np.zeros((height, width, 3), np.uint8)
    sw = STICK_WIDTH_PX * (stick_scale(width, height) if scale_sticks else 1)
    kp = np.asarray(keypoints18, np.float32)
    for (a, b), colour in zip(LIMBS, COLOURS):
        p, q = kp[a - 1], kp[b - 1]
        if p[2] <= 0 or q[2] <= 0:
            continue
        length = math.hypot(p[0] - q[0], p[1] - q[1])
        angle = math.degrees(math.atan2(p[1] - q[1], p[0] - q[0]))
        centre = (int((p[0] + q[0]) / 2), int((p[1] + q[1]) / 2))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), sw), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, [int(c * LIMB_SHADE) for c in colour])
    for (x, y, v), colour in zip(kp, COLOURS):
        if v > 0:
            cv2.circle(canvas, (int(x), int(y)), JOINT_RADIUS_PX, colour, thickness=-1)
    return canvas


def pose_hint(keypoints18: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int],
              *, scale_sticks: bool = False) -> Image.Image:
    """The OpenPose hint for the model's crop: keypoints moved into ``box`` (x0, y0, x1, y1 px
    of the photo) scaled to ``size`` (width, height px), drawn at that size (drawing after a
    resize would blur the sticks the ControlNet learnt). Returns an RGB PIL image."""
    x0, y0, x1, y1 = box
    w, h = size
    kp = np.asarray(keypoints18, np.float32).copy()
    kp[:, 0] = (kp[:, 0] - x0) * (w / (x1 - x0))
    kp[:, 1] = (kp[:, 1] - y0) * (h / (y1 - y0))
    return Image.fromarray(draw_openpose(kp, w, h, scale_sticks=scale_sticks))


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


# ------------------------------------------------------------------ the gallery
def _is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def inpaint_gallery(
    pipe,
    resolution: int,
    image: np.ndarray,
    alpha: np.ndarray,
    params: InpaintParams,
    num_outputs: int = 1,
    on_step: Callable[[int, int], None] | None = None,
    *,
    model_image: np.ndarray | None = None,
    from_model: Callable[[np.ndarray], np.ndarray] | None = None,
    cond: Conditioners | None = None,
    garment: np.ndarray | None = None,
    garment_scale: float = 0.0,
    pose18: np.ndarray | None = None,
    control_scale: float = 1.0,
) -> tuple[list[np.ndarray], dict]:
    """Repaint ``alpha > 0`` of ``image`` ``num_outputs`` times (seeds ``params.seed + i``).

    Same crop, model size and paste-back as :func:`core.inpaint.inpaint` (pixels with alpha == 0
    are copied unchanged); one ``num_images_per_prompt`` batch, or one image at a time after a
    GPU out-of-memory error.

    Args:
        pipe, resolution, image, alpha, params, on_step, model_image, from_model: as
            :func:`core.inpaint.inpaint`.
        num_outputs: 1-4 images.
        cond: the loaded add-ons of ``pipe``'s model (None: none loaded).
        garment: h x w x 3 uint8 sRGB reference garment for the IP-Adapter (None: none).
        garment_scale: IP-Adapter scale (0-1.5).
        pose18: 18 x 3 OpenPose keypoints (px of ``image``) for the pose ControlNet (None: off).
        control_scale: ``controlnet_conditioning_scale``.

    Returns:
        (``num_outputs`` H x W x 3 uint8 results in seed order, facts: crop box, model size,
        batch size used).
    """
    import torch

    x0, y0, x1, y1 = crop_box(alpha)
    crop = image[y0:y1, x0:x1]
    crop_alpha = alpha[y0:y1, x0:x1]
    seen = (image if model_image is None else model_image)[y0:y1, x0:x1]
    mw, mh = model_size(x1 - x0, y1 - y0, resolution)
    crop_img = Image.fromarray(seen).resize((mw, mh), Image.Resampling.LANCZOS)
    crop_mask = Image.fromarray(((crop_alpha > 0) * 255).astype(np.uint8)).resize(
        (mw, mh), Image.Resampling.NEAREST)
    kwargs: dict[str, Any] = {}
    run_pipe = pipe
    if pose18 is not None:
        assert cond is not None and cond.control_pipe is not None
        run_pipe = cond.control_pipe
        kwargs["control_image"] = pose_hint(pose18, (x0, y0, x1, y1), (mw, mh),
                                            scale_sticks=cond.scale_sticks)
        kwargs["controlnet_conditioning_scale"] = float(control_scale)
    # (a stand-in pipeline without diffusers' IP-Adapter mixin, as in tests, is called plainly)
    if cond is not None and cond.ip_adapter is not None and hasattr(pipe, "set_ip_adapter_scale"):
        if garment is not None:
            pipe.set_ip_adapter_scale(float(garment_scale))
            kwargs["ip_adapter_image"] = Image.fromarray(garment)
        else:  # the UNet now wants image embeddings: zeros at scale 0 (skipped by diffusers)
            pipe.set_ip_adapter_scale(0.0)
            n = 2 if params.guidance_scale > 1 else 1  # negative + positive under CFG
            kwargs["ip_adapter_image_embeds"] = [torch.zeros(
                n, 1, cond.image_embed_dim, dtype=pipe.unet.dtype, device=pipe.unet.device)]

    def _cb(pipe_, step, _t, kw):
        if on_step is not None:
            on_step(step + 1, int(getattr(pipe_, "num_timesteps", 0)) or step + 1)
        return kw

    def call(seeds: list[int]) -> list[Image.Image]:
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        with torch.inference_mode():
            return run_pipe(
                prompt=params.prompt, negative_prompt=params.negative_prompt or None,
                image=crop_img, mask_image=crop_mask, height=mh, width=mw,
                num_inference_steps=params.num_inference_steps,
                guidance_scale=params.guidance_scale, strength=params.strength,
                num_images_per_prompt=len(seeds),
                generator=gens[0] if len(gens) == 1 else gens,
                callback_on_step_end=_cb, output_type="pil", **kwargs,
            ).images

    seeds = [params.seed + i for i in range(num_outputs)]
    batch = num_outputs
    try:
        outs = call(seeds)
    except Exception as exc:
        if num_outputs == 1 or not _is_oom(exc):
            raise
        log.warning("gallery of %d did not fit in GPU memory; one image at a time", num_outputs)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        batch = 1
        outs = [call([s])[0] for s in seeds]
    results = []
    for out in outs:
        gen = np.asarray(out.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS).convert("RGB"))
        if from_model is not None:
            gen = from_model(gen)
        result = image.copy()
        result[y0:y1, x0:x1] = composite(crop, gen, crop_alpha)
        results.append(result)
    return results, {"crop_box": [x0, y0, x1, y1], "model_size": [mw, mh], "batch": batch}
