"""Compiled order statistics of the stack's first pass (serial kernels, GIL released).

- :func:`clipped_stats` - sigma-clipped median and lower-half sigma of a tile's sorted
  sample: every clipping round's kept values are a contiguous window, so its median is
  the middle element, the median of the absolute deviations a bisection over the two
  sorted runs either side of the median (:func:`kth_deviation`) and the quantile an
  index: exactly the numbers of ``np.median``/``np.quantile`` on the kept values, a
  few times faster than selecting them anew every round.  :func:`tile_row_clip` applies
  it to a row of tiles.
- :func:`exact_median` - ``np.median``, bit for bit, by radix selection.

The per-band sums (fluxes, block noise) are in :mod:`.bandsums`.  The kernels are
serial: the stack measures two frames at a time, each on one core, which nests no
parallel region inside another (that oversubscribed the cores).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..combine.stats import first_ge

__all__ = [
    "clipped_stats",
    "exact_median",
    "kth_deviation",
    "tile_row_clip",
]


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
    buf: np.ndarray, n: int, kappa: float, iters: int
) -> tuple[float, float]:
    """Sigma-clipped median and sigma of the sorted float32 ``buf[:n]``.

    Clipping about the median at *kappa* MAD sigmas, at most *iters* rounds; the
    returned sigma is the lower-half estimate ``median - q(15.87 %)`` of the kept
    values (robust to positive-only contamination).  The values being sorted, each
    round's kept values are a contiguous window, its median the middle, the median of
    the absolute deviations a bisection over the two sorted runs either side of the
    median, and the quantile an index - the same numbers as ``np.median``/``np.quantile``
    on the kept values, at a fraction of the cost of selecting them anew every round.
    """
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


@njit(cache=True, nogil=True)
def tile_row_clip(  # pragma: no cover - compiled
    samples: np.ndarray, nsamp: np.ndarray, med: np.ndarray, sig: np.ndarray
) -> None:
    """Clipped median and sigma (:func:`clipped_stats`, 3 sigma, 5 rounds) of each tile's
    sorted sample; NaN for tiles with fewer than 16 values."""
    for i in range(nsamp.shape[0]):
        if nsamp[i] < 16:
            med[i] = np.nan
            sig[i] = np.nan
        else:
            med[i], sig[i] = clipped_stats(samples[i], nsamp[i], 3.0, 5)


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
