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


@njit(cache=True, nogil=True, inline="always")
def _clip_indices(v, a_c, b_c, a_t, b_t, t0, t1):  # pragma: no cover - compiled
    """The clip indices of sorted ``v[a_c:b_c]`` for clip points ``t0``, ``t1``, walked
    from the previous ones (they move little from one step to the next): ``v[a_t]`` is
    the first value ``>= t0``, ``v[b_t]`` the first ``> t1``."""
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
    return a_t, b_t


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
        a_t, b_t = _clip_indices(v, a_c, b_c, a_t, b_t, t0, t1)
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


# Rows of the slot state of _huber_lanes: float64 ``wf`` and int64 ``wi`` ``[rows, block]``.
_W_LOC = 0
_W_SIG = 1
_W_REF = 2
_W_NFAR = 3  # values beyond the far bounds (replaced by the location), as float64
_W_NLO = 4  # values winsorized at t0 / t1, as float64
_W_NHI = 5
_W_G1 = 6  # running-sum differences over the unclipped values
_W_G2 = 7
_W_A0 = 8  # values either side of the clip indices (+-inf past the ends): while t0
_W_A1 = 9  # lies in (A0, A1] and t1 in [B0, B1) the clip indices do not move
_W_B0 = 10
_W_B1 = 11
_W_T0 = 12
_W_T1 = 13
_W_N = 14
_N_WF = 15
_I_PIX = 0
_I_AC = 1
_I_BC = 2
_I_AT = 3
_I_BT = 4
_I_NBEL = 5
_I_NABV = 6
_I_ACT = 7
_I_BAD = 8
_N_WI = 9


@njit(cache=True, fastmath=False, nogil=True)
def _set_clip(v, c1, c2, wf, wi, t, k, a_t, b_t):  # pragma: no cover - compiled
    """Slot ``t`` (pixel ``k``): clip indices ``a_t``, ``b_t`` and what follows from them."""
    a_c = wi[_I_AC, t]
    b_c = wi[_I_BC, t]
    wi[_I_AT, t] = a_t
    wi[_I_BT, t] = b_t
    wf[_W_NLO, t] = a_t - a_c + wi[_I_NBEL, t]
    wf[_W_NHI, t] = b_c - b_t + wi[_I_NABV, t]
    wf[_W_G1, t] = c1[b_t, k] - c1[a_t, k]
    wf[_W_G2, t] = c2[b_t, k] - c2[a_t, k]
    wf[_W_A0, t] = np.float64(v[a_t - 1]) if a_t > a_c else -np.inf
    wf[_W_A1, t] = np.float64(v[a_t]) if a_t < b_c else np.inf
    wf[_W_B0, t] = np.float64(v[b_t - 1]) if b_t > a_t else -np.inf
    wf[_W_B1, t] = np.float64(v[b_t]) if b_t < b_c else np.inf


@njit(cache=True, fastmath=False, nogil=True)
def _walk_clip(vt, c1, c2, wf, wi, t):  # pragma: no cover - compiled
    """Walk slot ``t``'s clip indices to its thresholds ``t0``, ``t1`` (as the per-pixel path)."""
    k = wi[_I_PIX, t]
    v = vt[k]
    a_c = wi[_I_AC, t]
    b_c = wi[_I_BC, t]
    a_t = wi[_I_AT, t]
    b_t = wi[_I_BT, t]
    t0 = wf[_W_T0, t]
    t1 = wf[_W_T1, t]
    a_t, b_t = _clip_indices(v, a_c, b_c, a_t, b_t, t0, t1)
    _set_clip(v, c1, c2, wf, wi, t, k, a_t, b_t)


