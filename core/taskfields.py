"""Which request fields each task uses: a ``task: "mask"`` job refuses the repaint's fields.

Why: a mask job used to ignore them silently (``num_outputs``, ``strength``, a
``garment_image`` it would never fetch, ...), so a caller believed a setting applied. Every
request field is listed in exactly one of :data:`INPAINT_ONLY` and :data:`SHARED_FIELDS`
(tests/test_contract_task_fields.py checks it), so a new field is classified when it is added.
Nested fields are dotted (``output.format``).
"""

from __future__ import annotations

#: Fields a mask job does not use (the repaint's prompt, sampler, model, conditioning and
#: gallery; the result image's encoding): a mask job that sets one (to anything but null) is
#: refused with ``invalid_input`` naming the first in this order (``speed`` before the steps
#: and guidance that a draft fills in).
INPAINT_ONLY: tuple[str, ...] = (
    "speed", "scheduler", "prompt", "negative_prompt", "num_inference_steps", "guidance_scale",
    "strength", "seed", "model", "garment_image", "garment_scale", "control", "control_scale",
    "num_outputs", "output.format", "output.quality",
)
#: Fields both tasks use.
SHARED_FIELDS: tuple[str, ...] = (
    "image", "mask", "task", "targets", "protect_face", "face_margin", "protect_hands",
    "hand_margin", "mask_dilate_px", "mask_feather_px", "output", "output.url_expires_s",
    "output.return_base64", "idempotency_key", "person_box",
)
#: The contract's description of ``task``.
TASK_DESCRIPTION = (
    "`inpaint`: mask then repaint. `mask`: only the mask and a preview overlay (no diffusion), "
    "for a person to check or edit before paying for inpainting; a `mask` job that sets a "
    "repaint-only field (" + ", ".join(f"`{name}`" for name in INPAINT_ONLY)
    + ") is refused with `invalid_input` naming it.")
#: The refusal's message (after ``<field>: ``).
INPAINT_ONLY_MESSAGE = "only used when task is 'inpaint'; leave it out of a 'mask' job"


def inpaint_field_set(request) -> str | None:
    """The first :data:`INPAINT_ONLY` field (dotted) that a ``task: "mask"`` request (a
    :class:`core.contract.JobRequest`) was sent with, not null; None for an inpaint request
    or when there is none. Defaults never count: only pydantic's ``model_fields_set``."""
    if request.task != "mask":
        return None
    for name in INPAINT_ONLY:
        owner, _, sub = name.partition(".")
        model, key = (getattr(request, owner), sub) if sub else (request, owner)
        if key in model.model_fields_set and getattr(model, key) is not None:
            return name
    return None
