"""A rig session folder (the golden v1 example) exported to NWB and read back."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.errors import AnalysisError
from analysis.session_nwb import session_to_nwb

GOLDEN = Path(__file__).parents[1] / "golden" / "session-v1"


def test_golden_session_to_nwb(tmp_path):
    from pynwb import NWBHDF5IO, validate

    out = session_to_nwb(GOLDEN, tmp_path / "s.nwb")
    assert validate(path=str(out)) == []
    frames = pd.read_csv(GOLDEN / "front.frames.csv")
    k0 = min(pd.read_csv(GOLDEN / f"{c}.frames.csv")["trigger_index"].min() for c in ("front", "side"))
    p3 = pd.read_csv(GOLDEN / "points3d.csv")
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert nwb.subject.subject_id == "sim-mouse-01" and nwb.identifier == "session-v1"
        tr = nwb.trials.to_dataframe()
        assert list(tr["outcome"]) == ["success", "success"]
        video = nwb.acquisition["video_front"]
        assert list(video.external_file[:]) == ["front.mkv"]
        # frames are timed by their trigger (no triggers.csv here: index / rate), never by host arrival
        np.testing.assert_allclose(video.timestamps[:], (frames["trigger_index"] - k0) / 124.0)
        # a trial's start (host clock) is placed on the trigger time base by the line through the frames'
        # (host time, trigger time) pairs
        both = pd.concat([pd.read_csv(GOLDEN / f"{c}.frames.csv") for c in ("front", "side")])
        h0 = both["t_host_ns"].iloc[0]
        slope, offset = np.polyfit((both["t_host_ns"] - h0) * 1e-9, (both["trigger_index"] - k0) / 124.0, 1)
        starts = (pd.read_csv(GOLDEN / "trials.csv")["t_start_ns"] - h0) * 1e-9
        np.testing.assert_allclose(tr["start_time"], offset + slope * starts, atol=1e-6)
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
    with pytest.raises(AnalysisError, match=r"session.json: not a deepbehavior-session file"):
        session_to_nwb(tmp_path / "s", tmp_path / "x.nwb")
    assert not (tmp_path / "x.nwb").exists()
    assert run_cli(["nwb-export", str(tmp_path / "s"), "--out", str(tmp_path / "x.nwb")]) == 2
    assert "not a deepbehavior-session file" in capsys.readouterr().err and not (tmp_path / "x.nwb").exists()


def test_frames_are_timed_by_their_trigger_on_the_firmware_clock(tmp_path):
    """With a clock record (triggers.csv), NWB's timestamps are the firmware's trigger times: a crystal
    100 ppm slow and host arrival jitter do not enter them."""
    from pynwb import NWBHDF5IO

    s = tmp_path / "s"
    shutil.copytree(GOLDEN, s)
    frames = pd.read_csv(s / "front.frames.csv")
    k = np.arange(frames["trigger_index"].min(), frames["trigger_index"].max() + 1)
    fw_us = 5000 + np.round(k * (1e6 / 124) * (1 + 1e-4)).astype(np.int64)
    host = frames.set_index("trigger_index")["t_host_ns"].reindex(k).interpolate().to_numpy(np.int64)
    pd.DataFrame({"index": k, "t_host_ns": host, "t_fw_us": fw_us}).to_csv(s / "triggers.csv", index=False)
    out = session_to_nwb(s, tmp_path / "s.nwb")
    with NWBHDF5IO(str(out), "r") as io:
        ts = io.read().acquisition["video_front"].timestamps[:]
    want = (fw_us[frames["trigger_index"] - k[0]] - fw_us[0]) * 1e-6
    np.testing.assert_allclose(ts, want, atol=1e-9)
