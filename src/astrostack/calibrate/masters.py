"""Master offset (bias), dark, dark-flat and flat frames, streamed through the combine engine.

Each master is a stack: the frames are checked one at a time (readable, same size, sensible
exposure), then combined band by band by :func:`astrostack.combine.combine_sources`, so memory
stays bounded whatever the number of frames.  Preprocessing that needs a whole image (the
master offset subtracted from each dark, the offset or dark-flat subtracted from each flat and
its per-CFA-plane normalisation) is applied to each band as it is read.

Masters are written as float32 FITS with a provenance header (inputs, method, parameters,
version and a hash of the inputs' paths, sizes, modification times and the parameters) and are
reused by :func:`load_or_build_master` while that hash is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astrostack.io import FrameMeta, FrameReadError, read_frame, write_fits

from .master_inputs import (
    _combine,
    _common_meta,
    _plane_factor_image,
    _plane_factors,
    _scan_frames,
    astrostack_version,
    inputs_hash,
    plane_levels,
)

__all__ = [
    "MASTER_KINDS",
    "Master",
    "build_master_bias",
    "build_master_dark",
    "build_master_darkflat",
    "build_master_flat",
    "load_or_build_master",
]

logger = logging.getLogger(__name__)

#: Kinds of master this module builds.
MASTER_KINDS = ("bias", "dark", "darkflat", "flat")

_IMAGETYP = {
    "bias": "Master Bias",
    "dark": "Master Dark",
    "darkflat": "Master Dark Flat",
    "flat": "Master Flat",
}
_DEFAULT_METHOD = {
    "bias": "median",
    "dark": "winsorized",
    "darkflat": "winsorized",
    "flat": "winsorized",
}


@dataclass
class Master:
    """A master calibration frame.

    Attributes
    ----------
    data : numpy.ndarray
        float32 ``[y, x]`` (mono or CFA mosaic) or ``[c, y, x]``.  A dark holds the thermal
        signal (offset removed) unless ``includes_bias``; a flat is normalised to 1 (each CFA
        plane on its own).
    kind : str
        ``'bias'``, ``'dark'``, ``'darkflat'`` or ``'flat'``.
    n_frames : int
        Number of frames combined.
    exposure : float or None
        Exposure of the combined frames, seconds (median).
    temperature : float or None
        Mean sensor temperature, deg C.
    bayer : str or None
        CFA pattern of the frames (``None`` for mono).
    includes_bias : bool
        For darks: True when no master offset was subtracted (the dark still holds it).
    method : str
        Combine method used.
    digest : str
        Hash of the inputs and parameters (see :func:`inputs_hash`).
    header : dict
        FITS keywords written with the master (provenance).
    inputs : list of Path
        Frames that went into the master.
    skipped : list of (Path, str)
        Frames left out, with the reason.
    path : Path or None
        File the master was written to or loaded from.
    reused : bool
        True when :func:`load_or_build_master` reused an existing file.
    """

    data: np.ndarray
    kind: str
    n_frames: int
    exposure: float | None = None
    temperature: float | None = None
    bayer: str | None = None
    includes_bias: bool = False
    method: str = "median"
    digest: str = ""
    header: dict = field(default_factory=dict)
    inputs: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    path: Path | None = None
    reused: bool = False

    def __post_init__(self) -> None:
        if self.data.dtype != np.float32:
            self.data = self.data.astype(np.float32)
        if self.kind not in MASTER_KINDS:
            msg = f"Master kind {self.kind!r} is not one of {', '.join(MASTER_KINDS)}"
            raise ValueError(msg)

    @property
    def cfa(self) -> bool:
        """True for a 2-D Bayer mosaic."""
        return self.bayer is not None and self.data.ndim == 2

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the data."""
        return tuple(self.data.shape)

    def save(self, path: str | Path, durable: bool = True) -> Path:
        """Write the master as float32 FITS (atomically) with its provenance header.

        Parameters
        ----------
        path : str or Path
            Output file.
        durable : bool
            Flush to disk before the rename; False suits a recomputable cache
            (see :func:`astrostack.io.atomic_path`).

        Returns
        -------
        Path
            The written file.
        """
        path = Path(path)
        history = [f"input {p}" for p in self.inputs]
        history += [f"skipped {p}: {reason}" for p, reason in self.skipped]
        bayer = self.bayer if self.cfa else None
        write_fits(
            path, self.data, header=dict(self.header), history=history, bayer=bayer,
            durable=durable,
        )  # fmt: skip
        self.path = path
        logger.info("wrote master %s %s (%d frames)", self.kind, path, self.n_frames)
        return path

    @classmethod
    def load(cls, path: str | Path, kind: str | None = None) -> Master:
        """Read a master written by :meth:`save`, or another program's master with *kind*.

        Parameters
        ----------
        path : str or Path
            The master's FITS file.
        kind : str or None
            Required for a master made by another program (no ``ASKIND`` keyword): a master
            dark from elsewhere is taken to still include the offset, a master flat is
            normalised to a median of 1 (per CFA plane).

        Returns
        -------
        Master

        Raises
        ------
        FrameReadError
            If the file cannot be read, or is not an astrostack master and *kind* is None.
        """
        frame = read_frame(path)
        h = frame.meta.header
        stored = str(h.get("ASKIND", "")).strip().lower()
        if stored not in MASTER_KINDS:
            if kind not in MASTER_KINDS:
                msg = (
                    "not an astrostack master (no ASKIND keyword); rebuild it, or load it "
                    "with kind='bias'|'dark'|'darkflat'|'flat'"
                )
                raise FrameReadError(path, msg)
            data = frame.data
            cfa = frame.meta.bayer is not None and data.ndim == 2
            if kind == "flat":
                norm = plane_levels(data, cfa)
                if not np.all(np.isfinite(norm)) or np.any(norm <= 0):
                    raise FrameReadError(path, f"flat level {norm.tolist()} is not positive")
                data = data * _plane_factor_image(1.0 / norm, data.shape, cfa)
            return cls(
                data=data,
                kind=kind,
                n_frames=int(h.get("NCOMBINE", 0) or 0),
                exposure=frame.meta.exposure,
                temperature=frame.meta.temperature,
                bayer=frame.meta.bayer,
                includes_bias=kind in ("dark", "darkflat"),
                method="external",
                digest=inputs_hash([path], {"external": kind}),
                header=dict(h),
                path=Path(path),
            )
        if kind is not None and kind != stored:
            raise FrameReadError(path, f"this is a master {stored}, not a master {kind}")
        return cls(
            data=frame.data,
            kind=stored,
            n_frames=int(h.get("NCOMBINE", 0) or 0),
            exposure=frame.meta.exposure,
            temperature=frame.meta.temperature,
            bayer=frame.meta.bayer,
            includes_bias=bool(h.get("ASINCBIA", False)),
            method=str(h.get("ASMETHOD", "")),
            digest=str(h.get("ASHASH", "")),
            header={k: v for k, v in h.items() if k not in ("COMMENT", "HISTORY")},
            path=Path(path),
        )


