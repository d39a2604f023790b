"""Ground truth of a simulated session: per-frame records, maps, and ``truth.json``.

``OUTDIR/truth/`` holds (reference frame unless stated):

* ``sky.fits``: true sky, e-/s/pixel, float32 (``[3, y, x]`` for colour), stars at
  ``truth_fwhm``; ``extended.fits`` (galaxy + nebula only) and ``background.fits``
  (sky gradient only) in the same units;
* ``bias.fits`` (ADU), ``dark_current.fits`` (ADU/s at the darks' temperature,
  hot pixels and amp glow included), ``amp_glow.fits`` (ADU/s),
  ``hot_pixels.fits`` (uint8 0/1), ``flat.fits`` (mean 1), ``vignetting.fits``;
* ``truth.json``: everything else (see ``docs/simulator.md``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ..io import IGNORE_MARKER
from ..io.atomic import atomic_path
from .config import SessionConfig
from .scene import StarField

__all__ = ["TRUTH_VERSION", "FrameTruth", "LightTruth", "Truth", "load_truth", "save_truth"]

logger = logging.getLogger(__name__)

#: Version of the ``truth.json`` layout.
TRUTH_VERSION = 1

_MAPS = {
    "sky": "sky.fits",
    "extended": "extended.fits",
    "background": "background.fits",
    "bias": "bias.fits",
    "dark_current": "dark_current.fits",
    "amp_glow": "amp_glow.fits",
    "hot_pixels": "hot_pixels.fits",
    "flat": "flat.fits",
    "vignetting": "vignetting.fits",
}


@dataclass
class FrameTruth:
    """Truth of one bias, dark, flat or dark-flat frame.

    Attributes
    ----------
    kind : str
        ``'bias'``, ``'dark'``, ``'flat'`` or ``'darkflat'``.
    index : int
        Number within its kind.
    exposure : float
        Seconds.
    temperature : float
        Sensor temperature, deg C.
    date_obs : str
        Start of exposure (ISO 8601, UTC).
    file : str
        Path relative to the session folder (empty for in-memory frames).
    cosmic_rays : numpy.ndarray
        ``[n, 3]`` hits: ``x``, ``y``, electrons.
    level : float
        Flats: mean illumination reaching the sensor, electrons (before flat/QE).
    """

    kind: str
    index: int
    exposure: float
    temperature: float
    date_obs: str = ""
    file: str = ""
    cosmic_rays: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    level: float = 0.0


@dataclass
class LightTruth:
    """Truth of one light frame.

    Attributes
    ----------
    index : int
        Light number (light 0 is the clean reference: identity transform).
    matrix : numpy.ndarray
        ``3x3`` transform from frame ``(x, y, 1)`` to reference coordinates.
    fwhm : float
        Seeing FWHM (minor axis), frame pixels.
    elongation, psf_angle : float
        PSF axis ratio and angle (radians); ``elongation > 1`` for trailing.
    transparency : float
        Transmission of stars and extended emission.
    sky_factor : float
        Multiplier of the reference sky background.
    sky_level : float
        Mean sky background in this light, e-/s/pixel before flat and QE: the
        reference frame's mean background times ``sky_factor`` and the pixel area
        (cloud glow excluded; for colour, the mean over R, G, B).
    bad : str or None
        ``'clouds'``, ``'trailing'``, ``'defocus'`` or ``None``.
    shift, rotation, scale, flipped, mirrored
        The transform's parameters (pixels, degrees, factor, meridian flip, mirror).
    satellites : list of dict
        Trails: ``x0, y0, x1, y1`` (frame pixels), ``electrons_per_pixel``, ``fwhm``.
    glow : dict or None
        Cloud glow patch: ``x``, ``y``, ``sigma`` (frame pixels), ``level`` (e-/s).
    cosmic_rays : numpy.ndarray
        ``[n, 3]`` hits: ``x``, ``y``, electrons.
    exposure, temperature, date_obs, file
        As for :class:`FrameTruth`.
    """

    index: int
    matrix: np.ndarray
    fwhm: float
    elongation: float = 1.0
    psf_angle: float = 0.0
    transparency: float = 1.0
    sky_factor: float = 1.0
    sky_level: float = 0.0
    bad: str | None = None
    shift: tuple[float, float] = (0.0, 0.0)
    rotation: float = 0.0
    scale: float = 1.0
    flipped: bool = False
    mirrored: bool = False
    satellites: list = field(default_factory=list)
    glow: dict | None = None
    cosmic_rays: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    exposure: float = 0.0
    temperature: float = 0.0
    date_obs: str = ""
    file: str = ""

    def to_reference(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map frame pixel coordinates to reference coordinates."""
        m = self.matrix
        return m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]

    def to_frame(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map reference coordinates to this frame's pixel coordinates."""
        m = np.linalg.inv(self.matrix)
        return m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]


