"""Frame sources: objects that hand the combine engine one band of rows at a time.

A source knows its ``shape`` (``(H, W)`` or ``(C, H, W)``) and ``path``, is opened
once per pass (``open()``/``close()`` or ``with``), and returns float32 bands with
``read_rows(y0, y1)`` (``[rows, W]`` or ``[C, rows, W]``).  Sources hold no data
between passes and pickle without their file handle, so Dask can ship them to
worker processes, which open them again.

* :class:`NpySource` - float32 (or any numeric) ``.npy``: a band is one ``seek`` and
  one ``readinto`` per channel on a handle kept open for the whole pass.  No
  ``np.memmap``: memory-mapped pages count in the resident set and would grow
  with the number of frames.
* :class:`FitsSource` - uncompressed FITS of any BITPIX with BZERO/BSCALE/BLANK:
  the data offset comes from astropy, a band is one seek and one read.  Compressed
  or otherwise unusual files are decoded once per pass into a temporary float32
  ``.npy`` file which is then read like :class:`NpySource`, so memory stays bounded.
* :class:`ArraySource` - an in-memory array.
* :class:`GridSurface` - a smooth per-pixel surface (bilinear interpolation of a
  coarse grid) evaluated band by band; the engine adds it as a per-pixel offset
  (local normalisation) with :func:`transform_band`, which applies a frame's whole
  transform ``value * scale + offset + surface`` to a band in one compiled pass.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numba import njit

__all__ = [
    "ArraySource",
    "FitsSource",
    "FrameSource",
    "GridSurface",
    "NpySource",
    "open_source",
    "transform_band",
]

logger = logging.getLogger(__name__)

_FITS_SUFFIXES = (".fits", ".fit", ".fts")
_BITPIX_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


@runtime_checkable
class FrameSource(Protocol):
    """What the combine engine needs from a frame."""

    shape: tuple[int, ...]
    path: Path | None

    def open(self) -> FrameSource:
        """Open the underlying file for a pass; returns ``self``."""

    def close(self) -> None:
        """Release the file handle."""

    def read_rows(self, y0: int, y1: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``y0:y1`` as float32 ``[rows, W]`` or ``[C, rows, W]``."""


def _check_rows(src: _BaseSource, y0: int, y1: int) -> int:
    height = src.shape[-2]
    if not 0 <= y0 < y1 <= height:
        msg = f"{src.path}: rows {y0}:{y1} outside the image height {height}; check the caller"
        raise ValueError(msg)
    return y1 - y0


def _out_view(src: _BaseSource, rows: int, out: np.ndarray | None) -> np.ndarray:
    width = src.shape[-1]
    want = (rows, width) if len(src.shape) == 2 else (src.shape[0], rows, width)
    if out is None:
        return np.empty(want, dtype=np.float32)
    if out.shape != want or out.dtype != np.float32:
        msg = (
            f"{src.path}: output buffer {out.shape} {out.dtype} does not match band {want} float32"
        )
        raise ValueError(msg)
    return out


class _BaseSource:
    """Shared context-manager behaviour and pickling (handles are never pickled)."""

    shape: tuple[int, ...]
    path: Path | None
    _fh = None

    def open(self) -> _BaseSource:
        return self

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fh"] = None
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!s}, shape={self.shape})"


