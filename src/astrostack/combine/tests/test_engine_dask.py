"""The same bands give bit-identical results whichever scheduler runs them."""

from __future__ import annotations

import numpy as np
import pytest

from astrostack.combine.engine import combine_sources
from astrostack.combine.sources import FitsSource, NpySource

FIELDS = ("image", "rejected_low", "rejected_high", "count", "weight")


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    from astropy.io import fits

    folder = tmp_path_factory.mktemp("dask")
    rng = np.random.default_rng(4)
    paths = []
    for i in range(8):
        data = rng.normal(300, 8, (2, 96, 80)).astype(np.float32)
        data[:, rng.integers(0, 96, 20), rng.integers(0, 80, 20)] += 900  # outliers
        data[:, :, : 4 * i] = np.nan  # partial coverage
        if i % 2:
            path = folder / f"f{i}.npy"
            np.save(path, data)
            paths.append(NpySource(path))
        else:  # FITS sources take part too
            path = folder / f"f{i}.fits"
            fits.PrimaryHDU(data).writeto(path)
            paths.append(FitsSource(path))
    return paths


def _run(sources, scheduler, band_rows=None):
    n = len(sources)
    rng = np.random.default_rng(9)
    return combine_sources(
        sources,
        method="winsorized",
        scales=rng.uniform(0.9, 1.1, (n, 2)),
        offsets=rng.uniform(-3, 3, (n, 2)),
        weights=rng.uniform(0.5, 1.0, n),
        memory_limit="20MB",
        scheduler=scheduler,
        band_rows=band_rows,
        sigma_low=3.0,
        sigma_high=2.5,
    )


def _same(a, b):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes(), f  # bit-identical, NaN included


def test_threads_synchronous_processes_identical(frames):
    threads = _run(frames, "threads", band_rows=13)
    assert threads.image.shape == (2, 96, 80)
    assert int(threads.rejected_high.sum()) >= 8 * 2 * 19  # outliers were rejected
    _same(threads, _run(frames, "synchronous", band_rows=30))
    _same(threads, _run(frames, "processes", band_rows=20))
    _same(threads, _run(frames, "threads"))  # band height from the budget


def test_distributed_cluster_identical(frames):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        got = _run(frames, cluster.scheduler_address, band_rows=17)
    _same(_run(frames, "threads", band_rows=96), got)
