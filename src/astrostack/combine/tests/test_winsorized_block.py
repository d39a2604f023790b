"""Winsorized sigma clipping of whole sorted blocks against the per-pixel path.

Every pixel with all N values is clipped by ``winsorized_block`` (each winsorization
step and rejection pass taken for all the block's pixels before the next); the others,
and stacks above the comparator network's size, by ``_reject_winsorized`` pixel by
pixel.  The two must agree bit for bit, and the block path must meet the ground truth.
"""

from __future__ import annotations

import numpy as np
import pytest

from astrostack.combine import kernels
from astrostack.combine.kernels import combine
from astrostack.combine.stats import (
    centred_cumsums,
    sorted_mad,
    sorted_median,
    sorting_network,
)
from astrostack.combine.winsorized import (
    _reject_winsorized,
    _sorted_mad_bisect,
    winsorized_block,
)

FIELDS = ("image", "count", "rejected_low", "rejected_high", "weight")


def _stack(n, seed, hit_frac=0.03, shape=(2, 700)):
    """Gaussian 1000 +- 10 with 3..80 sigma hits, ties, flat and quantised pixels."""
    rng = np.random.default_rng(seed)
    s = rng.normal(1000.0, 10.0, (n, *shape))
    hit = rng.random(s.shape) < hit_frac
    s[hit] += rng.choice([-1.0, 1.0], hit.sum()) * rng.uniform(30, 800, hit.sum())
    s[:, 0, :40] = np.round(s[:, 0, :40])  # ties
    s[:, 1, 7] = 250.0  # zero spread
    s[:, 1, 8:12] = np.round(s[:, 1, 8:12] / 20) * 20  # MAD 0, sample std > 0
    s[:, 1, 12] = 250.0
    s[0, 1, 12] = 900.0  # one value off a flat pixel
    s[0, 1, 600:] = np.nan  # incomplete pixels: per-pixel path inside the same blocks
    return s.astype(np.float32)


def _per_pixel(monkeypatch):
    monkeypatch.setattr(kernels, "_sorting_plan", lambda k: (kernels._NO_NETWORK, 37))


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 12, 20, 33, 50])
def test_block_path_bit_identical_to_per_pixel(n, monkeypatch):
    stack = _stack(n, seed=n)
    rng = np.random.default_rng(n)
    params = [
        {},
        {"cutoff": 0.0},
        {"maxiters": 1},
        {"sigma_low": 1.0, "sigma_high": 1.0, "min_kept": 4},  # trimmed by min_kept
        {"sigma_low": 0.5, "sigma_high": 2.0, "cutoff": 1.5},
    ]
    weights = [None, np.full(n, 2.5), rng.uniform(0.5, 2.0, n)]
    cases = [(p, w) for p in params for w in weights[:1]] + [({}, w) for w in weights[1:]]
    fast = [combine(stack, "winsorized", weights=w, **p) for p, w in cases]
    _per_pixel(monkeypatch)
    for (p, w), got in zip(cases, fast, strict=True):
        slow = combine(stack, "winsorized", weights=w, **p)
        for f in FIELDS:
            a, b = getattr(got, f), getattr(slow, f)
            assert a.tobytes() == b.tobytes(), (n, p, w is not None, f, int(np.sum(a != b)))
    # the cases are not trivial: something was rejected, and trimmed to min_kept
    # (with 3 values and min_kept = 3 nothing can be)
    if n >= 5:
        assert fast[0].rejected_high.sum() > 0 and fast[0].rejected_low.sum() > 0
        assert fast[3].count.mean() < 0.95 * fast[0].count.mean()
    if 5 <= n <= 7:
        assert (fast[3].count[:, :600] == 4).any()


def test_block_path_with_per_pixel_weights(monkeypatch):
    n = 9
    stack = _stack(n, seed=3)
    w = np.random.default_rng(4).uniform(0.5, 2.0, stack.shape).astype(np.float32)
    fast = combine(stack, "winsorized", weights=w)
    _per_pixel(monkeypatch)
    slow = combine(stack, "winsorized", weights=w)
    for f in FIELDS:
        assert getattr(fast, f).tobytes() == getattr(slow, f).tobytes(), f


@pytest.mark.parametrize("n", [3, 6, 8, 20, 51])
def test_winsorized_block_matches_reject_winsorized_column_by_column(n):
    rng = np.random.default_rng(10 + n)
    m = 70
    vb = rng.normal(100.0, 5.0, (n, m))
    hit = rng.random(vb.shape) < 0.05
    vb[hit] += 200.0
    vb[:, :10] = np.round(vb[:, :10])  # ties around the median
    vb[:, 10] = 7.0  # all equal: sigma 0, nothing rejected
    vb = np.sort(vb.astype(np.float32), axis=0)
    cnt = np.full(m, n, dtype=np.int64)
    cnt[[3, 40]] = n - 1  # incomplete: left to the per-pixel path
    block = 80  # scratch wider than the m pixels used
    vt = np.zeros((block, n), np.float32)
    c1 = np.zeros((n + 1, block))
    c2 = np.zeros((n + 1, block))
    fst = np.zeros((10, block))
    ist = np.zeros((6, block), np.int64)
    lists = np.zeros((3, block), np.int64)
    done = np.zeros(block, bool)
    sl, sh, cutoff, maxiters, min_kept = 2.5, 2.5, 5.0, 10, 3
    winsorized_block(
        vb, cnt, m, n, sl, sh, cutoff, maxiters, min_kept, vt, c1, c2, fst, ist, lists, done
    )
    assert not done[3] and not done[40] and not done[m:].any()
    assert done[:m].sum() == m - 2
    n_rejected = 0
    for k in np.flatnonzero(done):
        v = np.ascontiguousarray(vb[:, k])
        a1, a2 = np.empty(n + 1), np.empty(n + 1)
        ref = centred_cumsums(v, n, a1, a2)
        # the running sums, the transposed values and the pass-0 MAD sigma, bit for bit
        assert fst[0, k] == ref
        assert c1[:, k].tobytes() == a1.tobytes() and c2[:, k].tobytes() == a2.tobytes()
        assert vt[k].tobytes() == v.tobytes()
        if n > min_kept:  # (no pass at all otherwise)
            assert fst[3, k] == 1.482602218505602 * sorted_mad(v, 0, n, sorted_median(v, 0, n))
        lo, hi = _reject_winsorized(v, 0, n, a1, a2, ref, sl, sh, cutoff, maxiters, min_kept)
        assert (ist[0, k], ist[1, k]) == (lo, hi), k
        n_rejected += lo + n - hi
    assert n_rejected > 0 or n <= min_kept
    assert (ist[0, 10], ist[1, 10]) == (0, n)


