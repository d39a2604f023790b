"""Tests of CFA pattern handling, sub-lattices, superpixels and colour balance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from astrostack.calibrate.cfa import (
    BAYER_PATTERNS,
    apply_white_balance,
    background_levels,
    channel_index,
    channel_masks,
    green_plane,
    half_to_full_transform,
    luminance,
    mosaic_rgb,
    neutralize_background,
    pattern_from_meta,
    split_cfa,
    superpixel,
    white_balance_mosaic,
)
from astrostack.io.frame import FrameMeta
from astrostack.io.metadata import bayer_shift, flip_pattern_vertically

LETTER = {0: "R", 1: "G", 2: "B"}


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_channel_index_matches_name(pattern):
    idx = channel_index(pattern)
    assert idx.shape == (2, 2)
    assert "".join(LETTER[int(c)] for c in idx.ravel()) == pattern
    assert np.array_equal(channel_index(pattern.lower()), idx)


@pytest.mark.parametrize("shape", [(6, 8), (7, 5)])
@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_channel_masks_partition_and_counts(pattern, shape):
    masks = channel_masks(pattern, shape)
    assert masks.shape == (3, *shape) and masks.dtype == bool
    assert np.all(masks.sum(axis=0) == 1)  # every pixel in exactly one channel
    assert masks[channel_index(pattern)[0, 0], 0, 0]
    if shape == (6, 8):  # even: R and B a quarter each, G half
        assert masks.sum(axis=(1, 2)).tolist() == [12, 24, 12]
    # masks agree with the mosaic of a colour-coded image
    code = np.stack([np.full(shape, float(c)) for c in range(3)])
    assert np.array_equal(mosaic_rgb(code, pattern), np.argmax(masks, axis=0).astype(np.float32))


def test_unknown_pattern_is_a_clear_error():
    with pytest.raises(ValueError, match="RGGB"):
        channel_index("RGBG")
    with pytest.raises(ValueError, match="Bayer"):
        channel_masks(None, (4, 4))


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_vertical_flip_pattern_cross_checked_with_masks(pattern):
    expected = {"RGGB": "GBRG", "GBRG": "RGGB", "BGGR": "GRBG", "GRBG": "BGGR"}[pattern]
    assert flip_pattern_vertically(pattern, 10) == expected
    assert flip_pattern_vertically(pattern, 11) == pattern  # odd height: unchanged
    for h in (10, 11):
        m = channel_masks(pattern, (h, 6))
        assert np.array_equal(
            m[:, ::-1, :], channel_masks(flip_pattern_vertically(pattern, h), (h, 6))
        )


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_shift_pattern_cross_checked_with_masks(pattern):
    x1 = {"RGGB": "GRBG", "GRBG": "RGGB", "BGGR": "GBRG", "GBRG": "BGGR"}[pattern]
    assert bayer_shift(pattern, 0, 1) == x1
    m = channel_masks(pattern, (9, 9))
    for dy in range(3):
        for dx in range(3):
            crop = m[:, dy:, dx:]
            assert np.array_equal(crop, channel_masks(bayer_shift(pattern, dy, dx), crop.shape[1:]))


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_split_cfa_and_mosaic_roundtrip(pattern):
    rng = np.random.default_rng(3)
    rgb = rng.uniform(0, 1, (3, 7, 9)).astype(np.float32)
    m = mosaic_rgb(rgb, pattern)
    planes = split_cfa(m, pattern)
    assert set(planes) == {"R", "G1", "G2", "B"}
    for p in planes.values():
        assert p.shape == (3, 4)  # odd sizes cropped
    idx = channel_index(pattern)
    r = tuple(int(v) for v in np.argwhere(idx == 0)[0])
    b = tuple(int(v) for v in np.argwhere(idx == 2)[0])
    assert np.array_equal(planes["R"], rgb[0, r[0] : 6 : 2, r[1] : 8 : 2])
    assert np.array_equal(planes["B"], rgb[2, b[0] : 6 : 2, b[1] : 8 : 2])
    # G1 sits on the red row, G2 on the blue row
    assert np.array_equal(planes["G1"], rgb[1, r[0] : 6 : 2, 1 - r[1] : 8 : 2])
    assert np.array_equal(planes["G2"], rgb[1, b[0] : 6 : 2, 1 - b[1] : 8 : 2])


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_superpixel_exact_on_cell_constant_image(pattern):
    rng = np.random.default_rng(4)
    cells = rng.uniform(10, 1000, (3, 5, 6)).astype(np.float32)
    rgb = np.repeat(np.repeat(cells, 2, axis=1), 2, axis=2)  # constant over each 2x2 cell
    rgb = np.pad(rgb, ((0, 0), (0, 1), (0, 1)), mode="edge")  # odd size: last row/col cropped
    m = mosaic_rgb(rgb, pattern)
    sp = superpixel(m, pattern)
    assert sp.dtype == np.float32 and sp.shape == (3, 5, 6)
    np.testing.assert_allclose(sp, cells, rtol=1e-6)
    np.testing.assert_allclose(
        luminance(m, pattern), (cells[0] + 2 * cells[1] + cells[2]) / 4, rtol=1e-6
    )


def test_superpixel_nan_green_uses_the_other_green():
    m = np.arange(16, dtype=np.float32).reshape(4, 4)
    m[0, 1] = np.nan  # a G1 sample for RGGB
    sp = superpixel(m, "RGGB")
    assert sp[1, 0, 0] == m[1, 0]
    assert np.isfinite(sp).all()


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_green_plane_exact_on_linear_green(pattern):
    yy, xx = np.mgrid[0:20, 0:24].astype(np.float32)
    g = 100 + 3 * xx - 2 * yy
    rgb = np.stack([np.full_like(g, 7.0), g, np.full_like(g, 9.0)])
    out = green_plane(mosaic_rgb(rgb, pattern), pattern)
    np.testing.assert_allclose(out[1:-1, 1:-1], g[1:-1, 1:-1], rtol=1e-6)
    assert np.abs(out - g).max() <= 3.0  # edge: one-sided mean, off by at most one gradient step


def test_half_to_full_transform_maps_cell_centres():
    # shift of (3, -2) half-res pixels plus a rotation, checked on cell centres
    a = np.deg2rad(10.0)
    m = np.array([[np.cos(a), -np.sin(a), 3.0], [np.sin(a), np.cos(a), -2.0], [0, 0, 1]])
    full = half_to_full_transform(m)
    pts = np.array([[0, 0, 1], [10, 4, 1], [-3, 7, 1]], dtype=float).T
    mapped_half = m @ pts
    full_pts = np.vstack([2 * pts[:2] + 0.5, np.ones(3)])
    np.testing.assert_allclose(full @ full_pts, np.vstack([2 * mapped_half[:2] + 0.5, np.ones(3)]))


def test_pattern_from_meta_override_and_errors():
    meta = FrameMeta(path=Path("lights/a.fits"), bayer="GRBG", shape=(10, 10))
    assert pattern_from_meta(meta) == "GRBG"
    assert pattern_from_meta(meta, "rggb") == "RGGB"
    assert pattern_from_meta(meta, "auto") == "GRBG"
    assert pattern_from_meta(meta, "mono") is None
    assert pattern_from_meta(FrameMeta(bayer=None, shape=(10, 10))) is None
    assert pattern_from_meta(FrameMeta(bayer="RGGB", shape=(3, 10, 10))) is None
    with pytest.raises(ValueError, match=r"a\.fits"):
        pattern_from_meta(meta, "RGBX")
    with pytest.raises(ValueError, match=r"b\.tif.*already RGB"):
        pattern_from_meta(FrameMeta(path=Path("b.tif"), shape=(3, 4, 4)), "RGGB")
    with pytest.raises(ValueError, match=r"c\.fits"):
        pattern_from_meta(FrameMeta(path=Path("c.fits"), bayer="XYZW", shape=(4, 4)))


def test_white_balance_rgb_and_mosaic_agree():
    rng = np.random.default_rng(5)
    rgb = rng.uniform(1, 2, (3, 8, 10)).astype(np.float32)
    mult = (2.0, 1.0, 1.5)
    out = apply_white_balance(rgb, mult)
    np.testing.assert_allclose(
        out / rgb, np.broadcast_to(np.array(mult)[:, None, None], rgb.shape), rtol=1e-6
    )
    np.testing.assert_allclose(apply_white_balance(rgb, (*mult, 1.0)), out)
    for pattern in BAYER_PATTERNS:
        wb = white_balance_mosaic(mosaic_rgb(rgb, pattern), pattern, mult)
        np.testing.assert_allclose(wb, mosaic_rgb(out, pattern), rtol=1e-6)
    with pytest.raises(ValueError, match="multipliers"):
        apply_white_balance(rgb, (1.0, -1.0, 1.0))


def _sky_with_stars(levels, shape=(200, 240), seed=6):
    """Gaussian-noise sky at ``levels`` per channel plus bright white and red stars."""
    rng = np.random.default_rng(seed)
    h, w = shape
    rgb = np.stack([rng.normal(lv, 2.0, shape) for lv in levels]).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(60):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        star = 500 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0**2))
        colour = rng.choice([np.array([1.0, 1.0, 1.0]), np.array([1.0, 0.2, 0.1])])
        rgb += (colour[:, None, None] * star).astype(np.float32)
    return rgb


def test_background_levels_ignore_stars():
    levels = (40.0, 100.0, 70.0)
    rgb = _sky_with_stars(levels)
    est = background_levels(rgb)
    # measured: within 0.1 of the truth, where the plain median is 0.4 too high (stars)
    np.testing.assert_allclose(est, levels, atol=0.2)
    assert np.all(np.median(rgb, axis=(1, 2)) - np.array(levels) > 0.3)
    mask = np.zeros(rgb.shape[1:], bool)
    mask[:50, :50] = True
    np.testing.assert_allclose(background_levels(rgb, mask=mask, step=1), levels, atol=1.0)


@pytest.mark.parametrize(
    ("mode", "reference"), [("offset", "mean"), ("scale", "G"), ("offset", "min")]
)
def test_neutralize_background_equalises_channels(mode, reference):
    levels = np.array([40.0, 100.0, 70.0])
    rgb = _sky_with_stars(levels)
    out = neutralize_background(rgb, mode=mode, reference=reference)
    after = background_levels(out)
    assert np.ptp(after) < 0.02 * after.mean()  # was 60 (60 % of the mean)
    target = {"mean": levels.mean(), "G": levels[1], "min": levels.min()}[reference]
    np.testing.assert_allclose(after, target, rtol=0.01)
    if mode == "offset":  # star signal above the sky is untouched
        np.testing.assert_allclose((out - rgb).std(axis=(1, 2)), 0, atol=1e-3)
    with pytest.raises(ValueError, match="mode"):
        neutralize_background(rgb, mode="bogus")
