"""The run report: one self-contained HTML file (inline CSS, base64 PNG images).

Nothing in the page refers to another file or to the network, so it can be
mailed, archived or opened offline as is.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_path
from .plots import image_map_png, metrics_plot_png

__all__ = ["FrameRow", "GroupReport", "ReportData", "render_report", "write_report"]

logger = logging.getLogger(__name__)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;
 background:#15171c;color:#e4e6eb;font-size:14px}
main{max-width:1200px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:24px;margin:8px 0}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #333}
h3{font-size:16px;margin-top:20px}
table{border-collapse:collapse;margin:8px 0;font-size:12.5px}
th,td{padding:3px 8px;white-space:nowrap;border-bottom:1px solid #2a2d35;text-align:right;
 vertical-align:middle}
th{background:#22252d;position:sticky;top:0}td.l,th.l{text-align:left}
tr.excluded td{color:#ff8a80}td.status{white-space:normal}tr.used td.status{color:#81c784}
img{max-width:100%;border:1px solid #333}img.thumb{width:96px;border:0}
.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0}
figcaption{font-size:12px;color:#aab}.muted{color:#99a}.warn{color:#ffb74d}
code{background:#22252d;padding:1px 4px;border-radius:3px}
.summary td{text-align:left}
"""


def _b64_img(png: bytes | None, alt: str, cls: str = "") -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        if not np.isfinite(v):
            return "–"
        return f"{float(v):.{digits}f}"
    return html.escape(str(v))


@dataclass
class FrameRow:
    """One light in the frame table."""

    name: str
    date: datetime | None = None
    fwhm: float | None = None
    roundness: float | None = None  # minor / major axis ratio of the stars (1 = round)
    n_stars: int | None = None
    background: float | None = None
    noise: float | None = None
    weight: float | None = None
    used: bool = False
    reason: str = ""
    thumbnail: bytes | None = None  # PNG


@dataclass
class GroupReport:
    """One stacked group (one filter / camera) of the report."""

    name: str
    rows: list[FrameRow] = field(default_factory=list)
    preview: bytes | None = None  # PNG of the stretched stack
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # title -> 2-D map
    outputs: dict[str, str] = field(default_factory=dict)  # label -> path
    info: dict[str, Any] = field(default_factory=dict)  # reference, method, SNR, ...


@dataclass
class ReportData:
    """Everything the report shows."""

    title: str = "astrostack report"
    input_dir: str = ""
    output_dir: str = ""
    created: datetime | None = None
    groups: list[GroupReport] = field(default_factory=list)
    parameters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    stages: Sequence[Mapping[str, Any]] = field(default_factory=list)
    skipped: Mapping[str, str] = field(default_factory=dict)  # file -> reason
    warnings: Sequence[str] = field(default_factory=list)
    notes: Sequence[str] = field(default_factory=list)  # calibration plan remarks
    version: str = ""


def _frame_table(rows: Sequence[FrameRow]) -> str:
    head = (
        "<tr><th class='l'>#</th><th class='l'>frame</th><th class='l'>time (UTC)</th>"
        "<th>FWHM px</th><th>roundness</th><th>stars</th><th>background</th><th>noise</th>"
        "<th>weight</th><th class='l'>used</th><th></th></tr>"
    )
    body = []
    for i, r in enumerate(rows, 1):
        cls = "used" if r.used else "excluded"
        status = "used" if r.used else f"excluded: {html.escape(r.reason)}"
        date = r.date.strftime("%Y-%m-%d %H:%M:%S") if r.date else "–"
        body.append(
            f"<tr class='{cls}'><td class='l'>{i}</td><td class='l'>{html.escape(r.name)}</td>"
            f"<td class='l'>{date}</td><td>{_fmt(r.fwhm)}</td><td>{_fmt(r.roundness)}</td>"
            f"<td>{_fmt(r.n_stars)}</td><td>{_fmt(r.background, 1)}</td>"
            f"<td>{_fmt(r.noise, 2)}</td><td>{_fmt(r.weight, 3)}</td>"
            f"<td class='l status'>{status}</td>"
            f"<td>{_b64_img(r.thumbnail, r.name, 'thumb')}</td></tr>"
        )
    return f"<table class='frames'>{head}{''.join(body)}</table>"


def _metrics_section(rows: Sequence[FrameRow]) -> str:
    if not rows:
        return ""
    dates = [r.date for r in rows]
    if all(d is not None for d in dates):
        t0 = min(dates)
        x = [(d - t0).total_seconds() / 60.0 for d in dates]
        xlabel = "minutes since first frame"
    else:
        x = list(range(1, len(rows) + 1))
        xlabel = "frame"
    metrics = {
        "fwhm": [np.nan if r.fwhm is None else r.fwhm for r in rows],
        "roundness": [np.nan if r.roundness is None else r.roundness for r in rows],
        "n_stars": [np.nan if r.n_stars is None else r.n_stars for r in rows],
        "background": [np.nan if r.background is None else r.background for r in rows],
        "noise": [np.nan if r.noise is None else r.noise for r in rows],
        "weight": [np.nan if r.weight is None else r.weight for r in rows],
    }
    png = metrics_plot_png(x, metrics, [r.used for r in rows], xlabel=xlabel)
    return f"<h3>Metrics over time</h3>{_b64_img(png, 'metrics over time')}"


