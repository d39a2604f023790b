"""Session discovery: find the frames of a night, classify and group them, match masters.

:func:`discover` reads only metadata (:func:`~astrostack.io.readers.read_meta`), so it is
cheap even for hundreds of frames.  Frames are grouped by what must agree for them to be
combined (shape, binning, Bayer pattern, gain/ISO/offset; exposure for darks, dark-flats and
lights; sensor temperature within a tolerance for darks, dark-flats and lights; filter for
flats and lights).  Each light group then gets a :class:`CalibrationPlan` naming the bias,
dark, flat and dark-flat groups to use and notes saying what is missing and what is done
instead.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

from .frame import FrameMeta, FrameReadError
from .metadata import kind_from_header, kind_from_path, meta_to_dict
from .readers import is_frame_name, read_meta

__all__ = [
    "IGNORE_MARKER",
    "OUTPUT_MARKER",
    "CalibrationPlan",
    "FrameGroup",
    "Session",
    "discover",
    "plan_calibration",
]

logger = logging.getLogger(__name__)

#: A folder holding a file of this name is astrostack output and is never scanned.
OUTPUT_MARKER = ".astrostack-output"
#: A file of this name keeps discovery out of its folder (the simulator's ``truth/``, or any
#: folder of reference material a user keeps beside the frames).
IGNORE_MARKER = ".astrostack-ignore"

_KIND_ORDER = ("light", "bias", "dark", "darkflat", "flat", "unknown")


def _fmt_exp(seconds: float | None) -> str:
    if seconds is None:
        return "unknown exposure"
    return f"{seconds:g} s"


def _same_exposure(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= max(1e-3, 1e-3 * max(abs(a), abs(b)))


@dataclass
class FrameGroup:
    """Frames of one kind that can be combined together.

    Attributes
    ----------
    id
        Short unique name, e.g. ``'light-1'``, used by plans and in reports.
    kind
        One of the frame kinds.
    frames
        The frames' metadata, sorted by date then path.
    shape, binning, bayer, gain, iso, offset, filter, camera
        Values shared by every frame of the group.
    exposure
        Shared exposure (darks, dark-flats, lights) or the median exposure (bias, flats).
    temperature
        Mean sensor temperature, or ``None`` if no frame states it.
    notes
        Remarks about the group (e.g. a size that differs from the rest of its kind).
    """

    id: str
    kind: str
    frames: list[FrameMeta]
    shape: tuple[int, ...] = ()
    binning: tuple[int, int] = (1, 1)
    bayer: str | None = None
    gain: float | None = None
    iso: int | None = None
    offset: float | None = None
    exposure: float | None = None
    temperature: float | None = None
    filter: str | None = None
    camera: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Number of frames."""
        return len(self.frames)

    @property
    def paths(self) -> list[Path]:
        """Paths of the frames."""
        return [m.path for m in self.frames if m.path is not None]

    @property
    def size_text(self) -> str:
        """``'WxH'`` (with ``'x3'`` for RGB)."""
        if len(self.shape) < 2:
            return "?"
        text = f"{self.shape[-1]}x{self.shape[-2]}"
        return text + "x3" if len(self.shape) == 3 else text

    @property
    def temperature_range(self) -> tuple[float, float] | None:
        """Lowest and highest stated temperature."""
        temps = [m.temperature for m in self.frames if m.temperature is not None]
        return (min(temps), max(temps)) if temps else None

    @property
    def black_level(self) -> float | None:
        """Median black level stated by the frames (RAW black level or ``PEDESTAL``)."""
        levels = [m.black_level for m in self.frames if m.black_level is not None]
        return float(median(levels)) if levels else None

    def to_dict(self, frames: bool = True) -> dict:
        """JSON-serialisable dictionary (with per-frame metadata if *frames*)."""
        out = {
            "id": self.id,
            "kind": self.kind,
            "count": self.count,
            "shape": list(self.shape),
            "binning": list(self.binning),
            "bayer": self.bayer,
            "gain": self.gain,
            "iso": self.iso,
            "offset": self.offset,
            "exposure": self.exposure,
            "temperature": self.temperature,
            "filter": self.filter,
            "camera": self.camera,
            "notes": list(self.notes),
        }
        if frames:
            out["frames"] = [meta_to_dict(m) for m in self.frames]
        return out


