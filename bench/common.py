"""Shared, light helpers (stdlib only at import time): the parent/child protocol, statistics,
the benchmark photos.

Protocol: a child prints exactly one line ``@@BENCH@@ <json>`` on stdout (libraries may print
anything else around it); the parent parses that line.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path

MARKER = "@@BENCH@@ "

#: Input sizes, (width, height) px, all 3:4 portrait like ultralytics' bus.jpg (810 x 1080).
SIZES: dict[str, tuple[int, int]] = {
    "0.5MP": (612, 816),     # 0.50 MP
    "2MP": (1224, 1632),     # 2.00 MP
    "12MP": (3000, 4000),    # 12.0 MP, a phone photo
}
#: JPEG quality of the generated inputs (a phone camera's typical range is 90-95).
INPUT_JPEG_QUALITY = 90
PROMPT = "a red leather jacket, studio lighting"


def emit(obj: dict) -> None:
    """Child side: print the result line."""
    sys.stdout.write(MARKER + json.dumps(obj, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def parse_child_stdout(text: str) -> dict:
    """Parent side: the last ``@@BENCH@@`` line's JSON. Raises ValueError when there is none."""
    for line in reversed(text.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    raise ValueError("child printed no result line")


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0-100), None for no values."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    if len(vals) == 1:
        return vals[0]
    k = (len(vals) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def summary(values: list[float]) -> dict:
    """n, median, p95, min, max (ms or whatever unit the values are in), rounded."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": 0, "median": None, "p95": None, "min": None, "max": None}
    r = lambda v: round(v, 2)  # noqa: E731
    return {"n": len(vals), "median": r(statistics.median(vals)), "p95": r(percentile(vals, 95)),
            "min": r(min(vals)), "max": r(max(vals))}


def bus_jpg() -> Path:
    """ultralytics' bus.jpg (810 x 1080, a real photo of people), found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("ultralytics is not installed: no bus.jpg")
    return Path(spec.origin).parent / "assets" / "bus.jpg"


def make_photo(size: tuple[int, int], quality: int = INPUT_JPEG_QUALITY) -> bytes:
    """bus.jpg resized to ``size`` (w, h) with Pillow LANCZOS, as a JPEG (4:2:0)."""
    import io

    from PIL import Image

    src = Image.open(bus_jpg()).convert("RGB")
    img = src.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def centre_mask(path: str) -> str:
    """A provided mask for the photo at ``path``: its central quarter, as a PNG data URL."""
    import base64
    import io

    from PIL import Image, ImageDraw

    w, h = Image.open(path).size
    m = Image.new("L", (w, h), 0)
    ImageDraw.Draw(m).rectangle((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=255)
    buf = io.BytesIO()
    m.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def bare_codec_ms(path: str) -> float:
    """The overhead floor: a bare Pillow decode + JPEG q92 encode of the photo, ms."""
    import io

    from PIL import Image

    data = open(path, "rb").read()
    t = time.perf_counter()
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img.save(io.BytesIO(), format="JPEG", quality=92)
    return (time.perf_counter() - t) * 1000
