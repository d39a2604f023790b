"""Cosmetic correction: find hot and cold (dead) pixels and replace them from neighbours.

Hot pixels are found in the master dark (thermal signal far above the local median), cold
pixels in the master flat (response far below the local flat level).  Defects are replaced by
the median of the non-defect neighbours *of the same CFA colour*: in a Bayer mosaic those sit
at offsets of two pixels, ``(±2, 0), (0, ±2), (±2, ±2)``; in a mono image they are the eight
adjacent pixels.  Nothing here needs to know which colour is where.

Optionally, isolated hot pixels that are not in the dark (cosmic-ray hits, warm pixels) can be
found in each calibrated light by :func:`find_isolated_hot`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .cosmetic_kernels import (
    _blur_excess_samples,
    _fill_index,
    _flagged_index,
    _isolated_kernel,
    _isolated_sparse_kernel,
    _local_median_kernel,
    _replace_listed,
)

__all__ = [
    "DefectMap",
    "correct_defects",
    "correct_defects_inplace",
    "estimate_noise",
    "find_cold_pixels",
    "find_defects",
    "find_hot_pixels",
    "find_isolated_hot",
    "isolated_hot",
    "local_median",
    "median_blur",
    "replace_listed",
    "replace_masked",
    "robust_sigma",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _as_2d_float(image: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 2:
        msg = f"{name}: expected a 2-D [y, x] image, got shape {arr.shape}; pass one plane"
        raise ValueError(msg)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _odd_stride(size: int, max_samples: int) -> int:
    """Sampling stride of a raveled image: at least ``size / max_samples`` and odd.

    An odd stride alternates the column (and row) parity of the samples, so all four
    sub-lattices of a Bayer mosaic are sampled even when the width is even.
    """
    step = max(1, int(np.ceil(size / max_samples)))
    return step if step % 2 or step == 1 else step + 1


def robust_sigma(values: np.ndarray, max_samples: int = 1_000_000) -> float:
    """Gaussian-equivalent standard deviation from the median absolute deviation.

    Parameters
    ----------
    values : numpy.ndarray
        Any array; non-finite values are ignored.
    max_samples : int
        Estimate on at most this many regularly strided samples (odd stride, so that
        every CFA sub-lattice contributes).

    Returns
    -------
    float
        ``1.4826 * MAD`` (0.0 when there are no finite values).
    """
    v = np.asarray(values).ravel()
    if v.size > max_samples:
        v = v[:: _odd_stride(v.size, max_samples)]
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0
    med = np.median(v)
    return float(1.4826 * np.median(np.abs(v - med)))


def estimate_noise(image: np.ndarray, cfa: bool, max_samples: int = 1_000_000) -> float:
    """Robust per-pixel noise of an image, insensitive to stars, gradients and the CFA.

    Uses the second difference between same-colour pixels along rows,
    ``d = v[x] - (v[x-s] + v[x+s]) / 2`` with ``s = 2`` in a mosaic and 1 otherwise, whose
    variance is ``1.5 sigma^2`` for white noise; ``sigma = MAD(d) * 1.4826 / sqrt(1.5)``.

    Parameters
    ----------
    image : numpy.ndarray
        2-D ``[y, x]`` image (or ``[c, y, x]``: all planes pooled).
    cfa : bool
        True for a Bayer mosaic.
    max_samples : int
        Rows are subsampled to about this many differences.

    Returns
    -------
    float
        Noise in the image's units.
    """
    img = np.asarray(image, dtype=np.float32)
    img = img.reshape(-1, img.shape[-1])
    s = 2 if cfa else 1
    if img.shape[1] <= 2 * s:
        return 0.0
    stride = max(1, int(np.ceil(img.size / max_samples)))
    rows = img[::stride]
    d = rows[:, s:-s] - 0.5 * (rows[:, : -2 * s] + rows[:, 2 * s :])
    return robust_sigma(d) / float(np.sqrt(1.5))


def local_median(image: np.ndarray, cfa: bool, radius: int = 1) -> np.ndarray:
    """Median of the same-colour neighbours of every pixel, the pixel itself excluded.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image ``[y, x]`` (mono or CFA mosaic).  NaN samples are ignored.
    cfa : bool
        True for a Bayer mosaic: neighbours are taken at a step of 2 pixels.
    radius : int
        Window half-size in same-colour samples (1 gives the 8 nearest neighbours).

    Returns
    -------
    numpy.ndarray
        float32 image of the same shape.
    """
    img = _as_2d_float(image, "local_median")
    return _local_median_kernel(img, 2 if cfa else 1, int(radius))


def median_blur(image: np.ndarray, cfa: bool, radius: int = 1) -> np.ndarray:
    """Same-colour median filter (window of ``2r+1`` samples a side, centre included).

    OpenCV's ``medianBlur`` on each CFA sub-lattice (or on the whole mono image), so it is
    fast on large frames; non-finite samples are replaced by the plane's median first.
    Unlike :func:`local_median` the pixel itself is part of the window, which for defect
    detection only shifts the reference by a fraction of the noise.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image ``[y, x]``.
    cfa : bool
        True for a Bayer mosaic (each 2x2 sub-lattice filtered on its own).
    radius : int
        1 (3x3 samples) or 2 (5x5 samples).

    Returns
    -------
    numpy.ndarray
        float32 image of the same shape.
    """
    import cv2

    img = _as_2d_float(image, "median_blur")
    if radius not in (1, 2):
        msg = f"median_blur: radius must be 1 or 2, got {radius}"
        raise ValueError(msg)
    ksize = 2 * radius + 1
    out = np.empty_like(img)
    if cfa:
        cells = [(slice(i, None, 2), slice(j, None, 2)) for i in range(2) for j in range(2)]
    else:
        cells = [(slice(None), slice(None))]
    for sy, sx in cells:
        plane = np.ascontiguousarray(img[sy, sx])
        if min(plane.shape) < ksize:  # too small for OpenCV: exact kernel
            out[sy, sx] = _local_median_kernel(plane, 1, radius)
            continue
        bad = ~np.isfinite(plane)
        if bad.any():
            # NB: a mono plane is the caller's own array, filled in place; the pipeline's
            # calibrated lights depend on that today (their NaN become the plane median)
            plane[bad] = np.median(plane[~bad]) if (~bad).any() else 0.0
        out[sy, sx] = cv2.medianBlur(plane, ksize)
    return out


# ---------------------------------------------------------------------------------------------
# defect maps
# ---------------------------------------------------------------------------------------------


@dataclass
class DefectMap:
    """Boolean masks of defective pixels, ``[y, x]``.

    Attributes
    ----------
    hot : numpy.ndarray
        Pixels with excess dark current (from the master dark).
    cold : numpy.ndarray
        Dead or low-response pixels (from the master flat).
    cfa : bool
        Whether the masks belong to a Bayer mosaic (corrected with same-colour neighbours).
    """

    hot: np.ndarray
    cold: np.ndarray
    cfa: bool = False

    @property
    def mask(self) -> np.ndarray:
        """Union of the hot and cold masks."""
        return self.hot | self.cold

    @property
    def n_hot(self) -> int:
        """Number of hot pixels."""
        return int(np.count_nonzero(self.hot))

    @property
    def n_cold(self) -> int:
        """Number of cold pixels."""
        return int(np.count_nonzero(self.cold))

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the masks."""
        return tuple(self.hot.shape)

    def __repr__(self) -> str:
        return (
            f"DefectMap(shape={self.shape}, hot={self.n_hot}, cold={self.n_cold}, cfa={self.cfa})"
        )


