"""Stage cache: outputs keyed by a hash of everything that produced them.

Each entry is one or more data files plus a small JSON manifest, all under
``OUTDIR/cache/<stage>/``.  Data files are written first (atomically), the
manifest last (atomically), and the manifest records every file's size: an
entry is valid only when its manifest parses and every file it lists exists
with that size.  A run killed at any moment therefore leaves either a valid
entry, or files without a manifest (ignored and overwritten), or ``.tmp-*``
leftovers (removed on the next run) - never a corrupt entry that is reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..io.atomic import atomic_path

__all__ = [
    "CacheEntry",
    "StageCache",
    "file_fingerprint",
    "hash_key",
    "load_npy",
    "save_npy",
]

logger = logging.getLogger(__name__)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, set | frozenset):
        return sorted(_jsonable(o) for o in obj)
    if isinstance(obj, tuple):
        return [_jsonable(o) for o in obj]
    return str(obj)


def hash_key(*parts: Any) -> str:
    """Stable 24-hex-digit key of *parts* (any JSON-able data, paths, numpy scalars).

    Dictionaries are hashed with sorted keys, so their order does not matter.  The
    astrostack version is included, so a new version never reuses an old result.
    """
    # The package version is part of every key: an upgrade may change any stage's result.
    text = json.dumps([__version__, *parts], sort_keys=True, default=_jsonable,
                      separators=(",", ":"))  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """What identifies an input file for caching: resolved path, size and mtime (ns).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    """
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    """Write *array* as float32-preserving little-endian C-order ``.npy``, atomically."""
    path = Path(path)
    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    # The cache can be recomputed and lookup() checks sizes, so no fsync (only a killed
    # process must leave it consistent, which the rename alone guarantees).
    with atomic_path(path, durable=False) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    return path


def load_npy(path: str | Path, mmap: bool = False) -> np.ndarray:
    """Read a ``.npy`` written by :func:`save_npy` (optionally memory-mapped)."""
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


@dataclass
class CacheEntry:
    """A valid cache entry: its data files (by role) and the metadata stored with it."""

    stage: str
    key: str
    files: dict[str, Path] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


class StageCache:
    """Content-keyed cache of stage outputs under *root*.

    Parameters
    ----------
    root : path
        Cache folder (``OUTDIR/cache``).
    force : bool
        Ignore existing entries (every :meth:`lookup` misses); new entries still get written.
    """

    def __init__(self, root: str | Path, force: bool = False):
        self.root = Path(root)
        self.force = force
        self.root.mkdir(parents=True, exist_ok=True)
        self._clean_temporaries()

    def _clean_temporaries(self) -> None:
        removed = 0
        for tmp in self.root.rglob(".tmp-*"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
        if removed:
            logger.info("cache: removed %d partial files left by an interrupted run", removed)

    def stage_dir(self, stage: str) -> Path:
        """Folder of one stage's entries (created on demand)."""
        d = self.root / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def path(self, stage: str, key: str, role: str = "data", suffix: str = ".npy") -> Path:
        """Where the data file *role* of entry *key* lives (write it there, then :meth:`commit`)."""
        name = f"{key}{suffix}" if role == "data" else f"{key}.{role}{suffix}"
        return self.stage_dir(stage) / name

    def _manifest(self, stage: str, key: str) -> Path:
        return self.stage_dir(stage) / f"{key}.json"

    def lookup(self, stage: str, key: str) -> CacheEntry | None:
        """The valid entry for *key*, or None (missing, incomplete, corrupt, or ``force``)."""
        if self.force:
            return None
        manifest = self._manifest(stage, key)
        try:
            record = json.loads(manifest.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            logger.warning("cache: unreadable manifest %s; recomputing", manifest)
            return None
        if record.get("key") != key:
            return None
        files = {}
        for role, info in record.get("files", {}).items():
            p = manifest.parent / info["name"]
            try:
                size = p.stat().st_size
            except FileNotFoundError:
                logger.warning("cache: %s is missing; recomputing %s/%s", p, stage, key)
                return None
            if size != info["size"]:
                logger.warning("cache: %s has the wrong size; recomputing", p)
                return None
            files[role] = p
        return CacheEntry(stage=stage, key=key, files=files, meta=record.get("meta", {}))

    def commit(
        self, stage: str, key: str, files: dict[str, Path] | None = None, meta: dict | None = None
    ) -> CacheEntry:
        """Record a complete entry: *files* (already written) and *meta*, atomically.

        Every file must be inside this stage's folder and complete; its size goes in the
        manifest so a later truncation is detected.
        """
        files = files or {}
        record_files = {}
        for role, p in files.items():
            p = Path(p)
            if p.parent.resolve() != self.stage_dir(stage).resolve():
                msg = f"cache: {p} is not in {self.stage_dir(stage)}; write it via StageCache.path"
                raise ValueError(msg)
            record_files[role] = {"name": p.name, "size": p.stat().st_size}
        record = {"key": key, "stage": stage, "files": record_files, "meta": meta or {}}
        text = json.dumps(record, sort_keys=True, default=_jsonable, indent=1)
        with atomic_path(self._manifest(stage, key), durable=False) as tmp:
            tmp.write_text(text)
        return CacheEntry(stage=stage, key=key, files=dict(files), meta=meta or {})

    def store_array(
        self, stage: str, key: str, array: np.ndarray, meta: dict | None = None
    ) -> CacheEntry:
        """Save one array as the entry's data file and commit it."""
        p = save_npy(self.path(stage, key), array)
        return self.commit(stage, key, {"data": p}, meta)

    def store_meta(self, stage: str, key: str, meta: dict) -> CacheEntry:
        """Commit an entry made only of metadata (e.g. a quality measurement)."""
        return self.commit(stage, key, {}, meta)

    def prune(self, stage: str, keep: Iterable[str]) -> int:
        """Delete the entries of *stage* whose key is not in *keep*; return how many."""
        keep = set(keep)
        d = self.stage_dir(stage)
        removed = 0
        for manifest in d.glob("*.json"):
            key = manifest.stem
            if key in keep:
                continue
            for p in d.glob(f"{key}*"):
                with contextlib.suppress(OSError):
                    os.unlink(p)
            removed += 1
        return removed
