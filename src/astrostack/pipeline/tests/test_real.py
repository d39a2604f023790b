"""Real one-shot-colour frames (ZWO Seestar S50, GRBG, lights only), read in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astrostack.pipeline import run
from astrostack.register import measure_quality

SHARED = Path(__file__).resolve().parents[4] / ".." / "shared"
SEESTAR = SHARED / "data" / "real" / "seestar-s50-m94" / "1"


def test_seestar_sequence_superpixel(tmp_path):
    if not SEESTAR.is_dir():
        pytest.skip(f"{SEESTAR} not available")
    before = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in SEESTAR.iterdir())
    res = run(SEESTAR, tmp_path / "out", color__mode="superpixel",
              stack__normalization="additive+scale")  # fmt: skip
    assert res.exit_code == 0, (res.skipped, res.warnings)
    (g,) = res.groups
    assert len(g.frames) == 10 and len(g.used) == 10
    for f in g.used:
        reg = f.registration
        assert reg["ok"] and (reg["method"] == "reference" or reg["rms"] < 0.5), reg
    img = fits.getdata(tmp_path / "out" / "stack.fits").astype(np.float32)
    assert img.shape == (3, 960, 540)
    lum = img.mean(axis=0)
    lum = np.where(np.isfinite(lum), lum, np.nanmedian(lum))
    q = measure_quality(lum, "stack")
    # Registration errors would blur the stack: compare with single registered frames
    # (same grid, same interpolation), which carry no registration error of their own.
    singles = []
    for f in [f for f in g.used if f is not g.reference][:3]:
        one = np.load(f.reg_path).mean(axis=0)
        one = np.where(np.isfinite(one), one, np.nanmedian(one))
        singles.append(measure_quality(one, f.name).fwhm)
    frame_fwhm = float(np.median(singles))
    print(f"seestar: stack FWHM {q.fwhm:.3f} vs single registered {singles}")
    assert q.fwhm < 1.1 * frame_fwhm, (q.fwhm, singles)
    frame_noise = np.median([f.quality["noise"] for f in g.used])  # 2x2 luminance
    print(f"seestar: noise {q.noise:.2f} vs frame {frame_noise:.2f}")
    assert q.noise < 0.5 * frame_noise, (q.noise, frame_noise)
    assert q.n_stars > 0.8 * np.median([f.quality["n_stars"] for f in g.used])
    # The input folder is untouched.
    after = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in SEESTAR.iterdir())
    assert after == before
