"""The sorted-window tile statistics give exactly the numbers of the select-every-round ones."""

from __future__ import annotations

import numpy as np
import pytest

from astrostack.stack.tilestats import clipped_stats


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
    buf = np.sort(values.astype(np.float32))
    got = clipped_stats(buf, buf.size, 3.0, 5)
    np.testing.assert_array_equal(np.array(got), np.array(want))
