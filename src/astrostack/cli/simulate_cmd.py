"""``astrostack simulate OUTDIR``: write a synthetic night with its ground truth."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register", "simulate"]

logger = logging.getLogger(__name__)

_PRESETS = ("demo", "hard", "small")


def _parse_size(size: str) -> tuple[int, int]:
    """``'800x600'`` (width x height) -> ``(600, 800)`` (rows, columns)."""
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        msg = f"--size {size!r}: use WIDTHxHEIGHT, e.g. 800x600"
        raise typer.BadParameter(msg) from None
    return height, width


def simulate(
    outdir: Annotated[
        Path, typer.Argument(help="Folder to write bias/ darks/ flats/ lights/ truth/.")
    ],
    preset: Annotated[str, typer.Option("--preset", "-p", help="demo, hard or small.")] = "demo",
    size: Annotated[
        str | None, typer.Option("--size", help="Frame size WIDTHxHEIGHT, e.g. 800x600.")
    ] = None,
    lights: Annotated[int | None, typer.Option("--lights", min=1, help="Number of lights.")] = None,
    bayer: Annotated[
        str | None,
        typer.Option("--bayer", help="Simulate a colour sensor: RGGB, BGGR, GRBG or GBRG."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed (same seed, same files).")
    ] = None,
) -> None:
    """Simulate a night of raw frames (bias, darks, flats, lights) with exact ground truth."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ..simulate import SessionConfig, session_steps, simulate_session

    if preset not in _PRESETS:
        msg = f"--preset {preset!r}: use one of {', '.join(_PRESETS)}"
        raise typer.BadParameter(msg)
    overrides: dict = {}
    if size is not None:
        overrides["shape"] = _parse_size(size)
    if lights is not None:
        overrides["n_lights"] = lights
    if bayer is not None:
        overrides["bayer"] = bayer.upper()
    if seed is not None:
        overrides["seed"] = seed
    try:
        config = getattr(SessionConfig, preset)(**overrides)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    with Progress(
        TextColumn("[bold]simulate[/bold] {task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task("", total=session_steps(config))

        def step(description: str) -> None:
            bar.update(task, advance=1, description=description)

        truth = simulate_session(outdir, config, progress=step)
    bad = ", ".join(f"light {i}: {r}" for i, r in sorted(truth.bad_lights.items())) or "none"
    typer.echo(
        f"wrote {config.n_bias} bias, {config.n_darks} darks, {config.n_flats} flats, "
        f"{config.n_darkflats} dark-flats, {config.n_lights} lights "
        f"({config.shape[1]}x{config.shape[0]}, {config.bayer or 'mono'}) to {outdir}\n"
        f"bad lights: {bad}; ground truth in {outdir / 'truth'}"
    )


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to *app*."""
    app.command("simulate")(simulate)
