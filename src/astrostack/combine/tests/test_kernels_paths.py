"""The two sorting paths of the combine kernel: comparator network and per-pixel sort.

Stacks of up to 1024 frames are sorted by a comparator network over blocks of pixels,
larger ones pixel by pixel.  Both must give the same results (counts exact) on stacks
with ties, NaN, +-inf, all-empty pixels, weights, and blocks that straddle planes.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from astrostack.combine import kernels
from astrostack.combine.kernels import combine
from astrostack.combine.stats import (
    centred_cumsums,
    sort_columns,
    sorted_column_sums,
    sorting_network,
)

METHODS = ["mean", "median", "sigma", "winsorized", "linear_fit", "esd", "percentile", "minmax"]
PARAMS = {"sigma_mad": ("sigma", {"stdfunc": "mad_std"}), "minmax_wide": ("minmax", {"n_low": 5})}


def _apply(net: np.ndarray, x: np.ndarray) -> np.ndarray:
    x = x.copy()
    for a, b in net:
        lo = np.minimum(x[a], x[b])
        x[b] = np.maximum(x[a], x[b])
        x[a] = lo
    return x


def test_sorting_network_sizes_and_zero_one_principle():
    # Batcher's odd-even merge sort: known comparator counts for powers of two
    sizes = [len(sorting_network(n)) for n in (1, 2, 4, 8, 16, 32, 64)]
    assert sizes == [0, 1, 5, 19, 63, 191, 543]
    for n in range(1, 15):
        net = sorting_network(n)
        assert np.all(net[:, 0] < net[:, 1]) and np.all(net < n)
        # 0-1 principle: a network that sorts every 0/1 input sorts everything
        ones = np.array(list(itertools.product([0.0, 1.0], repeat=n)), dtype=np.float32).T
        assert np.all(np.diff(_apply(net, ones), axis=0) >= 0), n
    with pytest.raises(ValueError, match="n must be"):
        sorting_network(0)


@pytest.mark.parametrize("n", [3, 5, 20, 33, 50, 64])
def test_sort_columns_sorts_and_carries(n):
    rng = np.random.default_rng(n)
    p = 70
    v = rng.integers(0, 6, (n, p)).astype(np.float32)  # heavy ties
    v[rng.random(v.shape) < 0.2] = np.inf  # no data sorts last
    w = np.tile(np.arange(n, dtype=np.float32)[:, None], (1, p))  # frame index
    v0 = v.copy()
    m = 61  # only the first m columns are sorted
    sort_columns(v, w, m, sorting_network(n), True)
    np.testing.assert_array_equal(v[:, :m], np.sort(v0[:, :m], axis=0))
    np.testing.assert_array_equal(v[:, m:], v0[:, m:])
    # the companion moved with its value: v0[w, col] == v everywhere
    cols = np.arange(p)[None, :]
    np.testing.assert_array_equal(v0[w.astype(int), cols], v)
    # without carry the companion is untouched
    w2 = np.zeros_like(w)
    sort_columns(v0, w2, p, sorting_network(n), False)
    assert not w2.any() and np.all(v0[1:] >= v0[:-1])


def _stack(n, shape, seed, ties=True):
    rng = np.random.default_rng(seed)
    s = rng.normal(1000.0, 10.0, (n, *shape))
    hit = rng.random(s.shape) < 0.05
    s[hit] += rng.choice([-1.0, 1.0], hit.sum()) * rng.uniform(200, 800, hit.sum())
    if ties:  # (with unequal weights, which of two equal values is rejected is arbitrary)
        s = np.round(s * 4) / 4
    s[rng.random(s.shape) < 0.1] = np.nan
    s[rng.random(s.shape) < 0.02] = np.inf
    s[rng.random(s.shape) < 0.02] = -np.inf
    s[..., 0, 0] = np.nan  # no data at all
    s[..., 0, 1] = np.nan
    s[n // 2, ..., 0, 1] = 1234.5  # one value
    if ties:
        s[..., 1, 1] = 500.0  # all equal (saturated)
    return s.astype(np.float32)


def _results(stack, method, params, weights):
    r = combine(stack, method, weights=weights, **params)
    return r.image, r.count, r.rejected_low, r.rejected_high, r.weight


@pytest.mark.parametrize("n", [1, 2, 3, 9, 40])
@pytest.mark.parametrize("wkind", ["none", "frame", "pixel"])
def test_network_and_per_pixel_paths_agree(n, wkind, monkeypatch):
    shape = (3, 11, 29)  # 3 planes of 319 pixels: partial blocks of 256
    stack = _stack(n, shape, seed=n, ties=wkind == "none")
    rng = np.random.default_rng(100 + n)
    if wkind == "frame":
        weights = rng.uniform(0.3, 3.0, n)
    elif wkind == "pixel":
        weights = rng.uniform(0.3, 3.0, stack.shape).astype(np.float32)
        weights[rng.random(weights.shape) < 0.05] = 0.0
    else:
        weights = None
    cases = [(m, {}) for m in METHODS] + list(PARAMS.values())
    fast = {}
    for method, params in cases:
        fast[method, str(params)] = _results(stack, method, params, weights)
    plan = kernels._sorting_plan(n)
    assert len(plan[0]) == len(sorting_network(n))  # the network path ran above
    monkeypatch.setattr(kernels, "_sorting_plan", lambda k: (kernels._NO_NETWORK, 37))
    for method, params in cases:
        slow = _results(stack, method, params, weights)
        got = fast[method, str(params)]
        np.testing.assert_allclose(got[0], slow[0], rtol=1e-6, equal_nan=True, err_msg=method)
        for a, b in zip(got[1:4], slow[1:4], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=method)
        np.testing.assert_allclose(got[4], slow[4], rtol=1e-6, err_msg=method)
    img, cnt = got[0], got[1]
    assert np.isnan(img[:, 0, 0]).all() and (cnt[:, 0, 0] == 0).all()


def test_large_n_uses_per_pixel_path_and_matches_numpy():
    n = kernels._NETWORK_MAX_FRAMES + 1
    net, block = kernels._sorting_plan(n)
    assert len(net) == 0 and 8 <= block <= 256
    small_net, _ = kernels._sorting_plan(kernels._NETWORK_MAX_FRAMES)
    assert len(small_net) == len(sorting_network(kernels._NETWORK_MAX_FRAMES)) > 0
    stack = _stack(n, (9, 13), seed=7)
    data = np.where(np.isfinite(stack), stack, np.nan).astype(np.float64)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        np.testing.assert_allclose(
            combine(stack, "median").image, np.nanmedian(data, axis=0), rtol=1e-6, equal_nan=True
        )
        np.testing.assert_allclose(
            combine(stack, "mean").image, np.nanmean(data, axis=0), rtol=1e-6, equal_nan=True
        )
    for m in (n - 1, n):  # network (N max) and per-pixel (N max + 1) on the same data
        sub = stack[:m]
        res = combine(sub, "minmax", n_low=2, n_high=3)
        srt = np.sort(np.where(np.isfinite(sub), sub, np.inf), axis=0).astype(np.float64)
        k = np.isfinite(sub).sum(0)
        ok = k > 5
        idx = np.arange(m)[:, None, None]
        keep = (idx >= 2) & (idx < k - 3)
        expect = np.where(keep, srt, 0).sum(0) / np.maximum(keep.sum(0), 1)
        np.testing.assert_allclose(res.image[ok], expect[ok], rtol=1e-6)
        np.testing.assert_array_equal(res.count[ok], (k - 5)[ok])


def _clean_stack(n, seed):
    """Gaussian values with a few far outliers, ties and one flat pixel: no gaps."""
    rng = np.random.default_rng(seed)
    s = rng.normal(1000.0, 10.0, (n, 2, 600))
    hit = rng.random(s.shape) < 0.004
    s[hit] += rng.choice([-1.0, 1.0], hit.sum()) * rng.uniform(60, 800, hit.sum())
    s[:, 0, :40] = np.round(s[:, 0, :40])  # ties
    s[:, 1, 7] = 250.0  # zero spread
    return s.astype(np.float32)


@pytest.mark.parametrize("n", [2, 3, 8, 9, 25, 50, 64])
@pytest.mark.parametrize("sig", [(3.0, 3.0), (2.0, 1.0), (0.0, 0.5)])
def test_sigma_block_first_pass_bit_identical_to_per_pixel(n, sig, monkeypatch):
    # equal weights, every pixel complete: the first sigma-clipping pass runs across a
    # whole sorted block; its results must be the per-pixel path's, bit for bit
    stack = _clean_stack(n, seed=n)
    cases = [(None, {}), (np.full(n, 2.5), {}), (None, {"maxiters": 1})]
    fast = [
        combine(stack, "sigma", weights=w, sigma_low=sig[0], sigma_high=sig[1], **kw)
        for w, kw in cases
    ]
    monkeypatch.setattr(kernels, "_sorting_plan", lambda k: (kernels._NO_NETWORK, 37))
    for (w, kw), got in zip(cases, fast, strict=True):
        slow = combine(stack, "sigma", weights=w, sigma_low=sig[0], sigma_high=sig[1], **kw)
        for f in ("image", "count", "rejected_low", "rejected_high", "weight"):
            a, b = getattr(got, f), getattr(slow, f)
            assert a.tobytes() == b.tobytes(), (f, w, kw)
    # and the outliers really were clipped (3/3 sigma): the result is the clean mean
    if sig == (3.0, 3.0) and n >= 25:
        res = fast[0]
        assert res.rejected_low.sum() + res.rejected_high.sum() > 0
        assert abs(float(np.mean(res.image[0, 40:])) - 1000.0) < 2.0
        np.testing.assert_array_equal(fast[1].weight, 2.5 * fast[1].count)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 9, 17, 50])
def test_sorted_column_sums_equal_per_pixel_running_sums(n):
    rng = np.random.default_rng(n)
    vb = np.sort(rng.normal(100.0, 5.0, (n, 40)), axis=0).astype(np.float32)
    vb[:, 3] = 7.0  # all equal
    m = 37  # only the first m columns
    acc = np.full((5, 40), -1.0)
    sorted_column_sums(vb, m, n, *acc)
    for k in range(m):
        c1, c2 = np.empty(n + 1), np.empty(n + 1)
        ref = centred_cumsums(np.ascontiguousarray(vb[:, k]), n, c1, c2)
        got = acc[:, k]
        want = np.array([ref, c1[n], c2[n], c1[0], c2[0]])
        assert got.tobytes() == want.tobytes(), k  # the same float64 sums, bit for bit
    assert (acc[:, m:] == -1.0).all()
    d = vb[:, :m].astype(np.float64) - vb[n // 2, :m]
    np.testing.assert_allclose(acc[1, :m] - acc[3, :m], d.sum(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(acc[2, :m] - acc[4, :m], (d * d).sum(0), rtol=1e-9)
