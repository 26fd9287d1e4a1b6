"""Hostile inputs and injected faults: each gets its exact error code, nothing leaks, and the
same worker then completes a normal job.

URL guard details (DNS rebinding, redirects, slow drip, lying Content-Length) are covered against
loopback servers in tests/test_net.py; here every door is exercised through the RunPod handler.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
import zlib
from urllib.parse import urlparse

import numpy as np
import pytest
from botocore.awsrequest import AWSResponse
from PIL import Image

from tests.conftest import BUCKET, data_url, png_bytes

GOOD_MASK = np.zeros((512, 512), np.uint8)
GOOD_MASK[280:470, 170:360] = 255


@pytest.fixture(scope="module")
def astro(photos) -> bytes:
    return photos["astronaut"].read_bytes()


def _good(astro: bytes, **kw) -> dict:
    inp = {"image": data_url(astro, "image/png"), "mask": data_url(png_bytes(GOOD_MASK), "image/png"),
           "prompt": "a blue denim jacket", "num_inference_steps": 2, "seed": 7}
    if kw.get("task") == "mask":  # a mask job refuses the repaint's fields
        for name in ("prompt", "num_inference_steps", "seed"):
            inp.pop(name, None)
    inp.update(kw)
    return inp


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height px (a decompression bomb's header)."""
    raw = png_bytes(np.zeros((1, 1), np.uint8))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


