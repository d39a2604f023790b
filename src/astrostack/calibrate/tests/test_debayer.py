"""Tests of demosaicing: accuracy against ground truth, colour order, symmetry, defects, NaN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from astrostack.calibrate.cfa import BAYER_PATTERNS, channel_index, mosaic_rgb
from astrostack.calibrate.debayer import debayer, debayer_frame, fill_cfa_nans
from astrostack.io.frame import Frame, FrameMeta
from astrostack.io.metadata import bayer_shift, flip_pattern_vertically

H, W = 192, 256


def _background(h=H, w=W):
    """A smooth, coloured sky: gradients plus a gentle long-period ripple (float64)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    def plane(a, b, c):
        ripple = 0.05 * a * np.sin(2 * np.pi * xx / 180 + 0.3) * np.cos(2 * np.pi * yy / 210)
        return a + b * xx / w + c * yy / h + ripple

    return np.stack([plane(1.0, 0.2, 0.1), plane(1.5, -0.1, 0.3), plane(0.8, 0.3, -0.2)])


def _scene(seed=1):
    """Background plus 24 sharp (sigma 0.9-1.6 px) stars of random colours; truth and centres."""
    rng = np.random.default_rng(seed)
    bg = _background()
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    rgb = bg.copy()
    centres = []
    for _ in range(24):
        cy, cx = rng.uniform(12, H - 12), rng.uniform(12, W - 12)
        amp, s = rng.uniform(5, 40), rng.uniform(0.9, 1.6)
        colour = rng.uniform(0.3, 1.0, 3)
        rgb += (
            colour[:, None, None] * amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        )
        centres.append((cy, cx))
    return bg.astype(np.float32), rgb.astype(np.float32), centres


