"""The bridge node: republishes a session's bus and frames on TCP for consumers on another machine.

The wire format (topics, the frame message's four parts, ``bridge.info``, the control socket) and the client
live in :mod:`rig.bridge`, which both ends import.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import msgspec
import zmq

from analysis.camera import calibration_to_dict
from rig import messages as m
from rig.bridge import (
    BRIDGE_FILE,
    BUS_HWM,
    DEFAULT_MAX_FPS,
    FRAME_COUNT,
    FRAME_HWM,
    INFO_TOPIC,
    downscale_image,
    route_request,
)
from rig.display.model import zones_from_config
from rig.errors import InputError, ProtocolError
from rig.frames import SessionRings
from rig.nodes.base import Node
from rig.session import write_json_atomic
from rig.session_folder import session_calibration


class BridgeNode(Node):
    """Republishes the session's bus and frames on TCP (see the module docstring)."""

    def setup(self) -> None:
        bcfg = self.cfg.pipeline.bridge
        self.downscale = int(bcfg.downscale)
        # frames per second per camera sent on (0: every frame); a display needs ~30, and every frame
        # sent costs a copy and a TCP send on a machine whose cores belong to the pipeline first
        self.max_fps = float(self.params.get("max_fps", getattr(bcfg, "max_fps", DEFAULT_MAX_FPS)))
        self.min_gap_ns = int(1e9 / self.max_fps) if self.max_fps > 0 else 0
        self.last_sent_ns: dict[str, int] = {}
        self.thinned = 0
        self.sent_count: dict[str, int] = {}  # frames sent per camera: the 4th part, so clients count gaps
        self.tcp = self.ctx.socket(zmq.PUB)
        self.tcp.setsockopt(zmq.SNDHWM, BUS_HWM)
        self.tcp.setsockopt(zmq.LINGER, 0)
        # what a remote peer may send in: subscriptions (a few bytes) on the PUB sockets, small control
        # messages on the PULL socket; anything larger closes that peer's connection, never a node
        self.tcp.setsockopt(zmq.MAXMSGSIZE, 4096)
        try:
            self.tcp.bind(bcfg.bind)
        except zmq.ZMQError as exc:
            raise InputError(f"pipeline.bridge.bind: cannot bind {bcfg.bind!r}: {exc}") from None
        self.endpoint = self.tcp.getsockopt_string(zmq.LAST_ENDPOINT)
        host = self.endpoint.rsplit(":", 1)[0]
        self.frames_sock = self.ctx.socket(zmq.XPUB)
        self.frames_sock.setsockopt(zmq.SNDHWM, FRAME_HWM)
        self.frames_sock.setsockopt(zmq.LINGER, 0)
        self.frames_sock.setsockopt(zmq.MAXMSGSIZE, 4096)
        self.frames_sock.bind(f"{host}:0")
        self.frame_endpoint = self.frames_sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.frame_subs: set[bytes] = set()
        self.control = self.ctx.socket(zmq.PULL)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.setsockopt(zmq.RCVHWM, 100)
        self.control.setsockopt(zmq.MAXMSGSIZE, 65536)
        self.control.bind(f"{host}:0")
        self.control_endpoint = self.control.getsockopt_string(zmq.LAST_ENDPOINT)
        cams = self.cfg.rig.cameras
        try:
            calib: dict[str, Any] | None = calibration_to_dict(
                session_calibration(self.loaded, self.session_dir)
            )
        except Exception as exc:  # the bridge works without a calibration (no reprojection then)
            self.log.warning("bridge: no calibration for remote consumers: %s", exc)
            calib = None
        zones, pellet = zones_from_config(self.cfg)
        self.info: dict[str, Any] = {
            "schema": m.SCHEMA_VERSION,
            "session_id": self.rt.session_id,
            "session_dir": str(self.session_dir),
            "endpoint": self.endpoint,
            "control_endpoint": self.control_endpoint,
            "control_port": int(self.control_endpoint.rsplit(":", 1)[1]),
            "frame_endpoint": self.frame_endpoint,
            "frame_port": int(self.frame_endpoint.rsplit(":", 1)[1]),
            "cameras": {n: {"width": c.width, "height": c.height} for n, c in cams.items()},
            "rate_hz": self.cfg.rig.trigger.rate_hz,
            "downscale": self.downscale,
            "max_fps": self.max_fps,
            "calibration": calib,
            # what the display draws on its 3-D panels: the closed-loop zone, the rest sphere, the pellet
            "zones": [asdict(z) for z in zones],
            "pellet_configured": pellet,
            "ended": False,
            "t_start_ns": -1,
            "task": {"trial": 0, "done": 0, "outcomes": {}},  # so a consumer that joins late starts right
        }
        write_json_atomic(
            self.session_dir / BRIDGE_FILE, {k: v for k, v in self.info.items() if k != "calibration"}
        )
        self.log.info("bridge: publishing on %s (control %s)", self.endpoint, self.control_endpoint)
        self.rings = SessionRings(self.rt.session_id)
        self.bytes_sent = 0
        self.requests = 0
        self.last_info = 0.0
        self.end_deadline: float | None = None
        self.poller = zmq.Poller()
        assert self.sub is not None
        self.poller.register(self.sub.sock, zmq.POLLIN)
        self.poller.register(self.control, zmq.POLLIN)
        self.poller.register(self.frames_sock, zmq.POLLIN)
        self._send_info()

    def _send_info(self) -> None:
        self.tcp.send_multipart([INFO_TOPIC.encode(), json.dumps(self.info).encode()])
        self.last_info = time.monotonic()

    def step(self) -> None:
        assert self.sub is not None
        events = dict(self.poller.poll(20))
        if self.sub.sock in events:
            for _ in range(2000):
                try:
                    parts = self.sub.sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self._forward(parts)
        if self.control in events:
            self._requests()
        if self.frames_sock in events:
            self._subscriptions()
        now = time.monotonic()
        if now - self.last_info > 0.5:
            self._send_info()
        if self.end_deadline is not None and now > self.end_deadline:
            self.done = True

    def _subscriptions(self) -> None:
        """XPUB: b"\\x01prefix" subscribes, b"\\x00prefix" unsubscribes (the last subscriber of it)."""
        for _ in range(100):
            try:
                ev = self.frames_sock.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if ev[:1] == b"\x01":
                self.frame_subs.add(ev[1:])
            elif ev[:1] == b"\x00":
                self.frame_subs.discard(ev[1:])
            self.log.info(
                "bridge: frame subscriptions now %s",
                sorted(s.decode(errors="replace") for s in self.frame_subs),
            )

    def _wanted(self, topic: bytes) -> bool:
        return any(topic.startswith(s) for s in self.frame_subs)

    def _forward(self, parts: list[zmq.Frame]) -> None:
        topic = parts[0].bytes
        if topic.startswith(b"frame."):
            if not self._wanted(topic):
                return  # nobody watches frames: no copy out of the ring
            hdr = m.decode(parts[1].buffer, topic.decode())
            assert isinstance(hdr, m.FrameHeader)
            if hdr.eos:
                self.frames_sock.send_multipart([topic, parts[1].bytes, b""])
                return
            if self.min_gap_ns and hdr.t_host_ns - self.last_sent_ns.get(hdr.camera, 0) < self.min_gap_ns:
                self.thinned += 1  # by design (max_fps), not a drop
                return
            self.last_sent_ns[hdr.camera] = hdr.t_host_ns
            ring = self.rings.find(hdr.camera)
            img = ring.read(hdr.slot, hdr.seq) if ring is not None else None
            if img is None:
                self.drops += 1  # the camera overwrote the slot before we got to it
                return
            img = downscale_image(img, self.downscale)
            out = msgspec.structs.replace(hdr, width=img.shape[1], height=img.shape[0])
            n = self.sent_count.get(hdr.camera, 0)
            self.sent_count[hdr.camera] = n + 1
            self.frames_sock.send_multipart([topic, m.encode(out), img.data, FRAME_COUNT.pack(n)], copy=False)
            self.bytes_sent += img.nbytes
            self.processed += 1
            return
        self.tcp.send_multipart([topic, parts[1]], copy=False)
        if topic == b"ctl" or topic.startswith(b"node."):
            msg = m.decode(parts[1].buffer, topic.decode())
            self._watch_end(msg)
            if isinstance(msg, m.Control) and msg.command == "start":
                self.info["t_start_ns"] = msg.t_host_ns
        elif topic == b"task.event":
            ev = m.decode(parts[1].buffer, "task.event")
            if isinstance(ev, m.TaskEvent):
                task = self.info["task"]
                if ev.kind == "trial_start":
                    task["trial"] = ev.trial
                elif ev.kind == "trial_end":
                    task["done"] += 1
                    task["outcomes"][ev.outcome] = task["outcomes"].get(ev.outcome, 0) + 1

    def _watch_end(self, msg: m.AnyMsg) -> None:
        """Stop after the recorder (the last node the supervisor stops) has exited, or when told to."""
        if isinstance(msg, m.Control) and msg.command == "stop":
            if msg.detail in ("", self.name):
                self.end_deadline = time.monotonic() + 0.2
            elif msg.detail == "recorder" and self.end_deadline is None:
                self.end_deadline = time.monotonic() + 60.0
        elif isinstance(msg, m.NodeStatus) and msg.node == "recorder" and msg.status == "exiting":
            self.end_deadline = time.monotonic() + 0.3

    def _requests(self) -> None:
        for _ in range(100):
            try:
                payload = self.control.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = m.decode(payload, "bridge control")
            except ProtocolError as exc:
                self.log.warning("bridge: refused a remote request: %s", exc)
                continue
            if not isinstance(msg, m.Control) or msg.command == "start":
                self.log.warning("bridge: refused a remote request that is not a user control: %r", msg)
                continue
            self.requests += 1
            self.log.info("bridge: remote request %s %r", msg.command, msg.detail)
            self.publish(route_request(msg), msg)

    def teardown(self) -> None:
        if hasattr(self, "tcp"):
            self.info["ended"] = True
            try:
                self._send_info()
            except zmq.ZMQError:
                pass
            time.sleep(0.05)
            self.tcp.close(linger=200)
            self.frames_sock.close(linger=0)
            self.control.close()
        if hasattr(self, "rings"):
            self.rings.close()

    def extra_stats(self) -> dict[str, float]:
        return {
            "mb_sent": self.bytes_sent / 1e6,
            "requests": float(self.requests),
            "thinned": float(self.thinned),
        }
