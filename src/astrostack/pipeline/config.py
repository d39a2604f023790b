"""Run configuration: a dataclass tree with a default for every parameter.

Precedence, lowest first: the defaults here, a TOML file (``astrostack.toml``
in the input folder or ``--config FILE``), then explicit overrides (CLI flags
or keyword arguments of :func:`astrostack.run`).

Example ``astrostack.toml``::

    [stack]
    method = "winsorized"
    sigma_high = 2.5

    [selection]
    max_fwhm = 4.0
    keep_best = 0.9
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

__all__ = [
    "CONFIG_FILENAME",
    "CalibrationConfig",
    "ColorConfig",
    "OutputConfig",
    "PipelineConfig",
    "RegistrationConfig",
    "SelectionConfig",
    "StackConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "config_to_toml",
    "load_config",
    "parse_fraction",
    "resolve_config",
]

#: Name of the per-folder configuration file looked up in the input folder.
CONFIG_FILENAME = "astrostack.toml"


@dataclass
class CalibrationConfig:
    """Master building and light calibration.

    Attributes
    ----------
    bias_method : str
        Combine of the bias (offset) frames (a ``combine`` method name).  The median, as
        the classic chain has it: with an unscaled dark the offset cancels from the
        calibrated light (``light - offset - (dark - offset)``), so a lower-noise
        rejection buys nothing there and costs 2.7x the time.
    master_method : str
        Rejection used to combine dark, dark-flat and flat frames (a ``combine`` method name).
    master_sigma : float
        Clipping threshold (both sides) for the master combine.
    cosmetic : bool
        Find hot and cold pixels in the masters and repair them in every calibrated light,
        and repair isolated hot pixels (cosmic rays, warm pixels) found in each light.
    hot_sigma : float
        Hot-pixel threshold on the master dark, in robust sigmas.
    cold_fraction : float
        A flat pixel below this fraction of its neighbours' median is cold.
    isolated_sigma : float
        Threshold for isolated hot pixels in each calibrated light, in robust sigmas.
    dark_scale : str
        ``'exposure'`` (light / dark exposure ratio) or ``'optimize'`` (the factor that
        minimises the calibrated light's noise).
    """

    bias_method: str = "median"
    master_method: str = "winsorized"
    master_sigma: float = 3.0
    cosmetic: bool = True
    hot_sigma: float = 5.0
    cold_fraction: float = 0.6
    isolated_sigma: float = 8.0
    dark_scale: str = "exposure"


@dataclass
class ColorConfig:
    """Handling of colour (CFA / Bayer) lights.

    Attributes
    ----------
    mode : str
        ``'debayer'`` (interpolate calibrated mosaics to full resolution RGB before
        registration) or ``'superpixel'`` (2x2 binning to half-resolution RGB).
    debayer : str
        Interpolation used in ``'debayer'`` mode: ``'rcd'`` or ``'bilinear'``.
    neutralize_background : bool
        Offset R, G, B of the colour stack so that their background levels are equal (the
        usual post-stack step of Siril and PixInsight; recorded as ``ASNEUTRL``).
    white_balance : str
        ``'none'`` or ``'camera'`` (multiply the stack by the RAW file's camera
        white-balance multipliers, normalised to green; recorded as ``ASWB``).
    """

    mode: str = "debayer"
    debayer: str = "rcd"
    neutralize_background: bool = True
    white_balance: str = "none"


@dataclass
class RegistrationConfig:
    """Star detection, matching and warping.

    Attributes
    ----------
    reference : str
        ``'best'`` (the selected frame with the best quality score) or the file name
        (or stem) of the light to register on.
    interpolation : str
        Warp interpolation (``'lanczos3'``, ``'bicubic'``, ``'bilinear'``).
    detect_sigma : float
        Star detection threshold in background sigmas.
    max_stars : int
        Brightest stars kept per frame for matching.
    model : str
        Transform model: ``'auto'``, ``'shift'``, ``'rigid'``, ``'similarity'``,
        ``'affine'`` or ``'homography'``.
    align_groups : bool
        Register stacks that differ only by filter (same target, camera and geometry)
        on one common reference, so that they come out pixel-aligned.
    """

    reference: str = "best"
    interpolation: str = "lanczos3"
    detect_sigma: float = 5.0
    max_stars: int = 300
    model: str = "auto"
    align_groups: bool = True


@dataclass
class SelectionConfig:
    """Which lights are stacked.

    Attributes
    ----------
    enabled : bool
        Run the automatic outlier tests (clouds, trailing, defocus, satellites).
    outlier_sigma : float
        A frame is an outlier when a metric is this many robust sigmas (1.4826 MAD)
        away from the session median, in the bad direction.
    min_relative_stars : float
        Clouds: fewer than this fraction of the median star count.
    max_eccentricity : float
        Trailing: eccentricity above this value is always rejected (when outlying).
    max_fwhm : float or None
        User limit on FWHM in pixels.
    min_stars : int or None
        User limit on detected stars.
    keep_best : float or None
        Keep at most this fraction (0-1] of the usable frames, best quality first.
    """

    enabled: bool = True
    outlier_sigma: float = 5.0
    min_relative_stars: float = 0.5
    max_eccentricity: float = 0.6
    max_fwhm: float | None = None
    min_stars: int | None = None
    keep_best: float | None = None


@dataclass
class StackConfig:
    """Integration of the registered lights.

    Attributes
    ----------
    method : str
        Rejection method (``'auto'``, ``'sigma'``, ``'winsorized'``, ``'linear_fit'``,
        ``'esd'``, ``'percentile'``, ``'minmax'``, ``'median'``, ``'mean'``).
    sigma_low, sigma_high : float
        Clipping thresholds for the sigma-type methods.
    normalization : str
        Frame normalisation before rejection: ``'additive+scale'``, ``'local'``
        (background surface matched, removes gradients), ``'additive'``,
        ``'multiplicative'``, ``'multiplicative+scale'`` or ``'none'``.
    weighting : str
        Frame weights, a product of ``'noise'``, ``'fwhm'``, ``'stars'``, ``'exposure'``
        (e.g. ``'noise*fwhm'``) or ``'none'``.
    memory_limit_mb : float
        Memory budget of the streamed combine.
    scheduler : str
        ``'threads'``, ``'synchronous'``, or a Dask scheduler address.
    """

    method: str = "auto"
    sigma_low: float = 3.0
    sigma_high: float = 3.0
    normalization: str = "local"
    weighting: str = "noise"
    memory_limit_mb: float = 1024.0
    scheduler: str = "threads"


@dataclass
class OutputConfig:
    """Files written into the output folder.

    Attributes
    ----------
    tiff_bits : int
        Bit depth of ``stack.tif`` (16 or 32).
    preview_linked : bool
        Stretch colour previews with one linked curve (True) or per channel.
    preview_max_size : int
        Longest side of ``preview.png`` in pixels.
    thumbnail_size : int
        Longest side of the per-frame thumbnails in the report.
    keep_cache : bool
        Keep ``cache/`` after a successful run (needed to reuse stages next time).
    """

    tiff_bits: int = 16
    preview_linked: bool = False
    preview_max_size: int = 1600
    thumbnail_size: int = 160
    keep_cache: bool = True


@dataclass
class PipelineConfig:
    """The whole configuration of a run."""

    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    color: ColorConfig = field(default_factory=ColorConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    stack: StackConfig = field(default_factory=StackConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


_SECTIONS = {f.name: f for f in dataclasses.fields(PipelineConfig)}


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(PipelineConfig)
    return {name: hints[name] for name in _SECTIONS}


def _field_types(section_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(section_cls)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert *value* to the annotated type, with an error naming *where*."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.strip().lower() in ("none", "") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "no", "off", "0"):
                return False
            if isinstance(value, int | float) and value in (0, 1):
                return bool(value)
            raise TypeError
        if annotation is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if annotation is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if annotation is str:
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        name = getattr(annotation, "__name__", str(annotation))
        msg = f"{where}: expected {name}, got {value!r}; fix the value"
        raise ValueError(msg) from None
    return value


def config_from_dict(
    data: dict, base: PipelineConfig | None = None, source: str = "config"
) -> PipelineConfig:
    """Build a configuration from a nested mapping, starting from *base* (or defaults).

    Parameters
    ----------
    data : dict
        ``{section: {key: value}}`` as read from TOML.
    base : PipelineConfig, optional
        Values not present in *data* are taken from here.
    source : str
        Where *data* came from (a file name), used in error messages.

    Raises
    ------
    ValueError
        Unknown section or key, or a value of the wrong type.
    """
    cfg = dataclasses.replace(base) if base is not None else PipelineConfig()
    section_types = _section_types()
    for section, values in data.items():
        if section not in _SECTIONS:
            msg = f"{source}: unknown section [{section}]; valid sections: {', '.join(_SECTIONS)}"
            raise ValueError(msg)
        if not isinstance(values, dict):
            msg = f"{source}: [{section}] must be a table of key = value"
            raise ValueError(msg)
        cls = section_types[section]
        types_ = _field_types(cls)
        current = getattr(cfg, section)
        updates = {}
        for key, value in values.items():
            if key not in types_:
                msg = f"{source}: unknown key {section}.{key}; valid keys: {', '.join(types_)}"
                raise ValueError(msg)
            updates[key] = _coerce(value, types_[key], f"{source}: {section}.{key}")
        setattr(cfg, section, dataclasses.replace(current, **updates))
    _validate(cfg, source)
    return cfg


def config_to_dict(cfg: PipelineConfig, drop_none: bool = False) -> dict:
    """The configuration as ``{section: {key: value}}`` (None kept unless *drop_none*)."""
    out = {}
    for section in _SECTIONS:
        values = dataclasses.asdict(getattr(cfg, section))
        if drop_none:
            values = {k: v for k, v in values.items() if v is not None}
        out[section] = values
    return out


def config_to_toml(cfg: PipelineConfig) -> str:
    """The configuration as TOML text; unset (None) options appear as comments."""
    parts = []
    full = config_to_dict(cfg)
    for section, values in full.items():
        present = {k: v for k, v in values.items() if v is not None}
        text = tomli_w.dumps({section: present})
        unset = [f"# {k} = ...  (unset)" for k, v in values.items() if v is None]
        if unset:
            text = text.rstrip("\n") + "\n" + "\n".join(unset) + "\n"
        parts.append(text)
    return "\n".join(parts)


def load_config(path: str | Path, base: PipelineConfig | None = None) -> PipelineConfig:
    """Read a TOML configuration file over *base* (or the defaults).

    Raises
    ------
    ValueError
        The file cannot be read or parsed, or holds unknown keys.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        msg = f"{path}: configuration file not found; check the path"
        raise ValueError(msg) from None
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path}: invalid TOML ({exc}); fix the syntax"
        raise ValueError(msg) from None
    return config_from_dict(data, base=base, source=str(path))


