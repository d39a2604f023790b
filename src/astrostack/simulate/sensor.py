"""The camera: bias pattern, dark current, hot pixels, amp glow, flat field, digitisation.

Units: maps in electrons are per second (``*_rate``); the bias map is in ADU.
A frame's ADU value is ``round(bias + (electrons + read noise) / gain)`` clipped
to ``[0, 65535]`` (16-bit saturation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .config import SessionConfig, cfa_channels, frame_rng

__all__ = [
    "ADU_MAX",
    "Sensor",
    "cosmic_rays",
    "digitise",
    "make_flat_field",
    "make_sensor",
    "render_trail",
]

logger = logging.getLogger(__name__)

#: Saturation of a 16-bit sensor, ADU.
ADU_MAX = 65535

_HOT_RATE_CAP = 2.0e4  # e-/s at 0 deg C: the hottest pixels saturate in seconds


@dataclass
class Sensor:
    """Fixed properties of the simulated camera (see :func:`make_sensor`).

    Attributes
    ----------
    bias : numpy.ndarray
        float32 bias (offset) frame without read noise, ADU.
    column_offsets : numpy.ndarray
        float32 per-column part of ``bias``, ADU (``bias`` minus level, column means).
    thermal_rate : numpy.ndarray
        float64 thermal dark current at 0 deg C including hot pixels, e-/s.
    hot_pixels : numpy.ndarray
        bool mask of the hot pixels.
    amp_glow : numpy.ndarray
        float64 amplifier glow, e-/s (temperature independent).
    flat : numpy.ndarray
        float32 flat field (vignetting x dust), mean 1.
    vignetting : numpy.ndarray
        float32 vignetting alone, 1 at the optical centre.
    qe : numpy.ndarray
        float64 relative QE of each pixel's channel (1 for mono).
    tile : numpy.ndarray
        ``[2, 2]`` CFA channel indices (zeros for mono).
    dust : list of dict
        Dust donuts: centre ``x``, ``y``, ``radius`` (outer, px) and ``depth``.
    """

    bias: np.ndarray
    column_offsets: np.ndarray
    thermal_rate: np.ndarray
    hot_pixels: np.ndarray
    amp_glow: np.ndarray
    flat: np.ndarray
    vignetting: np.ndarray
    qe: np.ndarray
    tile: np.ndarray
    dust: list

    def dark_rate(self, config: SessionConfig, temperature: float) -> np.ndarray:
        """Dark current at *temperature* (thermal, doubling per ``dark_doubling``, + glow), e-/s."""
        return self.thermal_rate * config.thermal_factor(temperature) + self.amp_glow


def make_flat_field(
    config: SessionConfig, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray, list]:
    """Vignetting times dust donuts, normalised to mean 1.

    Vignetting follows the ``cos^4`` law about the frame centre with the focal
    distance chosen so that the corners get ``1 - config.vignetting`` of the centre.
    Each dust donut is a soft ring shadow of the given depth whose centre is half
    as deep (the shadow of the central obstruction).

    Parameters
    ----------
    config : SessionConfig
        Uses ``shape``, ``vignetting``, ``n_dust``, ``dust_depth``.
    rng : numpy.random.Generator, optional
        Default: the session's ``'flat'`` stream.

    Returns
    -------
    flat : numpy.ndarray
        float32, mean 1.
    vignetting : numpy.ndarray
        float32, 1 at the centre, ``1 - config.vignetting`` at the corners.
    dust : list of dict
        Donut centres, outer radii and depths.
    """
    rng = frame_rng(config.seed, "flat") if rng is None else rng
    h, w = config.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    r = np.hypot(xx - cx, yy - cy)
    r_corner = np.hypot(cx, cy)
    if config.vignetting > 0:
        cos_corner = (1.0 - config.vignetting) ** 0.25
        focal = r_corner / np.sqrt(1.0 / cos_corner**2 - 1.0)
        vignetting = (focal**2 / (focal**2 + r * r)) ** 2  # cos^4(atan(r / f))
    else:
        vignetting = np.ones((h, w))
    flat = vignetting.copy()
    dust = []
    size = min(h, w)
    for _ in range(config.n_dust):
        radius = rng.uniform(0.02, 0.05) * size
        depth = rng.uniform(*config.dust_depth)
        dx0 = rng.uniform(radius, w - 1 - radius)
        dy0 = rng.uniform(radius, h - 1 - radius)
        rr = np.hypot(xx - dx0, yy - dy0)
        edge = max(0.08 * radius, 0.7)
        outer = 0.5 * (1.0 + np.tanh((radius - rr) / edge))
        inner = 0.5 * (1.0 + np.tanh((0.45 * radius - rr) / edge))
        flat *= 1.0 - depth * (outer - 0.5 * inner)
        dust.append(
            {"x": float(dx0), "y": float(dy0), "radius": float(radius), "depth": float(depth)}
        )
    flat /= flat.mean()
    return flat.astype(np.float32), vignetting.astype(np.float32), dust


def make_sensor(config: SessionConfig) -> Sensor:
    """Draw the fixed sensor properties of a session from its seed.

    Parameters
    ----------
    config : SessionConfig
        Session configuration.

    Returns
    -------
    Sensor
    """
    rng = frame_rng(config.seed, "sensor")
    h, w = config.shape
    columns = rng.normal(0.0, config.column_pattern, w)
    bias = config.bias_level + columns[None, :] + rng.normal(0.0, config.bias_fixed_noise, (h, w))
    # Thermal current: mild pixel-to-pixel non-uniformity plus heavy-tailed hot pixels.
    thermal = config.dark_current * rng.lognormal(0.0, 0.1, (h, w))
    n_hot = int(rng.poisson(config.hot_pixel_density * h * w / 1e6))
    n_hot = min(n_hot, h * w // 4)
    idx = rng.choice(h * w, n_hot, replace=False)
    rates = config.hot_pixel_rate * (1.0 - rng.random(n_hot)) ** (-1.0 / config.hot_pixel_index)
    hot = np.zeros(h * w, dtype=bool)
    hot[idx] = True
    thermal.ravel()[idx] += np.minimum(rates, _HOT_RATE_CAP)
    hot = hot.reshape(h, w)
    # Amp glow from the top-right corner (x = w-1, y = 0): a sharp core and a broad halo.
    if config.amp_glow > 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        d = np.hypot(xx - (w - 1), yy)
        length = 0.06 * min(h, w)
        glow = config.amp_glow * (np.exp(-d / length) + 0.2 * np.exp(-d / (4.0 * length)))
    else:
        glow = np.zeros((h, w))
    flat, vignetting, dust = make_flat_field(config)
    tile = cfa_channels(config.bayer)
    if config.bayer is None:
        qe = np.ones((h, w))
    else:
        qe_tile = np.asarray(config.qe, dtype=np.float64)[tile]
        qe = np.tile(qe_tile, (h // 2, w // 2))
    return Sensor(
        bias=bias.astype(np.float32),
        column_offsets=columns.astype(np.float32),
        thermal_rate=thermal,
        hot_pixels=hot,
        amp_glow=glow,
        flat=flat,
        vignetting=vignetting,
        qe=qe,
        tile=tile,
        dust=dust,
    )


def cosmic_rays(rng: np.random.Generator, shape: tuple[int, int], mean_count: float) -> np.ndarray:
    """Draw cosmic-ray hits: short tracks of 1-5 pixels with sharp deposits.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    shape : tuple of int
        Frame shape ``(rows, columns)``.
    mean_count : float
        Mean number of hits (Poisson).

    Returns
    -------
    numpy.ndarray
        ``float64 [n, 3]``: column ``x``, row ``y`` (integers) and electrons deposited.
    """
    h, w = shape
    n = int(rng.poisson(mean_count)) if mean_count > 0 else 0
    rows = []
    for _ in range(n):
        length = int(min(rng.geometric(0.45), 5))
        x0 = rng.uniform(0, w - 1)
        y0 = rng.uniform(0, h - 1)
        angle = rng.uniform(0, 2 * np.pi)
        steps = np.arange(length)
        xs = np.clip(np.rint(x0 + steps * np.cos(angle)), 0, w - 1)
        ys = np.clip(np.rint(y0 + steps * np.sin(angle)), 0, h - 1)
        energy = 300.0 + rng.exponential(2500.0, length)
        rows.append(np.stack([xs, ys, energy], axis=1))
    if not rows:
        return np.zeros((0, 3))
    return np.concatenate(rows)


def render_trail(
    out: np.ndarray,
    start: tuple[float, float],
    end: tuple[float, float],
    electrons_per_pixel: float,
    fwhm: float,
) -> np.ndarray:
    """Add a satellite trail (a line segment with a Gaussian cross-section) to *out*.

    Parameters
    ----------
    out : numpy.ndarray
        float64 ``[y, x]`` image to add to, in place.
    start, end : tuple of float
        Endpoints ``(x, y)`` in pixels.
    electrons_per_pixel : float
        Integrated electrons per pixel of trail length.
    fwhm : float
        FWHM of the cross-section, pixels.

    Returns
    -------
    numpy.ndarray
        *out*.
    """
    h, w = out.shape
    sigma = fwhm / 2.3548
    x0, y0 = start
    x1, y1 = end
    length = float(np.hypot(x1 - x0, y1 - y0))
    if length == 0:
        return out
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    along = (xx - x0) * ux + (yy - y0) * uy
    across = -(xx - x0) * uy + (yy - y0) * ux
    beyond = np.maximum(np.maximum(-along, along - length), 0.0)
    d2 = across * across + beyond * beyond
    out += electrons_per_pixel / (np.sqrt(2 * np.pi) * sigma) * np.exp(-0.5 * d2 / sigma**2)
    return out


def digitise(
    electrons: np.ndarray,
    bias: np.ndarray,
    gain: float,
    read_noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Convert electrons to 16-bit ADU: ``round(bias + (e + read noise) / gain)``, clipped.

    Parameters
    ----------
    electrons : numpy.ndarray
        Electrons per pixel (already with shot noise, if any).
    bias : numpy.ndarray
        Bias frame, ADU.
    gain : float
        Electrons per ADU.
    read_noise : float
        Read noise in electrons RMS (needs *rng* when > 0).
    rng : numpy.random.Generator, optional
        Source of read noise.

    Returns
    -------
    numpy.ndarray
        uint16 frame, saturated at 65535.
    """
    signal = np.asarray(electrons, dtype=np.float64)
    if read_noise > 0:
        if rng is None:
            msg = "digitise: read_noise > 0 needs an rng"
            raise ValueError(msg)
        signal = signal + rng.normal(0.0, read_noise, signal.shape)
    adu = np.rint(bias + signal / gain)
    return np.clip(adu, 0, ADU_MAX).astype(np.uint16)
