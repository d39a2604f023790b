"""Asterism matching: triangle invariants, voting, RANSAC and least-squares refinement.

The method
----------
1. Triangles are built from each of the ``n_brightest`` stars and pairs of its
   ``k_neighbours`` nearest neighbours (O(n k^2) triangles instead of O(n^3)).
2. A triangle's invariant is ``(L_mid / L_max, L_min / L_max)`` with its sorted side
   lengths: it does not change under translation, rotation, scale or mirroring.
   Its vertices are ordered by the length of the opposite side, so two matching
   triangles give three point correspondences.
3. Frame invariants are matched to reference invariants with a KD-tree
   (``scipy.spatial.cKDTree``) within ``tolerance``; every matched triangle votes
   for its three star pairs.
4. ``skimage.measure.ransac`` fits a similarity transform to the voted pairs,
   once on the frame positions and once on a mirrored copy (scikit-image's
   similarity never contains a reflection); the better hypothesis wins.  Scales
   outside ``scale_range`` are rejected.
5. Refinement: all stars of the frame are mapped through the hypothesis and
   paired with their mutual nearest reference star; the requested model is fitted
   by least squares to those pairs, outliers beyond 3 sigma are clipped, and the
   pairing is repeated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.spatial import cKDTree
from skimage.measure import ransac
from skimage.transform import SimilarityTransform

from .transform import MIN_POINTS, MODELS, apply_matrix, auto_model, fit_transform

__all__ = ["MatchError", "MatchResult", "match_stars", "triangle_invariants"]

logger = logging.getLogger(__name__)

_FLIP = np.diag([1.0, -1.0, 1.0])


class MatchError(ValueError):
    """Star lists that could not be matched; ``reason`` says why."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass
class MatchResult:
    """A transform found by star matching.

    Attributes
    ----------
    matrix : ndarray
        3x3, maps frame ``(x, y)`` to reference ``(x, y)``.
    model : str
        Model actually fitted (``'auto'`` resolved).
    frame_index, ref_index : ndarray
        Indices of the matched stars in the frame and reference lists.
    rms : float
        RMS residual of the matched stars after the fit (reference px).
    mirrored : bool
        True if the transform contains a reflection.
    """

    matrix: np.ndarray
    model: str
    frame_index: np.ndarray
    ref_index: np.ndarray
    rms: float
    mirrored: bool

    @property
    def n_matches(self) -> int:
        """Number of matched star pairs used in the final fit."""
        return int(self.frame_index.size)


