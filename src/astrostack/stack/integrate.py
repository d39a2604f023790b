"""Integration of registered lights: measure, normalise, weight, reject and combine.

:func:`stack_frames` runs two passes over the frames, each reading every frame once
and band by band, so memory is bounded by the budget whatever the number of frames:

1. statistics (:func:`~astrostack.stack.normalize.measure_frame`): level, dispersion,
   background noise and a coarse background grid per frame and channel;
2. the streamed combine (:func:`astrostack.combine.engine.combine_sources`) with each
   frame normalised to the reference while its band is read, and per-frame weights.

A frame that cannot be read or is unusable is skipped and reported in
:attr:`StackResult.skipped`; it never stops the run.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..combine.engine import combine_sources
from ..combine.sources import FrameSource, open_source
from ..io.atomic import atomic_path
from .normalize import NORMALIZATIONS, compute_normalization, default_tile, measure_frame
from .weights import compute_weights, parse_weighting

if TYPE_CHECKING:
    from astropy.io import fits

__all__ = ["FrameRecord", "StackResult", "stack_frames", "write_stack"]

logger = logging.getLogger(__name__)


@dataclass
class FrameRecord:
    """How one frame entered the stack (per-channel arrays have length C)."""

    path: str
    scale: list[float]
    offset: list[float]
    weight: list[float]
    noise: list[float]
    location: list[float]
    scale_source: str = "-"


@dataclass
class StackResult:
    """The integrated image and everything needed to reproduce or judge it.

    Attributes
    ----------
    image : ndarray
        float32 ``[H, W]`` or ``[C, H, W]`` in the reference frame's units.
    rejected_low, rejected_high : ndarray
        uint16 number of values rejected below / above per pixel.
    coverage : ndarray
        uint16 number of values kept per pixel.
    weight_map : ndarray
        float32 sum of kept weights per pixel.
    frames : list of FrameRecord
        Frames used, in input order, with normalisation and weights.
    skipped : list of (str, str)
        Frames left out and why.
    method, method_used : str
        Requested rejection and what ran (``auto`` resolved).
    parameters : dict
        The kernel's parameters.
    normalization, weighting : str
        As requested.
    reference : str
        Reference frame path.
    """

    image: np.ndarray
    rejected_low: np.ndarray
    rejected_high: np.ndarray
    coverage: np.ndarray
    weight_map: np.ndarray
    frames: list[FrameRecord]
    skipped: list[tuple[str, str]]
    method: str
    method_used: str
    parameters: dict[str, Any]
    normalization: str
    weighting: str
    reference: str
    tile: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def header(self) -> fits.Header:
        """A FITS header recording how the stack was made.

        Returns
        -------
        astropy.io.fits.Header
        """
        from astropy.io import fits

        hdr = fits.Header()
        hdr["CREATOR"] = ("astrostack", "software")
        hdr["STKMETH"] = (self.method, "rejection method requested")
        hdr["STKUSED"] = (self.method_used, "rejection method used")
        for key, card in (("sigma_low", "SIGLOW"), ("sigma_high", "SIGHIGH")):
            if key in self.parameters:
                hdr[card] = (float(self.parameters[key]), f"rejection {key}")
        hdr["NORMMETH"] = (self.normalization, "normalisation")
        if self.tile:
            hdr["NORMTILE"] = (self.tile, "background tile size (px)")
        hdr["WEIGHTS"] = (self.weighting, "frame weighting")
        hdr["NCOMBINE"] = (len(self.frames), "frames combined")
        hdr["NSKIPPED"] = (len(self.skipped), "frames skipped")
        hdr["REFFRAME"] = (Path(self.reference).name[:60], "reference frame")
        lo = float(self.rejected_low.sum(dtype=np.float64))
        hi = float(self.rejected_high.sum(dtype=np.float64))
        kept = float(self.coverage.sum(dtype=np.float64))
        total = max(lo + hi + kept, 1.0)
        hdr["REJLOW"] = (round(lo / total, 6), "fraction of values rejected low")
        hdr["REJHIGH"] = (round(hi / total, 6), "fraction of values rejected high")
        for key, value in sorted(self.parameters.items()):
            if isinstance(value, bool | int | float | str):
                hdr.add_history(f"param {key}={value}")
        for i, fr in enumerate(self.frames):
            sc = ",".join(f"{v:.6g}" for v in fr.scale)
            of = ",".join(f"{v:.6g}" for v in fr.offset)
            wt = ",".join(f"{v:.4g}" for v in fr.weight)
            hdr.add_history(f"frame {i} {Path(fr.path).name} scale={sc} offset={of} weight={wt}")
        for path, reason in self.skipped:
            hdr.add_history(f"skipped {Path(path).name}: {reason[:40]}")
        return hdr


def _flux_scales(info: Sequence[Any] | None) -> np.ndarray | None:
    """Per-frame ``flux_scale`` from frame_info when every frame has one, else None."""
    if info is None:
        return None
    values = []
    for item in info:
        v = item.get("flux_scale") if isinstance(item, dict) else getattr(item, "flux_scale", None)
        if v is None:
            return None
        values.append(np.asarray(v, dtype=np.float64))
    return np.stack(values)


def _as_source(item: FrameSource | str | Path) -> FrameSource:
    if isinstance(item, str | Path):
        return open_source(item)
    return item


def _concurrent(scheduler: str) -> bool:
    """Whether frames may be measured concurrently (a threaded run).

    The statistics kernels are serial and release the GIL, so two frames measured at
    once use two cores without nesting parallel regions (which oversubscribes them).
    """
    return scheduler == "threads"


def _stats_path(
    folder: str | Path | None, src: FrameSource, ref_src: FrameSource, tile: int
) -> Path | None:
    """Cache file of *src*'s statistics, or None when it cannot be keyed (in-memory)."""
    if folder is None or src.path is None or ref_src.path is None:
        return None
    parts = [f"tile={tile}", "v1"]
    for path in (Path(src.path), Path(ref_src.path)):
        try:
            info = path.stat()
        except OSError:
            return None
        parts.append(f"{path.resolve()}|{info.st_size}|{info.st_mtime_ns}")
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
    return Path(folder) / f"{key}.pkl"


