"""One metadata model for every format: frame kinds, header keywords, Bayer pattern arithmetic.

The Bayer helpers here (:func:`normalize_pattern`, :func:`bayer_shift`,
:func:`flip_pattern_vertically`, :func:`pattern_for_array`) are the single source of truth
for CFA pattern arithmetic in astrostack; other stages import them rather than re-deriving
the rules.  The rules themselves are documented in ``docs/conventions.md`` ("Header keywords").
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .frame import FRAME_KINDS, FrameMeta, FrameReadError

__all__ = [
    "BAYER_PATTERNS",
    "bayer_shift",
    "classify_kind",
    "flip_pattern_vertically",
    "kind_from_header",
    "kind_from_path",
    "meta_from_dict",
    "meta_from_fits_header",
    "meta_to_dict",
    "meta_to_header",
    "normalize_pattern",
    "parse_fits_date",
    "pattern_color_index",
    "pattern_for_array",
]

logger = logging.getLogger(__name__)

#: The four 2x2 Bayer patterns, named by the colours of the top-left 2x2 block read
#: row by row: ``pattern[0]`` is pixel (y=0, x=0), ``pattern[1]`` is (0, 1),
#: ``pattern[2]`` is (1, 0) and ``pattern[3]`` is (1, 1).
BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")

# Header keywords consulted for the frame kind, in order of precedence.
_KIND_KEYWORDS = ("IMAGETYP", "FRAME", "FRAMETYP", "OBSTYPE")

# Words (lower case, letters only) that name a kind.  Compound words are tested before
# their parts so that "darkflat" is not read as "dark".
_DARKFLAT_WORDS = ("darkflat", "flatdark", "dflat", "flatdarks", "darkflats", "fdark")
_BIAS_WORDS = ("bias", "offset", "zero", "biases", "offsets", "zeros", "biasframe")
_DARK_WORDS = ("dark", "darks", "thermal")
_FLAT_WORDS = ("flat", "flats", "flatfield", "skyflat", "domeflat", "twilightflat", "panelflat")
_LIGHT_WORDS = ("light", "lights", "object", "science", "sci", "target")

# Header values that contain these fragments are classified even when written together
# with other words ("Bias Frame", "Flat Field", "MASTER DARK", "Light Frame").
_HEADER_FRAGMENTS = (
    ("darkflat", ("darkflat", "flatdark", "dflat")),
    ("bias", ("bias", "offset", "zero")),
    ("dark", ("dark",)),
    ("flat", ("flat",)),
    ("light", ("light", "object", "science")),
)


# ---------------------------------------------------------------------------------------
# Bayer pattern arithmetic
# ---------------------------------------------------------------------------------------


def normalize_pattern(value: Any) -> str | None:
    """Return a Bayer pattern as one of :data:`BAYER_PATTERNS`, or ``None``.

    Parameters
    ----------
    value
        A header value such as ``'RGGB'``, ``' rggb '`` or ``'R G G B'``.  Empty, ``None``
        and boolean values give ``None``.

    Returns
    -------
    str or None
        The normalised pattern.

    Raises
    ------
    ValueError
        If the value is a 6x6 X-Trans description (36 letters) or is not a valid 2x2
        pattern.
    """
    if value is None or isinstance(value, bool):
        return None
    text = re.sub(r"[^A-Za-z]", "", str(value)).upper()
    if not text or text in ("NONE", "MONO", "FALSE", "TRUE", "T", "F"):
        return None
    if len(text) == 36:
        msg = "X-Trans (6x6) colour filter arrays are not supported yet; convert to TIFF RGB"
        raise ValueError(msg)
    if text not in BAYER_PATTERNS:
        msg = f"unknown Bayer pattern {value!r}; expected one of {', '.join(BAYER_PATTERNS)}"
        raise ValueError(msg)
    return text


def bayer_shift(pattern: str, dy: int, dx: int) -> str:
    """Pattern seen from a pixel offset by ``(dy, dx)`` from the pattern's origin.

    If an array has pattern *pattern* at pixel ``(0, 0)``, the sub-array starting at
    pixel ``(dy, dx)`` (e.g. after cropping ``dy`` rows and ``dx`` columns) has pattern
    ``bayer_shift(pattern, dy, dx)``.  Only the parities of ``dy`` and ``dx`` matter.

    Parameters
    ----------
    pattern
        One of :data:`BAYER_PATTERNS`.
    dy, dx
        Row and column offsets (any integers, negative allowed).

    Returns
    -------
    str
        The shifted pattern.

    Examples
    --------
    >>> bayer_shift("RGGB", 0, 1)
    'GRBG'
    >>> bayer_shift("RGGB", 1, 0)
    'GBRG'
    >>> bayer_shift("RGGB", 1, 1)
    'BGGR'
    """
    p = normalize_pattern(pattern)
    if p is None:
        msg = "bayer_shift needs a Bayer pattern, got None"
        raise ValueError(msg)
    oy, ox = int(dy) % 2, int(dx) % 2
    cells = [p[((y + oy) % 2) * 2 + (x + ox) % 2] for y in range(2) for x in range(2)]
    return "".join(cells)


def flip_pattern_vertically(pattern: str, height: int | None = None) -> str:
    """Pattern of an array after reversing the order of its rows.

    Parameters
    ----------
    pattern
        Pattern of the array before the flip (at its row 0).
    height
        Number of rows of the array.  After a flip, the new row 0 is the old row
        ``height - 1``, so an odd height leaves the pattern unchanged.  ``None`` assumes an
        even height (the usual case), i.e. the two rows of the pattern are swapped:
        RGGB <-> GBRG and BGGR <-> GRBG.

    Returns
    -------
    str
        The pattern at row 0 of the flipped array.
    """
    rows = 2 if height is None else int(height)
    return bayer_shift(pattern, rows - 1, 0)


def pattern_for_array(
    header_pattern: Any,
    *,
    row_order: str | None = None,
    height: int | None = None,
    xoffset: int = 0,
    yoffset: int = 0,
) -> str | None:
    """Bayer pattern at pixel ``[0, 0]`` of the array as astropy returns it.

    This is the rule of Siril (``adjust_Bayer_pattern`` in ``demosaicing.c``), which with
    CCDCiel introduced ``ROWORDER``, and of N.I.N.A., which writes ``ROWORDER='TOP-DOWN'``:

    1. ``BAYERPAT`` names the pattern read top-down from the top-left pixel of the image.
    2. ``ROWORDER='TOP-DOWN'`` (or no ``ROWORDER``): the first row stored in the file is the
       top row, so the pattern applies to array row 0 as it is.
       ``ROWORDER='BOTTOM-UP'``: the first row stored is the bottom row (image row
       ``height - 1``), so the pattern is flipped vertically, which changes it only when
       the height is even (:func:`flip_pattern_vertically`).
    3. Then ``XBAYROFF``/``YBAYROFF``: an odd offset shifts the pattern by one column/row
       (:func:`bayer_shift`).

    Parameters
    ----------
    header_pattern
        Value of ``BAYERPAT`` (or an equivalent keyword); ``None`` for mono.
    row_order
        Value of ``ROWORDER``.
    height
        Number of rows (``NAXIS2``).
    xoffset, yoffset
        ``XBAYROFF`` and ``YBAYROFF``.

    Returns
    -------
    str or None
        The pattern of the array as held in memory, or ``None`` for mono.
    """
    pattern = normalize_pattern(header_pattern)
    if pattern is None:
        return None
    order = (row_order or "").strip().upper().replace("_", "-")
    if order in ("BOTTOM-UP", "BOTTOMUP"):
        pattern = flip_pattern_vertically(pattern, height)
    return bayer_shift(pattern, int(yoffset), int(xoffset))


def pattern_color_index(pattern: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Colour index (0 = R, 1 = G, 2 = B) of each cell of a 2x2 pattern, as ``[y][x]``."""
    p = normalize_pattern(pattern)
    if p is None:
        msg = "pattern_color_index needs a Bayer pattern, got None"
        raise ValueError(msg)
    index = {"R": 0, "G": 1, "B": 2}
    return ((index[p[0]], index[p[1]]), (index[p[2]], index[p[3]]))


