"""Configuration of a simulated session: one dataclass with presets.

Every quantity is in physical units (electrons, seconds, ADU, degrees Celsius,
pixels) and every random draw is seeded from :attr:`SessionConfig.seed`, so the
same configuration always produces bit-identical frames.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BAD_FRAME_KINDS", "BAYER_PATTERNS", "SessionConfig", "cfa_channels", "frame_rng"]

#: CFA patterns the simulator can mosaic through (top-down rows, ``[y, x]``).
BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")

#: Reasons a light can be spoiled, as keys of :attr:`SessionConfig.bad_frames`.
BAD_FRAME_KINDS = ("clouds", "trailing", "defocus")

# Stream tags for :func:`frame_rng`: each kind of draw gets its own stream so that
# adding a frame of one kind never changes the frames of another.
_STREAMS = {
    "stars": 1,
    "nebula": 2,
    "sensor": 3,
    "flat": 4,
    "plan": 5,
    "bias": 10,
    "dark": 11,
    "flat_frame": 12,
    "darkflat": 13,
    "light": 14,
}


def frame_rng(seed: int, stream: str, index: int = 0) -> np.random.Generator:
    """Return the independent random generator of one stream and frame.

    Parameters
    ----------
    seed : int
        The session seed.
    stream : str
        What is drawn (``'stars'``, ``'sensor'``, ``'light'``, ...).
    index : int
        Frame number within the stream.

    Returns
    -------
    numpy.random.Generator
        A PCG64 generator seeded from ``(seed, stream, index)``.
    """
    return np.random.default_rng([int(seed), _STREAMS[stream], int(index)])


def cfa_channels(bayer: str | None) -> np.ndarray:
    """Channel index (0=R, 1=G, 2=B) of each cell of the 2x2 CFA tile.

    Parameters
    ----------
    bayer : str or None
        One of :data:`BAYER_PATTERNS`, or ``None`` for a mono sensor (all zeros).

    Returns
    -------
    numpy.ndarray
        ``int64 [2, 2]``; pixel ``(y, x)`` sees channel ``tile[y % 2, x % 2]``.
    """
    if bayer is None:
        return np.zeros((2, 2), dtype=np.int64)
    pattern = bayer.upper()
    if pattern not in BAYER_PATTERNS:
        msg = f"unknown Bayer pattern {bayer!r}; use one of {', '.join(BAYER_PATTERNS)} or None"
        raise ValueError(msg)
    lookup = {"R": 0, "G": 1, "B": 2}
    return np.array([[lookup[pattern[0]], lookup[pattern[1]]],
                     [lookup[pattern[2]], lookup[pattern[3]]]], dtype=np.int64)  # fmt: skip


@dataclass
class SessionConfig:
    """Everything that defines a simulated night.

    Attributes
    ----------
    shape : tuple of int
        Sensor size ``(rows, columns)``.
    n_bias, n_darks, n_flats, n_lights, n_darkflats : int
        Number of frames of each kind.
    exposure : float
        Light exposure, seconds.
    dark_exposure : float or None
        Dark exposure, seconds (``None``: same as ``exposure``).
    flat_exposure : float
        Flat (and dark-flat) exposure, seconds.
    gain : float
        Electrons per ADU.
    gain_setting : int
        Camera gain setting written as ``GAIN`` (``EGAIN`` holds ``gain``).
    read_noise : float
        Read noise, electrons RMS.
    bias_level : float
        Mean bias (offset) level, ADU.
    column_pattern : float
        RMS of the fixed per-column bias offsets, ADU.
    bias_fixed_noise : float
        RMS of the fixed per-pixel bias pattern, ADU.
    temperature : float
        Sensor temperature of lights and flats, deg C.
    dark_temperature : float or None
        Sensor temperature of darks and dark-flats (``None``: ``temperature``).
    dark_current : float
        Mean thermal dark current at 0 deg C, electrons/s/pixel.
    dark_doubling : float
        Temperature step that doubles the thermal dark current, deg C.
    hot_pixel_density : float
        Hot pixels per megapixel.
    hot_pixel_rate : float
        Smallest hot-pixel dark current at 0 deg C, e-/s; rates follow a Pareto law
        with index ``hot_pixel_index`` above it (heavy tail: some saturate).
    hot_pixel_index : float
        Pareto index of the hot-pixel rates.
    amp_glow : float
        Amplifier glow at the top-right corner, electrons/s (0: none).
    bayer : str or None
        CFA pattern (``'RGGB'``, ``'BGGR'``, ``'GRBG'``, ``'GBRG'``) or ``None`` for mono.
    qe : tuple of float
        Relative quantum efficiency of the R, G, B channels (colour sensors).
    n_stars : int
        Stars inside the reference frame (more are drawn around it).
    star_flux : tuple of float
        Faintest and brightest star flux, electrons/s (total over the PSF).
    star_slope : float
        Power-law index ``a`` of ``dN/dF ~ F**-a``.
    moffat_beta : float
        Moffat beta of the PSF.
    seeing : tuple of float
        Range of the per-light FWHM, pixels (uniform draw).
    truth_fwhm : float
        FWHM of the stars in the ground-truth sky image, pixels.
    shift_range : float
        Largest dither translation, pixels (uniform in ``[-s, s]`` per axis).
    rotation_range : float
        Largest field rotation, degrees (uniform in ``[-r, r]``).
    scale_range : tuple of float
        Range of the plate-scale factor (frame pixel size in reference pixels).
    meridian_flip : bool
        Rotate the second half of the lights by 180 degrees.
    mirrored : int
        Number of lights that are mirror images (left-right flipped).
    bad_frames : dict
        ``{'clouds': n, 'trailing': n, 'defocus': n}`` spoiled lights.
    satellites : int
        Number of lights crossed by one satellite trail each.
    cosmic_rays_per_frame : float
        Mean cosmic-ray hits per light and per dark.
    sky_level : float
        Mean sky background, electrons/s/pixel.
    gradient : float
        Relative amplitude of the background's linear+quadratic gradient.
    nebula : float
        Peak surface brightness of the clumpy nebula, e-/s/pixel (0: none).
    galaxy : float
        Central surface brightness of the galaxy disk, e-/s/pixel (0: none).
    vignetting : float
        Flat-field falloff at the corners (0.3: corners get 70% of the centre).
    n_dust : int
        Dust donuts in the flat field.
    dust_depth : tuple of float
        Range of the dust shadow depth (fraction).
    flat_level : float
        Mean flat-frame level as a fraction of 65535 ADU.
    min_level : float
        Surface brightness (e-/s/pixel) below which star wings are not rendered.
    seed : int
        Seed of every random draw.
    start : str
        ``DATE-OBS`` of the first light (ISO 8601, UTC).
    instrument, telescope, filter, target : str
        Header text (``INSTRUME``, ``TELESCOP``, ``FILTER``, ``OBJECT``).
    pixel_size : float
        Pixel size, micrometres.
    focal_length : float
        Focal length, millimetres.
    """

    shape: tuple[int, int] = (512, 512)
    n_bias: int = 8
    n_darks: int = 8
    n_flats: int = 8
    n_lights: int = 12
    n_darkflats: int = 0
    exposure: float = 120.0
    dark_exposure: float | None = None
    flat_exposure: float = 2.0
    gain: float = 0.8
    gain_setting: int = 100
    read_noise: float = 2.0
    bias_level: float = 600.0
    column_pattern: float = 2.0
    bias_fixed_noise: float = 0.5
    temperature: float = -10.0
    dark_temperature: float | None = None
    dark_current: float = 0.02
    dark_doubling: float = 6.0
    hot_pixel_density: float = 300.0
    hot_pixel_rate: float = 0.5
    hot_pixel_index: float = 1.2
    amp_glow: float = 0.0
    bayer: str | None = None
    qe: tuple[float, float, float] = (0.8, 1.0, 0.7)
    n_stars: int = 1000
    star_flux: tuple[float, float] = (10.0, 3.0e5)
    star_slope: float = 2.0
    moffat_beta: float = 3.0
    seeing: tuple[float, float] = (2.4, 3.4)
    truth_fwhm: float = 2.5
    shift_range: float = 20.0
    rotation_range: float = 1.0
    scale_range: tuple[float, float] = (1.0, 1.0)
    meridian_flip: bool = False
    mirrored: int = 0
    bad_frames: dict[str, int] = field(default_factory=dict)
    satellites: int = 0
    cosmic_rays_per_frame: float = 5.0
    sky_level: float = 4.0
    gradient: float = 0.1
    nebula: float = 1.5
    galaxy: float = 3.0
    vignetting: float = 0.3
    n_dust: int = 3
    dust_depth: tuple[float, float] = (0.02, 0.06)
    flat_level: float = 0.45
    min_level: float = 1.0e-3
    seed: int = 0
    start: str = "2026-03-14T20:00:00"
    instrument: str = "astrostack SimCam"
    telescope: str = "astrostack 80/400"
    filter: str | None = None
    target: str = "SIM-FIELD"
    pixel_size: float = 3.76
    focal_length: float = 400.0

    def __post_init__(self) -> None:
        self.shape = (int(self.shape[0]), int(self.shape[1]))
        if self.bayer is not None:
            self.bayer = self.bayer.upper()
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check the configuration; raise ``ValueError`` saying what to change."""
        h, w = self.shape
        if h < 32 or w < 32:
            msg = f"SessionConfig.shape={self.shape}: frames must be at least 32x32 pixels"
            raise ValueError(msg)
        if self.bayer is not None and (h % 2 or w % 2):
            msg = f"SessionConfig.shape={self.shape}: a Bayer sensor needs even dimensions"
            raise ValueError(msg)
        cfa_channels(self.bayer)
        if int(self.seed) != self.seed or self.seed < 0:
            msg = f"SessionConfig.seed={self.seed!r}: use a non-negative integer"
            raise ValueError(msg)
        for name in ("n_bias", "n_darks", "n_flats", "n_lights", "n_darkflats", "mirrored"):
            if getattr(self, name) < 0:
                msg = f"SessionConfig.{name}={getattr(self, name)}: must be >= 0"
                raise ValueError(msg)
        for name in ("exposure", "flat_exposure", "gain", "seeing", "truth_fwhm"):
            if np.any(np.asarray(getattr(self, name)) <= 0):
                msg = f"SessionConfig.{name}={getattr(self, name)}: must be > 0"
                raise ValueError(msg)
        if self.moffat_beta <= 1.0:
            msg = f"SessionConfig.moffat_beta={self.moffat_beta}: must be > 1"
            raise ValueError(msg)
        if not 0.0 <= self.vignetting < 1.0:
            msg = f"SessionConfig.vignetting={self.vignetting}: use a fraction in [0, 1)"
            raise ValueError(msg)
        unknown = set(self.bad_frames) - set(BAD_FRAME_KINDS)
        if unknown:
            msg = (
                f"SessionConfig.bad_frames has unknown kinds {sorted(unknown)}; "
                f"use {', '.join(BAD_FRAME_KINDS)}"
            )
            raise ValueError(msg)
        n_spoiled = sum(self.bad_frames.values()) + self.mirrored
        if n_spoiled and n_spoiled > self.n_lights - 1:
            msg = (
                f"SessionConfig: {n_spoiled} bad or mirrored lights need at least "
                f"{n_spoiled + 1} lights (light 0 stays the clean reference); raise n_lights"
            )
            raise ValueError(msg)
        if self.satellites > self.n_lights:
            msg = f"SessionConfig.satellites={self.satellites}: more than n_lights={self.n_lights}"
            raise ValueError(msg)

    # ------------------------------------------------------------ derived values
    @property
    def dark_exposure_s(self) -> float:
        """Dark exposure in seconds (``exposure`` when not set)."""
        return float(self.exposure if self.dark_exposure is None else self.dark_exposure)

    @property
    def dark_temperature_c(self) -> float:
        """Dark temperature in deg C (``temperature`` when not set)."""
        return float(self.temperature if self.dark_temperature is None else self.dark_temperature)

    @property
    def n_channels(self) -> int:
        """3 for a Bayer sensor (the true sky is RGB), 1 for mono."""
        return 1 if self.bayer is None else 3

    @property
    def filter_name(self) -> str:
        """``FILTER`` header value (``'L'`` mono, ``'UV/IR'`` colour unless set)."""
        if self.filter is not None:
            return self.filter
        return "L" if self.bayer is None else "UV/IR"

    def thermal_factor(self, temperature: float) -> float:
        """Thermal dark-current multiplier at *temperature* relative to 0 deg C."""
        return float(2.0 ** (temperature / self.dark_doubling))

    def replace(self, **changes: Any) -> SessionConfig:
        """Return a copy with *changes* applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary of every field."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in data.items():
            if key not in names:
                continue
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)

    # ------------------------------------------------------------------ presets
    @classmethod
    def demo(cls, **overrides: Any) -> SessionConfig:
        """The demo night: 800x600, 20 lights, a meridian flip, one cloudy frame, a satellite."""
        base = {
            "shape": (600, 800),
            "n_bias": 15,
            "n_darks": 12,
            "n_flats": 12,
            "n_lights": 20,
            "n_stars": 1500,
            "meridian_flip": True,
            "bad_frames": {"clouds": 1},
            "satellites": 1,
            "amp_glow": 0.5,
            "seed": 2026,
        }
        base.update(overrides)
        return cls(**base)

    @classmethod
    def hard(cls, **overrides: Any) -> SessionConfig:
        """A difficult night: trails, bad frames, amp glow, strong gradient, flip, mirror, scale."""
        base = {
            "shape": (600, 800),
            "n_bias": 12,
            "n_darks": 12,
            "n_flats": 12,
            "n_darkflats": 6,
            "n_lights": 24,
            "n_stars": 1500,
            "dark_temperature": -5.0,
            "meridian_flip": True,
            "mirrored": 1,
            "scale_range": (0.98, 1.02),
            "rotation_range": 3.0,
            "shift_range": 40.0,
            "bad_frames": {"clouds": 2, "trailing": 1, "defocus": 1},
            "satellites": 3,
            "cosmic_rays_per_frame": 20.0,
            "amp_glow": 3.0,
            "gradient": 0.6,
            "hot_pixel_density": 600.0,
            "vignetting": 0.4,
            "n_dust": 6,
            "seed": 4242,
        }
        base.update(overrides)
        return cls(**base)

    @classmethod
    def small(cls, **overrides: Any) -> SessionConfig:
        """A tiny clean session for unit tests: 256x256, 3 bias/darks/flats, 5 lights."""
        base = {
            "shape": (256, 256),
            "n_bias": 3,
            "n_darks": 3,
            "n_flats": 3,
            "n_lights": 5,
            "n_stars": 250,
            "exposure": 60.0,
            "cosmic_rays_per_frame": 2.0,
            "seed": 1,
        }
        base.update(overrides)
        return cls(**base)
