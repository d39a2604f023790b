"""Calibration of lights: formula, dark scaling, dark optimisation, master combinations."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from astrostack.calibrate.calibration import (
    calibrate_array,
    calibrate_light,
    optimize_dark_scale,
)
from astrostack.calibrate.cosmetic import DefectMap
from astrostack.calibrate.masters import Master
from astrostack.io import Frame, FrameMeta

SHAPE = (128, 160)


def _scene(rng, shape=SHAPE):
    """Bias pattern, thermal pattern (with hot pixels and amp glow), flat and sky."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    bias = 500 + rng.normal(0, 3, shape[1]).astype(np.float32)[None, :] + 0 * yy
    thermal = 5.0 + 40.0 * np.exp(-((shape[1] - xx) + yy) / 20.0)  # glow in a corner
    thermal = thermal + rng.gamma(2.0, 1.0, shape).astype(np.float32)
    hot = rng.choice(thermal.size, 150, replace=False)
    thermal.flat[hot] += rng.uniform(50, 3000, hot.size).astype(np.float32)
    r2 = ((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2) / (shape[1] / 2) ** 2
    flat = (1.0 - 0.25 * r2).astype(np.float32)
    flat /= np.median(flat)
    sky = (300 + 0.5 * xx).astype(np.float32)
    return bias.astype(np.float32), thermal.astype(np.float32), flat, sky


def _frame(data, exposure, bayer=None, name="light_001.fits"):
    meta = FrameMeta(path=Path(name), kind="light", exposure=exposure, bayer=bayer)
    return Frame(np.asarray(data, dtype=np.float32), meta)


def test_calibrate_array_formula():
    rng = np.random.default_rng(0)
    light, b, d = (rng.normal(1000, 50, SHAPE).astype(np.float32) for _ in range(3))
    f = rng.uniform(0.5, 1.5, SHAPE).astype(np.float32)
    got = calibrate_array(light, b, d, f, k=0.7)
    want = (light - b - np.float32(0.7) * d) / f
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got.dtype == np.float32
    np.testing.assert_allclose(calibrate_array(light, bias=b), light - b)
    np.testing.assert_allclose(calibrate_array(light, flat=f), light / f, rtol=1e-6)
    rgb = np.stack([light, light, light])
    out = calibrate_array(rgb, np.stack([b] * 3), None, np.stack([f] * 3))
    np.testing.assert_allclose(out[2], (light - b) / f, rtol=1e-6)
    low = f.copy()
    low[3, 4] = 0.0
    assert np.isnan(calibrate_array(light, flat=low)[3, 4])
    with pytest.raises(ValueError, match="same camera"):
        calibrate_array(light, bias=b[:10])


def test_exposure_scaled_dark_recovers_sky():
    rng = np.random.default_rng(1)
    bias, thermal, flat, sky = _scene(rng)
    # darks of 300 s, light of 120 s: thermal per second is thermal / 300
    light = bias + thermal * (120 / 300) + sky * flat
    out = calibrate_light(
        _frame(light, 120.0),
        bias=Master(bias, "bias", 10),
        dark=Master(thermal, "dark", 10, exposure=300.0),
        flat=Master(flat, "flat", 10),
    )
    np.testing.assert_allclose(out.data, sky, rtol=1e-4, atol=0.05)
    assert out.meta.header["ASDARKK"] == pytest.approx(0.4)
    assert out.meta.header["ASCALIB"].startswith("offset,dark*0.4000,flat")
    assert out.meta.exposure == 120.0


def test_dark_including_bias_is_not_scaled(caplog):
    rng = np.random.default_rng(2)
    bias, thermal, _, sky = _scene(rng)
    dark = Master(bias + thermal, "dark", 10, exposure=60.0, includes_bias=True)
    light = bias + thermal + sky
    out = calibrate_light(_frame(light, 60.0), dark=dark)
    np.testing.assert_allclose(out.data, sky, atol=0.05)
    assert out.meta.header["ASDARKK"] == 1.0
    # a 120 s light: the offset cannot be separated, the dark goes in unscaled with a warning
    with caplog.at_level(logging.WARNING):
        out = calibrate_light(_frame(bias + 2 * thermal + sky, 120.0), dark=dark)
    assert "includes the offset" in caplog.text and "light_001.fits" in caplog.text
    assert out.meta.header["ASDARKK"] == 1.0
    # ... but with a master offset it is split into offset + thermal and scaled properly
    out = calibrate_light(_frame(bias + 2 * thermal + sky, 120.0), bias=bias, dark=dark)
    np.testing.assert_allclose(out.data, sky, rtol=1e-4, atol=0.05)


def test_dark_optimisation_finds_true_scale():
    rng = np.random.default_rng(3)
    bias, thermal, _, _ = _scene(rng, (256, 256))
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    k_true = 1.37  # a light taken warmer than the darks
    stars = np.zeros((256, 256), np.float32)
    for y, x, a in rng.uniform([5, 5, 500], [250, 250, 20000], (60, 3)):
        stars += a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 4.5)
    signal = 400 + stars + k_true * thermal
    light = bias + rng.poisson(signal).astype(np.float32)
    # master dark of 20 frames: thermal plus its own noise
    dark_noisy = thermal + rng.normal(0, np.sqrt(thermal / 20 + 1.0)).astype(np.float32)
    k = optimize_dark_scale(light, dark_noisy, bias)
    assert k == pytest.approx(k_true, rel=0.03)
    out = calibrate_light(
        _frame(light, 60.0),
        bias=bias,
        dark=Master(dark_noisy, "dark", 20, exposure=60.0),
        dark_scale="optimize",
    )
    assert out.meta.header["ASDARKK"] == pytest.approx(k_true, rel=0.03)
    # residual thermal pattern in the calibrated light is much smaller than with k = 1
    plain = calibrate_light(_frame(light, 60.0), bias=bias, dark=dark_noisy, dark_scale=1.0)
    resid_opt = np.std((out.data - 400 - stars)[thermal > 100])
    resid_one = np.std((plain.data - 400 - stars)[thermal > 100])
    assert resid_opt < 0.2 * resid_one