def stack_frames(
    sources: Sequence[FrameSource | str | Path],
    method: str = "auto",
    normalization: str = "local",
    weighting: str = "noise",
    reference: int = 0,
    memory_limit: int | float | str = "2GB",
    scheduler: str = "threads",
    frame_info: Sequence[Any] | None = None,
    tile: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    stats_cache: str | Path | None = None,
    **kernel_params: Any,
) -> StackResult:
    """Integrate registered (and calibrated) frames.

    Parameters
    ----------
    sources : sequence of FrameSource or paths
        Frames on a common pixel grid (NaN = outside the frame's footprint).
    method : str
        Rejection method for :func:`astrostack.combine.kernels.combine` (``'auto'``
        chooses by the number of frames).
    normalization : str
        One of ``none``, ``additive``, ``multiplicative``, ``additive+scale``,
        ``multiplicative+scale``, ``local`` (default: background surface matching
        plus signal scale; see :mod:`astrostack.stack.normalize`).
    weighting : str
        Product of ``none``, ``exposure``, ``noise``, ``fwhm``, ``stars`` (e.g.
        ``'noise*fwhm'``).
    reference : int
        Index (in ``sources``) of the reference frame; when that frame is unusable
        the first usable frame is the reference (logged and recorded).
    memory_limit : int, float or str
        Budget of the combine pass, e.g. ``'2GB'``.
    scheduler : str
        ``'threads'``, ``'synchronous'``, ``'processes'`` or ``'tcp://host:port'``.
    frame_info : sequence, optional
        Per frame: mapping/object with ``exposure``, ``fwhm``, ``stars`` (weights) and
        optionally ``flux_scale`` (star flux relative to any common reference, scalar
        or per channel), which sets the ``local`` signal scale when every frame has it.
    tile : int, optional
        Background tile size for statistics and ``local`` normalisation.
    progress : callable, optional
        ``progress(stage, done, total)`` with stage ``'measure'`` or ``'combine'``.
    stats_cache : path, optional
        Folder where each file frame's statistics (the first pass) are kept, keyed by
        the frame's and the reference's path, size and modification time and the tile
        size: re-stacking the same frames with other rejection or weighting settings
        then reads each frame once, in the combine pass only.
    **kernel_params
        Rejection parameters (``sigma_low``, ``sigma_high``, ...).

    Returns
    -------
    StackResult

    Raises
    ------
    ValueError
        For unknown options or when no frame is usable.
    """
    if normalization not in NORMALIZATIONS:
        msg = f"normalization {normalization!r} unknown; use one of {', '.join(NORMALIZATIONS)}"
        raise ValueError(msg)
    parse_weighting(weighting)
    items = list(sources)
    if not items:
        msg = "stack_frames: no frames given"
        raise ValueError(msg)
    if not 0 <= reference < len(items):
        msg = f"reference index {reference} outside 0..{len(items) - 1}"
        raise ValueError(msg)
    skipped: list[tuple[str, str]] = []
    usable: list[tuple[int, FrameSource]] = []
    for i, item in enumerate(items):
        try:
            usable.append((i, _as_source(item)))
        except (OSError, ValueError) as exc:
            skipped.append((str(item), str(exc)))
            logger.warning("skipping %s: %s", item, exc)
    if not usable:
        msg = f"none of the {len(items)} frames can be read (first: {skipped[0][1]})"
        raise ValueError(msg)
    ref_src = next((s for i, s in usable if i == reference), None)
    if ref_src is None:
        logger.warning("reference %s unreadable; using %s", items[reference], usable[0][1].path)
        reference, ref_src = usable[0]
    shape = tuple(ref_src.shape)
    tile = tile or default_tile(shape)
    # the reference first: its star mask gives every frame the same background pixels
    order = sorted(usable, key=lambda item: item[0] != reference)
    measured: dict[int, tuple[FrameSource, Any]] = {}
    mask = None

    def measure(src: FrameSource, star_mask: np.ndarray | None) -> Any:
        if tuple(src.shape) != shape:
            msg = (
                f"{src.path}: shape {src.shape} differs from the reference {shape}; "
                "register it onto the reference grid"
            )
            raise ValueError(msg)
        cached = _stats_path(stats_cache, src, ref_src, tile)
        if cached is not None and cached.is_file():
            try:
                with open(cached, "rb") as fh:
                    st = pickle.load(fh)
                if st.star_mask is not None or star_mask is not None:
                    return st
            except (OSError, EOFError, pickle.UnpicklingError, AttributeError) as exc:
                logger.warning("ignoring unreadable statistics cache %s: %s", cached, exc)
        st = measure_frame(src, tile=tile, star_mask=star_mask, make_mask=star_mask is None)
        if cached is not None:
            with atomic_path(cached, durable=False) as tmp, open(tmp, "wb") as fh:
                pickle.dump(st, fh, protocol=pickle.HIGHEST_PROTOCOL)
        return st

    # once the reference has given the mask, the other frames are measured two at a
    # time (results taken in order, so the outcome does not depend on thread timing)
    pool = None
    for done, (i, src) in enumerate(order, 1):
        try:
            if pool is not None:
                st = pool.pop(0).result()
            else:
                st = measure(src, mask)
            if mask is None:
                mask, reference = st.star_mask, i
                st.star_mask = None
            measured[i] = (src, st)
        except (OSError, ValueError) as exc:
            skipped.append((str(src.path), str(exc)))
            logger.warning("skipping %s: %s", src.path, exc)
        if pool is None and mask is not None and done < len(order) and _concurrent(scheduler):
            executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="astrostack-measure")
            pool = [executor.submit(measure, s, mask) for _, s in order[done:]]
            executor.shutdown(wait=False)
        if progress is not None:
            progress("measure", done, len(usable))
    del mask
    if not measured:
        msg = f"no usable frame among {len(items)}: {skipped[0][0]}: {skipped[0][1]}"
        raise ValueError(msg)
    kept = [(i, measured[i][0]) for i in sorted(measured)]
    stats = [measured[i][1] for i in sorted(measured)]
    ref_pos = [i for i, _ in kept].index(reference)
    names = [str(src.path) for _, src in kept]
    info = None if frame_info is None else [frame_info[i] for i, _ in kept]
    norm = compute_normalization(stats, ref_pos, normalization, _flux_scales(info))
    # noise weights use the block-scale noise: interpolation smoothing does not fool it
    noise = np.stack([st.noise if st.block_noise is None else st.block_noise for st in stats])
    weights = compute_weights(weighting, noise, norm.scales, info, ref_pos, names)
    if normalization == "local":  # map onto the background the weighted stack averages
        norm = compute_normalization(
            stats, ref_pos, normalization, _flux_scales(info), weights=weights
        )
    logger.info(
        "stacking %d frames (%d skipped), normalization=%s weighting=%s",
        len(kept),
        len(skipped),
        normalization,
        weighting,
    )

    def combine_progress(done: int, total: int) -> None:
        if progress is not None:
            progress("combine", done, total)

    result = combine_sources(
        [src for _, src in kept],
        method=method,
        offsets=norm.offsets,
        scales=norm.scales,
        weights=weights if weighting != "none" else None,
        memory_limit=memory_limit,
        scheduler=scheduler,
        progress=combine_progress,
        offset_maps=norm.surfaces,
        **kernel_params,
    )
    params = dict(result.parameters)
    for j, reason in params.pop("failed_sources", {}).items():
        skipped.append((names[int(j)], f"read failed during combine: {reason}"))
    records = [
        FrameRecord(
            path=names[j],
            scale=[float(v) for v in norm.scales[j]],
            offset=[float(v) for v in norm.offsets[j]],
            weight=[float(v) for v in weights[j]],
            noise=[float(v) for v in noise[j]],
            location=[float(v) for v in stats[j].location],
            scale_source=norm.scale_source[j],
        )
        for j in range(len(kept))
    ]
    return StackResult(
        image=result.image,
        rejected_low=result.rejected_low,
        rejected_high=result.rejected_high,
        coverage=result.count,
        weight_map=result.weight,
        frames=records,
        skipped=skipped,
        method=method,
        method_used=result.method,
        parameters=params,
        normalization=normalization,
        weighting=weighting,
        reference=names[ref_pos],
        tile=tile if normalization == "local" else 0,
    )


