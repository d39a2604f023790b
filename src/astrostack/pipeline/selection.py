"""Frame selection: robust outlier tests on the quality metrics, and user limits.

Every test compares a frame with the session (median and 1.4826 x MAD of the
metric over the group) and also requires a minimum effect size, so a very
homogeneous session (tiny MAD) does not reject frames for negligible
differences.  Each excluded frame gets one or more human-readable reasons.

Tests (``SelectionConfig.enabled``):

- clouds: star count below ``min_relative_stars`` x median, or transparency
  (star flux) falling, or a background jump together with dimmer stars (a
  brighter sky alone is left to normalisation and weighting);
- trailing: eccentricity a high outlier, at least 0.15 above the median and
  stars at least 12 % more elongated (axis ratio) than the median's, or above
  ``max_eccentricity`` while the median is below it;
- defocus: FWHM a high outlier and at least 25 % above the median;
- satellite-flooded: far more detections than usual (more than 2.5 x the
  median and 50 more: trails break into spurious sources), or a trail count
  reported by the quality measurement.

User limits: ``max_fwhm``, ``min_stars`` and ``keep_best`` (best quality score
first, among the frames that pass everything else).

The reference frame (registration grid and stack normalisation) is chosen by
:func:`choose_reference`: stars per PSF area, with a tolerance band, and the frame
nearest the middle of the session among near-ties.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .config import SelectionConfig

__all__ = ["Selection", "choose_reference", "quality_score", "robust_z", "select_frames"]

logger = logging.getLogger(__name__)


def robust_z(values: np.ndarray, floor: float = 0.0) -> tuple[np.ndarray, float, float]:
    """Robust z-scores of *values* (NaN ignored): ``(v - median) / (1.4826 MAD)``.

    Parameters
    ----------
    values : array
        One metric per frame.
    floor : float
        Lower bound on the robust sigma, so identical values do not give infinite z.

    Returns
    -------
    z, median, sigma : ndarray, float, float
        z is NaN where the value is NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    good = np.isfinite(v)
    if not good.any():
        return np.full(v.shape, np.nan), math.nan, math.nan
    med = float(np.median(v[good]))
    sigma = 1.4826 * float(np.median(np.abs(v[good] - med)))
    sigma = max(sigma, floor, 1e-12)
    z = (v - med) / sigma
    return z, med, sigma


def quality_score(metrics: Mapping[str, np.ndarray]) -> np.ndarray:
    """A relative quality score per frame (higher is better, ~1 for a typical frame).

    Uses what is available: FWHM (sharper is better, squared), noise (lower is
    better), star count or transparency (higher is better) and eccentricity.
    A ``'score'`` metric from the quality measurement is used directly when present.
    """
    n = len(next(iter(metrics.values())))
    if "score" in metrics and np.isfinite(np.asarray(metrics["score"], float)).all():
        return np.asarray(metrics["score"], dtype=np.float64)
    score = np.ones(n)

    def ratio(name: str, power: float) -> None:
        nonlocal score
        if name not in metrics:
            return
        v = np.asarray(metrics[name], dtype=np.float64)
        good = np.isfinite(v) & (v > 0)
        if not good.any():
            return
        med = np.median(v[good])
        r = np.where(good, v / med, np.nan)
        score = score * np.where(np.isfinite(r), r**power, 0.0)

    ratio("fwhm", -2.0)
    ratio("noise", -1.0)
    if "transparency" in metrics:
        ratio("transparency", 1.0)
    else:
        ratio("n_stars", 0.5)
    if "eccentricity" in metrics:
        e = np.nan_to_num(np.asarray(metrics["eccentricity"], float), nan=1.0)
        score = (
            score * np.clip(1.0 - e, 0.05, 1.0) / max(np.median(np.clip(1.0 - e, 0.05, 1)), 1e-6)
        )
    return score


@dataclass
class Selection:
    """Outcome of frame selection for one group of lights.

    Attributes
    ----------
    names : list of str
        Frame identifiers (file names), in table order.
    used : ndarray of bool
        True for frames that go into the stack.
    reasons : list of list of str
        Why each excluded frame was excluded (empty for used frames).
    score : ndarray
        Relative quality score (higher is better).
    """

    names: list[str]
    used: np.ndarray
    reasons: list[list[str]]
    score: np.ndarray
    stats: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def n_used(self) -> int:
        """Number of frames kept."""
        return int(np.count_nonzero(self.used))

    @property
    def excluded(self) -> dict[str, str]:
        """``{name: 'reason; reason'}`` of every excluded frame."""
        return {
            n: "; ".join(r)
            for n, u, r in zip(self.names, self.used, self.reasons, strict=True)
            if not u
        }

    def to_dict(self) -> dict:
        """JSON-able summary (for session.json)."""
        return {
            "used": [n for n, u in zip(self.names, self.used, strict=True) if u],
            "excluded": self.excluded,
            "score": {n: float(s) for n, s in zip(self.names, self.score, strict=True)},
            "stats": self.stats,
        }


