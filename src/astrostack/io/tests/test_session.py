"""Session discovery on synthetic folders: classification, grouping, master matching, skips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from astrostack.io import IGNORE_MARKER, OUTPUT_MARKER, discover

SHAPE = (48, 64)


def _frame(
    path: Path,
    imagetyp: str | None,
    exposure: float,
    temp: float | None = -10.0,
    filt: str | None = None,
    shape: tuple[int, int] = SHAPE,
    gain: float | None = 100.0,
    pedestal: float | None = None,
    bayer: str | None = None,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = fits.Header()
    if imagetyp is not None:
        header["IMAGETYP"] = imagetyp
    header["EXPTIME"] = exposure
    if temp is not None:
        header["CCD-TEMP"] = temp
    if filt is not None:
        header["FILTER"] = filt
    if gain is not None:
        header["GAIN"] = gain
    if pedestal is not None:
        header["PEDESTAL"] = pedestal
    if bayer is not None:
        header["BAYERPAT"] = bayer
    header["INSTRUME"] = "TestCam"
    fits.PrimaryHDU(np.zeros(shape, np.uint16), header=header).writeto(path)
    return path


@pytest.fixture
def night(tmp_path) -> Path:
    root = tmp_path / "my night"  # a space in the path on purpose
    for i in range(3):
        _frame(root / "lights" / "L" / f"L_{i:03d}.fits", "Light Frame", 120.0, filt="L")
    _frame(root / "lights" / "L" / "L_big.fits", "Light Frame", 120.0, filt="L", shape=(60, 80))
    for i in range(2):
        _frame(root / "lights" / "Ha" / f"Ha_{i:03d}.fits", "LIGHT", 60.0, filt="Ha")
    # darks without IMAGETYP: classified from the folder name
    for i in range(2):
        _frame(root / "darks" / f"d120_{i}.fits", None, 120.0, temp=-10.2)
        _frame(root / "darks" / f"d120warm_{i}.fits", None, 120.0, temp=5.0)
        _frame(root / "darks" / f"d300_{i}.fits", None, 300.0, temp=-9.9)
    for i in range(3):
        _frame(root / "flats" / f"f_{i}.fits", "Flat Field", 2.0 + 0.01 * i, filt="L", temp=None)
        _frame(root / "darkflats" / f"df_{i}.fits", "Dark Flat", 2.0, temp=None)
        _frame(root / "bias" / f"b_{i}.fits", "Bias Frame", 0.0)
    bad = root / "bad"
    truncated = _frame(bad / "truncated.fits", "Light Frame", 120.0, filt="L")
    truncated.write_bytes(truncated.read_bytes()[:4000])
    (bad / "notes.fits").write_text("SIMPLE? no, just my notes\n")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad / "snapshot.jpg")
    (bad / "empty.fit").write_bytes(b"")
    (root / "readme.txt").write_text("my night")
    # never scanned: hidden things and our own output folder
    _frame(root / ".thumbs" / "x.fits", "Light Frame", 120.0, filt="L")
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    out = root / "astrostack-out"
    _frame(out / "master_dark.fits", "Dark Frame", 120.0)
    (out / OUTPUT_MARKER).write_text("")
    reference = root / "reference-maps"
    _frame(reference / "truth_bias.fits", "Bias Frame", 0.0)
    (reference / IGNORE_MARKER).write_text("")
    return root


def test_discover_groups_and_skips(night):
    session = discover(night)
    kinds = {g.id: (g.kind, g.count) for g in session.groups}
    assert kinds == {
        "light-1": ("light", 3),
        "light-2": ("light", 2),
        "light-3": ("light", 1),
        "bias-1": ("bias", 3),
        "dark-1": ("dark", 2),
        "dark-2": ("dark", 2),
        "dark-3": ("dark", 2),
        "darkflat-1": ("darkflat", 3),
        "flat-1": ("flat", 3),
    }
    light_l = session.group("light-1")
    assert light_l.filter == "L" and light_l.exposure == 120.0 and light_l.shape == SHAPE
    assert all(p.name.startswith("L_0") for p in light_l.paths)
    big = session.group("light-3")
    assert big.shape == (60, 80)
    assert any("80x60 while most are 64x48" in n for n in big.notes)
    # darks: 120 s cold, 120 s warm (split by temperature), 300 s
    darks = {(g.exposure, g.temperature) for g in session.groups_of("dark")}
    assert darks == {(120.0, -10.2), (120.0, 5.0), (300.0, -9.9)}
    assert session.group("flat-1").exposure == pytest.approx(2.01)

    skipped = {p.name: reason for p, reason in session.skipped}
    assert set(skipped) == {
        "truncated.fits",
        "notes.fits",
        "snapshot.jpg",
        "empty.fit",
        "readme.txt",
    }
    assert "truncated FITS" in skipped["truncated.fits"]
    assert "text" in skipped["notes.fits"]
    assert "JPEG" in skipped["snapshot.jpg"]
    assert "empty" in skipped["empty.fit"]
    assert "not an image" in skipped["readme.txt"]
    all_paths = {str(p) for g in session.groups for p in g.paths}
    assert not any(".thumbs" in p or "astrostack-out" in p for p in all_paths)
    assert session.frame_count == 3 + 2 + 1 + 6 + 9


def test_master_matching(night):
    session = discover(night)
    plan = session.plan_for("light-1")
    assert plan.bias.id == "bias-1"
    assert (plan.dark.exposure, plan.dark.temperature) == (120.0, -10.2)  # not the warm one
    assert plan.dark_scale == 1.0 and plan.light_offset == "dark"
    assert plan.flat.id == "flat-1" and plan.darkflat.id == "darkflat-1"
    assert plan.flat_offset == "darkflat"
    assert plan.notes == []

    ha = session.plan_for("light-2")
    assert ha.dark.exposure == 300.0
    assert ha.dark_scale == pytest.approx(0.2)
    assert ha.light_offset == "bias"
    assert any("darks 300 s for lights 60 s: dark scaled by exposure" in n for n in ha.notes)
    assert ha.flat is None
    assert any("no flat for filter Ha" in n for n in ha.notes)

    big = session.plan_for("light-3")  # nothing matches its size
    assert (big.bias, big.dark, big.flat) == (None, None, None)
    assert any("no bias and no darks" in n for n in big.notes)


def test_session_json(night):
    session = discover(night)
    data = json.loads(session.to_json())
    assert data["groups"][0]["id"] == "light-1"
    assert data["plans"][0] == session.plans[0].to_dict()
    assert data["plans"][0]["dark"] == session.plans[0].dark.id
    assert len(data["skipped"]) == 5
    frame = data["groups"][0]["frames"][0]
    assert frame["kind"] == "light" and frame["shape"] == [48, 64]
    assert " " in frame["path"]  # the space in "my night" survives


def test_temperature_tolerance_parameter(tmp_path):
    for i, temp in enumerate([-10.0, -9.5, -7.0, -6.5]):
        _frame(tmp_path / "darks" / f"d{i}.fits", "DARK", 60.0, temp=temp)
    assert len(discover(tmp_path).groups_of("dark")) == 2
    wide = discover(tmp_path, temperature_tolerance=5.0).groups_of("dark")
    assert len(wide) == 1 and wide[0].count == 4 and wide[0].temperature == pytest.approx(-8.25)


def test_not_recursive(night):
    session = discover(night, recursive=False)
    assert session.groups == []
    assert [p.name for p, _ in session.skipped] == ["readme.txt"]
    assert "no light frames found" in session.notes


def test_no_bias_no_darks_uses_pedestal(tmp_path):
    for i in range(2):
        _frame(tmp_path / f"light_{i}.fits", "Light Frame", 30.0, pedestal=-100.0)
        _frame(tmp_path / "flat" / f"f_{i}.fits", "FLAT", 1.0, pedestal=-100.0)
    plan = discover(tmp_path).plans[0]
    assert plan.light_offset == "black_level" and plan.constant_offset == 100.0
    assert "no bias and no darks: constant offset 100 ADU from header PEDESTAL" in plan.notes
    assert plan.flat_offset == "black_level"
    assert any("no bias and no dark-flats: flats calibrated with constant offset" in n
               for n in plan.notes)  # fmt: skip


def test_no_bias_flats_with_darkflats_and_scaled_dark_without_bias(tmp_path):
    for i in range(2):
        _frame(tmp_path / "lights" / f"l{i}.fits", None, 120.0)
        _frame(tmp_path / "darks" / f"d{i}.fits", None, 300.0)
        _frame(tmp_path / "flats" / f"f{i}.fits", None, 3.0)
        _frame(tmp_path / "flatdarks" / f"fd{i}.fits", None, 3.0)
    plan = discover(tmp_path).plans[0]
    assert plan.darkflat is not None and plan.flat_offset == "darkflat"
    assert "no bias: flats calibrated with dark-flats" in plan.notes
    # a 300 s dark cannot be scaled to 120 s without knowing the offset
    assert plan.dark.exposure == 300.0 and plan.dark_scale == 1.0
    assert plan.light_offset == "dark"
    assert any("cannot be scaled" in n for n in plan.notes)
    assert not any("same exposure" in n for n in plan.notes)


def test_scaled_dark_without_bias_uses_pedestal(tmp_path):
    for i in range(2):
        _frame(tmp_path / "lights" / f"l{i}.fits", None, 100.0, pedestal=-50.0)
        _frame(tmp_path / "darks" / f"d{i}.fits", None, 400.0, pedestal=-50.0)
    plan = discover(tmp_path).plans[0]
    assert plan.dark_scale == pytest.approx(0.25)
    assert plan.light_offset == "black_level" and plan.constant_offset == 50.0
    assert any("after removing the constant offset 50 ADU" in n for n in plan.notes)


def test_masters_from_same_unit_preferred(tmp_path):
    def unit_frame(path, imagetyp, exposure, telescope):
        _frame(path, imagetyp, exposure)
        with fits.open(path, mode="update") as hdul:
            hdul[0].header["TELESCOP"] = telescope
        return path

    for i in range(2):
        unit_frame(tmp_path / "lights" / f"l{i}.fits", "Light", 30.0, "unit-A")
    for i in range(5):  # more frames, but from another unit
        unit_frame(tmp_path / "biasB" / f"bias_{i}.fits", "Bias", 0.0, "unit-B")
    unit_frame(tmp_path / "biasA" / "bias_0.fits", "Bias", 0.0, "unit-A")
    session = discover(tmp_path)
    assert len(session.groups_of("bias")) == 2
    plan = session.plans[0]
    assert plan.bias.count == 1 and plan.bias.frames[0].header["TELESCOP"] == "unit-A"


def test_bayer_and_gain_separate_groups(tmp_path):
    _frame(tmp_path / "lights" / "a.fits", "Light", 10.0, bayer="RGGB")
    _frame(tmp_path / "lights" / "b.fits", "Light", 10.0, bayer="RGGB", gain=200.0)
    _frame(tmp_path / "lights" / "c.fits", "Light", 10.0)
    _frame(tmp_path / "bias" / "b.fits", "Bias", 0.0, bayer="RGGB", gain=200.0)
    session = discover(tmp_path)
    groups = session.groups_of("light")
    assert len(groups) == 3
    by_key = {(g.bayer, g.gain): g for g in groups}
    plan = session.plan_for(by_key[("RGGB", 100.0)])
    assert plan.bias is not None  # same geometry, different gain: used, with a note
    assert any("different camera settings (gain 200.0 vs 100.0)" in n for n in plan.notes)
    assert session.plan_for(by_key[(None, 100.0)]).bias is None  # mono vs CFA never mixed


def test_discover_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        discover(tmp_path / "nope")


def test_folders_above_the_scanned_one_say_nothing(tmp_path):
    # A night kept under a folder whose name holds a kind word ("flat_field_tests",
    # "lights_2025") must not turn its untyped frames into that kind.
    root = tmp_path / "lights_2025" / "night"
    _frame(root / "darks" / "a_0.fits", None, 60.0)
    _frame(root / "darks" / "a_1.fits", None, 60.0)
    _frame(root / "misc" / "untitled.fits", None, 60.0)
    session = discover(root)
    kinds = {p.name: g.kind for g in session.groups for p in g.paths}
    assert kinds == {"a_0.fits": "dark", "a_1.fits": "dark", "untitled.fits": "unknown"}
    # the scanned folder itself still counts: pointing at a folder named 'darks' works
    inner = discover(root / "darks")
    assert [g.kind for g in inner.groups] == ["dark"]
