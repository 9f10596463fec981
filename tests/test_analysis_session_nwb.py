"""A rig session folder (the golden v1 example) exported to NWB and read back."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.errors import AnalysisError
from analysis.session_nwb import session_to_nwb

GOLDEN = Path(__file__).parent / "golden" / "session-v1"


def test_golden_session_to_nwb(tmp_path):
    from pynwb import NWBHDF5IO, validate

    out = session_to_nwb(GOLDEN, tmp_path / "s.nwb")
    assert validate(path=str(out)) == []
    frames = pd.read_csv(GOLDEN / "front.frames.csv")
    t0 = min(pd.read_csv(GOLDEN / f"{c}.frames.csv")["t_host_ns"].min() for c in ("front", "side"))
    p3 = pd.read_csv(GOLDEN / "points3d.csv")
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert nwb.subject.subject_id == "sim-mouse-01" and nwb.identifier == "session-v1"
        tr = nwb.trials.to_dataframe()
        assert list(tr["outcome"]) == ["success", "success"]
        np.testing.assert_allclose(
            tr["start_time"], (pd.read_csv(GOLDEN / "trials.csv")["t_start_ns"] - t0) * 1e-9
        )
        video = nwb.acquisition["video_front"]
        assert list(video.external_file[:]) == ["front.mkv"]
        np.testing.assert_allclose(video.timestamps[:], (frames["t_host_ns"] - t0) * 1e-9)
        paw = nwb.processing["behavior"]["pose_3d"].pose_estimation_series["paw"]
        np.testing.assert_allclose(paw.data[:], p3[["x", "y", "z"]].to_numpy())
        front = nwb.processing["behavior"]["pose_front"].pose_estimation_series["class0"]
        det = pd.read_csv(GOLDEN / "detections.csv")
        first = det[(det["camera"] == "front") & (det["seq"] == 0)].iloc[0]
        np.testing.assert_allclose(front.data[0], [(first.x1 + first.x2) / 2, (first.y1 + first.y2) / 2])
        labels = nwb.processing["events"]["events"].comments.split(",")
        assert "task:trial_start" in labels


def test_not_a_session_is_an_error(tmp_path, capsys):
    from tests.analysis_helpers import run_cli

    shutil.copytree(GOLDEN, tmp_path / "s")
    assert run_cli(["nwb-export", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "s.nwb").stat().st_size > 10000
    (tmp_path / "s" / "session.json").write_text('{"format": "other"}')
    with pytest.raises(AnalysisError, match=r"session.json: not a deepbehavior session"):
        session_to_nwb(tmp_path / "s", tmp_path / "x.nwb")
    assert not (tmp_path / "x.nwb").exists()
    assert run_cli(["nwb-export", str(tmp_path / "s"), "--out", str(tmp_path / "x.nwb")]) == 2
    assert "not a deepbehavior session" in capsys.readouterr().err and not (tmp_path / "x.nwb").exists()
