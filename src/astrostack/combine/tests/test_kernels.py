"""Agreement of the compiled combine kernels with plain reference implementations.

Each reference below is a straightforward per-pixel NumPy/astropy/scipy transcription of
the documented algorithm; the kernels must match it to 1e-4 relative (image) and exactly
(counts) on stacks with outliers, NaN holes, fully empty pixels and single-value pixels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.stats import sigma_clip
from scipy.stats import t as student_t

from astrostack.combine.kernels import (
    CombineResult,
    ESDCombine,
    SigmaClipCombine,
    WinsorizedSigmaClipCombine,
    combine,
    combine_into,
    get_combiner,
)
from astrostack.combine.rejection import esd_critical_values

RTOL = 1e-4

pytestmark = pytest.mark.filterwarnings("ignore:Input data contains invalid values")


def make_stack(n, shape=(6, 7), seed=0, nan_frac=0.1, outlier_frac=0.06):
    """Gaussian 1000 +- 10 with +-(20..80) sigma outliers, NaN holes and edge pixels."""
    rng = np.random.default_rng(seed + 1000 * n)
    s = rng.normal(1000.0, 10.0, (n, *shape))
    hit = rng.random(s.shape) < outlier_frac
    s[hit] += rng.choice([-1.0, 1.0], hit.sum()) * rng.uniform(200, 800, hit.sum())
    s[rng.random(s.shape) < nan_frac] = np.nan
    s[:, 0, 0] = np.nan  # no data at all
    s[:, 0, 1] = np.nan
    s[n // 2, 0, 1] = 1234.5  # exactly one value
    if n >= 3:
        s[: n - 2, 0, 2] = np.nan  # two values
    return s.astype(np.float32)


def reference(stack, weights, fn):
    """Per-pixel reference: fn(values) -> kept mask (sorted-independent), n_low, n_high."""
    n = stack.shape[0]
    flat = stack.reshape(n, -1)
    if weights is None:
        wflat = np.ones_like(flat, dtype=np.float64)
    elif np.ndim(weights) == 1:
        wflat = np.repeat(np.asarray(weights, np.float64)[:, None], flat.shape[1], axis=1)
    else:
        wflat = np.asarray(weights, np.float64).reshape(n, -1)
    p = flat.shape[1]
    img = np.full(p, np.nan)
    cnt = np.zeros(p, int)
    rlo = np.zeros(p, int)
    rhi = np.zeros(p, int)
    wsum = np.zeros(p)
    for j in range(p):
        ok = np.isfinite(flat[:, j]) & (wflat[:, j] > 0)
        x = flat[ok, j].astype(np.float64)
        w = wflat[ok, j]
        if x.size == 0:
            continue
        keep, nl, nh = fn(x)
        img[j] = np.average(x[keep], weights=w[keep])
        cnt[j] = keep.sum()
        rlo[j] = nl
        rhi[j] = nh
        wsum[j] = w[keep].sum()
    shape = stack.shape[1:]
    return (
        img.reshape(shape),
        cnt.reshape(shape),
        rlo.reshape(shape),
        rhi.reshape(shape),
        wsum.reshape(shape),
    )


def from_sorted_range(x, order, lo, hi):
    """Kept mask in original order for the sorted range [lo, hi); guard as the kernel."""
    n = x.size
    if hi <= lo:
        lo, hi = (n - 1) // 2, n // 2 + 1
    keep = np.zeros(n, bool)
    keep[order[lo:hi]] = True
    return keep, lo, n - hi


def trim_ends(v, nl, nh, centre, s_lo, s_hi, min_kept):
    n = v.size
    allowed = max(n - min_kept, 0)
    if nl + nh <= allowed:
        return nl, nh, False
    a = b = 0
    while a + b < allowed:
        if a < nl and b < nh:
            d_lo = (centre - v[a]) / s_lo if s_lo > 0 else np.inf
            d_hi = (v[n - 1 - b] - centre) / s_hi if s_hi > 0 else np.inf
            take_lo = d_lo >= d_hi
        else:
            take_lo = a < nl
        if take_lo:
            a += 1
        else:
            b += 1
    return a, b, True


def huber(seg, far_lo=-np.inf, far_hi=np.inf, start=None, n_below=0, n_above=0):
    if start is None:
        loc = np.median(seg)
        sigma = 1.482602218505602 * np.median(np.abs(seg - loc))
        if sigma <= 0:
            sigma = seg.std(ddof=1)
    else:
        loc, sigma = start
    far = (seg < far_lo) | (seg > far_hi)
    for inner in range(50):
        if sigma <= 0:
            break
        wv = np.clip(seg, loc - 1.5 * sigma, loc + 1.5 * sigma)
        wv = np.where(far, loc, wv)
        # values rejected by earlier passes count as winsorized at the clip points
        wv = np.concatenate([wv, np.full(n_below, loc - 1.5 * sigma)])
        wv = np.concatenate([wv, np.full(n_above, loc + 1.5 * sigma)])
        s0 = sigma
        loc = wv.mean()
        sigma = 1.134 * wv.std(ddof=1)
        if inner > 0 and abs(s0 - sigma) < s0 * 5e-4:
            break
    return loc, sigma


def ref_winsorized(sl=3.0, sh=3.0, maxiters=10, min_kept=3, cutoff=5.0):
    def fn(x):
        order = np.argsort(x, kind="stable")
        v = x[order]
        lo, hi = 0, v.size
        start = None  # later passes start from the last estimate
        for it in range(maxiters):
            seg = v[lo:hi]
            n = seg.size
            if n <= min_kept or n < 3:
                break
            loc, sigma = huber(seg, start=start, n_below=lo, n_above=v.size - hi)
            if not sigma > 0:
                break
            if it == 0 and cutoff > 0:
                med = np.median(seg)
                s_cut = min(sigma, 1.482602218505602 * np.median(np.abs(seg - med)))
                f0, f1 = med - cutoff * s_cut, med + cutoff * s_cut
                if s_cut > 0 and (seg[0] < f0 or seg[-1] > f1):
                    loc2, sigma2 = huber(seg, f0, f1, (loc, sigma))
                    if sigma2 > 0:
                        loc, sigma = loc2, sigma2
            start = (loc, sigma)
            nl = int(np.sum(seg < loc - sl * sigma))
            nh = int(np.sum(seg > loc + sh * sigma))
            if nl == 0 and nh == 0:
                break
            nl, nh, trimmed = trim_ends(seg, nl, nh, loc, sl * sigma, sh * sigma, min_kept)
            lo += nl
            hi -= nh
            if trimmed:
                break
        return from_sorted_range(x, order, lo, hi)

    return fn


def ref_linear_fit(sl=5.0, sh=2.5, maxiters=10, min_kept=3):
    def fn(x):
        order = np.argsort(x, kind="stable")
        idx = order.copy()  # original indices of the kept, sorted values
        v = x[order]
        n_low = n_high = 0
        for _ in range(maxiters):
            n = v.size
            if n <= min_kept:
                break
            k = np.arange(n, dtype=np.float64)
            slope, intercept = np.polyfit(k, v, 1)
            fit = intercept + slope * k
            sigma = np.mean(np.abs(v - fit))
            if sigma <= 0:
                break
            r = (v - fit) / sigma
            low = -r > sl
            high = (r > sh) & ~low
            rej = low | high
            nrej = int(rej.sum())
            if nrej == 0:
                break
            trimmed = False
            if n - nrej < min_kept:
                allowed = max(n - min_kept, 0)
                sev = np.where(low, -r / sl, r / sh)
                cand = np.flatnonzero(rej)
                unflag = cand[np.argsort(sev[cand], kind="stable")[: nrej - allowed]]
                low[unflag] = False
                high[unflag] = False
                trimmed = True
            n_low += int(low.sum())
            n_high += int(high.sum())
            keep = ~(low | high)
            v = v[keep]
            idx = idx[keep]
            if trimmed:
                break
        kept = np.zeros(x.size, bool)
        kept[idx] = True
        return kept, n_low, n_high

    return fn


def ref_esd(frac=0.3, alpha=0.05):
    def fn(x):
        order = np.argsort(x, kind="stable")
        v = x[order]
        n = v.size
        r = max(min(math.floor(frac * n), n - 3), 0)
        a, b = 0, n
        sides = []
        n_out = 0
        for i in range(1, r + 1):
            rem = v[a:b]
            m = rem.mean()
            s = rem.std(ddof=1)
            if s <= 0:
                break
            d_lo, d_hi = m - v[a], v[b - 1] - m
            if d_hi >= d_lo:
                big, b = d_hi, b - 1
                sides.append(1)
            else:
                big, a = d_lo, a + 1
                sides.append(-1)
            p = 1 - alpha / (2 * (n - i + 1))
            tq = student_t.ppf(p, n - i - 1)
            lam = (n - i) * tq / math.sqrt((n - i - 1 + tq**2) * (n - i + 1))
            if big / s > lam:
                n_out = i
        lo = sum(1 for sd in sides[:n_out] if sd < 0)
        hi = n - sum(1 for sd in sides[:n_out] if sd > 0)
        return from_sorted_range(x, order, lo, hi)

    return fn


def ref_percentile(pl=0.2, ph=0.1):
    def fn(x):
        order = np.argsort(x, kind="stable")
        v = x[order]
        med = np.median(v)
        if med == 0:
            return from_sorted_range(x, order, 0, v.size)
        lo = int(np.sum((med - v) / abs(med) > pl))
        hi = v.size - int(np.sum((v - med) / abs(med) > ph))
        return from_sorted_range(x, order, lo, hi)

    return fn


def ref_minmax(nl=1, nh=1):
    def fn(x):
        order = np.argsort(x, kind="stable")
        if x.size > nl + nh:
            return from_sorted_range(x, order, nl, x.size - nh)
        return from_sorted_range(x, order, 0, x.size)

    return fn


def ref_plain(x):
    return np.ones(x.size, bool), 0, 0


def assert_matches(res, ref, check_weight=True):
    img, cnt, rlo, rhi, wsum = ref
    assert res.image.dtype == np.float32
    assert res.count.dtype == np.uint16
    np.testing.assert_array_equal(np.isnan(res.image), np.isnan(img))
    np.testing.assert_allclose(res.image, img, rtol=RTOL, equal_nan=True)
    np.testing.assert_array_equal(res.count, cnt)
    np.testing.assert_array_equal(res.rejected_low, rlo)
    np.testing.assert_array_equal(res.rejected_high, rhi)
    if check_weight:
        np.testing.assert_allclose(res.weight, wsum, rtol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 50, 500])
def test_mean_median_match_numpy(n):
    stack = make_stack(n, shape=(5, 6) if n == 500 else (9, 11))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expect_mean = np.nanmean(stack.astype(np.float64), axis=0)
        expect_median = np.nanmedian(stack.astype(np.float64), axis=0)
    r_mean = combine(stack, "mean")
    r_med = combine(stack, "median")
    np.testing.assert_allclose(r_mean.image, expect_mean, rtol=RTOL, equal_nan=True)
    np.testing.assert_allclose(r_med.image, expect_median, rtol=RTOL, equal_nan=True)
    finite = np.isfinite(stack).sum(axis=0)
    np.testing.assert_array_equal(r_mean.count, finite)
    np.testing.assert_array_equal(r_med.count, finite)
    np.testing.assert_allclose(r_med.weight, finite)
    assert r_mean.rejected_low.sum() == 0 and r_mean.rejected_high.sum() == 0
    assert np.isnan(r_mean.image[0, 0]) and r_mean.count[0, 0] == 0
    assert r_mean.image[0, 1] == np.float32(1234.5) and r_mean.count[0, 1] == 1


@pytest.mark.parametrize("n", [2, 4, 9, 30, 500])
@pytest.mark.parametrize(("sl", "sh", "maxiters"), [(3.0, 3.0, 10), (2.0, 2.5, 3)])
def test_sigma_matches_astropy(n, sl, sh, maxiters):
    stack = make_stack(n, shape=(4, 5) if n == 500 else (9, 11))
    data = stack.astype(np.float64)
    clipped = sigma_clip(
        data,
        sigma_lower=sl,
        sigma_upper=sh,
        maxiters=maxiters,
        cenfunc="median",
        stdfunc="std",
        axis=0,
        masked=True,
    )
    keep = ~np.ma.getmaskarray(clipped)
    with np.errstate(all="ignore"):
        expect = np.where(keep, data, 0).sum(0) / keep.sum(0)
        kept_min = np.where(keep, data, np.inf).min(0)
    rejected = np.isfinite(data) & ~keep
    res = combine(stack, "sigma", sigma_low=sl, sigma_high=sh, maxiters=maxiters)
    np.testing.assert_allclose(res.image, expect, rtol=RTOL, equal_nan=True)
    np.testing.assert_array_equal(res.count, keep.sum(0))
    np.testing.assert_array_equal(res.rejected_low, (rejected & (data < kept_min)).sum(0))
    np.testing.assert_array_equal(res.rejected_high, (rejected & (data > kept_min)).sum(0))
    if n >= 30:
        assert res.rejected_low.sum() > 0 and res.rejected_high.sum() > 0  # test has teeth


def test_sigma_mad_std_matches_astropy():
    stack = make_stack(25, shape=(8, 8), seed=3)
    data = stack.astype(np.float64)
    clipped = sigma_clip(data, sigma=2.5, maxiters=5, cenfunc="median", stdfunc="mad_std", axis=0)
    keep = ~np.ma.getmaskarray(clipped)
    with np.errstate(all="ignore"):
        expect = np.where(keep, data, 0).sum(0) / keep.sum(0)
    res = combine(stack, "sigma", sigma_low=2.5, sigma_high=2.5, maxiters=5, stdfunc="mad_std")
    np.testing.assert_allclose(res.image, expect, rtol=RTOL, equal_nan=True)
    np.testing.assert_array_equal(res.count, keep.sum(0))


CASES = [
    ("winsorized", {}, ref_winsorized()),
    ("winsorized", {"sigma_low": 2.0, "sigma_high": 2.5, "maxiters": 2}, ref_winsorized(2, 2.5, 2)),
    ("winsorized", {"cutoff": 0.0, "min_kept": 5}, ref_winsorized(min_kept=5, cutoff=0.0)),
    ("linear_fit", {}, ref_linear_fit()),
    ("linear_fit", {"sigma_low": 3.0, "sigma_high": 2.2}, ref_linear_fit(3.0, 2.2)),
    ("esd", {}, ref_esd()),
    ("esd", {"outlier_fraction": 0.5, "significance": 0.2}, ref_esd(0.5, 0.2)),
    ("percentile", {}, ref_percentile()),
    ("percentile", {"percentile_low": 0.05, "percentile_high": 0.02}, ref_percentile(0.05, 0.02)),
    ("minmax", {}, ref_minmax()),
    ("minmax", {"n_low": 0, "n_high": 3}, ref_minmax(0, 3)),
]


@pytest.mark.parametrize("n", [2, 3, 6, 13, 40])
@pytest.mark.parametrize(("method", "params", "ref"), CASES)
def test_rejection_matches_reference(method, params, ref, n):
    stack = make_stack(n, shape=(7, 8), seed=11)
    res = combine(stack, method, **params)
    assert res.method == method
    assert_matches(res, reference(stack, None, ref))


def test_rejection_reference_has_teeth():
    """The reference cases above do reject, low and high, at N=40 for every method."""
    stack = make_stack(40, shape=(7, 8), seed=11)
    for method, params, _ in CASES:
        res = combine(stack, method, **params)
        if method != "minmax" or params:
            assert res.rejected_high.sum() > 0, method
        assert res.rejected_low.sum() + res.rejected_high.sum() > 10, method


@pytest.mark.parametrize(
    ("method", "ref"),
    [
        ("mean", ref_plain),
        ("sigma", None),
        ("winsorized", ref_winsorized()),
        ("linear_fit", ref_linear_fit()),
        ("esd", ref_esd()),
        ("minmax", ref_minmax()),
    ],
)
@pytest.mark.parametrize("per_pixel", [False, True])
def test_weighted_mean_of_kept_values(method, ref, per_pixel):
    n = 15
    stack = make_stack(n, shape=(6, 9), seed=5)
    rng = np.random.default_rng(7)
    weights = rng.uniform(0.2, 3.0, (n, 6, 9) if per_pixel else n).astype(np.float32)
    if per_pixel:
        weights[rng.random(weights.shape) < 0.05] = 0.0  # zero weight = no data
    res = combine(stack, method, weights=weights)
    if ref is None:  # sigma: kept set from astropy on the values that have weight
        wfull = weights if per_pixel else weights[:, None, None]
        data = np.where(np.broadcast_to(wfull, stack.shape) > 0, stack, np.nan)
        keep = ~np.ma.getmaskarray(
            sigma_clip(data.astype(np.float64), sigma=3, maxiters=10, stdfunc="std", axis=0)
        )
        wb = np.broadcast_to(wfull, stack.shape).astype(np.float64)
        for j in np.ndindex(stack.shape[1:]):
            col = (slice(None), *j)
            sel = keep[col]
            if sel.any():
                expect = np.average(data[col][sel], weights=wb[col][sel])
                assert res.image[j] == pytest.approx(expect, rel=RTOL)
                assert res.weight[j] == pytest.approx(wb[col][sel].sum(), rel=1e-5)
        return
    expected = reference(stack, weights, ref)
    assert_matches(res, expected)
    unweighted = combine(stack, method)
    # rejection does not depend on weights when each frame has one (per-frame case)
    if not per_pixel:
        np.testing.assert_array_equal(res.count, unweighted.count)
        assert np.nanmax(np.abs(res.image - unweighted.image)) > 0.01  # weights matter


def test_median_with_selection_large_n_and_ties():
    rng = np.random.default_rng(2)
    stack = rng.integers(0, 5, (301, 4, 4)).astype(np.float32)  # heavy ties
    stack[:, 0, 0] = 65535.0  # saturated: all equal
    stack[rng.random(stack.shape) < 0.2] = np.nan
    with np.errstate(all="ignore"):
        expect = np.nanmedian(stack.astype(np.float64), axis=0)
    np.testing.assert_array_equal(combine(stack, "median").image, expect)
    even = stack[:300]
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(
            combine(even, "median").image, np.nanmedian(even.astype(np.float64), axis=0)
        )
    # sorting-based methods stay correct on ties / saturated pixels
    res = combine(stack, "winsorized")
    assert res.image[0, 0] == 65535.0 and res.count[0, 0] == np.isfinite(stack[:, 0, 0]).sum()


def test_esd_critical_values_match_published_table():
    """Rosner (1983) / NIST e-Handbook example: n = 54, alpha = 0.05, tests i = 1..10."""
    table = esd_critical_values(54, 0.05)
    published = [3.158, 3.151, 3.143, 3.136, 3.128, 3.120, 3.111, 3.103, 3.094, 3.085]
    lam = table[54 - np.arange(1, 11) + 1]  # the i-th test is made on n - i + 1 values
    diff = lam - np.array(published)  # the table truncates to 3 decimals
    assert np.all((diff >= 0) & (diff < 1e-3)), diff
    assert np.isinf(table[:3]).all() and table.shape == (55,)


@pytest.mark.parametrize("method", ["mean", "median", "sigma", "winsorized", "linear_fit", "esd"])
def test_n1_and_n2(method):
    one = np.array([[[5.0, np.nan]]], dtype=np.float32)
    r1 = combine(one, method)
    assert r1.image[0, 0] == 5.0 and r1.count[0, 0] == 1 and np.isnan(r1.image[0, 1])
    two = np.array([[1.0, 7.0]], dtype=np.float32).T.reshape(2, 1, 1)
    r2 = combine(two, method)
    assert r2.image[0, 0] == pytest.approx(4.0) and r2.count[0, 0] == 2


def test_small_n_percentile_and_minmax():
    two = np.array([100.0, 200.0], dtype=np.float32).reshape(2, 1)
    assert combine(two, "minmax").image[0] == pytest.approx(150.0)  # too few to reject
    # percentile with even n can reject both middle values: the median is kept
    four = np.array([100.0, 100.0, 160.0, 160.0], dtype=np.float32).reshape(4, 1)
    r = combine(four, "percentile")
    assert r.image[0] == pytest.approx(130.0) and r.count[0] == 2
    assert r.rejected_low[0] == 1 and r.rejected_high[0] == 1


def test_combine_into_equals_combine_mono_and_colour():
    rng = np.random.default_rng(4)
    mono = make_stack(12, shape=(40, 24), seed=4)
    full = combine(mono, "winsorized")
    out = CombineResult.empty((40, 24))
    for y0 in range(0, 40, 15):
        combine_into(mono[:, y0 : y0 + 15], out, y0, method="winsorized")
    for name in ("image", "rejected_low", "rejected_high", "count", "weight"):
        np.testing.assert_array_equal(getattr(out, name), getattr(full, name))
    assert out.method == "winsorized" and out.parameters["n_frames"] == 12

    colour = rng.normal(50, 3, (9, 3, 30, 10)).astype(np.float32)
    colour[2, 1, 5, 5] = 5000.0
    w = rng.uniform(0.5, 2.0, 9)
    full_c = combine(colour, "esd", weights=w)
    out_c = CombineResult.empty((3, 30, 10))
    comb = get_combiner("esd")
    for y0 in (0, 7, 20):
        y1 = {0: 7, 7: 20, 20: 30}[y0]
        comb.into(colour[:, :, y0:y1], out_c, y0, weights=w)
    np.testing.assert_array_equal(out_c.image, full_c.image)
    np.testing.assert_array_equal(out_c.count, full_c.count)
    assert full_c.rejected_high[1, 5, 5] == 1
    with pytest.raises(ValueError, match="outside"):
        combine_into(mono[:, :10], out, 35)
    with pytest.raises(ValueError, match="does not fit"):
        combine_into(mono[:, :10, :20], out, 0)


def test_weight_map_only_for_weighted_combines():
    stack = make_stack(10, shape=(30, 20), seed=8)
    plain = combine(stack, "winsorized")
    assert not plain.weight_stored  # no map: the weight of each pixel is its count
    np.testing.assert_array_equal(plain.weight, plain.count.astype(np.float32))
    assert plain.weight_stored and plain.weight.dtype == np.float32
    # a weight map allocated anyway holds the same values
    out = CombineResult.empty((30, 20))
    combine_into(stack, out, 0, method="winsorized")
    np.testing.assert_array_equal(out.weight, plain.weight)
    np.testing.assert_array_equal(out.image, plain.image)
    # outputs without a map accept unit weights only
    bare = CombineResult.empty((30, 20), weight_map=False)
    combine_into(stack, bare, 0, method="mean", weights=np.ones(10))
    assert not bare.weight_stored
    stored = combine(stack, "mean", weights=np.ones(10))
    assert stored.weight_stored and (stored.count < 10).any()  # some values missing
    np.testing.assert_array_equal(bare.weight, stored.weight)
    for w in (np.full(10, 2.0), np.ones(stack.shape, dtype=np.float32)):
        with pytest.raises(ValueError, match="need outputs with a weight map"):
            combine_into(stack, CombineResult.empty((30, 20), weight_map=False), 0, weights=w)
    # setting the map by hand stores it
    bare.weight = np.zeros((30, 20), dtype=np.float32)
    assert bare.weight_stored and not bare.weight.any()


def test_auto_picks_by_n_and_reports():
    for n, name in [(3, "percentile"), (5, "percentile"), (6, "winsorized"), (24, "winsorized")]:
        res = combine(make_stack(n, shape=(3, 3)), "auto", sigma_low=4.0)
        assert res.method == name and res.parameters["requested"] == "auto"
        assert res.parameters["n_frames"] == n
    res = combine(make_stack(25, shape=(3, 3)), "auto")
    assert res.method == "esd"
    assert get_combiner("auto", sigma_low=4).select(10).sigma_low == 4


def test_api_objects_and_errors():
    comb = get_combiner("sigma", sigma_low=2, maxiters=3)
    assert isinstance(comb, SigmaClipCombine) and comb.sigma_low == 2 and comb.sigma_high == 3
    assert get_combiner("linear_fit").sigma_low == 5.0
    assert get_combiner("linear_fit").sigma_high == 2.5
    assert get_combiner("esd") == ESDCombine(outlier_fraction=0.3, significance=0.05)
    assert get_combiner("percentile").percentile_low == 0.2
    assert WinsorizedSigmaClipCombine().sigma_low == 3.0
    # parameters of other methods are ignored (one config serves several methods)
    assert combine(make_stack(4, shape=(3, 3)), "mean", sigma_low=2).method == "mean"
    stack = make_stack(5, shape=(3, 3))
    with pytest.raises(ValueError, match="unknown method"):
        combine(stack, "kappa")
    with pytest.raises(ValueError, match="unknown parameter"):
        combine(stack, "sigma", sigma_lo=2)
    with pytest.raises(ValueError, match="weights must have shape"):
        combine(stack, "mean", weights=np.ones(4))
    with pytest.raises(ValueError, match="sigma_low"):
        SigmaClipCombine(sigma_low=-1)
    with pytest.raises(ValueError, match="stack must be"):
        combine(np.zeros((0, 3)), "mean")
    with pytest.raises(ValueError, match="real numbers"):
        combine(np.array([["a"]]), "mean")


@pytest.mark.parametrize("method", ["sigma", "winsorized", "linear_fit", "esd", "minmax"])
def test_equal_weights_and_inf_as_no_data(method):
    stack = make_stack(11, shape=(6, 7), seed=8)
    base = combine(stack, method)
    # equal per-frame weights (values sorted alone) == unweighted; weight sums scale
    scaled = combine(stack, method, weights=np.full(11, 2.5))
    np.testing.assert_allclose(scaled.image, base.image, rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(scaled.count, base.count)
    np.testing.assert_allclose(scaled.weight, 2.5 * base.weight, rtol=1e-6)
    # a zero-weight frame is no data, exactly like NaN in that frame
    w = np.ones(11)
    w[4] = 0.0
    nan4 = stack.copy()
    nan4[4] = np.nan
    r_w, r_nan = combine(stack, method, weights=w), combine(nan4, method)
    np.testing.assert_array_equal(r_w.image, r_nan.image)
    np.testing.assert_array_equal(r_w.count, r_nan.count)
    # +-inf values are no data too
    infs = nan4.copy()
    infs[4] = np.inf
    infs[4, ::2] = -np.inf
    np.testing.assert_array_equal(combine(infs, method).image, r_nan.image)
