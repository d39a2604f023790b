"""Compare a stack with the ground truth of a simulated session (demo summary, tests)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter, maximum_filter

from ..register import warp

__all__ = ["TruthComparison", "compare_to_truth"]

logger = logging.getLogger(__name__)


@dataclass
class TruthComparison:
    """How well a stack reproduces the true sky, after a per-channel linear fit.

    Attributes
    ----------
    correlation : float
        Pearson correlation between the stack and the true sky (mean over channels).
    snr : float
        ``std(fitted truth) / std(stack - fitted truth)``: signal over residual noise.
    slope, offset : list of float
        The fit ``stack = slope * truth + offset`` per channel.
    n_pixels : int
        Pixels compared (finite in both, inside the stack's full coverage).
    """

    correlation: float
    snr: float
    slope: list[float]
    offset: list[float]
    n_pixels: int


def _reference_matrix(truth: Any, reference_file: str) -> np.ndarray:
    name = Path(reference_file).name
    for lt in truth.lights:
        if Path(lt.file).name == name:
            return np.asarray(lt.matrix, dtype=np.float64)
    msg = f"{reference_file}: not a light of this simulated session; cannot compare to truth"
    raise ValueError(msg)


def compare_to_truth(
    stack: np.ndarray,
    truth: Any,
    reference_file: str,
    coverage: np.ndarray | None = None,
    superpixel: bool = False,
    border: int = 8,
    fwhm: float | None = None,
    exclude_brightest: float = 0.001,
) -> TruthComparison:
    """Warp the true sky onto the stack's grid and fit it to the stack.

    Parameters
    ----------
    stack : ndarray
        ``[y, x]`` or ``[c, y, x]`` stacked image (reference frame's grid).
    truth : astrostack.simulate.Truth
        Ground truth with its ``sky`` map loaded.
    reference_file : str
        File name of the light the stack is registered on.
    coverage : ndarray, optional
        Frames per pixel; only pixels covered by the maximum count are compared.
    superpixel : bool
        The stack is half-resolution (CFA superpixel mode).
    border : int
        Pixels ignored along the edges.
    fwhm : float, optional
        Star FWHM of the stack in sensor pixels.  The true sky (stars at the simulator's
        ``truth_fwhm``) is blurred by a Gaussian to match it, so that seeing, which no
        stack can undo, is not counted as an error.
    exclude_brightest : float
        Fraction of the brightest true-sky pixels excluded with a 7-pixel margin:
        star cores that saturate the sensor cannot be reproduced by any stack.
    """
    if truth.sky is None:
        msg = "compare_to_truth: the truth has no sky map; load it with maps=True"
        raise ValueError(msg)
    m_ref = _reference_matrix(truth, reference_file)
    to_stack = np.linalg.inv(m_ref)  # truth-reference pixels -> our reference frame pixels
    if superpixel:
        s = np.array([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])
        to_stack = np.linalg.inv(s) @ to_stack  # full-resolution truth -> superpixel grid
    sky = np.asarray(truth.sky, dtype=np.float32)
    truth_fwhm = float(getattr(truth.config, "truth_fwhm", 0.0) or 0.0)
    if fwhm is not None and fwhm > truth_fwhm > 0:
        sigma = np.sqrt(fwhm**2 - truth_fwhm**2) / 2.3548
        axes = (0, sigma, sigma) if sky.ndim == 3 else sigma
        sky = gaussian_filter(sky, axes).astype(np.float32)
    img = stack if stack.ndim == 3 else stack[None]
    sky3 = sky if sky.ndim == 3 else sky[None]
    if sky3.shape[0] != img.shape[0]:
        sky3 = np.repeat(sky3.mean(axis=0, keepdims=True), img.shape[0], axis=0)
    model = warp(sky3, to_stack, img.shape[-2:], method="bicubic")
    good = np.all(np.isfinite(img), axis=0) & np.all(np.isfinite(model), axis=0)
    if coverage is not None:
        cov = coverage if coverage.ndim == 2 else coverage.min(axis=0)
        good &= cov >= cov.max()
    if exclude_brightest > 0 and good.any():
        ref_plane = model.mean(axis=0)
        thr = np.quantile(ref_plane[good], 1.0 - exclude_brightest)
        good &= ~maximum_filter(np.nan_to_num(ref_plane) > thr, size=7)
    if border:
        edge = np.zeros_like(good)
        edge[border:-border, border:-border] = True
        good &= edge
    corrs, snrs, slopes, offsets = [], [], [], []
    for c in range(img.shape[0]):
        x = model[c][good].astype(np.float64)
        y = img[c][good].astype(np.float64)
        a, b = np.polyfit(x, y, 1)
        fit = a * x + b
        resid = y - fit
        corrs.append(float(np.corrcoef(x, y)[0, 1]))
        snrs.append(float(np.std(fit) / max(np.std(resid), 1e-12)))
        slopes.append(float(a))
        offsets.append(float(b))
    return TruthComparison(
        correlation=float(np.mean(corrs)),
        snr=float(np.mean(snrs)),
        slope=slopes,
        offset=offsets,
        n_pixels=int(good.sum()),
    )
