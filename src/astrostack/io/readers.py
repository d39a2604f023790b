"""Frame readers: FITS (also ``.fz``), TIFF and DSLR RAW, dispatched on file content.

Every reader returns float32 pixels exactly as stored (physical values after
``BZERO``/``BSCALE``; integer TIFF and RAW values in ADU, not rescaled) with row 0 the first
row stored in the file.  Every failure is a :class:`~astrostack.io.frame.FrameReadError`
that names the file and says what to do.
"""

from __future__ import annotations

import errno
import logging
import os
import warnings
from datetime import UTC
from pathlib import Path

import numpy as np

from .frame import Frame, FrameMeta, FrameReadError
from .metadata import kind_from_path, meta_from_fits_header

__all__ = [
    "FITS_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "RAW_EXTENSIONS",
    "TIFF_EXTENSIONS",
    "detect_format",
    "is_frame_name",
    "read_frame",
    "read_meta",
]

logger = logging.getLogger(__name__)

FITS_EXTENSIONS = frozenset({".fit", ".fits", ".fts", ".fz"})
TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})
RAW_EXTENSIONS = frozenset(
    {
        ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".raf",
        ".orf", ".rw2", ".pef", ".srw", ".x3f", ".erf", ".kdc", ".dcr", ".mos", ".mrw",
        ".3fr", ".iiq", ".rwl", ".raw",
    }
)  # fmt: skip
#: Extensions that name a frame; other files are not images for :func:`discover`.
IMAGE_EXTENSIONS = FITS_EXTENSIONS | TIFF_EXTENSIONS | RAW_EXTENSIONS

_FITS_MAGIC = b"SIMPLE  ="
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_RAW_MAGICS = (b"FUJIFILM", b"IIRO", b"IIRS", b"IIU\x00", b"MMOR")
_BLOCK = 2880


def _is_gzipped_fits_name(path: Path) -> bool:
    suffixes = [x.lower() for x in path.suffixes[-2:]]
    return len(suffixes) == 2 and suffixes[1] == ".gz" and suffixes[0] in FITS_EXTENSIONS


