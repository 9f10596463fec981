"""Triangulation and filtering on the synthetic rig's known cameras."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.camera import load_calibration, save_calibration
from analysis.errors import AnalysisError
from analysis.filters import KalmanCV
from analysis.geometry import reprojection_errors, triangulate
from rig.sim.scene import synthetic_calibration


@pytest.fixture
def cams():
    calib = synthetic_calibration()
    return [calib["front"], calib["side"]]


def test_noise_free_points_triangulate_exactly(cams):
    rng = np.random.default_rng(0)
    pts = rng.uniform([-8, -25, -18], [8, 3, 6], (200, 3))
    obs = np.stack([c.project(pts) for c in cams])  # distorted pixels
    est = triangulate(cams, obs)
    assert np.abs(est - pts).max() < 1e-6
    assert reprojection_errors(cams, est, obs).max() < 1e-6


def test_missing_view_gives_nan_and_weights_ignore_zero(cams):
    pts = np.array([[0.0, -10.0, -5.0], [1.0, -5.0, 0.0]])
    obs = np.stack([c.project(pts) for c in cams])
    obs[1, 0] = np.nan
    est = triangulate(cams, obs)
    assert np.isnan(est[0]).all() and np.allclose(est[1], pts[1])
    w = np.ones((2, 2))
    w[0, 1] = 0.0
    assert np.isnan(triangulate(cams, obs, w)).all()


def test_bad_shape_is_named(cams):
    with pytest.raises(AnalysisError, match=r"shape \(C=2, N, 2\)"):
        triangulate(cams, np.zeros((3, 5, 2)))


def test_calibration_file_round_trip(tmp_path, cams):
    calib = synthetic_calibration()
    p = save_calibration(calib, tmp_path / "rig.calib.yaml")
    back = load_calibration(p)
    for name in ("front", "side"):
        a, b = calib[name], back[name]
        pts = np.array([[1.0, -4.0, 2.0]])
        assert np.allclose(a.project(pts), b.project(pts), atol=1e-6)
    with pytest.raises(AnalysisError, match="no camera named 'top'"):
        back["top"]


def test_kalman_tracks_and_predicts_constant_velocity():
    kf = KalmanCV(accel_noise=5.0, meas_noise=0.2)
    v = np.array([10.0, -5.0, 2.0])  # mm/s
    rng = np.random.default_rng(1)
    for k in range(200):
        t = k / 124
        out = kf.update(t, v * t + rng.normal(0, 0.2, 3))
    assert np.linalg.norm(out - v * t) < 0.2  # single measurements err ~0.35
    assert np.linalg.norm(kf.predict(0.1) - v * (t + 0.1)) < 0.5
