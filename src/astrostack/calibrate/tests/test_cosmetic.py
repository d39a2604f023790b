"""Cosmetic correction: defect detection and same-colour replacement, against synthetic truth."""

from __future__ import annotations

import numpy as np
import pytest

from astrostack.calibrate.cosmetic import (
    DefectMap,
    correct_defects,
    correct_defects_inplace,
    estimate_noise,
    find_cold_pixels,
    find_defects,
    find_hot_pixels,
    find_isolated_hot,
    local_median,
    median_blur,
    robust_sigma,
)


def _brute_local_median(img: np.ndarray, step: int, radius: int) -> np.ndarray:
    ny, nx = img.shape
    pad = step * radius
    big = np.full((ny + 2 * pad, nx + 2 * pad), np.nan, dtype=np.float64)
    big[pad : pad + ny, pad : pad + nx] = img
    shifted = []
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy == 0 and dx == 0:
                continue
            y0, x0 = pad + dy * step, pad + dx * step
            shifted.append(big[y0 : y0 + ny, x0 : x0 + nx])
    return np.nanmedian(np.stack(shifted), axis=0)


@pytest.mark.parametrize(("cfa", "radius"), [(False, 1), (True, 1), (False, 2), (True, 2)])
def test_local_median_matches_bruteforce(cfa, radius):
    rng = np.random.default_rng(3)
    img = rng.normal(100, 10, (37, 41)).astype(np.float32)
    got = local_median(img, cfa, radius)
    want = _brute_local_median(img, 2 if cfa else 1, radius)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("cfa", "radius"), [(False, 1), (True, 1), (True, 2)])
def test_median_blur_matches_scipy_per_cfa_plane(cfa, radius):
    from scipy.ndimage import median_filter

    rng = np.random.default_rng(4)
    img = rng.normal(100, 10, (40, 52)).astype(np.float32)
    got = median_blur(img, cfa, radius)
    step = 2 if cfa else 1
    for i in range(step):
        for j in range(step):
            want = median_filter(img[i::step, j::step], size=2 * radius + 1, mode="nearest")
            np.testing.assert_array_equal(got[i::step, j::step], want)


