"""The bus message schema: round trips, version refusal, garbage refusal."""

from __future__ import annotations

import msgspec
import pytest

from rig import messages as m
from rig.errors import ProtocolError, SchemaMismatch


def test_every_message_round_trips():
    samples = [
        m.FrameHeader(camera="front", seq=3, frame_id=9, trigger_index=3, t_host_ns=10, slot=3),
        m.Detections(
            camera="side",
            seq=1,
            trigger_index=1,
            t_frame_ns=1,
            t_trigger_ns=1,
            t_start_ns=2,
            t_end_ns=3,
            boxes=[m.Box(1, 2, 3, 4, 0.9, 0)],
        ),
        m.Point3D(
            name="paw",
            trigger_index=1,
            xyz=(1, 2, 3),
            xyz_filtered=(1, 2, 3),
            xyz_predicted=(1, 2, 3),
            valid=True,
            reproj_error_px=0.1,
            cameras=["front", "side"],
            t_frame_ns=1,
            t_trigger_ns=1,
            t_det_ns=2,
            t_out_ns=3,
        ),
        m.TaskEvent(kind="trial_start", trial=1, t_host_ns=5, detail={"x": 1}),
        m.Stats(node="x", t_host_ns=1, fps=124.0, latency_p50_ms=1.0, latency_p99_ms=2.0, extra={"a": 1.0}),
        m.Control(command="stop", t_host_ns=1, detail="world"),
    ]
    for msg in samples:
        assert m.decode(m.encode(msg)) == msg


def test_other_schema_version_is_refused_with_both_versions():
    raw = msgspec.msgpack.encode(
        {"type": "ctl", "command": "stop", "t_host_ns": 1, "schema": m.SCHEMA_VERSION + 1}
    )
    with pytest.raises(SchemaMismatch, match=rf"topic 'ctl' has schema version {m.SCHEMA_VERSION + 1}"):
        m.decode(raw, "ctl")


def test_garbage_is_a_protocol_error():
    with pytest.raises(ProtocolError, match=r"undecodable message on topic 'frame\.front'"):
        m.decode(b"\xc1\x00garbage", "frame.front")


@pytest.mark.parametrize(
    "payload",
    [
        b"\x91" * 1000 + b"\x00",  # 1000 nested one-element arrays: RecursionError in the schema peek
        b"\xdd\xff\xff\xff\xff",  # an array that claims 4 billion elements
        b"",
        b"\x81\xa6schema\xa1x",  # a map whose schema is text
    ],
)
def test_hostile_payloads_are_protocol_errors(payload):
    with pytest.raises(ProtocolError):
        m.decode(payload, "bridge control")


def test_subscriber_drops_and_counts_bad_messages(tmp_path):
    """A message that breaks the protocol on a real socket is counted and skipped; the next one arrives."""
    import zmq

    from rig.bus import Publisher, Subscriber, ipc_endpoint

    ctx = zmq.Context()
    pub = Publisher(ctx, ipc_endpoint(tmp_path, "p"))
    sub = Subscriber(ctx, [pub.endpoint], ("ctl",))
    try:
        good = m.Control(command="stop", t_host_ns=1)
        got: list = []
        for _ in range(100):  # until the subscription has reached the publisher
            pub.send_raw([b"ctl", b"\x91" * 1000 + b"\x00"], copy=True)
            pub.send_raw([b"ctl", b"\xff", b"extra part"], copy=True)
            pub.send_raw([b"ctl\xff", m.encode(good)], copy=True)
            pub.publish("ctl", good)
            got = sub.recv_all(50)
            if got:
                break
        assert got and all(msg == good for _, msg in got)
        assert sub.bad_messages >= 3 * len(got)
    finally:
        sub.close()
        pub.close()
        ctx.term()
