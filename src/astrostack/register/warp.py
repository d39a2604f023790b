"""Resampling frames onto the reference grid: Lanczos-3 (clamped), bicubic, bilinear.

Compiled kernels (numba, parallel over output rows) handle every method: the
interpolation kernel is tabulated once (1/1024 px steps, each row of taps
normalised to unit sum) and looked up per output pixel.  Affine transforms step
through the source in 32.32 fixed point (two integer additions per pixel);
projective ones use floating point.  Each output pixel
``(x, y)`` in reference coordinates is mapped back through the inverse transform
to the source frame; if it falls outside the source pixel area
(``-0.5 <= x <= nx - 0.5``) the output is NaN, so coverage is simply
``np.isfinite(out)``.  NaN source pixels are skipped and the remaining weights
renormalised.

Clamping (Lanczos and bicubic): each output is clipped to the range of its 2x2
nearest source neighbours, which removes the dark rings (negative lobes) around
bright stars while keeping Lanczos sharpness elsewhere.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from numba import njit, prange

from ..io.atomic import atomic_path
from .shear import separable_plan, warp_separable

__all__ = ["METHODS", "coverage", "warp", "warp_to_file"]

logger = logging.getLogger(__name__)

#: Interpolation methods and their number of taps per axis.
METHODS = {"lanczos3": 6, "bicubic": 4, "bilinear": 2}

_LUT_BITS = 10
_LUT_RES = 1 << _LUT_BITS  # kernel tabulated at 1/1024 px
# fast-math without 'nnan'/'ninf' (the kernels test for NaN, v == v) and without
# 'reassoc'/'contract', so that a warp gives the same bits however it was compiled
_FASTMATH = {"nsz", "arcp", "afn"}
_LUTS: dict[str, np.ndarray] = {}


def _kernel_values(method: str, t: np.ndarray) -> np.ndarray:
    at = np.abs(t)
    if method == "lanczos3":
        return np.where(at < 3.0, np.sinc(t) * np.sinc(t / 3.0), 0.0)
    if method == "bicubic":  # Keys, a = -0.5
        a = -0.5
        w1 = (a + 2) * at**3 - (a + 3) * at**2 + 1
        w2 = a * at**3 - 5 * a * at**2 + 8 * a * at - 4 * a
        return np.where(at <= 1, w1, np.where(at < 2, w2, 0.0))
    return np.maximum(1.0 - at, 0.0)  # bilinear


def _lut(method: str) -> np.ndarray:
    """Weights ``[res + 1, taps]`` for fractional offsets ``i / res``; rows sum to 1."""
    if method not in _LUTS:
        taps = METHODS[method]
        half = taps // 2 - 1
        frac = np.arange(_LUT_RES + 1) / _LUT_RES
        k = np.arange(-half, taps - half)
        w = _kernel_values(method, frac[:, None] - k[None, :])
        _LUTS[method] = (w / w.sum(axis=1, keepdims=True)).astype(np.float32)
    return _LUTS[method]


@njit(cache=True, fastmath=_FASTMATH)
def _sample_general(src, x0, y0, ix, iy, lut, clamp):  # pragma: no cover - compiled
    """One output value near the edges (taps replicated) or with NaN taps (renormalised)."""
    h, w = src.shape
    taps = lut.shape[1]
    bx = x0 - (taps // 2 - 1)
    by = y0 - (taps // 2 - 1)
    acc = np.float32(0.0)
    wsum = np.float32(0.0)
    for j in range(taps):
        row = src[min(max(by + j, 0), h - 1)]
        r = np.float32(0.0)
        rw = np.float32(0.0)
        for i in range(taps):
            v = row[min(max(bx + i, 0), w - 1)]
            if v == v:
                r += lut[ix, i] * v
                rw += lut[ix, i]
        acc += lut[iy, j] * r
        wsum += lut[iy, j] * rw
    if abs(wsum) < 1e-3:
        return np.float32(np.nan)
    val = acc / wsum
    if clamp:
        xa = min(max(x0, 0), w - 1)
        xb = min(max(x0 + 1, 0), w - 1)
        ya = min(max(y0, 0), h - 1)
        yb = min(max(y0 + 1, 0), h - 1)
        lo = np.float32(np.inf)
        hi = np.float32(-np.inf)
        for v in (src[ya, xa], src[ya, xb], src[yb, xa], src[yb, xb]):
            if v == v:
                lo = min(lo, v)
                hi = max(hi, v)
        if lo <= hi:
            val = min(max(val, lo), hi)
    return val


@njit(cache=True, fastmath=_FASTMATH, inline="always")
def _sample_interior(src, bx, by, ix, iy, lut, clamp):  # pragma: no cover - compiled
    """One output value whose taps are all inside the frame and finite.

    The weights of each row of taps sum to one.  Lanczos-3 (6 taps) is written
    out: six row sums of six taps, then one column sum.
    """
    taps = lut.shape[1]
    acc = np.float32(0.0)
    if taps == 6:
        w0 = lut[ix, 0]
        w1 = lut[ix, 1]
        w2 = lut[ix, 2]
        w3 = lut[ix, 3]
        w4 = lut[ix, 4]
        w5 = lut[ix, 5]
        for j in range(6):
            row = src[by + j]
            r = (w0 * row[bx] + w1 * row[bx + 1] + w2 * row[bx + 2]
                 + w3 * row[bx + 3] + w4 * row[bx + 4] + w5 * row[bx + 5])  # fmt: skip
            acc += lut[iy, j] * r
    else:
        for j in range(taps):
            row = src[by + j]
            r = np.float32(0.0)
            for i in range(taps):
                r += lut[ix, i] * row[bx + i]
            acc += lut[iy, j] * r
    if clamp:
        # the 2x2 nearest source pixels are taps (half, half) .. (half + 1, half + 1)
        h = taps // 2 - 1
        v1 = src[by + h, bx + h]
        v2 = src[by + h, bx + h + 1]
        v3 = src[by + h + 1, bx + h]
        v4 = src[by + h + 1, bx + h + 1]
        lo = min(min(v1, v2), min(v3, v4))
        hi = max(max(v1, v2), max(v3, v4))
        acc = min(max(acc, lo), hi)
    return acc


@njit(cache=True, fastmath=_FASTMATH, inline="always")
def _lanczos_pair(src, bx, by, lut, ix, iy, ix2, iy2, clamp):  # pragma: no cover - compiled
    """Two Lanczos-3 outputs whose 6x6 windows start at ``(bx, by)`` and ``(bx + 1, by)``.

    Each row of seven source pixels is read once for both (42 loads instead of 72);
    the arithmetic is that of :func:`_sample_interior`, so the values are the same
    to the bit.
    """
    a0 = lut[ix, 0]
    a1 = lut[ix, 1]
    a2 = lut[ix, 2]
    a3 = lut[ix, 3]
    a4 = lut[ix, 4]
    a5 = lut[ix, 5]
    b0 = lut[ix2, 0]
    b1 = lut[ix2, 1]
    b2 = lut[ix2, 2]
    b3 = lut[ix2, 3]
    b4 = lut[ix2, 4]
    b5 = lut[ix2, 5]
    acc1 = np.float32(0.0)
    acc2 = np.float32(0.0)
    for j in range(6):
        row = src[by + j]
        v0 = row[bx]
        v1 = row[bx + 1]
        v2 = row[bx + 2]
        v3 = row[bx + 3]
        v4 = row[bx + 4]
        v5 = row[bx + 5]
        v6 = row[bx + 6]
        acc1 += lut[iy, j] * (a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3 + a4 * v4 + a5 * v5)
        acc2 += lut[iy2, j] * (b0 * v1 + b1 * v2 + b2 * v3 + b3 * v4 + b4 * v5 + b5 * v6)
    if clamp:
        # the 2x2 nearest source pixels: columns bx + 2, bx + 3 (first), bx + 3, bx + 4
        # (second) of rows by + 2, by + 3
        p = src[by + 2, bx + 2]
        q = src[by + 2, bx + 3]
        r = src[by + 2, bx + 4]
        u = src[by + 3, bx + 2]
        v = src[by + 3, bx + 3]
        t = src[by + 3, bx + 4]
        acc1 = min(max(acc1, min(min(p, q), min(u, v))), max(max(p, q), max(u, v)))
        acc2 = min(max(acc2, min(min(q, r), min(v, t))), max(max(q, r), max(v, t)))
    return acc1, acc2


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _warp_affine(src, start, step, lut, res_bits, clamp, has_nan, out):  # pragma: no cover
    """Affine warp of one plane in 32.32 fixed point.

    ``start[r]`` (``[2, ho]`` int64: x then y) is the source position of output
    pixel ``(0, r)`` times 2**32 and ``step`` (x, y) its increment per output
    column, so each pixel costs two integer additions: integer and fractional
    parts come out by shifts and masks, the LUT row by rounding the fraction.
    Lanczos-3 outputs are computed two at a time when the second window is the
    first moved by one column (the usual case for small rotations).
    """
    h, w = src.shape
    ho, wo = out.shape
    taps = lut.shape[1]
    half = taps // 2 - 1
    shift = 32 - res_bits
    rnd = np.int64(1) << (shift - 1)
    fmask = (np.int64(1) << 32) - 1
    lo = -(np.int64(1) << 31)  # -0.5 px
    xhi = (np.int64(w) << 32) + lo  # w - 0.5 px
    yhi = (np.int64(h) << 32) + lo
    dx = step[0]
    dy = step[1]
    pairs = taps == 6 and not has_nan
    for yo in prange(ho):
        orow = out[yo]
        xf = start[0, yo]
        yf = start[1, yo]
        xo = 0
        while xo < wo:
            if xf < lo or xf > xhi or yf < lo or yf > yhi:
                orow[xo] = np.nan
                xo += 1
                xf += dx
                yf += dy
                continue
            x0 = xf >> 32
            y0 = yf >> 32
            ix = ((xf & fmask) + rnd) >> shift
            iy = ((yf & fmask) + rnd) >> shift
            bx = x0 - half
            by = y0 - half
            if not has_nan and bx >= 0 and bx + taps <= w and by >= 0 and by + taps <= h:
                if pairs and xo + 1 < wo and bx + 7 <= w:
                    xf2 = xf + dx
                    yf2 = yf + dy
                    if (xf2 >> 32) == x0 + 1 and (yf2 >> 32) == y0:
                        # the next window is this one moved by one column (small
                        # rotations): share the source reads
                        ix2 = ((xf2 & fmask) + rnd) >> shift
                        iy2 = ((yf2 & fmask) + rnd) >> shift
                        v1, v2 = _lanczos_pair(src, bx, by, lut, ix, iy, ix2, iy2, clamp)
                        orow[xo] = v1
                        orow[xo + 1] = v2
                        xo += 2
                        xf = xf2 + dx
                        yf = yf2 + dy
                        continue
                orow[xo] = _sample_interior(src, bx, by, ix, iy, lut, clamp)
            else:
                orow[xo] = _sample_general(src, x0, y0, ix, iy, lut, clamp)
            xo += 1
            xf += dx
            yf += dy


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _warp_projective(src, inv, lut, res, clamp, has_nan, out):  # pragma: no cover - compiled
    """General (projective) warp of one plane in floating point."""
    h, w = src.shape
    ho, wo = out.shape
    taps = lut.shape[1]
    half = taps // 2 - 1
    for yo in prange(ho):
        orow = out[yo]
        for xo in range(wo):
            xs = inv[0, 0] * xo + inv[0, 1] * yo + inv[0, 2]
            ys = inv[1, 0] * xo + inv[1, 1] * yo + inv[1, 2]
            pw = inv[2, 0] * xo + inv[2, 1] * yo + inv[2, 2]
            xs = xs / pw
            ys = ys / pw
            if not (xs >= -0.5 and xs <= w - 0.5 and ys >= -0.5 and ys <= h - 0.5):
                orow[xo] = np.nan
                continue
            x0 = int(np.floor(xs))
            y0 = int(np.floor(ys))
            ix = int((xs - x0) * res + 0.5)
            iy = int((ys - y0) * res + 0.5)
            bx = x0 - half
            by = y0 - half
            if not has_nan and bx >= 0 and bx + taps <= w and by >= 0 and by + taps <= h:
                orow[xo] = _sample_interior(src, bx, by, ix, iy, lut, clamp)
            else:
                orow[xo] = _sample_general(src, x0, y0, ix, iy, lut, clamp)


def _fixed_point_plan(
    inv: np.ndarray, out_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Row starts and column step of an affine map in 32.32 fixed point, or ``None``
    when the map is projective or reaches beyond +-2**30 px (int64 range)."""
    if inv[2, 0] != 0.0 or inv[2, 1] != 0.0 or inv[2, 2] != 1.0:
        return None
    ho, wo = out_shape
    corners = np.array([[0, 0, 1], [wo, 0, 1], [0, ho, 1], [wo, ho, 1]], dtype=np.float64)
    if not np.all(np.abs(corners @ inv[:2].T) < 2.0**30):
        return None
    one = 2.0**32
    rows = np.arange(ho, dtype=np.float64)
    start = np.rint(np.stack([inv[0, 1] * rows + inv[0, 2], inv[1, 1] * rows + inv[1, 2]]) * one)
    step = np.rint(inv[:2, 0] * one)
    return start.astype(np.int64), step.astype(np.int64)


