"""``astrostack masters DIR`` and ``astrostack calibrate DIR``: masters and calibrated lights.

Both commands discover the frames in DIR (:func:`astrostack.io.discover`), build the masters
each light group's calibration plan asks for (reusing those whose inputs and parameters did
not change) and print a summary; ``calibrate`` then writes every light, calibrated and
cosmetically corrected, as float32 FITS under ``OUT/calibrated/<group>/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = [
    "MasterBuild",
    "build_session_masters",
    "build_unplanned_masters",
    "calibrate",
    "masters",
    "register",
]

logger = logging.getLogger(__name__)

# Header keywords not copied from a raw light to its calibrated file (structure, scaling).
_STRUCTURAL = {
    "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "BZERO", "BSCALE",
    "BLANK", "PCOUNT", "GCOUNT", "CHECKSUM", "DATASUM", "DATAMIN", "DATAMAX", "_HDU",
}  # fmt: skip


@dataclass
class MasterBuild:
    """One master of a session: what it is, where it went, and whether it was reused."""

    kind: str
    group: str
    path: Path
    master: Any  # astrostack.calibrate.Master
    reused: bool
    total: int  # frames in the group


@dataclass
class _PlanMasters:
    bias: Any = None  # Master, float (constant offset) or None
    dark: Any = None
    darkflat: Any = None
    flat: Any = None
    builds: list[MasterBuild] = field(default_factory=list)


def _build(
    kind: str,
    group,
    folder: Path,
    cache: dict,
    upstream: str,
    options: dict[str, Any],
    rebuild: bool,
) -> MasterBuild:
    from astrostack.calibrate import load_or_build_master

    name = f"master_{kind}_{group.id}{('_' + upstream) if upstream else ''}.fits"
    key = (kind, group.id, upstream)
    if key in cache:
        return cache[key]
    path = folder / name
    master = load_or_build_master(kind, group.paths, path, rebuild=rebuild, **options)
    cache[key] = MasterBuild(kind, group.id, path, master, master.reused, group.count)
    return cache[key]


def build_session_masters(
    session,
    out: Path,
    bias_method: str = "median",
    method: str = "winsorized",
    sigma: float = 3.0,
    memory_limit: str = "2GB",
    rebuild: bool = False,
    cache: dict | None = None,
) -> dict[str, _PlanMasters]:
    """Build or reuse every master the session's calibration plans use.

    Parameters
    ----------
    session : astrostack.io.Session
        From :func:`astrostack.io.discover`.
    out : Path
        Output folder; masters go to ``out/masters/``.
    bias_method, method : str
        Combine methods of the master offset and of the other masters.
    sigma : float
        Rejection threshold (low and high).
    memory_limit : str
        Memory budget of the combine engine.
    rebuild : bool
        Rebuild even when a matching master exists.
    cache : dict or None
        Masters already built in this run (filled in place).

    Returns
    -------
    dict
        ``{light group id: masters of its plan}``.
    """
    folder = out / "masters"
    cache = {} if cache is None else cache
    common = {"sigma_low": sigma, "sigma_high": sigma, "memory_limit": memory_limit}
    result: dict[str, _PlanMasters] = {}
    for plan in session.plans:
        pm = _PlanMasters()
        if plan.bias is not None:
            b = _build(
                "bias", plan.bias, folder, cache, "", {**common, "method": bias_method}, rebuild
            )
            pm.bias, pm.builds = b.master, [*pm.builds, b]
        elif plan.light_offset == "black_level" and plan.constant_offset:
            pm.bias = float(plan.constant_offset)
        if plan.dark is not None:
            up = ""
            if plan.bias is not None:
                up = plan.bias.id
            elif isinstance(pm.bias, float):
                up = f"offset{pm.bias:g}"
            d = _build(
                "dark",
                plan.dark,
                folder,
                cache,
                up,
                {**common, "method": method, "master_bias": pm.bias},
                rebuild,
            )
            pm.dark, pm.builds = d.master, [*pm.builds, d]
        if plan.darkflat is not None:
            df = _build(
                "darkflat", plan.darkflat, folder, cache, "", {**common, "method": method}, rebuild
            )
            pm.darkflat, pm.builds = df.master, [*pm.builds, df]
        if plan.flat is not None:
            flat_bias = pm.bias if not isinstance(pm.bias, float) else None
            if plan.flat_offset == "black_level" and plan.flat.black_level is not None:
                flat_bias = float(plan.flat.black_level)
            opts = {
                **common,
                "method": method,
                "master_bias": flat_bias,
                "master_darkflat": pm.darkflat,
                "master_dark": pm.dark if pm.darkflat is None else None,
            }
            ups = [m.id for m in (plan.bias, plan.darkflat, plan.dark) if m is not None]
            f = _build("flat", plan.flat, folder, cache, "_".join(ups), opts, rebuild)
            pm.flat, pm.builds = f.master, [*pm.builds, f]
        result[plan.light.id] = pm
    return result


def _compatible(group, candidates: list, exposure: bool = False):
    """First candidate group from the same camera settings (and exposure, if asked)."""
    settings = ("shape", "binning", "camera", "gain", "iso", "offset")
    for c in candidates:
        if any(getattr(c, a) != getattr(group, a) for a in settings):
            continue
        if not exposure:
            return c
        if c.exposure and group.exposure and abs(c.exposure / group.exposure - 1) < 0.05:
            return c
    return None


def build_unplanned_masters(
    session,
    out: Path,
    cache: dict,
    bias_method: str = "median",
    method: str = "winsorized",
    sigma: float = 3.0,
    memory_limit: str = "2GB",
    rebuild: bool = False,
) -> list[MasterBuild]:
    """Masters of the calibration groups no light group uses (e.g. a dark library).

    Darks and flats use the master offset of a bias group with the same camera settings
    when there is one; flats use a dark-flat group of their exposure before that.

    Parameters
    ----------
    session : astrostack.io.Session
        From :func:`astrostack.io.discover`.
    out : Path
        Output folder; masters go to ``out/masters/``.
    cache : dict
        Masters already built in this run (filled in place).
    bias_method, method, sigma, memory_limit, rebuild
        As for :func:`build_session_masters`.

    Returns
    -------
    list of MasterBuild
    """
    folder = out / "masters"
    common = {"sigma_low": sigma, "sigma_high": sigma, "memory_limit": memory_limit}
    used = {key[1] for key in cache}
    builds: list[MasterBuild] = []
    biases = session.groups_of("bias")

    def bias_for(group):
        b = _compatible(group, biases)
        if b is None:
            return None, ""
        opts = {**common, "method": bias_method}
        return _build("bias", b, folder, cache, "", opts, rebuild).master, b.id

    for group in biases:
        if group.id not in used:
            builds.append(
                _build("bias", group, folder, cache, "", {**common, "method": bias_method}, rebuild)
            )
    for kind in ("dark", "darkflat"):
        for group in session.groups_of(kind):
            if group.id in used:
                continue
            bias, up = bias_for(group) if kind == "dark" else (None, "")
            opts = {**common, "method": method, "master_bias": bias}
            builds.append(_build(kind, group, folder, cache, up, opts, rebuild))
    for group in session.groups_of("flat"):
        if group.id in used:
            continue
        darkflat = _compatible(group, session.groups_of("darkflat"), exposure=True)
        if darkflat is not None:
            df = _build(
                "darkflat", darkflat, folder, cache, "", {**common, "method": method}, rebuild
            )
            opts = {**common, "method": method, "master_darkflat": df.master}
            up = darkflat.id
        else:
            bias, up = bias_for(group)
            opts = {**common, "method": method, "master_bias": bias}
        builds.append(_build("flat", group, folder, cache, up, opts, rebuild))
    return builds


def _mark_output(out: Path) -> None:
    from astrostack.io import OUTPUT_MARKER

    out.mkdir(parents=True, exist_ok=True)
    marker = out / OUTPUT_MARKER
    if not marker.exists():
        marker.write_text("astrostack output folder: never scanned as input\n")


def _discover(directory: Path):
    from astrostack.io import discover

    try:
        return discover(directory)
    except (FileNotFoundError, NotADirectoryError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc


def _masters_table(plans: dict[str, _PlanMasters], console: Console) -> None:
    table = Table(title="Masters")
    for column in ("master", "group", "frames", "exposure (s)", "temp (C)", "method", "status"):
        table.add_column(column, overflow="fold")
    table.add_column("file / skipped", overflow="fold")
    seen = set()
    for pm in plans.values():
        for b in pm.builds:
            if b.path in seen:
                continue
            seen.add(b.path)
            m = b.master
            skipped = "\n".join(f"{Path(p).name}: {r}" for p, r in m.skipped)
            table.add_row(
                b.kind,
                b.group,
                f"{m.n_frames}/{b.total}",
                "-" if m.exposure is None else f"{m.exposure:g}",
                "-" if m.temperature is None else f"{m.temperature:.1f}",
                m.method or "-",
                "reused" if b.reused else "built",
                f"{b.path}" + (f"\n[yellow]{skipped}[/yellow]" if skipped else ""),
            )
    console.print(table)


def masters(
    directory: Annotated[Path, typer.Argument(help="Folder holding the night's frames.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output folder [DIR/astrostack-output].")
    ] = None,
    bias_method: Annotated[
        str, typer.Option(help="Master offset: median or winsorized.")
    ] = "median",
    method: Annotated[
        str, typer.Option(help="Darks and flats: winsorized, median, sigma, ...")
    ] = "winsorized",
    sigma: Annotated[float, typer.Option(help="Rejection threshold, sigmas.")] = 3.0,
    memory_limit: Annotated[str, typer.Option(help="Memory budget, e.g. 2GB.")] = "2GB",
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Ignore existing masters.")] = False,
) -> None:
    """Build (or reuse) the masters of every bias, dark, dark-flat and flat group in DIR.

    Groups used by a light group's calibration plan are built as the plan says; the others
    (e.g. a dark library without lights) on their own.
    """
    session = _discover(directory)
    out = output if output is not None else directory / "astrostack-output"
    if not any(session.groups_of(k) for k in ("bias", "dark", "darkflat", "flat")):
        typer.echo(f"error: no bias, dark, dark-flat or flat frames in {directory}", err=True)
        raise typer.Exit(code=1)
    _mark_output(out)
    cache: dict = {}
    try:
        plans = build_session_masters(
            session, out, bias_method, method, sigma, memory_limit, rebuild, cache
        )
        extra = build_unplanned_masters(
            session, out, cache, bias_method, method, sigma, memory_limit, rebuild
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    if extra:
        plans = {**plans, "": _PlanMasters(builds=extra)}
    _masters_table(plans, Console(width=160))


def _output_names(paths: list[Path]) -> dict[Path, str]:
    """``stem.fits`` for each light; ``parent_stem.fits`` where stems collide."""
    stems: dict[str, int] = {}
    for p in paths:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    names = {}
    for p in paths:
        name = p.stem if stems[p.stem] == 1 else f"{p.parent.name}_{p.stem}"
        if f"{name}.fits" in names.values():  # same folder name too: add a counter
            name = f"{name}_{len(names):05d}"
        names[p] = f"{name}.fits"
    return names


def _light_header(meta) -> dict:
    header = {k: v for k, v in meta.header.items() if k not in _STRUCTURAL}
    header.update({"ASCALIB": meta.header.get("ASCALIB", ""), "ASDARKK": meta.header["ASDARKK"]})
    return header


def calibrate(
    directory: Annotated[Path, typer.Argument(help="Folder holding the night's frames.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output folder [DIR/astrostack-output].")
    ] = None,
    dark_scale: Annotated[str, typer.Option(help="exposure, optimize, or a number.")] = "exposure",
    cosmetic: Annotated[
        bool, typer.Option("--cosmetic/--no-cosmetic", help="Repair hot and cold pixels.")
    ] = True,
    isolated: Annotated[
        bool,
        typer.Option("--isolated", help="Also repair isolated hot pixels found in each light."),
    ] = False,
    bias_method: Annotated[
        str, typer.Option(help="Master offset: median or winsorized.")
    ] = "median",
    method: Annotated[str, typer.Option(help="Darks and flats combine method.")] = "winsorized",
    sigma: Annotated[float, typer.Option(help="Rejection threshold, sigmas.")] = 3.0,
    memory_limit: Annotated[str, typer.Option(help="Memory budget, e.g. 2GB.")] = "2GB",
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Ignore existing masters.")] = False,
) -> None:
    """Calibrate every light: (light - offset - k*dark) / flat, then cosmetic correction."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from astrostack.calibrate import calibrate_light, defects_for_lights
    from astrostack.io import FrameReadError, read_frame, write_fits

    scale: str | float = dark_scale
    if dark_scale not in ("exposure", "optimize"):
        try:
            scale = float(dark_scale)
        except ValueError:
            msg = f"--dark-scale {dark_scale!r}: use exposure, optimize or a number"
            raise typer.BadParameter(msg) from None
    session = _discover(directory)
    out = output if output is not None else directory / "astrostack-output"
    if not session.plans:
        typer.echo(f"error: no light frames in {directory}", err=True)
        raise typer.Exit(code=1)
    _mark_output(out)
    console = Console(width=160)
    try:
        plans = build_session_masters(
            session, out, bias_method, method, sigma, memory_limit, rebuild
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    _masters_table(plans, console)

    total = sum(p.light.count for p in session.plans)
    done, failed = 0, []
    summary = Table(title="Calibrated lights")
    for column in ("group", "lights", "written", "offset", "dark k", "flat", "hot", "cold"):
        summary.add_column(column)
    with Progress(
        TextColumn("[bold]calibrate[/bold] {task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("", total=total)
        for plan in session.plans:
            pm = plans[plan.light.id]
            names = _output_names(plan.light.paths)
            defects = None
            written = 0
            ks = []
            for path in plan.light.paths:
                bar.update(task, description=path.name)
                try:
                    frame = read_frame(path)
                    if cosmetic and defects is None:
                        defects = defects_for_lights(frame, pm.bias, pm.dark, pm.flat)
                    cal = calibrate_light(
                        frame,
                        bias=pm.bias,
                        dark=pm.dark,
                        flat=pm.flat,
                        defects=defects if cosmetic else None,
                        dark_scale=scale,
                        detect_hot=isolated,
                    )
                    target = out / "calibrated" / plan.light.id / names[path]
                    bayer = frame.meta.bayer if cal.data.ndim == 2 else None
                    history = [f"calibrated from {path}: {cal.meta.header['ASCALIB']}"]
                    history += [f"master {b.kind}: {b.path}" for b in pm.builds]
                    write_fits(target, cal.data, _light_header(cal.meta), history, bayer=bayer)
                    written += 1
                    ks.append(cal.meta.header["ASDARKK"])
                except (FrameReadError, ValueError, OSError) as exc:
                    failed.append((path, str(exc)))
                    logger.warning("skipping light %s: %s", path, exc)
                done += 1
                bar.update(task, advance=1)
            summary.add_row(
                plan.light.id,
                str(plan.light.count),
                str(written),
                plan.bias.id if plan.bias else plan.light_offset,
                f"{sum(ks) / len(ks):.3f}" if ks and pm.dark is not None else "-",
                plan.flat.id if plan.flat else "-",
                str(defects.n_hot) if defects is not None else "-",
                str(defects.n_cold) if defects is not None else "-",
            )
    console.print(summary)
    for path, reason in failed:
        console.print(f"[yellow]skipped[/yellow] {path}: {reason}")
    console.print(f"calibrated lights in {out / 'calibrated'}")
    if total and len(failed) == total:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add the ``masters`` and ``calibrate`` commands to *app*."""
    app.command("masters")(masters)
    app.command("calibrate")(calibrate)
