"""exact_median gives exactly numpy's median."""

from __future__ import annotations

import numpy as np

from astrostack.stack.tilestats import exact_median


def test_exact_median_is_numpys():
    rng = np.random.default_rng(4)
    cases = [
        rng.normal(700, 30, 9001).astype(np.float32),
        rng.normal(700, 30, 9000).astype(np.float32),
        rng.normal(0, 1, 3844),
        np.round(rng.normal(5, 2, 1000)),
        np.array([3.0]),
        np.array([-1.0, -2.0, 5.0, 0.0, 7.0, 0.5]),
        rng.standard_cauchy(1001),
        np.full(10, 4.25, dtype=np.float32),
        np.array([1e300, -1e300, 1e-300, 5.0]),
    ]
    for _ in range(100):
        n = int(rng.integers(1, 40))
        cases.append((rng.normal(0, 1, n) * 10.0 ** rng.integers(-30, 30)).astype(np.float32))
        cases.append(rng.choice([-2.0, 0.0, 1.0, 1.5, 1e9], n))
    for vals in cases:
        want = np.median(vals)
        assert exact_median(vals, vals.dtype == np.float32) == want
