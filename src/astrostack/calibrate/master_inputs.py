"""Inputs of a master: checking frames, band sources with preprocessing, provenance hash.

Helpers of :mod:`astrostack.calibrate.masters`: every frame is read once (one at a time) to
check it and measure its level, then handed to the combine engine as a band source that
subtracts a calibration image and applies per-CFA-plane factors while the band is read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from astrostack.io import FrameMeta, FrameReadError, read_frame, read_meta

__all__ = ["astrostack_version", "inputs_hash", "plane_levels"]

logger = logging.getLogger(__name__)

_FITS_SUFFIXES = (".fits", ".fit", ".fts")


def astrostack_version() -> str:
    """Installed astrostack version (``'unknown'`` when not installed)."""
    try:
        from importlib.metadata import version

        return version("astrostack")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


# ---------------------------------------------------------------------------------------------
# provenance
# ---------------------------------------------------------------------------------------------


def inputs_hash(paths: Sequence[str | Path], params: dict[str, Any]) -> str:
    """SHA-256 of the inputs' resolved paths, sizes and modification times, and *params*.

    Parameters
    ----------
    paths : sequence of path
        Input frames (missing files hash as missing).
    params : dict
        JSON-serialisable parameters (method, thresholds, hashes of masters used, ...).

    Returns
    -------
    str
        64 hex digits.
    """
    items = []
    for p in sorted(str(Path(p).resolve()) for p in paths):
        try:
            st = Path(p).stat()
            items.append([p, st.st_size, st.st_mtime_ns])
        except OSError:
            items.append([p, None, None])
    blob = json.dumps(
        {"inputs": items, "params": params, "version": astrostack_version()}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# frame checks and preprocessing
# ---------------------------------------------------------------------------------------------


def plane_levels(data: np.ndarray, cfa: bool, max_samples: int = 250_000) -> np.ndarray:
    """Median level of each CFA plane (``[y%2, x%2]`` order), of each channel, or of the image.

    Parameters
    ----------
    data : numpy.ndarray
        ``[y, x]`` or ``[c, y, x]`` image.
    cfa : bool
        True for a 2-D Bayer mosaic: four levels, one per 2x2 sub-lattice.
    max_samples : int
        Approximate samples per plane.

    Returns
    -------
    numpy.ndarray
        float64 levels: 4 for a mosaic, ``c`` for ``[c, y, x]``, 1 otherwise.
    """
    if data.ndim == 3:
        planes = [data[c] for c in range(data.shape[0])]
    elif cfa:
        planes = [data[i::2, j::2] for i in range(2) for j in range(2)]
    else:
        planes = [data]
    out = []
    for p in planes:
        v = p.ravel()
        step = max(1, v.size // max_samples)
        v = v[::step]
        v = v[np.isfinite(v)]
        out.append(float(np.median(v)) if v.size else np.nan)
    return np.asarray(out)


def _plane_factor_image(factors: np.ndarray, shape: tuple[int, ...], cfa: bool) -> np.ndarray:
    """Per-pixel multiplier that applies one factor per CFA plane / channel (broadcastable)."""
    if len(shape) == 3:
        return factors.astype(np.float32).reshape(-1, 1, 1)
    if cfa:
        tile = factors.astype(np.float32).reshape(2, 2)
        reps = (-(-shape[0] // 2), -(-shape[1] // 2))
        return np.tile(tile, reps)[: shape[0], : shape[1]]
    return np.full((1, 1), factors[0], dtype=np.float32)


def _plane_factors(factors: np.ndarray, shape: tuple[int, ...], cfa: bool) -> np.ndarray:
    """Compact per-plane factors for :class:`_PreparedSource`: ``[2, 2]`` tile or ``[c, 1, 1]``."""
    if len(shape) == 3:
        return factors.astype(np.float32).reshape(-1, 1, 1)
    if cfa:
        return factors.astype(np.float32).reshape(2, 2)
    return np.asarray([[factors[0]]], dtype=np.float32)


@dataclass
class _Good:
    path: Path
    meta: FrameMeta
    levels: np.ndarray | None = None
    scale: float = 1.0  # engine per-frame scale (flats: 1 / level)
    factor: np.ndarray | None = None  # per-CFA-plane factors applied by the band reader


class _PreparedSource:
    """Band reader that subtracts a calibration image and applies per-plane factors.

    Wraps a combine-engine source; ``read_rows`` returns ``(band - pre) * factor`` where
    *factor* is a ``[2, 2]`` CFA tile (one factor per sub-lattice ``[y % 2, x % 2]``), a
    ``[c, 1, 1]`` per-channel array or a ``[1, 1]`` scalar.
    """

    def __init__(self, inner: Any, pre: np.ndarray | None, factor: np.ndarray | None):
        self.inner = inner
        self.pre = pre
        self.factor = factor
        self.shape = tuple(inner.shape)
        self.path = getattr(inner, "path", None)

    def open(self) -> _PreparedSource:
        self.inner.open()
        return self

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> _PreparedSource:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_rows(self, y0: int, y1: int, out: np.ndarray | None = None) -> np.ndarray:
        band = self.inner.read_rows(y0, y1, out=out)
        if self.pre is not None:
            band -= self.pre[..., y0:y1, :]
        f = self.factor
        if f is not None:
            if f.ndim == 2 and f.shape == (2, 2) and band.ndim == 2:  # CFA tile
                for i in range(2):
                    r = (i - y0) % 2  # first band row of CFA row parity i
                    for j in range(2):
                        band[r::2, j::2] *= f[i, j]
            else:
                band *= f
        return band


def _scan_frames(
    paths: Sequence[str | Path],
    kind: str,
    pre: np.ndarray | None = None,
    levels_cfa: bool | None = None,
) -> tuple[list[_Good], list[tuple[Path, str]], tuple[int, ...]]:
    """Check each frame (one at a time): keep the readable ones of the common size.

    Only headers are read (the io reader also checks the file size), unless *levels_cfa* is
    not None: then each frame is read and the robust level of ``frame - pre`` measured per
    plane (flats).  Returns the good frames, the skipped ones with reasons and the common
    shape.
    """
    skipped: list[tuple[Path, str]] = []
    seen: list[_Good] = []
    for p in paths:
        p = Path(p)
        try:
            if levels_cfa is None:
                meta = read_meta(p)  # header and file size checked, no pixels read
                data = None
            else:
                frame = read_frame(p)
                meta, data = frame.meta, frame.data
                del frame
        except FrameReadError as exc:
            skipped.append((p, exc.reason))
            logger.warning("skipping %s %s: %s", kind, p, exc.reason)
            continue
        except Exception as exc:  # any reader failure must not kill the master
            reason = f"cannot be read ({type(exc).__name__}: {exc}); check or remove the file"
            skipped.append((p, reason))
            logger.warning("skipping %s %s: %s", kind, p, reason)
            continue
        good = _Good(path=p, meta=meta)
        if data is not None:
            if pre is not None and pre.shape == data.shape:
                data = data - pre
            good.levels = plane_levels(data, bool(levels_cfa))
            del data
        seen.append(good)
    if not seen:
        return [], skipped, ()
    counts = Counter(tuple(g.meta.shape) for g in seen)
    shape = counts.most_common(1)[0][0]
    good_frames = []
    for g in seen:
        if tuple(g.meta.shape) != shape:
            reason = (
                f"size {'x'.join(map(str, g.meta.shape))} differs from the other {kind} frames' "
                f"{'x'.join(map(str, shape))}; remove it or put it in its own folder"
            )
            skipped.append((g.path, reason))
            logger.warning("skipping %s %s: %s", kind, g.path, reason)
        else:
            good_frames.append(g)
    # Darks and flats of one master share an exposure; bias exposures are ~0 and may vary.
    if kind in ("dark", "darkflat") and good_frames:
        exps = [g.meta.exposure for g in good_frames if g.meta.exposure]
        if exps:
            ref = float(np.median(exps))
            kept = []
            for g in good_frames:
                e = g.meta.exposure
                if e and ref > 0 and abs(e - ref) > 0.05 * ref:
                    reason = (
                        f"exposure {e:g}s differs from the other {kind} frames' {ref:g}s; "
                        "put darks of each exposure in their own folder"
                    )
                    skipped.append((g.path, reason))
                    logger.warning("skipping %s %s: %s", kind, g.path, reason)
                else:
                    kept.append(g)
            good_frames = kept
    return good_frames, skipped, shape


def _make_source(path: Path, shape: tuple[int, ...], tmpdir: Path) -> Any:
    """A combine-engine source for *path*: FITS read in bands, other formats via a .npy copy."""
    from astrostack.combine import FitsSource, NpySource

    if path.suffix.lower() in _FITS_SUFFIXES:
        try:
            src = FitsSource(path)
            if tuple(src.shape) == tuple(shape):
                return src
        except (OSError, ValueError) as exc:
            logger.debug("%s: no band reader (%s); decoding to .npy", path, exc)
    frame = read_frame(path)
    npy = tmpdir / f"{len(list(tmpdir.iterdir())):05d}.npy"
    np.save(npy, np.ascontiguousarray(frame.data, dtype=np.float32))
    return NpySource(npy)


def _combine(
    good: list[_Good],
    kind: str,
    method: str,
    pre: np.ndarray | None,
    skipped: list[tuple[Path, str]],
    memory_limit: int | str | None,
    combine_options: dict[str, Any],
) -> tuple[np.ndarray, list[_Good]]:
    """Stream *good* (each with its ``scale`` and ``factor``) through the combine engine.

    Frames whose band reader cannot be made are appended to *skipped*.  Returns the
    combined image and the frames actually used.
    """
    from astrostack.combine import combine_sources

    kwargs = dict(combine_options)
    if memory_limit is not None:
        kwargs["memory_limit"] = memory_limit
    with tempfile.TemporaryDirectory(prefix=f"astrostack-{kind}-") as tmp:
        sources, used = [], []
        for g in good:
            try:
                inner = _make_source(g.path, tuple(g.meta.shape), Path(tmp))
            except (FrameReadError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", str(exc))
                skipped.append((g.path, reason))
                logger.warning("skipping %s %s: %s", kind, g.path, reason)
                continue
            sources.append(_PreparedSource(inner, pre, g.factor))
            used.append(g)
        if not used:
            msg = f"no usable {kind} frames: none of {len(good)} files could be read"
            raise ValueError(msg)
        if any(g.scale != 1.0 for g in used):
            kwargs["scales"] = np.array([g.scale for g in used], dtype=np.float64)
        result = combine_sources(sources, method=method, **kwargs)
    failed = result.parameters.get("failed_sources") or {}
    for i, reason in failed.items():
        logger.warning("%s %s could not be read completely: %s", kind, used[i].path, reason)
    return np.asarray(result.image, dtype=np.float32), used


def _common_meta(good: list[_Good]) -> dict[str, Any]:
    exps = [g.meta.exposure for g in good if g.meta.exposure is not None]
    temps = [g.meta.temperature for g in good if g.meta.temperature is not None]
    bayers = Counter(g.meta.bayer for g in good)
    return {
        "exposure": float(np.median(exps)) if exps else None,
        "temperature": float(np.mean(temps)) if temps else None,
        "bayer": bayers.most_common(1)[0][0],
        "meta": good[0].meta,
    }
