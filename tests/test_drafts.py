"""Samplers by name and draft speed, end to end through the RunPod handler on the tiny SD 1.5 and
SDXL models: every scheduler name runs and is reported; a draft job runs the LCM-LoRA (loaded
through diffusers' ``load_lora_weights``) and reports it; adapter state does not leak between
jobs (byte-identical to fresh workers); a worker without the LoRA answers ``model_not_found``;
bad combinations are ``invalid_input`` naming the field; the web API and the Modal class run a
draft too."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest

from core.sampling import DRAFT_GUIDANCE, DRAFT_STEPS, SCHEDULERS, Drafts
from tests.conftest import data_url, png_bytes

STEPS = 2
W = H = 96
EXPECTED_CLASS = {name: cls for name, (cls, _) in SCHEDULERS.items()}
EXPECTED_CLASS["default"] = None  # the model's own (PNDM for SD 1.5, Euler for SDXL)
DEFAULT_CLASS = {"sd15-inpaint": "PNDMScheduler", "sdxl-inpaint": "EulerDiscreteScheduler"}


def _job(**kw) -> dict:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    mask = np.zeros((H, W), np.uint8)
    mask[24:72, 24:72] = 255
    inp = {"image": data_url(png_bytes(img), "image/png"),
           "mask": data_url(png_bytes(mask), "image/png"), "prompt": "a red jacket",
           "num_inference_steps": STEPS, "seed": 11, "protect_face": False,
           "protect_hands": False}
    inp.update(kw)
    return inp


_ids = iter(range(10**6))


def _run(handler, **kw) -> dict:
    out = handler({"id": f"drafts-{next(_ids)}-{time.monotonic_ns()}", "input": _job(**kw)})
    assert "error" not in out, out
    return out


@pytest.fixture(scope="module")
def handler(model_set, settings_factory):
    from core.pipeline import Worker
    from core.storage import make_storage
    from handlers.runpod import make_handler

    settings = settings_factory()
    return make_handler(Worker(settings, model_set, make_storage(settings, None)))


def _fresh_handler(settings_factory, weights_dir=None):
    """A worker with its own freshly loaded model set (one that has run no job)."""
    from core.models import ModelSet
    from core.pipeline import Worker
    from core.storage import make_storage
    from handlers.runpod import make_handler

    kw = {"weights_dir": weights_dir} if weights_dir is not None else {}
    settings = settings_factory(inpaint_models=["sd15-inpaint"], **kw)
    models = ModelSet.load(settings)
    return make_handler(Worker(settings, models, make_storage(settings, None))), models


@pytest.fixture(scope="module")
def no_lora_weights(dev_weights, tmp_path_factory):
    """The dev weights without the LoRA files: every other entry linked in."""
    root = tmp_path_factory.mktemp("no-lora-weights")
    for item in dev_weights.iterdir():
        if item.name != "lora":
            (root / item.name).symlink_to(item)
    return root


# ------------------------------------------------------------------ samplers by name
@pytest.mark.parametrize("model", ["sd15-inpaint", "sdxl-inpaint"])
def test_every_scheduler_runs_and_is_reported(handler, model_set, model):
    pipe = model_set.inpainters[model].pipe
    own = pipe.scheduler
    shas = {}
    for name in EXPECTED_CLASS:
        speed = "draft" if name in ("lcm", "tcd") else "standard"
        # 3 steps: at 2, DPM-Solver++ 2M and UniPC both take first-order steps and coincide
        out = _run(handler, model=model, scheduler=name, speed=speed, num_inference_steps=3)
        s = out["sampling"]
        assert s["scheduler"] == name and s["speed"] == speed, s
        assert s["scheduler_class"] == (EXPECTED_CLASS[name] or DEFAULT_CLASS[model]), s
        shas[name] = out["image"]["sha256"]
    # the job's scheduler was swapped in for the call only
    assert pipe.scheduler is own
    # each sampler paints differently; SDXL's own scheduler is Euler, so `euler` (built with
    # from_config on the model's own config) repeats `default` byte for byte
    if model == "sdxl-inpaint":
        assert shas.pop("euler") == shas["default"]
    assert len(set(shas.values())) == len(shas), shas


def test_unknown_scheduler_lists_the_allowed_ones(handler):
    out = handler({"id": "bad-sched", "input": _job(scheduler="k_lms")})
    assert out["error_code"] == "invalid_input" and out["field"] == "scheduler"
    for name in EXPECTED_CLASS:
        assert f"'{name}'" in out["error"], out["error"]


@pytest.mark.parametrize("kw", [
    {"scheduler": "lcm"},  # a few-step sampler on the standard (not distilled) model
    {"scheduler": "tcd", "speed": "standard"},
    {"scheduler": "euler", "speed": "draft"},  # a multistep sampler over the LCM-LoRA
    {"scheduler": "dpmpp_2m_karras", "speed": "draft"},
])
def test_bad_combinations_are_invalid_input_naming_the_field(handler, kw):
    out = handler({"id": "bad-combo", "input": _job(**kw)})
    assert out["error_code"] == "invalid_input" and out["field"] == "scheduler", out
    assert "draft" in out["error"]


def test_unknown_speed_is_invalid_input(handler):
    out = handler({"id": "bad-speed", "input": _job(speed="turbo")})
    assert out["error_code"] == "invalid_input" and out["field"] == "speed"


# ------------------------------------------------------------------ draft speed
@pytest.mark.parametrize("model, lora", [("sd15-inpaint", "lcm-lora-sd15"),
                                         ("sdxl-inpaint", "lcm-lora-sdxl")])
def test_draft_runs_the_lora_and_reports_it(handler, model, lora):
    out = _run(handler, model=model, speed="draft", num_inference_steps=30, guidance_scale=7.5)
    s = out["sampling"]
    assert s == {"scheduler": "lcm", "scheduler_class": "LCMScheduler", "speed": "draft",
                 "num_inference_steps": DRAFT_STEPS[1], "guidance_scale": DRAFT_GUIDANCE[1],
                 "lora": lora, "adjusted": ["num_inference_steps", "guidance_scale"]}
    assert [m["key"] for m in out["models"]][:2] == [model, lora]
    # unsent steps and guidance take the range's low end; nothing the caller sent was changed
    job = _job(model=model, speed="draft")
    del job["num_inference_steps"]
    out = handler({"id": f"draft-low-{model}", "input": job})
    assert out["sampling"]["num_inference_steps"] == DRAFT_STEPS[0]
    assert out["sampling"]["guidance_scale"] == DRAFT_GUIDANCE[0]
    assert out["sampling"]["adjusted"] == []


def test_every_lora_key_reaches_its_unet_module_and_is_off_between_jobs(handler, model_set):
    """The tiny LoRA (kohya layout, like the real files) went through ``load_lora_weights``:
    every module it names is adapted, and after a draft job the adapter is disabled again."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from weights.tiny.lora import lora_modules

    _run(handler, speed="draft")
    for key in ("sd15-inpaint", "sdxl-inpaint"):
        unet = model_set.inpainters[key].pipe.unet
        layers = {n: m for n, m in unet.named_modules() if isinstance(m, BaseTunerLayer)}
        assert sorted(layers) == sorted(lora_modules(unet)), key
        assert all(m.disable_adapters for m in layers.values()), key


