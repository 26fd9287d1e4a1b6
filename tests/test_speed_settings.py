"""The speed settings (each off by default): generation buckets, warm start, compiled UNet with
its eager fallback. Tiny dev models on CPU through the production loaders."""

from __future__ import annotations

import io
import logging
import math

import numpy as np
import pytest
from PIL import Image

from core.buckets import SDXL_BUCKETS, buckets_for, fit_bucket
from tests.conftest import data_url, png_bytes


def test_buckets_are_multiples_of_64_at_the_native_pixel_count():
    assert buckets_for(1024) == SDXL_BUCKETS  # the generic rule reproduces SDXL's own list
    for res in (512, 1024):
        b = buckets_for(res)
        assert (res, res) in b and len(b) >= 5
        for w, h in b:
            assert w % 64 == 0 and h % 64 == 0
            assert abs(w * h / res ** 2 - 1) <= 0.2


@pytest.mark.parametrize("box,size", [((10, 20, 110, 320), (400, 400)),
                                      ((0, 0, 600, 90), (640, 480)),
                                      ((300, 5, 330, 470), (331, 480))])
def test_fit_bucket_grows_the_crop_to_the_bucket_aspect_inside_the_photo(box, size):
    grown, (bw, bh) = fit_bucket(box, size, buckets_for(512))
    x0, y0, x1, y1 = grown
    assert x0 <= box[0] and y0 <= box[1] and x1 >= box[2] and y1 >= box[3]  # never less context
    assert 0 <= x0 and 0 <= y0 and x1 <= size[0] and y1 <= size[1]
    if x1 - x0 < size[0] and y1 - y0 < size[1]:  # room to grow: the bucket's aspect, to a pixel
        assert abs(math.log((x1 - x0) / (y1 - y0)) - math.log(bw / bh)) < 0.02


def _photo_and_mask(photos):
    image = np.asarray(Image.open(photos["bus"]).convert("RGB"))  # 810 x 1080
    alpha = np.zeros(image.shape[:2], np.float32)
    alpha[400:700, 200:420] = 1.0
    alpha[390:400, 200:420] = 0.5  # a feathered band
    return image, alpha


def test_buckets_keep_pixels_outside_the_mask_bit_identical(model_set, photos):
    from core.conditioning import call_extra
    from core.inpaint import InpaintParams, inpaint

    image, alpha = _photo_and_mask(photos)
    inp = model_set.inpainters["sd15-inpaint"]
    buckets = buckets_for(inp.resolution)
    params = InpaintParams({"prompt": "a coat", "num_inference_steps": 2,
                            "guidance_scale": 7.5}, seed=3)

    def run(**kw):
        extra = call_extra(inp.pipe, model_set.conditioning.get("sd15-inpaint"),
                           guidance_scale=7.5)
        return inpaint(inp.pipe, inp.resolution, image.copy(), alpha, params, extra=extra, **kw)

    outs, facts = run(buckets=buckets)
    assert tuple(facts["model_size"]) in buckets
    _, plain = run()
    assert facts["model_size"] != plain["model_size"]  # the setting changed the working size
    out = outs[0]
    assert np.array_equal(out[alpha == 0], image[alpha == 0])
    assert not np.array_equal(out[alpha == 1], image[alpha == 1])


def test_buckets_setting_reaches_the_job(model_set, settings_factory, photos, tmp_path):
    from core.pipeline import build_worker
    from handlers.runpod import make_handler

    settings = settings_factory(generation_buckets=True, output_dir=tmp_path)
    handler = make_handler(build_worker(model_set, settings))
    image, alpha = _photo_and_mask(photos)
    mask = (alpha > 0).astype(np.uint8) * 255
    out = handler({"id": "bucketed", "input": {
        "image": data_url(photos["bus"].read_bytes()), "mask": data_url(png_bytes(mask),
                                                                         "image/png"),
        "prompt": "a coat", "num_inference_steps": 2, "seed": 5, "protect_face": False,
        "mask_dilate_px": 0,
        "mask_feather_px": 0, "output": {"format": "png", "return_base64": True}}})
    assert "error" not in out, out
    import base64

    result = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["image"]["base64"]))))
    original = np.asarray(Image.open(photos["bus"]).convert("RGB"))
    assert np.array_equal(result[mask == 0], original[mask == 0])


