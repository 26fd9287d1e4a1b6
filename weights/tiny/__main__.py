"""CLI: ``python -m weights.tiny --out DIR [--profile NAME | --only KEY ...] [--force]``.

``--profile sd15-commercial`` writes only that profile's dev models (tiny random ones, and the
real MediaPipe ones): a commercial dev bake, without the non-commercial garment detector and
face model. Use a directory of its own: models already there stay.
"""

import argparse
import sys
import time
from pathlib import Path

from weights.manifest import load_manifest, load_receipt
from weights.resolve import set_offline_env
from weights.tiny import ensure_dev_weights

if __name__ == "__main__":
    set_offline_env()
    ap = argparse.ArgumentParser(description="Write tiny random-weight dev models.")
    ap.add_argument("--out", type=Path, required=True, help="weights directory")
    ap.add_argument("--only", nargs="*", help="manifest keys (default: all dev models)")
    ap.add_argument("--profile", help="only the models of this weights profile")
    ap.add_argument("--force", action="store_true", help="rewrite existing dev models")
    a = ap.parse_args()
    keys = a.only
    if a.profile:
        try:
            keys = [k for k in load_manifest().profile(a.profile) if not a.only or k in a.only]
        except KeyError as e:
            ap.error(str(e.args[0]))
    t = time.perf_counter()
    done = ensure_dev_weights(a.out, keys, a.force)
    print(f"dev weights in {a.out}: wrote {done or 'nothing (all present)'} "
          f"in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    extra = sorted(set(load_receipt(a.out).models) - set(keys)) if a.profile else []
    if extra:
        print(f"warning: {a.out} also holds {extra}, outside profile {a.profile!r}: a worker "
              "loads them too; use a directory of its own", file=sys.stderr)
