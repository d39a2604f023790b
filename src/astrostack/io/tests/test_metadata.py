"""Header classification, keyword mapping and Bayer pattern rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astrostack.io import FrameReadError, read_frame, read_meta
from astrostack.io.metadata import (
    BAYER_PATTERNS,
    bayer_shift,
    classify_kind,
    flip_pattern_vertically,
    kind_from_path,
    meta_from_dict,
    meta_from_fits_header,
    meta_to_dict,
    normalize_pattern,
    parse_fits_date,
    pattern_for_array,
)

HEADER_SPELLINGS = [
    ("Bias Frame", "bias"),
    ("BIAS", "bias"),
    ("bias", "bias"),
    ("Offset", "bias"),
    ("OFFSET", "bias"),
    ("Zero", "bias"),
    ("zero frame", "bias"),
    ("Master Bias", "bias"),
    ("Dark Frame", "dark"),
    ("DARK", "dark"),
    ("Master Dark", "dark"),
    ("Flat Field", "flat"),
    ("Flat Frame", "flat"),
    ("FLAT", "flat"),
    ("SkyFlat", "flat"),
    ("Light Frame", "light"),
    ("LIGHT", "light"),
    ("Light   ", "light"),
    ("Object", "light"),
    ("OBJECT", "light"),
    ("Science", "light"),
    ("Dark Flat", "darkflat"),
    ("DarkFlat", "darkflat"),
    ("FlatDark", "darkflat"),
    ("Flat Dark", "darkflat"),
    ("DARKFLAT", "darkflat"),
    ("dflat", "darkflat"),
    ("", "unknown"),
    ("Tricolor", "unknown"),
    (None, "unknown"),
]


@pytest.mark.parametrize(("value", "kind"), HEADER_SPELLINGS)
def test_classify_kind_spellings(value, kind):
    assert classify_kind(value) == kind


@pytest.mark.parametrize("keyword", ["IMAGETYP", "FRAME", "FRAMETYP"])
def test_kind_keywords(keyword):
    header = fits.Header({"NAXIS": 2, "NAXIS1": 10, "NAXIS2": 8, keyword: "Dark Frame"})
    meta = meta_from_fits_header(header, path=Path("x/lights/img.fits"))
    assert meta.kind == "dark"  # header wins over the folder name
    assert meta.shape == (8, 10)


PATH_CASES = [
    ("night/lights/img_0001.fits", "light"),
    ("night/Light/IMG_0001.CR2", "light"),
    ("night/darks/300s/img_0001.fits", "dark"),
    ("night/DARK_300s_0001.fits", "dark"),
    ("night/flats/L/001.fit", "flat"),
    ("night/FLAT_Ha_001.fit", "flat"),
    ("night/bias/b001.fits", "bias"),
    ("night/offset/o1.fits", "bias"),
    ("night/Offsets/o1.fits", "bias"),
    ("night/darkflats/df1.fits", "darkflat"),
    ("night/flatdark/df1.fits", "darkflat"),
    ("night/DarkFlat_001.fits", "darkflat"),
    ("night/dflat/001.fits", "darkflat"),
    ("night/flat-dark_001.fits", "darkflat"),
    ("night/Light_M 94_10.0s_IRCUT_20250326-212046.fit", "light"),
    ("night/tres1-001d.fit", "unknown"),
    ("night/frames/img0001.fits", "unknown"),
]


@pytest.mark.parametrize(("path", "kind"), PATH_CASES)
def test_kind_from_path(path, kind):
    assert kind_from_path(path) == kind


def test_folder_fallback_through_header(tmp_path):
    folder = tmp_path / "session" / "Flats" / "Ha"
    folder.mkdir(parents=True)
    fits.PrimaryHDU(np.zeros((4, 6), np.uint16)).writeto(folder / "img001.fits")
    assert read_meta(folder / "img001.fits").kind == "flat"


def test_keyword_mapping():
    header = fits.Header()
    header["NAXIS"] = 2
    header["NAXIS1"] = 100
    header["NAXIS2"] = 80
    header["IMAGETYP"] = "Light Frame"
    header["EXPOSURE"] = 120.0
    header["GAIN"] = 139
    header["OFFSET"] = 21
    header["ISOSPEED"] = 800
    header["EGAIN"] = 0.25
    header["CCD_TEMP"] = -9.5
    header["SET-TEMP"] = -10.0
    header["XBINNING"] = 2
    header["YBINNING"] = 2
    header["FILTER"] = "Ha      "
    header["BAYERPAT"] = "RGGB"
    header["DATE-OBS"] = "2024-01-02"
    header["TIME-OBS"] = "03:04:05.5"
    header["CAMERA"] = "ZWO ASI294MC Pro"
    header["OBJECT"] = "M 42"
    header["XPIXSZ"] = 4.63
    header["FOCALLEN"] = 400.0
    header["SATURATE"] = 65535
    header["PEDESTAL"] = -100
    meta = meta_from_fits_header(header, path=Path("a.fits"))
    assert meta.kind == "light"
    assert meta.exposure == 120.0
    assert meta.gain == 139.0
    assert meta.offset == 21.0
    assert meta.iso == 800
    assert meta.egain == 0.25
    assert meta.temperature == -9.5  # measured temperature preferred over the set point
    assert meta.binning == (2, 2)
    assert meta.filter == "Ha"
    assert meta.bayer == "RGGB"
    assert meta.date == datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)
    assert meta.camera == "ZWO ASI294MC Pro"
    assert meta.target == "M 42"
    assert meta.pixel_size_um == pytest.approx(4.63)
    assert meta.pixel_scale_arcsec == pytest.approx(206.264806 * 4.63 / 400.0)
    assert meta.white_level == 65535.0
    assert meta.black_level == 100.0
    # Serialisable and round-trips.
    data = json.loads(json.dumps(meta_to_dict(meta, header=True)))
    back = meta_from_dict(data)
    assert back.date == meta.date
    assert back.binning == (2, 2)
    assert back.bayer == "RGGB"


def test_fallbacks_and_zero_focal_length():
    header = fits.Header(
        {"NAXIS": 2, "NAXIS1": 4, "NAXIS2": 4, "EXPTIME": 60.0, "SET-TEMP": -10.0, "FOCALLEN": 0.0}
    )
    meta = meta_from_fits_header(header)
    assert meta.temperature == -10.0
    assert meta.focal_length_mm is None  # MaxIm writes 0 when unknown
    assert meta.binning == (1, 1)
    assert meta.bayer is None
    assert meta.kind == "unknown"


@pytest.mark.parametrize(
    ("date", "time", "expected"),
    [
        ("2025-03-27T01:20:32.955368", None, datetime(2025, 3, 27, 1, 20, 32, 955368, UTC)),
        ("2012-06-17T01:32:40", None, datetime(2012, 6, 17, 1, 32, 40, tzinfo=UTC)),
        ("2012-06-17T01:32:40.1234567Z", None, datetime(2012, 6, 17, 1, 32, 40, 123456, UTC)),
        ("17/06/98", "01:02:03", datetime(1998, 6, 17, 1, 2, 3, tzinfo=UTC)),
        ("garbage", None, None),
    ],
)
def test_parse_fits_date(date, time, expected):
    assert parse_fits_date(date, time) == expected


# ---------------------------------------------------------------------------------------
# Bayer pattern arithmetic
# ---------------------------------------------------------------------------------------


def test_bayer_shift_table():
    assert bayer_shift("RGGB", 0, 0) == "RGGB"
    assert bayer_shift("RGGB", 0, 1) == "GRBG"
    assert bayer_shift("RGGB", 1, 0) == "GBRG"
    assert bayer_shift("RGGB", 1, 1) == "BGGR"
    assert bayer_shift("GRBG", 0, 1) == "RGGB"
    assert bayer_shift("BGGR", -1, 0) == "GRBG"
    assert bayer_shift("GBRG", 3, 5) == "GRBG"


def test_flip_pattern_vertically_table():
    assert flip_pattern_vertically("RGGB") == "GBRG"
    assert flip_pattern_vertically("GBRG") == "RGGB"
    assert flip_pattern_vertically("BGGR") == "GRBG"
    assert flip_pattern_vertically("GRBG") == "BGGR"
    assert flip_pattern_vertically("RGGB", height=1081) == "RGGB"
    assert flip_pattern_vertically("RGGB", height=1080) == "GBRG"


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize(("dy", "dx"), [(0, 0), (0, 1), (1, 0), (1, 1), (2, 3)])
def test_bayer_shift_matches_cropping(pattern, dy, dx, cfa_mosaic, pattern_of):
    mosaic = cfa_mosaic(pattern, 8, 8)
    assert pattern_of(mosaic[dy:, dx:]) == bayer_shift(pattern, dy, dx)


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("height", [6, 7])
def test_flip_matches_array_flip(pattern, height, cfa_mosaic, pattern_of):
    mosaic = cfa_mosaic(pattern, height, 6)
    assert pattern_of(mosaic[::-1]) == flip_pattern_vertically(pattern, height)


def test_normalize_pattern():
    assert normalize_pattern(" rggb ") == "RGGB"
    assert normalize_pattern("R G G B") == "RGGB"
    assert normalize_pattern("") is None
    assert normalize_pattern(None) is None
    assert normalize_pattern(True) is None
    with pytest.raises(ValueError, match="X-Trans"):
        normalize_pattern("GGRGGB" * 6)
    with pytest.raises(ValueError, match="unknown Bayer pattern"):
        normalize_pattern("RGBG")


def test_pattern_for_array_rules():
    assert pattern_for_array("RGGB") == "RGGB"
    assert pattern_for_array("RGGB", row_order="TOP-DOWN", height=100) == "RGGB"
    assert pattern_for_array("RGGB", row_order="BOTTOM-UP", height=100) == "GBRG"
    assert pattern_for_array("RGGB", row_order="BOTTOM-UP", height=101) == "RGGB"
    assert pattern_for_array("RGGB", xoffset=1) == "GRBG"
    assert pattern_for_array("RGGB", yoffset=1) == "GBRG"
    assert pattern_for_array("RGGB", row_order="BOTTOM-UP", height=100, xoffset=1) == "BGGR"
    assert pattern_for_array(None, row_order="BOTTOM-UP") is None


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("height", [10, 11])
def test_bottom_up_file_reads_right_colours(tmp_path, pattern, height, cfa_mosaic, pattern_of):
    """A sensor read top-down with *pattern*, stored bottom-up: colours must come back right."""
    sensor = cfa_mosaic(pattern, height, 12)  # row 0 = top row of the sensor
    stored = sensor[::-1]  # BOTTOM-UP: the first stored row is the bottom row
    header = fits.Header({"BAYERPAT": pattern, "ROWORDER": "BOTTOM-UP"})
    path = tmp_path / "bu.fits"
    fits.PrimaryHDU(stored.astype(np.uint16), header=header).writeto(path)
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.data, stored)  # data held exactly as stored
    assert frame.meta.bayer == pattern_of(frame.data)
    assert frame.meta.row_order == "BOTTOM-UP"


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize(("yoff", "xoff"), [(0, 1), (1, 0), (1, 1)])
def test_bayer_offsets_read_right_colours(tmp_path, pattern, yoff, xoff, cfa_mosaic, pattern_of):
    """A sub-frame starting at an odd row/column of a sensor with *pattern*."""
    sensor = cfa_mosaic(pattern, 12, 12)
    stored = sensor[yoff:, xoff:]
    header = fits.Header(
        {"BAYERPAT": pattern, "ROWORDER": "TOP-DOWN", "XBAYROFF": xoff, "YBAYROFF": yoff}
    )
    path = tmp_path / "off.fits"
    fits.PrimaryHDU(stored.astype(np.uint16), header=header).writeto(path)
    meta = read_meta(path)
    assert meta.bayer == pattern_of(stored)


def test_xtrans_header_is_rejected(tmp_path):
    header = fits.Header({"BAYERPAT": "GGRGGB" * 6})
    path = tmp_path / "xtrans.fits"
    fits.PrimaryHDU(np.zeros((12, 12), np.uint16), header=header).writeto(path)
    with pytest.raises(FrameReadError, match="X-Trans") as info:
        read_meta(path)
    assert info.value.path == path