def test_no_adapter_state_leaks_between_jobs(handler, settings_factory, no_lora_weights):
    """Draft, standard, draft on one worker give the bytes of fresh workers that ran only one
    of them; a standard job is byte-identical to a worker with no LoRA at all (the disabled
    adapter computes exactly the base layers)."""
    d1 = _run(handler, speed="draft")["image"]["sha256"]
    s1 = _run(handler)["image"]["sha256"]
    d2 = _run(handler, speed="draft")["image"]["sha256"]
    assert d1 == d2 and d1 != s1

    fresh, _ = _fresh_handler(settings_factory)
    assert _run(fresh, speed="draft")["image"]["sha256"] == d1
    bare, models = _fresh_handler(settings_factory, no_lora_weights)
    assert models.drafts.loaded == {}
    assert _run(bare)["image"]["sha256"] == s1


def test_worker_without_the_lora_answers_model_not_found(settings_factory, no_lora_weights):
    bare, models = _fresh_handler(settings_factory, no_lora_weights)
    assert models.drafts.missing == {"lcm-lora-sd15": "not baked"}
    out = bare({"id": "no-lora", "input": _job(speed="draft")})
    assert out["error_code"] == "model_not_found" and out["field"] == "speed", out
    assert "lcm-lora-sd15" in out["error"] and "not baked" in out["error"]
    assert out["retryable"] is False


