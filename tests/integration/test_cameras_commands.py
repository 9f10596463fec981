"""`deepbehavior cameras list` / `cameras check` through their registered argparse entry points."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("PYLON_CAMEMU", "2")

from rig.cameras import commands
from rig.cameras.genicam_features import CameraFeatureError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="deepbehavior")
    commands.register(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def write_config(tmp_path: Path, rate: float, cams: str) -> Path:
    p = tmp_path / "rig.yaml"
    p.write_text(
        "rig:\n  calibration: builtin:synthetic\n"
        f"  trigger: {{rate_hz: {rate}}}\n  cameras:\n{cams}"
        "pipeline:\n  detector: {enabled: false}\n"
    )
    return p


def test_list_shows_every_backend(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pypylon")
    from rig.cameras.genicam import viky_cti

    cti = viky_cti()
    argv = ["cameras", "list", "--aravis-fake"] + (["--cti", str(cti)] if cti else [])
    assert run(argv) == 0
    out = capsys.readouterr().out
    for backend in ("spinnaker", "genicam", "aravis", "basler", "opencv"):
        assert backend in out
    assert "spinnaker  not available" in out
    assert "BaslerCamEmu" in out and "serial=1" in out
    if cti:
        assert "Viky" in out


def test_check_passes_on_two_emulated_basler_cameras(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pypylon")
    cams = (
        '    front: {backend: basler, serial: "0815-0000", options: {trigger_source: Software}}\n'
        '    side: {backend: basler, serial: "0815-0001", options: {trigger_source: Software}}\n'
    )
    rc = run(["cameras", "check", str(write_config(tmp_path, 10, cams)), "--seconds", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "PASS" in out and "skew front-side" in out
    assert "lost=0" in out


def test_check_fails_with_actionable_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rig.cameras.genicam import viky_cti

    cti = viky_cti()
    if cti is None:
        pytest.skip("viky.cti not installed")
    # viky free-runs; asking for a hardware trigger it lacks fails with the camera and feature named
    opts = f"{{cti: '{cti}', ignore_missing: [ExposureTime]}}"
    cams = f"    side: {{backend: genicam, serial: '1', options: {opts}}}\n"
    with pytest.raises(CameraFeatureError, match=r"camera 'side'.*TriggerMode"):
        run(["cameras", "check", str(write_config(tmp_path, 30, cams)), "--seconds", "1"])


def test_check_hardware_trigger_line_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Aravis' in-process fake camera simulates pulses on Line0 (25 Hz by default, options.fake_line_hz):
    with the rig's trigger at 50 Hz the check must fail, naming the missed triggers; with the simulated
    line at the rig's rate it passes."""
    pytest.importorskip("gi")
    base = "    top: {backend: aravis, serial: '1', options: {fake_interface: true, trigger_source: Line0"
    rc = run(["cameras", "check", str(write_config(tmp_path, 50, base + "}}\n")), "--seconds", "2"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert re.search(r"FAIL: top: 2\d\.\d fps, expected 50", out) and "triggers produced no frame" in out
    # the pass case at 20 Hz: the fake camera's software line keeps its beat on a loaded machine too
    cams = base + ", fake_line_hz: 20}}\n"
    rc = run(["cameras", "check", str(write_config(tmp_path, 20, cams)), "--seconds", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "missed_triggers=0" in out and "PASS" in out
