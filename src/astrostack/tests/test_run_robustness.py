"""Robustness of :func:`astrostack.pipeline.run` (pipeline/run.py): what stops a run, what
only skips a frame, stale temporaries, names of links.

Faults are injected in-process (a write that fails with ENOSPC, a refused write), so these
tests run without root; ``test_faults.py`` does the same with real mounts and limits.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path

import pytest

from astrostack.io.atomic import atomic_path
from astrostack.pipeline import DiskFullError, OutputFolderError, PipelineError, run
from astrostack.tests.nights import stack_data, tiny_night

# ``astrostack.pipeline.run`` is the function; the module holds the helpers under test.
run_module = sys.modules["astrostack.pipeline.run"]
stages = sys.modules["astrostack.pipeline.stages"]


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """A tiny simulated night and the stack of an uninterrupted run of it."""
    root = tmp_path_factory.mktemp("robust")
    frames = tiny_night(root)
    ref = run(frames, root / "reference")
    assert ref.exit_code == 0, (ref.warnings, ref.skipped)
    return {"frames": frames, "stack": stack_data(root / "reference" / "stack.fits")}


def _fail_on_call(monkeypatch, n_fail: int, exc_factory):
    """Make the *n_fail*-th calibrated-frame write fail with ``exc_factory()`` mid-write."""
    real = stages.save_npy
    calls = {"n": 0}

    def save_npy(path, array):
        calls["n"] += 1
        if calls["n"] != n_fail:
            return real(path, array)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(b"\x93NUMPY")  # the header got out, then the disk was full
            raise exc_factory()
        return path  # pragma: no cover

    monkeypatch.setattr(stages, "save_npy", save_npy)
    return calls


def _listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*"))


def test_disk_full_stops_at_once_and_the_rerun_resumes(night, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = _fail_on_call(monkeypatch, 2, lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.raises(DiskFullError) as info:
        run(night["frames"], out)
    msg = str(info.value)
    # one line naming the file (its final name, not the temporary) and what to do
    assert "\n" not in msg
    assert msg.startswith(f"disk full while writing {out / 'cache' / 'calibrated'}")
    assert ".tmp-" not in msg and msg.split()[4].endswith(".npy"), msg
    assert "No space left on device" in msg and "free space and re-run" in msg
    assert isinstance(info.value, PipelineError)
    # the run stopped in the calibrate stage: nothing measured, nothing stacked
    assert not (out / "cache" / "quality").exists() or not list(
        (out / "cache" / "quality").iterdir()
    )
    assert not (out / "stack.fits").exists()
    # frames in flight have finished when run() raises: nothing is written afterwards
    before = _listing(out)
    time.sleep(0.3)
    assert _listing(out) == before
    assert not list(out.rglob(".tmp-*"))
    done = len(list((out / "cache" / "calibrated").glob("*.json")))
    assert 1 <= done <= 3 and calls["n"] <= 4
    # the complete entries are valid: the re-run resumes from them
    monkeypatch.undo()
    result = run(night["frames"], out)
    assert result.exit_code == 0
    assert (result.stage("calibrate").reused, result.stage("calibrate").computed) == (
        done,
        4 - done,
    )
    assert result.stage("masters").reused == 3
    assert stack_data(out / "stack.fits") == night["stack"]


def test_short_write_without_errno_is_a_full_disk(night, tmp_path, monkeypatch):
    """numpy reports a short write as ``OSError('N requested and M written')``, no errno."""
    out = tmp_path / "out"
    _fail_on_call(monkeypatch, 1, lambda: OSError("12288 requested and 4064 written"))
    with pytest.raises(DiskFullError, match=r"4064 of 12288 bytes written") as info:
        run(night["frames"], out)
    assert "No space left" in str(info.value)
    assert str(out / "cache" / "calibrated") in str(info.value)


def test_refused_write_in_output_stops_the_run(night, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def refuse():
        target = out / "cache" / "calibrated" / "x.npy"
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))

    _fail_on_call(monkeypatch, 2, refuse)
    with pytest.raises(OutputFolderError) as info:
        run(night["frames"], out)
    assert str(info.value).startswith(f"cannot write the output folder {out} (Permission denied")


def test_unreadable_input_frame_is_only_skipped(night, tmp_path, monkeypatch):
    """A refused read of one light (outside the output folder) skips that light only."""
    real = stages.read_frame
    victim = sorted((night["frames"] / "lights").glob("*.fits"))[1]

    def read_frame(path):
        if Path(path) == victim:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path)

    monkeypatch.setattr(stages, "read_frame", read_frame)
    result = run(night["frames"], tmp_path / "out")
    assert result.exit_code == 3
    assert list(result.skipped) == [f"lights/{victim.name}"]
    assert "Permission denied" in result.skipped[f"lights/{victim.name}"]
    assert sum(len(g.used) for g in result.groups) == 3


def test_only_our_stale_temporaries_are_removed(tmp_path):
    out = tmp_path / "out"
    (out / "maps").mkdir(parents=True)
    (out / "notes").mkdir()
    ours = [out / ".tmp-stack.fits.k1ll3d", out / "maps" / ".tmp-stack_weight.fits.ab_12cd9"]
    theirs = [
        out / ".tmpfile",  # not .tmp-<name>.<random>
        out / ".tmp-nodot",
        out / "stack.fits.tmp-x.y",
        out / "notes" / ".tmp-a.b",  # not our folder
        out / "stack.fits",
    ]
    for p in ours + theirs:
        p.write_bytes(b"x")
    (out / "maps" / ".tmp-dir.xyz").mkdir()  # a folder: never ours
    link = out / ".tmp-link.fits.zz"
    link.symlink_to(out / "stack.fits")
    assert run_module._remove_stale_temporaries(out) == 2
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in theirs)
    assert (out / "maps" / ".tmp-dir.xyz").is_dir() and link.is_symlink()


def test_link_names_are_their_own(tmp_path):
    folder = tmp_path / "night"
    (folder / "lights").mkdir(parents=True)
    loop = folder / "lights" / "light_loop.fits"
    loop.symlink_to(loop.name)
    dangling = folder / "lights" / "light_gone.fits"
    dangling.symlink_to(tmp_path / "elsewhere" / "frame.fits")
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "frame.fits"
    real.write_bytes(b"x")
    good = folder / "lights" / "light_link.fits"
    good.symlink_to(real)
    assert run_module._rel_name(loop, folder) == "lights/light_loop.fits"
    assert run_module._rel_name(dangling, folder) == "lights/light_gone.fits"
    assert run_module._rel_name(good, folder) == "lights/light_link.fits"
    assert not run_module._inside(loop, tmp_path / "out")
    assert run_module._inside(good, tmp_path / "store")  # the file it points to is there
    assert run_module._inside(good, folder)
    # the input folder reached through a link to it
    alias = tmp_path / "alias"
    alias.symlink_to(folder)
    assert run_module._rel_name(alias / "lights" / "light_loop.fits", folder) == (
        "lights/light_loop.fits"
    )


def test_mono_and_rgb_of_one_size_are_separate_groups(tmp_path):
    from astrostack.io import FrameMeta

    mono = FrameMeta(path=tmp_path / "a.fits", shape=(64, 80))
    rgb = FrameMeta(path=tmp_path / "b.tif", shape=(3, 64, 80))
    assert run_module._group_key(mono) != run_module._group_key(rgb)
    assert run_module._group_key(mono)[3] == (64, 80)
    assert run_module._group_key(rgb)[3] == (3, 64, 80)
