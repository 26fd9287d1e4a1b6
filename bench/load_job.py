"""The small job of the load test: cheap on CPU so that the server's own overhead shows.

Kept apart from ``bench/locustfile.py`` because importing Locust monkey-patches the process
(gevent); ``bench.load`` needs the job without that.
"""

from __future__ import annotations


def tiny_job() -> dict:
    """A 72 x 96 px bus.jpg (ultralytics' sample photo) with a centred mask, one step."""
    import base64
    import importlib.util
    import io
    from pathlib import Path

    from PIL import Image, ImageDraw

    photo = Path(importlib.util.find_spec("ultralytics").origin).parent / "assets" / "bus.jpg"
    img = Image.open(photo).convert("RGB")
    img.thumbnail((96, 96))
    mask = Image.new("L", img.size, 0)
    w, h = img.size
    ImageDraw.Draw(mask).rectangle([w // 4, h // 4, 3 * w // 4, 3 * h // 4], fill=255)

    def url(im: Image.Image, fmt: str) -> str:
        buf = io.BytesIO()
        im.save(buf, fmt)
        return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()

    return {"image": url(img, "JPEG"), "mask": url(mask, "PNG"), "prompt": "a red jacket",
            "num_inference_steps": 1, "protect_face": False, "output": {"format": "jpeg"}}
