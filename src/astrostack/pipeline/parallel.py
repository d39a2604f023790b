"""Per-frame stages on a few threads: results in input order, memory bounded.

The per-frame work of a run (calibration, quality, warping) spends its time in code
that releases the GIL (numba ``nogil`` kernels, sep, OpenCV, numpy, file I/O), so two
frames processed at once on two cores overlap their serial parts.  :func:`map_frames`
runs a function over the frames with at most ``workers`` of them in flight and yields
the results **in input order**, so everything the caller does with them (progress,
messages, cache records) happens in the same order whatever the thread timing; each
frame's result depends only on that frame, so the outputs are byte-identical to a
serial run.

The first item is always processed alone on the calling thread: it fills the lazy
per-plan state (masters loaded on first use, the defect map) before any concurrency,
and it starts numba's threading layer, which is then checked: concurrent launches of
``parallel=True`` kernels are only safe with the ``tbb`` or ``omp`` layers, so with
``workqueue`` the rest runs serially too.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
    fn: Callable[[T], Any], items: Iterable[T], workers: int = 2
) -> Iterator[tuple[T, Any, Exception | None]]:
    """Apply *fn* to every item, up to *workers* at once; yield ``(item, result, error)``.

    Results come in input order.  An exception raised by *fn* is returned as *error*
    (``result`` is then None) so that one bad frame never stops the others.

    Parameters
    ----------
    fn : callable
        Work for one item; must only touch that item's state (and thread-safe shared
        objects).
    items : iterable
        The frames.
    workers : int
        Items in flight at most (1 = serial, on the calling thread).

    Yields
    ------
    item, result, error
    """
    items = list(items)
    if not items:
        return
    head, *rest = items
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
