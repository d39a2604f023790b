"""Registering a set of calibrated frame files: quality, reference, matching, warping.

Two passes keep memory to one frame at a time:

1. every frame is read, its detection image built (mono; mean of colour planes;
   2x2 CFA superpixels for a mosaic), stars detected and quality measured;
   the quality table is written and outliers flagged;
2. the reference (named, or the best unflagged frame) is read again and every
   frame is re-read, registered against the reference stars (phase correlation
   as fallback) and warped once into ``registered/<stem>.npy`` (float32, NaN
   outside the footprint).

CFA mosaics are registered and warped as 2x2 superpixel RGB ``[3, H/2, W/2]``
(R, mean of the two G, B): interpolating a mosaic across colours would mix them.
Their transforms are stored both for the superpixel grid and for native pixels.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import IMAGE_EXTENSIONS, FrameReadError, atomic_path, read_frame
from .quality import QualityTable, measure_quality
from .register import FailedRegistration, Reference, Registration, register_frame
from .stars import StarTable, binned_to_native, detect_stars, luminance
from .warp import METHODS, warp_to_file

__all__ = ["BatchResult", "collect_inputs", "load_for_registration", "register_files"]

logger = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """Outcome of :func:`register_files`.

    Attributes
    ----------
    reference : Path or None
        The reference frame.
    registered : dict
        Input path to written ``.npy`` path, for frames that registered.
    registrations : dict
        Input path to :class:`Registration` or :class:`FailedRegistration`.
    skipped : dict
        Input path to the reason it was not used (unreadable, failed).
    quality : QualityTable
        Quality of every readable frame.
    """

    reference: Path | None = None
    registered: dict[Path, Path] = field(default_factory=dict)
    registrations: dict[Path, Registration | FailedRegistration] = field(default_factory=dict)
    skipped: dict[Path, str] = field(default_factory=dict)
    quality: QualityTable = field(default_factory=QualityTable)


def collect_inputs(items: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders into a sorted list of image files (FITS, TIFF, RAW, .npy).

    Raises
    ------
    FileNotFoundError
        If an item does not exist.
    """
    out: list[Path] = []
    exts = set(IMAGE_EXTENSIONS) | {".npy"}
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(q for q in sorted(p.iterdir()) if q.is_file() and q.suffix.lower() in exts)
        elif p.is_file():
            out.append(p)
        else:
            msg = f"{p}: no such file or folder; check the path"
            raise FileNotFoundError(msg)
    return sorted(dict.fromkeys(out))


