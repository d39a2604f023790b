"""measure_frame gives exactly the numbers of the straightforward per-pixel loops.

The reference below is the first pass as it was before it was made faster: every sum
accumulated pixel by pixel in one loop per tile, block means from a dilated star mask,
medians from ``np.median``.  The fast kernels reorder work (rows in chunks, sums in any
order where that is exact, radix-selected medians) and must not change a bit.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from numba import njit

from astrostack.combine.sources import ArraySource
from astrostack.stack.bandsums import exact_order
from astrostack.stack.normalize import measure_frame
from astrostack.stack.tilestats import clipped_stats

_EXP_U = np.array([0, 1, 0, 2, 1, 0], dtype=np.int64)
_EXP_W = np.array([0, 0, 1, 0, 1, 2], dtype=np.int64)
_MOM_INDEX = np.array(
    [[0, 2, 5, 9, 14], [1, 4, 8, 13, -1], [3, 7, 12, -1, -1], [6, 11, -1, -1, -1],
     [10, -1, -1, -1, -1]], dtype=np.int64,
)  # fmt: skip


@njit
def _tile_row_stats(band, smooth, mask, use_fit, tile, step, med, sig, flux, count):
    rows, width = band.shape
    for i in range(med.shape[0]):
        x0 = i * tile
        x1 = min(x0 + tile, width)
        buf = np.empty(((rows + step - 1) // step) * ((x1 - x0 + step - 1) // step), np.float32)
        xc = 0.5 * (x0 + x1 - 1)
        yc = 0.5 * (rows - 1)
        scale = 1.0 / tile
        mom = np.zeros(15)
        rhs = np.zeros(6)
        all_b = np.zeros(6)
        n = 0
        total = 0.0
        nfin = 0
        n_fit = 0
        for y in range(rows):
            w = (y - yc) * scale
            w2 = w * w
            for x in range(x0, x1):
                v = band[y, x]
                if np.isfinite(v):
                    sv = smooth[y, x]
                    total += sv
                    nfin += 1
                    u = (x - xc) * scale
                    u2 = u * u
                    all_b[1] += u
                    all_b[2] += w
                    all_b[3] += u2
                    all_b[4] += u * w
                    all_b[5] += w2
                    if y % step == 0 and (x - x0) % step == 0:
                        buf[n] = v
                        n += 1
                        if mask[y, x] == 0:
                            n_fit += 1
                            uw = u * w
                            rhs[0] += sv
                            rhs[1] += sv * u
                            rhs[2] += sv * w
                            rhs[3] += sv * u2
                            rhs[4] += sv * uw
                            rhs[5] += sv * w2
                            mom[1] += u
                            mom[2] += w
                            mom[3] += u2
                            mom[4] += uw
                            mom[5] += w2
                            mom[6] += u2 * u
                            mom[7] += u2 * w
                            mom[8] += u * w2
                            mom[9] += w2 * w
                            mom[10] += u2 * u2
                            mom[11] += u2 * uw
                            mom[12] += u2 * w2
                            mom[13] += uw * w2
                            mom[14] += w2 * w2
        all_b[0] = nfin
        mom[0] = n_fit
        gram = np.empty((6, 6))
        for p in range(6):
            for q in range(6):
                gram[p, q] = mom[_MOM_INDEX[_EXP_U[p] + _EXP_U[q], _EXP_W[p] + _EXP_W[q]]]
        count[i] = nfin
        if n < 16:
            med[i] = np.nan
            sig[i] = np.nan
            flux[i] = 0.0
            continue
        m, s = clipped_stats(np.sort(buf[:n]), n, 3.0, 5)
        med[i] = m
        sig[i] = s
        flux[i] = total - nfin * m
        if use_fit and n_fit >= 32 and n_fit >= 0.2 * n:
            if abs(np.linalg.det(gram)) > 1e-12 * gram[0, 0] ** 6:
                coef = np.linalg.solve(gram, rhs)
                level = 0.0
                for p in range(6):
                    level += coef[p] * all_b[p]
                flux[i] = total - level


@njit
def _binned_deviations(plane, masked, tile, b, out):
    rows, width = plane.shape
    rb, wb = rows // b, width // b
    if rb == 0 or wb == 0:
        return 0
    means = np.empty((rb, wb))
    for by in range(rb):
        for bx in range(wb):
            total = 0.0
            good = True
            for yy in range(by * b, by * b + b):
                for xx in range(bx * b, bx * b + b):
                    v = plane[yy, xx]
                    if masked[yy, xx] != 0 or not np.isfinite(v):
                        good = False
                    total += v
            means[by, bx] = total * (1.0 / (b * b)) if good else np.nan
    vals = np.empty(rb * wb)
    n = 0
    for i in range((width + tile - 1) // tile):
        k = 0
        for by in range(rb):
            for bx in range((i * tile) // b, min(((i + 1) * tile) // b, wb)):
                if np.isfinite(means[by, bx]):
                    vals[k] = means[by, bx]
                    k += 1
        if k >= 16:
            med = np.median(vals[:k])
            for j in range(k):
                out[n] = b * (vals[j] - med)
                n += 1
    return n


def _clipped_std(dev, kappa=3.0, iters=5):
    if dev.size < 16:
        return float("nan")
    kept = dev
    for _ in range(iters):
        med = np.median(kept)
        sig = float(np.std(kept))
        new = dev[np.abs(dev - med) <= kappa * sig]
        if new.size == kept.size or new.size < 16:
            break
        kept = new
    return float(np.std(kept)) / 0.98658


def _reference(frame, tile, star_mask=None, make_mask=False, noise_block=4, samples=300_000):
    """The first pass, one straightforward loop per tile (dict of FrameStats fields)."""
    planes_all = frame[None] if frame.ndim == 2 else frame
    channels, height, width = planes_all.shape
    ny, nx = math.ceil(height / tile), math.ceil(width / tile)
    stride = max(1, int(math.sqrt(height * width / samples)))
    step = max(1, int(math.sqrt(tile * tile / 8192)))
    grid = np.full((channels, ny, nx), np.nan)
    tsig = np.full((channels, ny, nx), np.nan)
    tflux = np.zeros((channels, ny, nx))
    tcount = np.zeros((channels, ny, nx), dtype=np.int64)
    devs = [[] for _ in range(channels)]
    subs = [[] for _ in range(channels)]
    new_mask = np.zeros((height, width), np.uint8) if make_mask else None
    use_fit = make_mask or star_mask is not None
    kernel = np.ones((5, 5), np.uint8)
    for j in range(ny):
        y0, y1 = j * tile, min((j + 1) * tile, height)
        planes = np.ascontiguousarray(planes_all[:, y0:y1])
        smooths = []
        for c in range(channels):
            plane = planes[c]
            finite = np.isfinite(plane)
            if finite.all():
                smooths.append(cv2.medianBlur(plane, 3))
                continue
            sub = plane[::4, ::4]
            sub = sub[np.isfinite(sub)]
            sub = sub if sub.size else plane[finite]
            fill = np.float32(np.median(sub)) if sub.size else np.float32(0)
            smooths.append(cv2.medianBlur(np.where(finite, plane, fill), 3))
        if new_mask is not None:
            band_mask = new_mask[y0:y1]
            empty = np.zeros((y1 - y0, width), np.uint8)
            for c in range(channels):
                _tile_row_stats(
                    planes[c], smooths[c], empty, False, tile, step,
                    grid[c, j], tsig[c, j], tflux[c, j], tcount[c, j],
                )  # fmt: skip
                level = np.repeat(grid[c, j] + 3 * tsig[c, j], tile)[:width]
                band_mask |= (smooths[c] > level[None, :]).astype(np.uint8)
            band_mask[...] = cv2.dilate(band_mask, kernel)
        elif star_mask is not None:
            band_mask = star_mask[y0:y1]
        else:
            band_mask = np.zeros((y1 - y0, width), np.uint8)
        for c in range(channels):
            _tile_row_stats(
                planes[c], smooths[c], np.ascontiguousarray(band_mask), use_fit, tile, step,
                grid[c, j], tsig[c, j], tflux[c, j], tcount[c, j],
            )  # fmt: skip
            level = np.repeat(grid[c, j] + 3 * tsig[c, j], tile)[:width]
            own = cv2.dilate((smooths[c] > level[None, :]).astype(np.uint8), kernel)
            np.bitwise_or(own, band_mask, out=own)
            dev = np.empty((y1 - y0) * width // noise_block**2)
            devs[c].append(dev[: _binned_deviations(planes[c], own, tile, noise_block, dev)])
            sample = planes[c][(-y0) % stride :: stride, ::stride].ravel()
            subs[c].append(sample[np.isfinite(sample)])
    out = {k: np.empty(channels) for k in ("location", "dispersion", "noise", "block_noise")}
    for c in range(channels):
        sample = np.concatenate(subs[c])
        out["location"][c] = np.median(sample)
        out["dispersion"][c] = 1.482602218505602 * np.median(np.abs(sample - out["location"][c]))
        full = tcount[c] >= 0.9 * tile * tile
        sig = tsig[c][full & np.isfinite(tsig[c])]
        out["noise"][c] = np.median(sig) if sig.size else out["dispersion"][c]
        pooled = np.concatenate(devs[c])
        binned = _clipped_std(pooled[:: max(1, pooled.size // 200_000)])
        out["block_noise"][c] = binned if binned > 0 else out["noise"][c]
    out.update(grid=grid, tile_sigma=tsig, tile_flux=tflux, tile_count=tcount[0])
    out["star_mask"] = new_mask
    return out


def _sky(rng, shape, level=800.0, stars=40):
    """Sky with a gradient, noise and Gaussian stars, float32."""
    h, w = shape[-2:]
    yy, xx = np.mgrid[:h, :w]
    img = level + 0.05 * xx - 0.03 * yy + rng.normal(0, 12, shape)
    for y, x, f in zip(rng.uniform(0, h, stars), rng.uniform(0, w, stars),
                       rng.uniform(100, 20000, stars), strict=True):  # fmt: skip
        img = img + f * np.exp(-0.5 * ((yy - y) ** 2 + (xx - x) ** 2) / 1.6**2)
    return img.astype(np.float32)


def _assert_same(stats, ref):
    for name, want in ref.items():
        got = getattr(stats, name)
        if want is None:
            assert got is None, name
        else:
            np.testing.assert_array_equal(got, want, err_msg=name, strict=True)


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(5)
    reference = _sky(rng, (150, 203))
    shifted = _sky(rng, (150, 203), level=700.0)
    shifted[:, :9] = np.nan  # footprint edges, as registration leaves them
    shifted[140:, :] = np.nan
    shifted[30:34, 60:61] = np.inf
    shifted[77, 100] = -np.inf
    return reference, shifted


def test_reference_frame_and_mask(frames):
    reference, _ = frames
    st = measure_frame(ArraySource(reference), tile=32, make_mask=True)
    _assert_same(st, _reference(reference, 32, make_mask=True))
    assert 0.01 < st.star_mask.mean() < 0.5


@pytest.mark.parametrize("noise_block", [4, 3])
def test_frames_measured_with_a_mask(frames, noise_block):
    reference, shifted = frames
    mask = measure_frame(ArraySource(reference), tile=32, make_mask=True).star_mask
    other = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    # frames with and without gaps, one mask then another: nothing of one call may
    # leak into the next
    for m, frame in ((mask, shifted), (mask, reference), (other, shifted), (mask, shifted)):
        st = measure_frame(ArraySource(frame), tile=32, star_mask=m, noise_block=noise_block)
        _assert_same(st, _reference(frame, 32, star_mask=m, noise_block=noise_block))


def test_frame_without_mask_and_colour(frames):
    reference, shifted = frames
    st = measure_frame(ArraySource(shifted), tile=40)
    _assert_same(st, _reference(shifted, 40))
    colour = np.stack([shifted, reference * 0.5, shifted[::-1] + 10]).astype(np.float32)
    mask = measure_frame(ArraySource(colour), tile=32, make_mask=True).star_mask
    _assert_same(measure_frame(ArraySource(colour), tile=32, make_mask=True),
                 _reference(colour, 32, make_mask=True))  # fmt: skip
    st = measure_frame(ArraySource(colour), tile=32, star_mask=mask)
    _assert_same(st, _reference(colour, 32, star_mask=mask))


def test_values_whose_sums_depend_on_the_order(frames):
    # tiny values next to large ones: float64 sums are inexact, the order must be kept
    reference, _ = frames
    frame = reference.copy()
    frame[5:60:7, 3:150:5] = np.float32(1.2345e-6)
    frame[70:90, 100:130] *= np.float32(1e-9)  # survives the 3x3 median
    frame[100:103, 20:90] = 0.0
    frame[40, 40] = np.float32(3e7)
    mask = measure_frame(ArraySource(reference), tile=32, make_mask=True).star_mask
    st = measure_frame(ArraySource(frame), tile=32, star_mask=mask)
    _assert_same(st, _reference(frame, 32, star_mask=mask))


def test_exact_order_means_any_order_sums_alike():
    rng = np.random.default_rng(8)
    for _ in range(200):
        n = int(rng.integers(2, 5000))
        span = float(rng.uniform(0, 12))
        vals = (rng.uniform(1, 2**span, n) * rng.choice([-1, 1], n)).astype(np.float32)
        mags = np.abs(vals).view(np.uint32)
        low, high = int(mags.min()), int(mags.max())
        sequential = 0.0
        for v in vals.tolist():
            sequential += v
        if exact_order(low, high, n):
            # numpy's pairwise order, reversed and sorted orders all give the same sum
            assert np.sum(vals, dtype=np.float64) == sequential
            assert np.sum(np.sort(vals)[::-1], dtype=np.float64) == sequential

    # spans too wide, zero exponents, subnormals: not exact
    def bits(v):
        return int(np.float32(v).view(np.uint32))

    one = bits(1)
    assert not exact_order(bits(1e-3), bits(1e7), 100)
    assert exact_order(bits(1), bits(1000), 1000)
    assert exact_order(bits(1), bits(1000), 2**20)
    assert not exact_order(bits(1), bits(1000), 2**20 + 1)
    assert not exact_order(1, one, 10)
    assert exact_order(one, one, 2**29)
    assert not exact_order(one, one, 2**29 + 1)