def _prepare(image: np.ndarray, matrix: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    if method not in METHODS:
        msg = f"unknown interpolation {method!r}; use one of {', '.join(METHODS)}"
        raise ValueError(msg)
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        msg = f"warp: expected an image [y, x] or [c, y, x], got shape {image.shape}"
        raise ValueError(msg)
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) < 1e-12:
        msg = f"warp: matrix must be a finite, invertible 3x3 array, got {m!r}"
        raise ValueError(msg)
    src = np.ascontiguousarray(image if image.ndim == 3 else image[None], dtype=np.float32)
    inv = np.linalg.inv(m)
    if np.array_equal(m[2], (0.0, 0.0, 1.0)):
        inv[2] = (0.0, 0.0, 1.0)  # affine: keep the inverse exactly affine
    return src, inv


def _out_shape(image: np.ndarray, output_shape: tuple[int, ...]) -> tuple[int, int, int]:
    oy, ox = (int(v) for v in tuple(output_shape)[-2:])
    nc = image.shape[0] if image.ndim == 3 else 1
    return nc, oy, ox


def warp(
    image: np.ndarray,
    matrix: np.ndarray,
    output_shape: tuple[int, ...],
    method: str = "lanczos3",
    clamp: bool = True,
    out: np.ndarray | None = None,
    separable: bool = True,
) -> np.ndarray:
    """Resample *image* onto the reference grid.

    Parameters
    ----------
    image : ndarray
        ``[y, x]`` or ``[c, y, x]`` frame.
    matrix : ndarray
        3x3 transform mapping frame ``(x, y)`` to reference ``(x, y)``.
    output_shape : tuple of int
        Reference shape; only the last two entries ``(ny, nx)`` are used.
    method : {'lanczos3', 'bicubic', 'bilinear'}
        Interpolation kernel.
    clamp : bool
        Clip each output to its 2x2 source neighbourhood (Lanczos/bicubic only).
    out : ndarray, optional
        float32 array to write into (e.g. a memory map), shaped like the result.
    separable : bool
        Resample near-axis-aligned affine maps of NaN-free planes in two 1-D passes
        (:mod:`astrostack.register.shear`: 12 taps per pixel instead of 36 for
        Lanczos-3, the same result to a small fraction of the noise); False always
        uses the 2-D kernel.

    Returns
    -------
    ndarray
        float32, ``[ny, nx]`` or ``[c, ny, nx]``; NaN outside the frame's footprint.
    """
    src, inv = _prepare(image, matrix, method)
    nc, oy, ox = _out_shape(np.asarray(image), output_shape)
    shape = (oy, ox) if np.asarray(image).ndim == 2 else (nc, oy, ox)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        msg = f"warp: out must be float32 with shape {shape}, got {out.dtype} {out.shape}"
        raise ValueError(msg)
    view = out if out.ndim == 3 else out.reshape(1, oy, ox)
    do_clamp = bool(clamp and method != "bilinear")
    lut = _lut(method)
    plan = _fixed_point_plan(inv, (oy, ox))
    two_pass = separable_plan(inv, src.shape[-2:], (oy, ox)) if separable else None
    tmp = None
    for c in range(nc):
        plane = src[c]
        if two_pass is not None:  # it tells when a NaN makes it leave the plane
            tmp, done = warp_separable(plane, two_pass, lut, _LUT_BITS, do_clamp, view[c], tmp)
            if done:
                continue
        # a float32 sum is NaN or inf when a pixel is: only then look for NaN
        has_nan = not np.isfinite(plane.sum(dtype=np.float32)) and bool(np.isnan(plane).any())
        if plan is not None:
            _warp_affine(plane, plan[0], plan[1], lut, _LUT_BITS, do_clamp, has_nan, view[c])
        else:
            _warp_projective(plane, inv, lut, _LUT_RES, do_clamp, has_nan, view[c])
    return out


