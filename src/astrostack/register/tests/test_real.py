"""Registration of real frames from ../shared/data/real (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from astrostack.io import read_frame
from astrostack.register import (
    Reference,
    luminance,
    measure_quality,
    phase_shift,
    register_frame,
)

REAL = Path(__file__).resolve().parents[4] / ".." / "shared" / "data" / "real"
OSCAAR = REAL / "oscaar-tres1-st10"
SEESTAR = REAL / "seestar-s50-m94"


@pytest.fixture(scope="module")
def oscaar_lights():
    if not OSCAAR.is_dir():
        pytest.skip(f"{OSCAAR} not present")
    darks = sorted(OSCAAR.glob("tres1-0??d.fit"))
    lights = sorted(OSCAAR.glob("tres1-0??.fit"))
    if len(darks) != 20 or len(lights) != 30:
        pytest.skip(f"{OSCAAR}: expected 20 darks and 30 lights")
    master_dark = np.median(np.stack([read_frame(p).data for p in darks]), axis=0)
    return {p.stem: read_frame(p).data - master_dark for p in lights}


def test_oscaar_all_lights_register(oscaar_lights):
    ref = Reference.from_image(oscaar_lights["tres1-020"], saturation=55000.0)
    regs = {k: register_frame(v, ref, saturation=55000.0, name=k) for k, v in oscaar_lights.items()}
    failed = {k: r.reason for k, r in regs.items() if not r}
    assert not failed
    rms = np.array([r.rms for r in regs.values()])
    assert rms.max() < 0.15, f"worst residual centroid RMS {rms.max():.3f} px"
    assert min(r.n_matches for r in regs.values()) >= 40
    known = {"tres1-021": (0.0, 1.2), "tres1-030": (-3.4, 10.1), "tres1-040": (-8.8, 20.3),
             "tres1-049": (-14.7, 29.4)}  # fmt: skip
    for name, (dx, dy) in known.items():
        m = regs[name].matrix
        assert m[0, 2] == pytest.approx(dx, abs=0.15), name
        assert m[1, 2] == pytest.approx(dy, abs=0.15), name
        assert abs(regs[name].details["rotation_deg"]) < 0.02
    q = measure_quality(oscaar_lights["tres1-020"], "tres1-020", saturation=55000.0)
    # Moffat fits give FWHM ~2.0 px (the stars are undersampled; HFD ~2.5 px)
    assert 1.7 < q.fwhm < 2.4 and 2.2 < q.hfd < 2.8 and q.n_stars > 100


@pytest.fixture(scope="module")
def seestar_frames():
    files = sorted(SEESTAR.glob("*/*.fit")) if SEESTAR.is_dir() else []
    if len(files) != 15:
        pytest.skip(f"{SEESTAR}: 15 Seestar lights not present")
    return files


def test_seestar_all_register_on_binned_luminance(seestar_frames):
    # 2x2 CFA superpixels (960 x 540); residuals are in superpixels (1 = 2 native px)
    frames = [read_frame(p) for p in seestar_frames]
    assert frames[0].meta.bayer == "GRBG"
    lum = [luminance(f.data, f.meta.bayer, mode="bin") for f in frames]
    ref = Reference.from_image(lum[0], threshold=3.0)
    regs = [register_frame(img, ref, threshold=3.0, name=p.name)
            for p, img in zip(seestar_frames, lum, strict=True)]  # fmt: skip
    failed = [r.reason for r in regs if not r]
    assert not failed
    rms = np.array([r.rms for r in regs[1:]])
    assert rms.max() < 0.3, f"worst residual centroid RMS {rms.max():.3f} superpixel"
    groups = [p.parent.name for p in seestar_frames]
    for g, r in zip(groups, regs, strict=True):
        rot = r.details["rotation_deg"]
        if g == "3":  # another unit, another night: rotated ~69.4 deg, partial overlap
            assert rot == pytest.approx(69.4, abs=0.3)
            assert r.details["scale"] == pytest.approx(0.998, abs=0.003)
            assert r.n_matches >= 10
        else:
            assert abs(rot) < 0.5
            assert not r.details["mirror"]
    dx, dy = regs[seestar_frames.index(next(p for p in seestar_frames if "225435" in p.name))
                  ].matrix[:2, 2]  # fmt: skip
    assert dx == pytest.approx(662, abs=3) and dy == pytest.approx(72, abs=3)


def test_oscaar_phase_correlation_ignores_hot_pixels():
    # raw frames (no dark subtracted): the clipped, background-subtracted, windowed
    # correlation still finds the drift instead of locking onto the hot-pixel pattern
    a, b = OSCAAR / "tres1-020.fit", OSCAAR / "tres1-049.fit"
    if not (a.exists() and b.exists()):
        pytest.skip(f"{OSCAAR} not present")
    res = phase_shift(read_frame(b).data, read_frame(a).data)
    assert res is not None
    assert res.dx == pytest.approx(-14.76, abs=0.15)
    assert res.dy == pytest.approx(29.34, abs=0.15)
