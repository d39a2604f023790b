"""Full-resolution measurements of stars found on a 2x2-binned image, without
subtracting the background from the whole frame.

:func:`binned_detection_image` makes the 2x2 mean of a frame (one compiled pass),
measures the sky on a row sample of it and returns the background-subtracted
binned image (for ``sep.extract``) and a :class:`Residual`: the frame plus its
coarse background map.  :class:`Residual` runs ``sep.flux_radius`` and
``sep.winpos`` on a mosaic of stamps cut around the stars, each holding the whole
aperture or window, so the results are those of a full residual image.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import sep
from numba import njit, prange

__all__ = ["Residual", "bin2_mean", "binned_detection_image", "subtract_bilinear"]


@njit(parallel=True, cache=True)
def bin2_mean(data, out):  # pragma: no cover - compiled
    """2x2 mean of a frame in one pass that also counts its non-finite pixels.

    Parameters
    ----------
    data : ndarray
        2-D float32 frame ``[ny, nx]``.
    out : ndarray
        float32 ``[ny // 2, nx // 2]``, filled with the means (an odd last row or
        column is not binned).

    Returns
    -------
    int
        Non-finite pixels of *data* (odd last row and column included; a cell
        holding several counts once).
    """
    ny, nx = data.shape
    hy, hx = out.shape
    bad = 0
    for yb in prange(hy):
        r0 = data[2 * yb]
        r1 = data[2 * yb + 1]
        n = 0
        for xb in range(hx):
            a = r0[2 * xb]
            b = r0[2 * xb + 1]
            c = r1[2 * xb]
            d = r1[2 * xb + 1]
            s = (a + b) + (c + d)
            out[yb, xb] = np.float32(0.25) * s
            if not np.isfinite(s):
                n += 1
        if nx > 2 * hx:
            if not (np.isfinite(r0[nx - 1]) and np.isfinite(r1[nx - 1])):
                n += 1
        bad += n
    if ny > 2 * hy:
        for x in range(nx):
            if not np.isfinite(data[ny - 1, x]):
                bad += 1
    return bad


@njit(cache=True)
def _axis_weights(n, scale, offset, m):  # pragma: no cover - compiled
    """Lower sample index and weight of ``i * scale + offset`` on ``m`` samples (clamped)."""
    idx = np.empty(n, dtype=np.int64)
    wt = np.empty(n, dtype=np.float32)
    for i in range(n):
        f = min(max(i * scale + offset, 0.0), m - 1.0)
        i0 = min(int(f), max(m - 2, 0))
        idx[i] = i0
        wt[i] = f - i0
    return idx, wt


@njit(parallel=True, cache=True)
def subtract_bilinear(data, bmap, sy, oy, sx, ox, out):  # pragma: no cover - compiled
    """Subtract a coarse background map, interpolated bilinearly, from an image.

    Parameters
    ----------
    data : ndarray
        2-D float32 image ``[ny, nx]``.
    bmap : ndarray
        2-D float32 map; pixel ``(y, x)`` of *data* reads it at
        ``(y * sy + oy, x * sx + ox)``, clamped to its edge (as ``cv2.resize``).
    sy, oy, sx, ox : float
        The mapping.
    out : ndarray
        float32 array shaped like *data*, receives ``data - map`` (may be *data*).
    """
    ny, nx = data.shape
    my, mx = bmap.shape
    yi, yw = _axis_weights(ny, sy, oy, my)
    xi, xw = _axis_weights(nx, sx, ox, mx)
    x1 = min(1, mx - 1)
    y1 = min(1, my - 1)
    for y in prange(ny):
        ty = yw[y]
        r0 = bmap[yi[y]]
        r1 = bmap[yi[y] + y1]
        d = data[y]
        o = out[y]
        if sx == 1.0 and ox == 0.0 and mx == nx:  # columns map one to one
            for x in range(nx):
                o[x] = d[x] - (r0[x] + ty * (r1[x] - r0[x]))
            continue
        row = np.empty(mx, dtype=np.float32)  # the map row at this y
        for i in range(mx):
            row[i] = r0[i] + ty * (r1[i] - r0[i])
        for x in range(nx):
            i = xi[x]
            a = row[i]
            o[x] = d[x] - (a + xw[x] * (row[i + x1] - a))


@njit(cache=True)
def _pack(size, width):  # pragma: no cover - compiled
    """Shelf packing of square stamps (sizes in decreasing order) into rows of *width*."""
    n = size.size
    px = np.empty(n, dtype=np.int64)
    py = np.empty(n, dtype=np.int64)
    x = 0
    y = 0
    shelf = 0
    for i in range(n):
        if x + size[i] > width:
            y += shelf
            x = 0
            shelf = 0
        px[i] = x
        py[i] = y
        x += size[i] + 1  # one blank column between stamps
        shelf = max(shelf, size[i] + 1)
    return px, py, y + shelf


@njit(parallel=True, cache=True)
def _fill_stamps(data, bmap, sy, oy, sx, ox, x0, y0, hgt, wid, px, py, out):  # pragma: no cover
    """Copy ``data - bilinear(bmap)`` of the boxes ``[y0, y0 + hgt) x [x0, x0 + wid)``
    (inside *data*) to ``out[py:, px:]``; non-finite pixels give 0."""
    my, mx = bmap.shape
    x1 = min(1, mx - 1)
    y1 = min(1, my - 1)
    for k in prange(x0.size):
        for j in range(hgt[k]):
            y = y0[k] + j
            fy = min(max(y * sy + oy, 0.0), my - 1.0)
            iy = min(int(fy), max(my - 2, 0))
            ty = np.float32(fy - iy)
            for i in range(wid[k]):
                x = x0[k] + i
                fx = min(max(x * sx + ox, 0.0), mx - 1.0)
                ix = min(int(fx), max(mx - 2, 0))
                tx = np.float32(fx - ix)
                a = bmap[iy, ix] + tx * (bmap[iy, ix + x1] - bmap[iy, ix])
                b = bmap[iy + y1, ix] + tx * (bmap[iy + y1, ix + x1] - bmap[iy + y1, ix])
                v = data[y, x]
                # a pixel without data (NaN) has no signal either
                out[py[k] + j, px[k] + i] = v - (a + ty * (b - a)) if np.isfinite(v) else 0.0


class Residual:
    """Background-subtracted pixels for the per-star measurements (sep's
    ``flux_radius`` and ``winpos``).

    Build it with ``Residual(sub=residual_image)``, or with
    ``Residual(data=frame, bmap=map, mapping=(sy, oy, sx, ox))`` (see
    :func:`subtract_bilinear` for the mapping).

    Either a full residual image, or the image plus a coarse background map (NaN
    pixels of the image count as zero residual): then
    each measurement runs on a mosaic of stamps cut around the stars, each large
    enough to hold the whole aperture or window (so the results are those of the
    full residual image), without ever subtracting the background from the
    whole frame.  Stars whose stamp would cross the image edge are measured on
    their own stamp, clipped like the image, so sep truncates them as before.
    """

    def __init__(
        self,
        sub: np.ndarray | None = None,
        data: np.ndarray | None = None,
        bmap: np.ndarray | None = None,
        mapping: tuple[float, float, float, float] = (1.0, 0.0, 1.0, 0.0),
    ) -> None:
        self.sub, self.data, self.bmap, self.mapping = sub, data, bmap, mapping

    def at(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Residual values at integer pixels ``(y, x)`` (arrays of equal size)."""
        if self.sub is not None:
            return self.sub[y, x]
        sy, oy, sx, ox = self.mapping
        out = np.empty((1, y.size), dtype=np.float32)
        ones = np.ones(y.size, dtype=np.int64)
        px, py = np.arange(y.size, dtype=np.int64), np.zeros(y.size, dtype=np.int64)
        _fill_stamps(self.data, self.bmap, sy, oy, sx, ox, x.astype(np.int64),
                     y.astype(np.int64), ones, ones, px, py, out)  # fmt: skip
        return out[0]

    def box(self, y0: int, x0: int, hgt: int, wid: int) -> np.ndarray:
        """Residual of the box ``[y0, y0 + hgt) x [x0, x0 + wid)`` (inside the image).

        From a frame and its map, pixels without data (NaN) are zero, as on the stamps.
        """
        if self.sub is not None:
            return self.sub[y0 : y0 + hgt, x0 : x0 + wid]
        out = np.empty((hgt, wid), dtype=np.float32)
        sy, oy, sx, ox = self.mapping
        one = np.array([1], dtype=np.int64)
        zero = np.zeros(1, dtype=np.int64)
        _fill_stamps(self.data, self.bmap, sy, oy, sx, ox, one * x0, one * y0, one * hgt,
                     one * wid, zero, zero, out)  # fmt: skip
        return out

    def rows(self, y: np.ndarray) -> np.ndarray:
        """Residual of the whole image rows *y*, ``[y.size, nx]`` (NaN pixels as in :meth:`box`)."""
        y = np.asarray(y, dtype=np.int64)
        if self.sub is not None:
            return self.sub[y]
        nx = self.data.shape[1]
        out = np.empty((y.size, nx), dtype=np.float32)
        sy, oy, sx, ox = self.mapping
        zero = np.zeros(y.size, dtype=np.int64)
        ones = np.ones(y.size, dtype=np.int64)
        _fill_stamps(self.data, self.bmap, sy, oy, sx, ox, zero, y, ones, ones * nx, zero,
                     np.arange(y.size, dtype=np.int64), out)  # fmt: skip
        return out

    def _mosaic(
        self, x: np.ndarray, y: np.ndarray, reach: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Stamps of half-size ``ceil(reach) + 2`` around ``(x, y)``: the mosaic, the
        offsets from image to mosaic coordinates and which stars it holds."""
        ny, nx = self.data.shape
        half = np.ceil(np.clip(np.nan_to_num(reach, nan=40.0), 0.0, 200.0)).astype(np.int64) + 2
        cx = np.rint(np.nan_to_num(x)).astype(np.int64)
        cy = np.rint(np.nan_to_num(y)).astype(np.int64)
        ok = (cx - half >= 0) & (cx + half <= nx - 1) & (cy - half >= 0) & (cy + half <= ny - 1)
        ok &= np.isfinite(x) & np.isfinite(y)
        size = 2 * half + 1
        order = np.argsort(-size[ok], kind="stable")
        idx = np.flatnonzero(ok)[order]
        width = int(max(256, size.max(initial=1), np.sqrt(float((size[idx] ** 2).sum())) * 1.2))
        px, py, height = _pack(size[idx], width)
        mosaic = np.zeros((max(int(height), 1), width), dtype=np.float32)
        sy, oy, sx, ox = self.mapping
        x0, y0 = cx[idx] - half[idx], cy[idx] - half[idx]
        sz = size[idx]
        _fill_stamps(self.data, self.bmap, sy, oy, sx, ox, x0, y0, sz, sz, px, py, mosaic)
        dx = np.zeros(x.size)
        dy = np.zeros(x.size)
        dx[idx] = px - x0
        dy[idx] = py - y0
        return mosaic, dx, dy, ok

    def _edge_stamp(self, x: float, y: float, reach: float) -> tuple[np.ndarray, int, int]:
        """The stamp of one star, clipped to the image, and its origin."""
        ny, nx = self.data.shape
        half = int(np.ceil(min(reach, 200.0) if np.isfinite(reach) else 40.0)) + 2
        x0, y0 = min(max(round(x) - half, 0), nx - 1), min(max(round(y) - half, 0), ny - 1)
        x1, y1 = max(min(round(x) + half, nx - 1), x0), max(min(round(y) + half, ny - 1), y0)
        hgt, wid = y1 - y0 + 1, x1 - x0 + 1
        stamp = np.empty((hgt, wid), dtype=np.float32)
        sy, oy, sx, ox = self.mapping
        zero = np.zeros(1, dtype=np.int64)
        _fill_stamps(self.data, self.bmap, sy, oy, sx, ox, np.array([x0]), np.array([y0]),
                     np.array([hgt]), np.array([wid]), zero, zero, stamp)  # fmt: skip
        return stamp, x0, y0

    def _run(
        self,
        fn: Callable,
        x: np.ndarray,
        y: np.ndarray,
        reach: np.ndarray,
        per_star: tuple[np.ndarray, ...],
        extra: dict,
        kinds: str,
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Run ``fn(image, x, y, *per_star_args, **extra)`` on stamps; results per star.

        *kinds* gives the result arrays' types (``'f'`` float, ``'i'`` int flags);
        a position that is not finite gets NaN (and flag 0).
        """
        mosaic, dx, dy, ok = self._mosaic(x, y, reach)
        finite = np.isfinite(x) & np.isfinite(y)
        full = [np.full(x.size, np.nan) if k == "f" else np.zeros(x.size, np.int64) for k in kinds]
        if ok.any():
            outs = fn(mosaic, x[ok] + dx[ok], y[ok] + dy[ok], *(a[ok] for a in per_star), **extra)
            for f, o in zip(full, outs, strict=True):
                f[ok] = o
        for k in np.flatnonzero(~ok & finite):
            stamp, x0, y0 = self._edge_stamp(x[k], y[k], reach[k])
            dx[k], dy[k] = -x0, -y0
            one = fn(stamp, x[k : k + 1] - x0, y[k : k + 1] - y0,
                     *(a[k : k + 1] for a in per_star), **extra)  # fmt: skip
            for f, o in zip(full, one, strict=True):
                f[k] = np.asarray(o)[0]
        return full, dx, dy

    def flux_radius(
        self, x: np.ndarray, y: np.ndarray, rmax: np.ndarray, frac: float, subpix: int = 5
    ) -> np.ndarray:
        """``sep.flux_radius`` radii (px) of the residual around ``(x, y)``.

        Parameters
        ----------
        x, y : ndarray
            Positions (px).
        rmax : ndarray
            Aperture radii (px), also the stamps' reach.
        frac : float
            Flux fraction.
        subpix : int
            sep's subpixel sampling.
        """
        rmax = np.asarray(rmax, dtype=np.float64)
        if self.sub is not None:
            return np.asarray(sep.flux_radius(self.sub, x, y, rmax, frac, subpix=subpix)[0])
        (r, _flag), _, _ = self._run(sep.flux_radius, x, y, rmax, (rmax, ),
                                     {"frac": frac, "subpix": subpix}, "fi")  # fmt: skip
        return r

    def winpos(
        self, x: np.ndarray, y: np.ndarray, sig: np.ndarray, reach: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``sep.winpos`` windowed centroids of the residual.

        Parameters
        ----------
        x, y : ndarray
            Starting positions (px).
        sig : ndarray
            Window sigma (px).
        reach : ndarray
            How far (px) from ``(x, y)`` the window (4 sigma) may read when the
            result is kept; the stamps are this large.

        Returns
        -------
        x, y, flag : ndarray
            sep's results in image coordinates.
        """
        if self.sub is not None:
            return sep.winpos(self.sub, x, y, sig)
        (xw, yw, flag), dx, dy = self._run(sep.winpos, x, y, reach, (sig,), {}, "ffi")
        return xw - dx, yw - dy, flag


def binned_detection_image(
    data: np.ndarray, box: int
) -> tuple[np.ndarray, np.ndarray | None, Residual, float, float]:
    """2x2 mean of an image, background-subtracted, and its full-resolution residual.

    The sky mesh is measured on every other row of the 2x2 mean (boxes of ``box``
    binned pixels across and ``box // 2`` sampled rows, so each box spans
    ``box x box`` binned pixels as before, for half the pixels); the map is
    interpolated bilinearly onto the binned grid here and onto the native grid,
    stamp by stamp, by the :class:`Residual`.  Binned pixels holding a non-finite
    pixel are masked (zero in the returned image); in the residual such pixels
    are zero.

    Parameters
    ----------
    data : ndarray
        2-D float32 C-contiguous frame.
    box : int
        Background mesh size in binned pixels.

    Returns
    -------
    sub_binned : ndarray
        The background-subtracted 2x2 mean ``[ny // 2, nx // 2]``.
    mask : ndarray or None
        Masked binned pixels, ``None`` when the frame is finite.
    residual : Residual
        The frame and its background map.
    level, rms_binned : float
        Global sky level and RMS of the 2x2 mean (sep's).
    """
    ny, nx = data.shape
    hy, hx = ny // 2, nx // 2
    det = np.empty((hy, hx), dtype=np.float32)
    mask = None
    if bin2_mean(data, det):
        mask = ~np.isfinite(det)
        det[mask] = 0.0
        if mask.all():
            return det, mask, Residual(data=data, bmap=np.zeros((1, 1), np.float32)), 0.0, 0.0
    rows = np.ascontiguousarray(det[::2])
    rmask = None if mask is None else np.ascontiguousarray(mask[::2])
    bw = int(max(8, min(box, hx // 2)))
    bh = int(max(4, min(box // 2, rows.shape[0] // 2)))
    bk = sep.Background(rows, mask=rmask, bw=bw, bh=bh, fw=3, fh=3)
    bmap = bk.back(dtype=np.float32)
    # binned row yb is sampled row yb / 2; in place (each pixel is read, then written)
    sub_d = det
    subtract_bilinear(det, bmap, 0.5, 0.0, 1.0, 0.0, sub_d)
    if mask is not None:
        sub_d[mask] = 0.0
    # native pixel p is binned (p - 0.5) / 2, i.e. sampled row (y - 0.5) / 4
    resid = Residual(data=data, bmap=bmap, mapping=(0.25, -0.125, 0.5, -0.25))
    return sub_d, mask, resid, float(bk.globalback), float(bk.globalrms)
