"""The rig firmware's serial protocol: pure encode/decode, no I/O (spec: ``firmware/PROTOCOL.md``).

Wire format: each frame is COBS-encoded and ends with one ``0x00`` byte. Decoded, a frame is::

    host -> firmware:  type u8 | seq u16 | body ...           | crc16 u16
    firmware -> host:  type u8 | seq u16 | t_us u32 | body ... | crc16 u16

little-endian; CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over everything before it. ``seq`` of a
command is echoed in its ACK/NAK; ``seq`` of firmware frames counts every frame the firmware sends
(mod 2**16), so the host can prove none was lost. ``t_us`` is the firmware's ``micros()`` (mod 2**32) at
the moment the event happened (for a trigger pulse: its rising edge; for the IR sensor: the first raw edge
of the debounced change; for a pseudo-random sync pulse, an imaging frame-clock edge or a loopback edge: the
pin's edge).

:class:`StreamDecoder` turns arbitrary bytes into frames; garbage, truncated frames and bad CRCs are
dropped and counted, never raised.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any

from rig.errors import ProtocolError

PROTOCOL_VERSION = 2
MAX_PAYLOAD = 48  # decoded bytes including CRC (firmware buffer size)


class Cmd(enum.IntEnum):
    """Host -> firmware command types."""

    HELLO = 0x01
    PING = 0x02
    CONFIG = 0x03
    STATUS = 0x04
    TRIGGER_START = 0x10
    TRIGGER_STOP = 0x11
    PLATFORM = 0x12
    SERVO_US = 0x13
    DISPENSE = 0x14
    TTL_PULSE = 0x15
    SYNC_LEVEL = 0x16
    SYNC_PULSE = 0x17
    REDELIVERY = 0x18
    RSYNC = 0x19
    INPUTS = 0x1A


class DeviceMsg(enum.IntEnum):
    """Firmware -> host message types."""

    ACK = 0x80
    NAK = 0x81
    BOOT = 0x90
    IR = 0x91
    TRIGGER = 0x92
    TRIGGER_STOPPED = 0x93
    SERVO_DONE = 0x94
    DISPENSE_DONE = 0x95
    TTL_FIRED = 0x96
    WATCHDOG = 0x97
    REDELIVERY = 0x98
    SYNC = 0x99
    RSYNC = 0x9A
    FRAME_CLOCK = 0x9B
    LOOPBACK = 0x9C


class Nak(enum.IntEnum):
    UNKNOWN = 1
    LENGTH = 2
    VALUE = 3
    BUSY = 4
    VERSION = 5


# struct formats of command bodies (after type + seq), and their argument names.
CMD_BODY: dict[Cmd, tuple[str, tuple[str, ...]]] = {
    Cmd.HELLO: ("<BH", ("version", "watchdog_ms")),
    Cmd.PING: ("<", ()),
    Cmd.CONFIG: (
        "<9H",
        (
            "servo_up_us",
            "servo_down_us",
            "servo_speed_us_per_s",
            "steps_per_pellet",
            "step_rate_hz",
            "ttl_width_us",
            "sync_div",
            "debounce_ms",
            "redelivery_delay_ms",
        ),
    ),
    Cmd.STATUS: ("<", ()),
    Cmd.TRIGGER_START: ("<IIH", ("rate_uhz", "max_pulses", "report_every")),
    Cmd.TRIGGER_STOP: ("<", ()),
    Cmd.PLATFORM: ("<B", ("up",)),
    Cmd.SERVO_US: ("<H", ("target_us",)),
    Cmd.DISPENSE: ("<B", ("pellets",)),
    Cmd.TTL_PULSE: ("<H", ("width_us",)),
    Cmd.SYNC_LEVEL: ("<B", ("level",)),
    Cmd.SYNC_PULSE: ("<H", ("width_us",)),
    Cmd.REDELIVERY: ("<B", ("enable",)),
    Cmd.RSYNC: ("<4H", ("min_ms", "max_ms", "width_ms", "seed")),
    Cmd.INPUTS: ("<BB", ("frame_clock", "loopback")),
}

# struct formats of event bodies (after type + seq + t_us).
EVENT_BODY: dict[DeviceMsg, tuple[str, tuple[str, ...]]] = {
    DeviceMsg.BOOT: ("<BB", ("version", "reset_flags")),
    DeviceMsg.IR: ("<B", ("pellet_present",)),
    DeviceMsg.TRIGGER: ("<I", ("index",)),
    DeviceMsg.TRIGGER_STOPPED: ("<I", ("count",)),
    DeviceMsg.SERVO_DONE: ("<H", ("position_us",)),
    DeviceMsg.DISPENSE_DONE: ("<H", ("steps",)),
    DeviceMsg.TTL_FIRED: ("<HH", ("width_us", "cmd_seq")),
    DeviceMsg.WATCHDOG: ("<", ()),
    DeviceMsg.REDELIVERY: ("<B", ("phase",)),
    DeviceMsg.SYNC: ("<B", ("level",)),
    DeviceMsg.RSYNC: ("<I", ("index",)),
    DeviceMsg.FRAME_CLOCK: ("<I", ("count",)),
    DeviceMsg.LOOPBACK: ("<BI", ("level", "count")),
}

# ACK data layouts for the commands whose ACK carries data.
ACK_DATA: dict[Cmd, tuple[str, tuple[str, ...]]] = {
    Cmd.HELLO: ("<BHB", ("version", "f_cpu_mhz", "pellet_present")),
    Cmd.TRIGGER_START: ("<IHH", ("achieved_uhz", "prescaler", "top")),
    Cmd.STATUS: (
        "<BBHIII",
        ("pellet_present", "flags", "servo_us", "trigger_count", "rx_errors", "rx_frames"),
    ),
}


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF); ``crc16(b"123456789") == 0x29B1``."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode (no trailing delimiter); byte-identical to the firmware's ``db_cobs_encode``."""
    out = bytearray([0])
    code_at = 0
    code = 1
    for byte in data:
        if byte == 0:
            out[code_at] = code
            code_at = len(out)
            out.append(0)
            code = 1
        else:
            out.append(byte)
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at = len(out)
                out.append(0)
                code = 1
    out[code_at] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    """Decode one COBS block (no delimiter); ``None`` if it is not valid COBS."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        i += 1
        if code == 0:
            return None
        end = i + code - 1
        if end > n or 0 in data[i:end]:
            return None
        out += data[i:end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def frame(payload: bytes) -> bytes:
    """A complete wire frame for a raw payload (type, seq, ...): CRC appended, COBS, ``0x00``."""
    if len(payload) + 2 > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD - 2}-byte limit")
    return cobs_encode(payload + struct.pack("<H", crc16(payload))) + b"\x00"


def encode_command(cmd: Cmd, seq: int, **args: int) -> bytes:
    """Wire bytes of one command, e.g. ``encode_command(Cmd.PLATFORM, 7, up=1)``."""
    fmt, names = CMD_BODY[cmd]
    missing = set(names) - set(args)
    extra = set(args) - set(names)
    if missing or extra:
        raise ProtocolError(f"command {cmd.name}: missing {sorted(missing)}, unexpected {sorted(extra)}")
    try:
        body = struct.pack(fmt, *(int(args[k]) for k in names))
    except struct.error as exc:
        raise ProtocolError(f"command {cmd.name}: argument out of range ({exc}): {args}") from exc
    return frame(struct.pack("<BH", int(cmd), seq & 0xFFFF) + body)


def encode_raw_command(type_: int, seq: int, body: bytes = b"") -> bytes:
    """Wire bytes of an arbitrary (possibly unknown) command type: for tests of error replies."""
    return frame(struct.pack("<BH", type_ & 0xFF, seq & 0xFFFF) + body)


def encode_device_message(type_: int, seq: int, t_us: int, body: bytes = b"") -> bytes:
    """Wire bytes of a firmware -> host frame (the firmware's side; used for golden tests and fakes)."""
    return frame(struct.pack("<BHI", type_ & 0xFF, seq & 0xFFFF, t_us & 0xFFFFFFFF) + body)


@dataclass(frozen=True)
class DeviceMessage:
    """One decoded firmware -> host frame.

    ``kind`` is the lower-case message name (``"ack"``, ``"ir"``, ``"trigger"``, ...) or ``"unknown"``;
    ``values`` holds the decoded body fields (for ACK/NAK: ``cmd``, ``cmd_seq`` and ``code`` or data
    fields). ``t_us`` is the firmware clock modulo 2**32.
    """

    type: int
    seq: int
    t_us: int
    kind: str
    values: dict[str, Any] = field(default_factory=dict)
    raw: bytes = b""


def parse_device_payload(payload: bytes) -> DeviceMessage | None:
    """Interpret a CRC-checked firmware payload (without CRC); ``None`` if its layout is wrong."""
    if len(payload) < 7:
        return None
    type_, seq, t_us = struct.unpack_from("<BHI", payload)
    body = payload[7:]
    values: dict[str, Any] = {}
    try:
        msg = DeviceMsg(type_)
    except ValueError:
        return DeviceMessage(type_, seq, t_us, "unknown", {"body": body.hex()}, payload)
    if msg in (DeviceMsg.ACK, DeviceMsg.NAK):
        if len(body) < 3:
            return None
        cmd_type, cmd_seq = struct.unpack_from("<BH", body)
        values = {"cmd": cmd_type, "cmd_seq": cmd_seq}
        rest = body[3:]
        if msg is DeviceMsg.NAK:
            if len(rest) < 1:
                return None
            values["code"] = rest[0]
            if len(rest) >= 2:
                values["firmware_version"] = rest[1]
        else:
            layout = ACK_DATA.get(Cmd(cmd_type)) if cmd_type in Cmd._value2member_map_ else None
            if layout is not None:
                if len(rest) != struct.calcsize(layout[0]):
                    return None
                values.update(zip(layout[1], struct.unpack(layout[0], rest), strict=True))
            elif rest:
                values["data"] = rest.hex()
        return DeviceMessage(type_, seq, t_us, msg.name.lower(), values, payload)
    fmt, names = EVENT_BODY[msg]
    if len(body) != struct.calcsize(fmt):
        return None
    values = dict(zip(names, struct.unpack(fmt, body), strict=True))
    return DeviceMessage(type_, seq, t_us, msg.name.lower(), values, payload)


@dataclass
class DecoderCounters:
    frames: int = 0
    bad_cobs: int = 0
    bad_crc: int = 0
    too_long: int = 0
    too_short: int = 0
    bad_layout: int = 0

    @property
    def dropped(self) -> int:
        return self.bad_cobs + self.bad_crc + self.too_long + self.too_short + self.bad_layout


class FrameReader:
    """Byte stream -> CRC-checked raw payloads (without CRC); the exact twin of ``DbFrameReader``.

    Never raises on input; every dropped frame is counted in :attr:`counters`.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self.max_wire = max_payload + max_payload // 254 + 2
        self._buf = bytearray()
        self._overflow = False
        self.counters = DecoderCounters()

    def feed(self, data: bytes) -> list[bytes]:
        """Consume bytes; return the payloads of the valid frames completed by them."""
        out: list[bytes] = []
        start = 0
        while True:
            end = data.find(b"\x00", start)
            chunk = data[start:] if end < 0 else data[start:end]
            room = self.max_wire - len(self._buf)
            if len(chunk) > room:
                self._buf += chunk[:room]
                self._overflow = True
            else:
                self._buf += chunk
            if end < 0:
                return out
            payload = self._finish()
            if payload is not None:
                out.append(payload)
            start = end + 1

    def _finish(self) -> bytes | None:
        raw = bytes(self._buf)
        overflow = self._overflow
        self._buf.clear()
        self._overflow = False
        if not raw:
            return None
        c = self.counters
        if overflow:
            c.too_long += 1
            return None
        decoded = cobs_decode(raw)
        if decoded is None or len(decoded) > self.max_payload:
            c.bad_cobs += 1
            return None
        if len(decoded) < 5:
            c.too_short += 1
            return None
        (crc,) = struct.unpack_from("<H", decoded, len(decoded) - 2)
        if crc16(decoded[:-2]) != crc:
            c.bad_crc += 1
            return None
        c.frames += 1
        return decoded[:-2]


class StreamDecoder:
    """Byte stream from the firmware -> :class:`DeviceMessage` list; never raises on input."""

    def __init__(self) -> None:
        self.reader = FrameReader()

    @property
    def counters(self) -> DecoderCounters:
        return self.reader.counters

    def feed(self, data: bytes) -> list[DeviceMessage]:
        out = []
        for payload in self.reader.feed(data):
            msg = parse_device_payload(payload)
            if msg is None:
                self.reader.counters.bad_layout += 1
            else:
                out.append(msg)
        return out


def nak_reason(code: int) -> str:
    try:
        return Nak(code).name.lower()
    except ValueError:
        return f"code {code}"
