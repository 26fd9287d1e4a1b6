"""Samplers by name and draft speed: which diffusers scheduler a job runs, with which step count
and guidance, and whether the model's few-step LoRA (LCM-LoRA) is switched on for it.

- **Sampler by name** (request ``scheduler``): each name maps to a diffusers scheduler class
  (:data:`SCHEDULERS`), built per job with ``from_config`` on the pipeline's *own* scheduler
  config (its betas, timestep spacing and offset stay the model's), swapped in for the call and
  restored afterwards. Nothing is loaded: a scheduler is a few arrays. The names follow the
  k-diffusion / A1111 / Replicate convention (``euler_a``, ``dpmpp_2m_karras``).
- **Draft speed** (request ``speed: "draft"``): the model's LCM-LoRA, loaded once at cold start
  with diffusers' ``load_lora_weights(..., adapter_name="lcm")`` and left *disabled*
  (:func:`load_drafts`), is enabled for the call and disabled again afterwards
  (``enable_lora`` / ``disable_lora``: PEFT's LoRA layers then compute exactly the base layer's
  output, so a standard job after a draft gives the same bytes as on a worker that never ran
  one). Fusing (``fuse_lora``) would save the LoRA's extra matmuls per step, but unfusing
  subtracts in floating point and does not give the base weights back bit for bit.
- **Published ranges** (:data:`DRAFT_STEPS`, :data:`DRAFT_GUIDANCE`): LCM-LoRA runs 4-8 steps at
  guidance 1-2 (diffusers' LCM-LoRA guide, "Inference with LCM-LoRA"; the LCM-LoRA model cards
  say 2-8 steps). A draft job's unsent ``num_inference_steps`` / ``guidance_scale`` take the
  range's low end; sent values are clamped into the range; the result's ``sampling`` says what
  ran and which fields were adjusted.

Torch-free at import (the contract imports it, and handlers import the contract).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("maskpaint.sampling")

SchedulerName = Literal["default", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "unipc",
                        "ddim", "lcm", "tcd"]
Speed = Literal["draft", "standard"]

#: Scheduler name -> (diffusers class, keywords over the pipeline's config). ``default`` is the
#: pipeline's own scheduler, untouched.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler",
                 {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler",
                        {"algorithm_type": "dpmsolver++", "solver_order": 2,
                         "use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
}
#: Samplers that need a consistency-distilled UNet: the LCM-LoRA of a draft job. TCD's sampler
#: generalises LCM's multistep consistency sampler (Zheng et al. 2024, "Trajectory Consistency
#: Distillation", gamma = 1 is LCM's), so it runs an LCM-LoRA too.
FEW_STEP_SCHEDULERS = frozenset({"lcm", "tcd"})
#: The sampler a draft job runs when it names none.
DRAFT_SCHEDULER = "lcm"
#: LCM-LoRA's published ranges (diffusers' LCM-LoRA guide): steps and guidance scale.
DRAFT_STEPS = (4, 8)
DRAFT_GUIDANCE = (1.0, 2.0)
#: PEFT adapter name the LCM-LoRA is loaded under.
ADAPTER = "lcm"
#: True on a UNet while a draft's LoRA is on: the compiled-UNet dispatch (:mod:`core.compile`)
#: keeps those calls apart (they run eager; its graphs were traced with the LoRA off, and a
#: flipped adapter flag would otherwise recompile in the middle of a job).
LORA_ON_ATTR = "maskpaint_lora_on"


@dataclass(frozen=True)
class SamplingPlan:
    """What a job's denoising runs: scheduler name, speed, steps, guidance and the fields that
    were changed from what was sent (or its default) to fit the draft ranges."""

    scheduler: str
    speed: str
    num_inference_steps: int
    guidance_scale: float
    adjusted: tuple[str, ...] = field(default_factory=tuple)


def _clamp(value, bounds):
    return min(max(value, bounds[0]), bounds[1])


def plan(req) -> SamplingPlan:
    """The sampling a :class:`core.contract.JobRequest` asks for, with draft ranges applied
    (its validator writes a draft's values back into the request, so afterwards the request
    holds what runs; :meth:`~core.contract.JobRequest.sampling_plan` reads it).

    Standard speed runs the request's own values. Draft speed runs ``lcm`` for ``default``; a
    ``num_inference_steps`` / ``guidance_scale`` the caller did not send takes the range's low
    end (4 steps, guidance 1), a sent one is clamped into :data:`DRAFT_STEPS` /
    :data:`DRAFT_GUIDANCE` and named in ``adjusted`` when it changed.
    """
    steps, guidance = req.num_inference_steps, req.guidance_scale
    if req.speed != "draft":
        return SamplingPlan(req.scheduler, req.speed, steps, guidance)
    sent = req.model_fields_set
    new_steps = _clamp(steps, DRAFT_STEPS) if "num_inference_steps" in sent else DRAFT_STEPS[0]
    new_guidance = (_clamp(guidance, DRAFT_GUIDANCE) if "guidance_scale" in sent
                    else DRAFT_GUIDANCE[0])
    adjusted = [name for name, old, new in (("num_inference_steps", steps, new_steps),
                                            ("guidance_scale", guidance, new_guidance))
                if name in sent and new != old]
    scheduler = DRAFT_SCHEDULER if req.scheduler == "default" else req.scheduler
    return SamplingPlan(scheduler, "draft", new_steps, float(new_guidance), tuple(adjusted))


def combination_error(scheduler: str, speed: str) -> str | None:
    """Why ``scheduler`` cannot run at ``speed`` (None: it can). A few-step sampler needs the
    draft LoRA; a draft runs only a few-step sampler (a multistep sampler such as Euler over an
    LCM-distilled UNet at 4 steps gives noise)."""
    if speed == "draft" and scheduler not in FEW_STEP_SCHEDULERS | {"default"}:
        return (f"speed 'draft' runs the LCM-LoRA with a few-step sampler: send scheduler "
                f"'default', 'lcm' or 'tcd' (not {scheduler!r})")
    if speed != "draft" and scheduler in FEW_STEP_SCHEDULERS:
        return (f"{scheduler!r} needs a consistency-distilled model, which no standard model "
                "is: send speed 'draft' (the model's LCM-LoRA) or another scheduler")
    return None


# ------------------------------------------------------------------ cold start: the LoRAs
@dataclass
class Drafts:
    """The draft LoRA of each loaded inpainting model.

    ``loaded`` maps a base model key to its LoRA's manifest key (adapter :data:`ADAPTER`,
    loaded and disabled), ``identity`` to its receipt identity; ``missing`` maps a LoRA key to
    why it is not loaded (``not baked``, ``weights failed to load``).
    """

    loaded: dict[str, str] = field(default_factory=dict)
    identity: dict[str, dict] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


def _unet_only_warning(record: logging.LogRecord) -> bool:
    """Drop diffusers' "No LoRA keys associated to CLIPTextModel..." warning: LCM-LoRA adapts
    the UNet only, so the text encoders have no keys, as expected; at cold start it would reach
    stderr raw, past our JSON log handler."""
    return "No LoRA keys associated to" not in record.getMessage()


def load_drafts(models, manifest, weights_dir: Path, *, verify: bool) -> Drafts:
    """Load each loaded inpainting model's baked ``lora`` entry (manifest ``base``) into its
    pipeline with ``load_lora_weights(..., adapter_name=ADAPTER, local_files_only=True)`` and
    leave it disabled. A missing or broken LoRA never stops the worker: draft jobs on that model
    get ``model_not_found`` naming it (:func:`check_draft`)."""
    from weights.resolve import ModelMissing, resolve

    for name in ("diffusers.loaders.peft", "diffusers.loaders.lora_base"):
        noisy = logging.getLogger(name)
        if _unet_only_warning not in noisy.filters:
            noisy.addFilter(_unet_only_warning)
    drafts = Drafts()
    for key, entry in manifest.models.items():
        if entry.kind != "lora" or entry.base not in models.inpainters \
                or entry.base in drafts.loaded:
            continue
        pipe = models.inpainters[entry.base].pipe
        try:
            res = resolve(key, weights_dir, manifest, verify=verify)
            pipe.load_lora_weights(str(res.path.parent), weight_name=res.path.name,
                                   adapter_name=ADAPTER, local_files_only=True)
            pipe.disable_lora()
            drafts.loaded[entry.base], drafts.identity[entry.base] = key, res.identity
        except ModelMissing:
            drafts.missing[key] = "not baked"
        except Exception as exc:  # corrupt files: draft jobs get model_not_found
            drafts.missing[key] = "weights failed to load"
            log.error("draft LoRA %s failed to load: %s", key, exc)
    return drafts


def check_draft(drafts: Drafts | None, inpaint_key: str) -> None:
    """Before anything is fetched: a draft job's model has its LoRA loaded.

    Raises:
        JobError(model_not_found, field ``speed``): it has none, naming the manifest key(s) of
            that model's LoRA and why each is not loaded.
    """
    from core.errors import ErrorCode, JobError
    from weights.manifest import load_manifest

    if drafts is not None and inpaint_key in drafts.loaded:
        return
    manifest = load_manifest()
    keys = [k for k, e in manifest.models.items() if e.kind == "lora" and e.base == inpaint_key]
    missing = drafts.missing if drafts is not None else {}
    why = ("; ".join(f"{k!r} {missing.get(k, 'not baked')}" for k in keys) if keys
           else "no draft LoRA exists for this model")
    raise JobError(ErrorCode.model_not_found,
                   f"speed: 'draft' needs the LCM-LoRA of model {inpaint_key!r}, which this "
                   f"worker lacks ({why}); bake its '-draft' weights profile",
                   field="speed", retryable=False)


# ------------------------------------------------------------------ per job
def make_scheduler(pipe, name: str):
    """A fresh scheduler ``name`` built with ``from_config`` on ``pipe``'s own scheduler config
    (``default``: the pipeline's own scheduler object, unchanged)."""
    if name == "default":
        return pipe.scheduler
    import diffusers

    cls_name, overrides = SCHEDULERS[name]
    return getattr(diffusers, cls_name).from_config(pipe.scheduler.config, **overrides)


@contextlib.contextmanager
def applied(pipe, sp: SamplingPlan, lora_pipe=None) -> Iterator[str]:
    """Run ``pipe`` with ``sp``'s scheduler (and, for a draft, the LCM-LoRA of ``lora_pipe``,
    default ``pipe``, enabled); both are restored on exit, also after an error, so no state
    carries over to the next job. Yields the diffusers class name of the scheduler that runs."""
    if sp.scheduler == "default" and sp.speed == "standard":  # nothing to swap or enable
        yield type(getattr(pipe, "scheduler", None)).__name__
        return
    own = pipe.scheduler
    sched = make_scheduler(pipe, sp.scheduler)
    lora_pipe = lora_pipe if lora_pipe is not None else pipe
    try:
        pipe.scheduler = sched
        if sp.speed == "draft":
            lora_pipe.enable_lora()
            setattr(lora_pipe.unet, LORA_ON_ATTR, True)
        yield type(sched).__name__
    finally:
        pipe.scheduler = own
        if sp.speed == "draft":
            lora_pipe.disable_lora()
            setattr(lora_pipe.unet, LORA_ON_ATTR, False)
