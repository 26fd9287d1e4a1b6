"""One job, end to end: fetch -> decode -> mask -> inpaint -> encode -> upload -> JobResult.

:class:`Worker` is built once per container (cold start: settings, storage, the model set) and
runs jobs one after another. Import is torch-free so handlers can import it; torch loads in
:meth:`Worker.cold_start`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from pydantic import ValidationError

from core import timing
from core.bounded import DeadlineStorage, late, within
from core.buckets import buckets_for
from core.contract import (IMAGE_INPUTS, Job, JobRequest, JobResult, MaskInfo, ModelInfo,
                           SamplingInfo)
from core.errors import ErrorCode, JobError, is_oom
from core.imageio import Limits, decode_mask, decode_photo, encode_image
from core.inputs import load_bytes
from core.memory import return_big_blocks
from core.offline import forbid_runtime_installs
from core.sampling import check_draft
from core.settings import Settings
from core.storage import (Storage, check_output_dir, make_s3_client, make_storage, read_record,
                          request_sha256, write_record, write_refusal)

if TYPE_CHECKING:
    from core.models import ModelSet

log = logging.getLogger("maskpaint.job")

Progress = Callable[[dict], None]


def derive_seed(job_id: str) -> int:
    """Seed for a job that gave none: the first 4 bytes of sha256(job id), so a redelivered job
    (at-least-once delivery) repaints identically and finds its own stored outputs."""
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:4], "big")


def _classify_runtime_error(exc: BaseException) -> JobError | None:
    """Map accelerator failures to stable codes without importing torch."""
    text = str(exc)
    if is_oom(exc):
        return JobError(ErrorCode.gpu_oom, "the GPU ran out of memory; try a smaller image")
    if any(s in text for s in ("CUDA error", "cudaError", "device-side assert", "CUBLAS_STATUS",
                               "CUDNN_STATUS", "NCCL error")):
        return JobError(ErrorCode.device_error, "the accelerator failed; the worker will be "
                        "recycled", refresh_worker=True)
    return None


class _Clock:
    def __init__(self, deadline_s: float, job_id: str) -> None:
        self.job_id = job_id
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + deadline_s
        self.timings: dict[str, float] = {}

    def check(self) -> None:
        if time.perf_counter() > self.deadline:
            raise JobError(ErrorCode.timeout, "the job passed its deadline; nothing was stored")

    def stage(self, name: str, t: float, end: float | None = None) -> None:
        """Record a finished stage (``t`` to ``end``, default now) and log one line for it."""
        ms = self.timings[name] = round(((end or time.perf_counter()) - t) * 1000, 2)
        log.info("job %s stage %s %.1f ms", self.job_id, name, ms,
                 extra={"job_id": self.job_id, "stage": name, "ms": ms})


class Worker:
    """Per-container state: settings, model set and storage. ``run`` is one job."""

    def __init__(self, settings: Settings, models: ModelSet, storage: Storage,
                 s3_client_factory: Callable[[], object] | None = None) -> None:
        self.settings = settings
        self.models = models
        self.storage = storage
        self._s3_factory = s3_client_factory
        self.limits = Limits.from_settings(settings)
        self.cold_start_ms: dict[str, float] = {}
        from core.moderation.stage import Moderator  # (lazy: OpenCV; handlers import this)

        self.moderator = Moderator.build(settings, models)
        forbid_runtime_installs()  # models are loaded: undo ultralytics' pip-installing patch
        if settings.malloc_mmap_threshold_bytes:  # freed frames and masks go back to the OS
            return_big_blocks(settings.malloc_mmap_threshold_bytes)  # (core.memory)

    @classmethod
    def cold_start(cls, settings: Settings | None = None, s3_client=None) -> Worker:
        """Load every model once (from local disk, offline) and set up storage: the two phases,
        :func:`load_models` then :func:`build_worker`, back to back.

        A worker without a usable inpainting model still starts (see :mod:`core.models`) and
        answers each job with ``model_not_found``.
        """
        settings = settings or Settings()
        return build_worker(load_models(settings), settings, s3_client)

    # ---------------------------------------------------------------- one job
    def run(self, job: Job, progress: Progress | None = None) -> JobResult:
        """Run one job. Raises :class:`JobError` (codes in :mod:`core.errors`) on failure."""
        try:
            with timing.collect():  # the model calls' own times: timings_ms["*.forward"]
                return self._run(job, progress or (lambda _p: None))
        except JobError:
            raise
        except Exception as exc:
            mapped = _classify_runtime_error(exc)
            if mapped is None:
                raise
            if mapped.code == ErrorCode.gpu_oom:
                _free_gpu_memory()
            raise mapped from exc

    def _run(self, job: Job, progress: Progress) -> JobResult:
        req = job.request
        s, clock = self.settings, _Clock(self.settings.job_deadline_s, job.id)
        storage = DeadlineStorage(self.storage, clock.deadline, s.job_deadline_s)  # (all calls)
        request_sha = request_sha256(req)
        # content moderation (core.moderation.stage): the prompt now, before anything else; an
        # image refused later is recorded, so a redelivery is refused again without any work
        guard = self.moderator.start(
            job, lambda err: write_refusal(storage, job.id, request_sha, err))
        # at-least-once delivery (core.storage): a finished job returns its recorded result
        # (or refusal) with no fetch, decode, masking or inpainting
        recorded = read_record(storage, job.id, request_sha)
        if recorded is not None:
            log.info("job %s already done: returning its recorded result", job.id,
                     extra={"job_id": job.id})
            return self._deliver(recorded, req, storage)

        def stage(name: str) -> float:
            clock.check()
            progress({"stage": name})
            return time.perf_counter()

        inpainter = None
        if req.task == "inpaint" or not self.models.inpainters:
            # before any fetch: a worker without the model answers at once
            inpainter = self.models.inpainter(req.model)
        cond = None
        if req.task == "inpaint":  # the add-ons asked for, before any fetch
            from core.conditioning import check_available

            cond = check_available(self.models, inpainter.key, req)
        sp = req.sampling_plan()  # sampler, steps and guidance that run (draft ranges applied)
        if req.task == "inpaint" and sp.speed == "draft":  # its LoRA, before any fetch
            check_draft(getattr(self.models, "drafts", None), inpainter.key)

        t = stage("fetch")
        # each checked against its cap; the reference garment only when it will be used
        raw = within(clock.deadline, lambda: {  # (an s3:// input that hangs: cut at the deadline)
            name: load_bytes(getattr(req, name), name, s, self._s3_factory) for name in IMAGE_INPUTS
            if getattr(req, name) and (name != "garment_image" or req.task == "inpaint")},
            late("fetching the inputs", s.job_deadline_s))
        clock.stage("fetch", t)

        t = stage("decode")
        # Colour: `photo.rgb` keeps the file's values and profile (copied where nothing is
        # repainted, and the profile goes on every photo output); the models see `image`, the
        # photo in sRGB with transparency over white, and what they paint goes back through
        # `photo.colour.from_srgb`. The overlay is a preview in sRGB (untagged JPEG).
        photo = decode_photo(raw.pop("image"), field="image", limits=self.limits)
        image = photo.srgb()
        w, h = photo.size
        provided = (decode_mask(raw.pop("mask"), (w, h), field="mask", limits=self.limits)
                    if "mask" in raw else None)
        # the reference garment, as the models see it (sRGB, transparency over white)
        garment_photo = (decode_photo(raw.pop("garment_image"), field="garment_image",
                                      limits=self.limits) if "garment_image" in raw else None)
        del raw
        clock.stage("decode", t)
        if guard.checks_inputs:  # moderate_inputs: the photos, before any model sees them
            t = stage("safety")
            guard.check_inputs(image, garment_photo)
            clock.stage("safety.input", t)

        t = stage("mask")
        from core.masking.auto import make_mask

        mo = make_mask(self.models, image, req.masking, provided)
        del provided  # (mo.binary is its own copy: 1 B/px less held through inpaint and encode)
        from core.outputs import job_outputs, preview_source, store

        # the overlay's background, scaled down now: the full-size `image` is not kept for it,
        # and the photo's own buffer can take the repaint (inpaint(in_place=True))
        preview = preview_source(image, mo.alpha)
        clock.stage("mask", t)

        seed = sampling = None
        results: list[np.ndarray] = []
        conditioning = None
        garment = pose18 = None
        if req.task == "inpaint" and (garment_photo is not None or req.control):
            t = stage("conditioning")  # garment crop and pose hint, when asked for
            from core.conditioning import prepare

            garment, pose18, conditioning = prepare(self.models, req, image, mo, garment_photo)
            clock.stage("conditioning", t)
        del garment_photo
        if req.task == "inpaint":
            assert inpainter is not None
            seed = req.seed if req.seed is not None else derive_seed(job.id)
            t = stage("inpaint")
            from core.conditioning import call_extra
            from core.inpaint import InpaintParams, inpaint

            def on_step(step: int, total: int) -> None:
                clock.check()
                progress({"stage": "inpaint", "step": step, "steps": total})

            target, from_model = photo.paint_target()  # (16-bit, grey: own depth and mode)
            results, facts = inpaint(
                inpainter.pipe, inpainter.resolution, target, mo.alpha,
                InpaintParams(req.inpaint_kwargs(), seed, sampling=sp),
                on_step=on_step, model_image=image, num_outputs=req.num_outputs,
                extra=call_extra(inpainter.pipe, cond, guidance_scale=sp.guidance_scale,
                                 garment=garment, garment_scale=req.garment_scale,
                                 pose18=pose18, control_scale=req.control_scale),
                from_model=from_model,
                in_place=True,  # the target becomes the last result (one frame less held)
                buckets=buckets_for(inpainter.resolution) if s.generation_buckets else None,
            )
            clock.stage("inpaint", t)
            lora = self.models.drafts.loaded[inpainter.key] if sp.speed == "draft" else None
            sampling = SamplingInfo(
                scheduler=sp.scheduler, scheduler_class=facts["scheduler_class"], speed=sp.speed,
                num_inference_steps=sp.num_inference_steps, guidance_scale=sp.guidance_scale,
                lora=lora, adjusted=list(sp.adjusted))
            if guard.on:  # every result, before anything is encoded or stored
                t = stage("safety")
                guard.check_outputs([photo.rgb8(r) for r in results], mo.alpha)  # 8-bit RGB
                clock.stage("safety", t)
        del image  # (an sRGB copy of a photo in another space: one frame)
        mo.drop_alpha()  # (the overlay has its scaled copy)

        t = stage("encode")
        outputs = job_outputs(photo, preview, mo, results, photo.output_format(req.output.format),
                              req.output.quality, encode_image)  # (the bench wraps this name)
        stage("upload")  # (progress: encodes and uploads now run together)
        artifacts, encoded_at = store(storage, job.id, outputs, req.output.url_expires_s,
                                      req.output.return_base64)
        # encode: until the last artefact was encoded; upload: the rest (uploads overlap encodes)
        clock.stage("encode", t, encoded_at)
        clock.stage("upload", encoded_at)
        clock.timings["total"] = round((time.perf_counter() - clock.t0) * 1000, 2)
        for k, v in mo.timings_ms.items():
            clock.timings[f"mask.{k}"] = round(v, 2)
        clock.timings.update({k: round(v, 2) for k, v in timing.current().items()})

        models = []
        if inpainter is not None:
            models.append(ModelInfo(**inpainter.identity))
        if cond is not None:  # the add-ons that ran
            if req.garment_image and cond.ip_identity:
                models.append(ModelInfo(**cond.ip_identity))
            if req.control and cond.control_identity:
                models.append(ModelInfo(**cond.control_identity))
        if sampling is not None and sampling.lora:  # the draft LoRA that ran
            models.append(ModelInfo(**self.models.drafts.identity[inpainter.key]))
        models += [ModelInfo(**identity) for identity in mo.identities + guard.identities]
        log.info("job %s done: task=%s mask=%s coverage=%.3f timings=%s", job.id, req.task,
                 mo.source, mo.coverage, clock.timings)
        result = JobResult(
            job_id=job.id, task=req.task, seed=seed, size=[w, h],
            image=artifacts.get("image"), mask=artifacts["mask"], overlay=artifacts["overlay"],
            images=[artifacts["image" if i == 0 else f"image.{i}"] for i in range(len(results))],
            seeds=[seed + i for i in range(len(results))] if seed is not None else [],
            conditioning=conditioning, sampling=sampling,
            mask_info=MaskInfo(source=mo.source, reason=mo.reason, fallback=mo.fallback,
                               coverage=round(mo.coverage, 5), detections=mo.detections,
                               faces=mo.faces, hands=mo.hands, pose=mo.pose,
                               detector_issues=mo.issues),
            model=inpainter.key if inpainter is not None else None,
            models=models, moderation=guard.info(), timings_ms=clock.timings,
        )
        # the record goes last: from here on every delivery of this id returns the first result
        # recorded (another attempt may have won the race; then its result is returned)
        mine = _recordable(result)
        recorded = write_record(storage, job.id, request_sha, mine)
        if recorded is not mine:
            log.info("job %s: another attempt recorded first; returning its result", job.id,
                     extra={"job_id": job.id})
            return self._deliver(recorded, req, storage)
        return result

    def _deliver(self, recorded: dict, req: JobRequest, storage: Storage) -> JobResult:
        """A recorded result, with fresh URLs for this request's ``url_expires_s`` and the bytes
        inlined again (read from ``storage``) when it asks for ``return_base64``."""
        try:
            out = JobResult.model_validate(recorded)
        except ValidationError:  # recorded by a version of the contract this one cannot read
            raise JobError(ErrorCode.storage_conflict, "this job id's recorded result cannot be "
                           "read by this worker version; use a new job id",
                           retryable=False) from None
        named = [(n, getattr(out, n)) for n in ("image", "mask", "overlay")]
        named += [(f"images[{i}]", a) for i, a in enumerate(out.images)]
        for name, art in named:
            if art is None:
                continue
            art.url = storage.url(art.key, req.output.url_expires_s)
            if req.output.return_base64:
                data = storage.get(art.key)
                if data is None:
                    raise JobError(ErrorCode.storage_error,
                                   f"a recorded {name} is missing from storage", retryable=False)
                art.base64 = base64.b64encode(data).decode()
        return out


# -------------------------------------------------------------------- cold start, two phases
def load_models(settings: Settings | None = None) -> ModelSet:
    """Phase 1 of the cold start: load every baked model on ``settings.device`` (offline).

    Modal calls this before its memory snapshot with ``device="cpu"`` (no GPU is attached then,
    and CUDA must not be initialised before the snapshot). ``models.load_ms`` holds the per-model
    times; ``models.load_ms["models"]`` the whole phase, ms. StartupError: see check_output_dir.
    """
    from core.models import ModelSet

    settings = settings or Settings()
    check_output_dir(settings)
    t = time.perf_counter()
    models = ModelSet.load(settings)
    load_ms = (time.perf_counter() - t) * 1000
    models.total_load_ms = load_ms
    log.info("cold start: models loaded in %.0f ms on %s", load_ms, models.device)
    return models


def build_worker(models: ModelSet, settings: Settings | None = None, s3_client=None) -> Worker:
    """Phase 2 of the cold start: move the models to ``settings.device`` (when it differs from
    where they were loaded), compile / warm them when ``settings.compile_unet`` /
    ``settings.warmup`` ask (:func:`core.warmup.ready`), open storage, return the
    :class:`Worker`.

    Args:
        models: from :func:`load_models`.
        settings: read again after a snapshot restore, so secrets (bucket, endpoint,
            credentials) are the live ones and no connection is carried through a snapshot.
        s3_client: a ready boto3 client (tests); default: one built from the settings when a
            bucket or input buckets are set.

    Raises:
        RuntimeError: from torch when the device is unusable.
    """
    settings = settings or Settings()
    if settings.device and models.device != settings.device:
        t = time.perf_counter()
        models.to(settings.device)
        log.info("models moved to %s in %.0f ms", settings.device,
                 (time.perf_counter() - t) * 1000)
    speed_ms: dict[str, float] = {}
    if settings.warmup or settings.compile_unet:  # compiled UNet / warm-up passes (docs/gpu.md)
        from core.warmup import ready

        speed_ms = ready(models, settings)
    client = s3_client
    if client is None and (settings.s3_bucket or settings.input_buckets):
        client = make_s3_client(settings)
    worker = Worker(settings, models, make_storage(settings, client),
                    (lambda: client) if client is not None else None)
    load_ms = getattr(models, "load_ms", {})  # (test doubles may carry neither)
    total = getattr(models, "total_load_ms", None)
    worker.cold_start_ms = {**({"models": round(total, 1)} if total is not None else {}),
                            **{k: round(v, 1) for k, v in load_ms.items()}, **speed_ms}
    return worker


def _recordable(result: JobResult) -> dict:
    """The result as stored in the job record: JSON, without inline base64 copies."""
    out = result.model_dump(mode="json")
    for name in ("image", "mask", "overlay"):
        if out.get(name):
            out[name]["base64"] = None
    for art in out.get("images") or ():
        art["base64"] = None
    return out


def _free_gpu_memory() -> None:
    try:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort
        log.exception("freeing GPU memory failed")
