"""weights.bake end to end on CPU and offline: a loopback HTTP server, a moto S3 bucket, a fake
hf_hub_download and a local mirror serve small fake-but-consistent files; the bake must lay them
out, verify size and sha256, write the receipt only for verified models, refuse unpinned or
non-https entries, fail loudly on any mismatch without leaving a file at a final path, and
resume (skip verified files, continue a cut-off download)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import weights.bake as bake_mod
import weights.bakeio as bakeio
from weights.bake import (
    BakeError,
    SourceError,
    UnpinnedError,
    VerificationError,
    bake,
    main,
    pin,
    write_pins,
)
from weights.manifest import Manifest, load_receipt
from weights.resolve import WeightsIntegrityError, resolve, verify

REV = "0123456789abcdef0123456789abcdef01234567"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def flip_last(b: bytes) -> bytes:
    """Same length, last byte changed."""
    return b[:-1] + bytes([b[-1] ^ 0xFF])


def blob(seed: int, n: int) -> bytes:
    out = bytearray()
    h = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h
    return bytes(out[:n])


# ---------------------------------------------------------------------------- fixtures


class Server:
    """Threaded loopback HTTP server over an in-memory {path: bytes}, with Range support."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_after: dict[str, int] = {}  # send headers for all bytes, then only n and hang up
        self.requests: list[tuple[str, str | None]] = []
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.lstrip("/")
                rng = self.headers.get("Range")
                srv.requests.append((path, rng))
                data = srv.files.get(path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = int(rng[len("bytes="):].split("-")[0]) if rng else 0
                if start:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                n = srv.drop_after.get(path)
                self.wfile.write(body if n is None else body[:n])

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(bakeio, "CHUNK", 4096)  # exercise multi-chunk reads on small files


SINGLE = blob(1, 50_000)
ONE = blob(2, 30_000)
TWO = b"tokenizer stuff\n" * 100
S3OBJ = blob(3, 20_000)
HF_A = b'{"_class_name": "Fake"}\n'
HF_B = blob(4, 12_345)


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("det/one.onnx", ONE)
        zf.writestr("two.txt", TWO)
        zf.writestr("unused.bin", b"not extracted")
    return buf.getvalue()


ZIP = zip_bytes()


def fentry(path: str, data: bytes, **kw) -> dict:
    return {"path": path, "sha256": sha(data), "size": len(data), **kw}


def make_manifest(base: str = "http://127.0.0.1:9/", **patch) -> Manifest:
    """A small manifest of fake files; ``patch`` replaces whole model dicts by key."""
    models = {
        "single": {
            "kind": "sam", "arch": "vit_b", "path": "sam/single.pth", "license": "Apache-2.0",
            "commercial_use": True, "profiles": ["p"],
            "source": {"type": "url", "url": base + "single.pth",
                       "files": [fentry("single.pth", SINGLE)]},
        },
        "bundle": {
            "kind": "diffusers_inpaint", "path": "diffusers/bundle", "license": "x",
            "commercial_use": True, "profiles": ["p"],
            "source": {"type": "url", "url": base + "pack.zip",
                       "archive": {"format": "zip", "sha256": sha(ZIP), "size": len(ZIP)},
                       "files": [fentry("det/one.onnx", ONE),
                                 fentry("two.txt", TWO, target="tokenizer/two.txt")]},
        },
        "fromS3": {
            "kind": "yolo_seg", "path": "yolo/y.pt", "license": "AGPL-3.0",
            "commercial_use": False, "profiles": ["s3"],
            "source": {"type": "s3", "url": "s3://weights-bucket/models/y.pt",
                       "files": [fentry("y.pt", S3OBJ)]},
        },
        "hfmodel": {
            "kind": "diffusers_inpaint", "path": "diffusers/hf", "license": "x",
            "commercial_use": True, "profiles": ["hf"],
            "source": {"type": "hf", "repo": "org/repo", "revision": REV,
                       "files": [fentry("model_index.json", HF_A),
                                 fentry("unet/w.fp16.safetensors", HF_B)]},
        },
    }
    models.update(patch)
    return Manifest.model_validate(
        {"version": 2, "models": models, "roles": {"sam": "single"}}
    )


def serve_all(server: Server) -> None:
    server.files.update({"single.pth": SINGLE, "pack.zip": ZIP})


def quiet(_msg: str) -> None:
    pass


def no_receipt(out: Path, key: str) -> bool:
    return key not in load_receipt(out).models


def leftovers(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.name.endswith(".part"))


# ---------------------------------------------------------------------------- http


def test_http_bake_lays_out_verifies_and_writes_receipt(server, tmp_path):
    serve_all(server)
    m = make_manifest(server.url(""))
    out = tmp_path / "w"
    results = bake(m, ["single", "bundle"], out, allow_http_loopback=True, log=quiet)

    assert (out / "sam/single.pth").read_bytes() == SINGLE
    assert (out / "diffusers/bundle/det/one.onnx").read_bytes() == ONE
    assert (out / "diffusers/bundle/tokenizer/two.txt").read_bytes() == TWO
    assert not (out / "diffusers/bundle/unused.bin").exists()  # only listed members
    assert leftovers(out) == [] and not (out / ".bake-staging").exists()
    assert [r.key for r in results] == ["single", "bundle"]
    assert all(f.action == "fetched" for r in results for f in r.files)

    receipt = load_receipt(out).models
    assert receipt["single"].source == server.url("single.pth")
    assert receipt["single"].revision == "sha256:" + sha(SINGLE)
    assert receipt["single"].files == [{"path": "single.pth", "sha256": sha(SINGLE),
                                        "size": len(SINGLE)}]
    assert receipt["bundle"].revision == "sha256:" + sha(ZIP)
    assert {f["path"] for f in receipt["bundle"].files} == {"det/one.onnx", "tokenizer/two.txt"}
    assert not receipt["single"].dev

    # the offline resolver finds them and the cold-start verification passes
    for key in ("single", "bundle"):
        ms = verify(resolve(key, out, manifest=m))
        assert isinstance(ms, float) and ms >= 0


@pytest.mark.parametrize("case", ["tampered", "short", "longer", "404", "wrong_manifest_size"])
def test_http_mismatch_fails_loudly_and_leaves_nothing(server, tmp_path, case):
    serve_all(server)
    m = make_manifest(server.url(""))
    if case == "tampered":
        bad = bytearray(SINGLE)
        bad[1234] ^= 0xFF
        server.files["single.pth"] = bytes(bad)
    elif case == "short":
        server.files["single.pth"] = SINGLE[:-100]
    elif case == "longer":
        server.files["single.pth"] = SINGLE + b"extra"
    elif case == "404":
        del server.files["single.pth"]
    else:
        raw = m.model_dump(mode="json")
        raw["models"]["single"]["source"]["files"][0]["size"] = len(SINGLE) + 1
        m = Manifest.model_validate(raw)
    out = tmp_path / "w"

    with pytest.raises(BakeError) as ei:
        bake(m, ["single"], out, allow_http_loopback=True, log=quiet)
    msg = str(ei.value)
    assert "'single'" in msg and "'single.pth'" in msg, msg
    if case == "404":
        assert isinstance(ei.value, SourceError) and "404" in msg
    else:
        assert isinstance(ei.value, VerificationError)
        assert "expected" in msg and "got" in msg
    if case == "tampered":
        assert f"expected {sha(SINGLE)}" in msg and "sha256 mismatch" in msg
    if case in ("short", "wrong_manifest_size"):
        assert "size mismatch" in msg
    assert not (out / "sam/single.pth").exists()
    assert leftovers(out) == []
    assert no_receipt(out, "single")


def test_archive_with_tampered_member_fails(server, tmp_path):
    serve_all(server)
    raw = make_manifest(server.url("")).model_dump(mode="json")
    raw["models"]["bundle"]["source"]["files"][0]["sha256"] = sha(b"something else")
    m = Manifest.model_validate(raw)
    out = tmp_path / "w"
    with pytest.raises(VerificationError, match=r"model 'bundle', file 'det/one.onnx': sha256"):
        bake(m, ["bundle"], out, allow_http_loopback=True, log=quiet)
    assert not (out / "diffusers/bundle/det/one.onnx").exists()
    assert no_receipt(out, "bundle")


def test_changed_pin_drops_receipt_before_replacing_files(server, tmp_path):
    serve_all(server)
    out = tmp_path / "w"
    bake(make_manifest(server.url("")), ["single"], out, allow_http_loopback=True, log=quiet)
    assert not no_receipt(out, "single")
    # The manifest moves to new bytes, but the server still has the old ones.
    new = blob(99, len(SINGLE))
    raw = make_manifest(server.url("")).model_dump(mode="json")
    raw["models"]["single"]["source"]["files"][0]["sha256"] = sha(new)
    with pytest.raises(VerificationError):
        bake(Manifest.model_validate(raw), ["single"], out, allow_http_loopback=True, log=quiet)
    assert no_receipt(out, "single")  # the old entry is gone: the loader will not pick it up
    assert not (out / "sam/single.pth").exists()


def test_unpinned_entry_is_refused_before_any_download(server, tmp_path):
    serve_all(server)
    raw = make_manifest(server.url("")).model_dump(mode="json")
    raw["models"]["bundle"]["source"]["files"][1]["sha256"] = None
    m = Manifest.model_validate(raw)
    out = tmp_path / "w"
    with pytest.raises(UnpinnedError) as ei:
        bake(m, ["single", "bundle"], out, allow_http_loopback=True, log=quiet)
    assert "model 'bundle', file 'two.txt': sha256 unknown: pin it before baking" in str(ei.value)
    assert server.requests == []
    assert not (out / "sam/single.pth").exists()


def test_plain_http_needs_the_test_seam(server, tmp_path):
    serve_all(server)
    with pytest.raises(SourceError, match="only https"):
        bake(make_manifest(server.url("")), ["single"], tmp_path / "w", log=quiet)
    assert server.requests == []


def test_resume_skips_verified_files(server, tmp_path):
    serve_all(server)
    m = make_manifest(server.url(""))
    out = tmp_path / "w"
    bake(m, ["single", "bundle"], out, allow_http_loopback=True, log=quiet)
    n = len(server.requests)
    results = bake(m, ["single", "bundle"], out, allow_http_loopback=True, log=quiet)
    assert len(server.requests) == n  # nothing fetched again
    assert all(f.action == "kept" for r in results for f in r.files)
    # a damaged final file is noticed and fetched again
    (out / "sam/single.pth").write_bytes(b"garbage")
    results = bake(m, ["single"], out, allow_http_loopback=True, log=quiet)
    assert results[0].files[0].action == "fetched"
    assert (out / "sam/single.pth").read_bytes() == SINGLE


def test_interrupted_download_resumes_from_part(server, tmp_path):
    serve_all(server)
    m = make_manifest(server.url(""))
    out = tmp_path / "w"
    server.drop_after["single.pth"] = 20_000
    with pytest.raises(SourceError, match="re-run to resume"):
        bake(m, ["single"], out, allow_http_loopback=True, log=quiet)
    part = out / "sam/single.pth.part"
    assert part.stat().st_size == 20_000 and not (out / "sam/single.pth").exists()
    assert no_receipt(out, "single")

    del server.drop_after["single.pth"]
    bake(m, ["single"], out, allow_http_loopback=True, log=quiet)
    assert server.requests[-1] == ("single.pth", "bytes=20000-")
    assert (out / "sam/single.pth").read_bytes() == SINGLE and not part.exists()


# ---------------------------------------------------------------------------- s3


@pytest.fixture
def s3(monkeypatch):
    from moto import mock_aws

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        import boto3

        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="weights-bucket")
        yield client


