"""Shared fixtures of the register tests."""

from __future__ import annotations

import numpy as np
import pytest

from .fields import frame_positions, render_stars, sky_catalog

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


@pytest.fixture(scope="session")
def sky():
    """A star catalogue covering more than any rotated or scaled frame (reference coords)."""
    xy, flux = sky_catalog(900, (900, 900), seed=11)
    return xy - [226.0, 258.0], flux


@pytest.fixture(scope="session")
def reference_image(sky):
    xy, flux = sky
    return render_stars(SHAPE, xy, flux, sigma=1.3, seed=100)


def render_frame(sky, matrix, seed, **kw):
    """Render the sky as seen by a frame whose frame-to-reference transform is *matrix*."""
    xy, flux = sky
    scale = np.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    sigma = kw.pop("sigma", 1.3) / scale
    fxy = frame_positions(xy, matrix)
    return render_stars(SHAPE, fxy, flux * kw.pop("transparency", 1.0), sigma=sigma, seed=seed,
                        **kw)  # fmt: skip
