"""Compiled per-tile statistics of the stack's first pass (serial kernels, GIL released).

- :func:`clipped_stats` - sigma-clipped median and lower-half sigma of a tile's sample.
  The sample is sorted once (:func:`radix_sort`, an LSD radix sort of the float32 bit
  patterns); every clipping round's kept values are then a contiguous window, so its
  median is the middle element, the median of the absolute deviations a bisection over
  the two sorted runs either side of the median (:func:`kth_deviation`) and the quantile
  an index: exactly the numbers of ``np.median``/``np.quantile`` on the kept values, a
  few times faster than selecting them anew every round.
- :func:`tile_row_stats` - per tile of a row of tiles: clipped median and sigma, finite
  pixel count and the flux above a quadratic background (see its docstring).
- :func:`binned_deviations` - block means minus their tile's median (block-scale noise).
- :func:`exact_median` - ``np.median``, bit for bit, by radix selection.

The kernels are serial: the stack measures two frames at a time, each on one core,
which nests no parallel region inside another (that oversubscribed the cores).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..combine.stats import first_ge

__all__ = [
    "binned_deviations",
    "clipped_stats",
    "exact_median",
    "kth_deviation",
    "radix_sort",
    "tile_row_stats",
]


@njit(cache=True, nogil=True)
def radix_sort(vals: np.ndarray, n: int, work: np.ndarray) -> None:  # pragma: no cover
    """Sort the float32 ``vals[:n]`` (no NaN) in place: LSD radix sort on the bit patterns.

    Keys are the IEEE bits made order-preserving (sign flipped for positives, all bits
    for negatives); byte passes in which every key has the same digit (the high bytes
    of a tile's values, which share sign and exponent) are skipped.  *work* is a
    float32 scratch buffer of at least *n* values.
    """
    keys = vals[:n].view(np.uint32)
    spare = work[:n].view(np.uint32)
    count = np.zeros((4, 256), np.int64)
    sign = np.uint32(0x80000000)
    for j in range(n):
        k = keys[j]
        k = ~k if k & sign else k | sign
        keys[j] = k
        count[0, k & np.uint32(0xFF)] += 1
        count[1, (k >> np.uint32(8)) & np.uint32(0xFF)] += 1
        count[2, (k >> np.uint32(16)) & np.uint32(0xFF)] += 1
        count[3, k >> np.uint32(24)] += 1
    src = keys
    dst = spare
    for p in range(4):
        shift = np.uint32(8 * p)
        same = False
        for b in range(256):
            if count[p, b] != 0:
                same = count[p, b] == n
                break
        if same:
            continue
        total = 0
        for b in range(256):
            c = count[p, b]
            count[p, b] = total
            total += c
        for j in range(n):
            b = (src[j] >> shift) & np.uint32(0xFF)
            dst[count[p, b]] = src[j]
            count[p, b] += 1
        src, dst = dst, src
    for j in range(n):
        k = src[j]
        keys[j] = k & np.uint32(0x7FFFFFFF) if k & sign else ~k


@njit(cache=True, nogil=True)
def kth_deviation(  # pragma: no cover - compiled
    buf: np.ndarray, lo: int, split: int, hi: int, med: float, k: int
) -> tuple[float, float]:
    """The k-th and (k+1)-th smallest ``|x - med|`` over the sorted ``buf[lo:hi]``.

    ``buf[lo:split]`` is below *med*: its deviations grow leftwards (run ``A``);
    ``buf[split:hi]`` grow rightwards (run ``B``).  Bisection on how many of the
    ``k + 1`` smallest come from ``A``; the deviations are computed exactly as
    ``abs(x - med)`` (float64), so the values are those a sort of all deviations gives.
    """
    na = split - lo
    nb = hi - split
    i_lo = max(0, k + 1 - nb)
    i_hi = min(k + 1, na)
    while i_lo < i_hi:
        i = (i_lo + i_hi) >> 1
        j = k + 1 - i
        # A[i] = |buf[split - 1 - i] - med|, B[j - 1] = |buf[split + j - 1] - med|
        if j > 0 and abs(np.float64(buf[split + j - 1]) - med) > abs(
            np.float64(buf[split - 1 - i]) - med
        ):
            i_lo = i + 1
        else:
            i_hi = i
    i = i_lo
    j = k + 1 - i
    kth = -np.inf
    if i > 0:
        kth = abs(np.float64(buf[split - i]) - med)
    if j > 0:
        kth = max(kth, abs(np.float64(buf[split + j - 1]) - med))
    nxt = np.inf
    if i < na:
        nxt = abs(np.float64(buf[split - 1 - i]) - med)
    if j < nb:
        nxt = min(nxt, abs(np.float64(buf[split + j]) - med))
    return kth, nxt


@njit(cache=True, nogil=True)
def clipped_stats(  # pragma: no cover - compiled
    buf: np.ndarray, n: int, work: np.ndarray, kappa: float, iters: int
) -> tuple[float, float]:
    """Sigma-clipped median and sigma of the float32 ``buf[:n]`` (buffer is sorted).

    Clipping about the median at *kappa* MAD sigmas, at most *iters* rounds; the
    returned sigma is the lower-half estimate ``median - q(15.87 %)`` of the kept
    values (robust to positive-only contamination).  The values are sorted once (radix
    sort): each round's kept values are then a contiguous window, its median the
    middle, the median of the absolute deviations a bisection over the two sorted runs
    either side of the median, and the quantile an index - the same numbers as
    ``np.median``/``np.quantile`` on the kept values, at a fraction of the cost of
    selecting them anew every round.
    """
    radix_sort(buf, n, work)
    med = np.nan
    sig = np.nan
    lo = 0
    hi = n
    for _ in range(iters):
        m = hi - lo
        if m < 3:
            break
        half = m >> 1
        if m & 1:
            med = np.float64(buf[lo + half])
        else:
            med = (np.float64(buf[lo + half - 1]) + np.float64(buf[lo + half])) / 2
        # the deviations |x - med| are two sorted runs, leftwards and rightwards of the
        # median; their median is found by bisection (k-th of two sorted arrays)
        split = first_ge(buf, lo, hi, med)
        want = half if m & 1 else half - 1
        first, second = kth_deviation(buf, lo, split, hi, med, want)
        mad = first if m & 1 else (first + second) / 2
        sig = 1.482602218505602 * mad
        if not sig > 0:
            break
        lim = kappa * sig
        new_lo = lo
        new_hi = hi
        while new_lo < new_hi and abs(np.float64(buf[new_lo]) - med) > lim:
            new_lo += 1
        while new_hi > new_lo and abs(np.float64(buf[new_hi - 1]) - med) > lim:
            new_hi -= 1
        if new_hi - new_lo == m:
            break
        lo = new_lo
        hi = new_hi
    m = hi - lo
    if m >= 16 and sig > 0:
        # noise from the lower half only (median - 15.87th percentile): stars, cosmic
        # rays and hot pixels are all positive, so their faint wings do not inflate it;
        # linear interpolation between closest ranks, as np.quantile
        rank = 1 + (m - 1) * ((0.15865525393145707 * 100.0) / 100.0)
        f = np.floor(rank)
        frac = rank - f
        k = lo + int(f - 1)
        low = med - (np.float64(buf[k]) * (1 - frac) + np.float64(buf[k + 1]) * frac)
        if low > 0:
            sig = low
    return med, sig


# exponents (a, b) of the quadratic basis 1, u, w, u^2, uw, w^2, and the position of
# the moment sum(u^a w^b) in the accumulator of tile_row_stats
_EXP_U = np.array([0, 1, 0, 2, 1, 0], dtype=np.int64)
_EXP_W = np.array([0, 0, 1, 0, 1, 2], dtype=np.int64)
_MOM_INDEX = np.array(
    [[0, 2, 5, 9, 14], [1, 4, 8, 13, -1], [3, 7, 12, -1, -1], [6, 11, -1, -1, -1],
     [10, -1, -1, -1, -1]], dtype=np.int64,
)  # fmt: skip


@njit(cache=True, fastmath=False, nogil=True)
def tile_row_stats(  # pragma: no cover - compiled
    band: np.ndarray,
    smooth: np.ndarray,
    mask: np.ndarray,
    use_fit: bool,
    tile: int,
    step: int,
    med: np.ndarray,
    sig: np.ndarray,
    flux: np.ndarray,
    count: np.ndarray,
) -> None:
    """Statistics of one row of tiles of ``band`` ``[rows, W]``.

    Per tile column ``i``: clipped median and sigma of a ``step``-subsample of the
    finite pixels; the number of finite pixels; and the flux above background: the
    sum over the finite pixels of ``smooth`` (the 3x3 median-filtered band, so that
    cosmic rays and hot pixels do not count) minus the sum of a quadratic surface
    fitted (least squares) to ``smooth`` on the pixels outside ``mask`` (the
    reference's stars).  With the same mask for every frame this is linear in the
    signal - faint stars left outside the mask lower every frame's flux by the same
    fraction - and the quadratic follows gradients and glow.  Without a mask
    (``use_fit`` false) or enough unmasked pixels the tile median is the level.
    """
    rows, width = band.shape
    nx = med.shape[0]
    for i in range(nx):
        x0 = i * tile
        x1 = min(x0 + tile, width)
        size = ((rows + step - 1) // step) * ((x1 - x0 + step - 1) // step)
        buf = np.empty(size, dtype=np.float32)
        work = np.empty(size, dtype=np.float32)
        xc = 0.5 * (x0 + x1 - 1)
        yc = 0.5 * (rows - 1)
        scale = 1.0 / tile
        mom = np.zeros(15)  # sums of u^a w^b (a + b <= 4) over the fit pixels
        rhs = np.zeros(6)
        all_b = np.zeros(6)
        n = 0
        total = 0.0
        nfin = 0
        n_fit = 0
        for y in range(rows):
            w = (y - yc) * scale
            w2 = w * w
            sampled_row = y % step == 0
            for x in range(x0, x1):
                v = band[y, x]
                if np.isfinite(v):
                    sv = smooth[y, x]
                    total += sv
                    nfin += 1
                    u = (x - xc) * scale
                    u2 = u * u
                    all_b[1] += u
                    all_b[2] += w
                    all_b[3] += u2
                    all_b[4] += u * w
                    all_b[5] += w2
                    if sampled_row and (x - x0) % step == 0:
                        buf[n] = v
                        n += 1
                        if mask[y, x] == 0:
                            n_fit += 1
                            uw = u * w
                            rhs[0] += sv
                            rhs[1] += sv * u
                            rhs[2] += sv * w
                            rhs[3] += sv * u2
                            rhs[4] += sv * uw
                            rhs[5] += sv * w2
                            mom[1] += u
                            mom[2] += w
                            mom[3] += u2
                            mom[4] += uw
                            mom[5] += w2
                            mom[6] += u2 * u
                            mom[7] += u2 * w
                            mom[8] += u * w2
                            mom[9] += w2 * w
                            mom[10] += u2 * u2
                            mom[11] += u2 * uw
                            mom[12] += u2 * w2
                            mom[13] += uw * w2
                            mom[14] += w2 * w2
        all_b[0] = nfin
        mom[0] = n_fit
        gram = np.empty((6, 6))
        for p in range(6):
            for q in range(6):
                gram[p, q] = mom[_MOM_INDEX[_EXP_U[p] + _EXP_U[q], _EXP_W[p] + _EXP_W[q]]]
        count[i] = nfin
        if n < 16:
            med[i] = np.nan
            sig[i] = np.nan
            flux[i] = 0.0
            continue
        m, s = clipped_stats(buf, n, work, 3.0, 5)
        med[i] = m
        sig[i] = s
        flux[i] = total - nfin * m
        if use_fit and n_fit >= 32 and n_fit >= 0.2 * n:
            # a singular fit (pixels on a line) keeps the median level
            if abs(np.linalg.det(gram)) > 1e-12 * gram[0, 0] ** 6:
                coef = np.linalg.solve(gram, rhs)
                level = 0.0
                for p in range(6):
                    level += coef[p] * all_b[p]
                flux[i] = total - level


@njit(cache=True, nogil=True)
def binned_deviations(  # pragma: no cover - compiled
    plane: np.ndarray, masked: np.ndarray, tile: int, b: int, out: np.ndarray
) -> int:
    """``b×b`` block means of *plane* minus their tile's median block mean, times *b*.

    Blocks with a non-finite or *masked* (stars) pixel are left out, and so are tiles
    with fewer than 16 blocks.  The deviations are written to *out* tile by tile (block
    rows in order within a tile) and their number returned.  Pooled over the frame,
    their clipped standard deviation is the per-pixel-equivalent noise at the block
    scale.
    """
    rows, width = plane.shape
    rb, wb = rows // b, width // b
    if rb == 0 or wb == 0:
        return 0
    means = np.empty((rb, wb))
    inv = 1.0 / (b * b)
    for by in range(rb):
        for bx in range(wb):
            total = 0.0
            good = True
            for yy in range(by * b, by * b + b):
                for xx in range(bx * b, bx * b + b):
                    v = plane[yy, xx]
                    if masked[yy, xx] != 0 or not np.isfinite(v):
                        good = False
                    total += v
            means[by, bx] = total * inv if good else np.nan
    vals = np.empty(rb * wb)
    n = 0
    for i in range((width + tile - 1) // tile):
        c0 = (i * tile) // b
        c1 = min(((i + 1) * tile) // b, wb)
        k = 0
        for by in range(rb):
            for bx in range(c0, c1):
                m = means[by, bx]
                if np.isfinite(m):
                    vals[k] = m
                    k += 1
        if k >= 16:
            med = exact_median(vals[:k], False)
            for j in range(k):
                out[n] = b * (vals[j] - med)
                n += 1
    return n


@njit(cache=True, nogil=True)
def _nth_key(keys: np.ndarray, n: int, k: int, work: np.ndarray) -> np.uint64:  # pragma: no cover
    """The k-th smallest (0-based) of ``keys[:n]`` (radix select; *keys* left unchanged).

    Digits of 11 bits from the highest bit in which the keys differ; the candidates
    sharing the digit of the k-th are compacted into *work* (``n`` values) each pass.
    """
    lo = keys[0]
    hi = keys[0]
    for j in range(n):
        lo = min(lo, keys[j])
        hi = max(hi, keys[j])
    diff = lo ^ hi
    top = 0
    while diff >> np.uint64(top) > 1:
        top += 1
    shift = max(top - 10, 0)
    hist = np.zeros(2048, dtype=np.int64)
    src = keys
    m = n
    while m > 1:
        hist[:] = 0
        for j in range(m):
            hist[(src[j] >> np.uint64(shift)) & np.uint64(0x7FF)] += 1
        digit = 0
        below = 0
        while below + hist[digit] <= k:
            below += hist[digit]
            digit += 1
        k -= below
        if hist[digit] != m:
            c = 0
            for j in range(m):
                v = src[j]
                if (v >> np.uint64(shift)) & np.uint64(0x7FF) == digit:
                    work[c] = v
                    c += 1
            src = work
            m = c
        if shift == 0:
            break
        shift = max(shift - 11, 0)
    return src[0]


@njit(cache=True, nogil=True)
def exact_median(vals: np.ndarray, single: bool) -> float:  # pragma: no cover - compiled
    """``np.median`` of the non-empty, NaN-free *vals*, exactly as numpy computes it.

    Radix selection on the order-preserving bit patterns of the values (as float64),
    several times faster than a partition.  For an even count numpy averages the two
    middle values in the array's precision: in float32 when *single* (float32 data).
    """
    n = vals.size
    keys = np.empty(n, dtype=np.float64)
    for j in range(n):
        keys[j] = vals[j]
    bits = keys.view(np.uint64)
    sign = np.uint64(1) << np.uint64(63)
    for j in range(n):
        b = bits[j]
        bits[j] = ~b if b & sign else b | sign
    work = np.empty(n, dtype=np.uint64)
    half = n >> 1
    out = np.empty(2, dtype=np.uint64)
    out[0] = _nth_key(bits, n, half, work)
    if n % 2 == 0:
        out[1] = _nth_key(bits, n, half - 1, work)
    for j in range(2 - n % 2):
        b = out[j]
        out[j] = b & ~sign if b & sign else ~b
    mid = out.view(np.float64)
    if n % 2:
        return mid[0]
    if single:
        # numpy's mean of two float32 values: a float32 sum, then halved
        return np.float64(np.float32(np.float32(mid[1]) + np.float32(mid[0])) / np.float32(2.0))
    return (mid[1] + mid[0]) / 2
