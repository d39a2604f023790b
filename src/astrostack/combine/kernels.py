"""Per-pixel combination with outlier rejection: the public API of the combine kernels.

A stack is float32 ``[N, ...]`` (N frames; the rest is ``[y, x]``, ``[c, y, x]`` or any
shape).  NaN (or +-inf) means *no data for that frame at that pixel*; frames or pixels
whose weight is NaN or <= 0 are treated the same way.  For every pixel the finite values
are rejected by the chosen algorithm, then combined as the weighted mean of the kept
values (the plain median for ``median``).

Usage mirrors :mod:`astropy.stats`: a function and a class per algorithm::

    res = combine(stack, method="winsorized", sigma_low=3, sigma_high=3)
    clip = WinsorizedSigmaClipCombine(sigma_low=4)
    res = clip(stack, weights=w)          # w: [N] per frame or stack.shape per pixel
    res.image, res.count, res.rejected_low, res.rejected_high, res.weight

Methods and defaults (as in Siril / PixInsight):

===============  =========================================================  ==================
name             rejection                                                  defaults
===============  =========================================================  ==================
``mean``         none                                                       -
``median``       none (result is the median)                                -
``sigma``        iterative, median centre, population std (astropy default) 3 / 3, 10 iters
``winsorized``   iterative, sigma from winsorized data (Huber, 1.5, 1.134)  3 / 3, 10 iters
``linear_fit``   iterative, distance to a line fitted to sorted values      5 / 2.5, 10 iters
``esd``          generalized extreme Studentized deviate (Rosner 1983)      0.3 outliers, 0.05
``percentile``   one pass, fractional distance from the median              0.2 / 0.1
``minmax``       the ``n_low`` lowest and ``n_high`` highest                1 / 1
``auto``         chosen by N (see :class:`AutoCombine`)                     -
===============  =========================================================  ==================
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from .rejection import (
    FP_CUTOFF,
    FP_ESD_FRAC,
    FP_PERC_HIGH,
    FP_PERC_LOW,
    FP_SIGMA_HIGH,
    FP_SIGMA_LOW,
    IP_MAXITERS,
    IP_MIN_KEPT,
    IP_N_HIGH,
    IP_N_LOW,
    IP_STDFUNC,
    METHOD_CODES,
    _as_stack,
    _prepare_weights,
    combine_pixels,
    esd_critical_values,
)
from .stats import sorting_network

__all__ = [
    "METHODS",
    "AutoCombine",
    "CombineResult",
    "Combiner",
    "ESDCombine",
    "LinearFitClipCombine",
    "MeanCombine",
    "MedianCombine",
    "MinMaxCombine",
    "PercentileClipCombine",
    "SigmaClipCombine",
    "WinsorizedSigmaClipCombine",
    "combine",
    "combine_into",
    "get_combiner",
]

logger = logging.getLogger(__name__)

#: Every method name accepted by :func:`combine` and :func:`get_combiner`.
METHODS = (*METHOD_CODES, "auto")


# Up to this many frames, a comparator network sorts blocks of pixels at once
# (vectorised across pixels); above, each pixel is sorted alone (quicksort).  Measured
# single-thread, sigma clipping: 4.4x faster at N=50, 7.5x at N=128, 8.2x at N=500.
# Blocks hold ~64k values (256 pixels up to N=256).  Fixed properties, not tunables.
_NETWORK_MAX_FRAMES = 1024
_BLOCK_VALUES = 65536
_MAX_BLOCK = 256


class _WeightMap:
    """``CombineResult.weight``: the stored map or, unweighted (every value weighs 1),
    ``count`` as float32, converted on first read: no 4-byte map repeating the count."""

    def __get__(self, obj, objtype=None):
        if obj is None:
            return None  # the dataclass default: derived from count
        if obj.__dict__.get("_weight") is None:
            obj.__dict__["_weight"] = obj.count.astype(np.float32)
        return obj.__dict__["_weight"]

    def __set__(self, obj, value) -> None:
        obj.__dict__["_weight"] = value


@dataclass
class CombineResult:
    """Result of a per-pixel combine.

    Attributes
    ----------
    image : numpy.ndarray
        float32, the stack's spatial shape; NaN where no frame has data.
    rejected_low, rejected_high : numpy.ndarray
        uint16, number of values rejected below / above per pixel.
    count : numpy.ndarray
        uint16, number of values kept (0 where no data).
    weight : numpy.ndarray
        float32, sum of the weights of the kept values (frames count 1 each when
        unweighted).  Built with ``weight=None`` (an unweighted combine), no map is
        stored: it is ``count`` as float32, converted on first access
        (:attr:`weight_stored` tells which).
    method : str
        The method actually used (``auto`` is resolved).
    parameters : dict
        The parameters of that method, plus ``n_frames`` (and ``requested='auto'``
        when the method was chosen automatically from N).
    """

    image: np.ndarray
    rejected_low: np.ndarray
    rejected_high: np.ndarray
    count: np.ndarray
    weight: np.ndarray | None = _WeightMap()  # type: ignore[assignment]
    method: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(
        cls,
        shape: tuple[int, ...],
        method: str = "",
        parameters: dict | None = None,
        weight_map: bool = True,
    ):
        """Full-size outputs for :func:`combine_into`: NaN image, zero counts and weights
        (no weight map with ``weight_map=False``: unweighted, it is derived from count)."""
        shape = tuple(int(s) for s in shape)
        return cls(
            image=np.full(shape, np.nan, dtype=np.float32),
            rejected_low=np.zeros(shape, dtype=np.uint16),
            rejected_high=np.zeros(shape, dtype=np.uint16),
            count=np.zeros(shape, dtype=np.uint16),
            weight=np.zeros(shape, dtype=np.float32) if weight_map else None,
            method=method,
            parameters=dict(parameters or {}),
        )

    @property
    def weight_stored(self) -> bool:
        """True when a weight map is held (False: ``weight`` is derived from ``count``)."""
        return self.__dict__.get("_weight") is not None

    @property
    def rejected(self) -> np.ndarray:
        """Total rejected values per pixel (uint16)."""
        return (self.rejected_low + self.rejected_high).astype(np.uint16)

    def rejection_fraction(self) -> tuple[float, float]:
        """Fractions of all finite input values rejected low and high."""
        lo = float(self.rejected_low.sum(dtype=np.float64))
        hi = float(self.rejected_high.sum(dtype=np.float64))
        total = lo + hi + float(self.count.sum(dtype=np.float64))
        if total == 0:
            return 0.0, 0.0
        return lo / total, hi / total


@functools.lru_cache(maxsize=16)
def _esd_table(n_frames: int, significance: float) -> np.ndarray:
    table = esd_critical_values(n_frames, significance)
    table.setflags(write=False)
    return table


# All tables passed to the kernel are read-only: one array type, one compilation.
_NO_ESD = np.full(1, np.inf)
_NO_ESD.setflags(write=False)
_NO_NETWORK = np.zeros((0, 2), dtype=np.int64)
_NO_NETWORK.setflags(write=False)


_NO_WEIGHT_MAP = np.zeros(1, dtype=np.float32)


@functools.lru_cache(maxsize=16)
def _network(n_frames: int) -> np.ndarray:
    net = sorting_network(n_frames)
    net.setflags(write=False)
    return net


def _sorting_plan(n_frames: int) -> tuple[np.ndarray, int]:
    """Comparator network (empty = per-pixel sort) and pixels per block for N frames."""
    block = max(8, min(_MAX_BLOCK, _BLOCK_VALUES // n_frames))
    if n_frames <= _NETWORK_MAX_FRAMES:
        return _network(n_frames), block
    return _NO_NETWORK, block


def _blockwise() -> bool:
    """Whether sorted blocks are rejected block-wise (always; tests turn it off to
    compare with the per-pixel path on the same sorted values)."""
    return True


@dataclass(frozen=True)
class Combiner:
    """Base of the combiners: holds parameters, runs the compiled kernel.

    Subclasses are frozen dataclasses whose fields are the method's parameters.
    Call an instance on a stack (``combiner(stack, weights)``) or write a band into
    preallocated outputs with :meth:`into`.
    """

    method: ClassVar[str] = ""

    # -- parameter plumbing (overridden by subclasses) ---------------------------------
    def _fpar(self) -> np.ndarray:
        return np.zeros(6, dtype=np.float64)

    def _ipar(self) -> np.ndarray:
        ip = np.zeros(5, dtype=np.int64)
        ip[IP_MAXITERS] = 1
        ip[IP_MIN_KEPT] = 1
        return ip

    def _esd(self, n_frames: int) -> np.ndarray:
        return _NO_ESD

    @property
    def parameters(self) -> dict[str, Any]:
        """The method's parameters as a plain dict."""
        return asdict(self)

    def _run(self, stack, weights, out: CombineResult, y0: int) -> None:
        arr = _as_stack(stack)
        wframe, wpix, use_pix = _prepare_weights(weights, arr)
        n = arr.shape[0]
        band = arr.shape[1:]
        full = out.image.shape
        if len(band) == 0:
            band = (1,)
            arr = arr.reshape(n, 1)
            if use_pix:
                wpix = wpix.reshape(n, 1)
        if len(full) != len(band) or (
            len(band) >= 2 and (full[:-2] != band[:-2] or full[-1] != band[-1])
        ):
            msg = f"combine_into: a stack band {band} does not fit outputs of shape {full}"
            raise ValueError(msg)
        rows = band[-2] if len(band) >= 2 else band[-1]
        height = full[-2] if len(full) >= 2 else full[-1]
        if y0 < 0 or y0 + rows > height:
            msg = f"combine_into: rows {y0}:{y0 + rows} fall outside outputs of height {height}"
            raise ValueError(msg)
        write_w = out.weight_stored
        usable = wframe[np.isfinite(wframe) & (wframe > 0)]
        if not write_w and (use_pix or not np.all(usable == 1.0)):
            msg = "combine_into: weights other than 1 need outputs with a weight map"
            raise ValueError(msg)
        out_w = out.weight if write_w else _NO_WEIGHT_MAP
        outs = (out.image, out.rejected_low, out.rejected_high, out.count)
        dtypes = (np.float32, np.uint16, np.uint16, np.uint16)
        if write_w:
            outs, dtypes = (*outs, out_w), (*dtypes, np.float32)
        for a, dt in zip(outs, dtypes, strict=True):
            if a.dtype != dt or not a.flags.c_contiguous or a.shape != full:
                msg = (
                    "combine_into: outputs must be C-contiguous arrays of the same shape with "
                    "dtypes float32/uint16/uint16/uint16/float32; allocate them with "
                    "CombineResult.empty(shape)"
                )
                raise ValueError(msg)
        # planes: everything before the last two axes (or one plane for 1-D)
        if len(band) >= 2:
            n_planes = int(np.prod(band[:-2], dtype=np.int64))
            width = band[-1]
            plane_size = height * width
            q = rows * width
            out_start = np.arange(n_planes, dtype=np.int64) * plane_size + y0 * width
        else:
            n_planes = 1
            q = rows
            out_start = np.array([y0], dtype=np.int64)
        positive = wframe[np.isfinite(wframe) & (wframe > 0)]
        uniform = not use_pix and (positive.size == 0 or bool(np.all(positive == positive[0])))
        stack3 = arr.reshape(n, n_planes, q)
        wpix3 = wpix.reshape(n, n_planes, q) if use_pix else wpix
        network, block = _sorting_plan(n)
        combine_pixels(
            stack3,
            wframe,
            wpix3,
            use_pix,
            uniform,
            METHOD_CODES[self.method],
            self._fpar(),
            self._ipar(),
            self._esd(n),
            network,
            block,
            _blockwise(),
            out_start,
            out.image.reshape(-1),
            out.rejected_low.reshape(-1),
            out.rejected_high.reshape(-1),
            out.count.reshape(-1),
            out_w.reshape(-1),
            write_w,
        )

    def _describe(self, n_frames: int) -> dict[str, Any]:
        return {**self.parameters, "n_frames": int(n_frames)}

    # -- public ------------------------------------------------------------------------
    def __call__(self, stack: np.ndarray, weights: np.ndarray | None = None) -> CombineResult:
        """Combine ``stack`` (float32 ``[N, ...]``, NaN = no data).

        Parameters
        ----------
        stack : numpy.ndarray
            ``[N, ...]``; converted to C-contiguous float32 if it is not already.
        weights : numpy.ndarray, optional
            ``[N]`` per frame or ``stack.shape`` per pixel; NaN or <= 0 means no data.

        Returns
        -------
        CombineResult
        """
        arr = _as_stack(stack)
        shape = arr.shape[1:] if arr.ndim > 1 else ()
        out = CombineResult.empty(
            shape if shape else (1,),
            self.method,
            self._describe(arr.shape[0]),
            weight_map=weights is not None,
        )
        self._run(arr, weights, out, 0)
        if not shape:
            for name in ("image", "rejected_low", "rejected_high", "count", "weight"):
                setattr(out, name, getattr(out, name).reshape(()))
        return out

    def into(
        self,
        stack: np.ndarray,
        out: CombineResult,
        y0: int = 0,
        weights: np.ndarray | None = None,
    ) -> CombineResult:
        """Combine a band of rows and write it into full-size outputs, without copies.

        Parameters
        ----------
        stack : numpy.ndarray
            ``[N, rows, W]`` or ``[N, c, rows, W]`` (any ``[N, ..., rows, W]``).
        out : CombineResult
            Full-size outputs ``[H, W]`` / ``[c, H, W]`` from :meth:`CombineResult.empty`.
        y0 : int
            First output row of the band.
        weights : numpy.ndarray, optional
            ``[N]`` or the band's shape.

        Returns
        -------
        CombineResult
            ``out``, with rows ``y0:y0+rows`` filled and ``method``/``parameters`` set.
        """
        arr = _as_stack(stack)
        if arr.ndim < 2:
            msg = f"combine_into: stack band must be [N, ..., rows, W], got shape {arr.shape}"
            raise ValueError(msg)
        self._run(arr, weights, out, int(y0))
        out.method = self.method
        out.parameters = self._describe(arr.shape[0])
        return out


