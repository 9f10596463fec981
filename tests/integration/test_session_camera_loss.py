"""A camera that vanishes mid-session (the real arv-fake-gv-camera process killed under a running
`deepbehavior record`): the session stops with the reason naming the camera, exits non-zero, and every
frame recorded so far, from both cameras, stays readable."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml

from tests.sessions import wait_for_log

pytestmark = [pytest.mark.slow, pytest.mark.firmware, pytest.mark.timeout(240)]
aravis_tests = pytest.importorskip("tests.integration.test_cameras_aravis")  # skips there without Aravis


def test_camera_lost_mid_session_stops_safely_with_the_recording_intact(tmp_path):
    fake = aravis_tests.start_fake()
    try:
        cams = {
            # Aravis' in-process Fake camera stays; the GigE camera on loopback goes away
            "front": {"backend": "aravis", "serial": "1", "hardware_trigger": False,
                      "options": {"fake_interface": True, "fps": 60}},
            "side": {"backend": "aravis", "serial": aravis_tests.SERIAL, "hardware_trigger": False,
                     "options": {"fps": 60}},
        }  # fmt: skip
        cfg = {
            "rig": {"name": "aravis-loss", "calibration": "builtin:synthetic", "cameras": cams},
            "experiment": {"n_trials": None, "max_duration_s": 60},
            "pipeline": {"detector": {"enabled": False}},
        }
        p = tmp_path / "rig.yaml"
        p.write_text(yaml.safe_dump(cfg))
        out = tmp_path / "s"
        proc = subprocess.Popen(
            [sys.executable, "-m", "rig.cli", "record", str(p), "--quiet", "--output", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for_log(out, r"node recorder starting", 90)
            time.sleep(4.0)
            aravis_tests.stop_fake(fake)  # the camera is unplugged
            _stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        aravis_tests.stop_fake(fake)
    assert proc.returncode != 0, "a session that lost a camera must not exit 0"
    assert "camera 'side'" in stderr, stderr[-2000:]
    assert "Traceback" not in stderr
    from rig.session import load_session

    folder = next(out.iterdir())
    s = load_session(folder)
    assert s.meta["status"] == "failed" and "side" in s.meta["reason"], s.meta
    assert "camera 'side'" in (folder / "session.log").read_text()
    for cam in ("front", "side"):
        n_recorded = int((s.frames[cam]["video_index"] >= 0).sum())
        assert n_recorded > 60, (cam, n_recorded)  # more than a second of frames before the loss
        assert sum(1 for _ in s.read_frames(cam)) == n_recorded, cam