def is_frame_name(path: str | Path) -> bool:
    """True if the file name has a frame extension (FITS, ``.fits.gz``, TIFF or RAW)."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_EXTENSIONS or _is_gzipped_fits_name(path)


def _head(path: Path, n: int = 64) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _describe_text(head: bytes) -> str:
    text = head[:24].decode("ascii", errors="replace").replace("\n", " ").strip()
    return text


def detect_format(path: str | Path) -> str:
    """Format of a file from its first bytes and its extension.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    str
        ``'fits'``, ``'tiff'`` or ``'raw'``.

    Raises
    ------
    FrameReadError
        If the file is missing, empty, an 8-bit JPEG/PNG, or of an unknown format.
    """
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            try:
                os.stat(path)
                looped = False
            except OSError as exc:
                looped = exc.errno == errno.ELOOP
            if looped:
                reason = f"symbolic link loop (points to {target}); replace the link by the file"
            else:
                reason = (
                    f"broken symbolic link (points to {target}, which does not exist); "
                    "fix or delete the link"
                )
            raise FrameReadError(path, reason)
        raise FrameReadError(path, "file not found; check the path")
    if path.is_dir():
        raise FrameReadError(path, "is a folder, not a frame; use `discover` for folders")
    size = path.stat().st_size
    if size == 0:
        raise FrameReadError(path, "empty file (0 bytes); re-copy it from the camera or delete it")
    try:
        head = _head(path)
    except OSError as exc:
        raise FrameReadError(path, f"cannot open file ({exc.strerror}); check permissions") from exc
    ext = path.suffix.lower()
    if head.startswith(b"\xff\xd8\xff"):
        raise FrameReadError(
            path,
            "is an 8-bit JPEG image, not a raw frame; use the camera's RAW or FITS files",
        )
    if head.startswith(b"\x89PNG"):
        raise FrameReadError(
            path, "is an 8-bit PNG image, not a raw frame; use the camera's RAW or FITS files"
        )
    if head.startswith(_FITS_MAGIC):
        return "fits"
    if head.startswith(b"\x1f\x8b") and _is_gzipped_fits_name(path):
        return "fits"
    if ext in RAW_EXTENSIONS:
        return "raw"
    if head[:4] in _TIFF_MAGICS:
        return "tiff"
    if head.startswith(_RAW_MAGICS) or head[4:12] in (b"ftypcrx ",):
        return "raw"
    if ext in FITS_EXTENSIONS:
        if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
            reason = (
                f"not a FITS file: it is text starting with {_describe_text(head)!r}; "
                "remove it from the frames folder"
            )
        else:
            reason = "not a FITS file (no 'SIMPLE  =' at the start); re-copy or re-export it"
        raise FrameReadError(path, reason)
    if ext in TIFF_EXTENSIONS:
        raise FrameReadError(path, "not a TIFF file (bad signature); re-export it")
    raise FrameReadError(
        path,
        f"unknown format (extension {ext or 'none'!r}); astrostack reads FITS, TIFF and "
        "camera RAW files",
    )


# ---------------------------------------------------------------------------------------
# FITS
# ---------------------------------------------------------------------------------------


_VALID_BITPIX = (8, 16, 32, 64, -32, -64)


def _open_fits(path: Path):
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
    except KeyError as exc:  # astropy's bare KeyError for e.g. NAXIS = 3 without NAXIS3
        raise FrameReadError(
            path, f"corrupt FITS header: required keyword {exc} is missing; re-save the file"
        ) from exc
    except (OSError, ValueError, IndexError, TypeError) as exc:
        raise FrameReadError(
            path, f"corrupt or truncated FITS header ({exc}); re-copy the file"
        ) from exc
    return hdul


def _image_hdu(path: Path, hdul):
    for index, hdu in enumerate(hdul):
        header = hdu.header
        is_image = getattr(hdu, "is_image", False) or type(hdu).__name__ == "CompImageHDU"
        if not is_image:
            continue
        naxis = int(header.get("NAXIS", 0) or 0)
        if naxis >= 2 and all(int(header.get(f"NAXIS{i}", 0) or 0) > 0 for i in (1, 2)):
            return index, hdu
    raise FrameReadError(path, "FITS file has no image data (no HDU with NAXIS >= 2)")


def _check_fits_size(path: Path, hdu) -> None:
    info = hdu.fileinfo()
    if info is None or _is_gzipped_fits_name(path):
        return  # offsets of a gzipped file refer to the uncompressed stream
    size = path.stat().st_size
    compressed = type(hdu).__name__ == "CompImageHDU"
    if compressed:
        needed = info["datLoc"] + info["datSpan"] - (_BLOCK - 1)
    else:
        h = hdu.header
        n = 1
        for i in range(1, int(h["NAXIS"]) + 1):
            n *= int(h[f"NAXIS{i}"])
        needed = info["datLoc"] + n * abs(int(h["BITPIX"])) // 8
    if size < needed:
        expected = info["datLoc"] + info["datSpan"]
        raise FrameReadError(path, f"truncated FITS ({size} of {expected} bytes); re-copy the file")


def _fits_shape(path: Path, hdu) -> tuple[int, ...]:
    shape = tuple(int(s) for s in hdu.shape)
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) == 2 or (len(shape) == 3 and shape[0] == 3):
        return shape
    raise FrameReadError(
        path,
        f"unsupported FITS image shape {shape}: expected 2-D mono/CFA or a 3-plane RGB cube",
    )


def _plain_fits_pixels(path: Path, hdu, chunk: int = 1 << 20) -> np.ndarray | None:
    """float32 pixels of a plain 16-bit integer or 32-bit float image, read straight from disk.

    astropy reads such data into a big-endian array, scales it (``BZERO``) in another and we
    converted that to float32: three passes and two temporaries.  Here the file is read in
    blocks of *chunk* pixels into one small buffer (it stays in the cache) and each block is
    converted into the float32 result at once; the values are identical (a 16-bit integer
    plus an integer ``BZERO`` below 2**23 is exact in float32).  Returns None for anything
    else (compressed, gzipped, ``BSCALE`` != 1, ``BLANK``, other ``BITPIX``), which astropy
    then reads.
    """
    if type(hdu).__name__ == "CompImageHDU" or _is_gzipped_fits_name(path):
        return None
    h = hdu.header
    bitpix = h.get("BITPIX")
    bscale = h.get("BSCALE", 1)
    bzero = h.get("BZERO", 0)
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (bscale, bzero))
    if "BLANK" in h or not numbers or bscale != 1 or not float(bzero).is_integer():
        return None
    if bitpix == 16 and abs(bzero) <= 2**23:
        from ._fits_kernels import be_int16_to_float32

        buf = np.empty(chunk, dtype=np.uint16)  # native: the kernel swaps the bytes

        def convert(raw: np.ndarray, out: np.ndarray) -> None:
            be_int16_to_float32(raw, out, np.float32(bzero))
    elif bitpix == -32 and bzero == 0:
        buf = np.empty(chunk, dtype=">f4")

        def convert(raw: np.ndarray, out: np.ndarray) -> None:
            out[...] = raw  # byte swap and copy in one pass
    else:
        return None
    info = hdu.fileinfo()
    if info is None:
        return None
    shape = tuple(int(h[f"NAXIS{i}"]) for i in range(int(h["NAXIS"]), 0, -1))
    count = int(np.prod(shape))
    out = np.empty(count, dtype=np.float32)
    try:
        with open(path, "rb") as fh:
            fh.seek(int(info["datLoc"]))
            for start in range(0, count, chunk):
                raw = buf[: min(chunk, count - start)]
                if fh.readinto(raw.view(np.uint8)) != raw.nbytes:
                    return None  # short file: astropy's path reports it
                convert(raw, out[start : start + raw.size])
    except (OSError, ValueError):
        return None
    out = out.reshape(shape)
    return out[0] if out.ndim == 3 and out.shape[0] == 1 else out


def _read_fits(path: Path, with_data: bool) -> Frame | FrameMeta:
    from astropy.io.fits.verify import VerifyError

    hdul = _open_fits(path)
    try:
        try:
            index, hdu = _image_hdu(path, hdul)
            bitpix = hdu.header.get("ZBITPIX", hdu.header.get("BITPIX"))
            if bitpix not in _VALID_BITPIX:
                raise FrameReadError(
                    path,
                    f"invalid FITS header: BITPIX = {bitpix} (must be one of 8, 16, 32, 64, -32, "
                    "-64); re-save the file",
                )
            _check_fits_size(path, hdu)
            shape = _fits_shape(path, hdu)
            meta = meta_from_fits_header(hdu.header, path=path, shape=shape)
        except FrameReadError:
            raise
        except VerifyError as exc:
            raise FrameReadError(
                path, f"cannot parse a FITS header card ({exc}); fix or re-save the header"
            ) from exc
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            # e.g. NAXIS = 3 without NAXIS3: astropy fails with a bare KeyError
            raise FrameReadError(
                path, f"malformed FITS header ({type(exc).__name__}: {exc}); re-save the file"
            ) from exc
        if index:
            meta.header["_HDU"] = index
        if not with_data:
            return meta
        fast = _plain_fits_pixels(path, hdu)
        if fast is not None:
            return Frame(fast, meta)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = hdu.data
        except (OSError, ValueError, TypeError) as exc:
            raise FrameReadError(
                path, f"cannot read FITS data ({exc}); the file is probably truncated, re-copy it"
            ) from exc
        if data is None:
            raise FrameReadError(path, "FITS HDU has no data")
        data = np.asarray(data)
        if data.ndim == 3 and data.shape[0] == 1:
            data = data[0]
        out = np.ascontiguousarray(data, dtype=np.float32)
        if out.dtype.byteorder not in ("=", "|"):
            out = out.astype(np.float32)
        return Frame(out, meta)
    finally:
        hdul.close()


# ---------------------------------------------------------------------------------------
# TIFF
# ---------------------------------------------------------------------------------------


def _tiff_layout(path: Path, page) -> tuple[tuple[int, ...], str]:
    shape = tuple(int(s) for s in page.shape)
    axes = page.axes
    if len(shape) == 2:
        return shape, "yx"
    if len(shape) == 3 and axes.endswith("S") and shape[2] in (3, 4):
        return (3, shape[0], shape[1]), "yxs"
    if len(shape) == 3 and shape[0] in (3, 4) and axes[0] in "SC":
        return (3, shape[1], shape[2]), "syx"
    raise FrameReadError(
        path, f"unsupported TIFF layout {shape} (axes {axes}); expected mono or RGB"
    )


# Deflate cannot expand data more than ~1032:1: a TIFF that announces more pixels than
# that for its size is corrupt (and would otherwise allocate gigabytes).
_TIFF_MAX_EXPANSION = 1100


def _check_tiff_size(path: Path, page) -> None:
    """Refuse a TIFF whose strips or tiles lie past the end of the file or cannot hold it."""
    size = path.stat().st_size
    counts = [int(n) for n in page.databytecounts]
    ends = [int(o) + n for o, n in zip(page.dataoffsets, counts, strict=False) if n]
    if ends and max(ends) > size:
        raise FrameReadError(
            path, f"truncated TIFF ({size} of {max(ends)} bytes); re-copy the file"
        )
    if not page.shape or min(page.shape) < 1:
        raise FrameReadError(path, f"corrupt TIFF: empty image of shape {page.shape}")
    nbytes = int(np.prod(page.shape, dtype=np.int64)) * np.dtype(page.dtype).itemsize
    stored = sum(counts)
    if int(page.compression) == 1 and stored < nbytes:
        raise FrameReadError(
            path,
            f"corrupt TIFF: the image needs {nbytes} bytes but its strips hold {stored}; "
            "re-export the file",
        )
    if nbytes > _TIFF_MAX_EXPANSION * max(size, 1):
        raise FrameReadError(
            path,
            f"corrupt TIFF: {page.shape} pixels announced in a {size}-byte file; "
            "re-export the file",
        )


def _read_tiff(path: Path, with_data: bool) -> Frame | FrameMeta:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            # Only the first page: a frame is one image, and a corrupt file's chain of
            # pages can be endless.
            page = tif.pages.first
            shape, layout = _tiff_layout(path, page)
            if np.dtype(page.dtype).kind == "c":
                raise FrameReadError(
                    path,
                    f"complex-valued TIFF ({page.dtype}) is not an image; export real pixels",
                )
            _check_tiff_size(path, page)
            header = {
                "TIFF_DTYPE": str(page.dtype),
                "TIFF_BITS": int(getattr(page, "bitspersample", 0) or 0),
                "TIFF_PHOTOMETRIC": str(getattr(page, "photometric", "")),
            }
            description = getattr(page, "description", "") or ""
            if description:
                header["TIFF_DESCRIPTION"] = description[:200]
            meta = FrameMeta(path=path, kind=kind_from_path(path), shape=shape, header=header)
            if not with_data:
                return meta
            data = page.asarray()
    except FrameReadError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise FrameReadError(path, f"cannot read TIFF ({exc}); re-export the file") from exc
    if layout == "yxs":
        data = np.moveaxis(data[..., :3], -1, 0)
    elif layout == "syx":
        data = data[:3]
    return Frame(np.ascontiguousarray(data, dtype=np.float32), meta)


# ---------------------------------------------------------------------------------------
# RAW
# ---------------------------------------------------------------------------------------


def _raw_pattern(path: Path, raw) -> str | None:
    pattern = raw.raw_pattern
    if pattern is None:
        return None
    pattern = np.asarray(pattern)
    if pattern.shape == (6, 6):
        raise FrameReadError(
            path,
            "X-Trans (6x6) colour filter array is not supported yet; convert the files to "
            "demosaiced TIFF or use a Bayer camera",
        )
    if pattern.shape != (2, 2):
        raise FrameReadError(
            path, f"unsupported colour filter array of size {pattern.shape}; only 2x2 Bayer"
        )
    desc = raw.color_desc.decode("ascii", errors="replace")
    letters = []
    for index in pattern.ravel():
        letter = desc[int(index)] if int(index) < len(desc) else "?"
        letters.append(letter)
    text = "".join(letters)
    if text not in ("RGGB", "BGGR", "GRBG", "GBRG"):
        raise FrameReadError(
            path, f"unsupported colour filter array {text!r} (colours {desc!r}); only RGB Bayer"
        )
    return text


def _raw_meta(path: Path, raw) -> FrameMeta:
    sizes = raw.sizes
    pattern = _raw_pattern(path, raw)
    blacks = [float(b) for b in raw.black_level_per_channel]
    white = float(raw.white_level) if raw.white_level else None
    wb = tuple(float(w) for w in raw.camera_whitebalance)
    header: dict = {
        "BLACK_LEVEL_PER_CHANNEL": blacks,
        "WHITE_LEVEL": white,
        "RAW_PATTERN": np.asarray(raw.raw_pattern).tolist(),
        "COLOR_DESC": raw.color_desc.decode("ascii", errors="replace"),
        "CAMERA_WHITEBALANCE": list(wb),
        "FLIP": int(sizes.flip),
    }
    exposure = iso = date = None
    other = getattr(raw, "other", None)  # rawpy >= 0.26
    if other is not None:
        shutter = float(getattr(other, "shutter_speed", 0.0) or 0.0)
        exposure = shutter if shutter > 0 else None
        iso_speed = float(getattr(other, "iso_speed", 0.0) or 0.0)
        iso = round(iso_speed) if iso_speed > 0 else None
        stamp = getattr(other, "timestamp", None)
        if stamp is not None and getattr(stamp, "year", 1970) > 1970:
            # LibRaw's timestamp is the camera clock; its time zone is unknown.
            date = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp
            header["DATE_CAMERA_CLOCK"] = True
        header.update(
            {
                "SHUTTER": exposure,
                "ISO": iso,
                "APERTURE": float(getattr(other, "aperture", 0.0) or 0.0) or None,
                "FOCAL_LENGTH": float(getattr(other, "focal_length", 0.0) or 0.0) or None,
            }
        )
    used = [blacks[i] for i in range(min(4, len(blacks)))]
    return FrameMeta(
        path=path,
        kind=kind_from_path(path),
        exposure=exposure,
        iso=iso,
        bayer=pattern,
        date=date,
        shape=(int(sizes.height), int(sizes.width)),
        black_level=float(np.mean(used)) if used else None,
        white_level=white,
        wb_multipliers=wb if any(wb) else None,
        header=header,
    )


def _read_raw(path: Path, with_data: bool) -> Frame | FrameMeta:
    import rawpy

    try:
        raw = rawpy.imread(os.fspath(path))
    except Exception as exc:  # rawpy raises LibRawError subclasses and OSError
        raise FrameReadError(
            path, f"cannot read camera RAW ({type(exc).__name__}: {exc}); re-copy the file"
        ) from exc
    try:
        try:
            meta = _raw_meta(path, raw)
        except FrameReadError:
            raise
        except Exception as exc:  # LibRaw unpacks lazily: a cut file fails here
            raise FrameReadError(
                path,
                f"cannot decode camera RAW ({type(exc).__name__}: {exc}); the file may "
                "be truncated, re-copy it",
            ) from exc
        if not with_data:
            return meta
        try:
            mosaic = np.array(raw.raw_image_visible, dtype=np.float32, copy=True)
        except Exception as exc:
            raise FrameReadError(
                path, f"cannot decode RAW pixels ({exc}); the file may be truncated"
            ) from exc
        if mosaic.ndim != 2:
            raise FrameReadError(
                path, f"RAW data is not a single-plane mosaic (shape {mosaic.shape})"
            )
        return Frame(mosaic, meta)
    finally:
        raw.close()


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------

_READERS = {"fits": _read_fits, "tiff": _read_tiff, "raw": _read_raw}


def read_frame(path: str | Path) -> Frame:
    """Read pixels and metadata of one frame.

    Parameters
    ----------
    path
        A FITS (``.fit``, ``.fits``, ``.fts``, ``.fz``), TIFF or camera RAW file.  The
        format is recognised from the file's first bytes, the extension only breaks ties
        (TIFF-based RAW formats such as DNG, CR2, NEF).

    Returns
    -------
    Frame
        float32 ``[y, x]`` (mono or CFA mosaic) or ``[c, y, x]`` (RGB), row 0 = the first
        row stored in the file.

    Raises
    ------
    FrameReadError
        With the file and a specific reason (empty, truncated, text, JPEG/PNG, unknown
        format, X-Trans, ...).
    """
    path = Path(path)
    fmt = detect_format(path)
    frame = _READERS[fmt](path, True)
    logger.debug("read %s: %s %s", path, frame.meta.kind, frame.data.shape)
    return frame


def read_meta(path: str | Path) -> FrameMeta:
    """Read only the metadata of one frame (header, tags or RAW parameters).

    Cheap for FITS and TIFF: pixel data are not read, but the file is checked for
    truncation (its size against the size its header announces).  Camera RAW files are
    unpacked by LibRaw, because some cameras' black levels are only known after reading
    the masked border pixels.

    Parameters
    ----------
    path
        See :func:`read_frame`.

    Returns
    -------
    FrameMeta

    Raises
    ------
    FrameReadError
        As :func:`read_frame`.
    """
    path = Path(path)
    fmt = detect_format(path)
    return _READERS[fmt](path, False)
