"""The TCP bridge, for real: a simulated session, real TCP sockets, remote requests, a stalled consumer."""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest
import zmq

from rig import messages as m
from rig.bridge import BridgeClient, BridgeUnavailable, downscale_image, parse_endpoint, read_bridge_file
from rig.errors import InputError, SchemaMismatch
from rig.session import load_session
from tests.display_helpers import wait_bridge
from tests.sessions import start_session

pytestmark = [pytest.mark.slow, pytest.mark.firmware]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_downscale_averages_blocks():
    img = np.array([[0, 2, 10, 20], [4, 6, 30, 40], [1, 1, 7, 7], [1, 1, 7, 7], [9, 9, 9, 9]], np.uint8)
    out = downscale_image(img, 2)
    assert out.shape == (2, 2)  # the odd last row is cropped
    assert out.tolist() == [[3, 25], [1, 7]]
    assert downscale_image(img, 1) is img


def test_parse_endpoint():
    assert parse_endpoint("tcp://10.0.0.2:5555") == ("10.0.0.2", 5555)
    assert parse_endpoint("rig-pc:6000") == ("rig-pc", 6000)
    with pytest.raises(InputError, match="HOST:PORT"):
        parse_endpoint("rig-pc")


def test_session_through_bridge(tmp_path):
    """Frames (downscaled, right pixels), bus messages, a remote mark, and a stalled consumer that loses
    frames at its own end only: the pipeline records every frame."""
    proc = start_session(
        tmp_path,
        "--trials",
        "2",
        "--set",
        "pipeline.bridge.enabled=true",
        "--set",
        "pipeline.bridge.downscale=2",
        "--set",
        "rig.trigger.rate_hz=60",  # clear of the CPU limit of a shared 2-core machine (test_display_live)
    )
    try:
        folder = wait_bridge(tmp_path)
        endpoint = read_bridge_file(folder)
        client = BridgeClient(endpoint)
        info = client.connect(timeout_s=30)
        assert info.downscale == 2 and set(info.cameras) == {"front", "side"}
        assert info.calibration is not None and "front" in info.calibration.cameras
        stalled = BridgeClient(endpoint, topics=("stats.",))  # subscribes to frames, stalls 3 s
        stalled.connect(timeout_s=30)
        t_stall = time.monotonic()
        frames: dict[tuple[str, int], np.ndarray] = {}
        topics: set[str] = set()
        marked = False
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if time.monotonic() - t_stall > 3:
                stalled.poll(0, limit=100000)
            for topic, msg, img in client.poll(100):
                topics.add(topic.split(".")[0])
                if img is not None and isinstance(msg, m.FrameHeader):
                    assert img.shape == (230, 224) and (msg.width, msg.height) == (224, 230)
                    if len(frames) < 40:
                        frames[(msg.camera, msg.seq)] = img.copy()
                    if not marked:
                        client.send_control("mark", "remote mark from the test")
                        marked = True
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        for _ in range(20):  # the last messages, then the bridge's "ended"
            client.poll(100)
        assert client.info is not None and client.info.ended
        assert {"det", "point3d", "stats", "task", "node", "ctl"} <= topics
        # the stalled consumer lost frames, counted at its own end; the other one lost none or few
        assert sum(stalled.drops.values()) > 50, stalled.drops
        stalled.close()
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    s = load_session(folder)
    assert s.meta["status"] == "complete"
    for cam, table in s.frames.items():
        assert int(np.sum(table["dropped"])) == 0, f"{cam}: the pipeline dropped frames"
    marks = [e for e in s.events if e.get("command") == "mark"]
    assert [e["detail"] for e in marks] == ["remote mark from the test"]
    # the pixels are the camera's: compare with the recorded video (near-lossless), downscaled the same way
    wanted = {k for k in frames if k[0] == "front"}
    assert wanted
    seq_to_row = {int(q): i for i, q in enumerate(s.frames["front"]["seq"])}
    rows = {seq_to_row[q]: q for (_c, q) in wanted}
    checked = 0
    for row, img in s.read_frames("front"):
        if row in rows:
            ref = downscale_image(img, 2).astype(int)
            err_px = np.abs(frames[("front", rows[row])].astype(int) - ref).mean()
            assert err_px < 2.0, f"frame seq {rows[row]}: mean |bridge - recorded| = {err_px:.2f}"
            checked += 1
        if checked == len(rows):
            break
    assert checked == len(rows)


def test_nothing_behind_endpoint_fails_fast():
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(BridgeUnavailable, match=f"127.0.0.1:{port}: nothing answers"):
        BridgeClient(f"127.0.0.1:{port}").connect(timeout_s=5)
    assert time.monotonic() - t0 < 4


def _fake_bridge(info: dict | None, stop: threading.Event) -> tuple[int, threading.Thread]:
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")

    def serve() -> None:
        while not stop.is_set():
            if info is not None:
                pub.send_multipart([b"bridge.info", json.dumps(info).encode()])
            time.sleep(0.05)
        pub.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    return port, th


def test_silent_peer_is_not_a_bridge():
    stop = threading.Event()
    port, th = _fake_bridge(None, stop)
    try:
        with pytest.raises(BridgeUnavailable, match="no DeepBehavior bridge there"):
            BridgeClient(f"127.0.0.1:{port}").connect(timeout_s=1)
    finally:
        stop.set()
        th.join()


def test_schema_mismatch_is_refused():
    stop = threading.Event()
    port, th = _fake_bridge({"schema": m.SCHEMA_VERSION + 1, "control_port": 1, "frame_port": 1}, stop)
    try:
        with pytest.raises(SchemaMismatch, match=f"schema version {m.SCHEMA_VERSION + 1}"):
            BridgeClient(f"127.0.0.1:{port}").connect(timeout_s=5)
    finally:
        stop.set()
        th.join()
