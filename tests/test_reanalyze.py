"""Batch reanalysis on a real Dask local cluster reproduces the online 3-D (same code path)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from rig.session import read_csv_columns
from tests.sessions import run_session

pytestmark = pytest.mark.timeout(400)


def test_reanalysis_reproduces_online_3d_and_is_resumable(tmp_path):
    r, s = run_session(tmp_path / "rec", "--trials", "1")
    assert r.returncode == 0 and s is not None, r.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "session.json").write_text("{not json")
    cli = [sys.executable, "-m", "rig.cli", "reanalyze", "--quiet", "--workers", "2"]
    out = subprocess.run([*cli, str(s.path), str(broken)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1  # one bad session fails the batch's exit code...
    assert f"FAILED  {broken}" in out.stdout and "session.json: not valid JSON" in out.stdout
    assert f"done    {s.path}" in out.stdout  # ...but not the other sessions
    summary = json.loads((s.path / "reanalysis" / "summary.json").read_text())
    assert summary["validity_agrees"] is True
    assert (
        summary["max_abs_diff_vs_online_mm"] < 1e-6
    )  # same code, same inputs (10 significant digits on disk)
    off = read_csv_columns(s.path / "reanalysis" / "points3d.csv")
    assert np.array_equal(off["trigger_index"], s.points3d["trigger_index"])
    # resumable: a second run skips the finished session
    shutil.rmtree(broken)
    again = subprocess.run([*cli, str(s.path)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "skipped" in again.stdout