def _fmt_auto(v: Any) -> str:
    if isinstance(v, float | np.floating) and np.isfinite(v):
        return f"{float(v):.1f}" if abs(v) >= 1000 else f"{float(v):.4g}"
    return _fmt(v)


def _kv_table(items: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td class='l'>{html.escape(str(k))}</td><td class='l'>{_fmt_auto(v)}</td></tr>"
        for k, v in items.items()
    )
    return f"<table class='summary'>{rows}</table>"


def _group_section(g: GroupReport) -> str:
    n_used = sum(r.used for r in g.rows)
    parts = [
        f"<h2>Group {html.escape(g.name)}</h2>",
        f"<p>{n_used} of {len(g.rows)} lights stacked.</p>",
    ]
    if g.info:
        parts.append(_kv_table(g.info))
    if g.outputs:
        parts.append(
            "<p>Outputs: "
            + ", ".join(
                f"{html.escape(k)} <code>{html.escape(v)}</code>" for k, v in g.outputs.items()
            )
            + "</p>"
        )
    if g.preview:
        parts.append(
            f"<figure>{_b64_img(g.preview, 'stack preview')}"
            "<figcaption>Stack, automatic screen stretch (linear data unchanged)</figcaption>"
            "</figure>"
        )
    parts.append("<h3>Frames</h3>")
    parts.append(_frame_table(g.rows))
    parts.append(_metrics_section(g.rows))
    if g.maps:
        parts.append("<h3>Rejection and coverage</h3><div class='grid'>")
        for title, arr in g.maps.items():
            png = image_map_png(
                arr, title, cmap="magma" if "reject" in title else "viridis", label="frames"
            )
            parts.append(f"<figure>{_b64_img(png, title)}</figure>")
        parts.append("</div>")
    return "\n".join(parts)


def _stages_table(stages: Sequence[Mapping[str, Any]]) -> str:
    if not stages:
        return ""
    head = (
        "<tr><th class='l'>stage</th><th>time s</th><th>peak memory MB</th>"
        "<th>computed</th><th>reused</th><th class='l'>note</th></tr>"
    )
    rows = "".join(
        f"<tr><td class='l'>{html.escape(str(s.get('name', '')))}</td>"
        f"<td>{_fmt(s.get('seconds'), 2)}</td><td>{_fmt(s.get('peak_mb'), 0)}</td>"
        f"<td>{_fmt(s.get('computed'))}</td><td>{_fmt(s.get('reused'))}</td>"
        f"<td class='l'>{html.escape(str(s.get('note', '')))}</td></tr>"
        for s in stages
    )
    return f"<h2>Stages</h2><table>{head}{rows}</table>"


def _params_section(params: Mapping[str, Mapping[str, Any]]) -> str:
    if not params:
        return ""
    parts = ["<h2>Parameters</h2><div class='grid'>"]
    for section, values in params.items():
        parts.append(f"<div><h3>[{html.escape(section)}]</h3>{_kv_table(values)}</div>")
    parts.append("</div>")
    return "".join(parts)


def render_report(data: ReportData) -> str:
    """The report as one HTML document (string) with everything inlined."""
    created = data.created or datetime.now()
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(data.title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{html.escape(data.title)}</h1>",
        f"<p class='muted'>astrostack {html.escape(data.version)} · "
        f"{created.strftime('%Y-%m-%d %H:%M:%S')} · input <code>{html.escape(data.input_dir)}"
        f"</code> · output <code>{html.escape(data.output_dir)}</code></p>",
    ]
    if data.warnings:
        parts.append(
            "<ul>"
            + "".join(f"<li class='warn'>{html.escape(w)}</li>" for w in data.warnings)
            + "</ul>"
        )
    if data.notes:
        parts.append(
            "<h2>Calibration</h2><ul>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
            + "</ul>"
        )
    for g in data.groups:
        parts.append(_group_section(g))
    if data.skipped:
        parts.append(
            "<h2>Skipped files</h2><table>"
            + "".join(
                f"<tr><td class='l'>{html.escape(k)}</td><td class='l'>{html.escape(v)}</td></tr>"
                for k, v in data.skipped.items()
            )
            + "</table>"
        )
    parts.append(_stages_table(data.stages))
    parts.append(_params_section(data.parameters))
    parts.append("</main></body></html>")
    return "\n".join(p for p in parts if p)


def write_report(path: str | Path, data: ReportData) -> Path:
    """Render *data* and write it to *path* atomically (UTF-8)."""
    path = Path(path)
    text = render_report(data)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    logger.info("wrote report %s (%.0f kB)", path, len(text) / 1024)
    return path
