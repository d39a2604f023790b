"""Demosaicing of calibrated CFA mosaics: bilinear, RCD and superpixel.

Debayering happens *after* calibration (bias, dark and flat are applied to the raw mosaic,
channel by channel through the CFA) and *before* registration: a registered (warped)
mosaic no longer has a Bayer pattern, so it must never be debayered.

Methods
-------
``'bilinear'``
    Each missing colour is the mean of the samples of that colour in the 3×3 neighbourhood.
    Fast, exact on linear gradients, soft, with colour fringes on sharp stars.
``'rcd'``
    Ratio Corrected Demosaicing (L. Sanz Rodríguez, the default of RawTherapee and Siril),
    implemented here from the published description: vertical/horizontal and diagonal
    direction strengths from high-pass filters of the raw mosaic, green interpolated along
    the flatter direction with a local low-pass *ratio* correction, then red and blue from
    colour differences along the flatter diagonal/cardinal direction.  Round stars, about
    half the colour fringing of bilinear; but it does not conserve each channel's flux on
    small coloured stars (use bilinear or superpixel for star photometry/colour), and its
    per-pixel noise is higher.  The outer 4 pixels use bilinear interpolation.
``'superpixel'``
    One RGB pixel per 2×2 cell (half resolution); see :func:`astrostack.calibrate.superpixel`.

NaN samples (no data, e.g. cosmetic defects marked NaN, or NaN borders) are filled from the
nearest same-colour samples before interpolation so they never spread; with
``keep_nan=True`` the output is NaN at those pixels in every channel.

The ratio correction of RCD assumes a positive signal.  Calibrated frames can have a
background near zero, so a constant *pedestal* is added before and removed after RCD
(automatic: enough to put the median ``5`` robust standard deviations above zero).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from numba import njit, prange

from ..io.frame import Frame
from .cfa import _check_mosaic, channel_index, pattern_from_meta, superpixel

__all__ = ["DEBAYER_METHODS", "debayer", "debayer_frame", "fill_cfa_nans"]

logger = logging.getLogger(__name__)

#: Demosaicing methods accepted by :func:`debayer`.
DEBAYER_METHODS = ("rcd", "bilinear", "superpixel")


# --------------------------------------------------------------------------------------
# Bilinear
# --------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _bilinear_pixel_safe(cfa, cidx, y, x, out, oy):  # pragma: no cover - compiled
    """Bounds-checked 3x3 same-colour mean for every channel of pixel (y, x)."""
    h, w = cfa.shape
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    n0 = 0
    n1 = 0
    n2 = 0
    own = cidx[y & 1, x & 1]
    for yy in range(max(y - 1, 0), min(y + 2, h)):
        for xx in range(max(x - 1, 0), min(x + 2, w)):
            c = cidx[yy & 1, xx & 1]
            v = cfa[yy, xx]
            if c == 0:
                s0 += v
                n0 += 1
            elif c == 1:
                s1 += v
                n1 += 1
            else:
                s2 += v
                n2 += 1
    out[0, oy, x] = cfa[y, x] if own == 0 else s0 / n0
    out[1, oy, x] = cfa[y, x] if own == 1 else s1 / n1
    out[2, oy, x] = cfa[y, x] if own == 2 else s2 / n2


@njit(cache=True, inline="always")
def _bilinear_row(cfa, cidx, y, out, oy):  # pragma: no cover - compiled
    """Bilinear demosaic of mosaic row ``y`` into ``out[:, oy, :]``."""
    h, w = cfa.shape
    if y == 0 or y == h - 1 or w < 3:
        for x in range(w):
            _bilinear_pixel_safe(cfa, cidx, y, x, out, oy)
        return
    _bilinear_pixel_safe(cfa, cidx, y, 0, out, oy)
    _bilinear_pixel_safe(cfa, cidx, y, w - 1, out, oy)
    for x in range(1, w - 1):
        own = cidx[y & 1, x & 1]
        v = cfa[y, x]
        if own == 1:
            ch = cidx[y & 1, (x + 1) & 1]  # colour of the horizontal neighbours
            hv = 0.5 * (cfa[y, x - 1] + cfa[y, x + 1])
            vv = 0.5 * (cfa[y - 1, x] + cfa[y + 1, x])
            out[1, oy, x] = v
            out[ch, oy, x] = hv
            out[2 - ch, oy, x] = vv
        else:
            g = 0.25 * ((cfa[y - 1, x] + cfa[y + 1, x]) + (cfa[y, x - 1] + cfa[y, x + 1]))
            d = 0.25 * (
                (cfa[y - 1, x - 1] + cfa[y + 1, x + 1]) + (cfa[y - 1, x + 1] + cfa[y + 1, x - 1])
            )
            out[own, oy, x] = v
            out[1, oy, x] = g
            out[2 - own, oy, x] = d


@njit(parallel=True, cache=True)
def _bilinear_kernel(cfa, cidx, out):  # pragma: no cover - compiled
    h = cfa.shape[0]
    for y in prange(h):
        _bilinear_row(cfa, cidx, y, out, y)


# --------------------------------------------------------------------------------------
# NaN filling
# --------------------------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _fill_nans_kernel(cfa, cidx, fallback, out):  # pragma: no cover - compiled
    """Copy ``cfa`` to ``out`` replacing NaN by the mean of finite same-colour samples.

    The window grows from 5x5 to 9x9; a sample with none uses ``fallback[colour]``.
    """
    h, w = cfa.shape
    for y in prange(h):
        for x in range(w):
            v = cfa[y, x]
            if np.isfinite(v):
                out[y, x] = v
                continue
            c = cidx[y & 1, x & 1]
            acc = 0.0
            n = 0
            for r in (2, 4):
                for yy in range(max(y - r, 0), min(y + r + 1, h)):
                    for xx in range(max(x - r, 0), min(x + r + 1, w)):
                        if cidx[yy & 1, xx & 1] == c:
                            s = cfa[yy, xx]
                            if np.isfinite(s):
                                acc += s
                                n += 1
                if n > 0:
                    break
            out[y, x] = acc / n if n > 0 else fallback[c]


def fill_cfa_nans(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    """Replace non-finite samples by the mean of nearby finite samples of the same colour.

    Parameters
    ----------
    mosaic : numpy.ndarray
        2-D CFA mosaic with NaN (or inf) marking missing samples (defects, borders).
    pattern : str
        Bayer pattern.

    Returns
    -------
    numpy.ndarray
        New float32 mosaic without NaN/inf.  Each becomes the mean of the finite samples of
        its colour within 5×5 (else 9×9); beyond that, the median of that colour.  The
        result is colour-neutral: a defect replaced this way leaves no coloured speck after
        debayering.
    """
    arr = np.ascontiguousarray(_check_mosaic(mosaic, "fill_cfa_nans"), dtype=np.float32)
    return _fill_nans(arr, channel_index(pattern))


def _fill_nans(arr: np.ndarray, cidx: np.ndarray) -> np.ndarray:
    if np.isfinite(arr).all():
        return arr.copy()
    fallback = np.zeros(3, dtype=np.float64)
    for dy in (0, 1):
        for dx in (0, 1):
            vals = arr[dy::2, dx::2]
            vals = vals[np.isfinite(vals)]
            if vals.size:
                fallback[cidx[dy, dx]] = float(np.median(vals))
    out = np.empty_like(arr)
    _fill_nans_kernel(arr, cidx, fallback, out)
    return out


# --------------------------------------------------------------------------------------
# RCD
# --------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _refine(d, y, x):  # pragma: no cover - compiled
    """Direction refined by its 4 diagonal neighbours (the stronger decision wins)."""
    c = d[y, x]
    nb = 0.25 * ((d[y - 1, x - 1] + d[y + 1, x + 1]) + (d[y - 1, x + 1] + d[y + 1, x - 1]))
    return nb if abs(0.5 - c) < abs(0.5 - nb) else c


@njit(cache=True)
def _rcd_tile(cfa, cidx, eps, epssq, rgb):  # pragma: no cover - compiled
    """RCD of one tile ``cfa [th, w]`` (pattern phase ``cidx``) into ``rgb [3, th, w]``.

    The outer 4 rows/columns of the tile keep the bilinear estimate.
    """
    th, w = cfa.shape
    for y in range(th):
        _bilinear_row(cfa, cidx, y, rgb, y)
    if th < 12 or w < 12:
        return

    # Step 1: vertical/horizontal direction from squared high-pass filters, summed over 3.
    vhpf = np.zeros((th, w), dtype=np.float32)
    hhpf = np.zeros((th, w), dtype=np.float32)
    for y in range(3, th - 3):
        for x in range(w):
            f = (
                (cfa[y - 3, x] + cfa[y + 3, x])
                - (cfa[y - 1, x] + cfa[y + 1, x])
                - 3.0 * (cfa[y - 2, x] + cfa[y + 2, x])
                + 6.0 * cfa[y, x]
            )
            vhpf[y, x] = f * f
    for y in range(th):
        for x in range(3, w - 3):
            f = (
                (cfa[y, x - 3] + cfa[y, x + 3])
                - (cfa[y, x - 1] + cfa[y, x + 1])
                - 3.0 * (cfa[y, x - 2] + cfa[y, x + 2])
                + 6.0 * cfa[y, x]
            )
            hhpf[y, x] = f * f
    vh = np.full((th, w), 0.5, dtype=np.float32)
    for y in range(4, th - 4):
        for x in range(4, w - 4):
            vs = max(epssq, (vhpf[y - 1, x] + vhpf[y + 1, x]) + vhpf[y, x])
            hs = max(epssq, (hhpf[y, x - 1] + hhpf[y, x + 1]) + hhpf[y, x])
            vh[y, x] = vs / (vs + hs)

    # Step 2: low-pass filter at red/blue sites (floored at 0 for the ratio).
    lpf = vhpf  # reuse the buffer
    for y in range(2, th - 2):
        x0 = 2 + (1 if cidx[y & 1, 0] == 1 else 0)
        for x in range(x0, w - 2, 2):
            v = (
                cfa[y, x]
                + 0.5 * ((cfa[y - 1, x] + cfa[y + 1, x]) + (cfa[y, x - 1] + cfa[y, x + 1]))
                + 0.25
                * (
                    (cfa[y - 1, x - 1] + cfa[y + 1, x + 1])
                    + (cfa[y - 1, x + 1] + cfa[y + 1, x - 1])
                )
            )
            lpf[y, x] = v if v > 0.0 else 0.0

    # Step 3: green at red/blue sites.
    for y in range(4, th - 4):
        x0 = 4 + (1 if cidx[y & 1, 0] == 1 else 0)
        for x in range(x0, w - 4, 2):
            c0 = cfa[y, x]
            n1 = cfa[y - 1, x]
            s1 = cfa[y + 1, x]
            w1 = cfa[y, x - 1]
            e1 = cfa[y, x + 1]
            ng = eps + abs(n1 - s1) + abs(c0 - cfa[y - 2, x])
            ng += abs(n1 - cfa[y - 3, x]) + abs(cfa[y - 2, x] - cfa[y - 4, x])
            sg = eps + abs(s1 - n1) + abs(c0 - cfa[y + 2, x])
            sg += abs(s1 - cfa[y + 3, x]) + abs(cfa[y + 2, x] - cfa[y + 4, x])
            wg = eps + abs(w1 - e1) + abs(c0 - cfa[y, x - 2])
            wg += abs(w1 - cfa[y, x - 3]) + abs(cfa[y, x - 2] - cfa[y, x - 4])
            eg = eps + abs(e1 - w1) + abs(c0 - cfa[y, x + 2])
            eg += abs(e1 - cfa[y, x + 3]) + abs(cfa[y, x + 2] - cfa[y, x + 4])
            lc = lpf[y, x]
            ln = lpf[y - 2, x]
            ls = lpf[y + 2, x]
            lw = lpf[y, x - 2]
            le = lpf[y, x + 2]
            ne = n1 * (1.0 + (lc - ln) / (eps + lc + ln))
            se = s1 * (1.0 + (lc - ls) / (eps + lc + ls))
            we = w1 * (1.0 + (lc - lw) / (eps + lc + lw))
            ee = e1 * (1.0 + (lc - le) / (eps + lc + le))
            v_est = (sg * ne + ng * se) / (ng + sg)
            h_est = (wg * ee + eg * we) / (eg + wg)
            d = _refine(vh, y, x)
            rgb[1, y, x] = d * h_est + (1.0 - d) * v_est

    # Step 4.0/4.1: diagonal (P = NW-SE, Q = NE-SW) direction at red/blue sites.
    phpf = hhpf  # reuse the buffer
    qhpf = np.zeros((th, w), dtype=np.float32)
    for y in range(3, th - 3):
        x0 = 3 if cidx[y & 1, 1] != 1 else 4
        for x in range(x0, w - 3, 2):
            c0 = 6.0 * cfa[y, x]
            f = (
                (cfa[y - 3, x - 3] + cfa[y + 3, x + 3])
                - (cfa[y - 1, x - 1] + cfa[y + 1, x + 1])
                - 3.0 * (cfa[y - 2, x - 2] + cfa[y + 2, x + 2])
                + c0
            )
            phpf[y, x] = f * f
            f = (
                (cfa[y - 3, x + 3] + cfa[y + 3, x - 3])
                - (cfa[y - 1, x + 1] + cfa[y + 1, x - 1])
                - 3.0 * (cfa[y - 2, x + 2] + cfa[y + 2, x - 2])
                + c0
            )
            qhpf[y, x] = f * f
    pq = lpf  # lpf no longer needed
    pq[:, :] = 0.5
    for y in range(4, th - 4):
        x0 = 4 + (1 if cidx[y & 1, 0] == 1 else 0)
        for x in range(x0, w - 4, 2):
            ps = max(epssq, (phpf[y - 1, x - 1] + phpf[y + 1, x + 1]) + phpf[y, x])
            qs = max(epssq, (qhpf[y - 1, x + 1] + qhpf[y + 1, x - 1]) + qhpf[y, x])
            pq[y, x] = ps / (ps + qs)

    # Step 4.2: blue at red sites and red at blue sites, from diagonal colour differences.
    for y in range(4, th - 4):
        x0 = 4 + (1 if cidx[y & 1, 0] == 1 else 0)
        for x in range(x0, w - 4, 2):
            c = 2 - cidx[y & 1, x & 1]
            g0 = rgb[1, y, x]
            nwg = eps + abs(rgb[c, y - 1, x - 1] - rgb[c, y + 1, x + 1])
            nwg += abs(rgb[c, y - 1, x - 1] - rgb[c, y - 3, x - 3]) + abs(g0 - rgb[1, y - 2, x - 2])
            neg = eps + abs(rgb[c, y - 1, x + 1] - rgb[c, y + 1, x - 1])
            neg += abs(rgb[c, y - 1, x + 1] - rgb[c, y - 3, x + 3]) + abs(g0 - rgb[1, y - 2, x + 2])
            swg = eps + abs(rgb[c, y + 1, x - 1] - rgb[c, y - 1, x + 1])
            swg += abs(rgb[c, y + 1, x - 1] - rgb[c, y + 3, x - 3]) + abs(g0 - rgb[1, y + 2, x - 2])
            seg = eps + abs(rgb[c, y + 1, x + 1] - rgb[c, y - 1, x - 1])
            seg += abs(rgb[c, y + 1, x + 1] - rgb[c, y + 3, x + 3]) + abs(g0 - rgb[1, y + 2, x + 2])
            nwe = rgb[c, y - 1, x - 1] - rgb[1, y - 1, x - 1]
            nee = rgb[c, y - 1, x + 1] - rgb[1, y - 1, x + 1]
            swe = rgb[c, y + 1, x - 1] - rgb[1, y + 1, x - 1]
            see = rgb[c, y + 1, x + 1] - rgb[1, y + 1, x + 1]
            p_est = (nwg * see + seg * nwe) / (nwg + seg)
            q_est = (neg * swe + swg * nee) / (neg + swg)
            d = _refine(pq, y, x)
            rgb[c, y, x] = g0 + d * q_est + (1.0 - d) * p_est

    # Step 4.3: red and blue at green sites, from cardinal colour differences.
    for y in range(4, th - 4):
        x0 = 4 + (1 if cidx[y & 1, 0] != 1 else 0)
        for x in range(x0, w - 4, 2):
            g0 = rgb[1, y, x]
            d = _refine(vh, y, x)
            gn = abs(g0 - rgb[1, y - 2, x])
            gs = abs(g0 - rgb[1, y + 2, x])
            gw = abs(g0 - rgb[1, y, x - 2])
            ge = abs(g0 - rgb[1, y, x + 2])
            for c in (0, 2):
                n1 = rgb[c, y - 1, x]
                s1 = rgb[c, y + 1, x]
                w1 = rgb[c, y, x - 1]
                e1 = rgb[c, y, x + 1]
                ng = eps + gn + abs(n1 - s1) + abs(n1 - rgb[c, y - 3, x])
                sg = eps + gs + abs(s1 - n1) + abs(s1 - rgb[c, y + 3, x])
                wg = eps + gw + abs(w1 - e1) + abs(w1 - rgb[c, y, x - 3])
                eg = eps + ge + abs(e1 - w1) + abs(e1 - rgb[c, y, x + 3])
                ne = n1 - rgb[1, y - 1, x]
                se = s1 - rgb[1, y + 1, x]
                we = w1 - rgb[1, y, x - 1]
                ee = e1 - rgb[1, y, x + 1]
                v_est = (ng * se + sg * ne) / (ng + sg)
                h_est = (eg * we + wg * ee) / (eg + wg)
                rgb[c, y, x] = g0 + d * h_est + (1.0 - d) * v_est


@njit(parallel=True, cache=True)
def _rcd_kernel(cfa, cidx, eps, epssq, pedestal, band, halo, out):  # pragma: no cover
    """RCD over row bands processed in parallel; each band is computed with a halo."""
    h, w = cfa.shape
    nb = (h + band - 1) // band
    for b in prange(nb):
        y0 = b * band
        y1 = min(h, y0 + band)
        t0 = max(0, y0 - halo)
        t1 = min(h, y1 + halo)
        cl = np.empty((2, 2), dtype=np.int64)
        for i in range(2):
            for j in range(2):
                cl[i, j] = cidx[(i + t0) & 1, j]
        tile = np.empty((t1 - t0, w), dtype=np.float32)
        for y in range(t1 - t0):
            for x in range(w):
                tile[y, x] = cfa[t0 + y, x] + pedestal
        rgb = np.empty((3, t1 - t0, w), dtype=np.float32)
        _rcd_tile(tile, cl, eps, epssq, rgb)
        for c in range(3):
            for y in range(y0, y1):
                for x in range(w):
                    out[c, y, x] = rgb[c, y - t0, x] - pedestal


def _auto_pedestal(arr: np.ndarray) -> float:
    """Constant that puts the median of every CFA sub-lattice 5 robust sigmas above zero."""
    pedestal = 0.0
    for dy in (0, 1):
        for dx in (0, 1):
            sample = arr[dy::6, dx::6]  # one colour: every 3rd sample of its sub-lattice
            sample = sample[np.isfinite(sample)]
            if sample.size == 0:
                continue
            med = float(np.median(sample))
            sigma = 1.4826 * float(np.median(np.abs(sample - med)))
            pedestal = max(pedestal, 5.0 * sigma - med)
    return pedestal


def debayer(
    mosaic: np.ndarray,
    pattern: str,
    method: str = "rcd",
    keep_nan: bool = True,
    pedestal: float | None = None,
    band_rows: int = 128,
) -> np.ndarray:
    """Demosaic a calibrated CFA mosaic into RGB.

    Parameters
    ----------
    mosaic : numpy.ndarray
        2-D calibrated CFA mosaic ``[y, x]`` (any size of at least 2×2; float32 preferred).
        Must not be registered/warped: debayer before registration.
    pattern : str
        Bayer pattern of the array as held (see :func:`astrostack.calibrate.pattern_from_meta`).
    method : {'rcd', 'bilinear', 'superpixel'}
        Demosaicing algorithm (see the module docstring).
    keep_nan : bool
        If True, pixels that are NaN (or inf) in the mosaic are NaN in all output channels
        (no data); otherwise they are filled (:func:`fill_cfa_nans`).  Either way they never
        spread to neighbours.
    pedestal : float, optional
        RCD only: constant added before and removed after interpolation so that the ratio
        correction sees positive data.  ``None`` chooses it automatically (0 for data whose
        median is well above zero).
    band_rows : int
        RCD only: rows per parallel band (memory per thread is about ``8 × (band_rows + 32)
        × width × 4`` bytes).  Does not change the result.

    Returns
    -------
    numpy.ndarray
        float32 ``[3, y, x]`` (R, G, B), or ``[3, y // 2, x // 2]`` for ``'superpixel'``
        (cell ``(j, i)`` centred at mosaic ``(2j + 0.5, 2i + 0.5)``; NaN samples give NaN in
        R or B, while a NaN green uses the cell's other green).

    Raises
    ------
    ValueError
        For a non-2-D input, an unknown pattern or method.
    """
    arr = _check_mosaic(mosaic, "debayer")
    cidx = channel_index(pattern)
    meth = str(method).strip().lower()
    if meth not in DEBAYER_METHODS:
        msg = f"debayer: unknown method {method!r}; use one of {', '.join(DEBAYER_METHODS)}"
        raise ValueError(msg)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    nan_mask = ~np.isfinite(arr)
    has_nan = bool(nan_mask.any())
    if meth == "superpixel":
        if has_nan:
            arr = np.where(nan_mask, np.float32(np.nan), arr) if keep_nan else _fill_nans(arr, cidx)
        return superpixel(arr, pattern)
    work = _fill_nans(arr, cidx) if has_nan else arr
    h, w = work.shape
    out = np.empty((3, h, w), dtype=np.float32)
    if meth == "bilinear":
        _bilinear_kernel(work, cidx, out)
    else:
        if band_rows < 1:
            msg = f"debayer: band_rows must be >= 1; got {band_rows}"
            raise ValueError(msg)
        ped = _auto_pedestal(work) if pedestal is None else float(pedestal)
        scale = max(abs(float(work.max())), abs(float(work.min()))) + abs(ped)
        scale = scale if scale > 0 else 1.0
        eps = 1e-5 * scale
        _rcd_kernel(work, cidx, eps, eps * eps, ped, int(band_rows), 16, out)
    if has_nan and keep_nan:
        out[:, nan_mask] = np.nan
    return out


def debayer_frame(
    frame: Frame,
    method: str = "rcd",
    override: str | None = None,
    keep_nan: bool = True,
) -> Frame:
    """Debayer a calibrated colour frame; mono and RGB frames are returned unchanged.

    Parameters
    ----------
    frame : Frame
        Calibrated frame: a CFA mosaic ``[y, x]`` with ``meta.bayer`` set, or mono/RGB.
    method : {'rcd', 'bilinear', 'superpixel'}
        See :func:`debayer`.
    override : str, optional
        User Bayer pattern (see :func:`astrostack.calibrate.pattern_from_meta`).
    keep_nan : bool
        See :func:`debayer`.

    Returns
    -------
    Frame
        New frame with float32 ``[3, y, x]`` data (half size for ``'superpixel'``) and
        ``meta.bayer = None``; the input frame is not modified.

    Raises
    ------
    ValueError
        Naming the frame's file, for an unusable pattern or a colour frame that is not 2-D.
    """
    pattern = pattern_from_meta(frame.meta, override)
    if pattern is None or frame.data.ndim == 3:
        return frame
    try:
        rgb = debayer(frame.data, pattern, method=method, keep_nan=keep_nan)
    except ValueError as exc:
        msg = f"{frame.meta.path or 'frame'}: cannot debayer: {exc}"
        raise ValueError(msg) from exc
    logger.debug("%s: debayered (%s, %s)", frame.meta.path, pattern, method)
    meta = dataclasses.replace(frame.meta, bayer=None, header=dict(frame.meta.header))
    return Frame(rgb, meta)