@dataclass
class Truth:
    """Ground truth of a whole session (returned by ``simulate_session`` and ``load_truth``).

    Maps are ``None`` when not loaded.  Units: see the module docstring.
    """

    config: SessionConfig
    lights: list[LightTruth]
    bias_frames: list[FrameTruth] = field(default_factory=list)
    darks: list[FrameTruth] = field(default_factory=list)
    flats: list[FrameTruth] = field(default_factory=list)
    darkflats: list[FrameTruth] = field(default_factory=list)
    stars: StarField | None = None
    column_offsets: np.ndarray | None = None
    dust: list = field(default_factory=list)
    sky: np.ndarray | None = None
    extended: np.ndarray | None = None
    background: np.ndarray | None = None
    bias: np.ndarray | None = None
    dark_current: np.ndarray | None = None
    amp_glow: np.ndarray | None = None
    hot_pixels: np.ndarray | None = None
    flat: np.ndarray | None = None
    vignetting: np.ndarray | None = None
    outdir: Path | None = None

    @property
    def gain(self) -> float:
        """Electrons per ADU."""
        return self.config.gain

    @property
    def read_noise(self) -> float:
        """Read noise, electrons RMS."""
        return self.config.read_noise

    @property
    def bad_lights(self) -> dict[int, str]:
        """``{light index: reason}`` of the spoiled lights."""
        return {t.index: t.bad for t in self.lights if t.bad}

    @property
    def good_lights(self) -> list[int]:
        """Indices of the lights that are not spoiled."""
        return [t.index for t in self.lights if not t.bad]

    def relative_matrix(self, index: int, reference: int = 0) -> np.ndarray:
        """Transform from light *index*'s pixels to light *reference*'s pixels."""
        return np.linalg.inv(self.lights[reference].matrix) @ self.lights[index].matrix


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _write_map(path: Path, data: np.ndarray, bunit: str, comment: str) -> None:
    header = fits.Header()
    header["BUNIT"] = bunit
    header["COMMENT"] = comment
    with atomic_path(path) as tmp:
        fits.PrimaryHDU(data=data, header=header).writeto(tmp, overwrite=True)


def save_truth(truth: Truth, outdir: str | Path) -> Path:
    """Write ``OUTDIR/truth/`` (maps as FITS, the rest as ``truth.json``), atomically.

    Parameters
    ----------
    truth : Truth
        The truth to write; maps that are ``None`` are skipped.
    outdir : str or Path
        Session folder.

    Returns
    -------
    Path
        The ``truth.json`` written.
    """
    folder = Path(outdir) / "truth"
    folder.mkdir(parents=True, exist_ok=True)
    # The truth maps are FITS files too: keep session discovery out of this folder.
    (folder / IGNORE_MARKER).touch()
    units = {
        "sky": ("electron/s", "true sky, reference frame"),
        "extended": ("electron/s", "galaxy + nebula, reference frame"),
        "background": ("electron/s", "sky background with gradient, reference frame"),
        "bias": ("adu", "bias frame without read noise"),
        "dark_current": ("adu/s", "dark current at the darks' temperature"),
        "amp_glow": ("adu/s", "amp glow part of dark_current"),
        "hot_pixels": ("", "1 = hot pixel"),
        "flat": ("", "flat field, mean 1"),
        "vignetting": ("", "vignetting alone, 1 at the centre"),
    }
    for name, filename in _MAPS.items():
        data = getattr(truth, name)
        if data is None:
            continue
        data = data.astype(np.uint8) if name == "hot_pixels" else data.astype(np.float32)
        _write_map(folder / filename, data, *units[name])
    cfg = truth.config
    doc = {
        "version": TRUTH_VERSION,
        "config": cfg.to_dict(),
        "shape": list(cfg.shape),
        "bayer": cfg.bayer,
        "gain": cfg.gain,
        "read_noise": cfg.read_noise,
        "exposure": cfg.exposure,
        "bias_level": cfg.bias_level,
        "column_offsets": truth.column_offsets,
        "qe": list(cfg.qe) if cfg.bayer else [1.0, 1.0, 1.0],
        "dark": {
            "temperature": cfg.dark_temperature_c,
            "light_temperature": cfg.temperature,
            "doubling": cfg.dark_doubling,
            "exposure": cfg.dark_exposure_s,
            "amp_glow_temperature_independent": True,
        },
        "truth_fwhm": cfg.truth_fwhm,
        "moffat_beta": cfg.moffat_beta,
        "dust": truth.dust,
        "bad_frames": [
            {"index": t.index, "file": t.file, "reason": t.bad} for t in truth.lights if t.bad
        ],
        "lights": [asdict(t) for t in truth.lights],
        "bias_frames": [asdict(t) for t in truth.bias_frames],
        "darks": [asdict(t) for t in truth.darks],
        "flats": [asdict(t) for t in truth.flats],
        "darkflats": [asdict(t) for t in truth.darkflats],
    }
    if truth.stars is not None:
        doc["stars"] = {
            "x": truth.stars.x,
            "y": truth.stars.y,
            "flux": truth.stars.flux,
            "colour": truth.stars.colour,
        }
    path = folder / "truth.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(doc), indent=1))
    return path


