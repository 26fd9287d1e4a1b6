"""At-least-once delivery: the same job id delivered again, on a worker with
other numerics, twice at once, after a crash mid-job, or with a different request.

"Other numerics" is a redelivery on another torch thread count plus a pipeline whose output
differs by one grey level (what another GPU type of a fallback list does to the bytes). Work is
counted at the seams: input fetches (``core.pipeline.load_bytes``) and diffusion calls.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image

from tests.conftest import BUCKET, data_url, png_bytes

MASK = np.zeros((512, 512), np.uint8)
MASK[280:470, 170:360] = 255


@pytest.fixture(scope="module")
def astro(photos) -> bytes:
    return photos["astronaut"].read_bytes()


def _input(astro: bytes, **kw) -> dict:
    inp = {"image": data_url(astro, "image/png"), "mask": data_url(png_bytes(MASK), "image/png"),
           "prompt": "a blue denim jacket", "num_inference_steps": 2, "seed": 7}
    if kw.get("task") == "mask":  # a mask job refuses the repaint's fields
        for name in ("prompt", "num_inference_steps", "seed"):
            inp.pop(name, None)
    inp.update(kw)
    return inp


class _Numerics:
    """Stands in for the diffusion pipeline *call*: counts calls and, when ``shift`` is on for
    the calling thread, changes the generated pixels by one level (another GPU's numerics)."""

    def __init__(self, real) -> None:
        self.real = real
        self.calls = 0
        self.shift_threads: set[str] = set()
        self.shift_all = False
        self.lock = threading.Lock()
        self.barrier: threading.Barrier | None = None

    def __call__(self, *a, **kw):
        if self.barrier is not None:
            self.barrier.wait(timeout=120)  # both deliveries are mid-job before either goes on
        with self.lock:  # one model set stands for two machines: run them one at a time
            self.calls += 1
            out = self.real(*a, **kw)
        if self.shift_all or threading.current_thread().name in self.shift_threads:
            img = np.asarray(out.images[0]).copy()
            out.images[0] = Image.fromarray(np.where(img < 255, img + 1, img - 1).astype(np.uint8))
        return out

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.fixture
def numerics(model_set):
    inp = model_set.inpainters["sd15-inpaint"]
    real = inp.pipe
    inp.pipe = _Numerics(real)
    yield inp.pipe
    inp.pipe = real


@pytest.fixture
def fetches(monkeypatch):
    import core.pipeline

    count = {"n": 0}
    real = core.pipeline.load_bytes

    def counting(*a, **kw):
        count["n"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(core.pipeline, "load_bytes", counting)
    return count


def _objects(s3, job: str) -> dict[str, str]:
    """key -> sha256 of every object under the job's folder."""
    out = {}
    for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"maskpaint/{job}/").get("Contents", []):
        body = s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
        out[o["Key"]] = hashlib.sha256(body).hexdigest()
    return out


def _same_result(a: dict, b: dict) -> None:
    """Equal results, URLs aside (presigned again per delivery)."""
    art = lambda v: ({kk: vv for kk, vv in v.items() if kk != "url"} if isinstance(v, dict)
                     and "url" in v else v)
    # a gallery's `images` is a list of artefacts, each with its own fresh URL
    strip = lambda r: {k: ([art(x) for x in v] if isinstance(v, list) else art(v))
                       for k, v in r.items()}
    assert strip(a) == strip(b)


@pytest.mark.slow
def test_redelivery_on_other_numerics_returns_the_recorded_result_without_gpu_work(
        runpod_handler, s3, astro, numerics, fetches):
    import torch

    first = runpod_handler({"id": "redeliver", "input": _input(astro)})
    assert "error" not in first, first
    stored = _objects(s3, "redeliver")
    assert numerics.calls == 1 and fetches["n"] == 2  # image + mask

    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    numerics.shift_all = True  # this worker would paint other bytes
    try:
        again = runpod_handler({"id": "redeliver", "input": _input(
            astro, output={"url_expires_s": 600, "return_base64": True})})
    finally:
        torch.set_num_threads(threads)
    assert "error" not in again, again
    assert numerics.calls == 1 and fetches["n"] == 2  # no fetch, no decode, no diffusion
    for name in ("image", "mask", "overlay"):
        assert again[name]["key"] == first[name]["key"]
        assert again[name]["sha256"] == first[name]["sha256"]
        # delivery options are this delivery's own: URL lifetime and the inline bytes
        assert parse_qs(urlparse(again[name]["url"]).query)["X-Amz-Expires"] == ["600"]
        assert hashlib.sha256(base64.b64decode(again[name]["base64"])).hexdigest() \
            == first[name]["sha256"]
    assert again["seed"] == first["seed"] and again["timings_ms"] == first["timings_ms"]
    assert _objects(s3, "redeliver") == stored  # nothing written, nothing overwritten


@pytest.mark.slow
def test_concurrent_deliveries_report_the_one_recorded_result(s3_worker, s3, astro, numerics):
    from handlers.runpod import make_handler

    handler = make_handler(s3_worker)
    numerics.barrier = threading.Barrier(2)
    numerics.shift_threads = {"delivery-b"}  # the second machine paints other bytes
    replies: dict[str, dict] = {}

    def deliver(name: str) -> None:
        replies[name] = handler({"id": "twice", "input": _input(astro)})

    threads = [threading.Thread(target=deliver, args=(n,), name=n)
               for n in ("delivery-a", "delivery-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    a, b = replies["delivery-a"], replies["delivery-b"]
    assert "error" not in a and "error" not in b, (a, b)
    assert numerics.calls == 2  # both really ran
    _same_result(a, b)  # ...and both callers got the one recorded result
    objects = _objects(s3, "twice")
    record = json.loads(s3.get_object(Bucket=BUCKET, Key="maskpaint/twice/job.json")["Body"].read())
    for name in ("image", "mask", "overlay"):
        assert record["result"][name]["key"] == a[name]["key"]
        assert objects[a[name]["key"]] == a[name]["sha256"]  # the winners are intact
    # the loser's different image landed beside the winner's, under its own name
    images = [k for k in objects if "/result-" in k]
    assert len(images) == 2


@pytest.mark.slow
def test_crash_mid_job_then_redelivery_on_other_numerics_succeeds(runpod_handler, s3, astro,
                                                                  numerics):
    def crash_on_overlay(request, **_):
        if "/overlay" in urlparse(request.url).path:
            raise RuntimeError("worker lost mid-upload")

    s3.meta.events.register("before-send.s3.PutObject", crash_on_overlay)
    first = runpod_handler({"id": "crashed", "input": _input(astro)})
    s3.meta.events.unregister("before-send.s3.PutObject", crash_on_overlay)
    assert first.get("error_code") == "internal", first
    left = _objects(s3, "crashed")  # what the lost attempt had written
    assert any("/result" in k for k in left) and not any(k.endswith("job.json") for k in left)

    numerics.shift_all = True  # redelivered on a machine with other numerics
    again = runpod_handler({"id": "crashed", "input": _input(astro)})
    assert "error" not in again, again
    assert again["image"]["sha256"] not in left.values()  # really other bytes...
    now = _objects(s3, "crashed")
    assert all(now[k] == sha for k, sha in left.items())  # ...and nothing was overwritten
    assert now[again["image"]["key"]] == again["image"]["sha256"]
    third = runpod_handler({"id": "crashed", "input": _input(astro)})
    _same_result(again, third)


@pytest.mark.slow
def test_same_id_with_a_different_request_is_a_conflict_before_any_work(
        runpod_handler, s3, astro, numerics, fetches):
    first = runpod_handler({"id": "reused", "input": _input(astro)})
    assert "error" not in first, first
    stored = _objects(s3, "reused")
    calls, fetched = numerics.calls, fetches["n"]
    for other in (_input(astro, prompt="a green raincoat"), _input(astro, seed=8),
                  _input(astro, task="mask")):
        out = runpod_handler({"id": "reused", "input": other})
        assert out.get("error_code") == "storage_conflict" and out["retryable"] is False, out
    assert (numerics.calls, fetches["n"]) == (calls, fetched)  # refused before any work
    assert _objects(s3, "reused") == stored


def test_mask_job_redelivered_with_a_prompt_is_refused_not_reused(runpod_handler, s3,
                                                                  astro, fetches):
    """A ``mask`` job has no use for ``prompt``: the redelivery that adds one is refused by
    name before any fetch, and the recorded result stays."""
    inp = {"image": data_url(astro, "image/png"), "task": "mask", "protect_face": False}
    first = runpod_handler({"id": "mask-reused", "input": inp})
    assert "error" not in first, first
    stored = _objects(s3, "mask-reused")
    out = runpod_handler({"id": "mask-reused", "input": {**inp, "prompt": "something else"}})
    assert (out.get("error_code"), out.get("field")) == ("invalid_input", "prompt"), out
    assert fetches["n"] == 1
    assert _objects(s3, "mask-reused") == stored


def test_local_storage_redelivery_returns_the_recorded_result(model_set, settings_factory,
                                                              astro, tmp_path, fetches):
    from core.pipeline import Worker
    from core.storage import LocalStorage
    from handlers.runpod import make_handler

    settings = settings_factory(output_dir=tmp_path)
    handler = make_handler(Worker(settings, model_set, LocalStorage(tmp_path)))
    inp = {"image": data_url(astro, "image/png"), "task": "mask", "protect_face": False}
    first = handler({"id": "local/1", "input": inp})
    assert "error" not in first, first
    again = handler({"id": "local/1", "input": inp})
    _same_result(first, again)
    assert fetches["n"] == 1
    folder = tmp_path / first["job_id"]
    assert sorted(p.name.split("-")[0] for p in folder.iterdir()) == ["job.json", "mask",
                                                                      "overlay"]


def test_write_once_record_keeps_the_first_writer(tmp_path, s3):
    from core.storage import LocalStorage, S3Storage

    for storage in (LocalStorage(tmp_path), S3Storage(s3, BUCKET)):
        key = storage.key_for("race", "job.json")
        assert storage.create(key, b"first", "application/json") is None
        assert storage.create(key, b"second", "application/json") == b"first"
        assert storage.get(key) == b"first"
        assert storage.get(storage.key_for("race", "absent.json")) is None


def test_a_record_this_version_cannot_read_is_a_conflict_not_a_crash(runpod_handler, s3, astro,
                                                                     fetches):
    from core.contract import parse_job
    from core.storage import request_sha256

    inp = _input(astro)
    sha = request_sha256(parse_job("old", inp).request)
    s3.put_object(Bucket=BUCKET, Key="maskpaint/old/job.json", Body=json.dumps(
        {"version": 1, "request_sha256": sha, "result": {"job_id": "old"}}).encode())
    out = runpod_handler({"id": "old", "input": inp})
    assert out.get("error_code") == "storage_conflict" and out["retryable"] is False, out
    assert fetches["n"] == 0
