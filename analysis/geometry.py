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
    """Pixel points (C, N, 2) -> normalized undistorted points (C, N, 2); NaN stays NaN.

    OpenCV's ``undistortPoints`` iteration (5 fixed-point steps), vectorized over all cameras and points at
    once for models with up to 8 coefficients (equal to OpenCV's result within rounding); thin-prism and
    tilted models (12, 14 coefficients) go through OpenCV itself.
    """
    pts = _check_points(points_cn2, len(cameras))
    if any(cam.dist.size > 8 for cam in cameras):
        out = np.full_like(pts, np.nan)
        for c, cam in enumerate(cameras):
            ok = np.isfinite(pts[c]).all(axis=1)
            if ok.any():
                out[c, ok] = cam.undistort(pts[c, ok])
        return out
    n_cams = len(cameras)
    k = np.zeros((8, n_cams, 1))  # k1 k2 p1 p2 k3 k4 k5 k6, each (C, 1)
    for c, cam in enumerate(cameras):
        k[: cam.dist.size, c, 0] = cam.dist
    mat = np.stack([cam.matrix for cam in cameras])
    x0 = (pts[..., 0] - mat[:, 0, 2, None]) / mat[:, 0, 0, None]
    y0 = (pts[..., 1] - mat[:, 1, 2, None]) / mat[:, 1, 1, None]
    if not k.any():
        return np.stack([x0, y0], axis=-1)
    k1, k2, p1, p2, k3, k4, k5, k6 = k
    tangential = bool(p1.any() or p2.any())
    x, y = x0, y0
    frozen: np.ndarray | None = None
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(_UNDISTORT_ITERATIONS):
            r2 = x * x
            r2 += y * y
            icdist = 1.0 / _radial(r2, k1, k2, k3)
            if k[5:].any():
                icdist *= _radial(r2, k4, k5, k6)
            if tangential:
                xy2 = 2.0 * x * y
                dx = p1 * xy2 + p2 * (r2 + 2.0 * x * x)
                dy = p1 * (r2 + 2.0 * y * y) + p2 * xy2
                x, y = x0 - dx, y0 - dy
            else:
                x, y = x0.copy(), y0.copy()
            x *= icdist
            y *= icdist
            # OpenCV stops a point whose model folds over (icdist < 0) at its distorted position
            fold = icdist < 0
            if fold.any():
                frozen = fold if frozen is None else frozen | fold
            if frozen is not None:
                x[frozen], y[frozen] = x0[frozen], y0[frozen]
    return np.stack([x, y], axis=-1)


