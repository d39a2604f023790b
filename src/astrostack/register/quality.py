"""Per-frame quality: stars, PSF (FWHM, roundness), background, noise, signal; outliers.

- **FWHM / eccentricity** come from elliptical Moffat fits (a compiled, bounded
  Levenberg-Marquardt with the analytic Jacobian, about ten times faster than
  ``scipy.optimize.least_squares`` and converging to the same minimum) to cutouts of
  the brightest unsaturated stars;
  the frame value is the median.  FWHM is the geometric mean of the major and
  minor FWHM; eccentricity is ``sqrt(1 - (minor / major)**2)``.
- **HFD** is the median half-flux diameter from ``sep.flux_radius``.
- **Noise** is ``1.4826 * MAD(d) / sqrt(2)`` of the horizontal first differences
  ``d`` of the image: differences cancel gradients, and the median ignores the
  few pixels on stars.
- **SNR** is the median over measured stars of ``flux / (noise * sqrt(pi hfd^2))``;
  **signal weight** is ``sum(flux) / noise`` over the detected stars: both drop
  when clouds or haze dim the stars.
- :meth:`QualityTable.flag_outliers` marks frames whose FWHM, star count,
  background, eccentricity or signal weight deviate from the session median by
  more than ``k`` robust sigmas (and a minimum relative change), with a reason.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
from numba import njit

from ..io.atomic import atomic_path
from .stamps import Residual, binned_detection_image
from .stars import StarTable, background, detect_star_lists

__all__ = [
    "FrameQuality",
    "QualityTable",
    "estimate_noise",
    "fit_moffat",
    "frame_sky",
    "measure_quality",
    "measure_quality_and_stars",
]

logger = logging.getLogger(__name__)


def estimate_noise(
    image: np.ndarray,
    background_map: np.ndarray | None = None,
    max_samples: int = 2_000_000,
    *,
    residual: Residual | None = None,
) -> float:
    """Robust Gaussian noise sigma of an image (ADU), insensitive to stars and gradients.

    ``1.4826 * median(|d - median(d)|) / sqrt(2)`` with ``d`` the horizontal first
    differences, on a row subsample of at most *max_samples* pixels.  Pairs in
    which either pixel lies more than 3 sigma above the background (stars) are then
    left out and the estimate repeated, so crowded fields do not inflate it.

    Parameters
    ----------
    image : ndarray
        2-D image.
    background_map : ndarray, optional
        Background of *image* (from :func:`~astrostack.register.stars.background`);
        estimated with sep if neither it nor *residual* is given.
    max_samples : int
        Pixel budget of the row subsample.
    residual : Residual, optional
        The background-subtracted *image* (:func:`~.stamps.binned_detection_image`):
        only the sampled rows are then computed, not a full-size map.
    """
    data = np.asarray(image, dtype=np.float32)
    if data.ndim != 2 or data.shape[1] < 2:
        msg = f"estimate_noise: need a 2-D image, got shape {data.shape}"
        raise ValueError(msg)
    step = max(1, int(np.ceil(data.size / max_samples)))
    rows = data[::step]
    d = np.diff(rows, axis=1)
    finite = np.isfinite(d)
    if not finite.any():
        return float("nan")
    sigma = _mad_sigma(d[finite])
    if residual is not None:
        # (no-data pixels are zero there: below the cut, as NaN was)
        sub = residual.rows(np.arange(0, data.shape[0], step))
    else:
        if background_map is None:
            background_map = background(np.where(np.isfinite(data), data, np.float32(0)))[0]
        sub = rows - np.asarray(background_map, dtype=np.float32)[::step]
    high = sub > 3.0 * sigma
    sky = finite & ~high[:, 1:] & ~high[:, :-1]
    if sky.sum() > 100:
        sigma = _mad_sigma(d[sky])
    return sigma


def frame_sky(
    data: np.ndarray, large: int = 16_000_000, box: int = 64, native_map: bool = True
) -> tuple[np.ndarray | None, float, float, tuple | None]:
    """Background map, level and RMS of a frame, and the binned detection image if made.

    Frames up to *large* pixels: :func:`~.stars.background` with a *box* mesh, and None.
    Larger frames are measured the way :func:`~.stars.detect_star_lists` detects them,
    on their 2x2 mean (:func:`~.stamps.binned_detection_image`, a mesh of the same size
    on the sky), which is returned so that the detection reuses it: the sky of a 24 MP
    frame is measured once, at a third of the full-resolution cost.  The map is
    interpolated back onto the native grid bilinearly (unless *native_map* is False:
    the map is then None, and the binned image's :class:`~.stamps.Residual` gives the
    background-subtracted pixels where they are needed), and the RMS is that of the
    native pixels (twice the binned RMS, for white noise).
    """
    ny, nx = data.shape
    if ny * nx <= large or min(ny, nx) < 256:
        return (*background(data, box=box), None)
    binned = binned_detection_image(data, max(8, box // 2))
    if not native_map:
        return None, binned[3], 2.0 * binned[4], binned
    resid = binned[2]
    # native (x, y) lies at (sx * x + ox, sy * y + oy) on the map's grid (the Residual's)
    sy, oy, sx, ox = resid.mapping
    to_map = np.array([[sx, 0.0, ox], [0.0, sy, oy]], dtype=np.float64)
    bkg = cv2.warpAffine(
        np.asarray(resid.bmap, dtype=np.float32), to_map, (nx, ny),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip
    return bkg, binned[3], 2.0 * binned[4], binned


def _mad_sigma(d: np.ndarray) -> float:
    med = np.median(d)
    return float(1.4826 * np.median(np.abs(d - med)) / np.sqrt(2.0))


@njit(cache=True, nogil=True)
def _moffat_eval(z, p, want_jac):  # pragma: no cover - compiled
    """Residuals ``model - z`` (raveled) and, with *want_jac*, their analytic Jacobian."""
    amp, x0, y0, ax, ay, th, beta, bg = p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
    c, s = np.cos(th), np.sin(th)
    ny, nx = z.shape
    res = np.empty(ny * nx)
    jac = np.empty((ny * nx if want_jac else 0, 8))
    k = 0
    for yi in range(ny):
        dy = yi - y0
        for xi in range(nx):
            dx = xi - x0
            u = (dx * c + dy * s) / ax
            v = (-dx * s + dy * c) / ay
            d = 1.0 + u * u + v * v
            f = d ** (-beta)
            res[k] = amp * f + bg - z[yi, xi]
            if want_jac:
                g = -amp * beta * f / d  # d model / d D
                jac[k, 0] = f
                jac[k, 1] = g * 2.0 * (-u * c / ax + v * s / ay)
                jac[k, 2] = g * 2.0 * (-u * s / ax - v * c / ay)
                jac[k, 3] = g * 2.0 * (-u * u / ax)
                jac[k, 4] = g * 2.0 * (-v * v / ay)
                jac[k, 5] = g * 2.0 * (u * v * ay / ax - v * u * ax / ay)
                jac[k, 6] = -amp * f * np.log(d)
                jac[k, 7] = 1.0
            k += 1
    return res, jac


def _moffat_residual(p, z):
    """Residuals ``model - z`` (raveled) at parameters *p* (for checks and tests)."""
    return _moffat_eval(z, np.asarray(p, dtype=np.float64), False)[0]


def _moffat_jacobian(p, z):
    """Analytic Jacobian of :func:`_moffat_residual` (for checks and tests)."""
    return _moffat_eval(z, np.asarray(p, dtype=np.float64), True)[1]


@njit(cache=True, nogil=True)
def _moffat_normal(z, p, a, g):  # pragma: no cover - compiled
    """Cost ``sum(r^2) / 2`` at *p*; with *a* non-empty also ``J^T J`` (into *a*) and
    ``J^T r`` (into *g*), accumulated pixel by pixel (no Jacobian array)."""
    amp, x0, y0, ax, ay, th, beta, bg = p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
    c, s = np.cos(th), np.sin(th)
    ny, nx = z.shape
    want = a.shape[0] > 0
    if want:
        a[:, :] = 0.0
        g[:] = 0.0
    row = np.empty(8)
    cost = 0.0
    for yi in range(ny):
        dy = yi - y0
        for xi in range(nx):
            dx = xi - x0
            u = (dx * c + dy * s) / ax
            v = (-dx * s + dy * c) / ay
            d = 1.0 + u * u + v * v
            f = d ** (-beta)
            r = amp * f + bg - z[yi, xi]
            cost += r * r
            if want:
                h = -2.0 * amp * beta * f / d  # 2 * d model / d D
                row[0] = f
                row[1] = h * (-u * c / ax + v * s / ay)
                row[2] = h * (-u * s / ax - v * c / ay)
                row[3] = h * (-u * u / ax)
                row[4] = h * (-v * v / ay)
                row[5] = h * (u * v * ay / ax - v * u * ax / ay)
                row[6] = -amp * f * np.log(d)
                row[7] = 1.0
                for i in range(8):
                    ri = row[i]
                    g[i] += ri * r
                    for j in range(i, 8):
                        a[i, j] += ri * row[j]
    if want:
        for i in range(8):
            for j in range(i):
                a[i, j] = a[j, i]
    return 0.5 * cost


@njit(cache=True, nogil=True)
def _solve_spd(h, b, out):  # pragma: no cover - compiled
    """Solve ``h @ out = b`` by Cholesky; False when *h* is not numerically positive definite."""
    n = b.shape[0]
    low = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1):
            acc = h[i, j]
            for k in range(j):
                acc -= low[i, k] * low[j, k]
            if i == j:
                if not acc > 1e-300 * max(abs(h[i, i]), 1.0) or not np.isfinite(acc):
                    return False
                low[i, i] = np.sqrt(acc)
            else:
                low[i, j] = acc / low[j, j]
    for i in range(n):  # forward: low @ w = b
        acc = b[i]
        for k in range(i):
            acc -= low[i, k] * out[k]
        out[i] = acc / low[i, i]
    for i in range(n - 1, -1, -1):  # back: low.T @ out = w
        acc = out[i]
        for k in range(i + 1, n):
            acc -= low[k, i] * out[k]
        out[i] = acc / low[i, i]
    return True


@njit(cache=True, nogil=True)
def _moffat_lm(z, p0, lo, hi, max_nfev, tol):  # pragma: no cover - compiled
    """Bounded Levenberg-Marquardt fit of an elliptical Moffat profile to ``z``.

    The normal equations ``(J^T J + lam diag(J^T J)) step = -J^T r`` (Marquardt's
    scaling: steps invariant to the parameters' units) are solved by Cholesky; a step
    leaving the bounds is clipped to them, and a parameter on a bound that the
    gradient pushes outwards is held there for the iteration (so it does not spoil the
    others' step).  The angle (index 5) is periodic: wrapped into ``[-pi, pi)``, never
    held.  Stops, like ``scipy.optimize.least_squares``, when an accepted step lowers
    the cost by less than *tol* (relative) as the model predicted (ratio above 1/4),
    or is shorter than ``tol * (tol + |p|)``; or when no damping gives a descent.

    Returns
    -------
    params, converged : ndarray, bool
        *converged* is False when *max_nfev* cost evaluations were not enough (as
        ``least_squares``' ``max_nfev``) or the cost is not finite.
    """
    npar = 8
    p = p0.copy()
    a = np.empty((npar, npar))
    g = np.empty(npar)
    h = np.empty((npar, npar))
    step = np.empty(npar)
    trial = np.empty(npar)
    rhs = np.empty(npar)
    active = np.zeros(npar, dtype=np.bool_)
    none = np.empty((0, 0))
    cost = _moffat_normal(z, p, a, g)
    if not np.isfinite(cost):
        return p, False
    lam = 1e-3
    nfev = 1
    while nfev < max_nfev:
        improved = False
        stop = False
        # parameters on a bound that the gradient pushes outwards stay there this
        # iteration (an active set), so the others' step is not spoiled by the clipping
        for i in range(npar):
            rhs[i] = -g[i]
            active[i] = i != 5 and ((p[i] <= lo[i] and g[i] > 0) or (p[i] >= hi[i] and g[i] < 0))
            if active[i]:
                rhs[i] = 0.0
        while lam <= 1e12:
            h[:, :] = a
            for i in range(npar):
                h[i, i] += lam * max(a[i, i], 1e-12)
            for i in range(npar):
                if active[i]:
                    h[i, :] = 0.0
                    h[:, i] = 0.0
                    h[i, i] = 1.0
            if _solve_spd(h, rhs, step):
                for i in range(npar):
                    trial[i] = min(max(p[i] + step[i], lo[i]), hi[i])
                # the angle is periodic: wrapped into [-pi, pi), never held by a bound
                trial[5] = (p[5] + step[5] + np.pi) % (2.0 * np.pi) - np.pi
                new_cost = _moffat_normal(z, trial, none, g)
                nfev += 1
                if np.isfinite(new_cost) and new_cost < cost:
                    # scipy's tests: ftol on a reduction the model predicted well
                    # (ratio > 1/4), xtol on the step norm
                    pred = 0.0
                    step_sq = 0.0
                    p_sq = 0.0
                    for i in range(npar):
                        step[i] = trial[i] - p[i] if i != 5 else step[5]
                    for i in range(npar):
                        si = step[i]
                        quad = 0.0
                        for j in range(npar):
                            quad += a[i, j] * step[j]
                        pred -= si * (g[i] + 0.5 * quad)
                        step_sq += si * si
                        p_sq += p[i] * p[i]
                    actual = cost - new_cost
                    stop = (actual < tol * cost and actual > 0.25 * pred) or (
                        np.sqrt(step_sq) < tol * (tol + np.sqrt(p_sq))
                    )
                    p[:] = trial
                    cost = _moffat_normal(z, p, a, g)
                    lam = max(lam / 3.0, 1e-12)
                    improved = True
                    break
            lam *= 4.0
            if nfev >= max_nfev:
                break
        if not improved and nfev < max_nfev:  # no descent at any damping: a minimum (to rounding)
            return p, True
        if stop:
            return p, True
    return p, False


def fit_moffat(cutout: np.ndarray, x0: float, y0: float) -> dict[str, float] | None:
    """Fit an elliptical Moffat profile to a star cutout.

    The model is ``amp * (1 + u^2 + v^2)^(-beta) + bg`` with ``u, v`` the rotated,
    scaled offsets from the centre; it is fitted by a compiled, bounded
    Levenberg-Marquardt with the analytic Jacobian (:func:`_moffat_lm`).

    Parameters
    ----------
    cutout : ndarray
        2-D background-subtracted pixels around the star.
    x0, y0 : float
        Initial centre in cutout coordinates.

    Returns
    -------
    dict or None
        ``x``, ``y``, ``fwhm_major``, ``fwhm_minor``, ``fwhm`` (geometric mean),
        ``beta``, ``theta`` and ``amplitude``, or ``None`` if the fit failed.
    """
    z = np.ascontiguousarray(cutout, dtype=np.float64)
    if z.ndim != 2 or not np.all(np.isfinite(z)):
        return None
    amp0 = float(z.max())
    if amp0 <= 0:
        return None
    big = 1e300
    p0 = np.array([amp0, x0, y0, 2.0, 2.0, 0.0, 3.0, 0.0])
    lo = np.array([0.0, x0 - 3, y0 - 3, 0.2, 0.2, -np.pi, 1.01, -big])
    hi = np.array([big, x0 + 3, y0 + 3, 50.0, 50.0, np.pi, 30.0, big])
    p, ok = _moffat_lm(z, p0, lo, hi, 100, 1e-6)
    if not ok or not np.all(np.isfinite(p)):
        return None
    amp, x, y, ax, ay, th, beta, _bg = (float(v) for v in p)
    k = 2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0)
    f1, f2 = k * ax, k * ay
    return {
        "x": x,
        "y": y,
        "fwhm_major": float(max(f1, f2)),
        "fwhm_minor": float(min(f1, f2)),
        "fwhm": float(np.sqrt(f1 * f2)),
        "beta": beta,
        "theta": th,
        "amplitude": amp,
    }


def _fit_moffat_scipy(cutout: np.ndarray, x0: float, y0: float) -> dict[str, float] | None:
    """The previous fit (``scipy.optimize.least_squares``, trust region): a cross-check."""
    from scipy.optimize import least_squares  # only for this check: not imported by runs

    z = np.ascontiguousarray(cutout, dtype=np.float64)
    if z.ndim != 2 or not np.all(np.isfinite(z)):
        return None
    amp0 = float(z.max())
    if amp0 <= 0:
        return None
    p0 = [amp0, x0, y0, 2.0, 2.0, 0.0, 3.0, 0.0]
    lo = [0.0, x0 - 3, y0 - 3, 0.2, 0.2, -np.pi, 1.01, -np.inf]
    hi = [np.inf, x0 + 3, y0 + 3, 50.0, 50.0, np.pi, 30.0, np.inf]
    try:
        r = least_squares(
            _moffat_residual,
            p0,
            jac=_moffat_jacobian,
            bounds=(lo, hi),
            args=(z,),
            x_scale="jac",
            max_nfev=100,
            ftol=1e-6,
            xtol=1e-6,
        )
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not r.success:
        return None
    amp, x, y, ax, ay, th, beta, _bg = r.x
    k = 2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0)
    f1, f2 = k * ax, k * ay
    return {
        "x": float(x),
        "y": float(y),
        "fwhm_major": float(max(f1, f2)),
        "fwhm_minor": float(min(f1, f2)),
        "fwhm": float(np.sqrt(f1 * f2)),
        "beta": float(beta),
        "theta": float(th),
        "amplitude": float(amp),
    }


@dataclass
class FrameQuality:
    """Quality figures of one frame (NaN when not measurable).

    ``fwhm``, ``hfd`` are in pixels; ``fwhm_arcsec`` needs a pixel scale.
    ``flagged`` and ``reasons`` are set by :meth:`QualityTable.flag_outliers`.
    """

    name: str
    n_stars: int = 0
    fwhm: float = float("nan")
    fwhm_arcsec: float = float("nan")
    hfd: float = float("nan")
    roundness: float = float("nan")
    eccentricity: float = float("nan")
    background: float = float("nan")
    noise: float = float("nan")
    snr: float = float("nan")
    signal_weight: float = float("nan")
    n_psf_fits: int = 0
    flagged: bool = False
    reasons: str = ""

    @property
    def score(self) -> float:
        """Reference-choice score: more stars and sharper is better (``n / fwhm^2``)."""
        if not np.isfinite(self.fwhm) or self.fwhm <= 0:
            return float(self.n_stars)
        return float(self.n_stars / self.fwhm**2)


def measure_quality(
    image: np.ndarray,
    name: str = "",
    *,
    stars: StarTable | None = None,
    saturation: float | None = None,
    pixel_scale: float | None = None,
    n_psf: int = 25,
    threshold: float = 5.0,
) -> FrameQuality:
    """Measure the quality of one calibrated 2-D frame.

    :func:`measure_quality_and_stars` without the star lists; the parameters are its own.

    Returns
    -------
    FrameQuality
    """
    return measure_quality_and_stars(
        image, name, stars=stars, saturation=saturation, pixel_scale=pixel_scale,
        n_psf=n_psf, threshold=threshold,
    )[0]  # fmt: skip


def measure_quality_and_stars(
    image: np.ndarray,
    name: str = "",
    *,
    stars: StarTable | None = None,
    saturation: float | None = None,
    pixel_scale: float | None = None,
    n_psf: int = 25,
    threshold: float = 5.0,
    register_max_stars: int | None = None,
) -> tuple[FrameQuality, StarTable, StarTable | None]:
    """Measure the quality of one calibrated 2-D frame; also return its star lists.

    The sky background is estimated once and shared by the noise estimate and the
    detection, and one extraction gives both the quality stars (no ellipticity cut,
    at most 500) and, with *register_max_stars*, the registration's stars: exactly
    ``detect_stars(image, threshold=threshold, max_stars=register_max_stars,
    saturation=saturation)``, so a run detects once per frame.

    Parameters
    ----------
    image : ndarray
        2-D float32 image (mono or luminance).
    name : str
        Label stored in the result (usually the file name).
    stars : StarTable, optional
        Stars already detected *without* an ellipticity cut; detected here if absent.
    saturation : float, optional
        Saturation level; saturated stars are not fitted.
    pixel_scale : float, optional
        Arcsec per pixel, for ``fwhm_arcsec``.
    n_psf : int
        Number of the brightest stars fitted with a Moffat profile.
    threshold : float
        Detection threshold (sigma) when *stars* is not given.
    register_max_stars : int, optional
        Also return the registration star list with this many stars at most.

    Returns
    -------
    quality : FrameQuality
    stars : StarTable
        The stars measured (detected here unless given).
    register_stars : StarTable or None
        The registration list, when *register_max_stars* is given and *stars* is not.
    """
    data = np.asarray(image, dtype=np.float32)
    q = FrameQuality(name=name)
    # large frames: no full-size background map (96 MB at 24 MP), the binned image's
    # Residual gives the background-subtracted rows and cutouts used below
    sky = frame_sky(data, native_map=False)
    bkg, level = sky[0], sky[1]
    resid = None if sky[3] is None else sky[3][2]
    q.background = level
    # 2e5 differences give the noise to 0.3 % (MAD efficiency), at 40 % of the cost of 5e5
    q.noise = estimate_noise(data, bkg, max_samples=200_000, residual=resid)
    reg_stars = None
    if stars is None:
        cuts = [(500, None)] + ([] if register_max_stars is None else [(register_max_stars, 0.5)])
        lists = detect_star_lists(
            data, cuts, threshold=threshold, saturation=saturation, sky=sky[:3], binned=sky[3]
        )
        stars = lists[0]
        reg_stars = lists[1] if len(lists) > 1 else None
    q.n_stars = len(stars)
    if len(stars) == 0:
        return q, stars, reg_stars
    q.hfd = float(np.median(stars.hfd))
    ny, nx = data.shape
    fits_: list[dict[str, float]] = []
    for i in range(min(len(stars), 3 * n_psf)):
        if len(fits_) >= n_psf:
            break
        r = int(np.clip(round(1.5 * stars.hfd[i] + 2), 4, 16))
        xc, yc = round(stars.x[i]), round(stars.y[i])
        if xc - r < 0 or yc - r < 0 or xc + r >= nx or yc + r >= ny:
            continue
        box = (slice(yc - r, yc + r + 1), slice(xc - r, xc + r + 1))
        if bkg is not None:
            cut = data[box] - bkg[box]  # background-subtracted cutout (no full-frame copy)
        elif np.isfinite(data[box]).all():  # (fit_moffat refuses a cutout with no data)
            cut = resid.box(yc - r, xc - r, 2 * r + 1, 2 * r + 1)
        else:
            continue
        res = fit_moffat(cut, stars.x[i] - (xc - r), stars.y[i] - (yc - r))
        if res is not None and res["fwhm"] < 2 * r:
            fits_.append(res)
    q.n_psf_fits = len(fits_)
    if fits_:
        major = np.array([f["fwhm_major"] for f in fits_])
        minor = np.array([f["fwhm_minor"] for f in fits_])
        q.fwhm = float(np.median(np.sqrt(major * minor)))
        ratio = minor / major
        q.roundness = float(np.median(ratio))
        q.eccentricity = float(np.median(np.sqrt(1.0 - ratio**2)))
    else:  # fall back on the moment sizes
        q.fwhm = float(np.median(stars.fwhm))
        q.roundness = float(np.median(1.0 - stars.ellipticity))
        q.eccentricity = float(np.sqrt(1.0 - q.roundness**2))
    if pixel_scale:
        q.fwhm_arcsec = q.fwhm * float(pixel_scale)
    if q.noise > 0:
        top = stars.select(slice(0, 50))
        area = np.pi * np.maximum(top.hfd, 1.0) ** 2
        q.snr = float(np.median(top.flux / (q.noise * np.sqrt(area))))
        q.signal_weight = float(np.sum(np.maximum(stars.flux, 0)) / q.noise)
    return q, stars, reg_stars


def _robust(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan"), float("nan")
    med = float(np.median(v))
    return med, float(1.4826 * np.median(np.abs(v - med)))


@dataclass
class QualityTable:
    """Quality of every frame of a session."""

    frames: list[FrameQuality] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        return iter(self.frames)

    def __getitem__(self, i: int) -> FrameQuality:
        return self.frames[i]

    def column(self, name: str) -> np.ndarray:
        """One figure for all frames as a float array."""
        return np.array([getattr(f, name) for f in self.frames], dtype=np.float64)

    def flag_outliers(
        self,
        k: float = 3.0,
        fwhm_rel: float = 0.2,
        stars_rel: float = 0.4,
        background_rel: float = 0.15,
        weight_rel: float = 0.4,
        max_eccentricity: float = 0.6,
    ) -> list[FrameQuality]:
        """Flag frames that deviate from the session; returns the flagged frames.

        A figure is an outlier when it is more than ``k`` robust sigmas (1.4826 MAD)
        from the median **and** past a minimum relative change: FWHM above
        ``median * (1 + fwhm_rel)`` (defocus, seeing); star count below
        ``median * (1 - stars_rel)`` (clouds); background away from the median by
        more than ``background_rel`` of it (clouds lit by the city, dawn, moon);
        signal weight below ``median * (1 - weight_rel)`` (clouds, haze);
        eccentricity above ``max_eccentricity`` and above the median (trailing, wind).
        Needs at least 3 frames for the session statistics; the eccentricity test
        applies from one frame.
        """
        n = len(self.frames)
        reasons: list[list[str]] = [[] for _ in range(n)]
        ecc = self.column("eccentricity")
        med_e, sig_e = _robust(ecc)
        for i, e in enumerate(ecc):
            if np.isfinite(e) and e > max_eccentricity and (n < 3 or e > med_e + k * sig_e):
                reasons[i].append(f"elongated stars: eccentricity {e:.2f} (trailing or wind?)")
        if n >= 3:
            checks = (
                ("fwhm", +1, fwhm_rel, "FWHM {v:.2f} px vs median {m:.2f} (defocus or seeing?)"),
                ("n_stars", -1, stars_rel, "{v:.0f} stars vs median {m:.0f} (clouds?)"),
                (
                    "signal_weight", -1, weight_rel,
                    "signal weight {v:.3g} vs median {m:.3g} (clouds?)",
                ),
                (
                    "background", 0, background_rel,
                    "background {v:.1f} vs median {m:.1f} (clouds, moon, dawn?)",
                ),
            )  # fmt: skip
            for name, sign, rel, text in checks:
                vals = self.column(name)
                med, sig = _robust(vals)
                if not np.isfinite(med):
                    continue
                for i, v in enumerate(vals):
                    if not np.isfinite(v):
                        continue
                    dev = v - med
                    if sign == 0:
                        bad = abs(dev) > k * sig and abs(dev) > rel * abs(med)
                    else:
                        bad = sign * dev > k * sig and sign * dev > rel * abs(med)
                    if bad:
                        reasons[i].append(text.format(v=v, m=med))
        for f, r in zip(self.frames, reasons, strict=True):
            f.flagged = bool(r)
            f.reasons = "; ".join(r)
        flagged = [f for f in self.frames if f.flagged]
        for f in flagged:
            logger.info("%s flagged: %s", f.name, f.reasons)
        return flagged

    def best_index(self, exclude_flagged: bool = True) -> int:
        """Index of the best frame by :attr:`FrameQuality.score` (-1 if empty)."""
        if not self.frames:
            return -1
        scores = np.array([f.score for f in self.frames])
        if exclude_flagged and not all(f.flagged for f in self.frames):
            scores = np.where([f.flagged for f in self.frames], -np.inf, scores)
        return int(np.argmax(scores))

    def to_records(self) -> list[dict]:
        """Frames as a list of plain dicts (NaN as ``None``)."""
        out = []
        for f in self.frames:
            d = asdict(f)
            out.append({k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                        for k, v in d.items()})  # fmt: skip
        return out

    def to_csv(self, path: str | Path) -> Path:
        """Write the table as CSV (atomic)."""
        path = Path(path)
        names = [f.name for f in fields(FrameQuality)]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=names)
            w.writeheader()
            for rec in self.to_records():
                w.writerow({k: ("" if v is None else v) for k, v in rec.items()})
        return path

    def to_json(self, path: str | Path) -> Path:
        """Write the table as JSON (atomic)."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "w") as fh:
            json.dump({"frames": self.to_records()}, fh, indent=1)
        return path
