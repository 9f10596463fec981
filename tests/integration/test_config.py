"""Config validation: the default loads; mistakes name the file, the key path and what was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rig.config import DEFAULT_CONFIG, load_config
from rig.errors import ConfigError


def write(tmp_path: Path, data: dict, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def default_raw() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def test_default_config_is_valid():
    cfg = load_config().config
    assert set(cfg.rig.cameras) == {"front", "side"}
    assert cfg.rig.trigger.rate_hz == 124


def test_unknown_key_names_file_path_and_suggestion(tmp_path):
    raw = default_raw()
    raw["pipeline"]["detector"]["runer"] = "oracle"
    p = write(tmp_path, raw)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "pipeline.detector.runer" in msg and "did you mean 'runner'" in msg


def test_wrong_type_names_key_and_value(tmp_path):
    raw = default_raw()
    raw["rig"]["trigger"]["rate_hz"] = "fast"
    with pytest.raises(ConfigError, match=r"rig\.trigger\.rate_hz: .*'fast'"):
        load_config(write(tmp_path, raw))


def test_rig_file_errors_name_the_rig_file(tmp_path):
    raw = default_raw()
    rig = raw.pop("rig")
    rig["cameras"]["front"]["exposur_us"] = 100
    write(tmp_path, rig, "rig.yaml")
    raw["rig"] = "rig.yaml"
    p = write(tmp_path, raw)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(tmp_path / "rig.yaml") in str(e.value) and "rig.cameras.front.exposur_us" in str(e.value)


def test_exposure_longer_than_trigger_period_is_refused(tmp_path):
    raw = default_raw()
    raw["rig"]["cameras"]["side"]["exposure_us"] = 9000
    with pytest.raises(ConfigError, match=r"rig\.cameras\.side\.exposure_us=9000 is not shorter"):
        load_config(write(tmp_path, raw))


def test_invalid_yaml_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("rig:\n  cameras: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+"):
        load_config(p)


def test_cli_user_error_is_one_line_and_exit_2(tmp_path):
    raw = default_raw()
    raw["experiment"]["n_trails"] = 3
    p = write(tmp_path, raw)
    r = subprocess.run(
        [sys.executable, "-m", "rig.cli", "run", str(p)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "experiment.n_trails: unknown key (did you mean 'n_trials'?)" in r.stderr
    assert not (tmp_path / "sessions").exists()  # nothing started, nothing half-written


def test_missing_calibration_file_is_named(tmp_path):
    raw = default_raw()
    raw["rig"]["calibration"] = "nope.calib.yaml"
    p = write(tmp_path, raw)
    r = subprocess.run(
        [sys.executable, "-m", "rig.cli", "config", str(p)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    assert f"{tmp_path / 'nope.calib.yaml'}: calibration file not found" in r.stderr
