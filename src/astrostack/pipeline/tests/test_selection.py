"""Frame selection flags injected bad frames, with the right reasons, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from astrostack.pipeline.config import SelectionConfig
from astrostack.pipeline.selection import (
    choose_reference,
    quality_score,
    robust_z,
    select_frames,
)


def _session(n=24, seed=1):
    rng = np.random.default_rng(seed)
    names = [f"light_{i:03d}.fits" for i in range(n)]
    m = {
        "fwhm": rng.normal(3.0, 0.12, n),
        "eccentricity": np.clip(rng.normal(0.18, 0.03, n), 0, 1),
        "n_stars": rng.normal(400, 15, n).round(),
        "background": 1000 + np.linspace(0, 40, n) + rng.normal(0, 3, n),  # slow drift
        "noise": rng.normal(12.0, 0.3, n),
    }
    return names, m


def test_flags_injected_bad_frames_with_reasons():
    names, m = _session()
    # clouds: stars drop and background jumps
    m["n_stars"][3] = 90
    m["background"][3] += 300
    # thin cloud lit by the city: background jump, stars 25% dimmer
    m["background"][7] += 250
    m["n_stars"][7] *= 0.75
    # moonrise: brighter sky, same stars -> kept (normalisation and weights handle it)
    m["background"][9] += 400
    # trailing
    m["eccentricity"][11] = 0.72
    # defocus
    m["fwhm"][15] = 5.4
    # satellite-flooded: many spurious detections
    m["n_stars"][19] = 1300
    # better transparency later in the night: more stars -> kept
    m["n_stars"][21] = 560
    sel = select_frames(names, m, SelectionConfig())
    excluded = sel.excluded
    assert set(excluded) == {names[i] for i in (3, 7, 11, 15, 19)}
    assert "clouds" in excluded[names[3]]
    assert "background" in excluded[names[7]]
    assert "trailing" in excluded[names[11]]
    assert "FWHM" in excluded[names[15]]
    assert "satellite" in excluded[names[19]]
    assert sel.n_used == 19
    d = sel.to_dict()
    assert len(d["used"]) == 19 and set(d["excluded"]) == set(excluded)


def test_no_false_positives_on_clean_sessions():
    # 50 clean sessions of 12 frames (like the demo): nothing may be rejected.
    total = 0
    for seed in range(50):
        names, m = _session(n=12, seed=seed)
        total += len(select_frames(names, m).excluded)
    assert total == 0


def test_homogeneous_session_tiny_mad():
    names, m = _session(n=10)
    m["fwhm"][:] = 3.0
    m["fwhm"][4] = 3.1  # a 3% difference with MAD = 0 is not defocus
    assert select_frames(names, m).n_used == 10


def test_user_limits_and_keep_best():
    names, m = _session(n=20)
    m["fwhm"][2] = 3.6
    sel = select_frames(names, m, SelectionConfig(max_fwhm=3.5))
    assert list(sel.excluded) == [names[2]]
    assert "--max-fwhm" in sel.excluded[names[2]]
    m["n_stars"][5] = 300
    sel = select_frames(names, m, SelectionConfig(min_stars=350))
    assert names[5] in sel.excluded and "--min-stars" in sel.excluded[names[5]]
    # keep 75% of 20 = 15 best by score; the dropped ones are the 5 lowest scores
    sel = select_frames(names, m, SelectionConfig(keep_best=0.75))
    assert sel.n_used == 15
    worst = set(np.argsort(sel.score)[:5])
    assert {names.index(n) for n in sel.excluded} == worst
    assert all("--keep-best" in r for r in sel.excluded.values())


def test_preexcluded_and_no_stars():
    names, m = _session(n=8)
    m["n_stars"][1] = 0
    m["fwhm"][1] = np.nan
    sel = select_frames(names, m, preexcluded={names[6]: "registration failed: too few stars"})
    assert sel.excluded[names[1]] == "no stars detected"
    assert sel.excluded[names[6]] == "registration failed: too few stars"
    assert sel.n_used == 6


def test_robust_z_and_score():
    v = np.array([1.0, 1.1, 0.9, 1.0, 10.0, np.nan])
    z, med, sig = robust_z(v)
    assert med == pytest.approx(1.0)
    assert sig == pytest.approx(1.4826 * 0.1)
    assert z[4] > 50 and np.isnan(z[5])
    s = quality_score({"fwhm": np.array([2.0, 4.0]), "noise": np.array([1.0, 1.0])})
    assert s[0] / s[1] == pytest.approx(4.0)


def test_reference_is_sharpest_without_pointing():
    n = [400, 420, 380, 410]
    fwhm = [3.0, 2.8, 3.1, 2.8]
    assert choose_reference(n, fwhm) == 1  # 420 / 2.8^2 is the best; earlier on ties
    assert choose_reference([400, 400], [3.0, 3.0]) == 0
    assert choose_reference([], []) == -1
    # frames without a FWHM are not chosen while another frame has one
    assert choose_reference([900, 300], [np.nan, 3.0]) == 1
    # no FWHM anywhere: most stars
    assert choose_reference([100, 300, 200], [np.nan, np.nan, np.nan]) == 1


def test_reference_among_near_ties_is_nearest_the_median_pointing():
    rng = np.random.default_rng(5)
    n = rng.normal(400, 4, 12).round()
    fwhm = rng.normal(3.0, 0.02, 12)  # all within a few per cent: near-ties
    fwhm[3] = 3.6  # clearly softer
    distance = rng.uniform(5, 30, 12)
    distance[3] = 0.0  # nearest the median pointing, but not sharp enough
    distance[8] = 1.0
    assert choose_reference(n, fwhm, distance) == 8
    # measurement noise in FWHM and star counts does not move the choice
    for seed in range(20):
        r = np.random.default_rng(100 + seed)
        noisy_n = n * r.normal(1, 0.01, 12)
        noisy_f = fwhm * r.normal(1, 0.01, 12)
        assert choose_reference(noisy_n, noisy_f, distance) == 8
    # a strict band picks the sharpest, and an unknown pointing is never preferred
    best = int(np.argmax(n / fwhm**2))
    assert choose_reference(n, fwhm, distance, tolerance=0.0) == best
    far = distance.copy()
    far[8] = np.nan
    assert choose_reference(n, fwhm, far) != 8
    with pytest.raises(ValueError, match="tolerance"):
        choose_reference(n, fwhm, distance, tolerance=1.0)
    with pytest.raises(ValueError, match="one length"):
        choose_reference(n, fwhm[:-1])