# ---------------------------------------------------------------------------------------
# Frame kinds
# ---------------------------------------------------------------------------------------


def classify_kind(value: Any) -> str:
    """Frame kind from a header value such as ``'Dark Frame'`` or ``'Flat Field'``.

    Parameters
    ----------
    value
        Value of ``IMAGETYP``, ``FRAME``, ``FRAMETYP`` or ``OBSTYPE``, in any spelling
        ('Bias Frame', 'BIAS', 'Offset', 'Zero', 'Dark Frame', 'DARK', 'Flat Field',
        'Flat Frame', 'FLAT', 'Light Frame', 'LIGHT', 'Object', 'Science', 'Dark Flat',
        'DarkFlat', 'FlatDark', 'Master Dark', ...).

    Returns
    -------
    str
        One of :data:`~astrostack.io.frame.FRAME_KINDS`; ``'unknown'`` if not recognised.
    """
    if value is None or isinstance(value, bool):
        return "unknown"
    squeezed = re.sub(r"[^a-z]", "", str(value).lower())
    if not squeezed:
        return "unknown"
    if ("dark" in squeezed and "flat" in squeezed) or squeezed in ("dflat", "fdark"):
        return "darkflat"
    for kind, fragments in _HEADER_FRAGMENTS[1:]:
        if any(f in squeezed for f in fragments):
            return kind
    return "unknown"


