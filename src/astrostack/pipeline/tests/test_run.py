"""End-to-end runs on small simulated sessions: truth, exclusions, reuse, kill and resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astrostack.pipeline import PipelineError, run
from astrostack.pipeline.truthcheck import compare_to_truth
from astrostack.simulate import SessionConfig, load_truth, simulate_session

BAD = {"clouds": 1, "trailing": 1}


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """A small night with one cloudy and one trailed light, processed once."""
    root = tmp_path_factory.mktemp("night")
    frames = root / "frames"
    cfg = SessionConfig.small(n_lights=10, exposure=120.0, bad_frames=BAD, seed=7)
    simulate_session(frames, cfg)
    events = []
    result = run(frames, root / "out", progress=events.append)
    result.events = events
    return frames, root, result


def _stack_bytes(path: Path) -> bytes:
    return np.ascontiguousarray(fits.getdata(path)).tobytes()


def test_end_to_end_matches_truth(night):
    frames, root, result = night
    out = root / "out"
    assert result.exit_code == 0, (result.skipped, result.warnings)
    for name in ("stack.fits", "stack.tif", "preview.png", "report.html", "session.json"):
        assert (out / name).is_file(), name
    assert (out / ".astrostack-output").is_file()
    (g,) = result.groups
    truth = load_truth(frames)
    bad_files = {Path(t.file).name: t.bad for t in truth.lights if t.bad}
    assert len(bad_files) == 2
    # Exactly the spoiled lights are excluded, each with the right reason.
    excluded = {Path(f.name).name: f.reason for f in g.frames if not f.used}
    assert set(excluded) == set(bad_files)
    for name, kind in bad_files.items():
        assert kind in excluded[name], (name, excluded[name])
    assert len(g.used) == 8 and all(f.weight and f.weight > 0 for f in g.used)
    # The stack reproduces the true sky.
    with fits.open(out / "stack.fits") as hdul:
        data = hdul[0].data
        hdr = hdul[0].header
    assert data.dtype == np.dtype(">f4") and data.shape == (256, 256)
    assert hdr["NCOMBINE"] == 8 and hdr["ASNUSED"] == 8 and hdr["ASNLIGHT"] == 10
    assert hdr["ASREF"] == g.reference.name
    history = "\n".join(str(h) for h in hdr["HISTORY"])
    assert "excluded" in history and "master flat" in history and "config [stack]" in history
    cov = fits.getdata(out / "maps" / "stack_coverage.fits")
    fwhm = float(np.median([f.quality["fwhm"] for f in g.used]))
    cmp = compare_to_truth(data, truth, g.reference.name, coverage=cov, fwhm=fwhm)
    print(f"e2e: correlation {cmp.correlation:.4f}, SNR {cmp.snr:.2f}, excluded {excluded}")
    assert cmp.correlation > 0.99, cmp
    assert cmp.n_pixels > 0.5 * data.size
    # session.json records the selection and reasons.
    session = json.loads((out / "session.json").read_text())
    sel = session["groups"][0]["selection"]
    assert {Path(k).name for k in sel["excluded"]} == set(bad_files)
    assert session["exit_code"] == 0
    assert [s["name"] for s in session["stages"]][:3] == ["discover", "masters", "calibrate"]
    # The per-frame quality table, one row per light, bad frames marked with their reason.
    with open(out / "quality.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10 and {"fwhm", "n_stars", "noise", "used", "reason"} <= set(rows[0])
    unused = {Path(r["file"]).name for r in rows if r["used"] == "False"}
    assert unused == set(bad_files)
    assert json.loads((out / "quality.json").read_text())[0]["file"] == rows[0]["file"]


def test_reference_is_near_sharpest_and_central_and_transforms_compose(night):
    """One reference for registration and stack: among the frames as sharp as the best
    (stars per PSF area, 5 % band) the one nearest the median pointing; every light's
    transform onto it agrees with the truth (composed when registration went through
    the sharpest frame first)."""
    from astrostack.pipeline.selection import choose_reference

    frames, _root, result = night
    (g,) = result.groups
    assert g.reference is g.best and g.reference in g.used
    rec = g.reference.registration
    assert rec["ok"] and rec["method"] == "reference" and np.allclose(rec["matrix"], np.eye(3))
    truth = {Path(t.file).name: np.asarray(t.matrix, dtype=np.float64)
             for t in load_truth(frames).lights}  # fmt: skip
    h, w = g.reference.meta.shape[-2:]
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float).T
    to_ref = np.linalg.inv(truth[Path(g.reference.name).name])
    for f in g.used:
        expected = to_ref @ truth[Path(f.name).name]
        got = np.asarray(f.registration["matrix"], dtype=np.float64)
        pe, pg = expected @ corners, got @ corners
        err = np.hypot(*(pe[:2] / pe[2] - pg[:2] / pg[2]))
        assert err.max() < 0.15, (f.name, err)
    # the choice, redone with the true pointings
    centre = np.array([(w - 1) / 2, (h - 1) / 2, 1.0])
    pos = {f.name: (truth[Path(f.name).name] @ centre)[:2] for f in g.used}
    median = np.median(np.array(list(pos.values())), axis=0)
    dist = [float(np.hypot(*(pos[f.name] - median))) for f in g.used]
    n = [f.quality["n_stars"] for f in g.used]
    fwhm = [f.quality["fwhm"] for f in g.used]
    want = g.used[choose_reference(n, fwhm, dist)]
    assert dist[g.used.index(g.reference)] <= dist[g.used.index(want)] + 0.5


def test_progress_events_and_stage_log(night):
    result = night[2]
    names = [s.name for s in result.stages]
    assert names == ["discover", "masters", "calibrate", "quality", "select", "register",
                     "warp", "stack", "report"]  # fmt: skip
    for s in result.stages:
        kinds = [e.kind for e in result.events if e.stage == s.name]
        assert kinds[0] == "start" and kinds[-1] == "end", (s.name, kinds)
        assert s.seconds >= 0 and s.peak_mb > 50  # resident memory of this process
    calib = [e for e in result.events if e.stage == "calibrate" and e.kind == "advance"]
    assert [e.done for e in calib] == list(range(1, 11)) and calib[0].total == 10
    assert all(e.message.startswith("lights/") for e in calib)


def test_master_offset_is_the_median_of_the_bias_frames(night):
    frames, root, _ = night
    kinds = {}
    for meta in (root / "out" / "cache" / "masters").glob("*.json"):
        entry = json.loads(meta.read_text())
        kinds[entry["meta"]["kind"]] = meta.with_suffix(".fits")
    assert set(kinds) == {"bias", "dark", "flat"}
    bias = np.stack([fits.getdata(p).astype(np.float32) for p in sorted(frames.glob("bias/*"))])
    master = fits.getdata(kinds["bias"])
    assert fits.getheader(kinds["bias"])["ASMETHOD"] == "median"
    np.testing.assert_allclose(master, np.median(bias, axis=0), rtol=0, atol=1e-3)
    # the other masters keep the rejection (a median dark would not match its header)
    assert fits.getheader(kinds["dark"])["ASMETHOD"] == "winsorized"


def test_rejection_change_reuses_everything_upstream(night):
    frames, root, first = night
    assert first.stage("calibrate").computed == 10 and first.stage("masters").computed == 3
    before = _stack_bytes(root / "out" / "stack.fits")
    again = run(frames, root / "out", stack__method="winsorized", sigma_high=2.5)
    assert again.stage("masters").reused == 3 and again.stage("masters").computed == 0
    assert again.stage("calibrate").reused == 10 and again.stage("calibrate").computed == 0
    assert again.stage("quality").reused == 10 and again.stage("quality").computed == 0
    assert again.stage("register").reused == 8 and again.stage("register").computed == 0
    assert again.stage("warp").reused == 8 and again.stage("warp").computed == 0
    assert again.stage("stack").computed == 1
    hdr = fits.getheader(root / "out" / "stack.fits")
    assert hdr["STKMETH"] == "winsorized" and hdr["SIGHIGH"] == 2.5
    assert _stack_bytes(root / "out" / "stack.fits") != before
    # A registration parameter change redoes registration and warping only.
    third = run(frames, root / "out", interpolation="bicubic")
    assert third.stage("calibrate").reused == 10
    assert third.stage("register").reused == 8
    assert third.stage("warp").computed == 8


_CHILD = """
import sys, time
from astrostack.pipeline import run