def _img(fmt: str, size=(64, 64), **kw) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 80, 40)).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _animated_webp() -> bytes:
    frames = [Image.new("RGB", (256, 256), c) for c in ((200, 0, 0), (0, 200, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:])
    return buf.getvalue()


# (case id, patch to a good input, expected code); `None` patch values delete the field
CATALOGUE = [
    # --- URLs and references
    ("url-loopback", {"image": "https://127.0.0.1/a.jpg"}, "blocked_url"),
    ("url-metadata", {"image": "https://169.254.169.254/latest/meta-data/"}, "blocked_url"),
    ("url-private-10", {"image": "https://10.0.0.8/a.jpg"}, "blocked_url"),
    ("url-cgnat", {"image": "https://100.64.0.1/a.jpg"}, "blocked_url"),
    ("url-ipv6-loopback", {"image": "https://[::1]/a.jpg"}, "blocked_url"),
    ("url-ipv4-mapped", {"image": "https://[::ffff:127.0.0.1]/a.jpg"}, "blocked_url"),
    ("url-decimal-host", {"image": "https://2130706433/a.jpg"}, "blocked_url"),
    ("url-octal-host", {"image": "https://0177.0.0.1/a.jpg"}, "blocked_url"),
    ("url-userinfo", {"image": "https://user:pw@example.com/a.jpg"}, "blocked_url"),
    ("url-port", {"image": "https://example.com:8443/a.jpg"}, "blocked_url"),
    ("url-http", {"image": "http://example.com/a.jpg"}, "blocked_url"),
    ("url-file", {"image": "file:///etc/passwd"}, "blocked_url"),
    ("url-ftp", {"mask": "ftp://example.com/m.png"}, "blocked_url"),
    ("s3-other-bucket", {"image": "s3://someone-elses-bucket/a.jpg"}, "blocked_url"),
    ("s3-traversal", {"image": f"s3://{BUCKET}/inputs/../../secrets.png"}, "blocked_url"),
    ("s3-missing", {"image": f"s3://{BUCKET}/inputs/missing.png"}, "input_not_found"),
    ("s3-malformed", {"image": "s3://"}, "invalid_input"),
    # --- bytes that are not (allowed) images
    ("b64-garbage", {"image": "%%%%"}, "invalid_image"),
    ("b64-whitespace", {"image": "aGVs bG8="}, "invalid_image"),
    ("b64-bad-padding", {"image": "aGVsbG8"}, "invalid_image"),
    ("data-url-no-base64", {"image": "data:image/png,rawbytes"}, "invalid_image"),
    ("not-an-image", {"image": data_url(b"<html>hello</html>", "text/html")}, "invalid_image"),
    ("gif", {"image": data_url(_img("GIF"), "image/gif")}, "invalid_image"),
    ("bmp", {"image": data_url(_img("BMP"), "image/bmp")}, "invalid_image"),
    ("tiff", {"image": data_url(_img("TIFF"), "image/tiff")}, "invalid_image"),
    ("truncated-png", {"image": data_url(_img("PNG", (300, 300))[:-60], "image/png")}, "invalid_image"),
    ("bomb-header", {"image": data_url(_png_claiming(100_000, 100_000), "image/png")}, "image_too_large"),
    ("over-pixel-limit", {"image": data_url(_png_claiming(9000, 9000), "image/png")}, "image_too_large"),
    ("extreme-aspect", {"image": data_url(_img("PNG", (4000, 20)), "image/png")}, "image_too_large"),
    ("mask-bomb", {"mask": data_url(_png_claiming(60_000, 60_000), "image/png")}, "image_too_large"),
    ("mask-wrong-aspect", {"mask": data_url(png_bytes(np.zeros((30, 90), np.uint8)), "image/png")}, "invalid_image"),
    ("mask-empty", {"mask": data_url(png_bytes(np.zeros((512, 512), np.uint8)), "image/png")}, "empty_mask"),
    ("oversized-b64", {"image": "A" * (40 * 1024 * 1024)}, "image_too_large"),
    # --- parameter abuse
    ("nan", {"guidance_scale": float("nan")}, "invalid_input"),
    ("inf", {"strength": float("inf")}, "invalid_input"),
    ("steps-huge", {"num_inference_steps": 10**9}, "invalid_input"),
    ("steps-negative", {"num_inference_steps": -1}, "invalid_input"),
    ("seed-negative", {"seed": -5}, "invalid_input"),
    ("seed-too-big", {"seed": 2**64}, "invalid_input"),
    ("prompt-huge", {"prompt": "dress " * 2000}, "invalid_input"),
    ("prompt-missing", {"prompt": None}, "invalid_input"),
    ("prompt-wrong-type", {"prompt": ["a", "b"]}, "invalid_input"),
    ("unknown-field", {"webhook": "https://evil.example/"}, "invalid_input"),
    ("bad-target", {"targets": ["everything"]}, "invalid_input"),
    ("bad-format", {"output": {"format": "bmp"}}, "invalid_input"),
    ("expiry-over-7-days", {"output": {"url_expires_s": 8 * 86400}}, "invalid_input"),
    ("dilate-huge", {"mask_dilate_px": 10**6}, "invalid_input"),
    ("face-margin-negative", {"face_margin": -1}, "invalid_input"),
    ("image-missing", {"image": None}, "invalid_input"),
    ("model-unknown", {"model": "../../etc/passwd"}, "model_not_found"),
]


@pytest.mark.parametrize("patch,code", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_hostile_input_gets_its_code_then_worker_serves(runpod_handler, s3, astro, patch, code):
    inp = _good(astro)
    for k, v in patch.items():
        if v is None:
            inp.pop(k, None)
        else:
            inp[k] = v
    out = runpod_handler({"id": "hostile", "input": inp})
    assert out.get("error_code") == code, {k: v for k, v in out.items() if k != "image"}
    text = json.dumps(out)
    assert "Traceback" not in text and len(text) < 1000  # no payload echoed
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="maskpaint/hostile/").get("KeyCount", 0) == 0
    ok = runpod_handler({"id": "next", "input": _good(astro)})
    assert "error" not in ok, ok


def test_animated_webp_uses_first_frame(runpod_handler, astro):
    out = runpod_handler({"id": "anim", "input": _good(
        astro, image=data_url(_animated_webp(), "image/webp"),
        mask=data_url(png_bytes(GOOD_MASK[::2, ::2]), "image/png"))})
    assert "error" not in out, out
    assert out["size"] == [256, 256]


def test_s3_input_from_allowed_bucket(runpod_handler, s3, astro):
    s3.put_object(Bucket=BUCKET, Key="inputs/astro.png", Body=astro, ContentType="image/png")
    out = runpod_handler({"id": "from-s3", "input": _good(astro, image=f"s3://{BUCKET}/inputs/astro.png")})
    assert "error" not in out, out


# ------------------------------------------------------------------ storage faults (moto)
def _fake_response(request, status: int, code: str) -> AWSResponse:
    body = f'<?xml version="1.0"?><Error><Code>{code}</Code><Message>injected</Message></Error>'.encode()

    class Raw:
        def stream(self, **_):
            yield body

    return AWSResponse(request.url, status, {}, Raw())


def _inject(s3, op: str, fault, times: int | None):
    calls = {"n": 0}

    def hook(request, **_):
        calls["n"] += 1
        if times is None or calls["n"] <= times:
            return fault(request)

    s3.meta.events.register(f"before-send.s3.{op}", hook)
    return calls


def test_throttling_then_success(runpod_handler, s3, astro):
    calls = _inject(s3, "PutObject", lambda r: _fake_response(r, 503, "SlowDown"), times=2)
    out = runpod_handler({"id": "throttled", "input": _good(astro)})
    assert "error" not in out, out
    assert calls["n"] >= 5  # 2 throttled + 3 objects


@pytest.mark.parametrize("status,code,retryable", [(500, "InternalError", True),
                                                   (403, "AccessDenied", False)])
def test_permanent_storage_failure(runpod_handler, s3, astro, status, code, retryable):
    _inject(s3, "PutObject", lambda r: _fake_response(r, status, code), times=None)
    out = runpod_handler({"id": "store-fails", "input": _good(astro)})
    assert out["error_code"] == "storage_error"
    assert out["retryable"] is retryable
    assert "http" not in json.dumps(out)  # no URL handed out


def test_endpoint_down_is_storage_error(model_set, settings_factory, astro):
    from core.pipeline import Worker
    from core.storage import S3Storage, make_s3_client
    from handlers.runpod import make_handler

    s = settings_factory(s3_bucket=BUCKET, s3_endpoint_url="http://127.0.0.1:9",
                         s3_region="us-east-1", s3_max_attempts=2, s3_connect_timeout_s=0.5)
    client = make_s3_client(s)
    handler = make_handler(Worker(s, model_set, S3Storage(client, BUCKET)))
    out = handler({"id": "down", "input": _good(astro)})
    assert out["error_code"] == "storage_error" and out["retryable"] is True


def test_lost_response_then_412_returns_own_object(runpod_handler, s3, astro, monkeypatch):
    """The first PUT lands but its response is lost; botocore retries and gets 412
    (IfNoneMatch); the job finds its own identical object and succeeds."""
    from botocore.exceptions import ConnectionClosedError

    state = {"n": 0}

    def lose_first_response(request, **_):
        state["n"] += 1
        if state["n"] == 1:
            path = urlparse(request.url).path.lstrip("/")
            key = path[len(BUCKET) + 1:] if path.startswith(BUCKET + "/") else path
            s3.meta.events.unregister("before-send.s3.PutObject", lose_first_response)
            hdr = {k.lower(): (v.decode() if isinstance(v, bytes) else v)
                   for k, v in request.headers.items()}
            s3.put_object(Bucket=BUCKET, Key=key, Body=request.body,
                          ContentType=hdr["content-type"],
                          Metadata={"sha256": hdr["x-amz-meta-sha256"]})
            s3.meta.events.register("before-send.s3.PutObject", lose_first_response)
            raise ConnectionClosedError(endpoint_url=request.url)

    from core.storage import S3Storage

    checked = []
    real_check = S3Storage._check_existing
    monkeypatch.setattr(S3Storage, "_check_existing",
                        lambda self, key, digest: (checked.append(key), real_check(self, key, digest)))
    s3.meta.events.register("before-send.s3.PutObject", lose_first_response)
    out = runpod_handler({"id": "lost", "input": _good(astro)})
    assert "error" not in out, out
    assert len(checked) == 1  # exactly the one object whose response was lost hit the 412 path


def test_rerun_never_overwrites_a_different_object(runpod_handler, s3, astro):
    # artefact names are content-addressed: a foreign object at a plain name is left alone
    key = "maskpaint/taken/mask.png"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"someone else's", Metadata={"sha256": "0" * 64})
    out = runpod_handler({"id": "taken", "input": _good(astro)})
    assert "error" not in out and out["mask"]["key"] != key
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"someone else's"
    # a foreign object where the job record goes: conflict, and it stays as it was
    key = "maskpaint/taken-2/job.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"someone else's", Metadata={"sha256": "0" * 64})
    out = runpod_handler({"id": "taken-2", "input": _good(astro)})
    assert out["error_code"] == "storage_conflict" and out["retryable"] is False
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"someone else's"


