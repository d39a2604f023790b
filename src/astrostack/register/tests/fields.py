"""Synthetic star fields with known positions and transforms (test helpers)."""

from __future__ import annotations

import numpy as np
from scipy.special import erf

__all__ = ["SHAPE", "frame_positions", "render_frame", "render_stars", "similarity", "sky_catalog"]


def sky_catalog(
    n: int, extent: tuple[float, float], seed: int = 0, flux_range=(2e3, 2e5)
) -> tuple[np.ndarray, np.ndarray]:
    """Random star positions over ``extent=(width, height)`` and power-law fluxes."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform([0, 0], extent, size=(n, 2))
    lo, hi = flux_range
    flux = lo * (hi / lo) ** rng.uniform(0, 1, n) ** 2.5
    return xy, flux


def frame_positions(ref_xy: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Positions in a frame whose frame-to-reference transform is *matrix*."""
    inv = np.linalg.inv(matrix)
    h = np.column_stack([ref_xy, np.ones(len(ref_xy))]) @ inv.T
    return h[:, :2] / h[:, 2:3]


def render_stars(
    shape: tuple[int, int],
    xy: np.ndarray,
    flux: np.ndarray,
    sigma: float | tuple[float, float] = 1.3,
    background: float = 100.0,
    noise: float = 5.0,
    seed: int = 1,
    trail: tuple[float, float] | None = None,
) -> np.ndarray:
    """Render pixel-integrated Gaussian stars (optionally trailed), sky and Gaussian noise."""
    ny, nx = shape
    img = np.zeros(shape, dtype=np.float64)
    sx, sy = (sigma, sigma) if np.isscalar(sigma) else sigma
    r = int(np.ceil(6 * max(sx, sy))) + (int(np.hypot(*trail)) + 1 if trail else 0)
    steps = np.linspace(-0.5, 0.5, 9) if trail else np.zeros(1)
    for (x, y), f in zip(xy, flux, strict=True):
        x0, y0 = int(np.floor(x)) - r, int(np.floor(y)) - r
        x1, y1 = x0 + 2 * r + 2, y0 + 2 * r + 2
        if x1 <= 0 or y1 <= 0 or x0 >= nx or y0 >= ny:
            continue
        xs = np.arange(max(x0, 0), min(x1, nx))
        ys = np.arange(max(y0, 0), min(y1, ny))
        for s in steps:
            cx = x + (s * trail[0] if trail else 0.0)
            cy = y + (s * trail[1] if trail else 0.0)
            gx = 0.5 * (
                erf((xs + 0.5 - cx) / (np.sqrt(2) * sx)) - erf((xs - 0.5 - cx) / (np.sqrt(2) * sx))
            )
            gy = 0.5 * (
                erf((ys + 0.5 - cy) / (np.sqrt(2) * sy)) - erf((ys - 0.5 - cy) / (np.sqrt(2) * sy))
            )
            img[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1] += f / len(steps) * np.outer(gy, gx)
    rng = np.random.default_rng(seed)
    img += background + rng.normal(0, noise, shape)
    return img.astype(np.float32)


SHAPE = (384, 448)


def similarity(angle_deg: float, scale: float = 1.0, shift=(0.0, 0.0), mirror: bool = False,
               centre=(224.0, 192.0)) -> np.ndarray:  # fmt: skip
    """Frame-to-reference matrix rotating/scaling about *centre*, then shifting."""
    a = np.radians(angle_deg)
    lin = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    if mirror:
        lin = lin @ np.diag([1.0, -1.0])
    c = np.asarray(centre, dtype=np.float64)
    m = np.eye(3)
    m[:2, :2] = lin
    m[:2, 2] = c - lin @ c + np.asarray(shift)
    return m


def render_frame(sky, matrix, seed, **kw):
    """Render the sky as seen by a frame whose frame-to-reference transform is *matrix*."""
    xy, flux = sky
    scale = np.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    sigma = kw.pop("sigma", 1.3) / scale
    fxy = frame_positions(xy, matrix)
    return render_stars(SHAPE, fxy, flux * kw.pop("transparency", 1.0), sigma=sigma, seed=seed,
                        **kw)  # fmt: skip
