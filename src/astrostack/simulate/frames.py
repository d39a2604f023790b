"""In-memory raw frames: lights, bias, darks, flats (uint16 ADU) with their truth.

These functions are what unit tests use to get realistic frames without disk:

>>> cfg = SessionConfig.small()
>>> data, truth = simulate_light(cfg, 1)          # uint16 [y, x], LightTruth
>>> bias, _ = simulate_bias(cfg)

Each frame draws from its own seeded stream, so frame ``i`` is identical whatever
else is simulated.  Pass a prebuilt ``scene`` / ``sensor`` / ``plan`` to avoid
rebuilding them for every frame.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import numpy as np
from astropy.io import fits

from ..io.frame import Frame, FrameMeta
from .config import SessionConfig, frame_rng
from .scene import Scene, make_scene, render_sky
from .sensor import Sensor, cosmic_rays, digitise, make_sensor, render_trail
from .truth import FrameTruth, LightTruth

__all__ = [
    "flat_level",
    "frame_date",
    "frame_header",
    "light_signal",
    "plan_lights",
    "simulate_bias",
    "simulate_dark",
    "simulate_flat",
    "simulate_light",
    "to_frame",
]

logger = logging.getLogger(__name__)

_IMAGETYP = {
    "bias": "Bias Frame",
    "dark": "Dark Frame",
    "darkflat": "Dark Flat",
    "flat": "Flat Field",
    "light": "Light Frame",
}

# Flat panel colour (R, G, B) as seen through the channel QE.
_PANEL_COLOUR = np.array([0.75, 1.0, 0.85])


def _rotation(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def _matrix(
    shape: tuple[int, int], shift, rotation: float, scale: float, flipped: bool, mirrored: bool
) -> np.ndarray:
    """Frame -> reference: ``c + shift + scale * R(rotation [+180]) * F * (p - c)``."""
    h, w = shape
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    lin = scale * _rotation(rotation + (180.0 if flipped else 0.0))
    if mirrored:
        lin = lin @ np.diag([-1.0, 1.0])
    m = np.eye(3)
    m[:2, :2] = lin
    m[:2, 2] = c + np.asarray(shift, dtype=np.float64) - lin @ c
    return m


def _frame_edges(shape, point, angle):
    """Endpoints where a line through *point* at *angle* leaves the frame rectangle."""
    h, w = shape
    ux, uy = np.cos(angle), np.sin(angle)
    ts = []
    for lo, hi, p, u in ((-0.5, w - 0.5, point[0], ux), (-0.5, h - 0.5, point[1], uy)):
        if abs(u) > 1e-12:
            ts.append(sorted(((lo - p) / u, (hi - p) / u)))
    t0 = max(t[0] for t in ts)
    t1 = min(t[1] for t in ts)
    return (point[0] + t0 * ux, point[1] + t0 * uy), (point[0] + t1 * ux, point[1] + t1 * uy)


def frame_date(config: SessionConfig, kind: str, index: int) -> str:
    """``DATE-OBS`` of a frame: lights from ``config.start``, then darks, dark-flats, flats, bias.

    Parameters
    ----------
    config : SessionConfig
        Session configuration.
    kind : str
        ``'light'``, ``'dark'``, ``'darkflat'``, ``'flat'`` or ``'bias'``.
    index : int
        Frame number within its kind.

    Returns
    -------
    str
        ISO 8601 UTC with milliseconds; strictly increasing through the session.
    """
    t0 = datetime.fromisoformat(config.start)
    gap = 5.0
    blocks = [
        ("light", config.n_lights, config.exposure),
        ("dark", config.n_darks, config.dark_exposure_s),
        ("darkflat", config.n_darkflats, config.flat_exposure),
        ("flat", config.n_flats, config.flat_exposure),
        ("bias", config.n_bias, 0.001),
    ]
    offset = 0.0
    for name, count, exposure in blocks:
        step = exposure + gap
        if name == kind:
            when = t0 + timedelta(seconds=offset + index * step)
            return when.isoformat(timespec="milliseconds")
        offset += count * step + 600.0
    msg = f"frame_date: unknown frame kind {kind!r}"
    raise ValueError(msg)


def frame_header(
    config: SessionConfig, kind: str, exposure: float, temperature: float, date_obs: str
) -> fits.Header:
    """FITS header of a raw frame, as capture software writes it.

    Parameters
    ----------
    config : SessionConfig
        Session configuration (camera, optics, target).
    kind : str
        ``'bias'``, ``'dark'``, ``'darkflat'``, ``'flat'`` or ``'light'``.
    exposure : float
        Seconds.
    temperature : float
        Sensor temperature, deg C.
    date_obs : str
        Start of exposure (ISO 8601 UTC).

    Returns
    -------
    astropy.io.fits.Header
    """
    hdr = fits.Header()
    hdr["IMAGETYP"] = (_IMAGETYP[kind], "type of frame")
    hdr["EXPTIME"] = (float(exposure), "exposure time, s")
    hdr["EXPOSURE"] = (float(exposure), "exposure time, s")
    hdr["DATE-OBS"] = (date_obs, "start of exposure, UTC")
    hdr["GAIN"] = (int(config.gain_setting), "camera gain setting")
    hdr["EGAIN"] = (float(config.gain), "electrons per ADU")
    hdr["OFFSET"] = (round(config.bias_level), "camera offset setting")
    hdr["CCD-TEMP"] = (float(temperature), "sensor temperature, C")
    hdr["SET-TEMP"] = (float(temperature), "cooler set point, C")
    hdr["XBINNING"] = 1
    hdr["YBINNING"] = 1
    hdr["XPIXSZ"] = (float(config.pixel_size), "pixel size, um")
    hdr["YPIXSZ"] = (float(config.pixel_size), "pixel size, um")
    hdr["FOCALLEN"] = (float(config.focal_length), "focal length, mm")
    hdr["INSTRUME"] = config.instrument
    hdr["TELESCOP"] = config.telescope
    hdr["FILTER"] = config.filter_name
    hdr["OBJECT"] = config.target if kind == "light" else _IMAGETYP[kind]
    hdr["ROWORDER"] = ("TOP-DOWN", "first row is the top of the image")
    if config.bayer is not None:
        hdr["BAYERPAT"] = (config.bayer, "CFA pattern")
        hdr["XBAYROFF"] = 0
        hdr["YBAYROFF"] = 0
    hdr["SWCREATE"] = "astrostack.simulate"
    return hdr


def plan_lights(config: SessionConfig) -> list[LightTruth]:
    """Draw every light's transform, seeing, transparency, spoilers and satellites.

    Light 0 is the clean reference (identity transform).  Spoiled and mirrored
    lights are drawn among the others; with ``meridian_flip`` the second half of the
    lights is rotated by 180 degrees.  Cosmic rays are drawn by :func:`simulate_light`.

    Parameters
    ----------
    config : SessionConfig
        Session configuration.

    Returns
    -------
    list of LightTruth
    """
    rng = frame_rng(config.seed, "plan")
    n = config.n_lights
    h, w = config.shape
    order = list(rng.permutation(np.arange(1, n))) if n > 1 else []
    bad: dict[int, str] = {}
    for reason in sorted(config.bad_frames):
        for _ in range(config.bad_frames[reason]):
            bad[int(order.pop())] = reason
    mirrored = {int(order.pop()) for _ in range(config.mirrored)}
    # Satellites spare the reference light 0 unless every light must get one.
    first = 1 if config.satellites < n else 0
    candidates = np.arange(first, n)
    with_satellite = set(rng.choice(candidates, config.satellites, replace=False).tolist())
    mean_bg = config.sky_level
    plans = []
    for i in range(n):
        fwhm = float(rng.uniform(*config.seeing))
        transparency = float(rng.uniform(0.85, 1.0))
        sky_factor = float(1.0 + 0.15 * i / max(n - 1, 1) + rng.normal(0.0, 0.02))
        shift = rng.uniform(-config.shift_range, config.shift_range, 2)
        rotation = float(rng.uniform(-config.rotation_range, config.rotation_range))
        scale = float(rng.uniform(*config.scale_range))
        flip_angle = float(rng.uniform(0.0, np.pi))
        sat_point = (rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h)
        sat_brightness = float(rng.uniform(3000.0, 30000.0))
        glow_draw = rng.uniform(0.0, 1.0, 4)
        spoiler = rng.uniform(0.0, 1.0, 2)
        if i == 0:
            shift, rotation, scale = np.zeros(2), 0.0, 1.0
        flipped = bool(config.meridian_flip and i >= n // 2 and i > 0)
        plan = LightTruth(
            index=i,
            matrix=_matrix(config.shape, shift, rotation, scale, flipped, i in mirrored),
            fwhm=fwhm,
            transparency=transparency,
            sky_factor=sky_factor,
            shift=(float(shift[0]), float(shift[1])),
            rotation=rotation,
            scale=scale,
            flipped=flipped,
            mirrored=i in mirrored,
            exposure=float(config.exposure),
            temperature=float(config.temperature),
            date_obs=frame_date(config, "light", i),
        )
        reason = bad.get(i)
        plan.bad = reason
        if reason == "clouds":
            plan.transparency *= 0.25 + 0.15 * spoiler[0]
            plan.sky_factor *= 2.0
            plan.glow = {
                "x": float(glow_draw[0] * w),
                "y": float(glow_draw[1] * h),
                "sigma": float((0.25 + 0.15 * glow_draw[2]) * min(h, w)),
                "level": float((0.8 + 0.8 * glow_draw[3]) * mean_bg),
            }
        elif reason == "trailing":
            plan.elongation = 2.5 + 1.5 * float(spoiler[0])
            plan.psf_angle = float(spoiler[1] * np.pi)
        elif reason == "defocus":
            plan.fwhm *= 2.5 + 0.5 * float(spoiler[0])
        if i in with_satellite:
            (x0, y0), (x1, y1) = _frame_edges(config.shape, sat_point, flip_angle)
            plan.satellites = [
                {
                    "x0": float(x0),
                    "y0": float(y0),
                    "x1": float(x1),
                    "y1": float(y1),
                    "electrons_per_pixel": sat_brightness,
                    "fwhm": plan.fwhm,
                }
            ]
        plan.sky_level = float(plan.sky_factor * mean_bg * abs(np.linalg.det(plan.matrix[:2, :2])))
        plans.append(plan)
    return plans


def _glow(shape, glow: dict) -> np.ndarray:
    h, w = shape
    yy = np.arange(h, dtype=np.float64)[:, None]
    xx = np.arange(w, dtype=np.float64)[None, :]
    d2 = (xx - glow["x"]) ** 2 + (yy - glow["y"]) ** 2
    return glow["level"] * np.exp(-0.5 * d2 / glow["sigma"] ** 2)


def light_signal(
    config: SessionConfig, plan: LightTruth, scene: Scene, sensor: Sensor
) -> np.ndarray:
    """Expected photo-electrons of a light (sky, glow, satellites through flat and QE).

    Parameters
    ----------
    config : SessionConfig
        Session configuration.
    plan : LightTruth
        The light (transform, seeing, transparency, spoilers, satellites).
    scene : Scene
        The sky, from :func:`make_scene`.
    sensor : Sensor
        The camera, from :func:`make_sensor` (flat field and channel QE are applied).

    Returns
    -------
    numpy.ndarray
        float64 ``[y, x]`` electrons over the exposure, without dark current or noise.
    """
    t = plan.exposure
    sky = render_sky(
        config,
        plan.matrix,
        plan.fwhm,
        scene=scene,
        exposure=t,
        transparency=plan.transparency,
        sky_factor=plan.sky_factor,
        elongation=plan.elongation,
        psf_angle=plan.psf_angle,
        mosaic=True,
    ).astype(np.float64)
    if plan.glow:
        sky += _glow(config.shape, plan.glow) * t
    for sat in plan.satellites:
        render_trail(
            sky, (sat["x0"], sat["y0"]), (sat["x1"], sat["y1"]),
            sat["electrons_per_pixel"], sat["fwhm"],
        )  # fmt: skip
    return sky * sensor.flat * sensor.qe


def simulate_light(
    config: SessionConfig,
    index: int = 0,
    *,
    noise: bool = True,
    scene: Scene | None = None,
    sensor: Sensor | None = None,
    plan: LightTruth | None = None,
) -> tuple[np.ndarray, LightTruth]:
    """Simulate one raw light frame.

    ``ADU = round(bias + (Poisson(flat * qe * sky * t + dark * t) + cosmic rays
    + read noise) / gain)``, clipped to 65535.  With ``noise=False`` the frame is
    the rounded expectation (no shot noise, read noise or cosmic rays).

    Parameters
    ----------
    config : SessionConfig
        Session configuration.
    index : int
        Light number (selects its plan and random stream).
    noise : bool
        Add shot noise, read noise and cosmic rays.
    scene, sensor : optional
        Prebuilt :func:`make_scene` / :func:`make_sensor` results.
    plan : LightTruth, optional
        The light's plan (default ``plan_lights(config)[index]``).

    Returns
    -------
    data : numpy.ndarray
        uint16 ``[y, x]`` (CFA mosaic for colour).
    truth : LightTruth
        The plan, with the cosmic rays that were added.
    """
    if plan is None:
        if not 0 <= index < config.n_lights:
            msg = f"simulate_light: index {index} outside 0..{config.n_lights - 1}"
            raise ValueError(msg)
        plan = plan_lights(config)[index]
    scene = make_scene(config) if scene is None else scene
    sensor = make_sensor(config) if sensor is None else sensor
    t = plan.exposure
    expected = light_signal(config, plan, scene, sensor)
    expected += sensor.dark_rate(config, plan.temperature) * t
    rng = frame_rng(config.seed, "light", plan.index)
    if noise:
        counts = rng.poisson(expected)
        hits = cosmic_rays(rng, config.shape, config.cosmic_rays_per_frame)
        data = digitise(counts, sensor.bias, config.gain, config.read_noise, rng, hits=hits)
    else:
        hits = np.zeros((0, 3))
        data = digitise(expected, sensor.bias, config.gain)
    plan.cosmic_rays = hits
    return data, plan


def simulate_bias(
    config: SessionConfig, index: int = 0, *, noise: bool = True, sensor: Sensor | None = None
) -> tuple[np.ndarray, FrameTruth]:
    """Simulate one bias (offset) frame: bias pattern + read noise.

    Parameters
    ----------
    config : SessionConfig
        Session configuration.
    index : int
        Frame number (selects its random stream).
    noise : bool
        Add read noise.
    sensor : Sensor, optional
        Prebuilt :func:`make_sensor` result.

    Returns
    -------
    data : numpy.ndarray
        uint16 ``[y, x]``.
    truth : FrameTruth
    """
    sensor = make_sensor(config) if sensor is None else sensor
    rng = frame_rng(config.seed, "bias", index)
    zeros = np.zeros(config.shape)
    rn = config.read_noise if noise else 0.0
    data = digitise(zeros, sensor.bias, config.gain, rn, rng)
    truth = FrameTruth(
        kind="bias",
        index=index,
        exposure=0.0,
        temperature=config.dark_temperature_c,
        date_obs=frame_date(config, "bias", index),
    )
    return data, truth


def simulate_dark(
    config: SessionConfig,
    index: int = 0,
    *,
    exposure: float | None = None,
    temperature: float | None = None,
    kind: str = "dark",
    noise: bool = True,
    sensor: Sensor | None = None,
) -> tuple[np.ndarray, FrameTruth]:
    """Simulate one dark (or dark-flat) frame: bias + Poisson(dark current * t) + cosmic rays.

    Parameters
    ----------
    config : SessionConfig
        Session configuration.
    index : int
        Frame number (selects its random stream).
    exposure : float, optional
        Seconds (default ``dark_exposure``, or ``flat_exposure`` for dark-flats).
    temperature : float, optional
        Deg C (default ``dark_temperature``).
    kind : str
        ``'dark'`` or ``'darkflat'``.
    noise : bool
        Add shot noise, read noise and cosmic rays.
    sensor : Sensor, optional
        Prebuilt :func:`make_sensor` result.

    Returns
    -------
    data : numpy.ndarray
        uint16 ``[y, x]``.
    truth : FrameTruth
    """
    if kind not in ("dark", "darkflat"):
        msg = f"simulate_dark: kind must be 'dark' or 'darkflat', got {kind!r}"
        raise ValueError(msg)
    sensor = make_sensor(config) if sensor is None else sensor
    if exposure is None:
        exposure = config.dark_exposure_s if kind == "dark" else config.flat_exposure
    temperature = config.dark_temperature_c if temperature is None else float(temperature)
    expected = sensor.dark_rate(config, temperature) * exposure
    rng = frame_rng(config.seed, kind, index)
    if noise:
        counts = rng.poisson(expected)
        hits = cosmic_rays(rng, config.shape, config.cosmic_rays_per_frame if kind == "dark" else 0)
        data = digitise(counts, sensor.bias, config.gain, config.read_noise, rng, hits=hits)
    else:
        hits = np.zeros((0, 3))
        data = digitise(expected, sensor.bias, config.gain)
    truth = FrameTruth(
        kind=kind,
        index=index,
        exposure=float(exposure),
        temperature=temperature,
        date_obs=frame_date(config, kind, index),
        cosmic_rays=hits,
    )
    return data, truth


def flat_level(config: SessionConfig) -> float:
    """Mean illumination of the flats, electrons per pixel before flat and QE.

    Chosen so that the brightest channel averages ``config.flat_level * 65535`` ADU.
    """
    peak = 1.0
    if config.bayer is not None:
        peak = float(np.max(np.asarray(config.qe) * _PANEL_COLOUR))
    target_adu = config.flat_level * 65535.0 - config.bias_level
    return float(target_adu * config.gain / peak)


def simulate_flat(
    config: SessionConfig, index: int = 0, *, noise: bool = True, sensor: Sensor | None = None
) -> tuple[np.ndarray, FrameTruth]:
    """Simulate one flat frame: a uniform panel seen through the flat field and QE.

    Parameters
    ----------
    config : SessionConfig
        Session configuration.
    index : int
        Frame number (selects its random stream).
    noise : bool
        Add shot noise and read noise.
    sensor : Sensor, optional
        Prebuilt :func:`make_sensor` result.

    Returns
    -------
    data : numpy.ndarray
        uint16 ``[y, x]``.
    truth : FrameTruth
        ``level`` is the panel illumination in electrons (before flat and QE).
    """
    sensor = make_sensor(config) if sensor is None else sensor
    level = flat_level(config)
    colour = np.ones((2, 2)) if config.bayer is None else _PANEL_COLOUR[sensor.tile]
    h, w = config.shape
    panel = np.tile(colour, (h // 2 + 1, w // 2 + 1))[:h, :w]
    t = config.flat_exposure
    expected = level * sensor.flat * sensor.qe * panel
    expected += sensor.dark_rate(config, config.temperature) * t
    rng = frame_rng(config.seed, "flat_frame", index)
    if noise:
        data = digitise(rng.poisson(expected), sensor.bias, config.gain, config.read_noise, rng)
    else:
        data = digitise(expected, sensor.bias, config.gain)
    truth = FrameTruth(
        kind="flat",
        index=index,
        exposure=float(t),
        temperature=float(config.temperature),
        date_obs=frame_date(config, "flat", index),
        level=level,
    )
    return data, truth


def to_frame(config: SessionConfig, data: np.ndarray, record: LightTruth | FrameTruth) -> Frame:
    """Wrap a simulated raw frame as an :class:`astrostack.io.Frame` (float32 ADU + metadata).

    Parameters
    ----------
    config : SessionConfig
        Session configuration (camera, optics, Bayer pattern).
    data : numpy.ndarray
        uint16 frame from one of the ``simulate_*`` functions.
    record : LightTruth or FrameTruth
        Its truth record (kind, exposure, temperature, date).

    Returns
    -------
    Frame
        What ``astrostack.io.read_frame`` gives for the same frame written to disk.
    """
    kind = "light" if isinstance(record, LightTruth) else record.kind
    header = frame_header(config, kind, record.exposure, record.temperature, record.date_obs)
    meta = FrameMeta(
        path=None,
        kind=kind,
        exposure=float(record.exposure),
        gain=float(config.gain_setting),
        egain=float(config.gain),
        temperature=float(record.temperature),
        binning=(1, 1),
        filter=config.filter_name,
        bayer=config.bayer,
        date=datetime.fromisoformat(record.date_obs).replace(tzinfo=UTC),
        camera=config.instrument,
        target=config.target if kind == "light" else None,
        pixel_size_um=float(config.pixel_size),
        focal_length_mm=float(config.focal_length),
        header=dict(header),
    )
    if hasattr(meta, "row_order"):
        meta.row_order = "TOP-DOWN"
    return Frame(data=data.astype(np.float32), meta=meta)
