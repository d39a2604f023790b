"""Calibration of light frames: ``(light - offset - k * dark) / flat`` and cosmetic correction.

Every combination of masters is handled:

- offset + dark (thermal signal, offset removed): ``light - offset - k * thermal`` with ``k``
  the exposure ratio, a fixed number, or optimised to minimise the calibrated light's noise;
- dark without an offset master: the dark still holds the offset, so it is subtracted
  unscaled (``k = 1``); scaling it would scale the offset too;
- offset only, dark only, flat only, or nothing: what is available is applied and the log says
  what was done.
"""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
from numba import njit, prange

from astrostack.io import Frame

from .cosmetic import (
    DefectMap,
    correct_defects_inplace,
    estimate_noise,
    find_defects,
    find_isolated_hot,
    isolated_hot,
    replace_listed,
    replace_masked,
    robust_sigma,
)
from .masters import Master

__all__ = [
    "calibrate_array",
    "calibrate_light",
    "dark_scale_factor",
    "defects_for_lights",
    "optimize_dark_scale",
]

logger = logging.getLogger(__name__)


@njit(cache=True, parallel=True, nogil=True)
def _calibrate_kernel(
    light: np.ndarray,
    bias: np.ndarray,
    dark: np.ndarray,
    flat: np.ndarray,
    k: float,
    use_bias: bool,
    use_dark: bool,
    use_flat: bool,
    min_flat: float,
    out: np.ndarray,
) -> tuple[int, int]:
    """``out = (light - bias - k * dark) / flat`` in one pass (*out* may be *light* itself).

    NaN where the flat is below min_flat and wherever the light or the result is not finite
    (no data).  Returns the numbers of pixels whose flat is below *min_flat* (or NaN) and of
    non-finite light pixels.
    """
    ny, nx = light.shape
    n_low = np.zeros(ny, dtype=np.int64)
    n_bad = np.zeros(ny, dtype=np.int64)
    kk = np.float32(k)
    nan = np.float32(np.nan)
    for y in prange(ny):
        lr, br, dr, fr, row = light[y], bias[y], dark[y], flat[y], out[y]
        low = bad = 0
        # selects, not branches, so that the loop is vectorised
        for x in range(nx):
            v = lr[x]
            finite = np.isfinite(v)
            bad += not finite
            if use_bias:
                v -= br[x]
            if use_dark:
                v -= kk * dr[x]
            if use_flat:
                f = fr[x]
                ok = f >= min_flat
                low += not ok
                v = v / f if ok else nan
            row[x] = v if finite and np.isfinite(v) else nan
        n_low[y] = low
        n_bad[y] = bad
    return n_low.sum(), n_bad.sum()


def _as_plane_stack(arr: np.ndarray) -> np.ndarray:
    """View a ``[y, x]`` or ``[c, y, x]`` array as 2-D C-contiguous float32."""
    a = np.ascontiguousarray(arr, dtype=np.float32)
    return a.reshape(-1, a.shape[-1])


def calibrate_array(
    light: np.ndarray,
    bias: np.ndarray | None = None,
    dark: np.ndarray | None = None,
    flat: np.ndarray | None = None,
    k: float = 1.0,
    min_flat: float = 0.05,
) -> np.ndarray:
    """Compute ``(light - bias - k * dark) / flat`` as float32 (absent terms are skipped).

    Parameters
    ----------
    light : numpy.ndarray
        ``[y, x]`` or ``[c, y, x]`` light frame.
    bias, dark, flat : numpy.ndarray or None
        Masters of the same shape as *light*; *flat* normalised to about 1.
    k : float
        Dark scale factor.
    min_flat : float
        Flat values below this give NaN (no data) instead of a huge quotient.

    Returns
    -------
    numpy.ndarray
        Calibrated float32 array of the light's shape; NaN (no data) where the flat is
        below *min_flat* and where the light or the result is not finite.
    """
    return _calibrate(light, bias, dark, flat, k, min_flat)[0]