def _mosaic_levels(shape, levels):
    """Per-pixel value of a 2x2 CFA tile of *levels* ([y%2, x%2] order)."""
    tile = np.asarray(levels, dtype=np.float32).reshape(2, 2)
    return np.tile(tile, (shape[0] // 2, shape[1] // 2))


def _dark_with_hot(rng, shape, cfa, n_hot=200):
    """A master-dark-like image: per-plane pedestal, gradient, noise and hot pixels."""
    xx = np.mgrid[0 : shape[0], 0 : shape[1]][1].astype(np.float32)
    dark = 20.0 + 0.02 * xx + rng.normal(0, 1.0, shape).astype(np.float32)
    if cfa:
        dark += _mosaic_levels(shape, [0, 40, 40, 80])  # colour-dependent pedestal
    idx = rng.choice(shape[0] * shape[1], n_hot, replace=False)
    hot = np.zeros(shape, dtype=bool)
    hot.flat[idx] = True
    amps = np.exp(rng.uniform(np.log(25.0), np.log(5000.0), n_hot))
    dark.flat[idx] += amps.astype(np.float32)
    return dark, hot


@pytest.mark.parametrize("cfa", [False, True])
def test_hot_pixels_found(cfa):
    rng = np.random.default_rng(11)
    dark, truth = _dark_with_hot(rng, (256, 256), cfa)
    found = find_hot_pixels(dark, cfa, sigma=5.0, min_excess=15.0)
    recall = (found & truth).sum() / truth.sum()
    false = (found & ~truth).sum()
    # amplitudes >= 25 ADU against 1 ADU noise: every one must be found, almost no noise peaks
    assert recall >= 0.99, recall
    assert false <= 3, false


def test_hot_pixels_need_same_colour_neighbours():
    """Mono neighbours mix colour pedestals: the scatter blows up and hot pixels are missed."""
    rng = np.random.default_rng(12)
    dark, truth = _dark_with_hot(rng, (128, 128), cfa=True)
    wrong = find_hot_pixels(dark, cfa=False, sigma=5.0, min_excess=15.0)
    right = find_hot_pixels(dark, cfa=True, sigma=5.0, min_excess=15.0)
    assert (right & ~truth).sum() <= 3
    assert (right & truth).sum() >= 0.99 * truth.sum()
    assert (wrong & truth).sum() < 0.9 * truth.sum()


def test_hot_threshold_scales_with_frames():
    rng = np.random.default_rng(13)
    dark, _ = _dark_with_hot(rng, (128, 128), cfa=False)
    few = find_hot_pixels(dark, False, n_frames=1).sum()
    many = find_hot_pixels(dark, False, n_frames=100).sum()
    assert many < few


def _flat_with_dead(rng, shape, cfa, n_dead=100):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    r2 = ((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2) / (shape[0] / 2) ** 2
    flat = 1.0 - 0.3 * r2 / 2.0
    # a dust donut: 25 % deep ring of radius 12 px
    d = np.hypot(yy - 60, xx - 70)
    flat *= 1.0 - 0.25 * np.exp(-0.5 * ((d - 12.0) / 3.0) ** 2)
    if cfa:
        flat *= _mosaic_levels(shape, [0.6, 1.0, 1.0, 0.4])
    flat = (flat * (1 + rng.normal(0, 0.005, shape))).astype(np.float32)
    idx = rng.choice(shape[0] * shape[1], n_dead, replace=False)
    dead = np.zeros(shape, dtype=bool)
    dead.flat[idx] = True
    flat.flat[idx] *= rng.uniform(0.0, 0.4, n_dead).astype(np.float32)
    return flat, dead


@pytest.mark.parametrize("cfa", [False, True])
def test_cold_pixels_found_despite_vignetting_and_dust(cfa):
    rng = np.random.default_rng(21)
    flat, truth = _flat_with_dead(rng, (256, 256), cfa)
    found = find_cold_pixels(flat, cfa, fraction=0.6)
    assert (found & truth).sum() == truth.sum()
    assert (found & ~truth).sum() == 0


def test_find_defects_combines_and_checks_shapes():
    rng = np.random.default_rng(5)
    dark, hot = _dark_with_hot(rng, (128, 128), cfa=False)
    flat, dead = _flat_with_dead(rng, (128, 128), cfa=False, n_dead=30)
    dm = find_defects(dark, flat, cfa=False, hot_min_excess=15.0)
    assert isinstance(dm, DefectMap)
    assert dm.n_hot == int((dm.hot & hot).sum()) >= 0.99 * hot.sum()
    assert dm.n_cold == int(dead.sum())
    assert dm.mask.sum() == (dm.hot | dm.cold).sum()
    with pytest.raises(ValueError, match="differ in shape"):
        find_defects(dark, flat[:64], cfa=False)
    with pytest.raises(ValueError, match="master dark and/or a master flat"):
        find_defects(None, None, cfa=False)


def test_correct_defects_uses_same_colour_in_mosaic():
    rng = np.random.default_rng(7)
    shape = (64, 64)
    levels = _mosaic_levels(shape, [100.0, 200.0, 200.0, 50.0])
    img = levels + rng.normal(0, 1.0, shape).astype(np.float32)
    mask = np.zeros(shape, dtype=bool)
    mask[10, 10] = mask[21, 33] = mask[40, 41] = mask[41, 41] = True  # R, B, G, B-adjacent
    mask[30:32, 30:32] = True  # a 2x2 cluster: every colour
    bad = img.copy()
    bad[mask] = 60000.0
    before = bad.copy()
    out = correct_defects(bad, mask, cfa=True)
    np.testing.assert_array_equal(bad, before)  # input untouched
    err = np.abs(out[mask] - levels[mask])
    assert err.max() < 4.0, err  # within noise of the right colour (colours differ by >= 50)
    np.testing.assert_array_equal(out[~mask], img[~mask])
    # mono neighbours would mix colours: the error would be tens of ADU
    mono = correct_defects(bad, mask, cfa=False)
    assert np.abs(mono[mask] - levels[mask]).max() > 30.0


def test_correct_defects_mono_and_rgb():
    rng = np.random.default_rng(8)
    yy, xx = np.mgrid[0:50, 0:60].astype(np.float32)
    smooth = 100 + 0.5 * xx + 0.3 * yy
    mask = rng.random((50, 60)) < 0.02
    img = smooth.copy()
    img[mask] = 1e5
    out = correct_defects(img, mask, cfa=False)
    # median of neighbours on a plane reproduces the plane to within the local curvature
    assert np.abs(out[mask] - smooth[mask]).max() < 1.0
    rgb = np.stack([img, 2 * img, 3 * img])
    out3 = correct_defects(rgb, mask, cfa=True)  # a [c, y, x] image is never a mosaic
    for c in range(3):
        assert np.abs(out3[c][mask] - (c + 1) * smooth[mask]).max() < 3.0 * (c + 1)
    with pytest.raises(ValueError, match="mask shape"):
        correct_defects(img, mask[:10], cfa=False)


def _gauss_stars(shape, n, fwhm, rng):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    img = np.zeros(shape, dtype=np.float32)
    ys = rng.uniform(8, shape[0] - 8, n)
    xs = rng.uniform(8, shape[1] - 8, n)
    amps = rng.uniform(200, 3000, n)
    s2 = (fwhm / 2.3548) ** 2
    for y, x, a in zip(ys, xs, amps, strict=True):
        img += (a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s2))).astype(np.float32)
    return img, ys, xs


def test_isolated_hot_pixels_not_stars():
    rng = np.random.default_rng(9)
    shape = (200, 200)
    stars, ys, xs = _gauss_stars(shape, 40, 3.0, rng)
    img = 500 + stars + rng.normal(0, 5, shape).astype(np.float32)
    hot = np.zeros(shape, dtype=bool)
    idx = rng.choice(shape[0] * shape[1], 60, replace=False)
    hot.flat[idx] = True
    img.flat[idx] += rng.uniform(100, 3000, 60).astype(np.float32)
    found = find_isolated_hot(img, cfa=False, sigma=8.0)
    assert (found & hot).sum() >= 0.95 * hot.sum()
    star_pix = np.zeros(shape, dtype=bool)
    for y, x in zip(np.round(ys).astype(int), np.round(xs).astype(int), strict=True):
        star_pix[y - 2 : y + 3, x - 2 : x + 3] = True
    assert (found & star_pix & ~hot).sum() == 0


@pytest.mark.parametrize("cfa", [False, True])
def test_estimate_noise_ignores_stars_gradient_and_cfa(cfa):
    rng = np.random.default_rng(10)
    shape = (256, 256)
    stars, _, _ = _gauss_stars(shape, 80, 3.0, rng)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    img = 300 + 0.8 * xx + 0.3 * yy + stars + rng.normal(0, 7.0, shape).astype(np.float32)
    if cfa:
        img *= _mosaic_levels(shape, [0.5, 1.0, 1.0, 0.7]) / 0.8
        truth = 7.0 * np.sqrt(np.mean(np.array([0.5, 1.0, 1.0, 0.7]) ** 2)) / 0.8
    else:
        truth = 7.0
    # ~4 % of the pixels are on stars: measured +6.7 % (mono), MAD keeps it small
    assert estimate_noise(img, cfa) == pytest.approx(truth, rel=0.08)


def test_correct_defects_inplace_matches_the_copying_version():
    rng = np.random.default_rng(11)
    shape = (64, 70)
    levels = _mosaic_levels(shape, [100.0, 200.0, 200.0, 50.0])
    img = levels + rng.normal(0, 1.0, shape).astype(np.float32)
    mask = rng.random(shape) < 0.03
    mask[20:24, 20:24] = True  # a cluster that needs the wider ring
    img[mask] = 60000.0
    ref = correct_defects(img, mask, cfa=True)
    work = img.copy()
    assert correct_defects_inplace(work, mask, cfa=True) == 0
    np.testing.assert_array_equal(work, ref)
    assert np.abs(work[mask] - levels[mask]).max() < 5.0
    # every pixel masked: nothing usable, all left alone and counted
    flat = np.ones((4, 4), np.float32)
    assert correct_defects_inplace(flat, np.ones((4, 4), bool), cfa=False) == 16
    with pytest.raises(ValueError, match="C-contiguous float32"):
        correct_defects_inplace(img[:, ::2], mask[:, ::2], cfa=True)


def test_robust_sigma_samples_every_cfa_plane():
    # Even width, more pixels than samples: an even stride would only ever see the
    # columns of one parity (here the two quiet planes) and miss the noisy ones.
    rng = np.random.default_rng(12)
    shape = (600, 1000)
    sig = _mosaic_levels(shape, [1.0, 9.0, 1.0, 9.0])  # odd columns noisy
    img = (rng.normal(0, 1.0, shape) * sig).astype(np.float32)
    everything = robust_sigma(img, max_samples=img.size)
    strided = robust_sigma(img, max_samples=img.size // 4)
    assert strided == pytest.approx(everything, rel=0.03)
    quiet_only = robust_sigma(img[:, 0::2])
    assert everything > 1.5 * quiet_only


def _isolated_by_full_blur(img, cfa, sigma, iso_frac, max_samples):
    """The reference search: the whole-frame :func:`median_blur`, then the isolation test."""
    from astrostack.calibrate.cosmetic import _odd_stride
    from astrostack.calibrate.cosmetic_kernels import _isolated_kernel

    img = img.copy()  # median_blur fills non-finite pixels of a mono image in place
    med = median_blur(img, cfa)
    step = _odd_stride(img.size, max_samples)
    s = robust_sigma(img.ravel()[::step] - med.ravel()[::step])
    if s <= 0:
        return np.zeros(img.shape, dtype=bool)
    return _isolated_kernel(img, med, float(sigma * s), float(iso_frac))


@pytest.mark.parametrize("cfa", [False, True])
def test_isolated_hot_sparse_search_flags_what_the_full_blur_flags(cfa):
    # Random sizes (odd and even, edges), integer-valued noise (ties in the medians),
    # hot pixels, 2x2 blobs and candidates on the edges; thresholds from loose to strict.
    from astrostack.calibrate.cosmetic import isolated_hot

    rng = np.random.default_rng(21)
    n_flagged = 0
    for trial in range(60):
        shape = tuple(int(v) for v in rng.integers(6, 50, 2))
        img = rng.normal(100, 5, shape).astype(np.float32)
        if trial % 3 == 0:
            img = np.round(img)
        n = int(rng.integers(0, 30))
        img.flat[rng.choice(img.size, n)] += rng.uniform(10, 500, n).astype(np.float32)
        img[0, int(rng.integers(0, shape[1]))] += 400
        img[int(rng.integers(0, shape[0])), -1] += 400
        for _ in range(3):
            y, x = rng.integers(0, shape[0] - 1), rng.integers(0, shape[1] - 1)
            img[y : y + 2, x : x + 2] += 300
        for sigma, iso in ((8.0, 0.25), (3.0, 0.5), (1.0, 0.9), (5.0, 0.0)):
            want = _isolated_by_full_blur(img, cfa, sigma, iso, 500)
            got, index = isolated_hot(img, cfa, sigma, iso, 500)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(index, np.flatnonzero(want))
            n_flagged += int(want.sum())
    assert n_flagged > 500  # the comparison is not between empty masks


@pytest.mark.parametrize("cfa", [False, True])
def test_isolated_hot_with_non_finite_pixels_matches_the_full_blur(cfa):
    from astrostack.calibrate.cosmetic import isolated_hot
    from astrostack.calibrate.cosmetic_kernels import _isolated_sparse_kernel

    rng = np.random.default_rng(22)
    step = 2 if cfa else 1
    for trial in range(60):
        shape = tuple(int(v) for v in rng.integers(6, 30, 2))
        img = rng.normal(100, 5, shape).astype(np.float32)
        img.flat[rng.choice(img.size, 5)] += 300
        img[rng.integers(0, shape[0]), rng.integers(0, shape[1])] = (np.nan, np.inf, -np.inf)[
            trial % 3
        ]
        # the sparse kernel must notice (its result is then not used)
        _, n_bad = _isolated_sparse_kernel(
            img, step, 10.0, np.float32(10.0), 0.25, np.zeros(shape, bool)
        )
        assert n_bad > 0
        got, _ = isolated_hot(img.copy(), cfa, 5.0)
        np.testing.assert_array_equal(got, _isolated_by_full_blur(img, cfa, 5.0, 0.25, 250_000))


def test_pointwise_blur_equals_median_blur():
    from astrostack.calibrate.cosmetic_kernels import _blur_excess_samples

    rng = np.random.default_rng(23)
    for shape in [(3, 3), (7, 9), (13, 8), (41, 53)]:
        for cfa in (False, True):
            if min(shape) // (2 if cfa else 1) < 3:
                continue
            img = rng.normal(100, 10, shape).astype(np.float32)
            img[rng.random(shape) < 0.2] = 100.0  # ties
            excess = _blur_excess_samples(img, 2 if cfa else 1, 1)
            np.testing.assert_array_equal(excess, (img - median_blur(img, cfa)).ravel())


def _brute_replace(img, mask, step):
    """Median of the unmasked finite same-colour neighbours at distance step, else 2*step."""
    out = img.astype(np.float32).copy()
    ny, nx = img.shape
    for y, x in zip(*np.nonzero(mask), strict=True):
        for r in (1, 2):
            vals = [
                img[y + dy * step, x + dx * step]
                for dy in range(-r, r + 1)
                for dx in range(-r, r + 1)
                if max(abs(dy), abs(dx)) == r
                and 0 <= y + dy * step < ny
                and 0 <= x + dx * step < nx
                and not mask[y + dy * step, x + dx * step]
            ]
            if vals:
                out[y, x] = np.float32(np.median(np.float32(vals)))
                break
    return out


@pytest.mark.parametrize(("shape", "cfa"), [((37, 43), True), ((50, 61), False), ((9, 7), False)])
def test_replace_masked_and_listed_match_bruteforce(shape, cfa):
    # sizes whose pixel count is not a multiple of 8: the last pixels are scanned one by one
    from astrostack.calibrate.cosmetic import replace_listed, replace_masked

    rng = np.random.default_rng(24)
    img = rng.normal(100, 10, shape).astype(np.float32)
    mask = rng.random(shape) < 0.05
    mask[-1, -1] = mask[0, 0] = True
    want = _brute_replace(img, mask, 2 if cfa else 1)
    work = img.copy()
    assert replace_masked(work, mask, cfa) == (int(mask.sum()), 0)
    np.testing.assert_array_equal(work, want)
    work = img.copy()
    assert replace_listed(work, mask, np.flatnonzero(mask), cfa) == 0
    np.testing.assert_array_equal(work, want)
    # two masks (hot, cold) replace their union, without building it
    split = rng.random(shape) < 0.5
    work = img.copy()
    assert replace_masked(work, mask & split, cfa, also=mask & ~split) == (int(mask.sum()), 0)
    np.testing.assert_array_equal(work, want)


def test_replace_masked_with_many_defects():
    # more masked pixels than the first index buffer holds: counted, then listed again
    from astrostack.calibrate.cosmetic import replace_listed, replace_masked

    rng = np.random.default_rng(26)
    img = rng.normal(100, 10, (301, 303)).astype(np.float32)
    mask = rng.random(img.shape) < 0.8
    assert mask.sum() > 2**16
    want = img.copy()
    n_failed = replace_listed(want, mask, np.flatnonzero(mask), cfa=False)
    work = img.copy()
    assert replace_masked(work, mask, cfa=False) == (int(mask.sum()), n_failed)
    np.testing.assert_array_equal(work, want)
