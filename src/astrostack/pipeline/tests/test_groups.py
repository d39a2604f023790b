"""Several filters -> one stack each; several exposures of one target -> one stack."""

from __future__ import annotations

import json

import numpy as np
from astropy.io import fits
from scipy.spatial import cKDTree

from astrostack.pipeline import run
from astrostack.register import detect_stars
from astrostack.simulate import SessionConfig, simulate_session


def _small(**kw) -> SessionConfig:
    base = {"n_lights": 4, "n_bias": 3, "n_darks": 3, "n_flats": 3, "seed": 5}
    base.update(kw)
    return SessionConfig.small(**base)


def test_filters_get_their_own_stack_and_exposures_are_merged(tmp_path):
    night = tmp_path / "night"
    # Filter R: two exposures (60 s and 120 s, each with its own darks), one target.
    simulate_session(night / "r60", _small(filter="R", exposure=60.0))
    simulate_session(night / "r120", _small(filter="R", exposure=120.0,
                                            start="2026-03-15T01:00:00"))  # fmt: skip
    # Filter G: one exposure.
    simulate_session(night / "g", _small(filter="G", exposure=60.0,
                                         start="2026-03-15T03:00:00"))  # fmt: skip
    result = run(night, tmp_path / "out")
    assert result.exit_code == 0, (result.skipped, result.warnings)
    names = sorted(g.name for g in result.groups)
    assert names == ["G", "R"]
    by_name = {g.name: g for g in result.groups}
    r = by_name["R"]
    assert len(r.frames) == 8
    # Each R light is calibrated with the darks of its own exposure.
    plans = {f.plan.light.id for f in r.frames}
    assert len(plans) == 2
    for f in r.frames:
        assert f.plan.dark is not None and f.plan.dark.exposure == f.meta.exposure
    assert len(by_name["G"].frames) == 4
    out = tmp_path / "out"
    for name in ("stack_R.fits", "stack_G.fits", "stack_R.tif", "preview_G.png", "preview.png"):
        assert (out / name).is_file(), name
    assert not (out / "stack.fits").exists()
    hdr_r = fits.getheader(out / "stack_R.fits")
    assert hdr_r["FILTER"] == "R" and hdr_r["NCOMBINE"] == len(r.used) >= 6
    assert hdr_r["TOTALEXP"] == sum(f.meta.exposure for f in r.used)
    img = fits.getdata(out / "stack_R.fits")
    assert np.isfinite(img).mean() > 0.8
    session = json.loads((out / "session.json").read_text())
    assert {g["name"] for g in session["groups"]} == {"R", "G"}
    # Filters of one target are registered on one common reference: aligned stacks.
    g = by_name["G"]
    assert g.reference is r.reference and g.best in g.used
    assert fits.getheader(out / "stack_G.fits")["ASREF"] == hdr_r["ASREF"]
    xy = []
    for name in ("stack_R.fits", "stack_G.fits"):
        data = fits.getdata(out / name).astype(np.float32)
        data = np.where(np.isfinite(data), data, np.nanmedian(data))
        xy.append(detect_stars(data, max_stars=80).xy)
    dist, _ = cKDTree(xy[0]).query(xy[1])
    close = dist[dist < 3.0]
    assert close.size > 40
    print(f"groups: {close.size} stars matched, median offset {np.median(close):.3f} px")
    assert float(np.median(close)) < 0.2, np.median(close)
