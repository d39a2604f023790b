"""``astrostack stack``: integrate frames that are already calibrated and registered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["collect_frames", "register"]

_SUFFIXES = (".npy", ".fits", ".fit", ".fts", ".tif", ".tiff")


def collect_frames(inputs: list[Path]) -> list[Path]:
    """Files given directly, plus the image files (sorted) of any folder given.

    Raises
    ------
    FileNotFoundError
        For an input that does not exist.
    """
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files.extend(
                p for p in sorted(item.iterdir()) if p.is_file() and p.suffix.lower() in _SUFFIXES
            )
        elif item.is_file():
            files.append(item)
        else:
            msg = f"{item}: no such file or folder"
            raise FileNotFoundError(msg)
    return files


def _frame_info(path: Path | None, files: list[Path]) -> list[dict] | None:
    """Per-frame info from a JSON file: a list in frame order or a mapping by file name."""
    if path is None:
        return None
    data = json.loads(path.read_text())
    if isinstance(data, list):
        if len(data) != len(files):
            msg = f"{path}: {len(data)} entries for {len(files)} frames; give one per frame"
            raise ValueError(msg)
        return data
    missing = [f.name for f in files if f.name not in data]
    if missing:
        msg = f"{path}: no entry for {', '.join(missing[:5])}; key the mapping by file name"
        raise ValueError(msg)
    return [data[f.name] for f in files]


def register(app: typer.Typer) -> None:
    """Add the ``stack`` command to *app*."""

    @app.command("stack")
    def stack_command(
        inputs: Annotated[list[Path], typer.Argument(help="Registered frames and/or folders.")],
        output: Annotated[
            Path, typer.Option("--output", "-o", help="Output folder, or a .fits path.")
        ],
        method: Annotated[
            str, typer.Option(help="auto|winsorized|sigma|linear_fit|esd|percentile|minmax|...")
        ] = "auto",
        sigma_low: Annotated[float | None, typer.Option(help="Low rejection sigma.")] = None,
        sigma_high: Annotated[float | None, typer.Option(help="High rejection sigma.")] = None,
        normalization: Annotated[
            str,
            typer.Option(
                help="none|additive|multiplicative|additive+scale|multiplicative+scale|local"
            ),
        ] = "local",
        weighting: Annotated[
            str, typer.Option(help="none|exposure|noise|fwhm|stars, or a product: noise*fwhm")
        ] = "noise",
        memory: Annotated[str, typer.Option(help="Memory budget, e.g. 2GB, 512MB.")] = "2GB",
        scheduler: Annotated[
            str, typer.Option(help="threads|synchronous|processes|tcp://host:port")
        ] = "threads",
        reference: Annotated[int, typer.Option(help="Index of the reference frame.")] = 0,
        info: Annotated[
            Path | None,
            typer.Option(help="JSON with exposure/fwhm/stars per frame (list or by file name)."),
        ] = None,
    ) -> None:
        """Normalise, weight, reject and combine registered frames; write stack.fits and
        the rejection, coverage and weight maps."""
        from ..stack import stack_frames, write_stack

        console = Console(stderr=True)
        try:
            files = collect_frames(inputs)
            frame_info = _frame_info(info, files)
        except (FileNotFoundError, ValueError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
        if not files:
            console.print("[red]error:[/red] no image files (.npy, .fits, .tif) in the inputs")
            raise typer.Exit(2)
        params = {}
        if sigma_low is not None:
            params["sigma_low"] = sigma_low
        if sigma_high is not None:
            params["sigma_high"] = sigma_high
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            tasks = {
                "measure": bar.add_task("measure & normalise", total=len(files)),
                "combine": bar.add_task("reject & combine", total=None),
            }

            def progress(stage: str, done: int, total: int) -> None:
                bar.update(tasks[stage], completed=done, total=total)

            try:
                result = stack_frames(
                    files,
                    method=method,
                    normalization=normalization,
                    weighting=weighting,
                    reference=reference,
                    memory_limit=memory,
                    scheduler=scheduler,
                    frame_info=frame_info,
                    progress=progress,
                    **params,
                )
                written = write_stack(result, output)
            except ValueError as exc:
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(2) from exc
        table = Table(title=f"Stack: {result.method_used} ({result.normalization}, {weighting})")
        for col in ("frame", "scale", "offset", "weight", "noise"):
            table.add_column(col)
        for fr in result.frames:
            table.add_row(
                Path(fr.path).name,
                f"{fr.scale[0]:.4f}",
                f"{fr.offset[0]:.2f}",
                f"{fr.weight[0]:.3f}",
                f"{fr.noise[0]:.3g}",
            )
        Console().print(table)
        for path, reason in result.skipped:
            console.print(f"[yellow]skipped[/yellow] {Path(path).name}: {reason}")
        console.print(f"{len(result.frames)} frames stacked into {written['stack']}")
