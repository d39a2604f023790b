"""Quality of a stacked image against the simulator's ground truth, whatever tool made it.

Each tool aligns to its own reference frame and scales its output its own way, so the
result is first tied to the truth: its stars are matched to the true star catalogue
(astrostack's asterism matcher), the smooth truth maps (background and extended
emission) are warped into the result's pixel grid, and ``result ≈ a·truth + b`` is fitted
on star-free pixels.  The residual ``r = result - (a·truth_smooth + b)`` is then split by
spatial scale, because the scales answer different questions and tools trade them
against each other:

- **pixel scale** - ``noise_px``: robust (1.4826·MAD) standard deviation of ``r`` on
  star-free, emission-free sky.  Interpolation at registration correlates neighbouring
  pixels: bilinear and bicubic kernels average the noise of neighbouring input pixels,
  so the per-pixel noise drops *without any gain in signal* (the same power moves to
  larger scales), while Lanczos-3 keeps the noise nearly white.  Per-pixel noise alone
  therefore favours the smoothest interpolator.
- **binned scale** - ``noise_bin``: robust standard deviation of the ``B×B`` block sums
  of ``r - r_large`` divided by ``sqrt(n)`` (``n`` star-free, emission-free sky pixels in
  the block, at least half of it) - the per-pixel-equivalent noise of white noise with
  the same block variance, i.e. the noise at low spatial frequency, where faint extended
  emission lives.  An interpolation kernel averages neighbouring pixels and lowers the
  block noise by about ``1 - 1/B`` per axis in the worst case (bilinear at a half-pixel
  shift: -12 % at ``B = 4``, -6 % at 8, -3 % at 16), so ``B = 16`` (default) is the fair
  figure; ``noise_b{1,2,4,8,16}_rel`` give the whole curve.
  ``noise_correlation = noise_bin / noise_px``
  is 1 for white noise and above 1 for noise smoothed by interpolation.
- **large scale** - ``r_large`` is the median of ``r`` in ``L×L`` sky blocks (``L = 64``),
  interpolated into a surface; ``background_error`` is its robust spread, relative to
  the sky level (gradients left over, background mismatch, a noisy background model).
  It is reported separately and is not part of ``noise_bin``.

Figures, in the result's own units and relative to the fitted sky level ``a·bg``:

- ``noise_rel`` (pixel scale), ``noise_bin_rel`` (binned scale), ``background_error``;
- ``snr_extended``: mean fitted signal of the faint extended emission (truth between
  10 % and 100 % of the sky) over ``noise_bin``; ``snr_extended_px`` uses ``noise_px``
  (the former, interpolation-sensitive definition);
- ``fwhm``: median FWHM of the result's stars (astrostack's PSF fits, same for all);
- ``outliers_per_mpx``: star-free pixels whose residual exceeds 6·noise_px, per
  megapixel (left-over hot pixels, cosmic rays, satellite trails).

Tools trade resolution for noise: a smoother interpolator (Siril's bilinear) widens the
stars and also lowers the noise at the block scale a little.  To compare at **equal
resolution**, :func:`match_resolution` blurs each result with the Gaussian that brings its
measured star FWHM to a common target (a little above the widest result's), and
``snr_extended`` is measured again on that (``snr_matched`` in ``compare.py``).

``maps=FOLDER`` also writes PNG images of the residual at each scale (``*_resid.png``,
``*_large.png``) for visual inspection.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from astrostack.register import MatchError, detect_stars, match_stars, measure_quality, warp
from astrostack.simulate import load_truth

__all__ = [
    "block_means",
    "clipped_sigma",
    "large_scale_surface",
    "match_resolution",
    "measure_against_truth",
    "robust_sigma",
]

_MAD = 1.482602218505602


def _luminance(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    return image.sum(axis=0) if image.ndim == 3 else image


def robust_sigma(values: np.ndarray) -> float:
    """1.4826 × median absolute deviation of *values* (NaN when empty)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan")
    return float(_MAD * np.median(np.abs(values - np.median(values))))