@njit(cache=True, fastmath=False, nogil=True)
def _pack_slots(wf, wi, p):  # pragma: no cover - compiled
    """Move the active slots of ``[0, p)`` down to ``[0, q)``; returns ``q``."""
    q = 0
    act = wi[_I_ACT]
    for t in range(p):
        if act[t] == 0:
            continue
        if q != t:
            for r in range(_N_WF):
                wf[r, q] = wf[r, t]
            for r in range(_N_WI):
                wi[r, q] = wi[r, t]
        q += 1
    return q


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _huber_lanes(vt, c1, c2, fst, ist, lanes, n_lanes, n_frames, far, counted, given, wf, wi):
    """:func:`_huber_winsorized` for the pixels ``lanes[:n_lanes]`` of a block at once.

    Per pixel ``k``: sorted values ``vt[k]``, running sums ``c1[:, k]``, ``c2[:, k]``,
    state in ``fst[:, k]`` (``ref``, ``loc``, ``sigma``, -, ``far_lo``, ``far_hi``) and
    ``ist[:, k]`` (``lo``, ``hi``).  Starts from ``(loc, sigma)`` (the median and MAD
    sigma on the first pass, :func:`_block_start`).  ``far``: use the pixel's far bounds
    (else none); ``counted``: values outside ``lo:hi`` count as winsorized
    (``n_below = lo``, ``n_above = n_frames - hi``); ``given``: the first clip indices
    are in ``ist[4, k]``, ``ist[5, k]`` (the number of values below ``loc - 1.5 sigma``,
    not above ``loc + 1.5 sigma``; no far bounds).  ``loc`` and ``sigma`` are updated in
    place.  Scratch: ``wf`` float64 ``[15, block]``, ``wi`` int64 ``[9, block]``.

    Each step is taken for every pixel still iterating before the next step, with the
    per-pixel function's operations in the same order (so bit-identical), on slot
    arrays that are vectorised across the pixels: the clip indices rarely move from a
    step to the next, so each slot keeps the values either side of them and only the
    slots whose thresholds cross one walk (scalar); the slots that have converged are
    masked, and packed away once they are half of them.
    """
    ref = fst[0]
    loc = fst[1]
    sig = fst[2]
    lo_ = ist[0]
    hi_ = ist[1]
    p = 0
    for i in range(n_lanes):
        k = lanes[i]
        v = vt[k]
        lo = lo_[k]
        hi = hi_[k]
        n_in = hi - lo
        lc = loc[k]
        sigma = sig[k]
        if sigma <= 0.0:  # no step at all
            continue
        if far:
            a_c = first_ge(v, lo, hi, fst[4, k])
            b_c = first_gt(v, a_c, hi, fst[5, k])
        else:  # no bounds: first_ge(v, lo, hi, -inf), first_gt(v, lo, hi, inf) (no NaN)
            a_c = lo
            b_c = hi
        n_below = lo if counted else 0
        n_above = n_frames - hi if counted else 0
        if given:  # (values below t0 <= t1 are not above t1)
            a_t = min(max(ist[4, k], a_c), b_c)
            b_t = min(max(ist[5, k], a_t), b_c)
        else:
            a_t = first_ge(v, a_c, b_c, lc - _WINSOR_CLIP * sigma)
            b_t = first_gt(v, a_t, b_c, lc + _WINSOR_CLIP * sigma)
        wi[_I_PIX, p] = k
        wi[_I_AC, p] = a_c
        wi[_I_BC, p] = b_c
        wi[_I_NBEL, p] = n_below
        wi[_I_NABV, p] = n_above
        wi[_I_ACT, p] = 1
        wf[_W_LOC, p] = lc
        wf[_W_SIG, p] = sigma
        wf[_W_REF, p] = ref[k]
        wf[_W_NFAR, p] = (a_c - lo) + (hi - b_c)
        wf[_W_N, p] = n_in + n_below + n_above
        _set_clip(v, c1, c2, wf, wi, p, k, a_t, b_t)
        p += 1
    w_loc = wf[_W_LOC]
    w_sig = wf[_W_SIG]
    w_ref = wf[_W_REF]
    w_nfar = wf[_W_NFAR]
    w_nlo = wf[_W_NLO]
    w_nhi = wf[_W_NHI]
    w_g1 = wf[_W_G1]
    w_g2 = wf[_W_G2]
    w_a0 = wf[_W_A0]
    w_a1 = wf[_W_A1]
    w_b0 = wf[_W_B0]
    w_b1 = wf[_W_B1]
    w_t0 = wf[_W_T0]
    w_t1 = wf[_W_T1]
    w_n = wf[_W_N]
    w_act = wi[_I_ACT]
    w_bad = wi[_I_BAD]
    w_pix = wi[_I_PIX]
    for it in range(_WINSOR_MAX_INNER):
        if p == 0:
            break
        # thresholds, and the slots whose clip indices move (vectorised)
        n_bad = 0
        for t in range(p):
            lc = w_loc[t]
            sigma = w_sig[t]
            t0 = lc - _WINSOR_CLIP * sigma
            t1 = lc + _WINSOR_CLIP * sigma
            w_t0[t] = t0
            w_t1[t] = t1
            moved = (w_a0[t] >= t0) | (w_a1[t] < t0) | (w_b0[t] > t1) | (w_b1[t] <= t1)
            bad = np.int64(moved) & w_act[t]
            w_bad[t] = bad
            n_bad += bad
        if n_bad > 0:
            for t in range(p):
                if w_bad[t] != 0:
                    _walk_clip(vt, c1, c2, wf, wi, t)
        # the step itself (vectorised; the slots that are done keep their values)
        n_go = 0
        for t in range(p):
            r = w_ref[t]
            lc = w_loc[t]
            s0 = w_sig[t]
            n = w_n[t]
            n_far = w_nfar[t]
            n_lo = w_nlo[t]
            n_hi = w_nhi[t]
            dl = lc - r
            d0 = w_t0[t] - r
            d1 = w_t1[t] - r
            s = n_far * dl + n_lo * d0 + n_hi * d1 + w_g1[t]
            ss = n_far * dl * dl + n_lo * d0 * d0 + n_hi * d1 * d1 + w_g2[t]
            mean = s / n
            var = (ss - s * mean) / (n - 1.0)
            sigma = _WINSOR_CORR * np.sqrt(var) if var > 0.0 else 0.0
            on = w_act[t] != 0
            conv = it > 0 and abs(s0 - sigma) < s0 * _WINSOR_TOL
            # (a slot whose sigma drops to 0 would stop unchanged at the next step)
            go = on and not conv and not sigma <= 0.0
            w_loc[t] = r + mean if on else lc
            w_sig[t] = sigma if on else s0
            w_act[t] = np.int64(go)
            n_go += np.int64(go)
        if n_go == 0 or 2 * n_go <= p:
            for t in range(p):
                k = w_pix[t]
                loc[k] = w_loc[t]
                sig[k] = w_sig[t]
            p = _pack_slots(wf, wi, p) if n_go > 0 else 0
    for t in range(p):
        k = w_pix[t]
        loc[k] = w_loc[t]
        sig[k] = w_sig[t]


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _count_rows(vb, m, n, x0, x1, ca, cb):  # pragma: no cover - compiled
    """``ca[k]`` = number of ``vb[:n, k] < x0[k]``, ``cb[k]`` = of ``<= x1[k]``.

    On sorted columns these are the first index with a value ``>= x0`` and the first
    with one ``> x1`` (what :func:`~.stats.first_ge` / ``count_below`` ... find by
    walking or bisection, branch by branch), here counted row by row, vectorised across
    the pixels.
    """
    for k in range(m):
        ca[k] = 0
        cb[k] = 0
    for i in range(n):
        row = vb[i]
        for k in range(m):
            x = np.float64(row[k])
            ca[k] += np.int64(x < x0[k])
            cb[k] += np.int64(x <= x1[k])


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _block_start(vb, m, n, c1, c2, med, loc, sig, smad, dev):  # pragma: no cover - compiled
    """Median, MAD sigma and starting ``(loc, sigma)`` of every sorted column of ``vb[:n, :m]``.

    What :func:`_huber_winsorized` starts from (bit for bit), vectorised across the
    pixels.  The deviations ``|v - median|`` of a sorted column fall then rise, a
    bitonic sequence (padded with ``+inf`` to a power of two): Batcher's bitonic merge
    sorts them with ``log2`` stages of row-wise compare-exchanges, and the MAD is the
    middle of the sorted deviations (as the merge in :func:`~.stats.sorted_mad` finds
    it: ``|v - med|`` rounds as ``med - v`` does).  ``dev``: float64 scratch ``[n, block]``.
    """
    half = n >> 1
    if n & 1:
        for k in range(m):
            med[k] = np.float64(vb[half, k])
    else:
        for k in range(m):
            med[k] = 0.5 * (np.float64(vb[half - 1, k]) + np.float64(vb[half, k]))
    for i in range(n):
        row = vb[i]
        d = dev[i]
        for k in range(m):
            d[k] = abs(np.float64(row[k]) - med[k])
    size = 1
    while size < n:
        size <<= 1
    dist = size >> 1
    while dist >= 1:
        for i in range(size):
            j = i + dist
            if i & dist or j >= n:  # (past n: compared with +inf, a no-op)
                continue
            a = dev[i]
            b = dev[j]
            for k in range(m):
                x = a[k]
                y = b[k]
                a[k] = min(x, y)
                b[k] = max(x, y)
        dist >>= 1
    mid_lo = dev[(n - 1) >> 1]
    mid_hi = dev[half]
    for k in range(m):
        s_mad = 1.482602218505602 * (0.5 * (mid_lo[k] + mid_hi[k]))
        sigma = s_mad
        if sigma <= 0.0:
            # more than half the values are equal: fall back to the sample std
            s = c1[n, k] - c1[0, k]
            var = (c2[n, k] - c2[0, k] - s * s / n) / (n - 1)
            sigma = np.sqrt(var) if var > 0.0 else 0.0
        smad[k] = s_mad
        loc[k] = med[k]
        sig[k] = sigma


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
    far = lists[2]
    nb = vb.shape[1]
    wf = np.empty((_N_WF, nb), dtype=np.float64)
    wi = np.empty((_N_WI, nb), dtype=np.int64)
    med = np.empty(nb, dtype=np.float64)
    dev = np.empty((max(n, 2), nb), dtype=np.float64)
    x0 = dev[0]  # (thresholds of the row-wise counts, once dev is free)
    x1 = dev[1]
    flag = lists[1]
    _block_cumsums(vb, vt, m, n, c1, c2, ref)
    # the first pass starts from the median and MAD
    _block_start(vb, m, n, c1, c2, med, loc, sig, smad, dev)
    n_act = 0
    for k in range(m):
        if cnt[k] == n:
            done[k] = True
            lanes[n_act] = k
            n_act += 1
            lo_[k] = 0
            hi_[k] = n
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
        if it == 0:
            # every pixel's first clip indices, counted (lo = 0, hi = n)
            for k in range(m):
                x0[k] = loc[k] - _WINSOR_CLIP * sig[k]
                x1[k] = loc[k] + _WINSOR_CLIP * sig[k]
            _count_rows(vb, m, n, x0, x1, ist[4], ist[5])
        _huber_lanes(vt, c1, c2, fst, ist, lanes, n_act, n, False, True, it == 0, wf, wi)
        kept = 0
        for t in range(n_act):
            k = lanes[t]
            if sig[k] > 0.0:
                lanes[kept] = k
                kept += 1
        n_act = kept
        if it == 0 and cutoff > 0.0:
            # values beyond the cutoff: refine with them replaced by the location
            # (tested for every pixel at once, lo = 0 and hi = n)
            first = vb[0]
            last = vb[n - 1]
            for k in range(m):
                s_cut = min(sig[k], _CUTOFF_MAD_CAP * smad[k])
                f0 = med[k] - cutoff * s_cut
                f1 = med[k] + cutoff * s_cut
                fst[4, k] = f0
                fst[5, k] = f1
                flag[k] = (s_cut > 0.0) & ((first[k] < f0) | (last[k] > f1))
            n_far = 0
            for t in range(n_act):
                k = lanes[t]
                if flag[k]:
                    fst[6, k] = loc[k]
                    fst[7, k] = sig[k]
                    far[n_far] = k
                    n_far += 1
            if n_far > 0:
                _huber_lanes(vt, c1, c2, fst, ist, far, n_far, n, True, False, False, wf, wi)
                for t in range(n_far):
                    k = far[t]
                    if not sig[k] > 0.0:  # keep the plain estimate
                        loc[k] = fst[6, k]
                        sig[k] = fst[7, k]
        if it == 0:
            # every pixel's rejections, counted (lo = 0, hi = n)
            for k in range(m):
                x0[k] = loc[k] - sl * sig[k]
                x1[k] = loc[k] + sh * sig[k]
            _count_rows(vb, m, n, x0, x1, ist[2], ist[3])
        kept = 0
        for t in range(n_act):
            k = lanes[t]
            v = vt[k]
            lo = lo_[k]
            hi = hi_[k]
            lc = loc[k]
            sigma = sig[k]
            if it == 0:  # count_below, count_above(v, nl, n, ...) on the sorted v
                nl = ist[2, k]
                nh = min(n - ist[3, k], n - nl)
            else:
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