def coverage(warped: np.ndarray) -> np.ndarray:
    """Boolean footprint of a warped frame (True where it has data)."""
    warped = np.asarray(warped)
    finite = np.isfinite(warped)
    return finite.all(axis=0) if warped.ndim == 3 else finite


def warp_to_file(
    image: np.ndarray,
    matrix: np.ndarray,
    output_shape: tuple[int, ...],
    path: str | Path,
    method: str = "lanczos3",
    clamp: bool = True,
    durable: bool = True,
) -> Path:
    """Warp *image* straight into a float32 ``.npy`` file, written atomically.

    The result is written into a memory-mapped temporary ``.npy`` beside *path*
    (no second full-size copy in memory) and renamed over *path* on success.
    NaN marks pixels outside the footprint; the stacker reads row bands from it.
    ``durable=False`` skips the ``fsync`` before the rename (see
    :func:`astrostack.io.atomic_path`): right for a cache that can be recomputed.

    Returns
    -------
    Path
        The final path.
    """
    path = Path(path)
    src = np.asarray(image)
    nc, oy, ox = _out_shape(src, output_shape)
    shape = (oy, ox) if src.ndim == 2 else (nc, oy, ox)
    with atomic_path(path, durable=durable) as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype="<f4", shape=shape)
        try:
            warp(src, matrix, output_shape, method=method, clamp=clamp, out=mm)
            if durable:  # msync: only a durable file needs its pages on disk now
                mm.flush()
        finally:
            del mm
    logger.debug("wrote %s", path)
    return path
