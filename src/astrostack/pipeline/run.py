"""The end-to-end run: discover, masters, calibrate, measure, select, register, warp, stack.

:func:`run` is the library entry point (``astrostack.run``).  Every stage is
timed and its peak memory sampled (:class:`~astrostack.pipeline.progress.StageRecord`),
per-frame work is cached (:mod:`astrostack.pipeline.cache`), one bad frame is
skipped with its reason and never stops the run, and a run killed at any point
resumes from what was completely written.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import OUTPUT_MARKER, FrameReadError, discover
from ..io.atomic import atomic_path
from .cache import StageCache
from .colour import check_plan_black_levels
from .config import PipelineConfig, resolve_config
from .outputs import group_name, write_group_outputs
from .parallel import default_workers, map_frames
from .progress import ProgressCallback, StageRecord, StageTimer, single_blas_thread
from .reference import choose_references, rereference
from .reporting import write_quality_table, write_run_report, write_session_json
from .selection import Selection, select_frames
from .stages import (
    LightFrame,
    calibrate_frame,
    get_masters,
    make_reference,
    output_shape,
    quality_in_processes,
    quality_job,
    register_to_reference,
    run_quality_job,
    store_quality,
    warp_frame,
)

__all__ = [
    "DiskFullError",
    "GroupResult",
    "OutputFolderError",
    "PipelineError",
    "RunResult",
    "run",
]

logger = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """Nothing usable came out of the run (no lights, nothing registered); one-line reason."""


class DiskFullError(PipelineError):
    """The disk (or a quota / file-size limit) filled up while writing; the run stopped at once.

    Everything completely written before stays valid: a re-run after freeing space
    resumes from the stage cache.
    """


class OutputFolderError(PipelineError):
    """The output folder cannot be created or written (permissions, read-only file system)."""


#: errno values meaning "no room to write" (disk full, file-size limit, quota)
_DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
#: errno values meaning "not allowed to write here"
_NO_WRITE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
#: numpy's message for a short write (no errno): ``'12288 requested and 4064 written'``
_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")
#: temporary files made by :func:`astrostack.io.atomic_path`: ``.tmp-<name>.<random>``
_TMP_NAME = re.compile(r"^\.tmp-(.+)\.[^.]+$")


@dataclass
class GroupResult:
    """One stack: its frames, selection, reference and output files."""

    name: str
    key: dict[str, Any]
    frames: list[LightFrame]
    selection: Selection | None = None
    reference: LightFrame | None = None  # registration reference (may be in another group)
    best: LightFrame | None = None  # this group's best light: the stack's reference
    outputs: dict[str, Path] = field(default_factory=dict)
    stack_info: dict[str, Any] = field(default_factory=dict)
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    error: str = ""

    @property
    def used(self) -> list[LightFrame]:
        """Frames that went into the stack."""
        return [f for f in self.frames if f.used]


@dataclass
class RunResult:
    """What a run produced.

    Attributes
    ----------
    output : Path
        Output folder.
    outputs : dict
        ``{'stack.fits': path, 'stack.tif': ..., 'preview.png': ..., 'report.html': ...,
        'session.json': ...}`` (per-group names when there are several groups).
    groups : list of GroupResult
        One per stack.
    stages : list of StageRecord
        Each stage's time, peak memory and computed / reused counts.
    skipped : dict
        ``{file: reason}`` of input images or frames that could not be used (errors).
    ignored : dict
        ``{file: reason}`` of files that are not images (notes, JSON, ...).
    notes : list of str
        How the lights are calibrated (what is missing, what is done instead).
    warnings : list of str
        Run-level warnings (missing masters, failed groups, ...).
    config : PipelineConfig
        The effective configuration.
    """

    output: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    groups: list[GroupResult] = field(default_factory=list)
    stages: list[StageRecord] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    config: PipelineConfig = field(default_factory=PipelineConfig)

    @property
    def exit_code(self) -> int:
        """0: success; 3: done, but files were skipped or a group failed (see warnings)."""
        return 3 if (self.skipped or self.warnings) else 0

    def stage(self, name: str) -> StageRecord:
        """The record of stage *name*.

        Raises
        ------
        KeyError
            No such stage ran.
        """
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per stage."""
        return {s.name: s.seconds for s in self.stages}

    @property
    def quality(self) -> dict[str, list[dict[str, Any]]]:
        """Per group: the quality measurements of every light (dicts, None = not measured)."""
        return {g.name: [dict(f.quality, file=f.name) for f in g.frames] for g in self.groups}

    @property
    def selection(self) -> dict[str, Selection | None]:
        """Per group: the frame selection."""
        return {g.name: g.selection for g in self.groups}


