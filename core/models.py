"""The model set: every model a worker needs, loaded once per container at cold start.

Inpainting pipelines load with diffusers ``from_pretrained(local_files_only=True)`` straight to
the device (fp16 on CUDA, fp32 on CPU) from the baked layout; the masking models (garment
detector, SAM, face / hand detectors, pose) load through their own libraries' loaders, chosen by
the manifest's ``kind``. A masking model that is not baked is recorded as missing and the masking
stage falls back. An inpainting model that is not baked or fails to load (corrupt files; a
sha256 mismatch with ``MASKPAINT_VERIFY_WEIGHTS=1``) is recorded in ``ModelSet.inpaint_missing``:
the worker still starts, logs the bake command once, and answers the jobs that need it with
``model_not_found`` (so a caller hears at once instead of a job waiting in a queue behind a
crash-looping worker).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from collections.abc import Callable
from typing import Any

from core.contract import DetectorIssue
from core.settings import Settings
from weights.manifest import Manifest, load_manifest, load_receipt
from weights.resolve import ModelMissing, ResolvedModel, resolve, set_offline_env

log = logging.getLogger("maskpaint.models")


@dataclass
class InpaintModel:
    key: str
    pipe: Any
    resolution: int  # px, the model's native side
    identity: dict


@dataclass
class ModelSet:
    """Loaded models.

    ``face_detectors`` and ``hand_detectors`` are lists (every baked model of those kinds; the
    masking stage unions their boxes); ``garments``, ``sam`` and ``pose`` are single models or
    None. ``missing`` maps a masking role to why it is unavailable; ``load_issues`` lists every
    masking model that was baked but failed to load (reported in each job's ``mask_info``).
    """

    device: str
    inpainters: dict[str, InpaintModel] = field(default_factory=dict)
    garments: Any = None
    sam: Any = None
    pose: Any = None
    face_detectors: list = field(default_factory=list)
    hand_detectors: list = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    load_issues: list[DetectorIssue] = field(default_factory=list)
    #: Model key -> its own load time, ms (resolve excluded). The ONNX face detector loads in a
    #: background thread while YOLO, SAM and the pipelines load, so its time overlaps theirs:
    #: the values can add up to more than ``total_load_ms``.
    load_ms: dict[str, float] = field(default_factory=dict)
    #: The whole load (:func:`core.pipeline.load_models`), ms; None until then.
    total_load_ms: float | None = None
    #: Inpainting model for jobs that name none (``MASKPAINT_DEFAULT_MODEL``, else the first
    #: one loaded, in manifest order); may name a model that is not loaded.
    default_inpaint: str | None = None
    #: Inpainting model key -> why it is not loaded ("not baked", "weights failed to load").
    inpaint_missing: dict[str, str] = field(default_factory=dict)
    #: inpainting model key -> its loaded IP-Adapter / ControlNet
    #: (:class:`core.conditioning.Conditioners`).
    conditioning: dict[str, Any] = field(default_factory=dict)
    #: The draft LoRAs (LCM-LoRA) of the loaded inpainting models (:class:`core.sampling.Drafts`).
    drafts: Any = None
    #: Image moderation classifiers (:mod:`core.moderation`): every baked one that loaded.
    moderation: list = field(default_factory=list)
    #: Moderation model key -> why it is not loaded ("not baked", "failed to load").
    moderation_missing: dict[str, str] = field(default_factory=dict)

    def inpainter(self, key: str | None) -> InpaintModel:
        """The loaded inpainting model ``key`` (``None``: the default).

        Raises:
            JobError(model_not_found): not loaded here; the message names the model when it is a
                manifest model this worker lacks (a caller's unknown key is not echoed).
        """
        from core.errors import ErrorCode, JobError

        name = key or self.default_inpaint
        if name is not None and name in self.inpainters:
            return self.inpainters[name]
        available = sorted(self.inpainters)
        if name is not None and name in self.inpaint_missing:
            why = self.inpaint_missing[name]
            msg = f"model: {name!r} is not available on this worker ({why})"
        elif key is None:
            msg = (f"model: this worker's default model {name!r} is not loaded" if name
                   else "model: this worker has no inpainting model loaded")
        else:
            msg = "model: not available on this worker"
        hint = "" if available else "; the worker log names the bake command"
        raise JobError(ErrorCode.model_not_found, f"{msg} (available: {available}){hint}",
                       field="model", retryable=False)

    @classmethod
    def load(cls, settings: Settings, manifest: Manifest | None = None) -> ModelSet:
        """Load everything baked under ``settings.weights_dir``.

        Masking models are chosen by their manifest ``kind`` (:data:`MASKING_LOADERS`): every
        baked face or hand detector is loaded into its list; the garment detector and SAM are
        the manifest's ``roles`` entries; the pose model is the first baked one. A masking
        model that fails to load is logged and recorded, never fatal. When no face detector
        loaded, OpenCV's Haar cascade stands in, so protection never silently turns off.
        An inpainting model that is missing or fails to load never raises here either: it is
        recorded in ``inpaint_missing`` (see the module docstring).

        Order: the MediaPipe models; then the ONNX face detector in one background
        thread while this thread loads YOLO, SAM, the pipelines and their add-ons (why only that
        one: :data:`_THREAD_KINDS`). Each model loads once; outcomes are recorded in manifest
        order, as before.
        """
        set_offline_env()
        import torch

        manifest = manifest or load_manifest()
        device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
        ms = cls(device=device)
        wd = Path(settings.weights_dir)
        masking_keys = _masking_keys(manifest)
        kinds = {k: manifest.models[k].kind for k in masking_keys}
        threads = torch.get_num_threads()  # ultralytics' select_device lowers it (to 1 here)
        # MediaPipe (litert) first, alone: its loader redirects fd 2 (see _THREAD_KINDS)
        outcomes: dict[str, Any] = {
            k: _load_masking(k, manifest, wd, settings.verify_weights, device)
            for k in masking_keys if kinds[k] in _ALONE_KINDS}
        # then the ONNX face detector in a background thread (onnxruntime builds its session
        # largely outside the GIL) while this thread loads YOLO, SAM and the pipelines; only
        # when it is baked: its module imports insightface, which a bake without it (the
        # commercial profiles) must never load
        receipt = load_receipt(wd).models
        threaded = [k for k in masking_keys if kinds[k] in _THREAD_KINDS and k in receipt
                    and (wd / manifest.models[k].path).exists()]
        if threaded:
            try:
                import_module(_THREAD_LOADER_MODULE)  # here, not in both threads at once
            except Exception:  # its load reports it, as before
                log.debug("%s failed to import", _THREAD_LOADER_MODULE, exc_info=True)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="masking-load") as pool:
            pending = {k: pool.submit(_load_masking, k, manifest, wd, settings.verify_weights,
                                      device)
                       for k in threaded}
            try:
                for key in masking_keys:
                    if key not in outcomes and key not in pending:
                        outcomes[key] = _load_masking(key, manifest, wd, settings.verify_weights,
                                                      device)
                torch.set_num_threads(threads)
                ms._load_inpainting(settings, manifest, wd, device)
            finally:  # the thread finishes before anything else happens (an error here too)
                outcomes.update({k: f.result() for k, f in pending.items()})
        for key in masking_keys:  # recorded in manifest order, whichever finished first
            ms._add_masking(key, manifest.models[key].kind, outcomes[key])
        if not ms.face_detectors:
            # face protection never silently turns off: OpenCV's cascade stands in
            from core.masking.haar import HaarFaceDetector

            ms.face_detectors.append(HaarFaceDetector())
            log.warning("face detector: using OpenCV's Haar cascade (no other face model "
                        "loaded: %s)", ms.missing.get("face_detectors", "none baked"))
        if settings.safety != "off":  # the moderation classifiers (ONNX), after the rest
            from core.moderation import load_moderation

            ms.moderation, ms.moderation_missing, mod_ms = load_moderation(
                manifest, wd, settings.verify_weights, device)
            ms.load_ms.update(mod_ms)
        import_job_modules()
        return ms

    def _load_inpainting(self, settings: Settings, manifest: Manifest, wd: Path,
                         device: str) -> None:
        """The inpainting pipelines, then their IP-Adapters / ControlNets."""
        keys = settings.inpaint_models or [
            k for k, e in manifest.models.items() if e.kind == "diffusers_inpaint"
        ]
        for key in keys:
            try:
                res = resolve(key, wd, manifest, verify=settings.verify_weights)
                t = time.perf_counter()
                self.inpainters[key] = _load_inpainter(res, device)
                self.load_ms[key] = (time.perf_counter() - t) * 1000
            except ModelMissing:
                self.inpaint_missing[key] = "not baked"
            except Exception as exc:  # corrupt or mismatching weights must not kill the worker
                self.inpaint_missing[key] = "weights failed to load"
                log.error("inpainting model %s failed to load: %s", key, exc)
        self.default_inpaint = settings.default_model or next(iter(self.inpainters), None) or (
            keys[0] if keys else manifest.roles["inpaint_default"])
        if self.default_inpaint not in self.inpainters:
            log.error(
                "inpainting model %s is not loaded (%s); jobs that need it get model_not_found. "
                "Bake the weights: python -m weights.bake --profile <sd15|sdxl|full> --out %s "
                "(or random dev weights: python -m weights.tiny --out %s)",
                self.default_inpaint, self.inpaint_missing.get(self.default_inpaint, "not baked"),
                wd, wd)

        # IP-Adapters and ControlNets of the loaded inpainting models
        from core.conditioning import load_conditioning

        load_conditioning(self, manifest, wd, verify=settings.verify_weights, device=device)
        from core.sampling import load_drafts  # the draft LoRAs, loaded disabled

        self.drafts = load_drafts(self, manifest, wd, verify=settings.verify_weights)

    def _add_masking(self, key: str, kind: str, outcome) -> None:
        """Record one masking model's :func:`_load_masking` outcome in its slot, or why not."""
        slot = MASKING_LOADERS[kind][0]
        if isinstance(outcome, ModelMissing):
            self.missing.setdefault(slot, f"{key} not baked")
            log.warning("masking model missing: %s", outcome)
            return
        if isinstance(outcome, Exception):  # a broken file must not take the worker down
            self.missing.setdefault(slot, f"{key} failed to load")
            self.load_issues.append(DetectorIssue(
                detector=key, stage="load", message=f"failed to load ({type(outcome).__name__})"))
            log.error("masking model %s failed to load: %s", key, type(outcome).__name__,
                      exc_info=outcome)
            return
        model, ms = outcome
        self.load_ms[key] = ms
        if slot in ("face_detectors", "hand_detectors"):
            getattr(self, slot).append(model)
        elif getattr(self, slot) is None:
            setattr(self, slot, model)

    def to(self, device: str) -> ModelSet:
        """Move every torch model to ``device`` (e.g. after a CPU-side memory snapshot).

        Inpainting pipelines move with their fp16 weights cast on CUDA; SAM and the garment
        detector follow; the ONNX face detector stays on its execution provider.
        """
        import torch

        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        for m in self.inpainters.values():
            m.pipe.to(device, dtype)
        for cond in self.conditioning.values():  # the ControlNet is not in the base
            if cond.control_pipe is not None:
                cond.control_pipe.controlnet.to(device, dtype)
        for role in ("garments", "sam"):
            model = getattr(self, role)
            if model is not None and hasattr(model, "to"):
                model.to(device)
        self.device = device
        return self


def import_job_modules() -> None:
    """Import what every job uses but :mod:`core.pipeline` imports lazily (it stays torch-free
    for the handlers): the masking, inpainting and overlay stages, and every Pillow image plugin
    (``Image.open(..., formats=...)`` imports them all on the first decode, ~70 ms here). Called
    at the end of :meth:`ModelSet.load`, so the first job imports nothing (it did 58
    modules)."""
    from PIL import Image

    import core.inpaint  # noqa: F401
    import core.masking.auto  # noqa: F401
    import core.overlay  # noqa: F401

    Image.init()


def _load_inpainter(res: ResolvedModel, device: str) -> InpaintModel:
    """diffusers ``from_pretrained`` from the baked directory, offline, fp16 weights on disk."""
    import diffusers
    import torch

    cls = getattr(diffusers, res.entry.pipeline or "StableDiffusionInpaintPipeline")
    fp16_variant = any(".fp16." in f.name for f in res.path.rglob("*.safetensors"))
    pipe = cls.from_pretrained(
        res.path,
        dtype=torch.float16 if device.startswith("cuda") else torch.float32,
        variant="fp16" if fp16_variant else None,
        use_safetensors=True,
        local_files_only=True,
        **({"safety_checker": None, "requires_safety_checker": False}
           if "safety_checker" in cls._optional_components else {}),
    )
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    resolution = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    return InpaintModel(key=res.key, pipe=pipe, resolution=resolution, identity=res.identity)


def _load_garments(res: ResolvedModel, device: str):
    from core.masking.garments import GarmentDetector

    return GarmentDetector.load(res.path, device=device)


def _load_sam(res: ResolvedModel, device: str):
    from core.masking.sam import SamRefiner

    return SamRefiner.load(res.path, arch=res.entry.arch or "vit_b",
                           arch_overrides=res.receipt.arch, device=device)


def _load_scrfd(res: ResolvedModel, device: str):
    from core.masking.faces import ScrfdFaceDetector

    # layout: <root>/models/<pack>/<file>.onnx
    return ScrfdFaceDetector.load(res.path.parent.parent.parent, res.entry.pack or "buffalo_l",
                                  device=device)


def _load_blazeface(res: ResolvedModel, device: str):
    from core.masking.mediapipe.face import BlazeFaceDetector

    return BlazeFaceDetector.load(res.path)


def _load_palm(res: ResolvedModel, device: str):
    from core.masking.mediapipe.palm import PalmDetector

    # layout: <weights_dir>/mediapipe/hands/{palm_detection_full,palm_detection_lite,
    # hand_landmark_full}.tflite; both palm models run, their palms pooled
    return PalmDetector.load([res.path / "palm_detection_full.tflite",
                              res.path / "palm_detection_lite.tflite"],
                             res.path / "hand_landmark_full.tflite")


def _load_pose(res: ResolvedModel, device: str):
    from core.masking.mediapipe.pose import MediaPipePose

    return MediaPipePose.load(res.path)


#: manifest ``kind`` -> (ModelSet attribute, loader). List attributes take every baked model
#: of the kind; single ones the role's model (garments, sam) or the first baked one (pose).
MASKING_LOADERS: dict[str, tuple[str, Callable[[ResolvedModel, str], Any]]] = {
    "yolo_seg": ("garments", _load_garments),
    "sam": ("sam", _load_sam),
    "insightface_det": ("face_detectors", _load_scrfd),
    "mediapipe_face": ("face_detectors", _load_blazeface),
    "mediapipe_palm": ("hand_detectors", _load_palm),
    "mediapipe_pose": ("pose", _load_pose),
}
#: Kinds with one model per worker, chosen by the manifest role of the same name.
_ROLE_KINDS = {"yolo_seg": "garments", "sam": "sam"}


#: Masking kinds loaded in a background thread while the others and the inpainting pipelines
#: load. Only the ONNX face detector (SCRFD, onnxruntime): the torch ones (YOLO, SAM) must not
#: build modules while diffusers / transformers ``from_pretrained`` runs, because those patch
#: ``torch.nn.Module`` process-wide for their meta-device init (accelerate's
#: ``init_empty_weights``): tried, SAM's parameters were silently left on the meta device and
#: YOLO failed to load; the MediaPipe (litert) loader redirects the process's fd 2 while it
#: builds an interpreter (``core.masking.mediapipe.runtime``), which would swallow the other
#: thread's output.
_THREAD_KINDS = {"insightface_det"}
#: Loaded first, before the background thread starts (the fd 2 redirect above).
_ALONE_KINDS = {"mediapipe_face", "mediapipe_palm", "mediapipe_pose"}
#: Imported on the main thread before the background load starts (insightface, onnxruntime):
#: two threads importing the same packages at once can meet Python's import-lock deadlock
#: detection and see half-initialised modules.
_THREAD_LOADER_MODULE = "core.masking.faces"


def _load_masking(key: str, manifest: Manifest, wd: Path, verify: bool, device: str):
    """Resolve and load one masking model. Returns ``(model, load ms)``, or the exception
    (:class:`ModelMissing` when not baked) for :meth:`ModelSet._add_masking` to record; never
    raises an ``Exception``."""
    loader = MASKING_LOADERS[manifest.models[key].kind][1]
    try:
        res = resolve(key, wd, manifest, verify=verify)
        t = time.perf_counter()
        model = loader(res, device)
        ms = (time.perf_counter() - t) * 1000
        model.identity = res.identity
        return model, ms
    except Exception as exc:
        return exc


def _masking_keys(manifest: Manifest) -> list[str]:
    """Manifest keys of the masking models to try loading, in manifest order."""
    keys = []
    for key, entry in manifest.models.items():
        if entry.kind not in MASKING_LOADERS:
            continue
        role = _ROLE_KINDS.get(entry.kind)
        if role is not None and manifest.roles.get(role) != key:
            continue
        keys.append(key)
    return keys
