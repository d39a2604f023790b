"""The true sky: stars, extended emission and background, rendered exactly per frame.

The sky is defined once, in the **reference** frame (pixel coordinates ``x`` =
column, ``y`` = row, pixel centres at integers), as continuous functions:

* stars: a catalogue of positions, fluxes (photo-electrons/s, summed over the
  PSF) and colours, drawn from a power law ``dN/dF ~ F**-a``;
* extended emission: an exponential-disk + Sersic-bulge galaxy (analytic) and a
  clumpy nebula (a cubic B-spline through smoothed log-normal noise, two tinted
  components);
* background: a sky level with a linear + quadratic gradient (analytic).

A frame is rendered by mapping each of its pixels through the frame's transform
(frame -> reference) and evaluating these functions there; stars are rendered
directly at their transformed positions with a Moffat PSF integrated over each
pixel by Gauss-Legendre quadrature, so the truth is exact (no resampling).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange
from scipy import ndimage

from .config import SessionConfig, cfa_channels, frame_rng

__all__ = [
    "Scene",
    "StarField",
    "make_scene",
    "make_star_field",
    "moffat_alpha",
    "render_sky",
    "render_stars",
]

logger = logging.getLogger(__name__)

# Colours (R, G, B), each with mean 1 so that a mono sensor sees the plain value.
_HA_COLOUR = np.array([1.9, 0.6, 0.5])
_OIII_COLOUR = np.array([0.3, 1.2, 1.5])
_BULGE_COLOUR = np.array([1.2, 1.0, 0.8])
_DISK_COLOUR = np.array([0.9, 1.0, 1.1])
_SKY_COLOUR = np.array([1.15, 1.0, 0.85])

_NEBULA_SPACING = 4.0  # reference pixels per nebula control point
_GL_CORE = np.polynomial.legendre.leggauss(8)  # within 1.5 px of a star centre
_GL_MID = np.polynomial.legendre.leggauss(3)  # within 2 FWHM


def moffat_alpha(fwhm: float, beta: float) -> float:
    """Moffat core width ``alpha`` for a given FWHM and ``beta``."""
    return float(fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0)))


@dataclass
class StarField:
    """Star catalogue in reference pixel coordinates.

    Attributes
    ----------
    x, y : numpy.ndarray
        Positions (float64), reference pixels.
    flux : numpy.ndarray
        Total flux for a QE=1 channel, photo-electrons/s (float64).
    colour : numpy.ndarray
        ``[n, 3]`` relative R, G, B flux factors with mean 1 per star.
    """

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    colour: np.ndarray

    def __len__(self) -> int:
        return int(self.x.size)

    def channel_flux(self, n_channels: int) -> np.ndarray:
        """``[n, n_channels]`` flux per channel (mono: the flux itself)."""
        if n_channels == 1:
            return self.flux[:, None].copy()
        return self.flux[:, None] * self.colour

    def inside(self, shape: tuple[int, int], margin: float = 0.0) -> np.ndarray:
        """Boolean mask of stars within the reference frame of *shape* (plus *margin*)."""
        h, w = shape
        return (
            (self.x >= -0.5 - margin)
            & (self.x <= w - 0.5 + margin)
            & (self.y >= -0.5 - margin)
            & (self.y <= h - 0.5 + margin)
        )


@dataclass
class Scene:
    """The static sky of a session (see module docstring).

    Build it with :func:`make_scene`; evaluate it with :meth:`extended` and
    :meth:`background`, or render frames with :func:`render_sky`.
    """

    shape: tuple[int, int]
    n_channels: int
    stars: StarField
    sky_level: float
    gradient_coeffs: np.ndarray  # (5,) relative: u, v, u^2, v^2, u*v
    gradient_offset: float = 0.0  # makes the gradient average to 0 over the reference frame
    galaxy: dict = field(default_factory=dict)
    nebula_coeffs: np.ndarray | None = None  # [nc, gh, gw] B-spline coefficients
    nebula_origin: tuple[float, float] = (0.0, 0.0)  # reference (x, y) of control point [0, 0]

    def _kernel_params(self) -> tuple:
        """Pack the scene for the compiled surface kernel."""
        h, w = self.shape
        nc = self.n_channels
        c = self.gradient_coeffs
        sky = np.array(
            [self.sky_level, c[0], c[1], c[2], c[3], c[4], (w - 1) / 2.0, (h - 1) / 2.0,
             w / 2.0, h / 2.0, self.gradient_offset]
        )  # fmt: skip
        g = self.galaxy
        if g:
            gal = np.array(
                [g["x"], g["y"], g["angle"], g["axis_ratio"], g["scale"], g["disk"], g["bulge"],
                 g["bulge_radius"]]
            )  # fmt: skip
        else:
            gal = np.zeros(8)
            gal[3] = gal[4] = gal[7] = 1.0
        if nc == 1:
            gal_col = np.ones((2, 1))
            sky_col = np.ones(1)
        else:
            gal_col = np.stack([_DISK_COLOUR, _BULGE_COLOUR])
            sky_col = _SKY_COLOUR.copy()
        neb = self.nebula_coeffs if self.nebula_coeffs is not None else np.zeros((nc, 1, 1))
        return gal, gal_col, sky, sky_col, np.ascontiguousarray(neb), np.asarray(self.nebula_origin)

    def _uv(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.shape
        return (x - (w - 1) / 2.0) / (w / 2.0), (y - (h - 1) / 2.0) / (h / 2.0)

    def background(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Sky background at reference points, e-/s/pixel, ``[nc, n]``."""
        u, v = self._uv(x, y)
        c = self.gradient_coeffs
        rel = 1.0 - self.gradient_offset + c[0] * u + c[1] * v + c[2] * u * u + c[3] * v * v
        rel += c[4] * u * v
        level = self.sky_level * np.maximum(rel, 0.05)
        return _tint(level, _SKY_COLOUR, self.n_channels)

    def extended(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Galaxy + nebula surface brightness at reference points, e-/s/pixel, ``[nc, n]``."""
        out = np.zeros((self.n_channels, x.size), dtype=np.float64)
        g = self.galaxy
        if g and g["disk"] > 0:
            dx = x - g["x"]
            dy = y - g["y"]
            ca, sa = np.cos(g["angle"]), np.sin(g["angle"])
            u = dx * ca + dy * sa
            v = (-dx * sa + dy * ca) / g["axis_ratio"]
            r = np.maximum(np.hypot(u, v), 0.3)
            disk = g["disk"] * np.exp(-r / g["scale"])
            bulge = g["bulge"] * np.exp(-3.67 * (np.sqrt(r / g["bulge_radius"]) - 1.0))
            out += _tint(disk, _DISK_COLOUR, self.n_channels)
            out += _tint(bulge, _BULGE_COLOUR, self.n_channels)
        if self.nebula_coeffs is not None:
            gx = (x - self.nebula_origin[0]) / _NEBULA_SPACING
            gy = (y - self.nebula_origin[1]) / _NEBULA_SPACING
            coords = np.stack([gy, gx])
            for c in range(self.n_channels):
                vals = ndimage.map_coordinates(
                    self.nebula_coeffs[c], coords, order=3, prefilter=False, mode="mirror"
                )
                out[c] += np.maximum(vals, 0.0)
        return out


def _tint(values: np.ndarray, colour: np.ndarray, n_channels: int) -> np.ndarray:
    if n_channels == 1:
        return values[None, :]
    return colour[:, None] * values[None, :]


def _star_region(config: SessionConfig) -> tuple[float, float, float, float]:
    """Reference-frame box (x0, x1, y0, y1) that covers every light's footprint."""
    h, w = config.shape
    half_diag = 0.5 * np.hypot(h, w) * max(config.scale_range) + config.shift_range + 40.0
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    return cx - half_diag, cx + half_diag, cy - half_diag, cy + half_diag


def make_star_field(config: SessionConfig, rng: np.random.Generator | None = None) -> StarField:
    """Draw the star catalogue of a session.

    Stars are uniform over a box that covers every dithered, rotated or flipped
    light; ``config.n_stars`` of them fall (on average) inside the reference frame.
    Fluxes follow ``dN/dF ~ F**-config.star_slope`` between ``config.star_flux``.

    Parameters
    ----------
    config : SessionConfig
        Session configuration.
    rng : numpy.random.Generator, optional
        Source of randomness (default: the session's ``'stars'`` stream).

    Returns
    -------
    StarField
    """
    rng = frame_rng(config.seed, "stars") if rng is None else rng
    x0, x1, y0, y1 = _star_region(config)
    h, w = config.shape
    n = round(config.n_stars * (x1 - x0) * (y1 - y0) / (h * w))
    x = rng.uniform(x0, x1, n)
    y = rng.uniform(y0, y1, n)
    fmin, fmax = config.star_flux
    a = config.star_slope
    u = rng.random(n)
    if abs(a - 1.0) < 1e-9:
        flux = fmin * (fmax / fmin) ** u
    else:
        e = 1.0 - a
        flux = (fmin**e + u * (fmax**e - fmin**e)) ** (1.0 / e)
    # Colour from a B-V-like index: red stars brighter in R, blue in B.
    index = np.clip(rng.normal(0.6, 0.35, n), -0.3, 1.8)
    red = 10.0 ** (0.25 * (index - 0.6))
    blue = 10.0 ** (-0.25 * (index - 0.6))
    colour = np.stack([red, np.ones(n), blue], axis=1)
    colour /= colour.mean(axis=1, keepdims=True)
    return StarField(x=x, y=y, flux=flux, colour=colour)


def _nebula_grid(config: SessionConfig, rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
    """Spline coefficients of the nebula, ``[nc, gh, gw]``, and the grid origin."""
    x0, x1, y0, y1 = _star_region(config)
    gw = int(np.ceil((x1 - x0) / _NEBULA_SPACING)) + 5
    gh = int(np.ceil((y1 - y0) / _NEBULA_SPACING)) + 5
    origin = (x0 - 2 * _NEBULA_SPACING, y0 - 2 * _NEBULA_SPACING)
    h, w = config.shape
    gx = origin[0] + _NEBULA_SPACING * np.arange(gw)
    gy = origin[1] + _NEBULA_SPACING * np.arange(gh)
    components = []
    for size, weight in ((0.35, 1.0), (0.2, 0.6)):
        noise = rng.standard_normal((gh, gw))
        z = ndimage.gaussian_filter(noise, 2.5, mode="wrap")
        z /= z.std()
        fine = ndimage.gaussian_filter(rng.standard_normal((gh, gw)), 1.0, mode="wrap")
        z += 0.4 * fine / fine.std()
        cx = (w - 1) / 2.0 + rng.uniform(-0.15, 0.15) * w
        cy = (h - 1) / 2.0 + rng.uniform(-0.15, 0.15) * h
        sigma = size * min(h, w)
        env = np.exp(-0.5 * (((gx[None, :] - cx) / sigma) ** 2 + ((gy[:, None] - cy) / sigma) ** 2))
        field_ = np.exp(1.1 * z) * env
        field_ *= weight * config.nebula / np.percentile(field_, 99.9)
        components.append(field_)
    n = config.n_channels
    if n == 1:
        grids = [components[0] + components[1]]
    else:
        grids = [components[0] * _HA_COLOUR[c] + components[1] * _OIII_COLOUR[c] for c in range(3)]
    coeffs = np.stack([ndimage.spline_filter(g, order=3, mode="mirror") for g in grids])
    return coeffs, origin


def make_scene(config: SessionConfig) -> Scene:
    """Build the session's sky from its seed (stars, galaxy, nebula, gradient).

    Parameters
    ----------
    config : SessionConfig
        Session configuration; ``seed`` fixes every draw.

    Returns
    -------
    Scene
    """
    stars = make_star_field(config)
    rng = frame_rng(config.seed, "nebula")
    h, w = config.shape
    # Gradient: random linear + quadratic terms scaled to a peak-to-peak of `gradient`.
    coeffs = rng.normal(0.0, 1.0, 5) * np.array([1.0, 1.0, 0.5, 0.5, 0.3])
    yy, xx = np.mgrid[0:h:8, 0:w:8]
    u = (xx - (w - 1) / 2.0) / (w / 2.0)
    v = (yy - (h - 1) / 2.0) / (h / 2.0)
    poly = coeffs[0] * u + coeffs[1] * v + coeffs[2] * u * u + coeffs[3] * v * v + coeffs[4] * u * v
    ptp = float(np.ptp(poly))
    coeffs = coeffs * (config.gradient / ptp) if ptp > 0 else coeffs * 0.0
    # Mean of u^2 (v^2) over the pixel centres is (w^2 - 1) / (3 w^2); u, v, u*v average to 0.
    offset = coeffs[2] * (w * w - 1) / (3.0 * w * w) + coeffs[3] * (h * h - 1) / (3.0 * h * h)
    galaxy = {}
    if config.galaxy > 0:
        scale = 0.04 * min(h, w)
        galaxy = {
            "x": (w - 1) / 2.0 + rng.uniform(-0.25, 0.25) * w,
            "y": (h - 1) / 2.0 + rng.uniform(-0.25, 0.25) * h,
            "angle": rng.uniform(0.0, np.pi),
            "axis_ratio": rng.uniform(0.35, 0.7),
            "scale": scale,
            "disk": config.galaxy,
            "bulge": 0.5 * config.galaxy,
            "bulge_radius": 0.3 * scale,
        }
    nebula_coeffs, origin = (None, (0.0, 0.0))
    if config.nebula > 0:
        nebula_coeffs, origin = _nebula_grid(config, rng)
    return Scene(
        shape=config.shape,
        n_channels=config.n_channels,
        stars=stars,
        sky_level=config.sky_level,
        gradient_coeffs=coeffs,
        gradient_offset=float(offset),
        galaxy=galaxy,
        nebula_coeffs=nebula_coeffs,
        nebula_origin=origin,
    )


@njit(cache=True, parallel=True, fastmath=True)
def _surface_kernel(
    out, m, tile, mosaic, ext_w, bg_w, gal, gal_col, sky, sky_col, neb, neb_org, neb_step,
):  # fmt: skip
    """Extended emission + background at every pixel of a frame (see Scene methods)."""
    n_planes, h, w = out.shape
    nc = sky_col.shape[0]
    has_gal = gal[5] > 0.0
    has_neb = neb.shape[1] > 3
    gh = neb.shape[1]
    gw = neb.shape[2]
    ca = np.cos(gal[2])
    sa = np.sin(gal[2])
    for py in prange(h):
        for px in range(w):
            xr = m[0, 0] * px + m[0, 1] * py + m[0, 2]
            yr = m[1, 0] * px + m[1, 1] * py + m[1, 2]
            # background: level * max(1 + poly(u, v), 0.05)
            u = (xr - sky[6]) / sky[8]
            v = (yr - sky[7]) / sky[9]
            rel = 1.0 - sky[10] + sky[1] * u + sky[2] * v + sky[3] * u * u + sky[4] * v * v
            rel += sky[5] * u * v
            bg = sky[0] * max(rel, 0.05)
            disk = 0.0
            bulge = 0.0
            if has_gal:
                dx = xr - gal[0]
                dy = yr - gal[1]
                gu = dx * ca + dy * sa
                gv = (-dx * sa + dy * ca) / gal[3]
                r = max(np.sqrt(gu * gu + gv * gv), 0.3)
                disk = gal[5] * np.exp(-r / gal[4])
                bulge = gal[6] * np.exp(-3.67 * (np.sqrt(r / gal[7]) - 1.0))
            i0 = 0
            j0 = 0
            wx0 = wx1 = wx2 = wx3 = 0.0
            wy0 = wy1 = wy2 = wy3 = 0.0
            if has_neb:
                gx = (xr - neb_org[0]) / neb_step
                gy = (yr - neb_org[1]) / neb_step
                i0 = min(max(int(np.floor(gx)), 1), gw - 3)
                j0 = min(max(int(np.floor(gy)), 1), gh - 3)
                t = gx - i0
                wx0 = (1.0 - t) ** 3 / 6.0
                wx1 = (3.0 * t**3 - 6.0 * t * t + 4.0) / 6.0
                wx2 = (-3.0 * t**3 + 3.0 * t * t + 3.0 * t + 1.0) / 6.0
                wx3 = t**3 / 6.0
                t = gy - j0
                wy0 = (1.0 - t) ** 3 / 6.0
                wy1 = (3.0 * t**3 - 6.0 * t * t + 4.0) / 6.0
                wy2 = (-3.0 * t**3 + 3.0 * t * t + 3.0 * t + 1.0) / 6.0
                wy3 = t**3 / 6.0
            for plane in range(n_planes):
                c = tile[py & 1, px & 1] if mosaic else plane
                if nc == 1:
                    c = 0
                value = bg_w * bg * sky_col[c]
                ext = disk * gal_col[0, c] + bulge * gal_col[1, c]
                if has_neb:
                    acc = 0.0
                    for jj in range(4):
                        wy = wy0 if jj == 0 else (wy1 if jj == 1 else (wy2 if jj == 2 else wy3))
                        row = j0 - 1 + jj
                        acc += wy * (
                            wx0 * neb[c, row, i0 - 1]
                            + wx1 * neb[c, row, i0]
                            + wx2 * neb[c, row, i0 + 1]
                            + wx3 * neb[c, row, i0 + 2]
                        )
                    ext += max(acc, 0.0)
                out[plane, py, px] = value + ext_w * ext


@njit(cache=True, inline="always")
def _moffat_profile(q, beta):
    if beta == 3.0:
        b = 1.0 / (1.0 + q)
        return b * b * b
    return (1.0 + q) ** (-beta)


@njit(cache=True, fastmath=True)
def _render_moffat(
    out, xs, ys, flux, tile, fwhm, elongation, angle, beta, min_level, max_radius,
    n_core, w_core, n_mid, w_mid,
):  # fmt: skip
    h, w = out.shape
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    a_major = alpha * elongation
    a_minor = alpha
    ct = np.cos(angle)
    st = np.sin(angle)
    ia = 1.0 / (a_major * a_major)
    ib = 1.0 / (a_minor * a_minor)
    qa = ct * ct * ia + st * st * ib
    qb = 2.0 * ct * st * (ia - ib)
    qc = st * st * ia + ct * ct * ib
    norm = (beta - 1.0) / (np.pi * a_major * a_minor)
    core2 = 1.5 * 1.5
    mid = 2.0 * fwhm * elongation
    mid2 = mid * mid
    nc = flux.shape[1]
    for i in range(xs.size):
        fmax = 0.0
        for c in range(nc):
            fmax = max(fmax, flux[i, c])
        if fmax <= 0.0:
            continue
        peak = fmax * norm
        r = 0.0
        if peak > min_level:
            r = a_major * np.sqrt((peak / min_level) ** (1.0 / beta) - 1.0)
        r = min(max(r, 1.5 * fwhm * elongation), max_radius)
        x = xs[i]
        y = ys[i]
        x0 = max(int(np.floor(x - r)), 0)
        x1 = min(int(np.ceil(x + r)), w - 1)
        y0 = max(int(np.floor(y - r)), 0)
        y1 = min(int(np.ceil(y + r)), h - 1)
        r2 = r * r
        for py in range(y0, y1 + 1):
            dy = py - y
            for px in range(x0, x1 + 1):
                dx = px - x
                d2 = dx * dx + dy * dy
                if d2 > r2:
                    continue
                f = flux[i, tile[py & 1, px & 1]]
                if f == 0.0:
                    continue
                if d2 < core2 or d2 < mid2:
                    nodes = n_core if d2 < core2 else n_mid
                    wts = w_core if d2 < core2 else w_mid
                    val = 0.0
                    for j in range(nodes.size):
                        ey = dy + nodes[j]
                        for k in range(nodes.size):
                            ex = dx + nodes[k]
                            q = qa * ex * ex + qb * ex * ey + qc * ey * ey
                            val += wts[j] * wts[k] * _moffat_profile(q, beta)
                else:
                    q = qa * dx * dx + qb * dx * dy + qc * dy * dy
                    val = _moffat_profile(q, beta)
                out[py, px] += f * norm * val


def render_stars(
    out: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    fwhm: float,
    *,
    beta: float = 3.0,
    elongation: float = 1.0,
    angle: float = 0.0,
    tile: np.ndarray | None = None,
    min_level: float = 1e-3,
    max_radius: float = 64.0,
) -> np.ndarray:
    """Add Moffat stars, integrated over each pixel, to *out* in place.

    Parameters
    ----------
    out : numpy.ndarray
        ``float64 [y, x]`` image to add to.
    x, y : numpy.ndarray
        Star centres in *out*'s pixel coordinates.
    flux : numpy.ndarray
        ``[n]`` or ``[n, nc]`` total flux per star (and channel).
    fwhm : float
        FWHM of the PSF along its minor axis, pixels.
    beta : float
        Moffat beta.
    elongation : float
        Major/minor axis ratio (trailing).
    angle : float
        Position angle of the major axis, radians from +x towards +y.
    tile : numpy.ndarray, optional
        ``[2, 2]`` channel index of each CFA cell (default: channel 0 everywhere).
    min_level : float
        Wings fainter than this (same unit as flux per pixel) are not rendered.
    max_radius : float
        Largest rendering radius, pixels.

    Returns
    -------
    numpy.ndarray
        *out*, for chaining.
    """
    flux2 = np.ascontiguousarray(flux, dtype=np.float64)
    if flux2.ndim == 1:
        flux2 = flux2[:, None]
    tile = np.zeros((2, 2), dtype=np.int64) if tile is None else np.asarray(tile, dtype=np.int64)
    if tile.max() >= flux2.shape[1]:
        msg = f"render_stars: CFA tile uses channel {tile.max()} but flux has {flux2.shape[1]}"
        raise ValueError(msg)
    _render_moffat(
        out,
        np.ascontiguousarray(x, dtype=np.float64),
        np.ascontiguousarray(y, dtype=np.float64),
        flux2,
        tile,
        float(fwhm),
        float(elongation),
        float(angle),
        float(beta),
        float(min_level),
        float(max_radius),
        0.5 * _GL_CORE[0],
        0.5 * _GL_CORE[1],
        0.5 * _GL_MID[0],
        0.5 * _GL_MID[1],
    )
    return out


def render_sky(
    config: SessionConfig,
    transform: np.ndarray | None = None,
    fwhm: float | None = None,
    *,
    scene: Scene | None = None,
    exposure: float | None = None,
    transparency: float = 1.0,
    sky_factor: float = 1.0,
    elongation: float = 1.0,
    psf_angle: float = 0.0,
    mosaic: bool = True,
    stars: bool = True,
    extended: bool = True,
    background: bool = True,
) -> np.ndarray:
    """Expected photo-electrons of the sky in one frame (no flat, QE = 1, no noise).

    Every pixel ``p`` of the frame sees the reference sky at ``transform @ p``.
    Surface brightness (extended emission and background) is multiplied by the
    pixel's area in reference pixels, ``|det(transform)|``; stars keep their flux
    and get the frame's PSF (``fwhm`` in frame pixels).

    Parameters
    ----------
    config : SessionConfig
        Session configuration (shape, Bayer pattern, PSF beta, seed).
    transform : numpy.ndarray, optional
        ``3x3`` matrix mapping frame ``(x, y, 1)`` to reference coordinates
        (default identity: the reference frame itself).
    fwhm : float, optional
        Seeing FWHM in frame pixels (default ``config.truth_fwhm``).
    scene : Scene, optional
        The sky (default ``make_scene(config)``; pass it to avoid rebuilding).
    exposure : float, optional
        Seconds (default ``config.exposure``; use 1.0 for rates in e-/s).
    transparency : float
        Atmospheric transmission applied to stars and extended emission.
    sky_factor : float
        Multiplier of the sky background (brighter sky in clouds or moonlight).
    elongation, psf_angle : float
        PSF major/minor axis ratio and angle (radians), for trailing.
    mosaic : bool
        Colour sensors only: return the CFA mosaic ``[y, x]`` (each pixel its own
        channel) when True, all channels ``[3, y, x]`` when False.
    stars, extended, background : bool
        Which components to include.

    Returns
    -------
    numpy.ndarray
        float32 ``[y, x]`` (mono or mosaic) or ``[3, y, x]``, photo-electrons.
    """
    scene = make_scene(config) if scene is None else scene
    matrix = np.eye(3) if transform is None else np.asarray(transform, dtype=np.float64)
    if matrix.shape != (3, 3) or abs(np.linalg.det(matrix[:2, :2])) < 1e-9:
        msg = f"render_sky: transform must be an invertible 3x3 matrix, got {matrix!r}"
        raise ValueError(msg)
    fwhm = config.truth_fwhm if fwhm is None else float(fwhm)
    t = config.exposure if exposure is None else float(exposure)
    h, w = config.shape
    nc = scene.n_channels
    tile = cfa_channels(config.bayer)
    planes = [None] if (nc == 1 or mosaic) else list(range(nc))
    area = abs(float(np.linalg.det(matrix[:2, :2])))

    surface = None
    if extended or background:
        gal, gal_col, sky, sky_col, neb, origin = scene._kernel_params()
        surface = np.empty((len(planes), h, w), dtype=np.float64)
        _surface_kernel(
            surface,
            matrix,
            tile,
            planes[0] is None,
            transparency * area * t if extended else 0.0,
            sky_factor * area * t if background else 0.0,
            gal,
            gal_col,
            sky,
            sky_col,
            neb,
            origin,
            _NEBULA_SPACING,
        )

    star_frame = None
    if stars and len(scene.stars):
        inv = np.linalg.inv(matrix)
        sx = inv[0, 0] * scene.stars.x + inv[0, 1] * scene.stars.y + inv[0, 2]
        sy = inv[1, 0] * scene.stars.x + inv[1, 1] * scene.stars.y + inv[1, 2]
        margin = 64.0
        keep = (sx > -margin) & (sx < w + margin) & (sy > -margin) & (sy < h + margin)
        flux = scene.stars.channel_flux(nc)[keep] * (transparency * t)
        star_frame = (sx[keep], sy[keep], flux)

    outputs = []
    for k, plane in enumerate(planes):
        ptile = tile if plane is None else np.full((2, 2), plane, dtype=np.int64)
        img = surface[k] if surface is not None else np.zeros((h, w), dtype=np.float64)
        if star_frame is not None:
            render_stars(
                img,
                star_frame[0],
                star_frame[1],
                star_frame[2],
                fwhm,
                beta=config.moffat_beta,
                elongation=elongation,
                angle=psf_angle,
                tile=ptile,
                min_level=config.min_level * t * transparency,
            )
        outputs.append(img.astype(np.float32))
    return outputs[0] if len(outputs) == 1 else np.stack(outputs)
