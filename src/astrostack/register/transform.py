"""Geometric models between frames: fitting, applying and comparing 3x3 matrices.

A transform is a 3x3 homogeneous matrix mapping **frame** pixel coordinates
``(x, y)`` (x = column, y = row, pixel centres at integers) to **reference**
coordinates.  Fits use scikit-image's transform classes (least squares); mirror
images are handled for the rigid and similarity models by fitting on a flipped
copy of the frame coordinates (scikit-image's Umeyama fit never returns a
reflection).
"""

from __future__ import annotations

import numpy as np
from skimage.transform import (
    AffineTransform,
    EuclideanTransform,
    ProjectiveTransform,
    SimilarityTransform,
)

__all__ = [
    "MIN_POINTS",
    "MODELS",
    "apply_matrix",
    "auto_model",
    "decompose",
    "fit_transform",
    "transform_rms_difference",
]

#: Model names accepted everywhere.
MODELS = ("shift", "rigid", "similarity", "affine", "homography")

#: Minimum number of point pairs each model needs.
MIN_POINTS = {"shift": 1, "rigid": 2, "similarity": 2, "affine": 3, "homography": 4}

_FLIP = np.diag([1.0, -1.0, 1.0])
_CLASSES = {
    "rigid": EuclideanTransform,
    "similarity": SimilarityTransform,
    "affine": AffineTransform,
    "homography": ProjectiveTransform,
}


def auto_model(n_matches: int) -> str:
    """The model ``'auto'`` resolves to for *n_matches* matched stars.

    Fewer than 6 matches: ``'rigid'`` (too few stars to trust a scale);
    6 to 24: ``'similarity'``; 25 or more: ``'affine'`` (absorbs differential
    refraction and small tilts).  A homography is only used when asked for.
    """
    if n_matches < 6:
        return "rigid"
    if n_matches < 25:
        return "similarity"
    return "affine"


def apply_matrix(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Map ``[n, 2]`` points ``(x, y)`` through the 3x3 *matrix*."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(matrix, dtype=np.float64)
    h = xy @ m[:2, :2].T + m[:2, 2]
    w = xy @ m[2, :2] + m[2, 2]
    return h / w[:, None]


def _fit_plain(model: str, src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    if model == "shift":
        d = np.mean(dst - src, axis=0)
        return np.array([[1.0, 0, d[0]], [0, 1.0, d[1]], [0, 0, 1.0]])
    if model == "affine":
        # Linear least squares directly: scikit-image's affine estimate takes a full SVD
        # of a 2n x 7 system (~0.1 s for 200 stars), lstsq on n x 3 is ~100x faster.
        a = np.column_stack([src, np.ones(len(src))])
        p, _, rank, _ = np.linalg.lstsq(a, dst, rcond=None)
        if rank < 3:
            return None
        return np.vstack([p.T, [0.0, 0.0, 1.0]])
    cls = _CLASSES[model]
    tf = cls.from_estimate(src, dst)
    if not tf:
        return None
    m = np.asarray(tf.params, dtype=np.float64)
    if not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:2, :2])) < 1e-9:
        return None
    return m / m[2, 2]


def fit_transform(
    src: np.ndarray, dst: np.ndarray, model: str, allow_mirror: bool = True
) -> np.ndarray | None:
    """Least-squares fit of *model* mapping ``src`` points onto ``dst``.

    Parameters
    ----------
    src, dst : ndarray
        ``[n, 2]`` matched positions (frame, reference).
    model : str
        One of :data:`MODELS`.
    allow_mirror : bool
        For ``'rigid'`` and ``'similarity'``, also fit a mirrored solution and keep
        the one with the smaller residual (affine and homography include
        reflections already).

    Returns
    -------
    ndarray or None
        3x3 matrix, or ``None`` if there are too few points or the fit is degenerate.
    """
    if model not in MODELS:
        msg = f"unknown transform model {model!r}; use one of {', '.join(MODELS)}"
        raise ValueError(msg)
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if len(src) < MIN_POINTS[model] or len(src) != len(dst):
        return None
    best = _fit_plain(model, src, dst)
    if allow_mirror and model in ("rigid", "similarity") and len(src) >= 2:
        flipped = _fit_plain(model, src * [1.0, -1.0], dst)
        if flipped is not None:
            flipped = flipped @ _FLIP
            if best is None or _rss(flipped, src, dst) < _rss(best, src, dst):
                best = flipped
    return best


def _rss(m: np.ndarray, src: np.ndarray, dst: np.ndarray) -> float:
    return float(np.sum((apply_matrix(m, src) - dst) ** 2))


def transform_rms_difference(
    m1: np.ndarray, m2: np.ndarray, shape: tuple[int, int], step: int = 16
) -> float:
    """RMS distance (px) between where two transforms send a grid covering the frame.

    Parameters
    ----------
    m1, m2 : ndarray
        3x3 matrices (frame to reference).
    shape : tuple of int
        Frame shape ``(ny, nx)``; the grid spans ``[0, nx-1] x [0, ny-1]``.
    step : int
        Grid points per axis.
    """
    ny, nx = shape[:2]
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, step), np.linspace(0, ny - 1, step))
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    d = apply_matrix(m1, pts) - apply_matrix(m2, pts)
    return float(np.sqrt(np.mean(np.sum(d**2, axis=1))))


def decompose(matrix: np.ndarray) -> dict[str, float | bool]:
    """Rotation (deg), scale, shift and mirror flag of the linear part of *matrix*."""
    m = np.asarray(matrix, dtype=np.float64)
    lin = m[:2, :2]
    det = float(np.linalg.det(lin))
    mirror = det < 0
    if mirror:
        lin = lin @ np.diag([1.0, -1.0])
    rot = float(np.degrees(np.arctan2(lin[1, 0], lin[0, 0])))
    return {
        "dx": float(m[0, 2]),
        "dy": float(m[1, 2]),
        "rotation_deg": rot,
        "scale": float(np.sqrt(abs(det))),
        "mirror": bool(mirror),
    }
