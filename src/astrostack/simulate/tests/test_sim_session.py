"""A session on disk: layout, headers, determinism, truth round trip, CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import typer
from astropy.io import fits
from typer.testing import CliRunner

from astrostack.cli import simulate_cmd
from astrostack.simulate import (
    SessionConfig,
    load_truth,
    simulate_light,
    simulate_session,
    to_frame,
)

CFG = SessionConfig.small(
    bayer="BGGR", n_darkflats=2, bad_frames={"clouds": 1}, satellites=1, mirrored=1,
    meridian_flip=True, n_lights=6,
)  # fmt: skip


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    out = tmp_path_factory.mktemp("night")
    steps = []
    truth = simulate_session(out, CFG, progress=steps.append)
    return out, truth, steps


def _digest(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_layout_and_progress(session):
    out, _, steps = session
    counts = {d: len(list((out / d).glob("*.fits"))) for d in
              ("bias", "darks", "flats", "darkflats", "lights")}  # fmt: skip
    assert counts == {"bias": 3, "darks": 3, "flats": 3, "darkflats": 2, "lights": 6}
    assert (out / "lights" / "light_0001.fits").is_file()
    for name in ("sky", "extended", "background", "bias", "dark_current", "amp_glow",
                 "hot_pixels", "flat", "vignetting"):  # fmt: skip
        assert (out / "truth" / f"{name}.fits").is_file()
    assert len(steps) == 3 + 3 + 3 + 2 + 6 + 1
    assert not list(out.rglob(".tmp-*"))


def test_headers(session):
    out, truth, _ = session
    kinds = {"bias": "Bias Frame", "darks": "Dark Frame", "darkflats": "Dark Flat",
             "flats": "Flat Field", "lights": "Light Frame"}  # fmt: skip
    dates = []
    for folder, imagetyp in kinds.items():
        for path in sorted((out / folder).glob("*.fits")):
            with fits.open(path, do_not_scale_image_data=True) as hdul:
                raw = hdul[0].header["BZERO"], hdul[0].header["BITPIX"], hdul[0].data.dtype
            assert raw == (32768, 16, np.dtype(">i2"))
            with fits.open(path) as hdul:
                hdr = hdul[0].header
                data = hdul[0].data
            assert data.dtype == np.uint16 and data.shape == CFG.shape
            assert hdr["IMAGETYP"] == imagetyp
            assert hdr["BAYERPAT"] == "BGGR" and hdr["ROWORDER"] == "TOP-DOWN"
            assert hdr["EGAIN"] == CFG.gain and hdr["XBINNING"] == hdr["YBINNING"] == 1
            for key in ("GAIN", "CCD-TEMP", "DATE-OBS", "INSTRUME", "FILTER", "XPIXSZ",
                        "FOCALLEN", "OBJECT", "EXPTIME"):  # fmt: skip
                assert key in hdr
            dates.append((hdr["DATE-OBS"], folder))
    lights = sorted((out / "lights").glob("*.fits"))
    assert [fits.getheader(p)["EXPTIME"] for p in lights] == [CFG.exposure] * 6
    assert fits.getheader(out / "darkflats" / "darkflat_0001.fits")["EXPTIME"] == CFG.flat_exposure
    light_dates = [fits.getheader(p)["DATE-OBS"] for p in lights]
    assert light_dates == sorted(light_dates)
    assert [t.date_obs for t in truth.lights] == light_dates


def test_truth_round_trip(session):
    out, truth, _ = session
    loaded = load_truth(out)
    assert loaded.config == CFG
    assert len(loaded.lights) == 6
    for a, b in zip(truth.lights, loaded.lights, strict=True):
        np.testing.assert_array_equal(a.matrix, b.matrix)
        np.testing.assert_array_equal(a.cosmic_rays, b.cosmic_rays)
        assert (a.fwhm, a.transparency, a.sky_level, a.bad, a.file, a.satellites) == (
            b.fwhm, b.transparency, b.sky_level, b.bad, b.file, b.satellites)  # fmt: skip
    for name in ("sky", "extended", "background", "bias", "dark_current", "flat", "hot_pixels"):
        np.testing.assert_array_equal(getattr(truth, name), getattr(loaded, name))
    assert loaded.sky.shape == (3, *CFG.shape) and loaded.sky.dtype == np.float32
    assert loaded.hot_pixels.dtype == bool
    np.testing.assert_array_equal(loaded.stars.x, truth.stars.x)
    doc = json.loads((out / "truth" / "truth.json").read_text())
    assert doc["bad_frames"] == [
        {"index": t.index, "file": t.file, "reason": "clouds"} for t in truth.lights if t.bad
    ]
    assert doc["gain"] == CFG.gain and doc["read_noise"] == CFG.read_noise
    assert len(doc["column_offsets"]) == CFG.shape[1]
    # The truth sky is the reference frame: light 0's noiseless geometry at truth_fwhm.
    assert truth.relative_matrix(0).tolist() == np.eye(3).tolist()
    # The master-dark truth reproduces the darks' mean level.
    darks = np.stack([fits.getdata(out / d.file).astype(np.float64) for d in truth.darks])
    level = (np.median(darks, axis=0) - truth.bias) / truth.darks[0].exposure
    good = ~truth.hot_pixels
    assert np.median(level[good] - truth.dark_current[good]) == pytest.approx(0, abs=0.01)


def test_bit_identical_rerun(session, tmp_path):
    out, _, _ = session
    simulate_session(tmp_path, CFG)
    assert _digest(out) == _digest(tmp_path)


def test_load_truth_without_session_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="astrostack simulate"):
        load_truth(tmp_path)


def test_cli_simulate(tmp_path):
    app = typer.Typer()
    simulate_cmd.register(app)
    app.command("noop")(lambda: None)  # keep a multi-command app, as the real one
    result = CliRunner().invoke(
        app, ["simulate", str(tmp_path / "s"), "--preset", "small", "--size", "128x96",
              "--lights", "3", "--bayer", "rggb", "--seed", "7"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "s" / "lights").glob("*.fits"))) == 3
    truth = load_truth(tmp_path / "s", maps=False)
    assert truth.config.shape == (96, 128) and truth.config.bayer == "RGGB"
    assert truth.config.seed == 7
    bad = CliRunner().invoke(app, ["simulate", str(tmp_path / "x"), "--preset", "nope"])
    assert bad.exit_code != 0


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"bayer": "XYZW"}, "Bayer"), ({"shape": (16, 64)}, "32x32"), ({"seed": -1}, "seed"),
     ({"bad_frames": {"fog": 1}}, "unknown kinds"), ({"n_lights": 2, "mirrored": 2}, "n_lights"),
     ({"shape": (65, 64), "bayer": "RGGB"}, "even"), ({"moffat_beta": 1.0}, "beta")],
)  # fmt: skip
def test_config_errors_say_what_to_change(changes, match):
    with pytest.raises(ValueError, match=match):
        SessionConfig.small(**changes)


def test_config_dict_round_trip_and_presets():
    for preset in (SessionConfig.small, SessionConfig.demo, SessionConfig.hard):
        cfg = preset(seed=11)
        assert SessionConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    hard = SessionConfig.hard()
    assert hard.meridian_flip and hard.mirrored and hard.satellites and hard.amp_glow > 0
    assert set(hard.bad_frames) == {"clouds", "trailing", "defocus"}
    assert SessionConfig.small().shape == (256, 256)


def test_files_read_back_through_astrostack_io(session):
    io = pytest.importorskip("astrostack.io")
    if not hasattr(io, "read_frame"):
        pytest.skip("astrostack.io.read_frame not available yet")
    out, truth, _ = session
    cfg = truth.config
    for rec in (truth.lights[2], truth.darks[0], truth.flats[1], truth.bias_frames[0],
                truth.darkflats[0]):  # fmt: skip
        frame = io.read_frame(out / rec.file)
        kind = getattr(rec, "kind", "light")
        assert frame.meta.kind == kind
        assert frame.meta.bayer == cfg.bayer and frame.meta.egain == cfg.gain
        assert frame.meta.exposure == rec.exposure
        assert frame.meta.temperature == rec.temperature
        assert frame.meta.date.isoformat(timespec="milliseconds")[:23] == rec.date_obs
    light, rec = simulate_light(cfg, 2)
    disk = io.read_frame(out / truth.lights[2].file)
    mem = to_frame(cfg, light, rec)
    np.testing.assert_array_equal(disk.data, mem.data)
    assert disk.meta.date == mem.meta.date