_KEY_NAMES = ("target", "filter", "camera", "shape", "binning", "bayer")


def _group_key(meta, display: bool = False) -> tuple:
    unit = str(meta.camera or meta.header.get("INSTRUME") or "").strip()
    target = (meta.target or "").strip()
    filt = (meta.filter or "").strip()
    if not display:
        target, filt = target.lower(), filt.lower()
    # the full shape: a mono [y, x] and an RGB [3, y, x] frame of one size never share a stack
    return (target, filt, unit, tuple(meta.shape), tuple(meta.binning), meta.bayer)


def _resolved(folder: Path) -> Path:
    """*folder* with its links resolved; its absolute path if that fails (never raises)."""
    try:
        return Path(folder).resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(folder))


def _own_path(path: str | Path) -> Path:
    """Absolute path with the folders' links resolved but not the file's own link.

    A symbolic link keeps its own name (a broken link or a link loop is reported
    under the name it has in the folder), and resolving never raises.
    """
    path = Path(os.path.abspath(path))
    return _resolved(path.parent) / path.name


def _rel_name(path: str | Path, folder: Path) -> str:
    """Name of *path* relative to the input *folder* (its own name for a link)."""
    try:
        return _own_path(path).relative_to(_resolved(folder)).as_posix()
    except ValueError:
        return Path(path).name


def _inside(path: str | Path, folder: Path) -> bool:
    """Whether *path* (or the file its link points to) is inside *folder*."""
    base = _resolved(folder)
    candidates = [_own_path(path)]
    with contextlib.suppress(OSError, RuntimeError):  # a link loop cannot be resolved
        candidates.append(Path(path).resolve())
    return any(c.is_relative_to(base) for c in candidates)


def _exception_chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and all(exc is not e for e in seen):
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _final_name(name: str | Path) -> Path:
    """The file an ``atomic_path`` temporary stands for (the path itself otherwise)."""
    p = Path(name)
    m = _TMP_NAME.match(p.name)
    return p.parent / m.group(1) if m else p


