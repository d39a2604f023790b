"""The reference light of each stack: chosen on sharpness, then moved to the median pointing.

:func:`choose_references` (before registration) gives each group its sharpest used light
(:func:`~astrostack.pipeline.selection.choose_reference`, stars per PSF area) or the
user's ``registration.reference``, shared by the groups that differ only by filter.
:func:`rereference` (after registration) moves a shared reference to the light nearest
the median pointing among those within the sharpness tolerance, composing every
transform onto it, so one light is the registration and the stack reference.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from .cache import hash_key
from .config import PipelineConfig
from .selection import choose_reference
from .stages import LightFrame

if TYPE_CHECKING:
    from .run import GroupResult

__all__ = ["choose_references", "rereference"]

logger = logging.getLogger(__name__)


def _user_reference(groups: list[GroupResult], cfg: PipelineConfig) -> LightFrame | None:
    want = cfg.registration.reference
    if not want or want == "best":
        return None
    for g in groups:
        for f in g.frames:
            if want in (f.name, f.path.name, f.path.stem) and f.cal_path is not None:
                return f
    logger.warning("reference %r not found among the lights; using the best frame", want)
    return None


def _quality_values(frames: list[LightFrame], key: str) -> list[float]:
    return [float("nan") if f.quality.get(key) is None else float(f.quality[key]) for f in frames]


def _best_frame(g: GroupResult) -> LightFrame | None:
    """The group's sharpest used light (:func:`choose_reference` without pointing)."""
    candidates = [f for f in g.frames if f.used]
    if not candidates:
        return None
    i = choose_reference(
        _quality_values(candidates, "n_stars"), _quality_values(candidates, "fwhm")
    )
    return candidates[i]


def choose_references(groups: list[GroupResult], cfg: PipelineConfig) -> None:
    """Set each group's stack reference (``best``) and registration reference.

    With ``registration.align_groups``, groups that differ only by filter (same target,
    camera, geometry and CFA pattern) share one registration reference - the best frame
    of the group with the most usable lights - so their stacks are pixel-aligned.
    """
    for g in groups:
        g.best = _best_frame(g)
    clusters: dict[tuple, list[GroupResult]] = {}
    for g in groups:
        k = (g.key["target"].lower(), g.key["camera"], g.key["shape"], g.key["binning"],
             g.key["bayer"])  # fmt: skip
        clusters.setdefault(k if cfg.registration.align_groups else (id(g),), []).append(g)
    for members in clusters.values():
        ref = _user_reference(members, cfg)
        if ref is None:
            lead = max(members, key=lambda g: (len(g.used), -groups.index(g)))
            ref = lead.best
        for g in members:
            g.reference = ref if g.best is not None else None
            if ref is not None and ref in g.used:
                g.best = ref  # one reference for the group's registration and its stack


def _frame_centre(f: LightFrame) -> np.ndarray:
    """Where the centre of *f* lands on its registration reference (pixels)."""
    h, w = f.meta.shape[-2:]
    p = np.asarray(f.registration["matrix"], dtype=np.float64) @ np.array(
        [(w - 1) / 2, (h - 1) / 2, 1.0]
    )
    return p[:2] / p[2]


def rereference(groups: list[GroupResult], cfg: PipelineConfig) -> None:
    """Move each shared reference to the near-best frame nearest the median pointing.

    The frames were registered onto the sharpest frame ``P``; among the frames of the
    reference's group within the sharpness tolerance (:func:`choose_reference`), the one
    whose centre lands nearest the median of all centres becomes the reference ``F``,
    and every transform is composed onto it, ``inv(M_F) @ M_i`` (``F`` gets the exact
    identity), so nothing is registered twice.  A user-given reference is kept.
    """
    if cfg.registration.reference and cfg.registration.reference != "best":
        return
    clusters: dict[int, list[GroupResult]] = {}
    for g in groups:
        if g.reference is not None:
            clusters.setdefault(id(g.reference), []).append(g)
    for members in clusters.values():
        prov = members[0].reference
        home = next((g for g in members if prov in g.frames), None)
        registered = [
            f for g in members for f in g.used if f.registration and f.registration.get("ok")
        ]
        if home is None or len(registered) < 3:
            continue
        centres = np.array([_frame_centre(f) for f in registered])
        median = np.median(centres, axis=0)
        candidates = [f for f in home.used if f.registration and f.registration.get("ok")]
        distance = [float(np.hypot(*(_frame_centre(f) - median))) for f in candidates]
        i = choose_reference(_quality_values(candidates, "n_stars"),
                             _quality_values(candidates, "fwhm"), distance)  # fmt: skip
        new = candidates[i]
        if new is prov:
            continue
        logger.info("reference %s (nearest the median pointing among the sharpest) instead of %s",
                    new.name, prov.name)  # fmt: skip
        to_new = np.linalg.inv(np.asarray(new.registration["matrix"], dtype=np.float64))
        half = new.registration.get("matrix_half")
        to_new_half = None if half is None else np.linalg.inv(np.asarray(half, dtype=np.float64))
        anchor = new.reg_key
        for f in registered:
            rec = dict(f.registration)
            if f is new:
                rec.update(matrix=np.eye(3).tolist(), model="identity", method="reference",
                           n_matches=0, rms=0.0)  # fmt: skip
                if to_new_half is not None:
                    rec["matrix_half"] = np.eye(3).tolist()
            else:
                m = to_new @ np.asarray(rec["matrix"], dtype=np.float64)
                rec["matrix"] = (m / m[2, 2]).tolist()
                if to_new_half is not None and rec.get("matrix_half") is not None:
                    mh = to_new_half @ np.asarray(rec["matrix_half"], dtype=np.float64)
                    rec["matrix_half"] = (mh / mh[2, 2]).tolist()
                rec["composed_via"] = prov.name
            f.registration = rec
            f.reg_key = hash_key("registration", f.reg_key, "onto", anchor)
        for g in members:
            g.reference = new
            if new in g.used:
                g.best = new