def _border_distance(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.minimum(np.minimum(yy, h - 1 - yy), np.minimum(xx, w - 1 - xx))


@pytest.mark.parametrize("method", ["bilinear", "rcd"])
@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_smooth_regions_reproduced(pattern, method):
    bg = _background().astype(np.float32)
    out = debayer(mosaic_rgb(bg, pattern), pattern, method)
    assert out.shape == (3, H, W) and out.dtype == np.float32
    rel = (np.abs(out - bg) / bg).max(axis=0)
    dist = _border_distance(H, W)
    # measured: 5e-5 (bilinear), 3e-4 (rcd) inside; 4e-3 on the outermost pixel ring
    assert rel[dist >= 1].max() < 1e-3
    assert rel.max() < 1e-2


def _fringe_errors(out, truth, centres):
    """RMS chroma (R-G, B-G) and RGB errors, high-passed, within 6 px of the stars."""
    err = (out - truth).astype(np.float64)
    chroma = np.stack([err[0] - err[1], err[2] - err[1]])
    chroma_hp = chroma - ndimage.gaussian_filter(chroma, (0, 3, 3))
    yy, xx = np.mgrid[0:H, 0:W]
    near = np.zeros((H, W), bool)
    for cy, cx in centres:
        near |= (yy - cy) ** 2 + (xx - cx) ** 2 < 36
    return np.sqrt(np.mean(chroma_hp[:, near] ** 2)), np.sqrt(np.mean(err[:, near] ** 2))


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_rcd_colour_fringes_below_bilinear(pattern):
    _, truth, centres = _scene()
    m = mosaic_rgb(truth, pattern)
    chroma_bil, rgb_bil = _fringe_errors(debayer(m, pattern, "bilinear"), truth, centres)
    chroma_rcd, rgb_rcd = _fringe_errors(debayer(m, pattern, "rcd"), truth, centres)
    # measured: chroma 0.82 (bilinear) vs 0.44 (rcd); rgb 0.81 vs 0.41 (star peaks 5-40)
    assert chroma_rcd < 0.7 * chroma_bil
    assert rgb_rcd < 0.6 * rgb_bil


# OpenCV names a pattern by the second row's 2nd and 3rd pixels
OPENCV_CODE = {"RGGB": "BayerBG", "BGGR": "BayerRG", "GRBG": "BayerGB", "GBRG": "BayerGR"}


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_bilinear_matches_opencv(pattern):
    """Cross-check bilinear (values and channel order) with OpenCV's 16-bit demosaic."""
    cv2 = pytest.importorskip("cv2")
    _, truth, _ = _scene(seed=6)
    m16 = np.round(mosaic_rgb(truth, pattern) * 1000).astype(np.uint16)
    ref = cv2.cvtColor(m16, getattr(cv2, f"COLOR_{OPENCV_CODE[pattern]}2RGB"))
    ref = ref.transpose(2, 0, 1).astype(np.float32)
    out = debayer(m16.astype(np.float32), pattern, "bilinear")
    # OpenCV rounds to integers; its outermost pixel ring uses another border rule
    np.testing.assert_allclose(out[:, 1:-1, 1:-1], ref[:, 1:-1, 1:-1], rtol=0, atol=0.51)


@pytest.mark.parametrize("sigma", [1.2, 2.0])
def test_star_flux_preserved(sigma):
    """Integrated flux of an isolated grey star, for 4 sub-pixel positions."""
    yy, xx = np.mgrid[0:48, 0:48].astype(np.float64)
    errors = {"bilinear": [], "rcd": []}
    for dy, dx in [(0.0, 0.0), (0.5, 0.0), (0.25, 0.75), (0.5, 0.5)]:
        star = 100 * np.exp(-((yy - 24 - dy) ** 2 + (xx - 24 - dx) ** 2) / (2 * sigma**2))
        truth = np.broadcast_to(star + 10, (3, 48, 48)).astype(np.float32)
        m = mosaic_rgb(truth, "RGGB")
        for method, errs in errors.items():
            out = debayer(m, "RGGB", method)
            errs.append(np.abs((out - truth).sum(axis=(1, 2))).max() / star.sum())
    # measured: bilinear 0.3 % (sigma 1.2) and 0.0 %; RCD 0.7 % and 1.7 %
    assert max(errors["bilinear"]) < 0.005
    assert max(errors["rcd"]) < 0.025


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_superpixel_method_exact_on_cell_constant_image(pattern):
    rng = np.random.default_rng(2)
    cells = rng.uniform(1, 100, (3, 16, 20)).astype(np.float32)
    rgb = np.repeat(np.repeat(cells, 2, axis=1), 2, axis=2)
    out = debayer(mosaic_rgb(rgb, pattern), pattern, "superpixel")
    assert out.shape == (3, 16, 20)
    np.testing.assert_allclose(out, cells, rtol=1e-6)


@pytest.mark.parametrize("method", ["bilinear", "rcd", "superpixel"])
@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_channels_in_rgb_order(pattern, method):
    for c in range(3):
        rgb = np.zeros((3, 40, 48), np.float32)
        rgb[c] = 100.0
        out = debayer(mosaic_rgb(rgb, pattern), pattern, method)
        np.testing.assert_allclose(out[c], 100.0, rtol=1e-5)
        others = [k for k in range(3) if k != c]
        assert np.abs(out[others]).max() < 1e-4


@pytest.mark.parametrize("height", [H, H - 1])
@pytest.mark.parametrize("method", ["bilinear", "rcd"])
@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_roworder_twin_flipped_mosaic_gives_flipped_rgb(pattern, method, height):
    """A bottom-up file read with the flipped pattern debayers to the flipped image."""
    _, truth, _ = _scene(seed=3)
    truth = truth[:, :height]
    m = mosaic_rgb(truth, pattern)
    out = debayer(m, pattern, method)
    flipped = debayer(m[::-1], flip_pattern_vertically(pattern, height), method)
    np.testing.assert_allclose(flipped[:, ::-1], out, rtol=0, atol=1e-5 * np.abs(out).max())


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_column_offset_twin(pattern):
    """Dropping the first column and shifting the pattern by one column changes nothing."""
    _, truth, _ = _scene(seed=4)
    m = mosaic_rgb(truth, pattern)
    out = debayer(m, pattern, "rcd")
    shifted = debayer(m[:, 1:], bayer_shift(pattern, 0, 1), "rcd")
    # RCD reaches 12 px (bilinear border plus its windows); compare beyond that
    np.testing.assert_allclose(shifted[:, :, 12:-12], out[:, :, 13:-12], rtol=1e-6)


@pytest.mark.parametrize("site", [(32, 32), (32, 33), (33, 32), (33, 33)])
def test_single_bright_pixel_spreads_locally(site):
    py, px = site
    m = np.full((64, 64), 100.0, np.float32)
    m[py, px] += 10000.0
    yy, xx = np.mgrid[0:64, 0:64]
    cheb = np.maximum(np.abs(yy - py), np.abs(xx - px))
    c = channel_index("RGGB")[py % 2, px % 2]
    for method, r_main in (("bilinear", 1), ("rcd", 2)):
        out = debayer(m, "RGGB", method)
        dev = np.abs(out - 100.0).max(axis=0)
        assert out[c, py, px] == pytest.approx(10100.0, rel=1e-6)
        if method == "bilinear":
            assert dev[cheb > r_main].max() == 0.0
        else:
            # ratio correction reaches 4 px with < 0.1 % of the excess (measured 0.095 %);
            # nothing at all beyond 5 px
            assert dev[cheb > r_main].max() < 1.5e-3 * 10000.0
            assert dev[cheb > 5].max() < 1e-6 * 10000.0


@pytest.mark.parametrize("hot", [(60, 80), (61, 81)])  # a red and a blue site
@pytest.mark.parametrize("method", ["bilinear", "rcd"])
def test_hot_pixel_replaced_before_debayer_leaves_no_colour(method, hot):
    grey = _background()[1].astype(np.float32) * 100.0
    pattern = "RGGB"
    m = grey.copy()
    m[hot] += 5000.0
    win = (slice(hot[0] - 6, hot[0] + 7), slice(hot[1] - 6, hot[1] + 7))

    def colour_speck(mosaic):
        out = debayer(mosaic, pattern, method)[:, win[0], win[1]]
        return max(np.abs(out[0] - out[1]).max(), np.abs(out[2] - out[1]).max())

    assert colour_speck(m) > 500.0  # control: an uncorrected hot pixel is a coloured speck
    # replaced as cosmetic correction does: median of the 8 same-colour neighbours
    fixed = m.copy()
    y, x = hot
    fixed[y, x] = np.median(np.delete(m[y - 2 : y + 3 : 2, x - 2 : x + 3 : 2].ravel(), 4))
    assert colour_speck(fixed) < 0.05  # 0.03 % of the level (chroma of the smooth sky ~0.01)
    # marked NaN and filled
    marked = m.copy()
    marked[hot] = np.nan
    assert colour_speck(fill_cfa_nans(marked, pattern)) < 0.05


@pytest.mark.parametrize("method", ["bilinear", "rcd"])
def test_nan_border_and_defects_do_not_spread(method):
    _, truth, _ = _scene(seed=5)
    clean = mosaic_rgb(truth, "GBRG")
    m = clean.copy()
    m[:3, :] = np.nan  # NaN border rows, as after a crop/shift
    m[:, -2:] = np.nan
    m[100, 100] = np.nan
    m[50, 51] = np.inf
    bad = ~np.isfinite(m)
    out = debayer(m, "GBRG", method)
    assert np.array_equal(np.isnan(out), np.broadcast_to(bad, out.shape))
    far = ndimage.distance_transform_cdt(~bad, metric="chessboard") > 6
    ref = debayer(clean, "GBRG", method)
    # identical up to float rounding (the automatic RCD pedestal/epsilon see other samples)
    np.testing.assert_allclose(out[:, far], ref[:, far], rtol=1e-4)
    filled = debayer(m, "GBRG", method, keep_nan=False)
    assert np.isfinite(filled).all()
    # the filled pixels stay close to the truth (smooth background, few stars there)
    near_truth = np.abs(filled[:, 100, 100] - truth[:, 100, 100]) / truth[:, 100, 100]
    assert near_truth.max() < 0.2


def test_superpixel_method_with_defects():
    rgb = np.stack([np.full((8, 8), v, np.float32) for v in (1.0, 2.0, 3.0)])
    m = mosaic_rgb(rgb, "RGGB")
    m[0, 0] = np.inf  # red of cell (0, 0)
    m[2, 3] = np.nan  # G1 of cell (1, 1)
    out = debayer(m, "RGGB", "superpixel")
    assert np.isnan(out[0, 0, 0]) and np.isfinite(out[1:, 0, 0]).all()
    np.testing.assert_allclose(out[:, 1, 1], [1.0, 2.0, 3.0])  # the other green is used
    np.testing.assert_allclose(debayer(m, "RGGB", "superpixel", keep_nan=False), rgb[:, ::2, ::2])


def test_band_rows_do_not_change_the_result():
    rng = np.random.default_rng(7)
    m = rng.gamma(2.0, 100.0, (157, 131)).astype(np.float32)
    ref = debayer(m, "BGGR", "rcd", band_rows=10_000)
    for band in (1, 9, 64):
        np.testing.assert_array_equal(debayer(m, "BGGR", "rcd", band_rows=band), ref)


@pytest.mark.parametrize("shape", [(2, 2), (3, 5), (13, 11), (37, 64)])
@pytest.mark.parametrize("method", ["bilinear", "rcd"])
def test_any_size_flat_field_stays_flat(shape, method):
    rgb = np.stack([np.full(shape, v, np.float32) for v in (10.0, 20.0, 30.0)])
    out = debayer(mosaic_rgb(rgb, "GRBG"), "GRBG", method)
    assert out.shape == (3, *shape)
    np.testing.assert_allclose(out, rgb, rtol=1e-5)


def test_background_at_zero_stays_stable():
    """Calibrated data can have a sky near 0 with negative noise: no blow-up of the ratios."""
    rng = np.random.default_rng(8)
    m = rng.normal(0.0, 1.0, (128, 128)).astype(np.float32)
    rcd = debayer(m, "RGGB", "rcd")
    bil = debayer(m, "RGGB", "bilinear")
    assert np.isfinite(rcd).all()
    # measured: RCD noise 0.92, bilinear 0.75 (less averaging along one direction)
    assert rcd.std() < 1.5 * bil.std()
    assert np.abs(rcd).max() < 8.0
    assert abs(float(rcd.mean())) < 0.05


def test_debayer_frame_uses_meta_and_override():
    _, truth, _ = _scene(seed=9)
    m = mosaic_rgb(truth, "BGGR")
    frame = Frame(m, FrameMeta(path=Path("lights/l1.fits"), kind="light", bayer="BGGR"))
    out = debayer_frame(frame, method="bilinear")
    assert out.data.shape == (3, H, W) and out.meta.bayer is None
    assert out.meta.shape == (3, H, W) and out.meta.kind == "light"
    np.testing.assert_array_equal(out.data, debayer(m, "BGGR", "bilinear"))
    assert frame.meta.bayer == "BGGR" and frame.data.shape == (H, W)  # input untouched
    # a wrong header corrected by the user's override
    wrong = Frame(m.copy(), FrameMeta(path=Path("l2.fits"), bayer="RGGB"))
    fixed = debayer_frame(wrong, method="bilinear", override="BGGR")
    np.testing.assert_array_equal(fixed.data, out.data)
    mono = Frame(m.copy(), FrameMeta(bayer=None))
    assert debayer_frame(mono) is mono
    with pytest.raises(ValueError, match=r"l3\.fits"):
        debayer_frame(Frame(m.copy(), FrameMeta(path=Path("l3.fits"), bayer="QQQQ")))


def test_bad_input_errors():
    with pytest.raises(ValueError, match="method"):
        debayer(np.zeros((8, 8), np.float32), "RGGB", "ahd")
    with pytest.raises(ValueError, match="2-D"):
        debayer(np.zeros((3, 8, 8), np.float32), "RGGB")
    with pytest.raises(ValueError, match="RGGB"):
        debayer(np.zeros((8, 8), np.float32), "RGBG")


SEESTAR = (
    Path(__file__).resolve().parents[4] / ".." / "shared" / "data" / "real" / "seestar-s50-m94"
)


def _seestar_crop():
    files = sorted((SEESTAR / "1").glob("*.fit")) if SEESTAR.is_dir() else []
    if not files:
        pytest.skip("real Seestar frames not available (../shared/data/real/seestar-s50-m94)")
    from astropy.io import fits

    with fits.open(files[0], memmap=False) as hdul:
        header = hdul[0].header
        data = hdul[0].data
    assert header["BAYERPAT"].strip() == "GRBG"
    # centre 512x512 crop starting at even offsets keeps the GRBG phase
    y0, x0 = (data.shape[0] // 2 - 256) & ~1, (data.shape[1] // 2 - 256) & ~1
    return data[y0 : y0 + 512, x0 : x0 + 512].astype(np.float32)


def test_real_seestar_frame_flux_and_pattern():
    crop = _seestar_crop()
    pattern = "GRBG"
    rcd = debayer(crop, pattern, "rcd")
    bil = debayer(crop, pattern, "bilinear")
    sp = debayer(crop, pattern, "superpixel")
    assert np.isfinite(rcd).all()
    # whole crop: every method keeps each channel's mean level (galaxy + sky)
    inner = (slice(None), slice(8, -8), slice(8, -8))
    mean_sp = sp[:, 4:-4, 4:-4].mean(axis=(1, 2))
    for out in (rcd, bil):
        np.testing.assert_allclose(out[inner].mean(axis=(1, 2)), mean_sp, rtol=2e-3)
    # stars: local maxima of the superpixel luminance well above the sky
    lum = sp.mean(axis=0)
    sky = np.median(lum)
    noise = 1.4826 * np.median(np.abs(lum - sky))
    peaks = (lum == ndimage.maximum_filter(lum, 9)) & (lum > sky + 30 * noise)
    ys, xs = np.nonzero(peaks[8:-8, 8:-8])
    assert len(ys) >= 3, "expected some stars in the M 94 field"
    for y, x in zip(ys + 8, xs + 8, strict=True):
        sum_sp = 4 * sp[:, y - 6 : y + 7, x - 6 : x + 7].sum(axis=(1, 2))
        win = (slice(None), slice(2 * y - 12, 2 * y + 14), slice(2 * x - 12, 2 * x + 14))
        # bilinear preserves each channel's sum over the star's 26x26 window (measured
        # <= 0.07 %); RCD's ratio/direction choices move up to 2.6 % of the window sum
        # between channels for these small coloured stars
        np.testing.assert_allclose(bil[win].sum(axis=(1, 2)), sum_sp, rtol=3e-3)
        np.testing.assert_allclose(rcd[win].sum(axis=(1, 2)), sum_sp, rtol=0.04)
    # pattern arithmetic on real data: crop one row, shift the pattern, same result inside
    shifted = debayer(crop[1:], bayer_shift(pattern, 1, 0), "rcd")
    np.testing.assert_allclose(shifted[:, 12:-12], rcd[:, 13:-12], rtol=1e-5)
