"""The combine kernels on real dark frames (SBIG ST-10, ../shared/data/real/oscaar-tres1-st10).

Real darks have integer values (many ties), hot pixels that must be kept, and cosmic
rays / flickering pixels that must be rejected.  Skipped when the data are absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clip

from astrostack.combine.kernels import combine
from astrostack.combine.stats import robust_location_scale

DATA = Path(__file__).resolve().parents[4] / ".." / "shared" / "data" / "real" / "oscaar-tres1-st10"


@pytest.fixture(scope="module")
def darks() -> np.ndarray:
    files = sorted(DATA.glob("tres1-0*d.fit"))
    if len(files) < 20:
        pytest.skip(f"real darks not found in {DATA}")
    # read in place (never copied or modified): a 256 x 512 crop of each of the 20 darks
    return np.stack([fits.getdata(f)[:256, :512].astype(np.float32) for f in files])


def test_sigma_on_real_darks_matches_astropy(darks):
    crop = darks[:, :96, :160]
    data = crop.astype(np.float64)
    clipped = sigma_clip(data, sigma=3, maxiters=10, cenfunc="median", stdfunc="std", axis=0)
    keep = ~np.ma.getmaskarray(clipped)
    expect = np.where(keep, data, 0).sum(0) / keep.sum(0)
    res = combine(crop, "sigma")
    np.testing.assert_allclose(res.image, expect, rtol=1e-4)
    np.testing.assert_array_equal(res.count, keep.sum(0))
    assert res.rejected_high.sum() > 0


@pytest.mark.parametrize("method", ["winsorized", "esd"])
def test_real_darks_outliers_rejected_hot_pixels_kept(darks, method):
    med = np.median(darks, axis=0)
    _, sig = robust_location_scale(darks - med)  # frame-to-frame noise, ~11 ADU
    events = darks > med + 20 * sig  # cosmic rays and flickering pixels
    hot = med > np.median(med) + 50 * sig  # stable hot pixels: real dark signal
    assert events.sum() > 50 and hot.sum() > 10  # the crop does contain both
    res = combine(darks, method)
    hit = events.any(axis=0)
    assert np.all(res.rejected_high[hit] >= events.sum(axis=0)[hit])
    assert np.abs(res.image - med)[hit].max() < 6 * sig
    # hot pixels are kept (not rejected as outliers): the master follows them closely
    assert np.max(np.abs(res.image[hot] / med[hot] - 1)) < 0.02
    # and few good values are lost
    lost = (res.rejected_low.sum() + res.rejected_high.sum()) / darks.size
    assert lost < 0.01, lost
    plain = combine(darks, "mean")
    assert np.abs(plain.image - med)[hit].max() > 20 * sig  # the test has teeth
