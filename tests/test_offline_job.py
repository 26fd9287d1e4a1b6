"""Bake a whole profile (sd15, sdxl) from a local mirror, then run a job, with every non-loopback
connection forbidden.

The mirror holds the dev weights under the real names: the tiny random models, with a manifest
derived from the real one (same keys, kinds and paths, the tiny files' sha256 and sizes as the
pins), and the real MediaPipe models as wheel members under their pinned hashes. The real bake
lays them out; the worker then loads what the bake laid out and runs a real-photo job without
``model`` through the RunPod handler: the profile's inpainting model runs.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket

import pytest

from tests.conftest import data_url



@pytest.fixture
def no_network(monkeypatch):
    """Any connect() to a non-loopback address fails, and so does DNS for non-local names."""
    real_connect = socket.socket.connect
    attempts = []

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        try:
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError
        except ValueError:
            attempts.append(host)
            raise OSError(f"network forbidden in this test: {host}")
        return real_connect(self, address)

    def getaddrinfo(host, *a, **kw):
        if host not in ("localhost", "127.0.0.1", "::1"):
            attempts.append(host)
            raise socket.gaierror(f"DNS forbidden in this test: {host}")
        return real_getaddrinfo(host, *a, **kw)

    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


def _mirror_manifest(dev_weights, mirror, keys):
    """The real manifest with each dev model's pins replaced by its tiny files, mirrored; real
    (non-dev) models are mirrored as they are, under their real pins."""
    from weights.manifest import Source, SourceFile, load_manifest, load_receipt

    manifest = load_manifest()
    receipt = load_receipt(dev_weights)
    for key in keys:
        entry = manifest.models[key]
        if not receipt.models[key].dev:  # real bytes: mirror each file under its source path
            for f in entry.source.files:
                dst = mirror / key / f.path
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(dev_weights / entry.destination(f), dst)
            continue
        files = []
        model_dir = dev_weights / entry.path if entry.layout == "dir" else (dev_weights / entry.path).parent
        for f in receipt.models[key].files:
            dst = mirror / key / f["path"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(model_dir / f["path"], dst)
            files.append(SourceFile(path=f["path"], sha256=f["sha256"], size=f["size"]))
        entry.source = Source(type="hf", repo=f"maskpaint/tiny-{key}", revision="0" * 40,
                              files=files)
    return manifest


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["sd15", "sdxl"])
def test_bake_from_mirror_then_job_offline(dev_weights, tmp_path, photos, no_network, profile):
    from core.models import ModelSet
    from core.pipeline import Worker
    from core.settings import Settings
    from core.storage import LocalStorage
    from handlers.runpod import make_handler
    from weights.bake import bake

    from weights.manifest import load_manifest, load_receipt

    keys = load_manifest().profile(profile)
    inpaint = f"{profile}-inpaint"
    assert inpaint in keys and "faces-blazeface-full" in keys
    manifest = _mirror_manifest(dev_weights, tmp_path / "mirror", keys)
    out = tmp_path / "weights"
    results = bake(manifest, keys, out, mirror=tmp_path / "mirror", log=lambda _m: None,
                   wheel_cache=tmp_path / "no-wheels")
    assert [r.key for r in results] == keys
    receipt = load_receipt(out).models
    assert set(receipt) == set(keys) and not any(e.dev for e in receipt.values())
    assert receipt["pose-mediapipe-full"].source == "pypi:mediapipe==0.10.21"

    settings = Settings(weights_dir=out, output_dir=tmp_path / "outputs", device="cpu")
    models = ModelSet.load(settings, manifest)
    assert models.missing == {}  # every masking role loaded through its real loader
    assert list(models.inpainters) == [inpaint]
    handler = make_handler(Worker(settings, models, LocalStorage(settings.output_dir)))
    reply = handler({"id": "offline", "input": {
        "image": data_url(photos["zidane"].read_bytes()), "prompt": "a white shirt",
        "num_inference_steps": 2, "seed": 1}})
    assert "error" not in reply, reply
    assert reply["model"] == inpaint  # no `model` in the job: the worker's only one ran
    assert len(list((tmp_path / "outputs" / "offline").glob("result-*.jpg"))) == 1  # JPEG in (auto)
    assert {m["key"] for m in reply["models"]} >= {inpaint, "garments-yolov8s-seg"}
    dev = {k for k, e in load_receipt(dev_weights).models.items() if e.dev}
    assert all(m["source"] == f"maskpaint/tiny-{m['key']}" for m in reply["models"]
               if m["key"] in dev)  # the identities the bake recorded
    assert no_network == []  # nothing even tried to reach the network
