"""The sort-once tile statistics give exactly the numbers of the select-every-round ones."""

from __future__ import annotations

import numpy as np
import pytest

from astrostack.stack.tilestats import clipped_stats, radix_sort


def _reference(values: np.ndarray, kappa: float = 3.0, iters: int = 5) -> tuple[float, float]:
    """The definition: clip about np.median at kappa MAD sigmas, then the lower-half
    sigma ``median - quantile(kept, 0.1587)`` (float64 arithmetic throughout)."""
    buf = values.astype(np.float64)
    med = sig = np.nan
    for _ in range(iters):
        if buf.size < 3:
            break
        med = np.median(buf)
        sig = 1.482602218505602 * np.median(np.abs(buf - med))
        if not sig > 0:
            break
        kept = buf[np.abs(buf - med) <= kappa * sig]
        if kept.size == buf.size:
            break
        buf = kept
    if buf.size >= 16 and sig > 0:
        # np.quantile as numba computes it (the kernel this replaced ran in numba):
        # linear interpolation ``lower * (1 - t) + upper * t`` between closest ranks
        ranked = np.sort(buf)
        rank = 1 + (ranked.size - 1) * ((0.15865525393145707 * 100.0) / 100.0)
        f = np.floor(rank)
        t = rank - f
        k = int(f - 1)
        low = med - (ranked[k] * (1 - t) + ranked[k + 1] * t)
        if low > 0:
            sig = low
    return float(med), float(sig)


def _cases():
    rng = np.random.default_rng(12)
    yield rng.normal(1000.0, 20.0, 3844)  # sky tile
    sky = rng.normal(350.0, 8.0, 961)
    sky[rng.choice(sky.size, 60, replace=False)] += rng.uniform(50, 5000, 60)  # stars
    yield sky
    yield rng.normal(0.0, 3.0, 2000)  # around zero: negative and positive values
    yield np.round(rng.normal(500.0, 2.0, 1500))  # integer ADU: many ties
    yield rng.normal(-40.0, 1.0, 17)  # negative, odd count
    yield np.full(64, 7.0)  # constant: zero MAD
    yield np.concatenate([np.full(40, 3.0), rng.normal(3.0, 1.0, 25)])  # mostly one value
    yield rng.standard_cauchy(5001) * 10.0 + 100.0  # heavy tails: many clipping rounds
    # too few for the lower-half sigma: the MAD sigma itself is returned (odd, even)
    yield rng.normal(10.0, 1.0, 5)
    yield rng.normal(10.0, 1.0, 10)
    yield np.concatenate([rng.normal(-2.0, 0.5, 13), [40.0]])


@pytest.mark.parametrize("values", list(_cases()))
def test_clipped_stats_are_exactly_the_definition(values):
    want = _reference(values.astype(np.float32))
    buf = values.astype(np.float32)
    got = clipped_stats(buf, buf.size, np.empty_like(buf), 3.0, 5)
    np.testing.assert_array_equal(np.array(got), np.array(want))


def test_radix_sort_orders_float32_bit_patterns():
    rng = np.random.default_rng(3)
    for v in (
        rng.normal(0, 1e3, 4000),
        np.array([0.0, -0.0, 1e-40, -1e-40, np.inf, -np.inf, 3.5, -3.5, 1e30, -1e30]),
        np.full(100, 42.0),
    ):
        a = v.astype(np.float32)
        b = a.copy()
        radix_sort(b, b.size, np.empty_like(b))
        np.testing.assert_array_equal(b, np.sort(a))
    # only the first n values are sorted
    a = np.array([5, 4, 3, 2, 1], dtype=np.float32)
    radix_sort(a, 3, np.empty_like(a))
    np.testing.assert_array_equal(a, [3, 4, 5, 2, 1])
