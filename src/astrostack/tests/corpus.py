"""A generator of hostile input: files and folders that a night of frames must survive.

:func:`make_corpus` writes one file (or link, or folder) per rule an input can break and
returns a :class:`BadInput` for each, holding the rule in plain words and a regular
expression the error message must match.  Three expectations are distinguished:

- ``'read'``: :func:`~astrostack.io.read_frame` and :func:`~astrostack.io.read_meta` raise
  :class:`~astrostack.io.FrameReadError` naming the file, and :func:`~astrostack.io.discover`
  lists the file in ``Session.skipped`` with that reason;
- ``'later'``: the file is readable but unusable (no stars, all zero, saturated, another
  geometry...); a later stage (calibration, quality, registration, grouping) must exclude it
  with a reason while the rest of the night is stacked;
- ``'good'``: an unusual but valid input (non-ASCII or space in the name, tiled or planar
  TIFF, 64-bit integer FITS) that must be read exactly and used.

:func:`make_folder_cases` writes whole folders (only lights, only darks, nothing, only bad
files) with the exit code ``astrostack run`` must give.

Everything here is deterministic (seeded) and small, so the corpus takes well under a
second to write.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from astrostack.tests.dng import write_dng

__all__ = [
    "BadInput",
    "FolderCase",
    "fits_bytes",
    "make_corpus",
    "make_folder_cases",
    "star_field",
    "write_dng",
]

logger = logging.getLogger(__name__)

_BLOCK = 2880


@dataclass
class BadInput:
    """One hostile input and what must happen to it.

    Attributes
    ----------
    name
        Short unique identifier of the case (e.g. ``'fits-truncated-half'``).
    path
        The file, link or folder written.
    rule
        The rule the input breaks, in plain words.
    expected
        Regular expression the error message (or the pipeline's reason) must match
        (``re.search``, case-insensitive).
    expect
        ``'read'`` (the readers refuse it), ``'later'`` (readable, excluded by a later
        stage) or ``'good'`` (valid, must be read and used).
    data
        For ``'good'`` inputs: the pixel values the reader must return.
    requires
        Why the case cannot be checked here (e.g. running as root), or ``''``.
    """

    name: str
    path: Path
    rule: str
    expected: str
    expect: str = "read"
    data: np.ndarray | None = field(default=None, repr=False)
    requires: str = ""


@dataclass
class FolderCase:
    """A whole input folder and the exit code ``astrostack run`` must give for it."""

    name: str
    path: Path
    rule: str
    exit_code: int
    expected: str = ""


# ---------------------------------------------------------------------------------------
# Raw FITS building blocks (for headers astropy would refuse to write)
# ---------------------------------------------------------------------------------------


def _card(key: str, value: object = None, comment: str = "") -> bytes:
    if key in ("END", "") and value is None:
        return key.ljust(80).encode("ascii")
    if isinstance(value, bool):
        text = "T" if value else "F"
        text = text.rjust(20)
    elif isinstance(value, int | float):
        text = str(value).rjust(20)
    else:
        text = f"'{value!s:<8}'".ljust(20)
    line = f"{key:<8}= {text}" + (f" / {comment}" if comment else "")
    return line.ljust(80)[:80].encode("ascii")


def _pad(blob: bytes, fill: bytes = b" ") -> bytes:
    rest = (-len(blob)) % _BLOCK
    return blob + fill * rest


def fits_bytes(
    data: np.ndarray,
    cards: list[tuple[str, object]] | None = None,
    end: bool = True,
) -> bytes:
    """A minimal primary-HDU FITS file as bytes, written by hand.

    Parameters
    ----------
    data
        Integer (8, 16, 32, 64 bit) or float (32, 64 bit) array, stored big-endian.
    cards
        Extra ``(keyword, value)`` cards after the mandatory ones.
    end
        Write the ``END`` card (``False`` makes a broken header).

    Returns
    -------
    bytes
    """
    data = np.asarray(data)
    bitpix = {
        np.dtype(np.uint8): 8,
        np.dtype(np.int16): 16,
        np.dtype(np.int32): 32,
        np.dtype(np.int64): 64,
        np.dtype(np.float32): -32,
        np.dtype(np.float64): -64,
    }[data.dtype]
    head = [_card("SIMPLE", True), _card("BITPIX", bitpix), _card("NAXIS", data.ndim)]
    head += [_card(f"NAXIS{i + 1}", n) for i, n in enumerate(reversed(data.shape))]
    head += [_card(k, v) for k, v in cards or []]
    if end:
        head.append(_card("END"))
    payload = data.astype(data.dtype.newbyteorder(">")).tobytes()
    return _pad(b"".join(head)) + _pad(payload, b"\x00")


def star_field(
    shape: tuple[int, int], n_stars: int = 40, seed: int = 0, background: float = 1000.0
) -> np.ndarray:
    """A small noisy star field (Gaussian stars on a flat background), uint16.

    Parameters
    ----------
    shape
        ``(rows, columns)``.
    n_stars
        Number of stars.
    seed
        Seed of the positions, fluxes and noise.
    background
        Background level, ADU.

    Returns
    -------
    numpy.ndarray
        uint16 ``[y, x]``.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.full(shape, background, dtype=np.float32)
    sigma = 1.3
    for _ in range(n_stars):
        x0, y0 = rng.uniform(5, w - 6), rng.uniform(5, h - 6)
        amp = rng.uniform(200, 20000)
        x_lo, x_hi = max(0, int(x0) - 6), min(w, int(x0) + 7)
        y_lo, y_hi = max(0, int(y0) - 6), min(h, int(y0) + 7)
        sub = (xx[y_lo:y_hi, x_lo:x_hi] - x0) ** 2 + (yy[y_lo:y_hi, x_lo:x_hi] - y0) ** 2
        img[y_lo:y_hi, x_lo:x_hi] += amp * np.exp(-sub / (2 * sigma**2))
    img += rng.normal(0, 8.0, size=shape).astype(np.float32)
    return np.clip(np.round(img), 0, 65535).astype(np.uint16)


# ---------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------


def _template(template: str | Path | None, shape: tuple[int, int]):
    """Header and uint16 data of a good light, or a synthetic star field."""
    from astropy.io import fits

    if template is None:
        header = fits.Header()
        header["IMAGETYP"] = "Light Frame"
        header["EXPTIME"] = 60.0
        return header, star_field(shape, seed=1)
    with fits.open(template) as hdul:
        header = hdul[0].header.copy()
        data = np.asarray(hdul[0].data)
    for key in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "BZERO", "BSCALE", "EXTEND"):
        header.remove(key, ignore_missing=True)
    return header, np.clip(data, 0, 65535).astype(np.uint16)