def _calibrate(
    light: np.ndarray,
    bias: np.ndarray | None,
    dark: np.ndarray | None,
    flat: np.ndarray | None,
    k: float,
    min_flat: float,
    overwrite: bool = False,
) -> tuple[np.ndarray, int, int]:
    """:func:`calibrate_array` with counts, optionally written into *light*.

    Returns the result, the number of pixels with a flat below *min_flat* and the number of
    non-finite light pixels.  *overwrite* writes the result into *light* when that is a
    writeable C-contiguous float32 array.
    """
    shape = np.shape(light)
    dummy = np.zeros((1, 1), dtype=np.float32)
    arrays = []
    for name, arr in (("offset", bias), ("dark", dark), ("flat", flat)):
        if arr is None:
            arrays.append(dummy)
            continue
        if np.shape(arr) != shape:
            msg = (
                f"master {name} has shape {np.shape(arr)} but the light has {shape}; "
                "use masters taken with the same camera, binning and crop"
            )
            raise ValueError(msg)
        arrays.append(_as_plane_stack(arr))
    src = _as_plane_stack(light)
    in_place = (
        overwrite
        and isinstance(light, np.ndarray)
        and light.dtype == np.float32
        and light.flags.c_contiguous
        and light.flags.writeable
    )
    out = src if in_place else np.empty_like(src)
    n_low, n_bad = _calibrate_kernel(
        src,
        arrays[0],
        arrays[1],
        arrays[2],
        float(k),
        bias is not None,
        dark is not None,
        flat is not None,
        float(min_flat),
        out,
    )
    return out.reshape(shape), int(n_low), int(n_bad)


