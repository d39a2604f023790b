"""Progress reporting and the stage log (time, peak memory, computed vs reused).

The library never draws progress bars: it calls a :class:`ProgressCallback`
(``callback(event)``) and logs.  The CLI turns events into rich progress bars.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

__all__ = ["ProgressCallback", "ProgressEvent", "StageRecord", "StageTimer", "single_blas_thread"]

logger = logging.getLogger(__name__)


@dataclass
class ProgressEvent:
    """One progress update.

    Attributes
    ----------
    stage : str
        Stage name (``'discover'``, ``'masters'``, ``'calibrate'``, ``'quality'``,
        ``'register'``, ``'stack'``, ``'outputs'``).
    kind : str
        ``'start'`` (``total`` known), ``'advance'`` (one more item done), ``'end'``.
    total : int
        Items in the stage (0 when unknown).
    done : int
        Items done so far.
    message : str
        Human-readable detail (current file, "reused", ...).
    """

    stage: str
    kind: str
    total: int = 0
    done: int = 0
    message: str = ""


#: Signature of progress callbacks.
ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class StageRecord:
    """What one stage did: time, peak resident memory, items computed and reused."""

    name: str
    seconds: float = 0.0
    peak_mb: float = 0.0
    computed: int = 0
    reused: int = 0
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


class _PeakSampler(threading.Thread):
    """Samples this process's resident memory (plus children) until stopped."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = 0
        self._stop_event = threading.Event()
        self._proc = psutil.Process()
        self._children: list[psutil.Process] = []

    def _rss(self, refresh: bool = True) -> int:
        """Resident memory of this process and its children.

        Listing the children scans every process of the machine (``/proc``), so the
        list is refreshed only when *refresh* is true; in between the known children's
        memory is read.
        """
        total = self._proc.memory_info().rss
        try:
            if refresh:
                self._children = self._proc.children(recursive=True)
            for child in self._children:
                total += child.memory_info().rss
        except psutil.Error:
            self._children = []
        return total

    def run(self) -> None:
        count = 0
        while True:
            try:
                # children listed every 20th sample (once a second at the default 50 ms)
                self.peak = max(self.peak, self._rss(refresh=count % 20 == 0))
            except psutil.Error:
                pass
            count += 1
            if self._stop_event.wait(self.interval):
                break

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        try:
            self.peak = max(self.peak, self._rss())
        except psutil.Error:
            pass
        return self.peak


class StageTimer:
    """Context manager timing a stage and sampling its peak memory.

    Parameters
    ----------
    name : str
        Stage name.
    log : list of StageRecord
        The record is appended here when the stage ends (also on error).
    callback : ProgressCallback, optional
        Receives ``start`` / ``advance`` / ``end`` events.
    total : int
        Number of items, for the progress bar.
    interval : float
        Memory sampling period in seconds.

    Examples
    --------
    >>> log = []
    >>> with StageTimer("calibrate", log, total=3) as st:
    ...     for i in range(3):
    ...         st.advance(computed=True)
    >>> log[0].computed
    3
    """

    def __init__(
        self,
        name: str,
        log: list[StageRecord],
        callback: ProgressCallback | None = None,
        total: int = 0,
        interval: float = 0.05,
    ):
        self.record = StageRecord(name=name)
        self.log = log
        self.callback = callback
        self.total = total
        self.done = 0
        self._sampler = _PeakSampler(interval)
        self._t0 = 0.0

    def _emit(self, kind: str, message: str = "") -> None:
        if self.callback is not None:
            try:
                self.callback(ProgressEvent(self.record.name, kind, self.total, self.done, message))
            except Exception:  # a broken progress display must not kill the run
                logger.exception("progress callback failed")

    def __enter__(self) -> StageTimer:
        self._t0 = time.perf_counter()
        self._sampler.start()
        logger.info("stage %s: start (%d items)", self.record.name, self.total)
        self._emit("start")
        return self

    def set_total(self, total: int) -> None:
        """Change the number of items (emits a new ``start``)."""
        self.total = total
        self._emit("start")

    def advance(self, computed: bool | None = None, message: str = "") -> None:
        """Count one item done; ``computed=True`` computed, ``False`` reused from the cache."""
        self.done += 1
        if computed is True:
            self.record.computed += 1
        elif computed is False:
            self.record.reused += 1
        self._emit("advance", message)

    def __exit__(self, exc_type, exc, tb) -> None:
        self.record.seconds = time.perf_counter() - self._t0
        self.record.peak_mb = self._sampler.stop() / 2**20
        if exc is not None and not self.record.note:
            self.record.note = f"failed: {exc}"
        self.log.append(self.record)
        logger.info(
            "stage %s: %.2f s, peak %.0f MB, %d computed, %d reused",
            self.record.name,
            self.record.seconds,
            self.record.peak_mb,
            self.record.computed,
            self.record.reused,
        )
        self._emit("end", self.record.note)


def single_blas_thread() -> contextlib.AbstractContextManager:
    """Limit BLAS (OpenBLAS/MKL) to one thread inside the block, when threadpoolctl is present.

    The quality and registration stages run many tiny least-squares fits; with a
    multi-threaded BLAS competing against numba's worker threads each fit can be
    ten times slower than on one thread.  Without ``threadpoolctl`` this does nothing.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
