"""Automatic screen stretch (PixInsight STF style) and PNG previews.

The image is first normalised to [0, 1] by its finite minimum and maximum.
For each channel (or all channels together when *linked*):

- shadows clipping point ``c0 = median - 2.8 * MADn`` (``MADn = 1.4826 MAD``),
  clamped to [0, 1];
- midtones balance ``m`` chosen so that the median, once rescaled to
  ``(median - c0) / (1 - c0)``, maps to the target background (0.25);
- pixels are mapped by ``MTF(m, clip((x - c0) / (1 - c0), 0, 1))`` with the
  midtones transfer function ``MTF(m, x) = (m - 1) x / ((2m - 1) x - m)``.

NaN (no data) becomes black.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit, prange

from ..io.atomic import atomic_path

__all__ = [
    "StretchParams",
    "apply_stretch",
    "auto_stretch",
    "compute_stretch",
    "mtf",
    "png_bytes",
    "preview_image",
    "write_preview",
]

logger = logging.getLogger(__name__)

_MAX_SAMPLES = 1_000_000


def mtf(m: float | np.ndarray, x: np.ndarray | float) -> np.ndarray | float:
    """Midtones transfer function: maps 0 to 0, 1 to 1 and *m* to 0.5.

    Parameters
    ----------
    m : float or array
        Midtones balance in (0, 1).
    x : array or float
        Values in [0, 1].
    """
    x = np.asarray(x, dtype=np.float64) if not np.isscalar(x) else float(x)
    den = (2.0 * m - 1.0) * x - m
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den != 0, (m - 1.0) * x / np.where(den != 0, den, 1.0), 0.5)
    return out if np.ndim(out) else float(out)


@dataclass
class StretchParams:
    """Per-channel stretch: input range, shadows clip, midtones balance."""

    lo: float  # data value mapped to 0 before clipping
    hi: float  # data value mapped to 1
    c0: np.ndarray  # shadows clipping point per channel, in normalised units
    m: np.ndarray  # midtones balance per channel


def _sample(channel: np.ndarray) -> np.ndarray:
    flat = channel.reshape(-1)
    step = max(1, flat.size // _MAX_SAMPLES)
    s = flat[::step]
    return s[np.isfinite(s)]


def compute_stretch(
    image: np.ndarray,
    linked: bool = True,
    shadows_clip: float = -2.8,
    target_background: float = 0.25,
) -> StretchParams:
    """Compute STF auto-stretch parameters for *image* (``[y, x]`` or ``[c, y, x]``).

    Parameters
    ----------
    image : ndarray
        Linear data, any range; NaN ignored.
    linked : bool
        One curve for all channels (averaged statistics) or one per channel.
    shadows_clip : float
        Shadows clipping point in MADn units relative to the median (negative = below).
    target_background : float
        Output value of the median (the sky background).
    """
    img = image if image.ndim == 3 else image[None]
    samples = [_sample(ch) for ch in img]
    allv = np.concatenate(samples) if samples else np.empty(0)
    if allv.size == 0:
        return StretchParams(0.0, 1.0, np.zeros(len(img)), np.full(len(img), 0.5))
    lo, hi = float(allv.min()), float(allv.max())
    span = hi - lo if hi > lo else 1.0
    meds, mads = [], []
    for s in samples:
        v = (s.astype(np.float64) - lo) / span
        med = float(np.median(v)) if v.size else 0.0
        meds.append(med)
        mads.append(1.4826 * float(np.median(np.abs(v - med))) if v.size else 0.0)
    meds_a, mads_a = np.array(meds), np.array(mads)
    if linked:
        meds_a = np.full_like(meds_a, meds_a.mean())
        mads_a = np.full_like(mads_a, mads_a.mean())
    c0 = np.clip(meds_a + shadows_clip * mads_a, 0.0, 1.0)
    x0 = np.clip((meds_a - c0) / np.maximum(1.0 - c0, 1e-12), 0.0, 1.0)
    m = np.where(x0 > 0, mtf(target_background, x0), 0.5)
    return StretchParams(lo=lo, hi=hi, c0=c0, m=np.asarray(m, dtype=np.float64))


def apply_stretch(image: np.ndarray, params: StretchParams) -> np.ndarray:
    """Apply *params* to *image*; returns float32 in [0, 1] with the input's shape."""
    img = image if image.ndim == 3 else image[None]
    span = params.hi - params.lo if params.hi > params.lo else 1.0
    out = np.empty(img.shape, dtype=np.float32)
    for c in range(img.shape[0]):
        x = (np.nan_to_num(img[c].astype(np.float32), nan=params.lo) - params.lo) / span
        c0 = float(params.c0[c])
        x = np.clip((x - c0) / max(1.0 - c0, 1e-12), 0.0, 1.0)
        out[c] = mtf(float(params.m[c]), x)
    return out if image.ndim == 3 else out[0]


