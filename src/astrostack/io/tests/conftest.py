"""Shared fixtures for the io tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

#: Pixel values that identify the colour of a CFA site in synthetic mosaics.
COLOR_VALUE = {"R": 1000.0, "G": 2000.0, "B": 3000.0}


def _cfa_mosaic(pattern: str, height: int, width: int) -> np.ndarray:
    out = np.empty((height, width), dtype=np.float32)
    for dy in range(2):
        for dx in range(2):
            out[dy::2, dx::2] = COLOR_VALUE[pattern[2 * dy + dx]]
    return out


def _pattern_of(mosaic: np.ndarray) -> str:
    names = {v: k for k, v in COLOR_VALUE.items()}
    return "".join(names[float(mosaic[y, x])] for y in range(2) for x in range(2))


@pytest.fixture
def cfa_mosaic() -> Callable[[str, int, int], np.ndarray]:
    """Mosaic whose pixel values name the colour of each site (R=1000, G=2000, B=3000)."""
    return _cfa_mosaic


@pytest.fixture
def pattern_of() -> Callable[[np.ndarray], str]:
    """Read the pattern at [0, 0] back from a mosaic made by ``cfa_mosaic``."""
    return _pattern_of


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def real_data() -> Path:
    """../shared/data/real beside the repository (tests skip when it is absent)."""
    path = Path(__file__).resolve().parents[4] / ".." / "shared" / "data" / "real"
    if not path.is_dir():
        pytest.skip(f"real data not available at {path}")
    return path.resolve()
