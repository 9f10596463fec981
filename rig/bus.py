"""The ZeroMQ bus: brokerless PUB/SUB between nodes, typed messages, OS-chosen endpoints.

Every node binds one PUB socket at its own endpoint (``ipc://<runtime>/<node>.pub`` on one machine) and
connects one SUB socket to the endpoints of the nodes it listens to. Messages are ``[topic, payload]``
with a MessagePack payload from :mod:`rig.messages`. PUB sockets drop silently at their high-water mark,
so HWMs are set high and every stream carries sequence numbers that let the receiver count gaps.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import zmq

from rig import messages as m

HWM = 100_000


def ipc_endpoint(runtime_dir: Path, node: str) -> str:
    return f"ipc://{runtime_dir / (node + '.pub')}"


class Publisher:
    def __init__(self, ctx: zmq.Context, endpoint: str):
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, HWM)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.bind(endpoint)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def publish(self, topic: str, msg: m.Msg) -> None:
        self.sock.send_multipart([topic.encode(), m.encode(msg)], copy=True)

    def send_raw(self, frames: list, copy: bool = False) -> None:
        self.sock.send_multipart(frames, copy=copy)

    def close(self) -> None:
        self.sock.close()


class Subscriber:
    """A SUB socket connected to several publishers, filtered by topic prefixes."""

    def __init__(self, ctx: zmq.Context, endpoints: Iterable[str], topics: Iterable[str]):
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

    def recv(self, timeout_ms: float) -> tuple[str, m.AnyMsg] | None:
        """One message, or None after ``timeout_ms``."""
        if not self.poller.poll(round(timeout_ms)):
            return None
        topic, payload = self.sock.recv_multipart(copy=True)
        t = topic.decode()
        return t, m.decode(payload, t)

    def recv_all(self, timeout_ms: float, limit: int = 1000) -> list[tuple[str, m.AnyMsg]]:
        """Wait up to ``timeout_ms`` for one message, then drain whatever else is queued."""
        out: list[tuple[str, m.AnyMsg]] = []
        first = self.recv(timeout_ms)
        if first is None:
            return out
        out.append(first)
        while len(out) < limit:
            try:
                topic, payload = self.sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            t = topic.decode()
            out.append((t, m.decode(payload, t)))
        return out

    def close(self) -> None:
        self.sock.close()


def wait_for(sub: Subscriber, predicate, timeout_s: float):
    """Receive until ``predicate(topic, msg)`` is true; returns that (topic, msg) or None on timeout."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        got = sub.recv(left * 1000)
        if got is not None and predicate(*got):
            return got
    return None