# ------------------------------------------------------------------ runtime faults
def test_deadline_returns_timeout_and_uploads_nothing(model_set, settings_factory, s3, astro):
    from core.pipeline import Worker
    from core.storage import S3Storage
    from handlers.runpod import make_handler

    s = settings_factory(s3_bucket=BUCKET, job_deadline_s=0.05)
    handler = make_handler(Worker(s, model_set, S3Storage(s3, BUCKET)))
    out = handler({"id": "slow", "input": _good(astro, num_inference_steps=50)})
    assert out["error_code"] == "timeout" and out["retryable"] is True
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


class _Raises:
    """Stands in for a pipeline *call* only, to inject an accelerator fault at that seam; every
    attribute (scheduler, components, config) is the real pipeline's."""

    def __init__(self, exc, real):
        self.exc = exc
        self.real = real

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __call__(self, *a, **kw):
        raise self.exc


@pytest.fixture
def broken_pipe(model_set):
    inp = model_set.inpainters["sd15-inpaint"]
    real = inp.pipe

    def set_fault(exc):
        inp.pipe = _Raises(exc, real)

    yield set_fault
    inp.pipe = real


def test_gpu_oom(runpod_handler, astro, broken_pipe):
    import torch

    broken_pipe(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    out = runpod_handler({"id": "oom", "input": _good(astro)})
    assert out["error_code"] == "gpu_oom" and out["retryable"] is True
    assert "refresh_worker" not in out


def test_device_error_recycles_worker(runpod_handler, astro, broken_pipe):
    broken_pipe(RuntimeError("CUDA error: an illegal memory access was encountered"))
    out = runpod_handler({"id": "xid", "input": _good(astro)})
    assert out["error_code"] == "device_error" and out["refresh_worker"] is True


def test_unexpected_exception_is_internal_without_details(runpod_handler, astro, broken_pipe, caplog):
    broken_pipe(KeyError("/home/worker/secret/path on host gpu-node-17"))
    with caplog.at_level(logging.ERROR):
        out = runpod_handler({"id": "bug", "input": _good(astro)})
    assert out["error_code"] == "internal"
    text = json.dumps(out)
    assert "secret" not in text and "gpu-node" not in text and "Traceback" not in text
    assert any(r.exc_info for r in caplog.records)  # the traceback went to the log


# ------------------------------------------------------------------ logs
def test_logs_carry_no_payload_signature_or_key(runpod_handler, astro, monkeypatch):
    from core.logs import JsonFormatter, setup_logging

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY")
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)  # restored after the test
    setup_logging("DEBUG")
    stream = io.StringIO()
    h = logging.StreamHandler(stream)
    h.setFormatter(JsonFormatter())
    root.addHandler(h)
    try:
        big = np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), dtype=np.uint8)
        payload = base64.b64encode(png_bytes(big)).decode()
        out = runpod_handler({"id": "logged", "input": {
            "image": payload, "prompt": "a coat", "num_inference_steps": 2,
            "mask": data_url(png_bytes(np.pad(np.full((400, 400), 255, np.uint8), 400)), "image/png")}})
        assert "error" not in out, out
        bad = runpod_handler({"id": "logged-bad", "input": {"image": payload[:5000] + "!!"}})
        assert "error" in bad
        logging.getLogger("maskpaint.test").info("echo %s", out["image"]["url"])
    finally:
        root.removeHandler(h)
    text = stream.getvalue()
    assert text, "nothing was logged"
    assert payload[:64] not in text and payload[-64:] not in text
    sig = out["image"]["url"].split("X-Amz-Signature=")[1]
    assert sig not in text
    assert "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY" not in text
    for line in text.splitlines():
        json.loads(line)  # structured: one JSON object per line


