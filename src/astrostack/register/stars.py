"""Star detection on calibrated frames: background, extraction, filtering, centroids.

Detection uses `sep` (SExtractor as a library): a mesh background, thresholded
extraction, windowed centroids (``sep.winpos``) and half-flux radii
(``sep.flux_radius``).  Detections that are saturated, elongated, too sharp to be
a star (hot pixels, cosmic rays) or too close to the edge are dropped.

Frames above 16 megapixels are detected on their 2x2 mean and measured at full
resolution on stamps cut around the candidates (see ``docs/registration.md``).

Coordinates follow the package convention: ``x`` is the column, ``y`` the row,
pixel centres at integers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import sep
from scipy.spatial import cKDTree

from .stamps import Residual, binned_detection_image

__all__ = [
    "FLAG_SEP_MERGED",
    "FLAG_SEP_TRUNC",
    "StarTable",
    "background",
    "bayer_green_mask",
    "binned_to_native",
    "detect_star_lists",
    "detect_stars",
    "luminance",
]

logger = logging.getLogger(__name__)

#: Star flag bits copied from sep (blended with a neighbour, touches the image edge).
FLAG_SEP_MERGED = int(sep.OBJ_MERGED)
FLAG_SEP_TRUNC = int(sep.OBJ_TRUNC)

_GAUSS_SIGMA_TO_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))
_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
# sep's extraction pixel stack: sep allocates it on every call (~15 ms per million
# entries), so extraction starts with sep's default and grows it only on overflow
_PIXSTACK = 300_000
# deblending levels: half sep's 32 (about 0.1 s CPU less per 24 MP frame); the lists
# keep single, round stars, so finer splitting of blends buys nothing (the same quality
# figures on the 24 MP session, star fluxes summed within 0.1 %)
_DEBLEND_NTHRESH = 16
# the first extraction's threshold (times the detection threshold), and how many objects
# it must find to be kept: 1.4x the candidates of the quality pass's 500 stars (see
# detect_star_lists and _n_candidates)
_FIRST_FACTOR = 2.0
_FIRST_MIN = 1500


@dataclass
class StarTable:
    """Detected stars, brightest first.  All arrays have one entry per star.

    Attributes
    ----------
    x, y : ndarray
        Windowed centroids in pixels (x = column, y = row, pixel centres at integers).
    flux : ndarray
        Background-subtracted isophotal flux (ADU).
    peak : ndarray
        Peak value above the local background (ADU).
    fwhm : ndarray
        FWHM estimate from the second moments (px), ``2.3548 * sqrt((a**2 + b**2) / 2)``
        with the isophotal moments widened to the half-flux radius.
    hfd : ndarray
        Half-flux diameter (px), from ``sep.flux_radius``.
    a, b, theta : ndarray
        Semi-major / semi-minor axis (px, second moments) and position angle (rad).
    ellipticity : ndarray
        ``1 - b / a``.
    flags : ndarray
        sep extraction flags (``FLAG_SEP_MERGED``, ``FLAG_SEP_TRUNC``, ...).
    shape : tuple of int
        Shape ``(ny, nx)`` of the image the stars were detected on.
    background_level, background_rms : float
        Global sep background level and RMS of the image (ADU).
    """

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    peak: np.ndarray
    fwhm: np.ndarray
    hfd: np.ndarray
    a: np.ndarray
    b: np.ndarray
    theta: np.ndarray
    ellipticity: np.ndarray
    flags: np.ndarray
    shape: tuple[int, int] = (0, 0)
    background_level: float = 0.0
    background_rms: float = 0.0
    n_rejected: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.size)

    @property
    def xy(self) -> np.ndarray:
        """Positions as a float64 ``[n, 2]`` array of ``(x, y)``."""
        return np.column_stack([self.x, self.y]).astype(np.float64)

    def select(self, index: np.ndarray | slice) -> StarTable:
        """Return the stars picked by *index* (boolean mask, indices or slice)."""
        names = ("x", "y", "flux", "peak", "fwhm", "hfd", "a", "b", "theta", "ellipticity")
        kwargs = {n: getattr(self, n)[index] for n in names}
        return StarTable(
            **kwargs,
            flags=self.flags[index],
            shape=self.shape,
            background_level=self.background_level,
            background_rms=self.background_rms,
            n_rejected=dict(self.n_rejected),
        )

    def scaled(self, factor: float, offset: float) -> StarTable:
        """Positions mapped by ``p * factor + offset`` (e.g. binned to native pixels).

        Sizes (fwhm, hfd, a, b) are multiplied by *factor*.
        """
        out = self.select(slice(None))
        out.x = self.x * factor + offset
        out.y = self.y * factor + offset
        for name in ("fwhm", "hfd", "a", "b"):
            setattr(out, name, getattr(self, name) * factor)
        out.shape = (round(self.shape[0] * factor), round(self.shape[1] * factor))
        return out

    @classmethod
    def empty(cls, shape: tuple[int, int] = (0, 0)) -> StarTable:
        """A table with no stars."""
        z = np.zeros(0, dtype=np.float64)
        return cls(
            *([z] * 10), flags=np.zeros(0, dtype=np.int32), shape=shape
        )  # fmt: skip


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        msg = (
            f"{name}: star detection needs a 2-D image, got shape {image.shape}; "
            "pass one plane or use luminance()"
        )
        raise ValueError(msg)
    return np.ascontiguousarray(image, dtype=np.float32)


def background(
    image: np.ndarray, box: int = 64, filter_size: int = 3
) -> tuple[np.ndarray, float, float]:
    """Estimate the sky background with a sep mesh.

    Parameters
    ----------
    image : ndarray
        2-D float32 image.
    box : int
        Mesh box size in pixels.
    filter_size : int
        Median filter size over the mesh.

    Returns
    -------
    bkg : ndarray
        Background map (float32, same shape).
    level : float
        Global background level.
    rms : float
        Global background RMS.
    """
    data = _check_image(image)
    box = int(max(8, min(box, data.shape[0] // 2, data.shape[1] // 2)))
    finite = np.isfinite(data)
    mask = None if finite.all() else ~finite
    if mask is not None:
        data = np.where(finite, data, 0).astype(np.float32)
    bk = sep.Background(data, mask=mask, bw=box, bh=box, fw=filter_size, fh=filter_size)
    return bk.back().astype(np.float32), float(bk.globalback), float(bk.globalrms)


def bayer_green_mask(shape: tuple[int, int], bayer: str) -> np.ndarray:
    """Boolean mask of the green photosites of a CFA mosaic with pattern *bayer*."""
    bayer = bayer.upper()
    if bayer not in _PATTERNS:
        msg = f"unknown Bayer pattern {bayer!r}; use one of {', '.join(_PATTERNS)}"
        raise ValueError(msg)
    mask = np.zeros(shape, dtype=bool)
    cells = [(i // 2, i % 2) for i, ch in enumerate(bayer) if ch == "G"]
    for dy, dx in cells:
        mask[dy::2, dx::2] = True
    return mask


def luminance(image: np.ndarray, bayer: str | None = None, mode: str = "bin") -> np.ndarray:
    """Return a 2-D image suitable for star detection.

    Parameters
    ----------
    image : ndarray
        ``[y, x]`` mono or CFA mosaic, or ``[c, y, x]`` colour.
    bayer : str, optional
        CFA pattern of a mosaic (``'RGGB'``, ``'BGGR'``, ``'GRBG'``, ``'GBRG'``).
    mode : {'bin', 'green'}
        For a mosaic: ``'bin'`` sums each 2x2 CFA cell into one superpixel (half
        resolution; superpixel ``(xb, yb)`` is centred on native ``(2 xb + 0.5,
        2 yb + 0.5)``, see :func:`binned_to_native`); ``'green'`` keeps the full
        resolution, interpolating green at the red and blue sites from their four
        green neighbours (native coordinates unchanged).

    Returns
    -------
    ndarray
        float32 2-D image.  Colour ``[c, y, x]`` input gives the channel mean;
        mono input is returned as float32.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        return np.ascontiguousarray(image.mean(axis=0, dtype=np.float32))
    if image.ndim != 2:
        msg = f"luminance: expected [y, x] or [c, y, x], got shape {image.shape}"
        raise ValueError(msg)
    if bayer is None:
        return np.ascontiguousarray(image)
    if mode == "bin":
        ny, nx = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        v = image[:ny, :nx]
        return np.ascontiguousarray(v[0::2, 0::2] + v[0::2, 1::2] + v[1::2, 0::2] + v[1::2, 1::2])
    if mode == "green":
        green = bayer_green_mask(image.shape, bayer)
        kernel = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=np.float32)
        g = np.where(green, image, 0).astype(np.float32)
        num = cv2.filter2D(g, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
        den = cv2.filter2D(green.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REFLECT_101)
        return np.ascontiguousarray(np.where(green, image, num / np.maximum(den, 1)))
    msg = f"luminance: unknown mode {mode!r}; use 'bin' or 'green'"
    raise ValueError(msg)


def binned_to_native(matrix: np.ndarray, factor: int = 2) -> np.ndarray:
    """Convert a transform measured on ``factor x factor`` binned images to native pixels.

    Binned pixel ``p_b`` is centred on native ``p_n = factor * p_b + (factor - 1) / 2``;
    the native transform is ``S @ M @ inv(S)``.
    """
    off = (factor - 1) / 2.0
    s = np.array([[factor, 0, off], [0, factor, off], [0, 0, 1]], dtype=np.float64)
    return s @ np.asarray(matrix, dtype=np.float64) @ np.linalg.inv(s)


def detect_stars(
    image: np.ndarray,
    *,
    threshold: float = 5.0,
    max_stars: int = 200,
    saturation: float | None = None,
    min_fwhm: float = 1.0,
    max_ellipticity: float | None = 0.5,
    border: int = 8,
    min_area: int = 5,
    background_box: int = 64,
    max_size_ratio: float = 3.0,
    bin2: bool | None = None,
    sky: tuple[np.ndarray, float, float] | None = None,
) -> StarTable:
    """Detect stars on a calibrated 2-D image.

    Parameters
    ----------
    image : ndarray
        2-D float32 image (mono, a colour plane, or :func:`luminance` of a mosaic).
        NaN pixels are masked.
    threshold : float
        Detection threshold in units of the background RMS.
    max_stars : int
        Keep at most this many stars (the brightest).
    saturation : float, optional
        Saturation level in the image's units.  Stars whose peak pixel (with
        background) reaches 95 % of it are rejected.  ``None`` disables the test.
    min_fwhm : float
        Detections with half-flux diameter below this (px) are hot pixels or
        cosmic rays and are rejected.
    max_ellipticity : float, optional
        Reject detections with ``1 - b/a`` above this; ``None`` keeps all (use it
        for quality measurement, where trailing must be seen).
    border : int
        Reject detections closer than this to the image edge (px).
    min_area : int
        Minimum number of connected pixels above threshold.
    background_box : int
        Background mesh size (px).
    max_size_ratio : float
        Reject detections whose half-flux diameter exceeds this multiple of the
        median (galaxy cores, nebula knots); applied from 5 detections.
    bin2 : bool, optional
        Detect on the 2x2 mean of the image (4x less work for the background mesh
        and extraction), then measure centroids, HFD and peaks on the full image.
        ``None`` (default) does so for images above 16 megapixels.
    sky : tuple, optional
        ``(map, level, rms)`` of this image from :func:`background` with
        ``box=background_box``, when the caller has it already (not recomputed);
        ignored when detecting on the binned image.

    Returns
    -------
    StarTable
        Brightest first; ``n_rejected`` counts the detections dropped by each test.
    """
    return detect_star_lists(
        image, [(max_stars, max_ellipticity)], threshold=threshold, saturation=saturation,
        min_fwhm=min_fwhm, border=border, min_area=min_area, background_box=background_box,
        max_size_ratio=max_size_ratio, bin2=bin2, sky=sky,
    )[0]  # fmt: skip


def _extract(
    sub: np.ndarray, threshold: float, rms: float, mask: np.ndarray | None, minarea: int
) -> np.ndarray | None:
    """``sep.extract`` with sep's default pixel stack, grown (then the threshold
    raised) when a crowded or nebulous frame overflows it."""
    thresh = float(threshold)
    pixstack = _PIXSTACK
    big = max(_PIXSTACK, sub.size // 4)
    sep.set_sub_object_limit(4096)
    for _ in range(6):
        sep.set_extract_pixstack(pixstack)
        try:
            return sep.extract(
                sub, thresh, err=rms, mask=mask, minarea=minarea,
                deblend_nthresh=_DEBLEND_NTHRESH, deblend_cont=0.005,
            )  # fmt: skip
        except Exception as exc:  # sep raises generic exceptions on buffer overflow
            if pixstack < big:
                logger.debug("sep.extract overflowed its pixel stack (%s); growing it", exc)
                pixstack = big
                continue
            logger.debug("sep.extract failed at %.1f sigma (%s); raising threshold", thresh, exc)
            thresh *= 2.0
    return None


def detect_star_lists(
    image: np.ndarray,
    cuts: Sequence[tuple[int, float | None]],
    *,
    threshold: float = 5.0,
    saturation: float | None = None,
    min_fwhm: float = 1.0,
    border: int = 8,
    min_area: int = 5,
    background_box: int = 64,
    max_size_ratio: float = 3.0,
    bin2: bool | None = None,
    sky: tuple[np.ndarray, float, float] | None = None,
    binned: tuple | None = None,
) -> list[StarTable]:
    """Several star lists from one extraction: one per ``(max_stars, max_ellipticity)``.

    Each list is exactly what :func:`detect_stars` returns with those two arguments
    and the others given here; the background and the sep extraction (most of the
    work) are done once.  The quality pass uses it to get its own list (no
    ellipticity cut) and the registration's in one go.  A caller that has already
    measured the sky passes it: *sky* (``background(image, background_box)``) for the
    full-resolution path, *binned* (``binned_detection_image(image,
    max(8, background_box // 2))``) for the binned one.

    Returns
    -------
    list of StarTable
        In the order of *cuts*.
    """
    data = _check_image(image)
    ny, nx = data.shape
    if bin2 is None:
        bin2 = ny * nx > 16_000_000 and min(ny, nx) >= 64
    if bin2:
        # detect on the 2x2 mean, measure on the full-resolution image (on stamps)
        if binned is None:
            binned = binned_detection_image(data, max(8, background_box // 2))
        sub_d, dmask, resid, level, rms_d = binned
    else:
        finite = np.isfinite(data)
        dmask = None if finite.all() else ~finite
        if dmask is not None:
            data = np.where(finite, data, 0).astype(np.float32)
        if sky is not None and np.shape(sky[0]) == data.shape:
            bkg_d = np.asarray(sky[0], dtype=np.float32)
            level, rms_d = float(sky[1]), float(sky[2])
        else:
            bkg_d, level, rms_d = background(data, box=background_box)
        sub_d = data - bkg_d
        resid = Residual(sub=sub_d)
    if not np.isfinite(rms_d) or rms_d <= 0:
        return [StarTable.empty((ny, nx)) for _ in cuts]
    minarea = max(2, min_area // 2) if bin2 else min_area
    # Only a cut's brightest candidates are measured (see _n_candidates): an extraction
    # at twice the threshold usually holds them all, for a third of sep's work (24 MP:
    # 1.8k-2.1k objects in 0.1 s against 4.4k in 0.3 s).  It is kept when it finds
    # _FIRST_MIN objects, else the threshold itself is used (few stars, small frames).
    # The test depends on the image alone, not on the cuts, so that each list is what
    # detect_stars finds for it.
    objs = _extract(sub_d, _FIRST_FACTOR * threshold, rms_d, dmask, minarea)
    if objs is None or len(objs) < _FIRST_MIN:
        objs = _extract(sub_d, threshold, rms_d, dmask, minarea)
    if objs is None or len(objs) == 0:
        return [StarTable.empty((ny, nx)) for _ in cuts]
    cols = _candidate_columns(objs, data, resid, bin2)
    rms = 2.0 * rms_d if bin2 else rms_d  # the 2x2 mean halves white noise
    # the per-candidate measurements are shared by the cuts (each candidate measured once)
    shared = _Shared(cols["x"].size)
    return [
        _select_stars(
            cols, resid, (ny, nx), level, rms, max_stars=n, saturation=saturation,
            min_fwhm=min_fwhm, max_ellipticity=e, border=border, max_size_ratio=max_size_ratio,
            shared=shared,
        )
        for n, e in cuts
    ]  # fmt: skip


def _candidate_columns(
    objs: np.ndarray, data: np.ndarray, resid: Residual, bin2: bool
) -> dict[str, np.ndarray]:
    """The candidates' columns (full-resolution pixels) from sep's objects."""
    ny, nx = data.shape
    if bin2:
        k = 2.0
        yb = np.clip(2 * objs["ypeak"], 0, ny - 2)
        xb = np.clip(2 * objs["xpeak"], 0, nx - 2)
        blocks = [(yb, xb), (yb + 1, xb), (yb, xb + 1), (yb + 1, xb + 1)]
        # NaN pixels (no data) are left out of the peak
        raw_peak = np.fmax.reduce([data[yy, xx] for yy, xx in blocks])
        ys, xs = (np.concatenate(v) for v in zip(*blocks, strict=True))
        vals = resid.at(ys, xs).reshape(4, -1)
        best = np.argmax(vals, axis=0)
        peak = vals[best, np.arange(best.size)]
        # start from the full-resolution peak pixel (winpos refines it below)
        cols = {"x": xb + (best >= 2), "y": yb + (best % 2), "flux": 4.0 * objs["flux"],
                "x_iso": 2.0 * objs["x"] + 0.5, "y_iso": 2.0 * objs["y"] + 0.5}  # fmt: skip
    else:
        k = 1.0
        ypk = np.clip(objs["ypeak"], 0, ny - 1)
        xpk = np.clip(objs["xpeak"], 0, nx - 1)
        raw_peak, peak = data[ypk, xpk], objs["peak"]
        cols = {"x": objs["x"], "y": objs["y"], "flux": objs["flux"],
                "x_iso": objs["x"], "y_iso": objs["y"]}  # fmt: skip
    cols.update(
        a=k * np.maximum(objs["a"], 1e-3), b=k * np.maximum(objs["b"], 1e-3),
        theta=objs["theta"], flag=objs["flag"], peak=peak, raw_peak=raw_peak,
    )  # fmt: skip
    cols = {n: np.asarray(v, dtype=np.float64) for n, v in cols.items()}
    cols["flag"] = cols["flag"].astype(np.int32)
    cols["ell"] = 1.0 - cols["b"] / cols["a"]
    cols["_idx"] = np.arange(cols["x"].size, dtype=np.int64)
    return cols


def _n_candidates(max_stars: int) -> int:
    """How many of a cut's candidates, brightest peak first, are measured.

    Hot pixels and blends are dropped after measuring, so keep a margin over
    *max_stars*: 2x + 50 swaps < 2 % of a 24 MP frame's 500 quality stars against
    3x + 50, for 2/3 of the HFD work.
    """
    return 2 * max_stars + 50


class _Shared:
    """Measurements of extracted candidates shared by the cuts of :func:`detect_star_lists`.

    Indexed by the candidates' ``_idx`` column.  A candidate's first-pass HFD and
    windowed centroid depend only on the candidate (its position, its isophotal
    moments, and for the window its first-pass HFD), never on the other candidates of
    a list, so a candidate measured for one list is not measured again for the next.
    """

    def __init__(self, n: int) -> None:
        self._done = {"hfd": np.zeros(n, dtype=bool), "win": np.zeros(n, dtype=bool)}
        self._values = {"hfd": np.full((n, 1), np.nan), "win": np.full((n, 3), np.nan)}

    def get(self, kind: str, idx: np.ndarray, measure: Callable) -> np.ndarray:
        """``[len(idx), k]`` values of *kind*; ``measure(mask)`` gives the k result
        arrays of the candidates ``idx[mask]`` not measured yet."""
        done, values = self._done[kind], self._values[kind]
        todo = ~done[idx]
        if todo.any():
            values[idx[todo]] = np.column_stack(
                [np.asarray(v, dtype=np.float64) for v in measure(todo)]
            )
            done[idx[todo]] = True
        return values[idx]


def _select_stars(
    cols: dict[str, np.ndarray],
    resid: Residual,
    shape: tuple[int, int],
    level: float,
    rms: float,
    *,
    max_stars: int,
    saturation: float | None,
    min_fwhm: float,
    max_ellipticity: float | None,
    border: int,
    max_size_ratio: float,
    shared: _Shared,
) -> StarTable:
    """Filter and measure extracted candidates into a star table (*cols* is not modified).

    *shared* keeps the first-pass HFD and the windowed centroids of the candidates
    (the ``_idx`` column) already measured for another cut.
    """
    ny, nx = shape
    cols = dict(cols)
    rejected: dict[str, int] = {}

    def apply(keep: np.ndarray, reason: str) -> None:
        rejected[reason] = int((~keep).sum())
        for n in list(cols):
            cols[n] = cols[n][keep]

    x0, y0 = cols["x"], cols["y"]
    apply(
        (x0 >= border) & (x0 <= nx - 1 - border) & (y0 >= border) & (y0 <= ny - 1 - border),
        "edge",
    )
    if saturation is not None:
        apply(cols["raw_peak"] < 0.95 * saturation, "saturated")
    if max_ellipticity is not None:
        apply(cols["ell"] <= max_ellipticity, "elongated")
    if cols["x"].size == 0:
        return StarTable.empty((ny, nx))

    # Only the brightest candidates are measured (see _n_candidates).  Ranked by peak,
    # not total flux: knots of a bright nebula have large isophotal fluxes (more so on the
    # 2x2-binned detection image, where faint emission crosses the threshold) and would
    # crowd out the stars.
    n_top = _n_candidates(max_stars)
    if cols["x"].size > n_top:
        top = np.argsort(-cols["peak"], kind="stable")[:n_top]
        for n in list(cols):
            cols[n] = cols[n][top]
    # Half-flux radius, then hot-pixel test: a single pixel has r50 well below 0.5 px.
    rmax = np.clip(6.0 * cols["a"], 3.0, 40.0)

    def first_hfd(sel: np.ndarray) -> tuple[np.ndarray]:
        # sep samples every pixel of an aperture at subpix^2 points.  The wide ones
        # (beyond 15 px: bright stars, extended objects) hold 2/3 of the pixels of a
        # 24 MP frame's candidates; 3x3 points there move the frame's HFD by < 2e-4
        # (this HFD feeds the cuts, the centroid window and the final aperture).  The
        # compact objects keep 5x5: a hot pixel's HFD (0.8-0.9 px) is close to the cut.
        x, y, r = cols["x"][sel], cols["y"][sel], rmax[sel]
        r50 = np.full(x.size, np.nan)
        for part, subpix in ((r <= 15.0, 5), (r > 15.0, 3)):
            if part.any():
                r50[part] = resid.flux_radius(x[part], y[part], r[part], 0.5, subpix=subpix)
        return (2.0 * r50,)

    cols["hfd"] = shared.get("hfd", cols["_idx"], first_hfd)[:, 0]
    apply(np.isfinite(cols["hfd"]) & (cols["hfd"] >= min_fwhm) & (cols["flux"] > 0), "too_sharp")
    # Extended objects (galaxy cores, nebula knots) are much larger than the stars.
    if cols["x"].size >= 5:
        apply(cols["hfd"] <= max_size_ratio * np.median(cols["hfd"]), "extended")
    if cols["x"].size == 0:
        return StarTable.empty((ny, nx))

    order = np.argsort(-cols["flux"])[: max(int(max_stars), 0)]
    cols = {n: v[order] for n, v in cols.items()}
    sig = np.clip(cols["hfd"] / _GAUSS_SIGMA_TO_FWHM, 0.5, 20.0)
    # the window (4 sigma) of a kept result lies within 2 sigma + 1 of the
    # isophotal centre, itself near the start
    reach = 6.0 * sig + 2.0 + np.hypot(cols["x"] - cols["x_iso"], cols["y"] - cols["y_iso"])

    def window(sel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return resid.winpos(cols["x"][sel], cols["y"][sel], sig[sel], reach[sel])

    xw, yw, wflag = shared.get("win", cols["_idx"], window).T
    # Windowed centroids of deblended neighbours drift towards each other: keep sep's.
    bad = (wflag != 0) | ~np.isfinite(xw) | ~np.isfinite(yw)
    bad |= (cols["flag"] & FLAG_SEP_MERGED) > 0
    bad |= (np.abs(xw - cols["x_iso"]) > 2.0 * sig + 1) | (
        np.abs(yw - cols["y_iso"]) > 2.0 * sig + 1
    )
    cols["x"] = np.where(bad, cols["x_iso"], xw)
    cols["y"] = np.where(bad, cols["y_iso"], yw)
    # final HFD at the refined centre, in one aperture for all stars: 2x the median
    # first-pass HFD holds all the flux of a star without much noise
    rfin = float(np.clip(2.0 * np.median(cols["hfd"]), 4.0, 40.0))
    r50 = resid.flux_radius(cols["x"], cols["y"], np.full(cols["x"].size, rfin), 0.5, subpix=5)
    cols["hfd"] = np.where(np.isfinite(r50), 2.0 * np.asarray(r50, dtype=np.float64), cols["hfd"])
    # Drop a detection lying within 1 px of a brighter one (split or doubled objects).
    if cols["x"].size > 1:
        pairs = cKDTree(np.column_stack([cols["x"], cols["y"]])).query_pairs(
            1.0, output_type="ndarray"
        )
        dup = np.zeros(cols["x"].size, dtype=bool)
        if len(pairs):
            dup[pairs.max(axis=1)] = True
        apply(~dup, "duplicate")
    # Isophotal moments are truncated at the threshold; never report less than the HFD.
    fwhm_mom = _GAUSS_SIGMA_TO_FWHM * np.sqrt((cols["a"] ** 2 + cols["b"] ** 2) / 2.0)
    table = StarTable(
        x=cols["x"],
        y=cols["y"],
        flux=cols["flux"],
        peak=cols["peak"],
        fwhm=np.maximum(fwhm_mom, cols["hfd"]),
        hfd=cols["hfd"],
        a=cols["a"],
        b=cols["b"],
        theta=cols["theta"],
        ellipticity=cols["ell"],
        flags=cols["flag"],
        shape=(ny, nx),
        background_level=level,
        background_rms=rms,
        n_rejected=rejected,
    )
    logger.debug("detected %d stars (rejected %s)", len(table), rejected)
    return table