def test_s3_bake(s3, tmp_path):
    s3.put_object(Bucket="weights-bucket", Key="models/y.pt", Body=S3OBJ)
    out = tmp_path / "w"
    bake(make_manifest(), ["fromS3"], out, s3_client=s3, log=quiet)
    assert (out / "yolo/y.pt").read_bytes() == S3OBJ
    entry = load_receipt(out).models["fromS3"]
    assert entry.source == "s3://weights-bucket/models/y.pt"
    assert entry.files[0]["sha256"] == sha(S3OBJ)


@pytest.mark.parametrize("case", ["tampered", "missing"])
def test_s3_failures(s3, tmp_path, case):
    if case == "tampered":
        s3.put_object(Bucket="weights-bucket", Key="models/y.pt", Body=flip_last(S3OBJ))
    out = tmp_path / "w"
    with pytest.raises(BakeError) as ei:
        bake(make_manifest(), ["fromS3"], out, s3_client=s3, log=quiet)
    msg = str(ei.value)
    assert "model 'fromS3', file 'y.pt'" in msg
    assert ("sha256 mismatch" in msg) if case == "tampered" else ("NoSuchKey" in msg)
    assert not (out / "yolo/y.pt").exists() and no_receipt(out, "fromS3")
    assert leftovers(out) == []


