"""Detect once per frame: one extraction gives the quality stars and the registration
stars, each exactly what a separate detection finds, so reusing them changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from astrostack.register import (
    Reference,
    detect_star_lists,
    detect_stars,
    measure_quality,
    measure_quality_and_stars,
    register_frame,
    transform_rms_difference,
)
from astrostack.register import stars as stars_module

from .fields import SHAPE, render_frame, render_stars, similarity, sky_catalog

_COLUMNS = ("x", "y", "flux", "peak", "fwhm", "hfd", "a", "b", "theta", "ellipticity", "flags")


def _assert_same(a, b):
    assert len(a) == len(b)
    for name in _COLUMNS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.n_rejected == b.n_rejected
    assert a.background_level == b.background_level and a.shape == b.shape


@pytest.mark.parametrize("trail", [None, (6.0, 3.0)])
def test_star_lists_equal_separate_detections(sky, trail):
    xy, flux = sky
    image = render_frame((xy, flux), similarity(3.0, shift=(1.5, -2.0)), seed=5,
                         trail=trail)  # fmt: skip
    cuts = [(500, None), (120, 0.5), (40, 0.3)]
    lists = detect_star_lists(image, cuts, threshold=5.0)
    for (n, e), got in zip(cuts, lists, strict=True):
        _assert_same(got, detect_stars(image, threshold=5.0, max_stars=n, max_ellipticity=e))
    assert len(lists[0]) > len(lists[1]) >= 40
    assert np.all(lists[1].ellipticity <= 0.5) and np.all(lists[2].ellipticity <= 0.3)
    if trail is not None:  # trailed stars: the ellipticity cut is what removes them
        assert lists[1].n_rejected["elongated"] > 0


def test_quality_pass_returns_the_registration_stars(reference_image):
    q, stars, reg = measure_quality_and_stars(reference_image, "ref", register_max_stars=150)
    _assert_same(stars, detect_stars(reference_image, max_stars=500, max_ellipticity=None))
    _assert_same(reg, detect_stars(reference_image, max_stars=150))
    assert q.n_stars == len(stars)
    again = measure_quality(reference_image, "ref")
    for name in ("fwhm", "hfd", "eccentricity", "noise", "background", "snr", "n_psf_fits"):
        assert getattr(again, name) == getattr(q, name), name
    assert measure_quality_and_stars(reference_image, "ref")[2] is None


def test_reused_stars_register_exactly_like_a_fresh_detection(sky, reference_image):
    truth = similarity(17.0, shift=(9.3, -5.1))
    image = render_frame(sky, truth, seed=77)
    _, _, ref_stars = measure_quality_and_stars(reference_image, "ref", register_max_stars=200)
    _, _, stars = measure_quality_and_stars(image, "frame", register_max_stars=200)
    reused = register_frame(stars, Reference(stars=ref_stars), frame_image=image)
    fresh = register_frame(image, Reference.from_image(reference_image, max_stars=200))
    assert reused and fresh
    np.testing.assert_array_equal(reused.matrix, fresh.matrix)
    assert transform_rms_difference(reused.matrix, truth, SHAPE) <= 0.05
    assert reused.n_matches == fresh.n_matches >= 30


@pytest.fixture
def extractions(monkeypatch):
    """The thresholds of the ``sep.extract`` calls made while the test runs."""
    thresholds = []
    extract = stars_module._extract

    def spy(sub, threshold, *args):
        thresholds.append(threshold)
        return extract(sub, threshold, *args)

    monkeypatch.setattr(stars_module, "_extract", spy)
    return thresholds


@pytest.fixture(scope="module")
def dense_field():
    """1500 x 1500 px, 6000 stars down to ~3 sigma: 2.2k objects at 10 sigma, 2.7k at 5."""
    shape = (1500, 1500)
    xy, flux = sky_catalog(6000, shape[::-1], seed=3, flux_range=(150, 2e5))
    return xy, render_stars(shape, xy, flux, sigma=1.3, noise=5.0, seed=4)


def test_dense_field_is_extracted_once_at_twice_the_threshold(
    dense_field, extractions, monkeypatch
):
    # Enough objects at 10 sigma for every cut's candidates: the 5-sigma extraction is
    # skipped, and the stars are those it would have given, as accurately placed.
    xy, image = dense_field
    thresholds = extractions
    cuts = [(500, None), (300, 0.5)]
    fast = detect_star_lists(image, cuts, threshold=5.0)
    assert thresholds == [10.0]
    for (n, e), got in zip(cuts, fast, strict=True):
        _assert_same(got, detect_stars(image, threshold=5.0, max_stars=n, max_ellipticity=e))
    monkeypatch.setattr(stars_module, "_FIRST_MIN", 10**9)
    thresholds.clear()
    slow = detect_star_lists(image, cuts, threshold=5.0)
    assert thresholds == [10.0, 5.0]
    tree = cKDTree(xy)
    for got, ref in zip(fast, slow, strict=True):
        assert len(got) == len(ref)
        same = cKDTree(ref.xy).query(got.xy, distance_upper_bound=0.2)[0] < 0.2
        assert same.mean() >= 0.97
        # bright stars, some blended: the same centroid errors against the truth
        errors = [tree.query(table.xy)[0] for table in (got, ref)]
        for d in errors:
            assert (d < 1.0).mean() >= 0.99 and np.median(d) < 0.003
        assert np.percentile(errors[0], 90) < 1.1 * np.percentile(errors[1], 90) < 0.03
        assert np.median(got.hfd) == pytest.approx(np.median(ref.hfd), rel=0.005)


def test_sparse_field_is_extracted_at_the_threshold(sky, extractions):
    # too few objects at twice the threshold: the threshold's own extraction is used
    image = render_frame(sky, similarity(0.0), seed=9)
    assert len(detect_stars(image, threshold=5.0, max_stars=50)) == 50
    assert extractions == [10.0, 5.0]
