"""Star detection: completeness, centroid accuracy, rejections, CFA luminance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from astrostack.register import (
    background,
    bayer_green_mask,
    binned_to_native,
    detect_stars,
    luminance,
)
from astrostack.register.transform import apply_matrix

from .fields import render_stars

SHAPE = (320, 384)


def _field(n=60, seed=0, flux=(5e3, 1e5), sigma=1.3, noise=5.0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform([20, 20], [SHAPE[1] - 20, SHAPE[0] - 20], size=(4 * n, 2))
    d = cKDTree(xy).query(xy, k=2)[0][:, 1]
    xy = xy[d > 12][:n]  # isolated stars: blends are tested elsewhere
    f = rng.uniform(*flux, n)
    return xy, f, render_stars(SHAPE, xy, f, sigma=sigma, noise=noise, seed=seed + 1)


def _pair(found, truth, radius=1.5):
    d, j = cKDTree(truth).query(found, distance_upper_bound=radius)
    ok = np.isfinite(d)
    return ok, j[ok]


def test_detects_all_bright_stars_with_accurate_centroids():
    xy, _f, img = _field()
    stars = detect_stars(img)
    ok, j = _pair(stars.xy, xy)
    assert ok.all()  # no false detections
    assert len(stars) == len(xy)
    err = stars.xy[ok] - xy[j]
    rms = float(np.sqrt(np.mean(np.sum(err**2, axis=1))))
    assert rms < 0.04, f"centroid RMS {rms:.4f} px"
    assert np.all(np.diff(stars.flux) <= 0)  # brightest first
    # FWHM ~ 2.3548 * 1.3 = 3.06 px (pixel integration adds a little)
    assert np.median(stars.hfd) == pytest.approx(3.1, rel=0.1)
    assert np.median(stars.fwhm) == pytest.approx(3.1, rel=0.15)
    assert stars.background_level == pytest.approx(100.0, abs=1.0)
    assert stars.background_rms == pytest.approx(5.0, rel=0.1)


def test_max_stars_keeps_brightest():
    xy, f, img = _field()
    stars = detect_stars(img, max_stars=10)
    assert len(stars) == 10
    _ok, j = _pair(stars.xy, xy)
    assert set(j) <= set(np.argsort(-f)[:13])


def test_rejects_hot_pixels_saturated_edge_and_elongated():
    _xy, _f, img = _field(n=30, seed=4)
    img = img.copy()
    rng = np.random.default_rng(8)
    hot = rng.integers([30, 30], [SHAPE[1] - 30, SHAPE[0] - 30], size=(25, 2))
    img[hot[:, 1], hot[:, 0]] += 5000.0  # single hot pixels
    sat = render_stars(SHAPE, np.array([[200.3, 150.7]]), np.array([3e6]), noise=0.0,
                       background=0.0)  # fmt: skip
    img = np.minimum(img + sat, 60000.0)
    edge = render_stars(SHAPE, np.array([[3.0, 100.0]]), np.array([5e4]), noise=0, background=0)
    trail = render_stars(SHAPE, np.array([[100.0, 250.0]]), np.array([5e4]), noise=0,
                         background=0, trail=(14.0, 0.0))  # fmt: skip
    img = img + edge + trail
    stars = detect_stars(img, saturation=60000.0)
    for px, py in [(200.3, 150.7), (3.0, 100.0), (100.0, 250.0)]:
        assert np.min(np.hypot(stars.x - px, stars.y - py)) > 5
    d_hot = cKDTree(hot.astype(float)).query(stars.xy)[0]
    assert np.all(d_hot > 1.0), "a hot pixel was kept as a star"
    assert stars.n_rejected["too_sharp"] >= 20
    assert stars.n_rejected["saturated"] >= 1
    assert stars.n_rejected["elongated"] >= 1
    assert stars.n_rejected["edge"] >= 1
    # without the ellipticity cut the trail is kept and measured as elongated
    loose = detect_stars(img, saturation=60000.0, max_ellipticity=None)
    k = np.argmin(np.hypot(loose.x - 100.0, loose.y - 250.0))
    assert loose.ellipticity[k] > 0.6


def test_nan_pixels_and_blank_image():
    _xy, _f, img = _field(n=20, seed=2)
    img = img.copy()
    img[:, :40] = np.nan
    stars = detect_stars(img)
    assert len(stars) >= 15 and np.all(stars.x > 40)
    assert len(detect_stars(np.full(SHAPE, 7.0, dtype=np.float32))) == 0
    with pytest.raises(ValueError, match="2-D"):
        detect_stars(np.zeros((3, 10, 10), dtype=np.float32))


def test_background_follows_gradient():
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    img = (100 + 0.2 * xx + 0.1 * yy).astype(np.float32)
    bkg, _level, _rms = background(img)
    assert np.abs(bkg - img)[40:-40, 40:-40].max() < 1.0


@pytest.mark.parametrize("pattern", ["RGGB", "GRBG", "GBRG", "BGGR"])
def test_luminance_modes_and_coordinates(pattern):
    # stars on a CFA mosaic: detect on the binned and on the green image and map back
    xy = np.array([[101.3, 80.6], [250.2, 200.9], [60.7, 270.1], [300.5, 40.2]])
    mono = render_stars(SHAPE, xy, np.full(4, 6e4), sigma=2.0, noise=2.0)
    green = bayer_green_mask(SHAPE, pattern)
    assert green.mean() == 0.5 and green[:2, :2].sum() == 2
    mosaic = np.where(green, mono, 0.5 * mono).astype(np.float32)  # R, B dimmer
    binned = luminance(mosaic, pattern, mode="bin")
    assert binned.shape == (SHAPE[0] // 2, SHAPE[1] // 2)
    sb = detect_stars(binned, border=4)
    native = sb.scaled(2.0, 0.5)
    ok, j = _pair(native.xy, xy)
    assert ok.sum() == 4
    assert np.sqrt(np.mean(np.sum((native.xy[ok] - xy[j]) ** 2, axis=1))) < 0.1
    full = luminance(mosaic, pattern, mode="green")
    assert full.shape == SHAPE
    assert np.allclose(full[green], mosaic[green])
    sg = detect_stars(full)
    ok, j = _pair(sg.xy, xy)
    assert ok.sum() == 4
    assert np.sqrt(np.mean(np.sum((sg.xy[ok] - xy[j]) ** 2, axis=1))) < 0.1
    # a transform measured on binned images, converted to native pixels
    m_bin = np.array([[1.0, 0, 3.0], [0, 1.0, -2.0], [0, 0, 1]])
    m_nat = binned_to_native(m_bin)
    p_bin = np.array([[10.0, 20.0]])
    p_nat = p_bin * 2 + 0.5
    assert np.allclose(apply_matrix(m_nat, p_nat), apply_matrix(m_bin, p_bin) * 2 + 0.5)


def test_luminance_mono_and_colour():
    rgb = np.stack([np.full((4, 5), v, dtype=np.float32) for v in (1.0, 2.0, 6.0)])
    assert np.allclose(luminance(rgb), 3.0)
    mono = np.arange(20, dtype=np.float64).reshape(4, 5)
    out = luminance(mono)
    assert out.dtype == np.float32 and np.array_equal(out, mono)
    with pytest.raises(ValueError, match="Bayer"):
        bayer_green_mask((4, 4), "RGBX")


def test_binned_detection_measures_at_full_resolution():
    xy, _f, img = _field(n=50, seed=6, sigma=1.5)
    img = img.copy()
    hot = np.array([[50, 60], [200, 100], [301, 250]])
    img[hot[:, 1], hot[:, 0]] += 8000.0
    full = detect_stars(img, bin2=False)
    binned = detect_stars(img, bin2=True)
    ok, j = _pair(binned.xy, xy)
    assert ok.all() and ok.sum() >= len(xy) - 2
    err = binned.xy - xy[j]
    assert np.sqrt(np.mean(np.sum(err**2, axis=1))) < 0.04
    assert np.all(cKDTree(hot.astype(float)).query(binned.xy)[0] > 1.0)
    # sizes, fluxes and noise agree with the full-resolution detection
    ok2, j2 = _pair(binned.xy, full.xy, radius=0.2)
    assert ok2.sum() >= len(binned) - 2
    np.testing.assert_allclose(np.median(binned.hfd[ok2] / full.hfd[j2]), 1.0, atol=0.02)
    np.testing.assert_allclose(binned.hfd[ok2], full.hfd[j2], rtol=0.15)
    np.testing.assert_allclose(binned.flux[ok2], full.flux[j2], rtol=0.1)
    assert binned.background_rms == pytest.approx(full.background_rms, rel=0.15)


def test_close_pairs_are_not_doubled():
    # pairs 4-5 px apart: deblended into two stars, never two entries on one star
    base = np.array([[60.0, 60.0], [150.0, 90.0], [250.0, 200.0], [320.0, 260.0]])
    xy = np.vstack([base, base + np.array([4.5, 0.8])])
    img = render_stars(SHAPE, xy, np.full(8, 4e4), sigma=1.2, noise=3.0)
    stars = detect_stars(img)
    d = cKDTree(stars.xy).query(stars.xy, k=2)[0][:, 1]
    assert np.all(d > 1.0)
    ok, j = _pair(stars.xy, xy, radius=1.0)
    assert ok.all() and len(set(j)) == len(j) >= 6
