"""Bayer (CFA) sessions: debayer (RCD) and superpixel modes, registered on luminance."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from astrostack.pipeline import run
from astrostack.pipeline.truthcheck import compare_to_truth
from astrostack.simulate import SessionConfig, load_truth, simulate_session


def test_cfa_debayer_then_superpixel(tmp_path):
    frames = tmp_path / "night"
    cfg = SessionConfig.small(bayer="RGGB", n_lights=6, exposure=120.0, seed=2)
    simulate_session(frames, cfg)
    truth = load_truth(frames)
    out = tmp_path / "out"
    res = run(frames, out)
    assert res.exit_code == 0, (res.skipped, res.warnings)
    (g,) = res.groups
    img = fits.getdata(out / "stack.fits")
    assert img.shape == (3, 256, 256)
    # Calibrated lights stay CFA mosaics; the registered frames are RGB.
    assert np.load(g.used[0].cal_path, mmap_mode="r").shape == (256, 256)
    assert np.load(g.used[0].reg_path, mmap_mode="r").shape == (3, 256, 256)
    fwhm = float(np.median([f.quality["fwhm"] for f in g.used]))
    cov = fits.getdata(out / "maps" / "stack_coverage.fits")
    full = compare_to_truth(img, truth, g.reference.name, coverage=cov, fwhm=fwhm)
    print(f"debayer: correlation {full.correlation:.4f}, slope/QE {np.array(full.slope) / cfg.qe}")
    assert full.correlation > 0.95, full
    # Colour balance follows the sensor: fitted slopes ordered like the simulated QE.
    qe = np.array(cfg.qe)
    ratios = np.array(full.slope) / qe
    assert np.ptp(ratios) / ratios.mean() < 0.15, (full.slope, qe)

    # Superpixel mode: only the warp is redone; the result is half resolution.
    half = run(frames, out, color__mode="superpixel")
    assert half.stage("calibrate").reused == 6 and half.stage("register").reused == 6
    assert half.stage("warp").computed == 6
    img2 = fits.getdata(out / "stack.fits")
    assert img2.shape == (3, 128, 128)
    cov2 = fits.getdata(out / "maps" / "stack_coverage.fits")
    sp = compare_to_truth(img2, truth, g.reference.name, coverage=cov2, superpixel=True,
                          fwhm=fwhm)  # fmt: skip
    print(f"superpixel: correlation {sp.correlation:.4f}")
    assert sp.correlation > 0.95, sp