def _check_sigmas(name: str, lo: float, hi: float) -> None:
    if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0 and hi >= 0):
        msg = f"{name}: sigma_low and sigma_high must be finite and >= 0, got {lo}, {hi}"
        raise ValueError(msg)


def _check_iters(name: str, maxiters: int) -> None:
    if int(maxiters) < 1:
        msg = f"{name}: maxiters must be >= 1, got {maxiters}"
        raise ValueError(msg)


@dataclass(frozen=True)
class MeanCombine(Combiner):
    """Weighted mean of all finite values, no rejection (best SNR without outliers)."""

    method: ClassVar[str] = "mean"


@dataclass(frozen=True)
class MedianCombine(Combiner):
    """Median of the finite values (unweighted; ``weight`` is still the sum of weights).

    Robust but noisier than a clipped mean (efficiency ~64 % for Gaussian noise).
    """

    method: ClassVar[str] = "median"


@dataclass(frozen=True)
class SigmaClipCombine(Combiner):
    """Iterative sigma clipping around the median, as :func:`astropy.stats.sigma_clip`.

    Each pass keeps ``median - sigma_low*s <= x <= median + sigma_high*s`` where ``s`` is
    the *classic population standard deviation* of the values still kept
    (``stdfunc='std'``, astropy's default) or the MAD sigma (``stdfunc='mad_std'``);
    passes repeat until nothing changes or ``maxiters``.  Identical to astropy's
    ``sigma_clip(cenfunc='median', stdfunc='std', maxiters=maxiters)`` followed by the
    weighted mean of the unclipped values.
    """

    sigma_low: float = 3.0
    sigma_high: float = 3.0
    maxiters: int = 10
    stdfunc: str = "std"
    method: ClassVar[str] = "sigma"

    def __post_init__(self):
        _check_sigmas("SigmaClipCombine", self.sigma_low, self.sigma_high)
        _check_iters("SigmaClipCombine", self.maxiters)
        if self.stdfunc not in ("std", "mad_std"):
            msg = f"SigmaClipCombine: stdfunc must be 'std' or 'mad_std', got {self.stdfunc!r}"
            raise ValueError(msg)

    def _fpar(self) -> np.ndarray:
        fp = super()._fpar()
        fp[FP_SIGMA_LOW] = self.sigma_low
        fp[FP_SIGMA_HIGH] = self.sigma_high
        return fp

    def _ipar(self) -> np.ndarray:
        ip = super()._ipar()
        ip[IP_MAXITERS] = self.maxiters
        ip[IP_STDFUNC] = 1 if self.stdfunc == "mad_std" else 0
        return ip