def test_one_structured_log_line_per_stage(runpod_handler, astro, caplog):
    with caplog.at_level(logging.INFO, logger="maskpaint.job"):
        out = runpod_handler({"id": "staged", "input": _good(astro)})
    assert "error" not in out
    stages = [(r.job_id, r.stage) for r in caplog.records if hasattr(r, "stage")]
    assert stages == [("staged", s) for s in ("fetch", "decode", "mask", "inpaint", "safety",
                                              "encode", "upload")]
    assert all(isinstance(r.ms, float) for r in caplog.records if hasattr(r, "stage"))


# ------------------------------------------------------------------ delivery and clients
def test_fewer_than_one_denoising_step_is_invalid_input_naming_both_fields(runpod_handler, astro):
    """strength 0.02 x 30 steps = 0.6 steps: diffusers would raise (-> internal, retryable)."""
    for strength, steps in ((0.02, 30), (0.3, 3), (0.5, 1)):
        out = runpod_handler({"id": "too-few-steps", "input": _good(
            astro, strength=strength, num_inference_steps=steps)})
        assert out.get("error_code") == "invalid_input", out
        assert out["retryable"] is False and out["field"] == "strength"
        assert "strength" in out["message"] and "num_inference_steps" in out["message"]
    ok = runpod_handler({"id": "one-step", "input": _good(astro, strength=0.05,
                                                          num_inference_steps=20)})
    assert "error" not in ok, ok  # exactly one step runs


