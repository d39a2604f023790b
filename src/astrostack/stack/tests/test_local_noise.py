"""Local normalisation must not add the noise of its background models to the stack.

Each frame's background model is a grid of tile medians, each with an error of about
``1.25 sigma / tile``.  Mapping every frame onto the *reference's* tile medians puts
that error, unaveraged, into the stack at the tile scale (per-pixel-equivalent
``1.25 sigma`` against the stack's ``sigma / sqrt(N)``).  Mapping onto the weighted
mean of the frames' models (after a smooth polynomial match to the reference) makes it
cancel.  Measured at the tile scale - 32-px block means of the residual, times 32 -
the local stack must be as quiet as a plain additive stack.
"""

from __future__ import annotations

import numpy as np

from astrostack.combine.sources import ArraySource
from astrostack.stack import stack_frames

SHAPE = (256, 256)
SIGMA = 10.0
MAD = 1.482602218505602


def _block_noise(resid: np.ndarray, block: int) -> float:
    """Per-pixel-equivalent noise of ``block`` x ``block`` block means (robust)."""
    h, w = resid.shape
    means = (
        resid[: h // block * block, : w // block * block]
        .reshape(h // block, block, w // block, block)
        .mean(axis=(1, 3))
    )
    return float(block * MAD * np.median(np.abs(means - np.median(means))))


def test_local_normalisation_adds_no_tile_scale_noise():
    rng = np.random.default_rng(21)
    n = 16
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    # faint stars so that the signal scale is measurable, identical in all frames
    scene = np.zeros(SHAPE)
    for _ in range(60):
        y, x = rng.uniform(8, SHAPE[0] - 8, 2)
        scene += 20 * 100 ** rng.uniform() * np.exp(-0.5 * ((yy - y) ** 2 + (xx - x) ** 2) / 1.3**2)
    skies = [1000 + rng.normal(0, 20) + rng.normal(0, 0.03) * (yy - 128)
             + rng.normal(0, 0.03) * (xx - 128) for _ in range(n)]  # fmt: skip
    data = [(scene + s + rng.normal(0, SIGMA, SHAPE)).astype(np.float32) for s in skies]
    truth = scene + skies[0]
    star = scene > 0.5
    results = {}
    for norm in ("local", "additive"):
        # additive cannot follow per-frame gradients: give it flat skies of the same levels
        frames = data if norm == "local" else [
            (f - s + s.mean()).astype(np.float32) for f, s in zip(data, skies, strict=True)
        ]  # fmt: skip
        res = stack_frames([ArraySource(f) for f in frames], method="winsorized",
                           normalization=norm, weighting="none", tile=32)  # fmt: skip
        resid = res.image - (truth if norm == "local" else scene + skies[0].mean())
        # the reference's gradient is matched by a quadratic fitted to noisy tile medians:
        # that error is a smooth background error (about 0.03 sigma here), not tile noise,
        # so a quadratic is removed from the residual before measuring the tile scale
        design = np.stack([np.ones(SHAPE), xx, yy, xx * xx, xx * yy, yy * yy]).reshape(6, -1).T
        sky = ~star.ravel()
        coef = np.linalg.lstsq(design[sky], resid.ravel()[sky], rcond=None)[0]
        resid = resid - (design @ coef).reshape(SHAPE)
        resid = np.where(star, 0.0, resid)
        results[norm] = (_block_noise(resid, 1), _block_noise(resid, 32))
    ideal = SIGMA / np.sqrt(n)
    (l1, l32), (a1, a32) = results["local"], results["additive"]
    print(f"pixel noise local {l1:.3f} additive {a1:.3f}; tile-scale (x32) local {l32:.3f} "
          f"additive {a32:.3f}; ideal {ideal:.3f}")  # fmt: skip
    assert abs(l1 / a1 - 1) < 0.05, (l1, a1)
    # the reference's tile medians as the target (the former method) measured 6.3 here
    assert l32 < 1.3 * ideal, (l32, ideal)
    assert l32 < 1.25 * a32, (l32, a32)
