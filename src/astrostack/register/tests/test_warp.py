"""Warping: accuracy against analytic images, footprint, clamping, files."""

from __future__ import annotations

import numpy as np
import pytest

from astrostack.register import coverage, warp, warp_to_file
from astrostack.register.shear import MAX_SHEAR, _columns, separable_plan
from astrostack.register.warp import _LUT_BITS, _lut

from .fields import render_stars


def _smooth(x, y):
    return 100.0 + 20.0 * np.sin(x / 6.0) * np.cos(y / 8.0) + 0.05 * x


def _rot(angle_deg, shift):
    a = np.radians(angle_deg)
    return np.array(
        [[np.cos(a), -np.sin(a), shift[0]], [np.sin(a), np.cos(a), shift[1]], [0.0, 0.0, 1.0]]
    )


@pytest.mark.parametrize(
    ("method", "tol", "mean_tol"),
    # Lanczos-3 has ~0.1 % passband ripple; Keys cubic is exact to 2nd order; the
    # clamp costs a little at extrema.  Amplitude of the test pattern: 20.
    [("lanczos3", 0.08, 0.03), ("bicubic", 0.08, 0.002), ("bilinear", 0.12, 0.04)],
)
def test_warp_matches_analytic_image(method, tol, mean_tol):
    yy, xx = np.mgrid[0:160, 0:200].astype(np.float64)
    src = _smooth(xx, yy).astype(np.float32)
    m = _rot(7.0, (4.3, -3.6))  # frame -> reference
    out = warp(src, m, src.shape, method=method)
    inv = np.linalg.inv(m)
    sx = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]
    sy = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
    truth = _smooth(sx, sy)
    inside = (sx > 4) & (sx < 195) & (sy > 4) & (sy < 155)
    err = np.abs(out - truth)[inside]
    assert np.all(np.isfinite(out[inside]))
    assert err.max() < tol, f"{method}: max error {err.max():.4f}"
    assert err.mean() < mean_tol, f"{method}: mean error {err.mean():.4f}"
    # NaN exactly outside the source pixel area
    outside = (sx < -0.6) | (sx > 199.6) | (sy < -0.6) | (sy > 159.6)
    assert np.all(np.isnan(out[outside]))
    footprint = (sx >= -0.5) & (sx <= 199.5) & (sy >= -0.5) & (sy <= 159.5)
    assert np.mean(coverage(out) != footprint) < 1e-3


def test_identity_and_integer_shift_are_exact():
    src = np.random.default_rng(0).normal(10, 3, (50, 60)).astype(np.float32)
    assert np.array_equal(warp(src, np.eye(3), src.shape), src)
    out = warp(src, _rot(0, (5, -3)), src.shape)
    assert np.array_equal(out[0:47, 5:60], src[3:50, 0:55])
    assert np.isnan(out[:, :5]).all() and np.isnan(out[47:]).all()


def test_star_flux_and_centroid_preserved_and_no_ringing():
    xy = np.array([[60.0, 50.0]])
    src = render_stars((100, 120), xy, np.array([2e5]), sigma=1.0, noise=0.0, background=10.0)
    m = _rot(33.0, (3.37, -2.81))
    for clamp, expect_ring in ((True, False), (False, True)):
        out = warp(src, m, src.shape, method="lanczos3", clamp=clamp)
        star = np.nan_to_num(out - 10.0)
        yy, xx = np.mgrid[0:100, 0:120]
        cx, cy = (star * xx).sum() / star.sum(), (star * yy).sum() / star.sum()
        tx, ty = m[:2, :2] @ xy[0] + m[:2, 2]
        assert np.hypot(cx - tx, cy - ty) < 0.02
        assert star.sum() == pytest.approx(2e5, rel=0.01)
        undershoot = 10.0 - np.nanmin(out)
        if expect_ring:
            assert undershoot > 10.0  # unclamped Lanczos rings below the sky (~32 ADU)
        else:
            assert undershoot < 1e-3  # clamping removes the dark ring


