"""RANSAC triangulation over camera subsets and the offline filters (median, Savitzky-Golay, gaps, RTS)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.camera import CameraModel, camera_ring
from analysis.errors import AnalysisError
from analysis.filters import interpolate_gaps, kalman_filter_series, kalman_smooth, median_filter, savgol
from analysis.geometry import triangulate, triangulate_ransac


def _cams(n: int = 4) -> list[CameraModel]:
    return camera_ring(n, distortion=(-0.1, 0.02, 0, 0, 0))


def test_ransac_rejects_a_wrong_view_that_plain_dlt_follows():
    cams = _cams(4)
    rng = np.random.default_rng(0)
    pts = rng.uniform([-30, -30, 270], [30, 30, 330], (300, 3))
    obs = np.stack([c.project(pts) for c in cams]) + rng.normal(0, 0.3, (4, 300, 2))
    wrong = rng.random(300) < 0.3
    obs[2, wrong] += 60.0  # camera 2 mislabels 30 % of the points by 60 px
    obs[0, :10] = np.nan  # and camera 0 misses a few
    plain = triangulate(cams, obs)
    robust, inliers = triangulate_ransac(cams, obs, threshold_px=4.0)
    err_plain = np.linalg.norm(plain - pts, axis=1)
    err_robust = np.linalg.norm(robust - pts, axis=1)
    assert np.median(err_plain[wrong]) > 5.0
    assert err_robust.max() < 1.0
    assert not inliers[2, wrong].any() and inliers[2, ~wrong].all()
    assert not inliers[0, :10].any()


def test_ransac_needs_min_views_and_checks_shapes():
    cams = _cams(3)
    pts = np.array([[0.0, 0.0, 300.0]])
    obs = np.stack([c.project(pts) for c in cams])
    obs[1:] = np.nan
    out, mask = triangulate_ransac(cams, obs)
    assert np.isnan(out).all() and not mask.any()
    with pytest.raises(AnalysisError, match=r"shape \(C=3, N, 2\)"):
        triangulate_ransac(cams, obs[:2])


def test_interpolate_gaps_respects_max_gap_and_ends():
    x = np.arange(20, dtype=float)
    x[[0, 3, 4, 8, 9, 10, 11, 19]] = np.nan
    out = interpolate_gaps(x, max_gap=3)
    np.testing.assert_allclose(out[3:5], [3, 4])
    assert np.isnan(out[8:12]).all()  # a 4-sample gap is longer than max_gap
    assert np.isnan(out[0]) and np.isnan(out[19])  # no data on one side
    two_d = interpolate_gaps(np.stack([x, 2 * x], axis=1), max_gap=4, kind="cubic")
    np.testing.assert_allclose(two_d[8:12, 1], [16, 18, 20, 22], atol=1e-9)


def test_median_filter_removes_spikes_and_keeps_nan():
    x = np.sin(np.linspace(0, 3, 100))
    spiky = x.copy()
    spiky[[20, 50, 51]] += 10
    spiky[70] = np.nan
    out = median_filter(np.stack([spiky, spiky], axis=1), 5)
    assert np.abs(out[:, 0] - x)[np.isfinite(out[:, 0])].max() < 0.1
    assert np.isnan(out[70]).all()
    with pytest.raises(AnalysisError, match="odd"):
        median_filter(x, 4)


def test_savgol_velocity_of_a_parabola_is_exact_per_segment():
    dt = 0.01
    t = np.arange(200) * dt
    pos = 5 * t**2
    pos[100:103] = np.nan
    vel = savgol(pos, 11, 2, deriv=1, dt_s=dt)
    ok = np.isfinite(vel)
    np.testing.assert_allclose(vel[ok], 10 * t[ok], atol=1e-8)
    assert not ok[100:103].any()
    filled = savgol(pos, 11, 2, deriv=1, dt_s=dt, max_gap=3)
    assert np.isfinite(filled).all()


def test_kalman_smoother_beats_forward_filter():
    rng = np.random.default_rng(2)
    t = np.arange(400) / 100.0
    truth = np.stack([20 * np.sin(2 * t), 10 * np.cos(3 * t), 5 * t], axis=1)
    meas = truth + rng.normal(0, 1.0, truth.shape)
    meas[150:160] = np.nan
    fwd = kalman_filter_series(t, meas, accel_noise=200.0, meas_noise=1.0)
    smooth = kalman_smooth(t, meas, accel_noise=200.0, meas_noise=1.0)
    rms = lambda e: float(np.sqrt(np.nanmean(np.sum(e**2, axis=1))))  # noqa: E731
    assert np.isfinite(smooth).all()
    assert rms(smooth - truth) < 0.8 * rms(fwd - truth)
    assert rms(smooth - truth) < rms(meas - truth)
