"""Resampling frames onto the reference grid: Lanczos-3 (clamped), bicubic, bilinear.

One compiled kernel (numba, parallel over output rows) handles every method: the
interpolation kernel is tabulated once (1/1024 px steps, each row of taps
normalised to unit sum) and looked up per output pixel.  Each output pixel
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

__all__ = ["METHODS", "coverage", "warp", "warp_to_file"]

logger = logging.getLogger(__name__)

#: Interpolation methods and their number of taps per axis.
METHODS = {"lanczos3": 6, "bicubic": 4, "bilinear": 2}

_LUT_RES = 1024
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
def _sample_general(src, c, x0, y0, ix, iy, lut, clamp):  # pragma: no cover - compiled
    """One output value near the edges (taps replicated) or with NaN taps (renormalised)."""
    h, w = src.shape[1], src.shape[2]
    taps = lut.shape[1]
    bx = x0 - (taps // 2 - 1)
    by = y0 - (taps // 2 - 1)
    acc = np.float32(0.0)
    wsum = np.float32(0.0)
    for j in range(taps):
        row = src[c, min(max(by + j, 0), h - 1)]
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
        for v in (src[c, ya, xa], src[c, ya, xb], src[c, yb, xa], src[c, yb, xb]):
            if v == v:
                lo = min(lo, v)
                hi = max(hi, v)
        if lo <= hi:
            val = min(max(val, lo), hi)
    return val


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _warp_kernel(src, inv, lut, res, clamp, has_nan, out):  # pragma: no cover - compiled
    nc, h, w = src.shape
    ho, wo = out.shape[1], out.shape[2]
    taps = lut.shape[1]
    half = taps // 2 - 1
    projective = inv[2, 0] != 0.0 or inv[2, 1] != 0.0 or inv[2, 2] != 1.0
    for yo in prange(ho):
        for xo in range(wo):
            xs = inv[0, 0] * xo + inv[0, 1] * yo + inv[0, 2]
            ys = inv[1, 0] * xo + inv[1, 1] * yo + inv[1, 2]
            if projective:
                pw = inv[2, 0] * xo + inv[2, 1] * yo + inv[2, 2]
                xs = xs / pw
                ys = ys / pw
            if not (xs >= -0.5 and xs <= w - 0.5 and ys >= -0.5 and ys <= h - 0.5):
                for c in range(nc):
                    out[c, yo, xo] = np.nan
                continue
            x0 = int(np.floor(xs))
            y0 = int(np.floor(ys))
            ix = int((xs - x0) * res + 0.5)
            iy = int((ys - y0) * res + 0.5)
            bx = x0 - half
            by = y0 - half
            if not has_nan and bx >= 0 and bx + taps <= w and by >= 0 and by + taps <= h:
                # interior, no NaN: direct row access; the weights sum to one
                for c in range(nc):
                    acc = np.float32(0.0)
                    for j in range(taps):
                        row = src[c, by + j]
                        r = np.float32(0.0)
                        for i in range(taps):
                            r += lut[ix, i] * row[bx + i]
                        acc += lut[iy, j] * r
                    if clamp:
                        v1 = src[c, y0, x0]
                        v2 = src[c, y0, x0 + 1]
                        v3 = src[c, y0 + 1, x0]
                        v4 = src[c, y0 + 1, x0 + 1]
                        lo = min(min(v1, v2), min(v3, v4))
                        hi = max(max(v1, v2), max(v3, v4))
                        acc = min(max(acc, lo), hi)
                    out[c, yo, xo] = acc
            else:
                for c in range(nc):
                    out[c, yo, xo] = _sample_general(src, c, x0, y0, ix, iy, lut, clamp)


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
    return src, np.linalg.inv(m)


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
    has_nan = bool(np.isnan(src).any())
    do_clamp = bool(clamp and method != "bilinear")
    _warp_kernel(src, inv, _lut(method), _LUT_RES, do_clamp, has_nan, view)
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
) -> Path:
    """Warp *image* straight into a float32 ``.npy`` file, written atomically.

    The result is written into a memory-mapped temporary ``.npy`` beside *path*
    (no second full-size copy in memory) and renamed over *path* on success.
    NaN marks pixels outside the footprint; the stacker reads row bands from it.

    Returns
    -------
    Path
        The final path.
    """
    path = Path(path)
    src = np.asarray(image)
    nc, oy, ox = _out_shape(src, output_shape)
    shape = (oy, ox) if src.ndim == 2 else (nc, oy, ox)
    with atomic_path(path) as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype="<f4", shape=shape)
        try:
            warp(src, matrix, output_shape, method=method, clamp=clamp, out=mm)
            mm.flush()
        finally:
            del mm
    logger.debug("wrote %s", path)
    return path