@dataclass(frozen=True)
class WinsorizedSigmaClipCombine(Combiner):
    """Winsorized sigma clipping (Huber's method, as PixInsight / Siril).

    Each pass estimates a robust location ``m`` and scale ``sigma`` by iterated
    winsorization (Huber's proposal 2): start from the median and the MAD sigma,
    clip (winsorize) the values at ``m +- 1.5 sigma``, set ``m`` = their mean and
    ``sigma = 1.134 *`` their sample std, and repeat until sigma changes by < 0.05 %.
    Values rejected by earlier passes stay in that estimate as winsorized values (they
    lie beyond the clip points anyway), so sigma does not shrink pass after pass on
    clean data.  On the first pass, values beyond ``cutoff`` times
    ``min(Huber sigma, MAD sigma)`` from the median are then replaced by ``m`` rather
    than the bound (PixInsight's winsorization cutoff) and the estimate is refined (kept
    if its sigma is > 0), so gross outliers do not inflate sigma; the bounds stay fixed
    during the refinement (bounds following the shrinking sigma collapse it on clean
    data whose MAD is low by chance).  Then values below ``m - sigma_low*sigma`` or above
    ``m + sigma_high*sigma`` are rejected.  Passes repeat until nothing changes or
    ``maxiters``.  At least ``min_kept`` values are kept: when a pass would go below
    that, only the most deviant are rejected and clipping stops.

    Each winsorization restarts from the original values (the M-estimator's fixed
    point) rather than re-clipping the already clipped ones as Siril and PixInsight do:
    cumulative clipping biases sigma low for small N (-5 % at N=20), which rejects
    2-3x too many good values.  Centring on the Huber (winsorized) mean, as PixInsight
    does, rejects fewer good values than Siril's median centre.  Measured on Gaussian
    noise with N=20: 0.48 % of values rejected, 0.09 % of pixels lose 4 or more,
    combined noise 1.4 % above ``sigma / sqrt(N)``; with a 5 sigma cutoff, 15 % of
    values hit by +50 sigma events leave 0.03 % bad pixels (6.9 % without the cutoff).
    """

    sigma_low: float = 3.0
    sigma_high: float = 3.0
    maxiters: int = 10
    min_kept: int = 3
    cutoff: float = 5.0
    method: ClassVar[str] = "winsorized"

    def __post_init__(self):
        _check_sigmas("WinsorizedSigmaClipCombine", self.sigma_low, self.sigma_high)
        _check_iters("WinsorizedSigmaClipCombine", self.maxiters)
        if int(self.min_kept) < 2:
            msg = f"WinsorizedSigmaClipCombine: min_kept must be >= 2, got {self.min_kept}"
            raise ValueError(msg)
        if not (self.cutoff == 0 or self.cutoff >= 1.5):
            msg = f"WinsorizedSigmaClipCombine: cutoff must be 0 (off) or >= 1.5, got {self.cutoff}"
            raise ValueError(msg)

    def _fpar(self) -> np.ndarray:
        fp = super()._fpar()
        fp[FP_SIGMA_LOW] = self.sigma_low
        fp[FP_SIGMA_HIGH] = self.sigma_high
        fp[FP_CUTOFF] = self.cutoff
        return fp

    def _ipar(self) -> np.ndarray:
        ip = super()._ipar()
        ip[IP_MAXITERS] = self.maxiters
        ip[IP_MIN_KEPT] = self.min_kept
        return ip