# ---------------------------------------------------------------------------- hf


def fake_hf(calls: list, content: dict[str, bytes]):
    def download(repo, filename, revision, local_dir, token):
        calls.append((repo, filename, revision))
        p = Path(local_dir) / filename
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content[filename])
        return str(p)

    return download


def test_hf_fetches_exactly_the_manifest_files_at_the_pinned_revision(tmp_path):
    calls: list = []
    content = {"model_index.json": HF_A, "unet/w.fp16.safetensors": HF_B}
    out = tmp_path / "w"
    bake(make_manifest(), ["hfmodel"], out, hf_download=fake_hf(calls, content), log=quiet)
    assert calls == [("org/repo", "model_index.json", REV),
                     ("org/repo", "unet/w.fp16.safetensors", REV)]
    assert (out / "diffusers/hf/unet/w.fp16.safetensors").read_bytes() == HF_B
    entry = load_receipt(out).models["hfmodel"]
    assert (entry.source, entry.revision) == ("org/repo", REV)
    assert not (out / ".bake-staging").exists() and leftovers(out) == []


def test_hf_bad_bytes_fail_without_final_file(tmp_path):
    content = {"model_index.json": HF_A, "unet/w.fp16.safetensors": flip_last(HF_B)}
    out = tmp_path / "w"
    with pytest.raises(VerificationError, match="unet/w.fp16.safetensors"):
        bake(make_manifest(), ["hfmodel"], out, hf_download=fake_hf([], content), log=quiet)
    assert not (out / "diffusers/hf/unet/w.fp16.safetensors").exists()
    assert no_receipt(out, "hfmodel") and leftovers(out) == []


