"""Instrumentation installed by the bench child processes only (core/ is never edited).

The report's model forward time is the worker's own (``timings_ms`` keys ending ``.forward``,
``core.timing``); these seam timers are an independent cross-check of it (a row of the per-job
tables), measured by wrapping the objects the core calls - never by editing core:

- ``pipe.__call__`` of every inpainting pipeline (``ModelSet.inpainters[k].pipe`` is replaced by a
  forwarding proxy). This is the whole diffusers call: its own image/mask preprocessing, the text
  encoder, the denoising loop, the VAE encode/decode and its tensor -> PIL conversion.
  ``core.inpaint``'s crop, LANCZOS resizes, mask thresholding and paste-back are *not* in it.
- garment detector: ``YOLO.predict`` (ultralytics' letterbox, forward, NMS, and retina masks
  unless SAM refines);
  ``GarmentDetector.detect``'s RGB->BGR copy and result conversion are not;
- SAM: ``SamPredictor.set_image`` and the mask decoder's ``forward`` (``core.masking.sam`` runs
  ``predict_torch``'s steps itself, upsampling only the best candidate; that upsampling is not
  model time);
- faces: SCRFD's ``FaceAnalysis.get`` (insightface's resize, ONNX forward, decode, NMS); every
  other face / hand detector's whole ``detect`` (MediaPipe: letterbox, tiles, forward, NMS).

On CUDA each seam synchronises before its clock stops.

Non-model detail timers (same wrapping technique, for the breakdown): GrabCut in the fallback,
``post.finalize`` (distance transforms), the overlay rendering, and each ``encode_image`` call.

Load counters wrap every loader the model set goes through (``core.models._load_inpainter`` /
``MASKING_LOADERS``, diffusers / transformers ``from_pretrained``, ``YOLO.__init__``,
``torch.load``, ``onnxruntime.InferenceSession``) so the bench can show that nothing is loaded
again after cold start; :func:`model_ids` records object ids to compare across jobs.
"""

from __future__ import annotations

import functools
import os
import resource
import time
from collections import defaultdict
from collections.abc import Callable

#: ms per seam / detail timer for the current job; reset with :func:`reset`.
FORWARD_MS: dict[str, float] = defaultdict(float)
DETAIL_MS: dict[str, float] = defaultdict(float)
#: loader name -> calls, for the whole process.
LOAD_CALLS: dict[str, int] = defaultdict(int)

_SYNC: list[Callable[[], None]] = []


def reset() -> None:
    FORWARD_MS.clear()
    DETAIL_MS.clear()


def _sync() -> None:
    for f in _SYNC:
        f()


def _timed(fn: Callable, sink: dict[str, float], label: str | Callable[..., str],
           sync: bool = False) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            if sync:
                _sync()
            name = label(*args, **kwargs) if callable(label) else label
            sink[name] += (time.perf_counter() - t) * 1000

    wrapper.__bench_wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


class TimedProxy:
    """Forward everything to ``target``; time ``__call__`` and the named methods as ``seam``."""

    def __init__(self, target, seam: str, methods: tuple[str, ...] = ()) -> None:
        object.__setattr__(self, "_bench_target", target)
        object.__setattr__(self, "_bench_seam", seam)
        object.__setattr__(self, "_bench_methods", methods)

    def __getattr__(self, name):
        attr = getattr(self._bench_target, name)
        if name in self._bench_methods:
            return _timed(attr, FORWARD_MS, self._bench_seam, sync=True)
        return attr

    def __setattr__(self, name, value):
        setattr(self._bench_target, name, value)

    def __call__(self, *args, **kwargs):
        return _timed(self._bench_target, FORWARD_MS, self._bench_seam, sync=True)(*args, **kwargs)


def unwrap(obj):
    return object.__getattribute__(obj, "_bench_target") if isinstance(obj, TimedProxy) else obj