@dataclass(frozen=True)
class LinearFitClipCombine(Combiner):
    """Linear fit clipping (PixInsight / Siril), robust to gradients across frames.

    Each pass sorts the kept values, fits a straight line ``a + b*k`` to them against
    their rank ``k`` by least squares, takes sigma = mean absolute deviation from the
    line and rejects values more than ``sigma_low`` sigma below or ``sigma_high`` sigma
    above the line.  Passes repeat until nothing changes or ``maxiters``; at least
    ``min_kept`` values are kept.  Defaults 5 / 2.5 are Siril's.
    """

    sigma_low: float = 5.0
    sigma_high: float = 2.5
    maxiters: int = 10
    min_kept: int = 3
    method: ClassVar[str] = "linear_fit"

    def __post_init__(self):
        _check_sigmas("LinearFitClipCombine", self.sigma_low, self.sigma_high)
        _check_iters("LinearFitClipCombine", self.maxiters)
        if int(self.min_kept) < 2:
            msg = f"LinearFitClipCombine: min_kept must be >= 2, got {self.min_kept}"
            raise ValueError(msg)

    def _fpar(self) -> np.ndarray:
        fp = super()._fpar()
        fp[FP_SIGMA_LOW] = self.sigma_low
        fp[FP_SIGMA_HIGH] = self.sigma_high
        return fp

    def _ipar(self) -> np.ndarray:
        ip = super()._ipar()
        ip[IP_MAXITERS] = self.maxiters
        ip[IP_MIN_KEPT] = self.min_kept
        return ip


