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