def load_for_registration(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read a frame; return ``(warp_data, detect_image, info)``.

    ``warp_data`` is what gets resampled (``[y, x]``, ``[c, y, x]``, or the
    superpixel RGB of a mosaic); ``detect_image`` is 2-D on the same grid; ``info``
    holds ``binned`` (bool), ``saturation`` and ``pixel_scale`` (arcsec/px of the grid).

    Raises
    ------
    FrameReadError
        If the file cannot be read.
    """
    if path.suffix.lower() == ".npy":
        try:
            data = np.load(path, mmap_mode="r").astype(np.float32)
        except (OSError, ValueError) as exc:
            raise FrameReadError(path, f"cannot read .npy ({exc}); re-create the file") from exc
        bayer, sat, scale = None, None, None
    else:
        frame = read_frame(path)
        data, bayer = frame.data, frame.meta.bayer
        sat, scale = frame.meta.white_level, frame.meta.pixel_scale_arcsec
    if data.ndim == 2 and bayer:
        ny, nx = data.shape[0] // 2 * 2, data.shape[1] // 2 * 2
        cells: dict[str, list[np.ndarray]] = {"R": [], "G": [], "B": []}
        for i, ch in enumerate(bayer.upper()):
            cells[ch].append(data[i // 2 : ny : 2, i % 2 : nx : 2])
        rgb = np.stack([np.mean(cells[c], axis=0) for c in "RGB"]).astype(np.float32)
        detect = luminance(data, bayer, mode="bin")
        info = {"binned": True, "saturation": 4 * sat if sat else None,
                "pixel_scale": 2 * scale if scale else None}  # fmt: skip
        return rgb, detect, info
    if data.ndim not in (2, 3):
        raise FrameReadError(path, f"unsupported array shape {data.shape}; expected [y, x]")
    detect = luminance(data)
    return data, detect, {"binned": False, "saturation": sat, "pixel_scale": scale}


def register_files(
    inputs: Sequence[Path],
    out_dir: str | Path,
    *,
    reference: Path | None = None,
    model: str = "auto",
    interpolation: str = "lanczos3",
    max_stars: int = 200,
    threshold: float = 5.0,
    progress: Callable[[str, Path], None] | None = None,
) -> BatchResult:
    """Register and warp frame files; write quality, transforms and registered frames.

    Parameters
    ----------
    inputs : sequence of Path
        Calibrated frames.
    out_dir : Path
        Output folder: ``quality.csv``, ``quality.json``, ``transforms.json`` and
        ``registered/<stem>.npy``.
    reference : Path, optional
        Reference frame; picked by quality when ``None``.
    model : str
        Transform model (``'auto'``, ``'shift'``, ``'rigid'``, ``'similarity'``,
        ``'affine'``, ``'homography'``).
    interpolation : str
        ``'lanczos3'``, ``'bicubic'`` or ``'bilinear'``.
    max_stars, threshold : int, float
        Star detection settings.
    progress : callable, optional
        Called as ``progress(stage, path)`` after each frame of each pass.

    Returns
    -------
    BatchResult
    """
    if interpolation not in METHODS:
        msg = f"unknown interpolation {interpolation!r}; use one of {', '.join(METHODS)}"
        raise ValueError(msg)
    out_dir = Path(out_dir)
    result = BatchResult()
    stars: dict[Path, StarTable] = {}
    names: list[Path] = []
    if reference is not None and Path(reference) not in inputs:
        inputs = [Path(reference), *inputs]
    for path in inputs:
        try:
            _, detect, info = load_for_registration(path)
            table = detect_stars(detect, threshold=threshold, max_stars=max(max_stars, 500),
                                 saturation=info["saturation"], max_ellipticity=None)  # fmt: skip
            q = measure_quality(detect, path.name, stars=table, saturation=info["saturation"],
                                pixel_scale=info["pixel_scale"])  # fmt: skip
            result.quality.frames.append(q)
            keep = table.ellipticity <= 0.5
            stars[path] = table.select(np.nonzero(keep)[0][:max_stars])
            names.append(path)
        except Exception as exc:  # one bad frame never kills a run
            reason = exc.reason if isinstance(exc, FrameReadError) else str(exc)
            result.skipped[path] = f"unreadable: {reason}"
            logger.warning("%s: skipped: %s", path, reason)
        if progress:
            progress("measure", path)
    if not names:
        return result
    result.quality.flag_outliers()
    result.quality.to_csv(out_dir / "quality.csv")
    result.quality.to_json(out_dir / "quality.json")

    if reference is not None and Path(reference) in stars:
        ref_path = Path(reference)
    elif reference is not None:
        msg = f"{reference}: the reference frame could not be read; pick another with --reference"
        raise ValueError(msg)
    else:
        ref_path = names[result.quality.best_index()]
    result.reference = ref_path
    ref_data, ref_detect, _ref_info = load_for_registration(ref_path)
    ref = Reference(stars=stars[ref_path], name=ref_path.name)
    ref.phase_image = Reference.from_image(ref_detect, max_stars=3).phase_image
    out_shape = ref_data.shape[-2:]
    del ref_data

    records = {}
    for path in names:
        info: dict = {}
        try:
            data, detect, info = load_for_registration(path)
            reg = register_frame(stars[path], ref, model=model, frame_image=detect, name=path.name)
            if reg:
                target = out_dir / "registered" / f"{path.stem}.npy"
                warp_to_file(data, reg.matrix, out_shape, target, method=interpolation)
                result.registered[path] = target
        except Exception as exc:
            reg = FailedRegistration(f"{path.name}: {exc}")
        result.registrations[path] = reg
        rec = {"file": str(path), **reg.to_dict()}
        if reg and info.get("binned"):
            rec["grid"] = "cfa_superpixel_2x2"
            rec["matrix_native"] = binned_to_native(reg.matrix).tolist()
        if reg:
            rec["output"] = str(result.registered[path])
        else:
            result.skipped[path] = reg.reason
        records[path.name] = rec
        if progress:
            progress("register", path)
    doc = {"reference": str(ref_path), "model": model, "interpolation": interpolation,
           "output_shape": list(out_shape), "frames": records}  # fmt: skip
    with atomic_path(out_dir / "transforms.json") as tmp, open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1)
    return result