@dataclass(frozen=True)
class ESDCombine(Combiner):
    """Generalized extreme Studentized deviate test (Rosner 1983), as Siril's GESDT.

    With ``n`` values at a pixel, up to ``r = min(floor(outlier_fraction * n), n - 3)``
    extremes are tested: for ``i = 1..r`` the value farthest from the mean of those
    remaining is set aside with ``R_i = |x - mean| / s`` (sample std); the number of
    outliers is the largest ``i`` with ``R_i > lambda_i``, where
    ``lambda_i = (n-i) t / sqrt((n-i-1+t^2)(n-i+1))`` and ``t`` is Student's t
    quantile ``1 - significance / (2(n-i+1))`` with ``n-i-1`` degrees of freedom.
    Needs no sigma thresholds; best for large N.
    """

    outlier_fraction: float = 0.3
    significance: float = 0.05
    method: ClassVar[str] = "esd"

    def __post_init__(self):
        if not 0.0 <= self.outlier_fraction < 1.0:
            msg = f"ESDCombine: outlier_fraction must be in [0, 1), got {self.outlier_fraction}"
            raise ValueError(msg)
        if not 0.0 < self.significance < 1.0:
            msg = f"ESDCombine: significance must be in (0, 1), got {self.significance}"
            raise ValueError(msg)

    def _esd(self, n_frames: int) -> np.ndarray:
        return _esd_table(int(n_frames), float(self.significance))

    def _fpar(self) -> np.ndarray:
        fp = super()._fpar()
        fp[FP_ESD_FRAC] = self.outlier_fraction
        return fp


