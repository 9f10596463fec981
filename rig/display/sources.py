"""Where a live display gets its messages and frames: the session's own bus (a display node on the rig
machine, frames from the shared-memory rings) or the session's TCP bridge (``display --connect``).

Both drain everything queued on each tick and keep only the newest frame per camera: the display samples,
it never consumes every frame, and a stalled display only loses frames at its own end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import zmq

from rig import messages as m
from rig.bridge import REQUEST_TOPIC, BridgeClient, route_request
from rig.display.model import LiveState
from rig.frames import SessionRings

log = logging.getLogger(__name__)


class Source(Protocol):
    def pump(self, state: LiveState) -> None:
        """Ingest everything queued into ``state``; raise a RigError when the source is broken."""

    def send(self, command: str, detail: str = "") -> None:
        """Send a user request (mark / pause / resume / stop)."""

    def close(self) -> None: ...


class BusSource:
    """In-session: a SUB socket on the session's nodes, frames read from the rings (newest only)."""

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        session_id: str,
        publish: Callable[[str, m.Msg], None],
        requester: str = "display",
        on_message: Callable[[str, m.AnyMsg], None] | None = None,
    ):
        self.sock = sock
        self.session_id = session_id
        self.publish = publish
        self.requester = requester
        self.on_message = on_message
        self.rings = SessionRings(session_id)
        self.newest: dict[str, m.FrameHeader] = {}
        self.pending: dict[str, int] = {}
        self.overrun = 0  # newest frame already overwritten when the display got to it

    def pump(self, state: LiveState, limit: int = 20000) -> None:
        for _ in range(limit):
            try:
                topic_b, payload = self.sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            topic = topic_b.decode()
            msg = m.decode(payload, topic)
            if isinstance(msg, m.FrameHeader):
                if not msg.eos:
                    self.newest[msg.camera] = msg
                    self.pending[msg.camera] = self.pending.get(msg.camera, 0) + 1
                continue
            state.ingest(topic, msg)
            if self.on_message is not None:
                self.on_message(topic, msg)
        for cam, hdr in self.newest.items():
            n = self.pending.pop(cam, 0)
            if n == 0:
                continue
            ring = self.rings.find(cam)
            img = ring.read(hdr.slot, hdr.seq) if ring is not None else None
            if img is None:
                self.overrun += 1
                continue
            state.set_frame(hdr, img, skipped=n - 1)

    def send(self, command: str, detail: str = "") -> None:
        msg = m.Control(command=command, t_host_ns=time.monotonic_ns(), detail=detail or self.requester)  # type: ignore[arg-type]
        self.publish(route_request(msg), msg)

    def close(self) -> None:
        self.rings.close()


class BridgeSource:
    """Remote: everything through a :class:`~rig.bridge.BridgeClient` (frames possibly downscaled)."""

    def __init__(self, client: BridgeClient, requester: str = "display (remote)"):
        self.client = client
        self.requester = requester

    def pump(self, state: LiveState, limit: int = 20000) -> None:
        newest: dict[str, tuple[m.FrameHeader, np.ndarray]] = {}
        counts: dict[str, int] = {}
        for topic, msg, img in self.client.poll(0, limit):
            if isinstance(msg, m.FrameHeader):
                if img is not None:
                    newest[msg.camera] = (msg, img)
                    counts[msg.camera] = counts.get(msg.camera, 0) + 1
                continue
            state.ingest(topic, msg)
        for cam, (hdr, img) in newest.items():
            state.set_frame(hdr, img, skipped=counts[cam] - 1)
        info = self.client.info
        if info is not None and info.ended and not state.ended:
            state.ended = True
            state.warn("the session has ended")

    def send(self, command: str, detail: str = "") -> None:
        self.client.send_control(command, detail or self.requester)

    def close(self) -> None:
        self.client.close()


__all__ = ["REQUEST_TOPIC", "BridgeSource", "BusSource", "Source"]
