"""Quality of a stacked image against the simulator's ground truth, whatever tool made it.

Each tool aligns to its own reference frame and scales its output its own way, so the
result is first tied to the truth: its stars are matched to the true star catalogue
(astrostack's asterism matcher), the smooth truth maps (background and extended
emission) are warped into the result's pixel grid, and ``result ≈ a·truth + b`` is fitted
on star-free pixels.  Then, in the result's own units:

- ``noise``: robust standard deviation of the residual on star-free, emission-free sky;
- ``snr_extended``: mean fitted signal of the faint extended emission over ``noise``;
- ``fwhm``: median FWHM of the result's stars (astrostack's PSF fits, same for all);
- ``outliers_per_mpx``: star-free pixels whose residual exceeds 6·noise, per megapixel
  (left-over hot pixels, cosmic rays, satellite trails).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from astrostack.register import MatchError, detect_stars, match_stars, measure_quality, warp
from astrostack.simulate import load_truth

__all__ = ["measure_against_truth"]


def _luminance(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    return image.sum(axis=0) if image.ndim == 3 else image


def measure_against_truth(image: np.ndarray, session: str, margin: float = 0.06) -> dict:
    """Measure *image* (mono or ``[c, y, x]``) against the truth of *session*."""
    truth = load_truth(session)
    result = _luminance(image)
    sky_truth = _luminance(truth.sky)
    smooth = _luminance(truth.background) + _luminance(truth.extended)
    extended = _luminance(truth.extended)
    star_part = sky_truth - smooth

    stars = detect_stars(np.nan_to_num(result, nan=float(np.nanmedian(result))), max_stars=150)
    order = np.argsort(truth.stars.flux if truth.stars.flux.ndim == 1
                       else truth.stars.flux.sum(axis=1))[::-1]
    tx, ty = truth.stars.x[order], truth.stars.y[order]
    h, w = sky_truth.shape
    inside = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
    ref_xy = np.column_stack([tx[inside], ty[inside]])[:150]
    try:
        match = match_stars(np.column_stack([stars.x, stars.y]), ref_xy, model="similarity")
    except MatchError as exc:
        return {"error": f"could not match the result to the truth: {exc.reason}"}
    to_result = np.linalg.inv(match.matrix)  # truth -> result pixel coordinates
    shape = result.shape
    smooth_r = warp(smooth, to_result, shape, method="bilinear")
    ext_r = warp(extended, to_result, shape, method="bilinear")
    star_r = warp(star_part, to_result, shape, method="bilinear")

    star_mask = ndimage.binary_dilation(star_r > 0.01 * np.nanmedian(smooth), iterations=3)
    my, mx = int(margin * shape[0]), int(margin * shape[1])
    valid = np.zeros(shape, bool)
    valid[my : shape[0] - my, mx : shape[1] - mx] = True
    valid &= np.isfinite(result) & np.isfinite(smooth_r) & ~star_mask
    x, y = smooth_r[valid].astype(np.float64), result[valid].astype(np.float64)
    a, b = np.polyfit(x, y, 1)
    residual = result - (a * smooth_r + b)
    bg_level = np.nanmedian(smooth_r[valid])
    sky_only = valid & (ext_r < 0.02 * bg_level)
    noise = 1.4826 * np.median(np.abs(residual[sky_only] - np.median(residual[sky_only])))
    faint = valid & (ext_r > 0.1 * bg_level) & (ext_r < 1.0 * bg_level)
    snr_ext = float(a * np.mean(ext_r[faint]) / noise) if faint.any() else float("nan")
    outliers = int(np.count_nonzero(np.abs(residual[valid]) > 6 * noise))
    quality = measure_quality(np.nan_to_num(result, nan=float(np.nanmedian(result))))
    return {
        "noise_rel": float(noise / (a * bg_level)),
        "snr_extended": snr_ext,
        "fwhm": float(quality.fwhm),
        "outliers_per_mpx": outliers / (valid.sum() / 1e6),
        "matched_stars": int(match.n_matches),
        "fit_r2": float(1 - np.var(residual[valid]) / np.var(y)),
    }