@dataclass(frozen=True)
class PercentileClipCombine(Combiner):
    """Percentile clipping (Siril): one pass around the median ``m``.

    Rejects ``(m - x) / |m| > percentile_low`` and ``(x - m) / |m| > percentile_high``
    (fractions of the median; no rejection where ``m == 0``).  Suited to very few frames,
    where no sigma can be estimated.
    """

    percentile_low: float = 0.2
    percentile_high: float = 0.1
    method: ClassVar[str] = "percentile"

    def __post_init__(self):
        lo, hi = self.percentile_low, self.percentile_high
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0 and hi >= 0):
            msg = f"PercentileClipCombine: fractions must be finite and >= 0, got {lo}, {hi}"
            raise ValueError(msg)

    def _fpar(self) -> np.ndarray:
        fp = super()._fpar()
        fp[FP_PERC_LOW] = self.percentile_low
        fp[FP_PERC_HIGH] = self.percentile_high
        return fp


@dataclass(frozen=True)
class MinMaxCombine(Combiner):
    """Reject the ``n_low`` lowest and ``n_high`` highest values, then average.

    Pixels with ``n_low + n_high`` values or fewer are averaged without rejection.
    """

    n_low: int = 1
    n_high: int = 1
    method: ClassVar[str] = "minmax"

    def __post_init__(self):
        if int(self.n_low) < 0 or int(self.n_high) < 0:
            msg = f"MinMaxCombine: n_low and n_high must be >= 0, got {self.n_low}, {self.n_high}"
            raise ValueError(msg)

    def _ipar(self) -> np.ndarray:
        ip = super()._ipar()
        ip[IP_N_LOW] = self.n_low
        ip[IP_N_HIGH] = self.n_high
        return ip


