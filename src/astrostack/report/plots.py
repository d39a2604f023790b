"""Report plots rendered with matplotlib (Agg backend, no display needed) to PNG bytes."""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

__all__ = ["image_map_png", "metrics_plot_png"]

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


def _figure_png(fig: Figure, dpi: int = 90) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


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
        ``{name: values}``; names in ``fwhm, eccentricity, n_stars, background,
        noise, weight, transparency`` get labelled axes, others use their name.
    used : sequence of bool
        Stacked frames are drawn as dots, excluded frames as red crosses.
    xlabel : str
        Abscissa label.

    Returns
    -------
    bytes
        PNG image.
    """
    names = [k for k, v in metrics.items() if np.isfinite(np.asarray(v, float)).any()]
    x = np.asarray(x, dtype=np.float64)
    used = np.asarray(used, dtype=bool)
    n = max(1, len(names))
    fig = Figure(figsize=(8.0, 1.6 * n + 0.4))
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names, strict=False):
        v = np.asarray(metrics[name], dtype=np.float64)
        ax.plot(x, v, color="0.75", lw=0.8, zorder=1)
        ax.scatter(x[used], v[used], s=14, color="#1f77b4", zorder=2, label="used")
        if (~used).any():
            ax.scatter(
                x[~used], v[~used], s=30, color="#d62728", marker="x", zorder=3, label="excluded"
            )
        ax.set_ylabel(_LABELS.get(name, name), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(xlabel, fontsize=8)
    if (~used).any() and names:
        axes[0].legend(fontsize=7, loc="upper right")
    return _figure_png(fig)


def image_map_png(
    image: np.ndarray,
    title: str,
    cmap: str = "viridis",
    max_size: int = 600,
    label: str = "",
) -> bytes:
    """A 2-D map (rejection counts, coverage) as a colour-mapped PNG with a colour bar.

    Parameters
    ----------
    image : ndarray
        ``[y, x]`` values (NaN drawn as blank).
    title : str
        Panel title.
    cmap : str
        Matplotlib colour map.
    max_size : int
        The map is block-averaged so its longest side is at most this (pixels).
    label : str
        Colour-bar label.
    """
    img = np.asarray(image, dtype=np.float32)
    step = max(1, int(np.ceil(max(img.shape) / max_size)))
    if step > 1:
        h, w = (img.shape[0] // step) * step, (img.shape[1] // step) * step
        img = img[:h, :w].reshape(h // step, step, w // step, step).mean(axis=(1, 3))
    aspect = img.shape[0] / max(img.shape[1], 1)
    fig = Figure(figsize=(5.0, 5.0 * aspect + 0.6))
    ax = fig.subplots()
    im = ax.imshow(img, cmap=cmap, origin="upper", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cb.ax.tick_params(labelsize=7)
    if label:
        cb.set_label(label, fontsize=8)
    return _figure_png(fig)
