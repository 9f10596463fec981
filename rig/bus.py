"""The ZeroMQ bus: brokerless PUB/SUB between nodes, typed messages, OS-chosen endpoints.

Every node binds one PUB socket at its own endpoint (``ipc://<runtime>/<node>.pub`` on one machine) and
connects one SUB socket to the endpoints of the nodes it listens to. Messages are ``[topic, payload]``
with a MessagePack payload from :mod:`rig.messages`. PUB sockets drop silently at their high-water mark,
so HWMs are set high and every stream carries sequence numbers that let the receiver count gaps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import zmq

from rig import messages as m
from rig.errors import ProtocolError, SchemaMismatch

HWM = 100_000
log = logging.getLogger(__name__)


def ipc_endpoint(runtime_dir: Path, node: str) -> str:
    return f"ipc://{runtime_dir / (node + '.pub')}"


class Publisher:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str):
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, HWM)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.bind(endpoint)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def publish(self, topic: str, msg: m.Msg) -> None:
        self.sock.send_multipart([topic.encode(), m.encode(msg)], copy=True)

    def send_raw(self, frames: list[Any], copy: bool = False) -> None:
        self.sock.send_multipart(frames, copy=copy)

    def close(self) -> None:
        self.sock.close()


class Subscriber:
    """A SUB socket connected to several publishers, filtered by topic prefixes."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoints: Iterable[str], topics: Iterable[str]):
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, HWM)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 10)  # peers may bind after we connect
        for t in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        for ep in endpoints:
            self.sock.connect(ep)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.bad_messages = 0

    def recv(self, timeout_ms: float) -> tuple[str, m.AnyMsg] | None:
        """One message, or None after ``timeout_ms``."""
        if not self.poller.poll(round(timeout_ms)):
            return None
        return self._decode(self.sock.recv_multipart(copy=True))

    def _decode(self, parts: list[bytes]) -> tuple[str, m.AnyMsg] | None:
        """A received message, or None (counted in ``bad_messages``, logged) if it breaks the protocol:
        a corrupt or hostile message never ends the node that receives it. A peer speaking another
        schema version still raises :class:`SchemaMismatch` (a setup the user must fix)."""
        try:
            if len(parts) != 2:
                raise ProtocolError(f"message with {len(parts)} parts, expected 2 (topic, payload)")
            t = parts[0].decode("utf-8")
            return t, m.decode(parts[1], t)
        except SchemaMismatch:
            raise
        except (ProtocolError, UnicodeDecodeError) as exc:
            self.bad_messages += 1
            if self.bad_messages <= 10 or self.bad_messages % 1000 == 0:
                log.warning("bus: dropped message %d that breaks the protocol: %s", self.bad_messages, exc)
            return None

    def recv_all(self, timeout_ms: float, limit: int = 1000) -> list[tuple[str, m.AnyMsg]]:
        """Wait up to ``timeout_ms`` for one message, then drain whatever else is queued."""
        out: list[tuple[str, m.AnyMsg]] = []
        if not self.poller.poll(round(timeout_ms)):
            return out
        for _ in range(limit):
            try:
                parts = self.sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            item = self._decode(parts)
            if item is not None:
                out.append(item)
        return out

    def close(self) -> None:
        self.sock.close()


def wait_for(
    sub: Subscriber, predicate: Callable[[str, Any], bool], timeout_s: float
) -> tuple[str, Any] | None:
    """Receive until ``predicate(topic, msg)`` is true; returns that (topic, msg) or None on timeout."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        got = sub.recv(left * 1000)
        if got is not None and predicate(*got):
            return got
    return None
