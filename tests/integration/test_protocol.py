"""Serial protocol: golden frames from firmware/PROTOCOL.md checked against the host codec and the
firmware's own codec compiled natively; differential fuzzing of the two frame parsers."""

from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path

import pytest

from rig.protocol import (
    Cmd,
    DeviceMsg,
    FrameReader,
    StreamDecoder,
    cobs_decode,
    cobs_encode,
    crc16,
    encode_command,
    encode_device_message,
    frame,
)

REPO = Path(__file__).resolve().parents[2]
PROTO_TOOL = REPO / "firmware" / "build" / "proto_tool"


def golden_rows() -> list[tuple[str, bytes, bytes]]:
    text = (REPO / "firmware" / "PROTOCOL.md").read_text()
    block = re.search(r"```golden\n(.*?)```", text, re.S)
    assert block, "PROTOCOL.md has no ```golden block"
    rows = []
    for line in block.group(1).splitlines():
        name, payload, wire = (c.strip() for c in line.split("|"))
        rows.append((name, bytes.fromhex(payload), bytes.fromhex(wire)))
    assert len(rows) >= 8
    return rows


def proto_tool() -> Path:
    if not PROTO_TOOL.exists():
        subprocess.run(["make", "-s", "-C", str(REPO / "firmware"), "native"], check=True)
    return PROTO_TOOL


def test_crc_check_value() -> None:
    assert crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize(
    "data", [b"", b"\x00", b"\x00\x00", b"\x11\x22\x00\x33", bytes(range(1, 255)), bytes(300)]
)
def test_cobs_round_trip(data: bytes) -> None:
    enc = cobs_encode(data)
    assert 0 not in enc
    assert cobs_decode(enc) == data


@pytest.mark.parametrize("row", golden_rows(), ids=lambda r: r[0])
def test_golden_host(row: tuple[str, bytes, bytes]) -> None:
    _, payload, wire = row
    assert frame(payload) == wire
    assert FrameReader().feed(wire) == [payload]


@pytest.mark.firmware
@pytest.mark.parametrize("row", golden_rows(), ids=lambda r: r[0])
def test_golden_firmware_codec(row: tuple[str, bytes, bytes]) -> None:
    _, payload, wire = row
    tool = str(proto_tool())
    enc = subprocess.run([tool, "encode", payload.hex()], capture_output=True, text=True, check=True)
    assert enc.stdout.strip() == wire.hex()
    dec = subprocess.run([tool, "decode"], input=wire, capture_output=True, check=True)
    assert dec.stdout.decode().splitlines()[0] == f"F {payload.hex()}"


def test_golden_named_commands() -> None:
    rows = {name: wire for name, _, wire in golden_rows()}
    assert encode_command(Cmd.HELLO, 7, version=2, watchdog_ms=500) == rows["hello v2 watchdog 500 ms"]
    assert (
        encode_command(Cmd.RSYNC, 9, min_ms=500, max_ms=1500, width_ms=50, seed=7)
        == rows["rsync 500-1500 ms, 50 ms wide, seed 7"]
    )
    assert (
        encode_command(Cmd.INPUTS, 10, frame_clock=1, loopback=1) == rows["inputs frame clock and loopback"]
    )
    fw = StreamDecoder().feed(
        rows["fw rsync pulse 3 at t=0x00bc614e"]
        + rows["fw frame clock edge 1000 at t=0x01312d00"]
        + rows["fw loopback rose, edge 0, at t=0x0001e240"]
    )
    assert [(m.kind, m.t_us, m.values) for m in fw] == [
        ("rsync", 12_345_678, {"index": 3}),
        ("frame_clock", 20_000_000, {"count": 1000}),
        ("loopback", 123_456, {"level": 1, "count": 0}),
    ]
    assert encode_command(Cmd.PLATFORM, 7, up=1) == rows["platform up"]
    assert (
        encode_command(Cmd.TRIGGER_START, 7, rate_uhz=124_000_000, max_pulses=0, report_every=1)
        == rows["trigger_start 124 Hz unlimited report every pulse"]
    )
    msgs = StreamDecoder().feed(rows["fw ir pellet present"] + rows["fw nak unknown 0x7f seq 8"])
    assert [(m.kind, m.seq, m.t_us) for m in msgs] == [("ir", 0x0102, 1234567), ("nak", 4, 1000)]
    assert msgs[0].values == {"pellet_present": 1}
    assert msgs[1].values == {"cmd": 0x7F, "cmd_seq": 8, "code": 1}