def _radial(r2: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``1 + ((c r2 + b) r2 + a) r2`` with the terms whose coefficients are all zero left out."""
    if c.any():
        out = c * r2
        out += b
        out *= r2
    elif b.any():
        out = b * r2
    else:
        return 1.0 + a * r2
    out += a
    out *= r2
    out += 1.0
    return out


_UNDISTORT_ITERATIONS = 5  # cv2.undistortPoints' default criteria: 5 iterations
_SVD_BELOW = 64  # fewer points than this: one batched SVD is faster than the closed form (online frames)
_NEWTON_MAX = 12
_BLOCK = 8192  # points per block in triangulate()


def triangulate_normalized(
    extrinsics_c34: np.ndarray,
    points_cn2: np.ndarray,
    weights_cn: np.ndarray | None = None,
    *,
    per_point: bool = False,
) -> np.ndarray:
    """Weighted linear (DLT) triangulation from normalized image points.

    ``extrinsics_c34`` (C, 3, 4) are ``[R | t]`` per camera; ``points_cn2`` (C, N, 2) normalized
    coordinates with NaN for a missing view; ``weights_cn`` (C, N) confidences (0 ignores a view).
    Returns (N, 3); a point seen by fewer than two views is NaN. ``per_point`` takes the SVD for any N,
    so that each point's result is bit for bit the one it gets alone (as the online triangulator does).
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
    seen = valid.sum(axis=0) >= 2
    out = _dlt_svd(ext, p, w) if per_point or n < _SVD_BELOW else _dlt_closed_form(ext, p, w, seen)
    out[~seen] = np.nan
    return out


def _dlt_svd(ext: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """DLT by SVD of the stacked rows ``A`` (N, 2C, 4); the reference the closed form equals."""
    # rows: x * P3 - P1 and y * P3 - P2, weighted, per camera -> A (N, 2C, 4)
    r1 = p[..., 0, None] * ext[:, None, 2, :] - ext[:, None, 0, :]
    r2 = p[..., 1, None] * ext[:, None, 2, :] - ext[:, None, 1, :]
    a = np.concatenate([r1 * w[..., None], r2 * w[..., None]], axis=0)  # (2C, N, 4)
    a = np.transpose(a, (1, 0, 2))
    _, _, vh = np.linalg.svd(a)
    x = vh[:, -1, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        return x[:, :3] / x[:, 3:4]


def _dlt_closed_form(
    ext: np.ndarray, p: np.ndarray, w: np.ndarray, seen: np.ndarray | None = None
) -> np.ndarray:
    """The same DLT without an SVD per point (equal to :func:`_dlt_svd` within ~1e-8 mm).

    The right singular vector of ``A`` for its smallest singular value is the eigenvector of ``M = A^T A``
    (4, 4) for its smallest eigenvalue. With ``M = [[B, c], [c^T, d]]`` and that eigenvector written
    ``(X, 1)``, ``X = -(B - lam I)^-1 c`` where ``lam`` is the smallest root of ``d - lam + c . X(lam) = 0``.
    Newton from ``lam = 0`` (the inhomogeneous least-squares point) converges monotonically (the function is
    concave and decreasing below B's eigenvalues): two steps for most points, more for a point with an
    outlier view (at most ``_NEWTON_MAX``; only the points still moving take a step). Every step is a 3x3
    solve by the adjugate, elementwise over the points. ``seen`` (N,) marks the points with two or more
    views; the others (no solution: NaN or meaningless) take no more than the first step.
    """
    # Per camera, with rows r1 = w (x P3 - P1) and r2 = w (y P3 - P2):
    #   r1 r1^T + r2 r2^T = w^2 [(x^2 + y^2) P3 P3^T - x (P3 P1^T + P1 P3^T) - y (P3 P2^T + P2 P3^T)
    #                           + P1 P1^T + P2 P2^T],
    # constant matrices times four per-point factors: M's ten entries (10, N) are one matrix product
    # (einsum's own loop: a multi-threaded BLAS call on this thin product is slower on a loaded machine)
    mm = np.einsum("ij,jn->in", _dlt_constants(ext), _dlt_factors(p, w))  # B (6 entries), c (3), d
    with np.errstate(divide="ignore", invalid="ignore"):
        # every point takes the first step from lam = 0; then only the points still moving take more
        out = _shifted_solve(mm, np.zeros(mm.shape[1]))
        lam = _newton_step(mm, np.zeros(mm.shape[1]), out)
        out = _shifted_solve(mm, lam)
        todo = np.arange(mm.shape[1]) if seen is None else np.flatnonzero(seen)
        sub = mm if seen is None else mm[:, todo]
        for _ in range(_NEWTON_MAX - 1):
            dlam = _newton_step(sub, lam[todo], out[:, todo])
            # a step that moves X by < 1e-12 of itself relative to B's scale (its trace) is not taken: X has
            # converged; NaN (unseen points) compares False
            move = np.abs(dlam) > 1e-12 * (sub[0] + sub[3] + sub[5])
            todo, sub = todo[move], sub[:, move]
            if not todo.size:
                break
            lam[todo] += dlam[move]
            out[:, todo] = _shifted_solve(sub, lam[todo])
    return out.T


def _newton_step(mm: np.ndarray, lam: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Newton's step for ``d - lam + c . X(lam) = 0`` at ``lam`` with ``X = X(lam)`` (3, N)."""
    return (mm[9] - lam + np.einsum("kn,kn->n", mm[6:9], x)) / (1.0 + np.einsum("kn,kn->n", x, x))


_UPPER = ([0, 0, 0, 1, 1, 2, 0, 1, 2, 3], [0, 1, 2, 1, 2, 2, 3, 3, 3, 3])  # the 10 entries of a 4x4 symmetric


def _dlt_constants(ext: np.ndarray) -> np.ndarray:
    """(10, 4C): per camera, the upper-triangle entries of P3 P3^T, P3 P1^T + P1 P3^T, P3 P2^T + P2 P3^T and
    P1 P1^T + P2 P2^T (columns in the order of :func:`_dlt_factors`' rows)."""
    p1, p2, p3 = ext[:, 0, :], ext[:, 1, :], ext[:, 2, :]

    def outer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.einsum("ci,cj->cij", a, b)

    mats = np.stack(
        [
            outer(p3, p3),
            outer(p3, p1) + outer(p1, p3),
            outer(p3, p2) + outer(p2, p3),
            outer(p1, p1) + outer(p2, p2),
        ],
        axis=1,
    )  # (C, 4, 4, 4)
    return mats[:, :, _UPPER[0], _UPPER[1]].reshape(-1, 10).T


def _dlt_factors(p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(4C, N): per camera w^2 (x^2 + y^2), -w^2 x, -w^2 y, w^2."""
    w2 = w * w
    x, y = p[..., 0], p[..., 1]
    return np.stack([w2 * (x * x + y * y), -w2 * x, -w2 * y, w2], axis=1).reshape(-1, p.shape[1])


def _shifted_solve(mm: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """``X = -(B - lam I)^-1 c`` (3, N) by the adjugate of the symmetric 3x3 ``B - lam I``."""
    b00, b01, b02, b11, b12, b22, c0, c1, c2, _ = mm
    s00, s11, s22 = b00 - lam, b11 - lam, b22 - lam
    a00, a11, a22 = s11 * s22 - b12 * b12, s00 * s22 - b02 * b02, s00 * s11 - b01 * b01
    a01, a02, a12 = b02 * b12 - b01 * s22, b01 * b12 - b02 * s11, b01 * b02 - s00 * b12
    neg_det = -(s00 * a00 + b01 * a01 + b02 * a02)
    return np.stack(
        [
            (a00 * c0 + a01 * c1 + a02 * c2) / neg_det,
            (a01 * c0 + a11 * c1 + a12 * c2) / neg_det,
            (a02 * c0 + a12 * c1 + a22 * c2) / neg_det,
        ]
    )


def triangulate(
    cameras: Sequence[CameraModel],
    points_cn2: np.ndarray,
    weights_cn: np.ndarray | None = None,
    *,
    per_point: bool = False,
) -> np.ndarray:
    """Distorted pixel points (C, N, 2) from named cameras -> world points (N, 3) in mm.

    Long inputs go through in blocks of ``_BLOCK`` points: the elementwise work then stays in the CPU's
    cache (one call on 100,000 points is ~2x faster than without blocks); results do not depend on it.
    ``per_point``: each point's result is the one it gets alone (see :func:`triangulate_normalized`).
    """
    pts = _check_points(points_cn2, len(cameras))
    n = pts.shape[1]
    if weights_cn is not None:
        weights_cn = np.asarray(weights_cn, dtype=np.float64)
        if weights_cn.shape != (len(cameras), n):
            raise AnalysisError(f"weights must have shape (C={len(cameras)}, N={n}), got {weights_cn.shape}")
    ext = np.stack([cam.extrinsic for cam in cameras])
    out = np.empty((n, 3))
    for i in range(0, n, _BLOCK):
        block = slice(i, i + _BLOCK)
        w = None if weights_cn is None else weights_cn[:, block]
        out[block] = triangulate_normalized(
            ext, undistort_points(cameras, pts[:, block]), w, per_point=per_point
        )
    return out


def reproject(
    cameras: Sequence[CameraModel], points_n3: np.ndarray, *, per_point: bool = False
) -> np.ndarray:
    """World points (N, 3) -> pixel points (C, N, 2), NaN where the point is NaN. ``per_point``: through
    OpenCV for any N, so that each point's result is bit for bit the one it gets alone."""
    pts = np.asarray(points_n3, dtype=np.float64).reshape(-1, 3)
    if not per_point and len(pts) >= _SVD_BELOW and all(cam.dist.size <= 8 for cam in cameras):
        return _project(cameras, pts)
    out = np.full((len(cameras), len(pts), 2), np.nan)
    ok = np.isfinite(pts).all(axis=1)
    for c, cam in enumerate(cameras):
        if ok.any():
            out[c, ok] = cam.project(pts[ok])
    return out


def _project(cameras: Sequence[CameraModel], pts: np.ndarray) -> np.ndarray:
    """OpenCV's ``projectPoints`` (pinhole, radial k1-k6, tangential p1 p2), for all cameras at once: equal to
    it within rounding, several times faster on long inputs. (N, 3) -> (C, N, 2); NaN stays NaN."""
    k = np.zeros((8, len(cameras), 1))
    for c, cam in enumerate(cameras):
        k[: cam.dist.size, c, 0] = cam.dist
    k1, k2, p1, p2, k3, k4, k5, k6 = k
    rot = np.stack([cam.rotation for cam in cameras])  # (C, 3, 3)
    t = np.stack([cam.tvec for cam in cameras])[:, :, None]  # (C, 3, 1)
    cam_xyz = np.einsum("cij,nj->cin", rot, pts) + t  # (C, 3, N); no BLAS threads (see _dlt_closed_form)
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = cam_xyz[:, 0] / cam_xyz[:, 2], cam_xyz[:, 1] / cam_xyz[:, 2]
        r2 = x * x + y * y
        radial = _radial(r2, k1, k2, k3)
        if k[5:].any():
            radial = radial / _radial(r2, k4, k5, k6)
        xd, yd = x * radial, y * radial
        if p1.any() or p2.any():
            xy2 = 2.0 * x * y
            xd += p1 * xy2 + p2 * (r2 + 2.0 * x * x)
            yd += p1 * (r2 + 2.0 * y * y) + p2 * xy2
    mat = np.stack([cam.matrix for cam in cameras])
    return np.stack(
        [xd * mat[:, 0, 0, None] + mat[:, 0, 2, None], yd * mat[:, 1, 1, None] + mat[:, 1, 2, None]], axis=-1
    )


def reprojection_errors(
    cameras: Sequence[CameraModel], points_n3: np.ndarray, points_cn2: np.ndarray, *, per_point: bool = False
) -> np.ndarray:
    """Pixel distance between observed (C, N, 2) and reprojected points: (C, N), NaN where missing."""
    obs = _check_points(points_cn2, len(cameras))
    proj = reproject(cameras, points_n3, per_point=per_point)
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
