"""Turning a run into ``report.html`` and ``session.json``."""

from __future__ import annotations

import csv
import json
import logging
import math
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..io.atomic import atomic_path
from ..report.html import FrameRow, GroupReport, ReportData, write_report
from ..report.stretch import png_bytes, preview_image
from .config import config_to_dict

if TYPE_CHECKING:
    from .run import RunResult
    from .stages import LightFrame

__all__ = [
    "frame_thumbnail",
    "quality_rows",
    "session_dict",
    "write_quality_table",
    "write_run_report",
    "write_session_json",
]

logger = logging.getLogger(__name__)


def frame_thumbnail(light: LightFrame, size: int) -> bytes | None:
    """Auto-stretched PNG thumbnail of a calibrated light (None if unavailable).

    Reads a strided subsample of the memory-mapped calibrated frame, so the cost does
    not depend much on the frame size.  CFA mosaics are sampled with an even stride
    and averaged over 2x2 cells, giving a grey luminance thumbnail.
    """
    if light.cal_path is None or not Path(light.cal_path).exists():
        return None
    try:
        arr = np.load(light.cal_path, mmap_mode="r")
        h, w = arr.shape[-2:]
        step = max(1, int(max(h, w) // (2 * size)))
        if light.meta.bayer is not None and arr.ndim == 2:
            step = max(2, step + step % 2)
            a = np.asarray(arr[::step, ::step], dtype=np.float32)
            b = np.asarray(arr[1::step, 1::step], dtype=np.float32)
            c = np.asarray(arr[::step, 1::step], dtype=np.float32)
            d = np.asarray(arr[1::step, ::step], dtype=np.float32)
            ny = min(x.shape[0] for x in (a, b, c, d))
            nx = min(x.shape[1] for x in (a, b, c, d))
            small = (a[:ny, :nx] + b[:ny, :nx] + c[:ny, :nx] + d[:ny, :nx]) / 4
        else:
            small = np.asarray(arr[..., ::step, ::step], dtype=np.float32)
        return png_bytes(preview_image(small, max_size=size))
    except (OSError, ValueError) as exc:
        logger.warning("%s: no thumbnail (%s)", light.name, exc)
        return None


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def write_run_report(result: RunResult, folder: Path) -> Path:
    """Write ``report.html`` for *result* into its output folder."""
    cfg = result.config
    groups = []
    for g in result.groups:
        rows = []
        for f in g.frames:
            q = f.quality
            rows.append(
                FrameRow(
                    name=f.name,
                    date=f.date,
                    fwhm=_num(q.get("fwhm")),
                    roundness=_num(q.get("roundness")),
                    n_stars=q.get("n_stars"),
                    background=_num(q.get("background")),
                    noise=_num(q.get("noise")),
                    weight=f.weight if f.used else None,
                    used=f.used,
                    reason=f.reason or ("not measured" if not q else ""),
                    thumbnail=frame_thumbnail(f, cfg.output.thumbnail_size),
                )
            )
        preview = None
        if "preview" in g.outputs and Path(g.outputs["preview"]).exists():
            preview = Path(g.outputs["preview"]).read_bytes()
        info = dict(g.stack_info)
        if g.error:
            info["error"] = g.error
        groups.append(
            GroupReport(
                name=g.name,
                rows=rows,
                preview=preview,
                maps=g.maps,
                outputs={k: Path(p).name for k, p in g.outputs.items() if not k.startswith("map")},
                info=info,
            )
        )
    data = ReportData(
        title=f"astrostack: {folder.name}",
        input_dir=str(folder),
        output_dir=str(result.output),
        created=datetime.now(),
        groups=groups,
        parameters=config_to_dict(result.config),
        stages=[s.to_dict() for s in result.stages],
        skipped={**result.skipped, **{k: f"ignored: {v}" for k, v in result.ignored.items()}},
        warnings=list(result.warnings),
        notes=list(result.notes),
        version=__version__,
    )
    return write_report(result.output / "report.html", data)


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj


def session_dict(result: RunResult, folder: Path) -> dict[str, Any]:
    """Everything about the run as JSON-able data (the content of ``session.json``)."""
    groups = []
    for g in result.groups:
        frames = []
        for f in g.frames:
            frames.append(
                {
                    "file": f.name,
                    "path": str(f.path),
                    "date": f.date,
                    "exposure": f.meta.exposure,
                    "used": f.used,
                    "reason": f.reason,
                    "weight": f.weight,
                    "quality": f.quality,
                    "registration": f.registration,
                    "calibration_group": f.plan.light.id,
                    "cache": {"calibrated": f.cal_key, "registration": f.reg_key},
                }
            )
        groups.append(
            {
                "name": g.name,
                "key": g.key,
                "reference": g.reference.name if g.reference else None,
                "outputs": {k: str(p) for k, p in g.outputs.items()},
                "stack": g.stack_info,
                "selection": g.selection.to_dict() if g.selection else None,
                "error": g.error,
                "frames": frames,
            }
        )
    return _clean(
        {
            "astrostack": __version__,
            "created": datetime.now().isoformat(timespec="seconds"),
            "input": str(folder),
            "output": str(result.output),
            "exit_code": result.exit_code,
            "config": config_to_dict(result.config),
            "outputs": {k: str(p) for k, p in result.outputs.items()},
            "groups": groups,
            "skipped": result.skipped,
            "ignored": result.ignored,
            "warnings": result.warnings,
            "notes": result.notes,
            "stages": [s.to_dict() for s in result.stages],
        }
    )


def quality_rows(result: RunResult) -> list[dict[str, Any]]:
    """One row per light of every group: the frame quality table of the session."""
    rows = []
    for g in result.groups:
        for f in g.frames:
            row = {"group": g.name, "file": f.name, "date": f.date,
                   "exposure": f.meta.exposure, "used": f.used, "reason": f.reason or "",
                   "weight": f.weight}  # fmt: skip
            row.update({k: v for k, v in f.quality.items() if not isinstance(v, dict | list)})
            rows.append(_clean(row))
    return rows


def write_quality_table(result: RunResult) -> tuple[Path, Path]:
    """Write ``quality.csv`` and ``quality.json`` (the per-frame table) atomically."""
    rows = quality_rows(result)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    csv_path = result.output / "quality.csv"
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    json_path = result.output / "quality.json"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(rows, indent=1))
    return csv_path, json_path


def write_session_json(result: RunResult, folder: Path) -> Path:
    """Write ``session.json`` atomically and return its path."""
    path = result.output / "session.json"
    text = json.dumps(session_dict(result, folder), indent=1)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path
