"""``astrostack masters DIR`` and ``astrostack calibrate DIR`` on a small simulated night."""

from __future__ import annotations

import shutil

import numpy as np
from astropy.io import fits
from typer.testing import CliRunner

from astrostack.calibrate import (
    Master,
    calibrate_light,
    defects_for_lights,
)
from astrostack.cli import app
from astrostack.io import OUTPUT_MARKER, read_frame
from astrostack.simulate import SessionConfig, simulate_session


def test_masters_then_calibrate(tmp_path):
    night = tmp_path / "night"
    cfg = SessionConfig.small(shape=(128, 160), n_lights=3, n_stars=60, seed=5)
    truth = simulate_session(night, cfg)
    shutil.move(night / "truth", tmp_path / "truth")  # its maps would be found as frames
    out = tmp_path / "out"
    runner = CliRunner()

    res = runner.invoke(app, ["masters", str(night), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "built" in res.output and "reused" not in res.output
    files = sorted(p.name for p in (out / "masters").glob("*.fits"))
    assert files == [
        "master_bias_bias-1.fits",
        "master_dark_dark-1_bias-1.fits",
        "master_flat_flat-1_bias-1_dark-1.fits",
    ]
    assert (out / OUTPUT_MARKER).exists()
    bias = Master.load(out / "masters" / files[0])
    assert bias.kind == "bias" and bias.n_frames == cfg.n_bias
    assert np.sqrt(np.mean((bias.data - truth.bias) ** 2)) < 2.5  # 3 frames of 2.5 ADU noise

    res = runner.invoke(app, ["calibrate", str(night), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "reused" in res.output and "built" not in res.output
    written = sorted((out / "calibrated" / "light-1").glob("*.fits"))
    assert [p.name for p in written] == [f"light_{i:04d}.fits" for i in range(1, 4)]
    header = fits.getheader(written[0])
    assert header["BITPIX"] == -32 and header["ASCALIB"].startswith("offset,dark*1.0000,flat")
    assert header["EXPTIME"] == cfg.exposure

    # the file holds exactly what the API gives with the same masters
    masters = [Master.load(out / "masters" / name) for name in files]
    light = read_frame(night / "lights" / "light_0001.fits")
    defects = defects_for_lights(light, *masters)
    api = calibrate_light(light, *masters, defects=defects)
    np.testing.assert_allclose(fits.getdata(written[0]).astype(np.float32), api.data, rtol=1e-6)
    # and the output folder is never taken for input
    res = runner.invoke(app, ["calibrate", str(night), "-o", str(night / "astrostack-output")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["masters", str(night)])
    assert res.exit_code == 0 and "reused" in res.output


def test_masters_of_a_dark_library(tmp_path):
    """Darks and bias without lights: masters are still built (dark with the bias)."""
    night = tmp_path / "library"
    cfg = SessionConfig.small(shape=(64, 96), n_flats=0, n_lights=0, seed=2)
    simulate_session(night, cfg)
    shutil.rmtree(night / "truth")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["masters", str(night), "-o", str(out)])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (out / "masters").glob("*.fits"))
    assert names == ["master_bias_bias-1.fits", "master_dark_dark-1_bias-1.fits"]
    dark = Master.load(out / "masters" / names[1])
    assert not dark.includes_bias and dark.n_frames == cfg.n_darks


def test_cli_errors(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["masters", str(tmp_path / "missing")])
    assert res.exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["calibrate", str(empty)])
    assert res.exit_code == 1 and "no light frames" in res.output
    res = runner.invoke(app, ["masters", str(empty)])
    assert res.exit_code == 1 and "no bias, dark" in res.output
    res = runner.invoke(app, ["calibrate", str(empty), "--dark-scale", "lots"])
    assert res.exit_code == 2


def test_output_names_never_collide():
    from pathlib import Path

    from astrostack.cli.calibrate_cmd import _output_names

    paths = [
        Path("n1/x.fits"),
        Path("n2/x.fits"),
        Path("n2/y.fit"),
        Path("a/n/z.fit"),
        Path("b/n/z.fit"),
    ]
    names = _output_names(paths)
    assert len(set(names.values())) == len(paths)
    assert names[Path("n2/y.fit")] == "y.fits" and names[Path("n1/x.fits")] == "n1_x.fits"