def slow(event):
    if event.stage == "warp" and event.kind == "advance" and len(sys.argv) > 3:
        time.sleep(0.6)

run(sys.argv[1], sys.argv[2], progress=slow)
"""


def _stages(out: Path) -> dict[str, dict]:
    session = json.loads((out / "session.json").read_text())
    return {s["name"]: s for s in session["stages"]}


def test_sigkill_during_registration_resumes_identically(night, tmp_path):
    frames = night[0]
    out = tmp_path / "killed"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    cmd = [sys.executable, str(script), str(frames)]
    proc = subprocess.Popen([*cmd, str(out), "slow"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    registered = out / "cache" / "registered"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(registered.glob("*.json"))) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "stack.fits").exists()
    n_done = len(list(registered.glob("*.json")))
    # Resume, and an uninterrupted run for comparison, both in fresh processes like the
    # killed one (so all three use the same compiled kernels).
    for target in (out, tmp_path / "uninterrupted"):
        done = subprocess.run([*cmd, str(target)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    base = tmp_path / "uninterrupted"
    stages = _stages(out)
    assert stages["calibrate"]["reused"] == 10 and stages["calibrate"]["computed"] == 0
    assert stages["warp"]["reused"] >= n_done >= 2
    assert stages["warp"]["computed"] == 8 - stages["warp"]["reused"]
    assert not list((out / "cache").rglob(".tmp-*"))
    assert _stages(base)["warp"]["computed"] == 8
    assert _stack_bytes(out / "stack.fits") == _stack_bytes(base / "stack.fits")


def test_master_sigma_change_keeps_the_median_offset(night):
    # the median offset ignores the rejection's sigmas: changing them rebuilds the
    # dark and the flat only (after the other tests of the night: it changes its output)
    frames, root, _ = night
    again = run(frames, root / "out", master_sigma=2.5)
    assert again.stage("masters").reused == 1 and again.stage("masters").computed == 2
    assert again.stage("calibrate").computed == 10
    hdr = [fits.getheader(p) for p in (root / "out" / "cache" / "masters").glob("*.fits")]
    assert sorted(h["ASMETHOD"] for h in hdr) == ["median"] + ["winsorized"] * 4


def test_nothing_usable_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no frames here")
    with pytest.raises(PipelineError, match="no light frames"):
        run(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        run(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ValueError, match="unknown option"):
        run(tmp_path / "empty", tmp_path / "out", no_such_option=1)