def test_another_jobs_outputs_are_not_readable_as_input(runpod_handler, s3, astro):
    """The output bucket is not an input bucket: naming another job's stored result (the README's
    Next.js example forwards `image` from the browser) is blocked_url, and nothing is read."""
    victim = runpod_handler({"id": "victim", "input": _good(astro)})
    assert "error" not in victim, victim
    gets = _inject(s3, "GetObject", lambda r: None, times=None)
    heads = _inject(s3, "HeadObject", lambda r: None, times=None)
    for field in ("image", "mask"):
        for key in (victim["image"]["key"], victim["mask"]["key"], "maskpaint/victim/job.json"):
            out = runpod_handler({"id": "thief", "input": _good(astro, **{field: f"s3://{BUCKET}/{key}"})})
            assert out.get("error_code") == "blocked_url", out
            assert out["field"] == field
    # the only reads were the thief's own record look-ups, never the victim's objects
    assert heads["n"] == 0
    assert gets["n"] == 6


def test_output_prefix_stays_closed_even_when_the_bucket_is_an_input_bucket(
        model_set, settings_factory, s3, astro):
    from core.pipeline import Worker
    from core.storage import S3Storage
    from handlers.runpod import make_handler

    s = settings_factory(s3_bucket=BUCKET, input_buckets=[BUCKET])
    handler = make_handler(Worker(s, model_set, S3Storage(s3, BUCKET), lambda: s3))
    s3.put_object(Bucket=BUCKET, Key="uploads/astro.png", Body=astro)
    s3.put_object(Bucket=BUCKET, Key="maskpaint/other/result-0.png", Body=astro)
    assert "error" not in handler({"id": "in", "input": _good(astro, image=f"s3://{BUCKET}/uploads/astro.png")})
    out = handler({"id": "in2", "input": _good(astro, image=f"s3://{BUCKET}/maskpaint/other/result-0.png")})
    assert out.get("error_code") == "blocked_url", out


@pytest.mark.parametrize("a,b", [("a/b", "a_b"), ("job 2", "job/2"), ("job 2", "job_2"),
                                 ("x" * 128 + "1", "x" * 128 + "2"), ("..", "_")])
def test_distinct_job_ids_never_share_storage(runpod_handler, s3, astro, a, b):
    """Job ids map to storage keys injectively: two ids never read or write each other's
    objects, even with identical requests."""
    from core.contract import safe_job_id

    ra = runpod_handler({"id": a, "input": _good(astro, task="mask")})
    rb = runpod_handler({"id": b, "input": _good(astro, task="mask")})
    assert "error" not in ra and "error" not in rb, (ra, rb)
    assert ra["job_id"] != rb["job_id"]
    assert ra["mask"]["key"].split("/")[1] != rb["mask"]["key"].split("/")[1]
    for raw, reply in ((a, ra), (b, rb)):
        key_id = safe_job_id(raw)
        assert reply["job_id"] == key_id and len(key_id) <= 128
        assert reply["mask"]["key"].startswith(f"maskpaint/{key_id}/")
        assert s3.get_object(Bucket=BUCKET, Key=f"maskpaint/{key_id}/job.json")


# ------------------------------------------------------------------ base64 as tools write it
def _wrap(text: str, width: int = 76, eol: str = "\n") -> str:
    return eol.join(text[i:i + width] for i in range(0, len(text), width)) + eol


