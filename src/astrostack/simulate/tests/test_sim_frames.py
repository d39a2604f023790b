"""In-memory frames: the truth is consistent with the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from astrostack.simulate import (
    ADU_MAX,
    SessionConfig,
    flat_level,
    frame_date,
    make_scene,
    make_sensor,
    plan_lights,
    render_sky,
    simulate_bias,
    simulate_dark,
    simulate_flat,
    simulate_light,
    to_frame,
)


@pytest.fixture(scope="module")
def hard_small():
    cfg = SessionConfig.small(
        n_lights=8, bad_frames={"clouds": 1, "trailing": 1, "defocus": 1}, mirrored=1,
        meridian_flip=True, satellites=2, amp_glow=1.0, scale_range=(0.98, 1.02),
        rotation_range=5.0, cosmic_rays_per_frame=10.0,
    )  # fmt: skip
    return cfg, make_scene(cfg), make_sensor(cfg)


@pytest.mark.parametrize("bayer", [None, "GRBG"])
def test_noiseless_light_is_bias_plus_dark_plus_flat_sky(hard_small, bayer):
    cfg, scene, sensor = hard_small
    if bayer is not None:
        cfg = cfg.replace(bayer=bayer)
        scene, sensor = make_scene(cfg), make_sensor(cfg)
    # A dithered, rotated light without glow or satellite (those are checked elsewhere).
    plan = next(p for p in plan_lights(cfg)[1:] if not p.glow and not p.satellites)
    assert abs(plan.rotation) > 0.1
    data, truth = simulate_light(cfg, plan.index, noise=False, scene=scene, sensor=sensor)
    assert len(truth.cosmic_rays) == 0
    t = cfg.exposure
    sky = render_sky(cfg, truth.matrix, truth.fwhm, scene=scene, exposure=1.0,
                     transparency=truth.transparency, sky_factor=truth.sky_factor,
                     elongation=truth.elongation, psf_angle=truth.psf_angle)  # fmt: skip
    dark_adu = sensor.dark_rate(cfg, cfg.temperature) / cfg.gain
    qe = 1.0 if bayer is None else np.tile(np.array(cfg.qe)[[[1, 0], [2, 1]]], (128, 128))
    pred = sensor.bias + dark_adu * t + sensor.flat * qe * sky * t / cfg.gain
    ok = pred < ADU_MAX
    err = np.abs(data[ok] - pred[ok])
    assert err.max() <= 0.5 + 1e-3
    np.testing.assert_array_equal(data[~ok], ADU_MAX)


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_bayer_sampling_picks_each_pixels_channel(pattern):
    cfg = SessionConfig.small(bayer=pattern, n_stars=0, nebula=0.0, galaxy=0.0, gradient=0.0,
                              vignetting=0.0, n_dust=0, dark_current=0.0,
                              hot_pixel_density=0.0, sky_level=20.0)  # fmt: skip
    data, truth = simulate_light(cfg, 0, noise=False)
    sensor = make_sensor(cfg)
    signal = (data - sensor.bias.astype(np.float64)) * cfg.gain / cfg.exposure
    per_channel = np.array(cfg.qe) * np.array([1.15, 1.0, 0.85]) * 20.0 * truth.sky_factor
    lookup = {"R": 0, "G": 1, "B": 2}
    for dy in range(2):
        for dx in range(2):
            want = per_channel[lookup[pattern[2 * dy + dx]]]
            assert signal[dy::2, dx::2].mean() == pytest.approx(want, rel=2e-3)
    # The RGB truth planes, mosaicked by the pattern, are the light's sky.
    rgb = render_sky(cfg, None, truth.fwhm, exposure=1.0, mosaic=False, sky_factor=2.0)
    mos = render_sky(cfg, None, truth.fwhm, exposure=1.0, mosaic=True, sky_factor=2.0)
    for dy in range(2):
        for dx in range(2):
            c = lookup[pattern[2 * dy + dx]]
            np.testing.assert_array_equal(mos[dy::2, dx::2], rgb[c, dy::2, dx::2])


def test_coloured_stars_on_the_mosaic():
    cfg = SessionConfig.small(bayer="RGGB", nebula=0.0, galaxy=0.0, sky_level=0.0)
    scene = make_scene(cfg)
    rgb = render_sky(cfg, None, 3.0, scene=scene, exposure=1.0, mosaic=False).astype(np.float64)
    inside = scene.stars.inside(cfg.shape, margin=-30)
    st = scene.stars
    # Flux per channel over the frame = sum of star flux * colour (stars far from edges).
    for c in range(3):
        box = np.zeros(cfg.shape)
        box[30:-30, 30:-30] = 1
        total = (rgb[c] * box).sum()
        want = (st.flux[inside] * st.colour[inside, c]).sum()
        assert total == pytest.approx(want, rel=0.03)


def test_saturation_clips_at_65535():
    cfg = SessionConfig.small(star_flux=(1e5, 1e6), n_stars=30, exposure=300.0)
    data, _ = simulate_light(cfg, 0)
    assert data.dtype == np.uint16
    assert (data == ADU_MAX).sum() > 30
    core = data == ADU_MAX
    # Saturated pixels are exactly where the expectation exceeds full scale.
    clean, _ = simulate_light(cfg, 0, noise=False)
    assert np.mean(clean[core] == ADU_MAX) > 0.97


def test_determinism_and_seed():
    cfg = SessionConfig.small(satellites=1)
    a, ta = simulate_light(cfg, 2)
    b, tb = simulate_light(cfg, 2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ta.cosmic_rays, tb.cosmic_rays)
    c, _ = simulate_light(cfg.replace(seed=cfg.seed + 1), 2)
    assert np.mean(a != c) > 0.5
    for fn in (simulate_bias, simulate_dark, simulate_flat):
        np.testing.assert_array_equal(fn(cfg, 1)[0], fn(cfg, 1)[0])
        assert not np.array_equal(fn(cfg, 0)[0], fn(cfg, 1)[0])


def test_noise_statistics_of_a_light(hard_small):
    cfg, scene, sensor = hard_small
    noisy, truth = simulate_light(cfg, 1, scene=scene, sensor=sensor)
    clean, _ = simulate_light(cfg, 1, noise=False, scene=scene, sensor=sensor)
    expected_e = (clean - sensor.bias) * cfg.gain
    resid = (noisy.astype(np.float64) - clean) * cfg.gain
    mask = np.ones(cfg.shape, bool)
    hits = truth.cosmic_rays.astype(int)
    mask[hits[:, 1], hits[:, 0]] = False
    mask &= clean < 60000
    z = resid[mask] / np.sqrt(np.maximum(expected_e[mask], 0) + cfg.read_noise**2 + cfg.gain**2 / 6)
    assert z.std() == pytest.approx(1.0, abs=0.03)
    assert abs(z.mean()) < 0.02
    # Cosmic rays: the deposit shows up at the recorded pixel.
    assert len(truth.cosmic_rays) > 0
    x, y, e = truth.cosmic_rays[np.argmax(truth.cosmic_rays[:, 2])]
    assert resid[int(y), int(x)] == pytest.approx(
        e, abs=float(6 * np.sqrt(expected_e[int(y), int(x)] + 50))
    )


def test_transform_determinants_and_flip(hard_small):
    cfg, _, _ = hard_small
    plans = plan_lights(cfg)
    np.testing.assert_array_equal(plans[0].matrix, np.eye(3))
    for p in plans:
        det = np.linalg.det(p.matrix[:2, :2])
        assert np.sign(det) == (-1 if p.mirrored else 1)
        assert abs(det) == pytest.approx(p.scale**2, rel=1e-12)
        lin = p.matrix[:2, :2] @ (np.diag([-1.0, 1.0]) if p.mirrored else np.eye(2))
        angle = np.rad2deg(np.arctan2(lin[1, 0], lin[0, 0]))
        want = p.rotation + (180 if p.flipped else 0)
        assert (angle - want + 180) % 360 - 180 == pytest.approx(0, abs=1e-9)
    assert sum(p.flipped for p in plans) == cfg.n_lights // 2
    assert sum(p.mirrored for p in plans) == 1
    # Frame centre maps to reference centre + shift.
    c = np.array([(cfg.shape[1] - 1) / 2, (cfg.shape[0] - 1) / 2, 1.0])
    for p in plans:
        np.testing.assert_allclose((p.matrix @ c)[:2], c[:2] + p.shift, atol=1e-9)


def test_bad_frames_are_measurably_bad(hard_small):
    cfg, scene, sensor = hard_small
    plans = plan_lights(cfg)
    bad = {p.bad: p for p in plans if p.bad}
    assert set(bad) == {"clouds", "trailing", "defocus"}
    assert all(p.index != 0 for p in bad.values())
    clean = plans[0]
    # Clouds: stars dimmed to ~1/3, sky doubled (measured from rendered components).
    cl = bad["clouds"]
    star_c = render_sky(cfg, cl.matrix, cl.fwhm, scene=scene, extended=False, background=False,
                        transparency=cl.transparency)  # fmt: skip
    star_0 = render_sky(cfg, clean.matrix, clean.fwhm, scene=scene, extended=False,
                        background=False, transparency=clean.transparency)  # fmt: skip
    ratio = star_c[40:-40, 40:-40].sum() / star_0[40:-40, 40:-40].sum()
    assert 0.2 < ratio < 0.5
    assert cl.sky_factor / clean.sky_factor == pytest.approx(2.0, rel=0.15)
    assert cl.glow is not None and cl.glow["level"] > 0
    # Trailing: elongated stars; defocus: FWHM 2.5-3x the seeing range.
    assert 2.5 <= bad["trailing"].elongation <= 4.0
    assert bad["defocus"].fwhm >= 2.5 * cfg.seeing[0]
    # Satellites: endpoints on the frame border, trail visible in the pixels.
    sats = [p for p in plans if p.satellites]
    assert len(sats) == 2
    p = sats[0]
    s = p.satellites[0]
    h, w = cfg.shape
    for x, y in ((s["x0"], s["y0"]), (s["x1"], s["y1"])):
        on_edge = min(abs(x + 0.5), abs(x - (w - 0.5)), abs(y + 0.5), abs(y - (h - 0.5)))
        assert on_edge < 1e-6
    with_trail, _ = simulate_light(cfg, p.index, noise=False, scene=scene, sensor=sensor)
    mid = ((s["x0"] + s["x1"]) / 2, (s["y0"] + s["y1"]) / 2)
    p.satellites = []
    without, _ = simulate_light(cfg, p.index, noise=False, scene=scene, sensor=sensor, plan=p)
    peak_e = s["electrons_per_pixel"] / (np.sqrt(2 * np.pi) * s["fwhm"] / 2.3548)
    yx = (round(mid[1]), round(mid[0]))
    got = (with_trail[yx].astype(float) - without[yx]) * cfg.gain / sensor.flat[yx]
    assert 0.5 * peak_e < got <= 1.01 * peak_e


def test_flat_frame_levels():
    cfg = SessionConfig.small(bayer="RGGB")
    sensor = make_sensor(cfg)
    data, truth = simulate_flat(cfg, 0, sensor=sensor)
    assert truth.level == pytest.approx(flat_level(cfg))
    signal = data - sensor.bias.astype(np.float64)
    # The brightest channel (G: qe 1.0 x panel 1.0) averages flat_level * 65535 - bias.
    g = np.concatenate([signal[0::2, 1::2].ravel(), signal[1::2, 0::2].ravel()])
    assert g.mean() == pytest.approx(cfg.flat_level * 65535 - cfg.bias_level, rel=0.01)
    ratio = (signal / sensor.flat)[0::2, 0::2].mean() / (signal / sensor.flat)[0::2, 1::2].mean()
    assert ratio == pytest.approx(0.8 * 0.75, rel=0.01)  # R: qe 0.8, panel 0.75


def test_dates_increase_through_the_session():
    cfg = SessionConfig.small(n_darkflats=2)
    dates = [frame_date(cfg, "light", i) for i in range(cfg.n_lights)]
    for kind, n in (("dark", 3), ("darkflat", 2), ("flat", 3), ("bias", 3)):
        dates += [frame_date(cfg, kind, i) for i in range(n)]
    assert dates == sorted(dates) and len(set(dates)) == len(dates)


def test_to_frame_metadata():
    cfg = SessionConfig.small(bayer="GBRG")
    data, rec = simulate_light(cfg, 1)
    frame = to_frame(cfg, data, rec)
    assert frame.data.dtype == np.float32 and frame.data.shape == cfg.shape
    np.testing.assert_array_equal(frame.data, data)
    m = frame.meta
    assert (m.kind, m.exposure, m.egain, m.bayer, m.temperature) == (
        "light", cfg.exposure, cfg.gain, "GBRG", cfg.temperature)  # fmt: skip
    assert m.date.isoformat(timespec="milliseconds") == rec.date_obs + "+00:00"
    assert m.is_color and m.pixel_scale_arcsec == pytest.approx(206.264806 * 3.76 / 400.0)
    dark = to_frame(cfg, *simulate_dark(cfg, 0))
    assert dark.meta.kind == "dark" and dark.meta.header["IMAGETYP"] == "Dark Frame"