def _highpass(img: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Second difference along x between same-colour pixels (step 2) on selected rows."""
    r = img[rows]
    return r[:, 2:-2] - 0.5 * (r[:, :-4] + r[:, 4:])


def optimize_dark_scale(
    light: np.ndarray,
    thermal: np.ndarray,
    bias: np.ndarray | None = None,
    k_range: tuple[float, float] = (0.0, 3.0),
    max_pixels: int = 500_000,
    tol: float = 1e-4,
) -> float:
    """Dark scale ``k`` that minimises the noise of ``light - bias - k * thermal``.

    The noise is measured on a high-pass version of the calibrated light (a second difference
    between same-colour pixels two columns apart, which removes the sky, gradients and any
    colour pattern) on a subsample of rows.  Pixels where the light has a strong feature that
    the dark does not (stars, cosmic rays, saturation) are left out, so the remaining noise
    depends on ``k`` only through the dark's fixed pattern (hot pixels, amplifier glow).  The
    mean square of that high-pass residual is minimised by a golden-section search over
    *k_range* (as Siril's and PixInsight's dark optimisation do).

    Parameters
    ----------
    light : numpy.ndarray
        2-D light frame (mono or CFA), not yet calibrated.
    thermal : numpy.ndarray
        Master dark with the offset removed.
    bias : numpy.ndarray or None
        Master offset (subtracted from the light first).
    k_range : tuple of float
        Search interval.
    max_pixels : int
        Approximate number of pixels used.
    tol : float
        Absolute tolerance on ``k``.

    Returns
    -------
    float
        The optimal ``k``.
    """
    light = np.asarray(light, dtype=np.float32)
    thermal = np.asarray(thermal, dtype=np.float32)
    if light.ndim == 3:
        light = light.reshape(-1, light.shape[-1])
        thermal = thermal.reshape(-1, thermal.shape[-1])
        if bias is not None:
            bias = np.asarray(bias, dtype=np.float32).reshape(-1, light.shape[-1])
    ny, nx = light.shape
    stride = max(1, math.ceil(ny * nx / max_pixels))
    rows = np.arange(0, ny, stride)
    hl = _highpass(light, rows)
    if bias is not None:
        hl = hl - _highpass(np.asarray(bias, dtype=np.float32), rows)
    hd = _highpass(thermal, rows)
    sl = robust_sigma(hl)
    sd = robust_sigma(hd)
    finite = np.isfinite(hl) & np.isfinite(hd)
    light_only = (np.abs(hl) > 5.0 * sl) & (np.abs(hd) < 3.0 * sd)
    keep = finite & ~light_only
    hl = hl[keep].astype(np.float64)
    hd = hd[keep].astype(np.float64)
    if hl.size == 0 or not np.any(hd):
        logger.warning("dark optimisation: no usable pixels; using k = 1")
        return 1.0

    def noise(k: float) -> float:
        r = hl - k * hd
        return float(np.mean(r * r))

    # Golden-section search on the (unimodal) mean square residual.
    a, b = float(k_range[0]), float(k_range[1])
    g = (math.sqrt(5.0) - 1.0) / 2.0
    c = b - g * (b - a)
    d = a + g * (b - a)
    fc, fd = noise(c), noise(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = noise(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = noise(d)
    k = 0.5 * (a + b)
    logger.debug("dark optimisation: k = %.4f on %d pixels", k, hl.size)
    return k


def dark_scale_factor(
    light_exposure: float | None,
    dark_exposure: float | None,
    name: str = "light",
    quiet: bool = False,
) -> float:
    """Exposure ratio ``light / dark``, or 1 when either exposure is unknown.

    Parameters
    ----------
    light_exposure, dark_exposure : float or None
        Exposure times in seconds.
    name : str
        Frame name for the log.
    quiet : bool
        Do not log a warning when an exposure is unknown.

    Returns
    -------
    float
    """
    if light_exposure and dark_exposure and light_exposure > 0 and dark_exposure > 0:
        return float(light_exposure) / float(dark_exposure)
    if not quiet:
        logger.warning(
            "%s: exposure of the light or of the master dark unknown; dark subtracted unscaled",
            name,
        )
    return 1.0


def _data(m: Master | np.ndarray | float | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if m is None:
        return None
    if isinstance(m, Master):
        return m.data
    if np.ndim(m) == 0:  # a constant offset (black level)
        return np.full(shape, float(m), dtype=np.float32)
    return np.asarray(m, dtype=np.float32)


def calibrate_light(
    frame: Frame,
    bias: Master | np.ndarray | float | None = None,
    dark: Master | np.ndarray | None = None,
    flat: Master | np.ndarray | None = None,
    defects: DefectMap | np.ndarray | None = None,
    dark_scale: str | float = "exposure",
    cfa: bool | None = None,
    detect_hot: bool = False,
    hot_sigma: float = 8.0,
    min_flat: float = 0.05,
    overwrite: bool = False,
) -> Frame:
    """Calibrate one light frame: ``(light - offset - k * dark) / flat``, then cosmetic fixes.

    Non-finite light pixels (NaN, +-inf) are no data: they and any non-finite result are
    NaN in the output.

    Parameters
    ----------
    frame : Frame
        The light (float32 ``[y, x]`` mono/CFA or ``[c, y, x]``).
    bias : Master or numpy.ndarray or float or None
        Master offset, or a constant offset in ADU (black level).
    dark : Master or numpy.ndarray or None
        Master dark.  A :class:`Master` says whether it still includes the offset
        (``includes_bias``); a bare array is taken to include it when *bias* is None and to be
        thermal signal otherwise.
    flat : Master or numpy.ndarray or None
        Master flat normalised to 1.
    defects : DefectMap or numpy.ndarray or None
        Pixels to replace by the median of their same-colour neighbours.
    dark_scale : {'exposure', 'optimize'} or float
        ``'exposure'``: light / dark exposure ratio; ``'optimize'``: the ``k`` minimising the
        calibrated light's noise (:func:`optimize_dark_scale`); a number: that ``k``.  A dark
        that still includes the offset is subtracted with ``k = 1`` unless a number is given.
    cfa : bool or None
        Whether the frame is a Bayer mosaic; ``None`` takes it from ``frame.meta.bayer``.
    detect_hot : bool
        Also find and replace isolated hot pixels (cosmic rays, warm pixels missing from the
        dark) in the calibrated light (:func:`find_isolated_hot`).
    hot_sigma : float
        Threshold for *detect_hot*, in robust standard deviations.
    min_flat : float
        Flat values below this are treated as defects (replaced from neighbours).
    overwrite : bool
        Write the result into ``frame.data`` when it is a writeable C-contiguous float32
        array (the light is then lost): no new full-frame array for a caller that no longer
        needs the raw light.

    Returns
    -------
    Frame
        A new float32 frame; ``meta.header['ASCALIB']`` summarises what was done,
        ``meta.header['ASDARKK']`` holds the dark scale used and
        ``meta.header['ASNONFIN']``, when there are any, the number of non-finite light
        pixels.
    """
    name = str(frame.meta.path) if frame.meta.path is not None else "light"
    if cfa is None:
        cfa = frame.meta.bayer is not None and frame.data.ndim == 2
    light = frame.data
    b = _data(bias, light.shape)
    d = _data(dark, light.shape)
    f = _data(flat, light.shape)
    steps: list[str] = []

    if isinstance(dark_scale, str) and dark_scale not in ("exposure", "optimize"):
        msg = f"{name}: dark_scale must be 'exposure', 'optimize' or a number, not {dark_scale!r}"
        raise ValueError(msg)
    for label, arr in (("offset", b), ("dark", d), ("flat", f)):
        if arr is not None and arr.shape != light.shape:
            msg = (
                f"{name}: master {label} has shape {arr.shape} but the light has {light.shape}; "
                "use masters taken with the same camera, binning and crop"
            )
            raise ValueError(msg)

    includes_bias = False
    k = 0.0
    if d is not None:
        includes_bias = dark.includes_bias if isinstance(dark, Master) else b is None
        if includes_bias and b is not None:
            d = d - b  # a dark built without the offset master: remove the offset here
            includes_bias = False
        dark_exp = dark.exposure if isinstance(dark, Master) else None
        if not isinstance(dark_scale, str):
            k = float(dark_scale)
        elif includes_bias:
            k = 1.0
            ratio = dark_scale_factor(frame.meta.exposure, dark_exp, name, quiet=True)
            if dark_scale == "optimize" or abs(ratio - 1.0) > 0.01:
                logger.warning(
                    "%s: the master dark still includes the offset (no master offset), so it "
                    "cannot be scaled (light %ss, dark %ss); subtracted unscaled. Add offset "
                    "(bias) frames or darks of the lights' exposure",
                    name,
                    frame.meta.exposure,
                    dark_exp,
                )
        elif dark_scale == "exposure":
            k = dark_scale_factor(frame.meta.exposure, dark_exp, name)
        else:
            k = optimize_dark_scale(light, d, b)

    try:
        out, n_low, n_nonfinite = _calibrate(light, b, d, f, k, min_flat, overwrite)
    except ValueError as exc:
        msg = f"{name}: {exc}"
        raise ValueError(msg) from exc

    if b is not None:
        steps.append("offset")
    if d is not None:
        steps.append("dark(incl. offset)" if includes_bias else f"dark*{k:.4f}")
    if f is not None:
        steps.append("flat")
    if b is None and d is None:
        logger.warning("%s: no offset and no dark: the light keeps its pedestal", name)

    mask = also = None
    if defects is not None:
        if isinstance(defects, DefectMap):  # hot and cold kept apart: no union to build
            mask, also = np.asarray(defects.hot, bool), np.asarray(defects.cold, bool)
        else:
            mask = np.asarray(defects, bool)
        if mask.shape != light.shape[-2:] or (also is not None and also.shape != mask.shape):
            msg = (
                f"{name}: defect map shape {mask.shape} does not match the light "
                f"{light.shape}; build it from masters of the same camera"
            )
            raise ValueError(msg)
    if n_low:  # only then is a mask of the low flat pixels worth making
        low = ~(f >= min_flat)
        if low.ndim == 3:
            low = low.any(axis=0)
        if mask is None:
            mask = low
        elif also is None:
            mask = mask | low
        else:
            also = also | low
    # ``out`` is a new array of this function: defects are replaced in place (no copies)
    if mask is not None:
        n_masked = replace_masked(out, mask, cfa, also=also)[0]
        if n_masked:
            steps.append(f"cosmetic({n_masked})")
    if detect_hot:
        if out.ndim == 2:
            extra, index = isolated_hot(out, cfa, sigma=hot_sigma)
            replace_listed(out, extra, index, cfa)
        else:  # [c, y, x]: one mask for all planes
            extra = find_isolated_hot(out[0], False, sigma=hot_sigma)
            for p in out[1:]:
                extra |= find_isolated_hot(p, False, sigma=hot_sigma)
            index = np.flatnonzero(extra)
            if index.size:
                correct_defects_inplace(out, extra, cfa)
        steps.append(f"isolated({index.size})")

    meta = copy.deepcopy(frame.meta)
    meta.header = dict(meta.header)
    meta.header["ASCALIB"] = ",".join(steps) if steps else "none"
    meta.header["ASDARKK"] = float(k)
    if n_nonfinite:
        meta.header["ASNONFIN"] = n_nonfinite
    logger.info("%s calibrated: %s", name, meta.header["ASCALIB"])
    return Frame(data=out, meta=meta)


def defects_for_lights(
    sample: Frame,
    bias: Master | np.ndarray | float | None = None,
    dark: Master | np.ndarray | None = None,
    flat: Master | np.ndarray | None = None,
    cfa: bool | None = None,
    hot_noise_factor: float = 10.0,
    **find_options: float,
) -> DefectMap:
    """Defect map for a group of lights, with the hot-pixel level set by the lights' noise.

    The *sample* light is calibrated without cosmetic correction, its noise measured
    (:func:`~astrostack.calibrate.cosmetic.estimate_noise`) and hot pixels kept only when
    their thermal signal in a light exceeds ``hot_noise_factor`` times that noise (weaker
    ones are left to dark subtraction, which handles them without touching stars).

    Parameters
    ----------
    sample : Frame
        One light of the group.
    bias, dark, flat : Master or numpy.ndarray or None
        The masters used for the group.
    cfa : bool or None
        Bayer mosaic; ``None`` takes it from ``sample.meta.bayer``.
    hot_noise_factor : float
        Required thermal signal in light-noise sigmas.
    **find_options
        Passed to :func:`~astrostack.calibrate.cosmetic.find_defects` (``hot_sigma``,
        ``cold_fraction``, ``hot_min_excess``).

    Returns
    -------
    DefectMap
    """
    if cfa is None:
        cfa = sample.meta.bayer is not None and sample.data.ndim == 2
    d = _data(dark, sample.data.shape)
    f = _data(flat, sample.data.shape)
    if d is not None and d.ndim != 2:
        d = None  # RGB frames: no mosaic defect map from a 3-plane dark
    if f is not None and f.ndim != 2:
        f = None
    if d is None and f is None:
        shape = sample.data.shape[-2:]
        return DefectMap(np.zeros(shape, bool), np.zeros(shape, bool), cfa=cfa)
    plain = calibrate_light(sample, bias=bias, dark=dark, flat=flat, cfa=cfa)
    noise = estimate_noise(plain.data, cfa)
    ratio = float(plain.meta.header.get("ASDARKK", 1.0)) or 1.0
    n_frames = dark.n_frames if isinstance(dark, Master) else None
    logger.debug("lights' noise %.3g ADU, dark scale %.3g", noise, ratio)
    return find_defects(
        d,
        f,
        cfa,
        n_dark_frames=n_frames,
        light_noise=noise,
        light_dark_ratio=ratio,
        hot_noise_factor=hot_noise_factor,
        **find_options,
    )
