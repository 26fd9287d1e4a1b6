"""The human guard's recall and cost: ``python -m bench.guard [--weights DIR] [--repeats N]``.

Recall: every face and hand a person annotated by eye on five public photos (the boxes live in
tests/test_mediapipe_detectors.py, the tests' single source) against what each face detector
finds, and what the palm + hand-landmark detector keeps. A face counts as found when a detected
box has IoU >= 0.3 with it or holds >= 50 % of it after growing by 25 % (the tests' rule).

Cost: faces (every face detector the worker loads), hands and pose per photo, on bus.jpg resized
to 0.5 / 2 / 12 MP (3:4), median and min over ``--repeats`` runs, with the interpreter and torch
thread counts the worker uses. Prints Markdown and writes it to ``bench/results/guard.md``
(``--out``), which bench/RESULTS.md includes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _ms(fn, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=Path(".weights"))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "guard.md")
    a = ap.parse_args(argv)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        _report(a)
    text = buf.getvalue()
    sys.stdout.write(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    return 0


def _report(a: argparse.Namespace) -> None:
    """The Markdown report, printed."""
    load0 = os.getloadavg()[0]

    from core.models import ModelSet
    from core.settings import Settings
    from tests.test_mediapipe_detectors import ALL_HANDS, FACES, HANDS, covers, load_photo
    from weights.tiny import ensure_dev_weights

    from core.masking.haar import HaarFaceDetector

    ensure_dev_weights(a.weights)
    haar = HaarFaceDetector()  # for comparison: it stands in only when no other detector loads
    models = ModelSet.load(Settings(weights_dir=a.weights, device="cpu"))
    print(f"## Human guard ({time.strftime('%Y-%m-%d')}, `python -m bench.guard`)\n")
    print(f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; weights "
          f"{a.weights} (face detectors: {[d.name for d in models.face_detectors]}, hands: "
          f"{[d.name for d in models.hand_detectors]}, pose: {models.pose is not None}); "
          f"load average at start {load0:.1f} (other processes share the cores).\n")

    print("| photo | faces annotated | found per detector | false faces | hands found (of visible) "
          "| false hands |")
    print("| --- | --- | --- | --- | --- | --- |")
    totals: dict[str, int] = {}
    for name, faces in FACES.items():
        img = load_photo(name)
        per, false = [], []
        for det in [*models.face_detectors, haar]:
            found = [d.box for d in det.detect(img)]
            hit = sum(any(covers(f, t) for f in found) for t in faces)
            totals[det.name] = totals.get(det.name, 0) + hit
            per.append(f"{det.name} {hit}")
            false.append(f"{det.name} {sum(not any(covers(f, t) for t in faces) for f in found)}")
        hands = [d.box for h in models.hand_detectors for d in h.detect(img, faces)]
        visible = ALL_HANDS.get(name, [])
        hit = sum(any(covers(h, t) for h in hands) for t in visible)
        false_h = sum(not any(covers(h, t) for t in visible) for h in hands)
        must = "yes" if name not in HANDS or any(covers(h, HANDS[name]) for h in hands) else "NO"
        print(f"| {name} | {len(faces)} | {', '.join(per)} | {', '.join(false)} | {hit} / "
              f"{len(visible)} (required one found: {must}) | {false_h} |")
    n = sum(len(f) for f in FACES.values())
    print("\nTotal faces found: " + ", ".join(f"{k} {v}/{n}" for k, v in totals.items()) + "\n")

    bus = Image.fromarray(load_photo("bus"))
    print("| size | faces (all detectors) ms | hands ms | pose ms | guard (faces + hands) ms |")
    print("| --- | --- | --- | --- | --- |")
    for mp in (0.5, 2.0, 12.0):
        h = int(round((mp * 1e6 * 4 / 3) ** 0.5))
        w = int(round(h * 3 / 4))
        img = np.asarray(bus.resize((w, h), Image.Resampling.BICUBIC))
        faces = []

        def run_faces():
            faces[:] = [d.box for det in models.face_detectors for d in det.detect(img)]

        f_med, f_min = _ms(run_faces, a.repeats)
        h_med, h_min = _ms(lambda: [d.detect(img, faces) for d in models.hand_detectors],
                           a.repeats)
        p_med, p_min = _ms(lambda: models.pose.estimate(img), a.repeats) if models.pose else (0, 0)
        print(f"| {mp:g} MP ({w}x{h}) | {f_med:.0f} (min {f_min:.0f}) | {h_med:.0f} "
              f"(min {h_min:.0f}) | {p_med:.0f} (min {p_min:.0f}) | {f_med + h_med:.0f} |")
    print(f"\nLoad average at the end {os.getloadavg()[0]:.1f}; median (min) of "
          f"{a.repeats} runs.")


if __name__ == "__main__":
    raise SystemExit(main())
