"""The TCP bridge's wire format and client: a session's bus and frames for consumers on another machine.

Both ends import this module: the node that serves a session (:mod:`rig.nodes.bridge`) and the client
that reads it (:class:`BridgeClient`, used by the remote display). The bridge node subscribes to every
node of the session and republishes on one TCP PUB socket:

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zmq

from analysis.camera import Calibration, calibration_from_dict
from rig import messages as m
from rig.errors import InputError, SchemaMismatch

log = logging.getLogger(__name__)

INFO_TOPIC = "bridge.info"
REQUEST_TOPIC = "ui.control"  # user requests for the supervisor (pause / resume / stop)
BRIDGE_FILE = "bridge.json"
FRAME_HWM = 16  # frames queued per remote subscriber before it loses frames (its own drops)
BUS_HWM = 100_000
DEFAULT_MAX_FPS = 60.0
FRAME_COUNT = struct.Struct("<Q")  # the frame message's 4th part: frames sent before on that camera
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
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.topics = topics
        self.want_frames = frames
        self.frame_hwm = frame_hwm
        self.sock: zmq.Socket[bytes] | None = None
        self.fsock: zmq.Socket[bytes] | None = None
        self.push: zmq.Socket[bytes] | None = None
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
            # the bridge's count of frames sent before on that camera
            n = FRAME_COUNT.unpack(parts[3])[0] if len(parts) > 3 else msg.seq
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