def test_colour_and_nan_source():
    yy, xx = np.mgrid[0:80, 0:90].astype(np.float64)
    plane = _smooth(xx, yy).astype(np.float32)
    rgb = np.stack([plane, 2 * plane, 3 * plane])
    m = _rot(-4.0, (2.5, 1.5))
    out = warp(rgb, m, (80, 90))
    assert out.shape == (3, 80, 90) and out.dtype == np.float32
    mono = warp(plane, m, (80, 90))
    np.testing.assert_allclose(out[2], 3 * mono, rtol=1e-5, equal_nan=True)
    holed = plane.copy()
    holed[40, 45] = np.nan  # a NaN source pixel is skipped, not spread
    o2 = warp(holed, m, (80, 90))
    assert np.isfinite(o2[20:60, 20:70]).all()
    diff = np.abs(o2 - mono)[20:60, 20:70]
    assert np.nanmax(diff) < 3.0
    assert np.count_nonzero(diff > 1e-3) <= 49  # only outputs whose 6x6 taps include the hole


def test_warp_to_file_roundtrip(tmp_path):
    src = np.random.default_rng(1).normal(5, 1, (2, 40, 50)).astype(np.float32)
    m = _rot(3.0, (1.5, -2.5))
    path = warp_to_file(src, m, (44, 48), tmp_path / "frame_0001.npy", method="bicubic")
    assert path.name == "frame_0001.npy"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame_0001.npy"]  # no temp left
    loaded = np.load(path, mmap_mode="r")
    assert loaded.dtype == np.dtype("<f4") and loaded.shape == (2, 44, 48)
    np.testing.assert_array_equal(loaded, warp(src, m, (44, 48), method="bicubic"))


def test_bad_arguments():
    img = np.zeros((10, 10), dtype=np.float32)
    with pytest.raises(ValueError, match="interpolation"):
        warp(img, np.eye(3), (10, 10), method="nearest")
    with pytest.raises(ValueError, match="invertible"):
        warp(img, np.zeros((3, 3)), (10, 10))


@pytest.mark.parametrize(
    ("angle", "scale", "mirror"),
    # a night's drift, a larger rotation near the shear limit, a meridian flip, a focal
    # length change, a mirrored frame
    [(0.3, 1.0, False), (2.0, 1.0, False), (180.4, 1.0, False), (0.7, 1.03, False),
     (-0.5, 1.0, True)],
)  # fmt: skip
def test_two_pass_warp_is_as_accurate_as_the_2d_kernel(angle, scale, mirror):
    """The separable path against the truth: no worse than the 2-D Lanczos-3 kernel.

    Measured (300 stars, sigma 1.3 px): both kernels' errors against the analytic
    field are ~3.7 ADU RMS; the two results differ by 0.06-0.12 ADU RMS.
    """
    rng = np.random.default_rng(11)
    shape = (260, 300)
    xy = np.column_stack([rng.uniform(15, 285, 200), rng.uniform(15, 245, 200)])
    flux = 10 ** rng.uniform(3, 5, 200)
    src = render_stars(shape, xy, flux, sigma=1.3, noise=0.0, background=100.0)
    a = np.radians(angle)
    lin = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    if mirror:
        lin = lin @ np.diag([-1.0, 1.0])
    centre = np.array([150.0, 130.0])
    m = np.eye(3)
    m[:2, :2] = lin
    m[:2, 2] = centre - lin @ centre + (2.37, -1.81)
    assert separable_plan(np.linalg.inv(m), shape, shape) is not None
    two = warp(src, m, shape, separable=True)
    one = warp(src, m, shape, separable=False)
    np.testing.assert_array_equal(np.isnan(two), np.isnan(one))  # the same footprint
    truth = render_stars(shape, xy @ m[:2, :2].T + m[:2, 2], flux, sigma=1.3 * scale,
                         noise=0.0, background=100.0)  # fmt: skip
    inner = np.isfinite(one)
    inner[:10] = inner[-10:] = False
    inner[:, :10] = inner[:, -10:] = False
    err_two = np.sqrt(np.mean((two - truth)[inner] ** 2))
    err_one = np.sqrt(np.mean((one - truth)[inner] ** 2))
    assert err_two < 1.02 * err_one
    assert np.sqrt(np.mean((two - one)[inner] ** 2)) < 0.05 * err_one


