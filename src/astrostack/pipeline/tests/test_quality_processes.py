"""The quality stage in worker processes gives exactly what it gives on threads: every
figure, the registration's stars (so the transforms and the stack), a bad frame's reason
and the progress events; and only large sessions take that path."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

from astrostack.pipeline import run
from astrostack.pipeline.stages import QualityJob, quality_in_processes
from astrostack.simulate import SessionConfig, simulate_session
from astrostack.tests.nights import stack_data

run_module = sys.modules["astrostack.pipeline.run"]  # (the package exports the function)


def _job(pixels: int) -> QualityJob:
    return QualityJob(key="k", cal_path=Path("x.npy"), name="x", bayer=None, pixel_scale=None,
                      threshold=5.0, max_stars=300, pixels=pixels)  # fmt: skip


def test_only_large_sessions_take_processes():
    assert not quality_in_processes([_job(600 * 800)] * 12, 2)  # the demo
    assert not quality_in_processes([_job(24_000_000)] * 3, 2)  # a few frames: threads
    assert quality_in_processes([_job(24_000_000)] * 50, 2)  # the 24 MP session
    assert not quality_in_processes([_job(24_000_000)] * 50, 1)  # one worker: serial
    assert not quality_in_processes([_job(200_000_000)], 2)  # one frame


def test_quality_in_processes_equals_threads(tmp_path, monkeypatch):
    frames = tmp_path / "night"
    simulate_session(frames, SessionConfig.small(n_lights=6, seed=5))
    out = tmp_path / "out"
    first = run(frames, out)
    assert first.exit_code == 0, (first.skipped, first.warnings)
    # A calibrated frame of the right size but garbage bytes: the calibration is reused
    # from the cache, its quality measurement fails (in the worker, on that path).
    victim = first.groups[0].frames[2]
    victim.cal_path.write_bytes(b"\0" * victim.cal_path.stat().st_size)

    real_map = run_module.map_frames
    got = {}
    for mode in ("threads", "processes"):
        for stage in ("quality", "registration", "registered", "stackstats"):
            shutil.rmtree(out / "cache" / stage, ignore_errors=True)
        taken = []

        def spy(fn, items, workers=2, *, processes=False, _taken=taken):
            _taken.append(processes)
            return real_map(fn, items, workers, processes=processes)

        monkeypatch.setattr(run_module, "map_frames", spy)
        monkeypatch.setattr(run_module, "quality_in_processes",
                            lambda jobs, workers, _mode=mode: _mode == "processes")  # fmt: skip
        events = []
        res = run(frames, out, progress=events.append)
        if (os.cpu_count() or 1) > 1:
            assert (True in taken) == (mode == "processes")
        got[mode] = (res, [(e.kind, e.done, e.message) for e in events if e.stage == "quality"],
                     stack_data(out / "stack.fits"))  # fmt: skip

    (threads, t_events, t_stack), (procs, p_events, p_stack) = got["threads"], got["processes"]
    assert threads.skipped == procs.skipped
    assert "quality measurement failed" in procs.skipped[victim.name]
    assert procs.quality == threads.quality
    measured = [q for q in procs.quality["L"] if q.get("n_stars")]
    assert len(measured) == 5 and all(q["fwhm"] > 1.0 for q in measured)
    assert p_events == t_events
    t_frames, p_frames = threads.groups[0].frames, procs.groups[0].frames
    assert [f.used for f in p_frames] == [f.used for f in t_frames]
    for a, b in zip(t_frames, p_frames, strict=True):
        if a.used:
            assert np.array_equal(a.registration["matrix"], b.registration["matrix"])
    assert p_stack == t_stack
