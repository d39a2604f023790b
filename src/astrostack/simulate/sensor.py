"""The camera: bias pattern, dark current, hot pixels, amp glow, flat field, digitisation.

Units: maps in electrons are per second (``*_rate``); the bias map is in ADU.
A frame's ADU value is ``round(bias + (electrons + read noise) / gain)`` clipped
to ``[0, 65535]`` (16-bit saturation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

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

# Beyond this many edge widths outside a dust donut tanh() is exactly -1 in float64, so
# the donut's factor is exactly 1 there and the donut is computed only inside that box.
_DUST_EDGES = 40.0
# A trail's Gaussian cross-section is evaluated where exp(-d^2 / 2 sigma^2) > exp(-80)
# (1.8e-35 relative): farther, its contribution is far below the rounding of any pixel.
_TRAIL_EXPONENT_MAX = 80.0


def _coordinates(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only broadcast views ``yy, xx`` (float64 ``[h, w]``) of the pixel coordinates.

    The same values as ``np.mgrid[0:h, 0:w].astype(np.float64)`` without allocating them.
    """
    yy = np.broadcast_to(np.arange(h, dtype=np.float64)[:, None], (h, w))
    xx = np.broadcast_to(np.arange(w, dtype=np.float64)[None, :], (h, w))
    return yy, xx


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
    yy, xx = _coordinates(h, w)
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
        edge = max(0.08 * radius, 0.7)
        reach = radius + _DUST_EDGES * edge  # the factor is exactly 1 beyond this distance
        ys = slice(max(0, int(np.floor(dy0 - reach))), min(h, int(np.ceil(dy0 + reach)) + 1))
        xs = slice(max(0, int(np.floor(dx0 - reach))), min(w, int(np.ceil(dx0 + reach)) + 1))
        rr = np.hypot(xx[ys, xs] - dx0, yy[ys, xs] - dy0)
        outer = 0.5 * (1.0 + np.tanh((radius - rr) / edge))
        inner = 0.5 * (1.0 + np.tanh((0.45 * radius - rr) / edge))
        flat[ys, xs] *= 1.0 - depth * (outer - 0.5 * inner)
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
        yy, xx = _coordinates(h, w)
        d = np.hypot(xx - (w - 1), np.ascontiguousarray(yy))
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
    # Only pixels near the segment get a non-negligible contribution: find them (compiled,
    # no full-frame temporaries), then evaluate the profile there with numpy as before.
    d2_max = 2.0 * _TRAIL_EXPONENT_MAX * sigma * sigma
    idx, d2 = _trail_pixels(h, w, float(x0), float(y0), ux, uy, length, d2_max)
    flat = out.reshape(-1)
    flat[idx] += electrons_per_pixel / (np.sqrt(2 * np.pi) * sigma) * np.exp(-0.5 * d2 / sigma**2)
    return out


@njit(cache=True, inline="always")
def _trail_d2(x, y, x0, y0, ux, uy, length):  # pragma: no cover - compiled
    """Squared distance of pixel ``(x, y)`` to the segment (same arithmetic as numpy's)."""
    along = (x - x0) * ux + (y - y0) * uy
    across = -(x - x0) * uy + (y - y0) * ux
    beyond = max(max(-along, along - length), 0.0)
    return across * across + beyond * beyond


@njit(cache=True, parallel=True)
def _trail_pixels(h, w, x0, y0, ux, uy, length, d2_max):  # pragma: no cover - compiled
    """Flat indices (ascending) and squared distances of the pixels within ``d2_max``."""
    counts = np.zeros(h + 1, dtype=np.int64)
    for y in prange(h):
        n = 0
        for x in range(w):
            if _trail_d2(float(x), float(y), x0, y0, ux, uy, length) <= d2_max:
                n += 1
        counts[y + 1] = n
    starts = np.cumsum(counts)
    idx = np.empty(starts[h], dtype=np.int64)
    d2 = np.empty(starts[h], dtype=np.float64)
    for y in prange(h):
        k = starts[y]
        for x in range(w):
            d = _trail_d2(float(x), float(y), x0, y0, ux, uy, length)
            if d <= d2_max:
                idx[k] = y * w + x
                d2[k] = d
                k += 1
    return idx, d2


