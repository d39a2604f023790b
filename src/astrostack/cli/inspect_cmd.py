"""``astrostack inspect DIR``: what is in a folder of frames and how it will be calibrated."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from astrostack.io.session import Session, discover

__all__ = ["inspect", "register", "render_session"]


def _num(value: float | None, unit: str = "", fmt: str = "g") -> str:
    if value is None:
        return "-"
    return f"{value:{fmt}}{unit}"


def _gain(group) -> str:
    parts = []
    if group.gain is not None:
        parts.append(f"gain {group.gain:g}")
    if group.iso is not None:
        parts.append(f"ISO {group.iso}")
    if group.offset is not None:
        parts.append(f"offset {group.offset:g}")
    return ", ".join(parts) or "-"


def _temperature(group) -> str:
    rng = group.temperature_range
    if rng is None:
        return "-"
    if rng[1] - rng[0] < 0.05:
        return f"{rng[0]:.1f}"
    return f"{rng[0]:.1f}..{rng[1]:.1f}"


def render_session(session: Session, console: Console) -> None:
    """Print groups, calibration plans and skipped files of *session* as rich tables.

    Parameters
    ----------
    session
        A session from :func:`~astrostack.io.session.discover`.
    console
        Where to print.
    """
    table = Table(title=f"Frames in {session.folder}", show_lines=False)
    for column in (
        "group",
        "kind",
        "frames",
        "size (WxH)",
        "exposure (s)",
        "gain / ISO",
        "temp (C)",
        "filter",
        "bayer",
        "binning",
    ):
        table.add_column(column, overflow="fold")
    for g in session.groups:
        table.add_row(
            g.id,
            g.kind,
            str(g.count),
            g.size_text,
            _num(g.exposure),
            _gain(g),
            _temperature(g),
            g.filter or "-",
            (g.bayer or "mono") if len(g.shape) == 2 else "RGB",
            f"{g.binning[1]}x{g.binning[0]}",
        )
    console.print(table)
    for g in session.groups:
        for note in g.notes:
            console.print(f"[yellow]{g.id}[/yellow]: {note}")

    if session.plans:
        plans = Table(title="Calibration plan")
        for column in ("lights", "bias", "dark", "dark scale", "flat", "dark-flat", "notes"):
            plans.add_column(column, overflow="fold")
        for p in session.plans:
            plans.add_row(
                f"{p.light.id} ({p.light.count})",
                p.bias.id if p.bias else "-",
                p.dark.id if p.dark else "-",
                _num(p.dark_scale, fmt=".3g"),
                p.flat.id if p.flat else "-",
                p.darkflat.id if p.darkflat else "-",
                "\n".join(p.notes) or "complete",
            )
        console.print(plans)
    if session.skipped:
        skipped = Table(title="Skipped files")
        skipped.add_column("file", overflow="fold")
        skipped.add_column("reason", overflow="fold")
        for path, reason in session.skipped:
            try:
                shown = str(Path(path).relative_to(session.folder))
            except ValueError:
                shown = str(path)
            skipped.add_row(shown, reason)
        console.print(skipped)
    for note in session.notes:
        console.print(f"note: {note}")


def inspect(
    directory: Annotated[Path, typer.Argument(help="Folder holding the night's frames.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the session as JSON.")] = False,
    recursive: Annotated[
        bool, typer.Option("--recursive/--no-recursive", help="Scan sub-folders.")
    ] = True,
    temperature_tolerance: Annotated[
        float,
        typer.Option("--temperature-tolerance", help="Group frames within this many deg C."),
    ] = 2.0,
) -> None:
    """Show the frames found in DIRECTORY, their groups and the calibration plan."""
    try:
        session = discover(
            directory, recursive=recursive, temperature_tolerance=temperature_tolerance
        )
    except FileNotFoundError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from exc
    if as_json:
        typer.echo(session.to_json())
        return
    render_session(session, Console(width=160))


def register(app: typer.Typer) -> None:
    """Add the ``inspect`` command to *app*."""
    app.command("inspect")(inspect)
