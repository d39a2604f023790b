"""The in-memory frame: pixel data plus one metadata model for every format."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

__all__ = ["FRAME_KINDS", "Frame", "FrameMeta", "FrameReadError"]

#: Frame kinds as the pipeline names them.  ``bias`` is also called offset.
FRAME_KINDS = ("bias", "dark", "flat", "darkflat", "light", "unknown")


class FrameReadError(ValueError):
    """A frame that cannot be read or used, with the file it came from.

    The message always names the file and says what to do, e.g.
    ``"lights/a.fits: truncated FITS (2880 of 8640 bytes); re-copy the file"``.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class FrameMeta:
    """What the pipeline knows about a frame, whatever its file format.

    Attributes are ``None`` when the file does not say.  ``bayer`` is the CFA
    pattern of the array *as we hold it* (top-down rows, ``[y, x]`` indexing),
    already adjusted for ``ROWORDER`` and ``XBAYROFF``/``YBAYROFF``.
    """

    path: Path | None = None
    kind: str = "unknown"
    exposure: float | None = None  # seconds
    gain: float | None = None  # camera gain setting (astro cameras)
    iso: int | None = None  # DSLR ISO
    egain: float | None = None  # electrons per ADU
    temperature: float | None = None  # sensor temperature, deg C
    binning: tuple[int, int] = (1, 1)  # (y, x)
    filter: str | None = None
    bayer: str | None = None  # 'RGGB', 'BGGR', 'GRBG', 'GBRG' or None (mono)
    date: datetime | None = None  # start of exposure, UTC
    camera: str | None = None
    target: str | None = None
    shape: tuple[int, ...] = ()  # (y, x) or (c, y, x)
    black_level: float | None = None  # ADU; RAW files and headers that state it
    white_level: float | None = None  # ADU at which the sensor saturates
    pixel_size_um: float | None = None
    focal_length_mm: float | None = None
    wb_multipliers: tuple[float, ...] | None = None  # camera white balance (R, G, B[, G2])
    header: dict = field(default_factory=dict)  # raw keywords as read
    offset: float | None = None  # camera offset setting (OFFSET keyword; not ADU)
    row_order: str | None = None  # ROWORDER as written in the file ('TOP-DOWN', 'BOTTOM-UP')

    @property
    def is_color(self) -> bool:
        """True for CFA (mosaic) or 3-channel frames."""
        return self.bayer is not None or len(self.shape) == 3

    @property
    def pixel_scale_arcsec(self) -> float | None:
        """Pixel scale in arcsec per (binned) pixel, when optics are known."""
        if self.pixel_size_um and self.focal_length_mm:
            return 206.264806 * self.pixel_size_um / self.focal_length_mm
        return None


@dataclass
class Frame:
    """Pixel data (float32, ``[y, x]`` or ``[c, y, x]``) and its metadata."""

    data: np.ndarray
    meta: FrameMeta

    def __post_init__(self):
        if self.data.dtype != np.float32:
            self.data = self.data.astype(np.float32)
        self.meta.shape = tuple(self.data.shape)