def _kind_from_words(text: str) -> str:
    """Kind named by the words of a file or folder name, or ``'unknown'``."""
    # Split CamelCase and separators into lower-case letter-only words.
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    words = re.findall(r"[a-z]+", spaced.lower())
    joined = "".join(words)
    if not words:
        return "unknown"
    if any(w in _DARKFLAT_WORDS for w in words) or any(
        w in joined for w in ("darkflat", "flatdark")
    ):
        return "darkflat"
    found = set()
    for kind, vocab in (
        ("bias", _BIAS_WORDS),
        ("dark", _DARK_WORDS),
        ("flat", _FLAT_WORDS),
        ("light", _LIGHT_WORDS),
    ):
        if any(w in vocab for w in words):
            found.add(kind)
    if {"dark", "flat"} <= found:
        return "darkflat"
    for kind in ("bias", "dark", "flat", "light"):
        if kind in found:
            return kind
    return "unknown"


def kind_from_header(header: Mapping) -> str:
    """Frame kind from ``IMAGETYP``/``FRAME``/``FRAMETYP`` keywords, or ``'unknown'``."""
    for key in _KIND_KEYWORDS:
        kind = classify_kind(_as_str(header.get(key)))
        if kind != "unknown":
            return kind
    return "unknown"


def kind_from_path(path: str | Path, levels: int = 3, root: str | Path | None = None) -> str:
    """Frame kind from the file name, then from the names of its parent folders.

    Parameters
    ----------
    path
        The frame's path.
    levels
        How many parent folders to consult (nearest first).
    root
        The folder being scanned: folders above it say nothing about the frame (a
        session kept under ``~/lights-of-2025/`` is not all lights), so only *root*
        and the folders below it are consulted.

    Returns
    -------
    str
        The first kind found (file name first), or ``'unknown'``.
    """
    p = Path(path)
    kind = _kind_from_words(p.stem)
    if kind != "unknown":
        return kind
    parents = list(p.parents)[:levels]
    if root is not None:
        root = Path(root)
        parents = [q for q in parents if q == root or root in q.parents]
    for parent in parents:
        kind = _kind_from_words(parent.name)
        if kind != "unknown":
            return kind
    return "unknown"


# ---------------------------------------------------------------------------------------
# FITS headers
# ---------------------------------------------------------------------------------------


