"""read_meta / read_frame / discover on the real frames in ../shared/data/real (skip if absent)."""

from __future__ import annotations

import numpy as np
import pytest

from astrostack.io import discover, read_frame, read_meta


def test_oscaar_darks_and_lights(real_data):
    folder = real_data / "oscaar-tres1-st10"
    if not folder.is_dir():
        pytest.skip("oscaar data absent")
    dark = read_meta(folder / "tres1-001d.fit")
    light = read_meta(folder / "tres1-020.fit")
    assert (dark.kind, dark.exposure) == ("dark", 60.0)
    assert (light.kind, light.exposure) == ("light", 60.0)
    for meta in (dark, light):
        assert meta.shape == (736, 1092)
        assert meta.binning == (2, 2)
        assert meta.bayer is None
        assert meta.egain == pytest.approx(0.78, abs=1e-6)
        assert -10.5 < meta.temperature < -9.5
        assert meta.camera == "SBIG ST-10 3 CCD Camera"
        assert meta.focal_length_mm is None  # FOCALLEN = 0 means unknown
        assert meta.pixel_size_um == pytest.approx(13.6)
    assert light.filter == "Filter 2"
    assert light.date.isoformat() == "2012-06-17T01:55:35+00:00"
    frame = read_frame(folder / "tres1-001d.fit")
    assert frame.data.dtype == np.float32 and frame.data.shape == (736, 1092)
    assert 100 < float(np.median(frame.data)) < 200  # README: dark median about 150 ADU


def test_oscaar_session(real_data):
    folder = real_data / "oscaar-tres1-st10"
    if not folder.is_dir():
        pytest.skip("oscaar data absent")
    session = discover(folder)
    assert [(g.kind, g.count) for g in session.groups] == [("light", 30), ("dark", 20)]
    plan = session.plans[0]
    assert plan.dark is session.groups_of("dark")[0]
    assert plan.dark_scale == 1.0 and plan.light_offset == "dark"
    assert [p.name for p, _ in session.skipped] == ["README.md"]


def test_seestar_lights_with_spaces(real_data):
    folder = real_data / "seestar-s50-m94"
    if not folder.is_dir():
        pytest.skip("seestar data absent")
    paths = sorted((folder / "1").glob("*.fit"))
    assert paths and " " in paths[0].name
    meta = read_meta(paths[0])
    assert meta.kind == "light"
    assert meta.bayer == "GRBG"
    assert meta.shape == (1920, 1080)
    assert (meta.exposure, meta.gain, meta.filter) == (10.0, 80.0, "IRCUT")
    assert meta.target == "M 94"
    assert meta.pixel_scale_arcsec == pytest.approx(206.264806 * 2.9 / 250, rel=1e-6)
    frame = read_frame(paths[0])
    assert frame.data.shape == (1920, 1080)
    assert 880 < float(np.median(frame.data)) < 930  # README: median about 903-906 ADU
    session = discover(folder)
    lights = session.groups_of("light")
    assert sum(g.count for g in lights) == 15
    assert all(g.bayer == "GRBG" for g in lights)
    # two Seestar units (TELESCOP differs) never share a group
    for g in lights:
        assert len({m.header.get("TELESCOP") for m in g.frames}) == 1
