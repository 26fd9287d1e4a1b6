"""No installs and no downloads at run time, whatever the libraries would like to do.

ultralytics replaces ``PIL.Image.open`` when it is imported (``ultralytics/utils/patches.py``):
the first time Pillow cannot identify a file, the patch calls
``check_requirements("pi-heif")``, which runs ``pip install`` (or ``uv pip install``) when
``ultralytics.utils.checks.AUTOINSTALL`` is on (``YOLO_AUTOINSTALL``, default on) and the host
looked online at import. A worker decoding a caller's undecodable bytes must never install or
download anything, so :func:`forbid_runtime_installs` puts Pillow's own ``Image.open`` back
(HEIC/HEIF support, if any, is registered explicitly by :mod:`core.imageio`) and turns
ultralytics' auto-install and online checks off. The worker calls it once its models are
loaded (:class:`core.pipeline.Worker`), i.e. after every library that patches was imported.

Torch-free; it touches ultralytics only when ultralytics is already imported.
"""

from __future__ import annotations

import os
import sys


def forbid_runtime_installs() -> None:
    """Undo ultralytics' ``Image.open`` patch and switch off its auto-install (idempotent).

    Also sets ``YOLO_AUTOINSTALL=false`` and ``YOLO_OFFLINE=1`` in the environment for any
    ultralytics module imported later.
    """
    os.environ["YOLO_AUTOINSTALL"] = "false"
    os.environ["YOLO_OFFLINE"] = "1"
    for name in ("ultralytics.utils", "ultralytics.utils.checks"):
        mod = sys.modules.get(name)
        if mod is not None:
            if hasattr(mod, "AUTOINSTALL"):
                mod.AUTOINSTALL = False
            if hasattr(mod, "ONLINE"):
                mod.ONLINE = False
    patches = sys.modules.get("ultralytics.utils.patches")
    if patches is not None:
        from PIL import Image

        original = getattr(patches, "_image_open", None)
        if original is not None and Image.open is getattr(patches, "image_open", None):
            Image.open = original