def test_defects_and_low_flat_are_replaced_from_same_colour():
    rng = np.random.default_rng(4)
    shape = (64, 64)
    tile = np.array([[100.0, 200.0], [200.0, 50.0]], np.float32)
    truth = np.tile(tile, (32, 32)) + rng.normal(0, 0.5, shape).astype(np.float32)
    flat = np.ones(shape, np.float32)
    flat[20, 20] = 0.0  # dead pixel
    light = truth * flat
    light[33, 9] = 40000.0  # hot pixel
    hot = np.zeros(shape, bool)
    hot[33, 9] = True
    dm = DefectMap(hot=hot, cold=np.zeros(shape, bool), cfa=True)
    out = calibrate_light(_frame(light, 10.0, bayer="RGGB"), flat=flat, defects=dm)
    assert np.isfinite(out.data).all()
    assert abs(out.data[33, 9] - tile[1, 1]) < 3.0
    assert abs(out.data[20, 20] - tile[0, 0]) < 3.0
    assert out.meta.header["ASCALIB"] == "flat,cosmetic(2)"


def test_isolated_hot_detection_option():
    rng = np.random.default_rng(5)
    img = rng.normal(1000, 10, (96, 96)).astype(np.float32)
    img[10, 10] += 5000
    img[50, 70] += 800
    base = calibrate_light(_frame(img, 10.0))
    assert base.data[10, 10] > 5000
    out = calibrate_light(_frame(img, 10.0), detect_hot=True)
    assert abs(out.data[10, 10] - 1000) < 40 and abs(out.data[50, 70] - 1000) < 40
    assert out.meta.header["ASCALIB"].endswith("isolated(2)")


def test_errors_name_the_file():
    light = _frame(np.zeros((32, 32)), 10.0, name="lights/bad_one.fits")
    with pytest.raises(ValueError, match=r"bad_one\.fits.*same camera"):
        calibrate_light(light, bias=np.zeros((16, 16), np.float32))
    with pytest.raises(ValueError, match=r"bad_one\.fits.*defect map"):
        calibrate_light(light, defects=np.zeros((16, 16), bool))
    with pytest.raises(ValueError, match="dark_scale"):
        calibrate_light(light, dark=np.zeros((32, 32), np.float32), dark_scale="auto")


def test_constant_offset_black_level():
    """No bias frames but a stated black level: the dark becomes thermal and scales."""
    rng = np.random.default_rng(6)
    _, thermal, _, sky = _scene(rng)
    black = 512.0
    dark = Master(black + thermal, "dark", 10, exposure=300.0, includes_bias=True)
    light = black + thermal * 0.5 + sky
    out = calibrate_light(_frame(light, 150.0), bias=black, dark=dark)
    np.testing.assert_allclose(out.data, sky, rtol=1e-4, atol=0.05)
    assert out.meta.header["ASDARKK"] == pytest.approx(0.5)


def test_non_finite_light_pixels_are_no_data_and_overwrite():
    rng = np.random.default_rng(6)
    bias, thermal, flat, sky = _scene(rng)
    light = bias + thermal + sky * flat + rng.normal(0, 3, SHAPE).astype(np.float32)
    light[5, 6], light[7, 8], light[9, 10] = np.nan, np.inf, -np.inf
    dark = Master(thermal, kind="dark", n_frames=10, exposure=60.0)
    out = calibrate_light(_frame(light, 60.0), bias=bias, dark=dark, flat=flat)
    assert np.isnan(out.data[[5, 7, 9], [6, 8, 10]]).all()
    assert np.isfinite(out.data).sum() == out.data.size - 3
    assert out.meta.header["ASNONFIN"] == 3
    clean = light.copy()
    clean[5, 6] = clean[7, 8] = clean[9, 10] = 0.0
    assert "ASNONFIN" not in calibrate_light(_frame(clean, 60.0), bias=bias).meta.header
    # overwrite: the same result, written into the light's own array
    frame = _frame(light.copy(), 60.0)
    data = frame.data
    same = calibrate_light(frame, bias=bias, dark=dark, flat=flat, overwrite=True)
    assert same.data is data or np.shares_memory(same.data, data)
    np.testing.assert_array_equal(same.data, out.data)
    # a light that cannot take the result (read-only) is left alone
    frozen = _frame(light.copy(), 60.0)
    frozen.data.flags.writeable = False
    again = calibrate_light(frozen, bias=bias, dark=dark, flat=flat, overwrite=True)
    np.testing.assert_array_equal(frozen.data, light)
    np.testing.assert_array_equal(again.data, out.data)


def test_calibrate_array_result_is_never_infinite():
    light = np.full((8, 8), 3e38, np.float32)
    got = calibrate_array(light, bias=-light)  # 6e38 overflows float32
    assert np.isnan(got).all()