def find_hot_pixels(
    master_dark: np.ndarray,
    cfa: bool,
    sigma: float = 5.0,
    min_excess: float | None = None,
    n_frames: int | None = None,
) -> np.ndarray:
    """Hot pixels of a master dark: thermal signal far above the local same-colour median.

    A pixel is hot when its excess over the same-colour 3x3 median (:func:`median_blur`)
    exceeds ``sigma * s * sqrt(n_frames)`` and *min_excess*, where ``s`` is the robust (MAD)
    scatter of that excess over the image: ``s * sqrt(n_frames)`` approximates the noise of a
    *single* dark, so the threshold does not drop (and flag ever weaker warm pixels) as more
    darks are combined.

    Parameters
    ----------
    master_dark : numpy.ndarray
        2-D master dark (thermal signal, or dark including the offset: only local
        differences matter).
    cfa : bool
        True for a Bayer mosaic.
    sigma : float
        Threshold in robust standard deviations.
    min_excess : float or None
        Further absolute threshold (the thermal level), ADU above the local median.
    n_frames : int or None
        Number of darks in the master (1 when unknown).

    Returns
    -------
    numpy.ndarray
        Boolean mask.
    """
    dark = _as_2d_float(master_dark, "find_hot_pixels")
    excess = dark - median_blur(dark, cfa)
    s = robust_sigma(excess)
    thr = max(sigma * s * float(np.sqrt(max(1, n_frames or 1))), float(min_excess or 0.0))
    hot = np.isfinite(excess) & (excess > thr)
    logger.debug("hot pixels: scatter %.3g ADU, threshold %.3g ADU, %d found", s, thr, hot.sum())
    return hot


