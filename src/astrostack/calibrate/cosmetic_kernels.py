"""Compiled kernels of :mod:`astrostack.calibrate.cosmetic`.

Same-colour local medians, replacement of defective pixels and the isolated-hot-pixel search.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _median_of(buf: np.ndarray, n: int) -> float:
    """Median of ``buf[:n]`` (n >= 1), sorting that prefix in place (insertion sort: n <= 24)."""
    for i in range(1, n):
        v = buf[i]
        j = i - 1
        while j >= 0 and buf[j] > v:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = v
    if n % 2 == 1:
        return buf[n // 2]
    return 0.5 * (buf[n // 2 - 1] + buf[n // 2])


@njit(cache=True, parallel=True, nogil=True)
def _local_median_kernel(img: np.ndarray, step: int, radius: int) -> np.ndarray:
    """Median of the same-colour samples in a ``(2r+1)^2`` window, centre excluded.

    Samples lie at multiples of *step* from the centre; those outside the image are ignored.
    NaN samples are ignored.  Output is NaN where no sample is available.
    """
    ny, nx = img.shape
    out = np.empty((ny, nx), dtype=np.float32)
    nmax = (2 * radius + 1) * (2 * radius + 1) - 1
    for y in prange(ny):
        buf = np.empty(nmax, dtype=np.float32)
        for x in range(nx):
            n = 0
            for dy in range(-radius, radius + 1):
                yy = y + dy * step
                if yy < 0 or yy >= ny:
                    continue
                for dx in range(-radius, radius + 1):
                    if dy == 0 and dx == 0:
                        continue
                    xx = x + dx * step
                    if xx < 0 or xx >= nx:
                        continue
                    v = img[yy, xx]
                    if v == v:
                        buf[n] = v
                        n += 1
            if n == 0:
                out[y, x] = np.nan
            else:
                out[y, x] = _median_of(buf, n)
    return out


@njit(cache=True, inline="always")
def _replace_one(
    img: np.ndarray, mask: np.ndarray, also: np.ndarray, y: int, x: int, step: int
) -> bool:
    """Replace ``img[y, x]`` by the median of its same-colour neighbours in neither mask.

    Looks at the 8 neighbours at distance *step*; when all are masked, outside or NaN,
    widens to the 16 at distance ``2*step``.  Returns False when none is usable.
    """
    ny, nx = img.shape
    buf = np.empty(16, dtype=np.float32)
    for radius in range(1, 3):
        n = 0
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                if max(abs(dy), abs(dx)) != radius:
                    continue
                yy = y + dy * step
                xx = x + dx * step
                if yy < 0 or yy >= ny or xx < 0 or xx >= nx:
                    continue
                if mask[yy, xx] or also[yy, xx]:
                    continue
                v = img[yy, xx]
                if v == v:
                    buf[n] = v
                    n += 1
        if n > 0:
            img[y, x] = _median_of(buf, n)
            return True
    return False


@njit(cache=True, nogil=True)
def _fill_index(
    a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray, out: np.ndarray
) -> int:
    """Write the raveled indices where *a* or *b* (1-D boolean) is True into *out*.

    *wa* and *wb* are their first bytes as uint64: defects are sparse, so 64 pixels are
    tested at once.  Returns how many there are; only the first ``out.size`` are written.
    """
    n = 0
    n_blocks = wa.size // 8  # 8 words, 64 pixels
    for blk in range(n_blocks):
        any_set = np.uint64(0)
        for j in range(8):
            any_set |= wa[8 * blk + j] | wb[8 * blk + j]
        if any_set == 0:
            continue
        for i in range(64 * blk, 64 * blk + 64):
            if a[i] or b[i]:
                if n < out.size:
                    out[n] = i
                n += 1
    for i in range(64 * n_blocks, a.size):
        if a[i] or b[i]:
            if n < out.size:
                out[n] = i
            n += 1
    return n


@njit(cache=True, parallel=True, nogil=True)
def _replace_listed(
    img: np.ndarray, mask: np.ndarray, also: np.ndarray, index: np.ndarray, step: int
) -> int:
    """Replace the pixels at the raveled *index* in place (see :func:`_replace_one`).

    *index* lists every pixel of ``mask | also``.  No copy is needed because only masked
    pixels are written and masked pixels are never read, so the order does not matter.
    Returns the number of pixels that could not be replaced.
    """
    nx = img.shape[1]
    failed = 0
    for k in prange(index.size):
        y = index[k] // nx
        if not _replace_one(img, mask, also, y, index[k] - y * nx, step):
            failed += 1
    return failed


@njit(cache=True, inline="always")
def _excess_at(img: np.ndarray, med: np.ndarray, y: int, x: int) -> float:
    """``img - med`` at ``[y, x]``, 0 where it is not finite."""
    e = img[y, x] - med[y, x]
    return e if np.isfinite(e) else np.float32(0.0)


@njit(cache=True, parallel=True, nogil=True)
def _isolated_kernel(img: np.ndarray, med: np.ndarray, thr: float, iso_frac: float) -> np.ndarray:
    """Pixels whose excess ``img - med`` exceeds *thr* and each adjacent pixel's by ``1/iso_frac``.

    The excess is computed where needed (non-finite counts as 0), so no excess image is made.
    """
    ny, nx = img.shape
    out = np.zeros((ny, nx), dtype=np.bool_)
    for y in prange(ny):
        for x in range(nx):
            e = _excess_at(img, med, y, x)
            if not (e > thr):
                continue
            m = -np.inf
            for dy in range(-1, 2):
                yy = y + dy
                if yy < 0 or yy >= ny:
                    continue
                for dx in range(-1, 2):
                    if dy == 0 and dx == 0:
                        continue
                    xx = x + dx
                    if xx < 0 or xx >= nx:
                        continue
                    v = _excess_at(img, med, yy, xx)
                    if v > m:
                        m = v
            if m < iso_frac * e:
                out[y, x] = True
    return out


@njit(cache=True)
def _median9(p0, p1, p2, p3, p4, p5, p6, p7, p8):
    """Median of nine finite values by a 19 compare-exchange network (Paeth; Devillard)."""
    p1, p2 = min(p1, p2), max(p1, p2)
    p4, p5 = min(p4, p5), max(p4, p5)
    p7, p8 = min(p7, p8), max(p7, p8)
    p0, p1 = min(p0, p1), max(p0, p1)
    p3, p4 = min(p3, p4), max(p3, p4)
    p6, p7 = min(p6, p7), max(p6, p7)
    p1, p2 = min(p1, p2), max(p1, p2)
    p4, p5 = min(p4, p5), max(p4, p5)
    p7, p8 = min(p7, p8), max(p7, p8)
    p3 = max(p0, p3)
    p5 = min(p5, p8)
    p4, p7 = min(p4, p7), max(p4, p7)
    p6 = max(p3, p6)
    p4 = max(p1, p4)
    p2 = min(p2, p5)
    p4 = min(p4, p7)
    p4, p2 = min(p4, p2), max(p4, p2)
    p4 = max(p6, p4)
    return min(p4, p2)


@njit(cache=True)
def _blur_at(img: np.ndarray, y: int, x: int, step: int) -> float:
    """:func:`median_blur` (radius 1) at one pixel: same-colour 3x3, edges replicated.

    A window row or column past the edge of the pixel's own sub-lattice is the pixel's row or
    column itself, as OpenCV's replicated border of that sub-lattice plane.
    """
    ny, nx = img.shape
    ya = y - step if y >= step else y
    yb = y + step if y + step < ny else y
    xa = x - step if x >= step else x
    xb = x + step if x + step < nx else x
    return _median9(
        img[ya, xa], img[ya, x], img[ya, xb],
        img[y, xa], img[y, x], img[y, xb],
        img[yb, xa], img[yb, x], img[yb, xb],
    )  # fmt: skip


@njit(cache=True, parallel=True, nogil=True)
def _blur_excess_samples(img: np.ndarray, step: int, stride: int) -> np.ndarray:
    """``img - median_blur(img)`` at every *stride*-th pixel of the raveled image."""
    ny, nx = img.shape
    n = (ny * nx + stride - 1) // stride
    out = np.empty(n, dtype=np.float32)
    for i in prange(n):
        j = np.intp(i) * stride
        y = j // nx
        x = j - y * nx
        out[i] = img[y, x] - _blur_at(img, y, x, step)
    return out


@njit(cache=True)
def _window_check(img: np.ndarray, y: int, x: int, step: int, thr32: np.float32) -> int:
    """Count the window values more than *thr32* below ``img[y, x]``; -1 if one is not finite.

    The window is the same-colour 3x3 of :func:`_blur_at` (edges replicated).
    """
    ny, nx = img.shape
    v = img[y, x]
    n = 0
    for dy in range(-1, 2):
        yy = y + dy * step
        yy = yy if 0 <= yy < ny else y
        for dx in range(-1, 2):
            xx = x + dx * step
            xx = xx if 0 <= xx < nx else x
            w = img[yy, xx]
            if not np.isfinite(w):
                return -1
            n += v - w > thr32
    return n


@njit(cache=True, parallel=True, nogil=True)
def _isolated_sparse_kernel(
    img: np.ndarray, step: int, thr: float, thr32: np.float32, iso_frac: float, out: np.ndarray
) -> tuple[np.ndarray, int]:
    """:func:`_isolated_kernel` with the blurred reference computed only where needed.

    ``img - blur > thr`` holds exactly when at least 5 of the 9 window values ``w`` have
    ``img - w > thr`` (float32 differences: the median is one of the window values and the
    rounded difference is monotonic in ``w``), which needs ``img - min(w) > thr``: that
    branch-free test over the frame picks the few pixels where the count, the median and the
    neighbours' medians are computed.  *thr32* is the largest float32 not above *thr*
    (``x > thr32`` iff ``x > thr`` for float32 ``x``).  Finite images only: returns the
    flagged count of each row (flags set in *out*, which must be zeros) and the number of
    non-finite windows met (the result is void unless 0; every non-finite pixel fails the
    test itself or makes a neighbour fail it).
    """
    ny, nx = img.shape
    n = nx - 2 * step  # pixels with a whole window along x
    nw = (nx + 7) // 8
    n_row = np.zeros(ny, dtype=np.int64)
    n_bad = np.zeros(ny, dtype=np.int64)
    for yu in prange(ny):
        y = np.intp(yu)  # the parallel loop index is unsigned: keep index arithmetic signed
        ra = img[y - step] if y >= step else img[y]
        r = img[y]
        rb = img[y + step] if y + step < ny else img[y]
        # shifted views, so that the vectorised loop indexes from 0 (no wraparound tests)
        a0, a1, a2 = ra[:n], ra[step : step + n], ra[2 * step :]
        c0, c1, c2 = r[:n], r[step : step + n], r[2 * step :]
        b0, b1, b2 = rb[:n], rb[step : step + n], rb[2 * step :]
        test = np.zeros(8 * nw, dtype=np.bool_)
        tc = test[step : step + n]
        for x in range(n):
            m = min(min(a0[x], a1[x]), min(a2[x], c0[x]))
            m = min(m, min(min(c2[x], b0[x]), min(b1[x], b2[x])))
            tc[x] = not (c1[x] - m <= thr32)  # NaN passes: checked below
        test[:step] = True  # edge columns: always checked in full
        test[nx - step : nx] = True
        words = test.view(np.uint64)
        for w in range(nw):
            if words[w] == 0:
                continue
            for x in range(8 * w, min(8 * w + 8, nx)):
                if not test[x]:
                    continue
                k = _window_check(img, y, x, step, thr32)
                if k < 0:
                    n_bad[y] += 1
                    continue
                if k < 5:
                    continue
                e = r[x] - _blur_at(img, y, x, step)
                if not (e > thr):
                    continue
                lim = iso_frac * e
                isolated = True
                for yy in range(max(y - 1, 0), min(y + 2, ny)):
                    for xx in range(max(x - 1, 0), min(x + 2, nx)):
                        if yy == y and xx == x:
                            continue
                        en = img[yy, xx] - _blur_at(img, yy, xx, step)
                        if not (en < lim if np.isfinite(en) else 0.0 < lim):
                            isolated = False
                if isolated:
                    out[y, x] = True
                    n_row[y] += 1
    return n_row, n_bad.sum()


@njit(cache=True, nogil=True)
def _flagged_index(mask: np.ndarray, n_row: np.ndarray) -> np.ndarray:
    """Raveled indices of the True pixels of *mask*, reading only rows with ``n_row > 0``."""
    nx = mask.shape[1]
    index = np.empty(n_row.sum(), dtype=np.int64)
    k = 0
    for y in range(mask.shape[0]):
        if n_row[y] == 0:
            continue
        for x in range(nx):
            if mask[y, x]:
                index[k] = y * nx + x
                k += 1
    return index
