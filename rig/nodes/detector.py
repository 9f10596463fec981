"""The detector node: reads frames from the shared-memory rings, joins the stereo set by trigger index,
runs the configured runner on the set, publishes ``det.<camera>`` with the frame's timestamps plus its
own, and triangulates the set into ``point3d.<name>``.

Triangulation runs here, in the same process, rather than in a node of its own: the set is already
joined, and on a small machine each extra process hop costs a wakeup and two messages per frame
(measured: frame -> 3-D p50 -1.8 ms, see BENCHMARKS.md). :class:`analysis.tracking.PointTracker` does
the geometry (choose boxes, triangulate, gate on confidence and reprojection error, Kalman-filter,
predict): the same code offline reanalysis runs.

Recording comes first: while the recorder is ``detector.recorder_behind_s`` behind (its 1 Hz stats: the
encoder backlog, or how late frames leave the rings), the detector detects every other stereo set only
(one in 4 or 8 if the backlog keeps growing; ``shed_for_recording``), so that on an overloaded machine
the detector, which may run at real-time priority (``pipeline.realtime``), never costs the recording a
frame; it resumes in full once the backlog is under a quarter of that. ``reanalyze --detect`` covers
the sets not detected online.

A stereo set whose partner frame has not arrived ``triangulator.pair_timeout_ms`` after its first frame
runs with what it has (triangulated if >= 2 views remain; counted as ``incomplete_sets``). Sets run in
trigger order. Restartable: a restarted detector resumes with the next frames (the ones it missed are
counted) and a fresh filter.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from analysis.tracking import PointTracker
from detection.base import Det
from rig import messages as m
from rig.cameras.sync import StereoJoiner
from rig.frames import SessionRings
from rig.nodes.base import Node
from rig.session_folder import session_calibration

ORACLE_TRUTH_WAIT_S = 0.5  # how long a partial stereo set waits for its partner before running alone


class DetectorNode(Node):
    def setup(self) -> None:
        dc = self.cfg.pipeline.detector
        self.cameras = list(self.cfg.rig.cameras)
        self.rings = SessionRings(self.rt.session_id)
        # frames (header, image) joined by trigger index; released in trigger order
        self.joiner: StereoJoiner[tuple[m.FrameHeader, Any]] = StereoJoiner(
            self.cameras, self.cfg.pipeline.triangulator.pair_timeout_ms / 1000
        )
        self.truth: dict[int, m.Truth] = {}
        self.oracle = None
        self.runner = None
        self.online: Any = None
        calib = session_calibration(self.loaded, self.session_dir)
        tc = self.cfg.pipeline.triangulator
        self.tc = tc
        self.tracker = None
        if tc.enabled:
            self.tracker = PointTracker.from_settings(
                [calib[n] for n in self.cameras], self.cfg.rig.trigger.rate_hz, tc
            )
        self.point_topic = f"point3d.{tc.point_name}"
        self.rejected = 0  # sets whose 3-D point failed the reprojection gate
        if dc.runner == "oracle":
            from rig.sim.oracle import OracleRunner

            self.oracle = OracleRunner(calib, dc.oracle_noise_px)
            self.runner_name = "oracle"
        else:
            from detection.online import OnlineDetector, OnlineOptions
            from detection.runners import make_runner

            self.runner = make_runner(dc, base_dir=self.loaded.base_dir)
            opts = OnlineOptions.from_options(dc.options)
            cam0 = self.cfg.rig.cameras[self.cameras[0]]
            self.runner.warmup((cam0.height, cam0.width))
            if opts.roi_size > 0:
                self.runner.warmup((opts.roi_size, opts.roi_size), n=10)
            self.online = OnlineDetector(self.runner, self.cameras, opts)
            self.runner_name = self.runner.name
        self.ring_drops = 0
        self.max_lag_ns = int(dc.max_lag_ms * 1e6)
        self.skipped_late = 0  # frames too old to be worth detecting online (see DetectorConfig.max_lag_ms)
        behind_s = dc.recorder_behind_s
        self.recording_first = RecordingFirst(
            None if behind_s is None else max(1, round(behind_s * self.cfg.rig.trigger.rate_hz))
        )
        self.shed = 0  # frames not detected so that the recording could catch up

    def step(self) -> None:
        assert self.sub is not None
        batch = self.sub.recv_all(5, limit=200)
        for _topic, msg in batch:
            if isinstance(msg, m.FrameHeader):
                self.on_frame(msg)
            elif isinstance(msg, m.Truth):
                self.truth[msg.trigger_index] = msg
            elif isinstance(msg, m.Stats) and msg.node == "recorder":
                self.on_recorder_stats(msg)
            elif isinstance(msg, m.Control):
                self.on_control(msg)
        if self.stop_requested and not batch:
            # the supervisor stops the detector once every camera has exited, and nothing is left to read:
            # no frame is coming (a detector restarted after the cameras ended never sees their end)
            for cam in self.cameras:
                self.joiner.end(cam)
        now = time.monotonic()
        # stereo sets run in trigger order: a later complete set waits for an earlier incomplete one (at
        # most pair_timeout_ms), so the ROI tracker and the filter never go back in time
        while (s := self.joiner.peek(now)) is not None:
            k = s.trigger_index
            # the oracle needs the world's truth for this trigger; it travels on another socket and
            # may arrive after the frames on a loaded machine
            if not (self.oracle is None or k in self.truth or now - s.first_arrival_s > ORACLE_TRUTH_WAIT_S):
                break
            self.joiner.pop()
            if self.recording_first.skip(k):
                self.shed += len(s.items)
                continue
            self.run_batch(k, s.items)
        if len(self.truth) > 4096:
            for k in sorted(self.truth)[:2048]:
                del self.truth[k]
        if self.joiner.finished:
            for cam in self.cameras:
                self.publish(
                    f"det.{cam}",
                    m.Detections(
                        camera=cam,
                        seq=-1,
                        trigger_index=-1,
                        t_frame_ns=0,
                        t_trigger_ns=0,
                        t_start_ns=0,
                        t_end_ns=time.monotonic_ns(),
                        boxes=[],
                        eos=True,
                    ),
                )
            self.done = True

    def on_recorder_stats(self, s: m.Stats) -> None:
        change = self.recording_first.update(s.queue_depth)
        if change == "shed":
            self.log.warning(
                "detector: the recorder is %d frames behind: detecting one stereo set in %d until it "
                "catches up (the recording comes first; reanalyze --detect covers the rest)",
                s.queue_depth, 1 << self.recording_first.level,
            )  # fmt: skip
        elif change == "resume":
            self.log.info("detector: the recorder caught up; detecting every stereo set again")

    def on_frame(self, h: m.FrameHeader) -> None:
        if h.eos:
            self.joiner.end(h.camera)
            return
        if self.max_lag_ns and time.monotonic_ns() - h.t_host_ns > self.max_lag_ns:
            # too old: not detected online (the recording keeps it); an overloaded machine catches up
            self.skipped_late += 1
            return
        ring = self.rings.get(h.camera)
        if not ring.still_valid(h.slot, h.seq):
            self.drops += 1
            return
        # zero-copy: the runner crops from the ring's slot; run_batch checks afterwards that the camera
        # has not overwritten it meanwhile (ring_slots frames later, ~2 s: max_lag_ms sheds long before)
        img = ring.view(h.slot) if self.oracle is None else None
        if not self.joiner.push(h.camera, h.trigger_index, (h, img), time.monotonic()):
            # its stereo set already ran without it (its partner waited pair_timeout_ms): not detected online
            self.skipped_late += 1

    def run_batch(self, trigger_index: int, entry: dict[str, Any]) -> None:
        cams = [c for c in self.cameras if c in entry]
        t_start = time.monotonic_ns()
        boxes: list[list[Det]]
        if self.oracle is not None:
            truth = self.truth.get(trigger_index)
            boxes = [self.oracle.detect(c, truth) if truth is not None else [] for c in cams]
        else:
            boxes = self.online.detect([entry[c][1] for c in cams], cams)
        t_end = time.monotonic_ns()
        headers: list[m.FrameHeader] = [entry[c][0] for c in cams]
        for i, h in enumerate(headers):
            if not self.rings.get(h.camera).still_valid(h.slot, h.seq):  # overwritten while we read it
                boxes[i] = []
                self.drops += 1
        t_frame = min(h.t_host_ns for h in headers)
        # the 3-D point first: it is what the closed loop waits for; the boxes are for the record
        if self.tracker is not None:
            self.publish_point(trigger_index, cams, boxes, headers, t_end)
        else:
            self.latency.add((t_end - t_frame) / 1e6)
        for cam, dets, h in zip(cams, boxes, headers):
            self.processed += 1
            self.publish(
                f"det.{cam}",
                m.Detections(
                    camera=cam,
                    seq=h.seq,
                    trigger_index=h.trigger_index,
                    t_frame_ns=h.t_host_ns,
                    t_trigger_ns=h.t_trigger_ns,
                    t_start_ns=t_start,
                    t_end_ns=t_end,
                    runner=self.runner_name,
                    boxes=[m.Box(d.x1, d.y1, d.x2, d.y2, d.confidence, d.class_id) for d in dets],
                ),
            )

    def publish_point(
        self,
        trigger_index: int,
        cams: list[str],
        boxes: list[list[Det]],
        headers: list[m.FrameHeader],
        t_det: int,
    ) -> None:
        assert self.tracker is not None
        per_cam = dict(zip(cams, boxes))
        r = self.tracker.solve(trigger_index, [_boxes_array(per_cam.get(c, [])) for c in self.cameras])
        if r.reason.startswith("reprojection"):
            self.rejected += 1
        t_frame = min(h.t_host_ns for h in headers)
        t_out = time.monotonic_ns()
        self.publish(
            self.point_topic,
            m.Point3D(
                name=self.tc.point_name,
                trigger_index=trigger_index,
                xyz=_t3(r.xyz),
                xyz_filtered=_t3(r.xyz_filtered),
                xyz_predicted=_t3(r.xyz_predicted),
                valid=r.valid,
                reproj_error_px=float(r.reproj_error_px),
                cameras=r.cameras,
                t_frame_ns=t_frame,
                t_trigger_ns=min(h.t_trigger_ns for h in headers),
                t_det_ns=t_det,
                t_out_ns=t_out,
                reason=r.reason,
            ),
        )
        self.latency.add((t_out - t_frame) / 1e6)  # the node's latency: frame -> 3-D published

    def queue_depth(self) -> int:
        return len(self.joiner)

    def teardown(self) -> None:
        if self.runner is not None:
            self.runner.close()
        self.rings.close()

    def extra_stats(self) -> dict[str, float]:
        out = {
            "skipped_late": float(self.skipped_late),
            "shed_for_recording": float(self.shed),
            "incomplete_sets": float(self.joiner.incomplete_sets),
            "rejected": float(self.rejected),
        }
        if self.online is not None:
            out.update({k: float(v) for k, v in self.online.stats.items()})
        return out


class RecordingFirst:
    """How much online detection to give up while the recorder is behind, from its 1 Hz stats.

    From ``shed_at`` frames of backlog (the recorder's queue_depth: the larger of its encoder queue and
    how late frames left the rings) detect one stereo set in 2; from 2 x ``shed_at`` one in 4; from
    3 x ``shed_at`` one in 8. Back to every set once the backlog is under a quarter of ``shed_at``.
    ``shed_at`` None: never give up any."""

    MAX_LEVEL = 3

    def __init__(self, shed_at: int | None):
        if shed_at is not None and shed_at < 1:
            raise ValueError(f"shed_at must be at least one frame, got {shed_at}")
        self.shed_at = shed_at
        self.level = 0  # detect one set in 2 ** level

    @property
    def behind(self) -> bool:
        return self.level > 0

    def update(self, backlog: int) -> str:
        """The recorder's backlog (frames) -> "shed" (more), "resume" or "" (no change)."""
        if self.shed_at is None:
            return ""
        old = self.level
        if backlog >= self.shed_at:
            self.level = max(self.level, min(self.MAX_LEVEL, backlog // self.shed_at))
        elif 4 * backlog <= self.shed_at:
            self.level = 0
        if self.level == old:
            return ""
        return "shed" if self.level > old else "resume"

    def skip(self, trigger_index: int) -> bool:
        return trigger_index % (1 << self.level) != 0


def _boxes_array(dets: list[Det]) -> np.ndarray:
    """Boxes -> (K, 5) ``x1, y1, x2, y2, confidence`` for :class:`analysis.tracking.PointTracker`."""
    return np.array([[d.x1, d.y1, d.x2, d.y2, d.confidence] for d in dets], dtype=np.float64).reshape(-1, 5)


def _t3(a: np.ndarray) -> tuple[float, float, float]:
    return (float(a[0]), float(a[1]), float(a[2]))
