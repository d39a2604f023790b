"""Writers: FITS with provenance, TIFF 16/32-bit, npy cache, atomicity."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import tifffile
from astropy.io import fits

import astrostack
from astrostack.io import FrameMeta, read_frame, read_meta
from astrostack.io.writers import read_npy, write_fits, write_npy, write_tiff

H, W = 40, 56


def test_write_fits_float32_provenance(tmp_path, rng):
    data = rng.normal(500.0, 20.0, size=(H, W)).astype(np.float32)
    data[0, 0] = np.nan
    path = tmp_path / "out" / "master.fits"
    write_fits(path, data, {"IMAGETYP": "Dark Frame", "EXPTIME": 300.0}, history=["a", "b c"])
    with fits.open(path) as hdul:
        header = hdul[0].header
        assert header["BITPIX"] == -32
        assert header["ASTRVER"] == astrostack.__version__
        written = datetime.fromisoformat(header["DATE"]).replace(tzinfo=UTC)
        assert abs((datetime.now(UTC) - written).total_seconds()) < 600
        assert list(header["HISTORY"]) == ["a", "b c"]
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.data, data)
    assert frame.meta.kind == "dark" and frame.meta.exposure == 300.0
    assert [p.name for p in path.parent.iterdir()] == ["master.fits"]  # no temp file left


def test_write_fits_from_meta_keeps_bayer_as_held(tmp_path, cfa_mosaic, pattern_of):
    mosaic = cfa_mosaic("GBRG", 10, 12)
    meta = FrameMeta(
        kind="light",
        exposure=120.0,
        gain=100.0,
        temperature=-10.0,
        binning=(1, 1),
        filter="L",
        bayer="GBRG",
        date=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        camera="Cam",
        black_level=64.0,
    )
    path = tmp_path / "cal.fits"
    write_fits(path, mosaic, meta)
    header = fits.getheader(path)
    assert header["ROWORDER"] == "TOP-DOWN" and header["BAYERPAT"] == "GBRG"
    back = read_meta(path)
    assert back.bayer == pattern_of(mosaic) == "GBRG"
    assert (back.kind, back.exposure, back.gain, back.temperature) == ("light", 120.0, 100.0, -10.0)
    assert back.date == meta.date and back.filter == "L" and back.black_level == 64.0


def test_write_fits_drops_stale_cfa_keywords(tmp_path, cfa_mosaic):
    """A header copied from a BOTTOM-UP input must not mislabel the array we write."""
    mosaic = cfa_mosaic("RGGB", 8, 8)
    stale = fits.Header(
        {"BAYERPAT": "GBRG", "ROWORDER": "BOTTOM-UP", "XBAYROFF": 1, "OBJECT": "M1"}
    )
    path = tmp_path / "x.fits"
    write_fits(path, mosaic, stale, bayer="RGGB")
    meta = read_meta(path)
    assert meta.bayer == "RGGB" and meta.target == "M1"
    write_fits(path, mosaic, stale)  # no bayer given: written as mono
    assert "BAYERPAT" not in fits.getheader(path)


def test_write_fits_rgb_and_integer_dtypes(tmp_path, rng):
    rgb = rng.uniform(0, 1, size=(3, H, W)).astype(np.float32)
    path = tmp_path / "rgb.fits"
    write_fits(path, rgb)
    header = fits.getheader(path)
    assert (header["NAXIS"], header["NAXIS3"], header["NAXIS2"], header["NAXIS1"]) == (3, 3, H, W)
    np.testing.assert_array_equal(read_frame(path).data, rgb)
    counts = rng.integers(0, 65535, size=(H, W)).astype(np.uint16)
    path16 = tmp_path / "u16.fits"
    write_fits(path16, counts, dtype=np.uint16)
    header = fits.getheader(path16)
    assert header["BITPIX"] == 16 and header["BZERO"] == 32768
    np.testing.assert_array_equal(read_frame(path16).data, counts.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        write_fits(tmp_path / "bad.fits", np.zeros((2, 4, 4)))


def test_write_fits_no_overwrite(tmp_path):
    path = tmp_path / "a.fits"
    write_fits(path, np.ones((4, 4)))
    with pytest.raises(FileExistsError, match=r"a\.fits"):
        write_fits(path, np.zeros((4, 4)), overwrite=False)
    assert read_frame(path).data[0, 0] == 1.0


def test_failed_write_does_not_clobber(tmp_path, monkeypatch):
    path = tmp_path / "keep.fits"
    write_fits(path, np.full((4, 4), 7.0))
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fits.PrimaryHDU, "writeto", boom)
    with pytest.raises(OSError, match="disk full"):
        write_fits(path, np.zeros((4, 4)))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.fits"]


def test_write_tiff_16bit_scaling(tmp_path):
    ramp = np.linspace(-0.1, 1.1, H * W, dtype=np.float32).reshape(H, W)
    ramp[0, 1] = np.nan
    path = tmp_path / "r.tif"
    write_tiff(path, ramp, bits=16)
    out = tifffile.imread(path)
    assert out.dtype == np.uint16 and out.shape == (H, W)
    expected = np.rint(np.clip(np.nan_to_num(ramp.astype(np.float64), nan=0.0), 0, 1) * 65535)
    np.testing.assert_array_equal(out, expected.astype(np.uint16))
    assert out[0, 1] == 0 and out.max() == 65535 and out.min() == 0
    # explicit range: lo -> 0, hi -> 65535, midpoint -> 32768 (rounded)
    data = np.array([[100.0, 200.0, 150.0]], dtype=np.float32)
    write_tiff(path, data, bits=16, lo=100.0, hi=200.0)
    np.testing.assert_array_equal(tifffile.imread(path), [[0, 65535, 32768]])
    with pytest.raises(ValueError, match="hi > lo"):
        write_tiff(path, data, lo=5, hi=5)


def test_write_tiff_float_and_rgb(tmp_path, rng):
    rgb = rng.uniform(0, 3, size=(3, H, W)).astype(np.float32)
    path = tmp_path / "rgb.tiff"
    write_tiff(path, rgb, bits=32)
    raw = tifffile.imread(path)
    assert raw.shape == (H, W, 3) and raw.dtype == np.float32
    np.testing.assert_array_equal(read_frame(path).data, rgb)
    write_tiff(path, rgb / 3.0, bits=16)
    frame = read_frame(path)
    assert frame.data.shape == (3, H, W)
    assert np.max(np.abs(frame.data / 65535.0 - rgb / 3.0)) <= 0.5 / 65535 + 1e-7
    with pytest.raises(ValueError, match="bits"):
        write_tiff(path, rgb, bits=8)


def test_npy_roundtrip_little_endian(tmp_path, rng):
    data = rng.normal(size=(H, W)).astype(">f4")
    path = tmp_path / "cache" / "frame_0001.npy"
    write_npy(path, data[:, ::2])  # non-contiguous, big-endian input
    back = read_npy(path)
    assert back.dtype == np.dtype("<f4") and back.flags.c_contiguous
    np.testing.assert_array_equal(back, data[:, ::2].astype(np.float32))
    mm = read_npy(path, mmap=True)
    assert isinstance(mm, np.memmap)
    np.testing.assert_array_equal(mm[5:9], back[5:9])
    # exact name, no ".npy" appended, no temp file left
    write_npy(tmp_path / "cache" / "band.bin", np.ones(3, np.float32))
    assert sorted(p.name for p in path.parent.iterdir()) == ["band.bin", "frame_0001.npy"]
    (tmp_path / "bad.npy").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"bad\.npy"):
        read_npy(tmp_path / "bad.npy")


@pytest.mark.parametrize("kind", ["tiff", "npy"])
def test_failed_tiff_and_npy_writes_leave_nothing(tmp_path, monkeypatch, kind):
    path = tmp_path / f"out.{kind}"
    writer = {"tiff": lambda: write_tiff(path, np.ones((4, 4)), bits=32),
              "npy": lambda: write_npy(path, np.ones((4, 4), np.float32))}[kind]  # fmt: skip
    writer()
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", boom)
    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        writer()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_atomic_outputs_respect_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = write_npy(tmp_path / "a.npy", np.zeros((2, 2), np.float32))
    finally:
        os.umask(old)
    # mkstemp's 0600 would hide outputs from other users of a shared machine.
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("durable", [True, False])
def test_atomic_durable_flushes_only_when_asked(tmp_path, monkeypatch, durable):
    import os

    flushed = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: flushed.append(fd) or real_fsync(fd))
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = write_npy(tmp_path / "c.npy", data, durable=durable)
    assert len(flushed) == (1 if durable else 0)
    np.testing.assert_array_equal(read_npy(path), data)
    assert [p.name for p in tmp_path.iterdir()] == ["c.npy"]  # renamed, no temporary left