def test_pin_measures_null_values_and_writes_them(tmp_path):
    raw = make_manifest().model_dump(mode="json", exclude_none=True)
    f = raw["models"]["hfmodel"]["source"]["files"][0]
    f["sha256"], f["size"] = None, None
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(raw, indent=2))
    m = Manifest.model_validate(raw)
    content = {"model_index.json": HF_A, "unet/w.fp16.safetensors": HF_B}
    found = pin(m, ["hfmodel"], hf_download=fake_hf([], content), log=quiet)
    assert found == {"hfmodel": {"model_index.json": {"sha256": sha(HF_A), "size": len(HF_A)}}}
    assert write_pins(found, path) == 2
    again = json.loads(path.read_text())["models"]["hfmodel"]["source"]["files"][0]
    assert (again["sha256"], again["size"]) == (sha(HF_A), len(HF_A))


# ---------------------------------------------------------------------------- mirror


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network used: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def make_mirror(root: Path, archive_whole: bool = True) -> Path:
    def put(rel: str, data: bytes) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    put("single/single.pth", SINGLE)
    if archive_whole:
        put("bundle/pack.zip", ZIP)
    else:
        put("bundle/det/one.onnx", ONE)
        put("bundle/two.txt", TWO)
    put("fromS3/y.pt", S3OBJ)
    put("hfmodel/model_index.json", HF_A)
    put("hfmodel/unet/w.fp16.safetensors", HF_B)
    return root


