"""Cross-check with the project simulator: a hard night (flip, mirror, scale, bad frames)."""

from __future__ import annotations

import numpy as np
import pytest

from astrostack.register import (
    QualityTable,
    Reference,
    measure_quality,
    register_frame,
    transform_rms_difference,
)

simulate = pytest.importorskip("astrostack.simulate")


@pytest.fixture(scope="module")
def night():
    cfg = simulate.SessionConfig.hard(
        shape=(384, 512), n_lights=12, n_stars=700, satellites=1, amp_glow=0.0, n_dust=0
    )
    scene, sensor = simulate.make_scene(cfg), simulate.make_sensor(cfg)
    plans = simulate.plan_lights(cfg)
    darks = [simulate.simulate_dark(cfg, i, sensor=sensor)[0] for i in range(3)]
    master = np.median(np.stack(darks).astype(np.float32), axis=0)
    lights = [
        simulate.simulate_light(cfg, i, scene=scene, sensor=sensor, plan=plans[i])[0].astype(
            np.float32
        )
        - master
        for i in range(cfg.n_lights)
    ]
    return lights, plans


def test_good_lights_register_and_bad_ones_are_flagged(night):
    lights, plans = night
    assert {p.bad for p in plans} >= {"clouds", "trailing", "defocus"}
    assert any(p.mirrored for p in plans) and any(p.flipped for p in plans)
    ref = Reference.from_image(lights[0])
    errors = {}
    for light, plan in zip(lights, plans, strict=True):
        reg = register_frame(light, ref, name=f"light {plan.index}")
        if plan.bad is None:
            assert reg, reg
            errors[plan.index] = transform_rms_difference(reg.matrix, plan.matrix, light.shape)
            assert reg.details["mirror"] == plan.mirrored
        elif reg:  # a bad frame may register, but never to a wrong place
            err = transform_rms_difference(reg.matrix, plan.matrix, light.shape)
            assert err < 0.5, f"light {plan.index} ({plan.bad}): error {err:.2f} px"
    assert max(errors.values()) <= 0.05, errors
    table = QualityTable([measure_quality(im, f"light {p.index}")
                          for im, p in zip(lights, plans, strict=True)])  # fmt: skip
    table.flag_outliers()
    flagged = {int(f.name.split()[1]) for f in table if f.flagged}
    assert flagged == {p.index for p in plans if p.bad is not None}
