"""Report plots drawn directly with Pillow to PNG bytes (no plotting library).

The figures are simple (a few panels of points, colour-mapped maps with a colour bar), so
they are drawn with :mod:`PIL.ImageDraw` on a canvas twice the final size and reduced by
box averaging, which anti-aliases lines and text.  This costs a few tens of milliseconds
per figure, where importing matplotlib alone took about 0.3 s and each figure 0.1-0.2 s.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .stretch import png_bytes

__all__ = ["colormap_lut", "image_map_png", "metrics_plot_png", "nice_ticks"]

logger = logging.getLogger(__name__)

_LABELS = {
    "fwhm": "FWHM (px)",
    "eccentricity": "eccentricity",
    "roundness": "roundness (b/a)",
    "n_stars": "stars",
    "background": "background (ADU)",
    "noise": "noise (ADU)",
    "weight": "weight",
    "transparency": "transparency",
}

_SS = 2  # supersampling factor of the vector drawing
_USED = (31, 119, 180)
_EXCLUDED = (214, 39, 40)
_LINE = (191, 191, 191)
_GRID = (225, 225, 225)
_AXES = (60, 60, 60)
_TEXT = (30, 30, 30)
_WHITE = (255, 255, 255)

# 33 evenly spaced colours of matplotlib's perceptually uniform maps (CC0), interpolated
# linearly to 256 entries: within 2.5/255 of the originals.
_ANCHORS = {
    "viridis": (
        "440154470d6048186a482374472d7b4537814240863e49893b528b375b8d33638d2f6b8e2c728e297a8e"
        "26828e23898e21918c1f988b1fa08822a78528ae8032b67a3fbc734ec36b5ec96270cf5784d44b98d83e"
        "addc30c2df23d8e219ece51bfde725"
    ),
    "magma": (
        "0000040303120a0822130d341d114729115a36106b440f7651127c5d177f6a1c81762181832681902a81"
        "9c2e7faa337db73779c43c75d0416fdc4869e75263ef5d5ef56b5cf9795dfc8961fd9869fea772feb67c"
        "fec488fed395fde2a3fcf0b2fcfdbf"
    ),
    "gray": "000000ffffff",
}
_ANCHORS["grey"] = _ANCHORS["gray"]


@functools.lru_cache(maxsize=8)
def colormap_lut(name: str) -> np.ndarray:
    """A colour map as a ``[256, 3]`` uint8 lookup table.

    Parameters
    ----------
    name : str
        ``'viridis'``, ``'magma'`` or ``'gray'`` (built in); any other name is looked up in
        matplotlib, imported only then.

    Returns
    -------
    numpy.ndarray
        ``[256, 3]`` uint8 RGB, low values first.

    Raises
    ------
    ValueError
        If the name is neither built in nor a matplotlib colour map.
    """
    hexes = _ANCHORS.get(name)
    if hexes is None:
        try:
            from matplotlib import colormaps

            rgba = colormaps[name](np.linspace(0.0, 1.0, 256))
        except (ImportError, KeyError) as exc:
            msg = f"unknown colour map {name!r}; use one of {', '.join(sorted(_ANCHORS))}"
            raise ValueError(msg) from exc
        return np.clip(np.rint(rgba[:, :3] * 255.0), 0, 255).astype(np.uint8)
    anchors = np.frombuffer(bytes.fromhex(hexes), dtype=np.uint8).reshape(-1, 3)
    xs = np.linspace(0.0, 1.0, len(anchors))
    t = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(t, xs, anchors[:, c].astype(np.float64)) for c in range(3)], 1)
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


def nice_ticks(lo: float, hi: float, target: int = 5) -> tuple[np.ndarray, int]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) inside ``[lo, hi]``.

    Parameters
    ----------
    lo, hi : float
        Axis range (finite, ``lo < hi``).
    target : int
        About this many intervals.

    Returns
    -------
    ticks : numpy.ndarray
        Tick values inside the range.
    decimals : int
        Decimals that print the ticks exactly.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return np.empty(0), 0
    raw = (hi - lo) / max(1, target)
    mag = 10.0 ** math.floor(math.log10(raw))
    for mult in (1.0, 2.0, 2.5, 5.0, 10.0):
        step = mult * mag
        if step >= raw * (1 - 1e-9):
            break
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    ticks = np.arange(first, last + 1) * step
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if mult == 2.5 else 0)
    return ticks, int(decimals)


def _fmt_tick(v: float, decimals: int) -> str:
    text = f"{v:.{decimals}f}"
    return "0" if text.lstrip("-").strip("0.") == "" else text


@functools.lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in scalable font at *px* pixels (supersampled)."""
    return ImageFont.load_default(size=px * _SS)


