"""The true sky: star statistics, PSF rendering, exact positions, surface kernel."""

from __future__ import annotations

import numpy as np
import pytest
import sep

from astrostack.simulate import (
    SessionConfig,
    make_scene,
    make_star_field,
    moffat_alpha,
    plan_lights,
    render_sky,
    render_stars,
)


def test_star_counts_and_power_law_slope():
    cfg = SessionConfig.small(n_stars=3000, star_flux=(10.0, 1e7), star_slope=2.0)
    stars = make_star_field(cfg)
    inside = stars.inside(cfg.shape).sum()
    assert abs(inside - 3000) < 4 * np.sqrt(3000)
    # Maximum-likelihood slope of dN/dF ~ F^-a above fmin (upper cut negligible at 1e7).
    a_hat = 1.0 + stars.flux.size / np.log(stars.flux / 10.0).sum()
    assert a_hat == pytest.approx(2.0, abs=0.05)
    assert stars.flux.min() >= 10.0 and stars.flux.max() <= 1e7
    np.testing.assert_allclose(stars.colour.mean(axis=1), 1.0, atol=1e-12)


def test_moffat_flux_and_fwhm():
    img = np.zeros((201, 201))
    fwhm, beta, flux = 8.0, 3.0, 1.0e5
    render_stars(img, [100.0], [100.0], [flux], fwhm, beta=beta, min_level=1e-6, max_radius=100)
    # Flux beyond r=100 px for a Moffat: (1 + r^2/alpha^2)^(1-beta).
    alpha = moffat_alpha(fwhm, beta)
    lost = (1 + (100 / alpha) ** 2) ** (1 - beta)
    assert img.sum() == pytest.approx(flux * (1 - lost), rel=2e-3)
    row = img[100]
    half = row[100] / 2
    right = np.interp(-half, -row[100:], np.arange(101))  # row decreases away from centre
    assert 2 * right == pytest.approx(fwhm, rel=0.02)


def test_elongated_psf_moments():
    img = np.zeros((121, 121))
    render_stars(img, [60.0], [60.0], [1e5], 3.0, elongation=3.0, angle=np.deg2rad(30))
    yy, xx = np.mgrid[0:121, 0:121] - 60.0
    r = np.hypot(xx, yy) < 25
    w = img * r
    cxx = (w * xx * xx).sum() / w.sum()
    cyy = (w * yy * yy).sum() / w.sum()
    cxy = (w * xx * yy).sum() / w.sum()
    evals, evecs = np.linalg.eigh([[cxx, cxy], [cxy, cyy]])
    assert np.sqrt(evals[1] / evals[0]) == pytest.approx(3.0, rel=0.1)
    major = evecs[:, 1]
    angle = np.rad2deg(np.arctan2(major[1], major[0])) % 180
    assert angle == pytest.approx(30.0, abs=1.0)


@pytest.mark.parametrize("mirrored", [0, 1])
def test_centroids_match_truth_transform(mirrored):
    cfg = SessionConfig.small(
        rotation_range=20.0, scale_range=(0.97, 1.03), mirrored=mirrored, meridian_flip=True,
        n_stars=40, star_flux=(3000.0, 3e4),
    )  # fmt: skip
    scene = make_scene(cfg)
    plan = plan_lights(cfg)[4]  # second half: flipped
    assert plan.flipped and plan.mirrored == bool(mirrored)
    img = render_sky(cfg, plan.matrix, plan.fwhm, scene=scene, extended=False, background=False)
    img = img.astype(np.float64)
    st = scene.stars
    fx, fy = plan.to_frame(st.x, st.y)
    h, w = cfg.shape
    # Bright stars well inside the frame with no neighbour brighter than 1e-3 of them nearby.
    chosen = []
    for i in np.argsort(st.flux)[::-1]:
        if not (20 < fx[i] < w - 21 and 20 < fy[i] < h - 21):
            continue
        d = np.hypot(fx - fx[i], fy - fy[i])
        near = (d < 15) & (d > 0)
        if np.all(st.flux[near] < 1e-3 * st.flux[i]):
            chosen.append(i)
    assert len(chosen) >= 5
    sig = plan.fwhm / 2.3548
    # Start 0.4 px away from the truth: the measured centroid must come back to it.
    x, y, flag = sep.winpos(img, fx[chosen] + 0.4, fy[chosen] - 0.3, np.full(len(chosen), sig))
    assert np.all(flag == 0)
    err = np.hypot(x - fx[chosen], y - fy[chosen])
    print(f"centroids: {len(chosen)} stars, max error {err.max():.4f} px")
    assert err.max() < 0.02, err


def test_surface_kernel_matches_reference_functions():
    cfg = SessionConfig.small(bayer="GRBG", rotation_range=10.0, scale_range=(1.02, 1.05),
                              mirrored=1, nebula=3.0, galaxy=5.0, gradient=0.5)  # fmt: skip
    scene = make_scene(cfg)
    m = next(p for p in plan_lights(cfg) if p.mirrored).matrix
    got = render_sky(cfg, m, 3.0, scene=scene, stars=False, exposure=1.0, mosaic=False)
    h, w = cfg.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    xr = m[0, 0] * xx + m[0, 1] * yy + m[0, 2]
    yr = m[1, 0] * xx + m[1, 1] * yy + m[1, 2]
    area = abs(np.linalg.det(m[:2, :2]))
    assert area > 1.03**2
    ref = scene.extended(xr.ravel(), yr.ravel()) + scene.background(xr.ravel(), yr.ravel())
    ref = ref.reshape(3, h, w) * area
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-5)
    assert scene.extended(xr.ravel(), yr.ravel()).max() > 1.0  # the nebula/galaxy are there


def test_truth_sky_is_light_zero_geometry():
    cfg = SessionConfig.small()
    scene = make_scene(cfg)
    plan = plan_lights(cfg)[0]
    np.testing.assert_array_equal(plan.matrix, np.eye(3))
    a = render_sky(cfg, None, plan.fwhm, scene=scene, exposure=1.0)
    b = render_sky(cfg, plan.matrix, plan.fwhm, scene=scene, exposure=2.0)
    np.testing.assert_allclose(b, 2 * a, rtol=1e-6)
    # Gradient amplitude: peak-to-peak of the background over the frame = config.gradient.
    bg = render_sky(cfg, scene=scene, exposure=1.0, stars=False, extended=False)
    assert np.ptp(bg) / cfg.sky_level == pytest.approx(cfg.gradient, rel=0.05)
    assert bg.mean() == pytest.approx(cfg.sky_level, rel=1e-5)  # gradient averages to 0


def test_render_sky_rejects_singular_transform():
    with pytest.raises(ValueError, match="invertible"):
        render_sky(SessionConfig.small(), np.zeros((3, 3)))