def _frames(items: list[dict]) -> list[FrameTruth]:
    out = []
    for item in items:
        item = dict(item)
        item["cosmic_rays"] = np.asarray(item["cosmic_rays"], dtype=np.float64).reshape(-1, 3)
        out.append(FrameTruth(**item))
    return out


def load_truth(outdir: str | Path, maps: bool = True) -> Truth:
    """Read the ground truth written by ``simulate_session``.

    Parameters
    ----------
    outdir : str or Path
        Session folder (the one holding ``truth/``).
    maps : bool
        Also load the FITS maps (sky, bias, dark current, flat, ...).

    Returns
    -------
    Truth

    Raises
    ------
    FileNotFoundError
        When ``truth/truth.json`` is missing.
    ValueError
        When ``truth.json`` has an unknown version.
    """
    folder = Path(outdir) / "truth"
    path = folder / "truth.json"
    if not path.is_file():
        msg = f"{path}: no simulator truth here; run `astrostack simulate {outdir}` first"
        raise FileNotFoundError(msg)
    doc = json.loads(path.read_text())
    if doc.get("version") != TRUTH_VERSION:
        msg = f"{path}: truth version {doc.get('version')!r}, expected {TRUTH_VERSION}; re-simulate"
        raise ValueError(msg)
    lights = []
    for item in doc["lights"]:
        item = dict(item)
        item["matrix"] = np.asarray(item["matrix"], dtype=np.float64)
        item["cosmic_rays"] = np.asarray(item["cosmic_rays"], dtype=np.float64).reshape(-1, 3)
        item["shift"] = tuple(item["shift"])
        lights.append(LightTruth(**item))
    stars = None
    if "stars" in doc:
        s = doc["stars"]
        stars = StarField(
            x=np.asarray(s["x"], dtype=np.float64),
            y=np.asarray(s["y"], dtype=np.float64),
            flux=np.asarray(s["flux"], dtype=np.float64),
            colour=np.asarray(s["colour"], dtype=np.float64).reshape(-1, 3),
        )
    truth = Truth(
        config=SessionConfig.from_dict(doc["config"]),
        lights=lights,
        bias_frames=_frames(doc["bias_frames"]),
        darks=_frames(doc["darks"]),
        flats=_frames(doc["flats"]),
        darkflats=_frames(doc["darkflats"]),
        stars=stars,
        column_offsets=np.asarray(doc["column_offsets"], dtype=np.float32),
        dust=doc.get("dust", []),
        outdir=Path(outdir),
    )
    if maps:
        for name, filename in _MAPS.items():
            map_path = folder / filename
            if map_path.is_file():
                data = fits.getdata(map_path)
                data = data.astype(bool) if name == "hot_pixels" else data.astype(np.float32)
                setattr(truth, name, data)
    return truth
