"""The HTML report is one self-contained file with the frame table, plots and maps."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from astrostack.report import FrameRow, GroupReport, ReportData, png_bytes, preview_image
from astrostack.report.html import write_report


def _data() -> ReportData:
    rng = np.random.default_rng(3)
    t0 = datetime(2026, 3, 14, 20, 0, 0)
    rows = []
    for i in range(10):
        thumb = png_bytes(preview_image(rng.normal(100, 5, (40, 60)).astype(np.float32)))
        used = i not in (2, 7)
        rows.append(
            FrameRow(
                name=f"light_{i:03d}.fits",
                date=t0 + timedelta(minutes=2 * i),
                fwhm=3.0 + 0.1 * i,
                roundness=0.9,
                n_stars=400 - i,
                background=1000.0 + i,
                noise=12.0,
                weight=1.0 if used else 0.0,
                used=used,
                reason=""
                if used
                else (
                    "clouds: 90 stars vs median 400"
                    if i == 2
                    else "trailing: eccentricity 0.72 vs median 0.18"
                ),
                thumbnail=thumb,
            )
        )
    cov = np.full((64, 80), 8.0)
    cov[:, :6] = 5
    group = GroupReport(
        name="L",
        rows=rows,
        preview=png_bytes(preview_image(rng.normal(100, 5, (64, 80)).astype(np.float32))),
        maps={"coverage": cov, "rejected high": rng.poisson(0.3, (64, 80)).astype(float)},
        outputs={"FITS": "stack.fits"},
        info={"reference": "light_004.fits", "method": "sigma"},
    )
    return ReportData(
        title="astrostack test",
        input_dir="/in",
        output_dir="/out",
        groups=[group],
        parameters={"stack": {"method": "sigma", "sigma_low": 3.0, "weird <&>": "x"}},
        stages=[
            {"name": "calibrate", "seconds": 1.5, "peak_mb": 300.0, "computed": 10, "reused": 0}
        ],
        skipped={"bad.fits": "truncated FITS; re-copy the file"},
        notes=["light-1: no flats: lights not flat-fielded"],
        version="0.1.0",
    )


def test_report_is_self_contained(tmp_path):
    path = write_report(tmp_path / "report.html", _data())
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    # No external resources of any kind.
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I)
    assert "<link" not in text and "<script" not in text
    srcs = re.findall(r'src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    # Table: every frame, with its status and reasons.
    for i in range(10):
        assert f"light_{i:03d}.fits" in text
    assert text.count("<tr class='used'>") == 8
    assert text.count("<tr class='excluded'>") == 2
    assert "clouds: 90 stars vs median 400" in text and "trailing: eccentricity" in text
    # 10 thumbnails + preview + metrics plot + 2 maps, all decodable PNGs.
    assert len(srcs) == 14
    sizes = []
    for s in srcs:
        with Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))) as im:
            sizes.append(im.size)
    assert max(w for w, _ in sizes) > 400  # the plots are real figures, not 1-px stubs
    assert "Metrics over time" in text and "Rejection and coverage" in text
    assert "calibrate" in text and "peak memory" in text
    assert "weird &lt;&amp;&gt;" in text  # escaped
    assert "bad.fits" in text
    assert "<h2>Calibration</h2>" in text and "lights not flat-fielded" in text
    assert not list(tmp_path.glob(".tmp-*"))


def _chromium() -> str | None:
    for name in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(name).exists():
            return name
    return shutil.which("chromium")


def test_report_renders_in_headless_chromium(tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not installed")
    html_path = write_report(tmp_path / "report.html", _data())
    shot = tmp_path / "shot.png"
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        html_path.as_uri(),
    ]
    subprocess.run(cmd, check=False, capture_output=True, timeout=60)
    assert shot.exists(), "chromium produced no screenshot"
    with Image.open(shot) as im:
        px = np.asarray(im.convert("L"), dtype=np.float32)
    assert px.std() > 10.0  # text, table and images, not a blank page
    assert len(np.unique(px)) > 50


def test_plots_draw_used_and_excluded_frames_without_matplotlib():
    import sys

    from astrostack.report.plots import colormap_lut, image_map_png, metrics_plot_png, nice_ticks

    def colours(png: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(png)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.int16).reshape(-1, 3)

    def count(px: np.ndarray, rgb: tuple[int, int, int]) -> int:
        return int(np.sum(np.abs(px - np.asarray(rgb)).max(axis=1) <= 12))

    x = np.arange(12.0)
    metrics = {"fwhm": 3 + 0.1 * np.sin(x), "n_stars": 400 - x, "noise": np.full(12, np.nan)}
    used = np.ones(12, bool)
    all_used = colours(metrics_plot_png(x, metrics, used))
    used[[3, 8]] = False
    some_excluded = colours(metrics_plot_png(x, metrics, used))
    blue, red = (31, 119, 180), (214, 39, 40)
    assert count(all_used, red) == 0 and count(all_used, blue) > 200
    assert count(some_excluded, red) > 40  # 2 crosses x 2 panels + the legend
    assert count(some_excluded, blue) < count(all_used, blue)
    # The colour maps are matplotlib's: exact end points, monotonic lightness.
    lut = colormap_lut("viridis")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert tuple(lut[0]) == (0x44, 0x01, 0x54) and tuple(lut[-1]) == (0xFD, 0xE7, 0x25)
    assert np.all(np.diff(lut.astype(float) @ [0.299, 0.587, 0.114]) > -1.0)
    with pytest.raises(ValueError, match="colour map"):
        colormap_lut("no-such-map")
    ticks, decimals = nice_ticks(0.13, 0.92)
    np.testing.assert_allclose(ticks, [0.2, 0.4, 0.6, 0.8])
    assert decimals == 1
    ticks, decimals = nice_ticks(997.2, 1012.0)
    np.testing.assert_allclose(ticks, [1000.0, 1005.0, 1010.0])
    assert decimals == 0
    # A map with its colour bar: the high end of the bar is yellow, NaN is white.
    m = np.zeros((40, 60))
    m[:, 30:] = 5.0
    m[0, 0] = np.nan
    px = colours(image_map_png(m, "coverage", label="frames"))
    assert count(px, (0xFD, 0xE7, 0x25)) > 1000 and count(px, (0x44, 0x01, 0x54)) > 1000
    # Importing the report (as every run does) does not import matplotlib (~0.3 s).
    code = "import sys, astrostack.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
