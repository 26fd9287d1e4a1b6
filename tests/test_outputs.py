"""The paste-back blend, the preview overlay's size and tint, and each artefact's own size."""

from __future__ import annotations

import io
import types

import numpy as np
from PIL import Image

from core.imageio import Photo
from core.inpaint import composite
from core.masking import post
from core.outputs import OVERLAY_MAX_PIXELS, job_outputs, shrink, store
from core.overlay import MASK_TINT, TINT_OPACITY, render_overlay
from core.storage import LocalStorage


def _float_blend(original, generated, alpha):
    """The paste-back formula, blended over every pixel in float32 (the reference)."""
    a = alpha[..., None]
    blend = original.astype(np.float32) * (1 - a) + generated.astype(np.float32) * a + 0.5
    return np.where(a > 0, np.clip(blend, 0, 255).astype(np.uint8), original)


def _alpha(h, w, seed=0):
    m = np.zeros((h, w), bool)
    m[h // 4:3 * h // 4, w // 5:w // 2] = True
    rng = np.random.default_rng(seed)
    m[rng.integers(0, h, 20), rng.integers(0, w, 20)] = True  # specks with their own ramps
    return post.finalize(m, dilate_px=3, feather_px=6)


def test_composite_equals_the_float_blend_and_keeps_unmasked_pixels():
    rng = np.random.default_rng(1)
    h, w = 120, 160
    alpha = _alpha(h, w)
    assert (alpha == 1).any() and ((alpha > 0) & (alpha < 1)).any() and (alpha == 0).any()
    original = rng.integers(0, 256, (h, w, 3), np.uint8)
    generated = rng.integers(0, 256, (h, w, 3), np.uint8)
    got = composite(original, generated, alpha)
    assert np.array_equal(got, _float_blend(original, generated, alpha))
    assert np.array_equal(got[alpha == 0], original[alpha == 0])
    assert np.array_equal(got[alpha == 1], generated[alpha == 1])
    # in place into a view of a larger copy (how core.inpaint pastes back)
    big = rng.integers(0, 256, (h + 10, w + 20, 3), np.uint8)
    before = big.copy()
    view = big[5:5 + h, 10:10 + w]
    view[...] = original
    composite(original, generated, alpha, out=view)
    assert np.array_equal(big[5:5 + h, 10:10 + w], got)
    assert np.array_equal(big[:5], before[:5]) and np.array_equal(big[:, :10], before[:, :10])


def test_overlay_tint_is_the_alpha_weighted_blend():
    rng = np.random.default_rng(2)
    h, w = 90, 130
    alpha = _alpha(h, w, seed=3)
    image = rng.integers(0, 256, (h, w, 3), np.uint8)
    got = render_overlay(image, alpha)
    a = (alpha * TINT_OPACITY)[..., None]
    ref = (image * (1 - a) + np.asarray(MASK_TINT, np.float32) * a + 0.5).astype(np.uint8)
    # inside the mask (away from the outline drawn along its edge and the image border) and
    # outside it, exactly the blend
    inner = post.dilate(alpha >= 1, -2)
    inner[:2], inner[-2:], inner[:, :2], inner[:, -2:] = False, False, False, False
    assert inner.sum() > 1000
    far = post.dilate(alpha > 0, 3)
    assert np.array_equal(got[inner], ref[inner])
    assert np.array_equal(got[~far], image[~far])


def test_shrink_sizes_and_keeps_flat_colour():
    img = np.full((4000, 3000, 3), (10, 200, 90), np.uint8)
    out = shrink(img, (1224, 1632))
    assert out.shape == (1632, 1224, 3) and (out == (10, 200, 90)).all()
    alpha = np.ones((1001, 777), np.float32)
    small = shrink(alpha, (300, 386))
    assert small.shape == (386, 300) and small.dtype == np.float32 and np.allclose(small, 1.0)


def test_overlay_is_a_preview_within_the_pixel_budget_with_its_own_size(tmp_path):
    """A 4.3 MP photo's overlay is at most 2 MP (aspect ratio kept, boxes scaled) and its
    Artifact gives the overlay's own width and height; the result and mask stay full size."""
    h, w = 1800, 2400
    rgb = np.full((h, w, 3), 128, np.uint8)
    alpha = _alpha(h, w)
    face = types.SimpleNamespace(score=0.9, box=(1800.0, 200.0, 2000.0, 400.0))
    mo = types.SimpleNamespace(alpha=alpha, binary=alpha >= 1, detections=[], faces=[face],
                               hands=[])
    outputs = job_outputs(Photo(rgb, format="JPEG"), rgb, mo, [rgb], "jpeg", 92)
    arts, _ = store(LocalStorage(tmp_path), "job-1", outputs, 60, inline=True)
    assert (arts["image"].width, arts["image"].height) == (w, h)
    assert (arts["mask"].width, arts["mask"].height) == (w, h)
    ov = arts["overlay"]
    assert ov.width * ov.height <= OVERLAY_MAX_PIXELS
    assert abs(ov.width / ov.height - w / h) < 0.01 and ov.width >= 1600
    import base64

    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(ov.base64))).convert("RGB"))
    assert img.shape == (ov.height, ov.width, 3)
    for name in ("image", "mask"):
        data = base64.b64decode(arts[name].base64)
        assert Image.open(io.BytesIO(data)).size == (w, h)
    # the face's box is drawn where the face is on the preview (scaled), not at full-size px
    s = ov.width / w
    x0, y0 = round(1800 * s), round(300 * s)  # left edge, half way down
    assert np.abs(img[y0, x0 - 1:x0 + 2].astype(int) - 128).max() > 40


def test_inpaint_in_place_paints_the_photo_buffer_with_the_same_pixels():
    """With ``in_place`` the last result is the caller's own array (one full-size frame
    less held), pixel for pixel what the copy would have been; earlier gallery images are
    copies taken before it was painted."""
    from core.inpaint import InpaintParams, inpaint

    class Pipe:  # a stand-in diffusers pipeline: each image a flat colour at the model size
        def __call__(self, *, num_images_per_prompt, width, height, **_):
            return types.SimpleNamespace(images=[
                Image.new("RGB", (width, height), (40 * i, 200, 90))
                for i in range(num_images_per_prompt)])

    rng = np.random.default_rng(4)
    h, w = 150, 200
    alpha = _alpha(h, w)
    photo = rng.integers(0, 256, (h, w, 3), np.uint8)
    params = InpaintParams({}, 1)
    want, _ = inpaint(Pipe(), 64, photo, alpha, params, num_outputs=2)
    own = photo.copy()
    got, _ = inpaint(Pipe(), 64, own, alpha, params, num_outputs=2, in_place=True)
    assert got[1] is own and got[0] is not own
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert not np.array_equal(want[0], want[1])  # (the two outputs differ: a real gallery)
