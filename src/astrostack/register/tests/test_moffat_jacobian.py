"""The Moffat fit's compiled residuals and analytic Jacobian, and what the fit recovers."""

from __future__ import annotations

import numpy as np

from astrostack.register.quality import _moffat_jacobian, _moffat_residual, fit_moffat


def _star(shape=(17, 17), x0=8.3, y0=7.6, ax=2.2, ay=1.6, th=0.4, beta=2.8, amp=2000.0):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    c, s = np.cos(th), np.sin(th)
    u = ((xx - x0) * c + (yy - y0) * s) / ax
    v = (-(xx - x0) * s + (yy - y0) * c) / ay
    return amp * (1.0 + u * u + v * v) ** (-beta)


def test_analytic_jacobian_matches_central_differences():
    z = _star() + np.random.default_rng(3).normal(0, 5, (17, 17))
    p = np.array([1800.0, 8.0, 8.0, 2.0, 1.8, 0.3, 3.0, 2.0])
    jac = _moffat_jacobian(p, z)
    num = np.empty_like(jac)
    for k in range(8):
        h = 1e-6 * max(abs(p[k]), 1.0)
        e = np.zeros(8)
        e[k] = h
        num[:, k] = (_moffat_residual(p + e, z) - _moffat_residual(p - e, z)) / (2 * h)
    scale = np.abs(num).max(axis=0)
    assert np.all(np.abs(jac - num).max(axis=0) <= 1e-5 * scale)
    # residuals are model - data, raveled row by row
    assert np.allclose(_moffat_residual(p, z), (_star(x0=8.0, y0=8.0, ax=2.0, ay=1.8, th=0.3,
                       beta=3.0, amp=1800.0) + 2.0 - z).ravel())  # fmt: skip


def test_fit_recovers_elliptical_moffat():
    k = 2.0 * np.sqrt(2.0 ** (1.0 / 2.8) - 1.0)
    z = _star() + np.random.default_rng(5).normal(0, 2.0, (17, 17))
    r = fit_moffat(z, 8.0, 8.0)
    assert r is not None
    assert abs(r["x"] - 8.3) < 0.02 and abs(r["y"] - 7.6) < 0.02
    assert abs(r["fwhm_major"] / (k * 2.2) - 1) < 0.02
    assert abs(r["fwhm_minor"] / (k * 1.6) - 1) < 0.02
    assert abs(r["beta"] - 2.8) < 0.2
    assert fit_moffat(np.full((9, 9), np.nan), 4.0, 4.0) is None
