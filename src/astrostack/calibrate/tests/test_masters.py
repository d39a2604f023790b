"""Masters and calibrated lights against the simulator's ground truth.

One mono session (96 bias, 16 darks, 12 flats, 8 dark-flats, 2 lights of 300 s, 256x256)
and one small RGGB session are simulated once per module; every number asserted is measured
against the simulator's truth maps.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from astrostack.calibrate import (
    Master,
    build_master_bias,
    build_master_dark,
    build_master_darkflat,
    build_master_flat,
    calibrate_light,
    defects_for_lights,
    load_or_build_master,
    local_median,
)
from astrostack.io import read_frame
from astrostack.simulate import SessionConfig, make_scene, make_sensor, simulate_session
from astrostack.simulate.frames import light_signal, plan_lights, simulate_light

MONO = SessionConfig.small(
    n_bias=96,
    n_darks=16,
    n_flats=12,
    n_lights=2,
    n_darkflats=8,
    exposure=300.0,
    hot_pixel_density=3000.0,
    seed=7,
)
RGGB = SessionConfig.small(
    n_bias=16,
    n_darks=8,
    n_flats=8,
    n_lights=1,
    exposure=120.0,
    bayer="RGGB",
    hot_pixel_density=3000.0,
    seed=11,
)


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.fits"))


class _Built:
    """A simulated session with its masters built once."""

    def __init__(self, root: Path, config: SessionConfig):
        self.config = config
        self.truth = simulate_session(root, config)
        self.root = root
        self.sensor = make_sensor(config)
        self.scene = make_scene(config)
        self.bias = build_master_bias(_files(root / "bias"))
        self.dark = build_master_dark(_files(root / "darks"), master_bias=self.bias)
        self.flat = build_master_flat(
            _files(root / "flats"), master_bias=self.bias, master_dark=self.dark
        )
        sample = read_frame(root / "lights" / "light_0001.fits")
        self.defects = defects_for_lights(sample, self.bias, self.dark, self.flat)

    def expected_light(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """True calibrated light (sky x exposure / gain, flat removed) and its noise, ADU.

        The master flat is normalised to a median of 1 per CFA plane, so the calibrated
        light is the flat-free signal times that plane's median of the true flat.
        """
        cfg, sensor = self.config, self.sensor
        plan = plan_lights(cfg)[index]
        signal = light_signal(cfg, plan, self.scene, sensor)  # electrons, through the flat
        norm = _plane_median_image(sensor.flat * sensor.qe, self.flat.cfa)
        response = sensor.flat * sensor.qe / norm
        expected = signal / response / cfg.gain
        dark_e = sensor.dark_rate(cfg, plan.temperature) * plan.exposure
        sigma = np.sqrt(signal + dark_e + cfg.read_noise**2) / cfg.gain / response
        return expected, sigma


def _plane_median_image(img: np.ndarray, cfa: bool) -> np.ndarray:
    out = np.empty_like(img, dtype=np.float64)
    if not cfa:
        out[...] = np.median(img)
        return out
    for i in range(2):
        for j in range(2):
            out[i::2, j::2] = np.median(img[i::2, j::2])
    return out


@pytest.fixture(scope="module")
def mono(tmp_path_factory) -> _Built:
    return _Built(tmp_path_factory.mktemp("mono"), MONO)


@pytest.fixture(scope="module")
def rggb(tmp_path_factory) -> _Built:
    return _Built(tmp_path_factory.mktemp("rggb"), RGGB)


def test_master_bias_matches_true_pattern(mono):
    rms = np.sqrt(np.mean((mono.bias.data - mono.truth.bias) ** 2))
    assert rms < 0.5, rms  # read noise 2.5 ADU per frame, 96 frames
    assert mono.bias.n_frames == 96 and mono.bias.method == "median"
    # the column pattern (2 ADU RMS) is reproduced, not smoothed away
    cols = mono.bias.data.mean(axis=0) - mono.bias.data.mean()
    assert np.corrcoef(cols, mono.truth.column_offsets)[0, 1] > 0.99
    # winsorized sigma-clipped mean: the option works and is more efficient than the median
    wins = build_master_bias(_files(mono.root / "bias"), method="winsorized")
    rms_w = np.sqrt(np.mean((wins.data - mono.truth.bias) ** 2))
    assert rms_w < 0.9 * rms, (rms_w, rms)


def test_master_dark_thermal_signal(mono):
    thermal = mono.truth.dark_current * mono.config.exposure  # ADU at the darks' temperature
    unsaturated = thermal + mono.truth.bias < 60000
    sel = (thermal > 50) & unsaturated
    rel = mono.dark.data[sel] / thermal[sel] - 1.0
    assert sel.sum() > 100
    assert np.sqrt(np.mean(rel**2)) < 0.05, np.sqrt(np.mean(rel**2))  # measured 3.1 %
    assert abs(np.mean(rel)) < 0.01  # no bias in the level
    assert not mono.dark.includes_bias and mono.dark.exposure == 300.0
    assert mono.dark.temperature == pytest.approx(MONO.temperature)
    # without a master offset the dark keeps the offset
    raw = build_master_dark(_files(mono.root / "darks")[:4])
    assert raw.includes_bias
    assert np.median(raw.data - mono.dark.data) == pytest.approx(MONO.bias_level, abs=2.0)


def test_master_flat_matches_true_flat(mono):
    true_flat = mono.truth.flat / np.median(mono.truth.flat)
    rms = np.sqrt(np.mean((mono.flat.data / true_flat - 1.0) ** 2))
    assert rms < 0.01, rms  # measured 0.2 %
    assert np.median(mono.flat.data) == pytest.approx(1.0, abs=1e-4)
    assert mono.flat.header["ASFLATPR"].startswith("offset+dark")


def test_master_flat_with_darkflats(mono):
    darkflat = build_master_darkflat(_files(mono.root / "darkflats"))
    assert darkflat.kind == "darkflat" and darkflat.includes_bias and darkflat.n_frames == 8
    assert darkflat.exposure == MONO.flat_exposure
    flat = build_master_flat(_files(mono.root / "flats"), master_darkflat=darkflat)
    assert flat.header["ASFLATPR"] == "dark-flat"
    true_flat = mono.truth.flat / np.median(mono.truth.flat)
    rms = np.sqrt(np.mean((flat.data / true_flat - 1.0) ** 2))
    assert rms < 0.01, rms
    # without any offset removal the offset dilutes the vignetting: corner/centre contrast
    raw = build_master_flat(_files(mono.root / "flats")[:4])

    def contrast(img):
        return np.median(img[:16, :16]) / np.median(img[120:136, 120:136])

    err = abs(contrast(flat.data) - contrast(true_flat))
    err_raw = abs(contrast(raw.data) - contrast(true_flat))
    assert err < 0.002 and err_raw > 3 * err, (err, err_raw)


def test_dark_optimisation_on_temperature_mismatch(tmp_path):
    """Darks 10 deg C warmer than the lights: the optimised k matches the thermal ratio."""
    cfg = SessionConfig.small(
        n_bias=16, n_darks=12, n_flats=1, n_lights=1, exposure=300.0,
        hot_pixel_density=3000.0, dark_temperature=0.0, seed=21,
    )  # fmt: skip
    truth = simulate_session(tmp_path, cfg)
    bias = build_master_bias(_files(tmp_path / "bias"))
    dark = build_master_dark(_files(tmp_path / "darks"), master_bias=bias)
    light = read_frame(tmp_path / "lights" / "light_0001.fits")
    k_true = cfg.thermal_factor(cfg.temperature) / cfg.thermal_factor(cfg.dark_temperature_c)
    opt = calibrate_light(light, bias=bias, dark=dark, dark_scale="optimize")
    assert opt.meta.header["ASDARKK"] == pytest.approx(k_true, rel=0.05)  # 0.315
    plain = calibrate_light(light, bias=bias, dark=dark)  # exposure ratio: k = 1
    assert plain.meta.header["ASDARKK"] == 1.0
    # hot pixels against their neighbours: over-subtracted with k = 1, right with k optimised
    hot = truth.hot_pixels.astype(bool) & (truth.dark_current * cfg.exposure > 200)
    dev_opt = (opt.data - local_median(opt.data, cfa=False))[hot]
    dev_one = (plain.data - local_median(plain.data, cfa=False))[hot]
    assert hot.sum() > 20
    assert abs(np.median(dev_opt)) < 0.1 * abs(np.median(dev_one)), (dev_opt, dev_one)


def test_master_flat_cfa_planes_normalised(rggb):
    flat = rggb.flat.data
    assert rggb.flat.cfa and rggb.flat.bayer == "RGGB"
    for i in range(2):
        for j in range(2):
            assert np.median(flat[i::2, j::2]) == pytest.approx(1.0, abs=1e-3)
    true_flat = _plane_median_image(rggb.sensor.flat, cfa=True)
    true_flat = rggb.sensor.flat / true_flat
    rms = np.sqrt(np.mean((flat / true_flat - 1.0) ** 2))
    assert rms < 0.01, rms
    # streamed in bands of 7 rows (odd: CFA row parity changes between bands): same result
    banded = build_master_flat(
        _files(rggb.root / "flats"),
        master_bias=rggb.bias,
        master_dark=rggb.dark,
        combine_options={"band_rows": 7},
    )
    np.testing.assert_allclose(banded.data, flat, rtol=1e-6)


@pytest.mark.parametrize("name", ["mono", "rggb"])
def test_calibrated_light_matches_truth(name, request):
    s: _Built = request.getfixturevalue(name)
    light = read_frame(s.root / "lights" / "light_0001.fits")
    cal = calibrate_light(light, bias=s.bias, dark=s.dark, flat=s.flat, defects=s.defects)
    assert cal.data.dtype == np.float32
    expected, sigma = s.expected_light(0)
    resid = cal.data - expected
    hot = s.truth.hot_pixels.astype(bool)
    hits = np.zeros(hot.shape, bool)
    for x, y, _ in s.truth.lights[0].cosmic_rays:
        hits[max(0, int(y) - 2) : int(y) + 3, max(0, int(x) - 2) : int(x) + 3] = True
    good = ~hot & ~hits & (light.data < 60000) & ~s.defects.mask
    chi = resid[good] / sigma[good]
    # mean error far below the noise, and the noise itself as the model says
    assert abs(np.mean(chi)) < 0.2, np.mean(chi)  # measured -0.005 (mono)
    assert 0.9 < np.std(chi) < 1.15, np.std(chi)
    # hot pixels: corrected (replaced or dark-subtracted) to within 5 sigma
    ok = np.abs(resid[hot]) < 5 * sigma[hot]
    assert hot.sum() > 10 and ok.mean() >= 0.99, ok.mean()
    # the hot pixels that stand out of the noise are far off in the offset-only light
    thermal = s.truth.dark_current * s.config.exposure
    strong = hot & (thermal > 10 * sigma)
    offset_only = calibrate_light(light, bias=s.bias, flat=s.flat)
    off = np.abs(offset_only.data - expected)[strong] < 5 * sigma[strong]
    assert strong.sum() >= 10 and not off.any(), (strong.sum(), off.mean())
    assert np.abs(resid[strong]).max() < 5 * sigma[strong].max()


def test_flat_structure_removed(mono):
    """Noise-free light: calibrated / truth is flat to < 1 % (vignetting and dust gone)."""
    cfg = mono.config
    data, _ = simulate_light(cfg, 0, noise=False, scene=mono.scene, sensor=mono.sensor)
    light = read_frame(mono.root / "lights" / "light_0001.fits")
    light.data = data.astype(np.float32)
    cal = calibrate_light(light, bias=mono.truth.bias, dark=None, flat=mono.flat)
    expected, _ = mono.expected_light(0)
    background = mono.sensor.dark_rate(cfg, cfg.temperature) * cfg.exposure / cfg.gain
    ratio = cal.data / (expected + background / (mono.sensor.flat / np.median(mono.sensor.flat)))
    # 16x16 block medians: pixel noise and rounding averaged out, flat structure kept
    blocks = _block_medians(ratio)
    structure = np.std(blocks) / np.mean(blocks)
    assert structure < 0.01, structure
    raw = (light.data - mono.truth.bias) / (expected + 1e-6)
    blocks_raw = _block_medians(raw)
    assert np.std(blocks_raw) / np.mean(blocks_raw) > 5 * structure  # vignetting was there
    # the dust donuts in particular
    for dust in mono.sensor.dust:
        y, x = int(dust["y"]), int(dust["x"])
        patch = ratio[max(0, y - 8) : y + 9, max(0, x - 8) : x + 9]
        assert abs(np.median(patch) / np.median(ratio) - 1.0) < 0.01


def _block_medians(img: np.ndarray, size: int = 16) -> np.ndarray:
    ny, nx = img.shape[0] // size, img.shape[1] // size
    tiles = img[: ny * size, : nx * size].reshape(ny, size, nx, size).transpose(0, 2, 1, 3)
    return np.median(tiles.reshape(ny, nx, -1), axis=-1)


def test_bad_frames_are_skipped(mono, tmp_path, caplog):
    good = _files(mono.root / "darks")[:5]
    folder = tmp_path / "darks"
    folder.mkdir()
    paths = []
    for p in good:
        q = folder / p.name
        q.write_bytes(p.read_bytes())
        paths.append(q)
    truncated = folder / "dark_truncated.fits"
    truncated.write_bytes(good[0].read_bytes()[:20000])
    text = folder / "notes.fits"
    text.write_text("this is not a FITS file\n")
    small = folder / "dark_small.fits"
    from astropy.io import fits

    fits.PrimaryHDU(np.zeros((64, 64), np.uint16), fits.getheader(good[0])).writeto(small)
    with caplog.at_level(logging.WARNING):
        master = build_master_dark(
            [*paths[:2], truncated, text, small, *paths[2:]], master_bias=mono.bias
        )
    assert master.n_frames == 5
    skipped = {p.name: reason for p, reason in master.skipped}
    assert set(skipped) == {"dark_truncated.fits", "notes.fits", "dark_small.fits"}
    assert "truncated" in skipped["dark_truncated.fits"]
    assert "64x64" in skipped["dark_small.fits"] and "256x256" in skipped["dark_small.fits"]
    for name in skipped:
        assert name in caplog.text
    clean = build_master_dark(paths, master_bias=mono.bias)
    np.testing.assert_array_equal(master.data, clean.data)
    with pytest.raises(ValueError, match="no usable dark frames"):
        build_master_dark([truncated, text])


def test_master_reused_while_inputs_unchanged(mono, tmp_path, caplog):
    from astropy.io import fits

    (tmp_path / "darks").mkdir()
    darks = []
    for p in _files(mono.root / "darks")[:4]:  # copies: the test touches one of them
        darks.append(tmp_path / "darks" / p.name)
        darks[-1].write_bytes(p.read_bytes())
    out = tmp_path / "masters" / "master_dark.fits"
    first = load_or_build_master("dark", darks, out, master_bias=mono.bias)
    header = fits.getheader(out)
    assert header["ASKIND"] == "dark" and header["NCOMBINE"] == 4
    assert header["ASMETHOD"] == "winsorized" and header["ASHASH"] == first.digest
    assert header["ASBIAS"] == mono.bias.digest and header["EXPTIME"] == 300.0
    assert header["BITPIX"] == -32
    history = "".join(str(h) for h in header["HISTORY"])
    assert all(p.name in history for p in darks)

    with caplog.at_level(logging.INFO, logger="astrostack.calibrate.masters"):
        again = load_or_build_master("dark", darks, out, master_bias=mono.bias)
    assert "reusing master dark" in caplog.text
    np.testing.assert_array_equal(again.data, first.data)
    assert again.digest == first.digest and not again.includes_bias

    def run(**kwargs):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="astrostack.calibrate.masters"):
            master = load_or_build_master("dark", darks, out, **kwargs)
        return master, "reusing master dark" in caplog.text

    # a changed parameter or a changed master offset forces a rebuild ...
    median, reused = run(master_bias=mono.bias, method="median")
    assert not reused and median.digest != first.digest and median.method == "median"
    no_bias, reused = run(master_bias=None)
    assert not reused and no_bias.includes_bias
    rebuilt, reused = run(master_bias=mono.bias)
    assert not reused and rebuilt.digest == first.digest
    _, reused = run(master_bias=mono.bias)
    assert reused
    # ... and so does an input file that changed
    st = darks[0].stat()
    os.utime(darks[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rebuilt, reused = run(master_bias=mono.bias)
    assert not reused and rebuilt.digest != first.digest
    # loaded back from disk it is the same master
    loaded = Master.load(out)
    np.testing.assert_array_equal(loaded.data, rebuilt.data)
    assert loaded.kind == "dark" and loaded.n_frames == 4


def test_external_masters_load_with_kind(tmp_path):
    from astropy.io import fits

    from astrostack.io import FrameReadError

    rng = np.random.default_rng(0)
    flat = rng.uniform(2000, 4000, (32, 48)).astype(np.float32)
    path = tmp_path / "siril_master_flat.fit"
    fits.PrimaryHDU(flat, fits.Header({"BAYERPAT": "RGGB", "EXPTIME": 2.0})).writeto(path)
    with pytest.raises(FrameReadError, match=r"siril_master_flat\.fit.*kind="):
        Master.load(path)
    m = Master.load(path, kind="flat")
    assert m.kind == "flat" and m.cfa and m.exposure == 2.0
    for i in range(2):
        for j in range(2):
            assert np.median(m.data[i::2, j::2]) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(
        m.data[0::2, 0::2] * np.median(flat[0::2, 0::2]), flat[0::2, 0::2], rtol=1e-5
    )
    dark_path = tmp_path / "dark.fits"
    fits.PrimaryHDU(flat).writeto(dark_path)
    dark = Master.load(dark_path, kind="dark")
    assert dark.includes_bias and dark.digest
    np.testing.assert_array_equal(dark.data, flat)


def test_master_memory_is_bounded(mono):
    """96 bias frames (24 MiB of float32) combined within a 4 MB budget: same master."""
    import tracemalloc

    files = _files(mono.root / "bias")
    tracemalloc.start()
    try:
        small = build_master_bias(files, memory_limit="4MB")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    full_stack = len(files) * 256 * 256 * 4
    assert peak < 0.35 * full_stack, (peak, full_stack)
    np.testing.assert_array_equal(small.data, mono.bias.data)
