"""The recorder node: every frame to video + frame table, and every detection, 3-D point, event and
trial to append-only tables in the session folder. Flushed each half second, fsynced at trial ends.

Frames leave the rings on a small drain thread (:class:`FrameDrain`) that only copies pixels into each
camera's encoding queue (``recorder.buffer_s`` seconds of RAM); it runs at ``pipeline.realtime.priority``
when the machine allows, so a busy machine delays encoding and table writing, never the copy out of the
rings. A frame's row reaches its table only once the frame is in the video file (rig/recorder.py), so
the tables never claim a frame the video lacks.

It finishes only when the supervisor sends it ``ctl stop`` (after every producer has exited), or on
SIGTERM: it takes every frame still announced, waits until each encoder has written its queue, and
closes every file.
"""

from __future__ import annotations

import math
import os
import threading
import time

from rig import messages as m
from rig.bus import Subscriber
from rig.frames import SessionRings
from rig.nodes.base import Node
from rig.recorder import VideoWriter
from rig.session import (
    DETECTION_COLUMNS,
    FRAME_COLUMNS,
    POINT_COLUMNS,
    TRIAL_COLUMNS,
    TRIGGER_COLUMNS,
    TRUTH_COLUMNS,
    JsonLines,
    Table,
    event_record,
    hold_writer_lock,
)
from rig.session_folder import storage_error

DRAIN_QUIET_S = 0.3  # after a stop: no frame announced for this long and the drain is done
DRAIN_MAX_S = 5.0  # ... or this long after the stop, whatever is still coming


class FrameDrain:
    """Takes every announced frame off its camera's ring into the camera's :class:`VideoWriter` queue,
    with its frame-table row (rows for sequence gaps too), on its own thread and ZeroMQ socket."""

    def __init__(self, node: RecorderNode, endpoints: list[str], priority: int):
        self.node = node
        self.videos = node.videos
        self.rings = SessionRings(node.rt.session_id)
        self.sub = Subscriber(node.ctx, endpoints, ("frame.",))
        self.priority = priority
        self.next_seq = dict.fromkeys(self.videos, 0)
        self.read_lag_ns = 0  # the latest a frame left its ring since the last stats
        self.frames = 0
        self.stop_at: float | None = None  # monotonic time the stop was asked
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="frame-drain", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def request_stop(self) -> None:
        if self.stop_at is None:
            self.stop_at = time.monotonic()

    def _run(self) -> None:
        if self.priority:
            try:
                os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(self.priority))
                self.node.log.info(
                    "recorder: frames leave the rings at real-time priority SCHED_FIFO %d", self.priority
                )
            except (OSError, AttributeError) as exc:
                self.node.log.warning(
                    "recorder: cannot take frames off the rings at real-time priority (SCHED_FIFO %d): %s; "
                    "at normal priority (README: Real-time priority)",
                    self.priority, getattr(exc, "strerror", None) or exc,
                )  # fmt: skip
        try:
            last_frame = time.monotonic()
            while True:
                batch = self.sub.recv_all(20, limit=200)
                now = time.monotonic()
                for _topic, h in batch:
                    if isinstance(h, m.FrameHeader) and not h.eos and h.camera in self.videos:
                        self._take(h)
                        last_frame = now
                if self.stop_at is not None and (
                    now - last_frame > DRAIN_QUIET_S or now - self.stop_at > DRAIN_MAX_S
                ):
                    return
        except BaseException as exc:
            self.error = exc
        finally:
            self.sub.close()
            self.rings.close()

    def _take(self, h: m.FrameHeader) -> None:
        cam = h.camera
        video = self.videos[cam]
        # frames announced but never received (bus high-water mark) are rows too, flagged dropped
        for missing in range(self.next_seq[cam], h.seq):
            video.lost([missing, -1, -1, -1, -1, -1, -1, 0, 0])
        self.next_seq[cam] = max(self.next_seq[cam], h.seq + 1)
        now = time.monotonic_ns()
        self.read_lag_ns = max(self.read_lag_ns, now - h.t_host_ns)
        try:
            img = self.rings.get(cam).read(h.slot, h.seq)
        except (OSError, ValueError):  # the ring is gone (its camera ended)
            img = None
        values = [
            h.seq, h.frame_id, h.trigger_index, h.t_trigger_ns, h.t_device_ns, h.t_host_ns, now,
            h.lost_before, int(h.incomplete),
        ]  # fmt: skip
        if img is None:  # the camera overwrote the slot before we got to it: a dropped row
            video.lost(values)
        else:
            video.put(img, values)  # refused (neither RAM nor disk left): its row settles dropped
        self.frames += 1

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()


