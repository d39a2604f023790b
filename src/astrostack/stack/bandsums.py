"""Compiled per-band sums of the stack's first pass (serial kernels, GIL released).

One row of tiles (a band) at a time, per channel:

- :func:`scan_band` - counts each tile's non-finite pixels, gathers its sample for the
  clipped statistics (padded with ``+inf`` so that ``np.sort`` along rows sorts all
  tiles at once) and the sample for the fill level (:func:`fill_level`,
  :func:`fill_rows`: no-data pixels take the band's level for the 3x3 median).
- :func:`accumulate_rows` - a few rows at a time, with their 3x3 median: the sums each
  tile's flux above a quadratic background needs, and the 4x4 block means, left out
  where the frame's own stars (dilated) or the given star mask touch them;
  :func:`finish_band` completes them and gives the block deviations from their tile's
  median, :func:`tile_row_flux` the fluxes.

Every sum is accumulated in the same order, with the same float64 arithmetic, as the
straightforward per-pixel loops (``tests/test_tile_kernels.py`` keeps those as the
reference), except where :func:`exact_order` proves that every order gives the same
sum: the statistics are bit-identical to them.  The kernels are serial: the stack
measures two frames at a time, each on one core, which nests no parallel region inside
another (that oversubscribed the cores).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .tilestats import exact_median

__all__ = [
    "N_SUMS",
    "accumulate_rows",
    "exact_order",
    "fill_level",
    "fill_rows",
    "finish_band",
    "full_tile_moments",
    "sample_size",
    "scan_band",
    "tile_row_flux",
]

# layout of the per-tile sums of accumulate_rows: finite pixels, sum of the smoothed
# values over them, sums of 1, u, w, u^2, uw, w^2 over them (the quadratic basis, for
# the fitted level), sums of the smoothed values times the basis over the fit pixels,
# and the moments sum(u^a w^b), a + b <= 4, over the fit pixels (the first: their number)
_NFIN, _TOTAL, _BASIS, _RHS, _MOM = 0, 1, 2, 8, 14
N_SUMS = 29

# exponents (a, b) of the quadratic basis 1, u, w, u^2, uw, w^2, and the position of
# the moment sum(u^a w^b) among the moments
_EXP_U = np.array([0, 1, 0, 2, 1, 0], dtype=np.int64)
_EXP_W = np.array([0, 0, 1, 0, 1, 2], dtype=np.int64)
_MOM_INDEX = np.array(
    [[0, 2, 5, 9, 14], [1, 4, 8, 13, -1], [3, 7, 12, -1, -1], [6, 11, -1, -1, -1],
     [10, -1, -1, -1, -1]], dtype=np.int64,
)  # fmt: skip


@njit(cache=True, nogil=True)
def scan_band(  # pragma: no cover - compiled
    plane: np.ndarray,
    tile: int,
    step: int,
    bad: np.ndarray,
    picks: np.ndarray,
    nsamp: np.ndarray,
    sub: np.ndarray,
    info: np.ndarray,
) -> None:
    """First look at a band: non-finite pixels, samples, level sample, magnitude range.

    ``bad[i]`` counts the non-finite pixels of tile column ``i``; ``picks[i, :nsamp[i]]``
    receives the finite values of the tile's ``step`` subsample (rows and columns ``0,
    step, ...`` from its corner), the rest of the row ``+inf`` so that ``np.sort``
    along rows sorts all tiles at once; *sub* the finite values of ``plane[::4, ::4]``
    (for the fill level, :func:`fill_level`).  *info* (int64): the number of non-finite
    pixels, of *sub* values, and the smallest and largest bit patterns of the non-zero
    finite magnitudes (for :func:`exact_order`).
    """
    rows, width = plane.shape
    nx = bad.shape[0]
    bits = plane.view(np.uint32)
    bad[:] = 0
    nsamp[:] = 0
    nsub = 0
    low = np.uint32(0x7F800000)
    high = np.uint32(0)
    magnitude = np.uint32(0x7FFFFFFF)
    for y in range(rows):
        vals = plane[y]
        for i in range(nx):
            x0 = i * tile
            x1 = min(x0 + tile, width)
            pattern = bits[y, x0:x1]
            c = 0
            for x in range(x1 - x0):
                # finite: |v| < inf; non-zero too: 0 < |v| (unsigned wrap-around for 0)
                a = pattern[x] & magnitude
                c += np.int32(a >= np.uint32(0x7F800000))
                ok = a - np.uint32(1) < np.uint32(0x7F7FFFFF)
                low = min(low, a if ok else np.uint32(0x7F800000))
                high = max(high, a if ok else np.uint32(0))
            bad[i] += c
            seg = vals[x0:x1]
            if y % step == 0:
                n = nsamp[i]
                dst = picks[i]
                for x in range(0, seg.size, step):
                    v = seg[x]
                    if np.isfinite(v):
                        dst[n] = v
                        n += 1
                nsamp[i] = n
        if y % 4 == 0:
            for x in range(0, width, 4):
                v = vals[x]
                if np.isfinite(v):
                    sub[nsub] = v
                    nsub += 1
    for i in range(nx):
        picks[i, nsamp[i] :] = np.inf
    info[0] = bad.sum()
    info[1] = nsub
    info[2] = low
    info[3] = high


@njit(cache=True, nogil=True)
def fill_level(plane: np.ndarray, sub: np.ndarray, nsub: int) -> np.float32:  # pragma: no cover
    """The value no-data pixels take for the 3x3 median, so that it ignores them.

    The band's level: the median of its finite values of ``plane[::4, ::4]`` (``sub``,
    from :func:`scan_band`), of all its finite values when that has none, 0 when there
    are none.
    """
    if nsub:
        return np.float32(exact_median(sub[:nsub], True))
    rows, width = plane.shape
    vals = np.empty(rows * width, dtype=np.float32)
    n = 0
    for y in range(rows):
        for x in range(width):
            v = plane[y, x]
            if np.isfinite(v):
                vals[n] = v
                n += 1
    return np.float32(exact_median(vals[:n], True)) if n else np.float32(0.0)


@njit(cache=True, nogil=True)
def fill_rows(src: np.ndarray, fill: np.float32, dst: np.ndarray) -> None:  # pragma: no cover
    """``dst = src`` with the non-finite values replaced by *fill*."""
    for y in range(src.shape[0]):
        vals = src[y]
        out = dst[y]
        for x in range(vals.size):
            v = vals[x]
            out[x] = v if np.isfinite(v) else fill


def sample_size(rows: int, tile: int, step: int) -> int:
    """Room per tile for :func:`scan_band`'s sample of a band of *rows* rows."""
    return ((rows + step - 1) // step) * ((tile + step - 1) // step)


@njit(cache=True, nogil=True)
def full_tile_moments(rows: int, width: int, tile: int) -> np.ndarray:  # pragma: no cover
    """Sums of the basis ``1, u, w, u^2, uw, w^2`` over a fully finite tile.

    They depend on its size alone; accumulated in the pixel order of
    :func:`accumulate_rows`, so its fully finite tiles can use them unchanged.
    """
    out = np.zeros(6)
    xc = 0.5 * (width - 1)
    yc = 0.5 * (rows - 1)
    scale = 1.0 / tile
    b1 = b2 = b3 = b4 = b5 = 0.0
    for y in range(rows):
        w = (y - yc) * scale
        w2 = w * w
        for x in range(width):
            u = (x - xc) * scale
            b1 += u
            b2 += w
            b3 += u * u
            b4 += u * w
            b5 += w2
    out[0] = rows * width
    out[1] = b1
    out[2] = b2
    out[3] = b3
    out[4] = b4
    out[5] = b5
    return out


@njit(cache=True, nogil=True)
def exact_order(low: int, high: int, n: int) -> bool:  # pragma: no cover - compiled
    """Whether every order of adding *n* float32 values gives the same float64 sum.

    *low*, *high*: the smallest and largest bit patterns of their non-zero magnitudes.
    Every value is a multiple of the quantum ``q`` of the smallest exponent; when ``n *
    max|v| <= 2**53 q`` every partial sum, in any order, is a multiple of ``q`` that
    float64 holds exactly, so all orders give the exact sum.  Not so with subnormal
    values or values spanning more than about ``2**(29 - log2 n)``.
    """
    if high < low:  # no non-zero value
        return True
    e_lo = low >> 23
    spread = (high >> 23) - e_lo
    # |v| < 2**(e_hi - 126) and q = 2**(e_lo - 150) (biased exponents e)
    return e_lo > 0 and spread <= 29 and n <= (1 << (29 - spread))


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _any_order_sum(vals: np.ndarray) -> float:  # pragma: no cover - compiled
    """float64 sum of float32 *vals* in whatever order vectorises (see exact_order)."""
    total = 0.0
    for x in range(vals.size):
        total += vals[x]
    return total


@njit(cache=True, nogil=True)
def _fit_row(  # pragma: no cover - compiled
    vals: np.ndarray,
    sm: np.ndarray,
    marks: np.ndarray,
    x0: int,
    x1: int,
    step: int,
    xc: float,
    scale: float,
    w: float,
    s: np.ndarray,
) -> None:
    """Add one sampled row of a tile to its least-squares sums ``s`` (accumulate_rows).

    The fit pixels are the finite ones outside *marks*: the sums of ``sm`` times the
    basis (right-hand sides) and the moments of the basis.
    """
    w2 = w * w
    w3 = w2 * w
    w4 = w2 * w2
    n_fit = s[_MOM]
    r0 = s[_RHS]
    r1 = s[_RHS + 1]
    r2 = s[_RHS + 2]
    r3 = s[_RHS + 3]
    r4 = s[_RHS + 4]
    r5 = s[_RHS + 5]
    m1 = s[_MOM + 1]
    m2 = s[_MOM + 2]
    m3 = s[_MOM + 3]
    m4 = s[_MOM + 4]
    m5 = s[_MOM + 5]
    m6 = s[_MOM + 6]
    m7 = s[_MOM + 7]
    m8 = s[_MOM + 8]
    m9 = s[_MOM + 9]
    m10 = s[_MOM + 10]
    m11 = s[_MOM + 11]
    m12 = s[_MOM + 12]
    m13 = s[_MOM + 13]
    m14 = s[_MOM + 14]
    for x in range(x0, x1, step):
        if marks[x] != 0 or not np.isfinite(vals[x]):
            continue
        sv = sm[x]
        u = (x - xc) * scale
        u2 = u * u
        uw = u * w
        r0 += sv
        r1 += sv * u
        r2 += sv * w
        r3 += sv * u2
        r4 += sv * uw
        r5 += sv * w2
        n_fit += 1
        m1 += u
        m2 += w
        m3 += u2
        m4 += uw
        m5 += w2
        m6 += u2 * u
        m7 += u2 * w
        m8 += u * w2
        m9 += w3
        m10 += u2 * u2
        m11 += u2 * uw
        m12 += u2 * w2
        m13 += uw * w2
        m14 += w4
    s[_RHS] = r0
    s[_RHS + 1] = r1
    s[_RHS + 2] = r2
    s[_RHS + 3] = r3
    s[_RHS + 4] = r4
    s[_RHS + 5] = r5
    s[_MOM] = n_fit
    s[_MOM + 1] = m1
    s[_MOM + 2] = m2
    s[_MOM + 3] = m3
    s[_MOM + 4] = m4
    s[_MOM + 5] = m5
    s[_MOM + 6] = m6
    s[_MOM + 7] = m7
    s[_MOM + 8] = m8
    s[_MOM + 9] = m9
    s[_MOM + 10] = m10
    s[_MOM + 11] = m11
    s[_MOM + 12] = m12
    s[_MOM + 13] = m13
    s[_MOM + 14] = m14


@njit(cache=True, nogil=True)
def accumulate_rows(  # pragma: no cover - compiled
    band: np.ndarray,
    smooth: np.ndarray,
    mask: np.ndarray,
    r0: int,
    bad: np.ndarray,
    level: np.ndarray,
    tile: int,
    step: int,
    fit: bool,
    exact: bool,
    b: int,
    reach: int,
    sums: np.ndarray,
    nfin: np.ndarray,
    acc: np.ndarray,
    flag: np.ndarray,
    near: np.ndarray,
    means: np.ndarray,
) -> None:
    """Add rows ``r0 : r0 + len(smooth)`` of a band ``[rows, W]`` to its running sums.

    *smooth* holds the 3x3 median of those rows; *mask* (the band's) marks the
    reference's stars.  Rows must come in order, every row once, from zeroed sums;
    :func:`finish_band` then completes them.  With ``u, w`` the pixel offsets from the
    tile centre in tiles, each tile ``i`` gets in ``sums[i]`` (layout: module notes) the
    sum of ``smooth`` over its finite pixels (``nfin[i]`` of them) and, for tiles with
    non-finite pixels (``bad[i]``), of the basis ``1, u, w, u^2, uw, w^2``; when *fit*,
    over the finite pixels of the ``step`` subsample outside *mask* the sums of
    ``smooth`` times the basis and the moments of the basis (the least-squares normal
    equations of the quadratic background).  Every sum is accumulated pixel by pixel,
    rows in order, except sums of a fully finite tile's smoothed values when *exact*
    (:func:`exact_order` holds for them), which are the same in any order.

    ``b x b`` blocks: per block row the running block sums (``acc``, in pixel order) and
    whether a pixel is in *mask* (``flag``), the last row writing the mean, or NaN when
    a pixel is non-finite or in *mask*, to *means*; per row, whether a pixel of *smooth*
    within *reach* columns of a block is above its tile's *level* (the frame's own
    stars; ``near``).
    """
    rows, width = band.shape
    nx = bad.shape[0]
    yc = 0.5 * (rows - 1)
    scale = 1.0 / tile
    rb, wb = rows // b, width // b
    # 4x4 blocks within 2 pixels (the default) unrolled, the star flags four at a time
    # as uint32 words: the generic loops do not vectorise and take three times longer
    fast = b == 4 and reach == 2
    hot = np.zeros((width + 2 * reach + b + 3) // 4 * 4, dtype=np.uint8)  # shifted by reach
    hot_words = hot.view(np.uint32)
    inv = 1.0 / (b * b)
    for k in range(smooth.shape[0]):
        y = r0 + k
        vals = band[y]
        sm = smooth[k]
        marks = mask[y]
        w = (y - yc) * scale
        w2 = w * w
        for i in range(nx):
            x0 = i * tile
            x1 = min(x0 + tile, width)
            xc = 0.5 * (x0 + x1 - 1)
            s = sums[i]
            if bad[i] == 0:
                if exact:
                    s[_TOTAL] += _any_order_sum(sm[x0:x1])
                else:
                    total = s[_TOTAL]
                    for x in range(x0, x1):
                        total += sm[x]
                    s[_TOTAL] = total
            else:
                total = s[_TOTAL]
                count = nfin[i]
                b1 = s[_BASIS + 1]
                b2 = s[_BASIS + 2]
                b3 = s[_BASIS + 3]
                b4 = s[_BASIS + 4]
                b5 = s[_BASIS + 5]
                for x in range(x0, x1):
                    if np.isfinite(vals[x]):
                        total += sm[x]
                        count += 1
                        u = (x - xc) * scale
                        b1 += u
                        b2 += w
                        b3 += u * u
                        b4 += u * w
                        b5 += w2
                s[_TOTAL] = total
                nfin[i] = count
                s[_BASIS + 1] = b1
                s[_BASIS + 2] = b2
                s[_BASIS + 3] = b3
                s[_BASIS + 4] = b4
                s[_BASIS + 5] = b5
            if fit and y % step == 0:
                _fit_row(vals, sm, marks, x0, x1, step, xc, scale, w, s)
        if wb == 0:
            continue
        for i in range(nx):
            x0 = i * tile
            x1 = min(x0 + tile, width)
            lv = level[i]
            src = sm[x0:x1]
            dst = hot[reach + x0 : reach + x1]
            for x in range(x1 - x0):
                dst[x] = src[x] > lv
        row = near[y]
        if fast:
            for bx in range(wb):
                row[bx] = (hot_words[bx] | hot_words[bx + 1]) != 0
        else:
            for bx in range(wb):
                h = hot[bx * b]
                for d in range(1, b + 2 * reach):
                    h |= hot[bx * b + d]
                row[bx] = h
        if y >= rb * b:
            continue
        # every block sums its pixels row by row, left to right; a float64 sum of
        # float32 values is finite exactly when all of them are
        if fast:
            for bx in range(wb):
                x = 4 * bx
                acc[bx] = (((acc[bx] + vals[x]) + vals[x + 1]) + vals[x + 2]) + vals[x + 3]
                flag[bx] |= marks[x] | marks[x + 1] | marks[x + 2] | marks[x + 3]
        else:
            for bx in range(wb):
                total = acc[bx]
                f = flag[bx]
                for x in range(bx * b, bx * b + b):
                    total += vals[x]
                    f |= marks[x]
                acc[bx] = total
                flag[bx] = f
        if y % b == b - 1:
            by = y // b
            for bx in range(wb):
                total = acc[bx]
                good = flag[bx] == 0 and np.isfinite(total)
                means[by, bx] = total * inv if good else np.nan
                acc[bx] = 0.0
                flag[bx] = 0


@njit(cache=True, nogil=True)
def finish_band(  # pragma: no cover - compiled
    band: np.ndarray,
    bad: np.ndarray,
    tile: int,
    full: np.ndarray,
    b: int,
    reach: int,
    sums: np.ndarray,
    nfin: np.ndarray,
    near: np.ndarray,
    means: np.ndarray,
    out: np.ndarray,
) -> int:
    """Complete the sums of :func:`accumulate_rows`; the band's block deviations.

    Fully finite tiles take their basis sums from ``full`` (:func:`full_tile_moments`,
    ``[2, 6]``: a full-width tile, then the last tile column).  Into *out*, tile by tile
    (block rows in order within a tile): the block means minus their tile's median block
    mean, times *b*, leaving out blocks within *reach* rows of a ``near`` row and tiles
    with fewer than 16 blocks.  Returns their number.  Pooled over the frame, their
    clipped standard deviation is the per-pixel-equivalent noise at the block scale.
    """
    rows, width = band.shape
    nx = bad.shape[0]
    for i in range(nx):
        x0 = i * tile
        x1 = min(x0 + tile, width)
        s = sums[i]
        if bad[i] != 0:
            s[_NFIN] = nfin[i]
            s[_BASIS] = nfin[i]
            continue
        s[_NFIN] = rows * (x1 - x0)
        k = 0 if x1 - x0 == tile else 1
        for p in range(6):
            s[_BASIS + p] = full[k, p]
    rb, wb = means.shape
    if rb == 0 or wb == 0:
        return 0
    for by in range(rb):
        for y in range(max(0, by * b - reach), min(rows, by * b + b + reach)):
            row = near[y]
            for bx in range(wb):
                if row[bx]:
                    means[by, bx] = np.nan
    vals = np.empty(rb * wb)
    n = 0
    for i in range(nx):
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
def tile_row_flux(  # pragma: no cover - compiled
    sums: np.ndarray,
    nsamp: np.ndarray,
    med: np.ndarray,
    fit: bool,
    flux: np.ndarray,
    count: np.ndarray,
) -> None:
    """Finite pixel count and flux above background of each tile of a row.

    The flux is the sum over the finite pixels of the 3x3 median-filtered band (so that
    cosmic rays and hot pixels do not count) minus the sum of a quadratic surface
    fitted (least squares) to it on the sampled pixels outside the reference's star
    mask (*fit*).  With the same mask for every frame this is linear in the signal -
    faint stars left outside the mask lower every frame's flux by the same fraction -
    and the quadratic follows gradients and glow.  Without a mask or enough unmasked
    pixels the tile median is the level.
    """
    mom = np.empty(15)
    gram = np.empty((6, 6))
    for i in range(nsamp.shape[0]):
        s = sums[i]
        nfin = int(s[_NFIN])
        count[i] = nfin
        n = nsamp[i]
        if n < 16:
            flux[i] = 0.0
            continue
        total = s[_TOTAL]
        flux[i] = total - nfin * med[i]
        n_fit = s[_MOM]
        if fit and n_fit >= 32 and n_fit >= 0.2 * n:
            for p in range(15):
                mom[p] = s[_MOM + p]
            for p in range(6):
                for q in range(6):
                    gram[p, q] = mom[_MOM_INDEX[_EXP_U[p] + _EXP_U[q], _EXP_W[p] + _EXP_W[q]]]
            # a singular fit (pixels on a line) keeps the median level
            if abs(np.linalg.det(gram)) > 1e-12 * gram[0, 0] ** 6:
                coef = np.linalg.solve(gram, s[_RHS : _RHS + 6].copy())
                level = 0.0
                for p in range(6):
                    level += coef[p] * s[_BASIS + p]
                flux[i] = total - level