def test_stream_decoder_drops_and_counts() -> None:
    good = encode_device_message(DeviceMsg.TRIGGER, 1, 100, (5).to_bytes(4, "little"))
    bad_crc = bytearray(good)
    bad_crc[3] ^= 0x01
    truncated = good[:4] + b"\x00"
    dec = StreamDecoder()
    out = dec.feed(
        b"\x00\x00garbage\xff" + b"\x00" + bytes(bad_crc) + truncated + good + b"x" * 200 + b"\x00"
    )
    assert [(m.kind, m.values["index"]) for m in out] == [("trigger", 5)]
    c = dec.counters
    assert c.frames == 1 and c.bad_crc >= 1 and c.too_long == 1 and c.dropped >= 3
    # split anywhere: same result
    dec2 = StreamDecoder()
    got = [m for i in range(len(good)) for m in dec2.feed(good[i : i + 1])]
    assert [m.values["index"] for m in got] == [5]


def _valid_commands() -> list[bytes]:
    return [
        encode_command(Cmd.PING, 1),
        encode_command(Cmd.STATUS, 2),
        encode_command(Cmd.PLATFORM, 3, up=1),
        encode_command(Cmd.TTL_PULSE, 9, width_us=100),
    ]


def _fuzz_corpus(n: int, rng: random.Random) -> bytes:
    """n random byte strings, a third of them mutated valid frames, each followed by a delimiter."""
    valid = _valid_commands()
    out = bytearray()
    for i in range(n):
        kind = i % 3
        if kind == 0:
            s = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 24)))
        elif kind == 1:
            s = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 3)):
                s[rng.randrange(len(s))] = rng.getrandbits(8)
            s = bytes(s)
        else:
            v = rng.choice(valid)
            s = v[: rng.randrange(1, len(v))] if rng.random() < 0.5 else v
        out += s
        if rng.random() < 0.7:
            out += b"\x00"
    return bytes(out)


@pytest.mark.firmware
def test_fuzz_firmware_parser_matches_host() -> None:
    """1e5 random strings: the firmware parser (native build, ASan/UBSan) never crashes and accepts
    exactly the frames the host reference accepts (so it can never act on a corrupted command)."""
    rng = random.Random(1234)
    corpus = _fuzz_corpus(100_000, rng)
    res = subprocess.run(
        [str(proto_tool()), "decode"], input=corpus, capture_output=True, check=True, timeout=120
    )
    lines = res.stdout.decode().splitlines()
    fw_frames = [bytes.fromhex(ln[2:]) for ln in lines if ln.startswith("F ")]
    counts = [int(x) for x in lines[-1].split()[1:]]
    reader = FrameReader()
    host_frames = reader.feed(corpus)
    assert fw_frames == host_frames
    c = reader.counters
    assert counts == [c.frames, c.bad_cobs, c.bad_crc, c.too_long, c.too_short]
    assert c.frames > 1000 and c.bad_crc > 1000  # the corpus exercised both paths
    # no corrupted command got through: every accepted frame is one of the intact commands sent
    intact = {FrameReader().feed(w)[0] for w in _valid_commands()}
    assert set(host_frames) <= intact


def test_fuzz_host_decoder_never_raises() -> None:
    rng = random.Random(99)
    dec = StreamDecoder()
    corpus = _fuzz_corpus(20_000, rng)
    for i in range(0, len(corpus), 97):
        dec.feed(corpus[i : i + 97])
    assert dec.counters.dropped > 0
