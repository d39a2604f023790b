"""The ``run``, ``demo`` and ``config`` commands: exit codes, JSON summary, precedence."""

from __future__ import annotations

import json
import tomllib

import pytest
from typer.testing import CliRunner

from astrostack.cli import app
from astrostack.simulate import SessionConfig, simulate_session

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("_restore_logging")


def test_config_command_precedence(tmp_path):
    (tmp_path / "astrostack.toml").write_text("[stack]\nsigma_high = 2.5\nsigma_low = 4.0\n")
    res = runner.invoke(app, ["config", str(tmp_path), "--set", "stack.sigma_low=3.5"])
    assert res.exit_code == 0, res.output
    cfg = tomllib.loads(res.stdout)
    assert cfg["stack"]["sigma_high"] == 2.5  # file
    assert cfg["stack"]["sigma_low"] == 3.5  # flag beats file
    assert cfg["stack"]["method"] == "auto"  # default
    res = runner.invoke(app, ["config", "--set", "stack.nope=1"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["config", str(tmp_path / "missing")])
    assert res.exit_code == 2


def test_run_exit_codes(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["run", str(empty), "-o", str(tmp_path / "o1"), "--quiet"])
    assert res.exit_code == 1
    assert "no light frames" in res.stderr
    res = runner.invoke(app, ["run", str(empty), "--color-mode", "quarter", "-q"])
    assert res.exit_code == 2 and "color.mode" in res.stderr
    res = runner.invoke(app, ["run", str(empty), "--keep-best", "150%", "-q"])
    assert res.exit_code == 2 and "keep-best" in res.stderr
    res = runner.invoke(app, ["run", str(tmp_path / "missing"), "-q"])
    assert res.exit_code == 2


def test_run_with_a_truncated_file_warns_and_reports_json(tmp_path):
    night = tmp_path / "night"
    cfg = SessionConfig.small(n_lights=5, n_bias=3, n_darks=3, n_flats=3, seed=11)
    simulate_session(night, cfg)
    good = night / "lights" / "light_0001.fits"
    (night / "lights" / "light_9999.fits").write_bytes(good.read_bytes()[:5000])  # truncated
    bias = night / "bias" / "bias_0001.fits"
    (night / "bias" / "bias_9999.fits").write_bytes(bias.read_bytes()[:2880])  # header only
    res = runner.invoke(
        app,
        ["run", str(night), "-o", str(tmp_path / "out"), "--json", "--max-fwhm", "50",
         "--set", "output.keep_cache=false"],
    )  # fmt: skip
    assert res.exit_code == 3, res.output
    summary = json.loads(res.stdout)
    assert summary["exit_code"] == 3
    assert any("light_9999" in k for k in summary["skipped"])
    assert any("bias_9999" in k for k in summary["skipped"])
    (group,) = summary["groups"]
    assert len(group["used"]) == 5
    assert {s["name"] for s in summary["stages"]} >= {"calibrate", "register", "stack"}
    assert (tmp_path / "out" / "stack.fits").is_file()
    assert not (tmp_path / "out" / "cache").exists()  # output.keep_cache = false


def test_demo_command(tmp_path, monkeypatch):
    small = SessionConfig.small(n_lights=4, n_bias=3, n_darks=3, n_flats=3, seed=3)
    monkeypatch.setattr(SessionConfig, "demo", classmethod(lambda cls, **kw: small))
    res = runner.invoke(app, ["demo", "-o", str(tmp_path / "demo"), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["correlation with true sky"] > 0.95
    assert (tmp_path / "demo" / "frames" / "truth" / "truth.json").is_file()
    assert (tmp_path / "demo" / "output" / "report.html").is_file()


@pytest.mark.parametrize("flag", ["--help"])
def test_help_lists_commands(flag):
    res = runner.invoke(app, [flag])
    assert res.exit_code == 0
    for cmd in ("run", "demo", "config"):
        assert cmd in res.stdout