def _metric(metrics: Mapping[str, Sequence[float]], name: str, n: int) -> np.ndarray | None:
    if name not in metrics:
        return None
    v = np.asarray(metrics[name], dtype=np.float64)
    if v.shape != (n,):
        msg = f"quality metric {name!r} has {v.size} values for {n} frames"
        raise ValueError(msg)
    return v


def select_frames(
    names: Sequence[str],
    metrics: Mapping[str, Sequence[float]],
    config: SelectionConfig | None = None,
    preexcluded: Mapping[str, str] | None = None,
) -> Selection:
    """Decide which frames to stack.

    Parameters
    ----------
    names : sequence of str
        Frame identifiers.
    metrics : mapping
        Per-frame metric arrays, any of ``fwhm`` (px), ``eccentricity`` (0-1),
        ``n_stars``, ``background`` (ADU), ``noise`` (ADU), ``transparency``
        (relative star flux), ``n_trails``, ``score``.  NaN = not measured.
    config : SelectionConfig, optional
        Tests and user limits (defaults when omitted).
    preexcluded : mapping, optional
        ``{name: reason}`` of frames already unusable (e.g. no stars found); they
        are excluded and do not count in the session statistics.

    Returns
    -------
    Selection
    """
    cfg = config or SelectionConfig()
    names = list(names)
    n = len(names)
    reasons: list[list[str]] = [[] for _ in range(n)]
    pre = dict(preexcluded or {})
    for i, name in enumerate(names):
        if name in pre:
            reasons[i].append(pre[name])
    valid = np.array([not r for r in reasons], dtype=bool)

    fwhm = _metric(metrics, "fwhm", n)
    ecc = _metric(metrics, "eccentricity", n)
    stars = _metric(metrics, "n_stars", n)
    bg = _metric(metrics, "background", n)
    noise = _metric(metrics, "noise", n)
    transp = _metric(metrics, "transparency", n)
    trails = _metric(metrics, "n_trails", n)
    k = cfg.outlier_sigma
    stats: dict[str, dict[str, float]] = {}

    def session_z(v: np.ndarray, floor: float, name: str) -> tuple[np.ndarray, float]:
        masked = np.where(valid, v, np.nan)
        z, med, sig = robust_z(masked, floor=floor)
        stats[name] = {"median": med, "sigma": sig}
        z = (v - med) / sig if np.isfinite(med) else np.full(n, np.nan)
        return z, med

    def flag(mask: np.ndarray, text_for) -> None:
        for i in np.flatnonzero(mask & valid):
            reasons[i].append(text_for(i))

    # Frames where detection failed (no finite FWHM or zero stars) are unusable.
    if stars is not None:
        flag(~(stars > 0), lambda i: "no stars detected")
        valid &= stars > 0
    if cfg.enabled and valid.sum() >= 3:
        noise_med = float(np.nanmedian(noise[valid])) if noise is not None else math.nan
        if stars is not None:
            z, med = session_z(stars, 1.0, "n_stars")
            flag(
                stars < cfg.min_relative_stars * med,
                lambda i: f"clouds: {stars[i]:.0f} stars vs median {med:.0f}",
            )
            flag(
                (z > k) & (stars > 2.5 * med) & (stars > med + 50),
                lambda i: f"satellite/trail flooded: {stars[i]:.0f} detections vs median {med:.0f}",
            )
        if transp is not None:
            z, med = session_z(transp, 0.02 * abs(np.nanmedian(transp)), "transparency")
            flag(
                (z < -k) & (transp < 0.7 * med),
                lambda i: f"clouds: transparency {transp[i] / med:.0%} of median",
            )
        if bg is not None:
            floor = 0.5 * noise_med if np.isfinite(noise_med) else 0.0
            z, med = session_z(bg, floor, "background")
            effect = 3.0 * noise_med if np.isfinite(noise_med) else 0.0
            # A brighter sky alone (moonrise, another night or site) is left to the
            # normalisation and weights; with dimmer stars it is a cloud lit from below.
            dimmer = np.zeros(n, dtype=bool)
            if stars is not None:
                dimmer |= stars < 0.85 * np.nanmedian(stars[valid])
            if transp is not None:
                dimmer |= transp < 0.85 * np.nanmedian(transp[valid])
            flag(
                (z > k) & (bg - med > effect) & dimmer,
                lambda i: f"clouds/sky glow: background {bg[i]:.1f} vs median {med:.1f}",
            )
        if ecc is not None:
            z, med = session_z(ecc, 0.02, "eccentricity")
            # the effect must also be a real elongation (axis ratio a/b 12 % above the
            # median's): near round stars eccentricity is a steep, noisy function of a/b
            # (e = 0.35 -> 0.50 is only 8 %), so e + 0.15 alone is within the noise
            elong = 1.0 / np.sqrt(np.clip(1.0 - ecc * ecc, 1e-6, 1.0))
            elongated = elong > 1.12 / math.sqrt(max(1.0 - med * med, 1e-6))
            flag(
                ((z > k) & (ecc > med + 0.15) & elongated)
                | ((ecc > cfg.max_eccentricity) & (ecc > med + 0.1)),
                lambda i: f"trailing: eccentricity {ecc[i]:.2f} vs median {med:.2f}",
            )
        if fwhm is not None:
            z, med = session_z(fwhm, 0.03 * abs(np.nanmedian(fwhm[valid])), "fwhm")
            flag(
                (z > k) & (fwhm > 1.25 * med),
                lambda i: f"defocus/seeing: FWHM {fwhm[i]:.2f} px vs median {med:.2f}",
            )
        if trails is not None:
            flag(trails >= 3, lambda i: f"satellite flooded: {trails[i]:.0f} trails")
    # User limits.
    if cfg.max_fwhm is not None and fwhm is not None:
        flag(
            ~(fwhm <= cfg.max_fwhm),
            lambda i: f"FWHM {fwhm[i]:.2f} px > --max-fwhm {cfg.max_fwhm:g}",
        )
    if cfg.min_stars is not None and stars is not None:
        flag(
            ~(stars >= cfg.min_stars),
            lambda i: f"{stars[i]:.0f} stars < --min-stars {cfg.min_stars}",
        )
    used = np.array([not r for r in reasons], dtype=bool)
    score = (
        quality_score({k_: np.asarray(v, float) for k_, v in metrics.items()})
        if metrics
        else (np.ones(n))
    )
    if cfg.keep_best is not None and used.any():
        n_keep = max(1, math.ceil(cfg.keep_best * used.sum() - 1e-9))
        order = [i for i in np.argsort(-score, kind="stable") if used[i]]
        for rank, i in enumerate(order):
            if rank >= n_keep:
                reasons[i].append(
                    f"--keep-best {cfg.keep_best:.0%}: rank {rank + 1} of {len(order)}"
                )
        used = np.array([not r for r in reasons], dtype=bool)
    for name, r in zip(names, reasons, strict=True):
        if r:
            logger.info("excluded %s: %s", name, "; ".join(r))
    return Selection(names=names, used=used, reasons=reasons, score=score, stats=stats)


