"""Registering a frame to a reference: stars first, phase correlation as fallback.

:func:`register_frame` never raises for a bad frame: it returns a truthy
:class:`Registration` or a falsy :class:`FailedRegistration` carrying the reason
(in the spirit of scikit-image's ``FailedEstimation``).  Invalid *arguments*
(an unknown model name) still raise ``ValueError``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from .match import MatchError, match_stars
from .phasecorr import phase_shift, prepare_for_phase
from .quality import QualityTable
from .stars import StarTable, detect_stars
from .transform import MODELS, apply_matrix, decompose

__all__ = [
    "FailedRegistration",
    "Reference",
    "Registration",
    "pick_reference",
    "register_frame",
]

logger = logging.getLogger(__name__)


@dataclass
class Registration:
    """A successful registration (always truthy).

    Attributes
    ----------
    matrix : ndarray
        3x3, maps FRAME ``(x, y)`` (x = column, y = row) to REFERENCE coordinates.
    model : str
        Fitted model (``'shift'`` for phase correlation).
    n_matches : int
        Matched stars (0 for phase correlation).
    rms : float
        RMS residual of matched stars (px); NaN for phase correlation.
    method : str
        ``'stars'`` or ``'phase'``.
    details : dict
        Extra figures (rotation, scale, mirror, correlation, fallback reason).
    """

    matrix: np.ndarray
    model: str
    n_matches: int
    rms: float
    method: str
    details: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return True

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {
            "ok": True,
            "matrix": np.asarray(self.matrix).tolist(),
            "model": self.model,
            "n_matches": int(self.n_matches),
            "rms": None if not np.isfinite(self.rms) else float(self.rms),
            "method": self.method,
            **{k: v for k, v in self.details.items() if k != "ok"},
        }


@dataclass
class FailedRegistration:
    """A registration that did not succeed (always falsy); ``reason`` says why."""

    reason: str

    def __bool__(self) -> bool:
        return False

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {"ok": False, "reason": self.reason}


@dataclass
class Reference:
    """What a frame is registered against: the reference stars and, optionally, the
    prepared image used by the phase-correlation fallback.

    Build it once with :meth:`from_image` and reuse it for every frame.
    """

    stars: StarTable
    phase_image: np.ndarray | None = None
    name: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        """Shape ``(ny, nx)`` of the reference image."""
        return self.stars.shape

    @classmethod
    def from_image(
        cls,
        image: np.ndarray,
        *,
        name: str = "",
        saturation: float | None = None,
        max_stars: int = 200,
        threshold: float = 5.0,
        phase: bool = True,
    ) -> Reference:
        """Detect the reference stars (and prepare the phase image) of a 2-D image."""
        data = np.asarray(image, dtype=np.float32)
        stars = detect_stars(data, threshold=threshold, max_stars=max_stars, saturation=saturation)
        return cls(stars=stars, phase_image=prepare_for_phase(data) if phase else None, name=name)


def _as_reference(reference: np.ndarray | StarTable | Reference) -> Reference:
    if isinstance(reference, Reference):
        return reference
    if isinstance(reference, StarTable):
        return Reference(stars=reference)
    return Reference.from_image(reference)


def register_frame(
    frame: np.ndarray | StarTable,
    reference: np.ndarray | StarTable | Reference,
    *,
    model: str = "auto",
    saturation: float | None = None,
    max_stars: int = 200,
    threshold: float = 5.0,
    min_matches: int = 6,
    max_rms: float = 1.5,
    phase_fallback: bool = True,
    frame_image: np.ndarray | None = None,
    name: str = "",
) -> Registration | FailedRegistration:
    """Register one frame to the reference.

    Parameters
    ----------
    frame : ndarray or StarTable
        The calibrated 2-D frame (stars are detected) or its star table.
    reference : ndarray, StarTable or Reference
        The reference; pass a :class:`Reference` built once for a whole session.
    model : str
        ``'auto'`` or one of ``'shift'``, ``'rigid'``, ``'similarity'``, ``'affine'``,
        ``'homography'``.
    saturation : float, optional
        Saturation level for star rejection.
    max_stars : int
        Stars detected per frame.
    threshold : float
        Detection threshold (sigma).
    min_matches : int
        Fewer matched stars than this counts as a failed star match.
    max_rms : float
        Star matches with a larger residual RMS (px) are rejected.
    phase_fallback : bool
        Try phase correlation (translation only) when star matching fails; needs the
        frame image and a reference built from an image.
    frame_image : ndarray, optional
        The frame's image when *frame* is a star table (for the fallback).
    name : str
        Label for log messages.

    Returns
    -------
    Registration or FailedRegistration
    """
    if model != "auto" and model not in MODELS:
        msg = f"unknown transform model {model!r}; use 'auto' or one of {', '.join(MODELS)}"
        raise ValueError(msg)
    label = name or "frame"
    try:
        ref = _as_reference(reference)
        if isinstance(frame, StarTable):
            stars, image = frame, frame_image
        else:
            image = np.asarray(frame, dtype=np.float32)
            if image.ndim != 2:
                return FailedRegistration(f"{label}: expected a 2-D image, got {image.shape}")
            stars = detect_stars(
                image, threshold=threshold, max_stars=max_stars, saturation=saturation
            )
        res, star_reason = _match(stars, ref, model, min_matches, max_rms)
        if res is None and image is not None and stars.n_rejected.get("elongated", 0) > len(stars):
            # trailed frame: most stars were rejected as elongated; their centres still match
            loose = detect_stars(image, threshold=threshold, max_stars=max_stars,
                                 saturation=saturation, max_ellipticity=None)  # fmt: skip
            res, reason2 = _match(loose, ref, model, min_matches, max_rms)
            if res is not None:
                res.details["elongated_stars"] = True
            else:
                star_reason = f"{star_reason}; with elongated stars: {reason2}"
        if res is not None:
            return res
        logger.debug("%s: %s", label, star_reason)
        if not phase_fallback:
            return FailedRegistration(f"{label}: {star_reason}")
        if image is None or ref.phase_image is None:
            return FailedRegistration(f"{label}: {star_reason}; no images for phase correlation")
        if image.shape != ref.phase_image.shape:
            return FailedRegistration(
                f"{label}: {star_reason}; phase correlation needs the reference's shape"
            )
        ph = phase_shift(prepare_for_phase(image), ref.phase_image, prepared=True)
        if ph is None:
            return FailedRegistration(f"{label}: {star_reason}; phase correlation found no match")
        check = _stars_agree(stars, ref.stars, ph.matrix)
        if check is not None:
            return FailedRegistration(f"{label}: {star_reason}; phase shift rejected: {check}")
        details = decompose(ph.matrix)
        details.update(correlation=ph.correlation, fallback_reason=star_reason)
        return Registration(
            matrix=ph.matrix, model="shift", n_matches=0, rms=float("nan"), method="phase",
            details=details,
        )  # fmt: skip
    except Exception as exc:  # one bad frame must never stop a run
        logger.warning("%s: registration error: %s", label, exc)
        return FailedRegistration(f"{label}: registration error: {exc}")


def _match(
    stars: StarTable, ref: Reference, model: str, min_matches: int, max_rms: float
) -> tuple[Registration | None, str]:
    try:
        res = match_stars(stars.xy, ref.stars.xy, model=model, min_matches=min_matches)
    except MatchError as exc:
        return None, f"star matching failed: {exc.reason}"
    if res.rms > max_rms:
        return None, f"star match residual {res.rms:.2f} px > {max_rms} px"
    reg = Registration(
        matrix=res.matrix,
        model=res.model,
        n_matches=res.n_matches,
        rms=res.rms,
        method="stars",
        details=decompose(res.matrix),
    )
    return reg, ""


def _stars_agree(
    stars: StarTable, ref_stars: StarTable, matrix: np.ndarray, radius: float = 3.0
) -> str | None:
    """Check a phase-correlation shift against the stars; ``None`` if consistent.

    With at least 5 stars in both lists, at least 30 % of the frame stars that land
    inside the reference must fall within *radius* px of a reference star.
    """
    if len(stars) < 5 or len(ref_stars) < 5:
        return None
    pred = apply_matrix(matrix, stars.xy)
    ny, nx = ref_stars.shape
    inside = (pred[:, 0] >= 0) & (pred[:, 0] <= nx - 1) & (pred[:, 1] >= 0) & (pred[:, 1] <= ny - 1)
    if inside.sum() < 5:
        return "too little overlap with the reference"
    d, _ = cKDTree(ref_stars.xy).query(pred[inside], distance_upper_bound=radius)
    frac = float(np.isfinite(d).mean())
    if frac < 0.3:
        return f"only {100 * frac:.0f} % of the stars land on reference stars"
    return None


def pick_reference(quality: QualityTable) -> int:
    """Index of the best reference frame: highest ``n_stars / fwhm^2`` among unflagged frames."""
    idx = quality.best_index(exclude_flagged=True)
    if idx < 0:
        msg = "pick_reference: the quality table is empty; measure the frames first"
        raise ValueError(msg)
    return idx
