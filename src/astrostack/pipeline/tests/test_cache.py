"""Stage cache: keys change exactly when inputs change; incomplete entries are never reused."""

from __future__ import annotations

import json
import os

import numpy as np

from astrostack.pipeline.cache import StageCache, file_fingerprint, hash_key, load_npy


def test_hash_key_sensitivity(tmp_path):
    f = tmp_path / "a.fits"
    f.write_bytes(b"x" * 100)
    params = {"hot_sigma": 5.0, "cosmetic": True}
    k0 = hash_key(file_fingerprint(f), params)
    # Same inputs, dict order irrelevant -> same key.
    assert hash_key(file_fingerprint(f), {"cosmetic": True, "hot_sigma": 5.0}) == k0
    # A parameter change -> new key.
    assert hash_key(file_fingerprint(f), {**params, "hot_sigma": 4.0}) != k0
    # Touching the file (mtime) -> new key; same size but new content and mtime -> new key.
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    k1 = hash_key(file_fingerprint(f), params)
    assert k1 != k0
    # A different size -> new key.
    f.write_bytes(b"x" * 101)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert hash_key(file_fingerprint(f), params) != k1
    # Reading the fingerprint twice without change -> same key.
    assert hash_key(file_fingerprint(f), params) == hash_key(file_fingerprint(f), params)


def test_store_lookup_and_force(tmp_path):
    cache = StageCache(tmp_path / "cache")
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert cache.lookup("calibrated", "k1") is None
    cache.store_array("calibrated", "k1", arr, meta={"source": "a.fits", "n": 3})
    entry = cache.lookup("calibrated", "k1")
    assert entry is not None
    assert entry.meta == {"source": "a.fits", "n": 3}
    got = load_npy(entry.files["data"])
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, arr)
    assert StageCache(tmp_path / "cache", force=True).lookup("calibrated", "k1") is None


def test_incomplete_entries_are_ignored(tmp_path):
    cache = StageCache(tmp_path / "cache")
    arr = np.ones((8, 8), np.float32)
    # Data written but the run died before the manifest: not an entry.
    data = cache.path("registered", "k2")
    np.save(data, arr)
    assert cache.lookup("registered", "k2") is None
    # Complete entry, then the data file is truncated behind our back: rejected.
    cache.store_array("registered", "k3", arr)
    p = cache.path("registered", "k3")
    p.write_bytes(p.read_bytes()[:-10])
    assert cache.lookup("registered", "k3") is None
    # Data file deleted: rejected.
    cache.store_array("registered", "k4", arr)
    cache.path("registered", "k4").unlink()
    assert cache.lookup("registered", "k4") is None
    # Garbage manifest: rejected, no exception.
    (cache.stage_dir("registered") / "k5.json").write_text("{not json")
    assert cache.lookup("registered", "k5") is None
    # Manifest of another key under this name: rejected.
    cache.store_array("registered", "k6", arr)
    m = json.loads((cache.stage_dir("registered") / "k6.json").read_text())
    (cache.stage_dir("registered") / "k7.json").write_text(json.dumps(m))
    assert cache.lookup("registered", "k7") is None


def test_temporaries_removed_and_prune(tmp_path):
    root = tmp_path / "cache"
    cache = StageCache(root)
    tmp = cache.stage_dir("registered") / ".tmp-abc.npy.123"
    tmp.write_bytes(b"partial")
    cache.store_array("registered", "keep", np.zeros(4, np.float32))
    cache.store_array("registered", "old", np.zeros(4, np.float32))
    cache = StageCache(root)  # a new run cleans what a killed run left
    assert not tmp.exists()
    assert cache.prune("registered", ["keep"]) == 1
    assert cache.lookup("registered", "keep") is not None
    assert cache.lookup("registered", "old") is None
    assert not cache.path("registered", "old").exists()
