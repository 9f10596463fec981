"""The TCP bridge: a session's bus and frames for consumers on another machine.

The bridge node subscribes to every node of the session and republishes on one TCP PUB socket:

* every bus message (``det.``, ``point3d.``, ``task.``, ``stats.``, ``node.``, ``log.``, ``ctl``,
  ``sim.truth``, ``serial.``, ``cmd.``, ``ui.``) as the same ``[topic, payload]``, forwarded verbatim;
* on a second TCP PUB socket (port in ``bridge.info``), frames (at most ``max_fps`` per camera; every
  frame with 0) as four-part ``[b"frame.<camera>", header, pixels, n]`` messages: ``header`` is the camera's
  :class:`~rig.messages.FrameHeader` with ``width``/``height`` set to the size of the pixels sent (the
  frame is downscaled by ``pipeline.bridge.downscale``), ``pixels`` the (height, width) uint8 image, sent
  with ``copy=False`` (ZeroMQ owns the one copy taken out of the shared-memory ring), ``n`` the u64 count
  of frames the bridge sent for that camera before (a gap is a frame the consumer lost);
* twice a second a ``bridge.info`` message, JSON: schema version, session id, cameras and their full
  sizes, downscale, the calibration, and the ports of the frame and control sockets.

Bus messages and frames go on separate sockets so that a slow consumer loses frames (small high-water
mark) but never a task event or a stats message (large high-water mark). Frames are copied out of the
rings only while someone subscribes to them (the frame socket is an XPUB that sees subscriptions).

A remote consumer sends user requests (:class:`~rig.messages.Control` ``mark`` / ``pause`` / ``resume`` /
``stop``) to the bridge's PULL control socket; the bridge republishes ``mark`` on ``ctl`` (the recorder
writes it to ``events.jsonl``) and the others on ``ui.control`` (the supervisor acts on them).

The bridge never slows the pipeline: it is an ordinary subscriber (PUB sockets never block) running at
a low CPU priority, its frame socket has a small high-water mark, and a remote consumer that cannot keep
up loses frames at its own end only. It counts them itself from gaps in ``n`` (:attr:`BridgeClient.drops`).
Frames the bridge itself could not copy out of the ring in time are its ``drops`` in ``stats.bridge``.

The bound endpoints go to ``<session>/bridge.json`` so a client can find them.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import msgspec
import numpy as np
import zmq

from analysis.camera import Calibration, calibration_from_dict, calibration_to_dict
from rig import messages as m
from rig.display.model import zones_from_config
from rig.errors import InputError, ProtocolError, SchemaMismatch
from rig.nodes.base import Node
from rig.session import SessionRings, session_calibration, write_json_atomic

log = logging.getLogger(__name__)

INFO_TOPIC = "bridge.info"
REQUEST_TOPIC = "ui.control"  # user requests for the supervisor (pause / resume / stop)
BRIDGE_FILE = "bridge.json"
FRAME_HWM = 16  # frames queued per remote subscriber before it loses frames (its own drops)
BUS_HWM = 100_000
DEFAULT_MAX_FPS = 60.0
_U64 = struct.Struct("<Q")
BUS_TOPICS = ("frame.", "det.", "point3d.", "sim.truth", "task.", "stats.", "node.", "log.", "ctl", "serial.")
BUS_TOPICS_ALL = (*BUS_TOPICS, "cmd.", "ui.")


class BridgeUnavailable(InputError):
    """Nothing (or no DeepBehavior bridge) answers at the endpoint."""


def downscale_image(img_hw: np.ndarray, factor: int) -> np.ndarray:
    """(H, W) uint8 -> (H // factor, W // factor) uint8 by area averaging (a copy)."""
    if factor <= 1:
        return img_hw
    h, w = img_hw.shape[0] // factor, img_hw.shape[1] // factor
    return cv2.resize(img_hw[: h * factor, : w * factor], (w, h), interpolation=cv2.INTER_AREA)


def route_request(msg: m.Control) -> str:
    """Bus topic for a user request: marks go straight to the recorder, the rest to the supervisor."""
    return "ctl" if msg.command == "mark" else REQUEST_TOPIC


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
        zones, pellet = zones_from_config(self.cfg.model_dump(mode="json"))
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
            self.frames_sock.send_multipart([topic, m.encode(out), img.data, _U64.pack(n)], copy=False)
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


# ----------------------------------------------------------------------------- the client
@dataclass
class BridgeInfo:
    """What a bridge says about its session (the ``bridge.info`` message)."""

    schema: int
    session_id: str
    cameras: dict[str, tuple[int, int]]
    downscale: int
    rate_hz: float
    control_port: int
    frame_port: int
    calibration: Calibration | None
    ended: bool = False
    raw: dict[str, Any] = field(default_factory=dict)


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``tcp://HOST:PORT`` -> (host, port); InputError naming the text otherwise."""
    s = text.strip().removeprefix("tcp://")
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--connect {text!r}: expected HOST:PORT (e.g. 127.0.0.1:5555)")
    return host, int(port)


def read_bridge_file(session_dir: str | Path) -> str:
    """The TCP endpoint a running session's bridge wrote into its folder."""
    path = Path(session_dir) / BRIDGE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: missing (is pipeline.bridge.enabled set for this session?)") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    return str(data["endpoint"])


class BridgeClient:
    """Subscribe to a session through its bridge, from any machine.

    :meth:`connect` fails fast with :class:`BridgeUnavailable` when nothing listens at the endpoint or no
    ``bridge.info`` arrives within ``timeout_s``, and with :class:`~rig.errors.SchemaMismatch` when the
    session speaks another message schema. :meth:`poll` returns ``(topic, msg, image)`` items (``image``
    is the (H, W) uint8 frame for ``frame.*`` topics, else None). ``drops[camera]`` counts frames this
    client lost (gaps in ``seq``; a slow client loses frames at its own end only, never bus messages).
    ``topics`` are the bus topic prefixes wanted; ``frames=False`` asks for no frames at all.
    """

    def __init__(
        self, endpoint: str, topics: tuple[str, ...] = ("",), frames: bool = True, frame_hwm: int = 8
    ):
        self.host, self.port = parse_endpoint(endpoint)
        self.endpoint = f"tcp://{self.host}:{self.port}"
        self.ctx: zmq.Context = zmq.Context.instance()
        self.topics = topics
        self.want_frames = frames
        self.frame_hwm = frame_hwm
        self.sock: zmq.Socket | None = None
        self.fsock: zmq.Socket | None = None
        self.push: zmq.Socket | None = None
        self.poller = zmq.Poller()
        self.info: BridgeInfo | None = None
        self.drops: dict[str, int] = {}
        self.frames: dict[str, int] = {}
        self._next_seq: dict[str, int] = {}

    def connect(self, timeout_s: float = 5.0) -> BridgeInfo:
        try:
            with socket.create_connection((self.host, self.port), timeout=min(timeout_s, 3.0)):
                pass
        except OSError as exc:
            raise BridgeUnavailable(
                f"{self.host}:{self.port}: nothing answers there ({exc.strerror or exc}); "
                "is the session running with pipeline.bridge.enabled, and is this its bridge port?"
            ) from None
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, BUS_HWM)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, INFO_TOPIC.encode())
        self.sock.connect(self.endpoint)
        deadline = time.monotonic() + timeout_s
        while self.info is None and (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(round(left * 1000)):
                break
            parts = self.sock.recv_multipart()
            if parts[0] == INFO_TOPIC.encode():
                self._on_info(parts[1])
        if self.info is None:
            self.close()
            raise BridgeUnavailable(
                f"{self.host}:{self.port}: no DeepBehavior bridge there (nothing received in {timeout_s:g} s)"
            )
        for t in self.topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        self.poller.register(self.sock, zmq.POLLIN)
        if self.want_frames:
            self.fsock = self.ctx.socket(zmq.SUB)
            self.fsock.setsockopt(zmq.RCVHWM, self.frame_hwm)
            self.fsock.setsockopt(zmq.LINGER, 0)
            self.fsock.setsockopt(zmq.SUBSCRIBE, b"frame.")
            self.fsock.connect(f"tcp://{self.host}:{self.info.frame_port}")
            self.poller.register(self.fsock, zmq.POLLIN)
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 500)
        self.push.setsockopt(zmq.SNDHWM, 100)
        self.push.connect(f"tcp://{self.host}:{self.info.control_port}")
        return self.info

    def _on_info(self, payload: bytes) -> None:
        try:
            raw = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise BridgeUnavailable(f"{self.endpoint}: unreadable bridge.info ({exc})") from None
        schema = raw.get("schema")
        if schema != m.SCHEMA_VERSION:
            raise SchemaMismatch(
                f"{self.endpoint}: the session speaks message schema version {schema}, this program speaks "
                f"{m.SCHEMA_VERSION}: upgrade the older side"
            )
        calib = None
        if raw.get("calibration"):
            calib = calibration_from_dict(raw["calibration"], f"{self.endpoint} bridge.info")
        self.info = BridgeInfo(
            schema=schema,
            session_id=str(raw.get("session_id", "")),
            cameras={k: (int(v["width"]), int(v["height"])) for k, v in raw.get("cameras", {}).items()},
            downscale=int(raw.get("downscale", 1)),
            rate_hz=float(raw.get("rate_hz", 0.0)),
            control_port=int(raw["control_port"]),
            frame_port=int(raw["frame_port"]),
            calibration=calib,
            ended=bool(raw.get("ended", False)),
            raw=raw,
        )

    def _decode(self, parts: list[bytes]) -> tuple[str, m.AnyMsg, np.ndarray | None] | None:
        topic = parts[0].decode()
        if topic == INFO_TOPIC:
            self._on_info(parts[1])
            return None
        msg = m.decode(parts[1], topic)
        img = None
        if isinstance(msg, m.FrameHeader) and not msg.eos and len(parts) > 2:
            img = np.frombuffer(parts[2], np.uint8).reshape(msg.height, msg.width)
            cam = msg.camera
            n = _U64.unpack(parts[3])[0] if len(parts) > 3 else msg.seq  # the bridge's count of sent frames
            expected = self._next_seq.get(cam)
            if expected is not None and n > expected:
                self.drops[cam] = self.drops.get(cam, 0) + n - expected
            self._next_seq[cam] = n + 1
            self.frames[cam] = self.frames.get(cam, 0) + 1
        return topic, msg, img

    def poll(self, timeout_ms: float = 0, limit: int = 5000) -> list[tuple[str, m.AnyMsg, np.ndarray | None]]:
        """Everything queued, bus messages first (waiting up to ``timeout_ms`` for the first message)."""
        assert self.sock is not None, "connect() first"
        out: list[tuple[str, m.AnyMsg, np.ndarray | None]] = []
        if not self.poller.poll(round(timeout_ms)):
            return out
        for sock in (self.sock, self.fsock):
            if sock is None:
                continue
            for _ in range(limit):
                try:
                    parts = sock.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                item = self._decode(parts)
                if item is not None:
                    out.append(item)
        return out

    def send_control(self, command: str, detail: str = "") -> None:
        """A user request to the session (mark / pause / resume / stop)."""
        assert self.push is not None, "connect() first"
        msg = m.Control(command=command, t_host_ns=time.monotonic_ns(), detail=detail)  # type: ignore[arg-type]
        try:
            self.push.send(m.encode(msg), flags=zmq.NOBLOCK)
        except zmq.Again:
            raise BridgeUnavailable(
                f"{self.endpoint}: the session does not take requests (control socket)"
            ) from None

    def close(self) -> None:
        for s in (self.sock, self.fsock, self.push):
            if s is not None:
                s.close(linger=0)
        self.sock = self.fsock = self.push = None
