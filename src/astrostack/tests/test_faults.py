"""Faults around a run: full disk, unwritable output, read-only input, odd paths, SIGKILL, lost
Dask worker.

Every test checks the same three promises: no file under a final output name is ever
half-written (all FITS/JSON/NPY/PNG under ``out/`` open), the user gets a clear one-line
error (no traceback), and input files are never changed (sha256 before/after).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astrostack.tests.nights import stack_data, tiny_night

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

_CLI = "import sys; from astrostack.cli import main; sys.argv[0] = 'astrostack'; main()"

_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from astrostack.cli import main
sys.argv[0] = 'astrostack'
main()
"""


def cli(*args: str | Path, env: dict | None = None, timeout: float = 300):
    """``astrostack ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", _CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under *folder* (links and folders by name only)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[p.relative_to(folder).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def check_outputs_complete(out: Path) -> list[str]:
    """Open every file under a final name in *out*; return the problems found."""
    problems = []
    for p in sorted(out.rglob("*")):
        if not p.is_file() or p.name.startswith(".tmp-"):
            continue
        try:
            if p.suffix == ".fits":
                with fits.open(p, memmap=False) as hdul:
                    for hdu in hdul:
                        _ = hdu.data
                    hdul.verify("exception")
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".npy":
                np.load(p)
            elif p.suffix == ".png":
                from PIL import Image

                with Image.open(p) as im:
                    im.load()
            elif p.suffix == ".tif":
                import tifffile

                tifffile.imread(p)
        except Exception as exc:
            problems.append(f"{p.relative_to(out)}: {type(exc).__name__}: {exc}")
    return problems


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """A tiny simulated night and an uninterrupted reference run of it."""
    from astrostack.pipeline import run

    root = tmp_path_factory.mktemp("faults")
    frames = tiny_night(root)
    t0 = time.perf_counter()
    ref = run(frames, root / "reference")
    seconds = time.perf_counter() - t0
    assert ref.exit_code == 0
    return {
        "frames": frames,
        "root": root,
        "stack": stack_data(root / "reference" / "stack.fits"),
        "seconds": seconds,
        "digests": digests(frames),
    }


# ---------------------------------------------------------------------------------------
# Mount helpers (root only): a tiny tmpfs, a read-only bind mount
# ---------------------------------------------------------------------------------------


def _mount(*args: str) -> bool:
    proc = subprocess.run(["mount", *args], capture_output=True, check=False)
    return proc.returncode == 0


def _umount(target: Path) -> None:
    subprocess.run(["umount", str(target)], capture_output=True, check=False)


@contextlib.contextmanager
def readonly_view(folder: Path, view: Path) -> Iterator[Path]:
    """*folder* seen read-only at *view*: a read-only bind mount (root) or chmod a-w."""
    if AS_ROOT:
        view.mkdir(parents=True)
        if not _mount("--bind", str(folder), str(view)):
            pytest.skip("running as root and cannot bind-mount: no way to make a read-only folder")
        try:
            if not _mount("-o", "remount,bind,ro", str(view)):
                pytest.skip("cannot remount the bind mount read-only")
            yield view
        finally:
            _umount(view)
        return
    shutil.copytree(folder, view)
    modes = {p: p.stat().st_mode for p in [view, *view.rglob("*")]}
    for p in modes:
        p.chmod(modes[p] & ~0o222)
    try:
        yield view
    finally:
        for p, m in modes.items():
            p.chmod(m)


# ---------------------------------------------------------------------------------------
# Disk full
# ---------------------------------------------------------------------------------------


def test_disk_full_while_writing_outputs(night, tmp_path):
    """The cache is complete, then the outputs hit a file-size limit (EFBIG, like ENOSPC)."""
    frames = night["frames"]
    out = tmp_path / "out"
    shutil.copytree(night["root"] / "reference", out)
    for name in ("stack.fits", "stack.tif", "preview.png", "report.html", "session.json"):
        (out / name).unlink()
    shutil.rmtree(out / "maps")
    limit = 40_000  # stack.fits is 72 kB, cache files are only read
    proc = subprocess.run(
        [sys.executable, "-c", _LIMITED, str(limit), "run", str(frames), "-o", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    # a clear error saying what happened
    assert "File too large" in proc.stderr or "No space" in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("astrostack: "), proc.stderr[-2000:]
    # nothing half-written under a final name, no temporary left behind
    assert not (out / "stack.fits").exists()
    assert check_outputs_complete(out) == []
    assert not list(out.rglob(".tmp-*"))
    assert digests(frames) == night["digests"]


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str = "200k") -> Iterator[Path]:
    """A tiny tmpfs mounted on *folder* (root only; skips otherwise)."""
    if not AS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir()
    if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)):
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        _umount(folder)


@pytest.fixture(scope="module")
def tmpfs_run(night, tmp_path_factory):
    """``astrostack run`` with its output on a 200 kB tmpfs: real ENOSPC, in the cache."""
    with small_tmpfs(tmp_path_factory.mktemp("enospc") / "small") as out:
        proc = cli("run", night["frames"], "-o", out / "o", "-q")
        problems = check_outputs_complete(out)
        leftovers = list(out.rglob(".tmp-*"))
    return proc, problems, leftovers


def test_disk_full_tmpfs(night, tmpfs_run):
    proc, problems, leftovers = tmpfs_run
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("astrostack: ")
    assert problems == []
    assert leftovers == []
    assert digests(night["frames"]) == night["digests"]


def test_disk_full_message_says_so(tmpfs_run):
    proc = tmpfs_run[0]
    last = proc.stderr.strip().splitlines()[-1]
    assert re.search(r"no space left|disk (is )?full", last, re.IGNORECASE), last
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------
# Permissions
# ---------------------------------------------------------------------------------------


def test_output_folder_not_writable(night, tmp_path):
    """An output folder that cannot be written: exit 2 with one line naming it."""
    out = tmp_path / "locked"
    out.mkdir()
    if AS_ROOT:
        if not _mount("-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(out)):
            pytest.skip("running as root (chmod does not stop root) and cannot mount read-only")
    else:
        out.chmod(0o500)
    try:
        proc = cli("run", night["frames"], "-o", out, "-q")
    finally:
        if AS_ROOT:
            _umount(out)
        else:
            out.chmod(0o700)
    assert proc.returncode in (1, 2), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert str(out) in proc.stderr
    assert digests(night["frames"]) == night["digests"]


def test_read_only_input_folder(night, tmp_path):
    """Inputs on a read-only folder: the run works (outputs elsewhere), same stack."""
    with readonly_view(night["frames"], tmp_path / "ro") as ro:
        with pytest.raises(OSError):
            (ro / "probe").write_text("x")
        proc = cli("run", ro, "-o", tmp_path / "out", "-q")
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert stack_data(tmp_path / "out" / "stack.fits") == night["stack"]
    assert digests(night["frames"]) == night["digests"]


def test_read_only_input_default_output_refused_cleanly(night, tmp_path):
    """Without -o the output goes inside the (read-only) input: one clear line, exit 1/2."""
    with readonly_view(night["frames"], tmp_path / "ro") as ro:
        proc = cli("run", ro, "-q")
    assert proc.returncode in (1, 2), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "astrostack-output" in proc.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------


def test_paths_with_spaces(night, tmp_path):
    from astrostack.pipeline import run

    src = tmp_path / "my night" / "frames here"
    shutil.copytree(night["frames"], src)
    assert run(src, tmp_path / "out put" / "run 1").exit_code == 0
    assert stack_data(tmp_path / "out put" / "run 1" / "stack.fits") == night["stack"]


def test_paths_with_non_ascii(night, tmp_path):
    src = tmp_path / "nuit étoilée" / "séance 1"
    shutil.copytree(night["frames"], src)
    out = tmp_path / "résultats"
    from astrostack.pipeline import run

    result = run(src, out)
    assert result.exit_code == 0, result.warnings
    assert stack_data(out / "stack.fits") == night["stack"]
    assert "séance 1" in json.loads((out / "session.json").read_text())["input"]


# ---------------------------------------------------------------------------------------
# SIGKILL at random moments
# ---------------------------------------------------------------------------------------

_STAGE_FILES = (
    ("masters", "cache/masters", "*.fits"),
    ("calibrate", "cache/calibrated", "*.npy"),
    ("quality", "cache/quality", "*.json"),
    ("register", "cache/registration", "*.json"),
    ("warp", "cache/registered", "*.npy"),
    ("outputs", ".", "stack.fits"),
    ("report", ".", "report.html"),
)


def _moments(seed: int, n: int, n_lights: int) -> list[tuple[str, str, str, int, float]]:
    """*n* kill moments spread over the stages: (stage, folder, glob, count, extra delay)."""
    rng = random.Random(seed)
    stages = list(_STAGE_FILES)
    rng.shuffle(stages)
    picked = sorted(stages[:n], key=_STAGE_FILES.index)
    out = []
    for stage, folder, pattern in picked:
        count = 1 if folder == "." or stage == "masters" else rng.randint(1, n_lights)
        out.append((stage, folder, pattern, count, rng.uniform(0.0, 0.03)))
    return out


def _kill_when(proc: subprocess.Popen, out: Path, folder: str, pattern: str, count: int,
               delay: float, timeout: float = 120.0) -> bool:  # fmt: skip
    """SIGKILL *proc* once *count* files match; False if it ended first."""
    deadline = time.monotonic() + timeout
    where = out / folder
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if where.is_dir() and len(list(where.glob(pattern))) >= count:
            time.sleep(delay)
            if proc.poll() is not None:
                return False
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return True
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return True


def test_sigkill_at_random_moments_then_resume(night, tmp_path):
    from astrostack.pipeline import run

    frames = night["frames"]
    n_lights = len(list((frames / "lights").glob("*.fits")))
    moments = _moments(seed=20261124, n=5, n_lights=n_lights)
    killed = []
    for i, (stage, folder, pattern, count, delay) in enumerate(moments):
        out = tmp_path / f"kill{i}"
        proc = subprocess.Popen(
            [sys.executable, "-c", _CLI, "run", str(frames), "-o", str(out), "-q"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        was_killed = _kill_when(proc, out, folder, pattern, count, delay)
        if was_killed:
            killed.append(stage)
            assert proc.returncode == -signal.SIGKILL
        # Whatever the moment: no corrupt file under a final name.
        assert check_outputs_complete(out) == [], stage
        # Re-run to completion: the same stack, byte for byte.
        result = run(frames, out)
        assert result.exit_code == 0, (stage, result.warnings, result.skipped)
        assert stack_data(out / "stack.fits") == night["stack"], stage
        assert check_outputs_complete(out) == [], stage
        assert not list((out / "cache").rglob(".tmp-*")), stage
    assert len(killed) >= 5, f"killed in {killed} of {[m[0] for m in moments]}"
    assert digests(frames) == night["digests"]


def test_resume_removes_stale_temporaries(night, tmp_path):
    from astrostack.pipeline import run

    out = tmp_path / "out"
    shutil.copytree(night["root"] / "reference", out)
    stale = [out / ".tmp-stack.fits.k1ll3d", out / "maps" / ".tmp-stack_coverage.fits.k1ll3d"]
    for p in stale:
        p.write_bytes(b"SIMPLE  =" + bytes(100))  # what a SIGKILL mid-write leaves
    assert run(night["frames"], out).exit_code == 0
    assert [p for p in stale if p.exists()] == []


# ---------------------------------------------------------------------------------------
# A Dask worker lost mid-stack
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "victim",
    ["other", "holder"],
)
def test_dask_worker_killed_mid_stack(tmp_path, victim):
    """Kill a worker process mid-stack: the stack completes, bit-identical to threads."""
    distributed = pytest.importorskip("distributed")
    from astrostack.combine.engine import combine_sources
    from astrostack.combine.sources import NpySource

    rng = np.random.default_rng(3)
    sources = []
    for i in range(6):
        data = rng.normal(500, 10, (64, 48)).astype(np.float32)
        data[rng.integers(0, 64, 15), rng.integers(0, 48, 15)] += 5000
        np.save(tmp_path / f"f{i}.npy", data)
        sources.append(NpySource(tmp_path / f"f{i}.npy"))
    kw = {"method": "winsorized", "memory_limit": "20MB", "band_rows": 2}
    expected = combine_sources(sources, scheduler="threads", **kw)
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as monitor,
    ):
        pids = monitor.run(os.getpid)  # {worker address: pid}
        state = {"killed": None}

        def progress(done: int, total: int) -> None:
            if done < total // 3 or state["killed"]:
                return
            holders = {
                addr
                for addr, keys in monitor.has_what().items()
                if any(not str(k).startswith("_band_task") for k in keys)
            }
            if victim == "holder" and not holders:
                # nothing scattered (sources travel inside each task): the workers holding
                # the sources are those running a band task right now
                holders = {a for a, keys in monitor.processing().items() if keys}
            pick = [a for a in pids if (a in holders) == (victim == "holder")]
            if not pick:
                return
            os.kill(pids[pick[0]], signal.SIGKILL)
            state["killed"] = pick[0]

        got = combine_sources(sources, scheduler=cluster.scheduler_address, progress=progress, **kw)
    assert state["killed"], "no worker was killed"
    for name in ("image", "rejected_low", "rejected_high", "count", "weight"):
        a, b = getattr(expected, name), getattr(got, name)
        differ = np.argwhere((a != b) & ~(np.isnan(a) & np.isnan(b)))
        rows = sorted({int(r) for r in differ[:, 0]})
        assert a.tobytes() == b.tobytes(), f"{name}: {len(differ)} pixels differ, rows {rows}"
