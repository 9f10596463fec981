"""Human arm angles, forearm supination and repetition segmentation on a synthetic 3-D arm with known
angles."""

from __future__ import annotations

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


def test_arm_angles_and_supination_follow_the_truth():
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
    with pytest.raises(AnalysisError, match=r"keypoint 1: shape \(4, 2\)"):
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
    lt = tables["left"]
    short = PoseTable(
        lt.points[:10], lt.confidence[:10], lt.bodyparts, ["p0"], np.arange(10), source="left10/"
    )
    with pytest.raises(AnalysisError, match=r"left10/: 10 frames but right/ \(right\) has 20"):
        triangulate_keypoints(calib, {"right": tables["right"], "left": short})
