"""The recorder node: every frame to video + frame table, and every detection, 3-D point, event and
trial to append-only tables in the session folder. Flushed each second, fsynced at trial ends.

It finishes only when the supervisor sends it ``ctl stop`` (after every producer has exited) and its
queue has drained, so nothing in flight is lost.
"""

from __future__ import annotations

import json
import math
import time

from rig import messages as m
from rig.nodes.base import Node
from rig.recorder import (
    DETECTION_COLUMNS,
    FRAME_COLUMNS,
    POINT_COLUMNS,
    TRIAL_COLUMNS,
    TRIGGER_COLUMNS,
    TRUTH_COLUMNS,
    JsonLines,
    Table,
    VideoWriter,
)
from rig.session import SessionRings, storage_error


class RecorderNode(Node):
    def setup(self) -> None:
        rc = self.cfg.pipeline.recorder
        d = self.session_dir
        try:
            self.videos = {
                cam: VideoWriter(
                    d / f"{cam}.mkv",
                    c.width,
                    c.height,
                    self.cfg.rig.trigger.rate_hz,
                    rc,
                    max_queue=max(64, round(rc.buffer_s * self.cfg.rig.trigger.rate_hz)),
                )
                for cam, c in self.cfg.rig.cameras.items()
            }
            self.frame_tables = {
                cam: Table(d / f"{cam}.frames.csv", FRAME_COLUMNS) for cam in self.cfg.rig.cameras
            }
            self.det_table = Table(d / "detections.csv", DETECTION_COLUMNS)
            self.point_table = Table(d / "points3d.csv", POINT_COLUMNS)
            self.trial_table = Table(d / "trials.csv", TRIAL_COLUMNS)
            # the clock model: each trigger pulse on the host clock and the firmware's (when it has one)
            self.trigger_table = Table(d / "triggers.csv", TRIGGER_COLUMNS)
            self.truth_table = (
                Table(d / "truth.csv", TRUTH_COLUMNS) if rc.record_truth and self.cfg.simulation else None
            )
            self.events = JsonLines(d / "events.jsonl")
        except OSError as exc:
            raise storage_error(exc, d) from None
        self.rings = SessionRings(self.rt.session_id)
        self.read_lag_ns = 0
        self.next_seq = dict.fromkeys(self.cfg.rig.cameras, 0)
        self.video_index = dict.fromkeys(self.cfg.rig.cameras, 0)
        self.frames_written = dict.fromkeys(self.cfg.rig.cameras, 0)
        self.frames_dropped = dict.fromkeys(self.cfg.rig.cameras, 0)
        self.trial_start: dict[int, int] = {}
        self.last_flush = time.monotonic()
        self.drain_deadline: float | None = None

    def step(self) -> None:
        assert self.sub is not None
        batch = self.sub.recv_all(50, limit=500)
        for topic, msg in batch:
            self.handle(topic, msg)
        now = time.monotonic()
        if now - self.last_flush > 0.5:
            self.flush(fsync=False)
            self.last_flush = now
        for cam, v in self.videos.items():
            if v.error is not None:
                raise (
                    storage_error(v.error, v.path)
                    if isinstance(v.error, OSError)
                    else RuntimeError(f"{v.path}: video encoder failed for camera {cam}: {v.error}")
                )
        if self.drain_deadline is not None and (not batch or now > self.drain_deadline):
            self.done = True

    def handle(self, topic: str, msg: m.AnyMsg) -> None:
        try:
            if isinstance(msg, m.FrameHeader):
                self.on_frame(msg)
            elif isinstance(msg, m.Detections):
                self.on_detections(msg)
            elif isinstance(msg, m.Point3D):
                self.on_point(msg)
            elif isinstance(msg, m.Trigger):
                self.trigger_table.write([msg.index, msg.t_host_ns, msg.t_fw_us])
            elif isinstance(msg, m.Truth):
                self.on_truth(msg)
            elif isinstance(msg, m.TaskEvent):
                self.on_task_event(topic, msg)
            elif isinstance(msg, m.SerialEvent | m.Command):
                self.events.write(json.dumps({"topic": topic, **m.to_builtins(msg)}))
            elif isinstance(msg, m.Control):
                if msg.command == "mark":
                    self.events.write(json.dumps({"topic": topic, **m.to_builtins(msg)}))
                elif msg.command == "stop" and topic == "ctl" and msg.detail in ("", self.name):
                    self.drain_deadline = time.monotonic() + 2.0
        except OSError as exc:
            raise storage_error(exc, self.session_dir) from None

    def on_frame(self, h: m.FrameHeader) -> None:
        cam = h.camera
        if h.eos:
            return
        table = self.frame_tables[cam]
        # frames that never reached us (bus high-water mark) are rows too, flagged dropped
        for missing in range(self.next_seq[cam], h.seq):
            table.write([missing, -1, -1, -1, -1, -1, -1, -1, 1, 0, 0])
            self.frames_dropped[cam] += 1
            self.drops += 1
        self.next_seq[cam] = h.seq + 1
        # how late this frame leaves the ring (a starved recorder loses frames here, not in the encoder)
        self.read_lag_ns = max(self.read_lag_ns, time.monotonic_ns() - h.t_host_ns)
        img = self.rings.get(cam).read(h.slot, h.seq)
        video_index = -1
        if img is not None and self.videos[cam].put(img):
            video_index = self.video_index[cam]
            self.video_index[cam] += 1
            self.frames_written[cam] += 1
        else:
            self.frames_dropped[cam] += 1
            self.drops += 1
        table.write(
            [
                h.seq,
                h.frame_id,
                h.trigger_index,
                h.t_trigger_ns,
                h.t_device_ns,
                h.t_host_ns,
                time.monotonic_ns(),
                video_index,
                int(video_index < 0),
                h.lost_before,
                int(h.incomplete),
            ]
        )
        self.processed += 1
        self.latency.add((time.monotonic_ns() - h.t_host_ns) / 1e6)

    def on_detections(self, d: m.Detections) -> None:
        if d.eos:
            return
        base = [d.camera, d.seq, d.trigger_index, d.t_frame_ns, d.t_start_ns, d.t_end_ns, len(d.boxes)]
        if not d.boxes:
            self.det_table.write([*base, -1, "", "", "", "", "", ""])
        for i, b in enumerate(d.boxes):
            self.det_table.write(
                [*base, i, _f(b.x1), _f(b.y1), _f(b.x2), _f(b.y2), _f(b.confidence), b.class_id]
            )

    def on_point(self, p: m.Point3D) -> None:
        self.point_table.write(
            [
                p.trigger_index,
                p.name,
                *map(_f, p.xyz),
                *map(_f, p.xyz_filtered),
                *map(_f, p.xyz_predicted),
                int(p.valid),
                _f(p.reproj_error_px),
                "+".join(p.cameras),
                p.t_frame_ns,
                p.t_trigger_ns,
                p.t_det_ns,
                p.t_out_ns,
                p.reason,
            ]
        )

    def on_truth(self, t: m.Truth) -> None:
        if self.truth_table is not None:
            self.truth_table.write(
                [
                    t.trigger_index,
                    t.t_trigger_ns,
                    *map(_f, t.paw_xyz),
                    _f(t.paw_radius_mm),
                    *map(_f, t.pellet_xyz),
                    int(t.pellet_present),
                    int(t.platform_up),
                    t.trial,
                    t.phase,
                ]
            )

    def on_task_event(self, topic: str, e: m.TaskEvent) -> None:
        self.events.write(json.dumps({"topic": topic, **m.to_builtins(e)}))
        if e.kind == "trial_start":
            self.trial_start[e.trial] = e.t_host_ns
        elif e.kind == "trial_end":
            self.trial_table.write([e.trial, self.trial_start.get(e.trial, -1), e.t_host_ns, e.outcome])
            self.flush(fsync=True)  # a trial's data is on disk when the trial ends

    def flush(self, fsync: bool) -> None:
        tables: list[Table | JsonLines] = [
            *self.frame_tables.values(),
            self.det_table,
            self.point_table,
            self.trial_table,
            self.trigger_table,
            self.events,
        ]
        if self.truth_table is not None:
            tables.append(self.truth_table)
        for t in tables:
            t.flush(fsync)

    def queue_depth(self) -> int:
        """Frames behind, per camera: the larger of the encoder backlog and how late frames left the rings
        since the last stats (what the detector's recorder_behind_s watches)."""
        lag = round(self.read_lag_ns * self.cfg.rig.trigger.rate_hz / 1e9)
        self.read_lag_ns = 0
        return max([lag, *(v.queue.qsize() for v in self.videos.values())])

    def extra_stats(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for cam in self.videos:
            out[f"{cam}.written"] = float(self.frames_written[cam])
            out[f"{cam}.dropped"] = float(self.frames_dropped[cam])
            out[f"{cam}.encoder_handoffs"] = float(self.videos[cam].handoffs)
            try:
                out[f"{cam}.mb"] = self.videos[cam].path.stat().st_size / 1e6
            except OSError:
                pass
        return out

    def teardown(self) -> None:
        errors = []
        for v in getattr(self, "videos", {}).values():
            v.close()
            if v.error is not None:
                errors.append(f"{v.path}: {v.error}")
        files = [*getattr(self, "frame_tables", {}).values()]
        files += [
            getattr(self, n, None)
            for n in ("det_table", "point_table", "trial_table", "trigger_table", "truth_table", "events")
        ]
        for t in files:
            if t is None:
                continue
            try:
                t.close()
            except OSError as exc:  # e.g. disk full: the file holds everything flushed before
                errors.append(f"{t.path}: {exc.strerror}")
        if hasattr(self, "rings"):
            self.rings.close()
        if errors:
            self.log.error("recorder: %s", "; ".join(errors))


def _f(v: float) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.10g}"