def _first(header: Mapping, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in header:
            value = header[key]
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            if type(value).__name__ == "Undefined":
                continue
            return value
    return None


def _as_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _as_str(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text or None


def parse_fits_date(date_obs: Any, time_obs: Any = None) -> datetime | None:
    """Parse ``DATE-OBS`` (plus ``TIME-OBS`` when the date has no time part) as UTC.

    Accepts ISO 8601 (``2025-03-27T01:20:32.955368``, with or without fraction or ``Z``)
    and the pre-2000 FITS form ``dd/mm/yy``.  Returns ``None`` if the value cannot be parsed.
    """
    text = _as_str(date_obs)
    if text is None:
        return None
    text = text.replace("Z", "").replace("z", "")
    old = re.fullmatch(r"(\d{2})/(\d{2})/(\d{2})", text)
    if old:
        day, month, year = (int(g) for g in old.groups())
        text = f"{1900 + year:04d}-{month:02d}-{day:02d}"
    if "T" not in text:
        t = _as_str(time_obs)
        if t:
            text = f"{text}T{t}"
    # datetime.fromisoformat accepts at most 6 fractional digits.
    m = re.fullmatch(r"(.*\.\d{6})\d+", text)
    if m:
        text = m.group(1)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        logger.debug("cannot parse DATE-OBS %r", date_obs)
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _header_dict(header: Mapping) -> dict:
    out: dict = {}
    for key in header:
        if not key or key in ("COMMENT", "HISTORY"):
            continue
        value = header[key]
        if type(value).__name__ == "Undefined":
            value = None
        out[key] = value
    return out


def meta_from_fits_header(
    header: Mapping,
    path: str | Path | None = None,
    shape: tuple[int, ...] | None = None,
) -> FrameMeta:
    """Build a :class:`FrameMeta` from a FITS header.

    Parameters
    ----------
    header
        An ``astropy.io.fits.Header`` (or any mapping of keyword to value).
    path
        The file, used for error messages and as the folder/file-name fallback for the kind.
    shape
        Array shape as astropy returns it (``(y, x)`` or ``(c, y, x)``); read from
        ``NAXISn`` when not given.

    Returns
    -------
    FrameMeta
        With ``bayer`` already adjusted for ``ROWORDER`` and ``XBAYROFF``/``YBAYROFF``
        (see :func:`pattern_for_array`).

    Raises
    ------
    FrameReadError
        If the header describes an X-Trans or otherwise unusable colour filter array.
    """
    h = header
    if shape is None:
        naxis = int(h.get("ZNAXIS", h.get("NAXIS", 0)) or 0)
        prefix = "ZNAXIS" if "ZNAXIS" in h else "NAXIS"
        shape = tuple(int(h.get(f"{prefix}{i}", 0)) for i in range(naxis, 0, -1))
    shape = tuple(int(s) for s in shape)

    kind = kind_from_header(h)
    if kind == "unknown" and path is not None:
        kind = kind_from_path(path)

    exposure = _as_float(_first(h, ("EXPTIME", "EXPOSURE", "EXP_TIME", "EXPOSURE_TIME")))
    gain = _as_float(_first(h, ("GAIN",)))
    iso_value = _as_float(_first(h, ("ISOSPEED", "ISO", "ISO_SPEED")))
    iso = round(iso_value) if iso_value else None
    temperature = _as_float(_first(h, ("CCD-TEMP", "CCD_TEMP", "CCDTEMP", "SET-TEMP", "SET_TEMP")))
    xbin = _as_float(_first(h, ("XBINNING", "CCDXBIN", "BINX")))
    ybin = _as_float(_first(h, ("YBINNING", "CCDYBIN", "BINY")))
    xbin_i = int(xbin) if xbin and xbin >= 1 else 1
    ybin_i = int(ybin) if ybin and ybin >= 1 else xbin_i

    bayer_raw = _first(h, ("BAYERPAT", "CFA-TYPE", "CFATYPE", "COLORTYP", "CFA_PAT"))
    height = shape[-2] if len(shape) >= 2 else None
    try:
        bayer = (
            pattern_for_array(
                bayer_raw,
                row_order=_as_str(h.get("ROWORDER")),
                height=height,
                xoffset=int(_as_float(h.get("XBAYROFF")) or 0),
                yoffset=int(_as_float(h.get("YBAYROFF")) or 0),
            )
            if len(shape) == 2
            else None
        )
    except ValueError as exc:
        if "X-Trans" in str(exc):
            raise FrameReadError(path or "<header>", str(exc)) from exc
        logger.warning("%s: ignoring BAYERPAT %r (%s); frame treated as mono", path, bayer_raw, exc)
        bayer = None

    pedestal = _as_float(_first(h, ("PEDESTAL",)))
    black_level = abs(pedestal) if pedestal else None
    white_level = _as_float(_first(h, ("SATURATE", "DATAMAX")))
    pixel = _as_float(_first(h, ("XPIXSZ", "PIXSIZE1", "PIXSIZE")))
    focal = _as_float(_first(h, ("FOCALLEN", "FOCAL")))
    offset_setting = _as_float(_first(h, ("OFFSET", "BLKLEVEL")))

    return FrameMeta(
        path=Path(path) if path is not None else None,
        kind=kind if kind in FRAME_KINDS else "unknown",
        exposure=exposure,
        gain=gain,
        iso=iso,
        egain=_as_float(_first(h, ("EGAIN", "E-GAIN"))),
        temperature=temperature,
        binning=(ybin_i, xbin_i),
        filter=_as_str(_first(h, ("FILTER", "FILTER1", "FILTNAME"))),
        bayer=bayer,
        date=parse_fits_date(
            _first(h, ("DATE-OBS", "DATE-BEG", "DATE_OBS")), _first(h, ("TIME-OBS", "UT"))
        ),
        camera=_as_str(_first(h, ("INSTRUME", "CAMERA"))),
        target=_as_str(_first(h, ("OBJECT",))),
        shape=shape,
        black_level=black_level,
        white_level=white_level,
        pixel_size_um=pixel if pixel and pixel > 0 else None,
        focal_length_mm=focal if focal and focal > 0 else None,
        offset=offset_setting,
        row_order=_as_str(h.get("ROWORDER")),
        header=_header_dict(h),
    )


def meta_to_header(meta: FrameMeta) -> dict:
    """FITS keywords describing *meta* (for :func:`~astrostack.io.writers.write_fits`).

    The Bayer pattern is written as held (``BAYERPAT`` with ``ROWORDER='TOP-DOWN'``),
    which is how Siril and N.I.N.A. read it back unchanged.
    """
    cards: dict[str, Any] = {}
    kind_names = {
        "bias": "Bias Frame",
        "dark": "Dark Frame",
        "flat": "Flat Field",
        "darkflat": "Dark Flat",
        "light": "Light Frame",
    }
    if meta.kind in kind_names:
        cards["IMAGETYP"] = kind_names[meta.kind]
    simple = {
        "EXPTIME": meta.exposure,
        "GAIN": meta.gain,
        "ISOSPEED": meta.iso,
        "EGAIN": meta.egain,
        "CCD-TEMP": meta.temperature,
        "FILTER": meta.filter,
        "INSTRUME": meta.camera,
        "OBJECT": meta.target,
        "XPIXSZ": meta.pixel_size_um,
        "FOCALLEN": meta.focal_length_mm,
        "SATURATE": meta.white_level,
        "OFFSET": meta.offset,
    }
    cards.update({k: v for k, v in simple.items() if v is not None})
    if meta.black_level is not None:
        cards["PEDESTAL"] = -float(meta.black_level)
    cards["XBINNING"] = int(meta.binning[1])
    cards["YBINNING"] = int(meta.binning[0])
    if meta.date is not None:
        cards["DATE-OBS"] = meta.date.astimezone(UTC).replace(tzinfo=None).isoformat()
    if meta.bayer is not None:
        cards["BAYERPAT"] = meta.bayer
        cards["ROWORDER"] = "TOP-DOWN"
    return cards


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "item"):  # numpy scalar
        return _jsonable(value.item())
    return str(value)


def meta_to_dict(meta: FrameMeta, header: bool = False) -> dict:
    """JSON-serialisable dictionary of *meta* (the raw header only if *header* is true)."""
    out = {}
    for f in fields(meta):
        if f.name == "header" and not header:
            continue
        out[f.name] = _jsonable(getattr(meta, f.name))
    return out


def meta_from_dict(data: Mapping) -> FrameMeta:
    """Inverse of :func:`meta_to_dict`."""
    kwargs = dict(data)
    if kwargs.get("path") is not None:
        kwargs["path"] = Path(kwargs["path"])
    if kwargs.get("date") is not None:
        kwargs["date"] = datetime.fromisoformat(kwargs["date"])
    for key in ("binning", "shape", "wb_multipliers"):
        if kwargs.get(key) is not None:
            kwargs[key] = tuple(kwargs[key])
    known = {f.name for f in fields(FrameMeta)}
    return FrameMeta(**{k: v for k, v in kwargs.items() if k in known})