class NpySource(_BaseSource):
    """A ``.npy`` file read band by band (one seek + ``readinto`` per channel).

    Parameters
    ----------
    path : str or Path
        A C-ordered ``.npy`` of a numeric dtype, 2-D ``[y, x]`` or 3-D ``[c, y, x]``.
        float32 little-endian (the pipeline's cache format) is read without any
        conversion; other dtypes are converted band by band.

    Raises
    ------
    ValueError
        When the file is not a usable ``.npy`` (message names the file).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                self._offset = fh.tell()
                size = os.fstat(fh.fileno()).st_size
        except (OSError, ValueError) as exc:
            msg = f"{self.path}: not a readable .npy file ({exc}); re-create it"
            raise ValueError(msg) from exc
        if fortran or len(shape) not in (2, 3) or dtype.kind not in "fiub":
            msg = (
                f"{self.path}: .npy must be a C-ordered numeric 2-D or 3-D array, got "
                f"shape {shape} dtype {dtype} fortran={fortran}; re-save it with np.save"
            )
            raise ValueError(msg)
        need = self._offset + int(np.prod(shape)) * dtype.itemsize
        if size < need:
            msg = f"{self.path}: truncated .npy ({size} of {need} bytes); re-create the file"
            raise ValueError(msg)
        self.shape = tuple(int(s) for s in shape)
        self._dtype = dtype
        self._direct = dtype == np.dtype("<f4") or (dtype == np.float32 and dtype.isnative)

    def open(self) -> NpySource:
        """Open the file (kept open until :meth:`close`)."""
        if self._fh is None:
            self._fh = open(self.path, "rb")  # held open for the whole pass
        return self

    def read_rows(self, y0: int, y1: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``y0:y1`` as float32 (into *out* when given)."""
        rows = _check_rows(self, y0, y1)
        out = _out_view(self, rows, out)
        was_open = self._fh is not None
        fh = self.open()._fh
        try:
            height, width = self.shape[-2:]
            planes = out[None] if out.ndim == 2 else out
            item = self._dtype.itemsize
            for c in range(planes.shape[0]):
                fh.seek(self._offset + ((c * height + y0) * width) * item)
                if self._direct and planes[c].flags.c_contiguous:
                    got = fh.readinto(memoryview(planes[c]).cast("B"))
                    want = rows * width * 4
                else:
                    raw = fh.read(rows * width * item)
                    got, want = len(raw), rows * width * item
                    if got == want:
                        planes[c] = np.frombuffer(raw, dtype=self._dtype).reshape(rows, width)
                if got != want:
                    msg = (
                        f"{self.path}: short read at rows {y0}:{y1}; the file changed or is damaged"
                    )
                    raise OSError(msg)
        finally:
            if not was_open:
                self.close()
        return out


