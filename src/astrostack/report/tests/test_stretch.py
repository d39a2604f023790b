"""Auto-stretch: the background lands on the 0.25 target; shadows clip at median - 2.8 MADn."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from astrostack.report.stretch import (
    auto_stretch,
    compute_stretch,
    mtf,
    preview_image,
    write_preview,
)


def _sky(shape=(256, 320), bg=1200.0, sigma=15.0, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.normal(bg, sigma, shape).astype(np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(40):  # stars
        y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        img += rng.uniform(500, 40000) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 4.0)
    return img


def test_mtf_properties():
    x = np.linspace(0, 1, 11)
    for m in (0.05, 0.25, 0.5, 0.8):
        y = mtf(m, x)
        assert y[0] == 0 and y[-1] == pytest.approx(1.0)
        assert np.all(np.diff(y) > 0)
        assert mtf(m, m) == pytest.approx(0.5)
    np.testing.assert_allclose(mtf(0.5, x), x, atol=1e-12)


def test_background_maps_to_target():
    img = _sky()
    out = auto_stretch(img)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert float(np.median(out)) == pytest.approx(0.25, abs=0.01)
    # Shadows clip: about P(z < -2.8) = 0.26% of the pure-noise pixels go to 0.
    frac0 = float(np.mean(out == 0))
    assert 0.0005 < frac0 < 0.006
    assert out.max() == pytest.approx(1.0)
    # Other targets too.
    assert float(np.median(auto_stretch(img, target_background=0.15))) == pytest.approx(
        0.15, abs=0.01
    )


def test_colour_linked_and_unlinked():
    r, g, b = _sky(bg=1190, seed=1), _sky(bg=1210, seed=2), _sky(bg=1175, seed=3)
    rgb = np.stack([r, g, b])
    unlinked = auto_stretch(rgb, linked=False)
    for c in range(3):  # each channel's background neutralised to the target
        assert float(np.median(unlinked[c])) == pytest.approx(0.25, abs=0.015)
    linked = auto_stretch(rgb, linked=True)
    meds = [float(np.median(linked[c])) for c in range(3)]
    assert meds[1] > meds[0] > meds[2]  # one curve keeps the colour cast
    p = compute_stretch(rgb, linked=True)
    assert np.ptp(p.m) == 0 and np.ptp(p.c0) == 0


def test_nan_and_preview_png(tmp_path):
    img = _sky(shape=(300, 500))
    img[:, :20] = np.nan
    u8 = preview_image(img, max_size=200)
    assert u8.dtype == np.uint8 and u8.shape == (120, 200)
    assert np.median(u8) == pytest.approx(0.25 * 255, abs=5)
    p = write_preview(tmp_path / "preview.png", np.stack([img, img, img]), max_size=250)
    with Image.open(p) as im:
        assert im.size == (250, 150) and im.mode == "RGB"
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize("linked", [True, False])
def test_preview_equals_rounded_apply_stretch(linked):
    # The compiled preview must be exactly rint(255 * apply_stretch) of the same parameters.
    from astrostack.report.stretch import apply_stretch

    mono = _sky(shape=(90, 130), seed=4)
    mono[:, :7] = np.nan
    mono[3, 3], mono[4, 4] = np.inf, -np.inf
    rgb = np.stack([_sky((90, 130), bg=b, seed=s) for b, s in ((1190, 5), (1210, 6), (1175, 7))])
    for img in (mono, rgb):
        params = compute_stretch(img, linked=linked)
        ref = np.clip(np.rint(apply_stretch(img, params) * 255.0), 0, 255).astype(np.uint8)
        if ref.ndim == 3:
            ref = np.moveaxis(ref, 0, -1)
        got = preview_image(img, max_size=1600, linked=linked)
        assert got.shape == ref.shape and got.dtype == np.uint8
        np.testing.assert_array_equal(got, ref)
