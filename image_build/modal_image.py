"""The Modal image for maskpaint: the RunPod image's recipe in Modal's builder.

Same CUDA base and Python as ``image_build/Dockerfile``, the same pins (``requirements.lock``),
the same bake (``python -m weights.bake``, run inside the image build so weights are in the image
and a cold start reads local disk), then offline env and the code last (mounted at container
start, so a code edit never rebuilds the weights layer).

Importing this module and calling :func:`build_image` needs no Modal credentials: a
``modal.Image`` is a lazy recipe until an app using it is deployed or run.

    from image_build.modal_image import build_image
    app = modal.App("maskpaint", image=build_image("sd15"))
"""

from __future__ import annotations

import shlex
from pathlib import Path

import modal

from weights.licenses import is_commercial_profile, unneeded_packages
from weights.manifest import load_manifest
from weights.resolve import OFFLINE_ENV

REPO = Path(__file__).resolve().parents[1]
CUDA_IMAGE = "nvidia/cuda:13.0.3-runtime-ubuntu24.04"  #: same base as the Dockerfile
PYTHON_VERSION = "3.12"  #: Ubuntu 24.04's Python, which the Dockerfile uses
APT_PACKAGES = ("libgl1", "libglib2.0-0t64")  #: opencv-python's shared libraries
WEIGHTS_DIR = "/weights"
BAKE_SRC = "/opt/bake"  #: where the bake's copy of weights/ lives inside the image
REMOTE_ROOT = "/root"  #: Modal's working directory and import root for local sources

#: Set after the bake (the bake itself needs the network).
RUNTIME_ENV = {
    **OFFLINE_ENV,  # the worker's offline environment, one definition (weights.resolve)
    "PYTHONUNBUFFERED": "1",
    "MASKPAINT_WEIGHTS_DIR": WEIGHTS_DIR,
    # OpenMP threads sleep while they wait instead of spinning: see runpod_handler.py
    "OMP_WAIT_POLICY": "PASSIVE",
}

_IGNORE = ["**/__pycache__/**", "**/*.pyc", "**/*.part", "**/.bake-staging/**"]


def bake_command(profile: str) -> str:
    """The shell command that bakes ``profile`` into :data:`WEIGHTS_DIR` during the build.

    The wheel cache (MediaPipe's pinned PyPI wheel) and the Hugging Face cache are temporary:
    only the verified files under :data:`WEIGHTS_DIR` stay in the image layer.
    """
    return (
        f"cd {BAKE_SRC} && HF_HOME=/tmp/hf-home MASKPAINT_WHEEL_CACHE=/tmp/maskpaint-wheels "
        f"python -m weights.bake --profile {shlex.quote(profile)} --out {WEIGHTS_DIR} "
        "&& rm -rf /tmp/hf-home /tmp/maskpaint-wheels"
    )


def uninstall_commands(profile: str) -> list[str]:
    """``pip uninstall`` of the packages a commercial ``profile`` never needs
    (:func:`weights.licenses.unneeded_packages`); none for the other profiles."""
    if not is_commercial_profile(profile):
        return []
    packages = unneeded_packages(load_manifest(), profile)
    return [f"pip uninstall -y {' '.join(packages)}"] if packages else []


def build_image(profile: str = "sd15", hf_secret: str | None = None) -> modal.Image:
    """The worker image with the weights of ``profile`` baked in.

    Args:
        profile: a weights profile of ``weights/manifest.json`` (``sd15``, ``sdxl``, ``full``).
        hf_secret: name of a Modal secret that sets ``HF_TOKEN`` for the bake (``modal_app.py``
            passes ``ModalConfig.hf_secret``, ``MASKPAINT_MODAL_HF_SECRET``; none = anonymous
            downloads of public repos).

    Returns:
        A lazy ``modal.Image`` (built by Modal when an app using it is deployed).

    Raises:
        ValueError: ``profile`` is not in the manifest.
    """
    try:
        load_manifest().profile(profile)
    except KeyError as e:
        raise ValueError(str(e.args[0])) from None
    secrets = [modal.Secret.from_name(hf_secret)] if hf_secret else []

    deps = (
        modal.Image.from_registry(CUDA_IMAGE, add_python=PYTHON_VERSION)
        .apt_install(*APT_PACKAGES)
        # 1. dependencies: the same lock file as the RunPod image (a commercial profile's image
        #    then drops what only the non-commercial models need: AGPL-3.0 ultralytics, ...)
        .pip_install_from_requirements(str(REPO / "requirements.lock"))
    )
    if uninstall_commands(profile):
        deps = deps.run_commands(*uninstall_commands(profile))
    return (
        deps
        # 2. weights: only weights/ is copied for the bake, so code edits keep this layer
        .add_local_dir(REPO / "weights", f"{BAKE_SRC}/weights", copy=True, ignore=_IGNORE)
        .run_commands(bake_command(profile), secrets=secrets)
        # 3. offline from here on; code last (mounted at start, never rebuilds the layers above)
        .env(RUNTIME_ENV)
        .workdir(REMOTE_ROOT)
        .add_local_dir(REPO / "schema", f"{REMOTE_ROOT}/schema", ignore=_IGNORE)
        .add_local_python_source("core", "handlers", "weights", ignore=_IGNORE)
    )
