"""Sources and the streamed band engine: exact agreement with an in-memory combine."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astrostack.combine import kernels
from astrostack.combine.engine import combine_sources, parse_memory, plan_bands
from astrostack.combine.sources import (
    ArraySource,
    FitsSource,
    GridSurface,
    NpySource,
    open_source,
    transform_band,
)

FIELDS = ("image", "rejected_low", "rejected_high", "count", "weight")


def _frames(n=9, shape=(70, 53), seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(500, 10, (n, *shape)).astype(np.float32)
    data[2, 5:9, :] = np.nan  # no data
    data[4, 30, 20] = 1e5  # outlier
    return data


def _assert_same(a, b):
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def test_engine_matches_in_memory_combine_with_transform_and_weights():
    data = _frames()
    n = len(data)
    rng = np.random.default_rng(1)
    scales = rng.uniform(0.8, 1.2, n)
    offsets = rng.uniform(-20, 20, n)
    weights = rng.uniform(0.2, 1.0, n)
    expected_stack = data * scales[:, None, None].astype(np.float32) + offsets[
        :, None, None
    ].astype(np.float32)
    expected = kernels.combine(expected_stack, "winsorized", weights=weights)
    for rows in (1, 7, 70):
        got = combine_sources(
            [ArraySource(d) for d in data],
            method="winsorized",
            scales=scales,
            offsets=offsets,
            weights=weights,
            band_rows=rows,
        )
        _assert_same(got, expected)
    assert got.rejected_high[30, 20] == 1
    present = got.count.astype(int) + got.rejected_low + got.rejected_high
    assert (present[5:9] == n - 1).all() and (present[10:] == n).all()


def test_colour_per_channel_transform_and_weights(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.normal(100, 5, (6, 3, 40, 30)).astype(np.float32)
    offsets = rng.uniform(-5, 5, (6, 3))
    weights = rng.uniform(0.5, 1, (6, 3))
    paths = []
    for i, d in enumerate(data):
        paths.append(tmp_path / f"c{i}.npy")
        np.save(paths[-1], d)
    got = combine_sources(
        [NpySource(p) for p in paths], method="sigma", offsets=offsets, weights=weights, band_rows=9
    )
    assert got.image.shape == (3, 40, 30)
    for c in range(3):
        stack = data[:, c] + offsets[:, c, None, None].astype(np.float32)
        ref = kernels.combine(stack, "sigma", weights=weights[:, c])
        np.testing.assert_array_equal(got.image[c], ref.image)
        np.testing.assert_array_equal(got.weight[c], ref.weight)


@pytest.mark.parametrize(
    ("dtype", "bzero", "bscale"),
    [
        (np.int16, 32768, 1.0),  # unsigned 16-bit camera data
        (np.uint8, 0, 1.0),
        (np.int32, 0, 0.5),
        (np.float32, 0, 1.0),
        (np.float64, 0, 1.0),
    ],
)
def test_fits_source_reads_bands_exactly(tmp_path, dtype, bzero, bscale):
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 200, (2, 37, 29)).astype(dtype)
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BZERO"] = bzero
    hdu.header["BSCALE"] = bscale
    path = tmp_path / "f.fits"
    # write raw integers with the scaling keywords (no astropy rescaling)
    fits.HDUList([hdu]).writeto(path)
    physical = raw.astype(np.float64) * bscale + bzero
    src = FitsSource(path)
    assert src.direct and src.shape == (2, 37, 29)
    with src:
        band = src.read_rows(10, 21)
    np.testing.assert_array_equal(band, physical[:, 10:21].astype(np.float32))


def test_fits_source_uint16_blank_and_compressed_fallback(tmp_path):
    data = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 50
    path = tmp_path / "u16.fits"
    fits.PrimaryHDU(data).writeto(path)  # astropy stores BZERO=32768
    src = open_source(path)
    np.testing.assert_array_equal(src.read_rows(3, 9), data[3:9].astype(np.float32))
    comp = tmp_path / "c.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data.astype(np.float32))]).writeto(comp)
    src = FitsSource(comp)
    assert not src.direct
    with src:
        np.testing.assert_allclose(src.read_rows(0, 40), data.astype(np.float32))
        tmp = src._tmp
        assert tmp.exists()
    assert not tmp.exists()  # decoded copy removed at close
    ints = np.full((10, 10), 7, dtype=np.int16)
    ints[2, 3] = -999
    hdu = fits.PrimaryHDU(ints)
    hdu.header["BLANK"] = -999
    hdu.writeto(tmp_path / "b.fits")
    band = FitsSource(tmp_path / "b.fits").read_rows(0, 10)
    assert np.isnan(band[2, 3]) and np.nansum(band) == 7 * 99


def test_bad_files_raise_naming_the_file(tmp_path):
    bad = tmp_path / "junk.npy"
    bad.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"junk\.npy"):
        NpySource(bad)
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((50, 50), np.float32))
    short.write_bytes(short.read_bytes()[:-400])
    with pytest.raises(ValueError, match=r"short\.npy: truncated"):
        NpySource(short)
    with pytest.raises(ValueError, match="differs"):
        combine_sources([ArraySource(np.zeros((4, 4))), ArraySource(np.zeros((5, 4)))])


def test_unreadable_frame_is_skipped_not_fatal(tmp_path):
    data = _frames(n=6)
    paths = []
    for i, d in enumerate(data):
        paths.append(tmp_path / f"f{i}.npy")
        np.save(paths[-1], d)
    sources = [NpySource(p) for p in paths]
    # the file shrinks after it was opened for inspection (a failing disk, a copy in progress)
    paths[3].write_bytes(paths[3].read_bytes()[: 128 + 53 * 4 * 20])
    got = combine_sources(sources, method="mean", band_rows=10)
    assert list(got.parameters["failed_sources"]) == [3]
    expected = kernels.combine(np.delete(data, 3, axis=0), "mean")
    np.testing.assert_array_equal(got.image[20:], expected.image[20:])


def test_offset_surface_and_progress():
    data = _frames(n=5, shape=(48, 64))
    grid = np.array([[0.0, 10.0, 20.0], [30.0, 40.0, 50.0]])
    surf = GridSurface(grid, tile=24, shape=(48, 64))
    full = surf.rows(0, 48)
    # the grid is linear in the tile index, so is the surface: centres at y 11.5, 35.5
    # and x 11.5, 35.5, 55.5 (the last tile is 16 px wide); extrapolated beyond them
    assert full[23, 40] == pytest.approx(30 * (23 - 11.5) / 24 + 10 * (1 + 4.5 / 20), abs=1e-4)
    assert full[0, 0] == pytest.approx(-(30 + 10) * 11.5 / 24, abs=1e-4)
    assert full[47, 63] == pytest.approx(30 * (1 + 11.5 / 24) + 10 * (2 + 7.5 / 20), abs=1e-4)
    assert np.allclose(surf.rows(10, 30), full[10:30])
    calls = []
    got = combine_sources(
        [ArraySource(d) for d in data],
        method="mean",
        offset_maps=[surf, None, None, None, None],
        band_rows=16,
        progress=lambda d, t: calls.append((d, t)),
    )
    stack = data.copy()
    stack[0] += full
    np.testing.assert_array_equal(got.image, kernels.combine(stack, "mean").image)
    assert calls == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize(
    ("shape", "tile", "channels"),
    [((48, 64), 24, 1), ((1000, 777), 128, 1), ((90, 130), 40, 3), ((30, 40), 64, 1)],
)
def test_transform_band_equals_numpy_transform_bit_for_bit(shape, tile, channels):
    # value * scale + offset + surface, as numpy computes it (GridSurface.rows in float64,
    # rounded to float32, added): the compiled pass gives the same float32 values
    rng = np.random.default_rng(tile)
    ny, nx = -(-shape[0] // tile), -(-shape[1] // tile)  # one tile: constant surface
    grid = rng.normal(0.0, 30.0, (channels, ny, nx))
    surf = GridSurface(grid[0] if channels == 1 else grid, tile=tile, shape=shape)
    scale = rng.uniform(0.5, 2.0, channels)
    offset = rng.normal(0.0, 50.0, channels)
    scale[0], offset[-1] = 1.0, 0.0  # the steps numpy would skip
    for y0, y1 in ((0, shape[0]), (7, 19), (shape[0] - 5, shape[0])):
        band = rng.normal(1000.0, 20.0, (channels, y1 - y0, shape[1])).astype(np.float32)
        band[:, 0, :3] = np.nan
        for with_surface in (True, False):
            want = band.copy()
            for c in range(channels):
                if scale[c] != 1:
                    want[c] *= np.float32(scale[c])
                if offset[c] != 0:
                    want[c] += np.float32(offset[c])
            if with_surface:
                extra = surf.rows(y0, y1)
                want += extra[None] if extra.ndim == 2 else extra
            got = band.copy()
            transform_band(got, y0, scale, offset, surf if with_surface else None)
            assert got.tobytes() == want.tobytes(), (y0, with_surface)
            assert not with_surface or np.nanmax(np.abs(got - band * scale[:, None, None])) > 1
    with pytest.raises(ValueError, match="does not cover"):
        transform_band(band, shape[0] - 2, scale, offset, surf)
    wrong = band[:1] if channels > 1 else np.stack([band[0]] * 2)
    with pytest.raises(ValueError, match="planes"):
        transform_band(wrong, y0, scale, offset, surf)


def test_memory_plan():
    assert parse_memory("2GB") == 2 * 1024**3
    assert parse_memory("512 MiB") == 512 * 1024**2
    with pytest.raises(ValueError, match="not understood"):
        parse_memory("lots")
    bands = plan_bands(80, (1024, 1024), "64MB")
    rows = bands[0][1] - bands[0][0]
    # buffers for 80 frames fit in what the outputs leave of the budget
    assert 80 * rows * 1024 * 4 * 2.25 <= 64 * 1024**2 - 1024 * 1024 * 14
    assert bands[-1][1] == 1024 and all(b[0] == a[1] for a, b in itertools.pairwise(bands))
    assert plan_bands(3, (100, 100), "2GB") == [(0, 100)]


class _Broken(ArraySource):
    """Raises a non-I/O error in the middle of a pass (a bug, not a bad file)."""

    def read_rows(self, y0, y1, out=None):
        if y0 >= 20:
            msg = "boom"
            raise RuntimeError(msg)
        return super().read_rows(y0, y1, out)


def test_unexpected_error_propagates_without_hanging():
    data = _frames(n=6)
    sources = [ArraySource(d) for d in data[:5]] + [_Broken(data[5])]
    with pytest.raises(RuntimeError, match="boom"):
        combine_sources(sources, method="mean", band_rows=5)


REAL = Path(__file__).resolve().parents[4] / ".." / "shared" / "data" / "real" / "oscaar-tres1-st10"


def test_real_darks_streamed_equal_in_memory():
    """20 real SBIG ST-10 darks (16-bit FITS): band reads and the streamed combine
    agree exactly with astropy's full read and an in-memory combine."""
    darks = sorted(REAL.glob("tres1-0??d.fit"))
    if len(darks) < 20:
        pytest.skip(f"real frames not found in {REAL}")
    sources = [FitsSource(p) for p in darks]
    assert all(s.direct for s in sources)
    full = np.stack([fits.getdata(p).astype(np.float32) for p in darks])
    with sources[0]:
        np.testing.assert_array_equal(sources[0].read_rows(100, 137), full[0, 100:137])
    got = combine_sources(sources, method="winsorized", memory_limit="8MB")
    expected = kernels.combine(full, "winsorized")
    _assert_same(got, expected)
    # hot pixels are consistent in darks (kept), cosmic rays are not (rejected high)
    assert got.rejected_high.sum() > 0


