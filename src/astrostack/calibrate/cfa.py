"""Colour filter array (Bayer) patterns: masks, sub-lattices, superpixels and colour balance.

A Bayer pattern is named by the colours of the top-left 2×2 cell read row by row, in the
array *as we hold it* (``[y, x]`` indexing, row 0 = first row stored in the file, with
``ROWORDER`` and ``XBAYROFF``/``YBAYROFF`` already applied to the pattern by
:mod:`astrostack.io`; see ``docs/conventions.md``).  ``'RGGB'`` means
``mosaic[0, 0]`` is red, ``mosaic[0, 1]`` and ``mosaic[1, 0]`` are green and
``mosaic[1, 1]`` is blue.  Channel indices are ``0 = R``, ``1 = G``, ``2 = B``.

Registration of colour frames can work on :func:`luminance` (half resolution, one value per
2×2 cell, centred at mosaic coordinates ``(2j + 0.5, 2i + 0.5)``) or on :func:`green_plane`
(full resolution); :func:`half_to_full_transform` converts a transform measured on the half
resolution grid to the full resolution grid.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit, prange

from ..io.metadata import BAYER_PATTERNS, normalize_pattern

__all__ = [
    "BAYER_PATTERNS",
    "apply_white_balance",
    "background_levels",
    "channel_index",
    "channel_masks",
    "green_plane",
    "half_to_full_transform",
    "luminance",
    "mosaic_rgb",
    "neutralize_background",
    "pattern_from_meta",
    "split_cfa",
    "superpixel",
    "white_balance_mosaic",
]

logger = logging.getLogger(__name__)

_CHANNEL_OF_LETTER = {"R": 0, "G": 1, "B": 2}
_MONO_NAMES = ("MONO", "NONE")

# ``BAYER_PATTERNS`` (re-exported from :mod:`astrostack.io.metadata`): the four Bayer
# patterns, named by the top-left 2×2 cell read row by row.


def _normalise_pattern(pattern: Any, source: str = "") -> str:
    """Return the upper-case pattern name or raise a clear ``ValueError``."""
    where = f"{source}: " if source else ""
    hint = (
        f"use one of {', '.join(BAYER_PATTERNS)} (top-left 2x2 cell of the array as held, "
        "row by row)"
    )
    try:
        name = normalize_pattern(pattern)
    except ValueError as exc:
        msg = f"{where}{exc}; {hint}"
        raise ValueError(msg) from exc
    if name is None:
        msg = f"{where}no Bayer pattern given ({pattern!r}) for a colour operation; {hint}"
        raise ValueError(msg)
    return name


def channel_index(pattern: str) -> np.ndarray:
    """Channel of each pixel of the 2×2 Bayer cell.

    Parameters
    ----------
    pattern : str
        One of :data:`BAYER_PATTERNS` (case-insensitive).

    Returns
    -------
    numpy.ndarray
        ``int64`` array of shape ``(2, 2)``; ``idx[y % 2, x % 2]`` is the channel
        (0 = R, 1 = G, 2 = B) sampled at mosaic pixel ``(y, x)``.
    """
    name = _normalise_pattern(pattern)
    return np.array([_CHANNEL_OF_LETTER[c] for c in name], dtype=np.int64).reshape(2, 2)


def channel_masks(pattern: str, shape: tuple[int, int]) -> np.ndarray:
    """Boolean masks of the pixels that sample each channel.

    Parameters
    ----------
    pattern : str
        Bayer pattern.
    shape : tuple of int
        ``(height, width)`` of the mosaic (any parity).

    Returns
    -------
    numpy.ndarray
        ``bool`` array ``[3, height, width]``; ``masks[c]`` is True where the mosaic samples
        channel ``c``.  Every pixel is True in exactly one channel.
    """
    idx = channel_index(pattern)
    h, w = (int(s) for s in shape)
    cells = idx[np.arange(h)[:, None] % 2, np.arange(w)[None, :] % 2]
    return cells[None, :, :] == np.arange(3)[:, None, None]


def _cell_offsets(pattern: str) -> dict[str, tuple[int, int]]:
    """Offsets ``(dy, dx)`` inside the 2×2 cell of R, G1 (on the red row), G2 and B."""
    name = _normalise_pattern(pattern)
    pos = {(0, 0): name[0], (0, 1): name[1], (1, 0): name[2], (1, 1): name[3]}
    r = next(p for p, c in pos.items() if c == "R")
    b = next(p for p, c in pos.items() if c == "B")
    g1 = (r[0], 1 - r[1])  # the green on the red row
    g2 = (b[0], 1 - b[1])  # the green on the blue row
    return {"R": r, "G1": g1, "G2": g2, "B": b}


def _check_mosaic(mosaic: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(mosaic)
    if arr.ndim != 2:
        msg = (
            f"{what} needs a 2-D CFA mosaic [y, x]; got shape {arr.shape}. "
            "Debayer only raw (undebayered) colour frames"
        )
        raise ValueError(msg)
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        msg = f"{what} needs a mosaic of at least 2x2 pixels; got shape {arr.shape}"
        raise ValueError(msg)
    return arr


def split_cfa(mosaic: np.ndarray, pattern: str) -> dict[str, np.ndarray]:
    """The four sub-lattices of a mosaic.

    Parameters
    ----------
    mosaic : numpy.ndarray
        2-D CFA mosaic ``[y, x]``.  An odd last row or column is cropped so that the four
        planes have the same shape ``(height // 2, width // 2)``.
    pattern : str
        Bayer pattern.

    Returns
    -------
    dict of str to numpy.ndarray
        Keys ``'R'``, ``'G1'`` (green on the red rows), ``'G2'`` (green on the blue rows) and
        ``'B'``.  Values are strided *views* of ``mosaic``: copy before modifying.
        Plane element ``[j, i]`` comes from mosaic pixel ``(2j + dy, 2i + dx)`` where
        ``(dy, dx)`` is the position of that colour in the 2×2 cell.
    """
    arr = _check_mosaic(mosaic, "split_cfa")
    h2, w2 = arr.shape[0] // 2, arr.shape[1] // 2
    return {
        key: arr[dy : dy + 2 * h2 : 2, dx : dx + 2 * w2 : 2]
        for key, (dy, dx) in _cell_offsets(pattern).items()
    }


def mosaic_rgb(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image through a Bayer pattern (the inverse of debayering).

    Parameters
    ----------
    rgb : numpy.ndarray
        ``[3, y, x]`` image.
    pattern : str
        Bayer pattern.

    Returns
    -------
    numpy.ndarray
        float32 ``[y, x]`` mosaic: pixel ``(y, x)`` holds ``rgb[c, y, x]`` for the channel
        ``c`` the pattern places there.  Used by tests and by the simulator.
    """
    arr = np.asarray(rgb, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[0] != 3:
        msg = f"mosaic_rgb needs an RGB image [3, y, x]; got shape {arr.shape}"
        raise ValueError(msg)
    idx = channel_index(pattern)
    out = np.empty(arr.shape[1:], dtype=np.float32)
    for dy in (0, 1):
        for dx in (0, 1):
            out[dy::2, dx::2] = arr[idx[dy, dx], dy::2, dx::2]
    return out


def superpixel(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    """Half-resolution RGB: one output pixel per 2×2 cell (R, mean of the two G, B).

    Parameters
    ----------
    mosaic : numpy.ndarray
        2-D CFA mosaic; an odd last row or column is cropped.
    pattern : str
        Bayer pattern.

    Returns
    -------
    numpy.ndarray
        float32 ``[3, height // 2, width // 2]``.  Output pixel ``(j, i)`` is centred at
        mosaic coordinates ``(2j + 0.5, 2i + 0.5)``.  Where one green sample is NaN the other
        is used; a NaN red or blue sample gives NaN in that channel.
    """
    planes = split_cfa(mosaic, pattern)
    g1 = planes["G1"].astype(np.float32)
    g2 = planes["G2"].astype(np.float32)
    green = 0.5 * (g1 + g2)
    bad1 = np.isnan(g1)
    bad2 = np.isnan(g2)
    if bad1.any() or bad2.any():
        green = np.where(bad1, g2, np.where(bad2, g1, green))
    out = np.empty((3, *green.shape), dtype=np.float32)
    out[0] = planes["R"]
    out[1] = green
    out[2] = planes["B"]
    return out


def luminance(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    """Half-resolution luminance for registration: the mean of each 2×2 cell.

    Parameters
    ----------
    mosaic : numpy.ndarray
        2-D CFA mosaic; an odd last row or column is cropped.
    pattern : str
        Bayer pattern (validated; the mean of a cell does not depend on it).

    Returns
    -------
    numpy.ndarray
        float32 ``[height // 2, width // 2]`` equal to ``(R + G1 + G2 + B) / 4`` per cell,
        centred at mosaic coordinates ``(2j + 0.5, 2i + 0.5)``; see
        :func:`half_to_full_transform`.
    """
    planes = split_cfa(mosaic, pattern)
    acc = planes["R"].astype(np.float32)
    acc += planes["G1"]
    acc += planes["G2"]
    acc += planes["B"]
    acc *= np.float32(0.25)
    return acc


@njit(parallel=True, cache=True)
def _green_kernel(cfa, gidx, out):  # pragma: no cover - compiled
    h, w = cfa.shape
    for y in prange(h):
        for x in range(w):
            if gidx[y & 1, x & 1]:
                out[y, x] = cfa[y, x]
                continue
            acc = 0.0
            n = 0
            if y > 0:
                acc += cfa[y - 1, x]
                n += 1
            if y < h - 1:
                acc += cfa[y + 1, x]
                n += 1
            if x > 0:
                acc += cfa[y, x - 1]
                n += 1
            if x < w - 1:
                acc += cfa[y, x + 1]
                n += 1
            out[y, x] = acc / n


def green_plane(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    """Full-resolution green for registration.

    Green samples are kept; at red and blue sites green is the mean of the 2 to 4 cardinal
    green neighbours (bilinear interpolation; edges use the neighbours that exist).

    Parameters
    ----------
    mosaic : numpy.ndarray
        2-D CFA mosaic of any size (at least 2×2).
    pattern : str
        Bayer pattern.

    Returns
    -------
    numpy.ndarray
        float32 ``[height, width]``.  A NaN green sample makes its interpolated
        neighbours NaN (fill first with :func:`astrostack.calibrate.fill_cfa_nans` if needed).
    """
    arr = np.ascontiguousarray(_check_mosaic(mosaic, "green_plane"), dtype=np.float32)
    gidx = channel_index(pattern) == 1
    out = np.empty_like(arr)
    _green_kernel(arr, gidx, out)
    return out


def half_to_full_transform(matrix: np.ndarray) -> np.ndarray:
    """Convert a 3×3 transform measured on superpixel/luminance images to mosaic pixels.

    Half-resolution pixel ``(i, j)`` is centred at full-resolution ``(2i + 0.5, 2j + 0.5)``
    (x, y), so with ``S = [[2, 0, 0.5], [0, 2, 0.5], [0, 0, 1]]`` the full-resolution
    transform is ``S @ M @ inv(S)``.

    Parameters
    ----------
    matrix : numpy.ndarray
        3×3 homogeneous transform mapping half-resolution frame ``(x, y)`` to
        half-resolution reference ``(x, y)``.

    Returns
    -------
    numpy.ndarray
        float64 3×3 transform on the full-resolution grid.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3):
        msg = f"half_to_full_transform needs a 3x3 matrix; got shape {m.shape}"
        raise ValueError(msg)
    s = np.array([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])
    s_inv = np.array([[0.5, 0.0, -0.25], [0.0, 0.5, -0.25], [0.0, 0.0, 1.0]])
    return s @ m @ s_inv


def pattern_from_meta(meta: Any, override: str | None = None) -> str | None:
    """The Bayer pattern to use for a frame, honouring a user override.

    Parameters
    ----------
    meta : FrameMeta
        Frame metadata; ``meta.bayer`` is the pattern of the array as held (``None`` = mono).
    override : str, optional
        User choice that wins over the file: a pattern name, ``'mono'``/``'none'`` to
        treat a frame as monochrome, or ``None``/``'auto'`` to use the file's pattern.

    Returns
    -------
    str or None
        Upper-case pattern name, or ``None`` for monochrome or already-RGB data.

    Raises
    ------
    ValueError
        For an unknown pattern name (naming the file), or a pattern override on a frame that
        is already RGB ``[3, y, x]``.
    """
    source = str(getattr(meta, "path", "") or "")
    shape = tuple(getattr(meta, "shape", ()) or ())
    bayer = getattr(meta, "bayer", None)
    text = "" if override is None else str(override).strip().upper()
    if text and text != "AUTO":
        if text in _MONO_NAMES:
            return None
        name = _normalise_pattern(override, f"{source or 'frame'}: bayer override")
        if len(shape) == 3:
            msg = (
                f"{source or 'frame'}: the frame is already RGB {shape}; a Bayer pattern "
                f"override ({name}) applies only to raw CFA mosaics. Remove the override"
            )
            raise ValueError(msg)
        if bayer is not None and str(bayer).strip().upper() != name:
            logger.info("%s: Bayer pattern %s overridden by user to %s", source, bayer, name)
        return name
    if bayer is None or len(shape) == 3:
        return None
    try:
        return normalize_pattern(bayer)
    except ValueError as exc:
        msg = (
            f"{source or 'frame'}: {exc}. Pass a Bayer override (e.g. RGGB) or 'mono' for this "
            "camera"
        )
        raise ValueError(msg) from exc


def _rgb_check(rgb: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[0] != 3:
        msg = f"{what} needs an RGB image [3, y, x]; got shape {arr.shape}. Debayer first"
        raise ValueError(msg)
    return arr


def _multipliers(multipliers: Sequence[float], what: str) -> np.ndarray:
    m = np.asarray(multipliers, dtype=np.float64).ravel()
    if m.size == 4:  # camera (R, G, B, G2): G2 is the second green, equal to G in practice
        m = m[:3]
    if m.size != 3 or not np.all(np.isfinite(m)) or np.any(m <= 0):
        msg = (
            f"{what}: white balance multipliers must be 3 (R, G, B) or 4 (R, G, B, G2) "
            f"positive finite numbers; got {multipliers!r}"
        )
        raise ValueError(msg)
    return m


def apply_white_balance(rgb: np.ndarray, multipliers: Sequence[float]) -> np.ndarray:
    """Multiply each channel of an RGB image by its white-balance factor.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``[3, y, x]`` image.
    multipliers : sequence of float
        ``(R, G, B)`` or camera-style ``(R, G, B, G2)`` factors, applied as given (camera
        multipliers usually have ``G = 1``).

    Returns
    -------
    numpy.ndarray
        New float32 ``[3, y, x]`` image; NaN stays NaN.
    """
    arr = _rgb_check(rgb, "apply_white_balance")
    m = _multipliers(multipliers, "apply_white_balance")
    return (arr.astype(np.float32) * m.astype(np.float32)[:, None, None]).astype(np.float32)


def white_balance_mosaic(
    mosaic: np.ndarray, pattern: str, multipliers: Sequence[float]
) -> np.ndarray:
    """White-balance a CFA mosaic before debayering.

    Demosaicing assumes locally similar channels; balancing first (as RawTherapee does)
    reduces colour artefacts for strongly unbalanced sensors.

    Parameters
    ----------
    mosaic : numpy.ndarray
        2-D CFA mosaic.
    pattern : str
        Bayer pattern.
    multipliers : sequence of float
        ``(R, G, B)`` or ``(R, G, B, G2)``.

    Returns
    -------
    numpy.ndarray
        New float32 mosaic with each sample multiplied by the factor of its channel.
    """
    arr = _check_mosaic(mosaic, "white_balance_mosaic")
    m = _multipliers(multipliers, "white_balance_mosaic").astype(np.float32)
    idx = channel_index(pattern)
    out = arr.astype(np.float32, copy=True)
    for dy in (0, 1):
        for dx in (0, 1):
            out[dy::2, dx::2] *= m[idx[dy, dx]]
    return out


def background_levels(
    rgb: np.ndarray,
    mask: np.ndarray | None = None,
    sigma: float = 2.5,
    iterations: int = 5,
    step: int = 2,
) -> np.ndarray:
    """Robust background level of each channel.

    Background pixels are found on the channel mean: pixels brighter than
    ``median + sigma * 1.4826 * MAD`` (stars, nebulae) are dropped, repeatedly; the level of
    each channel is then the median of that channel over the remaining pixels.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``[3, y, x]`` image; NaN pixels are ignored.
    mask : numpy.ndarray, optional
        ``bool [y, x]``: True marks pixels that may be background (e.g. a user-chosen
        region).  Default: all finite pixels.
    sigma : float
        Upper clipping threshold in robust standard deviations.
    iterations : int
        Maximum number of clipping passes.
    step : int
        Subsampling stride in both axes for speed (1 = every pixel).

    Returns
    -------
    numpy.ndarray
        float64 array of 3 background levels.
    """
    arr = _rgb_check(rgb, "background_levels")
    if step < 1 or iterations < 1 or sigma <= 0:
        msg = (
            "background_levels: need step >= 1, iterations >= 1 and sigma > 0; "
            f"got {step}, {iterations}, {sigma}"
        )
        raise ValueError(msg)
    sub = arr[:, ::step, ::step].reshape(3, -1).astype(np.float32)
    keep = np.all(np.isfinite(sub), axis=0)
    if mask is not None:
        mk = np.asarray(mask, dtype=bool)
        if mk.shape != arr.shape[1:]:
            msg = f"background_levels: mask shape {mk.shape} != image shape {arr.shape[1:]}"
            raise ValueError(msg)
        keep &= mk[::step, ::step].ravel()
    if not keep.any():
        msg = "background_levels: no finite background pixels; check the image and mask"
        raise ValueError(msg)
    lum = sub.mean(axis=0)
    for _ in range(int(iterations)):
        vals = lum[keep]
        med = np.median(vals)
        mad = np.median(np.abs(vals - med)) * 1.4826
        if mad <= 0:
            break
        new_keep = keep & (lum <= med + sigma * mad)
        if new_keep.sum() == keep.sum() or new_keep.sum() < 16:
            break
        keep = new_keep
    return np.array([float(np.median(sub[c, keep])) for c in range(3)])


def neutralize_background(
    rgb: np.ndarray,
    mode: str = "offset",
    reference: str = "mean",
    mask: np.ndarray | None = None,
    sigma: float = 2.5,
    iterations: int = 5,
    step: int = 2,
) -> np.ndarray:
    """Make the background grey: equal robust background level in R, G and B.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``[3, y, x]`` linear image.
    mode : {'offset', 'scale'}
        ``'offset'`` adds ``target - level_c`` to channel ``c`` (right for sky glow, an
        additive light); ``'scale'`` multiplies channel ``c`` by ``target / level_c`` (right
        when the background is the colour of a signal that should be grey, e.g. a flat).
    reference : {'mean', 'min', 'max', 'R', 'G', 'B'}
        Target level: the mean/min/max of the three levels, or the level of one channel.
    mask, sigma, iterations, step
        Passed to :func:`background_levels`.

    Returns
    -------
    numpy.ndarray
        New float32 ``[3, y, x]`` image whose three background levels are equal.
    """
    arr = _rgb_check(rgb, "neutralize_background")
    levels = background_levels(arr, mask=mask, sigma=sigma, iterations=iterations, step=step)
    ref = reference.strip().upper() if isinstance(reference, str) else reference
    if ref == "MEAN":
        target = float(levels.mean())
    elif ref == "MIN":
        target = float(levels.min())
    elif ref == "MAX":
        target = float(levels.max())
    elif ref in _CHANNEL_OF_LETTER:
        target = float(levels[_CHANNEL_OF_LETTER[ref]])
    else:
        msg = (
            f"neutralize_background: unknown reference {reference!r}; use mean, min, max, R, G or B"
        )
        raise ValueError(msg)
    out = arr.astype(np.float32, copy=True)
    if mode == "offset":
        for c in range(3):
            out[c] += np.float32(target - levels[c])
    elif mode == "scale":
        if np.any(levels <= 0) or target <= 0:
            msg = (
                f"neutralize_background: background levels {levels.tolist()} are not all "
                "positive, so mode='scale' cannot be used; use mode='offset'"
            )
            raise ValueError(msg)
        for c in range(3):
            out[c] *= np.float32(target / levels[c])
    else:
        msg = f"neutralize_background: unknown mode {mode!r}; use 'offset' or 'scale'"
        raise ValueError(msg)
    logger.debug("background levels %s neutralised to %.6g (%s)", levels.tolist(), target, mode)
    return out
