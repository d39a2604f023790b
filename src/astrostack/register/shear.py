"""Two-pass (separable) affine resampling for near-axis-aligned transforms.

An affine map whose inverse is ``xs = A x + B y + C``, ``ys = D x + E y + F`` (output
``(x, y)`` to source ``(xs, ys)``) factors into two one-dimensional resamplings:

1. columns: for every output row ``y`` and every *source* column ``u``,
   ``T[y, u] = S(u, P u + Q y + R)`` with ``P = D / A``, ``Q = E - D B / A`` and
   ``R = F - D C / A`` - a 1-D interpolation down column ``u`` of the source;
2. rows: ``O[y, x] = T(y, A x + B y + C)`` - a 1-D interpolation along row ``y`` of ``T``.

At ``u = xs`` the first pass samples exactly ``ys``, so the second pass interpolates
along a line through ``(xs, ys)`` of slope ``P`` in the source: the separable kernel
applied along a slightly sheared grid.  For the transforms of a night - small rotations,
small scale changes, a meridian flip (which is ``A = E = -1``) - ``|P|`` is of order
0.01 and the result matches the 2-D kernel to a small fraction of the noise (measured
in ``register/tests/test_warp.py``), for 12 taps per output pixel instead of 36.  Larger
shears alias (the sheared samples undersample the diagonal frequencies), so
:func:`separable_plan` only accepts ``|P| <= MAX_SHEAR`` and leaves the others to the
2-D kernel, as it does for NaN sources and projective maps.

Edges replicate the outermost source pixels, as the 2-D kernel's taps do; the footprint
(NaN outside ``-0.5 <= xs <= nx - 0.5``, same for ``ys``) and the clamp to the 2x2
nearest source pixels are evaluated at the exact ``(xs, ys)``, in the 2-D kernel's
32.32 fixed point.
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

__all__ = ["MAX_SHEAR", "separable_plan", "warp_separable"]

#: Largest ``|P|`` (source rows per column along the second pass) the two-pass path takes.
MAX_SHEAR = 0.05

_ONE = 2.0**32
# as the 2-D kernels: no 'nnan'/'ninf' (NaN tests), no 'reassoc'/'contract' (same bits
# however compiled)
_FASTMATH = {"nsz", "arcp", "afn"}


def separable_plan(inv: np.ndarray, src_shape: tuple[int, int], out_shape: tuple[int, int]):
    """Fixed-point steps of the two passes for the affine inverse map *inv*, or ``None``.

    ``None`` when the map is projective, when ``|A| < 0.5`` (a rotation near 90 degrees)
    or the shear ``|P|`` exceeds :data:`MAX_SHEAR`, or when positions would leave the
    int64 range of 32.32 fixed point.

    Returns
    -------
    tuple or None
        ``(col_start, col_step, row_start, row_step)``: ``col_start[y]`` is ``Q y + R``
        and ``col_step`` is ``P`` (pass 1, per source column); ``row_start`` ``[2, ho]``
        and ``row_step`` ``[2]`` are the source ``(xs, ys)`` of output column 0 of each
        row and their increment per output column (pass 2), all times ``2**32``.
    """
    if inv[2, 0] != 0.0 or inv[2, 1] != 0.0 or inv[2, 2] != 1.0:
        return None
    a, b, c = inv[0]
    d, e, f = inv[1]
    if abs(a) < 0.5:
        return None
    p = d / a
    if abs(p) > MAX_SHEAR:
        return None
    q = e - d * b / a
    r = f - d * c / a
    ho, wo = out_shape
    w = src_shape[1]
    corners = np.array([[0, 0, 1], [wo, 0, 1], [0, ho, 1], [wo, ho, 1]], dtype=np.float64)
    reach = max(float(np.abs(corners @ inv[:2].T).max()), abs(q) * ho + abs(r) + abs(p) * w)
    if reach >= 2.0**30:
        return None
    rows = np.arange(ho, dtype=np.float64)
    col_start = np.rint((q * rows + r) * _ONE).astype(np.int64)
    col_step = np.int64(np.rint(p * _ONE))
    row_start = np.rint(np.stack([b * rows + c, e * rows + f]) * _ONE).astype(np.int64)
    row_step = np.rint(inv[:2, 0] * _ONE).astype(np.int64)
    return col_start, col_step, row_start, row_step


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _columns_rows(src, col_start, col_step, lut, res_bits, tmp, y_lo, y_hi):  # pragma: no cover
    """Pass 1 for output rows ``y_lo <= y < y_hi``; returns whether a result is NaN.

    A column's LUT row changes from one output row to the next only when its fraction
    crosses a LUT interval (``Q`` is 1 up to a tiny scale term), so the weights of
    every column are kept in ``wt`` and refreshed only where the LUT row changed.  The
    source rows a run of columns reads change only every ``1 / |P|`` columns: over
    such a run, Lanczos-3 (6 taps) is a multiply-add of contiguous weights and pixels,
    which the compiler vectorises (same operations, same bits, as one column at a time).
    """
    h, w = src.shape
    taps = lut.shape[1]
    half = taps // 2 - 1
    shift = 32 - res_bits
    rnd = np.int64(1) << (shift - 1)
    fmask = (np.int64(1) << 32) - 1
    six = taps == 6
    wt = np.empty((6 if six else 0, w), dtype=np.float32)
    cur = np.full(w if six else 0, -1, dtype=np.int32)
    has_nan = False
    for yo in range(y_lo, y_hi):
        trow = tmp[yo]
        yf0 = col_start[yo]
        if six:
            for k in range(w):
                iy = np.int32((((yf0 + k * col_step) & fmask) + rnd) >> shift)
                if iy != cur[k]:
                    cur[k] = iy
                    for j in range(6):
                        wt[j, k] = lut[iy, j]
        yf = yf0
        u = 0
        while u < w:
            y0 = yf >> 32
            by = y0 - half
            # the run of columns with the same first tap row
            if col_step > 0:
                end = min(w, u + (((y0 + 1) << 32) - yf + col_step - 1) // col_step)
            elif col_step < 0:
                end = min(w, u + ((yf - (y0 << 32)) // (-col_step)) + 1)
            else:
                end = w
            end = max(end, u + 1)
            if six and by >= 0 and by + 6 <= h:
                # up to 7 columns past the run, in whole vectors: the next runs, taken
                # in order, overwrite them
                v = min(w, u + (end - u + 7) // 8 * 8)
                r0 = src[by, u:v]
                r1 = src[by + 1, u:v]
                r2 = src[by + 2, u:v]
                r3 = src[by + 3, u:v]
                r4 = src[by + 4, u:v]
                r5 = src[by + 5, u:v]
                w0 = wt[0, u:v]
                w1 = wt[1, u:v]
                w2 = wt[2, u:v]
                w3 = wt[3, u:v]
                w4 = wt[4, u:v]
                w5 = wt[5, u:v]
                t = trow[u:v]
                for i in range(v - u):
                    t[i] = (w0[i] * r0[i] + w1[i] * r1[i] + w2[i] * r2[i]
                            + w3[i] * r3[i] + w4[i] * r4[i] + w5[i] * r5[i])  # fmt: skip
            else:
                for k in range(u, end):
                    yk = yf0 + k * col_step
                    iy = ((yk & fmask) + rnd) >> shift
                    b = (yk >> 32) - half
                    acc = np.float32(0.0)
                    for j in range(taps):
                        acc += lut[iy, j] * src[min(max(b + j, 0), h - 1), k]
                    trow[k] = acc
            yf += (end - u) * col_step
            u = end
        if not has_nan:
            n = 0
            for k in range(w):  # the row is still in cache; no early exit: vectorised
                n += trow[k] != trow[k]
            has_nan = n > 0
    return has_nan


@njit(parallel=True, cache=True, nogil=True)
def _columns(src, col_start, col_step, lut, res_bits, tmp, nblocks):  # pragma: no cover
    """Pass 1: ``tmp[y, u]`` = source column ``u`` interpolated at row ``Q y + R + P u``.

    The output rows are cut into *nblocks* blocks of consecutive rows, one per thread
    (the column weights carry over from row to row).  Returns whether a tap read a NaN
    (every tap weight times NaN is NaN, so a NaN result tells).
    """
    ho = tmp.shape[0]
    nblocks = max(1, min(ho, nblocks))
    nan_blocks = np.zeros(nblocks, dtype=np.bool_)
    for i in prange(nblocks):
        y_lo = i * ho // nblocks
        y_hi = (i + 1) * ho // nblocks
        nan_blocks[i] = _columns_rows(src, col_start, col_step, lut, res_bits, tmp, y_lo, y_hi)
    return nan_blocks.any()


@njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")
def _row_general(src, trow, xf, yf, lut, shift, rnd, fmask, half, clamp):  # pragma: no cover
    """One pass-2 output near the edges: taps and clamp neighbours replicated."""
    h, w = src.shape
    taps = lut.shape[1]
    x0 = xf >> 32
    ix = ((xf & fmask) + rnd) >> shift
    bx = x0 - half
    acc = np.float32(0.0)
    for i in range(taps):
        acc += lut[ix, i] * trow[min(max(bx + i, 0), w - 1)]
    if clamp:
        y0 = yf >> 32
        xa = min(max(x0, 0), w - 1)
        xb = min(max(x0 + 1, 0), w - 1)
        ya = min(max(y0, 0), h - 1)
        yb = min(max(y0 + 1, 0), h - 1)
        v1 = src[ya, xa]
        v2 = src[ya, xb]
        v3 = src[yb, xa]
        v4 = src[yb, xb]
        acc = min(max(acc, min(min(v1, v2), min(v3, v4))), max(max(v1, v2), max(v3, v4)))
    return acc


@njit(parallel=True, cache=True, nogil=True, fastmath=_FASTMATH)
def _rows(src, tmp, row_start, row_step, lut, res_bits, clamp, out):  # pragma: no cover
    """Pass 2: ``out[y, x]`` = row ``y`` of ``tmp`` interpolated at ``xs(x, y)``; NaN
    outside the source pixel area; clamped to the 2x2 source pixels nearest ``(xs, ys)``.

    Runs of output columns whose nearest source rows stay the same take those two
    rows once; Lanczos-3 inside the frame is written out.  When consecutive outputs lie
    a source pixel apart (``xs`` steps by ``1 + g``, ``|g| < 2**-6``: no flip, scale
    within 1.5 %), the tap offset and LUT row stay the same for about ``1 / (1024 |g|)``
    outputs: such a stretch is a 6-tap filter with fixed weights over contiguous
    values, which the compiler vectorises (same operations, same bits, as one output
    at a time).
    """
    h, w = src.shape
    ho, wo = out.shape
    taps = lut.shape[1]
    half = taps // 2 - 1
    shift = 32 - res_bits
    rnd = np.int64(1) << (shift - 1)
    one = np.int64(1) << 32
    fmask = one - 1
    lo = -(np.int64(1) << 31)  # -0.5 px
    xhi = (np.int64(w) << 32) + lo  # w - 0.5 px
    yhi = (np.int64(h) << 32) + lo
    dx = row_step[0]
    dy = row_step[1]
    g = dx - one
    stretches = taps == 6 and abs(g) < (np.int64(1) << 26)
    for yo in prange(ho):
        orow = out[yo]
        trow = tmp[yo]
        xf = row_start[0, yo]
        yf = row_start[1, yo]
        xo = 0
        while xo < wo:
            y0 = yf >> 32
            if dy > 0:
                end = min(wo, xo + (((y0 + 1) << 32) - yf + dy - 1) // dy)
            elif dy < 0:
                end = min(wo, xo + ((yf - (y0 << 32)) // (-dy)) + 1)
            else:
                end = wo
            end = max(end, xo + 1)
            if stretches and y0 >= 0 and y0 + 1 < h:
                # yf stays in [y0, y0 + 1): inside the source rows for the whole run
                ra = src[y0]
                rb = src[y0 + 1]
                k = xo
                while k < end:
                    x0 = xf >> 32
                    bx = x0 - 2
                    if xf < lo or xf > xhi:
                        orow[k] = np.nan
                        m = np.int64(1)
                    elif bx < 0 or bx + 6 > w:
                        orow[k] = _row_general(
                            src, trow, xf, yf, lut, shift, rnd, fmask, half, clamp
                        )
                        m = np.int64(1)
                    else:
                        li = ((xf & fmask) + rnd) >> shift
                        # outputs k + i (i < m) keep x0 + i and LUT row li: their
                        # fraction f0 + i g stays in LUT row li's interval
                        f0 = xf & fmask
                        if g > 0:
                            m = (min(one, ((li + 1) << shift) - rnd) - 1 - f0) // g + 1
                        elif g < 0:
                            m = (f0 - max(np.int64(0), (li << shift) - rnd)) // (-g) + 1
                        else:
                            m = end - k
                        m = max(np.int64(1), min(m, end - k, w - 3 - x0))
                        wr = lut[li]
                        w0, w1, w2, w3, w4, w5 = wr[0], wr[1], wr[2], wr[3], wr[4], wr[5]
                        for i in range(m):
                            xi = x0 + i
                            b = xi - 2
                            acc = (w0 * trow[b] + w1 * trow[b + 1]
                                   + w2 * trow[b + 2] + w3 * trow[b + 3]
                                   + w4 * trow[b + 4] + w5 * trow[b + 5])  # fmt: skip
                            if clamp:
                                v1 = ra[xi]
                                v2 = ra[xi + 1]
                                v3 = rb[xi]
                                v4 = rb[xi + 1]
                                acc = min(max(acc, min(min(v1, v2), min(v3, v4))),
                                          max(max(v1, v2), max(v3, v4)))  # fmt: skip
                            orow[k + i] = acc
                    xf += m * dx
                    yf += m * dy
                    k += m
            elif taps == 6 and y0 >= 0 and y0 + 1 < h:
                # yf stays in [y0, y0 + 1): inside the source rows for the whole run
                ra = src[y0]
                rb = src[y0 + 1]
                for k in range(xo, end):
                    if xf < lo or xf > xhi:
                        orow[k] = np.nan
                    else:
                        x0 = xf >> 32
                        bx = x0 - 2
                        if bx >= 0 and bx + 6 <= w:
                            wr = lut[((xf & fmask) + rnd) >> shift]
                            acc = (wr[0] * trow[bx] + wr[1] * trow[bx + 1]
                                   + wr[2] * trow[bx + 2] + wr[3] * trow[bx + 3]
                                   + wr[4] * trow[bx + 4] + wr[5] * trow[bx + 5])  # fmt: skip
                            if clamp:
                                v1 = ra[x0]
                                v2 = ra[x0 + 1]
                                v3 = rb[x0]
                                v4 = rb[x0 + 1]
                                acc = min(max(acc, min(min(v1, v2), min(v3, v4))),
                                          max(max(v1, v2), max(v3, v4)))  # fmt: skip
                            orow[k] = acc
                        else:
                            orow[k] = _row_general(
                                src, trow, xf, yf, lut, shift, rnd, fmask, half, clamp
                            )
                    xf += dx
                    yf += dy
            else:
                for k in range(xo, end):
                    if xf < lo or xf > xhi or yf < lo or yf > yhi:
                        orow[k] = np.nan
                    else:
                        orow[k] = _row_general(
                            src, trow, xf, yf, lut, shift, rnd, fmask, half, clamp
                        )
                    xf += dx
                    yf += dy
            xo = end


def warp_separable(
    plane: np.ndarray,
    plan: tuple,
    lut: np.ndarray,
    res_bits: int,
    clamp: bool,
    out: np.ndarray,
    tmp: np.ndarray | None = None,
) -> tuple[np.ndarray, bool]:
    """Resample the float32 *plane* into *out* by the two passes of *plan*.

    The two passes take no NaN: when a tap of the first pass reads one, *out* is left
    unfilled and the second return value is False (the caller then uses the 2-D kernel,
    which renormalises around NaN).  A NaN no output reaches does not count.

    Parameters
    ----------
    plane : ndarray
        float32 ``[h, w]`` source.
    plan : tuple
        From :func:`separable_plan`.
    lut : ndarray
        Kernel weights ``[res + 1, taps]`` (rows sum to one).
    res_bits : int
        ``log2(res)``.
    clamp : bool
        Clip each output to its 2x2 nearest source pixels.
    out : ndarray
        float32 ``[ho, wo]`` to fill.
    tmp : ndarray, optional
        float32 ``[ho, w]`` scratch for the first pass (reused across planes).

    Returns
    -------
    tmp : ndarray
        The scratch array (for reuse).
    done : bool
        False when the plane had to be left to the 2-D kernel (NaN read).
    """
    col_start, col_step, row_start, row_step = plan
    if tmp is None or tmp.shape != (out.shape[0], plane.shape[1]):
        tmp = np.empty((out.shape[0], plane.shape[1]), dtype=np.float32)
    # the second pass reads the source only at the 2x2 pixels nearest each output,
    # which the first pass's taps of those columns cover: its NaN test is enough
    if _columns(plane, col_start, col_step, lut, res_bits, tmp, get_num_threads()):
        return tmp, False
    _rows(plane, tmp, row_start, row_step, lut, res_bits, clamp, out)
    return tmp, True