def test_draft_on_a_model_set_without_drafts_names_the_lora(model_set, settings_factory):
    """A model set loaded before drafts existed (no ``drafts``) answers the same way."""
    from core.pipeline import Worker
    from core.storage import make_storage
    from handlers.runpod import make_handler

    bare = copy.copy(model_set)
    bare.drafts = Drafts()
    settings = settings_factory()
    handler = make_handler(Worker(settings, bare, make_storage(settings, None)))
    out = handler({"id": "no-drafts", "input": _job(speed="draft", model="sdxl-inpaint")})
    assert out["error_code"] == "model_not_found" and "lcm-lora-sdxl" in out["error"]


def test_a_draft_request_says_what_runs():
    """After validation a draft request holds the steps and guidance that run, so its hash (the
    job record's key) tells an unsent 4 from a clamped 8, and a dumped request re-parses the
    same."""
    from core.contract import parse_job
    from core.storage import request_sha256

    base = {"image": "eA==", "prompt": "p", "speed": "draft"}
    low = parse_job("a", base).request
    high = parse_job("b", {**base, "num_inference_steps": 30, "guidance_scale": 7.5}).request
    assert (low.num_inference_steps, low.guidance_scale) == (4, 1.0)
    assert (high.num_inference_steps, high.guidance_scale) == (8, 2.0)
    assert high.sampling_plan().adjusted == ("num_inference_steps", "guidance_scale")
    assert request_sha256(low) != request_sha256(high)
    again = parse_job("c", high.model_dump()).request
    assert (again.num_inference_steps, again.guidance_scale) == (8, 2.0)
    standard = parse_job("d", {"image": "eA==", "prompt": "p"}).request
    assert (standard.num_inference_steps, standard.guidance_scale) == (30, 7.5)


def test_too_few_steps_counts_the_draft_steps(handler):
    """strength x steps is checked on the steps that run: a draft's 4 steps at strength 0.3
    run one step (fine), 0.2 none (rejected, naming strength)."""
    assert _run(handler, speed="draft", strength=0.3)["sampling"]["num_inference_steps"] == 4
    out = handler({"id": "few", "input": _job(speed="draft", strength=0.2)})
    assert out["error_code"] == "invalid_input" and out["field"] == "strength"


# ------------------------------------------------------------------ the other entry points
def test_draft_through_modal_run_job(model_set, settings_factory):
    """The Modal class's job path (``handlers.modal.run_job``) runs a draft like RunPod's."""
    from core.pipeline import Worker
    from core.storage import make_storage
    from handlers.modal import run_job

    settings = settings_factory()
    worker = Worker(settings, model_set, make_storage(settings, None))
    out = run_job(worker, {"id": "modal-draft", "input": _job(speed="draft")})
    assert "error" not in out, out
    assert out["sampling"]["speed"] == "draft" and out["sampling"]["lora"] == "lcm-lora-sd15"
    bad = run_job(worker, {"id": "modal-bad", "input": _job(scheduler="lcm")})
    assert bad["error"]["code"] == "invalid_input" and bad["error"]["field"] == "scheduler"