def clipped_sigma(values: np.ndarray, kappa: float = 3.0) -> float:
    """Standard deviation after iterative kappa-sigma clipping about the median.

    Corrected for the truncation of a normal distribution at ``kappa = 3`` (÷ 0.98658).
    For near-Gaussian values (block sums) its statistical error is about
    ``0.72 / sqrt(n)`` against ``1.17 / sqrt(n)`` for the MAD, which matters when only
    a few thousand blocks are available.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size < 16:
        return float("nan")
    kept = values
    for _ in range(10):
        med, sig = np.median(kept), np.std(kept)
        new = values[np.abs(values - med) <= kappa * sig]
        if new.size == kept.size or new.size < 16:
            break
        kept = new
    return float(np.std(kept) / 0.98658)


def block_means(
    residual: np.ndarray, mask: np.ndarray, block: int, min_fill: float = 0.5
) -> np.ndarray:
    """Per-pixel-equivalent block sums: ``sum(r) / sqrt(n)`` over each ``block×block`` block.

    Only pixels inside *mask* count, and only blocks at least *min_fill* inside it.  For
    white noise of standard deviation ``s`` the values have standard deviation ``s``
    whatever ``n``; noise correlated on scales below the block shows its low-frequency
    amplitude (interpolation smoothing does not lower it).
    """
    h, w = residual.shape
    hb, wb = h // block, w // block
    r = residual[: hb * block, : wb * block].reshape(hb, block, wb, block)
    m = mask[: hb * block, : wb * block].reshape(hb, block, wb, block)
    n = m.sum(axis=(1, 3))
    sums = np.where(m, r, 0.0).sum(axis=(1, 3), dtype=np.float64)
    ok = n >= min_fill * block * block
    return sums[ok] / np.sqrt(n[ok])


def large_scale_surface(residual: np.ndarray, mask: np.ndarray, block: int) -> np.ndarray:
    """Smooth surface of *residual*: medians of ``block`` blocks (≥ 25 % in *mask*), bilinear.

    Blocks with too few masked pixels are filled from their neighbours (nearest valid).
    """
    h, w = residual.shape
    ny, nx = -(-h // block), -(-w // block)
    grid = np.full((ny, nx), np.nan)
    for j in range(ny):
        for i in range(nx):
            sl = (slice(j * block, (j + 1) * block), slice(i * block, (i + 1) * block))
            vals = residual[sl][mask[sl]]
            if vals.size >= 0.25 * block * block:
                grid[j, i] = np.median(vals)
    ok = np.isfinite(grid)
    if not ok.any():
        return np.zeros_like(residual, dtype=np.float32)
    idx = ndimage.distance_transform_edt(~ok, return_distances=False, return_indices=True)
    grid = grid[tuple(idx)]
    # block centres at (k + 0.5) * block - 0.5; cv2 INTER_LINEAR maps pixel centres alike
    surface = cv2.resize(
        grid.astype(np.float32), (nx * block, ny * block), interpolation=cv2.INTER_LINEAR
    )
    return surface[:h, :w]


def _save_png(path: Path, image: np.ndarray, span: float) -> None:
    scaled = np.clip((np.nan_to_num(image) / span + 1.0) * 127.5, 0, 255).astype(np.uint8)
    cv2.imwrite(str(path), scaled)


def _blur(data: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur by its exact transfer function (FFT).

    A sampled Gaussian kernel is far off below sigma ~ 0.7 px (at 0.3 px it adds a tenth
    of the variance it should), and the blurs needed here are that small.
    """
    from scipy import fft

    nan = ~np.isfinite(data)
    filled = np.where(nan, np.float32(np.nanmedian(data)), data).astype(np.float64)
    ny, nx = filled.shape[-2:]
    fy = fft.fftfreq(ny)[:, None]
    fx = fft.rfftfreq(nx)[None, :]
    transfer = np.exp(-2.0 * np.pi**2 * sigma**2 * (fx**2 + fy**2))
    spec = fft.rfft2(filled, axes=(-2, -1), workers=-1) * transfer
    out = fft.irfft2(spec, s=(ny, nx), axes=(-2, -1), workers=-1).astype(np.float32)
    out[nan] = np.nan
    return out


def _fwhm(data: np.ndarray) -> float:
    lum = _luminance(data)
    return float(measure_quality(np.nan_to_num(lum, nan=float(np.nanmedian(lum)))).fwhm)


def match_resolution(
    image: np.ndarray, fwhm: float, target_fwhm: float, tol: float = 0.005
) -> np.ndarray:
    """Blur *image* (``[y, x]`` or ``[c, y, x]``) until its stars' FWHM is *target_fwhm*.

    A Gaussian of ``sigma = sqrt(target² - fwhm²) / 2.3548`` would be exact for Gaussian
    stars; real (Moffat, interpolated) stars widen differently, so the FWHM is measured
    again (the same PSF fits as ``fwhm``) and sigma corrected, until it is within *tol*
    (relative) of the target.  NaN (no data) pixels are filled with the median for the
    blur and stay NaN.
    """
    data = np.asarray(image, dtype=np.float32)
    if not (np.isfinite(fwhm) and np.isfinite(target_fwhm)) or target_fwhm <= fwhm:
        return data
    sigma = float(np.sqrt(target_fwhm**2 - fwhm**2) / 2.3548)
    out = _blur(data, sigma)
    for _ in range(4):
        got = _fwhm(out)
        if not np.isfinite(got) or abs(got / target_fwhm - 1) <= tol or got <= fwhm:
            break
        # the added width grows about linearly in sigma² (widths add in quadrature)
        sigma *= float(np.sqrt((target_fwhm**2 - fwhm**2) / (got**2 - fwhm**2)))
        out = _blur(data, sigma)
    return out


