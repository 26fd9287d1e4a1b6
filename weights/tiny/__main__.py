"""CLI: ``python -m weights.tiny --out DIR [--only KEY ...] [--force]``."""

import argparse
import sys
import time
from pathlib import Path

from weights.resolve import set_offline_env
from weights.tiny import ensure_dev_weights

if __name__ == "__main__":
    set_offline_env()
    ap = argparse.ArgumentParser(description="Write tiny random-weight dev models.")
    ap.add_argument("--out", type=Path, required=True, help="weights directory")
    ap.add_argument("--only", nargs="*", help="manifest keys (default: all dev models)")
    ap.add_argument("--force", action="store_true", help="rewrite existing dev models")
    a = ap.parse_args()
    t = time.perf_counter()
    done = ensure_dev_weights(a.out, a.only, a.force)
    print(f"dev weights in {a.out}: wrote {done or 'nothing (all present)'} "
          f"in {time.perf_counter() - t:.1f} s", file=sys.stderr)
