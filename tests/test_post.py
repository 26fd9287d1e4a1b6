"""Mask post-processing with controlled inputs; face protection proven on the final alpha."""

from __future__ import annotations

import numpy as np
import pytest

from core.masking import post


def _disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_dilate_is_a_disc_of_radius_px():
    m = np.zeros((101, 101), bool)
    m[50, 50] = True
    d = post.dilate(m, 20)
    assert np.array_equal(d, _disc(101, 101, 50, 50, 20))
    assert np.array_equal(post.dilate(d, -20), m | post.dilate(d, -20))  # erode back inside


def test_feather_band_width_and_values():
    m = np.zeros((60, 60), bool)
    m[20:40, 20:40] = True
    a = post.feather(m, 8)
    assert a.dtype == np.float32 and a[m].min() == 1.0
    assert a[post.dilate(m, 8) == 0].max() == 0.0  # exactly zero beyond the band
    assert 0 < a[30, 44] < 1  # 5 px outside: inside the ramp
    assert a[30, 41] > a[30, 44]  # decreasing outward


def test_islands_removed_and_holes_filled():
    m = np.zeros((100, 100), bool)
    m[10:60, 10:60] = True
    m[30:35, 30:35] = False  # hole
    m[80:82, 80:82] = True  # 4 px island
    out = post.clean(m, min_island_frac=0.001)
    assert out[30:35, 30:35].all()
    assert not out[80:82, 80:82].any()


@pytest.mark.parametrize("dilate_px,feather_px,margin", [(0, 0, 0.0), (16, 12, 0.25), (64, 40, 0.5)])
def test_no_pixel_in_a_grown_face_box_after_dilation_and_feathering(dilate_px, feather_px, margin):
    h, w = 400, 300
    mask = np.zeros((h, w), bool)
    mask[100:380, 40:260] = True  # a garment region overlapping the face box
    faces = [(110.0, 60.0, 190.0, 150.0), (10.5, 10.5, 40.2, 44.9)]
    alpha = post.finalize(mask, dilate_px=dilate_px, feather_px=feather_px,
                          protect=[(f, margin) for f in faces])
    for box in faces:
        x0, y0, x1, y1 = box
        mx, my = (x1 - x0) * margin, (y1 - y0) * margin
        yy, xx = np.mgrid[:h, :w]
        inside = (xx + 1 > x0 - mx) & (xx < x1 + mx) & (yy + 1 > y0 - my) & (yy < y1 + my)
        assert alpha[inside].max() == 0.0
    assert alpha.max() == 1.0  # the garment is still there


@pytest.mark.parametrize("dilate_px,feather_px", [(0, 0), (3, 9), (40, 25)])
def test_windowed_finalize_equals_full_frame(dilate_px, feather_px):
    rng = np.random.default_rng(dilate_px)
    m = np.zeros((240, 320), bool)
    m[rng.integers(0, 240, 30), rng.integers(0, 320, 30)] = True
    m[100:140, 5:60] = True  # near the border: the window is clipped there
    faces = [(30.0, 20.0, 70.0, 60.0)]
    full = post.subtract_boxes(post.feather(post.dilate(m, dilate_px), feather_px),
                               [(f, 0.3) for f in faces])
    got = post.finalize(m, dilate_px=dilate_px, feather_px=feather_px,
                        protect=[(f, 0.3) for f in faces])
    # the repaint region is exact; alpha values may differ in the last float bits (OpenCV's
    # distance transform itself varies by ~1e-5 with its thread count)
    assert np.array_equal(got > 0, full > 0)
    assert np.allclose(got, full, atol=1e-4)


@pytest.mark.parametrize("px", [1, 5, 8, 12, -3, -12])
def test_disc_dilation_equals_the_distance_transform(px):
    """Small dilations/erosions use a disc kernel; the set is the transform's exactly,
    at the image border too."""
    rng = np.random.default_rng(abs(px))
    m = np.zeros((90, 120), bool)
    m[rng.integers(0, 90, 40), rng.integers(0, 120, 40)] = True
    m[30:70, 0:50] = True  # touches the border
    m[0:20, 100:120] = True  # a corner
    if px > 0:
        ref = post._dist_outside(m) <= px
    else:
        ref = ~(post._dist_outside(~m) <= -px)
    got = post.dilate(m, px)
    assert got.dtype == bool and np.array_equal(got, ref)


def test_feather_values_are_the_linear_ramp():
    m = np.zeros((50, 70), bool)
    m[10:30, 20:40] = True
    d = post._dist_outside(m)
    ref = np.where(d > 6, 0.0, 1.0 - d / np.float32(7)).astype(np.float32)
    assert np.array_equal(post.feather(m, 6), ref)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_hole_filling_and_island_removal_equal_the_labelling(seed):
    """Holes by a flood from the border and islands cleared in their own boxes give the
    labelling's result (many specks and pinholes, shapes touching the border)."""
    import cv2

    rng = np.random.default_rng(seed)
    m = np.zeros((200, 260), bool)
    m[20:180, 30:200] = True
    m[0:60, 220:260] = True  # touches the border, with a notch open to it
    m[10:30, 230:240] = False
    m[rng.integers(0, 200, 400), rng.integers(0, 260, 400)] ^= True
    # the labelling reference
    n, labels, stats, _ = cv2.connectedComponentsWithStats((~m).astype(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill = np.ones(n, bool)
    fill[0] = False
    fill[border] = False
    assert np.array_equal(post.fill_holes(m), m | fill[labels])
    assert np.array_equal(post.fill_holes(m), post.fill_holes(m, max_hole_px=10**9))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= 30
    assert (~keep[1:]).sum() > 50  # many islands, one by one
    assert np.array_equal(post.remove_islands(m, 30), keep[labels])
