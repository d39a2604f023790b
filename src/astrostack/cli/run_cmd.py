"""``astrostack run``, ``astrostack demo`` and ``astrostack config``.

Exit codes (all three commands):

- 0: success;
- 1: nothing usable (no lights, nothing calibrated or registered), or the run stopped
  because the disk is full (completed stages are kept: re-run after freeing space), or
  another error reading or writing files;
- 2: bad usage (unknown option, invalid configuration value, missing folder, an output
  folder that cannot be created or written);
- 3: done, with warnings (images skipped because of errors, a master not built, a group
  failed).

On failure one line saying why goes to standard error.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

__all__ = ["config", "demo", "register", "run"]

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_NOTHING, EXIT_USAGE, EXIT_WARNINGS = 0, 1, 2, 3


def _parse_set(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            msg = f"--set {item!r}: write section.key=value, e.g. --set stack.sigma_high=2.5"
            raise ValueError(msg)
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out[key.strip()] = value
    return out


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.DEBUG if verbose else (logging.ERROR if quiet else logging.WARNING)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    root.setLevel(level)
    if verbose:
        logging.getLogger("numba").setLevel(logging.WARNING)


class _RichProgress:
    """Turns pipeline progress events into one rich progress bar per stage."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}", style="dim"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _RichProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event) -> None:
        task = self.tasks.get(event.stage)
        if event.kind == "start":
            total = event.total or None
            if task is None:
                self.tasks[event.stage] = self.progress.add_task(event.stage, total=total, note="")
            else:
                self.progress.update(task, total=total)
        elif event.kind == "advance" and task is not None:
            self.progress.update(task, completed=event.done, note=event.message[-40:])
        elif event.kind == "end" and task is not None:
            total = self.progress.tasks[task].total or event.done or 1
            self.progress.update(task, total=total, completed=total, note=event.message[-40:])


def _summary(result, console: Console, extra: dict[str, Any] | None = None) -> None:
    for g in result.groups:
        used = [f for f in g.frames if f.used]
        console.print(
            f"[bold]{g.name}[/]: {len(used)} of {len(g.frames)} lights stacked"
            + (f", reference {g.reference.name}" if g.reference else "")
        )
        excluded = [f for f in g.frames if not f.used]
        if excluded:
            t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
            t.add_column("excluded")
            t.add_column("why")
            for f in excluded:
                t.add_row(f.name, f.reason or "-")
            console.print(t)
    t = Table(title="stages", box=None, header_style="bold")
    for col in ("stage", "time s", "peak MB", "computed", "reused"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for s in result.stages:
        t.add_row(s.name, f"{s.seconds:.2f}", f"{s.peak_mb:.0f}", str(s.computed), str(s.reused))
    console.print(t)
    reused = [f"{s.reused} {s.name}" for s in result.stages if s.reused]
    if reused:
        console.print("reused from the cache (inputs unchanged): " + ", ".join(reused))
    for k, v in (extra or {}).items():
        console.print(f"{k}: {v}")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    if result.skipped:
        console.print(f"[yellow]{len(result.skipped)} file(s) skipped[/] (see report.html)")
    for key in ("stack.fits", "report.html"):
        if key in result.outputs:
            console.print(f"{key}: {result.outputs[key]}")
    console.print(f"outputs in {result.output}")


def _json_summary(result, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "exit_code": result.exit_code,
        "output": str(result.output),
        "outputs": {k: str(v) for k, v in result.outputs.items()},
        "groups": [
            {
                "name": g.name,
                "reference": g.reference.name if g.reference else None,
                "used": [f.name for f in g.frames if f.used],
                "excluded": {f.name: f.reason for f in g.frames if not f.used},
            }
            for g in result.groups
        ],
        "skipped": result.skipped,
        "warnings": result.warnings,
        "stages": [s.to_dict() for s in result.stages],
        **(extra or {}),
    }


def _fail(code: int, reason: str) -> None:
    sys.stderr.write(f"astrostack: {reason}\n")
    raise typer.Exit(code)


def _execute(
    folder: Path,
    output: Path | None,
    config_file: Path | None,
    overrides: dict[str, Any],
    force: bool,
    quiet: bool,
    as_json: bool,
    after=None,
) -> None:
    from astrostack.pipeline import OutputFolderError, PipelineError
    from astrostack.pipeline import run as run_pipeline

    err = Console(stderr=True)
    show = not quiet and not as_json
    t0 = time.perf_counter()
    try:
        if show:
            with _RichProgress(err) as bar:
                result = run_pipeline(folder, output, config_file, force=force, progress=bar,
                                      **overrides)  # fmt: skip
        else:
            result = run_pipeline(folder, output, config_file, force=force, **overrides)
    except OutputFolderError as exc:
        _fail(EXIT_USAGE, str(exc))
    except PipelineError as exc:  # includes DiskFullError
        _fail(EXIT_NOTHING, str(exc))
    except (ValueError, FileNotFoundError) as exc:
        _fail(EXIT_USAGE, str(exc))
    except OSError as exc:  # anything else the file system refused: one line, no traceback
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) not in str(exc) else ""
        _fail(
            EXIT_NOTHING, f"{exc}{where}; check the folder and re-run (completed stages are kept)"
        )
    extra = {"wall_time_s": round(time.perf_counter() - t0, 2)}
    if after is not None:
        extra.update(after(result))
    if as_json:
        sys.stdout.write(json.dumps(_json_summary(result, extra), indent=1, default=str) + "\n")
    elif not quiet:
        _summary(result, Console(), extra)
    raise typer.Exit(result.exit_code)


