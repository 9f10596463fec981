"""The human task against truth (issue 20): a generated arm with known elbow, shoulder and supination
angles seen by two cameras as OpenPose JSON, with pixel noise and low-confidence keypoints (about 30 of
300 frames lose the elbow angle, 54 the supination without filling). With the defaults (3-D gaps up to
0.25 s filled, joints smoothed over 0.2 s) no frame is missing and every angle is closer to the truth."""

from __future__ import annotations

import json

import cv2
import pandas as pd
import pytest

from tests.analysis_generators import angle_errors, human_arm_case
from tests.analysis_helpers import run_cli


@pytest.fixture(scope="module")
def arm(tmp_path_factory):
    return human_arm_case(tmp_path_factory.mktemp("arm"), seed=0)


def _run(case, out, *opts):
    cams = [a for n in case.cameras for a in ("--camera", f"{n}={case.folder / n}")]
    argv = [
        "human",
        "--calibration",
        str(case.folder / "calib.yaml"),
        *cams,
        "--fps",
        "30",
        "--out",
        str(out),
    ]
    assert run_cli([*argv, *opts]) == 0
    table = pd.read_csv(out / "arm_angles.csv")
    return angle_errors({k: table[k].to_numpy() for k in case.truth}, case.truth)


def test_defaults_fill_and_smooth_closer_to_the_truth(arm, tmp_path, capsys):
    before = _run(arm, tmp_path / "plain", "--max-gap", "0", "--smooth", "0")
    after = _run(arm, tmp_path / "out", "--video")
    assert before["elbow_angle_deg"]["missing"] > 20 and before["supination_deg"]["missing"] > 40
    for k in arm.truth:
        assert after[k]["missing"] == 0, k
        assert after[k]["rms_deg"] < 0.8 * before[k]["rms_deg"], k
    assert after["supination_deg"]["rms_deg"] < 1.0 and after["elbow_angle_deg"]["rms_deg"] < 0.3
    summary = json.loads((tmp_path / "out" / "human.json").read_text())
    elbow = summary["joints"]["RElbow"]
    # a low-confidence elbow in either view: cut (both views saw it), then filled
    assert elbow["cut_low_confidence"] > 0 and elbow["missing_in_source"] == 0
    assert elbow["filled"] == elbow["cut_low_confidence"] and elbow["still_missing"] == 0
    assert (
        summary["settings"]["smooth_window_frames"] == 7 and summary["angles"]["supination"]["missing"] == 0
    )
    joints = pd.read_csv(tmp_path / "out" / "joints_3d.csv")
    assert (joints["RElbow_status"] == "filled").sum() == elbow["filled"]
    # the rotating 3-D skeleton: one video frame per row, at the data's rate
    cap = cv2.VideoCapture(str(tmp_path / "out" / "skeleton.mp4"))
    n, w, h = (
        int(cap.get(p))
        for p in (cv2.CAP_PROP_FRAME_COUNT, cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT)
    )
    ok, first = cap.read()
    cap.release()
    assert (n, w, h) == (300, 640, 480) and ok
    assert (first < 200).any(axis=2).sum() > 200  # the skeleton is drawn (dark lines on white)
    assert summary["video"] == {"frames": 300, "width": 640, "height": 480, "fps": 30.0}


def test_figures_from_the_analysis_folder(arm, tmp_path, capsys):
    _run(arm, tmp_path / "out")
    assert run_cli(["figures", "human", str(tmp_path / "out"), "--out", str(tmp_path / "fig")]) == 0
    sizes = {"arm_angles.png": (800, 660), "angle_histograms.png": (600, 400), "skeleton_3d.png": (600, 500)}
    for name, (w, h) in sizes.items():
        img = cv2.imread(str(tmp_path / "fig" / name))
        assert img is not None and img.shape[:2] == (h, w), name
        assert (img < 200).any(axis=2).sum() > 2000, name
    cap = cv2.VideoCapture(str(tmp_path / "fig" / "skeleton.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 300
    cap.release()
    assert run_cli(["figures", "human", str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err
