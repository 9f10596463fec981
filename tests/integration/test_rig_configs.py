"""The rig templates in configs/ (issue 14): each validates through the real CLI without the hardware,
each runs end to end with ``--sim``; ``--sim`` itself (rig/simulate.py); the placeholder calibrations;
the wiring table in docs/RIG.md against the firmware's pins."""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from analysis.camera import calibration_to_dict, load_calibration
from rig.config import FIRMWARE_PINS, REPO_ROOT, load_config
from rig.errors import ConfigError
from rig.session import load_session
from rig.simulate import calibration_fits, simulated
from rig.verify import verify_session

pytestmark = [pytest.mark.slow, pytest.mark.firmware]

CLI = [sys.executable, "-m", "rig.cli"]
CONFIGS = REPO_ROOT / "configs"
TEMPLATES = ("reaching", "human", "three-chamber", "social")
WITH_DETECTOR = {"reaching"}  # the others record only unless the lab gives a model
WITH_ARDUINO = {"reaching", "human", "social"}


def cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=timeout)


def template(name: str) -> Path:
    return CONFIGS / f"{name}.yaml"


def raw(name: str) -> dict:
    return yaml.safe_load(template(name).read_text())


# ----------------------------------------------------------------------------- validation, no hardware
@pytest.mark.parametrize("name", TEMPLATES)
def test_template_passes_config(name: str, tmp_path: Path) -> None:
    r = cli("config", str(template(name)), "--set", f"session.output_dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{template(name)}: OK"), r.stdout
    # the placeholder calibration says what it is, a warning only where the config computes 3-D from it
    line = next(ln for ln in r.stdout.splitlines() if "a PLACEHOLDER, not of your cameras" in ln)
    assert line.lstrip().startswith("WARN" if name in WITH_DETECTOR else "ok"), line


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_passes_config_sim(name: str, tmp_path: Path) -> None:
    r = cli("config", str(template(name)), "--sim", "--set", f"session.output_dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert "--sim: " in r.stdout.splitlines()[0] and "PLACEHOLDER" not in r.stdout
    assert "builtin:synthetic" in r.stdout


def test_run_refuses_the_placeholder_calibration(tmp_path: Path) -> None:
    """3-D and the closed loop from a placeholder would be meaningless: one line, exit 2, nothing
    started."""
    r = cli("run", str(template("reaching")), "--output", str(tmp_path))
    assert r.returncode == 2, r.stdout + r.stderr
    assert re.fullmatch(
        r"deepbehavior: error: \S+PLACEHOLDER-reaching\.calib\.yaml: a placeholder calibration, not of your "
        r"cameras: .*docs/RIG\.md.*\n",
        r.stderr,
    ), r.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", TEMPLATES)
def test_placeholder_calibrations_are_marked(name: str) -> None:
    cfg = load_config(template(name)).config
    path = CONFIGS / cfg.rig.calibration
    assert path.name == f"PLACEHOLDER-{name}.calib.yaml"
    calib = load_calibration(path)
    assert calib.meta.get("placeholder")
    assert set(calib.cameras) == set(cfg.rig.cameras)
    assert path.read_text().startswith("# PLACEHOLDER calibration")


def test_templates_use_only_the_firmware_pins() -> None:
    cfg = load_config(template("reaching")).config
    assert cfg.rig.arduino is not None
    assert cfg.rig.arduino.pins.model_dump() == FIRMWARE_PINS


# ----------------------------------------------------------------------------- --sim, the pure function
def test_simulated_swaps_hardware_and_keeps_the_rest() -> None:
    before = raw("reaching")
    original = copy.deepcopy(before)
    sim = simulated(before)
    assert before == original  # pure: the input is not touched
    for name, cam in sim["rig"]["cameras"].items():
        real = before["rig"]["cameras"][name]
        assert cam["backend"] == "synthetic" and cam["serial"] is None and cam["options"] is None
        assert (cam["width"], cam["height"], cam["exposure_us"]) == (
            real["width"],
            real["height"],
            real["exposure_us"],
        )
    ard = sim["rig"]["arduino"]
    assert ard["backend"] == "simulator" and ard["serial_number"] is None and ard["port"] is None
    assert ard["servo"] == before["rig"]["arduino"]["servo"] and ard["ttl"] == before["rig"]["arduino"]["ttl"]
    assert sim["rig"]["calibration"] == "builtin:synthetic"
    assert sim["simulation"] == {}
    assert sim["session"]["name"].startswith("sim-")
    for key in ("experiment", "pipeline"):
        assert sim[key] == before[key]
    # what the nodes will load: valid, with synthetic cameras at the template's size and rate
    cfg = load_config(
        template("reaching"), overrides={k: v for k, v in sim.items() if k != "experiment"}
    ).config
    assert {c.backend for c in cfg.rig.cameras.values()} == {"synthetic"}
    assert cfg.rig.trigger.rate_hz == 124


def test_simulated_keeps_a_rig_without_arduino_without_one() -> None:
    sim = simulated(raw("three-chamber"))
    assert "arduino" not in sim["rig"]
    assert sim["rig"]["cameras"]["top"]["backend"] == "synthetic"


def test_simulated_refuses_more_cameras_than_the_simulated_rig_has() -> None:
    r = raw("reaching")
    r["rig"]["cameras"]["top"] = dict(r["rig"]["cameras"]["front"])
    with pytest.raises(ConfigError, match="at most 2 cameras"):
        simulated(r)
    assert simulated(r, keep_calibration=True)["rig"]["cameras"]["top"]["backend"] == "synthetic"


def test_calibration_fits(tmp_path: Path) -> None:
    r = raw("reaching")
    assert not calibration_fits(r, CONFIGS)  # a placeholder never fits: the built-in one is used
    calib = load_calibration(CONFIGS / "PLACEHOLDER-reaching.calib.yaml")
    data = calibration_to_dict(calib)
    data["meta"] = {}
    (tmp_path / "real.calib.yaml").write_text(yaml.safe_dump(data))
    r["rig"]["calibration"] = "real.calib.yaml"
    assert calibration_fits(r, tmp_path)  # a real calibration that sees the simulated scene is kept
    r["rig"]["cameras"]["front"]["width"] = 640
    assert not calibration_fits(r, tmp_path)  # ...unless a camera's size differs
    r["rig"]["calibration"] = "missing.calib.yaml"
    assert not calibration_fits(r, tmp_path)


def test_task_none_refuses_the_closed_loop_and_one_camera_refuses_3d(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "rig: {calibration: builtin:synthetic, cameras: {front: {backend: synthetic}, "
        "side: {backend: synthetic}}}\nsimulation: {}\nexperiment: {task: none}\n"
        "pipeline: {closed_loop: {enabled: true}}\n"
    )
    with pytest.raises(ConfigError, match=r"experiment\.task 'none' runs no task"):
        load_config(p)
    p.write_text(
        "rig: {calibration: builtin:synthetic, cameras: {top: {backend: synthetic}}}\nsimulation: {}\n"
    )
    with pytest.raises(ConfigError, match="3-D needs two or more cameras"):
        load_config(p)
    assert load_config(p, {"pipeline": {"triangulator": {"enabled": False}}}).config.rig.cameras


# ----------------------------------------------------------------------------- wiring table
def _wiring_module():
    spec = importlib.util.spec_from_file_location("wiring_table", REPO_ROOT / "scripts" / "wiring_table.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_wiring_table_in_the_guide_matches_the_firmware() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "wiring_table.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    wt = _wiring_module()
    doc = (REPO_ROOT / "docs" / "RIG.md").read_text()
    between = doc.split(wt.BEGIN, 1)[1].split(wt.END, 1)[0].strip()
    assert between == out, (
        "docs/RIG.md's wiring table is stale: python scripts/wiring_table.py --update docs/RIG.md"
    )


def test_wiring_table_pins_are_the_configs_pins() -> None:
    pins = _wiring_module().read_pins()
    assert {wt_key: pins[name] for name, (wt_key, *_rest) in _wiring_module().PINS.items()} == FIRMWARE_PINS


# ----------------------------------------------------------------------------- end to end with --sim
@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[pytest.mark.firmware] if n in WITH_ARDUINO else []) for n in TEMPLATES],
)
def test_template_runs_in_simulation(name: str, tmp_path: Path) -> None:
    command = "run" if name in WITH_DETECTOR else "record"
    r = cli(
        command,
        str(template(name)),
        "--sim",
        "--duration",
        "3",
        "--quiet",
        "--output",
        str(tmp_path),
        timeout=240,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "--sim: " in r.stdout
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert folder.name.startswith("sim-")
    s = load_session(folder)
    assert s.meta["status"] == "complete", s.meta.get("reason")
    cfg = load_config(template(name)).config
    frames = s.meta["summary"]["frames"]
    assert set(frames) == set(cfg.rig.cameras)
    for cam, f in frames.items():
        assert f["recorded"] > 0.5 * 3 * cfg.rig.trigger.rate_hz, (cam, f)
    if name in WITH_DETECTOR:
        assert s.meta["summary"]["points3d"]["valid"] > 0
    report = verify_session(folder)
    assert not report.failed, report.text()
