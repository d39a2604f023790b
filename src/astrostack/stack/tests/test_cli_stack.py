"""``astrostack stack`` end to end on a folder of registered .npy/FITS frames."""

from __future__ import annotations

import json

import numpy as np
from astropy.io import fits
from typer.testing import CliRunner

from astrostack.cli import app


def test_stack_command_writes_outputs(tmp_path):
    rng = np.random.default_rng(8)
    folder = tmp_path / "registered"
    folder.mkdir()
    names = []
    for i in range(7):
        frame = rng.normal(500, 5, (48, 64)).astype(np.float32)
        frame[10, 10 + i] += 4000  # a cosmic ray per frame
        if i % 2:
            np.save(folder / f"f{i}.npy", frame)
            names.append(f"f{i}.npy")
        else:
            fits.PrimaryHDU(frame).writeto(folder / f"f{i}.fits")
            names.append(f"f{i}.fits")
    (folder / "notes.txt").write_text("ignored")
    (folder / "broken.fits").write_bytes(b"SIMPLE  =                    T")
    info = tmp_path / "info.json"
    info.write_text(json.dumps({n: {"exposure": 30.0} for n in [*names, "broken.fits"]}))
    out = tmp_path / "out" / "m42.fits"
    res = CliRunner().invoke(
        app,
        [
            "stack", str(folder), "-o", str(out), "--method", "winsorized", "--sigma-low", "4",
            "--sigma-high", "3", "--normalization", "additive", "--weighting", "noise*exposure",
            "--memory", "1MB", "--scheduler", "synchronous", "--info", str(info),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    img = fits.getdata(out)
    hdr = fits.getheader(out)
    assert hdr["NCOMBINE"] == 7 and hdr["NSKIPPED"] == 1 and hdr["SIGLOW"] == 4.0
    assert np.abs(img - 500).max() < 10  # cosmic rays rejected (each would add ~570)
    cov = fits.getdata(tmp_path / "out" / "m42_coverage.fits")
    assert cov[10, 10:17].max() <= 6 and cov.max() == 7
    bad = CliRunner().invoke(app, ["stack", str(tmp_path / "nope"), "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2