def test_two_pass_plan_only_for_small_shears_and_affine_maps():
    small = _rot(1.0, (3.0, 2.0))
    assert separable_plan(np.linalg.inv(small), (50, 60), (50, 60)) is not None
    slope = np.tan(np.radians(1.0))
    assert slope < MAX_SHEAR
    for bad in (_rot(20.0, (3.0, 2.0)), _rot(90.0, (60.0, 0.0))):
        assert separable_plan(np.linalg.inv(bad), (50, 60), (50, 60)) is None
    proj = np.array([[1.0, 0, 2], [0, 1.0, 1], [1e-4, 0, 1]])
    assert separable_plan(np.linalg.inv(proj), (50, 60), (50, 60)) is None


def test_two_pass_leaves_a_nan_plane_to_the_2d_kernel():
    yy, xx = np.mgrid[0:80, 0:90].astype(np.float64)
    plane = _smooth(xx, yy).astype(np.float32)
    m = _rot(1.0, (2.5, 10.0))  # small shear: the two passes take it
    clean = warp(plane, m, (80, 90))
    assert not np.array_equal(clean, warp(plane, m, (80, 90), separable=False), equal_nan=True)
    holed = plane.copy()
    holed[40, 45] = np.nan  # read by the first pass: the 2-D kernel warps the plane
    np.testing.assert_array_equal(
        warp(holed, m, (80, 90)), warp(holed, m, (80, 90), separable=False)
    )
    unread = plane.copy()
    unread[79, 45] = np.nan  # 10 rows below every output's taps: the two passes keep it
    np.testing.assert_array_equal(warp(unread, m, (80, 90)), clean)


@pytest.mark.parametrize(
    ("angle", "scale", "shift"),
    # drift with a scale change (the LUT rows move down the columns), the other shear
    # sign, a meridian flip, no shear (P = 0); shifts put rows past the edges
    [(0.5, 1.0004, (3.3, -7.6)), (-2.0, 0.9993, (-4.1, 6.2)), (180.3, 1.0, (152.3, 123.6)),
     (0.0, 1.0, (0.4, 2.7))],
)  # fmt: skip
@pytest.mark.parametrize("nblocks", [1, 3])
def test_first_pass_matches_a_direct_evaluation(angle, scale, shift, nblocks):
    """The first pass, weights carried from row to row, against every tap evaluated
    afresh in float32, in the same order: the same bits, edges included."""
    rng = np.random.default_rng(5)
    shape = (120, 150)
    src = rng.normal(100.0, 10.0, shape).astype(np.float32)
    m = _rot(angle, shift)
    m[:2, :2] *= scale
    col_start, col_step, _, _ = separable_plan(np.linalg.inv(m), shape, shape)
    tmp = np.empty(shape, dtype=np.float32)
    lut = _lut("lanczos3")
    assert not _columns(src, col_start, col_step, lut, _LUT_BITS, tmp, nblocks)
    yf = col_start[:, None] + np.arange(shape[1]) * col_step
    iy = ((yf & 0xFFFFFFFF) + (1 << (31 - _LUT_BITS))) >> (32 - _LUT_BITS)
    cols = np.arange(shape[1])
    direct = np.zeros(shape, dtype=np.float32)
    for j in range(6):
        rows = np.clip((yf >> 32) - 2 + j, 0, shape[0] - 1)
        direct = direct + lut[iy, j] * src[rows, cols]
    edge = ((yf >> 32) < 2) | ((yf >> 32) > shape[0] - 4)
    assert edge.any() and not edge.all()
    np.testing.assert_array_equal(tmp, direct)
    src[60, 70] = np.nan  # read by the first pass
    assert _columns(src, col_start, col_step, lut, _LUT_BITS, tmp, nblocks)