def _field_index() -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for section, cls in _section_types().items():
        for key in _field_types(cls):
            index.setdefault(key, []).append(section)
    return index


def apply_overrides(cfg: PipelineConfig, overrides: dict[str, Any]) -> PipelineConfig:
    """Apply flat overrides to a configuration.

    Keys may be ``'section.key'``, ``'section__key'`` or a bare ``'key'`` when only
    one section has it (e.g. ``max_fwhm``).  ``None`` values are ignored so that
    unset CLI flags do not override the file.
    """
    index = _field_index()
    nested: dict[str, dict[str, Any]] = {}
    for raw_key, value in overrides.items():
        if value is None:
            continue
        key = raw_key.replace("__", ".")
        if "." in key:
            section, name = key.split(".", 1)
        else:
            sections = index.get(key, [])
            if len(sections) != 1:
                if not sections:
                    msg = f"unknown option {raw_key!r}; see `astrostack config` for valid names"
                else:
                    msg = f"option {raw_key!r} is ambiguous; write one of " + ", ".join(
                        f"{s}.{key}" for s in sections
                    )
                raise ValueError(msg)
            section, name = sections[0], key
        nested.setdefault(section, {})[name] = value
    return config_from_dict(nested, base=cfg, source="overrides")


def resolve_config(
    folder: str | Path | None = None,
    config: PipelineConfig | str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> PipelineConfig:
    """Effective configuration: defaults < file < overrides.

    Parameters
    ----------
    folder : path, optional
        Input folder; its ``astrostack.toml`` is read when *config* is not given.
    config : PipelineConfig or path, optional
        A ready configuration, or a TOML file to read instead of the folder's file.
    overrides : dict, optional
        Flat overrides (see :func:`apply_overrides`).
    """
    if isinstance(config, PipelineConfig):
        cfg = config
    elif config is not None:
        cfg = load_config(config)
    elif folder is not None and (Path(folder) / CONFIG_FILENAME).is_file():
        cfg = load_config(Path(folder) / CONFIG_FILENAME)
    else:
        cfg = PipelineConfig()
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg


def parse_fraction(text: str | float) -> float:
    """Parse ``'90%'``, ``'0.9'`` or ``0.9`` into a fraction in (0, 1].

    Raises
    ------
    ValueError
        The value is not a fraction in (0, 1] or a percentage in (0, 100].
    """
    if isinstance(text, int | float):
        value = float(text)
    else:
        s = str(text).strip()
        try:
            value = float(s[:-1]) / 100.0 if s.endswith("%") else float(s)
        except ValueError:
            msg = f"--keep-best: cannot read {text!r}; use e.g. 90% or 0.9"
            raise ValueError(msg) from None
        if not s.endswith("%") and value > 1.0:
            value /= 100.0
    if not 0.0 < value <= 1.0:
        msg = f"--keep-best: {text!r} is not in (0, 100%]; use e.g. 90%"
        raise ValueError(msg)
    return value


_CHOICES = {
    ("calibration", "dark_scale"): ("exposure", "optimize"),
    ("color", "mode"): ("debayer", "superpixel"),
    ("color", "debayer"): ("rcd", "bilinear"),
    ("color", "white_balance"): ("none", "camera"),
    ("registration", "interpolation"): ("lanczos3", "bicubic", "bilinear"),
    ("output", "tiff_bits"): (16, 32),
}


def _validate(cfg: PipelineConfig, source: str) -> None:
    for (section, key), choices in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            msg = f"{source}: {section}.{key} = {value!r} is not one of " + ", ".join(
                repr(c) for c in choices
            )
            raise ValueError(msg)
    from ..combine.kernels import METHODS
    from ..stack.normalize import NORMALIZATIONS
    from ..stack.weights import parse_weighting

    for section, key in (
        ("stack", "method"),
        ("calibration", "bias_method"),
        ("calibration", "master_method"),
    ):
        value = getattr(getattr(cfg, section), key)
        if value not in METHODS:
            msg = f"{source}: {section}.{key} = {value!r} is not one of " + ", ".join(METHODS)
            raise ValueError(msg)

    if cfg.stack.normalization not in NORMALIZATIONS:
        msg = (
            f"{source}: stack.normalization = {cfg.stack.normalization!r} is not one of "
            + ", ".join(NORMALIZATIONS)
        )
        raise ValueError(msg)
    try:
        parse_weighting(cfg.stack.weighting)
    except ValueError as exc:
        msg = f"{source}: stack.weighting: {exc}"
        raise ValueError(msg) from None
    sel = cfg.selection
    if sel.keep_best is not None and not 0.0 < sel.keep_best <= 1.0:
        msg = f"{source}: selection.keep_best must be in (0, 1], got {sel.keep_best}"
        raise ValueError(msg)
    if cfg.stack.memory_limit_mb <= 0:
        msg = f"{source}: stack.memory_limit_mb must be positive"
        raise ValueError(msg)
