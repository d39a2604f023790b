"""Atomic output: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path"]


@contextlib.contextmanager
def atomic_path(final: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it over *final* on success.

    A killed process leaves at most a ``.tmp-*`` file, never a half-written file
    under the final name.  On error the temporary file is removed.

    Parameters
    ----------
    final : str or Path
        The file to write.
    durable : bool
        Flush the data to the disk (``fsync``) before the rename, so that the file
        survives a crash of the operating system or a power cut, not only a killed
        process.  Each flush waits for the disk (milliseconds per file, much more on a
        busy disk); intermediate files that can be recomputed (a stage cache whose
        manifest records each file's size) can pass False.

    Yields
    ------
    Path
        The temporary file to write.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{final.name}.", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; outputs get the usual permissions (0666 less the umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        if durable:
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
