"""Frame quality: PSF and noise figures against truth, outlier flags, files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from astrostack.register import (
    FrameQuality,
    QualityTable,
    estimate_noise,
    fit_moffat,
    measure_quality,
    pick_reference,
)

from .fields import render_stars, sky_catalog

SHAPE = (320, 320)


def _fwhm_true(sigma):
    # pixel integration adds a 1/12 px^2 variance to the Gaussian
    return 2.3548 * np.sqrt(sigma**2 + 1 / 12)


def _frame(seed, sigma=1.3, transparency=1.0, sky=100.0, trail=None):
    xy, flux = sky_catalog(150, (SHAPE[1], SHAPE[0]), seed=42, flux_range=(3e3, 8e4))
    rng = np.random.default_rng(seed)
    xy = xy + rng.normal(0, 2.0, 2)  # dither
    return render_stars(SHAPE, xy, flux * transparency, sigma=sigma, background=sky, noise=5.0,
                        seed=seed, trail=trail)  # fmt: skip


@pytest.mark.parametrize("sigma", [1.0, 1.6, 2.5])
def test_fwhm_and_roundness_match_truth(sigma):
    q = measure_quality(_frame(1, sigma=sigma), "f.fits", pixel_scale=2.0)
    assert q.fwhm == pytest.approx(_fwhm_true(sigma), rel=0.05)
    assert q.fwhm_arcsec == pytest.approx(2.0 * q.fwhm)
    assert q.hfd == pytest.approx(_fwhm_true(sigma), rel=0.08)
    assert q.roundness > 0.9 and q.eccentricity < 0.45
    assert q.n_psf_fits >= 20
    assert q.background == pytest.approx(100.0, abs=1.0)
    assert q.noise == pytest.approx(5.0, rel=0.05)


def test_moffat_fit_recovers_elliptical_profile():
    yy, xx = np.mgrid[0:31, 0:31].astype(np.float64)
    beta, ax, ay, th = 3.0, 3.0, 2.0, 0.4
    c, s = np.cos(th), np.sin(th)
    u = ((xx - 15.3) * c + (yy - 14.6) * s) / ax
    v = (-(xx - 15.3) * s + (yy - 14.6) * c) / ay
    z = 1000 * (1 + u**2 + v**2) ** (-beta)
    z += np.random.default_rng(0).normal(0, 2.0, z.shape)
    r = fit_moffat(z, 15.0, 15.0)
    k = 2 * np.sqrt(2 ** (1 / beta) - 1)
    assert r["x"] == pytest.approx(15.3, abs=0.02) and r["y"] == pytest.approx(14.6, abs=0.02)
    assert r["fwhm_major"] == pytest.approx(k * ax, rel=0.03)
    assert r["fwhm_minor"] == pytest.approx(k * ay, rel=0.03)
    assert r["beta"] == pytest.approx(beta, rel=0.1)
    assert fit_moffat(np.zeros((9, 9)), 4, 4) is None


def test_noise_estimator_ignores_gradient_and_stars():
    img = _frame(3)
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    assert estimate_noise(img + 2.0 * xx + 1.5 * yy) == pytest.approx(5.0, rel=0.05)
    assert estimate_noise(img * 3.0) == pytest.approx(15.0, rel=0.05)


@pytest.fixture(scope="module")
def session():
    frames = {f"good{i}.fits": _frame(10 + i, sigma=1.3 + 0.05 * (i % 3)) for i in range(7)}
    frames["clouds.fits"] = _frame(30, transparency=0.3, sky=160.0)
    frames["trailed.fits"] = _frame(31, trail=(7.0, 4.0))
    frames["defocus.fits"] = _frame(32, sigma=2.8)
    table = QualityTable([measure_quality(img, name) for name, img in frames.items()])
    table.flag_outliers()
    return table


def test_bad_frames_flagged_with_reasons(session):
    flagged = {f.name: f.reasons for f in session if f.flagged}
    assert set(flagged) == {"clouds.fits", "trailed.fits", "defocus.fits"}, flagged
    assert "clouds" in flagged["clouds.fits"] and "background" in flagged["clouds.fits"]
    assert "elongated" in flagged["trailed.fits"]
    assert "FWHM" in flagged["defocus.fits"]
    by = {f.name: f for f in session}
    assert by["clouds.fits"].signal_weight < 0.5 * by["good0.fits"].signal_weight
    assert by["trailed.fits"].eccentricity > 0.7
    assert by["defocus.fits"].fwhm == pytest.approx(_fwhm_true(2.8), rel=0.08)


def test_reference_is_sharpest_good_frame(session):
    idx = pick_reference(session)
    best = session[idx]
    assert best.name.startswith("good") and not best.flagged
    assert best.fwhm <= np.median(session.column("fwhm")) * 1.02


def test_csv_and_json_roundtrip(session, tmp_path):
    session.to_csv(tmp_path / "quality.csv")
    session.to_json(tmp_path / "quality.json")
    rows = list(csv.DictReader(open(tmp_path / "quality.csv")))
    assert [r["name"] for r in rows] == [f.name for f in session]
    assert float(rows[0]["fwhm"]) == pytest.approx(session[0].fwhm)
    data = json.load(open(tmp_path / "quality.json"))
    assert data["frames"][7]["flagged"] is True
    assert data["frames"][7]["reasons"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quality.csv", "quality.json"]


def test_blank_frame_and_empty_table():
    q = measure_quality(np.full(SHAPE, 50.0, dtype=np.float32), "blank.fits")
    assert q.n_stars == 0 and np.isnan(q.fwhm)
    with pytest.raises(ValueError, match="empty"):
        pick_reference(QualityTable([]))
    assert FrameQuality("x", n_stars=10, fwhm=2.0).score == pytest.approx(2.5)