def _header(kind: str, n: int, method: str, common: dict, digest: str, extra: dict) -> dict:
    meta: FrameMeta = common["meta"]
    h: dict[str, Any] = {
        "IMAGETYP": _IMAGETYP[kind],
        "ASKIND": kind,
        "NCOMBINE": n,
        "ASMETHOD": method,
        "ASHASH": digest,
        "ASVERS": astrostack_version(),
        "XBINNING": int(meta.binning[1]),
        "YBINNING": int(meta.binning[0]),
    }
    if common["exposure"] is not None:
        h["EXPTIME"] = common["exposure"]
    if common["temperature"] is not None:
        h["CCD-TEMP"] = round(common["temperature"], 3)
    if common["bayer"] is not None:
        h["BAYERPAT"] = common["bayer"]
        h["ROWORDER"] = "TOP-DOWN"
    for key, value in (("INSTRUME", meta.camera), ("GAIN", meta.gain), ("EGAIN", meta.egain)):
        if value is not None:
            h[key] = value
    if meta.iso is not None:
        h["ISOSPEED"] = meta.iso
    h.update(extra)
    return h


def _no_frames(kind: str, paths: Sequence, skipped: list) -> ValueError:
    reasons = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
    msg = f"no usable {kind} frames among {len(paths)} files ({reasons}); check the folder"
    return ValueError(msg)


