"""The online triangulator node: joins the cameras' detections by trigger index and hands each set to
:class:`analysis.tracking.PointTracker` (the same code offline reanalysis runs): choose boxes,
triangulate, gate on confidence and reprojection error, Kalman-filter, predict. Publishes
``point3d.<name>``.

A stereo set that is still incomplete ``pair_timeout_ms`` after its first detection arrived is
triangulated with what it has if that is enough (>= 2 views), otherwise dropped and counted.
"""

from __future__ import annotations

import time

import numpy as np

from analysis.tracking import PointTracker
from rig import messages as m
from rig.nodes.base import Node
from rig.session import session_calibration


class TriangulatorNode(Node):
    def setup(self) -> None:
        tc = self.cfg.pipeline.triangulator
        self.tc = tc
        calib = session_calibration(self.loaded, self.session_dir)
        self.cam_names = list(self.cfg.rig.cameras)
        self.cams = [calib[n] for n in self.cam_names]
        self.pending: dict[int, dict] = {}
        self.tracker = PointTracker(
            self.cams,
            self.cfg.rig.trigger.rate_hz,
            tc.min_confidence,
            tc.max_reproj_error_px,
            (tc.process_noise_mm, tc.measurement_noise_mm) if tc.filter == "kalman" else None,
            tc.predict_ms / 1000,
        )
        self.topic = f"point3d.{tc.point_name}"
        self.eos: set[str] = set()
        self.incomplete = 0
        self.late = 0
        self.solved: set[int] = set()  # recent solved trigger indices (a late detection is not solved twice)
        self.solved_below = -1
        self.rejected = 0

    def step(self) -> None:
        assert self.sub is not None
        for _topic, msg in self.sub.recv_all(5, limit=200):
            if isinstance(msg, m.Detections):
                if msg.eos:
                    self.eos.add(msg.camera)
                    continue
                if msg.trigger_index <= self.solved_below and msg.trigger_index in self.solved:
                    self.late += 1  # its set was already solved without it (pair timeout)
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
        self.solved.add(k)
        self.solved_below = max(self.solved_below, k)
        if len(self.solved) > 4096:
            self.solved = {i for i in self.solved if i > self.solved_below - 2048}
        dets: list[m.Detections | None] = [entry.get(c) for c in self.cam_names]
        present = [d for d in dets if d is not None]
        boxes = [boxes_array(d.boxes) if d is not None else np.zeros((0, 5)) for d in dets]
        r = self.tracker.solve(k, boxes)
        if r.reason.startswith("reprojection"):
            self.rejected += 1
        t_out = time.monotonic_ns()
        t_frame = min(d.t_frame_ns for d in present)
        self.publish(
            self.topic,
            m.Point3D(
                name=self.tc.point_name,
                trigger_index=k,
                xyz=_t3(r.xyz),
                xyz_filtered=_t3(r.xyz_filtered),
                xyz_predicted=_t3(r.xyz_predicted),
                valid=r.valid,
                reproj_error_px=float(r.reproj_error_px),
                cameras=r.cameras,
                t_frame_ns=t_frame,
                t_trigger_ns=min(d.t_trigger_ns for d in present),
                t_det_ns=max(d.t_end_ns for d in present),
                t_out_ns=t_out,
                reason=r.reason,
            ),
        )
        self.processed += 1
        self.latency.add((t_out - t_frame) / 1e6)

    def queue_depth(self) -> int:
        return len(self.pending)

    def extra_stats(self) -> dict[str, float]:
        return {
            "incomplete_sets": float(self.incomplete),
            "rejected": float(self.rejected),
            "late_detections": float(self.late),
        }


def boxes_array(boxes: list[m.Box]) -> np.ndarray:
    """Bus boxes -> (K, 5) ``x1, y1, x2, y2, confidence`` for :class:`analysis.tracking.PointTracker`."""
    return np.array([[b.x1, b.y1, b.x2, b.y2, b.confidence] for b in boxes], dtype=np.float64).reshape(-1, 5)


def _t3(a) -> tuple[float, float, float]:
    return (float(a[0]), float(a[1]), float(a[2]))
