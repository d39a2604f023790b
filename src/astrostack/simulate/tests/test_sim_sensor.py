"""The camera: flat field, bias pattern, read noise, dark current, hot pixels, saturation."""

from __future__ import annotations

import numpy as np
import pytest

from astrostack.simulate import (
    ADU_MAX,
    SessionConfig,
    cfa_channels,
    cosmic_rays,
    digitise,
    make_flat_field,
    make_sensor,
    render_trail,
    simulate_bias,
    simulate_dark,
)


@pytest.mark.parametrize("vignetting", [0.2, 0.35])
def test_flat_mean_one_and_vignetting_depth(vignetting):
    cfg = SessionConfig.small(vignetting=vignetting, n_dust=0)
    flat, vig, dust = make_flat_field(cfg)
    assert dust == []
    assert flat.mean() == pytest.approx(1.0, abs=1e-6)
    h, w = cfg.shape
    centre = flat[h // 2 - 1 : h // 2 + 1, w // 2 - 1 : w // 2 + 1].mean()
    corners = np.array([flat[0, 0], flat[0, -1], flat[-1, 0], flat[-1, -1]])
    np.testing.assert_allclose(corners / centre, 1.0 - vignetting, atol=2e-3)
    np.testing.assert_allclose(vig[[0, 0, -1, -1], [0, -1, 0, -1]], 1.0 - vignetting, atol=1e-6)


def test_dust_donut_depth_and_shape():
    cfg = SessionConfig.small(n_dust=1, dust_depth=(0.05, 0.05), vignetting=0.3)
    flat, vig, dust = make_flat_field(cfg)
    assert flat.mean() == pytest.approx(1.0, abs=1e-6)
    shadow = flat / vig
    shadow /= np.median(shadow)  # 1 away from the donut
    d = dust[0]
    yy, xx = np.mgrid[0 : cfg.shape[0], 0 : cfg.shape[1]]
    r = np.hypot(xx - d["x"], yy - d["y"])
    ring = shadow[(r > 0.6 * d["radius"]) & (r < 0.85 * d["radius"])]
    centre = shadow[r < 0.2 * d["radius"]]
    outside = shadow[r > 1.5 * d["radius"]]
    assert ring.mean() == pytest.approx(1 - 0.05, abs=0.005)  # full depth on the ring
    assert centre.mean() == pytest.approx(1 - 0.025, abs=0.005)  # half depth in the hole
    assert np.abs(outside - 1).max() < 0.003


def test_bias_columns_and_read_noise():
    cfg = SessionConfig.small(read_noise=3.0, gain=1.5, column_pattern=3.0)
    sensor = make_sensor(cfg)
    b1, _ = simulate_bias(cfg, 0, sensor=sensor)
    b2, _ = simulate_bias(cfg, 1, sensor=sensor)
    diff = b1.astype(np.float64) - b2
    rn_adu = diff.std() / np.sqrt(2)
    # quantisation adds 1/12 ADU^2 per frame
    rn_e = np.sqrt(rn_adu**2 - 1 / 12) * cfg.gain
    assert rn_e == pytest.approx(3.0, rel=0.03)
    cols = 0.5 * (b1.mean(axis=0) + b2.mean(axis=0)) - cfg.bias_level
    assert np.corrcoef(cols, sensor.column_offsets)[0, 1] > 0.99
    assert sensor.column_offsets.std() == pytest.approx(3.0, rel=0.15)
    assert b1.mean() == pytest.approx(cfg.bias_level, abs=1.0)


def test_dark_current_doubles_and_glow_in_corner():
    cfg = SessionConfig.small(amp_glow=2.0, dark_doubling=6.0)
    s = make_sensor(cfg)
    warm = s.dark_rate(cfg, 6.0) - s.amp_glow
    cold = s.dark_rate(cfg, 0.0) - s.amp_glow
    np.testing.assert_allclose(warm, 2 * cold, rtol=1e-12)
    glow = s.amp_glow
    assert glow[0, -1] == pytest.approx(2.4, rel=1e-6)  # top-right: core + 0.2 halo
    assert glow[0, -1] > 50 * max(glow[0, 0], glow[-1, 0], glow[-1, -1])


def test_hot_pixels_heavy_tail_and_where_the_map_says():
    cfg = SessionConfig.small(hot_pixel_density=3000, n_darks=5, exposure=120.0)
    s = make_sensor(cfg)
    n_hot = int(s.hot_pixels.sum())
    expected = 3000 * 256 * 256 / 1e6
    assert abs(n_hot - expected) < 4 * np.sqrt(expected)
    factor = cfg.thermal_factor(cfg.dark_temperature_c)
    rates = s.thermal_rate[s.hot_pixels] * factor
    assert rates.min() >= cfg.hot_pixel_rate * factor
    # Heavy tail: Pareto index of the rates (maximum likelihood) is the configured one.
    index = rates.size / np.log(rates / (cfg.hot_pixel_rate * factor)).sum()
    assert index == pytest.approx(cfg.hot_pixel_index, abs=0.3)
    darks = np.stack([simulate_dark(cfg, i, sensor=s)[0] for i in range(5)]).astype(np.float64)
    master = np.median(darks, axis=0) - s.bias  # median of 5 removes cosmic rays
    t = cfg.dark_exposure_s
    noise = np.sqrt(cfg.read_noise**2 + s.dark_rate(cfg, cfg.dark_temperature_c) * t) / cfg.gain
    detected = master > 8 * noise
    assert detected.any()
    assert np.all(s.hot_pixels[detected])  # every strong outlier is a mapped hot pixel
    expected_adu = s.dark_rate(cfg, cfg.dark_temperature_c) * t / cfg.gain
    strong = s.hot_pixels & (expected_adu > 12 * noise) & (s.bias + expected_adu < 65000)
    assert strong.sum() >= 5
    assert np.all(detected[strong])  # and every clearly hot mapped pixel shows up
    measured = master[strong] / expected_adu[strong]
    np.testing.assert_allclose(measured, 1.0, rtol=0.1)


def test_digitise_saturates_and_clips():
    bias = np.full((4, 4), 600.0, dtype=np.float32)
    e = np.array([[0, 100, 1e6, 1e9]] * 4, dtype=np.float64)
    e[3, 0] = -1e5
    out = digitise(e, bias, 0.8)
    assert out.dtype == np.uint16
    assert out[0, 2] == ADU_MAX and out[0, 3] == ADU_MAX
    assert out[0, 1] == 600 + 125
    assert out[3, 0] == 0


def _digitise_reference(e, bias, gain, read_noise, rng):
    """The plain numpy formula the compiled digitiser must reproduce bit for bit."""
    signal = np.asarray(e, dtype=np.float64)
    if read_noise > 0:
        signal = signal + rng.normal(0.0, read_noise, signal.shape)
    return np.clip(np.rint(bias + signal / gain), 0, ADU_MAX).astype(np.uint16)


def test_digitise_counts_and_hits_match_the_numpy_formula():
    rng = np.random.default_rng(4)
    shape = (60, 70)
    bias = (600 + rng.normal(0, 3, shape)).astype(np.float32)
    counts = rng.poisson(rng.uniform(0, 4e4, shape))
    hits = cosmic_rays(rng, shape, 40.0)
    hits = np.concatenate([hits, hits[:3]])  # pixels hit twice: deposits add up in order
    electrons = counts.astype(np.float64)
    np.add.at(electrons, (hits[:, 1].astype(np.intp), hits[:, 0].astype(np.intp)), hits[:, 2])
    ref = _digitise_reference(electrons, bias, 0.8, 3.5, np.random.default_rng(9))
    got = digitise(counts, bias, 0.8, 3.5, np.random.default_rng(9), hits=hits)
    np.testing.assert_array_equal(got, ref)
    assert (got != _digitise_reference(counts, bias, 0.8, 3.5, np.random.default_rng(9))).any()
    # float electrons without noise, and a scalar bias broadcast to the frame
    np.testing.assert_array_equal(
        digitise(electrons, 600.0, 1.3), _digitise_reference(electrons, 600.0, 1.3, 0.0, None)
    )


def test_cosmic_rays_are_small_sharp_tracks():
    rng = np.random.default_rng(0)
    hits = cosmic_rays(rng, (256, 256), 200.0)
    assert 150 < len(hits) / 1.5 < 350  # ~1.8 pixels per hit on average
    assert hits[:, 2].min() >= 300
    assert np.all((hits[:, 0] >= 0) & (hits[:, 0] <= 255) & (hits[:, 1] >= 0) & (hits[:, 1] <= 255))
    np.testing.assert_array_equal(hits[:, :2], np.rint(hits[:, :2]))


def test_trail_profile_integral():
    img = np.zeros((128, 128))
    render_trail(img, (-0.5, 20.0), (127.5, 100.0), 5000.0, 3.0)
    # Integrated perpendicular to the trail the deposit equals electrons per pixel of length.
    length = np.hypot(128.0, 80.0)
    assert img.sum() == pytest.approx(5000.0 * length, rel=0.02)
    # Along a column the cut is wider by 1/cos(angle).
    col = img[:, 64]
    cos = 128.0 / length
    assert col.sum() == pytest.approx(5000.0 / cos, rel=0.01)


def test_trail_equals_the_dense_formula_bit_for_bit():
    # Only pixels near the segment are evaluated; elsewhere the Gaussian is below the
    # rounding of any pixel, so the frame is identical to evaluating it everywhere.
    rng = np.random.default_rng(5)
    base = rng.uniform(50.0, 500.0, (90, 150))
    start, end, epp, fwhm = (-3.0, 10.0), (160.0, 71.5), 8000.0, 2.7
    got = render_trail(base.copy(), start, end, epp, fwhm)
    yy, xx = np.mgrid[0:90, 0:150].astype(np.float64)
    sigma = fwhm / 2.3548
    length = float(np.hypot(end[0] - start[0], end[1] - start[1]))
    ux, uy = (end[0] - start[0]) / length, (end[1] - start[1]) / length
    along = (xx - start[0]) * ux + (yy - start[1]) * uy
    across = -(xx - start[0]) * uy + (yy - start[1]) * ux
    beyond = np.maximum(np.maximum(-along, along - length), 0.0)
    d2 = across * across + beyond * beyond
    dense = base + epp / (np.sqrt(2 * np.pi) * sigma) * np.exp(-0.5 * d2 / sigma**2)
    np.testing.assert_array_equal(got, dense)
    assert (got != base).sum() > 3 * 150  # a band a few pixels wide across the frame


@pytest.mark.parametrize(
    ("pattern", "tile"),
    [("RGGB", [[0, 1], [1, 2]]), ("BGGR", [[2, 1], [1, 0]]), ("GRBG", [[1, 0], [2, 1]]),
     ("GBRG", [[1, 2], [0, 1]]), (None, [[0, 0], [0, 0]])],
)  # fmt: skip
def test_cfa_tiles(pattern, tile):
    np.testing.assert_array_equal(cfa_channels(pattern), tile)


def test_cfa_rejects_unknown_pattern():
    with pytest.raises(ValueError, match="Bayer"):
        cfa_channels("RGBG")