@dataclass
class CalibrationPlan:
    """How one light group is calibrated.

    Attributes
    ----------
    light
        The light group.
    bias, dark, flat, darkflat
        The groups whose masters are used, or ``None``.
    dark_scale
        Factor applied to the (bias-subtracted) master dark: light exposure / dark
        exposure; 1.0 when the exposures match, ``None`` without dark.
    light_offset
        What removes the offset from the lights: ``'dark'`` (a dark of the same exposure,
        which contains the bias), ``'bias'``, ``'black_level'`` (constant from the header or
        RAW metadata, see *constant_offset*) or ``'none'``.
    flat_offset
        What removes the offset from the flats: ``'darkflat'``, ``'bias'``,
        ``'black_level'``, ``'none'``, or ``None`` without flat.
    constant_offset
        The constant (ADU) used when an offset is ``'black_level'``.
    notes
        Plain-language notes: what is missing and what is done instead.
    """

    light: FrameGroup
    bias: FrameGroup | None = None
    dark: FrameGroup | None = None
    flat: FrameGroup | None = None
    darkflat: FrameGroup | None = None
    dark_scale: float | None = None
    light_offset: str = "none"
    flat_offset: str | None = None
    constant_offset: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-serialisable dictionary (groups by id)."""

        def gid(group: FrameGroup | None) -> str | None:
            return group.id if group is not None else None

        return {
            "light": self.light.id,
            "bias": gid(self.bias),
            "dark": gid(self.dark),
            "flat": gid(self.flat),
            "darkflat": gid(self.darkflat),
            "dark_scale": self.dark_scale,
            "light_offset": self.light_offset,
            "flat_offset": self.flat_offset,
            "constant_offset": self.constant_offset,
            "notes": list(self.notes),
        }


@dataclass
class Session:
    """Everything found in a folder of frames.

    Attributes
    ----------
    folder
        The folder scanned.
    groups
        Groups of compatible frames, lights first.
    plans
        One calibration plan per light group.
    skipped
        ``(path, reason)`` for each file not used: non-images, unreadable or truncated
        files, JPEG/PNG images.
    notes
        Session-wide remarks.
    """

    folder: Path
    groups: list[FrameGroup] = field(default_factory=list)
    plans: list[CalibrationPlan] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def groups_of(self, kind: str) -> list[FrameGroup]:
        """Groups of one kind."""
        return [g for g in self.groups if g.kind == kind]

    def group(self, group_id: str) -> FrameGroup:
        """The group with id *group_id*."""
        for g in self.groups:
            if g.id == group_id:
                return g
        msg = f"no group {group_id!r} in session {self.folder}"
        raise KeyError(msg)

    def plan_for(self, light: FrameGroup | str) -> CalibrationPlan:
        """Calibration plan of a light group (object or id)."""
        gid = light if isinstance(light, str) else light.id
        for plan in self.plans:
            if plan.light.id == gid:
                return plan
        msg = f"no calibration plan for {gid!r} in session {self.folder}"
        raise KeyError(msg)

    @property
    def frame_count(self) -> int:
        """Number of frames in all groups."""
        return sum(g.count for g in self.groups)

    def to_dict(self, frames: bool = True) -> dict:
        """JSON-serialisable dictionary of the whole session."""
        return {
            "folder": str(self.folder),
            "groups": [g.to_dict(frames=frames) for g in self.groups],
            "plans": [p.to_dict() for p in self.plans],
            "skipped": [{"path": str(p), "reason": r} for p, r in self.skipped],
            "notes": list(self.notes),
        }

    def to_json(self, frames: bool = True, indent: int | None = 2) -> str:
        """The session as JSON text."""
        return json.dumps(self.to_dict(frames=frames), indent=indent)


# ---------------------------------------------------------------------------------------
# Scanning
# ---------------------------------------------------------------------------------------


def _scan(folder: Path, recursive: bool) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(folder):
        root_path = Path(root)
        if OUTPUT_MARKER in names or IGNORE_MARKER in names:
            logger.info("skipping marked folder %s", root_path)
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(root_path / n for n in sorted(names) if not n.startswith("."))
        if not recursive:
            break
    return files


def _is_image_candidate(path: Path) -> bool:
    # JPEG/PNG are read so that the skip reason says why they cannot be used.
    return is_frame_name(path) or path.suffix.lower() in (".jpg", ".jpeg", ".png")


# ---------------------------------------------------------------------------------------
# Grouping
# ---------------------------------------------------------------------------------------


def _unit(m: FrameMeta) -> str | None:
    """Camera model plus telescope/unit name: frames of two units never share masters."""
    telescope = m.header.get("TELESCOP")
    telescope = str(telescope).strip() if telescope is not None else ""
    return f"{m.camera or ''}|{telescope}" if (m.camera or telescope) else None


def _base_key(m: FrameMeta) -> tuple:
    return (m.kind, tuple(m.shape), tuple(m.binning), m.bayer, m.gain, m.iso, m.offset, _unit(m))


def _group_key(m: FrameMeta) -> tuple:
    key = _base_key(m)
    if m.kind in ("dark", "darkflat", "light"):
        key += (None if m.exposure is None else round(m.exposure, 3),)
    else:
        key += (None,)
    if m.kind in ("flat", "light"):
        key += ((m.filter or "").strip().lower() or None,)
    else:
        key += (None,)
    return key


def _split_temperature(frames: list[FrameMeta], tolerance: float) -> list[list[FrameMeta]]:
    known = sorted((m for m in frames if m.temperature is not None), key=lambda m: m.temperature)
    unknown = [m for m in frames if m.temperature is None]
    clusters: list[list[FrameMeta]] = []
    for m in known:
        if clusters and m.temperature - clusters[-1][0].temperature <= tolerance:
            clusters[-1].append(m)
        else:
            clusters.append([m])
    if unknown:
        if len(clusters) == 1:
            clusters[0].extend(unknown)
        else:
            clusters.append(unknown)
    return clusters


def _sort_frames(frames: list[FrameMeta]) -> list[FrameMeta]:
    return sorted(frames, key=lambda m: (m.date is None, m.date.timestamp() if m.date else 0.0,
                                         str(m.path)))  # fmt: skip


def _make_group(gid: str, kind: str, frames: list[FrameMeta]) -> FrameGroup:
    first = frames[0]
    exposures = [m.exposure for m in frames if m.exposure is not None]
    temps = [m.temperature for m in frames if m.temperature is not None]
    filters = Counter(m.filter for m in frames)
    return FrameGroup(
        id=gid,
        kind=kind,
        frames=_sort_frames(frames),
        shape=tuple(first.shape),
        binning=tuple(first.binning),
        bayer=first.bayer,
        gain=first.gain,
        iso=first.iso,
        offset=first.offset,
        exposure=float(median(exposures)) if exposures else None,
        temperature=round(sum(temps) / len(temps), 2) if temps else None,
        filter=filters.most_common(1)[0][0] if kind in ("flat", "light") else None,
        camera=first.camera,
    )


def _group_frames(metas: list[FrameMeta], temperature_tolerance: float) -> list[FrameGroup]:
    buckets: dict[tuple, list[FrameMeta]] = {}
    for m in metas:
        buckets.setdefault(_group_key(m), []).append(m)
    raw_groups: list[tuple[str, list[FrameMeta], bool]] = []
    for key, frames in buckets.items():
        kind = key[0]
        if kind in ("dark", "darkflat", "light"):
            clusters = _split_temperature(frames, temperature_tolerance)
            raw_groups.extend((kind, c, len(clusters) > 1) for c in clusters)
        else:
            raw_groups.append((kind, frames, False))

    def order(item: tuple[str, list[FrameMeta], bool]) -> tuple:
        kind, frames, _ = item
        first = _sort_frames(frames)[0]
        return (_KIND_ORDER.index(kind), -len(frames), str(first.path))

    raw_groups.sort(key=order)
    counters: Counter = Counter()
    groups = []
    for kind, frames, split in raw_groups:
        counters[kind] += 1
        group = _make_group(f"{kind}-{counters[kind]}", kind, frames)
        rng = group.temperature_range
        if split and rng is not None:
            group.notes.append(
                f"split by sensor temperature (tolerance {temperature_tolerance:g} deg C): "
                f"{rng[0]:.1f} to {rng[1]:.1f} deg C"
            )
        groups.append(group)

    # Size mismatches within a kind: note on the groups whose size is not the usual one.
    for kind in _KIND_ORDER:
        for camera in {g.camera for g in groups if g.kind == kind}:
            of_kind = [g for g in groups if g.kind == kind and g.camera == camera]
            sizes: Counter = Counter()
            for g in of_kind:
                sizes[g.shape] += g.count
            if len(sizes) < 2:
                continue
            usual = sizes.most_common(1)[0][0]
            usual_group = next(g for g in of_kind if g.shape == usual)
            for g in of_kind:
                if g.shape != usual:
                    g.notes.append(
                        f"{g.count} {kind} frame(s) are {g.size_text} while most are "
                        f"{usual_group.size_text}: kept as a separate group"
                    )
    for g in groups:
        if g.kind == "unknown":
            g.notes.append(
                "kind unknown (no IMAGETYP/FRAME keyword and no bias/dark/flat/light in the "
                "file or folder names): not used; put the files in folders named after their kind"
            )
    return groups


# ---------------------------------------------------------------------------------------
# Matching masters to lights
# ---------------------------------------------------------------------------------------


def _geometry_matches(a: FrameGroup, b: FrameGroup) -> bool:
    return a.shape == b.shape and a.binning == b.binning and a.bayer == b.bayer


def _settings_match(a: FrameGroup, b: FrameGroup) -> bool:
    return a.gain == b.gain and a.iso == b.iso and a.offset == b.offset


def _temp_distance(a: FrameGroup, b: FrameGroup) -> float:
    if a.temperature is None or b.temperature is None:
        return 0.0
    return abs(a.temperature - b.temperature)


def _same_unit(a: FrameGroup, b: FrameGroup) -> bool:
    ua, ub = _unit(a.frames[0]), _unit(b.frames[0])
    return ua is None or ub is None or ua == ub


def _pick(candidates: list[FrameGroup], target: FrameGroup) -> FrameGroup | None:
    """Best candidate: same camera unit, same gain/ISO/offset, nearest temperature, most frames."""
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda g: (
            not _same_unit(g, target),
            not _settings_match(g, target),
            _temp_distance(g, target),
            -g.count,
        ),
    )


def _settings_note(kind: str, chosen: FrameGroup, light: FrameGroup) -> str | None:
    parts = []
    for name in ("gain", "iso", "offset"):
        a, b = getattr(chosen, name), getattr(light, name)
        if a != b:
            parts.append(f"{name} {a} vs {b}")
    if not _same_unit(chosen, light):
        parts.append(f"camera {_unit(chosen.frames[0])} vs {_unit(light.frames[0])}")
    if not parts:
        return None
    return f"{kind} {chosen.id} taken with different camera settings ({', '.join(parts)})"


def _temperature_note(kind: str, chosen: FrameGroup, light: FrameGroup, tol: float) -> str | None:
    if chosen.temperature is None or light.temperature is None:
        return None
    diff = abs(chosen.temperature - light.temperature)
    if diff <= tol:
        return None
    return (
        f"{kind} {chosen.id} at {chosen.temperature:.1f} deg C vs lights at "
        f"{light.temperature:.1f} deg C (difference {diff:.1f} > {tol:g} deg C): dark current "
        "will not match exactly"
    )


def plan_calibration(
    light: FrameGroup, groups: list[FrameGroup], temperature_tolerance: float = 2.0
) -> CalibrationPlan:
    """Choose bias, dark, flat and dark-flat groups for one light group.

    Parameters
    ----------
    light
        The light group.
    groups
        All groups of the session.
    temperature_tolerance
        Temperature difference (deg C) above which a dark/light mismatch is noted.

    Returns
    -------
    CalibrationPlan
    """
    plan = CalibrationPlan(light=light)
    notes = plan.notes

    def compatible(kind: str) -> list[FrameGroup]:
        return [g for g in groups if g.kind == kind and _geometry_matches(g, light)]

    # Bias ------------------------------------------------------------------------------
    plan.bias = _pick(compatible("bias"), light)
    if plan.bias is not None and (n := _settings_note("bias", plan.bias, light)):
        notes.append(n)

    # Dark ------------------------------------------------------------------------------
    darks = compatible("dark")
    same_exp = [d for d in darks if _same_exposure(d.exposure, light.exposure)]
    black = light.black_level
    dark_has_offset = False  # True when the master dark also removes the lights' offset
    if same_exp:
        plan.dark = _pick(same_exp, light)
        plan.dark_scale = 1.0
        dark_has_offset = True
    elif darks:
        with_exp = [d for d in darks if d.exposure is not None]
        if with_exp and light.exposure is not None:
            longest = max(d.exposure for d in with_exp)
            plan.dark = _pick([d for d in with_exp if d.exposure == longest], light)
            plan.dark_scale = light.exposure / plan.dark.exposure
            if plan.bias is not None:
                notes.append(
                    f"darks {_fmt_exp(plan.dark.exposure)} for lights "
                    f"{_fmt_exp(light.exposure)}: dark scaled by exposure "
                    f"(x{plan.dark_scale:.3g}) after bias subtraction"
                )
            elif black is not None:
                notes.append(
                    f"darks {_fmt_exp(plan.dark.exposure)} for lights "
                    f"{_fmt_exp(light.exposure)} and no bias: dark scaled by exposure "
                    f"(x{plan.dark_scale:.3g}) after removing the constant offset "
                    f"{black:g} ADU from the header"
                )
            else:
                plan.dark_scale = 1.0
                dark_has_offset = True
                notes.append(
                    f"darks {_fmt_exp(plan.dark.exposure)} for lights "
                    f"{_fmt_exp(light.exposure)} but no bias and no stated offset: the dark "
                    "cannot be scaled and is subtracted unscaled; shoot bias frames or darks "
                    "of the lights' exposure"
                )
        else:
            plan.dark = _pick(darks, light)
            plan.dark_scale = 1.0
            dark_has_offset = True
            notes.append(
                f"exposure unknown for darks {plan.dark.id} or lights: dark subtracted unscaled"
            )
    if plan.dark is not None:
        for n in (
            _settings_note("dark", plan.dark, light),
            _temperature_note("dark", plan.dark, light, temperature_tolerance),
        ):
            if n:
                notes.append(n)

    # Offset of the lights ----------------------------------------------------------------
    if dark_has_offset:
        plan.light_offset = "dark"
        if plan.bias is None and same_exp:
            notes.append("no bias: the dark of the same exposure also removes the offset")
    elif plan.bias is not None:
        plan.light_offset = "bias"
        if plan.dark is None:
            notes.append("no darks: lights calibrated with bias only (dark current not removed)")
    elif black is not None:
        plan.light_offset = "black_level"
        plan.constant_offset = black
        source = (
            "RAW metadata"
            if light.frames[0].header.get("BLACK_LEVEL_PER_CHANNEL")
            else ("header PEDESTAL")
        )
        if plan.dark is None:
            notes.append(f"no bias and no darks: constant offset {black:g} ADU from {source}")
    else:
        plan.light_offset = "none"
        if plan.dark is None:
            notes.append(
                "no bias and no darks and no stated offset: lights are not offset-corrected"
            )

    # Flat ------------------------------------------------------------------------------
    want = (light.filter or "").strip().lower() or None
    flats = [f for f in compatible("flat") if ((f.filter or "").strip().lower() or None) == want]
    if flats:
        plan.flat = max(flats, key=lambda g: (_settings_match(g, light), g.count))
    else:
        other = compatible("flat")
        if other:
            names = ", ".join(sorted({str(f.filter) for f in other}))
            notes.append(
                f"no flat for filter {light.filter}: flats found only for {names}; "
                "lights not flat-fielded"
            )
        else:
            notes.append("no flats: lights not flat-fielded (vignetting and dust remain)")

    if plan.flat is not None:
        dflats = [g for g in groups if g.kind == "darkflat" and _geometry_matches(g, plan.flat)]
        if dflats:
            plan.darkflat = min(
                dflats,
                key=lambda g: (
                    not _settings_match(g, plan.flat),
                    abs((g.exposure or 0.0) - (plan.flat.exposure or 0.0)),
                    -g.count,
                ),
            )
            plan.flat_offset = "darkflat"
            df_exp, flat_exp = plan.darkflat.exposure, plan.flat.exposure
            if (
                df_exp is not None
                and flat_exp is not None
                and abs(df_exp - flat_exp) > 0.1 * max(df_exp, flat_exp)
            ):
                notes.append(
                    f"dark-flats {_fmt_exp(df_exp)} for flats {_fmt_exp(flat_exp)}: "
                    "closest exposure used"
                )
            if plan.bias is None:
                notes.append("no bias: flats calibrated with dark-flats")
        elif plan.bias is not None:
            plan.flat_offset = "bias"
        elif (fb := plan.flat.black_level) is not None:
            plan.flat_offset = "black_level"
            notes.append(
                f"no bias and no dark-flats: flats calibrated with constant offset {fb:g} ADU "
                "from the header"
            )
        else:
            plan.flat_offset = "none"
            notes.append(
                "no bias and no dark-flats: flats not offset-corrected, flat-fielding will "
                "under-correct vignetting; shoot bias or dark-flat frames"
            )
    return plan


# ---------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------


def _read_meta_or_reason(path: Path) -> FrameMeta | str:
    """Metadata of *path*, or the reason it cannot be used (one bad file never stops a run)."""
    try:
        return read_meta(path)
    except FrameReadError as exc:
        return exc.reason
    except Exception as exc:
        return f"unexpected error reading metadata ({type(exc).__name__}: {exc})"


def discover(
    folder: str | Path,
    recursive: bool = True,
    temperature_tolerance: float = 2.0,
    workers: int = 4,
) -> Session:
    """Scan a folder of frames and plan their calibration.

    Parameters
    ----------
    folder
        Folder holding the night's frames (any layout; sub-folders named ``lights``,
        ``darks``, ``flats``, ``bias``/``offset``, ``darkflats`` help when headers do not
        state the kind).
    recursive
        Also scan sub-folders.  Hidden files and folders, and folders holding a
        ``.astrostack-output`` marker file, are never scanned.
    temperature_tolerance
        Frames of a kind whose sensor temperatures differ by more than this (deg C) are
        grouped separately (darks, dark-flats, lights).
    workers
        Threads reading headers at once (helps on network drives and with RAW files).

    Returns
    -------
    Session
        Groups, one calibration plan per light group, and the skipped files with reasons.

    Raises
    ------
    FileNotFoundError
        If *folder* is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        msg = f"{folder}: not a folder; give the folder that holds the frames"
        raise FileNotFoundError(msg)
    session = Session(folder=folder)
    metas: list[FrameMeta] = []
    candidates = []
    for path in _scan(folder, recursive):
        if _is_image_candidate(path):
            candidates.append(path)
        else:
            reason = f"not an image file (extension {path.suffix or 'none'!r})"
            logger.warning("%s: skipped, %s", path, reason)
            session.skipped.append((path, reason))
    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        results = list(pool.map(_read_meta_or_reason, candidates))
    for path, result in zip(candidates, results, strict=True):
        if isinstance(result, FrameMeta):
            if kind_from_header(result.header) == "unknown":
                # the reader looked at folder names up to the file system's root; only
                # the scanned folder and those below it describe the frame
                result.kind = kind_from_path(path, root=folder)
            metas.append(result)
        else:
            logger.warning("%s: skipped, %s", path, result)
            session.skipped.append((path, result))

    session.groups = _group_frames(metas, temperature_tolerance)
    session.plans = [
        plan_calibration(g, session.groups, temperature_tolerance)
        for g in session.groups
        if g.kind == "light"
    ]
    if not session.groups_of("light"):
        session.notes.append("no light frames found")
    if session.skipped:
        session.notes.append(f"{len(session.skipped)} file(s) skipped (see skipped)")
    logger.info(
        "%s: %d frames in %d groups, %d skipped",
        folder,
        session.frame_count,
        len(session.groups),
        len(session.skipped),
    )
    return session
