"""Translation by phase correlation: the fallback when star matching fails.

Both images are background-subtracted (sep mesh) and clipped to suppress the
brightest stars and hot pixels dominating the spectrum; for the correlation only
they are tapered with a Hann window, and
``skimage.registration.phase_cross_correlation`` finds the shift with sub-pixel
upsampling.  The result is checked: after shifting, the two unwindowed images must
correlate (Pearson r above ``min_correlation``) over their overlap, else the shift
is rejected.  :func:`~astrostack.register.register.register_frame` also checks the
shift against the stars when there are some.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from skimage.registration import phase_cross_correlation

from .stars import background

__all__ = ["PhaseResult", "phase_shift", "prepare_for_phase"]

logger = logging.getLogger(__name__)


@dataclass
class PhaseResult:
    """A translation found by phase correlation.

    Attributes
    ----------
    dx, dy : float
        Shift mapping frame ``(x, y)`` to reference ``(x + dx, y + dy)``.
    correlation : float
        Pearson correlation of the prepared images over the overlap after the shift.
    """

    dx: float
    dy: float
    correlation: float

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 translation matrix."""
        return np.array([[1.0, 0.0, self.dx], [0.0, 1.0, self.dy], [0.0, 0.0, 1.0]])


def prepare_for_phase(image: np.ndarray, clip_sigma: float = 20.0) -> np.ndarray:
    """Background-subtract and clip a 2-D image for phase correlation.

    The Hann window is applied inside :func:`phase_shift`, so that the overlap
    check there sees the unwindowed images.
    """
    data = np.asarray(image, dtype=np.float32)
    bkg, _, rms = background(data)
    sub = np.nan_to_num(data - bkg, nan=0.0)
    rms = rms if np.isfinite(rms) and rms > 0 else float(np.std(sub)) or 1.0
    return np.clip(sub, -3.0 * rms, clip_sigma * rms).astype(np.float32)


def _hann(shape: tuple[int, int]) -> np.ndarray:
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1])).astype(np.float32)


def _overlap_correlation(a: np.ndarray, b: np.ndarray, dx: int, dy: int) -> float:
    # b is the frame, a the reference: frame pixel (x, y) lands on reference (x + dx, y + dy)
    ny, nx = a.shape
    ys_a = slice(max(dy, 0), min(ny, ny + dy))
    xs_a = slice(max(dx, 0), min(nx, nx + dx))
    ys_b = slice(max(-dy, 0), min(ny, ny - dy))
    xs_b = slice(max(-dx, 0), min(nx, nx - dx))
    pa, pb = a[ys_a, xs_a].ravel(), b[ys_b, xs_b].ravel()
    if pa.size < 64:
        return 0.0
    pa = pa - pa.mean()
    pb = pb - pb.mean()
    den = float(np.sqrt((pa * pa).sum() * (pb * pb).sum()))
    return float((pa * pb).sum() / den) if den > 0 else 0.0


def phase_shift(
    image: np.ndarray,
    reference: np.ndarray,
    *,
    upsample: int = 20,
    min_correlation: float = 0.2,
    prepared: bool = False,
) -> PhaseResult | None:
    """Translation from *image* (frame) to *reference* by phase correlation.

    Parameters
    ----------
    image, reference : ndarray
        2-D images of the same shape.
    upsample : int
        Sub-pixel upsampling factor (precision ``1 / upsample`` px).
    min_correlation : float
        Minimum overlap correlation to accept the shift.
    prepared : bool
        Both inputs already went through :func:`prepare_for_phase`.

    Returns
    -------
    PhaseResult or None
        ``None`` if the shapes differ or the correlation is too weak.
    """
    a = np.asarray(reference, dtype=np.float32)
    b = np.asarray(image, dtype=np.float32)
    if a.shape != b.shape or a.ndim != 2:
        logger.debug("phase correlation needs equal 2-D shapes (%s vs %s)", a.shape, b.shape)
        return None
    if not prepared:
        a, b = prepare_for_phase(a), prepare_for_phase(b)
    if not (np.any(a) and np.any(b)):
        return None
    win = _hann(a.shape)
    shift, _, _ = phase_cross_correlation(
        a * win, b * win, upsample_factor=upsample, normalization="phase"
    )
    dy, dx = float(shift[0]), float(shift[1])
    corr = _overlap_correlation(a, b, round(dx), round(dy))
    logger.debug("phase correlation shift (%.2f, %.2f), r = %.3f", dx, dy, corr)
    if not np.isfinite(corr) or corr < min_correlation:
        return None
    return PhaseResult(dx=dx, dy=dy, correlation=corr)
