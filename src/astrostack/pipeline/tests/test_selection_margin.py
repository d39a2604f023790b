"""Trailing needs a real elongation: a noisy 0.35 -> 0.50 eccentricity is not a trail."""

from __future__ import annotations

import numpy as np

from astrostack.pipeline.config import SelectionConfig
from astrostack.pipeline.selection import select_frames


def _metrics(ecc):
    n = len(ecc)
    return {
        "fwhm": np.full(n, 3.5),
        "eccentricity": np.asarray(ecc, dtype=np.float64),
        "n_stars": np.full(n, 30.0),
        "noise": np.full(n, 22.0),
    }


def test_small_elongation_near_round_is_kept_and_trails_are_flagged():
    names = [f"l{i}" for i in range(6)]
    base = [0.33, 0.35, 0.345, 0.36, 0.34, 0.35]
    # e 0.35 -> 0.50 is an axis ratio only 8 % further from round: within the noise
    for e in (0.49, 0.5024, 0.51):
        ecc = list(base)
        ecc[2] = e
        sel = select_frames(names, _metrics(ecc), SelectionConfig())
        assert sel.used.all(), (e, sel.excluded)
    # a real trail (axis ratio 1.5x the median's) is still rejected with its reason
    ecc = list(base)
    ecc[2] = 0.80
    sel = select_frames(names, _metrics(ecc), SelectionConfig())
    assert list(sel.excluded) == ["l2"] and "trailing" in sel.excluded["l2"]
    ecc[2] = 0.58  # 0.15 above the median and 14 % more elongated: a trail
    sel = select_frames(names, _metrics(ecc), SelectionConfig())
    assert list(sel.excluded) == ["l2"]
