"""Per-frame stages on threads or processes: input order, errors handed back, frames in
flight bounded, the first item alone on the calling thread, results identical to a serial
run; worker processes never re-run the caller's script, and a dead worker is survived."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
from numba import njit, prange

from astrostack.pipeline.parallel import default_workers, map_frames, threads_safe


@njit(parallel=True, nogil=True, cache=False)
def _row_sums(a):  # pragma: no cover - compiled
    out = np.zeros(a.shape[0])
    for i in prange(a.shape[0]):
        s = 0.0
        for j in range(a.shape[1]):
            s += a[i, j] * a[i, j]
        out[i] = s
    return out


class _Probe:
    """Records how many calls run at once and on which threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.threads: dict[int, int] = {}

    def __call__(self, item: int) -> float:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.threads[item] = threading.get_ident()
        try:
            rng = np.random.default_rng(item)
            a = rng.normal(size=(200, 300))
            time.sleep(0.01 * (item % 3))  # uneven durations: completion order != input order
            if item == 5:
                msg = f"frame {item} is bad"
                raise ValueError(msg)
            return float(_row_sums(a).sum())
        finally:
            with self.lock:
                self.active -= 1


def test_order_errors_and_bound():
    _row_sums(np.ones((4, 4)))  # start numba's threading layer
    probe = _Probe()
    items = list(range(12))
    out = list(map_frames(probe, items, workers=2))
    assert [item for item, _, _ in out] == items
    errors = {item: err for item, _, err in out if err is not None}
    assert list(errors) == [5] and isinstance(errors[5], ValueError)
    assert "frame 5" in str(errors[5])
    serial = [probe(i) if i != 5 else None for i in items if i != 5]
    assert [r for item, r, _ in out if item != 5] == serial  # bit-identical results
    assert probe.peak <= 2
    assert probe.threads[0] == threading.get_ident()  # the first item runs alone, here
    if threads_safe():
        assert probe.peak == 2
        assert any(probe.threads[i] != threading.get_ident() for i in items[1:])


def test_serial_when_one_worker_or_empty():
    probe = _Probe()
    out = list(map_frames(probe, range(4), workers=1))
    assert [r is not None for _, r, _ in out] == [True] * 4
    assert probe.peak == 1
    assert set(probe.threads.values()) == {threading.get_ident()}
    assert list(map_frames(probe, [], workers=2)) == []


def test_default_workers():
    cores = os.cpu_count() or 1
    assert default_workers("synchronous", limit=4) == 1
    assert default_workers("threads", limit=2) == min(2, cores)
    assert default_workers("threads", limit=1) == 1
    assert default_workers("threads", limit=64) == cores


def _square_in_worker(item: int) -> tuple[int, int]:
    """(item squared, pid); item 5 fails."""
    if item == 5:
        msg = f"frame {item} is bad"
        raise ValueError(msg)
    return item * item, os.getpid()


def _dies_in_worker(item: tuple[int, int]) -> int:
    """Kills its worker process at item 3 (never the test's own process)."""
    i, parent = item
    if i == 3 and os.getpid() != parent:
        os._exit(1)
    return i * 10


def test_processes_order_errors_and_workers():
    items = list(range(9))
    out = list(map_frames(_square_in_worker, items, workers=2, processes=True))
    assert [item for item, _, _ in out] == items
    errors = {item: err for item, _, err in out if err is not None}
    assert list(errors) == [5] and isinstance(errors[5], ValueError)
    assert "frame 5" in str(errors[5])
    assert [r[0] for item, r, _ in out if item != 5] == [i * i for i in items if i != 5]
    pids = {item: r[1] for item, r, _ in out if r is not None}
    assert pids[0] == os.getpid()  # the first item runs here while the workers start
    workers = {pid for item, pid in pids.items() if item > 0}
    assert os.getpid() not in workers and 1 <= len(workers) <= 2
    # the same results on threads
    threads = list(map_frames(_square_in_worker, items, workers=2))
    assert [r[0] for _, r, e in threads if e is None] == [r[0] for _, r, e in out if e is None]


def test_processes_survive_a_dead_worker(caplog):
    items = [(i, os.getpid()) for i in range(8)]
    with caplog.at_level("WARNING", logger="astrostack.pipeline.parallel"):
        out = list(map_frames(_dies_in_worker, items, workers=2, processes=True))
    assert [item for item, _, _ in out] == items
    assert [(r, e) for _, r, e in out] == [(i * 10, None) for i in range(8)]
    assert "worker process died" in caplog.text


def test_processes_do_not_rerun_an_unguarded_script(tmp_path):
    """A script calling the pipeline without an ``if __name__ == '__main__'`` guard runs
    once: spawn would otherwise re-run it in every worker."""
    log = tmp_path / "runs.txt"
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(f"""
        import os
        from astrostack.pipeline.parallel import map_frames
        with open({str(log)!r}, "a") as fh:
            fh.write(f"{{os.getpid()}}\\n")
        out = list(map_frames(abs, [-1, -2, -3, -4, -5], workers=2, processes=True))
        print([r for _, r, _ in out], [e for _, _, e in out])
    """)
    )
    src = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, timeout=300, check=False)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[1, 2, 3, 4, 5] [None, None, None, None, None]"
    assert len(log.read_text().split()) == 1, res.stderr