def auto_stretch(
    image: np.ndarray, linked: bool = True, target_background: float = 0.25
) -> np.ndarray:
    """STF auto-stretch of *image* to float32 [0, 1] (see module docstring)."""
    return apply_stretch(
        image, compute_stretch(image, linked=linked, target_background=target_background)
    )


def _downsample(image: np.ndarray, max_size: int) -> np.ndarray:
    h, w = image.shape[-2:]
    scale = max_size / max(h, w)
    if scale >= 1.0:
        return image
    import cv2  # only when a preview needs reducing

    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = image if image.ndim == 3 else image[None]
    out = np.stack(
        [
            cv2.resize(
                np.nan_to_num(ch, nan=np.nanmin(ch) if np.isfinite(ch).any() else 0),
                size,
                interpolation=cv2.INTER_AREA,
            )
            for ch in img
        ]
    )
    return out if image.ndim == 3 else out[0]


@njit(cache=True, parallel=True)
def _stretch_u8_kernel(img, lo, span, c0, scale, m, out, channel):  # pragma: no cover
    """:func:`apply_stretch` of one plane then ``rint(255 x)`` into ``out[..., channel]``.

    Reproduces the numpy path operation by operation: NaN/inf replaced as by
    ``np.nan_to_num(x, nan=lo)``, the normalisation and the shadows clip in float32, the
    midtones transfer in float64 rounded to float32, the 8-bit scaling in float32.
    """
    h, w = img.shape
    lo32 = np.float32(lo)
    span32 = np.float32(span)
    c032 = np.float32(c0)
    scale32 = np.float32(scale)
    big = np.float32(3.4028234663852886e38)
    k = 2.0 * m - 1.0
    for y in prange(h):
        for x in range(w):
            v = img[y, x]
            if np.isnan(v):
                v = lo32
            elif v == np.inf:
                v = big
            elif v == -np.inf:
                v = -big
            t = (v - lo32) / span32
            t = (t - c032) / scale32
            t = min(max(t, np.float32(0.0)), np.float32(1.0))
            t64 = np.float64(t)
            den = k * t64 - m
            f = np.float32((m - 1.0) * t64 / den) if den != 0.0 else np.float32(0.5)
            q = np.rint(np.float64(f * np.float32(255.0)))
            out[y, x, channel] = np.uint8(min(max(q, 0.0), 255.0))


def preview_image(image: np.ndarray, max_size: int = 1600, linked: bool = True) -> np.ndarray:
    """Stretched 8-bit preview: ``[y, x]`` (grey) or ``[y, x, 3]`` (colour) uint8.

    Statistics are taken on the full-resolution image, then it is reduced
    (area average) so its longest side is at most *max_size*.  The result equals
    ``rint(255 * apply_stretch(...))``; a compiled pass computes it without temporaries.
    """
    params = compute_stretch(image, linked=linked)
    small = _downsample(image.astype(np.float32, copy=False), max_size)
    planes = small[None] if small.ndim == 2 else small[:3]
    h, w = planes.shape[-2:]
    out = np.empty((h, w, planes.shape[0]), dtype=np.uint8)
    span = params.hi - params.lo if params.hi > params.lo else 1.0
    for c in range(planes.shape[0]):
        c0 = float(params.c0[c])
        _stretch_u8_kernel(
            np.ascontiguousarray(planes[c], dtype=np.float32), float(params.lo), float(span),
            c0, max(1.0 - c0, 1e-12), float(params.m[c]), out, c,
        )  # fmt: skip
    if small.ndim == 2 or planes.shape[0] < 3:
        return np.ascontiguousarray(out[..., 0])
    return out


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode a uint8 ``[y, x]`` or ``[y, x, 3]`` (RGB) array as PNG bytes.

    OpenCV's encoder with the run-length strategy: as small as Pillow's optimised PNG
    for stretched sky images, several times faster.
    """
    import cv2

    px = np.asarray(pixels)
    if px.dtype != np.uint8 or px.ndim not in (2, 3) or (px.ndim == 3 and px.shape[2] != 3):
        msg = f"png_bytes: expected uint8 [y, x] or [y, x, 3], got {px.dtype} {px.shape}"
        raise ValueError(msg)
    if px.ndim == 3:
        px = px[..., ::-1]  # OpenCV writes BGR
    params = [cv2.IMWRITE_PNG_COMPRESSION, 6, cv2.IMWRITE_PNG_STRATEGY,
              cv2.IMWRITE_PNG_STRATEGY_RLE]  # fmt: skip
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(px), params)
    if not ok:
        msg = "png_bytes: OpenCV could not encode the image"
        raise ValueError(msg)
    return buf.tobytes()


def write_preview(
    path: str | Path, image: np.ndarray, max_size: int = 1600, linked: bool = True
) -> Path:
    """Write the auto-stretched preview of *image* as a PNG, atomically."""
    path = Path(path)
    data = png_bytes(preview_image(image, max_size=max_size, linked=linked))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    logger.info("wrote preview %s", path)
    return path