class RecorderNode(Node):
    def setup(self) -> None:
        rc = self.cfg.pipeline.recorder
        d = self.session_dir
        rate = self.cfg.rig.trigger.rate_hz
        try:
            self.lock_fd = hold_writer_lock(d)  # `session --repair` waits for the recorder to finish
            self.videos = {
                cam: VideoWriter(
                    d / f"{cam}.mkv",
                    c.width,
                    c.height,
                    rate,
                    rc,
                    max_queue=max(64, round(rc.buffer_s * rate)),
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
        self.rows_recorded = dict.fromkeys(self.cfg.rig.cameras, 0)
        self.rows_dropped = dict.fromkeys(self.cfg.rig.cameras, 0)
        self.trial_start: dict[int, int] = {}
        self.last_flush = time.monotonic()
        self.drain_deadline: float | None = None
        cams = [
            self.rt.endpoints[f"cam-{c}"] for c in self.cfg.rig.cameras if f"cam-{c}" in self.rt.endpoints
        ]
        self.drain = FrameDrain(self, cams, self.cfg.pipeline.realtime.priority)
        self.drain.start()

    def step(self) -> None:
        assert self.sub is not None
        batch = self.sub.recv_all(50, limit=500)
        for topic, msg in batch:
            self.handle(topic, msg)
        now = time.monotonic()
        if now - self.last_flush > 0.5:
            self.flush(fsync=False)
            self.last_flush = now
        if self.drain.error is not None:
            raise self.drain.error
        for cam, v in self.videos.items():
            if v.error is not None:
                raise (
                    storage_error(v.error, v.path)
                    if isinstance(v.error, OSError)
                    else RuntimeError(f"{v.path}: video encoder failed for camera {cam}: {v.error}")
                )
        # stopping: every frame announced is off the rings, every other message taken, and every
        # encoder has written its queue (stats go on meanwhile: the supervisor sees the progress)
        deadline = self.drain_deadline
        for v in self.videos.values():
            # an idle encoder with a backlog goes back to normal priority; while stopping, with any backlog
            # (at idle priority, other work on a busy machine could hold the last frames back for ever)
            v.keep_up(stopping=deadline is not None)
        if deadline is not None and self.drain.done and (not batch or now > deadline):
            self.done = all(v.queue.qsize() == 0 for v in self.videos.values())

    def on_terminate(self) -> bool:
        """SIGTERM (the supervisor gone, a service manager's stop): finish like a stop request."""
        self._stop()
        return True

    def _stop(self) -> None:
        if self.drain_deadline is None:
            self.drain_deadline = time.monotonic() + 2.0
            self.drain.request_stop()

    def handle(self, topic: str, msg: m.AnyMsg) -> None:
        try:
            if isinstance(msg, m.Detections):
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
                self.events.write(event_record(topic, msg))
            elif isinstance(msg, m.Control):
                if msg.command == "mark":
                    self.events.write(event_record(topic, msg))
                elif msg.command == "stop" and topic == "ctl" and msg.detail in ("", self.name):
                    self._stop()
        except OSError as exc:
            raise storage_error(exc, self.session_dir) from None

    def write_frame_rows(self) -> None:
        """Rows whose frames are in the video (or known lost), in order, to the frame tables."""
        for cam, video in self.videos.items():
            table = self.frame_tables[cam]
            for row in video.take_settled():
                v = row.values
                table.write([*v[:7], row.video_index, int(row.video_index < 0), *v[7:]])
                if row.video_index >= 0:
                    self.rows_recorded[cam] += 1
                else:
                    self.rows_dropped[cam] += 1
            self.processed = self.drain.frames
            self.drops = sum(self.rows_dropped.values())

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
        self.events.write(event_record(topic, e))
        if e.kind == "trial_start":
            self.trial_start[e.trial] = e.t_host_ns
        elif e.kind == "trial_end":
            self.trial_table.write([e.trial, self.trial_start.get(e.trial, -1), e.t_host_ns, e.outcome])
            self.flush(fsync=True)  # a trial's data is on disk when the trial ends

    def flush(self, fsync: bool) -> None:
        self.write_frame_rows()
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
        lag = round(self.drain.read_lag_ns * self.cfg.rig.trigger.rate_hz / 1e9)
        self.drain.read_lag_ns = 0
        return max([lag, *(v.queue.qsize() for v in self.videos.values())])

    def extra_stats(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for cam, v in self.videos.items():
            out[f"{cam}.written"] = float(self.rows_recorded[cam])  # rows settled in the video file
            out[f"{cam}.dropped"] = float(self.rows_dropped[cam])
            out[f"{cam}.queued"] = float(v.queue.qsize())
            out[f"{cam}.spilled"] = float(v.queue.spilled)  # frames that waited on disk, not in RAM
            out[f"{cam}.encoder_handoffs"] = float(v.handoffs)
            try:
                out[f"{cam}.mb"] = v.path.stat().st_size / 1e6
            except OSError:
                pass
        return out

    def teardown(self) -> None:
        errors = []
        drain = getattr(self, "drain", None)
        if drain is not None:  # a failure elsewhere: the frames already announced still go to the videos
            drain.request_stop()
            drain.thread.join(DRAIN_MAX_S + 25)  # it stops by itself DRAIN_MAX_S after the request
        for v in getattr(self, "videos", {}).values():
            v.close()
            if v.error is not None:
                errors.append(f"{v.path}: {v.error}")
        if hasattr(self, "frame_tables"):
            try:
                self.write_frame_rows()  # every row is settled now: in the video, or dropped
            except OSError as exc:
                errors.append(f"frame tables: {exc.strerror}")
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
        if errors:
            self.log.error("recorder: %s", "; ".join(errors))


def _f(v: float) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.10g}"