def install_seam_timers(models) -> None:
    """Wrap the model seams of a loaded ``core.models.ModelSet`` (see the module docstring)."""
    if models.device.startswith("cuda"):
        import torch

        _SYNC.append(torch.cuda.synchronize)
    for m in models.inpainters.values():
        if not isinstance(m.pipe, TimedProxy):
            m.pipe = TimedProxy(m.pipe, f"inpaint.pipe:{m.key}")
    if models.garments is not None and not isinstance(models.garments.model, TimedProxy):
        models.garments.model = TimedProxy(models.garments.model, "mask.garments", ("predict",))
    if models.sam is not None and not isinstance(models.sam.predictor, TimedProxy):
        models.sam.predictor = TimedProxy(models.sam.predictor, "mask.sam",
                                          ("set_image", "predict_torch"))
        dec = models.sam.model.mask_decoder  # refine calls the decoder, not predict_torch
        if getattr(dec.forward, "__bench_wrapped__", None) is None:
            dec.forward = _timed(dec.forward, FORWARD_MS, "mask.sam", sync=True)
    for kind, dets in (("faces", models.face_detectors), ("hands", models.hand_detectors)):
        for det in dets:
            if hasattr(det, "app") and not isinstance(det.app, TimedProxy):  # SCRFD
                det.app = TimedProxy(det.app, f"mask.{kind}:{det.name}", ("get",))
            elif not hasattr(det, "app") and getattr(det.detect, "__bench_wrapped__", None) is None:
                det.detect = _timed(det.detect, FORWARD_MS, f"mask.{kind}:{det.name}")


def _patch(module, name: str, sink, label) -> None:
    fn = getattr(module, name)
    if getattr(fn, "__bench_wrapped__", None) is None:
        setattr(module, name, _timed(fn, sink, label))


def install_detail_timers() -> None:
    """Non-model sub-stage timers (module attributes the core looks up at call time)."""
    import core.masking.fallback as fallback
    import core.masking.post as post
    import core.overlay as overlay
    import core.pipeline as pipeline

    _patch(fallback, "_grabcut", DETAIL_MS, "mask.grabcut")
    _patch(post, "finalize", DETAIL_MS, "mask.finalize")
    _patch(overlay, "render_overlay", DETAIL_MS, "encode.overlay_render")

    def encode_label(arr, fmt="png", *a, **k):
        # by the call, not by the order: the artefacts are encoded in parallel threads
        # (core.pipeline._store): the mask is 2-D, the result passes the photo's ``icc``
        kind = "mask" if arr.ndim == 2 else ("result" if "icc" in k else "overlay")
        return f"encode.{kind}_{fmt}"

    _patch(pipeline, "encode_image", DETAIL_MS, encode_label)