@pytest.mark.parametrize("archive_whole", [True, False])
def test_mirror_replaces_the_network(tmp_path, no_network, archive_whole):
    mirror = make_mirror(tmp_path / "mirror", archive_whole)

    def hf_forbidden(*a):
        raise AssertionError("hf_hub_download called despite --mirror")

    out = tmp_path / "w"
    keys = ["single", "bundle", "fromS3", "hfmodel"]
    # https-only policy is moot with a mirror: the manifest's http URLs are never contacted
    bake(make_manifest(), keys, out, mirror=mirror, hf_download=hf_forbidden, log=quiet)
    assert (out / "diffusers/bundle/tokenizer/two.txt").read_bytes() == TWO
    assert (out / "yolo/y.pt").read_bytes() == S3OBJ
    assert (out / "diffusers/hf/unet/w.fp16.safetensors").read_bytes() == HF_B
    assert set(load_receipt(out).models) == set(keys)
    assert (mirror / "bundle").exists()  # the mirror is read, never consumed


def test_mirror_miss_and_mismatch(tmp_path, no_network):
    mirror = make_mirror(tmp_path / "mirror")
    (mirror / "fromS3/y.pt").unlink()
    with pytest.raises(SourceError, match="not in mirror"):
        bake(make_manifest(), ["fromS3"], tmp_path / "w", mirror=mirror, log=quiet)
    (mirror / "single/single.pth").write_bytes(flip_last(SINGLE))
    with pytest.raises(VerificationError, match="model 'single', file 'single.pth': sha256"):
        bake(make_manifest(), ["single"], tmp_path / "w", mirror=mirror, log=quiet)
    assert (mirror / "single/single.pth").exists()


# ---------------------------------------------------------------------------- CLI + verify


def test_cli(tmp_path, no_network, capsys):
    mirror = make_mirror(tmp_path / "mirror")
    mpath = tmp_path / "manifest.json"
    mpath.write_text(make_manifest().model_dump_json())
    out = tmp_path / "w"
    args = ["--manifest", str(mpath), "--profile", "p", "--out", str(out), "--mirror", str(mirror)]
    assert main(args) == 0
    assert set(load_receipt(out).models) == {"single", "bundle"}
    assert main(args + ["--only", "single"]) == 0

    (mirror / "single/single.pth").write_bytes(b"x" * len(SINGLE))
    (out / "sam/single.pth").unlink()
    assert main(args + ["--only", "single"]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "model 'single', file 'single.pth': sha256 mismatch" in err

    with pytest.raises(SystemExit) as ei:
        main(["--manifest", str(mpath), "--profile", "nope", "--out", str(out)])
    assert ei.value.code == 2
    assert main(["--manifest", str(mpath), "--profile", "p", "--list"]) == 0
    assert "single:" in capsys.readouterr().out


def test_cold_start_verify_catches_tampering(server, tmp_path, monkeypatch):
    serve_all(server)
    m = make_manifest(server.url(""))
    out = tmp_path / "w"
    bake(m, ["bundle"], out, allow_http_loopback=True, log=quiet)
    assert resolve("bundle", out, manifest=m, verify=True).verify_ms is not None

    p = out / "diffusers/bundle/det/one.onnx"
    data = bytearray(p.read_bytes())
    data[10] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match=r"'det/one.onnx': sha256 mismatch"):
        resolve("bundle", out, manifest=m, verify=True)
    # off by default; the environment is read only by core.settings (one reader), never here
    monkeypatch.setenv("MASKPAINT_VERIFY_WEIGHTS", "1")
    assert resolve("bundle", out, manifest=m).verify_ms is None
    p.write_bytes(bytes(data[:-1]))
    with pytest.raises(WeightsIntegrityError, match="size mismatch"):
        verify(resolve("bundle", out, manifest=m))
    os.remove(p)
    with pytest.raises(WeightsIntegrityError, match="missing"):
        verify(resolve("bundle", out, manifest=m))