def test_bands_capped_at_the_fastest_size_whatever_the_budget():
    # 50 frames of 6000x4000: a 2 GB budget would allow ~700-row bands, but the bands
    # stay near 24 MB of stack; a tighter budget still lowers them
    shape = (4000, 6000)
    row_bytes = 50 * 6000 * 4
    for budget in ("2GB", "16GB"):
        bands = plan_bands(50, shape, budget)
        rows = max(b - a for a, b in bands)
        assert 8 <= rows and rows * row_bytes <= 24 * 1024**2, (budget, rows)
        assert bands[-1][1] == 4000 and all(b[0] == a[1] for a, b in itertools.pairwise(bands))
    tight = plan_bands(50, shape, "360MB")  # outputs take 336 MB of it
    rows = max(b - a for a, b in tight)
    assert rows * row_bytes * 2.25 <= 360 * 1024**2 - 4000 * 6000 * 14
    assert rows < max(b - a for a, b in plan_bands(50, shape, "2GB"))
    # without a weight map the outputs take 10 bytes per pixel, not 14: 256 MB still
    # leaves room for bands of several rows (with a map they would not even fit)
    lean = max(b - a for a, b in plan_bands(50, shape, "256MB", weight_map=False))
    assert lean * row_bytes * 2.25 <= 256 * 1024**2 - 4000 * 6000 * 10 and lean >= 4
    assert max(b - a for a, b in plan_bands(50, shape, "256MB")) == 1
    # colour frames count all their channels
    rgb = plan_bands(50, (3, 4000, 6000), "2GB")
    assert max(b - a for a, b in rgb) * 3 * row_bytes <= 24 * 1024**2


