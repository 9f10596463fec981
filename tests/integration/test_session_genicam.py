"""A real GenICam camera pipeline end to end: two viky.cti virtual cameras (Harvesters) through the
camera nodes, shared-memory rings and the recorder of `deepbehavior record`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.firmware, pytest.mark.timeout(240)]
pytest.importorskip("harvesters.core")
genicam_mod = pytest.importorskip("rig.cameras.genicam")
CTI = genicam_mod.viky_cti()


def test_two_genicam_cameras_recorded_with_trigger_indices(tmp_path):
    if CTI is None:
        pytest.skip("the genicam wheel's viky.cti is not installed")
    opts = {"cti": str(CTI), "fps": 124, "ignore_missing": ["ExposureTime"]}
    cams = {
        name: {"backend": "genicam", "serial": serial, "hardware_trigger": False, "options": opts}
        for name, serial in (("front", "1"), ("side", "2"))
    }
    cfg = {
        "rig": {"name": "viky", "calibration": "builtin:synthetic", "cameras": cams},
        "experiment": {"n_trials": None, "max_duration_s": 4},
        "pipeline": {"detector": {"enabled": False}},
    }
    p = tmp_path / "viky.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [sys.executable, "-m", "rig.cli", "record", str(p), "--quiet", "--output", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    from rig.session import load_session

    s = load_session(next((tmp_path / "s").iterdir()))
    for cam, t in s.frames.items():
        n = len(t["seq"])
        assert n > 200, (cam, n)  # ~124 fps for ~4 s
        assert int(t["dropped"].sum()) == 0
        idx = t["trigger_index"]
        assert idx[0] == 0 and (np.diff(idx) >= 1).all()  # frame ids mapped to increasing trigger indices
        assert sum(1 for _ in s.read_frames(cam)) == n
