"""The RunPod Dockerfile's layer order and runtime settings (read as text; no Docker engine), the
build context's .dockerignore, and the Modal image recipe (built lazily, without credentials)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "image_build" / "Dockerfile"
CODE_SOURCES = ("core/", "handlers/", "runpod_handler.py")


def instructions(text: str) -> list[tuple[str, str]]:
    """``[(INSTRUCTION, arguments)]`` with comments dropped and continuations joined."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages(ins: list[tuple[str, str]]) -> list[dict]:
    """Split at FROM: ``[{"name", "from", "ins": [(index, INSTR, args)]}]``."""
    result: list[dict] = []
    for i, (word, args) in enumerate(ins):
        if word == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            result.append({"from": m.group(1), "name": m.group(2), "ins": []})
        elif result:
            result[-1]["ins"].append((i, word, args))
    return result


@pytest.fixture(scope="module")
def dockerfile():
    ins = instructions(DOCKERFILE.read_text())
    return ins, stages(ins)


def copy_sources(args: str) -> list[str]:
    parts = [p for p in args.split() if not p.startswith("--")]
    return parts[:-1]


def is_code_copy(word: str, args: str) -> bool:
    return word == "COPY" and "--from" not in args and any(
        s in CODE_SOURCES for s in copy_sources(args)
    )


def test_layer_order_deps_then_bake_then_code(dockerfile):
    ins, _ = dockerfile
    idx = lambda pred: [i for i, (w, a) in enumerate(ins) if pred(w, a)]  # noqa: E731
    lock_copy = idx(lambda w, a: w == "COPY" and "requirements.lock" in a)
    pip_run = idx(lambda w, a: w == "RUN" and "pip install" in a and "requirements.lock" in a)
    bake_run = idx(lambda w, a: w == "RUN" and "weights.bake" in a)
    code = idx(is_code_copy)
    assert lock_copy and pip_run and len(bake_run) == 1 and code
    assert lock_copy[0] < pip_run[0] < bake_run[0] < min(code)


def test_bake_stage_sees_only_weights(dockerfile):
    _, st = dockerfile
    bake_stage = next(s for s in st if any("weights.bake" in a for _, w, a in s["ins"]))
    context_copies = [a for _, w, a in bake_stage["ins"] if w == "COPY" and "--from" not in a]
    assert context_copies, "the bake stage copies weights/ in"
    for args in context_copies:
        assert copy_sources(args) == ["weights/"], args
    run = next(a for _, w, a in bake_stage["ins"] if "weights.bake" in a)
    assert "--profile" in run and "${WEIGHTS_PROFILE}" in run and "--out /weights" in run
    assert any(w == "ARG" and a == "WEIGHTS_PROFILE=sd15" for _, w, a in bake_stage["ins"])
    # the token is a BuildKit secret, never a build arg or env var baked into a layer
    assert "--mount=type=secret,id=hf_token" in run
    text = DOCKERFILE.read_text()
    assert not re.search(r"^\s*(ARG|ENV)\s+.*HF_TOKEN", text, re.M)


def test_final_stage_is_deps_weights_then_code_last(dockerfile):
    _, st = dockerfile
    final = st[-1]
    by_name = {s["name"]: s for s in st if s["name"]}

    # its FROM chain reaches the stage that installs requirements.lock (directly or via COPY)
    chain, s, seen = [], final, set()
    while s is not None and s["name"] not in seen:
        seen.add(s["name"])
        chain.append(s)
        s = by_name.get(s["from"])
    venv_from = [a for c in chain for _, w, a in c["ins"] if w == "COPY" and "/opt/venv" in a]
    assert venv_from, "final image gets the pinned venv"
    build = by_name[re.search(r"--from=(\S+)", venv_from[0]).group(1)]
    assert any("pip install" in a and "requirements.lock" in a for _, w, a in build["ins"])

    body = final["ins"]
    weights_copy = [i for i, w, a in body if w == "COPY" and "--from=weights" in a]
    code = [i for i, w, a in body if is_code_copy(w, a)]
    assert weights_copy and code and max(weights_copy) < min(code)
    after = [(w, a) for i, w, a in body if i > min(code)]
    assert all(w in {"COPY", "USER", "CMD", "ENV", "LABEL", "EXPOSE"} for w, _ in after), after
    assert not any(w == "COPY" and "--from" in a for w, a in after)
    assert body[-1][1] == "CMD"
    assert json.loads(body[-1][2]) == ["python", "-u", "runpod_handler.py"]


