"""What the GPU bench carries to a machine without network (``make gpu-wheels``).

``python -m bench.gpu_carry --weights DIR --out .whl``:

- stages the real MediaPipe face and pose models from a baked weights dir (the dev weights
  hold the real ones) as a bake mirror, ``<out>/mediapipe/<key>/<wheel member path>``, which
  :func:`bench.gpu_weights.bake_mediapipe` bakes there (sha256-verified against the manifest);
- checks the wheels in ``<out>``: one version per project, and the upload (wheels + mirror +
  the git working tree) under the device's 64 MiB limit, with room to spare.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The device's upload limit (working tree + carried paths), bytes, and the share we allow.
UPLOAD_LIMIT = 64 << 20
ALLOWED = 0.9


def stage_mediapipe(weights: Path, out: Path) -> int:
    """Copy the MediaPipe face + pose models into the mirror layout. Returns bytes staged."""
    from bench.gpu_weights import MEDIAPIPE_KEYS
    from weights.manifest import load_manifest

    manifest = load_manifest()
    total = 0
    for key in MEDIAPIPE_KEYS:
        entry = manifest.models[key]
        for f in entry.source.files:
            src = weights / entry.destination(f)
            dst = out / "mediapipe" / key / f.path
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            total += dst.stat().st_size
    return total


def tree_bytes() -> int:
    """Bytes of the working tree that travels: tracked and untracked-not-ignored files."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=REPO, capture_output=True,
                           check=True).stdout.split(b"\0")
    return sum((REPO / n.decode()).stat().st_size for n in names
               if n and (REPO / n.decode()).is_file())


def check(out: Path) -> tuple[int, int]:
    """(bytes carried under ``out``, bytes of the tree). Raises SystemExit on two versions of
    one wheel or an upload over :data:`ALLOWED` of the limit."""
    wheels = sorted(out.glob("*.whl"))
    projects: dict[str, list[str]] = {}
    for w in wheels:
        projects.setdefault(w.name.split("-")[0].lower().replace("_", "-").replace(".", "-"),
                            []).append(w.name)
    twice = {k: v for k, v in projects.items() if len(v) > 1}
    if twice:
        raise SystemExit(f"two versions of one project in {out} (pip install stops): {twice}")
    carried = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    tree = tree_bytes()
    if carried + tree > ALLOWED * UPLOAD_LIMIT:
        raise SystemExit(f"upload {(carried + tree) / 2**20:.1f} MiB is over "
                         f"{ALLOWED * UPLOAD_LIMIT / 2**20:.0f} MiB")
    return carried, tree


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, required=True, help="a baked (dev) weights dir")
    ap.add_argument("--out", type=Path, default=REPO / ".whl")
    a = ap.parse_args(argv)
    staged = stage_mediapipe(a.weights, a.out)
    carried, tree = check(a.out)
    print(f"{len(list(a.out.glob('*.whl')))} wheels + {staged / 2**20:.1f} MiB MediaPipe models "
          f"= {carried / 2**20:.1f} MiB carried; working tree {tree / 2**20:.1f} MiB; upload "
          f"{(carried + tree) / 2**20:.1f} of {UPLOAD_LIMIT / 2**20:.0f} MiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