def _limits(values: np.ndarray, pad: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        half = max(abs(lo) * 0.05, 0.5)
        return lo - half, hi + half
    span = hi - lo
    return lo - pad * span, hi + pad * span


def _vertical_text(
    canvas: Image.Image, text: str, centre: tuple[float, float], size: int, fill: tuple
) -> None:
    """Draw *text* rotated by 90 degrees (reading upwards), centred at *centre* (canvas px)."""
    font = _font(size)
    x0, y0, x1, y1 = font.getbbox(text)
    w, h = max(1, int(x1 - x0) + 2), max(1, int(y1 - y0) + 2)
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).text((1 - x0, 1 - y0), text, font=font, fill=255)
    mask = mask.rotate(90, expand=True)
    box = (int(centre[0] - mask.width / 2), int(centre[1] - mask.height / 2))
    canvas.paste(Image.new("RGB", mask.size, fill), box, mask)


def _encode(img: Image.Image) -> bytes:
    return png_bytes(np.asarray(img.convert("RGB")))


def _axis_map(
    lo: float, hi: float, p0: float, p1: float
) -> Callable[[np.ndarray | float], np.ndarray | float]:
    scale = (p1 - p0) / (hi - lo)
    return lambda v: p0 + (np.asarray(v, dtype=np.float64) - lo) * scale