def _check_master(master: Master | None, shape: tuple[int, ...], what: str) -> None:
    if master is not None and master.shape != shape:
        src = master.path or f"master {master.kind}"
        msg = (
            f"{src}: shape {master.shape} does not match the {what} frames' {shape}; "
            "use a master from the same camera, binning and crop"
        )
        raise ValueError(msg)


# ---------------------------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------------------------


def _params(
    kind: str,
    method: str | None = None,
    sigma_low: float = 3.0,
    sigma_high: float = 3.0,
    combine_options: dict[str, Any] | None = None,
    master_bias: Master | float | None = None,
    master_darkflat: Master | None = None,
    master_dark: Master | None = None,
    cfa: bool | None = None,
    **_ignored: Any,
) -> dict[str, Any]:
    """Everything besides the input files that decides a master's content (for its hash)."""
    return {
        "kind": kind,
        "method": method or _DEFAULT_METHOD[kind],
        **_options(sigma_low, sigma_high, combine_options),
        "bias": _digest(master_bias),
        "darkflat": _digest(master_darkflat),
        "dark": _digest(master_dark),
        "cfa": cfa,
    }


def _digest(master: Master | float | None) -> str | None:
    if master is None:
        return None
    if isinstance(master, Master):
        return master.digest
    return f"constant:{float(master):g}"


def _as_bias(master_bias: Master | float | None, shape: tuple[int, ...]) -> Master | None:
    """A constant offset (black level, ADU) as a master offset of the frames' shape."""
    if master_bias is None or isinstance(master_bias, Master):
        return master_bias
    value = float(master_bias)
    return Master(
        data=np.full(shape, value, dtype=np.float32),
        kind="bias",
        n_frames=0,
        digest=_digest(value),
        header={"ASCONST": value},
    )


def _assemble(
    kind: str,
    data: np.ndarray,
    frames: list,
    method: str,
    digest: str,
    common: dict,
    extra: dict,
    skipped: list,
    includes_bias: bool = False,
) -> Master:
    """The :class:`Master` of *kind* combined from *frames*, with its provenance header."""
    return Master(
        data=data,
        kind=kind,
        n_frames=len(frames),
        exposure=common["exposure"],
        temperature=common["temperature"],
        bayer=common["bayer"],
        includes_bias=includes_bias,
        method=method,
        digest=digest,
        header=_header(kind, len(frames), method, common, digest, extra),
        inputs=[g.path for g in frames],
        skipped=skipped,
    )


def _options(sigma_low: float, sigma_high: float, combine_options: dict | None) -> dict:
    opts = {"sigma_low": float(sigma_low), "sigma_high": float(sigma_high)}
    opts.update(combine_options or {})
    return opts


def build_master_bias(
    paths: Sequence[str | Path],
    method: str = "median",
    sigma_low: float = 3.0,
    sigma_high: float = 3.0,
    memory_limit: int | str | None = None,
    combine_options: dict[str, Any] | None = None,
) -> Master:
    """Combine offset (bias) frames into a master offset.

    Parameters
    ----------
    paths : sequence of path
        Bias frames.  Unreadable frames and frames of another size are skipped (logged).
    method : str
        ``'median'`` (the pixel-wise median, like ImageMagick ``-evaluate-sequence median``),
        ``'winsorized'`` (winsorized sigma-clipped mean) or any engine method.
    sigma_low, sigma_high : float
        Rejection thresholds for clipping methods.
    memory_limit : int or str or None
        Memory budget of the combine engine (its default when None).
    combine_options : dict or None
        Further keyword arguments for :func:`astrostack.combine.combine_sources`.

    Returns
    -------
    Master

    Raises
    ------
    ValueError
        If no frame is usable.
    """
    opts = _options(sigma_low, sigma_high, combine_options)
    good, skipped, _ = _scan_frames(paths, "bias")
    if not good:
        raise _no_frames("bias", paths, skipped)
    digest = inputs_hash(paths, _params("bias", method, sigma_low, sigma_high, combine_options))
    data, good = _combine(good, "bias", method, None, skipped, memory_limit, opts)
    common = _common_meta(good)
    extra = {"ASSIGLO": opts["sigma_low"], "ASSIGHI": opts["sigma_high"]}
    logger.info("master bias: %d frames, %s, %d skipped", len(good), method, len(skipped))
    return _assemble("bias", data, good, method, digest, common, extra, skipped)


