"""The per-frame stages of a run, each cached: masters, calibration, quality, registration, warp.

Every function here computes one item (a master, a calibrated light, ...) or
returns it from the :class:`~astrostack.pipeline.cache.StageCache`, and says
which (``reused``).  Cache keys chain: a calibrated light's key includes its
masters' keys, a registration's key includes the calibrated frame's and the
reference's keys, and so on, so changing anything upstream invalidates exactly
what depends on it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..calibrate import (
    Master,
    build_master_bias,
    build_master_dark,
    build_master_darkflat,
    build_master_flat,
    calibrate_light,
    debayer,
    find_defects,
    half_to_full_transform,
    luminance,
    superpixel,
)
from ..combine import get_combiner
from ..io import CalibrationPlan, FrameGroup, FrameMeta, read_frame
from ..register import (
    Reference,
    measure_quality_and_stars,
    prepare_for_phase,
    register_frame,
    warp_to_file,
)
from .cache import StageCache, file_fingerprint, hash_key, load_npy, save_npy
from .colour import black_level_frame, flat_black_level
from .config import PipelineConfig

__all__ = [
    "LightFrame",
    "MasterSet",
    "QualityJob",
    "calibrate_frame",
    "get_masters",
    "make_reference",
    "measure_frame",
    "output_shape",
    "quality_in_processes",
    "quality_job",
    "register_to_reference",
    "registration_image",
    "run_quality_job",
    "store_quality",
    "warp_frame",
]

logger = logging.getLogger(__name__)

_BUILDERS = {
    "bias": build_master_bias,
    "dark": build_master_dark,
    "darkflat": build_master_darkflat,
    "flat": build_master_flat,
}


_UPSTREAM = {"bias": (), "dark": ("bias",), "darkflat": (), "flat": ("bias", "darkflat", "dark")}
_ARG = {"bias": "master_bias", "dark": "master_dark", "darkflat": "master_darkflat"}


@dataclass
class LightFrame:
    """One light as it goes through the run (paths, cache keys, measurements, status)."""

    path: Path
    name: str
    meta: FrameMeta
    plan: CalibrationPlan
    cal_key: str = ""
    cal_path: Path | None = None
    quality: dict[str, Any] = field(default_factory=dict)
    reg_key: str = ""
    registration: dict[str, Any] | None = None
    reg_path: Path | None = None
    used: bool = False
    reason: str = ""
    weight: float | None = None
    nonfinite: int = 0  # input pixels that were NaN or +-inf (made no-data: NaN)
    stars: Any = None  # registration StarTable from the quality pass (this run only)

    @property
    def date(self) -> datetime | None:
        """Start of exposure (UTC) when known."""
        return self.meta.date


@dataclass
class MasterSet:
    """The masters of one calibration plan: cache keys always, data loaded on demand."""

    keys: dict[str, str] = field(default_factory=dict)  # kind -> cache key
    paths: dict[str, Path] = field(default_factory=dict)  # kind -> master FITS
    _loaded: dict[str, Master] = field(default_factory=dict)
    _defects: Any = None

    def get(self, kind: str) -> Master | None:
        """The master of *kind* (loaded from its file on first use), or None."""
        if kind not in self.paths:
            return None
        if kind not in self._loaded:
            self._loaded[kind] = Master.load(self.paths[kind])
        return self._loaded[kind]


def _master_params(cfg: PipelineConfig, kind: str) -> dict[str, Any]:
    c = cfg.calibration
    method = c.bias_method if kind == "bias" else c.master_method
    return {"method": method, "sigma_low": c.master_sigma, "sigma_high": c.master_sigma}


def _combine_key(params: dict[str, Any]) -> dict[str, Any]:
    """What a master's combine depends on, for its cache key: the method and the
    parameters that method uses (the median offset ignores the sigmas, so changing
    them does not rebuild it)."""
    combiner = get_combiner(**params)
    return {"method": params["method"], **dataclasses.asdict(combiner)}


def get_masters(
    plan: CalibrationPlan,
    cache: StageCache,
    cfg: PipelineConfig,
    built: dict[str, tuple[str, Path]],
    counts: dict[str, int],
    problems: list[str],
    skipped: dict[str, str],
) -> MasterSet:
    """Build (or find in the cache) the masters a light group's plan asks for.

    A master that cannot be built (no usable frame) is left out with a message in
    *problems*; the lights are then calibrated without it.

    Parameters
    ----------
    plan : CalibrationPlan
        From :func:`astrostack.io.discover`.
    cache : StageCache
        Stage ``'masters'`` holds ``<key>.fits`` files.
    cfg : PipelineConfig
        Calibration parameters.
    built : dict
        Masters already resolved in this run, by cache key (shared between plans).
    counts : dict
        ``{'computed': n, 'reused': n}``, updated in place.
    problems : list of str
        Masters that could not be built, with the reason (appended to).
    skipped : dict
        ``{file: reason}`` of calibration frames left out of a master (updated).

    Returns
    -------
    MasterSet
    """
    ms = MasterSet()
    memory = int(cfg.stack.memory_limit_mb * 2**20)
    for kind in ("bias", "dark", "darkflat", "flat"):
        group: FrameGroup | None = getattr(plan, kind)
        if group is None:
            continue
        # Upstream masters the builder uses (the dark-flat keeps its offset: no bias).
        upstream = _UPSTREAM[kind]
        params = _master_params(cfg, kind)
        up_keys = {u: ms.keys[u] for u in upstream if u in ms.keys}
        inputs = [file_fingerprint(p) for p in group.paths]
        key = hash_key("master", kind, inputs, _combine_key(params), up_keys)
        if key in built:
            ms.keys[kind], ms.paths[kind] = built[key]
            continue
        entry = cache.lookup("masters", key)
        if entry is not None:
            counts["reused"] += 1
            path = entry.files["data"]
            left_out = entry.meta.get("skipped", [])
        else:
            kwargs: dict[str, Any] = dict(params, memory_limit=memory)
            for u in upstream:
                if u in ms.paths:
                    kwargs[_ARG[u]] = ms.get(u)
            if kind == "flat" and not {"bias", "darkflat"} & set(ms.paths):
                kwargs["master_bias"] = flat_black_level(group.frames[0], kwargs.get("master_dark"))
            logger.info("building master %s from %d frames (%s)", kind, group.count, group.id)
            try:
                master = _BUILDERS[kind](group.paths, **kwargs)
            except (ValueError, OSError) as exc:
                msg = f"master {kind} ({group.id}) not built: {exc}; lights calibrated without it"
                logger.warning(msg)
                problems.append(msg)
                continue
            path = cache.path("masters", key, suffix=".fits")
            master.save(path, durable=False)
            left_out = [[str(p), r] for p, r in master.skipped]
            cache.commit(
                "masters", key, {"data": path},
                {"kind": kind, "group": group.id, "n_frames": master.n_frames,
                 "skipped": left_out},
            )  # fmt: skip
            ms._loaded[kind] = master
            counts["computed"] += 1
        for p, reason in left_out:
            skipped[str(p)] = f"left out of the master {kind}: {reason}"
        built[key] = (key, path)
        ms.keys[kind], ms.paths[kind] = key, path
    return ms


def _calibration_params(cfg: PipelineConfig, plan: CalibrationPlan) -> dict[str, Any]:
    c = cfg.calibration
    return {
        "cosmetic": c.cosmetic,
        "hot_sigma": c.hot_sigma,
        "cold_fraction": c.cold_fraction,
        "isolated_sigma": c.isolated_sigma,
        "dark_scale": c.dark_scale,
        "light_offset": plan.light_offset,
        "constant_offset": plan.constant_offset,
    }


def calibrate_frame(
    light: LightFrame, masters: MasterSet, cache: StageCache, cfg: PipelineConfig
) -> bool:
    """Calibrate one light into ``cache/calibrated/<key>.npy`` (CFA stays a mosaic).

    Sets ``light.cal_key`` and ``light.cal_path``; returns True when reused.

    Raises
    ------
    astrostack.io.FrameReadError, ValueError
        The light cannot be read or does not fit its masters (the caller skips it).
    """
    params = _calibration_params(cfg, light.plan)
    key = hash_key("calibrated", file_fingerprint(light.path), masters.keys, params)
    light.cal_key = key
    entry = cache.lookup("calibrated", key)
    if entry is not None:
        light.cal_path = entry.files["data"]
        light.nonfinite = int(entry.meta.get("nonfinite", 0))
        return True
    frame = read_frame(light.path)
    bias: Master | np.ndarray | None = masters.get("bias")
    if bias is None and light.plan.light_offset == "black_level" and light.plan.constant_offset:
        bias = black_level_frame(frame.meta, frame.data.shape, light.plan.constant_offset)
    dark = masters.get("dark")
    flat = masters.get("flat")
    cfa = frame.meta.bayer is not None and frame.data.ndim == 2
    defects = None
    if cfg.calibration.cosmetic and (dark is not None or flat is not None):
        if masters._defects is None:
            masters._defects = find_defects(
                dark.data if dark is not None and dark.data.ndim == 2 else None,
                flat.data if flat is not None and flat.data.ndim == 2 else None,
                cfa,
                hot_sigma=cfg.calibration.hot_sigma,
                cold_fraction=cfg.calibration.cold_fraction,
                n_dark_frames=dark.n_frames if dark is not None else None,
            ) if frame.data.ndim == 2 else False  # fmt: skip
        defects = masters._defects or None
    out = calibrate_light(
        frame,
        bias=bias,
        dark=dark,
        flat=flat,
        defects=defects,
        dark_scale=cfg.calibration.dark_scale,
        cfa=cfa,
        detect_hot=cfg.calibration.cosmetic,
        hot_sigma=cfg.calibration.isolated_sigma,
        overwrite=True,  # the raw light is not needed again: no second full-frame array
    )
    # NaN and +-inf light pixels are no data, never signal (an inf is not a star): the
    # calibration pass made them, and any non-finite result, NaN and counted them
    light.nonfinite = int(out.meta.header.get("ASNONFIN", 0))
    light.cal_path = save_npy(cache.path("calibrated", key), out.data)
    cache.commit(
        "calibrated", key, {"data": light.cal_path},
        {"source": str(light.path), "steps": out.meta.header.get("ASCALIB", ""),
         "dark_k": out.meta.header.get("ASDARKK"), "nonfinite": light.nonfinite},
    )  # fmt: skip
    return False


def registration_image(data: np.ndarray, bayer: str | None) -> tuple[np.ndarray, bool]:
    """The 2-D image stars are measured on: the frame, its luminance, or a CFA's 2x2 mean.

    Returns
    -------
    image, half : ndarray, bool
        *half* is True when the image is the half-resolution CFA luminance.
    """
    if data.ndim == 3:
        return np.nanmean(data, axis=0).astype(np.float32), False
    if bayer is not None:
        return luminance(data, bayer), True
    return np.asarray(data, dtype=np.float32), False


def _quality_params(cfg: PipelineConfig) -> dict[str, Any]:
    return {"threshold": cfg.registration.detect_sigma}


@dataclass(frozen=True)
class QualityJob:
    """The quality measurement of one calibrated light (picklable: it may run in a
    worker process, see :func:`quality_in_processes`)."""

    key: str
    cal_path: Path
    name: str
    bayer: str | None
    pixel_scale: float | None  # arcsec per native pixel
    threshold: float
    max_stars: int
    pixels: int  # of the image measured (the CFA luminance has a quarter of the mosaic's)


def quality_job(light: LightFrame, cache: StageCache, cfg: PipelineConfig) -> QualityJob | None:
    """The quality job of a calibrated light, or None when its result is in the cache
    (``light.quality`` is then set)."""
    key = hash_key("quality", light.cal_key, _quality_params(cfg))
    entry = cache.lookup("quality", key)
    if entry is not None:
        light.quality = entry.meta
        return None
    shape = tuple(light.meta.shape or ())
    pixels = int(np.prod(shape[-2:]))
    if light.meta.bayer is not None and len(shape) == 2:
        pixels //= 4
    return QualityJob(
        key=key, cal_path=Path(light.cal_path), name=light.name, bayer=light.meta.bayer,
        pixel_scale=light.meta.pixel_scale_arcsec or None,
        threshold=cfg.registration.detect_sigma, max_stars=cfg.registration.max_stars,
        pixels=pixels,
    )  # fmt: skip


def run_quality_job(job: QualityJob) -> tuple[dict[str, Any], Any]:
    """Measure stars, FWHM, roundness, background and noise of a calibrated light.

    Measured on the registration image (half-resolution luminance for CFA); FWHM is
    converted back to native pixels.

    Returns
    -------
    record, stars : dict, StarTable
        The quality record (JSON-able, None for what could not be measured) and the
        registration's star list.
    """
    # mapped copy-on-write, not read: the frame was just written (it is in the page
    # cache), nothing here writes it, and sep wants writable buffers
    data = np.load(job.cal_path, mmap_mode="c", allow_pickle=False)
    image, half = registration_image(data, job.bayer)
    q, _, stars = measure_quality_and_stars(
        image,
        job.name,
        threshold=job.threshold,
        pixel_scale=(job.pixel_scale or 0) * (2 if half else 1) or None,
        register_max_stars=job.max_stars,
    )
    rec = {k: v for k, v in dataclasses.asdict(q).items() if k not in ("flagged", "reasons")}
    rec = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in rec.items()}
    if half:
        for k in ("fwhm", "hfd"):
            if rec.get(k) is not None:
                rec[k] = 2.0 * rec[k]
        rec["measured_on"] = "cfa-luminance"
    return rec, stars


def store_quality(
    light: LightFrame, job: QualityJob, result: tuple[dict[str, Any], Any], cache: StageCache
) -> None:
    """Record the result of :func:`run_quality_job` (``light.quality``, ``light.stars``,
    the cache)."""
    light.quality, light.stars = result
    cache.store_meta("quality", job.key, light.quality)


def quality_in_processes(
    jobs: list[QualityJob], workers: int, min_pixels: int = 100_000_000
) -> bool:
    """Whether the quality jobs are worth worker processes rather than threads.

    sep holds the GIL, so threads measure one frame at a time; worker processes
    measure *workers* at once, but each costs about 0.7 s of CPU to start (imports).
    A frame costs about 20 ns per pixel from 16 MP (detected on its 2x2 mean: 0.45 s
    at 24 MP) and 40-60 ns below (0.23 s at 4 MP), so from *min_pixels* in all (5
    frames of 24 MP, 25 of 4 MP) the processes save more than they cost to start; the
    tests' and the demo's small sessions stay on threads.
    """
    return workers > 1 and len(jobs) > 1 and sum(j.pixels for j in jobs) >= min_pixels


def measure_frame(light: LightFrame, cache: StageCache, cfg: PipelineConfig) -> bool:
    """Measure stars, FWHM, roundness, background and noise of a calibrated light.

    :func:`run_quality_job` of the light's :func:`quality_job`.  Sets ``light.quality``
    and, when computed, ``light.stars`` (reused by the registration); returns True
    when reused.
    """
    job = quality_job(light, cache, cfg)
    if job is None:
        return True
    store_quality(light, job, run_quality_job(job), cache)
    return False


def _registration_params(cfg: PipelineConfig) -> dict[str, Any]:
    r = cfg.registration
    return {"threshold": r.detect_sigma, "max_stars": r.max_stars, "model": r.model}


def make_reference(ref: LightFrame, cfg: PipelineConfig) -> Reference:
    """Build the registration reference (stars + phase image) from a calibrated light.

    The stars of the quality pass are reused when this run measured them.
    """
    image, _ = registration_image(load_npy(ref.cal_path), ref.meta.bayer)
    if ref.stars is not None:
        return Reference(stars=ref.stars, phase_image=prepare_for_phase(image), name=ref.name)
    return Reference.from_image(
        image,
        name=ref.name,
        max_stars=cfg.registration.max_stars,
        threshold=cfg.registration.detect_sigma,
    )


def register_to_reference(
    light: LightFrame,
    ref: LightFrame,
    reference: Any,
    cache: StageCache,
    cfg: PipelineConfig,
) -> bool:
    """Find the transform of *light* onto *ref* (native pixels), cached.

    *reference* is a :class:`~astrostack.register.Reference` or a zero-argument callable
    returning one (built only on a cache miss).  Sets ``light.reg_key`` and
    ``light.registration`` (``{'ok': bool, 'matrix': 3x3 list, ...}`` or ``{'ok': False,
    'reason': ...}``); returns True when reused.
    """
    key = hash_key("registration", light.cal_key, ref.cal_key, _registration_params(cfg))
    light.reg_key = key
    entry = cache.lookup("registration", key)
    if entry is not None:
        light.registration = entry.meta
        return True
    if light.cal_key == ref.cal_key:
        rec = {"ok": True, "matrix": np.eye(3).tolist(), "model": "identity", "n_matches": 0,
               "rms": 0.0, "method": "reference"}  # fmt: skip
    else:
        ref_obj = reference() if callable(reference) else reference
        data = load_npy(light.cal_path, mmap=True)  # the header now, pixels when needed
        half = data.ndim == 2 and light.meta.bayer is not None
        options = {
            "model": cfg.registration.model,
            "max_stars": cfg.registration.max_stars,
            "threshold": cfg.registration.detect_sigma,
            "name": light.name,
        }
        res = None
        if light.stars is not None:
            # the quality stage's stars; the image only serves the fallbacks (a looser
            # detection, phase correlation), so it is read only when they are needed
            res = register_frame(light.stars, ref_obj, **options)
        if not res:
            image = registration_image(np.array(data), light.meta.bayer)[0]
            frame = image if light.stars is None else light.stars
            res = register_frame(frame, ref_obj, frame_image=image, **options)
        del data
        rec = res.to_dict()
        if res and half:
            rec["matrix_half"] = rec["matrix"]
            rec["matrix"] = half_to_full_transform(np.asarray(res.matrix)).tolist()
    light.registration = rec
    if light.cal_key != ref.cal_key:
        light.stars = None  # no longer needed (the reference keeps its own until built)
    cache.store_meta("registration", key, rec)
    return False


def _colour_params(cfg: PipelineConfig, bayer: str | None) -> dict[str, Any]:
    if bayer is None:
        return {}
    return {"mode": cfg.color.mode, "debayer": cfg.color.debayer}


def _full_to_half(matrix: np.ndarray) -> np.ndarray:
    s = np.array([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])
    return np.linalg.inv(s) @ matrix @ s


def output_shape(ref_meta: FrameMeta, shape: tuple[int, ...], cfg: PipelineConfig) -> tuple:
    """Shape of the registered frames for a reference of *shape* (mosaic or mono)."""
    if ref_meta.bayer is None or len(shape) == 3:
        return tuple(shape)
    if cfg.color.mode == "superpixel":
        return (3, shape[-2] // 2, shape[-1] // 2)
    return (3, *shape[-2:])


def warp_frame(
    light: LightFrame, out_shape: tuple[int, ...], cache: StageCache, cfg: PipelineConfig
) -> bool:
    """Warp a registered light once onto the reference grid: ``cache/registered/<key>.npy``.

    CFA lights are first debayered (``color.debayer``) or binned to superpixels
    (``color.mode = 'superpixel'``); the result is float32 with NaN outside the
    footprint.  Sets ``light.reg_path``; returns True when reused.
    """
    params = {
        "interpolation": cfg.registration.interpolation,
        **_colour_params(cfg, light.meta.bayer),
        "shape": list(out_shape),
    }
    key = hash_key("registered", light.reg_key, params)
    entry = cache.lookup("registered", key)
    if entry is not None:
        light.reg_path = entry.files["data"]
        return True
    data = load_npy(light.cal_path)
    matrix = np.asarray(light.registration["matrix"], dtype=np.float64)
    bayer = light.meta.bayer
    if bayer is not None and data.ndim == 2:
        if cfg.color.mode == "superpixel":
            data = superpixel(data, bayer)
            matrix = _full_to_half(matrix)
        else:
            data = debayer(data, bayer, method=cfg.color.debayer)
    path = warp_to_file(
        data, matrix, out_shape, cache.path("registered", key),
        method=cfg.registration.interpolation, durable=False,
    )  # fmt: skip
    light.reg_path = path
    cache.commit("registered", key, {"data": path}, {"source": str(light.path)})
    return False