@pytest.mark.parametrize("n", [6, 12, 24])
def test_block_path_meets_ground_truth(n):
    # every pixel complete (block path): +50 sigma hits on 1-2 frames of a pixel are
    # rejected, the clean values kept, and the result is the mean of the clean values
    rng = np.random.default_rng(n)
    clean = rng.normal(1000.0, 10.0, (n, 60, 80)).astype(np.float32)
    stack = clean.copy()
    hit = np.zeros(stack.shape, bool)
    pix = rng.choice(60 * 80, 400, replace=False)  # distinct pixels, 1 or 2 hits each
    ys, xs = pix // 80, pix % 80
    f1 = rng.integers(0, n, 400)
    hit[f1, ys, xs] = True
    hit[(f1[:100] + rng.integers(1, n, 100)) % n, ys[:100], xs[:100]] = True
    stack[hit] += 500.0
    res = combine(stack, "winsorized")
    n_hit = hit.sum(0)
    assert (res.rejected_high >= n_hit).all()  # every hit rejected
    assert res.count.sum() >= 0.97 * (n * 60 * 80 - hit.sum())  # few good values lost
    truth = clean.astype(np.float64).mean(0)
    err = res.image - truth
    # where nothing good was lost the result is the clean mean (float32 rounding)
    exact = (res.count == n - n_hit) & (res.rejected_low == 0)
    assert exact.mean() > 0.85
    full_mean = np.where(hit, 0, clean).sum(0, dtype=np.float64) / (n - n_hit)
    np.testing.assert_allclose(res.image[exact], full_mean[exact], rtol=2e-7)
    assert np.abs(err).max() < 3 * 10.0 / np.sqrt(n - 2)
    assert len(sorting_network(n)) > 0  # the network (block) path is the one measured


def test_sorted_mad_bisect_equals_merge_bit_for_bit():
    rng = np.random.default_rng(5)
    for trial in range(3000):
        n = int(rng.integers(1, 70))
        if trial % 3 == 0:
            v = rng.integers(0, 4, n).astype(np.float32)  # heavy ties
        else:
            v = rng.normal(0.0, 1.0, n).astype(np.float32) * np.float32(10.0 ** rng.integers(-3, 4))
        v = np.sort(v)
        lo = int(rng.integers(0, max(1, n // 4)))
        hi = n - int(rng.integers(0, max(1, n // 4)))
        if hi - lo < 1:
            continue
        med = sorted_median(v, lo, hi)
        got, want = _sorted_mad_bisect(v, lo, hi, med), sorted_mad(v, lo, hi, med)
        assert got == want, (trial, n, lo, hi)
        d = np.sort(np.abs(v[lo:hi].astype(np.float64) - med))  # and it is the MAD
        m = hi - lo
        assert got == 0.5 * (d[(m - 1) // 2] + d[m // 2])


def test_block_start_median_and_mad_bit_for_bit():
    # the block path's first-pass start (median, MAD by a bitonic merge of the
    # deviations, sample-std fallback) against the per-pixel functions, every N
    from astrostack.combine.winsorized import _block_cumsums, _block_start

    rng = np.random.default_rng(6)
    m, block = 90, 96
    n_fallback = 0
    for n in range(2, 70):
        vb = rng.normal(0.0, 1.0, (n, m)) * 10.0 ** rng.integers(-2, 3, m)
        vb[:, :30] = rng.integers(0, 4, (n, 30))  # heavy ties: MAD 0 on some columns
        vb[:, 30] = 3.0  # all equal: sigma 0
        vb = np.sort(vb.astype(np.float32), axis=0)
        vt = np.empty((block, n), np.float32)
        c1, c2 = np.empty((n + 1, block)), np.empty((n + 1, block))
        ref, med, loc, sig, smad = (np.empty(block) for _ in range(5))
        _block_cumsums(vb, vt, m, n, c1, c2, ref)
        _block_start(vb, m, n, c1, c2, med, loc, sig, smad, np.empty((n, block)))
        for k in range(m):
            v = np.ascontiguousarray(vb[:, k])
            want_med = sorted_median(v, 0, n)
            want_mad = 1.482602218505602 * sorted_mad(v, 0, n, want_med)
            assert med[k] == want_med and loc[k] == want_med, (n, k)
            assert smad[k] == want_mad, (n, k)
            if want_mad > 0:
                assert sig[k] == want_mad, (n, k)
            else:  # the sample std of the column
                n_fallback += k != 30
                assert sig[k] == pytest.approx(np.std(v.astype(np.float64), ddof=1), rel=1e-9)
    assert n_fallback > 20  # the fallback was exercised (MAD 0, values not all equal)
