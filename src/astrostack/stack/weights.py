"""Per-frame weights for the integration, combinable as a product (``'noise*fwhm'``).

===========  ========================================================================
``none``     1
``exposure`` exposure time (seconds)
``noise``    ``1 / sigma^2`` of the *normalised* background noise: the frame's noise times
             its normalisation scale, per channel (inverse-variance weighting)
``fwhm``     ``1 / FWHM^2`` (sharper frames count more)
``stars``    number of detected stars (a transparency proxy)
===========  ========================================================================

FWHM, star counts and exposures come from the caller per frame (``frame_info``: a
mapping or an object with ``exposure``, ``fwhm``, ``stars``/``n_stars``).  Weights are
returned relative to the reference frame (its weight is 1 for every channel).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["WEIGHTINGS", "compute_weights", "parse_weighting"]

logger = logging.getLogger(__name__)

WEIGHTINGS = ("none", "exposure", "noise", "fwhm", "stars")
_INFO_KEYS = {"exposure": ("exposure",), "fwhm": ("fwhm",), "stars": ("stars", "n_stars")}


def parse_weighting(spec: str) -> list[str]:
    """The factors of a weighting spec: ``'noise*fwhm'`` -> ``['noise', 'fwhm']``."""
    parts = [p.strip().lower() for p in str(spec).replace("+", "*").split("*") if p.strip()]
    bad = [p for p in parts if p not in WEIGHTINGS]
    if bad or not parts:
        msg = f"weighting {spec!r} not understood; combine {', '.join(WEIGHTINGS)} with '*'"
        raise ValueError(msg)
    return [p for p in parts if p != "none"]


def _info_value(info: Any, factor: str) -> float | None:
    for key in _INFO_KEYS[factor]:
        value = info.get(key) if isinstance(info, Mapping) else getattr(info, key, None)
        if value is not None:
            return float(value)
    return None


def compute_weights(
    spec: str,
    noise: np.ndarray,
    scales: np.ndarray,
    frame_info: Sequence[Any] | None = None,
    reference: int = 0,
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """Per-frame, per-channel weights ``[N, C]`` relative to the reference frame.

    Parameters
    ----------
    spec : str
        e.g. ``'noise'``, ``'noise*fwhm'``, ``'none'``.
    noise : ndarray
        ``[N, C]`` background noise of each frame before normalisation.
    scales : ndarray
        ``[N, C]`` normalisation scales (the noise is multiplied by them).
    frame_info : sequence, optional
        One mapping/object per frame with ``exposure``, ``fwhm``, ``stars``.
    reference : int
        Index of the reference frame.
    names : sequence of str, optional
        Frame names for messages.

    Raises
    ------
    ValueError
        When a factor needs per-frame information that is missing or not positive.
    """
    noise = np.asarray(noise, dtype=np.float64)
    n, channels = noise.shape
    weights = np.ones((n, channels))
    for factor in parse_weighting(spec):
        if factor == "noise":
            sigma = noise * np.asarray(scales, dtype=np.float64)
            if not np.all(np.isfinite(sigma) & (sigma > 0)):
                msg = "noise weighting: a frame has zero or undefined noise; use weighting='none'"
                raise ValueError(msg)
            weights *= 1.0 / sigma**2
            continue
        if frame_info is None or len(frame_info) != n:
            msg = f"{factor} weighting needs frame_info with one entry per frame ({n})"
            raise ValueError(msg)
        values = np.empty(n)
        for i, info in enumerate(frame_info):
            v = _info_value(info, factor)
            if v is None or not np.isfinite(v) or v <= 0:
                name = names[i] if names is not None else f"frame {i}"
                msg = f"{name}: {factor} weighting needs a positive '{factor}' value, got {v}"
                raise ValueError(msg)
            values[i] = v
        if factor == "fwhm":
            values = 1.0 / values**2
        weights *= values[:, None]
    weights /= weights[reference][None, :]
    logger.debug("weights (%s): %s", spec, weights[:, 0])
    return weights.astype(np.float64)