def test_draft_through_the_web_api(model_set, settings_factory, dev_weights, monkeypatch):
    """POST /jobs with ``speed: draft`` and poll it to the end; a bad combination is refused at
    submit, naming the field."""
    from fastapi.testclient import TestClient

    from core.pipeline import build_worker
    from handlers.serve import local_app

    token = "drafts-test-token-0123456789"
    auth = {"Authorization": f"Bearer {token}"}
    monkeypatch.setenv("MASKPAINT_WEIGHTS_DIR", str(dev_weights))
    app = local_app(build_worker(model_set, settings_factory()), public_url="http://testserver",
                    token=token)
    with TestClient(app) as client:
        r = client.post("/jobs", json={"input": _job(speed="draft", scheduler="tcd")},
                        headers=auth)
        assert r.status_code in (200, 202), r.text
        job_id = r.json()["id"]
        for _ in range(600):  # polls of 0.1 s at most: a bounded loop
            body = client.get(f"/jobs/{job_id}", headers=auth).json()
            if body["status"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.1)
        assert body["status"] == "done", body
        s = body["output"]["sampling"]
        assert (s["speed"], s["scheduler"], s["scheduler_class"]) == ("draft", "tcd",
                                                                      "TCDScheduler")
        r = client.post("/jobs", json={"input": _job(scheduler="tcd")}, headers=auth)
        assert r.status_code in (400, 422), r.text
        assert "scheduler" in r.text


# ------------------------------------------------------------------ clients
def test_ts_types_and_the_page_offer_both_fields():
    """The generated TS types and the mask editor page offer exactly the contract's names."""
    import re
    import typing
    from pathlib import Path

    from core.sampling import SchedulerName

    repo = Path(__file__).resolve().parents[1]
    names = list(typing.get_args(SchedulerName))
    ts = (repo / "clients/ts/src/types.generated.ts").read_text()
    assert "scheduler?: " + " | ".join(f'"{n}"' for n in names) + ";" in ts
    assert 'speed?: "draft" | "standard";' in ts and "sampling?: SamplingInfo | null;" in ts
    page = (repo / "clients/mask-editor/page/index.html").read_text()
    select = page[page.index('<select name="scheduler"'):]
    select = select[:select.index("</select>")]
    assert re.findall(r'<option value="([a-z0-9_]+)"', select) == names
    assert re.search(r'<input type="checkbox" name="draft"[^>]*> Draft</label>', page)
    app = (repo / "clients/mask-editor/page/app.js").read_text()
    assert 'job.speed = "draft"' in app and "job.scheduler = f.scheduler.value" in app


def test_draft_with_reference_garment_and_pose_lock(handler, photos):
    """A draft combines with the outfit-swap add-ons: the IP-Adapter (at guidance 1 its zero
    embeddings take one row, no CFG batch) and the pose ControlNet sharing the LoRA'd UNet."""
    from tests.test_conditioning import _job as outfit_job

    astronaut = photos["astronaut"].read_bytes()
    inp = outfit_job(astronaut, speed="draft", control="pose",
                     garment_image=data_url(photos["bus"].read_bytes()))
    out = handler({"id": "draft-outfit", "input": inp})
    assert "error" not in out, out
    assert out["sampling"]["lora"] == "lcm-lora-sd15" and out["conditioning"]["control"]
    keys = [m["key"] for m in out["models"]]
    assert {"ip-adapter-sd15", "controlnet-openpose-sd15", "lcm-lora-sd15"} <= set(keys)
    plain = _run(handler, speed="draft")  # the draft LoRA is off again, the scheduler restored
    assert plain["sampling"]["scheduler_class"] == "LCMScheduler"


def test_a_draft_unet_call_never_takes_the_compiled_path(dev_weights):
    """The compiled UNet's graphs were traced with the LoRA off: a call while a draft's LoRA is
    on has its own signature, which the compile artefacts never allow, so it runs eager instead
    of recompiling in the middle of a job."""
    import torch
    from diffusers import UNet2DConditionModel

    from core.compile import UNetDispatch
    from core.sampling import LORA_ON_ATTR

    unet = UNet2DConditionModel.from_pretrained(dev_weights / "diffusers/sd15-inpaint",
                                                subfolder="unet", variant="fp16",
                                                local_files_only=True)
    dispatch = UNetDispatch(unet, None, allowed=set())
    args = (torch.zeros(1, 9, 8, 8), torch.zeros(1), torch.zeros(1, 77, 32))
    standard = dispatch.signature(args, {})
    dispatch.allowed = {standard}
    setattr(unet, LORA_ON_ATTR, True)
    assert dispatch.signature(args, {}) != standard
    with torch.inference_mode():
        unet(*args)
    assert dispatch.calls == {"compiled": 0, "eager": 1}
