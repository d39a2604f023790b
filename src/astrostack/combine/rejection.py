"""Compiled per-pixel rejection and combination (the numba kernel behind ``combine``).

Layout: the stack is ``float32 [N, G, Q]`` (N frames; G planes, e.g. colour channels;
Q pixels per plane), outputs are flat float32/uint16 arrays and plane ``g`` of the result
starts at ``out_start[g]``, so a band of rows can be written straight into full-size
output arrays.  ``prange`` runs over blocks of pixels of a plane; each block owns its
scratch buffers, so there is no allocation per pixel.

Per block: gather the values as ``[N, block]`` (contiguous reads; a NaN value, an
infinite value or a weight <= 0 / NaN all mean "no data" and become ``+inf``), then sort
every pixel's values at once with a comparator network whose compare-exchanges are
elementwise min/max of two rows (vectorised across pixels), carrying weights or frame
indices along when weights differ and the method needs them.  Above 1024 frames each
pixel is sorted alone (quicksort).  Per pixel: reject on the sorted values, where every
method keeps a contiguous range whose mean and variance come from running sums, then take
the weighted mean of the kept values in float64 (the plain median for ``median``).  The
mean needs no sort: it is accumulated across the block's pixels frame by frame.

Sigma clipping and the ESD test do not look at the weights: with unequal weights their
kept values are summed in frame order from the unsorted stack (the sum of all the values
accumulated while gathering, :func:`~.blockwise.frame_means` for a block's pixels that
rejected some), so the sort carries nothing.  Values equal to a bound of the kept range
count as a stable sort orders them.  (Until this change the sum ran in sorted order: the
float64 sums differ in rounding only, the float32 results by at most an ulp.)

Block-wise passes (:mod:`.blockwise`, :mod:`.winsorized`) take each step of the
rejection for all the block's complete pixels side by side, bit-identical to the
per-pixel path: the first pass of classic sigma clipping (only pixels that reject
something go on pixel by pixel), the whole ESD test and winsorized clipping (any
weights).

Method codes and the parameter vectors are built by :mod:`astrostack.combine.kernels`;
this module has no public Python API.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .blockwise import esd_block, frame_means, frame_order_mean, rank_means, sigma_first_pass
from .stats import (
    centred_cumsums,
    count_above,
    count_below,
    esd_critical_values,
    extremes_to_ends,
    median_inplace,
    sort_columns,
    sort_pairs,
    sort_values,
    sorted_mad,
    sorted_median,
)
from .winsorized import _reject_winsorized, winsorized_block

__all__ = [
    "FP_CUTOFF",
    "FP_ESD_FRAC",
    "FP_PERC_HIGH",
    "FP_PERC_LOW",
    "FP_SIGMA_HIGH",
    "FP_SIGMA_LOW",
    "IP_MAXITERS",
    "IP_MIN_KEPT",
    "IP_N_HIGH",
    "IP_N_LOW",
    "IP_STDFUNC",
    "METHOD_CODES",
    "combine_pixels",
    "esd_critical_values",
]

#: Method name -> integer code used by the compiled kernel.
METHOD_CODES = {
    "mean": 0,
    "median": 1,
    "sigma": 2,
    "winsorized": 3,
    "linear_fit": 4,
    "esd": 5,
    "percentile": 6,
    "minmax": 7,
}

_MAX_FRAMES = 65535  # most frames in one stack: counts are uint16

# indices into the float parameter vector
FP_SIGMA_LOW = 0
FP_SIGMA_HIGH = 1
FP_PERC_LOW = 2
FP_PERC_HIGH = 3
FP_CUTOFF = 4
FP_ESD_FRAC = 5
# indices into the integer parameter vector
IP_MAXITERS = 0
IP_N_LOW = 1
IP_N_HIGH = 2
IP_STDFUNC = 3  # 0 = classic std (ddof=0), 1 = MAD std
IP_MIN_KEPT = 4


@njit(cache=True, fastmath=False)
def _reject_sigma(v, lo, hi, c1, c2, ref, sl, sh, maxiters, stdfunc):  # pragma: no cover
    """astropy-compatible iterative sigma clipping on the sorted ``v[lo:hi]``.

    Centre = median, scale = population std (``stdfunc`` 0, from the running sums) or
    MAD std (1); keeps ``median - sl*std <= v <= median + sh*std``; repeats until
    nothing changes or ``maxiters`` passes.  Returns the kept range.
    """
    for _ in range(maxiters):
        n = hi - lo
        if n < 2:
            break
        med = sorted_median(v, lo, hi)
        if stdfunc == 1:
            std = 1.482602218505602 * sorted_mad(v, lo, hi, med)
        else:
            s = c1[hi] - c1[lo]
            var = (c2[hi] - c2[lo] - s * s / n) / n
            std = np.sqrt(var) if var > 0.0 else 0.0
        nl = count_below(v, lo, hi, med - sl * std)
        nh = count_above(v, lo + nl, hi, med + sh * std)
        if nl == 0 and nh == 0:
            break
        lo += nl
        hi -= nh
    return lo, hi


@njit(cache=True, fastmath=False)
def _reject_linear_fit(v, w, flag, lo, hi, sl, sh, maxiters, min_kept):  # pragma: no cover
    """Linear fit clipping (PixInsight / Siril) on the sorted ``v[lo:hi]``.

    Fits ``v[k] ~ a + b k`` (k = rank among kept values) by least squares, takes
    sigma = mean absolute residual, rejects ``(fit - v)/sigma > sl`` (low) and
    ``(v - fit)/sigma > sh`` (high), compacts the kept values (still sorted) and repeats.
    Returns ``(new_hi, n_low, n_high)``: kept values are ``v[lo:new_hi]`` afterwards.
    """
    n_low = 0
    n_high = 0
    for _ in range(maxiters):
        n = hi - lo
        if n <= min_kept:
            break
        # least squares on x = 0..n-1
        xm = 0.5 * (n - 1)
        ym = 0.0
        for k in range(lo, hi):
            ym += v[k]
        ym /= n
        sxy = 0.0
        for k in range(lo, hi):
            sxy += (k - lo - xm) * (v[k] - ym)
        sxx = n * (n * n - 1.0) / 12.0
        b = sxy / sxx
        a = ym - b * xm
        sigma = 0.0
        for k in range(lo, hi):
            sigma += abs(v[k] - (a + b * (k - lo)))
        sigma /= n
        if sigma <= 0.0:
            break
        nrej = 0
        for k in range(lo, hi):
            r = (v[k] - (a + b * (k - lo))) / sigma
            if -r > sl:
                flag[k] = -1
                nrej += 1
            elif r > sh:
                flag[k] = 1
                nrej += 1
            else:
                flag[k] = 0
        if nrej == 0:
            break
        trimmed = False
        if n - nrej < min_kept:
            # keep only the most deviant (in threshold units) n - min_kept rejections
            allowed = n - min_kept
            if allowed < 0:
                allowed = 0
            for _t in range(nrej - allowed):
                best = -1
                best_s = np.inf
                for k in range(lo, hi):
                    if flag[k] != 0:
                        r = (v[k] - (a + b * (k - lo))) / sigma
                        s = -r / sl if flag[k] < 0 else r / sh
                        if s < best_s:
                            best_s = s
                            best = k
                flag[best] = 0
            trimmed = True
        out = lo
        for k in range(lo, hi):
            if flag[k] == 0:
                v[out] = v[k]
                w[out] = w[k]
                out += 1
            elif flag[k] < 0:
                n_low += 1
            else:
                n_high += 1
        hi = out
        if trimmed:
            break
    return hi, n_low, n_high


@njit(cache=True, fastmath=False)
def _reject_esd(v, lo, hi, lam, frac, side):  # pragma: no cover - compiled
    """Generalized extreme Studentized deviate test on the sorted ``v[lo:hi]``.

    With ``n`` values, ``r = min(floor(frac * n), n - 3)`` extremes are tested: for
    i = 1..r, R_i = max |x - mean| / s (sample std, ddof=1) over the remaining values
    (the extreme is always the lowest or the highest), then the extreme is set aside.
    The number of outliers is the largest i with ``R_i > lam[n - i + 1]``.  Returns the
    kept range.
    """
    n = hi - lo
    r = min(int(np.floor(frac * n)), n - 3)
    if r < 1 or n >= lam.shape[0]:
        return lo, hi
    a = lo
    b = hi
    n_out = 0
    # centre on the median so that the running sums stay accurate
    ref = sorted_median(v, lo, hi)
    s1 = 0.0
    s2 = 0.0
    for k in range(lo, hi):
        d = v[k] - ref
        s1 += d
        s2 += d * d
    for i in range(1, r + 1):
        lim = lam[n - i + 1]
        m = b - a
        mean = s1 / m
        var = (s2 - s1 * mean) / (m - 1)
        if var <= 0.0:
            break
        s = np.sqrt(var)
        d_lo = mean - (v[a] - ref)
        d_hi = (v[b - 1] - ref) - mean
        if d_hi >= d_lo:
            x = v[b - 1] - ref
            big = d_hi
            side[i] = 1
            b -= 1
        else:
            x = v[a] - ref
            big = d_lo
            side[i] = -1
            a += 1
        if x * x > 1e6 * s2 / m:
            # a far outlier dominated the sums: recompute them rather than subtract
            s1 = 0.0
            s2 = 0.0
            for k in range(a, b):
                d = v[k] - ref
                s1 += d
                s2 += d * d
        else:
            s1 -= x
            s2 -= x * x
        if big / s > lim:
            n_out = i
    new_lo = lo
    new_hi = hi
    for i in range(1, n_out + 1):
        if side[i] > 0:
            new_hi -= 1
        else:
            new_lo += 1
    return new_lo, new_hi


@njit(cache=True, fastmath=False)
def _reject_percentile(v, lo, hi, pl, ph):  # pragma: no cover - compiled
    """One pass: reject ``(med - v)/|med| > pl`` and ``(v - med)/|med| > ph``."""
    med = sorted_median(v, lo, hi)
    if med == 0.0 or not np.isfinite(med):
        return lo, hi
    am = abs(med)
    nl = count_below(v, lo, hi, med - pl * am)
    nh = count_above(v, lo + nl, hi, med + ph * am)
    return lo + nl, hi - nh


@njit(cache=True, fastmath=False)
def _weighted_mean(v, w, lo, hi):  # pragma: no cover - compiled
    s = 0.0
    sw = 0.0
    for k in range(lo, hi):
        s += np.float64(w[k]) * np.float64(v[k])
        sw += w[k]
    return s / sw, sw


@njit(cache=True, fastmath=False)
def _reject_and_mean(
    v, w, n, uniform, method, sl, sh, pl, ph, cutoff, esd_lam, esd_frac, ipar, scratch
):  # pragma: no cover - compiled
    """Reject among the sorted ``v[:n]`` (weights ``w``) and combine the kept values.

    ``v[:n]`` must be sorted ascending unless ``method`` is mean, or minmax with at most
    8 rejections, which need no order.  ``uniform``: all weights ``w[:n]`` are equal.
    ``scratch`` holds the float64 running sums (rows 0 and 1) and the ESD side flags
    or linear-fit flags (row 2), each of length >= n + 1.
    Returns ``(value, weight sum, n rejected low, n rejected high, n kept)``.
    """
    maxiters = ipar[IP_MAXITERS]
    n_low_mm = ipar[IP_N_LOW]
    n_high_mm = ipar[IP_N_HIGH]
    min_kept = ipar[IP_MIN_KEPT]
    if method == 0:  # mean
        val, sw = _weighted_mean(v, w, 0, n)
        return val, sw, 0, 0, n
    if method == 1:  # median (unweighted), no rejection
        sw = 0.0
        for k in range(n):
            sw += w[k]
        return sorted_median(v, 0, n), sw, 0, 0, n
    c1 = scratch[0]
    c2 = scratch[1]
    ref = 0.0
    lo = 0
    hi = n
    n_rl = 0
    n_rh = 0
    if method == 2:
        ref = centred_cumsums(v, n, c1, c2)
        lo, hi = _reject_sigma(v, 0, n, c1, c2, ref, sl, sh, maxiters, ipar[IP_STDFUNC])
    elif method == 3:
        ref = centred_cumsums(v, n, c1, c2)
        lo, hi = _reject_winsorized(v, 0, n, c1, c2, ref, sl, sh, cutoff, maxiters, min_kept)
    elif method == 4:
        hi, n_rl, n_rh = _reject_linear_fit(v, w, scratch[2], 0, n, sl, sh, maxiters, min_kept)
    elif method == 5:
        lo, hi = _reject_esd(v, 0, n, esd_lam, esd_frac, scratch[2])
    elif method == 6:
        lo, hi = _reject_percentile(v, 0, n, pl, ph)
    elif method == 7:
        if n > n_low_mm + n_high_mm:
            lo = n_low_mm
            hi = n - n_high_mm
    if hi <= lo:
        # everything rejected (possible for percentile with even n, or tiny sigmas):
        # keep the middle value(s), i.e. return the median
        lo = (n - 1) >> 1
        hi = (n >> 1) + 1
    if method != 4:
        n_rl = lo
        n_rh = n - hi
    if uniform and (method == 2 or method == 3):
        # equal weights: the mean of the kept range comes from the running sums
        kept = hi - lo
        return ref + (c1[hi] - c1[lo]) / kept, w[0] * kept, n_rl, n_rh, kept
    val, sw = _weighted_mean(v, w, lo, hi)
    return val, sw, n_rl, n_rh, hi - lo


@njit(parallel=True, cache=True, fastmath=False, nogil=True)
def combine_pixels(
    stack,
    wframe,
    wpix,
    use_pix,
    uniform,
    method,
    fpar,
    ipar,
    esd_lam,
    network,
    block,
    blockwise,
    out_start,
    out_img,
    out_lo,
    out_hi,
    out_cnt,
    out_w,
    write_w,
):  # pragma: no cover - compiled
    """Reject and combine every pixel of ``stack[N, G, Q]`` into the flat outputs.

    ``wframe`` float64[N] per-frame weights, used unless ``use_pix``; then ``wpix``
    float32[N, G, Q] per-pixel weights.  ``uniform`` declares all positive weights
    equal (values are then sorted without carrying weights).  Pixel ``(g, q)`` is
    written at ``out_start[g] + q``; ``out_w`` only when ``write_w`` (otherwise the
    caller derives the weights from the counts).

    ``prange`` runs over blocks of ``block`` consecutive pixels of a plane.  A block is
    gathered as ``[N, block]`` (contiguous reads, no data -> ``+inf``, weights or frame
    indices alongside).  When ``network`` (from :func:`~.stats.sorting_network`, empty
    to disable) has comparators, all the pixels of the block are sorted at once by
    row-wise compare-exchanges; otherwise each pixel's values are sorted alone
    (quicksort) or, for the median and minmax, only selected.  With ``blockwise``, the
    sorted blocks of sigma clipping (first pass), winsorized clipping and the ESD test
    are then rejected across all their complete pixels at once (:mod:`.blockwise`,
    :mod:`.winsorized`), bit-identical to the per-pixel path that settles the rest.
    """
    n_frames = stack.shape[0]
    n_planes = stack.shape[1]
    n_q = stack.shape[2]
    per_plane = (n_q + block - 1) // block
    n_blocks = n_planes * per_plane
    sl = fpar[FP_SIGMA_LOW]
    sh = fpar[FP_SIGMA_HIGH]
    pl = fpar[FP_PERC_LOW]
    ph = fpar[FP_PERC_HIGH]
    cutoff = fpar[FP_CUTOFF]
    esd_frac = fpar[FP_ESD_FRAC]
    n_low_mm = ipar[IP_N_LOW]
    n_high_mm = ipar[IP_N_HIGH]
    use_net = network.shape[0] > 0 and method != 0
    # sigma clipping and the ESD test reject without looking at the weights and keep a
    # range of ranks: with unequal weights, the kept values are summed in frame order
    # from the stack (frame_order_mean, frame_means), so no weights travel with the
    # sorted values.  Other methods carry weights (or frame indices) through the sort.
    by_frame = (use_pix or not uniform) and (method == 2 or method == 5)
    carry = (use_pix or not uniform) and not by_frame
    blockwise = blockwise and use_net
    # classic sigma clipping: most pixels reject nothing in the first pass, which is then
    # done for a whole sorted block at once (sigma_first_pass)
    fast_sigma = method == 2 and blockwise and ipar[IP_STDFUNC] == 0 and n_frames >= 2
    # winsorized clipping: every pixel with all N values is clipped block-wise
    # (winsorized_block), its iterations interleaved across the block's pixels
    fast_wins = method == 3 and blockwise and n_frames >= 3
    wn = n_frames if fast_wins else 0
    wbk = block if fast_wins else 0
    # the ESD test: every pixel with all N values is tested block-wise (esd_block)
    fast_esd = method == 5 and blockwise and n_frames >= 3
    ebk = block if fast_esd else 0
    # the common weight of every frame with data when they are all equal
    w_common = 1.0
    for i in range(n_frames):
        if np.isfinite(wframe[i]) and wframe[i] > 0:
            w_common = wframe[i]
            break
    for c in prange(n_blocks):
        vb = np.empty((n_frames, block), dtype=np.float32)
        wb = np.empty((n_frames, block), dtype=np.float32)
        cnt = np.zeros(block, dtype=np.int64)
        v = np.empty(n_frames, dtype=np.float32)
        w = np.empty(n_frames, dtype=np.float64)
        scratch = np.empty((3, n_frames + 1), dtype=np.float64)
        qstack = np.empty(128, dtype=np.int64)
        lanes = np.empty((6, block), dtype=np.float64)
        done = np.zeros(block, dtype=np.bool_)
        vt = np.empty((wbk, wn), dtype=np.float32)
        c1b = np.empty((wn + 1, wbk), dtype=np.float64)
        c2b = np.empty((wn + 1, wbk), dtype=np.float64)
        fst = np.empty((8, wbk), dtype=np.float64)
        ist = np.empty((6, wbk), dtype=np.int64)
        lists = np.empty((3, wbk), dtype=np.int64)
        efl = np.empty((5, ebk), dtype=np.float64)
        eil = np.empty((3, ebk), dtype=np.int64)
        # by_frame: pixels whose kept values lie between bounds[0] and bounds[1] and are
        # summed for the whole block at once (frame_means) once all are known
        bounds = np.empty((2, block if by_frame else 0), dtype=np.float32)
        pend = np.zeros(block if by_frame else 0, dtype=np.bool_)
        n_pend = 0
        # by_frame: the weighted sum and weight sum of all the values, frame by frame
        fsum = np.zeros(block if by_frame else 0, dtype=np.float64)
        fw = np.zeros(block if by_frame else 0, dtype=np.float64)
        g = c // per_plane
        q0 = (c - g * per_plane) * block
        m = min(block, n_q - q0)
        if method == 0:
            # mean: accumulate across the block's lanes, frame by frame (vectorised)
            acc = np.zeros(m, dtype=np.float64)
            accw = np.zeros(m, dtype=np.float64)
            for i in range(n_frames):
                row = stack[i, g, q0 : q0 + m]
                if use_pix:
                    prow = wpix[i, g, q0 : q0 + m]
                    for k in range(m):
                        x = row[k]
                        wt = np.float64(prow[k])
                        ok = np.isfinite(x) and np.isfinite(wt) and wt > 0
                        acc[k] += wt * np.float64(x) if ok else 0.0
                        accw[k] += wt if ok else 0.0
                        cnt[k] += ok
                else:
                    wf = wframe[i]
                    if not (np.isfinite(wf) and wf > 0):
                        continue
                    for k in range(m):
                        x = row[k]
                        ok = np.isfinite(x)
                        acc[k] += wf * np.float64(x) if ok else 0.0
                        accw[k] += wf if ok else 0.0
                        cnt[k] += ok
            for k in range(m):
                o = out_start[g] + q0 + k
                out_img[o] = acc[k] / accw[k] if cnt[k] > 0 else np.nan
                out_lo[o] = 0
                out_hi[o] = 0
                out_cnt[o] = cnt[k]
                if write_w:
                    out_w[o] = accw[k]
            continue
        # gather [N, m]: no data -> +inf; companion = weight or frame index
        for i in range(n_frames):
            row = stack[i, g, q0 : q0 + m]
            vrow = vb[i]
            wrow = wb[i]
            if use_pix:
                prow = wpix[i, g, q0 : q0 + m]
                for k in range(m):
                    x = row[k]
                    wt = prow[k]
                    ok = np.isfinite(x) and np.isfinite(wt) and wt > 0
                    vrow[k] = x if ok else np.inf
                    wrow[k] = wt
                    cnt[k] += ok
                if by_frame:
                    for k in range(m):
                        x = row[k]
                        wt = np.float64(prow[k])
                        ok = np.isfinite(x) & np.isfinite(wt) & (wt > 0.0)
                        fsum[k] += wt * np.float64(x) if ok else 0.0
                        fw[k] += wt if ok else 0.0
            else:
                wf = wframe[i]
                if not (np.isfinite(wf) and wf > 0):
                    vrow[:m] = np.inf
                    continue
                if carry:
                    wrow[:m] = i
                for k in range(m):
                    x = row[k]
                    ok = np.isfinite(x)
                    vrow[k] = x if ok else np.inf
                    cnt[k] += ok
                if by_frame:
                    for k in range(m):
                        x = row[k]
                        ok = np.isfinite(x)
                        fsum[k] += wf * np.float64(x) if ok else 0.0
                        fw[k] += wf if ok else 0.0
        if use_net:
            sort_columns(vb, wb, m, network, carry)
        # block-wise results: lanes[5] value, [4] weight sum, [3] / [2] rejected low /
        # high, [1] kept, for the pixels marked done
        if fast_sigma:
            sigma_first_pass(
                vb, m, n_frames, sl, sh, lanes[0], lanes[1], lanes[2], lanes[3], lanes[4],
                done, lanes[5],
            )  # fmt: skip
            for k in range(m):
                done[k] = done[k] and cnt[k] == n_frames
            if by_frame:  # nothing rejected: the weighted mean of all the values
                for k in range(m):
                    lanes[5, k] = fsum[k] / fw[k]
                    lanes[4, k] = fw[k]
            else:
                for k in range(m):
                    lanes[4, k] = w_common * cnt[k]
            for k in range(m):
                lanes[3, k] = 0
                lanes[2, k] = 0
                lanes[1, k] = cnt[k]
        if fast_esd:
            esd_block(vb, cnt, m, n_frames, esd_lam, esd_frac, efl, eil, done)
            klo = eil[1]
            khi = eil[2]
            if by_frame:
                for k in range(m):
                    a = klo[k]
                    b = khi[k]
                    lanes[5, k] = fsum[k] / fw[k]  # nothing rejected: all the values
                    lanes[4, k] = fw[k]
                    if not done[k] or (a == 0 and b == n_frames):
                        continue
                    # equal values on both sides of a bound: the per-pixel path decides
                    # which of them are kept
                    if (a > 0 and vb[a - 1, k] == vb[a, k]) or (
                        b < n_frames and vb[b, k] == vb[b - 1, k]
                    ):
                        done[k] = False
                        continue
                    bounds[0, k] = vb[a, k]
                    bounds[1, k] = vb[b - 1, k]
                    pend[k] = True
                    n_pend += 1
            else:
                rank_means(vb, m, klo, khi, w_common, lanes[5], lanes[4])
            for k in range(m):
                lanes[3, k] = klo[k]
                lanes[2, k] = n_frames - khi[k]
                lanes[1, k] = khi[k] - klo[k]
        if fast_wins:
            winsorized_block(
                vb, cnt, m, n_frames, sl, sh, cutoff, ipar[IP_MAXITERS], ipar[IP_MIN_KEPT],
                vt, c1b, c2b, fst, ist, lists, done,
            )  # fmt: skip
            for k in range(m):
                if not done[k]:
                    continue
                lo = ist[0, k]
                hi = ist[1, k]
                if hi <= lo:
                    lo = (n_frames - 1) >> 1
                    hi = (n_frames >> 1) + 1
                kept = hi - lo
                if carry:
                    for i in range(n_frames):
                        w[i] = wb[i, k] if use_pix else wframe[np.int64(wb[i, k])]
                    val, sw = _weighted_mean(vt[k], w, lo, hi)
                else:
                    val = fst[0, k] + (c1b[hi, k] - c1b[lo, k]) / kept
                    sw = w_common * kept
                lanes[5, k] = val
                lanes[4, k] = sw
                lanes[3, k] = lo
                lanes[2, k] = n_frames - hi
                lanes[1, k] = kept
        for k in range(m):
            o = out_start[g] + q0 + k
            n = cnt[k]
            if done[k]:
                # settled block-wise
                out_img[o] = lanes[5, k]
                out_lo[o] = np.int64(lanes[3, k])
                out_hi[o] = np.int64(lanes[2, k])
                out_cnt[o] = np.int64(lanes[1, k])
                if write_w:
                    out_w[o] = lanes[4, k]
                continue
            if n == 0:
                out_img[o] = np.nan
                out_lo[o] = 0
                out_hi[o] = 0
                out_cnt[o] = 0
                if write_w:
                    out_w[o] = 0.0
                continue
            if use_net:
                # sorted: the n values with data come first
                for i in range(n):
                    v[i] = vb[i, k]
                if carry and use_pix:
                    for i in range(n):
                        w[i] = wb[i, k]
                elif carry:
                    for i in range(n):
                        w[i] = wframe[np.int64(wb[i, k])]
                else:
                    w[:n] = w_common
            else:
                j = 0
                for i in range(n_frames):
                    x = vb[i, k]
                    if x < np.inf:
                        v[j] = x
                        if carry and use_pix:
                            w[j] = wb[i, k]
                        elif carry:
                            w[j] = wframe[np.int64(wb[i, k])]
                        else:
                            w[j] = w_common
                        j += 1
                        if j == n:
                            break
                if method == 1:
                    # median of the values alone: selection, no full sort
                    sw = 0.0
                    for i in range(n):
                        sw += w[i]
                    out_img[o] = median_inplace(v, n)
                    out_lo[o] = 0
                    out_hi[o] = 0
                    out_cnt[o] = n
                    if write_w:
                        out_w[o] = sw
                    continue
                if method == 7 and n_low_mm + n_high_mm <= 8:
                    # min/max only need the extremes at the ends: O(n k), no sort
                    if n > n_low_mm + n_high_mm:
                        extremes_to_ends(v, w, n, n_low_mm, n_high_mm)
                elif method != 0:
                    if carry:
                        sort_pairs(v, w, n, qstack)
                    else:
                        sort_values(v, n, qstack)
            val, sw, n_rl, n_rh, kept = _reject_and_mean(
                v, w, n, not carry, method, sl, sh, pl, ph, cutoff, esd_lam, esd_frac, ipar, scratch
            )
            if by_frame and n_rl == 0 and n_rh == 0:
                val = fsum[k] / fw[k]
                sw = fw[k]
            elif by_frame:
                lo = n_rl
                hi = n - n_rh
                if (lo > 0 and v[lo - 1] == v[lo]) or (hi < n and v[hi] == v[hi - 1]):
                    val, sw = frame_order_mean(
                        stack, wframe, wpix, use_pix, g, q0 + k, v, n, lo, hi
                    )
                else:  # summed with the block's other pixels below
                    bounds[0, k] = v[lo]
                    bounds[1, k] = v[hi - 1]
                    pend[k] = True
                    n_pend += 1
            out_img[o] = val
            out_lo[o] = n_rl
            out_hi[o] = n_rh
            out_cnt[o] = kept
            if write_w:
                out_w[o] = sw
        if n_pend > 0:
            # the kept values of every pixel that rejected some, frame by frame at once
            # (contiguous reads of the unsorted stack rather than one pixel at a time)
            for k in range(m):
                if not pend[k]:
                    bounds[0, k] = np.inf  # no value: the result is not used
                    bounds[1, k] = -np.inf
            frame_means(
                stack, g, q0, m, wframe, wpix, use_pix, bounds[0], bounds[1], lanes[5],
                lanes[4],
            )  # fmt: skip
            for k in range(m):
                if pend[k]:
                    o = out_start[g] + q0 + k
                    out_img[o] = lanes[5, k]
                    if write_w:
                        out_w[o] = lanes[4, k]


# -- input plumbing for combine_pixels (used by astrostack.combine.kernels) ----------


def _as_stack(stack: np.ndarray) -> np.ndarray:
    arr = np.asarray(stack)
    if arr.ndim < 1 or arr.shape[0] < 1:
        msg = f"combine: stack must be [N, ...] with N >= 1 frames, got shape {arr.shape}"
        raise ValueError(msg)
    if arr.shape[0] > _MAX_FRAMES:
        msg = f"combine: at most {_MAX_FRAMES} frames per stack (uint16 counts), got {arr.shape[0]}"
        raise ValueError(msg)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        msg = f"combine: stack must be real numbers (float32), got dtype {arr.dtype}"
        raise ValueError(msg)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _prepare_weights(weights, stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(per-frame float64 [N], per-pixel float32 [N, ...] or dummy, use_per_pixel)."""
    n = stack.shape[0]
    dummy = np.ones((1, 1, 1), dtype=np.float32)
    if weights is None:
        return np.ones(n, dtype=np.float64), dummy, False
    w = np.asarray(weights)
    if w.ndim == 1 and w.shape[0] == n:
        return np.ascontiguousarray(w, dtype=np.float64), dummy, False
    if w.shape == stack.shape:
        return np.ones(n, dtype=np.float64), np.ascontiguousarray(w, dtype=np.float32), True
    msg = (
        f"combine: weights must have shape ({n},) (one per frame) or {stack.shape} "
        f"(one per pixel), got {w.shape}"
    )
    raise ValueError(msg)