def test_cli_list_every_profile_and_dry_run(capsys):
    """`--list` alone lists every profile; `--dry-run` prints each file with its pinned hash."""
    from weights.manifest import load_manifest

    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for profile in ("sd15:", "sdxl:", "full:", "sam-large:"):
        assert f"\n{profile}" in "\n" + out, profile
    assert "faces-blazeface-full: mediapipe_face" in out and "[NON-COMMERCIAL]" in out

    assert main(["--profile", "sd15", "--dry-run"]) == 0
    out = capsys.readouterr().out
    m = load_manifest()
    for key in m.profile("sd15"):
        for f in m.models[key].source.files:
            assert f"{m.models[key].destination(f)}  sha256 {f.sha256}  {f.size} B" in out, f.path
    assert "UNPINNED" not in out


def test_dry_run_reports_an_unpinned_file(tmp_path, capsys):
    raw = make_manifest().model_dump(mode="json")
    raw["models"]["single"]["source"]["files"][0]["sha256"] = None
    mpath = tmp_path / "manifest.json"
    mpath.write_text(json.dumps(raw))
    assert main(["--manifest", str(mpath), "--profile", "p", "--dry-run"]) == 1
    captured = capsys.readouterr()
    assert "sam/single.pth  sha256 UNPINNED" in captured.out
    assert "pin it before baking" in captured.err


# ---------------------------------------------------------------------------- pypi wheels

WHEEL = "fakepkg-1.0-cp311-cp311-manylinux_2_28_x86_64.whl"
MEMBER_A = blob(11, 7_000)
MEMBER_B = blob(12, 9_000)
MEMBER_C = blob(13, 3_000)


def wheel_bytes(a: bytes = MEMBER_A) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("fakepkg/__init__.py", "")
        zf.writestr("fakepkg/modules/face/a.tflite", a)
        zf.writestr("fakepkg/modules/pose/b.tflite", MEMBER_B)
        zf.writestr("fakepkg/modules/pose_lm/c.tflite", MEMBER_C)
        zf.writestr("fakepkg-1.0.dist-info/RECORD", "")
    return buf.getvalue()


FAKE_WHEEL = wheel_bytes()


def wheel_manifest(wheel: bytes = FAKE_WHEEL, **source) -> Manifest:
    src = {"type": "pypi_wheel", "package": "fakepkg", "version": "1.0", "wheel": WHEEL,
           "archive": {"format": "zip", "sha256": sha(wheel), "size": len(wheel)}, **source}
    return make_manifest(
        wface={"kind": "mediapipe_face", "path": "mp/a.tflite", "layout": "file",
               "license": "Apache-2.0", "commercial_use": True, "profiles": ["p"],
               "source": {**src, "files": [fentry("fakepkg/modules/face/a.tflite", MEMBER_A)]}},
        wpose={"kind": "mediapipe_pose", "path": "mp/pose", "layout": "dir",
               "license": "Apache-2.0", "commercial_use": True, "profiles": ["p"],
               "source": {**src, "files": [
                   fentry("fakepkg/modules/pose/b.tflite", MEMBER_B, target="b.tflite"),
                   fentry("fakepkg/modules/pose_lm/c.tflite", MEMBER_C, target="c.tflite")]}},
    )


def fake_pip(calls: list, wheel: bytes = FAKE_WHEEL):
    def download(package, version, filename, dest):
        calls.append((package, version, filename))
        p = Path(dest) / filename
        p.write_bytes(wheel)
        return p

    return download


