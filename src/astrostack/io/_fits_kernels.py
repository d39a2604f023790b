"""Compiled pixel conversion for the direct FITS reader (imported on first pixel read).

Kept out of :mod:`astrostack.io.readers` so that reading headers never imports numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def be_int16_to_float32(raw: np.ndarray, out: np.ndarray, bzero: np.float32) -> None:
    """``out = float32(int16 from big-endian bytes) + bzero``, in one pass.

    *raw* holds the file's bytes as native ``uint16`` (each one byte-swapped).  The sum is
    done in float32, as ``raw.astype(np.float32) + np.float32(bzero)`` would: it is exact
    for a 16-bit integer and an integer ``|bzero| <= 2**23``.
    """
    for i in range(raw.size):
        u = np.int32(raw[i])
        v = ((u & 0xFF) << 8) | (u >> 8)
        out[i] = np.float32(v - 65536 if v >= 32768 else v) + bzero
