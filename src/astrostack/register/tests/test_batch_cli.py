"""The ``astrostack register`` command and :func:`register_files` on small FITS sessions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial import cKDTree
from typer.testing import CliRunner

from astrostack.cli import app
from astrostack.io import write_fits
from astrostack.register import detect_stars, register_files, transform_rms_difference

from .fields import SHAPE, render_frame, similarity

TRUTHS = {
    "a.fits": similarity(0.0),
    "b.fits": similarity(0.0, shift=(4.6, -3.2)),
    "c.fits": similarity(25.0, shift=(1.4, 2.2)),
    "d.fits": similarity(180.0, shift=(-2.5, 0.7)),
}


@pytest.fixture(scope="module")
def session(tmp_path_factory, sky):
    folder = tmp_path_factory.mktemp("lights")
    for i, (name, m) in enumerate(TRUTHS.items()):
        write_fits(folder / name, render_frame(sky, m, seed=200 + i))
    (folder / "broken.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    return folder


def test_cli_registers_and_warps(session, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["register", str(session), "-o", str(out), "--reference",
                                   str(session / "a.fits")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "4 of 5 frames registered" in res.output
    assert "broken.fits" in res.output
    doc = json.loads((out / "transforms.json").read_text())
    assert doc["reference"].endswith("a.fits")
    for name, truth in TRUTHS.items():
        rec = doc["frames"][name]
        assert rec["ok"] and rec["method"] == "stars"
        assert transform_rms_difference(np.array(rec["matrix"]), truth, SHAPE) < 0.05
    assert (out / "quality.csv").exists() and (out / "quality.json").exists()
    # registered frames: stars sit where the reference has them
    ref = np.load(out / "registered" / "a.npy")
    ref_stars = detect_stars(ref)
    for name in ("b", "c", "d"):
        reg = np.load(out / "registered" / f"{name}.npy")
        assert reg.shape == SHAPE and reg.dtype == np.float32
        assert np.isnan(reg).any()  # the footprint does not cover the reference
        stars = detect_stars(np.nan_to_num(reg, nan=float(np.nanmedian(reg))), border=12)
        d, _j = cKDTree(ref_stars.xy).query(stars.xy[:40])
        assert np.median(d) < 0.05, f"{name}: median star offset {np.median(d):.3f} px"


def test_register_files_picks_reference_and_reports(session, tmp_path):
    files = sorted(session.glob("*.fits"))
    result = register_files(files, tmp_path / "o", interpolation="bilinear")
    assert result.reference is not None and result.reference.name in TRUTHS
    assert set(p.name for p in result.registered) == set(TRUTHS)
    assert "broken.fits" in {p.name for p in result.skipped}
    assert len(result.quality) == 4


def test_cli_bad_arguments(session, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["register", str(tmp_path / "nope"), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no such file" in res.output
    res = runner.invoke(app, ["register", str(session), "-o", str(tmp_path / "o"), "-m", "x"])
    assert res.exit_code != 0