B64_VARIANTS = {
    # `base64 photo.png` (GNU coreutils): 76 columns, LF, trailing newline
    "cli-wrapped-76": lambda b: _wrap(b),
    "crlf-wrapped": lambda b: _wrap(b, 76, "\r\n"),
    "pem-64-columns": lambda b: _wrap(b, 64),
    "trailing-newline": lambda b: b + "\n",
    "url-safe": lambda b: b.replace("+", "-").replace("/", "_"),
    "missing-padding": lambda b: b.rstrip("="),
    "url-safe-unpadded-wrapped": lambda b: _wrap(b.replace("+", "-").replace("/", "_").rstrip("=")),
    "data-upper-case": lambda b: "DATA:IMAGE/PNG;BASE64," + b,
    "data-octet-stream": lambda b: "data:application/octet-stream;base64," + b,
    "data-no-media-type": lambda b: "data:;base64," + b,
    "data-with-params-wrapped": lambda b: "data:image/png;name=astro.png;base64," + _wrap(b),
}


@pytest.mark.parametrize("variant", list(B64_VARIANTS))
def test_base64_variants_decode_to_the_same_pixels(runpod_handler, astro, variant):
    std = base64.b64encode(astro).decode()
    assert std.endswith("=") and "+" in std and "/" in std  # each variant really differs
    job = {"task": "mask", "protect_face": False, "mask_dilate_px": 0, "mask_feather_px": 0,
           "mask": data_url(png_bytes(GOOD_MASK), "image/png")}
    ref = runpod_handler({"id": "b64-ref", "input": {**job, "image": std}})
    assert "error" not in ref, ref
    out = runpod_handler({"id": f"b64-{variant}", "input": {**job,
                                                           "image": B64_VARIANTS[variant](std)}})
    assert "error" not in out, out
    # the overlay is drawn from the decoded photo: same bytes = same pixels
    assert out["overlay"]["sha256"] == ref["overlay"]["sha256"]


@pytest.mark.parametrize("text", ["aGVsbG8=\n!!", "a", "aGk=aGk=", "ÿÿÿÿ", "data:image/png,abc"])
def test_base64_still_rejects_what_is_not_base64(runpod_handler, astro, text):
    out = runpod_handler({"id": "b64-bad", "input": _good(astro, image=text)})
    assert out["error_code"] == "invalid_image" and out["field"] == "image"


# ------------------------------------------------------------------ masks from canvas editors
def _layer(rgba_stroke, background=(0, 0, 0, 0), size=512) -> bytes:
    """A mask layer: GOOD_MASK's rectangle painted with ``rgba_stroke`` on ``background``."""
    layer = np.zeros((size, size, 4), np.uint8)
    layer[:] = background
    layer[GOOD_MASK > 0] = rgba_stroke
    return data_url(png_bytes(layer), "image/png")


MASK_VARIANTS = {
    "red-on-transparent": _layer((255, 0, 0, 255)),
    "black-on-transparent": _layer((0, 0, 0, 255)),
    "47pct-opacity-brush": _layer((0, 0, 0, 120)),
    "47pct-grey-brush": data_url(png_bytes(np.where(GOOD_MASK > 0, 120, 0).astype(np.uint8)),
                                 "image/png"),
    "blue-on-black-opaque": _layer((0, 0, 255, 255), background=(0, 0, 0, 255)),
    "white-on-transparent": _layer((255, 255, 255, 255)),
}


@pytest.mark.parametrize("variant", list(MASK_VARIANTS))
def test_canvas_masks_give_the_painted_region(runpod_handler, s3, astro, variant):
    out = runpod_handler({"id": f"mask-{variant}", "input": _good(
        astro, task="mask", mask=MASK_VARIANTS[variant], protect_face=False,
        mask_dilate_px=0, mask_feather_px=0)})
    assert "error" not in out, out
    body = s3.get_object(Bucket=BUCKET, Key=out["mask"]["key"])["Body"].read()
    got = np.asarray(Image.open(io.BytesIO(body)))
    assert np.array_equal(got > 0, GOOD_MASK > 0)


def test_faint_mask_noise_is_not_a_stroke(runpod_handler, astro):
    """Below the documented threshold (26 of 255) nothing is repainted: JPEG noise, a 5 % tint."""
    faint = np.full((512, 512), 12, np.uint8)
    out = runpod_handler({"id": "mask-faint", "input": _good(
        astro, task="mask", mask=data_url(png_bytes(faint), "image/png"), protect_face=False)})
    assert out["error_code"] == "empty_mask"
