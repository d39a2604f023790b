"""The ccdproc + astroalign pipeline, written the way their documentation shows.

Median masters (``ccdproc.combine(method='median')``), ``subtract_bias``,
``subtract_dark(scale=True)``, ``flat_correct``; ``astroalign.register`` of each
calibrated light onto the first; ``ccdproc.combine(method='average', sigma_clip=True)``.
Intermediate frames go to disk and the combines are given file lists and a
``mem_limit``, as the CCD Data Reduction Guide does for large sets.

Usage: ``python ccdproc_pipeline.py SESSION OUTDIR [--colour]``; prints per-stage
times as JSON on the last line.  Mono sessions only (ccdproc has no debayering).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import astroalign
import astropy.units as u
import ccdproc
import numpy as np
from astropy.nddata import CCDData
from astropy.stats import mad_std

warnings.simplefilter("ignore")
MEM_LIMIT = 4e9


def _files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.fits"))


def main(session: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    t0 = time.perf_counter()
    master_bias = ccdproc.combine(
        _files(session / "bias"), method="median", unit="adu", mem_limit=MEM_LIMIT
    )
    darks = []
    for i, f in enumerate(_files(session / "darks")):
        ccd = ccdproc.subtract_bias(CCDData.read(f, unit="adu"), master_bias)
        path = out / f"dark_{i:04d}.fits"
        ccd.write(path, overwrite=True)
        darks.append(str(path))
    master_dark = ccdproc.combine(darks, method="median", mem_limit=MEM_LIMIT)
    master_dark.meta["EXPTIME"] = CCDData.read(_files(session / "darks")[0], unit="adu").header[
        "EXPTIME"
    ]
    flats = []
    for i, f in enumerate(_files(session / "flats")):
        ccd = CCDData.read(f, unit="adu")
        ccd = ccdproc.subtract_bias(ccd, master_bias)
        ccd = ccdproc.subtract_dark(
            ccd, master_dark, exposure_time="EXPTIME", exposure_unit=u.second, scale=True
        )
        path = out / f"flat_{i:04d}.fits"
        ccd.write(path, overwrite=True)
        flats.append(str(path))
    master_flat = ccdproc.combine(
        flats, method="median", scale=lambda a: 1.0 / np.ma.median(a), mem_limit=MEM_LIMIT
    )
    times["masters"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    lights = []
    for i, f in enumerate(_files(session / "lights")):
        ccd = CCDData.read(f, unit="adu")
        ccd = ccdproc.subtract_bias(ccd, master_bias)
        ccd = ccdproc.subtract_dark(
            ccd, master_dark, exposure_time="EXPTIME", exposure_unit=u.second, scale=True
        )
        ccd = ccdproc.flat_correct(ccd, master_flat)
        path = out / f"light_{i:04d}.fits"
        ccd.write(path, overwrite=True)
        lights.append(path)
    times["calibrate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # FITS data come back big-endian; sep (inside astroalign) needs native byte order.
    reference = CCDData.read(lights[0]).data.astype(np.float32)
    registered = []
    failed = 0
    for i, path in enumerate(lights):
        ccd = CCDData.read(path)
        try:
            data, footprint = astroalign.register(ccd.data.astype(np.float32), reference)
        except Exception:  # astroalign raises on frames it cannot match
            failed += 1
            continue
        aligned = CCDData(data.astype(np.float32), unit=ccd.unit, mask=footprint, meta=ccd.meta)
        rpath = out / f"reg_{i:04d}.fits"
        aligned.write(rpath, overwrite=True)
        registered.append(str(rpath))
    times["register"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    stack = ccdproc.combine(
        registered,
        method="average",
        sigma_clip=True,
        sigma_clip_low_thresh=3,
        sigma_clip_high_thresh=3,
        sigma_clip_func=np.ma.median,
        sigma_clip_dev_func=mad_std,
        mem_limit=MEM_LIMIT,
    )
    stack.data = stack.data.astype(np.float32)
    stack.write(out / "stack.fits", overwrite=True)
    times["stack"] = time.perf_counter() - t0
    for p in out.glob("*_0*.fits"):
        p.unlink()
    return {"stages": times, "failed_registration": failed, "stack": str(out / "stack.fits")}


if __name__ == "__main__":
    result = main(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps(result))
