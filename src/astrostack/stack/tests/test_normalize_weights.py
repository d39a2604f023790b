"""Normalisation formulas and weight factors against exact expectations."""

from __future__ import annotations

import numpy as np
import pytest

from astrostack.combine.sources import ArraySource
from astrostack.stack import compute_normalization, compute_weights, measure_frame


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(2)
    img = rng.normal(1000, 10, (128, 160))
    yy, xx = np.mgrid[:128, :160]
    for y, x, f in zip(
        rng.uniform(5, 123, 40), rng.uniform(5, 155, 40), rng.uniform(50, 3000, 40), strict=True
    ):
        img += f * np.exp(-0.5 * ((yy - y) ** 2 + (xx - x) ** 2) / 1.5**2)
    return img.astype(np.float32)


@pytest.mark.parametrize(
    "method", ["additive", "multiplicative", "additive+scale", "multiplicative+scale", "local"]
)
def test_linear_copies_map_back_onto_the_reference(reference, method):
    gain, pedestal = 0.6, 150.0
    frames = [reference, (reference * gain + pedestal).astype(np.float32)]
    stats = [measure_frame(ArraySource(frames[0]), tile=32, make_mask=method == "local")]
    stats.append(measure_frame(ArraySource(frames[1]), tile=32, star_mask=stats[0].star_mask))
    norm = compute_normalization(stats, 0, method)
    if method == "local":
        assert norm.scale_source[1] == "signal"
        assert 0.02 < stats[0].star_mask.mean() < 0.3  # stars (dilated) only
    assert norm.scales[0, 0] == 1 and norm.offsets[0, 0] == 0
    scale, offset = norm.scales[1, 0], norm.offsets[1, 0]
    mapped = frames[1] * scale + offset
    if norm.surfaces is not None:
        mapped = mapped + norm.surfaces[1].rows(0, 128)
    m0 = np.median(reference)
    # every method matches the reference's level
    assert abs(np.median(mapped) - m0) < 0.05
    if method in ("additive+scale", "local"):
        # a pure gain + pedestal is undone exactly (dispersion or signal scale 1/gain)
        assert scale == pytest.approx(1 / gain, rel=1e-3)
        assert np.abs(mapped - reference).max() < 0.05 * 3000
    if method == "multiplicative":
        assert scale == pytest.approx(m0 / np.median(frames[1]), rel=1e-4)
    if method == "multiplicative+scale":
        s0, s1 = stats[0].dispersion[0], stats[1].dispersion[0]
        m1 = stats[1].location[0]
        assert scale == pytest.approx((s0 / s1) * (m0 / m1), rel=1e-3)


def test_measure_frame_statistics(reference):
    st = measure_frame(ArraySource(reference), tile=32)
    assert abs(st.location[0] - np.median(reference)) < 0.3  # subsampled median
    assert abs(st.noise[0] - 10) < 0.4  # background noise, stars ignored
    assert st.grid.shape == (1, 4, 5) and st.coverage == 1.0
    part = reference.copy()
    part[:, :50] = np.nan
    sp = measure_frame(ArraySource(part), tile=32)
    assert abs(sp.coverage - 110 / 160) < 1e-6
    assert abs(sp.noise[0] - 10) < 0.4
    with pytest.raises(ValueError, match="no finite pixels"):
        measure_frame(ArraySource(np.full((64, 64), np.nan)))


def test_weight_factors_multiply():
    noise = np.array([[2.0], [4.0], [2.0]])
    scales = np.array([[1.0], [1.0], [2.0]])
    info = [
        {"exposure": 60, "fwhm": 2.0, "stars": 100},
        {"exposure": 120, "fwhm": 4.0, "stars": 50},
        {"exposure": 30, "fwhm": 2.0, "n_stars": 200},
    ]
    w = compute_weights("noise", noise, scales)
    np.testing.assert_allclose(w[:, 0], [1, 0.25, 0.25])  # 1/(noise*scale)^2, ref = 1
    w = compute_weights("noise*fwhm*exposure", noise, scales, info)
    np.testing.assert_allclose(w[:, 0], [1, 0.25 * 0.25 * 2, 0.25 * 1 * 0.5])
    w = compute_weights("stars", noise, scales, info, reference=1)
    np.testing.assert_allclose(w[:, 0], [2, 1, 4])
    with pytest.raises(ValueError, match="fwhm"):
        compute_weights("fwhm", noise, scales, [{"fwhm": 2}, {}, {"fwhm": 3}])
    with pytest.raises(ValueError, match="not understood"):
        compute_weights("snr", noise, scales)
