"""Replay: a recorded session plays back through the real pipeline with its frame ids and trigger indices."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.sessions import run_session

pytestmark = [pytest.mark.slow, pytest.mark.firmware, pytest.mark.timeout(300)]


def replay_config(tmp_path, source, realtime=True) -> str:
    cams = {
        name: {"backend": "replay", "options": {"path": str(source), "realtime": realtime}}
        for name in ("front", "side")
    }
    cfg = {
        "rig": {"name": "replay", "calibration": str(source / "calibration.yaml"), "cameras": cams},
        "experiment": {"n_trials": None, "max_duration_s": 60},
        "pipeline": {"detector": {"enabled": False}},
    }
    p = tmp_path / "replay.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def test_replayed_session_is_re_recorded_frame_for_frame(tmp_path):
    r, src = run_session(tmp_path / "a", "--trials", "1")
    assert r.returncode == 0 and src is not None, r.stderr
    r2 = subprocess.run(
        [
            sys.executable,
            "-m",
            "rig.cli",
            "record",
            replay_config(tmp_path, src.path),
            "--quiet",
            "--output",
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert r2.returncode == 0, r2.stderr
    from rig.session import load_session

    out = load_session(next((tmp_path / "b").iterdir()))
    assert out.meta["status"] == "stopped" or out.complete
    for cam in ("front", "side"):
        a, b = src.frames[cam], out.frames[cam]
        assert len(b["seq"]) == len(a["seq"])
        assert np.array_equal(a["trigger_index"], b["trigger_index"])
        assert np.array_equal(a["frame_id"], b["frame_id"])
        assert int(b["dropped"].sum()) == 0
        first_a = next(src.read_frames(cam))[1]
        first_b = next(out.read_frames(cam))[1]
        assert np.abs(first_a.astype(int) - first_b).mean() < 2.0  # re-encoded at crf 12


def test_unreadable_video_is_named(tmp_path):
    bad = tmp_path / "front.mkv"
    bad.write_bytes(b"\x1a\x45\xdf\xa3 definitely not a video")
    (tmp_path / "side.mkv").write_bytes(bad.read_bytes())
    from analysis.camera import save_calibration
    from rig.sim.scene import synthetic_calibration

    save_calibration(synthetic_calibration(), tmp_path / "calibration.yaml")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "rig.cli",
            "record",
            replay_config(tmp_path, tmp_path),
            "--quiet",
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0
    assert "front.mkv" in r.stderr + r.stdout or "side.mkv" in r.stderr + r.stdout
    from rig.session import load_session

    s = load_session(next((tmp_path / "out").iterdir()))
    assert s.meta["status"] == "failed" and "mkv" in s.meta["reason"] + (s.path / "session.log").read_text()