def find_cold_pixels(
    master_flat: np.ndarray, cfa: bool, fraction: float = 0.6, radius: int = 2
) -> np.ndarray:
    """Cold (dead, low-response) pixels of a master flat.

    A pixel is cold when its flat value is below ``fraction`` times the local same-colour
    median of the flat (a window of ``2*radius+1`` same-colour samples a side), or is not a
    positive finite number.  The local median follows vignetting and dust shadows, so only
    pixel-scale defects are flagged.

    Parameters
    ----------
    master_flat : numpy.ndarray
        2-D master flat (any normalisation).
    cfa : bool
        True for a Bayer mosaic.
    fraction : float
        Relative response below which a pixel is cold (0.5-0.7 is usual).
    radius : int
        Half-size of the local window in same-colour samples (1 or 2).

    Returns
    -------
    numpy.ndarray
        Boolean mask.
    """
    flat = _as_2d_float(master_flat, "find_cold_pixels")
    level = median_blur(flat, cfa, radius=min(max(int(radius), 1), 2))
    bad = ~np.isfinite(flat) | (flat <= 0)
    with np.errstate(invalid="ignore"):
        cold = bad | (flat < fraction * level)
    return cold


def find_defects(
    master_dark: np.ndarray | None,
    master_flat: np.ndarray | None,
    cfa: bool,
    hot_sigma: float = 5.0,
    hot_min_excess: float | None = None,
    cold_fraction: float = 0.6,
    n_dark_frames: int | None = None,
    light_noise: float | None = None,
    light_dark_ratio: float = 1.0,
    hot_noise_factor: float = 10.0,
) -> DefectMap:
    """Build a :class:`DefectMap` from a master dark and/or a master flat.

    Dark subtraction already removes a hot pixel's thermal signal; replacing it from its
    neighbours only pays off when the subtraction is unreliable (strong thermal signal:
    shot noise, scaling error, saturation) and loses detail on stars otherwise.  Give
    *light_noise* (e.g. :func:`estimate_noise` of a calibrated light) to keep only hot
    pixels whose thermal signal in the light exceeds ``hot_noise_factor * light_noise``.

    Parameters
    ----------
    master_dark : numpy.ndarray or None
        2-D master dark (hot pixels); ``None`` finds no hot pixels.
    master_flat : numpy.ndarray or None
        2-D master flat (cold pixels); ``None`` finds no cold pixels.
    cfa : bool
        True for a Bayer mosaic.
    hot_sigma, hot_min_excess, n_dark_frames
        See :func:`find_hot_pixels`.
    cold_fraction : float
        See :func:`find_cold_pixels`.
    light_noise : float or None
        Noise of the lights, ADU.
    light_dark_ratio : float
        Factor that scales the master dark to the lights (exposure ratio).
    hot_noise_factor : float
        Hot pixels must exceed this many light-noise sigmas (with *light_noise*).

    Returns
    -------
    DefectMap
    """
    shape = None
    for arr in (master_dark, master_flat):
        if arr is not None:
            if shape is not None and np.shape(arr) != shape:
                msg = (
                    f"find_defects: master dark {np.shape(master_dark)} and master flat "
                    f"{np.shape(master_flat)} differ in shape; use masters from the same camera"
                )
                raise ValueError(msg)
            shape = np.shape(arr)
    if shape is None:
        msg = "find_defects: give a master dark and/or a master flat"
        raise ValueError(msg)
    if light_noise is not None and light_noise > 0 and light_dark_ratio > 0:
        from_light = hot_noise_factor * light_noise / light_dark_ratio
        hot_min_excess = max(hot_min_excess or 0.0, from_light)
    hot = (
        find_hot_pixels(master_dark, cfa, hot_sigma, hot_min_excess, n_dark_frames)
        if master_dark is not None
        else np.zeros(shape, dtype=bool)
    )
    cold = (
        find_cold_pixels(master_flat, cfa, cold_fraction)
        if master_flat is not None
        else np.zeros(shape, dtype=bool)
    )
    defects = DefectMap(hot=hot, cold=cold, cfa=cfa)
    logger.info("defect map: %d hot, %d cold pixels", defects.n_hot, defects.n_cold)
    return defects