def _count(label: str, fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        LOAD_CALLS[label if isinstance(label, str) else label(*args)] += 1
        return fn(*args, **kwargs)

    return wrapper


def _count_classmethod(cls, name: str, label: str) -> None:
    orig = cls.__dict__[name].__func__

    @functools.wraps(orig)
    def wrapper(klass, *args, **kwargs):
        LOAD_CALLS[f"{label}({klass.__name__})"] += 1
        return orig(klass, *args, **kwargs)

    setattr(cls, name, classmethod(wrapper))


def install_load_counters() -> None:
    """Count every model-loading call from now on (call before ``Worker.cold_start``).

    ``torch.load`` is wrapped before ultralytics is imported (it calls ``torch.load`` through the
    module attribute).
    """
    import torch

    torch.load = _count("torch.load", torch.load)
    import diffusers
    from diffusers.models.modeling_utils import ModelMixin
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline

    _count_classmethod(DiffusionPipeline, "from_pretrained", "diffusers.DiffusionPipeline.from_pretrained")
    _count_classmethod(ModelMixin, "from_pretrained", "diffusers.ModelMixin.from_pretrained")
    try:
        from transformers import PreTrainedModel

        _count_classmethod(PreTrainedModel, "from_pretrained",
                           "transformers.PreTrainedModel.from_pretrained")
    except Exception:  # pragma: no cover - transformers layout changed
        pass
    del diffusers
    try:
        import onnxruntime

        onnxruntime.InferenceSession.__init__ = _count(
            "onnxruntime.InferenceSession", onnxruntime.InferenceSession.__init__)
    except ImportError:  # pragma: no cover
        pass
    try:
        from ultralytics import YOLO

        YOLO.__init__ = _count("ultralytics.YOLO", YOLO.__init__)
    except ImportError:  # pragma: no cover
        pass
    import core.models as cm

    cm._load_inpainter = _count(lambda res, *a: f"core.models._load_inpainter({res.key})",
                                cm._load_inpainter)
    for kind, (slot, loader) in list(cm.MASKING_LOADERS.items()):
        cm.MASKING_LOADERS[kind] = (slot, _count(
            lambda res, *a, _k=kind: f"core.models.MASKING_LOADERS[{_k}]({res.key})", loader))


def model_ids(models) -> dict[str, int]:
    """``id()`` of every loaded model object (unwrapped), to compare across jobs."""
    out = {}
    for k, m in models.inpainters.items():
        pipe = unwrap(m.pipe)
        out[f"{k}.pipe"] = id(pipe)
        for comp in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            if getattr(pipe, comp, None) is not None:
                out[f"{k}.{comp}"] = id(getattr(pipe, comp))
    if models.garments is not None:
        out["garments.model"] = id(unwrap(models.garments.model))
    if models.sam is not None:
        out["sam.model"] = id(models.sam.model)
    for det in [*models.face_detectors, *models.hand_detectors]:
        out[f"detector.{det.name}"] = id(unwrap(getattr(det, "app", det)))
    if models.pose is not None:
        out["pose"] = id(models.pose)
    return out


def rss_mb() -> float:
    """Resident set size now, MiB (psutil; /proc fallback)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak RSS of this process so far, MiB (``getrusage``: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cuda_memory() -> dict | None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return None
    if not torch.cuda.is_available():
        return None
    return {"max_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "max_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1),
            "device": torch.cuda.get_device_name()}


class PeakRSS:
    """Peak resident set size (MiB) of this process inside a ``with`` block.

    Linux keeps the high-water mark ``VmHWM`` in ``/proc/self/status``; writing ``5`` to
    ``/proc/self/clear_refs`` resets it to the current RSS (Linux >= 4.0,
    ``Documentation/filesystems/proc.rst``), so the block's own peak is read exactly, at no cost
    during the block. Where that write is refused, a daemon thread samples ``VmRSS`` every
    ``interval_s`` instead (``method`` says which; sampling can miss a spike shorter than the
    interval). Hand-written: psutil exposes no resettable peak. On CUDA the block's
    ``torch.cuda.max_memory_allocated`` is recorded too (``cuda_peak_mib``; None without a GPU).
    """

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.peak_mib: float | None = None
        self.method = ""
        self.cuda_peak_mib: float | None = None
        self._stop = None
        self._thread = None
        self._cuda = False

    @staticmethod
    def _status_kib(field: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise OSError(f"{field} not in /proc/self/status")

    def __enter__(self) -> PeakRSS:
        try:
            import torch

            self._cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
            if self._cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
        except ImportError:  # pragma: no cover
            self._cuda = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._status_kib("VmHWM")
            self.method = "VmHWM (reset via /proc/self/clear_refs)"
            return self
        except OSError:
            pass
        import threading

        self.method = f"VmRSS sampled every {self.interval_s * 1000:.0f} ms"
        self._stop = threading.Event()
        self.peak_mib = rss_mb()

        def sample() -> None:
            while not self._stop.wait(self.interval_s):
                self.peak_mib = max(self.peak_mib, rss_mb())

        self._thread = threading.Thread(target=sample, daemon=True, name="bench-peak-rss")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mib = max(self.peak_mib, rss_mb())
        else:
            self.peak_mib = self._status_kib("VmHWM") / 1024
        if self._cuda:
            import torch

            torch.cuda.synchronize()
            self.cuda_peak_mib = torch.cuda.max_memory_allocated() / 2**20
