"""The bus message schema: round trips, version refusal, garbage refusal."""

from __future__ import annotations

import msgspec
import pytest

from rig import messages as m
from rig.errors import ProtocolError, SchemaMismatch
from rig.protocol import CMD_BODY, EVENT_BODY, Cmd, encode_device_message, parse_device_payload
from rig.serial_link import serial_event
from rig.session import event_record


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
        m.IrEvent(fw_seq=4, t_fw_us=100, t_host_ns=5, t_recv_ns=6, pellet_present=1),
        m.NakEvent(fw_seq=5, t_fw_us=101, t_host_ns=6, cmd=0x7F, cmd_seq=2, code=1, reason="unknown"),
        m.PlatformCmd(up=1, t_host_ns=3),
    ]
    for msg in samples:
        assert m.decode(m.encode(msg)) == msg


def _own_fields(cls: type[msgspec.Struct], common: type[msgspec.Struct]) -> tuple[str, ...]:
    return tuple(f for f in cls.__struct_fields__ if f not in common.__struct_fields__)


def test_serial_events_follow_the_protocol_table():
    """One typed event per firmware message of rig.protocol.EVENT_BODY, its own fields the table's names
    in the table's order (what the host adds, the cause and latency of a TTL, comes after)."""
    for msg, (_fmt, names) in EVENT_BODY.items():
        cls = m.SERIAL_EVENTS[msg.name.lower()]
        assert _own_fields(cls, m.SerialEvent)[: len(names)] == names, msg.name
    host_only = {"ack", "nak", "unknown", "gap", "disconnected", "reconnected", "ack_timeout", "reboot"}
    assert set(m.SERIAL_EVENTS) == {k.name.lower() for k in EVENT_BODY} | host_only


def test_bus_commands_follow_the_protocol_table():
    for name, cls in m.COMMANDS.items():
        assert _own_fields(cls, m.Command) == CMD_BODY[Cmd[name.upper()]][1], name


def test_a_decoded_firmware_frame_becomes_its_typed_event():
    wire = encode_device_message(0x9C, 7, 123, bytes([1]) + (42).to_bytes(4, "little"))  # LOOPBACK
    msg = parse_device_payload(_payload(wire))
    assert msg is not None
    ev = serial_event(msg, fw_seq=7, t_fw_us=123, t_host_ns=5, t_recv_ns=6)
    assert isinstance(ev, m.LoopbackEvent) and (ev.level, ev.count) == (1, 42)
    assert m.decode(m.encode(ev)) == ev


def _payload(wire: bytes) -> bytes:
    from rig.protocol import cobs_decode

    decoded = cobs_decode(wire[:-1])
    assert decoded is not None
    return decoded[:-2]


def test_events_jsonl_keeps_kind_values_and_name_args():
    """The typed bus structs are stored in events.jsonl as the session format documents them: a serial
    event as kind + values (optional fields left out when absent), a command as name + args."""
    import json

    ack = m.AckEvent(
        fw_seq=3, t_fw_us=10, t_host_ns=20, t_recv_ns=21, cmd=0x10, cmd_seq=4, cmd_name="trigger_start",
        rtt_ns=900, data={"achieved_uhz": 124_000_000, "prescaler": 8, "top": 16128},
    )  # fmt: skip
    rec = json.loads(event_record("serial.event", ack))
    assert rec["kind"] == "ack" and rec["fw_seq"] == 3 and rec["t_fw_us"] == 10
    assert rec["values"] == {
        "t_recv_ns": 21, "cmd": 16, "cmd_seq": 4, "cmd_name": "trigger_start", "rtt_ns": 900,
        "achieved_uhz": 124_000_000, "prescaler": 8, "top": 16128,
    }  # fmt: skip
    gap = json.loads(event_record("serial.event", m.GapEvent(fw_seq=-1, t_fw_us=-1, t_host_ns=1, lost=2,
                                                             expected=5, got=7)))  # fmt: skip
    assert gap["values"] == {"lost": 2, "expected": 5, "got": 7}
    cmd = m.TtlPulseCmd(width_us=300, cause_trigger_index=41, cause_t_frame_ns=9, t_host_ns=10)
    rec = json.loads(event_record("cmd.arduino", cmd))
    assert (rec["name"], rec["args"], rec["cause_trigger_index"]) == ("ttl_pulse", {"width_us": 300}, 41)


def test_a_serial_event_with_a_wrong_field_is_refused():
    """A bus peer that sends an IR event without its field is refused like any malformed message."""
    raw = msgspec.msgpack.encode(
        {"type": "serial.ir", "schema": m.SCHEMA_VERSION, "fw_seq": 1, "t_fw_us": 1, "t_host_ns": 1}
    )
    with pytest.raises(ProtocolError, match="pellet_present"):
        m.decode(raw, "serial.event")


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
