"""Real CCD frames: SBIG ST-10 darks and lights (OSCAAR TrES-1 sample, no bias, no flats).

The frames are read in place from ``../shared/data/real/oscaar-tres1-st10/`` beside the
repository; the test is skipped when that folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from astrostack.calibrate import (
    build_master_dark,
    calibrate_light,
    defects_for_lights,
    estimate_noise,
    local_median,
)
from astrostack.io import read_frame

DATA = Path(__file__).resolve().parents[4] / ".." / "shared" / "data" / "real" / "oscaar-tres1-st10"


@pytest.fixture(scope="module")
def session():
    if not DATA.is_dir() or not list(DATA.glob("*d.fit")):
        pytest.skip(f"real frames not found in {DATA}")
    darks = sorted(DATA.glob("tres1-0[0-2][0-9]d.fit"))
    lights = [DATA / "tres1-020.fit", DATA / "tres1-035.fit"]
    return darks, lights


def test_real_master_dark_and_hot_pixels(session):
    darks, lights = session
    assert len(darks) == 20
    master = build_master_dark(darks)  # no bias frames: the dark keeps the offset
    assert master.n_frames == 20 and not master.skipped
    assert master.includes_bias and master.exposure == 60.0
    assert master.temperature == pytest.approx(-10.0, abs=0.3)
    # the README: median about 150 ADU, about 100 hot pixels above 1000 ADU
    assert np.median(master.data) == pytest.approx(150, abs=10)
    very_hot = master.data > 1000
    assert 80 <= very_hot.sum() <= 130, very_hot.sum()  # measured 104

    first = read_frame(lights[0])
    defects = defects_for_lights(first, dark=master)
    assert defects.hot[very_hot].all()  # every pixel above 1000 ADU is flagged
    assert defects.n_hot < 0.001 * defects.hot.size  # and not much else (measured 167)

    for path in lights:
        light = read_frame(path)
        raw_dev = _deviation(light.data, very_hot)
        subtracted = calibrate_light(light, dark=master)
        corrected = calibrate_light(light, dark=master, defects=defects)
        assert corrected.data.dtype == np.float32
        # the uncalibrated light is far off at every hot pixel ...
        assert (raw_dev < 5).mean() == 0.0
        # dark subtraction alone leaves some (non-linear, saturated) hot pixels off ...
        assert _deviation(subtracted.data, very_hot).max() > 20
        # ... after cosmetic correction every one is consistent with its neighbours
        assert (_deviation(corrected.data, very_hot) < 5).all()
        # pixels that are not defects are untouched by the correction
        keep = ~defects.mask
        np.testing.assert_array_equal(corrected.data[keep], subtracted.data[keep])
        # sky about 2600-2950 ADU minus the ~150 ADU dark
        assert 2300 < np.median(corrected.data) < 2900


def _deviation(image: np.ndarray, where: np.ndarray) -> np.ndarray:
    """|pixel - median of its 8 neighbours| in units of the image noise."""
    noise = estimate_noise(image, cfa=False)
    return np.abs(image - local_median(image, cfa=False))[where] / noise
