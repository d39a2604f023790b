"""Stacking one group and writing its files: FITS with provenance, TIFF, preview, maps."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io import write_fits, write_tiff
from ..register import estimate_noise
from ..report.stretch import write_preview
from ..stack import stack_frames
from .colour import finish_group_colour
from .config import PipelineConfig, config_to_dict

if TYPE_CHECKING:
    from .run import GroupResult

__all__ = ["group_name", "stack_header", "write_group_outputs"]

logger = logging.getLogger(__name__)

_KEY_FIELDS = ("target", "filter", "camera", "shape", "binning", "bayer")


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9.+-]+", "-", str(text)).strip("-")
    return s or "x"


def group_name(key: tuple, all_keys: list[tuple]) -> str:
    """Short, file-name-safe name of a stack group.

    With one group it is its filter (or ``'stack'``); with several, the fields that
    differ between groups (filter, camera, target, ...) joined by ``_``.
    """
    if len(all_keys) <= 1:
        return _slug(key[1]) if key[1] else "stack"
    parts = []
    for i, _field in enumerate(_KEY_FIELDS):
        values = {k[i] for k in all_keys}
        if len(values) > 1:
            v = key[i]
            if isinstance(v, tuple):
                v = "x".join(str(n) for n in v)
            parts.append(_slug(v) if v else "none")
    return "_".join(parts) or "stack"


def stack_header(
    g: GroupResult, res: Any, cfg: PipelineConfig, folder: Path, master_sets: dict
) -> tuple[dict[str, Any], list[str]]:
    """FITS keywords and HISTORY lines recording how the stack of *g* was made."""
    ref = g.reference
    own = g.best if g.best is not None else ref
    used = g.used
    meta = own.meta
    cards: dict[str, Any] = {}
    history: list[str] = []
    for card in res.header().cards:
        if card.keyword in ("HISTORY", "COMMENT", ""):
            history.append(str(card.value))
        else:
            cards[card.keyword] = card.value
    exposures = [f.meta.exposure for f in used if f.meta.exposure]
    dates = sorted(f.date for f in used if f.date is not None)
    cards.update(
        {
            "OBJECT": meta.target,
            "FILTER": meta.filter,
            "INSTRUME": meta.camera,
            "TELESCOP": meta.header.get("TELESCOP"),
            "EXPTIME": float(np.sum(exposures)) if exposures else None,
            "TOTALEXP": float(np.sum(exposures)) if exposures else None,
            "DATE-OBS": dates[0].isoformat() if dates else None,
            "DATE-END": dates[-1].isoformat() if dates else None,
            "XPIXSZ": meta.pixel_size_um,
            "FOCALLEN": meta.focal_length_mm,
            "ASGROUP": g.name,
            "ASREF": ref.name[-68:],
            "ASSTKREF": own.name[-68:],
            "ASCOLOR": (cfg.color.mode if meta.bayer else "mono"),
            "ASDEBAY": (cfg.color.debayer if meta.bayer and cfg.color.mode == "debayer" else None),
            "ASINTERP": cfg.registration.interpolation,
            "ASNLIGHT": len(g.frames),
            "ASNUSED": len(used),
            "ASCREATD": datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
        }
    )
    history.append(f"astrostack run on {folder}")
    for f in used:
        reg = f.registration or {}
        history.append(
            f"light {f.name} w={f.weight if f.weight is not None else 1:.4g} "
            f"reg={reg.get('method', '-')} rms={reg.get('rms') or 0:.3f}"
        )
    for f in g.frames:
        if not f.used:
            history.append(f"excluded {f.name}: {f.reason}"[:200])
    seen = set()
    for f in used:
        ms = master_sets.get(id(f.plan))
        if ms is None or id(ms) in seen:
            continue
        seen.add(id(ms))
        for kind, path in ms.paths.items():
            history.append(f"master {kind} {path.name} for {f.plan.light.id}")
    for section, values in config_to_dict(cfg).items():
        history.append(f"config [{section}] " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return {k: v for k, v in cards.items() if v is not None}, history


def _file_names(g: GroupResult, single: bool) -> dict[str, str]:
    suffix = "" if single else f"_{g.name}"
    return {
        "fits": f"stack{suffix}.fits",
        "tif": f"stack{suffix}.tif",
        "preview": f"preview{suffix}.png",
    }


def write_group_outputs(
    g: GroupResult,
    output: Path,
    cfg: PipelineConfig,
    single: bool,
    folder: Path,
    master_sets: dict,
) -> None:
    """Stack the used, registered frames of *g* and write its files into *output*.

    Fills ``g.outputs``, ``g.stack_info`` and ``g.maps``; sets each frame's weight
    and excludes frames the stacker could not use.
    """
    used = g.used
    ref_index = used.index(g.best) if g.best in used else 0
    frame_info = [
        {"exposure": f.meta.exposure, "fwhm": f.quality.get("fwhm"),
         "stars": f.quality.get("n_stars")}
        for f in used
    ]  # fmt: skip
    st = cfg.stack
    res = stack_frames(
        [f.reg_path for f in used],
        method=st.method,
        normalization=st.normalization,
        weighting=st.weighting,
        reference=ref_index,
        memory_limit=int(st.memory_limit_mb * 2**20),
        scheduler=st.scheduler,
        frame_info=frame_info,
        sigma_low=st.sigma_low,
        sigma_high=st.sigma_high,
        stats_cache=output / "cache" / "stackstats",
    )
    by_path = {str(Path(f.reg_path)): f for f in used}
    for rec in res.frames:
        f = by_path.get(str(Path(rec.path)))
        if f is not None:
            f.weight = float(np.mean(rec.weight))
    for path, reason in res.skipped:
        f = by_path.get(str(Path(path)))
        if f is not None:
            f.used = False
            f.reason = f"not stacked: {reason}"
    finished = finish_group_colour(res.image, g.reference.meta, cfg.color)
    image = finished.image
    names = _file_names(g, single)
    cards, history = stack_header(g, res, cfg, folder, master_sets)
    cards.update(finished.cards)
    fits_path = write_fits(output / names["fits"], image, header=cards, history=history)
    finite = image[np.isfinite(image)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    tif_path = write_tiff(
        output / names["tif"], image, bits=cfg.output.tiff_bits,
        lo=lo if cfg.output.tiff_bits == 16 else None,
        hi=(hi if hi > lo else lo + 1.0) if cfg.output.tiff_bits == 16 else None,
    )  # fmt: skip
    preview = write_preview(
        output / names["preview"], image, max_size=cfg.output.preview_max_size,
        linked=cfg.output.preview_linked,
    )  # fmt: skip
    g.outputs = {"fits": fits_path, "tif": tif_path, "preview": preview}
    if not single and not (output / "preview.png").exists():
        g.outputs["preview_main"] = write_preview(
            output / "preview.png", image, max_size=cfg.output.preview_max_size,
            linked=cfg.output.preview_linked,
        )  # fmt: skip

    # Maps: coverage and rejection counts (summed over colour channels).
    def plane(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32)
        return a if a.ndim == 2 else a.mean(axis=0)

    g.maps = {
        "coverage (frames kept per pixel)": plane(res.coverage),
        "rejected low (per pixel)": plane(res.rejected_low),
        "rejected high (per pixel)": plane(res.rejected_high),
    }
    maps_dir = output / "maps"
    stem = Path(names["fits"]).stem
    for key, arr in (("coverage", res.coverage), ("rejected_low", res.rejected_low),
                     ("rejected_high", res.rejected_high)):  # fmt: skip
        g.outputs[f"map_{key}"] = write_fits(maps_dir / f"{stem}_{key}.fits", arr, dtype=None)
    lum = image if image.ndim == 2 else np.nanmean(image, axis=0)
    stack_noise = estimate_noise(lum, max_samples=200_000)  # to 0.3 %, half the time
    ref_noise = g.best.quality.get("noise") if g.best is not None else None
    total_values = float(res.coverage.sum(dtype=np.float64) + res.rejected_low.sum(dtype=np.float64)
                         + res.rejected_high.sum(dtype=np.float64))  # fmt: skip
    g.stack_info = {
        "frames stacked": len(res.frames),
        "registration reference": g.reference.name,
        "stack reference": g.best.name if g.best is not None else None,
        "rejection": f"{res.method} ({res.method_used})",
        "normalization": res.normalization,
        "weighting": res.weighting,
        "rejected low %": 100.0
        * float(res.rejected_low.sum(dtype=np.float64))
        / max(total_values, 1),
        "rejected high %": 100.0
        * float(res.rejected_high.sum(dtype=np.float64))
        / max(total_values, 1),
        "total exposure s": float(sum(f.meta.exposure or 0 for f in g.used)),
        "background noise (ADU)": stack_noise,
        "noise vs reference frame": (stack_noise / ref_noise) if ref_noise else None,
        "shape": "x".join(str(n) for n in image.shape),
    }
    g.stack_info.update(finished.summary())
    logger.info("group %s: stacked %d frames into %s", g.name, len(res.frames), fits_path)