def build_master_dark(
    paths: Sequence[str | Path],
    master_bias: Master | float | None = None,
    method: str = "winsorized",
    sigma_low: float = 3.0,
    sigma_high: float = 3.0,
    memory_limit: int | str | None = None,
    combine_options: dict[str, Any] | None = None,
    kind: str = "dark",
) -> Master:
    """Combine darks (each minus the master offset) into a master dark.

    Parameters
    ----------
    paths : sequence of path
        Dark frames of one exposure.  Unreadable frames, frames of another size and frames
        of another exposure are skipped (logged).
    master_bias : Master or float or None
        Master offset, or a constant offset in ADU (black level stated by the camera).
        With it the master dark holds the thermal signal only and can be
        scaled to other exposures; without it the master keeps the offset
        (``includes_bias=True``) and only suits lights of the same exposure.
    method : str
        Combine method (``'winsorized'`` default; ``'median'``, ``'sigma'``, ...).
    sigma_low, sigma_high : float
        Rejection thresholds.
    memory_limit : int or str or None
        Memory budget of the combine engine.
    combine_options : dict or None
        Further keyword arguments for :func:`astrostack.combine.combine_sources`.
    kind : {'dark', 'darkflat'}
        What the master is.

    Returns
    -------
    Master
    """
    if kind not in ("dark", "darkflat"):
        msg = f"build_master_dark: kind must be 'dark' or 'darkflat', got {kind!r}"
        raise ValueError(msg)
    opts = _options(sigma_low, sigma_high, combine_options)
    good, skipped, shape = _scan_frames(paths, kind)
    if not good:
        raise _no_frames(kind, paths, skipped)
    master_bias = _as_bias(master_bias, shape)
    _check_master(master_bias, shape, kind)
    pre = master_bias.data if master_bias is not None else None
    params = _params(kind, method, sigma_low, sigma_high, combine_options, master_bias)
    digest = inputs_hash(paths, params)
    data, good = _combine(good, kind, method, pre, skipped, memory_limit, opts)
    common = _common_meta(good)
    extra = {
        "ASSIGLO": opts["sigma_low"],
        "ASSIGHI": opts["sigma_high"],
        "ASINCBIA": master_bias is None,
    }
    if master_bias is not None:
        extra["ASBIAS"] = master_bias.digest
    logger.info(
        "master %s: %d frames, %s, %s, %d skipped",
        kind,
        len(good),
        method,
        "offset included" if master_bias is None else "offset removed",
        len(skipped),
    )
    return _assemble(
        kind, data, good, method, digest, common, extra, skipped,
        includes_bias=master_bias is None,
    )  # fmt: skip


def build_master_darkflat(
    paths: Sequence[str | Path], master_bias: Master | None = None, **kwargs: Any
) -> Master:
    """Combine dark-flats (darks of the flats' exposure) into a master dark-flat.

    Parameters
    ----------
    paths : sequence of path
        Dark-flat frames.
    master_bias : Master or None
        Normally None: a dark-flat keeps the offset so that ``flat - darkflat`` removes both.
    **kwargs
        Passed to :func:`build_master_dark`.

    Returns
    -------
    Master
    """
    return build_master_dark(paths, master_bias=master_bias, kind="darkflat", **kwargs)


