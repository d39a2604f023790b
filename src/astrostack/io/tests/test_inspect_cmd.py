"""The ``astrostack inspect`` command on a synthetic folder."""

from __future__ import annotations

import json

import numpy as np
import typer
from astropy.io import fits
from typer.testing import CliRunner

from astrostack.cli import inspect_cmd


def _app() -> typer.Typer:
    app = typer.Typer()
    inspect_cmd.register(app)

    @app.callback()
    def _root() -> None:  # keep "inspect" as a sub-command
        pass

    return app


def _write(path, imagetyp, exposure, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = fits.Header({"IMAGETYP": imagetyp, "EXPTIME": exposure, "CCD-TEMP": -5.0, **extra})
    fits.PrimaryHDU(np.zeros((24, 32), np.uint16), header=header).writeto(path)


def test_inspect_table_and_json(tmp_path):
    for i in range(3):
        _write(tmp_path / "lights" / f"l{i}.fits", "Light Frame", 180.0, FILTER="OIII", GAIN=120)
        _write(tmp_path / "darks" / f"d{i}.fits", "Dark Frame", 180.0, GAIN=120)
    (tmp_path / "lights" / "broken.fits").write_text("not a fits file")
    runner = CliRunner()
    result = runner.invoke(_app(), ["inspect", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in (
        "light-1",
        "dark-1",
        "32x24",
        "180",
        "gain 120",
        "OIII",
        "-5.0",
        "mono",
        "Calibration plan",
        "no flats",
        "broken.fits",
        "not a FITS file",
    ):
        assert text in out, text

    result = runner.invoke(_app(), ["inspect", str(tmp_path), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert [(g["kind"], g["count"]) for g in data["groups"]] == [("light", 3), ("dark", 3)]
    assert data["plans"][0]["dark"] == "dark-1"
    assert data["skipped"][0]["path"].endswith("broken.fits")


def test_inspect_missing_folder(tmp_path):
    result = CliRunner().invoke(_app(), ["inspect", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "not a folder" in result.stderr
