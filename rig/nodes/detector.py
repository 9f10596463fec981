"""The detector node: reads frames from the shared-memory rings, batches the stereo set by trigger
index, runs the configured runner, and publishes ``det.<camera>`` with the frame's timestamps plus its
own. Restartable: a restarted detector resumes with the next frames (the ones it missed are counted).
"""

from __future__ import annotations

import time
from typing import Any

from detection.base import Det
from rig import messages as m
from rig.nodes.base import Node
from rig.session import SessionRings, session_calibration

BATCH_WAIT_S = 0.05  # how long a stereo set waits for its partner frame before running without it
ORACLE_TRUTH_WAIT_S = 0.5  # how long a partial stereo set waits for its partner before running alone


class DetectorNode(Node):
    def setup(self) -> None:
        dc = self.cfg.pipeline.detector
        self.cameras = list(self.cfg.rig.cameras)
        self.rings = SessionRings(self.rt.session_id)
        self.pending: dict[int, dict[str, Any]] = {}  # trigger_index -> {"t": first arrival, cam: (hdr, img)}
        self.truth: dict[int, m.Truth] = {}
        self.eos: set[str] = set()
        self.oracle = None
        self.runner = None
        self.online: Any = None
        if dc.runner == "oracle":
            from rig.sim.oracle import OracleRunner

            self.oracle = OracleRunner(session_calibration(self.loaded, self.session_dir), dc.oracle_noise_px)
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
        self.last_batch_index = -1  # the ROI tracker sees stereo sets in trigger order, never back in time

    def step(self) -> None:
        assert self.sub is not None
        for _topic, msg in self.sub.recv_all(5, limit=200):
            if isinstance(msg, m.FrameHeader):
                self.on_frame(msg)
            elif isinstance(msg, m.Truth):
                self.truth[msg.trigger_index] = msg
            elif isinstance(msg, m.Control):
                self.on_control(msg)
        now = time.monotonic()
        # stereo sets run in trigger order: a later complete set waits for an earlier incomplete one (at
        # most BATCH_WAIT_S), so the ROI tracker never goes back in time
        for k in sorted(self.pending):
            v = self.pending[k]
            complete = len(v) - 1 == len(self.cameras)
            if not (complete or now - v["t"] > BATCH_WAIT_S or self.eos):
                break
            # the oracle needs the world's truth for this trigger; it travels on another socket and
            # may arrive after the frames on a loaded machine
            if not (self.oracle is None or k in self.truth or now - v["t"] > ORACLE_TRUTH_WAIT_S or self.eos):
                break
            self.run_batch(k, self.pending.pop(k))
        if len(self.truth) > 4096:
            for k in sorted(self.truth)[:2048]:
                del self.truth[k]
        if self.eos == set(self.cameras) and not self.pending:
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

    def on_frame(self, h: m.FrameHeader) -> None:
        if h.eos:
            self.eos.add(h.camera)
            return
        if h.trigger_index <= self.last_batch_index or (
            self.max_lag_ns and time.monotonic_ns() - h.t_host_ns > self.max_lag_ns
        ):
            # its stereo set already ran without it (its partner waited BATCH_WAIT_S), or it is too old:
            # not detected online (the recording keeps it); an overloaded machine catches up
            self.skipped_late += 1
            return
        ring = self.rings.get(h.camera)
        img = None
        if self.oracle is not None:  # the oracle never looks at pixels, but the frame must still exist
            ok = ring.still_valid(h.slot, h.seq)
        else:
            img = ring.read(h.slot, h.seq)
            ok = img is not None
        if not ok:
            self.drops += 1
            return
        entry = self.pending.setdefault(h.trigger_index, {"t": time.monotonic()})
        entry[h.camera] = (h, img)

    def run_batch(self, trigger_index: int, entry: dict[str, Any]) -> None:
        self.last_batch_index = max(self.last_batch_index, trigger_index)
        cams = [c for c in self.cameras if c in entry]
        t_start = time.monotonic_ns()
        boxes: list[list[Det]]
        if self.oracle is not None:
            truth = self.truth.get(trigger_index)
            boxes = [self.oracle.detect(c, truth) if truth is not None else [] for c in cams]
        else:
            boxes = self.online.detect([entry[c][1] for c in cams], cams)
        t_end = time.monotonic_ns()
        for cam, dets in zip(cams, boxes):
            h: m.FrameHeader = entry[cam][0]
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
            self.processed += 1
            self.latency.add((t_end - h.t_host_ns) / 1e6)

    def queue_depth(self) -> int:
        return len(self.pending)

    def teardown(self) -> None:
        if self.runner is not None:
            self.runner.close()
        self.rings.close()

    def extra_stats(self) -> dict[str, float]:
        out = {"skipped_late": float(self.skipped_late)}
        if self.online is not None:
            out.update({k: float(v) for k, v in self.online.stats.items()})
        return out
