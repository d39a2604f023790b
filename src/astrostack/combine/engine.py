"""The streamed band combine: N frames merged band by band within a memory budget.

:func:`combine_sources` cuts the image into bands of rows whose height follows from
the memory budget (``N * C * rows * W * 4`` bytes times the number of band buffers
alive at once), but never above the fastest band size (band stacks of about 24 MB: a
larger budget would only cost memory), reads each frame's band, applies the per-frame
linear transform ``value * scale + offset (+ per-pixel offset surface)``, hands the
``[N, rows, W]`` stack of each channel to the compiled rejection kernel
(:func:`astrostack.combine.kernels.combine`) and writes the band's results into output
arrays allocated once.  Memory therefore depends on the image size and the budget,
never on N beyond the band buffers.  An unweighted combine holds no weight map (it
would repeat the count).

Schedulers
----------
``'threads'`` (default)
    In this process: every source is opened once for the whole pass, a reader thread
    fills the next band while the kernel (numba-parallel) works on the current one.
``'synchronous'``
    The same loop without the reader thread (debugging, profiling).
``'processes'``
    Bands are Dask tasks run by a local process pool (``dask`` 'processes'
    scheduler).  Each task opens the N files, reads its band and returns its results.
``'tcp://host:port'``
    Bands are tasks on a ``dask.distributed`` cluster; the files must be reachable
    at the same paths on the workers.

The result is bit-identical whichever scheduler runs it: every band is computed by
the same function on the same values, and the kernels are per-pixel.

Numba threads inside Dask workers: each band task calls ``numba.set_num_threads``
with ``numba_threads`` (default: the host's cores divided by the concurrent tasks on
that host) so that workers do not oversubscribe the CPU, and kernel calls are
serialised by a per-process lock so that a numba threading layer that is not
thread-safe ('workqueue') is never entered concurrently when a worker runs several
tasks in threads.  Locally only the compute thread ever calls a kernel.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .sources import FrameSource, GridSurface, transform_band

__all__ = ["combine_sources", "parse_memory", "plan_bands"]

logger = logging.getLogger(__name__)

#: Per-process lock around kernel calls (see module docstring); not a tunable.
_KERNEL_LOCK = threading.Lock()

_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2}
_UNITS.update({"G": 1024**3, "GB": 1024**3, "T": 1024**4, "TB": 1024**4})
_UNITS.update({"KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4})

# bytes per output pixel and channel: image f4 + low/high/count u2 + weight f4
_OUT_BYTES = 4 + 2 + 2 + 2 + 4

# A band stack (all frames' rows of one band) of about this size is the fastest: per
# band costs (N seeks and reads, a kernel launch) stay negligible, while the buffers
# are small enough to be reused warm rather than faulted in afresh (measured on 50
# frames of 6000x4000, 2 cores: the same CPU time from 8 to 32 MB bands, +10 % at 4
# and 64 MB; page faults of fresh 800 MB bands tripled the reading time).  The
# budget only ever lowers it.  A property of the design, not a tunable.
_BAND_BYTES = 24 * 1024**2


def parse_memory(limit: int | float | str) -> int:
    """Bytes in a memory budget such as ``'2GB'``, ``'512 MiB'``, ``'64M'`` or ``1e9``.

    Raises
    ------
    ValueError
        For an unreadable or non-positive budget.
    """
    if isinstance(limit, int | float) and not isinstance(limit, bool):
        value = int(limit)
    else:
        match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(limit))
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _UNITS:
            msg = f"memory budget {limit!r} not understood; use e.g. '2GB', '512MB' or bytes"
            raise ValueError(msg)
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        msg = f"memory budget {limit!r} must be positive"
        raise ValueError(msg)
    return value


def plan_bands(
    n_frames: int,
    shape: tuple[int, ...],
    memory_limit: int | float | str,
    buffers: float = 2.25,
    concurrency: int = 1,
    weight_map: bool = True,
) -> list[tuple[int, int]]:
    """Row bands ``[(y0, y1), ...]`` covering the image within the memory budget.

    Parameters
    ----------
    n_frames : int
        Number of frames stacked.
    shape : tuple of int
        ``(H, W)`` or ``(C, H, W)``.
    memory_limit : int, float or str
        Total budget (see :func:`parse_memory`).  The outputs (14 bytes per pixel and
        channel, 10 without a weight map) are taken from it first.  It is a ceiling:
        bands are never larger than the fastest size (band stacks of about 24 MB),
        however large the budget.
    buffers : float
        Band stacks alive at once per task (2 for double buffering plus slack).
    concurrency : int
        Band tasks running at once (each gets an equal share).
    weight_map : bool
        Whether the outputs hold a weight map (4 of the 14 bytes; not when unweighted).
    """
    height, width = shape[-2:]
    channels = shape[0] if len(shape) == 3 else 1
    out_bytes = _OUT_BYTES if weight_map else _OUT_BYTES - 4
    budget = parse_memory(memory_limit) - channels * height * width * out_bytes
    per_row = n_frames * channels * width * 4 * buffers * max(1, concurrency)
    rows = int(budget // per_row) if budget > 0 else 0
    rows = min(rows, max(1, _BAND_BYTES // (n_frames * channels * width * 4)))
    if rows < 1:
        logger.warning(
            "memory budget %s is too small for %d frames of %s; using 1-row bands",
            memory_limit,
            n_frames,
            shape,
        )
        rows = 1
    rows = min(rows, height)
    n_bands = math.ceil(height / rows)
    rows = math.ceil(height / n_bands)
    return [(y0, min(y0 + rows, height)) for y0 in range(0, height, rows)]


def _kernels():
    """The kernels module (imported lazily: ``combine`` and ``CombineResult``)."""
    from . import kernels

    return kernels


def _per_frame(values, n: int, channels: int, name: str, default: float) -> np.ndarray:
    """``values`` as float64 ``[N, C]`` (accepts None, scalars, ``[N]`` or ``[N, C]``)."""
    if values is None:
        return np.full((n, channels), default, dtype=np.float64)
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full((n, channels), float(arr))
    elif arr.ndim == 1 and arr.shape[0] == n:
        arr = np.repeat(arr[:, None], channels, axis=1)
    if arr.shape != (n, channels):
        msg = f"{name} must have shape [{n}] or [{n}, {channels}], got {np.shape(values)}"
        raise ValueError(msg)
    if not np.all(np.isfinite(arr)):
        msg = f"{name} contains non-finite values; check the normalisation/weights"
        raise ValueError(msg)
    return arr


def _read_band(
    sources: Sequence[FrameSource],
    y0: int,
    y1: int,
    stack: np.ndarray,
    scales: np.ndarray,
    offsets: np.ndarray,
    offset_maps: Sequence[GridSurface | None] | None,
    failed: dict[int, str],
) -> None:
    """Fill ``stack`` ``[C, N, rows, W]`` with transformed band ``y0:y1`` of every source."""
    for i, src in enumerate(sources):
        planes = stack[:, i]
        if i in failed:
            planes[...] = np.nan
            continue
        try:
            src.read_rows(y0, y1, out=planes if len(src.shape) == 3 else planes[0])
        except (OSError, ValueError) as exc:
            failed[i] = str(exc)
            logger.warning("skipping %s: %s", src.path, exc)
            planes[...] = np.nan
            continue
        surface = offset_maps[i] if offset_maps is not None else None
        # compiled and GIL-free: the reader thread runs it beside the combine kernel
        transform_band(planes, y0, scales[i], offsets[i], surface)


def _channel_view(full, c: int):
    """A CombineResult whose arrays are the (C-contiguous) channel ``c`` views of ``full``."""
    kernels = _kernels()
    arrays = {f: getattr(full, f)[c] for f in _fields(full)}
    return kernels.CombineResult(**arrays, method=full.method, parameters={})


def _fields(result) -> tuple[str, ...]:
    """The output arrays ``result`` holds (``weight`` only when a map is stored)."""
    return _FIELDS if result.weight_stored else _FIELDS[:-1]


def _combine_band_into(stack: np.ndarray, full, y0: int, weights, method: str, params: dict):
    """Combine ``stack`` ``[C, N, rows, W]`` into rows ``y0:`` of the outputs ``full``.

    ``full`` holds ``[H, W]`` arrays (mono) or ``[C, H, W]`` arrays (colour).  Each
    channel is combined with its own column of ``weights`` ``[N, C]``.
    """
    kernels = _kernels()
    colour = full.image.ndim == 3
    with _KERNEL_LOCK:
        for c in range(stack.shape[0]):
            w = None if weights is None else np.ascontiguousarray(weights[:, c])
            target = _channel_view(full, c) if colour else full
            kernels.combine_into(stack[c], target, y0, method=method, weights=w, **params)
            if colour:
                full.method, full.parameters = target.method, target.parameters


_FIELDS = ("image", "rejected_low", "rejected_high", "count", "weight")


def _band_task(
    sources: Sequence[FrameSource],
    y0: int,
    y1: int,
    scales: np.ndarray,
    offsets: np.ndarray,
    offset_maps,
    weights,
    method: str,
    kernel_params: dict,
    numba_threads: int | None,
):
    """One Dask task: open the N sources, read band ``y0:y1``, combine, return arrays."""
    if numba_threads:
        import numba

        numba.set_num_threads(max(1, min(numba_threads, numba.config.NUMBA_NUM_THREADS)))
    shape = tuple(sources[0].shape)
    channels = shape[0] if len(shape) == 3 else 1
    width = shape[-1]
    stack = np.empty((channels, len(sources), y1 - y0, width), dtype=np.float32)
    failed: dict[int, str] = {}
    try:
        for src in sources:
            src.open()
        _read_band(sources, y0, y1, stack, scales, offsets, offset_maps, failed)
    finally:
        for src in sources:
            src.close()
    band_shape = (channels, y1 - y0, width) if len(shape) == 3 else (y1 - y0, width)
    out = _kernels().CombineResult.empty(band_shape, weight_map=weights is not None)
    _combine_band_into(stack, out, 0, weights, method, kernel_params)
    del stack
    arrays = {f: getattr(out, f) for f in _fields(out)}
    return y0, y1, arrays, (out.method, dict(out.parameters)), failed


class _Assembler:
    """Output arrays allocated once (``CombineResult.empty``) and filled band by band."""

    def __init__(self, shape: tuple[int, ...], weight_map: bool):
        self.full = _kernels().CombineResult.empty(shape, weight_map=weight_map)
        self.failed: dict[int, str] = {}

    def put(self, y0: int, y1: int, arrays: dict[str, np.ndarray], meta) -> None:
        for f, a in arrays.items():
            getattr(self.full, f)[..., y0:y1, :] = a
        self.full.method, self.full.parameters = meta

    def result(self):
        if self.failed:
            self.full.parameters = {**self.full.parameters, "failed_sources": dict(self.failed)}
        return self.full


def combine_sources(
    sources: Sequence[FrameSource],
    method: str = "winsorized",
    offsets=None,
    scales=None,
    weights=None,
    memory_limit: int | float | str = "2GB",
    scheduler: str = "threads",
    band_rows: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    offset_maps: Sequence[GridSurface | None] | None = None,
    numba_threads: int | None = None,
    **kernel_params: Any,
):
    """Combine N frame sources band by band within a memory budget.

    Parameters
    ----------
    sources : sequence of FrameSource
        All with the same ``shape`` (``(H, W)`` or ``(C, H, W)``).  NaN = no data.
    method : str
        Kernel method (``'winsorized'``, ``'sigma'``, ``'mean'``, ``'median'``, ``'auto'`` ...).
    offsets, scales : array_like, optional
        Per-frame linear transform ``value * scale + offset``, shaped ``[N]`` or
        ``[N, C]``; applied while the band is read.
    weights : array_like, optional
        Per-frame weights ``[N]`` or ``[N, C]``.  Without them no weight map is held:
        the result's ``weight`` is its ``count`` (converted when first read).
    memory_limit : int, float or str
        Budget for band buffers and outputs, e.g. ``'2GB'``.  With ``'processes'``
        and a cluster it is shared by the concurrently running band tasks.
    scheduler : str
        ``'threads'``, ``'synchronous'``, ``'processes'`` or ``'tcp://host:port'``.
    band_rows : int, optional
        Force the band height (otherwise derived from the budget).
    progress : callable, optional
        ``progress(done_bands, total_bands)`` after each band.
    offset_maps : sequence of GridSurface or None, optional
        Per-frame per-pixel offsets added after the linear transform (local
        normalisation).
    numba_threads : int, optional
        Numba threads per Dask task (default: cores / concurrent tasks).
    **kernel_params
        Passed to the kernel (``sigma_low``, ``sigma_high``, ...).

    Returns
    -------
    CombineResult
        Full-size ``image``, ``rejected_low``, ``rejected_high``, ``count``,
        ``weight``; ``parameters['failed_sources']`` maps the index of any source that
        could not be read (its data treated as missing) to the reason.
    """
    sources = list(sources)
    if not sources:
        msg = "combine_sources: no frames to combine; check the input list"
        raise ValueError(msg)
    shape = tuple(sources[0].shape)
    for src in sources[1:]:
        if tuple(src.shape) != shape:
            msg = (
                f"{src.path}: shape {src.shape} differs from {sources[0].path} {shape}; "
                "register/crop all frames to the same size"
            )
            raise ValueError(msg)
    if len(shape) not in (2, 3):
        msg = f"{sources[0].path}: shape {shape} is not [y, x] or [c, y, x]"
        raise ValueError(msg)
    n = len(sources)
    channels = shape[0] if len(shape) == 3 else 1
    height = shape[-2]
    scales = _per_frame(scales, n, channels, "scales", 1.0)
    offsets = _per_frame(offsets, n, channels, "offsets", 0.0)
    weights = None if weights is None else _per_frame(weights, n, channels, "weights", 1.0)
    if offset_maps is not None and len(offset_maps) != n:
        msg = f"offset_maps has {len(offset_maps)} entries for {n} frames"
        raise ValueError(msg)

    distributed = scheduler.startswith("tcp://") or scheduler.startswith("tls://")
    if scheduler not in ("threads", "synchronous", "processes") and not distributed:
        msg = f"scheduler {scheduler!r} unknown; use threads, synchronous, processes or tcp://..."
        raise ValueError(msg)
    concurrency = 1
    if scheduler == "processes":
        concurrency = max(1, os.cpu_count() or 1)
    if band_rows is not None:
        rows = max(1, min(int(band_rows), height))
        bands = [(y0, min(y0 + rows, height)) for y0 in range(0, height, rows)]
    else:
        buffers = 2.25 if scheduler == "threads" else 1.25
        bands = plan_bands(
            n, shape, memory_limit, buffers, concurrency, weight_map=weights is not None
        )
    logger.info(
        "combining %d frames of %s in %d bands of %d rows (%s, %s)",
        n,
        shape,
        len(bands),
        bands[0][1] - bands[0][0],
        method,
        scheduler,
    )
    # unweighted: no weight map is stored, CombineResult.weight is derived from count
    asm = _Assembler(shape, weight_map=weights is not None)
    args = (scales, offsets, offset_maps, weights, method, kernel_params)
    if scheduler in ("threads", "synchronous"):
        _run_local(sources, bands, args, asm, progress, threaded=scheduler == "threads")
    elif scheduler == "processes":
        _run_processes(sources, bands, args, asm, progress, concurrency, numba_threads)
    else:
        _run_distributed(sources, bands, args, asm, progress, scheduler, numba_threads)
    if asm.failed:
        logger.warning("%d of %d frames could not be read completely", len(asm.failed), n)
    return asm.result()


def _run_local(sources, bands, args, asm: _Assembler, progress, threaded: bool) -> None:
    scales, offsets, offset_maps, weights, method, kernel_params = args
    shape = tuple(sources[0].shape)
    channels = shape[0] if len(shape) == 3 else 1
    width = shape[-1]
    n = len(sources)
    max_rows = max(y1 - y0 for y0, y1 in bands)
    n_buf = 2 if threaded else 1
    flats = [np.empty(channels * n * max_rows * width, dtype=np.float32) for _ in range(n_buf)]

    def view(k: int, rows: int) -> np.ndarray:
        return flats[k][: channels * n * rows * width].reshape(channels, n, rows, width)

    def fill(k: int, band: tuple[int, int]) -> np.ndarray:
        y0, y1 = band
        stack = view(k, y1 - y0)
        _read_band(sources, y0, y1, stack, scales, offsets, offset_maps, asm.failed)
        return stack

    def consume(band, stack, done):
        _combine_band_into(stack, asm.full, band[0], weights, method, kernel_params)
        if progress is not None:
            progress(done, len(bands))

    opened = []
    try:
        for src in sources:
            opened.append(src.open())
        if not threaded:
            for done, band in enumerate(bands, 1):
                consume(band, fill(0, band), done)
            return
        filled: queue.Queue = queue.Queue(maxsize=1)
        free: queue.Queue = queue.Queue()
        for k in range(n_buf):
            free.put(k)
        stop = threading.Event()

        def reader():
            try:
                for band in bands:
                    k = free.get()
                    if stop.is_set():
                        return
                    filled.put((band, k, fill(k, band)))
            except BaseException as exc:  # handed to the compute thread
                filled.put((None, None, exc))

        thread = threading.Thread(target=reader, name="astrostack-band-reader", daemon=True)
        thread.start()
        try:
            for done in range(1, len(bands) + 1):
                band, k, stack = filled.get()
                if band is None:
                    raise stack
                consume(band, stack, done)
                free.put(k)
        finally:
            stop.set()
            while thread.is_alive():  # unblock a reader waiting to hand over or for a buffer
                with contextlib.suppress(queue.Empty):
                    filled.get_nowait()
                free.put(0)
                thread.join(timeout=0.05)
    finally:
        for src in opened:
            src.close()


def _collect(asm: _Assembler, item, progress, done: int, total: int) -> None:
    y0, y1, arrays, meta, failed = item
    asm.put(y0, y1, arrays, meta)
    for i, reason in failed.items():
        asm.failed.setdefault(i, reason)
    if progress is not None:
        progress(done, total)


def _run_processes(sources, bands, args, asm, progress, workers: int, numba_threads) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import dask

    threads = numba_threads or max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    done = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        # batches of `workers` bands keep at most that many band results in flight
        for b in range(0, len(bands), workers):
            tasks = [
                dask.delayed(_band_task, pure=False)(sources, y0, y1, *args, threads)
                for y0, y1 in bands[b : b + workers]
            ]
            for item in dask.compute(*tasks, scheduler="processes", pool=pool):
                done += 1
                _collect(asm, item, progress, done, len(bands))


def _run_distributed(sources, bands, args, asm, progress, address: str, numba_threads) -> None:
    from distributed import Client, as_completed

    with Client(address, set_as_default=False) as client:
        info = client.scheduler_info()["workers"]
        slots = max(1, sum(w.get("nthreads", 1) for w in info.values()))
        if numba_threads is None:
            per_host: dict[str, int] = {}
            for w in info.values():
                per_host[w.get("host", "")] = per_host.get(w.get("host", ""), 0) + w["nthreads"]
            numba_threads = max(1, (os.cpu_count() or 1) // max(per_host.values(), default=1))

        # sources go inline with every task (file sources pickle to their paths), not
        # scattered: a task whose worker dies is then simply rerun on another worker
        def submit(band):
            return client.submit(
                _band_task, sources, band[0], band[1], *args, numba_threads, pure=False
            )

        # up to 2 tasks per worker thread in flight, then one more per completion
        pending = iter(bands)
        first = [submit(next(pending)) for _ in range(min(2 * slots, len(bands)))]
        with client.as_current():
            futures = as_completed(first)
            done = 0
            for fut in futures:
                item = fut.result()
                fut.release()
                done += 1
                _collect(asm, item, progress, done, len(bands))
                nxt = next(pending, None)
                if nxt is not None:
                    futures.add(submit(nxt))