def _flat_pre(
    shape: tuple[int, ...],
    exposure: float | None,
    master_bias: Master | None,
    master_darkflat: Master | None,
    master_dark: Master | None,
) -> tuple[np.ndarray | None, str]:
    """What to subtract from each flat, and a description of it."""
    if master_darkflat is not None:
        _check_master(master_darkflat, shape, "flat")
        pre = master_darkflat.data
        if not master_darkflat.includes_bias and master_bias is not None:
            pre = pre + master_bias.data
        return pre, "dark-flat"
    pre = None
    what = []
    if master_bias is not None:
        _check_master(master_bias, shape, "flat")
        pre = master_bias.data
        what.append("offset")
    if master_dark is not None:
        _check_master(master_dark, shape, "flat")
        if master_dark.includes_bias:
            if master_bias is None and exposure and master_dark.exposure:
                if abs(exposure / master_dark.exposure - 1.0) < 0.05:
                    return master_dark.data, "dark (incl. offset)"
            if master_bias is None:
                logger.warning(
                    "the master dark includes the offset and its exposure (%ss) is not the "
                    "flats' (%ss): not subtracted from the flats",
                    master_dark.exposure,
                    exposure,
                )
        elif exposure and master_dark.exposure:
            k = exposure / master_dark.exposure
            pre = (
                master_dark.data * np.float32(k)
                if pre is None
                else pre + np.float32(k) * master_dark.data
            )
            what.append(f"dark*{k:.4g}")
    if pre is None:
        logger.warning(
            "flats: no offset, dark-flat or dark to subtract; the flat keeps the camera's "
            "offset and will under-correct vignetting. Add bias or dark-flat frames"
        )
        return None, "nothing"
    return np.ascontiguousarray(pre, dtype=np.float32), "+".join(what)


def build_master_flat(
    paths: Sequence[str | Path],
    master_bias: Master | float | None = None,
    master_darkflat: Master | None = None,
    master_dark: Master | None = None,
    method: str = "winsorized",
    sigma_low: float = 3.0,
    sigma_high: float = 3.0,
    cfa: bool | None = None,
    memory_limit: int | str | None = None,
    combine_options: dict[str, Any] | None = None,
) -> Master:
    """Combine flats into a master flat normalised to 1.

    Each flat has the master dark-flat subtracted (or else the master offset plus the
    exposure-scaled master dark, or the offset alone), is divided by its own median level
    (the engine's per-frame scales) and, for a Bayer mosaic, each of its four 2x2 CFA
    sub-lattices is normalised on its own so that the colour of the flat's light source does
    not matter.  The combined result is normalised to a median of 1 (per CFA plane or per
    channel).

    Parameters
    ----------
    paths : sequence of path
        Flat frames.  Unreadable frames, frames of another size and frames with no signal are
        skipped (logged).
    master_bias, master_darkflat, master_dark : Master or None
        Calibration of the flats (see above); *master_bias* may also be a constant offset
        in ADU (black level stated by the camera).
    method : str
        Combine method (``'winsorized'`` default).
    sigma_low, sigma_high : float
        Rejection thresholds.
    cfa : bool or None
        Treat the frames as a Bayer mosaic; ``None`` takes it from the frames' metadata.
    memory_limit : int or str or None
        Memory budget of the combine engine.
    combine_options : dict or None
        Further keyword arguments for :func:`astrostack.combine.combine_sources`.

    Returns
    -------
    Master
    """
    opts = _options(sigma_low, sigma_high, combine_options)
    cfa_arg = cfa
    # First pass without preprocessing to learn shape and exposure, then measure levels.
    probe, skipped0, shape = _scan_frames(paths, "flat")
    if not probe:
        raise _no_frames("flat", paths, skipped0)
    common = _common_meta(probe)
    if cfa is None:
        cfa = common["bayer"] is not None and len(shape) == 2
    master_bias = _as_bias(master_bias, shape)
    pre, pre_what = _flat_pre(shape, common["exposure"], master_bias, master_darkflat, master_dark)
    good, skipped, shape = _scan_frames([g.path for g in probe], "flat", pre, cfa)
    skipped = skipped0 + skipped
    usable = []
    for g in good:
        lv = g.levels
        if lv is None or not np.all(np.isfinite(lv)) or np.any(lv <= 0):
            reason = (
                f"level {np.round(lv, 1).tolist()} ADU after removing the {pre_what} is not "
                "positive; is it really a flat?"
            )
            skipped.append((g.path, reason))
            logger.warning("skipping flat %s: %s", g.path, reason)
        else:
            usable.append(g)
    if not usable:
        raise _no_frames("flat", paths, skipped)
    for g in usable:
        overall = float(np.median(g.levels))
        g.scale = 1.0 / overall  # the engine's per-frame multiplicative normalisation
        if len(g.levels) > 1:  # and each CFA plane / channel to the same level
            g.factor = _plane_factors(overall / g.levels, shape, cfa)
    data, usable = _combine(usable, "flat", method, pre, skipped, memory_limit, opts)
    norm = plane_levels(data, cfa)
    if not np.all(np.isfinite(norm)) or np.any(norm <= 0):
        msg = f"master flat has a non-positive level {norm.tolist()}; check the flat frames"
        raise ValueError(msg)
    data = data * _plane_factor_image(1.0 / norm, data.shape, cfa)
    params = _params(
        "flat",
        method,
        sigma_low,
        sigma_high,
        combine_options,
        master_bias,
        master_darkflat,
        master_dark,
        cfa_arg,
    )
    digest = inputs_hash(paths, params)
    common = _common_meta(usable)
    extra = {
        "ASSIGLO": opts["sigma_low"],
        "ASSIGHI": opts["sigma_high"],
        "ASFLATPR": pre_what,
        "ASCFANRM": bool(cfa),
    }
    logger.info(
        "master flat: %d frames, %s, minus %s, %d skipped",
        len(usable),
        method,
        pre_what,
        len(skipped),
    )
    return _assemble(
        "flat", data.astype(np.float32), usable, method, digest, common, extra, skipped
    )