class FitsSource(_BaseSource):
    """A FITS image read band by band.

    Uncompressed images (any BITPIX; BZERO, BSCALE and BLANK honoured) are read with
    one seek and one read per channel at the data offset astropy reports.  Anything
    else astropy can read (tile-compressed, gzipped) is decoded once per pass into a
    temporary float32 ``.npy`` and read from there.

    Parameters
    ----------
    path : str or Path
        The FITS file; the first HDU with 2-D or 3-D image data is used.
    """

    def __init__(self, path: str | Path):
        from astropy.io import fits
        from astropy.utils.exceptions import AstropyWarning

        self.path = Path(path)
        self._tmp: Path | None = None
        self._tmp_src: NpySource | None = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyWarning)  # damaged files raise below
                hdul = fits.open(self.path, memmap=False, lazy_load_hdus=True)
            with hdul, warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyWarning)
                index = None
                for i, hdu in enumerate(hdul):
                    naxis = hdu.header.get("NAXIS", 0)
                    if (hdu.is_image and naxis in (2, 3)) or isinstance(hdu, fits.CompImageHDU):
                        index = i
                        break
                if index is None:
                    msg = f"{self.path}: no 2-D or 3-D image in any HDU; is it a FITS image?"
                    raise ValueError(msg)
                hdu = hdul[index]
                hdr = hdu.header
                self._hdu = index
                self._compressed = isinstance(hdu, fits.CompImageHDU)
                naxes = [int(hdr[f"NAXIS{k}"]) for k in range(int(hdr["NAXIS"]), 0, -1)]
                self._bitpix = int(hdr["BITPIX"])
                self._bzero = float(hdr.get("BZERO", 0.0))
                self._bscale = float(hdr.get("BSCALE", 1.0))
                self._blank = hdr.get("BLANK") if self._bitpix > 0 else None
                info = hdul.fileinfo(index)
                direct = (
                    not self._compressed
                    and info is not None
                    and not info.get("filemode", "readonly").startswith("gz")
                    and self._bitpix in _BITPIX_DTYPES
                    and self.path.suffix.lower() in _FITS_SUFFIXES
                )
                self._offset = int(info["datLoc"]) if direct else -1
        except ValueError:
            raise
        except (OSError, KeyError, TypeError) as exc:
            msg = f"{self.path}: cannot read FITS header ({exc}); check or re-copy the file"
            raise ValueError(msg) from exc
        if len(naxes) not in (2, 3) or min(naxes) < 1:
            msg = f"{self.path}: image shape {tuple(naxes)} is not [y, x] or [c, y, x]"
            raise ValueError(msg)
        self.shape = tuple(naxes)
        self._dtype = np.dtype(_BITPIX_DTYPES.get(self._bitpix, ">f4"))
        if self._offset >= 0:
            need = self._offset + int(np.prod(self.shape)) * self._dtype.itemsize
            size = self.path.stat().st_size
            if size < need:
                msg = f"{self.path}: truncated FITS ({size} of {need} bytes); re-copy the file"
                raise ValueError(msg)

    @property
    def direct(self) -> bool:
        """True when bands are read straight from the file (uncompressed image)."""
        return self._offset >= 0

    def open(self) -> FitsSource:
        """Open for a pass; unusual files are decoded once into a temporary ``.npy``."""
        if self.direct:
            if self._fh is None:
                self._fh = open(self.path, "rb")  # held open for the whole pass
            return self
        if self._tmp_src is None:
            from astropy.io import fits

            data = fits.getdata(self.path, ext=self._hdu).astype(np.float32)
            fd, tmp = tempfile.mkstemp(prefix="astrostack-band-", suffix=".npy")
            os.close(fd)
            self._tmp = Path(tmp)
            np.save(self._tmp, np.ascontiguousarray(data))
            del data
            self._tmp_src = NpySource(self._tmp).open()
        return self

    def close(self) -> None:
        """Release the handle and any temporary decoded copy."""
        super().close()
        if self._tmp_src is not None:
            self._tmp_src.close()
            self._tmp_src = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
            self._tmp = None

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_tmp"] = None
        state["_tmp_src"] = None
        return state

    def read_rows(self, y0: int, y1: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``y0:y1`` as float32, physical values (BZERO/BSCALE applied, BLANK -> NaN)."""
        rows = _check_rows(self, y0, y1)
        out = _out_view(self, rows, out)
        was_open = self._fh is not None or self._tmp_src is not None
        self.open()
        try:
            if not self.direct:
                return self._tmp_src.read_rows(y0, y1, out)
            height, width = self.shape[-2:]
            planes = out[None] if out.ndim == 2 else out
            item = self._dtype.itemsize
            for c in range(planes.shape[0]):
                self._fh.seek(self._offset + ((c * height + y0) * width) * item)
                raw = self._fh.read(rows * width * item)
                if len(raw) != rows * width * item:
                    msg = (
                        f"{self.path}: short read at rows {y0}:{y1}; the file changed or is damaged"
                    )
                    raise OSError(msg)
                vals = np.frombuffer(raw, dtype=self._dtype).reshape(rows, width)
                self._convert(vals, planes[c])
        finally:
            if not was_open:
                self.close()
        return out

    def _convert(self, vals: np.ndarray, dest: np.ndarray) -> None:
        scaled = self._bscale != 1.0 or self._bzero != 0.0
        if not scaled:
            dest[...] = vals
        elif self._dtype.itemsize <= 2 and self._dtype.kind in "iu":
            # 8/16-bit integers and their scaled values are exact in float32 arithmetic
            np.multiply(vals, np.float32(self._bscale), out=dest)
            dest += np.float32(self._bzero)
        else:
            dest[...] = vals.astype(np.float64) * self._bscale + self._bzero
        if self._blank is not None:
            dest[vals == self._blank] = np.nan


class ArraySource(_BaseSource):
    """An in-memory float array exposed as a source.

    Parameters
    ----------
    data : ndarray
        ``[y, x]`` or ``[c, y, x]``; converted to float32 (no copy when already float32).
    path : str or Path, optional
        A name for messages.
    """

    def __init__(self, data: np.ndarray, path: str | Path | None = None):
        data = np.asarray(data)
        if data.ndim not in (2, 3):
            msg = f"{path or 'array'}: expected [y, x] or [c, y, x], got shape {data.shape}"
            raise ValueError(msg)
        self.data = np.ascontiguousarray(data, dtype=np.float32)
        self.shape = tuple(self.data.shape)
        self.path = Path(path) if path is not None else None

    def read_rows(self, y0: int, y1: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``y0:y1`` (a copy, or written into *out*)."""
        rows = _check_rows(self, y0, y1)
        out = _out_view(self, rows, out)
        out[...] = self.data[..., y0 : y0 + rows, :]
        return out


def open_source(path: str | Path) -> FrameSource:
    """The right source for a file: ``.npy`` -> :class:`NpySource`, FITS -> :class:`FitsSource`.

    Other formats (TIFF, RAW) are read with :func:`astrostack.io.read_frame` when it
    is available and held as an :class:`ArraySource`.

    Raises
    ------
    ValueError
        When the file cannot be used (message names the file).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return NpySource(path)
    if suffix in _FITS_SUFFIXES or path.name.lower().endswith((".fits.gz", ".fit.gz", ".fz")):
        return FitsSource(path)
    try:
        from astrostack.io import read_frame  # provided by the io engineer
    except ImportError as exc:
        msg = f"{path}: unsupported format {suffix!r}; convert it to FITS or .npy"
        raise ValueError(msg) from exc
    frame = read_frame(path)
    return ArraySource(frame.data, path=path)


def _interp_weights(coords: np.ndarray, n: int, size: int, tile: int):
    """Bilinear weights along one axis: ``(i0, i1, t)`` with value ``g[i0] (1-t) + g[i1] t``.

    Tile ``i`` is centred at ``i * tile + (tile - 1) / 2`` (the middle of the part
    inside the image for the last tile); beyond the outermost centres the line through
    the last two continues (linear extrapolation).
    """
    if n == 1:
        zeros = np.zeros(coords.size, dtype=np.intp)
        return zeros, zeros, np.zeros(coords.size)
    starts = np.arange(n) * tile
    centres = (starts + np.minimum(starts + tile, size) - 1) / 2.0
    pos = np.interp(coords, centres, np.arange(n, dtype=np.float64))
    # linear extrapolation beyond the outermost centres (gradients continue)
    lo, hi = coords < centres[0], coords > centres[-1]
    pos[lo] = (coords[lo] - centres[0]) / (centres[1] - centres[0])
    pos[hi] = n - 1 + (coords[hi] - centres[-1]) / (centres[-1] - centres[-2])
    i0 = np.clip(np.floor(pos).astype(np.intp), 0, n - 2)
    return i0, i0 + 1, pos - i0


@functools.lru_cache(maxsize=8)
def _axis_table(tile: int, n: int, size: int):
    """``(i0, i1, t, 1 - t, segments)`` for every pixel of an axis, read-only.

    ``segments`` are the boundaries of the runs of pixels between the same two tile
    centres (``i0`` constant).  The same for every surface of a stack: computed once.
    """
    i0, i1, t = _interp_weights(np.arange(size, dtype=np.float64), n, size, tile)
    segments = np.concatenate(([0], np.flatnonzero(np.diff(i0)) + 1, [size]))
    table = (i0.astype(np.int64), i1.astype(np.int64), t, 1.0 - t, segments.astype(np.int64))
    for arr in table:
        arr.setflags(write=False)
    return table


@dataclass(frozen=True)
class GridSurface:
    """A smooth surface: bilinear interpolation of values on a coarse grid of tile centres.

    Parameters
    ----------
    grid : ndarray
        ``[ny, nx]`` or ``[C, ny, nx]`` values at tile centres (finite).
    tile : int
        Tile size in pixels; tile ``(j, i)`` is centred at
        ``(j * tile + (tile - 1) / 2, i * tile + (tile - 1) / 2)`` (the middle of the
        part inside the image for the last tile).
    shape : tuple of int
        Image ``(H, W)``; beyond the outermost centres the surface is extrapolated
        linearly.
    """

    grid: np.ndarray
    tile: int
    shape: tuple[int, int]

    def _weights(self, coords: np.ndarray, n: int, size: int):
        return _interp_weights(coords, n, size, self.tile)

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """The surface on rows ``y0:y1``: float32 ``[rows, W]`` or ``[C, rows, W]``."""
        height, width = self.shape
        grid = np.asarray(self.grid, dtype=np.float64)
        planes = grid[None] if grid.ndim == 2 else grid
        ny, nx = planes.shape[-2:]
        j0, j1, ty = self._weights(np.arange(y0, y1, dtype=np.float64), ny, height)
        i0, i1, tx = self._weights(np.arange(width, dtype=np.float64), nx, width)
        along_y = (
            planes[:, j0, :] * (1.0 - ty)[None, :, None] + planes[:, j1, :] * ty[None, :, None]
        )
        surf = along_y[:, :, i0] * (1.0 - tx) + along_y[:, :, i1] * tx
        surf = surf.astype(np.float32)
        return surf[0] if grid.ndim == 2 else surf


@njit(cache=True, nogil=True, fastmath=False)
def _transform_kernel(planes, y0, scale, offset, grid, ytab, xtab):  # pragma: no cover
    """``planes[c] = planes[c] * scale[c] + offset[c] (+ surface)``, float32, in place.

    Each step rounds to float32 as the numpy operations ``*=``, ``+=`` would; the
    surface (when ``grid`` has planes) is evaluated in float64 as
    :meth:`GridSurface.rows` evaluates it and rounded to float32 before it is added.
    ``ytab`` / ``xtab`` are :func:`_axis_table` tuples of the two axes.
    """
    j0, j1, ty, omty, _ = ytab
    i0, i1, tx, omtx, xseg = xtab
    n_c, rows, width = planes.shape
    surf = grid.shape[0] > 0
    along = np.empty(grid.shape[2], dtype=np.float64)
    for c in range(n_c):
        sc = scale[c]
        of = offset[c]
        for r in range(rows):
            row = planes[c, r]
            if sc != 1:
                for x in range(width):
                    row[x] = row[x] * sc
            if of != 0:
                for x in range(width):
                    row[x] = row[x] + of
            if not surf:
                continue
            y = y0 + r
            a = j0[y]
            b = j1[y]
            t = ty[y]
            ot = omty[y]
            for i in range(along.shape[0]):
                along[i] = grid[c, a, i] * ot + grid[c, b, i] * t
            # runs of pixels between the same two centres: no gather in the inner loop
            # (slices, whose indices from 0 the compiler vectorises)
            for s in range(xseg.shape[0] - 1):
                xa = xseg[s]
                xb = xseg[s + 1]
                g0 = along[i0[xa]]
                g1 = along[i1[xa]]
                run = row[xa:xb]
                w0 = omtx[xa:xb]
                w1 = tx[xa:xb]
                for x in range(run.shape[0]):
                    run[x] = run[x] + np.float32(g0 * w0[x] + g1 * w1[x])


_NO_GRID = np.zeros((0, 1, 1), dtype=np.float64)


def transform_band(
    planes: np.ndarray,
    y0: int,
    scale: np.ndarray,
    offset: np.ndarray,
    surface: GridSurface | None = None,
) -> None:
    """Apply a frame's transform to its band ``planes`` (float32 ``[C, rows, W]``) in place.

    ``value * scale[c] + offset[c]`` (each step rounded to float32), then plus the
    ``surface`` on rows ``y0 : y0 + rows`` when given: the same values as
    ``planes *= scale; planes += offset; planes += surface.rows(y0, y1)``, bit for bit,
    in one compiled pass (no float64 temporaries, interpolation tables built once per
    image geometry).
    """
    scale = np.asarray(scale, dtype=np.float32).reshape(-1)
    offset = np.asarray(offset, dtype=np.float32).reshape(-1)
    rows, width = planes.shape[-2:]
    if surface is None:
        grid = _NO_GRID
        ytab = xtab = _axis_table(1, 1, 1)
    else:
        height = surface.shape[0]
        if tuple(surface.shape) != (height, width) or y0 + rows > height:
            msg = f"surface of shape {surface.shape} does not cover rows {y0}:{y0 + rows}"
            raise ValueError(msg)
        grid = np.asarray(surface.grid, dtype=np.float64)
        grid = np.ascontiguousarray(grid[None] if grid.ndim == 2 else grid)
        if grid.shape[0] != planes.shape[0]:
            msg = f"surface has {grid.shape[0]} planes for a band of {planes.shape[0]}"
            raise ValueError(msg)
        ytab = _axis_table(surface.tile, grid.shape[1], height)
        xtab = _axis_table(surface.tile, grid.shape[2], width)
    _transform_kernel(planes, int(y0), scale, offset, grid, ytab, xtab)