def run(
    folder: Annotated[Path, typer.Argument(help="Folder holding the night's frames.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output folder [DIR/astrostack-output].")
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML configuration file.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Ignore the cache, redo all.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no summary.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")
    ] = False,
    max_fwhm: Annotated[
        float | None, typer.Option(help="Exclude frames above this FWHM (px).")
    ] = None,
    min_stars: Annotated[int | None, typer.Option(help="Exclude frames with fewer stars.")] = None,
    keep_best: Annotated[
        str | None, typer.Option(help="Keep the best fraction of frames, e.g. 90%.")
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            "--rejection",
            help="Rejection: auto, sigma, winsorized, linear_fit, esd, percentile, minmax, ...",
        ),
    ] = None,
    sigma_low: Annotated[float | None, typer.Option(help="Low rejection threshold.")] = None,
    sigma_high: Annotated[float | None, typer.Option(help="High rejection threshold.")] = None,
    normalization: Annotated[str | None, typer.Option(help="local, additive+scale, ...")] = None,
    weighting: Annotated[
        str | None, typer.Option(help="noise, fwhm, stars, none, noise*fwhm")
    ] = None,
    reference: Annotated[str | None, typer.Option(help="Reference light (file name).")] = None,
    color_mode: Annotated[str | None, typer.Option(help="debayer or superpixel.")] = None,
    memory_limit: Annotated[float | None, typer.Option(help="Stacking memory budget, MB.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any option as section.key=value (repeatable)."),
    ] = None,
) -> None:
    """Calibrate, register and stack the frames in FOLDER."""
    _setup_logging(quiet or as_json, verbose)
    try:
        overrides = _parse_set(set_)
        if keep_best is not None:
            from astrostack.pipeline import parse_fraction

            overrides["selection.keep_best"] = parse_fraction(keep_best)
    except ValueError as exc:
        _fail(EXIT_USAGE, str(exc))
    overrides.update(
        {
            "selection.max_fwhm": max_fwhm,
            "selection.min_stars": min_stars,
            "stack.method": method,
            "stack.sigma_low": sigma_low,
            "stack.sigma_high": sigma_high,
            "stack.normalization": normalization,
            "stack.weighting": weighting,
            "registration.reference": reference,
            "color.mode": color_mode,
            "stack.memory_limit_mb": memory_limit,
        }
    )
    _execute(folder, output, config_file, overrides, force, quiet, as_json)


def _truth_summary(frames_dir: Path):
    def after(result) -> dict[str, Any]:
        from astrostack.pipeline.truthcheck import compare_to_truth
        from astrostack.simulate import load_truth

        try:
            truth = load_truth(frames_dir)
            out: dict[str, Any] = {}
            bad = {Path(t.file).name: t.bad for t in truth.lights if t.bad}
            for g in result.groups:
                excluded = {Path(f.name).name for f in g.frames if not f.used}
                out["spoiled frames excluded"] = (
                    f"{len(excluded & set(bad))} of {len(bad)} ({', '.join(sorted(bad.values()))})"
                    if bad else "none simulated"
                )  # fmt: skip
                if g.reference is None or "fits" not in g.outputs:
                    continue
                import numpy as np
                from astropy.io import fits

                image = fits.getdata(g.outputs["fits"])
                cov = fits.getdata(g.outputs["map_coverage"])
                fwhms = [f.quality.get("fwhm") for f in g.frames if f.used]
                fwhms = [v for v in fwhms if v]
                cmp = compare_to_truth(
                    image, truth, g.reference.name, coverage=cov,
                    superpixel=result.config.color.mode == "superpixel"
                    and g.reference.meta.bayer is not None,
                    fwhm=float(np.median(fwhms)) if fwhms else None,
                )  # fmt: skip
                out["correlation with true sky"] = round(cmp.correlation, 5)
                out["SNR vs true sky"] = round(cmp.snr, 2)
            return out
        except Exception as exc:  # the summary must never fail the demo
            logger.warning("no comparison with the truth: %s", exc)
            return {}

    return after


def demo(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Demo folder (frames/ and output/ inside).")
    ] = Path("astrostack-demo"),
    force: Annotated[bool, typer.Option("--force", help="Simulate and process again.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no summary.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Simulate a night (SessionConfig.demo()) into DIR/frames and process it into DIR/output."""
    _setup_logging(quiet or as_json, verbose)
    from astrostack.simulate import SessionConfig, simulate_session

    frames = output / "frames"
    if force or not (frames / "truth" / "truth.json").exists():
        err = Console(stderr=True)
        if not quiet and not as_json:
            err.print(f"simulating the demo night into {frames} ...")
        simulate_session(frames, SessionConfig.demo())
    _execute(frames, output / "output", None, {}, force, quiet, as_json, _truth_summary(frames))


def config(
    folder: Annotated[
        Path | None, typer.Argument(help="Input folder (its astrostack.toml is read).")
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML file instead of DIR's.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="section.key=value (repeatable).")
    ] = None,
) -> None:
    """Print the effective configuration as TOML (defaults < file < --set)."""
    from astrostack.pipeline import config_to_toml, resolve_config

    if folder is not None and not folder.is_dir():
        _fail(EXIT_USAGE, f"{folder}: not a folder; give the folder that holds the frames")
    try:
        cfg = resolve_config(folder, config_file, _parse_set(set_))
    except ValueError as exc:
        _fail(EXIT_USAGE, str(exc))
    sys.stdout.write(config_to_toml(cfg))


def register(app: typer.Typer) -> None:
    """Add ``run``, ``demo`` and ``config`` to *app*."""
    app.command("run")(run)
    app.command("demo")(demo)
    app.command("config")(config)
