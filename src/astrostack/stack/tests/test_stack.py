"""Integration tests on synthetic frames with known ground truth.

Frames are ``transmission * stars + sky(y, x) + noise`` on a common grid; the truth
is the reference frame's noiseless image, so ``stack - truth`` is pure error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astrostack.combine.sources import ArraySource, NpySource
from astrostack.stack import stack_frames, write_stack

SHAPE = (256, 256)
SKY = 1000.0
SIGMA = 10.0
MAD = 1.482602218505602


def stars(rng: np.random.Generator, shape=SHAPE, n: int = 60, fwhm: float = 3.0) -> np.ndarray:
    """Gaussian stars with peaks 20-2000 ADU (a few bright tiles for the signal scale)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape)
    s = fwhm / 2.3548
    for _ in range(n):
        y, x = rng.uniform(8, shape[0] - 8), rng.uniform(8, shape[1] - 8)
        peak = 20.0 * 100.0 ** rng.uniform(0, 1)
        r2 = (yy - y) ** 2 + (xx - x) ** 2
        img += peak * np.exp(-0.5 * r2 / s**2) * (r2 < 100)
    return img


def gradient(shape, level, gy, gx) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return level + gy * (yy - shape[0] / 2) + gx * (xx - shape[1] / 2)


def frames(n, rng, scene, sigmas=None, skies=None):
    """n frames ``scene + sky_i + N(0, sigma_i)``; sky_i a random plane around SKY."""
    out = []
    for i in range(n):
        sky = (
            skies[i]
            if skies is not None
            else gradient(SHAPE, SKY + rng.normal(0, 20), *rng.normal(0, 0.05, 2))
        )
        sig = SIGMA if sigmas is None else sigmas[i]
        out.append((scene + sky + rng.normal(0, sig, SHAPE)).astype(np.float32))
    return out


