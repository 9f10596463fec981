"""Human arm angles, forearm supination and repetition segmentation on a synthetic 3-D arm with known
angles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.errors import AnalysisError
from analysis.tasks.human import (
    elbow_angle,
    point_speed,
    segment_repetitions,
    shoulder_angle,
    supination_angle,
)


def _rot(axis: np.ndarray, ang: float) -> np.ndarray:
    import cv2

    return cv2.Rodrigues(np.asarray(axis, float) * ang)[0]


def _arm():
    """A right arm with known elbow angle, shoulder abduction and forearm rotation over 4 s at 100 Hz."""
    t = np.arange(0, 4, 0.01)
    flex = 90 + 60 * np.sin(2 * np.pi * 0.5 * t)  # elbow angle, degrees
    abd = 40 + 20 * np.sin(2 * np.pi * 0.25 * t)  # shoulder abduction, degrees
    sup = 70 * np.sin(2 * np.pi * 0.75 * t)  # forearm rotation, degrees
    n = len(t)
    shoulder = np.tile([0.0, 0.0, 1400.0], (n, 1))
    hip = np.tile([0.0, 0.0, 900.0], (n, 1))
    elbow, wrist, index, pinky = (np.zeros((n, 3)) for _ in range(4))
    for k in range(n):
        # upper arm in the x-z plane, abd degrees away from straight down
        ua = _rot([0, 1, 0], np.radians(abd[k])) @ np.array([0.0, 0.0, -300.0])
        elbow[k] = shoulder[k] + ua
        # forearm bends in the same plane by (180 - elbow angle)
        fa_dir = _rot([0, 1, 0], np.radians(180 - flex[k])) @ (ua / 300)
        wrist[k] = elbow[k] + 250 * fa_dir
        axis = fa_dir / np.linalg.norm(fa_dir)
        ref = np.array([0.0, 0.0, 1.0]) - axis[2] * axis
        ref /= np.linalg.norm(ref)
        across = _rot(axis, np.radians(sup[k])) @ ref
        index[k] = wrist[k] + 40 * axis + 35 * across
        pinky[k] = wrist[k] + 40 * axis - 35 * across
    return (
        t,
        flex,
        abd,
        sup,
        {"shoulder": shoulder, "hip": hip, "elbow": elbow, "wrist": wrist, "index": index, "pinky": pinky},
    )


def test_arm_angles_and_supination_follow_the_truth():
    t, flex, abd, sup, arm = _arm()
    shoulder, hip, elbow, wrist, index, pinky = (
        arm[k] for k in ("shoulder", "hip", "elbow", "wrist", "index", "pinky")
    )
    n = len(t)
    np.testing.assert_allclose(elbow_angle(shoulder, elbow, wrist), flex, atol=1e-6)
    np.testing.assert_allclose(shoulder_angle(hip, shoulder, elbow), abd, atol=1e-6)
    got = supination_angle(elbow, wrist, index, pinky)
    np.testing.assert_allclose(got, sup, atol=1e-6)
    speed = point_speed(t, wrist)
    assert speed.shape == (n,) and np.all(speed[1:-1] > 0)
    reps = segment_repetitions(t, elbow_angle(shoulder, elbow, wrist), min_prominence=30)
    assert len(reps) == 2  # two full flexion cycles at 0.5 Hz in 4 s
    for start, peak, end in reps:
        assert start < peak < end and flex[peak] == pytest.approx(150, abs=0.5)


def test_angles_check_shapes():
    with pytest.raises(
        AnalysisError, match=r"keypoint 1: 2-D \(x, y\) positions, shape \(4, 2\): a 3-D angle needs"
    ):
        elbow_angle(np.zeros((4, 3)), np.zeros((4, 2)), np.zeros((4, 3)))


def test_triangulate_openpose_tables_from_two_views():
    from analysis.camera import Calibration, CameraModel
    from analysis.io.pose import PoseTable
    from analysis.tasks.human import triangulate_keypoints

    k = np.array([[1000.0, 0, 640], [0, 1000, 360], [0, 0, 1]])
    left = CameraModel("left", (1280, 720), k, [-0.05, 0, 0, 0, 0])
    right = CameraModel("right", (1280, 720), k, [0.02, 0, 0, 0, 0], [0.0, -0.3, 0.0], [-900.0, 0.0, 150.0])
    calib = Calibration({"left": left, "right": right}, reference="left")
    rng = np.random.default_rng(4)
    truth = rng.uniform([-300, -300, 2500], [300, 300, 3000], (20, 4, 3))
    tables = {}
    for cam in (right, left):  # order of the mapping, not of the calibration, names the views
        px = cam.project(truth.reshape(-1, 3)).reshape(20, 1, 4, 2)
        conf = np.ones((20, 1, 4))
        conf[3, 0, 2] = 0.05 if cam.name == "left" else 1.0  # below min_confidence: that point has one view
        parts = ["RShoulder", "RElbow", "RWrist", "MidHip"]
        tables[cam.name] = PoseTable(px, conf, parts, ["p0"], np.arange(20), source=f"{cam.name}/")
    xyz, err = triangulate_keypoints(calib, tables)
    assert np.isnan(xyz[3, 2]).all()
    ok = np.isfinite(xyz).all(axis=2)
    np.testing.assert_allclose(xyz[ok], truth[ok], atol=1e-6)
    assert np.nanmax(err) < 1e-6 and err.shape == (2, 20, 4)
    # a view that lacks frames 10..19 is paired by frame number: those frames have one view, no 3-D
    lt = tables["left"]
    short = PoseTable(
        lt.points[:10], lt.confidence[:10], lt.bodyparts, ["p0"], np.arange(10), source="left10/"
    )
    xyz, err = triangulate_keypoints(calib, {"right": tables["right"], "left": short})
    assert xyz.shape == (20, 4, 3) and np.isnan(xyz[10:]).all()
    np.testing.assert_allclose(xyz[:10][ok[:10]], truth[:10][ok[:10]], atol=1e-6)
    odd = PoseTable(lt.points, lt.confidence, ["a", "b", "c", "d"], ["p0"], np.arange(20), source="odd/")
    with pytest.raises(AnalysisError, match=r"odd/: body parts differ from right/"):
        triangulate_keypoints(calib, {"right": tables["right"], "left": odd})


def _human_views(tmp_path, skip=None, left_hand=False):
    """Two calibrated OpenPose views of the synthetic right arm at 10 Hz (40 frames); ``skip`` maps a
    camera to the frame numbers it has no file for. Returns (t, flex, abd, sup, arm, cameras)."""
    import json

    import cv2

    from analysis.camera import Calibration, CameraModel, save_calibration

    t, flex, abd, sup, arm = _arm()
    t, flex, abd, sup = t[::10], flex[::10], abd[::10], sup[::10]
    arm = {k: v[::10] for k, v in arm.items()}
    k = np.array([[1000.0, 0, 640], [0, 1000, 360], [0, 0, 1]])
    # cameras 3 m in front of the subject (world z up), looking along +y
    r0 = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    cams = {}
    for name, x in (("left", -400.0), ("right", 400.0)):
        c = np.array([x, -3000.0, 1200.0])
        cams[name] = CameraModel(
            name, (1280, 720), k, [-0.05, 0.01, 0, 0, 0], cv2.Rodrigues(r0)[0].ravel(), -r0 @ c
        )
    save_calibration(Calibration(cams, reference=None), tmp_path / "c.yaml")
    body_idx = {"shoulder": 2, "elbow": 3, "wrist": 4, "hip": 8}
    hand_idx = {"wrist": 0, "index": 5, "pinky": 17}
    for name, cam in cams.items():
        folder = tmp_path / name
        folder.mkdir()
        for f in range(len(t)):
            if f in (skip or {}).get(name, ()):
                continue
            body, hand = np.zeros((25, 3)), np.zeros((21, 3))
            for part, i in body_idx.items():
                body[i] = [*cam.project(arm[part][f])[0], 0.9]
            for part, i in hand_idx.items():
                hand[i] = [*cam.project(arm[part][f])[0], 0.8]
            person = {
                "pose_keypoints_2d": body.ravel().tolist(),
                "hand_right_keypoints_2d": hand.ravel().tolist(),
                # a left hand OpenPose saw only faintly (confidence 0.05)
                "hand_left_keypoints_2d": (hand * [1, 1, 0.0625]).ravel().tolist() if left_hand else [],
            }
            (folder / f"{name}_{f:012d}_keypoints.json").write_text(
                json.dumps({"version": 1.3, "people": [person]})
            )
    return t, flex, abd, sup, arm, cams


def test_human_command_from_openpose_json_of_two_views(tmp_path, capsys):
    import pandas as pd

    from tests.analysis_helpers import run_cli

    _, flex, abd, sup, _, _ = _human_views(tmp_path)
    out = tmp_path / "out"
    cams_arg = f"--camera left={tmp_path / 'left'} --camera right={tmp_path / 'right'}"
    argv = f"human --calibration {tmp_path / 'c.yaml'} {cams_arg} --fps 10 --out {out}".split()
    rc = run_cli(argv)
    assert rc == 0
    res = pd.read_csv(out / "arm_angles.csv")
    np.testing.assert_allclose(res["elbow_angle_deg"], flex, atol=1e-3)
    np.testing.assert_allclose(res["shoulder_angle_deg"], abd, atol=1e-3)
    np.testing.assert_allclose(res["supination_deg"], sup, atol=1e-3)
    assert res["reprojection_px"].max() < 1e-3
    assert (out / "arm_angles.png").stat().st_size > 3000
    rc = run_cli([a.replace("left=", "top=") for a in argv])
    assert rc == 2 and "c.yaml: no camera named 'top' (it has: left, right)" in capsys.readouterr().err


def test_human_pairs_views_by_frame_number(tmp_path, capsys):
    """The issue's case: both views have the same number of files but different gaps. Paired by position
    every frame after the first gap would be misaligned; by frame number the angles stay right."""
    import pandas as pd

    from tests.analysis_helpers import run_cli

    _, flex, _, sup, arm, _ = _human_views(tmp_path, skip={"left": range(5, 10), "right": range(20, 25)})
    assert len(list((tmp_path / "left").iterdir())) == len(list((tmp_path / "right").iterdir())) == 35
    out = tmp_path / "out"
    argv = [
        "human", "--calibration", str(tmp_path / "c.yaml"), "--camera", f"left={tmp_path / 'left'}",
        "--camera", f"right={tmp_path / 'right'}", "--fps", "10", "--out", str(out),
    ]  # fmt: skip
    assert run_cli(argv) == 0
    cap = capsys.readouterr()
    err = cap.err
    assert "view 'left' lacks 5 of 40 frames the other views have: 5-9" in err
    assert "view 'right' lacks 5 of 40 frames the other views have: 20-24" in err
    res = pd.read_csv(out / "arm_angles.csv")
    np.testing.assert_array_equal(res["frame"], np.arange(40))
    np.testing.assert_allclose(res["t_s"], np.arange(40) / 10)  # real time: 0-3.9 s, gaps included
    one_view = np.r_[5:10, 20:25]
    assert res.loc[one_view, "elbow_angle_deg"].isna().all()
    both = np.setdiff1d(np.arange(40), one_view)
    np.testing.assert_allclose(res.loc[both, "elbow_angle_deg"], flex[both], atol=1e-3)
    np.testing.assert_allclose(res.loc[both, "supination_deg"], sup[both], atol=1e-3)
    assert res.loc[both, "reprojection_px"].max() < 1e-3
    # per-joint 3-D positions
    joints = pd.read_csv(out / "joints_3d.csv")
    np.testing.assert_allclose(
        joints.loc[both, ["RElbow_x", "RElbow_y", "RElbow_z"]], arm["elbow"][both], atol=1e-3
    )
    np.testing.assert_allclose(
        joints.loc[both, ["hand_right_Index1_x", "hand_right_Index1_y", "hand_right_Index1_z"]],
        arm["index"][both],
        atol=1e-3,
    )
    # gap filling: 3-D joint gaps of up to --max-gap seconds are filled linearly before the angles,
    # longer ones stay empty (the default 0.25 s is 2 frames at 10 fps: these 5-frame gaps stay)
    assert "elbow_angle 30/0/10" in cap.out  # measured / filled / missing
    human = json.loads((out / "human.json").read_text())
    assert human["joints"]["RElbow"] == {
        "frames": 40, "missing_in_source": 10, "cut_low_confidence": 0, "filled": 0, "still_missing": 10,
        "min_confidence": 0.1, "max_gap_s": 0.25,
    }  # fmt: skip
    assert human["settings"]["min_confidence"] == {"left": 0.1, "right": 0.1}  # OpenPose's default cut
    assert run_cli([*argv, "--max-gap", "0.4"]) == 0
    assert pd.read_csv(out / "arm_angles.csv")["elbow_angle_deg"].isna().sum() == 10
    assert run_cli([*argv, "--max-gap", "0.5", "--smooth", "0"]) == 0
    assert "elbow_angle 30/10/0" in capsys.readouterr().out
    filled = pd.read_csv(out / "arm_angles.csv")
    assert np.isfinite(filled["elbow_angle_deg"]).all()
    # measured frames unchanged without smoothing; filled ones from linearly filled joints: the truth
    # within the arm's movement over half a second
    np.testing.assert_allclose(filled.loc[both, "elbow_angle_deg"], flex[both], atol=1e-3)
    assert np.abs(filled.loc[one_view, "elbow_angle_deg"] - flex[one_view]).max() < 30.0
    joints = pd.read_csv(out / "joints_3d.csv")
    assert list(joints.loc[one_view, "RElbow_status"].unique()) == ["filled"]
    assert list(joints.loc[both, "RElbow_status"].unique()) == ["measured"]
    assert run_cli([*argv, "--max-gap", "0.5", "--smooth", "0.5"]) == 0
    smooth = pd.read_csv(out / "arm_angles.csv")["elbow_angle_deg"].to_numpy()
    assert np.isfinite(smooth).all()
    assert 0 < np.abs(smooth - filled["elbow_angle_deg"]).max() < 10.0
    assert run_cli([*argv, "--smooth", "-1"]) == 2
    assert "--max-gap and --smooth must be >= 0 seconds" in capsys.readouterr().err


def test_human_side_without_a_usable_hand_warns(tmp_path, capsys):
    from tests.analysis_helpers import run_cli

    _human_views(tmp_path, left_hand=True)
    argv = [
        "human", "--calibration", str(tmp_path / "c.yaml"), "--camera", f"left={tmp_path / 'left'}",
        "--camera", f"right={tmp_path / 'right'}", "--fps", "10", "--side", "L", "--out", str(tmp_path / "o"),
    ]  # fmt: skip
    assert run_cli(argv) == 0
    err = capsys.readouterr().err
    assert "no usable left hand in any frame" in err and "below confidence 0.1" in err
    assert run_cli([*argv, "--min-confidence", "0.01"]) == 0  # the faint hand is used when allowed
    assert "no usable left hand" not in capsys.readouterr().err
    rc = run_cli([*argv[:6], f"left={tmp_path / 'right'}", *argv[7:]])
    assert rc == 2 and "--camera left: given twice" in capsys.readouterr().err
