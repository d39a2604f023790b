"""Benchmark the combine kernels against NumPy / astropy equivalents.

Usage::

    python bench/bench_kernels.py                 # [50, 2000, 2000] float32 (800 MB)
    python bench/bench_kernels.py --shape 50 500 500 --threads 2

Prints one row per method: astrostack wall and CPU time (CPU time is the steadier figure on
a shared machine), the reference and its wall time, and the speed-up.
The reference of a method without a library equivalent is the closest one (noted).
Compilation is excluded (a tiny warm-up run first).  Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numba
import numpy as np
from astropy.stats import sigma_clip

from astrostack.combine.kernels import combine


def _ref_mean(s):
    return np.nanmean(s, axis=0)


def _ref_median(s):
    return np.nanmedian(s, axis=0)


def _ref_sigma(s):
    c = sigma_clip(s, sigma=3, maxiters=10, cenfunc="median", stdfunc="std", axis=0, masked=False)
    return np.nanmean(c, axis=0)


def _ref_mad_sigma(s):
    c = sigma_clip(
        s, sigma=3, maxiters=10, cenfunc="median", stdfunc="mad_std", axis=0, masked=False
    )
    return np.nanmean(c, axis=0)


def _ref_percentile(s):
    med = np.nanmedian(s, axis=0)
    am = np.abs(med)
    keep = (s >= med - 0.2 * am) & (s <= med + 0.1 * am)
    return np.nanmean(np.where(keep, s, np.nan), axis=0)


def _ref_minmax(s):
    srt = np.sort(s, axis=0)  # NaN sort last: exact only without NaN
    return srt[1:-1].mean(axis=0)


REFERENCES = {
    "mean": ("np.nanmean", _ref_mean),
    "median": ("np.nanmedian", _ref_median),
    "sigma": ("astropy sigma_clip std", _ref_sigma),
    "winsorized": ("astropy sigma_clip mad_std*", _ref_mad_sigma),
    "linear_fit": ("astropy sigma_clip std*", _ref_sigma),
    "esd": ("astropy sigma_clip std*", _ref_sigma),
    "percentile": ("numpy nanmedian+mask", _ref_percentile),
    "minmax": ("np.sort + mean", _ref_minmax),
}


def _time(fn, repeat):
    """Best wall time and its CPU time (all threads) over ``repeat`` runs."""
    best = (np.inf, np.inf)
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best


def main() -> None:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[50, 2000, 2000], metavar=("N", "H", "W"))
    ap.add_argument("--threads", type=int, default=None, help="numba threads (default: all)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--methods", nargs="*", default=list(REFERENCES))
    ap.add_argument("--no-reference", action="store_true", help="time astrostack only")
    args = ap.parse_args()
    if args.threads:
        numba.set_num_threads(args.threads)
    n, h, w = args.shape
    rng = np.random.default_rng(0)
    stack = rng.normal(1000.0, 10.0, (n, h, w)).astype(np.float32)
    hits = rng.random(stack.shape) < 0.01
    stack[hits] += 500.0
    tiny = stack[:, :8, :8].copy()
    print(
        f"stack [{n}, {h}, {w}] float32, {stack.nbytes / 1e6:.0f} MB, "
        f"{numba.get_num_threads()} numba threads"
    )
    head = ("method", "wall s", "cpu s", "Mpix/s", "reference", "ref wall s", "speed-up")
    print(
        f"{head[0]:<11} {head[1]:>8} {head[2]:>8} {head[3]:>8}  {head[4]:<28} "
        f"{head[5]:>10} {head[6]:>9}"
    )
    for method in args.methods:
        combine(tiny, method)  # compile / load cache outside the timing
        t_ours, c_ours = _time(lambda m=method: combine(stack, m), args.repeat)
        name, ref = REFERENCES[method]
        if args.no_reference:
            ref_txt = f"{'-':>10} {'-':>9}"
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t_ref, _ = _time(lambda r=ref: r(stack), 1)
            ref_txt = f"{t_ref:10.3f} {t_ref / t_ours:8.1f}x"
        print(
            f"{method:<11} {t_ours:8.3f} {c_ours:8.3f} {h * w / t_ours / 1e6:8.2f}  "
            f"{name:<28} {ref_txt}"
        )
    print("* no library implements this rejection; the closest astropy clip is shown.")


if __name__ == "__main__":
    main()