def robust_std(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(MAD * np.median(np.abs(x - np.median(x))))


def tile_medians(x: np.ndarray, t: int = 32) -> np.ndarray:
    h, w = x.shape
    return np.median(x[: h // t * t, : w // t * t].reshape(h // t, t, w // t, t), axis=(1, 3))


def test_outliers_removed_and_no_residual():
    rng = np.random.default_rng(11)
    scene = stars(rng)
    skies = [gradient(SHAPE, SKY + rng.normal(0, 20), 0.02, -0.03) for _ in range(20)]
    data = frames(20, rng, scene, skies=skies)
    clean = [f.copy() for f in data]
    hit = np.zeros(SHAPE, bool)
    for i, f in enumerate(data):
        ys, xs = rng.integers(0, SHAPE[0], 150), rng.integers(0, SHAPE[1], 150)
        f[ys, xs] += rng.uniform(300, 5000, 150).astype(np.float32)  # cosmic rays
        hit[ys, xs] = True
        if i % 4 == 0:  # a satellite trail, 3 px wide, 400 ADU (40 sigma)
            yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
            line = np.abs(yy - (rng.uniform(0.2, 1.2) * xx + rng.uniform(10, 60))) < 1.5
            f[line] += 400
            hit |= line
    truth = scene + skies[0]
    res = stack_frames([ArraySource(f) for f in data], method="winsorized")
    ref = stack_frames([ArraySource(f) for f in clean], method="winsorized")
    resid = res.image - truth
    noise = robust_std(resid[~hit])
    assert noise < 1.1 * SIGMA / np.sqrt(20)
    assert hit.sum() > 2500
    # what the outliers left behind: the difference to the same stack without them
    leak = np.abs(res.image - ref.image)[hit] / noise
    print(f"outliers: noise {noise:.3f} (ideal {SIGMA / np.sqrt(20):.3f}), leak max "
          f"{leak.max():.2f} mean {leak.mean():.3f} sigma")  # fmt: skip
    assert leak.max() < 3.0, leak.max()
    assert leak.mean() < 0.3, leak.mean()
    # against the truth the injected pixels look like any others (Gaussian: 0.27 % > 3 sigma)
    z = np.abs(resid[hit]) / noise
    assert np.mean(z > 3) < 0.01
    assert abs(np.mean(resid[hit])) < 0.1 * noise
    # and the outliers were really there: a plain mean keeps them
    mean = stack_frames([ArraySource(f) for f in data], method="mean", weighting="none")
    assert np.abs(mean.image - truth)[hit].max() > 50 * noise
    assert res.rejected_high[hit].sum() >= hit.sum()


@pytest.mark.parametrize("normalization", ["local", "additive+scale", "additive"])
def test_clipped_noise_is_sigma_over_sqrt_n(normalization):
    rng = np.random.default_rng(5)
    scene = stars(rng)
    # global normalisations assume frames differ by level and scale only (no gradients)
    slope = 0.05 if normalization == "local" else 0.0
    skies = [gradient(SHAPE, SKY + rng.normal(0, 20), *rng.normal(0, slope, 2)) for _ in range(20)]
    data = frames(20, rng, scene, skies=skies)
    res = stack_frames([ArraySource(f) for f in data], method="sigma", normalization=normalization)
    resid = res.image - (scene + skies[0])
    noise = robust_std(resid)
    expected = SIGMA / np.sqrt(20)
    print(f"{normalization}: clipped-stack noise {noise:.3f} vs sigma/sqrt(N) {expected:.3f}")
    assert abs(noise / expected - 1) < 0.05, (normalization, noise, expected)


def tile_medians_surface(x: np.ndarray, t: int = 32) -> np.ndarray:
    """A smooth (blocky) surface of 32-px tile medians, to remove the sky level."""
    tm = tile_medians(x, t)
    return np.kron(tm, np.ones((t, t)))


def test_noise_weighting_beats_unweighted():
    rng = np.random.default_rng(7)
    scene = stars(rng)
    sigmas = [5.0] * 10 + [20.0] * 10
    data = frames(20, rng, scene, sigmas=sigmas)
    srcs = [ArraySource(f) for f in data]
    w = stack_frames(srcs, method="winsorized", weighting="noise")
    u = stack_frames(srcs, method="winsorized", weighting="none")
    nw = robust_std(w.image - scene - tile_medians_surface(w.image - scene))
    nu = robust_std(u.image - scene - tile_medians_surface(u.image - scene))
    ideal = 1 / np.sqrt(sum(1 / s**2 for s in sigmas))
    print(f"weighted noise {nw:.3f}, unweighted {nu:.3f}, inverse-variance ideal {ideal:.3f}")
    assert nw < 0.6 * nu, (nw, nu)
    assert abs(nw / ideal - 1) < 0.1, (nw, ideal)
    weights = np.array([fr.weight[0] for fr in w.frames])
    assert np.allclose(weights[10:] / weights[0], 1 / 16, rtol=0.15)


def _cloud_session(rng):
    scene = stars(rng, n=80)
    skies = [gradient(SHAPE, SKY + rng.normal(0, 10), 0.02, 0.01) for _ in range(20)]
    data = frames(20, rng, scene, skies=skies)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    glow = 600.0 * np.exp(-0.5 * ((yy - 90) ** 2 + (xx - 170) ** 2) / 55.0**2)
    cloud_sky = 2 * skies[7] + glow
    # 1/3 transmission, twice the sky, a glow patch; noise grows with the sky
    data[7] = (
        scene / 3 + cloud_sky + rng.normal(0, SIGMA * np.sqrt(cloud_sky / SKY), SHAPE)
    ).astype(np.float32)
    return scene + skies[0], data


def _quality(image, truth):
    resid = image - truth
    tm = tile_medians(resid)
    flat = float(tm.max() - tm.min())
    noise = robust_std(resid - np.kron(tm, np.ones((32, 32))))
    return noise, flat


def test_thin_cloud_frame_costs_nothing():
    rng = np.random.default_rng(3)
    truth, data = _cloud_session(rng)
    srcs = [ArraySource(f) for f in data]
    with_cloud = stack_frames(srcs)  # defaults: local normalisation, noise weights
    without = stack_frames(srcs[:7] + srcs[8:])
    n_with, f_with = _quality(with_cloud.image, truth)
    n_without, f_without = _quality(without.image, truth)
    print(f"cloud: noise {n_with:.3f} vs {n_without:.3f} without; flatness {f_with:.3f} vs "
          f"{f_without:.3f}; cloud scale {with_cloud.frames[7].scale[0]:.3f} "
          f"weight {with_cloud.frames[7].weight[0]:.4f}")  # fmt: skip
    assert n_with <= 1.005 * n_without, (n_with, n_without)
    assert f_with <= 1.1 * f_without + 0.05 * n_without, (f_with, f_without)
    cloud = with_cloud.frames[7]
    assert cloud.scale_source == "signal"
    # the signal scale follows the transmission (1/3); measured 2.84 under this very
    # steep glow (up to 10 ADU/px), where the quadratic tile background is approximate
    assert 2.6 < cloud.scale[0] < 3.3
    assert cloud.weight[0] < 0.1
    others = np.array([f.scale[0] for i, f in enumerate(with_cloud.frames) if i != 7])
    assert np.abs(others - 1).max() < 0.03
    # star photometry from registration, when given, sets the scale exactly
    info = [{"flux_scale": 1.0 / 3.0 if i == 7 else 1.0} for i in range(20)]
    phot = stack_frames(srcs, frame_info=info)
    assert phot.frames[7].scale[0] == pytest.approx(3.0)
    n_phot, f_phot = _quality(phot.image, truth)
    assert n_phot <= 1.005 * n_without and f_phot <= 1.1 * f_without + 0.05 * n_without
    # a global additive normalisation without weights keeps the glow (600 ADU / 20)
    naive = stack_frames(srcs, normalization="additive", weighting="none", method="mean")
    _, f_naive = _quality(naive.image, truth)
    print(f"cloud: additive, unweighted mean flatness {f_naive:.2f}")
    assert f_naive > 10 * f_with


def test_partial_coverage_leaves_no_edge_band():
    rng = np.random.default_rng(9)
    scene = stars(rng)
    data = []
    edges = [0, 0, 0, 40, 40, 80, 80, 120, 120, 160, 0, 0]
    skies = []
    for e in edges:
        sky = gradient(SHAPE, SKY + rng.normal(0, 30), *rng.normal(0, 0.1, 2))
        skies.append(sky)
        f = (scene + sky + rng.normal(0, SIGMA, SHAPE)).astype(np.float32)
        f[:, :e] = np.nan
        data.append(f)
    res = stack_frames([ArraySource(f) for f in data], method="winsorized")
    truth = scene + skies[0]
    resid = res.image - truth
    assert np.isfinite(resid).all()
    profile = np.median(resid, axis=0)
    se = MAD * np.median(np.abs(resid - profile), axis=0) / np.sqrt(SHAPE[0]) * 1.25
    # flat within noise: no column differs from the overall level by > 5 standard errors
    z = np.abs(profile - np.median(profile)) / se
    print(f"partial coverage: worst column deviation {z.max():.2f} standard errors")
    assert z.max() < 5.0, (z.max(), int(np.argmax(z)))
    # kept + rejected values = frames present in each column band
    present = res.coverage.astype(int) + res.rejected_low + res.rejected_high
    assert (present[:, 10] == 5).all() and (present[:, 200] == 12).all()


def test_write_stack_and_header(tmp_path):
    rng = np.random.default_rng(1)
    scene = stars(rng, n=20)
    data = frames(6, rng, scene)
    paths = []
    for i, f in enumerate(data):
        p = tmp_path / f"f{i}.npy"
        np.save(p, f)
        paths.append(p)
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not a numpy file")
    res = stack_frames(
        [*paths, bad], method="auto", weighting="noise*exposure", frame_info=[{"exposure": 60}] * 7
    )
    assert [Path(p).name for p, _ in res.skipped] == ["bad.npy"]
    out = write_stack(res, tmp_path / "out")
    hdr = fits.getheader(out["stack"])
    assert hdr["STKMETH"] == "auto" and hdr["STKUSED"] == res.method_used != "auto"
    assert hdr["NCOMBINE"] == 6 and hdr["NSKIPPED"] == 1 and hdr["NORMMETH"] == "local"
    img = fits.getdata(out["stack"])
    assert img.dtype == np.float32 or img.dtype.newbyteorder("=") == np.float32
    np.testing.assert_array_equal(img, res.image)
    np.testing.assert_array_equal(fits.getdata(out["coverage"]), res.coverage)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "coverage.fits",
        "rejection_high.fits",
        "rejection_low.fits",
        "stack.fits",
        "weight.fits",
    ]
    assert NpySource(paths[0]).shape == SHAPE


def test_colour_frames_per_channel():
    rng = np.random.default_rng(21)
    scene = stars(rng, n=80)
    tint = np.array([1.0, 0.8, 0.5])
    levels = np.array([800.0, 1000.0, 1200.0])
    truth = scene[None] * tint[:, None, None] + levels[:, None, None]
    data = []
    for i in range(8):
        t = 1.0 if i != 5 else 0.5  # one hazy frame: half the signal in every channel
        sky = levels[:, None, None] * (1 + 0.05 * (i % 3))
        noisy = t * scene[None] * tint[:, None, None] + sky + rng.normal(0, SIGMA, (3, *SHAPE))
        data.append(noisy.astype(np.float32))
    res = stack_frames([ArraySource(f) for f in data], method="winsorized")
    assert res.image.shape == (3, *SHAPE)
    hazy = np.array(res.frames[5].scale)
    print(f"colour: hazy frame scales {hazy.round(3)}")
    assert np.all(np.abs(hazy - 2.0) < 0.2), hazy  # per-channel signal scale
    for c in range(3):
        noise = robust_std(res.image[c] - truth[c])
        # 8 frames, the hazy one weighted ~1/4: ideal sigma / sqrt(7.25)
        assert noise < 1.1 * SIGMA / np.sqrt(7.25), (c, noise)
        assert abs(np.median(res.image[c] - truth[c])) < 0.3


def test_statistics_cache_skips_the_measuring_pass(tmp_path, monkeypatch):
    import astrostack.stack.integrate as integrate

    rng = np.random.default_rng(5)
    scene = stars(rng, n=20)
    paths = []
    for i, f in enumerate(frames(6, rng, scene)):
        paths.append(tmp_path / f"f{i}.npy")
        np.save(paths[-1], f)
    cache = tmp_path / "stats"
    first = stack_frames(paths, method="sigma", stats_cache=cache)
    assert len(list(cache.glob("*.pkl"))) == 6
    calls = []
    real = integrate.measure_frame

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(integrate, "measure_frame", counted)
    # Same frames, other rejection: no frame is measured again, normalisation is identical.
    again = stack_frames(paths, method="winsorized", stats_cache=cache)
    assert calls == []
    np.testing.assert_array_equal([r.scale for r in again.frames], [r.scale for r in first.frames])
    plain = stack_frames(paths, method="winsorized")
    np.testing.assert_array_equal(again.image, plain.image)
    # A rewritten frame (new mtime) is measured afresh, and only that one.
    calls.clear()
    np.save(paths[2], np.load(paths[2]) + 1.0)
    stack_frames(paths, method="winsorized", stats_cache=cache)
    assert len(calls) == 1
