"""Per-frame statistics and normalisation of registered lights.

One pass reads each frame once, band by band (one tile row at a time, so memory does
not depend on the frame count), and measures per channel:

* ``location`` - median of a regular subsample of the finite pixels;
* ``dispersion`` - MAD-based sigma of the same subsample (the PixInsight/Siril "scale");
* ``noise`` - background noise: the median over tiles of each tile's sigma-clipped,
  lower-half sigma (``median - q(15.87 %)``), so stars, nebulae and gradients do not
  inflate it;
* ``block_noise`` - the same noise at the scale of 4x4 blocks: block means (stars
  left out) minus their tile's median, pooled over the frame, clipped standard
  deviation, times 4 (per-pixel equivalent).  Registration's interpolation smooths
  each frame by a different amount (by its fractional shift; the reference is not
  resampled at all), which lowers the *per-pixel* noise by up to 12 % (Lanczos-3) or
  50 % (bilinear) without changing the noise at the scales of extended objects, so
  noise weights from per-pixel noise would favour the most smoothed frames and
  penalise the reference; ``block_noise`` is what they use;
* a coarse background grid - the sigma-clipped median of every tile - and each
  tile's flux above background (for the signal scale): the sum of the 3x3
  median-filtered pixels minus a quadratic surface fitted to the pixels outside the
  reference's star mask (the reference is measured first and builds the mask), so
  the flux is linear in the signal and follows gradients and glow.

Normalisations (``value' = value * scale + offset``, relative to the reference frame):

=========================  ==================================================================
``none``                   scale 1, offset 0
``additive``               ``x + (m_ref - m_i)``
``multiplicative``         ``x * m_ref / m_i``
``additive+scale``         ``(x - m_i) * s_ref / s_i + m_ref``
``multiplicative+scale``   ``((x - m_i) * s_ref / s_i + m_i) * m_ref / m_i`` (dispersion
                           matched about the frame's own level, then a gain to the
                           reference level)
``local``                  ``(x - B_i(y, x)) * k_i + T(y, x)``: the frame's background
                           surface ``B_i`` (bilinear interpolation of the tile grid) is
                           replaced by a common target ``T``, which removes gradients,
                           cloud glow and partial-coverage level differences.  ``T`` is
                           the weighted (stack weights) mean over frames of ``k_i B_i``
                           each matched to the reference's large-scale background by a
                           quadratic, tiles deviating beyond their noise dropped: the
                           tile-median noise of the models then cancels in the stack
                           instead of adding to it (as the reference's own ``B_ref``
                           would).  ``k_i`` is the *signal*
                           scale - the ratio of tile fluxes above background (template /
                           frame, over bright tiles), which follows transparency and is
                           insensitive to seeing - or 1 when the field has too few bright
                           tiles (a dispersion ratio would just equalise the noise)
=========================  ==================================================================

``m`` = location, ``s`` = dispersion.  Only finite pixels enter any statistic, so
frames that cover part of the output (NaN outside the footprint) are normalised on
the area they cover.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from ..combine.sources import FrameSource, GridSurface
from .bandsums import (
    N_SUMS,
    accumulate_rows,
    exact_order,
    fill_level,
    fill_rows,
    finish_band,
    full_tile_moments,
    sample_size,
    scan_band,
    tile_row_flux,
)
from .tilestats import exact_median, tile_row_clip

__all__ = [
    "NORMALIZATIONS",
    "FrameStats",
    "Normalization",
    "compute_normalization",
    "default_tile",
    "measure_frame",
]

logger = logging.getLogger(__name__)

NORMALIZATIONS = (
    "none",
    "additive",
    "multiplicative",
    "additive+scale",
    "multiplicative+scale",
    "local",
)
_MAD = 1.482602218505602


def default_tile(shape: tuple[int, ...]) -> int:
    """Background tile size for a frame shape: ``min(H, W) / 16`` clipped to [32, 256]."""
    return int(min(256, max(32, min(shape[-2:]) // 16)))


@dataclass
class FrameStats:
    """Statistics of one frame (arrays over channels ``C``; mono has ``C = 1``).

    Attributes
    ----------
    location, dispersion, noise : ndarray
        ``[C]`` median, MAD sigma of all finite pixels, background noise.
    grid : ndarray
        ``[C, ny, nx]`` sigma-clipped tile medians (NaN where a tile has too few data).
    tile_sigma, tile_flux : ndarray
        ``[C, ny, nx]`` tile noise and flux above the tile median.
    tile_count : ndarray
        ``[ny, nx]`` finite pixels per tile (channel 0).
    coverage : float
        Fraction of finite pixels.
    tile : int
        Tile size used.
    shape : tuple
        Frame shape.
    star_mask : ndarray or None
        uint8 ``[H, W]`` star mask when built (``make_mask=True``).
    block_noise : ndarray or None
        ``[C]`` background noise measured on ``noise_block`` x ``noise_block`` block
        means and scaled back to one pixel: insensitive to the smoothing of
        interpolation (see the module notes); what noise weights use.
    """

    location: np.ndarray
    dispersion: np.ndarray
    noise: np.ndarray
    grid: np.ndarray
    tile_sigma: np.ndarray
    tile_flux: np.ndarray
    tile_count: np.ndarray
    coverage: float
    tile: int
    shape: tuple[int, ...]
    star_mask: np.ndarray | None = None
    block_noise: np.ndarray | None = None

    @cached_property
    def background_model(self) -> np.ndarray:
        """The tile grid as a background model (:func:`_background_grid`), read-only.

        Computed once per frame: normalisation asks for it more than once (before and
        after the weights are known).
        """
        model = _background_grid(self)
        model.setflags(write=False)
        return model


def _clipped_std(dev: np.ndarray, kappa: float = 3.0, iters: int = 5) -> float:
    """Standard deviation of *dev* after iterative kappa-sigma clipping about the median.

    Corrected for the truncation of a normal distribution at +-3 sigma (x 1/0.98658).
    More efficient than quantile-based estimators, which matters because block means
    are 16 times fewer than pixels.  NaN when fewer than 16 values.
    """
    if dev.size < 16:
        return float("nan")
    kept = dev
    for _ in range(iters):
        med = exact_median(kept, False)
        sig = float(np.std(kept))
        new = dev[np.abs(dev - med) <= kappa * sig]
        if new.size == kept.size or new.size < 16:
            break
        kept = new
    return float(np.std(kept)) / 0.98658


def measure_frame(
    source: FrameSource,
    tile: int | None = None,
    samples: int = 300_000,
    star_mask: np.ndarray | None = None,
    make_mask: bool = False,
    noise_block: int = 4,
) -> FrameStats:
    """Measure one frame in a single band-by-band pass.

    Parameters
    ----------
    source : FrameSource
        The frame (opened and closed here).
    tile : int, optional
        Background tile size (default :func:`default_tile`).
    samples : int
        Approximate size of the regular subsample for location and dispersion.
    star_mask : ndarray, optional
        uint8 ``[H, W]``, non-zero on the reference's stars (from a previous call
        with ``make_mask=True``): tile fluxes use the mean of the other pixels as
        their background, the same pixels in every frame.
    make_mask : bool
        Build that mask from this frame (the reference): pixels of the 3x3 median
        filtered image above the tile median + 3 sigma, dilated by 2 px, any channel.
        Returned in :attr:`FrameStats.star_mask`.
    noise_block : int
        Block size of :attr:`FrameStats.block_noise`.

    Raises
    ------
    ValueError
        When the frame has no finite pixels (message names the file).
    """
    shape = tuple(source.shape)
    height, width = shape[-2:]
    channels = shape[0] if len(shape) == 3 else 1
    tile = tile or default_tile(shape)
    ny, nx = math.ceil(height / tile), math.ceil(width / tile)
    stride = max(1, int(math.sqrt(height * width / samples)))
    tile_step = max(1, int(math.sqrt(tile * tile / 8192)))
    grid = np.full((channels, ny, nx), np.nan)
    tsig = np.full((channels, ny, nx), np.nan)
    tflux = np.zeros((channels, ny, nx))
    tcount = np.zeros((channels, ny, nx), dtype=np.int64)
    devs: list[list[np.ndarray]] = [[] for _ in range(channels)]
    subs: list[list[np.ndarray]] = [[] for _ in range(channels)]
    if star_mask is not None and star_mask.shape != (height, width):
        msg = f"{source.path}: star mask {star_mask.shape} does not match the frame {shape}"
        raise ValueError(msg)
    new_mask = np.zeros((height, width), dtype=np.uint8) if make_mask else None
    use_fit = make_mask or star_mask is not None
    kernel = np.ones((5, 5), np.uint8)
    # band buffers, reused: per channel the band, the tiles' samples (one row each,
    # sorted by numpy along rows), non-finite pixels and level sample
    buffer = np.empty((channels, tile, width), dtype=np.float32)
    picks = np.empty((channels, nx, sample_size(tile, tile, tile_step)), dtype=np.float32)
    nsamp = np.empty((channels, nx), dtype=np.int64)
    bad = np.empty((channels, nx), dtype=np.int64)
    sub = np.empty(((tile + 3) // 4) * ((width + 3) // 4), dtype=np.float32)
    info = np.empty((channels, 4), dtype=np.int64)
    fills = np.zeros(channels, dtype=np.float32)
    # the second look goes through a band a few rows at a time, so that the rows, their
    # filled copy and 3x3 median stay in the core's cache (the reference keeps the
    # whole band's median: its star mask is dilated across rows)
    chunk = max(noise_block, (1 << 18) // (4 * width))
    keep = tile if make_mask else chunk + 2
    smooth = np.empty((channels if make_mask else 1, keep, width), dtype=np.float32)
    filled = np.empty((keep, width), dtype=np.float32)
    sums = np.empty((nx, N_SUMS))
    nfin = np.empty(nx, dtype=np.int64)
    nblocks = width // noise_block
    acc = np.empty(nblocks)
    flag = np.empty(nblocks, dtype=np.uint8)
    near = np.empty((tile, nblocks), dtype=np.uint8)
    means = np.empty((tile // noise_block, nblocks))
    full_sums: dict[int, np.ndarray] = {}
    with source:
        for j in range(ny):
            y0, y1 = j * tile, min((j + 1) * tile, height)
            rows = y1 - y0
            out = buffer[:, :rows] if len(shape) == 3 else buffer[0, :rows]
            band = source.read_rows(y0, y1, out)
            planes = band[None] if band.ndim == 2 else band
            first = (-y0) % stride
            if rows not in full_sums:
                last = width - (nx - 1) * tile
                full_sums[rows] = np.stack(
                    [full_tile_moments(rows, w, tile) for w in (min(tile, width), last)]
                )
            for c in range(channels):
                scan_band(planes[c], tile, tile_step, bad[c], picks[c], nsamp[c], sub, info[c])
                picks[c].sort(axis=1)
                tile_row_clip(picks[c], nsamp[c], grid[c, j], tsig[c, j])
                # no-data pixels take the band's level for the 3x3 median, so that next
                # to the footprint edge it ignores them
                if info[c, 0]:
                    fills[c] = fill_level(planes[c], sub, info[c, 1])
            if new_mask is not None:
                # the reference builds the star mask from its tile levels
                band_mask = new_mask[y0:y1]
                for c in range(channels):
                    src = planes[c]
                    if info[c, 0]:
                        fill_rows(src, fills[c], filled[:rows])
                        src = filled[:rows]
                    cv2.medianBlur(src, 3, smooth[c, :rows])
                    level = np.repeat(grid[c, j] + 3 * tsig[c, j], tile)[:width]
                    band_mask |= (smooth[c, :rows] > level[None, :]).astype(np.uint8)
                band_mask[...] = cv2.dilate(band_mask, kernel)
            elif star_mask is not None:
                band_mask = np.ascontiguousarray(star_mask[y0:y1])
            else:
                band_mask = np.zeros((rows, width), dtype=np.uint8)
            for c in range(channels):
                plane = planes[c]
                gaps = bool(info[c, 0])
                low, high = int(info[c, 2]), int(info[c, 3])
                if gaps and fills[c] != 0:
                    fill_bits = int(np.abs(fills[c : c + 1]).view(np.uint32)[0])
                    low, high = min(low, fill_bits), max(high, fill_bits)
                exact = exact_order(low, high, tile * tile)
                level = grid[c, j] + 3 * tsig[c, j]
                sums[:] = 0.0
                nfin[:] = 0
                acc[:] = 0.0
                flag[:] = 0
                for r0 in range(0, rows, chunk):
                    r1 = min(rows, r0 + chunk)
                    if new_mask is not None:
                        sm = smooth[c, r0:r1]
                    else:
                        # the 3x3 median of rows r0:r1 needs the rows either side
                        h0, h1 = max(0, r0 - 1), min(rows, r1 + 1)
                        src = plane[h0:h1]
                        if gaps:
                            fill_rows(src, fills[c], filled[: h1 - h0])
                            src = filled[: h1 - h0]
                        sm = cv2.medianBlur(src, 3, smooth[0, : h1 - h0])[r0 - h0 : r1 - h0]
                    accumulate_rows(
                        plane, sm, band_mask, r0, bad[c], level, tile, tile_step, use_fit,
                        exact, noise_block, 2, sums, nfin, acc, flag, near, means,
                    )  # fmt: skip
                # the noise leaves out the given star mask and this frame's own stars
                dev = np.empty(rows * width // noise_block**2)
                ndev = finish_band(
                    plane, bad[c], tile, full_sums[rows], noise_block, 2, sums, nfin,
                    near[:rows], means[: rows // noise_block], dev,
                )  # fmt: skip
                tile_row_flux(sums, nsamp[c], grid[c, j], use_fit, tflux[c, j], tcount[c, j])
                devs[c].append(dev[:ndev])
                sample = plane[first::stride, ::stride].ravel()
                subs[c].append(sample[np.isfinite(sample)])
    location = np.empty(channels)
    dispersion = np.empty(channels)
    noise = np.empty(channels)
    block_noise = np.empty(channels)
    for c in range(channels):
        sample = np.concatenate(subs[c]) if subs[c] else np.empty(0)
        if sample.size < 16:
            msg = f"{source.path}: no finite pixels; the frame is empty or failed registration"
            raise ValueError(msg)
        location[c] = exact_median(sample, True)
        dispersion[c] = _MAD * exact_median(np.abs(sample - location[c]), False)
        full = tcount[c] >= 0.9 * tile * tile
        sig = tsig[c][full & np.isfinite(tsig[c])]
        noise[c] = np.median(sig) if sig.size else dispersion[c]
        pooled = np.concatenate(devs[c]) if devs[c] else np.empty(0)
        # a regular subsample keeps the cost flat on big frames (error ~0.2 % at 2e5)
        binned = _clipped_std(pooled[:: max(1, pooled.size // 200_000)])
        block_noise[c] = binned if binned > 0 else noise[c]
    covered = float(tcount[0].sum()) / (height * width)
    return FrameStats(
        location=location,
        dispersion=dispersion,
        noise=noise,
        grid=grid,
        tile_sigma=tsig,
        tile_flux=tflux,
        tile_count=tcount[0],
        coverage=covered,
        tile=tile,
        shape=shape,
        star_mask=new_mask,
        block_noise=block_noise,
    )


def _background_grid(stats: FrameStats) -> np.ndarray:
    """The tile-median grid as a background model: ``[C, ny, nx]``, all finite.

    Tiles less than 90 % covered (footprint edges) are replaced by a least-squares
    plane through the valid tiles within two tiles (a linear extrapolation, so a
    gradient continues across the footprint edge), or their mean when too few.
    Valid tiles keep their sigma-clipped median: stars are clipped, and extended
    signal is present (scaled) in every frame alike, so it cancels in ``local``
    normalisation.
    """
    valid = stats.tile_count >= 0.9 * stats.tile * stats.tile
    out = np.array(stats.grid, dtype=np.float64)
    ny, nx = valid.shape
    for c in range(out.shape[0]):
        g = out[c]
        ok = valid & np.isfinite(g)
        if not ok.any():
            g[...] = stats.location[c]
            continue
        holes = np.argwhere(~ok)
        filled = g.copy()
        for j, i in holes:
            for radius in (2, 3, 5, max(ny, nx)):
                j0, j1 = max(0, j - radius), min(ny, j + radius + 1)
                i0, i1 = max(0, i - radius), min(nx, i + radius + 1)
                jj, ii = np.nonzero(ok[j0:j1, i0:i1])
                if jj.size:
                    break
            vals = g[j0:j1, i0:i1][jj, ii]
            jj, ii = jj + j0, ii + i0
            design = np.column_stack([np.ones(jj.size), jj - j, ii - i])
            if jj.size >= 4 and np.linalg.matrix_rank(design) == 3:
                coef = np.linalg.lstsq(design, vals, rcond=None)[0]
                filled[j, i] = coef[0]
            else:
                filled[j, i] = vals.mean()
        out[c] = filled
    return out


def _poly_design(ny: int, nx: int, degree: int) -> np.ndarray:
    """Polynomial basis (total degree <= *degree*) over the tile grid, coordinates in [-1, 1]."""
    v = np.linspace(-1.0, 1.0, ny) if ny > 1 else np.zeros(1)
    u = np.linspace(-1.0, 1.0, nx) if nx > 1 else np.zeros(1)
    vv, uu = np.meshgrid(v, u, indexing="ij")
    cols = [uu**i * vv**j for i in range(degree + 1) for j in range(degree + 1 - i)]
    return np.stack([c.ravel() for c in cols], axis=1)


def _robust_polyfit(values: np.ndarray, ok: np.ndarray, design: np.ndarray) -> np.ndarray:
    """Least-squares surface through the *ok* tiles, 3-sigma clipped twice; NaN-free."""
    keep = ok.ravel() & np.isfinite(values.ravel())
    vals = np.nan_to_num(values.ravel())
    if keep.sum() < 2 * design.shape[1]:
        level = np.median(vals[keep]) if keep.any() else 0.0
        return np.full(values.shape, level)
    for _ in range(3):
        coef = np.linalg.lstsq(design[keep], vals[keep], rcond=None)[0]
        resid = vals - design @ coef
        sig = _MAD * np.median(np.abs(resid[keep]))
        new = keep & (np.abs(resid) <= 3 * sig + 1e-12)
        if new.sum() < 2 * design.shape[1] or new.sum() == keep.sum():
            break
        keep = new
    return (design @ coef).reshape(values.shape)


def _common_background(
    grids: list[np.ndarray],
    stats: list[FrameStats],
    scales: np.ndarray,
    weights: np.ndarray,
    reference: int,
    degree: int = 2,
    kappa: float = 3.0,
    rel_tol: float = 0.05,
) -> np.ndarray:
    """The background every frame is mapped onto in ``local`` normalisation.

    Each frame's scaled background grid ``k_i B_i`` is brought to the reference's
    large-scale background by removing a robust polynomial (total degree *degree*)
    fitted to ``k_i B_i - B_ref``, giving ``E_i``.  Per tile, the ``E_i`` that deviate
    from their median by more than *kappa* times their tile-median error (cloud glow,
    a frame's own local gradient) are dropped and the rest averaged with the stack
    *weights*; frames within ``rel_tol`` of the tile's level above the typical
    background are always kept (signal-scale errors).  Where no frame is dropped, the
    stack's mean of
    ``k_i x_i - k_i B_i + target`` is then exactly the weighted mean of ``k_i x_i``
    minus smooth polynomials: the tile-median noise of the background models cancels
    instead of entering the result (the reference's own tile medians, used as the
    target directly, would add their noise - about 1.25 sigma / tile - unaveraged to
    every frame).
    """
    n = len(grids)
    channels, ny, nx = grids[reference].shape
    design = _poly_design(ny, nx, degree)
    area = stats[reference].tile ** 2
    target = np.empty((channels, ny, nx))
    for c in range(channels):
        est = np.empty((n, ny, nx))
        err = np.empty((n, ny, nx))
        ok = np.empty((n, ny, nx), bool)
        b_ref = grids[reference][c]
        for i, (g, st) in enumerate(zip(grids, stats, strict=True)):
            valid = (st.tile_count >= 0.9 * area) & np.isfinite(st.grid[c])
            kb = scales[i, c] * g[c]
            est[i] = kb if i == reference else kb - _robust_polyfit(kb - b_ref, valid, design)
            count = np.maximum(st.tile_count, 1)
            with np.errstate(all="ignore"):
                err[i] = 1.25 * scales[i, c] * st.tile_sigma[c] / np.sqrt(count)
            # partly covered tiles count too, with the (extrapolated) grid value the
            # frame's own surface uses, so that the models still cancel near the edges
            partial = (st.tile_count >= 0.25 * area) & np.isfinite(err[i])
            ok[i] = partial | (valid & np.isfinite(err[i]))
        w = np.broadcast_to(weights[:, c, None, None], est.shape)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(np.where(ok, est, np.nan), axis=0)
            err_med = 1.25 * np.nanmedian(np.where(ok, err, np.nan), axis=0) / np.sqrt(max(n, 1))
            # signal scales are good to a few per cent: in tiles of bright emission the
            # frames' models differ by that fraction of the emission, which is no reason
            # to drop them (it would break the cancellation where the signal is)
            above = np.abs(med - np.nanmedian(med))
            keep = ok & (np.abs(est - med) <= kappa * np.hypot(err, err_med) + rel_tol * above)
            total = np.where(keep, w, 0.0).sum(axis=0)
            mean = np.where(keep, w * est, 0.0).sum(axis=0) / total
        target[c] = np.where(total > 0, mean, b_ref)
        logger.debug(
            "local normalisation, channel %d: %.1f %% of frame tiles averaged",
            c,
            100.0 * keep.sum() / max(ok.sum(), 1),
        )
    return target


def _ratio_of_sums(template, flux, sigma_t, sigma_f, n_pix, min_tiles):
    """Robust ``sum(template) / sum(flux)`` over tiles whose ratio agrees with the median.

    A tile is kept when its ratio is within 3 sigma of its flux noise (plus 3 % for
    PSF differences) of the median ratio, so bright tiles dominate and tiles with a
    trail or a transient are dropped.  NaN when fewer than ``min_tiles`` tiles.
    """
    with np.errstate(all="ignore"):
        noise_t = 1.5 * sigma_t * np.sqrt(n_pix)
        ok = (template > 10 * noise_t) & (flux > 0) & np.isfinite(flux) & np.isfinite(template)
    if ok.sum() < min_tiles:
        return np.nan
    ratio = template[ok] / flux[ok]
    err = np.hypot(noise_t[ok] / template[ok], 1.5 * sigma_f[ok] * np.sqrt(n_pix[ok]) / flux[ok])
    med = np.median(ratio)
    keep = np.abs(ratio - med) <= med * (3 * err + 0.03)
    if keep.sum() < min_tiles:
        return float(med)
    return float(template[ok][keep].sum() / flux[ok][keep].sum())


def _signal_scales(stats: list[FrameStats], reference: int, min_tiles: int = 5) -> np.ndarray:
    """Per frame and channel ``k`` with ``frame * k`` matching the reference's signal.

    Tile fluxes above background are compared with a template: the median over frames
    of the scaled tile fluxes (so a trail, satellite or cosmic-ray cluster in any one
    frame - the reference included - does not bias anyone's scale).  Two refinement
    rounds, then scales are made relative to the reference.  NaN where a frame has too
    few bright, fully covered tiles.
    """
    ref = stats[reference]
    n, channels = len(stats), ref.grid.shape[0]
    area = ref.tile * ref.tile
    flux = np.stack([st.tile_flux.reshape(channels, -1) for st in stats])  # [N, C, T]
    sig = np.stack([st.tile_sigma.reshape(channels, -1) for st in stats])
    count = np.stack([st.tile_count.reshape(-1) for st in stats]).astype(np.float64)  # [N, T]
    valid = count >= 0.9 * area
    flux = np.where(valid[:, None, :], flux, np.nan)
    n_pix = np.maximum(count, 1)
    k = np.ones((n, channels))
    if n < 3:
        template_from = [reference]
    else:
        template_from = list(range(n))
    for _ in range(3):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN tiles (no coverage)
            scaled = flux[template_from] * k[template_from][:, :, None]
            template = np.nanmedian(scaled, axis=0)  # [C, T]
            t_sigma = np.nanmedian(sig[template_from] * k[template_from][:, :, None], axis=0)
        new = np.full((n, channels), np.nan)
        for i in range(n):
            for c in range(channels):
                new[i, c] = _ratio_of_sums(
                    template[c], flux[i, c], t_sigma[c], sig[i, c] * k[i, c], n_pix[i], min_tiles
                )
        if not np.all(np.isfinite(new[reference])):
            return np.full((n, channels), np.nan)
        k = np.where(np.isfinite(new), new, 1.0)
    return new / new[reference][None, :]


@dataclass
class Normalization:
    """Per-frame transforms ``value * scale + offset (+ surface)`` into reference units.

    Attributes
    ----------
    method : str
        One of :data:`NORMALIZATIONS`.
    scales, offsets : ndarray
        ``[N, C]``.
    surfaces : list of GridSurface or None
        Per-pixel offsets (``local``), else ``None``.
    scale_source : list of str
        Per frame: how the scale was obtained (``'signal'``, ``'reference'``, ``'none'``,
        ``'dispersion'`` or ``'-'``).
    """

    method: str
    scales: np.ndarray
    offsets: np.ndarray
    surfaces: list[GridSurface | None] | None
    scale_source: list[str]


def compute_normalization(
    stats: list[FrameStats],
    reference: int = 0,
    method: str = "local",
    flux_scales: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> Normalization:
    """Transforms that bring every frame to the reference frame's level and scale.

    Parameters
    ----------
    stats : list of FrameStats
        From :func:`measure_frame`, one per frame.
    reference : int
        Index of the reference frame in ``stats``.
    method : str
        One of :data:`NORMALIZATIONS`.
    flux_scales : ndarray, optional
        ``[N]`` or ``[N, C]`` relative star fluxes (frame / reference, e.g. from the
        photometry of matched stars at registration).  For ``local`` they replace the
        tile-flux signal scale (``k = 1 / flux_scale``): aperture photometry is not
        biased by strongly curved backgrounds.
    weights : ndarray, optional
        ``[N, C]`` the stack's frame weights (``local``): the common background the
        frames are mapped onto is their weighted mean (see :func:`_common_background`),
        so that the background models' noise cancels in the weighted stack.  Default:
        inverse-variance weights from the normalised noise.
    """
    if method not in NORMALIZATIONS:
        msg = f"normalization {method!r} unknown; use one of {', '.join(NORMALIZATIONS)}"
        raise ValueError(msg)
    ref = stats[reference]
    n, channels = len(stats), ref.location.shape[0]
    scales = np.ones((n, channels))
    offsets = np.zeros((n, channels))
    surfaces: list[GridSurface | None] | None = None
    source = ["-"] * n
    m_ref, s_ref = ref.location, ref.dispersion
    with np.errstate(all="ignore"):
        for i, st in enumerate(stats):
            m, s = st.location, st.dispersion
            if method == "additive":
                offsets[i] = m_ref - m
            elif method == "multiplicative":
                scales[i] = m_ref / m
            elif method == "additive+scale":
                scales[i] = s_ref / s
                offsets[i] = m_ref - m * scales[i]
                source[i] = "dispersion"
            elif method == "multiplicative+scale":
                k = s_ref / s
                gain = m_ref / m
                scales[i] = k * gain
                offsets[i] = (m - m * k) * gain
                source[i] = "dispersion"
        if method == "local":
            surfaces = []
            b_ref = ref.background_model
            if flux_scales is not None:
                fs = np.asarray(flux_scales, dtype=np.float64)
                fs = np.broadcast_to(fs.reshape(n, -1), (n, channels))
                signal = (fs[reference] / fs).astype(np.float64)
                signal[~(np.isfinite(signal) & (signal > 0))] = np.nan
            else:
                signal = _signal_scales(stats, reference)
            for i, _st in enumerate(stats):
                k = np.ones(channels) if i == reference else signal[i]
                source[i] = "reference" if i == reference else "signal"
                if not np.all(np.isfinite(k)):
                    # no measurable signal (too few bright tiles): keep the frame's scale;
                    # a dispersion ratio would only equalise the noise and defeat weighting
                    source[i] = "none"
                    k = np.where(np.isfinite(k), k, 1.0)
                scales[i] = k
            grids = [b_ref if i == reference else st.background_model for i, st in enumerate(stats)]
            if weights is None:
                noise = (
                    np.stack(
                        [st.noise if st.block_noise is None else st.block_noise for st in stats]
                    )
                    * scales
                )
                weights = np.where(noise > 0, 1.0 / noise**2, 0.0)
            target = _common_background(grids, stats, scales, np.asarray(weights), reference)
            for i in range(n):
                grid = target - scales[i][:, None, None] * grids[i]
                if i == reference and not np.any(grid):
                    surfaces.append(None)
                    continue
                surf_grid = grid[0] if len(ref.shape) == 2 else grid
                surfaces.append(GridSurface(surf_grid, ref.tile, tuple(ref.shape[-2:])))
    if not (np.all(np.isfinite(scales)) and np.all(np.isfinite(offsets))) or np.any(scales <= 0):
        bad = sorted({int(i) for i in np.nonzero(~np.isfinite(scales).all(axis=1))[0]})
        bad += [int(i) for i in np.nonzero((scales <= 0).any(axis=1))[0]]
        msg = (
            f"normalization {method!r} is undefined for frames {sorted(set(bad))} (zero or "
            "negative level/dispersion); use 'additive' or check those frames"
        )
        raise ValueError(msg)
    return Normalization(method, scales, offsets, surfaces, source)
