"""Optimisation proposals, measured before/after by monkeypatching from the bench (core/ is
never edited). Run by ``python -m bench.child proposals``.

Each proposal is a drop-in replacement for one core function (or a constant) with the change
the proposal describes. Two kinds:

- ``exact``: outputs must be bit-identical to the baseline (checked here, on real masks and
  images at 2 MP and 12 MP: ``np.array_equal`` of arrays, or of decoded pixels for encoders);
- ``changes output``: reported with how much it changes (IoU of masks, max pixel difference).

Micro benchmarks alternate baseline and candidate (ABAB...) and report medians, so load drift from
other processes on the machine hits both alike. The end-to-end check runs whole jobs through the
handler, interleaving the arms: A = baseline, B = every ``exact`` proposal that can be applied by
patching, C = B + torch's intra-op threads restored to the core count (ultralytics lowers them).
cv2's RNG is seeded alike before each of those jobs: the fallback's GrabCut is otherwise not
repeatable from call to call (measured here too: ``grabcut_determinism``).
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import cv2
import numpy as np
from PIL import Image, ImageOps

import core.imageio as imageio
import core.inpaint as inpaint_mod
import core.masking.fallback as fallback
import core.masking.post as post
import core.overlay as overlay
import core.pipeline as pipeline

ORIG = {
    "post.finalize": post.finalize,
    "post.bbox": post.bbox,
    "post.clean": post.clean,
    "inpaint.bbox": inpaint_mod.bbox,
    "overlay.bbox": getattr(overlay, "bbox", None),
    "inpaint.composite": inpaint_mod.composite,
    "overlay.render_overlay": overlay.render_overlay,
    "pipeline.decode_image": imageio.decode_image,  # the pipeline now calls decode_photo
    "pipeline.encode_image": pipeline.encode_image,
    "fallback.GRABCUT_SIDE": fallback.GRABCUT_SIDE,
}


# ============================================================== candidate implementations
def _source(fn) -> str:
    import inspect

    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return ""


def fast_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``post.bbox`` via row/column projections (``any``) instead of ``np.nonzero`` (which
    materialises every index). Same result."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def finalize_crop(mask, *, dilate_px, feather_px, protect_boxes=(), face_margin=0.0):
    """``post.finalize`` computed on the mask's bounding box grown by dilate + feather + 2 px.

    Exact: a pixel's distance to the mask only involves mask pixels, which all lie inside the
    box; every pixel farther than dilate + feather px from the mask has alpha 0 in both.
    """
    if dilate_px < 0 or not mask.any():
        return ORIG["post.finalize"](mask, dilate_px=dilate_px, feather_px=feather_px,
                                     protect_boxes=protect_boxes, face_margin=face_margin)
    h, w = mask.shape
    bx0, by0, bx1, by1 = fast_bbox(mask)
    pad = dilate_px + max(0, feather_px) + 2
    x0, y0, x1, y1 = max(0, bx0 - pad), max(0, by0 - pad), min(w, bx1 + pad), min(h, by1 + pad)
    sub = post.feather(post.dilate(mask[y0:y1, x0:x1], dilate_px), feather_px)
    alpha = np.zeros((h, w), np.float32)
    alpha[y0:y1, x0:x1] = sub
    return post.subtract_boxes(alpha, protect_boxes, face_margin)


def clean_crop(mask, *, min_island_frac=0.0005, fill=True):
    """``post.clean`` on the mask's bounding box grown by 1 px: the island threshold still uses
    the full image's area; a background region touches the crop's border exactly when it
    touches the image's (the 1 px ring belongs to the outside of the box, which reaches the
    image border), so the same holes are filled. Same output."""
    box = fast_bbox(mask)
    if box is None:
        return ORIG["post.clean"](mask, min_island_frac=min_island_frac, fill=fill)
    h, w = mask.shape
    x0, y0, x1, y1 = box
    x0, y0, x1, y1 = max(0, x0 - 1), max(0, y0 - 1), min(w, x1 + 1), min(h, y1 + 1)
    sub = post.remove_islands(mask[y0:y1, x0:x1], int(min_island_frac * h * w))
    if fill:
        sub = post.fill_holes(sub)
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = sub
    return out


def render_overlay_crop(image, alpha, detections=(), faces=()):
    """``overlay.render_overlay`` blending only inside the mask's bounding box (alpha == 0
    pixels come out as the input in the baseline too: x * 1.0 + 0.5 truncates to x) and finding
    the outline in that box (``offset``). Same pixels."""
    h, w = image.shape[:2]
    out = image.copy()
    inside = alpha > 0
    box = fast_bbox(inside)
    contours = ()
    if box is not None:
        x0, y0, x1, y1 = box
        x0, y0, x1, y1 = max(0, x0 - 1), max(0, y0 - 1), min(w, x1 + 1), min(h, y1 + 1)
        a = (alpha[y0:y1, x0:x1] * overlay.TINT_OPACITY)[..., None]
        out[y0:y1, x0:x1] = (image[y0:y1, x0:x1] * (1 - a)
                             + np.asarray(overlay.MASK_TINT, np.float32) * a + 0.5).astype(np.uint8)
        contours, _ = cv2.findContours(inside[y0:y1, x0:x1].astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0))
    thick = max(1, round(max(h, w) / 400))
    scale = max(0.4, max(h, w) / 1400)
    cv2.drawContours(out, contours, -1, overlay.MASK_TINT, thick, cv2.LINE_AA)
    for label, score, b in detections:
        x0, y0, x1, y1 = (int(round(v)) for v in b)
        cv2.rectangle(out, (x0, y0), (x1, y1), overlay.DET_COLOUR, thick, cv2.LINE_AA)
        overlay._label(out, f"{label} {score:.2f}", x0, y0, overlay.DET_COLOUR, scale,
                       max(1, thick - 1))
    for score, b in faces:
        x0, y0, x1, y1 = (int(round(v)) for v in b)
        cv2.rectangle(out, (x0, y0), (x1, y1), overlay.FACE_COLOUR, thick, cv2.LINE_AA)
        overlay._label(out, f"face {score:.2f}", x0, y0, overlay.FACE_COLOUR, scale,
                       max(1, thick - 1))
    return out


def composite_band(original, generated, alpha):
    """``inpaint.composite`` doing float math only in the feather band 0 < alpha < 1: alpha == 1
    gives ``generated`` exactly in the baseline (0 * o + 1 * g + 0.5 truncates to g), alpha == 0
    the original. Same pixels."""
    out = original.copy()
    full = alpha >= 1.0
    np.copyto(out, generated, where=full[..., None])
    band = (alpha > 0) & ~full
    if band.any():
        a = alpha[band][:, None]
        blend = original[band].astype(np.float32) * (1 - a) + generated[band].astype(np.float32) * a + 0.5
        out[band] = np.clip(blend, 0, 255).astype(np.uint8)
    return out


def decode_image_fewer_copies(data, *, field="image", limits=imageio.Limits()):
    """``imageio.decode_image`` without the redundant full-size copies: EXIF transpose in place
    (the baseline's ``exif_transpose`` copies even when there is nothing to do), no
    ``convert("RGB")`` of an RGB image, one ``np.array`` (writable). Same pixels."""
    img = imageio._open_checked(data, field, limits)
    try:
        img.seek(0)
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:
        from core.errors import ErrorCode, JobError

        raise JobError(ErrorCode.invalid_image,
                       f"{field}: truncated or corrupt image data", field=field) from None
    img = imageio._to_8bit(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)


PNG_FILTERS = {"up": cv2.IMWRITE_PNG_FILTER_UP, "sub": cv2.IMWRITE_PNG_FILTER_SUB,
               "paeth": cv2.IMWRITE_PNG_FILTER_PAETH, "fast": cv2.IMWRITE_PNG_FAST_FILTERS}


def make_encode_cv2(png_filter: str = "up") -> Callable:
    """``encode_image`` with PNGs written by OpenCV's libpng at zlib level 1 with a chosen row
    filter: ``png_filter`` for RGB photos, none for greyscale masks. Lossless: same decoded
    pixels; JPEG/WebP unchanged."""
    flt = PNG_FILTERS[png_filter]

    def encode_image(arr, fmt="png", quality=92):
        if fmt == "png":
            # photos: one fixed row filter; 0/255 masks: no filter (runs of equal bytes)
            ok, buf = cv2.imencode(".png", cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3
                                   else arr,
                                   [cv2.IMWRITE_PNG_COMPRESSION, imageio.PNG_COMPRESS_LEVEL,
                                    cv2.IMWRITE_PNG_FILTER,
                                    flt if arr.ndim == 3 else cv2.IMWRITE_PNG_FILTER_NONE])
            if not ok:
                raise RuntimeError("cv2.imencode failed")
            return buf.tobytes()
        return ORIG["pipeline.encode_image"](arr, fmt, quality)

    encode_image.__name__ = f"encode_image_cv2_{png_filter}"
    return encode_image


# ================================================================================ patching
@contextmanager
def patched(names: list[str], grabcut_side: int | None = None, png_filter: str = "up"):
    """Apply the named exact proposals (and optionally a GrabCut size) for the block."""
    try:
        if "fast_bbox" in names:
            post.bbox = fast_bbox
            inpaint_mod.bbox = fast_bbox
            if ORIG["overlay.bbox"] is not None:
                overlay.bbox = fast_bbox
        if "finalize_crop" in names:
            post.finalize = finalize_crop
        if "clean_crop" in names:
            post.clean = clean_crop
        if "overlay_crop" in names:
            overlay.render_overlay = render_overlay_crop
        if "composite_band" in names:
            inpaint_mod.composite = composite_band
        if "decode_fewer_copies" in names:
            pipeline.decode_image = decode_image_fewer_copies
        if "encode_cv2_png" in names:
            pipeline.encode_image = make_encode_cv2(png_filter)
        if grabcut_side is not None:
            fallback.GRABCUT_SIDE = grabcut_side
        yield
    finally:
        post.bbox = ORIG["post.bbox"]
        inpaint_mod.bbox = ORIG["inpaint.bbox"]
        if ORIG["overlay.bbox"] is not None:
            overlay.bbox = ORIG["overlay.bbox"]
        post.finalize = ORIG["post.finalize"]
        post.clean = ORIG["post.clean"]
        overlay.render_overlay = ORIG["overlay.render_overlay"]
        inpaint_mod.composite = ORIG["inpaint.composite"]
        pipeline.decode_image = ORIG["pipeline.decode_image"]
        pipeline.encode_image = ORIG["pipeline.encode_image"]
        fallback.GRABCUT_SIDE = ORIG["fallback.GRABCUT_SIDE"]


# ============================================================================ measurement
def _time(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    r = fn()
    return (time.perf_counter() - t) * 1000, r


def ab(arms: dict[str, Callable[[], object]], reps: int) -> dict:
    """Interleave the arms ``reps`` times (after one untimed warm-up each); medians in ms."""
    for f in arms.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in arms}
    last = {}
    for _ in range(reps):
        for k, f in arms.items():
            dt, last[k] = _time(f)
            times[k].append(dt)
    out = {k: {"median_ms": round(statistics.median(v), 2), "min_ms": round(min(v), 2)}
           for k, v in times.items()}
    return {"arms": out, "_results": last}


def _speed(res: dict, base: str, cand: str) -> dict:
    b, c = res["arms"][base]["median_ms"], res["arms"][cand]["median_ms"]
    return {"before_ms": b, "after_ms": c, "saved_ms": round(b - c, 2),
            "speedup": round(b / c, 2) if c > 0 else None}


def _png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 1.0


class Ctx:
    """One real job's intermediate arrays at one size (from the baseline core functions)."""

    def __init__(self, worker, label: str, path: str, steps: int) -> None:
        from core.contract import JobRequest
        from core.inpaint import InpaintParams, inpaint
        from core.masking.auto import make_mask

        self.label = label
        self.data = open(path, "rb").read()
        self.image = imageio.decode_image(self.data)
        self.req = JobRequest(image="x", prompt="p", num_inference_steps=steps, seed=42)
        self.mo = make_mask(worker.models, self.image, self.req, None)
        self.fallback_binary, _ = fallback.fallback_mask(self.image, self.req.targets,
                                                         [f.box for f in self.mo.faces])
        pipe = next(iter(worker.models.inpainters.values()))
        self.result, self.facts = inpaint(
            pipe.pipe, pipe.resolution, self.image, self.mo.alpha,
            InpaintParams(prompt="p", negative_prompt="", num_inference_steps=steps,
                          guidance_scale=7.5, strength=1.0, seed=42))
        x0, y0, x1, y1 = self.facts["crop_box"]
        # the generated crop at full crop size, as composite() sees it
        self.crop_box = (x0, y0, x1, y1)
        self.gen_crop = self.result[y0:y1, x0:x1].copy()


def micro(ctx: Ctx, reps: int, encode_reps: int, pipe=None, resolution: int = 512) -> dict:
    """Every micro proposal at one size. Returns proposal -> measurements."""
    r: dict[str, dict] = {}
    img, mo, req = ctx.image, ctx.mo, ctx.req
    h, w = img.shape[:2]
    binary = ctx.fallback_binary
    kw = dict(dilate_px=req.mask_dilate_px, feather_px=req.mask_feather_px,
              protect_boxes=[f.box for f in mo.faces], face_margin=req.face_margin)

    # fast_bbox
    res = ab({"before": lambda: ORIG["post.bbox"](binary), "after": lambda: fast_bbox(binary)}, reps)
    r["fast_bbox"] = {**_speed(res, "before", "after"),
                      "identical": res["_results"]["before"] == res["_results"]["after"],
                      # inpaint.crop_box always; post.finalize and render_overlay where they use it
                      "calls_per_job": 1 + sum(1 for m in (post, overlay)
                                               if "bbox(" in _source(m.finalize if m is post
                                                                     else m.render_overlay))}

    # finalize_crop (distance transforms on the mask's box)
    res = ab({"before": lambda: ORIG["post.finalize"](binary, **kw),
              "after": lambda: finalize_crop(binary, **kw)}, reps)
    fa, fb = res["_results"]["before"], res["_results"]["after"]
    r["finalize_crop"] = {**_speed(res, "before", "after"),
                          "identical": bool(np.array_equal(fa, fb)),
                          "alpha_max_abs_diff": float(np.abs(fa - fb).max()),
                          "alpha_px_differing": int((fa != fb).sum()),
                          "repaint_region_identical": bool(np.array_equal(fa > 0, fb > 0)
                                                           and np.array_equal(fa >= 1, fb >= 1))}

    # clean_crop (post.clean runs on the auto path's union mask; measured on this garment mask)
    res = ab({"before": lambda: ORIG["post.clean"](binary), "after": lambda: clean_crop(binary)}, reps)
    r["clean_crop"] = {**_speed(res, "before", "after"), "identical": bool(
        np.array_equal(res["_results"]["before"], res["_results"]["after"]))}

    # overlay_crop
    dets = [(d.label, d.score, d.box) for d in mo.detections]
    faces = [(f.score, f.box) for f in mo.faces]
    res = ab({"before": lambda: ORIG["overlay.render_overlay"](img, mo.alpha, dets, faces),
              "after": lambda: render_overlay_crop(img, mo.alpha, dets, faces)}, reps)
    r["overlay_crop"] = {**_speed(res, "before", "after"), "identical": bool(
        np.array_equal(res["_results"]["before"], res["_results"]["after"]))}

    # composite_band
    x0, y0, x1, y1 = ctx.crop_box
    crop, calpha = img[y0:y1, x0:x1], mo.alpha[y0:y1, x0:x1]
    res = ab({"before": lambda: ORIG["inpaint.composite"](crop, ctx.gen_crop, calpha),
              "after": lambda: composite_band(crop, ctx.gen_crop, calpha)}, reps)
    r["composite_band"] = {**_speed(res, "before", "after"), "identical": bool(
        np.array_equal(res["_results"]["before"], res["_results"]["after"])),
        "crop_px": [x1 - x0, y1 - y0]}

    # decode with fewer copies (+ OpenCV's decoder for reference)
    res = ab({"before": lambda: ORIG["pipeline.decode_image"](ctx.data),
              "after": lambda: decode_image_fewer_copies(ctx.data),
              "cv2_imdecode": lambda: cv2.cvtColor(cv2.imdecode(
                  np.frombuffer(ctx.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)}, reps)
    rr = res["_results"]
    r["decode_fewer_copies"] = {**_speed(res, "before", "after"),
                                "identical": bool(np.array_equal(rr["before"], rr["after"])),
                                "writable": bool(rr["after"].flags.writeable),
                                "cv2_imdecode_ms": res["arms"]["cv2_imdecode"]["median_ms"],
                                "cv2_imdecode_max_abs_diff": int(np.abs(
                                    rr["cv2_imdecode"].astype(np.int16) - rr["before"]).max())}

    # result PNG encode: Pillow (baseline) vs OpenCV with fixed filters; JPEG/WebP for scale
    enc = {"before": lambda: ORIG["pipeline.encode_image"](ctx.result, "png")}
    for f in PNG_FILTERS:
        enc[f"cv2_{f}"] = (lambda f=f: make_encode_cv2(f)(ctx.result, "png"))
    enc["pillow_level0"] = lambda: _pil_png(ctx.result, 0)
    enc["jpeg_q92"] = lambda: ORIG["pipeline.encode_image"](ctx.result, "jpeg", 92)
    res = ab(enc, encode_reps)
    base_px = _png_pixels(res["_results"]["before"])
    r["encode_result_png"] = {
        "before_ms": res["arms"]["before"]["median_ms"],
        "before_bytes": len(res["_results"]["before"]),
        "variants": {k: {"ms": v["median_ms"], "bytes": len(res["_results"][k]),
                         **({"same_pixels": bool(np.array_equal(
                             _png_pixels(res["_results"][k]), base_px))}
                            if k.startswith("cv2_") or k == "pillow_level0" else {})}
                     for k, v in res["arms"].items() if k != "before"},
    }
    best = min((k for k in r["encode_result_png"]["variants"] if k.startswith("cv2_")),
               key=lambda k: r["encode_result_png"]["variants"][k]["ms"])
    r["encode_result_png"]["best_cv2"] = best

    # mask PNG: bool * 255 (int64 temporary) vs a uint8 multiply; overlay JPEG Pillow vs cv2
    res = ab({"before": lambda: (mo.binary * 255).astype(np.uint8),
              "after": lambda: np.multiply(mo.binary, 255, dtype=np.uint8)}, reps)
    r["mask_to_uint8"] = {**_speed(res, "before", "after"), "identical": bool(
        np.array_equal(res["_results"]["before"], res["_results"]["after"]))}
    m8 = np.multiply(mo.binary, 255, dtype=np.uint8)
    res = ab({"before": lambda: ORIG["pipeline.encode_image"](m8, "png"),
              "after": lambda: make_encode_cv2("up")(m8, "png"),
              "pillow_level1": lambda: _pil_png(m8, 1),
              "cv2_bilevel": lambda: cv2.imencode(".png", m8, [cv2.IMWRITE_PNG_COMPRESSION, 1,
                                                               cv2.IMWRITE_PNG_BILEVEL, 1])[1].tobytes()},
             reps)
    rr = res["_results"]
    r["encode_mask_png"] = {**_speed(res, "before", "after"),
                            "identical": bool(np.array_equal(_png_pixels(rr["after"]), m8)),
                            "bytes_before": len(rr["before"]), "bytes_after": len(rr["after"]),
                            "pillow_level1_ms": res["arms"]["pillow_level1"]["median_ms"],
                            "bilevel_ms": res["arms"]["cv2_bilevel"]["median_ms"],
                            "bilevel_bytes": len(rr["cv2_bilevel"])}
    ov = ORIG["overlay.render_overlay"](img, mo.alpha, dets, faces)
    res = ab({"before": lambda: ORIG["pipeline.encode_image"](ov, "jpeg", pipeline.OVERLAY_JPEG_QUALITY),
              "after": lambda: cv2.imencode(".jpg", cv2.cvtColor(ov, cv2.COLOR_RGB2BGR),
                                            [cv2.IMWRITE_JPEG_QUALITY,
                                             pipeline.OVERLAY_JPEG_QUALITY])[1].tobytes()}, reps)
    a_px = np.asarray(Image.open(io.BytesIO(res["_results"]["before"])).convert("RGB"))
    b_px = np.asarray(Image.open(io.BytesIO(res["_results"]["after"])).convert("RGB"))
    r["overlay_jpeg_cv2"] = {**_speed(res, "before", "after"),
                             "same_bytes": res["_results"]["before"] == res["_results"]["after"],
                             "max_abs_diff": int(np.abs(a_px.astype(np.int16) - b_px).max())}

    # RGB -> BGR for the detectors (garments and faces each copy the full image)
    res = ab({"before": lambda: np.ascontiguousarray(img[..., ::-1]),
              "after": lambda: cv2.cvtColor(img, cv2.COLOR_RGB2BGR)}, reps)
    r["bgr_cvtcolor"] = {**_speed(res, "before", "after"), "identical": bool(
        np.array_equal(res["_results"]["before"], res["_results"]["after"])),
        "calls_per_job": 2}

    # parallel encode of the three artefacts (a change inside Worker._run: micro only)
    encode_cv2 = make_encode_cv2(best.removeprefix("cv2_"))

    def tasks(enc):
        return [lambda: enc(ctx.result, "png"),
                lambda: ORIG["pipeline.encode_image"](np.multiply(mo.binary, 255, dtype=np.uint8), "png"),
                lambda: ORIG["pipeline.encode_image"](
                    ORIG["overlay.render_overlay"](img, mo.alpha, dets, faces), "jpeg", 85)]

    pool = ThreadPoolExecutor(max_workers=3)
    res = ab({"sequential": lambda: [t() for t in tasks(ORIG["pipeline.encode_image"])],
              "parallel": lambda: [f.result() for f in
                                   [pool.submit(t) for t in tasks(ORIG["pipeline.encode_image"])]],
              "sequential_cv2png": lambda: [t() for t in tasks(encode_cv2)],
              "parallel_cv2png": lambda: [f.result() for f in
                                          [pool.submit(t) for t in tasks(encode_cv2)]]},
             encode_reps)
    pool.shutdown()
    r["parallel_encode"] = {k: v["median_ms"] for k, v in res["arms"].items()}
    r["parallel_encode"]["note"] = "sequential/parallel use core's encode_image; *_cv2png the proposal's"

    # GrabCut working size in the fallback (changes the mask: IoU vs the current setting, each
    # run with cv2's RNG seeded alike), and the baseline's own run-to-run variation unseeded
    # (GrabCut's k-means init draws from cv2's global RNG, whose state carries across calls)
    faces_boxes = [f.box for f in mo.faces]

    iters0 = fallback.GRABCUT_ITERS

    def fb_mask(side: int, seed: int | None, iters: int = iters0):
        fallback.GRABCUT_SIDE, fallback.GRABCUT_ITERS = side, iters
        try:
            if seed is not None:
                cv2.setRNGSeed(seed)
            return fallback.fallback_mask(img, req.targets, faces_boxes)[0]
        finally:
            fallback.GRABCUT_SIDE = ORIG["fallback.GRABCUT_SIDE"]
            fallback.GRABCUT_ITERS = iters0

    side0 = ORIG["fallback.GRABCUT_SIDE"]
    variants = [(f"{side0}px", side0, iters0), (f"{side0 * 3 // 4}px", side0 * 3 // 4, iters0),
                (f"{side0 // 2}px", side0 // 2, iters0)]
    if iters0 > 1:
        variants.append((f"{side0}px_{iters0 - 1}iters", side0, iters0 - 1))
    gc = {}
    for name, side, iters in variants:
        times, ious = [], []
        for seed in range(max(2, reps // 2 + 1)):
            base = fb_mask(side0, seed) if (side, iters) != (side0, iters0) else None
            dt, m = _time(lambda: fb_mask(side, seed, iters))
            times.append(dt)
            ious.append(_iou(m, base) if base is not None else 1.0)
        gc[name] = {"median_ms": round(statistics.median(times), 1),
                    "iou_vs_current_same_seed": round(statistics.median(ious), 4)}
    runs = [fb_mask(side0, None) for _ in range(4)]
    pair = [_iou(a, b) for i, a in enumerate(runs) for b in runs[i + 1:]]
    r["grabcut_side"] = gc
    r["grabcut_determinism"] = {
        "runs": len(runs), "distinct_masks": len({m.tobytes() for m in runs}),
        "min_pairwise_iou": round(min(pair), 4), "median_pairwise_iou": round(statistics.median(pair), 4),
        "coverage": [round(float(m.mean()), 4) for m in runs],
        "seeded_repeatable": bool(np.array_equal(fb_mask(side0, 7), fb_mask(side0, 7))),
        "grabcut_side": side0, "grabcut_iters": iters0,
    }

    # LANCZOS downscale of the crop to the model size: reducing_gap (Pillow) / cv2 INTER_AREA
    mw, mh = ctx.facts["model_size"]
    pil_crop = Image.fromarray(crop)
    res = ab({"before": lambda: np.asarray(pil_crop.resize((mw, mh), Image.Resampling.LANCZOS)),
              "reducing_gap_3": lambda: np.asarray(pil_crop.resize(
                  (mw, mh), Image.Resampling.LANCZOS, reducing_gap=3.0))}, reps)
    rr = res["_results"]
    r["crop_resize_reducing_gap"] = {**_speed(res, "before", "reducing_gap_3"),
                                     "max_abs_diff": int(np.abs(rr["before"].astype(np.int16)
                                                                - rr["reducing_gap_3"]).max()),
                                     "crop_px": [x1 - x0, y1 - y0], "model_px": [mw, mh]}

    # torch intra-op threads: ultralytics' select_device() (run by the garment detector's
    # warm-up at cold start) calls torch.set_num_threads(min(8, cpu_count - 1)) -> 1 thread on
    # a 2-core box. Time the diffusers call at this job's model size with that vs all cores.
    if pipe is not None:
        import os

        import torch

        from core.inpaint import InpaintParams, inpaint

        cur, ncpu = torch.get_num_threads(), os.cpu_count() or 1
        params = InpaintParams(prompt="p", negative_prompt="", num_inference_steps=req.num_inference_steps,
                               guidance_scale=7.5, strength=1.0, seed=42)

        def with_threads(n):
            def f():
                torch.set_num_threads(n)
                try:
                    return inpaint(pipe, resolution, img, mo.alpha, params)[0]
                finally:
                    torch.set_num_threads(cur)
            return f

        if ncpu > cur:
            res = ab({"before": with_threads(cur), "after": with_threads(ncpu)}, max(2, reps - 2))
            r["torch_threads"] = {**_speed(res, "before", "after"), "threads_before": cur,
                                  "threads_after": ncpu, "what": "whole core.inpaint.inpaint() call",
                                  "same_pixels": bool(np.array_equal(res["_results"]["before"],
                                                                     res["_results"]["after"]))}
    return r


def _pil_png(arr, level):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


# ================================================================================ e2e / run
EXACT = ["fast_bbox", "finalize_crop", "clean_crop", "overlay_crop", "composite_band", "decode_fewer_copies",
         "encode_cv2_png"]


def _fetch_outputs(runner, out_keys) -> dict:
    c = runner.client
    bucket = runner.worker.settings.s3_bucket
    return {k: c.get_object(Bucket=bucket, Key=key)["Body"].read() for k, key in out_keys.items()}


@contextmanager
def torch_threads(n: int | None):
    import torch

    cur = torch.get_num_threads()
    try:
        if n:
            torch.set_num_threads(n)
        yield
    finally:
        torch.set_num_threads(cur)


@contextmanager
def _both(*cms):
    with cms[0], cms[1]:
        yield


def e2e(worker, inputs: dict, steps: int, plan: dict, png_filter: str,
        arms: tuple[str, ...] | None = None) -> dict:
    """Whole jobs through the handler; arms interleaved; outputs compared on the first round.

    cv2's RNG is seeded before every job (all arms alike) so the fallback's GrabCut does the
    same work and yields the same mask in every arm (see ``grabcut_determinism``)."""
    import os

    from bench.child import Runner

    runner = Runner(worker, inputs, steps, "ab")
    ncpu = os.cpu_count() or 1
    all_arms = {
        "A_baseline": lambda: _both(patched([]), torch_threads(None)),
        "B_exact": lambda: _both(patched(EXACT, png_filter=png_filter), torch_threads(None)),
        f"C_exact+torch_threads={ncpu}": lambda: _both(patched(EXACT, png_filter=png_filter),
                                                       torch_threads(ncpu)),
    }
    import torch

    if torch.get_num_threads() >= ncpu:  # core already uses every core: C would equal B
        all_arms.pop(f"C_exact+torch_threads={ncpu}")
    if arms is not None:
        arms = {k: v for k, v in all_arms.items() if k in arms}
    else:
        arms = all_arms
    out = {}
    for label, reps in (("2MP", plan.get("ab_reps_2MP", 4)), ("12MP", plan.get("ab_reps_12MP", 3))):
        if reps <= 0:
            continue
        recs: dict[str, list[dict]] = {k: [] for k in arms}
        pixels: dict[str, dict] = {}
        for i in range(reps + 1):  # round 0 = warm-up + output check, not timed
            for name, ctx in arms.items():
                with ctx():
                    cv2.setRNGSeed(1234)
                    if i == 0:
                        rec, outs = _run_keep(runner, label)
                        pixels[name] = {k: _png_or_jpeg_pixels(v) for k, v in outs.items()}
                    else:
                        recs[name].append(runner.run(label))
        med = {}
        for name, rs in recs.items():
            walls = [r["wall_ms"] for r in rs]
            over = [r["wall_ms"] - r["model_forward_ms"] for r in rs]
            med[name] = {"wall_ms": round(statistics.median(walls), 1),
                         "overhead_ms": round(statistics.median(over), 1),
                         "model_forward_ms": round(statistics.median(
                             [r["model_forward_ms"] for r in rs]), 1),
                         "stages_ms": {s: round(statistics.median([r["timings_ms"][s] for r in rs]), 1)
                                       for s in ("fetch", "decode", "mask", "inpaint", "encode",
                                                 "upload")},
                         "n": len(rs)}
        same = {name: {k: int((v != pixels["A_baseline"][k]).any(axis=-1).sum()
                              if v.ndim == 3 else (v != pixels["A_baseline"][k]).sum())
                       for k, v in px.items()} for name, px in pixels.items() if name != "A_baseline"}
        out[label] = {"arms": med, "pixels_differing_from_baseline": same}
    return out


def _run_keep(runner, label):
    """One job whose outputs are fetched back (then deleted) for the pixel comparison."""
    orig = runner._cleanup
    kept = {}

    def keep(out):
        kept.update({k: out[k]["key"] for k in ("image", "mask", "overlay") if k in out})

    runner._cleanup = keep
    try:
        rec = runner.run(label)
    finally:
        runner._cleanup = orig
    data = _fetch_outputs(runner, kept)
    runner._cleanup({k: {"key": v} for k, v in kept.items()})
    return rec, data


def _png_or_jpeg_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def core_status() -> dict[str, bool]:
    """Which proposals the current core already contains (by reading its source)."""
    import core.masking.faces as faces
    import core.masking.garments as garments
    import core.models as models

    def has(fn, *needles):
        src = _source(fn)
        return all(n in src for n in needles)

    return {
        "fast_bbox": has(post.bbox, "any(axis"),
        "finalize_crop": has(post.finalize, "bbox("),
        "clean_crop": has(post.clean, "bbox("),
        "overlay_crop": has(overlay.render_overlay, "bbox("),
        "composite_band": not has(inpaint_mod.composite, "np.where(a > 0"),
        "decode_fewer_copies": has(imageio.decode_image, "in_place=True"),
        "mask_to_uint8": has(pipeline.Worker._run, "np.multiply(mo.binary"),
        "bgr_cvtcolor": has(garments.GarmentDetector.detect, "cvtColor")
        and has(faces.FaceDetector.detect, "cvtColor"),
        "encode_cv2_png": has(imageio.encode_image, "cv2.imencode", "IMWRITE_PNG_FILTER"),
        "encode_mask_png": has(imageio.encode_image, "IMWRITE_PNG_FILTER_NONE"),
        "torch_threads": has(models.ModelSet.load, "set_num_threads"),
        "grabcut_seeded": has(fallback._grabcut, "setRNGSeed"),
        "faces_warmup": has(faces.FaceDetector.load, "detect("),
        "overlay_jpeg_cv2": has(imageio.encode_image, '".jpg"'),
    }


def first_call_probe(worker) -> dict:
    """Right after cold start: the face detector's first ``detect`` vs its second (insightface
    2.1 builds a static-shape ONNX session per input size lazily, on first use) and the
    garment detector's (warmed up at load)."""
    import numpy as np

    out = {}
    blank = np.zeros((64, 64, 3), np.uint8)
    for role in ("faces", "garments"):
        det = getattr(worker.models, role)
        if det is None:
            continue
        t1, _ = _time(lambda: det.detect(blank))
        t2, _ = _time(lambda: det.detect(blank))
        out[role] = {"first_detect_ms": round(t1, 1), "second_detect_ms": round(t2, 1)}
    return out


def run(plan: dict, inputs: dict, steps: int) -> dict:
    from bench import instrument as ins
    from core.pipeline import Worker

    sections: dict[str, float] = {}
    t = time.perf_counter()
    worker = Worker.cold_start()
    ins.install_seam_timers(worker.models)
    sections["cold_start"] = time.perf_counter() - t
    out: dict = {"first_call": first_call_probe(worker), "core_status": core_status(),
                 "sections_s": sections}
    reps = plan.get("micro_reps", 5)
    micro_res = {}
    m0 = next(iter(worker.models.inpainters.values()))
    for label in plan.get("micro_sizes", ["2MP", "12MP"]):
        t = time.perf_counter()
        ctx = Ctx(worker, label, inputs[label]["file"], steps)
        micro_res[label] = micro(ctx, reps, plan.get("encode_reps", 3), m0.pipe, m0.resolution)
        del ctx
        sections[f"micro_{label}"] = time.perf_counter() - t
    out["micro"] = micro_res
    png_filter = micro_res[list(micro_res)[-1]]["encode_result_png"]["best_cv2"].removeprefix("cv2_")
    out["e2e_config"] = {"png_filter": png_filter, "exact": EXACT}
    if plan.get("ab_reps_2MP", 0) > 0:
        t = time.perf_counter()
        out["e2e"] = e2e(worker, inputs, steps, plan, png_filter)
        sections["e2e"] = time.perf_counter() - t
    for k, v in sections.items():
        sections[k] = round(v, 1)
    return out
