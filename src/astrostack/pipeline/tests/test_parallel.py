"""Per-frame stages on threads: input order, errors handed back, frames in flight bounded,
the first item alone on the calling thread, results identical to a serial run."""

from __future__ import annotations

import os
import threading
import time

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