def metrics_plot_png(
    x: Sequence[float] | np.ndarray,
    metrics: Mapping[str, Sequence[float]],
    used: Sequence[bool] | np.ndarray,
    xlabel: str = "frame",
) -> bytes:
    """Per-frame metrics against time (or index), one panel per metric.

    Parameters
    ----------
    x : sequence of float
        Abscissa per frame (minutes since the first frame, or the frame index).
    metrics : mapping
        ``{name: values}``; names in ``fwhm, eccentricity, roundness, n_stars, background,
        noise, weight, transparency`` get labelled axes, others use their name.  Metrics
        with no finite value are left out.
    used : sequence of bool
        Stacked frames are drawn as dots, excluded frames as red crosses.
    xlabel : str
        Abscissa label.

    Returns
    -------
    bytes
        PNG image, 720 pixels wide.
    """
    names = [k for k, v in metrics.items() if np.isfinite(np.asarray(v, float)).any()]
    xv = np.asarray(x, dtype=np.float64)
    used_a = np.asarray(used, dtype=bool)
    s = _SS
    width, left, right, top, panel_h, gap, bottom = 720, 82, 14, 12, 124, 12, 48
    n = max(1, len(names))
    height = top + n * panel_h + (n - 1) * gap + bottom
    canvas = Image.new("RGB", (width * s, height * s), _WHITE)
    draw = ImageDraw.Draw(canvas)
    small, label_font = _font(10), _font(11)
    xlo, xhi = _limits(xv, 0.04)
    fx = _axis_map(xlo, xhi, left * s, (width - right) * s)
    xticks, xdec = nice_ticks(xlo, xhi, 8)
    for i, name in enumerate(names or [""]):
        y0 = (top + i * (panel_h + gap)) * s
        y1 = y0 + panel_h * s
        x0, x1 = left * s, (width - right) * s
        v = np.asarray(metrics[name], dtype=np.float64) if name else np.full(xv.shape, np.nan)
        ylo, yhi = _limits(v, 0.08)
        fy = _axis_map(ylo, yhi, y1, y0)
        yticks, ydec = nice_ticks(ylo, yhi, 4)
        for t in xticks:
            draw.line([(fx(t), y0), (fx(t), y1)], fill=_GRID, width=s)
        for t in yticks:
            yy = fy(t)
            draw.line([(x0, yy), (x1, yy)], fill=_GRID, width=s)
            draw.line([(x0 - 4 * s, yy), (x0, yy)], fill=_AXES, width=s)
            draw.text((x0 - 6 * s, yy), _fmt_tick(t, ydec), font=small, fill=_TEXT, anchor="rm")
        ok = np.isfinite(xv) & np.isfinite(v)
        pts = list(zip(fx(xv[ok]).tolist(), fy(v[ok]).tolist(), strict=True))
        if len(pts) > 1:
            draw.line(pts, fill=_LINE, width=s, joint="curve")
        r = 3.2 * s
        for px, py in zip(fx(xv[ok & used_a]).tolist(), fy(v[ok & used_a]).tolist(), strict=True):
            draw.ellipse([px - r, py - r, px + r, py + r], fill=_USED)
        c = 4.5 * s
        for px, py in zip(fx(xv[ok & ~used_a]).tolist(), fy(v[ok & ~used_a]).tolist(), strict=True):
            draw.line([(px - c, py - c), (px + c, py + c)], fill=_EXCLUDED, width=2 * s)
            draw.line([(px - c, py + c), (px + c, py - c)], fill=_EXCLUDED, width=2 * s)
        draw.rectangle([x0, y0, x1, y1], outline=_AXES, width=s)
        if name:
            _vertical_text(canvas, _LABELS.get(name, name), (14 * s, (y0 + y1) / 2), 11, _TEXT)
    # abscissa of the last panel
    y1 = (top + n * panel_h + (n - 1) * gap) * s
    for t in xticks:
        draw.line([(fx(t), y1), (fx(t), y1 + 4 * s)], fill=_AXES, width=s)
        draw.text((fx(t), y1 + 6 * s), _fmt_tick(t, xdec), font=small, fill=_TEXT, anchor="mt")
    draw.text((((left + width - right) / 2) * s, y1 + 24 * s), xlabel, font=label_font,
              fill=_TEXT, anchor="mt")  # fmt: skip
    if (~used_a).any() and names:
        lx, ly = (width - right - 92) * s, (top + 8) * s
        draw.rectangle([lx - 6 * s, ly - 6 * s, lx + 84 * s, ly + 32 * s], fill=_WHITE,
                       outline=_GRID, width=s)  # fmt: skip
        r = 3.2 * s
        draw.ellipse([lx + 4 * s - r, ly + 4 * s - r, lx + 4 * s + r, ly + 4 * s + r], fill=_USED)
        draw.text((lx + 14 * s, ly + 4 * s), "used", font=small, fill=_TEXT, anchor="lm")
        cx, cy, c = lx + 4 * s, ly + 21 * s, 4.5 * s
        draw.line([(cx - c, cy - c), (cx + c, cy + c)], fill=_EXCLUDED, width=2 * s)
        draw.line([(cx - c, cy + c), (cx + c, cy - c)], fill=_EXCLUDED, width=2 * s)
        draw.text((lx + 14 * s, cy), "excluded", font=small, fill=_TEXT, anchor="lm")
    return _encode(canvas.reduce(s))