def correct_defects(image: np.ndarray, mask: np.ndarray, cfa: bool) -> np.ndarray:
    """Replace masked pixels by the median of their non-defect same-colour neighbours.

    Parameters
    ----------
    image : numpy.ndarray
        ``[y, x]`` image (mono or CFA mosaic) or ``[c, y, x]`` colour image (each plane is
        corrected on its own with adjacent neighbours).
    mask : numpy.ndarray
        Boolean ``[y, x]`` mask of pixels to replace.
    cfa : bool
        True when *image* is a Bayer mosaic (neighbours at a step of 2 pixels).

    Returns
    -------
    numpy.ndarray
        A corrected float32 copy; the input is not modified.
    """
    img = np.array(image, dtype=np.float32, copy=True, order="C")
    correct_defects_inplace(img, mask, cfa)
    return img


def correct_defects_inplace(image: np.ndarray, mask: np.ndarray, cfa: bool) -> int:
    """:func:`correct_defects` on *image* itself (float32, C-contiguous), without a copy.

    Parameters
    ----------
    image : numpy.ndarray
        float32 C-contiguous ``[y, x]`` or ``[c, y, x]`` image, modified in place.
    mask : numpy.ndarray
        Boolean ``[y, x]`` mask of pixels to replace.
    cfa : bool
        True when *image* is a Bayer mosaic.

    Returns
    -------
    int
        Number of masked pixels left unchanged (no usable neighbour).
    """
    return replace_masked(image, mask, cfa)[1]


def replace_masked(
    img: np.ndarray, mask: np.ndarray, cfa: bool, also: np.ndarray | None = None
) -> tuple[int, int]:
    """:func:`correct_defects_inplace`, also returning how many pixels the mask holds.

    Parameters
    ----------
    img : numpy.ndarray
        float32 C-contiguous ``[y, x]`` or ``[c, y, x]`` image, modified in place.
    mask : numpy.ndarray
        Boolean ``[y, x]`` mask of pixels to replace.
    cfa : bool
        True when *img* is a Bayer mosaic.
    also : numpy.ndarray or None
        A second mask of pixels to replace (e.g. the cold pixels, with the hot ones in
        *mask*), so that their union is never built.

    Returns
    -------
    n_masked, n_failed : int
        Masked pixels, and those of them left unchanged (no usable neighbour).
    """
    if img.dtype != np.float32 or not img.flags.c_contiguous or not img.flags.writeable:
        msg = "correct_defects_inplace: the image must be a writeable C-contiguous float32 array"
        raise ValueError(msg)
    masks = []
    for m in (mask, mask if also is None else also):
        m = np.asarray(m, dtype=bool)
        if m.shape != img.shape[-2:]:
            msg = f"correct_defects: mask shape {m.shape} does not match image {img.shape}"
            raise ValueError(msg)
        masks.append(np.ascontiguousarray(m))
    index = _masked_index(*masks)
    planes = [img] if img.ndim == 2 else [img[c] for c in range(img.shape[0])]
    step = 2 if (cfa and img.ndim == 2) else 1
    n_failed = 0
    if index.size:
        for plane in planes:
            n_failed += int(_replace_listed(plane, *masks, index, step))
    if n_failed:
        logger.warning(
            "%d defective pixels have no usable neighbour and were left as they are", n_failed
        )
    return int(index.size), n_failed