def write_stack(result: StackResult, out: str | Path) -> dict[str, Path]:
    """Write the stack and its maps as FITS files, atomically.

    Parameters
    ----------
    result : StackResult
        From :func:`stack_frames`.
    out : str or Path
        A folder (files ``stack.fits``, ``rejection_low.fits``, ``rejection_high.fits``,
        ``coverage.fits``, ``weight.fits`` inside it) or a ``.fits``/``.fit`` path for
        the stack (maps are written beside it as ``<stem>_coverage.fits`` etc.).

    Returns
    -------
    dict
        ``{'stack': path, 'rejection_low': path, ...}``.
    """
    from astropy.io import fits

    out = Path(out)
    if out.suffix.lower() in (".fits", ".fit", ".fts"):
        folder, stem = out.parent, out.stem
        names = {"stack": out}
        prefix = f"{stem}_"
    else:
        folder, prefix = out, ""
        names = {"stack": out / "stack.fits"}
    for key in ("rejection_low", "rejection_high", "coverage", "weight"):
        names[key] = folder / f"{prefix}{key}.fits"
    hdr = result.header()
    arrays = {
        "stack": result.image.astype(np.float32, copy=False),
        "rejection_low": result.rejected_low,
        "rejection_high": result.rejected_high,
        "coverage": result.coverage,
        "weight": result.weight_map.astype(np.float32, copy=False),
    }
    for key, path in names.items():
        h = hdr.copy()
        h["IMAGETYP"] = (key, "astrostack output")
        with atomic_path(path) as tmp:
            fits.writeto(tmp, arrays[key], header=h, overwrite=True, output_verify="fix")
        logger.info("wrote %s", path)
    return names
