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


@pytest.mark.parametrize("n_cams", [2, 3, 4])
def test_batched_dlt_equals_the_svd_dlt(n_cams):
    """The closed-form batched DLT (long inputs) gives the per-point SVD's answer, outlier views, partial
    views and weights included."""
    from analysis.camera import camera_ring
    from analysis.geometry import _dlt_closed_form, _dlt_svd, triangulate_normalized, undistort_points

    cams = camera_ring(n_cams, distortion=(-0.2, 0.05, 0.001, -0.002, 0.01))
    rng = np.random.default_rng(n_cams)
    n = 5000
    pts = rng.uniform([-30, -30, 270], [30, 30, 330], (n, 3))
    obs = np.stack([c.project(pts) for c in cams]) + rng.normal(0, 0.5, (n_cams, n, 2))
    obs[:, ::20] += rng.normal(0, 40, (n_cams, n // 20, 2))  # gross outliers: Newton takes more steps
    obs[0, ::7] = np.nan  # a view missing
    w = rng.uniform(0.2, 1.0, (n_cams, n))
    w[1, ::11] = 0.0
    norm = undistort_points(cams, obs)
    ext = np.stack([c.extrinsic for c in cams])
    valid = np.isfinite(norm).all(axis=2) & (w > 0)
    p, wv = np.where(valid[..., None], norm, 0.0), np.where(valid, w, 0.0)
    seen = valid.sum(axis=0) >= 2
    fast, ref = _dlt_closed_form(ext, p, wv)[seen], _dlt_svd(ext, p, wv)[seen]
    assert np.abs(fast - ref).max() < 1e-6  # mm, on points ~300 mm from the origin
    # the public function (which picks the closed form for long inputs) agrees too, NaN where unseen
    out = triangulate_normalized(ext, norm, w)
    assert np.isnan(out[~seen]).all() and np.abs(out[seen] - ref).max() < 1e-6
    # ... and blocks of triangulate() do not change the answer
    whole = triangulate(cams, obs, w)
    np.testing.assert_allclose(whole[seen], ref, atol=1e-6)


@pytest.mark.parametrize(
    "dist",
    [(-0.2, 0.05, 0.001, -0.002, 0.01), (-0.3, 0.1, 0, 0, 0), (0.1, -0.02, 0, 0, 0.01, 0.05, 0.01, 0.002)],
)
def test_vectorized_undistortion_equals_opencv(dist):
    from analysis.camera import camera_ring
    from analysis.geometry import undistort_points

    cams = camera_ring(2, distortion=dist)
    rng = np.random.default_rng(0)
    obs = rng.uniform([0, 0], [640, 480], (2, 2000, 2))
    obs[1, 5] = np.nan
    got = undistort_points(cams, obs)
    for c, cam in enumerate(cams):
        ok = np.isfinite(obs[c]).all(axis=1)
        np.testing.assert_allclose(got[c, ok], cam.undistort(obs[c, ok]), rtol=0, atol=1e-12)
    assert np.isnan(got[1, 5]).all()


@pytest.mark.parametrize(
    "dist", [(-0.2, 0.05, 0.001, -0.002, 0.01), (0.1, -0.02, 0, 0, 0.01, 0.05, 0.01, 0.002)]
)
def test_vectorized_projection_equals_opencv(dist):
    from analysis.camera import camera_ring
    from analysis.geometry import reproject

    cams = camera_ring(3, distortion=dist)
    rng = np.random.default_rng(1)
    pts = rng.uniform([-60, -60, 200], [60, 60, 400], (3000, 3))
    pts[7] = np.nan
    got = reproject(cams, pts)  # long input: all cameras at once
    ok = np.isfinite(pts).all(axis=1)
    for c, cam in enumerate(cams):
        np.testing.assert_allclose(got[c, ok], cam.project(pts[ok]), rtol=0, atol=1e-9)
    assert np.isnan(got[:, 7]).all()
    np.testing.assert_allclose(reproject(cams, pts[:5]), got[:, :5], rtol=0, atol=1e-9)  # short: OpenCV
