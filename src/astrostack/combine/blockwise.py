"""Block-wise rejection passes: every complete pixel of a sorted block at once.

After the comparator network has sorted a block ``vb[N, block]`` (column ``k`` = pixel
``k``), these passes take each step of the rejection for all the block's pixels before
the next step, row by row, so that the work is vectorised across pixels and the long
dependency chain of one pixel (divisions, square roots) overlaps with those of the
others.  Every pixel goes through the float64 operations of the per-pixel path of
:mod:`astrostack.combine.rejection`, in the same order, so the two are bit-identical;
pixels that a pass cannot settle are left to the per-pixel path.

* :func:`sigma_first_pass` - the first pass of classic sigma clipping (most pixels
  reject nothing in it and are then final);
* :func:`esd_block` - the whole generalized ESD test;
* :func:`rank_means` - the mean of each pixel's kept rank range, equal weights;
* :func:`frame_means` - the weighted mean of each pixel's kept values, summed frame by
  frame from the unsorted stack (per-frame or per-pixel weights: the network need not
  carry them).

The kernels are compiled with numba's ``error_model='numpy'``: a division by zero
gives inf/NaN instead of raising, so the loops over lanes have no early exit and are
vectorised; none of these passes divides by zero where its result is used.

Used by :mod:`astrostack.combine.rejection`; no public Python API.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .stats import first_ge, sorted_column_sums

__all__ = ["esd_block", "frame_means", "frame_order_mean", "rank_means", "sigma_first_pass"]


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def sigma_first_pass(vb, m, n, sl, sh, ref, u1, u2, b1, b2, done, val):  # pragma: no cover
    """First sigma-clipping pass of every lane of a sorted block, vectorised across lanes.

    ``vb[:n, :m]`` holds the sorted values of ``m`` pixels (column ``k`` = pixel ``k``).
    The running sums' totals come from :func:`~.stats.sorted_column_sums` and the pass
    is that of :func:`~.rejection._reject_sigma`, with the same float64 operations, so
    the results are bit-identical to the per-pixel path's.  ``done[k]`` is set when the
    pass rejects nothing - the pixel is then final and ``val[k]`` is its unweighted
    mean; the other lanes (about 1 in 8 for Gaussian noise and N = 50) are left to the
    per-pixel path.  Lanes with fewer than ``n`` values (``+inf`` at the end) get
    meaningless results: the caller clears their ``done``.
    """
    sorted_column_sums(vb, m, n, ref, u1, u2, b1, b2)
    half = n >> 1
    row_ref = vb[half]
    first = vb[0]
    last = vb[n - 1]
    below = vb[half - 1] if half >= 1 else row_ref
    odd = (n & 1) == 1
    for k in range(m):
        if odd:
            med = np.float64(row_ref[k])
        else:
            med = 0.5 * (np.float64(below[k]) + np.float64(row_ref[k]))
        s = u1[k] - b1[k]
        var = ((u2[k] - b2[k]) - s * s / n) / n
        std = np.sqrt(var) if var > 0.0 else 0.0
        done[k] = not (first[k] < med - sl * std) and not (last[k] > med + sh * std)
        val[k] = ref[k] + s / n


# Relative margins inside which a decision of the fast ESD step is left to the exact
# step: far above the float64 rounding of either way of computing it (~1e-15), far below
# any real difference.  Properties of the algorithm, not tunables.
_SURE_DIFF = 1e-12
_SURE_SUMS = 1e-10
_SURE_RATIO = 1e-9
# kc packs (step, low count) as step * _STEP + low count (counts < 65536)
_STEP = 65536


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _esd_exact_step(k, i, n, lim, s1, s2, xlo, xhi, ak, kc, st):  # pragma: no cover
    """Step ``i`` of :func:`~.rejection._reject_esd` for lane ``k``, exactly as it is there."""
    left = n - i + 1
    s1k = s1[k]
    s2k = s2[k]
    mean = s1k / left
    var = (s2k - s1k * mean) / (left - 1)
    if var <= 0.0:
        st[k] = 0
        return
    s = np.sqrt(var)
    d_lo = mean - xlo[k]
    d_hi = xhi[k] - mean
    if d_hi >= d_lo:
        x = xhi[k]
        big = d_hi
    else:
        x = xlo[k]
        big = d_lo
        ak[k] += 1
    s1[k] = s1k - x
    s2[k] = s2k - x * x
    st[k] = 1 | (4 if x * x > 1e6 * s2k / left else 0)
    if big / s > lim:
        kc[k] = i * _STEP + ak[k]


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _esd_fast_step(m, i, n, lim, s1, s2, xlo, xhi, ak, kc, st):  # pragma: no cover - compiled
    """Step ``i`` of the ESD test for lanes ``[0, m)`` whose decisions are clear.

    The lane state is ``s1``, ``s2`` (running sums), ``ak`` (values set aside at the low
    end), ``kc`` (the last step whose test passed and the low count then) and ``st``
    (bit 0 testing, 1 left to the exact step, 2 sums to recompute); ``xlo`` / ``xhi``
    are the lowest and highest values still in, minus the reference.  Separate 1-D
    arrays, so that the loop is vectorised.  Returns the number of lanes with bit 1 or 2
    set.
    """
    left = np.float64(n - i + 1)
    leftm = left - 1.0
    inv_left = 1.0 / left
    lim2 = lim * lim
    flagged = 0
    for k in range(m):
        s1k = s1[k]
        s2k = s2[k]
        x_lo = xlo[k]
        x_hi = xhi[k]
        mean = s1k * inv_left
        sm = s1k * mean
        num = s2k - sm  # the variance times leftm
        e_num = _SURE_SUMS * (abs(s2k) + abs(sm))
        d_lo = mean - x_lo
        d_hi = x_hi - mean
        e_d = _SURE_DIFF * (abs(x_lo) + abs(x_hi) + abs(mean))
        up = d_hi >= d_lo
        x = x_hi if up else x_lo
        big = d_hi if up else d_lo
        alive = num > e_num
        gone = num < -e_num
        b_lo = big - e_d
        b_hi = big + e_d
        # bitwise & and |: no branches (the outcomes are unpredictable)
        hit = (b_lo > 0.0) & (b_lo * b_lo * leftm > lim2 * (num + e_num) * (1.0 + _SURE_RATIO))
        miss = (b_hi <= 0.0) | (b_hi * b_hi * leftm < lim2 * (num - e_num) * (1.0 - _SURE_RATIO))
        xx = x * x * left
        q = 1e6 * s2k
        far = xx > q * (1.0 + _SURE_RATIO)
        near = xx < q * (1.0 - _SURE_RATIO)
        clear = abs(d_hi - d_lo) > 2.0 * e_d
        sure = gone | (alive & clear & (hit | miss) & (far | near))
        on = (st[k] & 1) != 0
        go = on & sure & alive
        a = ak[k] + np.int64(go & (not up))
        ak[k] = a
        s1[k] = s1k - x if go else s1k
        s2[k] = s2k - x * x if go else s2k
        kc[k] = i * _STEP + a if go & hit else kc[k]
        unsure = on & (not sure)
        redo = go & far
        st[k] = np.int64(on & (not (sure & gone))) | (np.int64(unsure) << 1) | (np.int64(redo) << 2)
        flagged += np.int64(unsure | redo)
    return flagged


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _column_sums(vb, k, lo, hi, ref):  # pragma: no cover - compiled
    """Sums of ``d`` and ``d**2`` over ``vb[lo:hi, k]`` with ``d = v - ref``, in row order."""
    u1 = 0.0
    u2 = 0.0
    for j in range(lo, hi):
        d = np.float64(vb[j, k]) - ref
        u1 += d
        u2 += d * d
    return u1, u2


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _centred_sums(vb, m, n, ref, s1, s2):  # pragma: no cover - compiled
    """Median ``ref`` and the sums of ``v - ref`` and its square of the first ``m`` lanes."""
    half = n >> 1
    odd = (n & 1) == 1
    below = vb[half - 1]
    middle = vb[half]
    for k in range(m):
        if odd:
            ref[k] = np.float64(middle[k])
        else:
            ref[k] = 0.5 * (np.float64(below[k]) + np.float64(middle[k]))
        s1[k] = 0.0
        s2[k] = 0.0
    # four rows per sweep over the lanes, so that the sums stay in registers; every sum
    # still takes its terms one by one, in row order (as the per-pixel path)
    i = 0
    while i + 4 <= n:
        x0, x1, x2, x3 = vb[i], vb[i + 1], vb[i + 2], vb[i + 3]
        for k in range(m):
            r = ref[k]
            d0 = np.float64(x0[k]) - r
            d1 = np.float64(x1[k]) - r
            d2 = np.float64(x2[k]) - r
            d3 = np.float64(x3[k]) - r
            s1[k] = s1[k] + d0 + d1 + d2 + d3
            s2[k] = s2[k] + d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3
        i += 4
    while i < n:
        row = vb[i]
        for k in range(m):
            d = np.float64(row[k]) - ref[k]
            s1[k] += d
            s2[k] += d * d
        i += 1


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def esd_block(vb, cnt, m, n, lam, frac, fl, il, done):  # pragma: no cover - compiled
    """Generalized ESD test of every complete pixel of a sorted block at once.

    ``vb[:n, :m]`` holds the sorted values of ``m`` pixels; the pixels with all ``n``
    values (``cnt[k] == n``) are tested as :func:`~.rejection._reject_esd` tests them,
    bit for bit, each of the ``r`` steps (set aside the extreme farthest from the mean,
    compare its Studentized deviate with ``lam``) taken for all of them before the next.
    With ``n`` values at every pixel, step ``i`` always has ``n - i + 1`` values left and
    the values still in are ``v[a:a + n - i + 1]`` with ``a`` set aside at the low end.

    What a step changes (which end is set aside, whether the test passes, whether the
    variance is gone, whether the running sums must be recomputed) depends only on
    comparisons; the step computes them without a division or square root per pixel (a
    reciprocal, squared deviates) and takes them when they hold with a margin far
    beyond rounding, which they do at all but a few pixels in a million.  Those few
    take the exact step (:func:`_esd_exact_step`), so every decision, and hence every
    result, is the per-pixel path's.

    Scratch: ``fl`` float64 ``[5, block]``, ``il`` int64 ``[3, block]``.  On return
    ``done[k]`` is set for the complete pixels and their kept range is
    ``il[1, k]:il[2, k]``.
    """
    ref, s1, s2, xlo, xhi = fl[0], fl[1], fl[2], fl[3], fl[4]
    ak, kc, st = il[0], il[1], il[2]
    for k in range(m):
        done[k] = cnt[k] == n
        ak[k] = 0
        kc[k] = 0
        st[k] = np.int64(done[k])
    r = min(int(np.floor(frac * n)), n - 3)
    if r >= 1 and n < lam.shape[0]:
        _centred_sums(vb, m, n, ref, s1, s2)
        flat = vb.reshape(-1)
        width = vb.shape[1]
        for i in range(1, r + 1):
            top = n - i  # v[a + top] is the highest value still in
            up = np.uint64(top * width)
            for k in range(m):
                # flat unsigned indices: no negative-index handling in the gathers
                j = np.uint64(ak[k] * width + k)
                xlo[k] = np.float64(flat[j]) - ref[k]
                xhi[k] = np.float64(flat[j + up]) - ref[k]
            if _esd_fast_step(m, i, n, lam[n - i + 1], s1, s2, xlo, xhi, ak, kc, st) == 0:
                continue
            for k in range(m):
                if st[k] & 2:
                    _esd_exact_step(k, i, n, lam[n - i + 1], s1, s2, xlo, xhi, ak, kc, st)
                if st[k] & 4:
                    # a far outlier dominated the sums: recompute them rather than subtract
                    s1[k], s2[k] = _column_sums(vb, k, ak[k], ak[k] + top, ref[k])
    # kept range: v[klo : khi] with klo set aside at the low end by the last passed step
    for k in range(m):
        code = kc[k]
        step = code // _STEP
        lo = code - step * _STEP
        il[1, k] = lo
        il[2, k] = n - step + lo


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def rank_means(vb, m, lo, hi, w_common, val, wsum):  # pragma: no cover - compiled
    """Mean ``val[k]`` of ``vb[lo[k]:hi[k], k]`` with every value weighing ``w_common``.

    Each lane accumulates in rank order exactly as :func:`~.rejection._weighted_mean`
    does for one pixel (ranks outside the range add an exact ``0.0``), so the results
    are bit-identical to it; ``wsum[k]`` is the weight sum.  Rows up to ``max(hi)`` are
    read.
    """
    top = 0
    for k in range(m):
        val[k] = 0.0
        wsum[k] = 0.0
        top = max(top, hi[k])
    for i in range(top):
        vrow = vb[i]
        for k in range(m):
            inside = (lo[k] <= i) & (i < hi[k])
            val[k] += w_common * np.float64(vrow[k]) if inside else 0.0
            wsum[k] += w_common if inside else 0.0
    for k in range(m):
        val[k] = val[k] / wsum[k]


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def frame_means(stack, g, q0, m, wframe, wpix, use_pix, low, high, val, wsum):  # pragma: no cover
    """Weighted mean ``val[k]`` of the values of pixel ``q0 + k`` within ``[low, high]``.

    The values of every frame with data (finite value, finite weight > 0) between the
    pixel's bounds ``low[k]`` and ``high[k]`` (float32, both included) are summed frame
    by frame, each with its frame's weight ``wframe[i]`` or, with ``use_pix``, its own
    weight ``wpix[i, g, q]``, as :func:`frame_order_mean` sums them for one
    pixel whose kept values are exactly those between the bounds; ``wsum[k]`` is the
    weight sum.
    """
    for k in range(m):
        val[k] = 0.0
        wsum[k] = 0.0
    for i in range(stack.shape[0]):
        row = stack[i, g, q0 : q0 + m]
        if use_pix:
            prow = wpix[i, g, q0 : q0 + m]
            for k in range(m):
                x = row[k]
                wt = np.float64(prow[k])
                ok = (x >= low[k]) & (x <= high[k]) & np.isfinite(wt) & (wt > 0.0)
                val[k] += wt * np.float64(x) if ok else 0.0
                wsum[k] += wt if ok else 0.0
        else:
            wt = wframe[i]
            if not (np.isfinite(wt) and wt > 0.0):
                continue
            for k in range(m):
                x = row[k]
                ok = (x >= low[k]) & (x <= high[k])
                val[k] += wt * np.float64(x) if ok else 0.0
                wsum[k] += wt if ok else 0.0
    for k in range(m):
        val[k] = val[k] / wsum[k]


@njit(cache=True, fastmath=False)
def frame_order_mean(stack, wframe, wpix, use_pix, g, q, v, n, lo, hi):  # pragma: no cover
    """Weighted mean and weight sum of the kept values ``v[lo:hi]`` of pixel ``(g, q)``.

    ``v[:n]`` are the pixel's values with data, sorted.  The kept values are summed in
    frame order (as :func:`frame_means` sums them for a block), read from the unsorted
    ``stack`` with their weights, so the values need not carry their weights through
    the sort.  Of values equal to a bound of the kept range, those kept
    are the ones a stable sort would have put inside it (the first ones at the high
    bound, the last ones at the low bound).
    """
    v_lo = v[lo]
    v_hi = v[hi - 1]
    p_lo = first_ge(v, 0, n, v_lo)  # ranks of the first value equal to each bound
    p_hi = first_ge(v, 0, n, v_hi)
    o_lo = 0
    o_hi = 0
    s = 0.0
    sw = 0.0
    for i in range(stack.shape[0]):
        x = stack[i, g, q]
        wt = np.float64(wpix[i, g, q]) if use_pix else wframe[i]
        if not (np.isfinite(x) and np.isfinite(wt) and wt > 0.0):
            continue
        if x < v_lo or x > v_hi:
            continue
        if x == v_lo:
            rank = p_lo + o_lo
            o_lo += 1
            if rank < lo or rank >= hi:
                continue
        elif x == v_hi:
            rank = p_hi + o_hi
            o_hi += 1
            if rank >= hi:
                continue
        s += wt * np.float64(x)
        sw += wt
    return s / sw, sw