_BUILDERS = {
    "bias": build_master_bias,
    "dark": build_master_dark,
    "darkflat": build_master_darkflat,
    "flat": build_master_flat,
}


def load_or_build_master(
    kind: str,
    paths: Sequence[str | Path],
    output: str | Path,
    rebuild: bool = False,
    **kwargs: Any,
) -> Master:
    """Reuse the master at *output* when its inputs and parameters are unchanged, else build it.

    The hash stored in the master (``ASHASH``) covers every input path with its size and
    modification time (frames that were skipped included, so a bad frame does not force a
    rebuild on every run), the parameters and the hashes of the masters used.

    Parameters
    ----------
    kind : {'bias', 'dark', 'darkflat', 'flat'}
        What to build.
    paths : sequence of path
        Input frames.
    output : str or Path
        Master FITS file (written when built).
    rebuild : bool
        Build even when a matching master exists.
    **kwargs
        Passed to the builder (``build_master_bias``, ``build_master_dark``, ...).

    Returns
    -------
    Master
    """
    if kind not in _BUILDERS:
        msg = f"load_or_build_master: kind must be one of {', '.join(MASTER_KINDS)}, got {kind!r}"
        raise ValueError(msg)
    output = Path(output)
    if output.exists() and not rebuild:
        try:
            old = Master.load(output)
        except (FrameReadError, ValueError, OSError) as exc:
            logger.warning("%s: cannot reuse it (%s); rebuilding", output, exc)
            old = None
        if old is not None:
            expected = inputs_hash(paths, _params(kind, **kwargs))
            if old.kind == kind and expected == old.digest:
                logger.info("reusing master %s %s (inputs and parameters unchanged)", kind, output)
                old.reused = True
                return old
            logger.info("master %s %s is out of date; rebuilding", kind, output)
    master = _BUILDERS[kind](paths, **kwargs)
    master.save(output)
    return master