def test_runtime_env_user_and_base(dockerfile):
    ins, st = dockerfile
    final = st[-1]["ins"]
    env = " ".join(a for _, w, a in final if w == "ENV")
    pairs = dict(re.findall(r"(\w+)=(\S+)", env))
    assert pairs["HF_HUB_OFFLINE"] == "1"
    assert pairs["MASKPAINT_WEIGHTS_DIR"] == "/weights"
    users = [a for _, w, a in final if w == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    arg = next(a for w, a in ins if w == "ARG" and a.startswith("CUDA_IMAGE="))
    tag = arg.split("=", 1)[1]
    assert re.fullmatch(r"nvidia/cuda:13\.0\.\d+-(cudnn-)?runtime-ubuntu\d\d\.04", tag), tag
    assert st[0]["from"] == "${CUDA_IMAGE}"


def test_dockerignore_allows_exactly_what_the_image_copies(dockerfile):
    ins, _ = dockerfile
    rules = [
        ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert rules[0] == "*", "allow-list: everything else (.weights/, .venv/, .git) stays out"
    allowed = {r[1:] for r in rules if r.startswith("!")}
    for word, args in ins:
        if word == "COPY" and "--from" not in args:
            for src in copy_sources(args):
                assert src in allowed, f"{src} is copied but ignored by .dockerignore"
                assert (REPO / src).exists(), src
    assert "**/__pycache__" in rules


@pytest.fixture
def no_modal_credentials(monkeypatch, tmp_path):
    for k in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-modal.toml"))

    def refuse(*args, **kwargs):
        raise AssertionError("network used while building the image recipe")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_modal_image_builds_without_credentials(no_modal_credentials, dockerfile):
    import modal

    from image_build import modal_image

    for profile in ("sd15", "sdxl", "full"):
        assert isinstance(modal_image.build_image(profile), modal.Image)
    assert isinstance(modal_image.build_image("sd15", hf_secret="hf"), modal.Image)
    with pytest.raises(ValueError, match="unknown weights profile"):
        modal_image.build_image("nope")

    cmd = modal_image.bake_command("sdxl")
    assert "python -m weights.bake --profile sdxl --out /weights" in cmd
    assert modal_image.RUNTIME_ENV["HF_HUB_OFFLINE"] == "1"
    assert modal_image.RUNTIME_ENV["MASKPAINT_WEIGHTS_DIR"] == "/weights"
    # same base as the RunPod image
    ins, _ = dockerfile
    arg = next(a for w, a in ins if w == "ARG" and a.startswith("CUDA_IMAGE="))
    assert modal_image.CUDA_IMAGE == arg.split("=", 1)[1]
    assert (modal_image.REPO / "requirements.lock").is_file()


@pytest.mark.parametrize("profile", ["sd15", "sdxl", "full"])
def test_the_bake_the_images_run_is_fully_pinned(profile):
    """`python -m weights.bake --profile sd15` (the Dockerfile's default) used to
    refuse. The dry run of the same command lists every file with its pinned sha256 and exits 0;
    the MediaPipe models come from the pinned wheel in every profile."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "weights.bake", "--profile", profile,
                           "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "UNPINNED" not in proc.stdout and "unpinned" not in proc.stdout
    assert f"diffusers/{profile if profile != 'full' else 'sd15'}-inpaint/model_index.json" \
        in proc.stdout
    assert "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl" in proc.stdout
    assert "mediapipe/pose/pose_landmark_full.tflite  sha256 e9a5c5cb" in proc.stdout


def test_wheel_cache_stays_out_of_the_images(dockerfile):
    _, st = dockerfile
    bake_stage = next(s for s in st if any("weights.bake" in a for _, w, a in s["ins"]))
    run = next(a for _, w, a in bake_stage["ins"] if "weights.bake" in a)
    cache = re.search(r"MASKPAINT_WHEEL_CACHE=(\S+)", run).group(1)
    assert f"--mount=type=cache,target={cache}" in run  # a BuildKit cache, never a layer
    from image_build import modal_image

    cmd = modal_image.bake_command("sd15")
    cache = re.search(r"MASKPAINT_WHEEL_CACHE=(\S+)", cmd).group(1)
    assert cmd.endswith(f"rm -rf /tmp/hf-home {cache}")


def test_commercial_images_leave_out_what_only_non_commercial_models_need(
        no_modal_credentials, dockerfile):
    """A commercial profile's image uninstalls AGPL-3.0 ultralytics (and its FLOPs counter) and
    InsightFace after the shared lock file: the same list in both recipes, from the manifest."""
    import subprocess

    import modal

    from image_build import modal_image
    from weights.licenses import is_commercial_profile, unneeded_packages
    from weights.manifest import load_manifest

    m = load_manifest()
    expected = ["insightface", "ultralytics", "ultralytics-thop"]
    commercial = [p for p in m.profiles() if is_commercial_profile(p)]
    assert all(unneeded_packages(m, p) == expected for p in commercial)
    assert modal_image.uninstall_commands("sd15-commercial") == [
        "pip uninstall -y " + " ".join(expected)]
    assert modal_image.uninstall_commands("sd15") == []
    assert isinstance(modal_image.build_image("full-commercial-outfit"), modal.Image)

    ins, _ = dockerfile
    run = next(a for w, a in ins if w == "RUN" and "pip uninstall" in a)
    case = run[run.index("case "):]
    for profile in m.profiles():  # run the Dockerfile's case with pip replaced by echo
        out = subprocess.run(["bash", "-c", f'WEIGHTS_PROFILE={profile}; pip() {{ echo "$@"; }}; '
                              + case], capture_output=True, text=True, check=True).stdout
        want = ("uninstall -y " + " ".join(expected) + "\n") if profile in commercial else ""
        assert out == want, profile
