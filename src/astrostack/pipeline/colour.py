"""Colour-specific steps of a run: RAW black levels and the finishing of a colour stack.

Three things happen here that the generic stages do not do:

- **Per-channel RAW black levels** (:func:`black_level_frame`, :func:`flat_black_level`).
  Without bias frames, lights and flats of a RAW session are offset-corrected with the
  black level stated by the file, for each CFA channel on its own (subtracting the mean of
  unequal channel levels leaves a colour cast); flats without bias or dark-flat frames get
  it too, so that the master flat keeps the true vignetting contrast.

- **RAW black levels against the master bias** (:func:`check_black_levels`).  A camera RAW
  file states the black level of each CFA channel (LibRaw's
  ``black_level_per_channel``).  When a master bias (offset) is also given, both describe
  the same pedestal; if they disagree by more than a few ADU, the bias frames probably come
  from another ISO, another camera or were processed by other software, and the lights'
  background colour will be wrong.  The check compares, for each CFA channel, the median
  of the master bias over that channel's pixels with the stated level, and logs a warning.
- **Finishing a colour stack** (:func:`finish_colour`): an optional camera white balance
  (the multipliers LibRaw reads from the RAW file, normalised to green = 1), then
  background neutralisation, the standard post-stack step of Siril ("background
  neutralization") and PixInsight (``BackgroundNeutralization``): each channel is offset so
  that the robust background levels of R, G and B are equal.  An offset (not a scale) is
  used because the sky background is additive light; star and nebula colours are not
  changed.  What was done is returned as FITS keywords for the stack header.

"Neutral" means: the robust background levels (median over background pixels found by
iterated clipping of the channel mean, :func:`astrostack.calibrate.background_levels`) of
the three channels are equal; the residual spread is recorded as ``ASNEUTSP``, in units of
the background noise.

Stack keywords written for colour stacks: ``CTYPE3 = 'RGB'`` (the cube is ``NAXIS3 = 3``,
planes R, G, B, as Siril and PixInsight write it), ``ASWB`` (``'none'`` or ``'camera'``)
with ``ASWBR``/``ASWBG``/``ASWBB``, ``ASNEUTRL`` (neutralised or not), ``ASBKGR``/``G``/``B``
(background levels before), ``ASNEUOR``/``G``/``B`` (offsets added) and ``ASNEUTSP``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..calibrate import Master, apply_white_balance, background_levels
from ..io import FrameMeta
from ..register import estimate_noise

__all__ = [
    "BlackLevelCheck",
    "ColourFinish",
    "black_level_frame",
    "black_level_master",
    "camera_multipliers",
    "check_black_levels",
    "check_plan_black_levels",
    "finish_colour",
    "finish_group_colour",
    "flat_black_level",
    "raw_black_levels",
]

logger = logging.getLogger(__name__)

_LETTERS = "RGB"


@dataclass
class BlackLevelCheck:
    """Per-CFA-channel black levels of a RAW file compared with a master bias.

    Attributes
    ----------
    file : str
        The RAW light the levels were read from.
    stated : list of float
        Black level stated by the file, per channel R, G, B (G = mean of the two greens).
    measured : list of float
        Median of the master bias over that channel's pixels (ADU).
    difference : list of float
        ``measured - stated`` per channel.
    tolerance : float
        Largest accepted ``|difference|`` in ADU.
    white_level : float or None
        Saturation level stated by the file (ADU, black included).
    """

    file: str
    stated: list[float]
    measured: list[float]
    difference: list[float]
    tolerance: float
    white_level: float | None = None

    @property
    def ok(self) -> bool:
        """True when every channel agrees within the tolerance."""
        return bool(np.all(np.abs(self.difference) <= self.tolerance))

    def message(self) -> str:
        """One line saying what disagrees and what to do."""
        parts = ", ".join(
            f"{c} file {s:.1f} vs bias {m:.1f}"
            for c, s, m in zip(_LETTERS, self.stated, self.measured, strict=True)
        )
        return (
            f"{self.file}: RAW black level disagrees with the master bias by more than "
            f"{self.tolerance:g} ADU ({parts}); check that the bias frames come from the same "
            "camera and ISO, or calibrate without them (the RAW black level is then used)"
        )


def raw_black_levels(meta: FrameMeta) -> np.ndarray | None:
    """Black level of each cell of the 2x2 CFA tile, as held (``float64 [2, 2]``).

    Built from LibRaw's ``black_level_per_channel`` (indexed by colour index) and
    ``raw_pattern`` (colour index of each tile cell), which the RAW reader keeps in
    ``meta.header``.  Returns None for files that do not state them (FITS, TIFF).
    """
    blacks = meta.header.get("BLACK_LEVEL_PER_CHANNEL")
    pattern = meta.header.get("RAW_PATTERN")
    if not blacks or pattern is None:
        return None
    idx = np.asarray(pattern, dtype=np.int64)
    if idx.shape != (2, 2):
        return None
    values = np.asarray(blacks, dtype=np.float64)
    if np.any(idx < 0) or np.any(idx >= values.size):
        return None
    return values[idx]


def black_level_frame(
    meta: FrameMeta, shape: tuple[int, ...], default: float | None = None
) -> np.ndarray | None:
    """The stated black level as an offset frame: per CFA cell for RAW, else constant.

    Camera RAW files may state a different black level for each CFA channel (LibRaw's
    ``black_level_per_channel``); subtracting their mean would leave a colour cast of a few
    ADU in the background and in the flat field.

    Parameters
    ----------
    meta : FrameMeta
        Metadata of the frame (RAW levels in ``meta.header``, else ``meta.black_level``).
    shape : tuple of int
        Shape of the frame's data.
    default : float, optional
        Constant used when the file states no level (e.g. the session plan's offset).

    Returns
    -------
    numpy.ndarray or None
        float32 offset of *shape*, or None when no level is known.
    """
    cells = raw_black_levels(meta)
    if cells is not None and len(shape) == 2:
        out = np.empty(shape, dtype=np.float32)
        for dy in range(2):
            for dx in range(2):
                out[dy::2, dx::2] = cells[dy, dx]
        return out
    level = meta.black_level if meta.black_level is not None else default
    if level is None:
        return None
    return np.full(shape, float(level), dtype=np.float32)


def black_level_master(meta: FrameMeta) -> Master | None:
    """The stated black level of a calibration frame as a master offset, or None.

    Used for flats when there is neither a master bias nor a master dark-flat: the flats of
    a RAW session still have their black level subtracted (per CFA channel), so that the
    master flat corrects vignetting fully.
    """
    shape = tuple(meta.shape[-2:]) if meta.shape else ()
    if len(shape) != 2:
        return None
    data = black_level_frame(meta, shape)
    if data is None or not np.any(data):
        return None
    levels = raw_black_levels(meta)
    desc = levels.ravel().tolist() if levels is not None else [float(meta.black_level)]
    return Master(
        data=data,
        kind="bias",
        n_frames=0,
        bayer=meta.bayer,
        digest="black-level:" + ",".join(f"{v:g}" for v in desc),
        header={"ASCONST": float(np.mean(desc))},
    )


def flat_black_level(meta: FrameMeta, master_dark: Master | None = None) -> Master | None:
    """Offset to subtract from flats that have no master bias and no master dark-flat.

    Parameters
    ----------
    meta : FrameMeta
        Metadata of one flat of the group.
    master_dark : Master, optional
        The master dark the flats would otherwise use.  A dark that still includes the
        offset and has the flats' exposure (within 5 %) is better than the stated black
        level (it also removes amp glow), so None is returned then.

    Returns
    -------
    Master or None
        :func:`black_level_master` of *meta*, or None.
    """
    if master_dark is not None and master_dark.includes_bias:
        exp, dexp = meta.exposure, master_dark.exposure
        if exp and dexp and abs(exp / dexp - 1.0) < 0.05:
            return None
    master = black_level_master(meta)
    if master is not None:
        logger.info(
            "flats %s: no bias or dark-flat; subtracting the stated black level %s",
            meta.path,
            master.digest.split(":", 1)[1],
        )
    return master


def _channel_of_cell(bayer: str) -> np.ndarray:
    lookup = {"R": 0, "G": 1, "B": 2}
    return np.array([[lookup[bayer[0]], lookup[bayer[1]]], [lookup[bayer[2]], lookup[bayer[3]]]])


def check_black_levels(
    meta: FrameMeta,
    bias: np.ndarray,
    tolerance: float = 4.0,
) -> BlackLevelCheck | None:
    """Compare a RAW light's stated per-channel black levels with a master bias.

    Parameters
    ----------
    meta : FrameMeta
        Metadata of a RAW light (``header['BLACK_LEVEL_PER_CHANNEL']``, ``RAW_PATTERN``
        and ``bayer`` as the RAW reader fills them).
    bias : numpy.ndarray
        Master bias mosaic ``[y, x]`` of the same geometry, ADU.
    tolerance : float
        Largest accepted difference in ADU.  A master bias of a few frames is known to
        well below 1 ADU in median; real pedestals drift by 1-2 ADU with temperature.

    Returns
    -------
    BlackLevelCheck or None
        None when the file states no levels, is not a Bayer mosaic, or the bias does not
        fit it.  A warning is logged when the check fails.
    """
    cells = raw_black_levels(meta)
    bias = np.asarray(bias)
    if cells is None or meta.bayer is None or bias.ndim != 2 or bias.shape[0] < 2:
        return None
    if meta.shape and tuple(meta.shape[-2:]) != bias.shape:
        return None
    chan = _channel_of_cell(meta.bayer)
    stated, measured = [], []
    for c in range(3):
        cell_vals, cell_meds = [], []
        for dy in range(2):
            for dx in range(2):
                if chan[dy, dx] != c:
                    continue
                cell_vals.append(cells[dy, dx])
                plane = bias[dy::2, dx::2]
                cell_meds.append(float(np.median(plane[np.isfinite(plane)])))
        stated.append(float(np.mean(cell_vals)))
        measured.append(float(np.mean(cell_meds)))
    diff = [m - s for m, s in zip(measured, stated, strict=True)]
    name = str(meta.path) if meta.path is not None else "RAW light"
    check = BlackLevelCheck(name, stated, measured, diff, float(tolerance), meta.white_level)
    if not check.ok:
        logger.warning(check.message())
    else:
        logger.info(
            "%s: RAW black levels %s agree with the master bias (%s)",
            name,
            [round(v, 1) for v in stated],
            [round(v, 1) for v in measured],
        )
    return check


def camera_multipliers(meta: FrameMeta) -> tuple[float, float, float] | None:
    """Camera white-balance multipliers ``(R, G, B)`` normalised to G = 1, or None.

    Uses ``meta.wb_multipliers`` (LibRaw's ``camera_whitebalance``: R, G, B, G2); the two
    greens are averaged when both are given.
    """
    wb = meta.wb_multipliers
    if not wb or len(wb) < 3:
        return None
    r, g, b = (float(v) for v in wb[:3])
    if len(wb) >= 4 and float(wb[3]) > 0:
        g = 0.5 * (g + float(wb[3]))
    if not (r > 0 and g > 0 and b > 0) or not all(np.isfinite([r, g, b])):
        return None
    return (r / g, 1.0, b / g)


@dataclass
class ColourFinish:
    """What :func:`finish_colour` did.

    Attributes
    ----------
    image : numpy.ndarray
        The finished float32 ``[3, y, x]`` image (or the input, unchanged, for mono).
    multipliers : tuple of float or None
        White-balance multipliers applied (R, G, B), None when none were.
    levels_before, levels_after : list of float
        Robust background levels of R, G, B before and after neutralisation.
    offsets : list of float
        Offsets added to R, G, B by the neutralisation (zeros when it was off).
    noise : float
        Background noise of the luminance (robust sigma), the scale of ``spread``.
    cards : dict
        FITS keywords recording the above.
    """

    image: np.ndarray
    multipliers: tuple[float, float, float] | None = None
    levels_before: list[float] = field(default_factory=list)
    levels_after: list[float] = field(default_factory=list)
    offsets: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    noise: float = float("nan")
    cards: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, str]:
        """Lines for the run report (empty for mono)."""
        if not self.cards:
            return {}
        wb = "none"
        if self.multipliers is not None:
            wb = "camera (R {:.3f}, G {:.3f}, B {:.3f})".format(*self.multipliers)
        out = {"white balance": wb}
        if self.cards.get("ASNEUTRL"):
            offs = ", ".join(f"{c} {o:+.4g}" for c, o in zip(_LETTERS, self.offsets, strict=True))
            out["background neutralised"] = f"offsets {offs}"
        else:
            out["background neutralised"] = "no"
        return out

    @property
    def spread(self) -> float:
        """Peak-to-peak of the final background levels in units of the background noise."""
        if not self.levels_after or not np.isfinite(self.noise) or self.noise <= 0:
            return float("nan")
        return float(np.ptp(self.levels_after) / self.noise)


def finish_colour(
    image: np.ndarray,
    neutralize: bool = True,
    multipliers: Sequence[float] | None = None,
    sigma: float = 2.5,
) -> ColourFinish:
    """White-balance and neutralise the background of a linear colour stack.

    Parameters
    ----------
    image : numpy.ndarray
        Stack ``[3, y, x]`` (NaN = no data); anything else is returned unchanged.
    neutralize : bool
        Offset each channel so that the three background levels equal their mean.
    multipliers : sequence of float, optional
        White-balance multipliers ``(R, G, B)`` applied first (e.g.
        :func:`camera_multipliers`).
    sigma : float
        Clipping threshold used to find background pixels.

    Returns
    -------
    ColourFinish
    """
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[0] != 3:
        return ColourFinish(image=arr)
    cards: dict[str, Any] = {"CTYPE3": "RGB"}
    used: tuple[float, float, float] | None = None
    if multipliers is not None:
        used = tuple(float(m) for m in list(multipliers)[:3])  # type: ignore[assignment]
        arr = apply_white_balance(arr, used)
        cards.update({"ASWB": "camera", "ASWBR": used[0], "ASWBG": used[1], "ASWBB": used[2]})
    else:
        cards["ASWB"] = "none"
    finite = np.all(np.isfinite(arr), axis=0)
    if not finite.any():
        cards["ASNEUTRL"] = False
        return ColourFinish(image=arr, multipliers=used, cards=cards)
    before = background_levels(arr, sigma=sigma)
    lum = arr.mean(axis=0)
    noise = float(estimate_noise(np.where(finite, lum, np.nanmedian(lum[finite]))))
    offsets = [0.0, 0.0, 0.0]
    after = [float(v) for v in before]
    if neutralize:
        target = float(np.mean(before))
        offsets = [target - float(v) for v in before]
        arr = arr.copy() if arr is image else arr
        for c in range(3):
            arr[c] += np.float32(offsets[c])
        after = [float(v) for v in background_levels(arr, sigma=sigma)]
        logger.info(
            "background neutralised: levels %s -> %s (offsets %s)",
            [round(v, 4) for v in before],
            [round(v, 4) for v in after],
            [round(v, 4) for v in offsets],
        )
    cards["ASNEUTRL"] = bool(neutralize)
    for letter, lev, off in zip(_LETTERS, before, offsets, strict=True):
        cards[f"ASBKG{letter}"] = float(lev)
        cards[f"ASNEUO{letter}"] = float(off)
    result = ColourFinish(
        image=arr,
        multipliers=used,
        levels_before=[float(v) for v in before],
        levels_after=after,
        offsets=offsets,
        noise=noise,
        cards=cards,
    )
    if np.isfinite(result.spread):
        cards["ASNEUTSP"] = round(result.spread, 4)
    return result


def finish_group_colour(image: np.ndarray, meta: FrameMeta, color: Any) -> ColourFinish:
    """Apply the run's colour options (``[color]`` section) to a group's stack.

    Parameters
    ----------
    image : numpy.ndarray
        The stack; mono stacks are returned unchanged.
    meta : FrameMeta
        Metadata of the reference light (camera white balance for ``'camera'``).
    color : ColorConfig
        ``neutralize_background`` and ``white_balance`` are used.

    Returns
    -------
    ColourFinish
    """
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[0] != 3:
        return ColourFinish(image=arr)
    multipliers = None
    if color.white_balance == "camera":
        multipliers = camera_multipliers(meta)
        if multipliers is None:
            logger.warning(
                "%s: color.white_balance = 'camera' but the file has no camera white balance "
                "(only camera RAW files do); the stack is not white-balanced",
                meta.path,
            )
    return finish_colour(arr, neutralize=color.neutralize_background, multipliers=multipliers)


def check_plan_black_levels(
    plan: Any, masters: Any, tolerance: float = 4.0
) -> BlackLevelCheck | None:
    """Run :func:`check_black_levels` for one calibration plan of a run.

    Parameters
    ----------
    plan : astrostack.io.CalibrationPlan
        Its first light's metadata is checked (all lights of a plan share camera and
        settings).
    masters : astrostack.pipeline.stages.MasterSet or None
        The plan's masters; nothing is checked without a master bias.
    tolerance : float
        Largest accepted difference in ADU.

    Returns
    -------
    BlackLevelCheck or None
        None when there is nothing to check (no RAW levels, no bias) or the bias cannot
        be read (that error is reported where the bias is used).
    """
    if masters is None or plan is None or getattr(plan, "light", None) is None:
        return None
    frames = getattr(plan.light, "frames", None) or []
    if not frames or raw_black_levels(frames[0]) is None:
        return None
    try:
        bias = masters.get("bias")
    except (OSError, ValueError) as exc:
        logger.debug("black-level check skipped: master bias unreadable (%s)", exc)
        return None
    if bias is None:
        return None
    return check_black_levels(frames[0], bias.data, tolerance=tolerance)