def _file_being_written(exc: BaseException) -> str | None:
    """The innermost file open for writing in the frames *exc* went through, if any."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if not isinstance(value, io.IOBase):
                continue
            name, mode = getattr(value, "name", None), getattr(value, "mode", "")
            if isinstance(name, str) and isinstance(mode, str) and set(mode) & set("wax+"):
                found = name
        tb = tb.tb_next
    return found


def _write_failure(exc: BaseException, output: Path) -> PipelineError | None:
    """The run-stopping error *exc* stands for, or None if it is a per-frame problem.

    A full disk (ENOSPC, EFBIG, EDQUOT, or numpy's errno-less short write) anywhere,
    and a refused write (EACCES, EPERM, EROFS) inside the output folder, stop the run:
    every later write would fail the same way.
    """
    out = Path(os.path.abspath(output))
    chain = _exception_chain(exc)
    for e in chain:
        if not isinstance(e, OSError):
            continue
        short = _SHORT_WRITE.search(str(e)) if e.errno is None else None
        if e.errno in _DISK_FULL or short:
            where = e.filename
            for inner in reversed(chain):  # the innermost frames know the file
                where = where or _file_being_written(inner)
            what = e.strerror or (
                f"No space left on device or file size limit reached: {short.group(2)} of "
                f"{short.group(1)} bytes written"
            )
            msg = (
                f"disk full while writing {_final_name(where or out)} ({what}): free space and "
                "re-run (completed stages are kept)"
            )
            return DiskFullError(msg)
        if e.errno in _NO_WRITE and e.filename:
            target = Path(os.path.abspath(e.filename))
            if target == out or target.is_relative_to(out):
                msg = (
                    f"cannot write the output folder {output} ({e.strerror}: "
                    f"{_final_name(target)}); give a writable output folder (-o/--output) "
                    "or fix its permissions"
                )
                return OutputFolderError(msg)
    return None


def _raise_if_fatal(exc: BaseException, output: Path, in_flight: Any = None) -> None:
    """Re-raise a full disk or an unwritable output folder as a run-stopping error.

    *in_flight* (a :func:`~astrostack.pipeline.parallel.map_frames` generator) is closed
    first: no further frame starts, and the frames already running have finished (and
    written or cleaned up their files) when the error reaches the caller.
    """
    fatal = _write_failure(exc, output)
    if fatal is not None:
        if in_flight is not None:
            in_flight.close()
        raise fatal from exc


def _remove_stale_temporaries(output: Path) -> int:
    """Delete ``.tmp-<name>.*`` files a killed run left in *output* and ``output/maps``.

    Only files matching the pattern of :func:`astrostack.io.atomic_path` are touched
    (``cache/`` is cleaned by :class:`~astrostack.pipeline.cache.StageCache`).
    """
    removed = 0
    for d in (output, output / "maps"):
        if not d.is_dir() or d.is_symlink():
            continue
        for p in d.glob(".tmp-*.*"):
            if _TMP_NAME.match(p.name) and p.is_file() and not p.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed += 1
    if removed:
        logger.info("removed %d partial files left in %s by an interrupted run", removed, output)
    return removed


def _mark_output(output: Path) -> None:
    marker = output / OUTPUT_MARKER
    if not marker.exists():
        with atomic_path(marker) as tmp:
            tmp.write_text("astrostack output folder: not scanned for input frames\n")


def _collect_groups(session, folder: Path, output: Path) -> list[GroupResult]:
    """Lights grouped into stacks (target, filter, camera, geometry), each with its plan."""
    plans = {id(p.light): p for p in session.plans}
    buckets: dict[tuple, list[LightFrame]] = {}
    for g in session.groups_of("light"):
        plan = plans.get(id(g)) or session.plan_for(g)
        for meta in g.frames:
            if _inside(meta.path, output):
                continue
            lf = LightFrame(path=Path(meta.path), name=_rel_name(meta.path, folder), meta=meta,
                            plan=plan)  # fmt: skip
            buckets.setdefault(_group_key(meta), []).append(lf)
    keys = list(buckets)
    shown = [_group_key(buckets[k][0].meta, display=True) for k in keys]
    groups = []
    for k, d in zip(keys, shown, strict=True):
        frames = sorted(buckets[k], key=lambda f: (f.date is None, f.date or 0, f.name))
        info = dict(zip(_KEY_NAMES, d, strict=True))
        groups.append(GroupResult(name=group_name(d, shown), key=info, frames=frames))
    return groups


def run(
    folder: str | Path,
    output: str | Path | None = None,
    config: PipelineConfig | str | Path | None = None,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
    **overrides: Any,
) -> RunResult:
    """Calibrate, register and stack the frames in *folder* into *output*.

    Parameters
    ----------
    folder : path
        Folder of the night's frames (lights, bias, darks, flats; any layout).
    output : path, optional
        Output folder (default ``<folder>/astrostack-output``); marked with a
        ``.astrostack-output`` file so that discovery never reads it as input.
    config : PipelineConfig or path, optional
        Configuration, or a TOML file; default: ``<folder>/astrostack.toml`` if present.
    force : bool
        Ignore the stage cache and recompute everything.
    progress : callable, optional
        Receives :class:`~astrostack.pipeline.progress.ProgressEvent` updates.
    **overrides
        Configuration overrides, e.g. ``max_fwhm=4``, ``stack__method='sigma'``.

    Returns
    -------
    RunResult

    Raises
    ------
    PipelineError
        No light frames, or no frame could be calibrated, measured or registered.
    DiskFullError
        (a PipelineError) The disk filled up while writing; completed stages are kept
        in the cache, so a re-run after freeing space resumes.
    OutputFolderError
        (a PipelineError) The output folder cannot be created or written.
    ValueError
        Invalid configuration.
    FileNotFoundError
        *folder* does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        msg = f"{folder}: not a folder; give the folder that holds the frames"
        raise FileNotFoundError(msg)
    cfg = resolve_config(folder, config, overrides)
    output = Path(output) if output is not None else folder / "astrostack-output"
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _raise_if_fatal(exc, output)
        msg = (
            f"cannot create the output folder {output} ({exc.strerror or exc}); give a "
            "writable output folder (-o/--output) or fix the permissions"
        )
        raise OutputFolderError(msg) from exc
    try:
        return _run(folder, output, cfg, force, progress)
    except OSError as exc:
        _raise_if_fatal(exc, output)
        raise


def _run(
    folder: Path,
    output: Path,
    cfg: PipelineConfig,
    force: bool,
    progress: ProgressCallback | None,
) -> RunResult:
    """The body of :func:`run` (*output* exists); OSErrors are classified by the caller."""
    _mark_output(output)
    _remove_stale_temporaries(output)
    cache = StageCache(output / "cache", force=force)
    result = RunResult(output=output, config=cfg)
    log = result.stages

    # ---- discover ------------------------------------------------------------------------
    with StageTimer("discover", log, progress) as st:
        session = discover(folder)
        for path, reason in session.skipped:
            if _inside(path, output):
                continue
            target = result.ignored if reason.startswith("not an image") else result.skipped
            target[_rel_name(Path(path), folder)] = reason
        groups = _collect_groups(session, folder, output)
        result.groups = groups
        n_lights = sum(len(g.frames) for g in groups)
        st.record.note = f"{n_lights} lights in {len(groups)} group(s)"
    if not n_lights:
        msg = f"{folder}: no light frames found; put the lights (FITS, RAW or TIFF) in this folder"
        raise PipelineError(msg)
    for note in session.notes:
        logger.info("discovery: %s", note)
        result.notes.append(note)
    used_plans = {id(f.plan) for g in groups for f in g.frames}
    for plan in session.plans:
        if id(plan) not in used_plans:
            continue
        for note in plan.notes:
            logger.info("calibration of %s: %s", plan.light.id, note)
            result.notes.append(f"{plan.light.id}: {note}")
    lights = [f for g in groups for f in g.frames]

    # ---- masters -------------------------------------------------------------------------
    plans = []
    for f in lights:
        if all(p is not f.plan for p in plans):
            plans.append(f.plan)
    master_sets: dict[int, Any] = {}
    built: dict[str, tuple[str, Path]] = {}
    with StageTimer("masters", log, progress, total=len(plans)) as st:
        counts = {"computed": 0, "reused": 0}
        for plan in plans:
            problems: list[str] = []
            left_out: dict[str, str] = {}
            try:
                master_sets[id(plan)] = get_masters(
                    plan, cache, cfg, built, counts, problems, left_out
                )
            except (ValueError, OSError, FrameReadError) as exc:
                _raise_if_fatal(exc, output)
                problems.append(f"masters for {plan.light.id}: {exc}; its lights are skipped")
            check_plan_black_levels(plan, master_sets.get(id(plan)))
            for msg in problems:
                if msg not in result.warnings:
                    result.warnings.append(msg)
            for p, reason in left_out.items():
                result.skipped[_rel_name(Path(p), folder)] = reason
            st.advance()
        st.record.computed, st.record.reused = counts["computed"], counts["reused"]

    # ---- calibrate -----------------------------------------------------------------------
    workers = default_workers(cfg.stack.scheduler)  # frames in flight (results in order)
    with StageTimer("calibrate", log, progress, total=len(lights)) as st:
        done = map_frames(lambda f: calibrate_frame(f, master_sets[id(f.plan)], cache, cfg),
                          [f for f in lights if id(f.plan) in master_sets], workers)  # fmt: skip
        for f in lights:
            ms = master_sets.get(id(f.plan))
            if ms is None:
                f.reason = "no usable masters"
                st.advance()
                continue
            try:
                _, reused, error = next(done)
                if error is not None:
                    raise error
                st.advance(computed=not reused, message=f.name)
            except Exception as exc:  # one bad frame never stops the run
                _raise_if_fatal(exc, output, done)  # ... but a full disk does
                f.reason = f"calibration failed: {exc}"
                result.skipped[f.name] = f.reason
                logger.warning("%s: %s", f.name, f.reason)
                st.advance(message=f.name)

    _check_nonfinite(lights, result)

    # ---- quality -------------------------------------------------------------------------
    with StageTimer("quality", log, progress, total=len(lights)) as st, single_blas_thread():
        # cached results are read here; the rest are measured on threads, or in worker
        # processes when there is enough of it (sep holds the GIL)
        jobs = {id(f): quality_job(f, cache, cfg) for f in lights if f.cal_path is not None}
        todo = [j for j in jobs.values() if j is not None]
        done = map_frames(run_quality_job, todo, workers,
                          processes=quality_in_processes(todo, workers))  # fmt: skip
        for f in lights:
            if f.cal_path is None:
                st.advance()
                continue
            try:
                job = jobs[id(f)]
                if job is not None:
                    _, measured, error = next(done)
                    if error is not None:
                        raise error
                    store_quality(f, job, measured, cache)
                st.advance(computed=job is not None, message=f.name)
                f.quality = {**f.quality, "nonfinite_pixels": f.nonfinite}
            except Exception as exc:
                _raise_if_fatal(exc, output, done)
                f.reason = f"quality measurement failed: {exc}"
                result.skipped[f.name] = f.reason
                logger.warning("%s: %s", f.name, f.reason)
                st.advance(message=f.name)

    # ---- select --------------------------------------------------------------------------
    with StageTimer("select", log, progress, total=len(groups)) as st:
        for g in groups:
            _select(g, cfg)
            st.advance()
        st.record.note = ", ".join(
            f"{g.name}: {g.selection.n_used}/{len(g.frames)}" for g in groups if g.selection
        )

    # ---- register ------------------------------------------------------------------------
    todo = sum(g.selection.n_used for g in groups if g.selection)
    with StageTimer("register", log, progress, total=todo) as st, single_blas_thread():
        choose_references(groups, cfg)
        references: dict[str, Any] = {}
        for g in groups:
            _register_group(g, cfg, cache, st, result, references, output)
        rereference(groups, cfg)

    # ---- warp ----------------------------------------------------------------------------
    todo = sum(len(g.used) for g in groups)
    with StageTimer("warp", log, progress, total=todo) as st:
        for g in groups:
            if g.reference is None:
                continue
            ref_shape = np.load(g.reference.cal_path, mmap_mode="r").shape
            shape = output_shape(g.reference.meta, ref_shape, cfg)
            done = map_frames(lambda f, s=shape: warp_frame(f, s, cache, cfg), g.used, workers)
            for f in g.used:
                try:
                    _, reused, error = next(done)
                    if error is not None:
                        raise error
                    st.advance(computed=not reused, message=f.name)
                except Exception as exc:
                    _raise_if_fatal(exc, output, done)
                    _drop(f, f"warp failed: {exc}", result)
                    st.advance(message=f.name)
    if not any(g.used for g in groups):
        reasons = {f.reason for g in groups for f in g.frames if f.reason}
        msg = "no frame could be registered" + (
            f" ({'; '.join(sorted(reasons)[:3])})" if reasons else ""
        )
        _finish(result, folder, cfg, progress, log)
        raise PipelineError(msg)

    # ---- stack + outputs -----------------------------------------------------------------
    todo = sum(1 for g in groups if g.used)
    with StageTimer("stack", log, progress, total=todo) as st:
        for g in groups:
            if not g.used:
                if g.frames:
                    msg = f"group {g.name}: no usable frame; nothing stacked"
                    result.warnings.append(msg)
                continue
            try:
                write_group_outputs(g, output, cfg, single=len(groups) == 1, folder=folder,
                                    master_sets=master_sets)  # fmt: skip
                result.outputs.update({p.name: p for p in g.outputs.values()})
            except Exception as exc:
                _raise_if_fatal(exc, output)
                g.error = f"stacking failed: {exc}"
                result.warnings.append(f"group {g.name}: {g.error}")
                logger.exception("group %s: stacking failed", g.name)
            st.advance(computed=True, message=g.name)
    if not any(g.outputs for g in groups):
        _finish(result, folder, cfg, progress, log)
        msg = "; ".join(g.error for g in groups if g.error) or "nothing could be stacked"
        raise PipelineError(msg)
    _finish(result, folder, cfg, progress, log)
    if not cfg.output.keep_cache:
        shutil.rmtree(output / "cache", ignore_errors=True)
        logger.info("removed %s (output.keep_cache = false)", output / "cache")
    return result


def _check_nonfinite(lights: list[LightFrame], result: RunResult) -> None:
    """Report lights whose input had NaN/inf pixels; leave out those that are mostly so.

    Calibration made those pixels no-data (NaN).  A light with more non-finite than
    finite pixels is skipped with its reason; otherwise it goes on and a note gives the
    count (also ``quality['nonfinite_pixels']``).
    """
    for f in lights:
        if not f.nonfinite or f.cal_path is None:
            continue
        size = int(np.load(f.cal_path, mmap_mode="r").size)
        pct = 100.0 * f.nonfinite / max(size, 1)
        if 2 * f.nonfinite > size:
            f.cal_path = None
            f.reason = (
                f"{f.nonfinite} of {size} pixels ({pct:.0f}%) are non-finite (NaN/inf): most of "
                "the frame has no data; re-export or re-copy it"
            )
            result.skipped[f.name] = f.reason
            logger.warning("%s: %s", f.name, f.reason)
            continue
        note = (
            f"{f.name}: {f.nonfinite} of {size} pixels ({pct:.1f}%) are non-finite (NaN/inf) "
            "in the input; treated as no data"
        )
        logger.info(note)
        result.notes.append(note)


def _drop(f: LightFrame, reason: str, result: RunResult) -> None:
    f.used = False
    f.reason = reason
    result.skipped[f.name] = reason
    logger.warning("%s: %s", f.name, reason)


def _select(g: GroupResult, cfg: PipelineConfig) -> None:
    measured = [f for f in g.frames if f.quality]
    names = [f.name for f in measured]

    def col(key: str) -> np.ndarray:
        return np.array([np.nan if f.quality.get(key) is None else f.quality[key]
                         for f in measured], dtype=np.float64)  # fmt: skip

    metrics = {k: col(k) for k in ("fwhm", "eccentricity", "n_stars", "background", "noise")}
    metrics["transparency"] = col("signal_weight")
    sel = select_frames(names, metrics, cfg.selection) if measured else None
    g.selection = sel
    by_name = {f.name: f for f in g.frames}
    if sel is not None:
        for name, used, reasons in zip(sel.names, sel.used, sel.reasons, strict=True):
            f = by_name[name]
            f.used = bool(used)
            f.reason = "; ".join(reasons)


def _register_group(g: GroupResult, cfg: PipelineConfig, cache: StageCache, st, result,
                    references: dict, output: Path) -> None:  # fmt: skip
    ref = g.reference
    if ref is None:
        return

    def reference():
        if ref.cal_key not in references:
            references[ref.cal_key] = make_reference(ref, cfg)
        return references[ref.cal_key]

    for f in g.frames:
        if not f.used:
            continue
        try:
            reused = register_to_reference(f, ref, reference, cache, cfg)
            st.advance(computed=not reused, message=f.name)
        except Exception as exc:
            _raise_if_fatal(exc, output)
            _drop(f, f"registration failed: {exc}", result)
            st.advance(message=f.name)
            continue
        if not f.registration.get("ok"):
            _drop(f, f"registration failed: {f.registration.get('reason', 'unknown')}", result)


def _finish(
    result: RunResult,
    folder: Path,
    cfg: PipelineConfig,
    progress: Callable | None,
    log: list[StageRecord],
) -> None:
    with StageTimer("report", log, progress, total=2) as st:
        try:
            result.outputs["report.html"] = write_run_report(result, folder)
        except Exception as exc:  # the report must never lose the stack
            _raise_if_fatal(exc, result.output)
            msg = f"report failed: {exc}"
            logger.exception(msg)
            result.warnings.append(msg)
        st.advance()
        result.outputs["quality.csv"], result.outputs["quality.json"] = write_quality_table(result)
        result.outputs["session.json"] = write_session_json(result, folder)
        st.advance()
    # session.json again so it holds the report stage's own record too
    result.outputs["session.json"] = write_session_json(result, folder)
