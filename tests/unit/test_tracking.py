"""analysis.tracking: choosing one box per camera, the reprojection gate and the filter (online and offline
3-D share this code)."""

from __future__ import annotations

import numpy as np

from analysis.camera import camera_ring
from analysis.tracking import PointTracker, best_point

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
