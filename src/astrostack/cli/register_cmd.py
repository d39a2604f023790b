"""``astrostack register``: align calibrated frames onto a reference."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["register"]

_MODELS = ("auto", "shift", "rigid", "similarity", "affine", "homography")
_INTERP = ("lanczos3", "bicubic", "bilinear")


def register(app: typer.Typer) -> None:
    """Add the ``register`` command to *app*."""

    @app.command("register")
    def register_command(
        inputs: list[Path] = typer.Argument(
            ..., metavar="FILES_OR_DIR...", help="Calibrated frames and/or folders."
        ),
        output: Path = typer.Option(..., "--output", "-o", help="Output folder."),
        reference: Path | None = typer.Option(
            None, "--reference", "-r", help="Reference frame (default: best by quality)."
        ),
        model: str = typer.Option("auto", "--model", "-m", help="|".join(_MODELS)),
        interpolation: str = typer.Option(
            "lanczos3", "--interpolation", "-i", help="|".join(_INTERP)
        ),
        max_stars: int = typer.Option(200, "--max-stars", help="Stars used per frame."),
        threshold: float = typer.Option(5.0, "--threshold", help="Detection threshold (sigma)."),
    ) -> None:
        """Detect stars, measure quality, match, warp; write registered frames (.npy),
        quality.csv/json and transforms.json into OUTPUT."""
        from ..register.batch import collect_inputs, register_files

        console = Console(stderr=True)
        if model not in _MODELS:
            raise typer.BadParameter(f"--model must be one of {', '.join(_MODELS)}")
        if interpolation not in _INTERP:
            raise typer.BadParameter(f"--interpolation must be one of {', '.join(_INTERP)}")
        try:
            files = collect_inputs(inputs)
        except FileNotFoundError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
        if not files:
            console.print("[red]error:[/red] no image files found in the inputs")
            raise typer.Exit(2)
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console, transient=True,
        ) as bar:  # fmt: skip
            tasks = {
                "measure": bar.add_task("stars & quality", total=len(files)),
                "register": bar.add_task("register & warp", total=len(files)),
            }
            try:
                result = register_files(
                    files, output, reference=reference, model=model,
                    interpolation=interpolation, max_stars=max_stars, threshold=threshold,
                    progress=lambda stage, _p: bar.advance(tasks[stage]),
                )  # fmt: skip
            except ValueError as exc:
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(2) from exc
        table = Table(title=f"Registration (reference: {result.reference})")
        for col in ("frame", "method", "model", "stars", "rms px", "FWHM", "flag"):
            table.add_column(col)
        quality = {q.name: q for q in result.quality}
        for path, reg in result.registrations.items():
            q = quality.get(path.name)
            flag = q.reasons if q is not None and q.flagged else ""
            if reg:
                rms = "" if reg.method == "phase" else f"{reg.rms:.3f}"
                table.add_row(path.name, reg.method, reg.model, str(reg.n_matches), rms,
                              f"{q.fwhm:.2f}" if q else "", flag)  # fmt: skip
            else:
                table.add_row(path.name, "[red]failed[/red]", "", "", "", "", reg.reason)
        Console().print(table)
        n_ok = len(result.registered)
        console.print(f"{n_ok} of {len(files)} frames registered into {output}")
        for path, reason in result.skipped.items():
            console.print(f"[yellow]skipped[/yellow] {path.name}: {reason}")
        if n_ok == 0:
            raise typer.Exit(1)
