"""Frame writers: FITS with provenance, TIFF for display, ``.npy`` for the pipeline cache.

Every writer goes through :func:`~astrostack.io.atomic.atomic_path`: a killed or failing
write never leaves a partial file under the final name and never clobbers an existing one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path
from .frame import FrameMeta
from .metadata import meta_to_header, normalize_pattern

__all__ = ["read_npy", "write_fits", "write_npy", "write_tiff"]

logger = logging.getLogger(__name__)

# Keywords astropy manages itself, or that would describe the wrong array if copied.
_STRUCTURAL = frozenset(
    {
        "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "BZERO",
        "BSCALE", "BLANK", "PCOUNT", "GCOUNT", "XTENSION", "END", "CHECKSUM", "DATASUM",
        "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZNAXIS1", "ZNAXIS2", "ZNAXIS3", "ZCMPTYPE",
        "ZTILE1", "ZTILE2", "ZTILE3", "ZQUANTIZ", "ZDITHER0", "ZSIMPLE", "ZEXTEND",
        "ZPCOUNT", "ZGCOUNT", "TFIELDS", "TTYPE1", "TFORM1", "ZNAME1", "ZVAL1", "ZNAME2",
        "ZVAL2", "BAYERPAT", "ROWORDER", "XBAYROFF", "YBAYROFF", "COMMENT", "HISTORY",
    }
)  # fmt: skip


def _version() -> str:
    try:
        from astrostack import __version__
    except ImportError:  # pragma: no cover - package always importable in practice
        return "unknown"
    return str(__version__)


def _ascii(text: str) -> str:
    """FITS headers are ASCII: escape anything else reversibly (``é`` -> ``\\xe9``)."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _fits_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat()
    if isinstance(value, str):
        return _ascii(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    return _ascii(str(value))


def write_fits(
    path: str | Path,
    data: np.ndarray,
    header: Mapping | FrameMeta | None = None,
    history: Iterable[str] = (),
    overwrite: bool = True,
    *,
    dtype: np.dtype | type | None = np.float32,
    bayer: str | None = None,
    durable: bool = True,
) -> Path:
    """Write an image to FITS atomically, with provenance keywords.

    Parameters
    ----------
    path
        Output file.
    data
        ``[y, x]`` or ``[c, y, x]`` (colour is written as a ``(3, H, W)`` cube,
        ``NAXIS3 = 3``).
    header
        Keywords to write: an ``astropy.io.fits.Header``, a mapping, or a
        :class:`FrameMeta` (converted with
        :func:`~astrostack.io.metadata.meta_to_header`).  Structural keywords and the
        CFA keywords (``BAYERPAT``, ``ROWORDER``, ``XBAYROFF``, ``YBAYROFF``) of the given
        header are not copied: they are written from the data and *bayer*.
    history
        Lines appended as ``HISTORY`` cards.
    overwrite
        If false and *path* exists, raise :class:`FileExistsError`.
    dtype
        Stored type: float32 by default; an unsigned integer type is stored with the usual
        ``BZERO`` offset; ``None`` keeps ``data.dtype``.
    bayer
        CFA pattern of a mosaic *as held* (pattern at ``data[0, 0]``); written as
        ``BAYERPAT`` with ``ROWORDER='TOP-DOWN'``.  Defaults to ``header.bayer`` when
        *header* is a :class:`FrameMeta`.
    durable
        Flush to disk before the rename (see :func:`~astrostack.io.atomic.atomic_path`);
        False suits files of a cache that can be recomputed.

    Returns
    -------
    Path
        The written file.
    """
    from astropy.io import fits

    path = Path(path)
    if not overwrite and path.exists():
        msg = f"{path}: already exists; pass overwrite=True or choose another name"
        raise FileExistsError(msg)
    array = np.asarray(data)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[0] != 3):
        msg = f"{path}: write_fits needs [y, x] or [3, y, x] data, got shape {array.shape}"
        raise ValueError(msg)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    array = np.ascontiguousarray(array)

    cards: dict[str, Any] = {}
    comments: dict[str, str] = {}
    if isinstance(header, FrameMeta):
        if bayer is None:
            bayer = header.bayer
        cards.update(meta_to_header(header))
    elif header is not None:
        if isinstance(header, fits.Header):
            for card in header.cards:
                if card.keyword and card.keyword not in _STRUCTURAL:
                    cards[card.keyword] = card.value
                    comments[card.keyword] = card.comment
        else:
            cards.update({str(k).upper(): v for k, v in header.items()})
    for key in list(cards):
        if key in _STRUCTURAL or key.startswith("_") or len(key) > 8:
            cards.pop(key)

    hdu = fits.PrimaryHDU(array)
    out = hdu.header
    for key, value in cards.items():
        value = _fits_value(value)
        if value is None or key in _STRUCTURAL or key.startswith("_"):
            continue
        try:
            out[key] = (value, _ascii(comments.get(key, "")))
        except (ValueError, KeyError) as exc:
            logger.debug("%s: keyword %s not written (%s)", path, key, exc)
    if array.ndim == 2 and bayer is not None:
        out["BAYERPAT"] = (normalize_pattern(bayer), "CFA pattern at the first pixel stored")
        out["ROWORDER"] = ("TOP-DOWN", "first stored row is the top of the image")
        out["XBAYROFF"] = (0, "X offset of Bayer array")
        out["YBAYROFF"] = (0, "Y offset of Bayer array")
    out["ASTRVER"] = (_version(), "astrostack version")
    out["DATE"] = (
        datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
        "UTC date this file was written",
    )
    for line in history:
        out.add_history(_ascii(str(line)))

    with atomic_path(path, durable=durable) as tmp:
        hdu.writeto(tmp, overwrite=True, output_verify="silentfix")
    logger.debug("wrote %s %s", path, array.shape)
    return path