def triangle_invariants(
    xy: np.ndarray, k_neighbours: int = 6, min_side: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour triangles and their similarity- and mirror-invariant shape.

    Parameters
    ----------
    xy : ndarray
        ``[n, 2]`` star positions.
    k_neighbours : int
        Neighbours per star used to form triangles.
    min_side : float
        Triangles with a longest side shorter than this (px) are dropped.

    Returns
    -------
    vertices : ndarray
        ``[m, 3]`` int star indices, ordered by the length of the opposite side
        (longest first).
    invariants : ndarray
        ``[m, 2]`` ``(L_mid / L_max, L_min / L_max)``.
    """
    xy = np.asarray(xy, dtype=np.float64)
    n = len(xy)
    if n < 3:
        return np.zeros((0, 3), dtype=np.int64), np.zeros((0, 2))
    k = min(k_neighbours, n - 1)
    _, nn = cKDTree(xy).query(xy, k=k + 1)
    nn = nn[:, 1:]
    pairs = np.array(list(combinations(range(k), 2)), dtype=np.int64)
    tri = np.column_stack(
        [
            np.repeat(np.arange(n), len(pairs)),
            nn[:, pairs[:, 0]].ravel(),
            nn[:, pairs[:, 1]].ravel(),
        ]
    )
    tri = np.unique(np.sort(tri, axis=1), axis=0)
    p = xy[tri]  # [m, 3, 2]
    # side opposite vertex v joins the other two
    opp = np.stack(
        [
            np.linalg.norm(p[:, 1] - p[:, 2], axis=1),
            np.linalg.norm(p[:, 0] - p[:, 2], axis=1),
            np.linalg.norm(p[:, 0] - p[:, 1], axis=1),
        ],
        axis=1,
    )
    order = np.argsort(-opp, axis=1)
    sides = np.take_along_axis(opp, order, axis=1)
    tri = np.take_along_axis(tri, order, axis=1)
    good = sides[:, 0] >= min_side
    sides, tri = sides[good], tri[good]
    inv = np.column_stack([sides[:, 1] / sides[:, 0], sides[:, 2] / sides[:, 0]])
    return tri, inv


def _candidate_pairs(
    fxy: np.ndarray, rxy: np.ndarray, k_neighbours: int, tolerance: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ftri, finv = triangle_invariants(fxy, k_neighbours)
    rtri, rinv = triangle_invariants(rxy, k_neighbours)
    if len(ftri) == 0 or len(rtri) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    sdm = cKDTree(finv).sparse_distance_matrix(cKDTree(rinv), tolerance, output_type="ndarray")
    if len(sdm) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    fi = ftri[sdm["i"]].ravel()
    ri = rtri[sdm["j"]].ravel()
    code = fi * len(rxy) + ri
    uniq, votes = np.unique(code, return_counts=True)
    order = np.argsort(-votes, kind="stable")
    uniq, votes = uniq[order], votes[order]
    return uniq // len(rxy), uniq % len(rxy), votes


def _mutual_best(fi: np.ndarray, ri: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """Mask of pairs that are the top-voted pair of both their stars (input sorted by votes)."""
    _, first_f = np.unique(fi, return_index=True)
    _, first_r = np.unique(ri, return_index=True)
    best_f = np.zeros(fi.size, dtype=bool)
    best_r = np.zeros(fi.size, dtype=bool)
    best_f[first_f] = True
    best_r[first_r] = True
    return best_f & best_r


def _ransac_similarity(
    src: np.ndarray,
    dst: np.ndarray,
    threshold: float,
    scale_range: tuple[float, float],
    max_trials: int,
    seed: int,
) -> tuple[np.ndarray | None, np.ndarray]:
    lo, hi = scale_range

    def valid(model, *_args) -> bool:
        s = float(np.sqrt(abs(np.linalg.det(np.asarray(model.params)[:2, :2]))))
        return lo <= s <= hi

    model, inliers = ransac(
        (src, dst),
        SimilarityTransform,
        min_samples=2,
        residual_threshold=threshold,
        is_model_valid=valid,
        max_trials=max_trials,
        stop_probability=0.999,
        rng=seed,
    )
    if not model or inliers is None:
        return None, np.zeros(len(src), dtype=bool)
    return np.asarray(model.params, dtype=np.float64), np.asarray(inliers, dtype=bool)


def _mutual_nearest(
    pred: np.ndarray, rxy: np.ndarray, rtree: cKDTree, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    d, j = rtree.query(pred, k=1, distance_upper_bound=radius)
    ok = np.isfinite(d)
    fi = np.nonzero(ok)[0]
    rj = j[ok]
    if fi.size == 0:
        return fi, rj
    # keep the closest frame star for each reference star
    order = np.lexsort((d[ok], rj))
    fi, rj = fi[order], rj[order]
    first = np.ones(rj.size, dtype=bool)
    first[1:] = rj[1:] != rj[:-1]
    return fi[first], rj[first]


def match_stars(
    frame_xy: np.ndarray,
    ref_xy: np.ndarray,
    *,
    model: str = "auto",
    n_brightest: int = 50,
    k_neighbours: int = 6,
    tolerance: float = 0.015,
    ransac_threshold: float = 2.0,
    match_radius: float = 3.0,
    scale_range: tuple[float, float] = (0.4, 2.5),
    allow_mirror: bool = True,
    min_matches: int = 4,
    max_trials: int = 1000,
    seed: int = 0,
) -> MatchResult:
    """Find the transform mapping frame stars onto reference stars.

    Parameters
    ----------
    frame_xy, ref_xy : ndarray
        ``[n, 2]`` star positions ``(x, y)``, brightest first.
    model : str
        ``'auto'`` or one of :data:`~astrostack.register.transform.MODELS`; ``'auto'``
        picks by the number of matches (:func:`~astrostack.register.transform.auto_model`).
    n_brightest : int
        Stars of each list used to build triangles (doubled on a second attempt).
    k_neighbours : int
        Nearest neighbours per star used for triangles.
    tolerance : float
        Match radius in triangle-invariant space.
    ransac_threshold : float
        RANSAC inlier distance (reference px).
    match_radius : float
        Initial pairing radius (px) during refinement; shrinks to ``max(1, 4 rms)``.
    scale_range : tuple of float
        Accepted scale of frame to reference.
    allow_mirror : bool
        Also consider mirrored solutions.
    min_matches : int
        Minimum matched stars for success.
    max_trials : int
        RANSAC trials.
    seed : int
        RANSAC random seed (results are reproducible).

    Returns
    -------
    MatchResult

    Raises
    ------
    MatchError
        If the lists cannot be matched (too few stars, no consistent asterism).
    """
    if model != "auto" and model not in MODELS:
        msg = f"unknown transform model {model!r}; use 'auto' or one of {', '.join(MODELS)}"
        raise ValueError(msg)
    fxy_all = np.asarray(frame_xy, dtype=np.float64).reshape(-1, 2)
    rxy_all = np.asarray(ref_xy, dtype=np.float64).reshape(-1, 2)
    if len(fxy_all) < 3 or len(rxy_all) < 3:
        msg = f"too few stars to match ({len(fxy_all)} in frame, {len(rxy_all)} in reference)"
        raise MatchError(msg)
    best: tuple[int, np.ndarray] | None = None
    for n in (n_brightest, 2 * n_brightest):
        fxy, rxy = fxy_all[:n], rxy_all[:n]
        fi, ri, votes = _candidate_pairs(fxy, rxy, k_neighbours, tolerance)
        if fi.size < 2:
            continue
        # True pairs collect many votes (a star sits in many triangles): keep, for
        # each star, only its best-voted partner in the other list.
        keep = _mutual_best(fi, ri, votes) & (votes >= 2)
        if keep.sum() < 8:
            keep = votes >= 2 if (votes >= 2).sum() >= 8 else np.ones(fi.size, dtype=bool)
        fi, ri = fi[keep][:400], ri[keep][:400]
        src, dst = fxy[fi], rxy[ri]
        hyps = []
        m, inl = _ransac_similarity(src, dst, ransac_threshold, scale_range, max_trials, seed)
        if m is not None:
            hyps.append((int(inl.sum()), m))
        confident = m is not None and inl.sum() >= max(10, 0.25 * fi.size)
        if allow_mirror and not confident:
            m, inl = _ransac_similarity(
                src * [1.0, -1.0], dst, ransac_threshold, scale_range, max_trials, seed
            )
            if m is not None:
                hyps.append((int(inl.sum()), m @ _FLIP))
        for count, m in hyps:
            if best is None or count > best[0]:
                best = (count, m)
        if best is not None and best[0] >= max(min_matches, 6):
            break
        if len(fxy_all) <= n and len(rxy_all) <= n:
            break
    if best is None or best[0] < 3:
        msg = "no consistent asterism between frame and reference"
        raise MatchError(msg)
    return _refine(best[1], fxy_all, rxy_all, model, match_radius, min_matches, allow_mirror)


def _refine(
    matrix: np.ndarray,
    fxy: np.ndarray,
    rxy: np.ndarray,
    model: str,
    radius: float,
    min_matches: int,
    allow_mirror: bool,
) -> MatchResult:
    rtree = cKDTree(rxy)
    fi = rj = np.zeros(0, dtype=np.int64)
    rms = np.inf
    fitted = model
    for _ in range(4):
        pred = apply_matrix(matrix, fxy)
        fi, rj = _mutual_nearest(pred, rxy, rtree, radius)
        fitted = auto_model(fi.size) if model == "auto" else model
        if fi.size < max(min_matches, MIN_POINTS[fitted]):
            msg = f"only {fi.size} stars matched after refinement (need {min_matches})"
            raise MatchError(msg)
        for _clip in range(3):
            m = fit_transform(fxy[fi], rxy[rj], fitted, allow_mirror=allow_mirror)
            if m is None:
                msg = f"degenerate {fitted} fit on {fi.size} stars"
                raise MatchError(msg)
            res = np.linalg.norm(apply_matrix(m, fxy[fi]) - rxy[rj], axis=1)
            sigma = max(1.4826 * float(np.median(res)), 0.02)
            good = res <= max(3.0 * sigma, 0.1)
            if good.all() or good.sum() < max(min_matches, MIN_POINTS[fitted]):
                break
            fi, rj = fi[good], rj[good]
        matrix = m
        rms = float(np.sqrt(np.mean(res[good] ** 2)))
        radius = max(1.0, min(radius, 4.0 * max(rms, 0.25)))
    return MatchResult(
        matrix=matrix,
        model=fitted,
        frame_index=fi,
        ref_index=rj,
        rms=rms,
        mirrored=bool(np.linalg.det(matrix[:2, :2]) < 0),
    )