def _write_u16(path: Path, data: np.ndarray, header) -> None:
    from astropy.io import fits

    hdu = fits.PrimaryHDU(np.asarray(data, dtype=np.uint16), header=header.copy())
    hdu.writeto(path, overwrite=True)


def _write_float(path: Path, data: np.ndarray, header) -> None:
    from astropy.io import fits

    hdu = fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header=header.copy())
    hdu.writeto(path, overwrite=True)


def _read_cases(folder: Path, header, good: np.ndarray) -> list[BadInput]:
    """Files every reader must refuse, each with its specific reason."""
    from astropy.io import fits
    from PIL import Image

    out: list[BadInput] = []
    h, w = good.shape
    small = good[:32, :48].astype(np.int16)

    def add(name: str, fname: str, rule: str, expected: str, **kw) -> Path:
        path = folder / fname
        out.append(BadInput(name, path, rule, expected, **kw))
        return path

    # FITS: truncation ------------------------------------------------------------------
    full = folder / ".full.tmp"
    _write_u16(full, good, header)
    blob = full.read_bytes()
    full.unlink()
    header_len = blob.index(b"END" + b" " * 77) // _BLOCK * _BLOCK + _BLOCK
    add(
        "fits-header-only",
        "light_header_only.fits",
        "FITS truncated after its header: no pixel data at all",
        r"truncated FITS \(\d+ of \d+ bytes\)",
    ).write_bytes(blob[:header_len])
    add(
        "fits-truncated-half",
        "light_half.fits",
        "FITS cut in the middle of its pixel data",
        r"truncated FITS \(\d+ of \d+ bytes\)",
    ).write_bytes(blob[: header_len + (len(blob) - header_len) // 2])

    # FITS: broken headers ------------------------------------------------------------
    add(
        "fits-no-end",
        "light_no_end.fits",
        "FITS header without an END card",
        r"(corrupt|truncated) FITS header.*END",
    ).write_bytes(fits_bytes(small, [("IMAGETYP", "Light Frame")], end=False))
    raw = fits_bytes(small, [("IMAGETYP", "Light Frame")])
    raw = raw.replace(_card("NAXIS", 2), _card("NAXIS", 3), 1)
    add(
        "fits-naxis-mismatch",
        "light_naxis_mismatch.fits",
        "NAXIS = 3 but only NAXIS1 and NAXIS2 are given",
        r"(corrupt|invalid) FITS header.*NAXIS|NAXIS.*(missing|mismatch)",
    ).write_bytes(raw)
    raw = fits_bytes(small, [("IMAGETYP", "Light Frame")])
    raw = raw.replace(_card("NAXIS2", 32), _card("NAXIS2", 3200), 1)
    add(
        "fits-naxis-larger-than-data",
        "light_naxis_too_big.fits",
        "NAXIS2 announces 100x more rows than the file holds",
        r"truncated FITS \(\d+ of \d+ bytes\)",
    ).write_bytes(raw)
    add(
        "fits-zero-size", "light_empty.fits", "zero-byte file", r"empty file \(0 bytes\)"
    ).write_bytes(b"")
    raw = fits_bytes(small, [("IMAGETYP", "Light Frame"), ("EXPTIME", 30.0)])
    raw = raw.replace(_card("EXPTIME", 30.0), b"EXPTIME =         12.5.3e+x".ljust(80), 1)
    add(
        "fits-unparsable-card",
        "light_bad_card.fits",
        "a header card whose value cannot be parsed (EXPTIME = 12.5.3e+x)",
        r"(corrupt|invalid|unparsable|cannot parse).*(EXPTIME|card)",
    ).write_bytes(raw)
    raw = fits_bytes(small, [("IMAGETYP", "Light Frame")])
    raw = raw.replace(_card("BITPIX", 16), _card("BITPIX", 33), 1)
    add(
        "fits-bad-bitpix",
        "light_bitpix33.fits",
        "BITPIX = 33 (not one of 8, 16, 32, 64, -32, -64)",
        r"BITPIX",
    ).write_bytes(raw)
    add(
        "fits-is-text",
        "light_notes.fits",
        "a text file named .fits",
        r"not a FITS file: it is text",
    ).write_text("Seeing was poor tonight, guiding lost at 23:10.\n" * 10)
    hdr = fits.Header([("IMAGETYP", "Light Frame")])
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="flux", format="E", array=np.arange(10.0))]
    )
    fits.HDUList([fits.PrimaryHDU(header=hdr), table]).writeto(
        add(
            "fits-table-only",
            "light_table.fits",
            "FITS holding only a binary table, no image",
            r"no image data",
        )
    )
    cube = np.stack([small] * 5)
    fits.PrimaryHDU(cube, header=hdr).writeto(
        add(
            "fits-cube-5",
            "light_cube5.fits",
            "3-D FITS cube of 5 planes (not mono, not RGB)",
            r"unsupported FITS image shape \(5, 32, 48\)",
        )
    )
    gz_path = add(
        "fits-gz-truncated",
        "light_cut.fits.gz",
        "gzip-compressed FITS cut in the middle of the stream",
        r"(truncated|corrupt|cannot read FITS)",
    )
    packed = gzip.compress(blob, mtime=0)
    gz_path.write_bytes(packed[: len(packed) // 2])
    fits.PrimaryHDU(np.zeros((0, 0), np.int16), header=hdr).writeto(
        add(
            "fits-empty-image",
            "light_naxis0.fits",
            "FITS primary HDU with no pixels (NAXIS = 0)",
            r"no image data",
        )
    )

    # Non-astro images --------------------------------------------------------------------
    rgb8 = np.stack([good[::4, ::4] >> 8] * 3, axis=-1).astype(np.uint8)
    Image.fromarray(rgb8).save(
        add("jpeg", "light_photo.jpg", "8-bit JPEG (lossy, stretched)", r"8-bit JPEG"), quality=90
    )
    Image.fromarray(rgb8).save(add("png", "light_photo.png", "8-bit PNG", r"8-bit PNG"))
    Image.fromarray(rgb8).save(
        add("jpeg-named-fits", "light_jpeg_inside.fits", "a JPEG renamed .fits", r"8-bit JPEG"),
        format="JPEG",
    )

    # TIFF ------------------------------------------------------------------------------
    import tifffile

    tifffile.imwrite(
        add(
            "tiff-complex",
            "light_complex.tif",
            "TIFF of complex numbers",
            r"complex",
        ),
        (good[:16, :16] + 1j * good[:16, :16]).astype(np.complex64),
    )
    tifffile.imwrite(
        add(
            "tiff-5-channels",
            "light_5ch.tif",
            "TIFF with 5 channels per pixel (not mono, not RGB)",
            r"unsupported TIFF layout",
        ),
        np.zeros((16, 16, 5), np.uint16),
        planarconfig="contig",
        photometric="minisblack",
    )
    tpath = add(
        "tiff-truncated",
        "light_cut.tif",
        "TIFF cut in the middle of its strips",
        r"truncated TIFF \(\d+ of \d+ bytes\)|cannot read TIFF",
    )
    tifffile.imwrite(tpath, good)
    tblob = tpath.read_bytes()
    tpath.write_bytes(tblob[: len(tblob) // 3])
    add(
        "tiff-bad-signature", "light_text.tif", "text file named .tif", r"not a TIFF file"
    ).write_text("hello\n" * 20)

    # RAW ---------------------------------------------------------------------------------
    add(
        "cr2-garbage",
        "IMG_0001_light.CR2",
        "CR2 file full of random bytes",
        r"cannot read camera RAW",
    ).write_bytes(np.random.default_rng(7).integers(0, 256, 6000, dtype=np.uint8).tobytes())
    dng = folder / ".half.dng"
    try:
        write_dng(dng, good[: h // 2 * 2, : w // 2 * 2])
        dblob = dng.read_bytes()
        dng.unlink()
        add(
            "dng-truncated",
            "light_cut.dng",
            "DNG (written by pidng) cut in half",
            r"cannot (read|decode) camera RAW",
        ).write_bytes(dblob[: len(dblob) // 2])
    except ImportError:
        logger.info("pidng not installed: no truncated-DNG case")

    # File system -----------------------------------------------------------------------
    loop = add(
        "symlink-loop",
        "light_loop.fits",
        "symbolic link pointing to itself",
        r"(symbolic link|not found|loop)",
    )
    os.symlink(loop.name, loop)
    dangling = add(
        "symlink-dangling",
        "light_dangling.fits",
        "symbolic link to a file that does not exist",
        r"(symbolic link|not found)",
    )
    os.symlink("no_such_frame_anywhere.fits", dangling)
    perm = folder / "light_no_permission.fits"
    perm.write_bytes(fits_bytes(small, [("IMAGETYP", "Light Frame")]))
    perm.chmod(0)
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    out.append(
        BadInput(
            "no-permission",
            perm,
            "file without read permission (chmod 000)",
            r"(permission|cannot open)",
            requires="running as root: root reads any file" if as_root else "",
        )
    )
    return out


def _later_cases(folder: Path, header, good: np.ndarray) -> list[BadInput]:
    """Readable frames that later stages must exclude (or group apart) with a reason."""
    out: list[BadInput] = []
    h, w = good.shape
    rng = np.random.default_rng(11)
    bg = float(np.median(good))

    def add(name: str, fname: str, rule: str, expected: str) -> Path:
        path = folder / fname
        out.append(BadInput(name, path, rule, expected, expect="later"))
        return path

    _write_u16(
        add(
            "all-zero",
            "light_zero.fits",
            "every pixel is 0",
            r"(no stars|stars|constant|zero|no signal|registration failed)",
        ),
        np.zeros_like(good),
        header,
    )
    _write_u16(
        add(
            "saturated",
            "light_saturated.fits",
            "every pixel is 65535 (saturated)",
            r"(no stars|stars|saturat|constant|registration failed)",
        ),
        np.full_like(good, 65535),
        header,
    )
    noise = np.clip(rng.normal(bg, 10.0, size=good.shape), 0, 65535)
    _write_u16(
        add(
            "no-stars",
            "light_no_stars.fits",
            "pure noise: no stars (clouds, cap on)",
            r"(no stars|stars|registration failed)",
        ),
        noise,
        header,
    )
    nan = good.astype(np.float32)
    nan[h // 4 : h // 2, :] = np.nan
    nan[rng.integers(0, h, 50), rng.integers(0, w, 50)] = np.inf
    nan[rng.integers(0, h, 50), rng.integers(0, w, 50)] = -np.inf
    _write_float(
        add(
            "nan-inf",
            "light_nan_inf.fits",
            "float FITS with a band of NaN and scattered +-inf pixels",
            r"(NaN|non-finite|inf|not finite)",
        ),
        nan,
        header,
    )
    other = header.copy()
    _write_u16(
        add(
            "other-size",
            "light_other_size.fits",
            "a light of another size than the others",
            r"(size|shape|\d+x\d+|separate group|no usable)",
        ),
        star_field((h, w + 16), seed=3),
        other,
    )
    binned = header.copy()
    binned["XBINNING"], binned["YBINNING"] = 2, 2
    _write_u16(
        add(
            "other-binning",
            "light_bin2.fits",
            "a light binned 2x2 among 1x1 lights",
            r"(binning|separate group|no usable|masters)",
        ),
        good[::2, ::2] if h % 4 == 0 else star_field((h // 2, w // 2), seed=4),
        binned,
    )
    bayer = header.copy()
    bayer["BAYERPAT"] = "GBRG" if str(header.get("BAYERPAT", "")).upper() == "RGGB" else "RGGB"
    bayer["XBAYROFF"], bayer["YBAYROFF"] = 0, 0
    _write_u16(
        add(
            "mixed-bayer",
            "light_other_bayer.fits",
            "a light with another Bayer pattern than the others",
            r"(bayer|pattern|separate group|no usable|masters)",
        ),
        good,
        bayer,
    )
    import tifffile

    tifffile.imwrite(
        add(
            "tiff-one-pixel",
            "light_one_pixel.tif",
            "1x1-pixel TIFF",
            r"(too small|1x1|\(1, 1\))",
        ),
        np.array([[1000]], np.uint16),
    )
    return out


def _good_cases(folder: Path, header, good: np.ndarray) -> list[BadInput]:
    """Unusual but valid inputs that must be read exactly (and used by a run)."""
    import tifffile

    out: list[BadInput] = []

    def add(name: str, fname: str, rule: str, data: np.ndarray) -> Path:
        path = folder / fname
        out.append(BadInput(name, path, rule, "", expect="good", data=data.astype(np.float32)))
        return path

    _write_u16(
        add(
            "name-non-ascii",
            "lumière_étoile_01.fits",
            "non-ASCII characters in the file name (valid)",
            good,
        ),
        good,
        header,
    )
    _write_u16(
        add("name-space", "light with space 02.fits", "spaces in the file name (valid)", good),
        good,
        header,
    )
    h, w = good.shape
    tile = 16 * max(1, min(h, w) // 64)
    tifffile.imwrite(
        add("tiff-tiled", "light_tiled.tif", "tiled TIFF (valid)", good), good, tile=(tile, tile)
    )
    rgb = np.stack([good, good // 2, good // 3]).astype(np.uint16)
    tifffile.imwrite(
        add("tiff-planar-rgb", "light_planar.tif", "planar (separate-plane) RGB TIFF (valid)", rgb),
        rgb,
        photometric="rgb",
        planarconfig="separate",
    )
    rgba = np.concatenate([rgb, np.full((1, h, w), 65535, np.uint16)])
    tifffile.imwrite(
        add("tiff-rgba", "light_rgba.tif", "4-channel RGBA TIFF (valid: alpha dropped)", rgb),
        np.moveaxis(rgba, 0, -1),
        photometric="rgb",
        extrasamples=["unassalpha"],
    )
    small = good[:32, :48].astype(np.int16)
    raw = bytearray(fits_bytes(small, [("IMAGETYP", "Light Frame"), ("OBSERVER", "Zoe")]))
    pos = raw.index(b"'Zoe")
    raw[pos + 1 : pos + 4] = "Zoé".encode("latin-1")
    add(
        "fits-non-ascii-header",
        "light_non_ascii_header.fits",
        "non-ASCII byte in a header value (not standard FITS; read leniently)",
        small,
    ).write_bytes(bytes(raw))
    big = good.astype(np.int64) * 100_000 - 3_000_000_000
    exact = big.astype(np.float64).astype(np.float32)
    add(
        "fits-bitpix64", "light_int64.fits", "FITS with BITPIX = 64 integers (valid)", exact
    ).write_bytes(fits_bytes(big, [("IMAGETYP", "Light Frame")]))
    return out


def make_corpus(
    folder: str | Path,
    template: str | Path | None = None,
    shape: tuple[int, int] = (96, 128),
) -> list[BadInput]:
    """Write the hostile-input corpus into *folder*.

    Parameters
    ----------
    folder
        Target folder (created).  Use a folder whose name or parents say ``lights`` if the
        files are to be taken for lights by :func:`~astrostack.io.discover`.
    template
        A good light FITS: the readable-but-unusable frames and the good-name copies take
        its header and size so they fall into the same group as the real lights.  Without
        it, a synthetic star field of *shape* is used.
    shape
        Size of the synthetic frames when there is no template.

    Returns
    -------
    list of BadInput
        Every case written, with its rule and the expected message.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    header, good = _template(template, shape)
    cases = _read_cases(folder, header, good)
    cases += _later_cases(folder, header, good)
    cases += _good_cases(folder, header, good)
    sub = folder / "light_folder.fits"
    sub.mkdir()
    cases.append(
        BadInput(
            "dir-named-fits",
            sub,
            "a folder named like a frame (x.fits)",
            r"is a folder",
            expect="read",
        )
    )
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        msg = f"{folder}: duplicate corpus case names; fix astrostack.tests.corpus"
        raise RuntimeError(msg)
    logger.info("wrote %d hostile inputs into %s", len(cases), folder)
    return cases


def make_folder_cases(folder: str | Path, session: str | Path) -> list[FolderCase]:
    """Whole input folders built from a good simulated *session* (sub-folders by kind).

    Parameters
    ----------
    folder
        Where the case folders are created.
    session
        A simulated session (``bias/``, ``darks/``, ``flats/``, ``lights/``).

    Returns
    -------
    list of FolderCase
        ``only-lights`` (must stack: exit 0 or 3), ``only-darks``, ``nothing`` and
        ``only-bad`` (nothing usable: exit 1).
    """
    folder, session = Path(folder), Path(session)
    cases = []
    lights = folder / "only-lights"
    shutil.copytree(session / "lights", lights / "lights")
    cases.append(FolderCase("only-lights", lights, "lights without any calibration frame", 0))
    darks = folder / "only-darks"
    shutil.copytree(session / "darks", darks / "darks")
    cases.append(FolderCase("only-darks", darks, "darks but no light", 1, r"no light frames"))
    empty = folder / "nothing"
    empty.mkdir(parents=True)
    cases.append(FolderCase("nothing", empty, "an empty folder", 1, r"no light frames"))
    bad = folder / "only-bad" / "lights"
    bad.mkdir(parents=True)
    (bad / "light_empty.fits").write_bytes(b"")
    (bad / "light_notes.fits").write_text("not a frame\n")
    (bad / "light_cut.fits").write_bytes(fits_bytes(np.zeros((64, 64), np.int16))[: _BLOCK + 100])
    cases.append(FolderCase("only-bad", bad.parent, "only unreadable files", 1, r"no light frames"))
    return cases
