"""analysis.tracking: choosing one box per camera, the reprojection gate and the filter (online and offline
3-D share this code)."""

from __future__ import annotations

import numpy as np

from analysis.camera import camera_ring
from analysis.tracking import PointResult, PointTracker, best_point

CAMS = camera_ring(3)
TRUTH = np.array([5.0, -8.0, 310.0])


def _box(cam_index: int, xyz: np.ndarray, conf: float, half: float = 10.0) -> list[float]:
    u, v = CAMS[cam_index].project(xyz)[0]
    return [u - half, v - half, u + half, v + half, conf]


def _boxes(*per_cam: list[list[float]]) -> list[np.ndarray]:
    return [np.array(b, dtype=np.float64).reshape(-1, 5) for b in per_cam]


def test_one_box_per_camera_triangulates_the_point():
    xyz, err, views = best_point(CAMS, _boxes([_box(0, TRUTH, 0.9)], [_box(1, TRUTH, 0.8)], []), 0.25)
    assert views == [0, 1]
    assert np.linalg.norm(xyz - TRUTH) < 1e-6 and err < 1e-6


def test_a_more_confident_decoy_loses_to_the_geometrically_consistent_box():
    decoy = TRUTH + [25.0, 0.0, 0.0]  # a second blob in camera 0 only
    boxes = _boxes(
        [_box(0, decoy, 0.95), _box(0, TRUTH, 0.6)],
        [_box(1, TRUTH, 0.9)],
        [_box(2, TRUTH, 0.7), _box(2, decoy + [0, 30.0, 0], 0.8)],
    )
    xyz, err, views = best_point(CAMS, boxes, 0.25)
    assert views == [0, 1, 2]
    assert np.linalg.norm(xyz - TRUTH) < 1e-6 and err < 1e-6
    # each decoy alone, forced by removing the true box, gives a large reprojection error
    _, err_decoy, _ = best_point(CAMS, _boxes([_box(0, decoy, 0.95)], [_box(1, TRUTH, 0.9)], []), 0.25)
    assert err_decoy > 5.0


def test_boxes_below_min_confidence_do_not_count_as_a_view():
    boxes = _boxes([_box(0, TRUTH, 0.2)], [_box(1, TRUTH, 0.9)], [])
    assert best_point(CAMS, boxes, 0.25) is None
    assert best_point(CAMS, boxes, 0.1) is not None


def test_tracker_gates_on_reprojection_and_keeps_filtering_through_gaps():
    tr = PointTracker(CAMS[:2], 124.0, 0.25, 3.0, kalman=(1.0, 0.5), predict_s=0.01)
    for i in range(20):
        r = tr.solve(i, _boxes([_box(0, TRUTH, 0.9)], [_box(1, TRUTH, 0.9)]))
        assert r.valid and r.cameras == ["cam0", "cam1"]
    assert np.linalg.norm(r.xyz_filtered - TRUTH) < 0.1
    # camera 0 sees something 40 mm away: the pair is inconsistent -> refused, the filter coasts
    r = tr.solve(20, _boxes([_box(0, TRUTH + [40.0, 0, 0], 0.9)], [_box(1, TRUTH, 0.9)]))
    assert not r.valid and r.reason.startswith("reprojection error")
    assert np.isnan(r.xyz).all() and np.linalg.norm(r.xyz_filtered - TRUTH) < 0.5
    r = tr.solve(21, _boxes([], [_box(1, TRUTH, 0.9)]))
    assert not r.valid and r.reason == "fewer than 2 views" and np.isfinite(r.xyz_predicted).all()


def _same(a: PointResult, b: PointResult) -> bool:
    return (
        np.array_equal(a.xyz, b.xyz, equal_nan=True)
        and np.array_equal(a.xyz_filtered, b.xyz_filtered, equal_nan=True)
        and np.array_equal(a.xyz_predicted, b.xyz_predicted, equal_nan=True)
        and np.array_equal(a.reproj_error_px, b.reproj_error_px, equal_nan=True)
        and (a.valid, a.cameras, a.reason) == (b.valid, b.cameras, b.reason)
    )


def test_solve_many_is_solve_set_by_set_bit_for_bit():
    """Offline reanalysis triangulates all sets at once; its 3-D must be the online tracker's exactly: one box
    per view (grouped by which cameras see it), decoys (the per-set path), missing views, low confidence,
    a non-finite box, points refused by the reprojection gate, a lens with tangential distortion."""
    rng = np.random.default_rng(7)
    cams = camera_ring(3, distortion=(-0.1, 0.02, 0.001, -0.002, 0.01))
    n = 400
    truth = np.c_[rng.normal(0, 10, n), rng.normal(0, 10, n), 300 + rng.normal(0, 10, n)]
    sets = []
    for xyz in truth:
        per_cam = []
        for cam in cams:
            u, v = cam.project(xyz)[0] + rng.normal(0, 3.0, 2)
            b = np.array([[u - 20, v - 20, u + 20, v + 20, rng.uniform(0.1, 1)]])
            r = rng.random()
            if r < 0.15:
                b = np.zeros((0, 5))
            elif r < 0.25:
                b = np.vstack([b, b + rng.normal(0, 15, 5)])
            elif r < 0.27:
                b[:, 0] = np.nan
            per_cam.append(b)
        sets.append(per_cam)
    keys = list(range(0, 2 * n, 2))
    one = PointTracker(cams, 124.0, 0.25, 8.0, (2000.0, 0.5), predict_s=0.02)
    many = PointTracker(cams, 124.0, 0.25, 8.0, (2000.0, 0.5), predict_s=0.02)
    expected = [one.solve(k, s) for k, s in zip(keys, sets)]
    got = many.solve_many(keys, sets)
    assert all(_same(a, b) for a, b in zip(expected, got))
    # the draw covers every path: valid points, refused ones, single views, and more than one group
    reasons = {r.reason.split(" ")[0] for r in expected}
    assert sum(r.valid for r in expected) > n // 2 and {"", "reprojection", "fewer"} <= reasons
    assert len({tuple(r.cameras) for r in expected if r.valid}) >= 3
