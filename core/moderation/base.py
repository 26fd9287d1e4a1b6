"""What every image classifier of the moderation stage is: the :class:`ImageClassifier` protocol,
the :class:`Label` it returns, and the onnxruntime session both real classifiers share.

A classifier only *scores*; the stage (:mod:`core.moderation.stage`) decides, with the
operator's thresholds, whether a score blocks. Each classifier marks which of its labels can
block by giving them a ``category`` (``nudity``, ``explicit``); labels without one (faces,
covered body parts) are reported but never block.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Label:
    """One thing a classifier saw in an image.

    Attributes:
        label: the model's own class name (``FEMALE_BREAST_EXPOSED``, ``FACE_FEMALE``, ``nsfw``).
        score: 0-1, the model's confidence.
        category: what a block on this label is called (``nudity``, ``explicit``); None for a
            label that never blocks.
        box: ``(x0, y0, x1, y1)`` px of the image given, for detectors; None for a whole-image
            score.
    """

    label: str
    score: float
    category: str | None = None
    box: tuple[float, float, float, float] | None = None


class ImageClassifier(Protocol):
    """A loaded image moderation model (one per container).

    Attributes:
        name: short name used in facts and logs (``nudenet``, ``open_nsfw``).
        threshold_setting: the :class:`core.settings.Settings` field holding the score from
            which a label with a category blocks.
        identity: the manifest identity (key, source, revision, dev) set by the loader.
    """

    name: str
    threshold_setting: str
    identity: dict

    def classify(self, image: np.ndarray) -> list[Label]:
        """Score one image (H x W x 3 uint8 RGB). Every blocking label the model has is in the
        answer (score 0.0 when not seen), so the result facts can report a maximum for each.

        Raises:
            ValueError: ``image`` is not H x W x 3 uint8.
        """
        ...


def check_rgb(image: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``image`` is H x W x 3 uint8 with both sides >= 1 px."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")


def onnx_session(path: Path | str, device: str = "cpu", threads: int | None = None):
    """An onnxruntime ``InferenceSession`` for ``path``: the CUDA provider on ``cuda[:N]`` (CPU as
    fallback), else CPU with at most ``threads`` intra-op threads (default: all cores, at most
    4; these models are small and more threads mostly add synchronisation).

    Raises:
        weights.resolve.ModelMissing: no file at ``path`` (the caller's key is unknown here, so
            the path is named).
        onnxruntime's ``Fail``/``InvalidProtobuf``: a corrupt file.
    """
    import os

    import onnxruntime

    if not Path(path).is_file():
        from weights.resolve import ModelMissing

        raise ModelMissing("moderation", Path(path))
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads or max(1, min(os.cpu_count() or 1, 4))
    opts.log_severity_level = 3  # errors only: its graph-optimiser notices are not ours to read
    providers: list = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in \
            onnxruntime.get_available_providers():
        _, _, idx = device.partition(":")
        providers = [("CUDAExecutionProvider", {"device_id": int(idx or 0)}),
                     "CPUExecutionProvider"]
    return onnxruntime.InferenceSession(str(path), sess_options=opts, providers=providers)
