"""The camera node: one process per camera. Grabs frames from a backend into the camera's shared-memory
ring and publishes a FrameHeader per frame on ``frame.<camera>``.

Trigger indices: backends that see the trigger (synthetic, replay) report it; for real cameras a
:class:`~rig.cameras.sync.TriggerMapper` turns frame ids (and the device clock) into trigger indices,
the first frame after arming being trigger 0, and tells lost frames from missed triggers and
duplicates. A camera that fails mid-session (unplugged) raises DeviceError naming it: the node fails
and the supervisor stops the session with that reason, everything recorded so far intact.
"""

from __future__ import annotations

import time

from rig import messages as m
from rig.cameras.base import StreamEnded, make_backend
from rig.cameras.sync import TriggerMapper
from rig.errors import AcquisitionTimeout
from rig.frames import FrameRing, ring_name
from rig.nodes.base import Node
from rig.session_folder import session_calibration


class CameraNode(Node):
    def setup(self) -> None:
        self.camera = self.params["camera"]
        self.ccfg = self.cfg.rig.cameras[self.camera]
        context = {
            "zmq_context": self.ctx,
            "truth_endpoint": self.rt.endpoints.get("world", ""),
            "calibration": session_calibration(self.loaded, self.session_dir),
            "simulation": self.cfg.simulation,
            "session_dir": str(self.session_dir),
            "config_dir": str(self.loaded.base_dir),
            "trigger_rate_hz": self.cfg.rig.trigger.rate_hz,
        }
        self.backend = make_backend(self.camera, self.ccfg, context)
        self.backend.open()
        self.backend.configure()
        self.ring = FrameRing.create(
            ring_name(self.rt.session_id, self.camera),
            self.ccfg.ring_slots,
            self.ccfg.width,
            self.ccfg.height,
        )
        self.backend.start()
        # real cameras report frame ids, not trigger indices: map ids (+ device time) to the trigger count
        self.mapper = TriggerMapper(self.camera, round(1e9 / self.cfg.rig.trigger.rate_hz))
        self.missed_triggers = 0
        self.lost = 0
        self.timeouts = 0
        self.topic = f"frame.{self.camera}"
        self.started = False

    def step(self) -> None:
        assert self.sub is not None
        for _t, msg in self.sub.recv_all(0 if self.started else 50):
            if isinstance(msg, m.Control):
                self.on_control(msg)
                self.started = self.started or msg.command == "start"
        if not self.started:  # grab nothing before every consumer is listening
            if self.stop_requested:
                self._end("stopped before start")
            return
        try:
            fr = self.backend.grab(timeout_s=0.1 if self.stop_requested else 0.25)
        except StreamEnded:
            self._end("stream ended")
            return
        except AcquisitionTimeout:
            self.timeouts += 1
            if self.stop_requested:
                self._end("stopped")
            elif self.timeouts * 0.25 * 1000 > self.ccfg.grab_timeout_ms * 20:
                self.log.warning("camera %s: no frame for %.1f s", self.camera, self.timeouts * 0.25)
                self.timeouts = 0
            return
        self.timeouts = 0
        trigger_index = fr.trigger_index
        if trigger_index < 0:
            sync = self.mapper.map(fr.frame_id, fr.t_device_ns if fr.t_device_ns > 0 else fr.t_host_ns)
            if sync.duplicate:
                self.log.warning("camera %s: duplicate frame id %d dropped", self.camera, fr.frame_id)
                self.drops += 1
                return
            trigger_index = sync.trigger_index
            if sync.missed_triggers:
                self.missed_triggers += sync.missed_triggers
                self.log.warning(
                    "camera %s: %d trigger(s) without a frame before trigger %d",
                    self.camera,
                    sync.missed_triggers,
                    trigger_index,
                )
        slot, seq = self.ring.write(fr.image)
        self.lost += fr.lost_before
        self.drops += fr.lost_before + (1 if fr.incomplete else 0)
        hdr = m.FrameHeader(
            camera=self.camera,
            seq=seq,
            frame_id=fr.frame_id,
            trigger_index=trigger_index,
            t_host_ns=fr.t_host_ns,
            t_device_ns=fr.t_device_ns,
            t_trigger_ns=fr.t_trigger_ns,
            slot=slot,
            width=self.ccfg.width,
            height=self.ccfg.height,
            lost_before=fr.lost_before,
            incomplete=fr.incomplete,
        )
        self.publish(self.topic, hdr)
        self.processed += 1
        if fr.t_trigger_ns > 0:
            self.latency.add((time.monotonic_ns() - fr.t_trigger_ns) / 1e6)

    def _end(self, why: str) -> None:
        self.publish(
            self.topic,
            m.FrameHeader(
                camera=self.camera,
                seq=self.ring.next_seq,
                frame_id=-1,
                trigger_index=-1,
                t_host_ns=time.monotonic_ns(),
                eos=True,
            ),
        )
        self.log.info("camera %s: %s after %d frames", self.camera, why, self.processed)
        self.done = True

    def teardown(self) -> None:
        backend = getattr(self, "backend", None)
        if backend is not None:
            try:
                backend.stop()
            finally:
                backend.close()
        ring = getattr(self, "ring", None)
        if ring is not None:
            ring.close()  # the supervisor unlinks the ring when the session ends

    def extra_stats(self) -> dict[str, float]:
        return {
            "lost": float(self.lost),
            "missed_triggers": float(self.missed_triggers),
            **self.backend.stream_stats(),
        }
