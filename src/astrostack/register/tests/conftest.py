"""Shared fixtures of the register tests."""

from __future__ import annotations

import pytest

from .fields import SHAPE, render_stars, sky_catalog


@pytest.fixture(scope="session")
def sky():
    """A star catalogue covering more than any rotated or scaled frame (reference coords)."""
    xy, flux = sky_catalog(900, (900, 900), seed=11)
    return xy - [226.0, 258.0], flux


@pytest.fixture(scope="session")
def reference_image(sky):
    xy, flux = sky
    return render_stars(SHAPE, xy, flux, sigma=1.3, seed=100)
