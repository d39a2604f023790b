"""A tiny simulated night for the whole-run tests (``test_faults``, ``test_run_robustness``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from astropy.io import fits

from astrostack.simulate import SessionConfig, simulate_session

__all__ = ["stack_data", "tiny_night"]


def tiny_night(root: Path) -> Path:
    """Simulate a 128x128 night (2 bias, darks, flats; 4 lights) under *root*; its frames.

    The frames are copied out of the simulator's folder, so the truth files stay behind
    and the input folder holds only what a camera would write.
    """
    cfg = SessionConfig.small(
        shape=(128, 128), n_bias=2, n_darks=2, n_flats=2, n_lights=4, n_stars=150, seed=9
    )
    simulate_session(root / "sim", cfg)
    frames = root / "frames"
    for kind in ("bias", "darks", "flats", "lights"):
        shutil.copytree(root / "sim" / kind, frames / kind)
    return frames


def stack_data(path: Path) -> bytes:
    """The stack's pixel bytes (the header holds the creation time)."""
    with fits.open(path, memmap=False) as hdul:
        return np.ascontiguousarray(hdul[0].data).tobytes()
