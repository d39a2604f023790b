"""Per-frame stages on a few threads or processes: results in input order, memory bounded.

The per-frame work of a run (calibration, quality, warping) spends its time in code
that releases the GIL (numba ``nogil`` kernels, OpenCV, numpy, file I/O), so two
frames processed at once on two cores overlap their serial parts.  :func:`map_frames`
runs a function over the frames with at most ``workers`` of them in flight and yields
the results **in input order**, so everything the caller does with them (progress,
messages, cache records) happens in the same order whatever the timing; each frame's
result depends only on that frame, so the outputs are byte-identical to a serial run.

The first item is always processed alone on the calling thread: it fills the lazy
per-plan state (masters loaded on first use, the defect map) before any concurrency,
and it starts numba's threading layer, which is then checked: concurrent launches of
``parallel=True`` kernels are only safe with the ``tbb`` or ``omp`` layers, so with
``workqueue`` the rest runs serially too.

Work that holds the GIL (sep's extraction and photometry: the quality stage) does not
overlap in threads; ``processes=True`` runs it in worker processes instead (a ``spawn``
pool, never ``fork``: numba's threading layer is not fork-safe), started while the
first item runs here and shut down when the last result is in.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
import types
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

__all__ = ["default_workers", "map_frames", "threads_safe"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SAFE_LAYERS = ("tbb", "omp")
_END = object()


def default_workers(scheduler: str = "threads", limit: int = 2) -> int:
    """Frames processed at once: ``min(limit, cores)``, or 1 when *scheduler* is synchronous.

    Parameters
    ----------
    scheduler : str
        The run's scheduler setting (``stack.scheduler``); ``'synchronous'`` means no
        threads anywhere.
    limit : int
        Upper bound (each frame in flight holds a few full-frame arrays).
    """
    if scheduler == "synchronous":
        return 1
    return max(1, min(int(limit), os.cpu_count() or 1))


def threads_safe() -> bool:
    """True when numba's threading layer allows concurrent parallel-kernel launches.

    Unknown until a parallel kernel has run in this process: False then.
    """
    try:
        import numba

        layer = numba.threading_layer()
    except (ImportError, ValueError):
        return False
    return layer in _SAFE_LAYERS


def _call(fn: Callable[[T], Any], item: T) -> tuple[Any, BaseException | None]:
    try:
        return fn(item), None
    except Exception as exc:  # handed to the caller, which skips the frame
        return None, exc


def map_frames(
    fn: Callable[[T], Any], items: Iterable[T], workers: int = 2, *, processes: bool = False
) -> Iterator[tuple[T, Any, Exception | None]]:
    """Apply *fn* to every item, up to *workers* at once; yield ``(item, result, error)``.

    Results come in input order.  An exception raised by *fn* is returned as *error*
    (``result`` is then None) so that one bad frame never stops the others.

    Parameters
    ----------
    fn : callable
        Work for one item; must only touch that item's state (and thread-safe shared
        objects).  With *processes*, a function of an importable module (the workers
        never import the main script) whose items and results pickle; the caller
        applies its effects from the results.
    items : iterable
        The frames.
    workers : int
        Items in flight at most (1 = serial, on the calling thread).
    processes : bool
        Run the items after the first in *workers* worker processes instead of threads
        (for work that holds the GIL).  If the pool cannot start or breaks (a worker
        killed), the items left are processed here, serially.

    Yields
    ------
    item, result, error
    """
    items = list(items)
    if not items:
        return
    head, *rest = items
    if processes and workers > 1 and rest:
        yield from _map_processes(fn, head, rest, workers)
        return
    result, error = _call(fn, head)
    yield head, result, error
    if workers <= 1 or not rest or not threads_safe():
        for item in rest:
            result, error = _call(fn, item)
            yield item, result, error
        return
    pending: deque[tuple[T, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="astrostack-frame") as pool:
        it = iter(rest)
        for item in it:
            pending.append((item, pool.submit(_call, fn, item)))
            if len(pending) >= workers:
                break
        while pending:
            item, fut = pending.popleft()
            result, error = fut.result()
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append((nxt, pool.submit(_call, fn, nxt)))
            yield item, result, error


def _init_worker(threads: int) -> None:
    """Give a worker process its share of the cores for numba, OpenCV and BLAS."""
    import cv2
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    cv2.setNumThreads(threads)
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")  # many tiny fits: one thread is fastest


@contextlib.contextmanager
def _main_not_rerun() -> Iterator[None]:
    """Start worker processes without re-running the caller's ``__main__`` in them.

    ``spawn`` re-imports the main script in every worker so that functions defined
    there can be unpickled.  The workers only run astrostack functions, and a script
    that calls ``astrostack.run`` without an ``if __name__ == "__main__"`` guard would
    run again in each of them, so the main module is hidden while they start.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _map_processes(
    fn: Callable[[T], Any], head: T, rest: list[T], workers: int
) -> Iterator[tuple[T, Any, Exception | None]]:
    """:func:`map_frames` with the items after *head* in a process pool."""
    # twice the workers in flight: a worker that finishes early finds its next item
    # queued (the frames are read by the workers; only small results come back)
    ahead = 2 * workers
    threads = max(1, (os.cpu_count() or 1) // workers)
    it = iter(rest)
    pending: deque[tuple[T, Future | None]] = deque()
    pool: ProcessPoolExecutor | None = None
    try:
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(threads,),
        )  # fmt: skip
        with _main_not_rerun():  # the workers start on the first submissions
            for item in it:
                pending.append((item, pool.submit(fn, item)))
                if len(pending) >= ahead:
                    break
    except Exception as exc:  # e.g. no processes allowed here (a daemonic process)
        logger.warning("no worker processes (%s): frames processed here, one at a time", exc)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        pool = None
        pending = deque((item, None) for item, _ in pending)
    try:
        result, error = _call(fn, head)  # meanwhile the workers start
        yield head, result, error
        while pending:
            item, fut = pending.popleft()
            result, error = _collect(fut, fn, item)
            if isinstance(error, BrokenProcessPool):
                logger.warning("a worker process died (%s): the frames left are processed "
                               "here, one at a time", error)  # fmt: skip
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
                pool = None
                pending = deque((i, None) for i, _ in pending)
                result, error = _call(fn, item)
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append((nxt, _submit(pool, fn, nxt)))
            yield item, result, error
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _submit(pool: ProcessPoolExecutor | None, fn: Callable[[T], Any], item: T) -> Future | None:
    """*item* submitted to *pool*; None (processed here) without a pool or if it broke."""
    if pool is None:
        return None
    try:
        return pool.submit(fn, item)
    except BrokenProcessPool:  # reported by the future of an earlier item
        return None


def _collect(fut: Future | None, fn: Callable[[T], Any], item: T) -> tuple[Any, Exception | None]:
    """The result of *item*'s future, or of *fn* here when it has none (no pool)."""
    if fut is None:
        return _call(fn, item)
    try:
        return fut.result(), None
    except Exception as exc:  # raised by fn in the worker (or the pool broke)
        return None, exc
