"""Benchmark: sigma-clipped combine of many frames - astrostack vs ccdproc vs astropy.

Usage::

    python bench/bench_stack.py                      # 50 frames of 6000x4000 float32
    python bench/bench_stack.py --frames 20 --size 2000x1500 --memory 1GB

Synthetic frames (sky + noise + a few cosmic rays) are written once as float32 ``.npy``
(astrostack, astropy) and FITS (ccdproc) into a work folder.  Each contender then runs
in its own child process so that its peak resident memory (``ru_maxrss``) and wall
time are measured alone:

* ``astrostack``: :func:`astrostack.combine.engine.combine_sources`, method ``sigma``
  (3/3 sigma, median centre, iterated), streamed in bands within ``--memory``;
* ``ccdproc``: ``ccdproc.combine(files, method='average', sigma_clip=True)`` with
  ``mem_limit`` set to the same budget;
* ``astropy``: all frames loaded into one array, ``astropy.stats.sigma_clip`` (3/3,
  median centre) along the frame axis, then the masked mean.

Before each contender its input files are read once, untimed, so that every one starts
from the page cache (the astropy run evicts it).  ``--workdir`` keeps the frames and
reuses them on the next run.  Prints times, peak RSS and ratios (with issue #4's
targets), and how far each result is from the astropy one.  This is a benchmark, not
a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


def _frames_present(folder: Path, n: int, shape: tuple[int, int], fits_too: bool) -> bool:
    """True when ``folder`` already holds the n frames of this shape (kept by ``--workdir``)."""
    stamp = folder / "frames.json"
    want = {"frames": n, "shape": list(shape), "fits": fits_too, "version": 1}
    try:
        have = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    ok = have.get("frames", 0) >= n and have.get("shape") == want["shape"]
    ok = ok and (have.get("fits") or not fits_too) and have.get("version") == 1
    return ok and all((folder / f"f{i:03d}.npy").is_file() for i in range(n))


def make_frames(folder: Path, n: int, shape: tuple[int, int], fits_too: bool) -> None:
    """Write n frames: sky 1000 + N(0, 10) + 200 cosmic rays each (npy and FITS).

    A ``frames.json`` stamp records what was written, so a later run with the same
    ``--workdir`` reuses the frames instead of writing them again.
    """
    from astropy.io import fits

    if _frames_present(folder, n, shape, fits_too):
        print(f"reusing the {n} frames in {folder}")
        return
    (folder / "frames.json").unlink(missing_ok=True)
    rng = np.random.default_rng(0)
    base = rng.normal(0, 10, shape).astype(np.float32)
    for i in range(n):
        # a shifted copy of one noise field plus fresh row noise: cheap but not identical
        frame = np.roll(base, 37 * i + 11 * (i % 5), axis=1)
        frame += np.float32(1000 + 2 * (i % 7))
        frame += rng.normal(0, 3, (shape[0], 1)).astype(np.float32)
        ys, xs = rng.integers(0, shape[0], 200), rng.integers(0, shape[1], 200)
        frame[ys, xs] += rng.uniform(500, 5000, 200).astype(np.float32)
        np.save(folder / f"f{i:03d}.npy", frame)
        if fits_too:
            fits.PrimaryHDU(frame).writeto(folder / f"f{i:03d}.fits", overwrite=True)
    stamp = {"frames": n, "shape": list(shape), "fits": fits_too, "version": 1}
    (folder / "frames.json").write_text(json.dumps(stamp))


def _run_astrostack(folder: Path, n: int, memory: str) -> np.ndarray:
    from astrostack.combine.engine import combine_sources
    from astrostack.combine.sources import NpySource

    sources = [NpySource(folder / f"f{i:03d}.npy") for i in range(n)]
    res = combine_sources(sources, method="sigma", memory_limit=memory, sigma_low=3, sigma_high=3)
    return res.image


def _run_ccdproc(folder: Path, n: int, memory: str) -> np.ndarray:
    import ccdproc

    from astrostack.combine.engine import parse_memory

    files = [str(folder / f"f{i:03d}.fits") for i in range(n)]
    out = ccdproc.combine(
        files,
        method="average",
        sigma_clip=True,
        sigma_clip_low_thresh=3,
        sigma_clip_high_thresh=3,
        mem_limit=parse_memory(memory),
        unit="adu",
        dtype=np.float32,
    )
    return np.asarray(out.data, dtype=np.float32)


def _run_astropy(folder: Path, n: int, memory: str) -> np.ndarray:
    from astropy.stats import sigma_clip

    stack = np.stack([np.load(folder / f"f{i:03d}.npy") for i in range(n)])
    clipped = sigma_clip(stack, sigma_lower=3, sigma_upper=3, axis=0, maxiters=5)
    return clipped.mean(axis=0).filled(np.nan).astype(np.float32)


RUNNERS = {"astrostack": _run_astrostack, "ccdproc": _run_ccdproc, "astropy": _run_astropy}
INPUTS = {"astrostack": ".npy", "ccdproc": ".fits", "astropy": ".npy"}


def warm_cache(folder: Path, n: int, suffix: str) -> float:
    """Read a contender's input files once (untimed) so each starts from the page cache.

    The astropy contender needs ~3x the data in memory and evicts cached files; without
    this the next contender would be timed reading from disk.  Returns the seconds taken.
    """
    t0 = time.perf_counter()
    buf = bytearray(64 * 1024**2)
    view = memoryview(buf)
    for i in range(n):
        with open(folder / f"f{i:03d}{suffix}", "rb", buffering=0) as fh:
            while fh.readinto(view):
                pass
    return time.perf_counter() - t0


def child(tool: str, folder: Path, n: int, memory: str, out: Path) -> None:
    """Run one contender in this (fresh) process and print a JSON line."""
    t0 = time.perf_counter()
    image = RUNNERS[tool](folder, n, memory)
    seconds = time.perf_counter() - t0
    np.save(out, image)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss / 1024
    cpu = usage.ru_utime + usage.ru_stime  # all threads, whole process (steadier when shared)
    print(json.dumps({"tool": tool, "seconds": seconds, "peak_mb": peak, "cpu_s": cpu}))


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, make data, run every contender in its own process, report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT")
    ap.add_argument("--memory", default="2GB", help="budget for astrostack and ccdproc")
    ap.add_argument("--tools", default="astrostack,ccdproc,astropy")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the frames here and reuse them on later runs (default: a temporary folder)",
    )
    ap.add_argument("--child", nargs=3, metavar=("TOOL", "DIR", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        tool, folder, out = args.child
        child(tool, Path(folder), args.frames, args.memory, Path(out))
        return 0
    shape = _parse_size(args.size)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="bench-stack-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        print(f"{args.frames} frames of {shape[1]}x{shape[0]} float32 in {folder}")
        make_frames(folder, args.frames, shape, fits_too="ccdproc" in tools)
        results = {}
        images = {}
        for tool in tools:
            out = folder / f"result-{tool}.npy"
            warm_cache(folder, args.frames, INPUTS[tool])
            cmd = [sys.executable, __file__, "--frames", str(args.frames), "--memory", args.memory]
            cmd += ["--child", tool, str(folder), str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{tool}: failed\n{proc.stderr[-2000:]}")
                continue
            results[tool] = json.loads(proc.stdout.strip().splitlines()[-1])
            images[tool] = np.load(out)
        base = results.get("astrostack")
        head = f"{'tool':<12}{'time s':>10}{'cpu s':>9}{'peak MB':>10}{'time x':>9}{'mem x':>8}"
        print(f"\n{head}{'rms vs astropy':>16}")
        for tool, r in results.items():
            tx = r["seconds"] / base["seconds"] if base else float("nan")
            mx = r["peak_mb"] / base["peak_mb"] if base else float("nan")
            rms = float("nan")
            if "astropy" in images:
                rms = float(np.sqrt(np.nanmean((images[tool] - images["astropy"]) ** 2)))
            print(
                f"{tool:<12}{r['seconds']:>10.2f}{r.get('cpu_s', float('nan')):>9.2f}"
                f"{r['peak_mb']:>10.0f}{tx:>9.2f}{mx:>8.2f}{rms:>16.4f}"
            )
        print(
            "(time x, mem x: relative to astrostack; cpu s: user + system time of all the "
            "tool's threads, including start-up; noise per frame 10 ADU)"
        )
        if base and "ccdproc" in results:
            cc = results["ccdproc"]
            print(
                f"ccdproc / astrostack: time {cc['seconds'] / base['seconds']:.1f}x "
                f"(target >= 10x); astrostack / ccdproc peak memory "
                f"{base['peak_mb'] / cc['peak_mb']:.2f} (target <= 0.25)"
            )
        if base and "astropy" in results:
            ap_s = results["astropy"]["seconds"]
            print(f"astropy / astrostack: time {ap_s / base['seconds']:.1f}x (target >= 3x)")
    finally:
        if args.workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
