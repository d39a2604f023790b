"""Configuration: defaults < file < overrides, TOML round trip, clear errors."""

from __future__ import annotations

import tomllib

import pytest

from astrostack.pipeline.config import (
    CONFIG_FILENAME,
    PipelineConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    config_to_toml,
    load_config,
    parse_fraction,
    resolve_config,
)


def test_precedence_defaults_file_flags(tmp_path):
    defaults = PipelineConfig()
    assert defaults.stack.sigma_high == 3.0
    assert defaults.selection.max_fwhm is None
    (tmp_path / CONFIG_FILENAME).write_text(
        '[stack]\nsigma_high = 2.5\nmethod = "winsorized"\n[selection]\nmax_fwhm = 4.0\n'
    )
    from_file = resolve_config(tmp_path)
    assert from_file.stack.sigma_high == 2.5
    assert from_file.stack.method == "winsorized"
    assert from_file.selection.max_fwhm == 4.0
    assert from_file.stack.sigma_low == 3.0  # untouched default
    # Flags beat the file; None flags (not given) leave the file's value.
    flags = resolve_config(
        tmp_path, overrides={"stack.sigma_high": 2.0, "max_fwhm": None, "min_stars": 20}
    )
    assert flags.stack.sigma_high == 2.0
    assert flags.selection.max_fwhm == 4.0
    assert flags.selection.min_stars == 20
    assert flags.stack.method == "winsorized"
    # An explicit --config file replaces the folder's file.
    other = tmp_path / "other.toml"
    other.write_text("[stack]\nsigma_low = 4.0\n")
    explicit = resolve_config(tmp_path, config=other)
    assert explicit.stack.sigma_low == 4.0
    assert explicit.stack.sigma_high == 3.0
    # The base configuration is never mutated by overrides.
    assert from_file.stack.sigma_high == 2.5


def test_override_key_forms():
    cfg = PipelineConfig()
    a = apply_overrides(
        cfg, {"stack__method": "sigma", "keep_best": 0.8, "color.mode": "superpixel"}
    )
    assert a.stack.method == "sigma"
    assert a.selection.keep_best == 0.8
    assert a.color.mode == "superpixel"
    assert cfg.stack.method == "auto"
    with pytest.raises(ValueError, match="unknown option"):
        apply_overrides(cfg, {"no_such_option": 1})
    assert apply_overrides(cfg, {"method": "median"}).stack.method == "median"
    with pytest.raises(ValueError, match="expected int"):
        apply_overrides(cfg, {"min_stars": 2.5})


def test_bad_values_name_the_source(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[stack]\nsigma_high = "high"\n')
    with pytest.raises(ValueError, match=r"bad\.toml.*stack\.sigma_high"):
        load_config(bad)
    bad.write_text("[stak]\nx = 1\n")
    with pytest.raises(ValueError, match="unknown section"):
        load_config(bad)
    bad.write_text("[stack\n")
    with pytest.raises(ValueError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(ValueError, match="not one of"):
        config_from_dict({"color": {"mode": "quarterpixel"}})
    with pytest.raises(ValueError, match=r"stack\.method.*not one of"):
        config_from_dict({"stack": {"method": "avg"}})
    with pytest.raises(ValueError, match=r"stack\.normalization"):
        config_from_dict({"stack": {"normalization": "scale"}})
    with pytest.raises(ValueError, match=r"stack\.weighting"):
        config_from_dict({"stack": {"weighting": "snr"}})


def test_toml_round_trip():
    cfg = apply_overrides(PipelineConfig(), {"max_fwhm": 3.5, "stack.sigma_low": 2.0})
    text = config_to_toml(cfg)
    assert "# min_stars = ...  (unset)" in text
    back = config_from_dict(tomllib.loads(text))
    assert config_to_dict(back) == config_to_dict(cfg)


def test_parse_fraction():
    assert parse_fraction("90%") == pytest.approx(0.9)
    assert parse_fraction("0.75") == pytest.approx(0.75)
    assert parse_fraction("80") == pytest.approx(0.8)
    for bad in ("0%", "150%", "abc", "-0.2"):
        with pytest.raises(ValueError, match="keep-best"):
            parse_fraction(bad)
