"""Triangulation and reprojection: pure, vectorized; the online triangulator and offline analysis share it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from analysis.camera import CameraModel
from analysis.errors import AnalysisError


def _check_points(points_cn2: np.ndarray, n_cams: int) -> np.ndarray:
    pts = np.asarray(points_cn2, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[0] != n_cams or pts.shape[2] != 2:
        raise AnalysisError(f"points must have shape (C={n_cams}, N, 2), got {pts.shape}")
    return pts


def undistort_points(cameras: Sequence[CameraModel], points_cn2: np.ndarray) -> np.ndarray:
    """Pixel points (C, N, 2) -> normalized undistorted points (C, N, 2); NaN stays NaN."""
    pts = _check_points(points_cn2, len(cameras))
    out = np.full_like(pts, np.nan)
    for c, cam in enumerate(cameras):
        ok = np.isfinite(pts[c]).all(axis=1)
        if ok.any():
            out[c, ok] = cam.undistort(pts[c, ok])
    return out


def triangulate_normalized(
    extrinsics_c34: np.ndarray, points_cn2: np.ndarray, weights_cn: np.ndarray | None = None
) -> np.ndarray:
    """Weighted linear (DLT) triangulation from normalized image points.

    ``extrinsics_c34`` (C, 3, 4) are ``[R | t]`` per camera; ``points_cn2`` (C, N, 2) normalized
    coordinates with NaN for a missing view; ``weights_cn`` (C, N) confidences (0 ignores a view).
    Returns (N, 3); a point seen by fewer than two views is NaN.
    """
    ext = np.asarray(extrinsics_c34, dtype=np.float64)
    n_cams = ext.shape[0]
    if ext.shape != (n_cams, 3, 4):
        raise AnalysisError(f"extrinsics must have shape (C, 3, 4), got {ext.shape}")
    pts = _check_points(points_cn2, n_cams)
    n = pts.shape[1]
    w = np.ones((n_cams, n)) if weights_cn is None else np.asarray(weights_cn, dtype=np.float64)
    if w.shape != (n_cams, n):
        raise AnalysisError(f"weights must have shape (C={n_cams}, N={n}), got {w.shape}")
    valid = np.isfinite(pts).all(axis=2) & (w > 0)
    w = np.where(valid, w, 0.0)
    p = np.where(valid[..., None], pts, 0.0)
    # rows: x * P3 - P1 and y * P3 - P2, weighted, per camera -> A (N, 2C, 4)
    r1 = p[..., 0, None] * ext[:, None, 2, :] - ext[:, None, 0, :]
    r2 = p[..., 1, None] * ext[:, None, 2, :] - ext[:, None, 1, :]
    a = np.concatenate([r1 * w[..., None], r2 * w[..., None]], axis=0)  # (2C, N, 4)
    a = np.transpose(a, (1, 0, 2))
    _, _, vh = np.linalg.svd(a)
    x = vh[:, -1, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = x[:, :3] / x[:, 3:4]
    out[valid.sum(axis=0) < 2] = np.nan
    return out


def triangulate(
    cameras: Sequence[CameraModel], points_cn2: np.ndarray, weights_cn: np.ndarray | None = None
) -> np.ndarray:
    """Distorted pixel points (C, N, 2) from named cameras -> world points (N, 3) in mm."""
    norm = undistort_points(cameras, points_cn2)
    ext = np.stack([cam.extrinsic for cam in cameras])
    return triangulate_normalized(ext, norm, weights_cn)


def reproject(cameras: Sequence[CameraModel], points_n3: np.ndarray) -> np.ndarray:
    """World points (N, 3) -> pixel points (C, N, 2), NaN where the point is NaN."""
    pts = np.asarray(points_n3, dtype=np.float64).reshape(-1, 3)
    out = np.full((len(cameras), len(pts), 2), np.nan)
    ok = np.isfinite(pts).all(axis=1)
    for c, cam in enumerate(cameras):
        if ok.any():
            out[c, ok] = cam.project(pts[ok])
    return out


def reprojection_errors(
    cameras: Sequence[CameraModel], points_n3: np.ndarray, points_cn2: np.ndarray
) -> np.ndarray:
    """Pixel distance between observed (C, N, 2) and reprojected points: (C, N), NaN where missing."""
    obs = _check_points(points_cn2, len(cameras))
    proj = reproject(cameras, points_n3)
    return np.linalg.norm(proj - obs, axis=2)


def triangulate_ransac(
    cameras: Sequence[CameraModel],
    points_cn2: np.ndarray,
    weights_cn: np.ndarray | None = None,
    threshold_px: float = 5.0,
    min_views: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Triangulation robust to a wrong view (a mislabelled keypoint in one camera).

    Every subset of at least ``min_views`` cameras is triangulated for all points at once (the camera count
    is small, so the subsets are enumerated, not sampled); per point, the subset whose 3-D point reprojects
    within ``threshold_px`` in the most views wins (ties: lowest mean inlier error), and the point is
    triangulated again from those inlier views with their weights. ``points_cn2`` (C, N, 2) distorted
    pixels, NaN = missing; returns world points (N, 3) mm and the inlier mask (C, N).
    """
    from itertools import combinations

    n_cams = len(cameras)
    pts = _check_points(points_cn2, n_cams)
    n = pts.shape[1]
    w = np.ones((n_cams, n)) if weights_cn is None else np.asarray(weights_cn, dtype=np.float64)
    if w.shape != (n_cams, n):
        raise AnalysisError(f"weights must have shape (C={n_cams}, N={n}), got {w.shape}")
    if min_views < 2:
        raise AnalysisError(f"min_views must be at least 2, got {min_views}")
    valid = np.isfinite(pts).all(axis=2) & (w > 0)
    norm = undistort_points(cameras, pts)
    ext = np.stack([cam.extrinsic for cam in cameras])
    best_count = np.zeros(n, dtype=int)
    best_err = np.full(n, np.inf)
    best_mask = np.zeros((n_cams, n), dtype=bool)
    for size in range(min_views, n_cams + 1):
        for subset in combinations(range(n_cams), size):
            sw = np.zeros_like(w)
            sw[list(subset)] = w[list(subset)]
            cand = triangulate_normalized(ext, norm, sw)
            err = reprojection_errors(cameras, cand, pts)
            inl = valid & (err < threshold_px)
            count = inl.sum(axis=0)
            mean_err = np.where(count > 0, np.where(inl, err, 0).sum(axis=0) / np.maximum(count, 1), np.inf)
            better = (count > best_count) | ((count == best_count) & (mean_err < best_err))
            better &= count >= min_views
            best_count = np.where(better, count, best_count)
            best_err = np.where(better, mean_err, best_err)
            best_mask[:, better] = inl[:, better]
    out = triangulate_normalized(ext, norm, np.where(best_mask, w, 0.0))
    out[best_count < min_views] = np.nan
    return out, best_mask
