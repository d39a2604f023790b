"""Acceptance tests of registration on simulated frames with a known transform."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from astrostack.register import (
    FailedRegistration,
    Reference,
    Registration,
    StarTable,
    detect_stars,
    register_frame,
    transform_rms_difference,
)

from .fields import SHAPE, frame_positions, render_frame, render_stars, similarity

CASES = {
    "shift": similarity(0.0, shift=(13.4, -7.9)),
    "rot30": similarity(30.0, shift=(2.5, 4.25)),
    "rot-95": similarity(-95.0, shift=(-3.3, 1.7)),
    "meridian_flip": similarity(180.0, shift=(5.6, -2.2)),
    "mirror": similarity(0.0, shift=(1.2, 0.4), mirror=True),
    "mirror_rot": similarity(63.0, shift=(-4.0, 3.0), mirror=True),
    "scale1.1": similarity(8.0, scale=1.1, shift=(3.1, -1.9)),
    "scale0.9": similarity(-12.0, scale=1 / 1.1, shift=(-2.0, 2.6)),
}


@pytest.fixture(scope="module")
def reference(reference_image):
    return Reference.from_image(reference_image, name="ref")


@pytest.mark.parametrize("case", list(CASES))
def test_registers_within_005px(case, sky, reference):
    truth = CASES[case]
    image = render_frame(sky, truth, seed=list(CASES).index(case) + 10)
    reg = register_frame(image, reference, name=case)
    assert isinstance(reg, Registration), reg
    assert reg.method == "stars"
    err = transform_rms_difference(reg.matrix, truth, SHAPE)
    assert err <= 0.05, f"{case}: transform error {err:.4f} px"
    assert reg.n_matches >= 30
    assert reg.details["mirror"] == (np.linalg.det(truth[:2, :2]) < 0)


def test_twelve_star_field():
    rng = np.random.default_rng(5)
    # 12 stars in the frame region, some beyond it so rotated frames keep ~12
    ref_xy = rng.uniform([30, 30], [SHAPE[1] - 30, SHAPE[0] - 30], size=(12, 2))
    flux = rng.uniform(8e3, 4e4, 12)
    ref_img = render_stars(SHAPE, ref_xy, flux, sigma=1.4, seed=1)
    truth = similarity(2.0, shift=(6.3, -4.8))
    img = render_stars(SHAPE, frame_positions(ref_xy, truth), flux, sigma=1.4, seed=2)
    reg = register_frame(img, ref_img)
    assert reg, reg
    assert reg.method == "stars"
    assert 9 <= reg.n_matches <= 12
    err = transform_rms_difference(reg.matrix, truth, SHAPE)
    assert err <= 0.1, f"12-star field: transform error {err:.4f} px"


def test_phase_fallback_on_starless_frame():
    # a nebula-like smooth texture: no stars, so matching fails and phase correlation is used
    rng = np.random.default_rng(3)
    big = gaussian_filter(rng.normal(0, 1, (SHAPE[0] + 40, SHAPE[1] + 40)), 4.0) * 400 + 500
    ref = big[20 : 20 + SHAPE[0], 20 : 20 + SHAPE[1]].astype(np.float32)
    # frame pixel (x, y) = sky (x + 7, y + 5)  ->  reference coords (x + 7 - 20 + 20, ...)
    frame = big[25 : 25 + SHAPE[0], 27 : 27 + SHAPE[1]].astype(np.float32)
    frame = frame + rng.normal(0, 2, SHAPE).astype(np.float32)
    reg = register_frame(frame, ref)
    assert reg, reg
    assert reg.method == "phase"
    assert reg.matrix[0, 2] == pytest.approx(7.0, abs=0.1)
    assert reg.matrix[1, 2] == pytest.approx(5.0, abs=0.1)


def test_pure_noise_fails_cleanly(reference):
    noise = np.random.default_rng(9).normal(100, 5, SHAPE).astype(np.float32)
    reg = register_frame(noise, reference, name="noise.fits")
    assert isinstance(reg, FailedRegistration)
    assert not reg
    assert "noise.fits" in reg.reason


def test_bad_input_never_raises(reference):
    reg = register_frame(np.full(SHAPE, np.nan, dtype=np.float32), reference, name="nan.fits")
    assert not reg
    reg = register_frame(np.zeros((4, 4, 4), dtype=np.float32), reference, name="cube.fits")
    assert not reg and "cube.fits" in reg.reason
    reg = register_frame(StarTable.empty(SHAPE), reference, phase_fallback=False)
    assert not reg and "too few stars" in reg.reason
    with pytest.raises(ValueError, match="unknown transform model"):
        register_frame(noise_like(), reference, model="spline")


def noise_like():
    return np.zeros(SHAPE, dtype=np.float32)


@pytest.mark.parametrize("model", ["shift", "rigid", "similarity", "affine", "homography"])
def test_explicit_models(model, sky, reference):
    truth = similarity(0.0 if model == "shift" else 20.0, shift=(3.3, -2.1))
    image = render_frame(sky, truth, seed=77)
    reg = register_frame(image, reference, model=model)
    assert reg and reg.model == model
    assert transform_rms_difference(reg.matrix, truth, SHAPE) <= 0.05


def test_star_table_input_matches_image_input(sky, reference):
    truth = CASES["rot30"]
    image = render_frame(sky, truth, seed=4)
    stars = detect_stars(image)
    reg = register_frame(stars, reference.stars)
    assert reg and transform_rms_difference(reg.matrix, truth, SHAPE) <= 0.05
