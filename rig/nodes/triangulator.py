"""The online triangulator node: joins the cameras' detections by trigger index, triangulates with the
same pure functions offline analysis uses (analysis.geometry), gates on confidence and reprojection
error, filters (constant-velocity Kalman with optional forward prediction), publishes ``point3d.<name>``.

A stereo set that is still incomplete ``pair_timeout_ms`` after its first detection arrived is
triangulated with what it has if that is enough (>= 2 views), otherwise dropped and counted.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from analysis.filters import KalmanCV
from analysis.geometry import reprojection_errors, triangulate
from rig import messages as m
from rig.nodes.base import Node
from rig.session import session_calibration

NAN3 = (math.nan, math.nan, math.nan)
MAX_CANDIDATES = 3


def best_point(cams, dets: list[list[m.Box]], min_conf: float):
    """Choose one box per camera (highest-confidence candidates) minimizing reprojection error.

    Returns (xyz (3,), reprojection error px, indices of cameras used) or None if < 2 views.
    """
    cands = [
        sorted((b for b in d if b.confidence >= min_conf), key=lambda b: -b.confidence)[:MAX_CANDIDATES]
        for d in dets
    ]
    views = [i for i, c in enumerate(cands) if c]
    if len(views) < 2:
        return None
    best = None
    for combo in itertools.product(*(cands[i] for i in views)):
        pts = np.array([[[0.5 * (b.x1 + b.x2), 0.5 * (b.y1 + b.y2)]] for b in combo])
        weights = np.array([[b.confidence] for b in combo])
        sub = [cams[i] for i in views]
        xyz = triangulate(sub, pts, weights)
        err = float(np.nanmax(reprojection_errors(sub, xyz, pts)))
        if best is None or err < best[1]:
            best = (xyz[0], err, views)
    return best


class TriangulatorNode(Node):
    def setup(self) -> None:
        tc = self.cfg.pipeline.triangulator
        self.tc = tc
        calib = session_calibration(self.loaded, self.session_dir)
        self.cam_names = list(self.cfg.rig.cameras)
        self.cams = [calib[n] for n in self.cam_names]
        self.pending: dict[int, dict] = {}
        self.kalman = (
            KalmanCV(tc.process_noise_mm, tc.measurement_noise_mm) if tc.filter == "kalman" else None
        )
        self.rate = self.cfg.rig.trigger.rate_hz
        self.topic = f"point3d.{tc.point_name}"
        self.eos: set[str] = set()
        self.incomplete = 0
        self.rejected = 0
        self.last_index = -1

    def step(self) -> None:
        assert self.sub is not None
        for _topic, msg in self.sub.recv_all(5, limit=200):
            if isinstance(msg, m.Detections):
                if msg.eos:
                    self.eos.add(msg.camera)
                    continue
                entry = self.pending.setdefault(msg.trigger_index, {"t": time.monotonic()})
                entry[msg.camera] = msg
            elif isinstance(msg, m.Control):
                self.on_control(msg)
        now = time.monotonic()
        timeout = self.tc.pair_timeout_ms / 1000
        flush_all = self.eos == set(self.cam_names)
        for k in sorted(self.pending):
            entry = self.pending[k]
            complete = len(entry) - 1 == len(self.cam_names)
            if complete or flush_all or now - entry["t"] > timeout:
                del self.pending[k]
                if not complete:
                    self.incomplete += 1
                self.solve(k, entry)
        if flush_all and not self.pending:
            self.done = True

    def solve(self, k: int, entry: dict) -> None:
        dets: list[m.Detections | None] = [entry.get(c) for c in self.cam_names]
        present = [d for d in dets if d is not None]
        boxes = [d.boxes if d is not None else [] for d in dets]
        res = best_point(self.cams, boxes, self.tc.min_confidence)
        xyz, err, reason, used = np.full(3, np.nan), math.nan, "", []
        if res is None:
            reason = "fewer than 2 views"
        else:
            xyz, err, views = res
            used = [self.cam_names[i] for i in views]
            if err > self.tc.max_reproj_error_px:
                reason = f"reprojection error {err:.1f} px > {self.tc.max_reproj_error_px:g}"
                self.rejected += 1
                xyz = np.full(3, np.nan)
        valid = bool(np.isfinite(xyz).all())
        filt, pred = xyz, xyz
        if self.kalman is not None and k > self.last_index:
            filt = self.kalman.update(k / self.rate, xyz if valid else None)
            pred = self.kalman.predict(self.tc.predict_ms / 1000)
        self.last_index = max(self.last_index, k)
        t_out = time.monotonic_ns()
        t_frame = min(d.t_frame_ns for d in present)
        self.publish(
            self.topic,
            m.Point3D(
                name=self.tc.point_name,
                trigger_index=k,
                xyz=_t3(xyz),
                xyz_filtered=_t3(filt),
                xyz_predicted=_t3(pred),
                valid=valid,
                reproj_error_px=float(err),
                cameras=used,
                t_frame_ns=t_frame,
                t_trigger_ns=min(d.t_trigger_ns for d in present),
                t_det_ns=max(d.t_end_ns for d in present),
                t_out_ns=t_out,
                reason=reason,
            ),
        )
        self.processed += 1
        self.latency.add((t_out - t_frame) / 1e6)

    def queue_depth(self) -> int:
        return len(self.pending)

    def extra_stats(self) -> dict[str, float]:
        return {"incomplete_sets": float(self.incomplete), "rejected": float(self.rejected)}


def _t3(a) -> tuple[float, float, float]:
    return (float(a[0]), float(a[1]), float(a[2]))