def test_pip_download_args_follow_the_pinned_file_name():
    assert bake_mod.pip_download_args(
        "mediapipe", "0.10.21", "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
    ) == ["download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
          "--no-input", "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
          "--platform", "manylinux_2_28_x86_64", "mediapipe==0.10.21"]
    # a pure-Python wheel: no interpreter arguments (pip would read "py3" as Python 3.0 and
    # refuse a release that requires Python >= 3.6, as nudenet 3.4.2 does)
    for pkg, version, wheel in (("six", "1.17.0", "six-1.17.0-py2.py3-none-any.whl"),
                                ("nudenet", "3.4.2", "nudenet-3.4.2-py3-none-any.whl")):
        args = bake_mod.pip_download_args(pkg, version, wheel)
        assert args[-2:] == ["--no-input", f"{pkg}=={version}"]
        assert "--python-version" not in args and "--platform" not in args


def test_wheel_bake_extracts_only_the_listed_members_and_caches_the_wheel(tmp_path):
    calls: list = []
    cache = tmp_path / "cache"
    out = tmp_path / "w"
    results = bake(wheel_manifest(), ["wface", "wpose"], out, wheel_cache=cache,
                   pip_download=fake_pip(calls), log=quiet)
    assert calls == [("fakepkg", "1.0", WHEEL)]  # one download for both models
    assert (out / "mp/a.tflite").read_bytes() == MEMBER_A
    assert (out / "mp/pose/b.tflite").read_bytes() == MEMBER_B
    assert (out / "mp/pose/c.tflite").read_bytes() == MEMBER_C
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "mp/a.tflite", "mp/pose/b.tflite", "mp/pose/c.tflite", "receipt.json"]
    assert [f.action for r in results for f in r.files] == ["fetched"] * 3
    assert sorted(p.name for p in cache.iterdir()) == [WHEEL]  # no temp dirs left

    receipt = load_receipt(out).models
    assert receipt["wface"].source == "pypi:fakepkg==1.0"
    assert receipt["wface"].revision == "sha256:" + sha(FAKE_WHEEL)
    assert receipt["wface"].dev is False
    assert receipt["wpose"].files == [
        {"path": "b.tflite", "sha256": sha(MEMBER_B), "size": len(MEMBER_B)},
        {"path": "c.tflite", "sha256": sha(MEMBER_C), "size": len(MEMBER_C)}]
    for key in ("wface", "wpose"):
        verify(resolve(key, out, manifest=wheel_manifest()))

    # a second bake elsewhere reuses the cached wheel: pip is not run again
    bake(wheel_manifest(), ["wface"], tmp_path / "w2", wheel_cache=cache,
         pip_download=fake_pip(calls), log=quiet)
    assert len(calls) == 1 and (tmp_path / "w2/mp/a.tflite").read_bytes() == MEMBER_A


