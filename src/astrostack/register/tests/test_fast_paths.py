"""The large-frame paths: binned detection on stamps, pixel-stack growth, fixed-point warp."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import sep
from scipy.spatial import cKDTree

from astrostack.register import detect_star_lists, detect_stars, warp
from astrostack.register.stamps import (
    Residual,
    bin2_mean,
    binned_detection_image,
    subtract_bilinear,
)
from astrostack.register.stars import _extract
from astrostack.simulate import SessionConfig, simulate_light

from .fields import render_stars

# ``astrostack.register.warp`` is also the name of the function re-exported there
warp_module = sys.modules["astrostack.register.warp"]


def _field(shape, n, seed, sigma=1.5, flux=(3e3, 2e5), margin=3.0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform([margin, margin], [shape[1] - margin, shape[0] - margin], size=(n, 2))
    f = rng.uniform(*flux, n)
    return xy, f, render_stars(shape, xy, f, sigma=sigma, noise=6.0, seed=seed + 1)


def test_bin2_mean_and_non_finite_count():
    rng = np.random.default_rng(0)
    img = rng.normal(100, 5, (41, 57)).astype(np.float32)  # odd: last row and column unused
    out = np.empty((20, 28), dtype=np.float32)
    assert bin2_mean(img, out) == 0
    ref = img[:40, :56].reshape(20, 2, 28, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    for y, x in ((3, 4), (40, 10), (7, 56)):  # inside, last row, last column
        bad = img.copy()
        bad[y, x] = np.nan
        assert bin2_mean(bad, out) == 1
    bad = img.copy()
    bad[5, 5] = np.inf
    assert bin2_mean(bad, out) == 1


def test_stamp_measurements_equal_full_residual_image():
    # stars everywhere, many near the edges: stamps crossing the edge are measured
    # on their own, clipped like the image
    shape = (300, 420)
    xy, _f, img = _field(shape, 160, seed=3)
    sub_d, mask, resid, _level, _rms = binned_detection_image(img, 32)
    assert mask is None
    assert sub_d.shape == (150, 210)
    full = np.empty_like(img)
    subtract_bilinear(img, resid.bmap, *resid.mapping, full)
    whole = Residual(sub=full)
    x, y = xy[:, 0] + 0.3, xy[:, 1] - 0.2
    near = np.minimum(np.minimum(x, shape[1] - 1 - x), np.minimum(y, shape[0] - 1 - y)) < 12
    assert near.sum() >= 10
    rmax = np.random.default_rng(1).uniform(3.0, 15.0, x.size)
    r_stamps = resid.flux_radius(x, y, rmax, 0.5)
    r_full = whole.flux_radius(x, y, rmax, 0.5)
    np.testing.assert_allclose(r_stamps, r_full, rtol=1e-5, atol=1e-5)
    sig = np.full(x.size, 1.5)
    reach = np.full(x.size, 6 * 1.5 + 3)
    xs, ys, fs = resid.winpos(x, y, sig, reach)
    xf, yf, ff = whole.winpos(x, y, sig, reach)
    np.testing.assert_allclose(xs, xf, atol=1e-4)
    np.testing.assert_allclose(ys, yf, atol=1e-4)
    np.testing.assert_array_equal(fs, ff)  # truncation flags at the image edge too
    ij = np.array([[5, 7], [150, 200], [299, 419]])
    np.testing.assert_allclose(resid.at(ij[:, 0], ij[:, 1]), full[ij[:, 0], ij[:, 1]], atol=1e-3)


def test_binned_detection_agrees_with_full_resolution_and_nan_fallback():
    shape = (480, 640)
    xy, _f, img = _field(shape, 120, seed=5, margin=15.0)
    d = cKDTree(xy).query(xy, k=2)[0][:, 1]
    full = detect_stars(img, bin2=False, max_stars=300)
    fast = detect_stars(img, bin2=True, max_stars=300)
    # isolated stars (pairs closer than ~12 px blend on the 2x2 mean and are dropped
    # as extended, as they always were) are found by both
    iso = xy[d > 14]
    for table in (full, fast):
        dd, _ = cKDTree(table.xy).query(iso)
        assert np.mean(dd < 0.2) > 0.97
    dd, j = cKDTree(full.xy).query(fast.xy)
    ok = dd < 0.2
    assert ok.sum() >= 0.95 * len(fast)
    assert np.median(dd[ok]) < 0.01
    np.testing.assert_allclose(np.median(fast.hfd[ok] / full.hfd[j[ok]]), 1.0, atol=0.02)
    assert fast.background_rms == pytest.approx(full.background_rms, rel=0.1)
    assert fast.background_level == pytest.approx(full.background_level, abs=0.5)
    # a NaN hole takes the masked path: same stars away from it
    holed = img.copy()
    holed[200:210, 300:310] = np.nan
    masked = detect_stars(holed, bin2=True, max_stars=300)
    far = np.hypot(fast.x - 305, fast.y - 205) > 20
    dd, _ = cKDTree(masked.xy).query(fast.xy[far])
    assert np.mean(dd < 0.01) > 0.97
    assert np.all(np.hypot(masked.x - 305, masked.y - 205) > 4)  # nothing found in the hole
    assert masked.background_rms == pytest.approx(fast.background_rms, rel=0.02)
    # a star half covered by NaN keeps its measured half, without NaN in its figures
    cut = img.copy()
    sx, sy = (round(v) for v in fast.xy[0])
    cut[sy - 20 : sy + 21, sx + 1 : sx + 21] = np.nan
    half = detect_stars(cut, bin2=True, max_stars=300)
    assert np.all(np.isfinite(half.xy)) and np.all(np.isfinite(half.hfd))
    # all NaN: nothing, no error
    blank = detect_stars(np.full(shape, np.nan, dtype=np.float32), bin2=True)
    assert len(blank) == 0


def test_star_lists_share_one_extraction_on_the_binned_path():
    _xy, _f, img = _field((400, 520), 150, seed=8)
    lists = detect_star_lists(img, [(40, 0.5), (200, None)], bin2=True)
    single = detect_stars(img, bin2=True, max_stars=40)
    np.testing.assert_array_equal(lists[0].x, single.x)
    np.testing.assert_array_equal(lists[0].hfd, single.hfd)
    assert len(lists[1]) > len(lists[0])


def test_extraction_grows_the_pixel_stack_before_raising_the_threshold():
    # a bright nebula of ~500 000 pixels above threshold overflows sep's default
    # pixel stack (300 000): the stack grows and the threshold stays
    shape = (1500, 2000)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    blob = 400.0 * np.exp(-((xx - 1000) ** 2 + (yy - 750) ** 2) / (2 * 260.0**2))
    rng = np.random.default_rng(2)
    img = (blob + rng.normal(0, 5, shape)).astype(np.float32)
    sep.set_extract_pixstack(300_000)
    with pytest.raises(Exception, match="pixel buffer full"):
        sep.extract(img, 5.0, err=5.0, minarea=5, deblend_cont=0.005)
    objs = _extract(img, 5.0, 5.0, None, 5)
    assert objs is not None and len(objs) >= 1
    big = objs[np.argmax(objs["npix"])]
    assert big["npix"] > 300_000  # found whole at 5 sigma, not at a raised threshold
    assert abs(big["x"] - 1000) < 2 and abs(big["y"] - 750) < 2


@pytest.mark.parametrize("method", ["lanczos3", "bicubic", "bilinear"])
def test_fixed_point_affine_warp_matches_floating_point_kernel(method):
    rng = np.random.default_rng(4)
    xy = rng.uniform(5, 195, (40, 2))
    src = render_stars((180, 210), xy, rng.uniform(1e3, 5e4, 40), sigma=1.2, noise=2.0)
    a = np.radians(2.3)
    m = np.array([[np.cos(a), -np.sin(a), 3.7], [np.sin(a), np.cos(a), -2.2], [0, 0, 1.0]])
    fixed = warp(src, m, (190, 200), method=method, separable=False)
    inv = np.linalg.inv(m)
    assert warp_module._fixed_point_plan(inv, (190, 200)) is not None
    flt = np.empty_like(fixed)
    lut = warp_module._lut(method)
    warp_module._warp_projective(src, inv, lut, warp_module._LUT_RES, method != "bilinear",
                                 False, flt)  # fmt: skip
    np.testing.assert_array_equal(np.isnan(fixed), np.isnan(flt))
    ok = np.isfinite(fixed)
    # only a LUT step (1/1024 px) can differ, where the two roundings disagree
    assert np.mean(fixed[ok] != flt[ok]) < 0.01
    assert np.max(np.abs(fixed[ok] - flt[ok])) < np.max(src) / 1024  # one LUT step of a star
    assert np.mean(np.abs(fixed[ok] - flt[ok])) < 1e-3


def test_warp_far_outside_and_projective_take_the_floating_point_kernel():
    src = np.random.default_rng(5).normal(10, 1, (30, 40)).astype(np.float32)
    far = np.array([[1.0, 0, 3e9], [0, 1.0, 0], [0, 0, 1]])
    assert warp_module._fixed_point_plan(np.linalg.inv(far), (30, 40)) is None
    assert np.isnan(warp(src, far, (30, 40))).all()
    proj = np.array([[1.0, 0, 2], [0, 1.0, 1], [1e-4, 0, 1]])
    out = warp(src, proj, (30, 40))
    assert np.isfinite(out[5:25, 5:30]).all()


def test_lanczos_pair_equals_two_single_samples_to_the_bit():
    rng = np.random.default_rng(6)
    src = rng.normal(100, 30, (20, 24)).astype(np.float32)
    lut = warp_module._lut("lanczos3")
    for clamp in (True, False):
        for _ in range(50):
            bx, by = int(rng.integers(0, 24 - 7)), int(rng.integers(0, 20 - 6))
            ix, iy, ix2, iy2 = (int(v) for v in rng.integers(0, lut.shape[0], 4))
            a, b = warp_module._lanczos_pair(src, bx, by, lut, ix, iy, ix2, iy2, clamp)
            assert a == warp_module._sample_interior(src, bx, by, ix, iy, lut, clamp)
            assert b == warp_module._sample_interior(src, bx + 1, by, ix2, iy2, lut, clamp)


def test_nebula_knots_do_not_crowd_out_the_stars():
    """A bright nebula's knots (large isophotal flux, low peak) must not displace the stars.

    On the simulator's 2048 x 2048 light the knots outnumber the stars among the brightest
    detections.  Ranked by total flux, the knots filled the measured candidates, the median
    HFD became theirs (22.5 px for 3.5 px stars with ``max_stars=60`` on the binned path,
    5.3 px at full resolution; 24 MP frames gave 25 px) and the size cut (3x the median)
    kept them.  Ranked by peak, the stars come first.
    """
    cfg = SessionConfig(shape=(2048, 2048), n_stars=1048, seed=7)
    raw, _ = simulate_light(cfg, 0)
    img = raw.astype(np.float32) - np.float32(cfg.bias_level)
    small, _ = simulate_light(SessionConfig(shape=(512, 512), n_stars=800, seed=7), 0)
    (ref,) = detect_star_lists(small.astype(np.float32) - np.float32(cfg.bias_level), [(60, None)])
    expected = float(np.median(ref.hfd))
    assert 2.5 < expected < 5.0
    for bin2 in (False, True):
        lists = detect_star_lists(img, [(60, None), (200, None)], bin2=bin2)
        for stars in lists:
            assert len(stars) >= 50
            got = float(np.median(stars.hfd))
            assert abs(got / expected - 1) < 0.1, (bin2, len(stars), got, expected)


def test_frame_sky_of_a_large_frame_matches_the_full_resolution_mesh():
    """Frames over 16 MP get their sky from the 2x2 mean: same map within the noise."""
    from astrostack.register.quality import frame_sky
    from astrostack.register.stars import background

    ny, nx = 4000, 4100  # 16.4 MP
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:ny, :nx].astype(np.float32)
    sky = 500 + 0.01 * xx + 0.02 * yy + 30 * np.sin(xx / 700.0)
    img = (sky + rng.normal(0, 20, (ny, nx))).astype(np.float32)
    img[1000:1003, 2000:2003] = np.nan  # no data: masked, not zero
    bkg, level, rms, binned = frame_sky(img, large=16_000_000)
    assert binned is not None  # handed on to the detection
    ref, ref_level, ref_rms = background(img)
    inner = (slice(200, ny - 200), slice(200, nx - 200))
    assert np.max(np.abs(bkg[inner] - sky[inner])) < 3.0  # 0.15 sigma of the pixel noise
    assert np.max(np.abs(bkg[inner] - ref[inner])) < 3.0
    assert abs(level - ref_level) < 1.0
    assert abs(rms / 20.0 - 1) < 0.05 and abs(ref_rms / 20.0 - 1) < 0.05