def _block_mean(img: np.ndarray, max_size: int) -> np.ndarray:
    """Mean of ``step x step`` blocks so that the longest side is at most *max_size*."""
    step = max(1, int(np.ceil(max(img.shape) / max_size)))
    if step > 1:
        h, w = (img.shape[0] // step) * step, (img.shape[1] // step) * step
        rows = img[:h, :w].reshape(h // step, step, w).sum(axis=1, dtype=np.float64)
        img = rows.reshape(h // step, w // step, step).sum(axis=2) / (step * step)
    return img


def image_map_png(
    image: np.ndarray,
    title: str,
    cmap: str = "viridis",
    max_size: int = 600,
    label: str = "",
    display_size: int = 420,
) -> bytes:
    """A 2-D map (rejection counts, coverage) as a colour-mapped PNG with a colour bar.

    Parameters
    ----------
    image : ndarray
        ``[y, x]`` values (NaN drawn as blank).
    title : str
        Panel title.
    cmap : str
        Colour map (see :func:`colormap_lut`).
    max_size : int
        The map is block-averaged so its longest side is at most this (pixels).
    label : str
        Colour-bar label.
    display_size : int
        Longest side of the drawn map, pixels (nearest-neighbour scaling).

    Returns
    -------
    bytes
        PNG image.
    """
    img = _block_mean(np.asarray(image, dtype=np.float32), max_size)
    if img.ndim != 2 or img.size == 0:
        msg = f"image_map_png: expected a non-empty 2-D map, got shape {img.shape}"
        raise ValueError(msg)
    lut = colormap_lut(cmap)
    finite = np.isfinite(img)
    vmin, vmax = (float(img[finite].min()), float(img[finite].max())) if finite.any() else (0, 1)
    if vmax <= vmin:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    t = np.clip((np.where(finite, img, vmin) - vmin) / (vmax - vmin), 0.0, 1.0)
    rgb = lut[np.rint(t * 255.0).astype(np.intp)]
    rgb[~finite] = 255
    scale = display_size / max(img.shape)
    dw, dh = max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale))
    picture = Image.fromarray(np.ascontiguousarray(rgb)).resize((dw, dh), Image.Resampling.NEAREST)

    s = _SS
    ticks, dec = nice_ticks(vmin, vmax, 5)
    labels = [_fmt_tick(tv, dec) for tv in ticks]
    tick_w = max((_font(10).getlength(t) / s for t in labels), default=0.0)
    pad, title_h, bar_gap, bar_w = 8, 26, 14, 16
    width = pad + dw + bar_gap + bar_w + 10 + math.ceil(tick_w) + (22 if label else 4)
    height = title_h + dh + pad
    canvas = Image.new("RGB", (width * s, height * s), _WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.text(((pad + dw / 2) * s, 6 * s), title, font=_font(12), fill=_TEXT, anchor="mt")
    bx0, by0 = pad + dw + bar_gap, title_h
    fy = _axis_map(vmin, vmax, (by0 + dh) * s, by0 * s)
    for tv, text in zip(ticks, labels, strict=True):
        yy = fy(tv)
        draw.line([((bx0 + bar_w) * s, yy), ((bx0 + bar_w + 4) * s, yy)], fill=_AXES, width=s)
        draw.text(((bx0 + bar_w + 6) * s, yy), text, font=_font(10), fill=_TEXT, anchor="lm")
    if label:
        _vertical_text(canvas, label, ((width - 10) * s, (by0 + dh / 2) * s), 11, _TEXT)
    out = canvas.reduce(s)
    out.paste(picture, (pad, title_h))
    ramp = lut[np.linspace(255, 0, dh).round().astype(np.intp)]
    bar = np.repeat(ramp[:, None, :], bar_w, axis=1)
    out.paste(Image.fromarray(np.ascontiguousarray(bar)), (bx0, by0))
    outline = ImageDraw.Draw(out)
    outline.rectangle([bx0 - 1, by0 - 1, bx0 + bar_w, by0 + dh], outline=_AXES)
    outline.rectangle([pad - 1, title_h - 1, pad + dw, title_h + dh], outline=_AXES)
    return _encode(out)
