"""Noise weights must not reward the smoothing of registration's interpolation.

A bilinear resampling at a half-pixel shift averages 2x2 input pixels: the per-pixel
noise halves while the noise of extended objects (low spatial frequencies) is
unchanged.  Frames differ in how much they are smoothed (their fractional shifts; the
reference is not resampled at all), so a per-pixel noise figure would give the most
smoothed frames four times the weight of the reference for no gain.
"""

from __future__ import annotations

import numpy as np

from astrostack.combine.sources import ArraySource
from astrostack.stack import measure_frame, stack_frames

SHAPE = (256, 256)
SIGMA = 10.0


def _half_pixel_bilinear(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    out[:-1, :-1] = 0.25 * (img[:-1, :-1] + img[1:, :-1] + img[:-1, 1:] + img[1:, 1:])
    return out


def test_noise_is_measured_at_a_scale_interpolation_does_not_change():
    rng = np.random.default_rng(4)
    raw = rng.normal(1000.0, SIGMA, SHAPE).astype(np.float32)
    smooth = _half_pixel_bilinear(raw)
    st_raw = measure_frame(ArraySource(raw), tile=32)
    st_smooth = measure_frame(ArraySource(smooth), tile=32)
    print(f"block noise raw {st_raw.block_noise[0]:.2f} smoothed {st_smooth.block_noise[0]:.2f}"
          f"; per pixel {st_raw.noise[0]:.2f} {st_smooth.noise[0]:.2f}")  # fmt: skip
    # per pixel the smoothed frame looks twice as quiet ...
    assert abs(st_smooth.noise[0] / st_raw.noise[0] - 0.5) < 0.05
    # ... at 4x4 blocks the two nearly agree (a 2x2 box over 4x4 blocks: ratio 0.875)
    assert abs(st_raw.block_noise[0] / SIGMA - 1) < 0.05
    assert 0.8 < st_smooth.block_noise[0] / st_raw.block_noise[0] < 0.95


def test_smoothed_frames_do_not_take_the_weight():
    rng = np.random.default_rng(8)
    frames = [rng.normal(1000.0, SIGMA, SHAPE).astype(np.float32) for _ in range(8)]
    frames = [f if i % 2 == 0 else _half_pixel_bilinear(f) for i, f in enumerate(frames)]
    res = stack_frames([ArraySource(f) for f in frames], method="mean",
                       normalization="additive", weighting="noise", tile=32)  # fmt: skip
    w = np.array([fr.weight[0] for fr in res.frames])
    ratio = w[1::2].mean() / w[0::2].mean()
    print(f"weight of smoothed / unsmoothed frames: {ratio:.3f} (per-pixel noise: 4)")
    assert 1.0 < ratio < 1.45, ratio