def test_tampered_wheel_is_refused_and_leaves_nothing(tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "w"
    bad = bytearray(FAKE_WHEEL)
    bad[-30] ^= 0xFF  # same size, other bytes
    with pytest.raises(VerificationError) as ei:
        bake(wheel_manifest(), ["wface"], out, wheel_cache=cache,
             pip_download=fake_pip([], bytes(bad)), log=quiet)
    msg = str(ei.value)
    assert f"model 'wface', file '{WHEEL}': sha256 mismatch: expected {sha(FAKE_WHEEL)}" in msg
    assert not (out / "mp/a.tflite").exists() and no_receipt(out, "wface")
    assert leftovers(out) == [] and list(cache.iterdir()) == []  # nothing cached either


def test_tampered_member_is_refused_and_leaves_nothing(tmp_path):
    """The wheel matches its (here: swapped) pin, but a member's bytes do not match theirs."""
    other = wheel_bytes(a=flip_last(MEMBER_A))
    out = tmp_path / "w"
    with pytest.raises(VerificationError, match=r"model 'wface', file "
                       r"'fakepkg/modules/face/a.tflite': sha256 mismatch"):
        bake(wheel_manifest(other), ["wface"], out, wheel_cache=tmp_path / "cache",
             pip_download=fake_pip([], other), log=quiet)
    assert not (out / "mp/a.tflite").exists() and no_receipt(out, "wface")
    assert leftovers(out) == []


def test_corrupt_cached_wheel_is_fetched_again(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / WHEEL).write_bytes(flip_last(FAKE_WHEEL))
    calls: list = []
    bake(wheel_manifest(), ["wface"], tmp_path / "w", wheel_cache=cache,
         pip_download=fake_pip(calls), log=quiet)
    assert len(calls) == 1 and (cache / WHEEL).read_bytes() == FAKE_WHEEL


def test_pip_failure_is_a_source_error(tmp_path):
    def broken(*a):
        raise RuntimeError("pip download exited 1: No matching distribution")

    with pytest.raises(SourceError, match="pip download of fakepkg==1.0 failed.*No matching"):
        bake(wheel_manifest(), ["wface"], tmp_path / "w", wheel_cache=tmp_path / "c",
             pip_download=broken, log=quiet)
    assert no_receipt(tmp_path / "w", "wface")


def test_wheel_from_mirror_or_url(tmp_path, server):
    mirror = tmp_path / "mirror"
    (mirror / "wface").mkdir(parents=True)
    (mirror / "wface" / WHEEL).write_bytes(FAKE_WHEEL)

    def pip_forbidden(*a):
        raise AssertionError("pip called despite --mirror")

    out = tmp_path / "w"
    bake(wheel_manifest(), ["wface"], out, mirror=mirror, wheel_cache=tmp_path / "empty",
         pip_download=pip_forbidden, log=quiet)
    assert (out / "mp/a.tflite").read_bytes() == MEMBER_A
    with pytest.raises(SourceError, match="not in mirror"):
        bake(wheel_manifest(), ["wpose"], out, mirror=mirror, wheel_cache=tmp_path / "empty",
             pip_download=pip_forbidden, log=quiet)

    # a direct URL of the same wheel instead of pip (https only; loopback http behind the seam)
    server.files[WHEEL] = FAKE_WHEEL
    m = wheel_manifest(url="https://example.invalid/" + WHEEL)
    m.models["wpose"].source.url = server.url(WHEEL)
    bake(m, ["wpose"], out, wheel_cache=tmp_path / "c2", pip_download=pip_forbidden,
         allow_http_loopback=True, log=quiet)
    assert (out / "mp/pose/c.tflite").read_bytes() == MEMBER_C


def test_real_mediapipe_models_bake_from_the_pinned_wheel_via_pip(tmp_path):
    """Network (PyPI): `pip download` of the pinned 35.6 MB wheel, then the four models.

    A fresh wheel cache, so pip really runs here (about 2 s on this machine and in CI).
    """
    from weights.manifest import load_manifest

    m = load_manifest()
    keys = [k for k, e in m.models.items() if e.kind.startswith("mediapipe_")]
    assert sorted(keys) == ["faces-blazeface-full", "hands-palm-full", "pose-mediapipe-full"]
    out = tmp_path / "w"
    bake(m, keys, out, wheel_cache=tmp_path / "wheels", log=quiet)
    assert (tmp_path / "wheels" / m.models[keys[0]].source.wheel).stat().st_size == 35_622_638
    receipt = load_receipt(out).models
    for key in keys:
        e = m.models[key]
        for f in e.source.files:
            got_sha, got_size = bake_mod.sha256_file(out / e.destination(f))
            assert (got_sha, got_size) == (f.sha256, f.size), (key, f.path)
        assert receipt[key].source == "pypi:mediapipe==0.10.21" and not receipt[key].dev
        verify(resolve(key, out, manifest=m))
    assert (out / "mediapipe/pose/pose_landmark_full.tflite").stat().st_size == 6_440_512