def digitise(
    electrons: np.ndarray,
    bias: np.ndarray,
    gain: float,
    read_noise: float = 0.0,
    rng: np.random.Generator | None = None,
    hits: np.ndarray | None = None,
) -> np.ndarray:
    """Convert electrons to 16-bit ADU: ``round(bias + (e + read noise) / gain)``, clipped.

    Parameters
    ----------
    electrons : numpy.ndarray
        Electrons per pixel (already with shot noise, if any): float, or the integer
        counts of a Poisson draw (converted pixel by pixel, no float64 copy).
    bias : numpy.ndarray
        Bias frame, ADU.
    gain : float
        Electrons per ADU.
    read_noise : float
        Read noise in electrons RMS (needs *rng* when > 0).
    rng : numpy.random.Generator, optional
        Source of read noise.
    hits : numpy.ndarray, optional
        Cosmic-ray deposits ``[n, 3]`` (``x``, ``y``, electrons, see :func:`cosmic_rays`)
        added to the electrons first, in order, exactly as ``np.add.at`` would.

    Returns
    -------
    numpy.ndarray
        uint16 frame, saturated at 65535.
    """
    signal = np.asarray(electrons)
    if signal.dtype.kind not in "iu" or signal.ndim != 2:
        signal = np.asarray(electrons, dtype=np.float64)
    noise = None
    if read_noise > 0:
        if rng is None:
            msg = "digitise: read_noise > 0 needs an rng"
            raise ValueError(msg)
        noise = rng.normal(0.0, read_noise, signal.shape)
    shape = np.broadcast_shapes(signal.shape, np.shape(bias))
    sig = np.ascontiguousarray(np.broadcast_to(signal, shape)).reshape(-1)
    off = np.ascontiguousarray(np.broadcast_to(np.asarray(bias), shape)).reshape(-1)
    if noise is None:
        out = _digitise_kernel(sig, np.zeros(1), off, float(gain), False)
    else:
        nz = np.ascontiguousarray(np.broadcast_to(noise, shape)).reshape(-1)
        out = _digitise_kernel(sig, nz, off, float(gain), True)
    if hits is not None and len(hits):
        _redo_hit_pixels(out, sig, None if noise is None else nz, off, float(gain), hits, shape)
    return out.reshape(shape)


def _redo_hit_pixels(
    out: np.ndarray,
    signal: np.ndarray,
    noise: np.ndarray | None,
    bias: np.ndarray,
    gain: float,
    hits: np.ndarray,
    shape: tuple[int, ...],
) -> None:
    """Digitise again the (few) pixels hit by cosmic rays, their deposits added in order."""
    flat = hits[:, 1].astype(np.intp) * shape[1] + hits[:, 0].astype(np.intp)
    electrons: dict[int, float] = {}
    for p, e in zip(flat.tolist(), hits[:, 2].tolist(), strict=True):
        electrons[p] = electrons.get(p, float(signal[p])) + e  # np.add.at order
    for p, e in electrons.items():
        s = e + float(noise[p]) if noise is not None else e
        a = float(np.rint(float(bias[p]) + s / gain))
        out[p] = min(max(a, 0.0), float(ADU_MAX))


@njit(cache=True, parallel=True)
def _digitise_kernel(signal, noise, bias, gain, with_noise):  # pragma: no cover - compiled
    """``clip(rint(bias + (signal + noise) / gain), 0, ADU_MAX)`` as uint16, in one pass.

    The same float64 operations in the same order as the numpy expression it replaces.
    """
    out = np.empty(signal.size, dtype=np.uint16)
    for i in prange(signal.size):
        s = signal[i] + noise[i] if with_noise else signal[i]
        a = np.rint(np.float64(bias[i]) + s / gain)
        if a < 0.0:
            a = 0.0
        elif a > ADU_MAX:
            a = float(ADU_MAX)
        out[i] = np.uint16(a)
    return out
