"""Readers: FITS of every BITPIX, tile-compressed FITS, TIFF, DNG via rawpy, and bad files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from astropy.io import fits

from astrostack.io import FrameReadError, read_frame, read_meta
from astrostack.io.readers import detect_format

H, W = 48, 64


def _physical(rng, lo, hi, dtype):
    return rng.integers(lo, hi, size=(H, W)).astype(dtype)


# ---------------------------------------------------------------------------------------
# FITS
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "lo", "hi", "bitpix", "bzero"),
    [
        (np.uint8, 0, 256, 8, None),
        (np.int16, -32768, 32767, 16, None),
        (np.uint16, 0, 65536, 16, 32768),
        (np.int32, -(2**31), 2**31 - 1, 32, None),
        (np.uint32, 0, 2**32 - 1, 32, 2**31),
    ],
)
def test_fits_integer_bitpix_roundtrip(tmp_path, rng, dtype, lo, hi, bitpix, bzero):
    data = _physical(rng, lo, hi, dtype)
    path = tmp_path / f"int{bitpix}.fits"
    fits.PrimaryHDU(data).writeto(path)
    header = fits.getheader(path)
    assert header["BITPIX"] == bitpix
    assert header.get("BZERO") == bzero
    frame = read_frame(path)
    assert frame.data.dtype == np.float32
    # float32 holds integers exactly up to 2**24; compare against float32 of the truth.
    np.testing.assert_array_equal(frame.data, data.astype(np.float32))
    assert frame.meta.shape == (H, W)


def test_fits_scaled_int16_bscale_bzero(tmp_path, rng):
    physical = rng.uniform(100.0, 60000.0, size=(H, W))
    hdu = fits.PrimaryHDU(physical.copy())  # scale() rewrites the array in place
    hdu.scale("int16", bscale=2.0, bzero=32768.0)
    path = tmp_path / "scaled.fits"
    hdu.writeto(path)
    raw = fits.getdata(path, do_not_scale_image_data=True)
    assert raw.dtype.kind == "i"
    frame = read_frame(path)
    expected = raw.astype(np.float64) * 2.0 + 32768.0
    np.testing.assert_allclose(frame.data, expected, rtol=0, atol=0.0)
    assert np.max(np.abs(frame.data - physical)) <= 1.0 + 1e-6  # quantisation of BSCALE=2


@pytest.mark.parametrize(("dtype", "bitpix"), [(np.float32, -32), (np.float64, -64)])
def test_fits_float_roundtrip(tmp_path, rng, dtype, bitpix):
    data = rng.normal(1000.0, 50.0, size=(H, W)).astype(dtype)
    data[3, 4] = np.nan
    path = tmp_path / f"f{-bitpix}.fits"
    fits.PrimaryHDU(data).writeto(path)
    assert fits.getheader(path)["BITPIX"] == bitpix
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.data, data.astype(np.float32))


def _astropy_pixels(path) -> np.ndarray:
    with fits.open(path) as hdul:
        data = np.asarray(hdul[0].data)
    return np.ascontiguousarray(data[0] if data.ndim == 3 and data.shape[0] == 1 else data,
                                dtype=np.float32)  # fmt: skip


@pytest.mark.parametrize(
    ("bitpix", "cards", "shape"),
    [
        (16, {"BZERO": 32768, "BSCALE": 1}, (H, W)),  # the camera format: direct path
        (16, {}, (1, H, W)),  # NAXIS3 = 1 is squeezed
        (16, {"BZERO": -1000}, (3, H, W)),
        (-32, {}, (H, W)),
        (16, {"BZERO": 100, "BSCALE": 2}, (H, W)),  # scaled: astropy's path
        (16, {"BLANK": -32768}, (H, W)),  # BLANK: astropy's path
        (32, {}, (H, W)),
    ],
)
def test_fits_direct_read_equals_astropy(tmp_path, rng, bitpix, cards, shape):
    raw = rng.integers(-32768, 32767, size=shape)
    dtype = {16: ">i2", 32: ">i4", -32: ">f4"}[bitpix]
    data = raw.astype(dtype) if bitpix != -32 else (raw * 0.37).astype(dtype)
    if bitpix == -32:
        data.flat[5] = np.nan
    path = tmp_path / "direct.fits"
    header = fits.Header()
    for key, value in cards.items():
        header[key] = value
    hdu = fits.PrimaryHDU(header=header)
    hdu.data = data  # raw stored values; BZERO/BSCALE/BLANK cards kept as given
    for key, value in cards.items():
        hdu.header[key] = value
    hdu.writeto(path, output_verify="silentfix")
    frame = read_frame(path)
    expected = _astropy_pixels(path)
    assert frame.data.dtype == np.float32 and frame.data.flags.c_contiguous
    assert frame.data.shape == expected.shape
    np.testing.assert_array_equal(frame.data, expected)
    if bitpix == 16 and "BZERO" in cards and "BSCALE" not in cards:
        np.testing.assert_array_equal(frame.data, raw.astype(np.float32) + cards["BZERO"])


def test_fits_rgb_cube(tmp_path, rng):
    data = rng.integers(0, 65535, size=(3, H, W)).astype(np.uint16)
    path = tmp_path / "rgb.fits"
    fits.PrimaryHDU(data).writeto(path)
    frame = read_frame(path)
    assert frame.data.shape == (3, H, W)
    np.testing.assert_array_equal(frame.data, data.astype(np.float32))
    assert frame.meta.is_color and frame.meta.bayer is None


def test_fits_image_in_extension(tmp_path, rng):
    data = _physical(rng, 0, 4000, np.int16)
    header = fits.Header({"IMAGETYP": "Flat Field", "EXPTIME": 2.5})
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header=header)])
    path = tmp_path / "ext.fits"
    hdul.writeto(path)
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.data, data.astype(np.float32))
    assert frame.meta.kind == "flat" and frame.meta.exposure == 2.5


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint16])
def test_fz_tile_compressed_roundtrip(tmp_path, rng, dtype):
    data = _physical(rng, 0, 30000, dtype)
    header = fits.Header({"IMAGETYP": "Light Frame", "EXPTIME": 30.0, "BAYERPAT": "BGGR"})
    path = tmp_path / "img.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header=header)]).writeto(path)
    meta = read_meta(path)
    assert meta.shape == (H, W)
    assert meta.kind == "light" and meta.exposure == 30.0 and meta.bayer == "BGGR"
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.data, data.astype(np.float32))  # lossless (RICE)


def test_gzipped_fits(tmp_path, rng):
    import gzip

    data = _physical(rng, 0, 60000, np.uint16)
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(data, header=fits.Header({"IMAGETYP": "Bias Frame"})).writeto(plain)
    path = tmp_path / "b.fits.gz"
    path.write_bytes(gzip.compress(plain.read_bytes()))
    assert detect_format(path) == "fits"
    assert read_meta(path).kind == "bias"
    np.testing.assert_array_equal(read_frame(path).data, data.astype(np.float32))


def test_fz_float_quantised_within_tolerance(tmp_path, rng):
    data = rng.normal(1000.0, 30.0, size=(H, W)).astype(np.float32)
    path = tmp_path / "f.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, quantize_level=16)]).writeto(path)
    frame = read_frame(path)
    # Lossy float quantisation: step = sigma/16, so errors stay well under 30/16/2 + eps.
    assert np.max(np.abs(frame.data - data)) < 1.5


# ---------------------------------------------------------------------------------------
# TIFF
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "hi"),
    [(np.uint8, 255), (np.uint16, 65535), (np.uint32, 2**24), (np.int16, 32767)],
)
def test_tiff_integer_roundtrip(tmp_path, rng, dtype, hi):
    data = rng.integers(0, hi, size=(H, W)).astype(dtype)
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, data)
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.data, data.astype(np.float32))
    assert read_meta(path).shape == (H, W)


def test_tiff_float_roundtrip(tmp_path, rng):
    data = rng.normal(0.2, 0.05, size=(H, W)).astype(np.float32)
    path = tmp_path / "f.tiff"
    tifffile.imwrite(path, data)
    np.testing.assert_array_equal(read_frame(path).data, data)


@pytest.mark.parametrize("planar", [False, True])
def test_tiff_rgb_to_cyx(tmp_path, rng, planar):
    rgb = rng.integers(0, 65535, size=(H, W, 3)).astype(np.uint16)
    path = tmp_path / "rgb.tif"
    if planar:
        tifffile.imwrite(path, np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    else:
        tifffile.imwrite(path, rgb, photometric="rgb")
    frame = read_frame(path)
    assert frame.data.shape == (3, H, W)
    np.testing.assert_array_equal(frame.data, np.moveaxis(rgb, -1, 0).astype(np.float32))
    assert read_meta(path).shape == (3, H, W)


# ---------------------------------------------------------------------------------------
# RAW (a real DNG written with pidng, read back through rawpy/LibRaw)
# ---------------------------------------------------------------------------------------


def _write_dng(path, mosaic, pattern, black, white, neutral=(0.5, 1.0, 0.8), exposure=(1, 30)):
    from astrostack.tests.dng import write_dng

    return write_dng(
        path, mosaic, pattern, black=black, white=white, neutral=neutral, exposure=exposure
    )


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_dng_mosaic_and_pattern_exact(tmp_path, rng, pattern):
    pytest.importorskip("pidng")
    mosaic = rng.integers(256, 16000, size=(40, 60)).astype(np.uint16)
    path = _write_dng(tmp_path / f"light_{pattern}.dng", mosaic, pattern, black=256, white=16383)
    frame = read_frame(path)
    assert frame.data.dtype == np.float32
    np.testing.assert_array_equal(frame.data, mosaic.astype(np.float32))  # no demosaic, exact
    meta = frame.meta
    assert meta.bayer == pattern
    assert meta.black_level == 256.0
    assert meta.header["BLACK_LEVEL_PER_CHANNEL"] == [256.0] * 4
    assert meta.white_level == 16383.0
    # camera white balance = 1 / AsShotNeutral (R, G, B, G2)
    assert meta.wb_multipliers[:3] == pytest.approx((2.0, 1.0, 1.25), rel=1e-3)
    assert meta.exposure == pytest.approx(1 / 30, rel=1e-5)
    assert meta.kind == "light"  # from the file name
    assert read_meta(path).shape == (40, 60)


def test_raw_extension_wins_over_tiff_magic(tmp_path, rng):
    pytest.importorskip("pidng")
    mosaic = rng.integers(0, 4000, size=(8, 8)).astype(np.uint16)
    path = _write_dng(tmp_path / "a.dng", mosaic, "RGGB", black=0, white=4095)
    assert path.read_bytes()[:4] in (b"II*\x00", b"MM\x00*")
    assert detect_format(path) == "raw"


def test_garbage_raw_reports_file(tmp_path):
    path = tmp_path / "broken.cr2"
    path.write_bytes(b"II*\x00" + bytes(200))
    with pytest.raises(FrameReadError, match=r"broken\.cr2") as info:
        read_frame(path)
    assert "RAW" in info.value.reason


# ---------------------------------------------------------------------------------------
# Bad input: each error names the file and has a specific reason
# ---------------------------------------------------------------------------------------


def test_truncated_fits(tmp_path, rng):
    path = tmp_path / "trunc.fits"
    fits.PrimaryHDU(_physical(rng, 0, 60000, np.uint16)).writeto(path)
    blob = path.read_bytes()
    path.write_bytes(blob[: 2880 + 1000])
    for reader in (read_meta, read_frame):
        with pytest.raises(FrameReadError, match="truncated FITS") as info:
            reader(path)
        assert info.value.path == path
        assert "re-copy" in info.value.reason


def test_truncated_fits_header(tmp_path, rng):
    path = tmp_path / "hdr.fits"
    fits.PrimaryHDU(_physical(rng, 0, 60000, np.uint16)).writeto(path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(FrameReadError, match=r"hdr\.fits"):
        read_meta(path)


def test_text_named_fits(tmp_path):
    path = tmp_path / "notes.fits"
    path.write_text("observing log: clouds after midnight\n")
    with pytest.raises(FrameReadError, match="text") as info:
        read_meta(path)
    assert "observing log" in info.value.reason


def test_zero_size(tmp_path):
    path = tmp_path / "empty.fit"
    path.write_bytes(b"")
    with pytest.raises(FrameReadError, match="empty file"):
        read_frame(path)


def test_jpeg_and_png_rejected(tmp_path):
    from PIL import Image

    img = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    jpg, png = tmp_path / "shot.jpg", tmp_path / "shot.fits"
    img.save(jpg, format="JPEG")
    img.save(png, format="PNG")  # a PNG misnamed .fits
    with pytest.raises(FrameReadError, match="8-bit JPEG"):
        read_frame(jpg)
    with pytest.raises(FrameReadError, match="8-bit PNG"):
        read_meta(png)


def test_unknown_format_and_missing(tmp_path):
    path = tmp_path / "data.xyz"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(FrameReadError, match="unknown format"):
        read_meta(path)
    with pytest.raises(FrameReadError, match="not found"):
        read_meta(tmp_path / "nope.fits")


def test_fits_without_image(tmp_path):
    path = tmp_path / "table.fits"
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.ones(3))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    with pytest.raises(FrameReadError, match="no image data"):
        read_meta(path)


def test_input_file_not_modified(tmp_path, rng):
    path = tmp_path / "in.fits"
    fits.PrimaryHDU(_physical(rng, 0, 60000, np.uint16)).writeto(path)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    read_frame(path)
    read_meta(path)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


@pytest.mark.parametrize(("bitpix", "bzero"), [(16, 32768), (16, -1000), (16, 0), (-32, 0)])
def test_fits_direct_read_in_blocks(tmp_path, rng, bitpix, bzero):
    # blocks smaller than the image, the last one partial: same pixels as astropy's read
    from astrostack.io.readers import _image_hdu, _open_fits, _plain_fits_pixels

    shape = (37, 53)
    if bitpix == 16:
        data = rng.integers(-32768, 32768, size=shape).astype(">i2")
    else:
        data = rng.normal(0, 1e4, size=shape).astype(">f4")
        data[2, 3] = np.nan
    path = tmp_path / "blocks.fits"
    hdu = fits.PrimaryHDU()
    hdu.data = data
    if bzero:
        hdu.header["BZERO"] = bzero
    hdu.writeto(path)
    expected = _astropy_pixels(path)
    hdul = _open_fits(path)
    try:
        hdu = _image_hdu(path, hdul)[1]
        for chunk in (1, 500, 37 * 53, 1 << 20):
            got = _plain_fits_pixels(path, hdu, chunk=chunk)
            assert got.dtype == np.float32 and got.shape == shape
            np.testing.assert_array_equal(got, expected)
    finally:
        hdul.close()
    # a truncated file is left to astropy's path (which reports it)
    cut = tmp_path / "cut.fits"
    cut.write_bytes(path.read_bytes()[: 2880 + 1000])
    hdul = _open_fits(cut)
    try:
        assert _plain_fits_pixels(cut, _image_hdu(cut, hdul)[1]) is None
    finally:
        hdul.close()
