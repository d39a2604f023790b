"""Property-based tests (hypothesis): readers round-trip, combine kernels keep their invariants.

- Readers: random shapes, dtypes and ``BZERO``/``BSCALE`` written through ``write_fits``,
  astropy, a hand-written FITS and tifffile come back from ``read_frame`` as the exact
  float32 physical values (within float32 rounding of ``raw * BSCALE + BZERO``).
- Kernels: for every method, random N (from 1), shapes, NaN/inf holes, outliers and
  per-frame or per-pixel weights: the result lies within [min, max] of the usable inputs,
  ``count <= N``, NaN exactly where no usable value exists, and
  ``rejected_low + rejected_high + count`` equals the number of usable values.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astrostack.io import read_frame, read_meta, write_fits
from astrostack.tests.corpus import fits_bytes

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

shapes2d = st.tuples(st.integers(1, 24), st.integers(1, 24))


def _tmp() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="astrostack-prop-")


def _random(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    scale = 10.0 ** rng.integers(-3, 6)
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ---------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------


@SETTINGS
@given(
    shape=shapes2d,
    colour=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    nan_fraction=st.sampled_from([0.0, 0.1]),
)
def test_write_fits_read_frame_round_trip(shape, colour, seed, nan_fraction):
    rng = np.random.default_rng(seed)
    full = (3, *shape) if colour else shape
    data = _random(rng, full, np.float32)
    data[rng.random(full) < nan_fraction] = np.nan
    with _tmp() as tmp:
        path = write_fits(Path(tmp) / "x.fits", data, header={"EXPTIME": 30.0})
        frame = read_frame(path)
        assert read_meta(path).shape == full
    np.testing.assert_array_equal(frame.data, data)  # NaN positions equal too
    assert frame.data.dtype == np.float32
    assert frame.meta.exposure == 30.0


@SETTINGS
@given(
    shape=shapes2d,
    dtype=st.sampled_from(["uint8", "int16", "uint16", "int32", "uint32", "float32", "float64"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_astropy_written_dtypes_round_trip(shape, dtype, seed):
    from astropy.io import fits

    data = _random(np.random.default_rng(seed), shape, dtype)
    with _tmp() as tmp:
        path = Path(tmp) / "a.fits"
        fits.PrimaryHDU(data).writeto(path)  # uint16/uint32: BZERO 2**15 / 2**31
        frame = read_frame(path)
    np.testing.assert_array_equal(frame.data, data.astype(np.float32))


@SETTINGS
@given(
    shape=shapes2d,
    bitpix=st.sampled_from([8, 16, 32, 64]),
    bzero=st.sampled_from([0.0, 32768.0, -1000.5, 2.0**31, 1.0e6]),
    bscale=st.sampled_from([1.0, 0.5, 2.0, 1.0e-3]),
    seed=st.integers(0, 2**32 - 1),
)
def test_bzero_bscale_give_physical_values(shape, bitpix, bzero, bscale, seed):
    dtype = {8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64}[bitpix]
    raw = _random(np.random.default_rng(seed), shape, dtype)
    if bitpix == 64:  # keep float64 exact
        raw = (raw >> 12).astype(np.int64)
    cards = [("BZERO", bzero), ("BSCALE", bscale)]
    with _tmp() as tmp:
        path = Path(tmp) / "s.fits"
        path.write_bytes(fits_bytes(raw, cards))
        frame = read_frame(path)
    physical = raw.astype(np.float64) * bscale + bzero
    expected = physical.astype(np.float32)
    # astropy scales 8/16-bit data in float32: allow float32 rounding of each operand
    tol = 4 * np.finfo(np.float32).eps * (np.abs(raw.astype(np.float64)) * bscale + abs(bzero))
    assert np.all(np.abs(frame.data.astype(np.float64) - physical) <= tol + 1e-30)
    if bscale == 1.0 and bzero in (0.0, 32768.0) and bitpix <= 16:
        np.testing.assert_array_equal(frame.data, expected)


@SETTINGS
@given(
    shape=shapes2d,
    dtype=st.sampled_from(["uint8", "uint16", "int16", "uint32", "float32", "float64"]),
    layout=st.sampled_from(["mono", "rgb-contig", "rgb-planar"]),
    tiled=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_tiff_round_trip(shape, dtype, layout, tiled, seed):
    import tifffile

    rng = np.random.default_rng(seed)
    h, w = shape
    kw = {}
    if tiled:
        h, w = 16 * (1 + h // 16), 16 * (1 + w // 16)  # tiles are multiples of 16
        kw["tile"] = (16, 16)
    if layout == "mono":
        data = _random(rng, (h, w), dtype)
        stored, expected = data, data
    else:
        expected = _random(rng, (3, h, w), dtype)
        if layout == "rgb-planar":
            stored = expected
            kw.update(photometric="rgb", planarconfig="separate")
        else:
            stored = np.moveaxis(expected, 0, -1)
            kw.update(photometric="rgb", planarconfig="contig")
    with _tmp() as tmp:
        path = Path(tmp) / "t.tif"
        tifffile.imwrite(path, stored, **kw)
        frame = read_frame(path)
        assert read_meta(path).shape == expected.shape
    np.testing.assert_array_equal(frame.data, expected.astype(np.float32))


@pytest.mark.parametrize("text", ["lumière_étoile_01", "東京-M42", "Ω Cen"])
def test_write_fits_accepts_non_ascii_history(text):
    data = np.zeros((4, 4), np.float32)
    with _tmp() as tmp:
        path = write_fits(Path(tmp) / "h.fits", data, history=[f"light {text}.fits"])
        assert read_frame(path).data.shape == (4, 4)
        history = [str(v) for v in fits.getheader(path)["HISTORY"]]
    line = next(h for h in history if h.startswith("light "))
    assert line.isascii() and line.endswith(".fits")
    parts = re.split(r"[^\x00-\x7f]+", text)  # ASCII runs survive as they are
    assert all(p.strip() in line for p in parts if p.strip())


# ---------------------------------------------------------------------------------------
# Combine kernels
# ---------------------------------------------------------------------------------------


def _methods() -> list[str]:
    from astrostack.combine.kernels import METHODS

    return list(METHODS)


@st.composite
def stacks(draw):
    n = draw(st.integers(1, 30))
    h = draw(st.integers(1, 5))
    w = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    level = draw(st.sampled_from([0.0, 100.0, -50.0, 1.0e4]))
    sigma = draw(st.sampled_from([0.0, 1.0, 30.0]))
    stack = (level + sigma * rng.standard_normal((n, h, w))).astype(np.float32)
    hole = draw(st.sampled_from([0.0, 0.2, 0.6, 1.0]))
    stack[rng.random(stack.shape) < hole] = np.nan
    if draw(st.booleans()):
        stack[rng.random(stack.shape) < 0.05] = np.inf
    if draw(st.booleans()):  # outliers (cosmic rays, satellites)
        hit = rng.random(stack.shape) < 0.1
        stack[hit] = level + 1000 * (sigma + 1) * rng.choice([-1, 1], size=int(hit.sum()))
    wmode = draw(st.sampled_from(["none", "frame", "frame-zero", "pixel"]))
    if wmode == "none":
        weights = None
    elif wmode == "frame":
        weights = rng.uniform(0.1, 3.0, n).astype(np.float32)
    elif wmode == "frame-zero":
        weights = rng.uniform(0.0, 3.0, n).astype(np.float32)
        weights[rng.random(n) < 0.3] = 0.0
    else:
        weights = rng.uniform(0.1, 3.0, (n, h, w)).astype(np.float32)
        weights[rng.random((n, h, w)) < 0.1] = np.nan
    return stack, weights


@pytest.mark.parametrize("method", _methods())
@settings(max_examples=40, deadline=None, database=None)
@given(data=stacks())
def test_combine_invariants(method, data):
    from astrostack.combine import combine

    stack, weights = data
    n = stack.shape[0]
    res = combine(stack, method, weights=weights)
    if weights is None:
        w = np.ones(stack.shape, np.float32)
    else:
        w = np.broadcast_to(
            weights.reshape(weights.shape + (1,) * (stack.ndim - weights.ndim)), stack.shape
        )
    usable = np.isfinite(stack) & np.isfinite(w) & (w > 0)
    n_usable = usable.sum(axis=0)
    assert res.image.shape == stack.shape[1:] and res.image.dtype == np.float32
    for a in (res.count, res.rejected_low, res.rejected_high):
        assert a.shape == stack.shape[1:]
    count = res.count.astype(np.int64)
    assert (count <= n).all()
    total = res.rejected_low.astype(np.int64) + res.rejected_high + count
    np.testing.assert_array_equal(total, n_usable)
    # NaN exactly where no usable value; finite elsewhere (some value is always kept).
    np.testing.assert_array_equal(np.isnan(res.image), n_usable == 0)
    assert (count[n_usable > 0] >= 1).all()
    assert np.isfinite(res.image[n_usable > 0]).all()
    # Within [min, max] of the usable inputs (float32 rounding allowed).
    vals = np.where(usable, stack, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        lo = np.nanmin(vals, axis=0)
        hi = np.nanmax(vals, axis=0)
    ok = n_usable > 0
    slack = 1e-5 * np.maximum(np.abs(lo), np.abs(hi)) + 1e-6
    assert (res.image[ok] >= lo[ok] - slack[ok]).all()
    assert (res.image[ok] <= hi[ok] + slack[ok]).all()
    # Weight = sum of kept weights: never more than the sum of usable weights.
    wsum = np.where(usable, w, 0).sum(axis=0)
    assert (res.weight <= wsum * (1 + 1e-5) + 1e-6).all()
    assert (res.weight[count > 0] > 0).all()
    if weights is None:
        np.testing.assert_allclose(res.weight, count, rtol=1e-6)