def test_unweighted_result_holds_no_weight_map(tmp_path):
    data = _frames(n=7)
    paths = []
    for i, d in enumerate(data):
        paths.append(tmp_path / f"u{i}.npy")
        np.save(paths[-1], d)
    sources = [NpySource(p) for p in paths]
    got = combine_sources(sources, method="sigma", band_rows=11)
    assert not got.weight_stored  # the weights would only repeat the count
    expected = kernels.combine(data, "sigma")
    _assert_same(got, expected)  # reading .weight gives the count as float32
    assert got.weight.dtype == np.float32 and got.weight_stored
    np.testing.assert_array_equal(got.weight, got.count)
    assert got.count[6, 0] == 6 and got.count[20, 0] == 7  # row 6: frame 2 has no data
    weighted = combine_sources(sources, method="sigma", weights=np.full(7, 0.5), band_rows=11)
    assert weighted.weight_stored
    np.testing.assert_array_equal(weighted.weight, 0.5 * got.count.astype(np.float32))
    for scheduler in ("synchronous", "processes"):
        other = combine_sources(sources, method="sigma", band_rows=30, scheduler=scheduler)
        assert not other.weight_stored
        _assert_same(other, got)
    rgb = combine_sources([ArraySource(np.stack([d, d + 1])) for d in data], method="mean")
    assert not rgb.weight_stored and rgb.image.shape == (2, 70, 53)
    np.testing.assert_array_equal(rgb.weight, rgb.count)