def write_tiff(
    path: str | Path,
    data: np.ndarray,
    bits: int = 16,
    lo: float | None = None,
    hi: float | None = None,
) -> Path:
    """Write an image to TIFF atomically.

    Parameters
    ----------
    path
        Output file.
    data
        ``[y, x]`` or ``[3, y, x]``; colour is written as ``(H, W, 3)`` RGB.
    bits
        16: unsigned 16-bit, the data scaled from ``[lo, hi]`` (default ``[0, 1]``) to
        ``[0, 65535]``, clipped, NaN written as 0.  32: IEEE float32, values as they are.
    lo, hi
        Input range mapped to ``[0, 65535]`` for 16-bit output.

    Returns
    -------
    Path
        The written file.
    """
    import tifffile

    path = Path(path)
    array = np.asarray(data, dtype=np.float32)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[0] != 3):
        msg = f"{path}: write_tiff needs [y, x] or [3, y, x] data, got shape {array.shape}"
        raise ValueError(msg)
    if bits == 16:
        low = 0.0 if lo is None else float(lo)
        high = 1.0 if hi is None else float(hi)
        if not high > low:
            msg = f"{path}: write_tiff needs hi > lo, got lo={low}, hi={high}"
            raise ValueError(msg)
        scaled = (array.astype(np.float64) - low) * (65535.0 / (high - low))
        scaled = np.nan_to_num(scaled, nan=0.0, posinf=65535.0, neginf=0.0)
        out = np.rint(np.clip(scaled, 0.0, 65535.0)).astype(np.uint16)
    elif bits == 32:
        out = array
    else:
        msg = f"{path}: write_tiff supports bits=16 or bits=32, got {bits}"
        raise ValueError(msg)
    photometric = "minisblack"
    if out.ndim == 3:
        out = np.ascontiguousarray(np.moveaxis(out, 0, -1))
        photometric = "rgb"
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            out,
            photometric=photometric,
            software=f"astrostack {_version()}",
            metadata=None,
        )
    return path


def write_npy(path: str | Path, array: np.ndarray, durable: bool = True) -> Path:
    """Write an array as ``.npy`` (little-endian, C order) atomically, for the pipeline cache.

    Parameters
    ----------
    path
        Output file (written exactly at this name; no ``.npy`` is appended).
    array
        Any numeric array; big-endian data are converted to little-endian.
    durable
        Flush to disk before the rename (see :func:`~astrostack.io.atomic.atomic_path`);
        False suits recomputable cache files.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    arr = np.asarray(array)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and np.little_endian is False):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    arr = np.ascontiguousarray(arr)
    with atomic_path(path, durable=durable) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    return path


def read_npy(path: str | Path, mmap: bool = False) -> np.ndarray:
    """Read a ``.npy`` file written by :func:`write_npy`.

    Parameters
    ----------
    path
        The file.
    mmap
        Memory-map read-only instead of loading (a band of rows is then one contiguous read).

    Returns
    -------
    numpy.ndarray
    """
    path = Path(path)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        msg = f"{path}: cannot read cache array ({exc}); delete it to have it recomputed"
        raise ValueError(msg) from exc
