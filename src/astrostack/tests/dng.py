"""Real DNG files written with pidng from synthetic CFA mosaics (the tests' RAW fixture).

One writer for every test that needs camera RAW input: the reader tests, the
hostile-input corpus and the colour sessions run through ``astrostack run``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["write_dng"]

_CODE = {"R": 0, "G": 1, "B": 2}
_IDENTITY = [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]]


def write_dng(
    path: Path,
    mosaic: np.ndarray,
    pattern: str = "RGGB",
    *,
    cfa: Sequence[int] | None = None,
    dims: tuple[int, int] = (2, 2),
    black: float | Sequence[float] = 256,
    white: int = 65535,
    neutral: tuple[float, float, float] = (0.5, 1.0, 0.8),
    exposure: float | tuple[int, int] = (1, 30),
) -> Path:
    """Write an uncompressed 16-bit DNG of *mosaic* and return its path.

    Parameters
    ----------
    path : Path
        Target ``.dng`` path.
    mosaic : ndarray
        ``[y, x]`` raw values (written as uint16).
    pattern : str
        2x2 CFA pattern name (``'RGGB'`` ...), unless *cfa* is given.
    cfa : sequence of int, optional
        Explicit CFA codes (0 = R, 1 = G, 2 = B) of a ``dims`` tile, e.g. X-Trans 6x6.
    dims : tuple of int
        CFA repeat dimensions.
    black : float or sequence of float
        One black level, or one per cell of the 2x2 tile (row by row).
    white : int
        White level.
    neutral : tuple of float
        ``AsShotNeutral`` (camera white balance is its inverse).
    exposure : float or (numerator, denominator)
        Exposure time in seconds.
    """
    from pidng.core import RAW2DNG
    from pidng.defs import CalibrationIlluminant, DNGVersion, PhotometricInterpretation
    from pidng.dng import DNGTags, Tag

    codes = list(cfa) if cfa is not None else [_CODE[c] for c in pattern.upper()]
    if isinstance(exposure, tuple):
        exposure_tag = [list(exposure)]
    else:
        exposure_tag = [[max(round(exposure * 1000), 1), 1000]]
    per_cell = np.ndim(black) > 0
    height, width = mosaic.shape
    tags = DNGTags()
    for tag, value in (
        (Tag.ImageWidth, width),
        (Tag.ImageLength, height),
        (Tag.TileWidth, width),
        (Tag.TileLength, height),
        (Tag.Orientation, 1),
        (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
        (Tag.SamplesPerPixel, 1),
        (Tag.BitsPerSample, 16),
        (Tag.CFARepeatPatternDim, list(dims)),
        (Tag.CFAPattern, codes),
        *([(Tag.BlackLevelRepeatDim, [2, 2])] if per_cell else []),
        (Tag.BlackLevel, [int(b) for b in black] if per_cell else int(black)),
        (Tag.WhiteLevel, int(white)),
        (Tag.ColorMatrix1, _IDENTITY),
        (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
        (Tag.AsShotNeutral, [[int(n * 1000), 1000] for n in neutral]),
        (Tag.ExposureTime, exposure_tag),
        (Tag.Make, "Synthetic"),
        (Tag.Model, "Mosaic"),
        (Tag.DNGVersion, DNGVersion.V1_4),
        (Tag.DNGBackwardVersion, DNGVersion.V1_2),
    ):
        tags.set(tag, value)
    writer = RAW2DNG()
    writer.options(tags, path="", compress=False)
    writer.convert(
        np.ascontiguousarray(mosaic, dtype=np.uint16), filename=str(Path(path).with_suffix(""))
    )
    return Path(path)