def choose_reference(
    n_stars: Sequence[float],
    fwhm: Sequence[float],
    distance: Sequence[float] | None = None,
    tolerance: float = 0.05,
) -> int:
    """Index of the reference frame (-1 if there are no frames).

    The sharpness score is the number of stars per PSF area, ``n_stars / fwhm^2`` (more
    stars and sharper is better).  Without *distance* the best score wins (the earlier
    frame on exact ties).  With *distance* (each frame's pointing offset from the
    session's median pointing), frames whose score is within *tolerance* (relative) of
    the best are near-ties, and the one nearest the median pointing is chosen (its
    field overlaps the others most); frame-to-frame noise in FWHM (undersampled or
    half-resolution CFA luminance) or in star counts then no longer flips the choice
    between near-equal frames.  Eccentricity is left out on purpose: near round stars
    it is a steep, noisy function of the axis ratio.

    Parameters
    ----------
    n_stars, fwhm : sequence of float
        Per frame; NaN = not measured.  Frames without a finite, positive FWHM are
        chosen only when no frame has one (then by star count).
    distance : sequence of float, optional
        Per frame, pixels from the median pointing; NaN = unknown (never preferred).
    tolerance : float
        Relative width of the near-tie band.  5 %: the frame medians of FWHM are good
        to 1-2 %, and a reference a few per cent softer than the sharpest already costs
        stack SNR (it is the one light not resampled; 2 % SNR for a 7 % softer
        reference on the colour benchmark), so the band stays narrow.

    Returns
    -------
    int
    """
    n = np.asarray(n_stars, dtype=np.float64)
    f = np.asarray(fwhm, dtype=np.float64)
    d = None if distance is None else np.asarray(distance, dtype=np.float64)
    if n.shape != f.shape or n.ndim != 1 or (d is not None and d.shape != n.shape):
        msg = "choose_reference: n_stars, fwhm and distance must be 1-D and of one length"
        raise ValueError(msg)
    if not 0.0 <= tolerance < 1.0:
        msg = f"choose_reference: tolerance must be in [0, 1), got {tolerance}"
        raise ValueError(msg)
    if n.size == 0:
        return -1
    sharp = np.isfinite(f) & (f > 0) & np.isfinite(n) & (n > 0)
    with np.errstate(all="ignore"):
        score = np.where(sharp, n / f**2, -np.inf) if sharp.any() else np.nan_to_num(n, nan=-1.0)
    best = int(np.argmax(score))
    if d is None or not np.isfinite(score[best]) or score[best] <= 0:
        return best
    near = np.flatnonzero(score >= (1.0 - tolerance) * score[best])
    far = np.where(np.isfinite(d), d, np.inf)
    return int(min(near, key=lambda i: (far[i], -score[i], i)))