def test_warmup_runs_every_pipeline_path_at_cold_start(model_set, settings_factory):
    from core.pipeline import build_worker

    calls = {"unet": 0, "controlnet": 0, "image_encoder": 0}
    inp = model_set.inpainters["sd15-inpaint"]
    cond = model_set.conditioning["sd15-inpaint"]
    mods = {"unet": inp.pipe.unet, "controlnet": cond.control_pipe.controlnet,
            "image_encoder": inp.pipe.image_encoder}
    hooks = [m.register_forward_pre_hook(lambda *_a, n=n: calls.__setitem__(n, calls[n] + 1))
             for n, m in mods.items()]
    try:
        off = build_worker(model_set, settings_factory())
        assert calls == {"unet": 0, "controlnet": 0, "image_encoder": 0}
        assert not any(k.startswith("warmup") for k in off.cold_start_ms)
        worker = build_worker(model_set, settings_factory(warmup=True))
    finally:
        for h in hooks:
            h.remove()
    assert all(n > 0 for n in calls.values()), calls
    assert worker.cold_start_ms["warmup.sd15-inpaint"] > 0
    assert worker.cold_start_ms["warmup.sdxl-inpaint"] > 0


def _compile_lines(caplog):
    return [r for r in caplog.records if r.name == "maskpaint.compile"]


def test_compile_without_artefacts_logs_one_line_and_runs_eager(
        model_set, settings_factory, tmp_path, caplog, photos):
    from core.pipeline import build_worker
    from handlers.runpod import make_handler

    unets = [m.pipe.unet for m in model_set.inpainters.values()]
    caplog.set_level(logging.INFO, logger="maskpaint.compile")
    worker = build_worker(model_set, settings_factory(compile_unet=True, weights_dir=tmp_path,
                                                      output_dir=tmp_path / "out"))
    lines = _compile_lines(caplog)
    assert len(lines) == 1 and "no compile artefacts" in lines[0].getMessage()
    assert all("forward" not in u.__dict__ for u in unets)  # eager: forward not replaced
    image, alpha = _photo_and_mask(photos)
    out = make_handler(worker)({"id": "eager", "input": {
        "image": data_url(photos["bus"].read_bytes()),
        "mask": data_url(png_bytes((alpha > 0).astype(np.uint8) * 255), "image/png"),
        "prompt": "a coat", "num_inference_steps": 2, "protect_face": False}})
    assert "error" not in out, out


def test_compile_artefacts_for_another_runtime_log_one_line_and_run_eager(
        model_set, tmp_path, caplog):
    from core.compile import ARTEFACT_DIR, enable

    other = tmp_path / ARTEFACT_DIR / "sm_90-torch2.11.0-triton3.6.0"
    other.mkdir(parents=True)
    (other / "meta.json").write_text('{"models": {}}')
    (other / "artifacts.bin").write_bytes(b"not for this runtime")
    caplog.set_level(logging.INFO, logger="maskpaint.compile")
    assert enable(model_set, tmp_path) == {}
    lines = _compile_lines(caplog)
    assert len(lines) == 1
    assert "sm_90-torch2.11.0-triton3.6.0" in lines[0].getMessage()
    assert "eager" in lines[0].getMessage()
    assert all("forward" not in m.pipe.unet.__dict__ for m in model_set.inpainters.values())


def test_compiled_forward_runs_only_for_the_allowed_call_signatures():
    """The dispatcher behind MASKPAINT_COMPILE_UNET: the compiled path for a signature it was
    told about (same numbers as eager), eager for any other shape (no compile during a job)."""
    import torch

    from core.compile import UNetDispatch

    torch.manual_seed(0)
    net = torch.nn.Linear(8, 4)
    eager = net.forward
    x, other = torch.randn(2, 8), torch.randn(3, 8)
    recorder = UNetDispatch(net, None, None)  # record mode: compiles what it sees
    with torch.no_grad():
        want = eager(x)
        assert torch.allclose(net(x), want, atol=1e-6)
    assert len(recorder.seen) == 1 and recorder.calls == {"compiled": 1, "eager": 0}

    net.forward = eager  # a fresh process: only the recorded signature may run compiled
    disp = UNetDispatch(net, None, set(recorder.seen))
    with torch.no_grad():
        assert torch.allclose(net(x), want, atol=1e-6)
        assert torch.allclose(net(other), eager(other), atol=1e-6)
    assert disp.calls == {"compiled": 1, "eager": 1}


def test_unreadable_compile_artefacts_log_one_line_and_run_eager(model_set, tmp_path, caplog):
    from core.compile import artefact_dir, enable, runtime_key

    folder = artefact_dir(tmp_path, runtime_key(model_set.device))  # this very runtime
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text("{not json")
    (folder / "artifacts.bin").write_bytes(b"garbage")
    caplog.set_level(logging.INFO, logger="maskpaint.compile")
    assert enable(model_set, tmp_path) == {}
    lines = _compile_lines(caplog)
    assert len(lines) == 1 and "could not be loaded" in lines[0].getMessage()
    assert all("forward" not in m.pipe.unet.__dict__ for m in model_set.inpainters.values())