def _masked_index(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Raveled indices of the pixels of ``a | b`` (C-contiguous boolean masks), in order."""
    a, b = a.reshape(-1), b.reshape(-1)
    wa = a.view(np.uint8)[: a.size - a.size % 8].view(np.uint64)
    wb = b.view(np.uint8)[: b.size - b.size % 8].view(np.uint64)
    index = np.empty(min(a.size, 1 << 16), dtype=np.int64)  # enough for sparse defects
    n = _fill_index(a, wa, b, wb, index)
    if n > index.size:
        index = np.empty(n, dtype=np.int64)
        _fill_index(a, wa, b, wb, index)
    return index[:n]


def replace_listed(image: np.ndarray, mask: np.ndarray, index: np.ndarray, cfa: bool) -> int:
    """:func:`correct_defects_inplace` for a 2-D *image* whose masked pixels are listed.

    Parameters
    ----------
    image : numpy.ndarray
        float32 C-contiguous ``[y, x]`` image, modified in place.
    mask : numpy.ndarray
        Boolean ``[y, x]`` mask (neighbours that are masked are not used).
    index : numpy.ndarray
        Raveled indices of all the masked pixels (as :func:`numpy.flatnonzero` of *mask*).
    cfa : bool
        True when *image* is a Bayer mosaic.

    Returns
    -------
    int
        Number of listed pixels left unchanged (no usable neighbour).
    """
    if image.dtype != np.float32 or not image.flags.c_contiguous or image.ndim != 2:
        msg = "replace_listed: the image must be a 2-D C-contiguous float32 array"
        raise ValueError(msg)
    if mask.shape != image.shape:
        msg = f"replace_listed: mask shape {mask.shape} does not match image {image.shape}"
        raise ValueError(msg)
    index = np.asarray(index, dtype=np.int64)
    step = 2 if cfa else 1
    n_failed = int(_replace_listed(image, mask, mask, index, step)) if index.size else 0
    if n_failed:
        logger.warning(
            "%d defective pixels have no usable neighbour and were left as they are", n_failed
        )
    return n_failed


def find_isolated_hot(
    image: np.ndarray,
    cfa: bool,
    sigma: float = 8.0,
    iso_frac: float = 0.25,
    max_samples: int = 250_000,
) -> np.ndarray:
    """Isolated hot pixels in a calibrated light (cosmic-ray hits, warm pixels not in the dark).

    The excess of each pixel over the same-colour 3x3 median (:func:`median_blur`) is compared
    with the robust scatter ``s`` of that excess.  A pixel is flagged when its excess exceeds
    ``sigma * s`` and the excess of every adjacent pixel is below ``iso_frac`` times its own:
    stars light up adjacent pixels too, a hot pixel does not.

    Parameters
    ----------
    image : numpy.ndarray
        2-D calibrated light ``[y, x]``.
    cfa : bool
        True for a Bayer mosaic.
    sigma : float
        Detection threshold in robust standard deviations.
    iso_frac : float
        Maximum ratio of an adjacent pixel's excess to the candidate's.
    max_samples : int
        The scatter is measured on about this many strided pixels (its statistical error,
        about ``1.2 / sqrt(max_samples)`` relative, moves an 8-sigma threshold by 0.02
        sigma at the default).

    Returns
    -------
    numpy.ndarray
        Boolean mask.
    """
    return isolated_hot(image, cfa, sigma, iso_frac, max_samples)[0]


def isolated_hot(
    image: np.ndarray,
    cfa: bool,
    sigma: float = 8.0,
    iso_frac: float = 0.25,
    max_samples: int = 250_000,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`find_isolated_hot`, also returning the raveled indices of the flagged pixels.

    A finite image is searched without blurring it whole (:func:`_isolated_sparse_kernel`):
    the flags are the same as with the full :func:`median_blur`, which is still used for
    images with non-finite pixels or a same-colour plane smaller than 3x3.

    Returns
    -------
    mask, index : numpy.ndarray
        Boolean mask and the ``int64`` raveled indices of its True pixels.
    """
    img = _as_2d_float(image, "find_isolated_hot")
    step = 2 if cfa else 1
    stride = _odd_stride(img.size, max_samples)
    if min(img.shape) // step >= 3:
        s = robust_sigma(_blur_excess_samples(img, step, stride))
        thr = float(sigma * s)
        if 0.0 < thr < float(np.finfo(np.float32).max):
            thr32 = np.float32(thr)
            if float(thr32) > thr:
                thr32 = np.nextafter(thr32, np.float32(0.0))
            out = np.zeros(img.shape, dtype=bool)  # calloc: only flagged pages are touched
            n_row, n_bad = _isolated_sparse_kernel(img, step, thr, thr32, float(iso_frac), out)
            if n_bad == 0:
                return out, _flagged_index(out, n_row)
    med = median_blur(img, cfa)
    s = robust_sigma(img.ravel()[::stride] - med.ravel()[::stride])
    if s <= 0:
        return np.zeros(img.shape, dtype=bool), np.zeros(0, dtype=np.int64)
    out = _isolated_kernel(img, med, float(sigma * s), float(iso_frac))
    return out, np.flatnonzero(out)
