"""Write a whole simulated night to disk: raw frames plus ``truth/``.

Layout under ``OUTDIR``::

    bias/bias_0001.fits ...        darks/dark_0001.fits ...
    flats/flat_0001.fits ...       darkflats/darkflat_0001.fits ... (if any)
    lights/light_0001.fits ...     truth/ (see astrostack.simulate.truth)

Raw frames are uint16 FITS (stored by astropy as int16 with ``BZERO = 32768``),
each written atomically.  The same configuration always writes bit-identical files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..io.atomic import atomic_path
from .config import SessionConfig
from .frames import (
    frame_header,
    plan_lights,
    simulate_bias,
    simulate_dark,
    simulate_flat,
    simulate_light,
)
from .scene import make_scene, render_sky
from .sensor import make_sensor
from .truth import Truth, save_truth

__all__ = ["session_steps", "simulate_session", "write_raw_fits"]

logger = logging.getLogger(__name__)

_FOLDERS = {
    "bias": "bias",
    "dark": "darks",
    "darkflat": "darkflats",
    "flat": "flats",
    "light": "lights",
}


def write_raw_fits(path: str | Path, data: np.ndarray, header: fits.Header) -> None:
    """Write a uint16 frame as FITS (BZERO = 32768 convention), atomically.

    Parameters
    ----------
    path : str or Path
        Destination file.
    data : numpy.ndarray
        uint16 ``[y, x]``.
    header : astropy.io.fits.Header
        Keywords to write.
    """
    if data.dtype != np.uint16:
        msg = f"{path}: raw frames must be uint16, got {data.dtype}"
        raise ValueError(msg)
    with atomic_path(path) as tmp:
        fits.PrimaryHDU(data=data, header=header).writeto(tmp, overwrite=True)


def session_steps(config: SessionConfig) -> int:
    """Number of progress steps of :func:`simulate_session` (frames + truth)."""
    return (
        config.n_bias + config.n_darks + config.n_darkflats + config.n_flats + config.n_lights + 1
    )


def simulate_session(
    outdir: str | Path,
    config: SessionConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> Truth:
    """Simulate a night and write it under *outdir*.

    Parameters
    ----------
    outdir : str or Path
        Session folder (created if needed; existing frames of the same names are
        replaced).
    config : SessionConfig, optional
        Default :meth:`SessionConfig.demo`.
    progress : callable, optional
        Called with a short description after each step (see :func:`session_steps`).

    Returns
    -------
    Truth
        The ground truth, maps included (also written to ``outdir/truth/``).
    """
    config = SessionConfig.demo() if config is None else config
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    scene = make_scene(config)
    sensor = make_sensor(config)
    report = progress or (lambda _msg: None)
    truth = Truth(config=config, lights=[], stars=scene.stars)

    def _write(kind: str, index: int, data: np.ndarray, record) -> None:
        rel = Path(_FOLDERS[kind]) / f"{kind}_{index + 1:04d}.fits"
        header = frame_header(config, kind, record.exposure, record.temperature, record.date_obs)
        write_raw_fits(outdir / rel, data, header)
        record.file = rel.as_posix()
        report(f"{kind} {index + 1}")

    for i in range(config.n_bias):
        data, rec = simulate_bias(config, i, sensor=sensor)
        _write("bias", i, data, rec)
        truth.bias_frames.append(rec)
    for i in range(config.n_darks):
        data, rec = simulate_dark(config, i, sensor=sensor)
        _write("dark", i, data, rec)
        truth.darks.append(rec)
    for i in range(config.n_darkflats):
        data, rec = simulate_dark(config, i, kind="darkflat", sensor=sensor)
        _write("darkflat", i, data, rec)
        truth.darkflats.append(rec)
    for i in range(config.n_flats):
        data, rec = simulate_flat(config, i, sensor=sensor)
        _write("flat", i, data, rec)
        truth.flats.append(rec)
    for plan in plan_lights(config):
        data, rec = simulate_light(config, plan.index, scene=scene, sensor=sensor, plan=plan)
        _write("light", plan.index, data, rec)
        truth.lights.append(rec)

    rgb = {"mosaic": False, "exposure": 1.0, "scene": scene}
    truth.sky = render_sky(config, None, config.truth_fwhm, **rgb)
    truth.extended = render_sky(config, stars=False, background=False, **rgb)
    truth.background = render_sky(config, stars=False, extended=False, **rgb)
    gain = config.gain
    truth.bias = sensor.bias
    truth.column_offsets = sensor.column_offsets
    truth.dark_current = (sensor.dark_rate(config, config.dark_temperature_c) / gain).astype(
        np.float32
    )
    truth.amp_glow = (sensor.amp_glow / gain).astype(np.float32)
    truth.hot_pixels = sensor.hot_pixels
    truth.flat = sensor.flat
    truth.vignetting = sensor.vignetting
    truth.dust = sensor.dust
    truth.outdir = outdir
    save_truth(truth, outdir)
    report("truth")
    logger.info(
        "simulated %d bias, %d darks, %d flats, %d lights in %s",
        config.n_bias,
        config.n_darks,
        config.n_flats,
        config.n_lights,
        outdir,
    )
    return truth
