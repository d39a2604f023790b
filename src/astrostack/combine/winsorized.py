"""Winsorized sigma clipping: Huber's location and scale, per pixel and per sorted block.

The per-pixel path (:func:`_reject_winsorized`) works on one pixel's sorted values and
their centred running sums (:func:`~.stats.centred_cumsums`).  The block path
(:func:`winsorized_block`) runs the same algorithm for every complete pixel of a sorted
block ``[N, block]`` at once: the running sums are built row by row (vectorised across
pixels), and each winsorization step and rejection pass is taken for all the pixels
still iterating before the next one, so that the long dependency chain of one pixel's
fixed-point iteration (divisions, square roots) overlaps with those of the others
instead of stalling the core.  Every pixel goes through the same float64 operations in
the same order as on the per-pixel path, so the two are bit-identical.

Used by :mod:`astrostack.combine.rejection`; no public Python API.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .stats import (
    count_above,
    count_below,
    first_ge,
    first_gt,
    sorted_median,
)

__all__ = ["winsorized_block"]

# Winsorization constants (Huber's 1.5 sigma clip and the 1.134 correction that makes
# the winsorized std of a Gaussian consistent with sigma), as in Siril and PixInsight.
_WINSOR_CLIP = 1.5
_WINSOR_CORR = 1.134
_WINSOR_TOL = 5e-4
_WINSOR_MAX_INNER = 50
# The winsorization cutoff is measured in min(Huber sigma, this x MAD sigma).  1: a
# third of outliers (2 of 6 hits, flickering pixels of real darks) are still caught,
# where the Huber sigma alone is dragged up by them; 2 would cut ten-fold the (already
# rare) loss of good values on clean N=20 data but misses those.  A fixed choice of the
# algorithm, not a tunable.
_CUTOFF_MAD_CAP = 1.0


@njit(cache=True, fastmath=False)
def _limit_ends(v, lo, hi, n_lo, n_hi, centre, scale_lo, scale_hi, min_kept):  # pragma: no cover
    """Trim end rejections so that at least ``min_kept`` values stay.

    When ``n_lo + n_hi`` rejections would leave fewer than ``min_kept`` values, only the
    most deviant ones (distance to ``centre`` in units of the low / high threshold) are
    rejected.  Returns the allowed ``(n_lo, n_hi, trimmed)``.
    """
    n = hi - lo
    allowed = n - min_kept
    if allowed < 0:
        allowed = 0
    if n_lo + n_hi <= allowed:
        return n_lo, n_hi, False
    a = 0
    b = 0
    while a + b < allowed:
        take_lo = False
        if a < n_lo and b < n_hi:
            d_lo = (centre - v[lo + a]) / scale_lo if scale_lo > 0 else np.inf
            d_hi = (v[hi - 1 - b] - centre) / scale_hi if scale_hi > 0 else np.inf
            take_lo = d_lo >= d_hi
        elif a < n_lo:
            take_lo = True
        if take_lo:
            a += 1
        else:
            b += 1
    return a, b, True


@njit(cache=True, fastmath=False, nogil=True)
def _sorted_mad_bisect(v, lo, hi, med):  # pragma: no cover - compiled
    """:func:`~.stats.sorted_mad` (same value, bit for bit) by bisection, in O(log n).

    The deviations below the median (``A[p] = med - v[split - 1 - p]``) and above it
    (``B[q] = v[split + q] - med``) are two ascending runs; the MAD is the middle of
    their merge.  Rather than merging step by step, bisect for how many of the first
    ``T = n // 2 + 1`` merged values come from ``A``; the largest two of those ``T``
    are the middle deviation(s).  The deviations are computed as ``sorted_mad`` does.
    """
    n = hi - lo
    split = lo + (n >> 1)  # v[split] >= med: walk down to the first such index
    while split > lo and v[split - 1] >= med:
        split -= 1
    n_a = split - lo
    n_b = hi - split
    t = (n >> 1) + 1
    a = max(0, t - n_b)
    b = min(t, n_a)
    while a < b:  # smallest i with B[t - i - 1] <= A[i]
        i = (a + b) >> 1
        below = med - np.float64(v[split - 1 - i])
        above = np.float64(v[split + t - i - 1]) - med
        if above > below:
            a = i + 1
        else:
            b = i
    i = a
    j = t - i
    x = med - np.float64(v[split - i]) if i > 0 else -np.inf  # A[i - 1]
    y = np.float64(v[split + j - 1]) - med if j > 0 else -np.inf  # B[j - 1]
    d = max(x, y)
    if n & 1:
        return 0.5 * (d + d)
    d_lo = min(x, y)
    if i >= 2:
        d_lo = max(d_lo, med - np.float64(v[split - i + 1]))  # A[i - 2]
    if j >= 2:
        d_lo = max(d_lo, np.float64(v[split + j - 2]) - med)  # B[j - 2]
    return 0.5 * (d_lo + d)


@njit(cache=True, fastmath=False)
def _huber_winsorized(v, lo, hi, c1, c2, ref, loc, sigma, far_lo, far_hi, n_below, n_above):
    """Huber location and scale of the sorted ``v[lo:hi]`` by iterated winsorization.

    Starts from ``(loc, sigma)`` or, when ``sigma`` is NaN, from the median and the MAD
    sigma; each step winsorizes the *original* values at ``location +- 1.5 sigma`` and
    sets ``location`` = mean and ``sigma = 1.134 *`` sample std of the winsorized values
    (1.134 makes it consistent for a Gaussian), until sigma changes by < 0.05 %: the
    fixed point of Huber's proposal 2.  Values below ``far_lo`` or above ``far_hi``
    (fixed bounds, ``-inf`` / ``+inf`` for none) are replaced by the location instead of
    the bound, so gross outliers do not pull the estimate.  The values being sorted,
    each step is O(1) amortised: the clip points are walked from the previous step's
    and running sums give the unclipped middle.  ``n_below`` / ``n_above`` more values,
    already rejected below / above ``v[lo:hi]``, count as winsorized at the clip points.
    Returns ``(location, sigma, MAD sigma)`` (the last NaN unless started from the
    median).
    """
    n_in = hi - lo
    n = n_in + n_below + n_above
    s_mad = np.nan
    if not sigma == sigma:
        loc = sorted_median(v, lo, hi)
        sigma = 1.482602218505602 * _sorted_mad_bisect(v, lo, hi, loc)
        s_mad = sigma
        if sigma <= 0.0:
            # more than half the values are equal: fall back to the sample std
            s = c1[hi] - c1[lo]
            var = (c2[hi] - c2[lo] - s * s / n_in) / (n_in - 1)
            sigma = np.sqrt(var) if var > 0.0 else 0.0
    a_c = first_ge(v, lo, hi, far_lo)  # v[lo:a_c] < far_lo -> loc
    b_c = first_gt(v, a_c, hi, far_hi)  # v[b_c:hi] > far_hi -> loc
    n_far = (a_c - lo) + (hi - b_c)
    a_t = first_ge(v, a_c, b_c, loc - _WINSOR_CLIP * sigma)
    b_t = first_gt(v, a_t, b_c, loc + _WINSOR_CLIP * sigma)
    for it in range(_WINSOR_MAX_INNER):
        if sigma <= 0.0:
            break
        t0 = loc - _WINSOR_CLIP * sigma
        t1 = loc + _WINSOR_CLIP * sigma
        # the clip points move little from one step to the next: walk, don't bisect
        # v[a_c:a_t] < t0 -> t0; v[a_t:b_t] kept as they are; v[b_t:b_c] > t1 -> t1
        while a_t > a_c and v[a_t - 1] >= t0:
            a_t -= 1
        while a_t < b_c and v[a_t] < t0:
            a_t += 1
        if b_t < a_t:
            b_t = a_t
        while b_t > a_t and v[b_t - 1] > t1:
            b_t -= 1
        while b_t < b_c and v[b_t] <= t1:
            b_t += 1
        n_lo = a_t - a_c + n_below
        n_hi = b_c - b_t + n_above
        dl = loc - ref
        d0 = t0 - ref
        d1 = t1 - ref
        s = n_far * dl + n_lo * d0 + n_hi * d1 + (c1[b_t] - c1[a_t])
        ss = n_far * dl * dl + n_lo * d0 * d0 + n_hi * d1 * d1 + (c2[b_t] - c2[a_t])
        mean = s / n
        var = (ss - s * mean) / (n - 1)
        s0 = sigma
        loc = ref + mean
        sigma = _WINSOR_CORR * np.sqrt(var) if var > 0.0 else 0.0
        if it > 0 and abs(s0 - sigma) < s0 * _WINSOR_TOL:
            break
    return loc, sigma, s_mad


@njit(cache=True, fastmath=False)
def _reject_winsorized(v, lo, hi, c1, c2, ref, sl, sh, cutoff, maxiters, min_kept):
    """Winsorized sigma clipping on the sorted ``v[lo:hi]``; returns the kept range.

    Each pass: Huber location ``m`` and scale ``sigma`` by winsorization, reject
    ``v < m - sl*sigma`` and ``v > m + sh*sigma``; stop when nothing changes, after
    ``maxiters`` passes, or when ``min_kept`` values would not remain (then only the
    most deviant are rejected).  On the first pass, when values lie beyond ``cutoff``
    times the plain Huber sigma, the estimate is refined with those values replaced by
    the location.  The cutoff bounds stay fixed during the refinement: bounds that
    followed the shrinking sigma would feed back on themselves and collapse sigma on
    clean data whose MAD is low by chance (0.2 % of N=20 Gaussian pixels then lost
    4 to 9 good values).
    """
    lo0 = lo
    hi0 = hi
    loc = 0.0
    sigma = np.nan  # the first pass starts from the median and MAD, later ones from the last
    for it in range(maxiters):
        n = hi - lo
        if n <= min_kept or n < 3:
            break
        loc, sigma, s_mad = _huber_winsorized(
            v, lo, hi, c1, c2, ref, loc, sigma, -np.inf, np.inf, lo - lo0, hi0 - hi
        )
        if not sigma > 0.0:
            break
        if it == 0 and cutoff > 0.0:
            med = sorted_median(v, lo, hi)
            s_cut = min(sigma, _CUTOFF_MAD_CAP * s_mad)
            f0 = med - cutoff * s_cut
            f1 = med + cutoff * s_cut
            if s_cut > 0.0 and (v[lo] < f0 or v[hi - 1] > f1):
                loc2, sigma2, _ = _huber_winsorized(
                    v, lo, hi, c1, c2, ref, loc, sigma, f0, f1, 0, 0
                )
                if sigma2 > 0.0:
                    loc, sigma = loc2, sigma2
        nl = count_below(v, lo, hi, loc - sl * sigma)
        nh = count_above(v, lo + nl, hi, loc + sh * sigma)
        if nl == 0 and nh == 0:
            break
        nl, nh, trimmed = _limit_ends(v, lo, hi, nl, nh, loc, sl * sigma, sh * sigma, min_kept)
        lo += nl
        hi -= nh
        if trimmed:
            break
    return lo, hi


@njit(cache=True, fastmath=False, nogil=True)
def _block_cumsums(vb, vt, m, n, c1, c2, ref):  # pragma: no cover - compiled
    """Running sums of every sorted column of ``vb[:n, :m]``, and its transpose ``vt``.

    Column ``k`` of ``c1`` / ``c2`` (``[n + 1, block]``) is what
    :func:`~.stats.centred_cumsums` gives for pixel ``k`` alone (same float64 operations
    in the same order), but computed row by row, vectorised across the pixels.
    ``vt[k, :n]`` receives pixel ``k``'s sorted values (contiguous for the per-pixel
    steps).
    """
    half = n >> 1
    mid = vb[half]
    for k in range(m):
        ref[k] = np.float64(mid[k])
        c1[half, k] = 0.0
        c2[half, k] = 0.0
    for j in range(n - half):
        up = vb[half + j]
        p1 = c1[half + j]
        p2 = c2[half + j]
        q1 = c1[half + j + 1]
        q2 = c2[half + j + 1]
        for k in range(m):
            d = np.float64(up[k]) - ref[k]
            q1[k] = p1[k] + d
            q2[k] = p2[k] + d * d
        i = half - 1 - j
        if i >= 0:
            down = vb[i]
            p1 = c1[i + 1]
            p2 = c2[i + 1]
            q1 = c1[i]
            q2 = c2[i]
            for k in range(m):
                e = np.float64(down[k]) - ref[k]
                q1[k] = p1[k] - e
                q2[k] = p2[k] - e * e
    for i in range(n):
        row = vb[i]
        for k in range(m):
            vt[k, i] = row[k]


@njit(cache=True, fastmath=False, nogil=True)
def _huber_lanes(vt, c1, c2, fst, ist, lanes, n_lanes, n_frames, far, counted, act):
    """:func:`_huber_winsorized` for the pixels ``lanes[:n_lanes]`` of a block at once.

    Per pixel ``k``: sorted values ``vt[k]``, running sums ``c1[:, k]``, ``c2[:, k]``,
    state in ``fst[:, k]`` (``ref``, ``loc``, ``sigma``, ``s_mad``, ``far_lo``,
    ``far_hi``) and ``ist[:, k]`` (``lo``, ``hi``, then the clip indices).  ``far``:
    use the pixel's far bounds (else none); ``counted``: values outside ``lo:hi`` count
    as winsorized (``n_below = lo``, ``n_above = n_frames - hi``).  ``loc`` and
    ``sigma`` are updated in place (``s_mad`` too when starting from the median).
    Each step is taken for every pixel still iterating before the next step, with the
    per-pixel function's operations in the same order.
    """
    ref = fst[0]
    loc = fst[1]
    sig = fst[2]
    smad = fst[3]
    lo_ = ist[0]
    hi_ = ist[1]
    ac_ = ist[2]
    bc_ = ist[3]
    at_ = ist[4]
    bt_ = ist[5]
    for t in range(n_lanes):
        k = lanes[t]
        act[t] = k
        v = vt[k]
        lo = lo_[k]
        hi = hi_[k]
        n_in = hi - lo
        lc = loc[k]
        sigma = sig[k]
        if not sigma == sigma:
            lc = sorted_median(v, lo, hi)
            loc[k] = lc
            sigma = 1.482602218505602 * _sorted_mad_bisect(v, lo, hi, lc)
            smad[k] = sigma
            if sigma <= 0.0:
                s = c1[hi, k] - c1[lo, k]
                var = (c2[hi, k] - c2[lo, k] - s * s / n_in) / (n_in - 1)
                sigma = np.sqrt(var) if var > 0.0 else 0.0
            sig[k] = sigma
        if far:
            a_c = first_ge(v, lo, hi, fst[4, k])
            b_c = first_gt(v, a_c, hi, fst[5, k])
        else:  # no bounds: first_ge(v, lo, hi, -inf), first_gt(v, lo, hi, inf) (no NaN)
            a_c = lo
            b_c = hi
        a_t = first_ge(v, a_c, b_c, lc - _WINSOR_CLIP * sigma)
        ac_[k] = a_c
        bc_[k] = b_c
        at_[k] = a_t
        bt_[k] = first_gt(v, a_t, b_c, lc + _WINSOR_CLIP * sigma)
    cur = n_lanes
    for it in range(_WINSOR_MAX_INNER):
        if cur == 0:
            break
        kept = 0
        for t in range(cur):
            k = act[t]
            sigma = sig[k]
            if sigma <= 0.0:
                continue
            lc = loc[k]
            r = ref[k]
            lo = lo_[k]
            hi = hi_[k]
            a_c = ac_[k]
            b_c = bc_[k]
            a_t = at_[k]
            b_t = bt_[k]
            n_below = lo if counted else 0
            n_above = n_frames - hi if counted else 0
            n = (hi - lo) + n_below + n_above
            n_far = (a_c - lo) + (hi - b_c)
            t0 = lc - _WINSOR_CLIP * sigma
            t1 = lc + _WINSOR_CLIP * sigma
            while a_t > a_c and vt[k, a_t - 1] >= t0:
                a_t -= 1
            while a_t < b_c and vt[k, a_t] < t0:
                a_t += 1
            if b_t < a_t:
                b_t = a_t
            while b_t > a_t and vt[k, b_t - 1] > t1:
                b_t -= 1
            while b_t < b_c and vt[k, b_t] <= t1:
                b_t += 1
            at_[k] = a_t
            bt_[k] = b_t
            n_lo = a_t - a_c + n_below
            n_hi = b_c - b_t + n_above
            dl = lc - r
            d0 = t0 - r
            d1 = t1 - r
            s = n_far * dl + n_lo * d0 + n_hi * d1 + (c1[b_t, k] - c1[a_t, k])
            ss = n_far * dl * dl + n_lo * d0 * d0 + n_hi * d1 * d1 + (c2[b_t, k] - c2[a_t, k])
            mean = s / n
            var = (ss - s * mean) / (n - 1)
            s0 = sigma
            loc[k] = r + mean
            sigma = _WINSOR_CORR * np.sqrt(var) if var > 0.0 else 0.0
            sig[k] = sigma
            if it > 0 and abs(s0 - sigma) < s0 * _WINSOR_TOL:
                continue
            act[kept] = k
            kept += 1
        cur = kept


@njit(cache=True, fastmath=False, nogil=True)
def winsorized_block(
    vb, cnt, m, n, sl, sh, cutoff, maxiters, min_kept, vt, c1, c2, fst, ist, lists, done
):  # pragma: no cover - compiled
    """Winsorized sigma clipping of every complete pixel of a sorted block at once.

    ``vb[:n, :m]`` holds the sorted values of ``m`` pixels (column ``k`` = pixel ``k``);
    the pixels with all ``n`` values (``cnt[k] == n``) are clipped as
    :func:`_reject_winsorized` clips them, bit for bit, every pass and every
    winsorization step taken for all of them before the next.  Scratch: ``vt`` float32
    ``[block, n]``, ``c1``, ``c2`` float64 ``[n + 1, block]``, ``fst`` float64
    ``[8, block]``, ``ist`` int64 ``[6, block]``, ``lists`` int64 ``[3, block]``.  On
    return ``done[k]`` is set for those pixels, with the kept range in
    ``ist[0, k]:ist[1, k]`` of ``vt[k]``; ``fst[0, k]`` is the middle value from which
    ``c1`` / ``c2`` are centred.
    """
    ref = fst[0]
    loc = fst[1]
    sig = fst[2]
    smad = fst[3]
    lo_ = ist[0]
    hi_ = ist[1]
    lanes = lists[0]
    act = lists[1]
    far = lists[2]
    _block_cumsums(vb, vt, m, n, c1, c2, ref)
    n_act = 0
    for k in range(m):
        if cnt[k] == n:
            done[k] = True
            lanes[n_act] = k
            n_act += 1
            lo_[k] = 0
            hi_[k] = n
            loc[k] = 0.0
            sig[k] = np.nan  # the first pass starts from the median and MAD
    for it in range(maxiters):
        kept = 0
        for t in range(n_act):
            k = lanes[t]
            nk = hi_[k] - lo_[k]
            if nk <= min_kept or nk < 3:
                continue
            lanes[kept] = k
            kept += 1
        n_act = kept
        if n_act == 0:
            break
        _huber_lanes(vt, c1, c2, fst, ist, lanes, n_act, n, False, True, act)
        kept = 0
        for t in range(n_act):
            k = lanes[t]
            if sig[k] > 0.0:
                lanes[kept] = k
                kept += 1
        n_act = kept
        if it == 0 and cutoff > 0.0:
            # values beyond the cutoff: refine with them replaced by the location
            n_far = 0
            for t in range(n_act):
                k = lanes[t]
                v = vt[k]
                lo = lo_[k]
                hi = hi_[k]
                med = sorted_median(v, lo, hi)
                s_cut = min(sig[k], _CUTOFF_MAD_CAP * smad[k])
                f0 = med - cutoff * s_cut
                f1 = med + cutoff * s_cut
                if s_cut > 0.0 and (v[lo] < f0 or v[hi - 1] > f1):
                    fst[4, k] = f0
                    fst[5, k] = f1
                    fst[6, k] = loc[k]
                    fst[7, k] = sig[k]
                    far[n_far] = k
                    n_far += 1
            if n_far > 0:
                _huber_lanes(vt, c1, c2, fst, ist, far, n_far, n, True, False, act)
                for t in range(n_far):
                    k = far[t]
                    if not sig[k] > 0.0:  # keep the plain estimate
                        loc[k] = fst[6, k]
                        sig[k] = fst[7, k]
        kept = 0
        for t in range(n_act):
            k = lanes[t]
            v = vt[k]
            lo = lo_[k]
            hi = hi_[k]
            lc = loc[k]
            sigma = sig[k]
            nl = count_below(v, lo, hi, lc - sl * sigma)
            nh = count_above(v, lo + nl, hi, lc + sh * sigma)
            if nl == 0 and nh == 0:
                continue
            nl, nh, trimmed = _limit_ends(v, lo, hi, nl, nh, lc, sl * sigma, sh * sigma, min_kept)
            lo_[k] = lo + nl
            hi_[k] = hi - nh
            if trimmed:
                continue
            lanes[kept] = k
            kept += 1
        n_act = kept