_CLASSES: dict[str, type[Combiner]] = {
    cls.method: cls
    for cls in (
        MeanCombine,
        MedianCombine,
        SigmaClipCombine,
        WinsorizedSigmaClipCombine,
        LinearFitClipCombine,
        ESDCombine,
        PercentileClipCombine,
        MinMaxCombine,
    )
}
_ALL_PARAMS = sorted({f.name for cls in _CLASSES.values() for f in fields(cls)})


def _build(method: str, params: dict[str, Any]) -> Combiner:
    cls = _CLASSES[method]
    own = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - set(_ALL_PARAMS))
    if unknown:
        msg = (
            f"combine: unknown parameter(s) {unknown} for method {method!r}; "
            f"valid parameters are {_ALL_PARAMS}"
        )
        raise ValueError(msg)
    ignored = sorted(set(params) - own)
    if ignored:
        logger.debug("combine: method %r ignores parameter(s) %s", method, ignored)
    return cls(**{k: v for k, v in params.items() if k in own})


@dataclass(frozen=True)
class AutoCombine:
    """Pick the rejection by the number of frames N, then run it.

    ===========  ===============  =====================================================
    N            method           why
    ===========  ===============  =====================================================
    1 - 5        ``percentile``   too few values for any sigma estimate; a fraction of
                                  the median still removes hot pixels and cosmic rays
    6 - 24       ``winsorized``   robust sigma from few values; removes +50 sigma
                                  events even when 2-3 hit the same pixel
    25 and more  ``esd``          a proper test with a known false-alarm rate: the
                                  best efficiency on clean data at large N
    ===========  ===============  =====================================================

    Measured on Gaussian noise (20 000 pixels; noise of the result relative to
    ``sigma / sqrt(N)``, then with 3 % of values hit by +50 sigma events: pixels whose
    result is off by > 5 ``sigma / sqrt(N)``):

    ====  ==========================  ==========================  ===================
    N     winsorized                  esd                         linear_fit (5/2.5)
    ====  ==========================  ==========================  ===================
    6     1.048, 0.06 % bad           1.033, 1.2 % bad            1.011, 16.6 % bad
    12    1.029, 0.01 % bad           1.040, 0.04 % bad           1.056, 4.8 % bad
    20    1.014, 0.00 % bad           1.019, 0.00 % bad           1.095, 2.0 % bad
    30    1.020, 0.00 % bad           1.013, 0.00 % bad           1.143, 0.2 % bad
    50    1.021, 0.00 % bad           1.012, 0.00 % bad           1.211, 0.03 % bad
    ====  ==========================  ==========================  ===================

    (Classic sigma clipping: 1.004-1.018 on clean data but 0.9-16 % bad pixels with the
    hits, because each hit inflates the std it is measured against.)

    Linear fit clipping with Siril's 5 / 2.5 thresholds rejects 5-10 % of clean values
    (a line fitted to sorted Gaussian values misses the tails by several mean absolute
    deviations), so it is not chosen automatically; it remains available for stacks whose
    frames were not normalised.  Extra parameters (e.g. ``sigma_low``) are passed to the
    chosen method when it has them.
    """

    params: dict[str, Any] = field(default_factory=dict)
    method: ClassVar[str] = "auto"

    def select(self, n_frames: int) -> Combiner:
        """The combiner used for a stack of ``n_frames`` frames."""
        if n_frames < 6:
            name = "percentile"
        elif n_frames < 25:
            name = "winsorized"
        else:
            name = "esd"
        return _build(name, self.params)

    def _pick(self, n_frames: int) -> Combiner:
        chosen = self.select(n_frames)
        # debug, not info: the engine calls this once per band and channel
        logger.debug("combine: auto rejection chose %r for N=%d frames", chosen.method, n_frames)
        return chosen

    def __call__(self, stack: np.ndarray, weights: np.ndarray | None = None) -> CombineResult:
        """Choose by ``stack.shape[0]`` and combine (see :meth:`Combiner.__call__`)."""
        arr = np.asarray(stack)
        chosen = self._pick(arr.shape[0])
        res = chosen(arr, weights)
        res.parameters = {**res.parameters, "requested": "auto"}
        return res

    def into(self, stack, out: CombineResult, y0: int = 0, weights=None) -> CombineResult:
        """Choose by ``stack.shape[0]`` and write a band (see :meth:`Combiner.into`)."""
        arr = np.asarray(stack)
        chosen = self.select(arr.shape[0])
        res = chosen.into(arr, out, y0, weights)
        res.parameters = {**res.parameters, "requested": "auto"}
        return res