def measure_against_truth(
    image: np.ndarray,
    session: str,
    margin: float = 0.06,
    faint_stars: float | None = 0.25,
    block: int = 16,
    large_block: int = 64,
    maps: str | Path | None = None,
    name: str = "result",
) -> dict:
    """Measure *image* (mono or ``[c, y, x]``) against the truth of *session*.

    Parameters
    ----------
    image : ndarray
        The stacked result.
    session : str
        Folder of the simulated session (holds ``truth/``).
    margin : float
        Fraction of each side left out (edges covered by few frames).
    faint_stars : float or None
        For the binned noise, also leave out pixels where the true star image exceeds
        this fraction of the pixel noise (``None``: only the bright-star mask).
    block : int
        Block size of the binned noise.
    large_block : int
        Block size of the large-scale residual surface.
    maps : path, optional
        Folder for residual PNGs (``NAME_resid.png``, ``NAME_large.png``).
    name : str
        Prefix of the PNG names.

    Returns
    -------
    dict
        The figures described in the module docstring, or ``{'error': ...}``.
    """
    truth = load_truth(session)
    result = _luminance(image)
    sky_truth = _luminance(truth.sky)
    smooth = _luminance(truth.background) + _luminance(truth.extended)
    extended = _luminance(truth.extended)
    star_part = sky_truth - smooth

    stars = detect_stars(np.nan_to_num(result, nan=float(np.nanmedian(result))), max_stars=150)
    order = np.argsort(
        truth.stars.flux if truth.stars.flux.ndim == 1 else truth.stars.flux.sum(axis=1)
    )[::-1]
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
    # emission (and stars) scale with transparency, the sky background with the sky
    # brightness; tools bring frames to a common level differently, so the two get
    # their own coefficients: result ~ a * extended + c * background + b
    bg_r = smooth_r - ext_r
    design = np.column_stack([ext_r[valid], bg_r[valid], np.ones(int(valid.sum()))])
    y = result[valid].astype(np.float64)
    a, c, b = np.linalg.lstsq(design.astype(np.float64), y, rcond=None)[0]
    residual = (result - (a * ext_r + c * bg_r + b)).astype(np.float64)
    bg_level = np.nanmedian(smooth_r[valid])
    sky_only = valid & (ext_r < 0.02 * bg_level)
    noise = robust_sigma(residual[sky_only])
    # faint stars below the mask threshold are sharpened or blurred differently by each
    # tool's interpolation: leave out, for the binned noise, pixels where the true stars
    # exceed ``faint_stars`` x the pixel noise
    level = np.inf if faint_stars is None else faint_stars * noise
    faint_mask = ndimage.binary_dilation(a * star_r > level, iterations=2)
    quiet = sky_only & ~faint_mask
    # the residual's large-scale part (gradients, background mismatch) on valid sky
    # (extended emission included: its fit residual is a background-level error too)
    large = large_scale_surface(np.where(valid, residual, 0.0), valid, large_block)
    inner = np.zeros(shape, bool)
    half = large_block // 2
    inner[my + half : shape[0] - my - half, mx + half : shape[1] - mx - half] = True
    bg_error = robust_sigma(large[inner & valid])
    fine = np.where(valid, residual - large, 0.0)
    noise_bin = clipped_sigma(block_means(fine, quiet, block))
    scales = {
        f"noise_b{k}_rel": clipped_sigma(block_means(fine, quiet, k)) / (a * bg_level)
        for k in (1, 2, 4, 8, 16)
    }
    faint = valid & (ext_r > 0.1 * bg_level) & (ext_r < 1.0 * bg_level)
    signal = a * np.mean(ext_r[faint]) if faint.any() else float("nan")
    outliers = int(np.count_nonzero(np.abs(residual[valid]) > 6 * noise))
    quality = measure_quality(np.nan_to_num(result, nan=float(np.nanmedian(result))))
    if maps is not None:
        folder = Path(maps)
        folder.mkdir(parents=True, exist_ok=True)
        _save_png(folder / f"{name}_resid.png", np.where(valid, residual, 0.0), 4 * noise)
        _save_png(folder / f"{name}_large.png", np.where(valid, large, 0.0), 0.5 * noise)
    sky = a * bg_level
    return {
        "noise_rel": float(noise / sky),
        "noise_bin_rel": float(noise_bin / sky),
        "noise_correlation": float(noise_bin / noise),
        "background_error": float(bg_error / sky),
        "snr_extended": float(signal / noise_bin),
        "snr_extended_px": float(signal / noise),
        "fwhm": float(quality.fwhm),
        "outliers_per_mpx": outliers / (valid.sum() / 1e6),
        "matched_stars": int(match.n_matches),
        "binned_fraction": float(quiet.sum() / max(valid.sum(), 1)),
        "fit_r2": float(1 - np.var(residual[valid]) / np.var(y)),
        "background_coef": float(c / a),
        **scales,
    }
