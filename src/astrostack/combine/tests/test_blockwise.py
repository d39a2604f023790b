"""Block-wise passes (ESD test, sigma first pass) and frame-order weighted means.

The block-wise ESD test must give the per-pixel test's results bit for bit, including
where its fast decisions are too close to call (symmetric values: the exact step takes
over) and where a far outlier makes it recompute the running sums.  With unequal
weights, sigma clipping and the ESD test sum their kept values frame by frame: the
block path, the per-pixel path after the network sort and the per-pixel path without
the network must then agree bit for bit, and with a reference that orders tied values
as a stable sort does.
"""

from __future__ import annotations

import numpy as np
import pytest

from astrostack.combine import kernels
from astrostack.combine.blockwise import (
    _column_sums,
    _esd_exact_step,
    _esd_fast_step,
    esd_block,
    frame_order_mean,
)
from astrostack.combine.kernels import combine
from astrostack.combine.rejection import _reject_esd
from astrostack.combine.stats import sort_columns, sorting_network

FIELDS = ("image", "count", "rejected_low", "rejected_high", "weight")


def _hard_stack(n, seed, ties=False):
    """Gaussian values with every kind of trouble for the ESD test, ``[n, 4, 150]``."""
    rng = np.random.default_rng(seed)
    s = rng.normal(1000.0, 10.0, (n, 4, 150))
    hit = rng.random(s.shape) < 0.04
    s[hit] += rng.choice([-1.0, 1.0], hit.sum()) * rng.uniform(30, 800, hit.sum())
    s[:, 0, :5] = 1000.0  # zero spread
    s[:, 0, 5:10] = 1000.0
    s[0, 0, 5:10] = 1e9  # one value ~1e7 sigma away: the running sums are recomputed
    s[1, 0, 7:10] = -1e9
    s[:, 0, 10:30] = rng.integers(-1, 2, (n, 20))  # symmetric: ties of the two deviates
    s[0, 0, 10:30] = 5.0
    s[1, 0, 10:30] = -5.0
    s[:, 1, :40] = np.round(s[:, 1, :40] / 4.0)  # heavy ties
    s[: n // 3, 2, :20] = np.nan  # incomplete pixels: per-pixel path
    if ties:
        s = np.round(s)
    return s.astype(np.float32)


def _run(stack, method, weights, monkeypatch, path, **params):
    """Results of one path: 'block', 'pixel' (network, no block pass) or 'nonet'."""
    with monkeypatch.context() as mp:
        if path == "pixel":
            mp.setattr(kernels, "_blockwise", lambda: False)
        elif path == "nonet":
            mp.setattr(kernels, "_sorting_plan", lambda k: (kernels._NO_NETWORK, 37))
        res = combine(stack, method, weights=weights, **params)
    return [getattr(res, f) for f in FIELDS]


def _assert_same(a, b, what):
    for f, x, y in zip(FIELDS, a, b, strict=True):
        assert x.tobytes() == y.tobytes(), (what, f)


@pytest.mark.parametrize("n", [3, 4, 5, 9, 25, 50, 64])
@pytest.mark.parametrize("params", [{}, {"outlier_fraction": 0.49, "significance": 0.3}])
def test_esd_block_bit_identical_to_per_pixel(n, params, monkeypatch):
    stack = _hard_stack(n, seed=n)
    block = _run(stack, "esd", None, monkeypatch, "block", **params)
    pixel = _run(stack, "esd", None, monkeypatch, "pixel", **params)
    _assert_same(block, pixel, n)
    if n >= 25 and not params:  # and the test really rejected the far values, outliers
        img, cnt = block[0], block[1]
        assert (cnt[0, 5:10] < n).all()
        assert np.all(np.abs(img[3] - 1000.0) < 5 * 10.0 / np.sqrt(n))


def test_esd_block_breaks_ties_of_the_extremes_as_per_pixel(monkeypatch):
    # one test (r = 1) on 18 zeros and -a, +a: the two deviates are equal, the high
    # value goes (as the per-pixel test: d_hi >= d_lo) and is an outlier
    stack = np.zeros((20, 1, 8), dtype=np.float32)
    stack[0] = -np.arange(1, 9)
    stack[1] = np.arange(1, 9)
    params = {"outlier_fraction": 0.05}
    block = _run(stack, "esd", None, monkeypatch, "block", **params)
    _assert_same(block, _run(stack, "esd", None, monkeypatch, "pixel", **params), "pixel")
    assert (block[3] == 1).all() and (block[2] == 0).all()


def test_esd_fast_step_decides_as_the_exact_step():
    # random lane states, many on the edge of a decision (equal deviates, a deviate at
    # the critical value, a vanishing variance, the recompute threshold): every lane
    # the fast step settles must end as the exact step leaves it
    rng = np.random.default_rng(11)
    m, n, i = 4000, 30, 4
    left = n - i + 1
    lim = 2.7
    xlo = -rng.uniform(0.1, 50.0, m)
    xhi = rng.uniform(0.1, 50.0, m)
    s1 = rng.normal(0.0, 20.0, m)
    s2 = rng.uniform(1.0, 5e4, m)
    mean = s1 / left
    kind = np.arange(m) % 5
    xhi[kind == 1] = 2 * mean[kind == 1] - xlo[kind == 1]  # equal deviates
    # a variance of a few ulps either way (or none) as the exact step computes it
    sel = kind == 2
    s2[sel] = s1[sel] * (s1[sel] / left) + rng.integers(-3, 4, sel.sum()) * np.spacing(s2[sel])
    # the farther deviate exactly at lim * s
    sel = kind == 3
    big = np.maximum(xhi[sel] - mean[sel], mean[sel] - xlo[sel])
    s2[sel] = s1[sel] * mean[sel] + (big / lim) ** 2 * (left - 1)
    sel = kind == 4  # at the recompute threshold
    s2[sel] = np.maximum(xhi[sel] ** 2, xlo[sel] ** 2) * left / 1e6
    state = [s1, s2, xlo, xhi, rng.integers(0, i, m), rng.integers(0, 99, m), np.ones(m)]
    state = [np.array(a, dtype=np.int64 if j >= 4 else np.float64) for j, a in enumerate(state)]
    fast = [a.copy() for a in state]
    exact = [a.copy() for a in state]
    _esd_fast_step(m, i, n, lim, *fast)
    unsure = (fast[6] & 2) != 0
    for k in np.flatnonzero(unsure):
        _esd_exact_step(k, i, n, lim, *fast)
    for k in range(m):
        _esd_exact_step(k, i, n, lim, *exact)
    for j, (a, b) in enumerate(zip(fast, exact, strict=True)):
        assert a.tobytes() == b.tobytes(), j
    # the edge cases went to the exact step, the others almost never
    assert unsure[kind == 1].all() and unsure[kind > 1].mean() > 0.3
    assert unsure[kind == 0].mean() < 0.01
    assert ((exact[6] & 4) != 0).any() and (exact[6] == 0).any()  # recompute, var gone
    assert (exact[5] != state[5]).any() and (exact[5] == state[5]).any()  # passed, not


def test_column_sums_recompute_in_row_order():
    # what esd_block recomputes when a far outlier has dominated the running sums
    vb = np.random.default_rng(1).normal(5.0, 3.0, (20, 7)).astype(np.float32)
    for lo, hi, k in ((0, 20, 0), (3, 17, 4), (5, 6, 6)):
        u1 = u2 = 0.0
        for j in range(lo, hi):
            d = float(vb[j, k]) - 4.5
            u1 += d
            u2 += d * d
        assert _column_sums(vb, k, lo, hi, 4.5) == (u1, u2)


@pytest.mark.parametrize("n", [5, 12, 50])
def test_esd_block_kept_ranges_equal_reject_esd_per_column(n):
    # esd_block against the per-pixel kernel on the same sorted columns
    stack = _hard_stack(n, seed=100 + n)[:, 0, :]
    lam = kernels._esd_table(n, 0.05)
    vb = np.ascontiguousarray(stack)
    wb = np.zeros_like(vb)
    m = vb.shape[1]
    sort_columns(vb, wb, m, sorting_network(n), False)
    fl = np.empty((5, m))
    il = np.empty((3, m), dtype=np.int64)
    done = np.zeros(m, dtype=np.bool_)
    esd_block(vb, np.full(m, n, dtype=np.int64), m, n, lam, 0.3, fl, il, done)
    assert done.all()
    side = np.zeros(n + 1, dtype=np.int64)
    for k in range(m):
        want = _reject_esd(np.ascontiguousarray(vb[:, k]), 0, n, lam, 0.3, side)
        assert (il[1, k], il[2, k]) == want, k
    assert (il[1] > 0).any() and (il[2] < n).any()  # rejections at both ends


@pytest.mark.parametrize("method", ["sigma", "esd"])
@pytest.mark.parametrize("wkind", ["frame", "pixel"])
@pytest.mark.parametrize("n", [3, 8, 25, 50])
def test_weighted_paths_agree_bit_for_bit(method, wkind, n, monkeypatch):
    stack = _hard_stack(n, seed=200 + n, ties=True)
    rng = np.random.default_rng(n)
    if wkind == "frame":
        weights = rng.uniform(0.3, 3.0, n)
        weights[1] = 0.0  # a frame without weight has no data
    else:
        weights = rng.uniform(0.3, 3.0, stack.shape).astype(np.float32)
        weights[rng.random(weights.shape) < 0.05] = 0.0
    block = _run(stack, method, weights, monkeypatch, "block")
    _assert_same(block, _run(stack, method, weights, monkeypatch, "pixel"), "pixel")
    _assert_same(block, _run(stack, method, weights, monkeypatch, "nonet"), "nonet")
    # the weights count: not the unweighted result
    plain = combine(stack, method)
    assert np.nanmax(np.abs(block[0] - plain.image)) > 0.01


def test_frame_order_mean_keeps_tied_values_as_a_stable_sort():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(2, 12))
        x = rng.integers(0, 4, n).astype(np.float32)
        w = rng.uniform(0.5, 2.0, n)
        lo = int(rng.integers(0, n))
        hi = int(rng.integers(lo + 1, n + 1))
        order = np.argsort(x, kind="stable")
        keep = order[lo:hi]
        stack = x[:, None, None]
        got, sw = frame_order_mean(stack, w, np.ones((1, 1, 1), np.float32), False, 0, 0,
                                   np.sort(x), n, lo, hi)  # fmt: skip
        s = sw_want = 0.0
        for i in np.sort(keep):  # frame order
            s += w[i] * float(x[i])
            sw_want += w[i]
        assert got == s / sw_want and sw == sw_want


def test_sigma_fallback_splits_ties_by_stable_order(monkeypatch):
    # sigma 0/0 rejects every value of [1, 1, 3, 3] (the median 2 is none of them): the
    # middle two ranks are kept, a 1 and a 3 - which ones is the stable sort's choice
    perms = [[1, 1, 3, 3], [1, 3, 1, 3], [3, 1, 3, 1], [3, 3, 1, 1], [1, 3, 3, 1]]
    stack = np.array(perms, dtype=np.float32).T[:, None, :]  # [4, 1, 5]
    w = np.array([1.0, 2.0, 4.0, 8.0])
    results = [
        _run(stack, "sigma", w, monkeypatch, path, sigma_low=0.0, sigma_high=0.0)
        for path in ("block", "pixel", "nonet")
    ]
    _assert_same(results[0], results[1], "pixel")
    _assert_same(results[0], results[2], "nonet")
    for j, vals in enumerate(perms):
        order = np.argsort(vals, kind="stable")
        kept = np.sort(order[1:3])
        expect = np.float32(np.sum(w[kept] * np.array(vals)[kept]) / w[kept].sum())
        assert results[0][0][0, j] == expect, (vals, kept)
        assert results[0][1][0, j] == 2