def get_combiner(method: str = "winsorized", **params: Any) -> Combiner | AutoCombine:
    """Build the combiner for a method name.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    **params
        Fields of the method's class (e.g. ``sigma_low``, ``maxiters``,
        ``outlier_fraction``).  Parameters that belong to another method are ignored
        (so one configuration can serve ``auto``); unknown names raise ``ValueError``.

    Returns
    -------
    Combiner or AutoCombine
    """
    key = str(method).lower()
    if key == "auto":
        unknown = sorted(set(params) - set(_ALL_PARAMS))
        if unknown:
            msg = f"combine: unknown parameter(s) {unknown}; valid parameters are {_ALL_PARAMS}"
            raise ValueError(msg)
        return AutoCombine(params=dict(params))
    if key not in _CLASSES:
        msg = f"combine: unknown method {method!r}; choose one of {list(METHODS)}"
        raise ValueError(msg)
    return _build(key, params)


def combine(
    stack: np.ndarray,
    method: str = "winsorized",
    weights: np.ndarray | None = None,
    **params: Any,
) -> CombineResult:
    """Reject outliers per pixel and combine a stack of frames.

    Parameters
    ----------
    stack : numpy.ndarray
        float32 ``[N, ...]``; NaN/inf = no data for that frame at that pixel.
    method : str
        ``mean``, ``median``, ``sigma``, ``winsorized``, ``linear_fit``, ``esd``,
        ``percentile``, ``minmax`` or ``auto``.
    weights : numpy.ndarray, optional
        ``[N]`` per frame or ``stack.shape`` per pixel (NaN or <= 0 = no data).
    **params
        The method's parameters, e.g. ``sigma_low=3, sigma_high=3, maxiters=10``.

    Returns
    -------
    CombineResult
    """
    return get_combiner(method, **params)(stack, weights)


def combine_into(
    stack: np.ndarray,
    out: CombineResult,
    y0: int = 0,
    method: str = "winsorized",
    weights: np.ndarray | None = None,
    **params: Any,
) -> CombineResult:
    """Combine a band of rows ``[N, ..., rows, W]`` straight into full-size outputs.

    ``out`` comes from :meth:`CombineResult.empty` with the full image shape; rows
    ``y0 : y0 + rows`` of every output are written by the kernel itself (no temporary
    result, no copy).  Returns ``out``.
    """
    return get_combiner(method, **params).into(stack, out, y0, weights)
