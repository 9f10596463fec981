"""Host driver for the rig firmware over pyserial (protocol: ``firmware/PROTOCOL.md``).

Pure of the bus: call :meth:`SerialLink.poll` from a node loop; it reads with a timeout, returns
:class:`rig.messages.SerialEvent` values, sends keep-alive pings, tracks acks, detects sequence gaps,
maps firmware time to host time and reconnects when the port vanishes. Commands go in with
:meth:`SerialLink.send` (non-blocking, returns the command's seq) or :meth:`SerialLink.command`
(waits for the ACK).

Event ``kind`` values: the firmware's event names (``boot``, ``ir``, ``trigger``, ``trigger_stopped``,
``servo_done``, ``dispense_done``, ``ttl_fired``, ``watchdog``, ``redelivery``, ``sync``, ``rsync``,
``frame_clock``, ``loopback``), replies
(``ack``, ``nak``) and link events made by the driver (``gap``: ``values['lost']`` frames missing;
``ack_timeout``; ``disconnected``; ``reconnected``; ``reboot``: the firmware restarted). ``t_fw_us``
is the firmware clock unwrapped to 64 bits (-1 for link events); ``t_host_ns`` the mapped host time
(``time.monotonic_ns`` clock) of the event itself, or the receive time before the map has samples.
``values['t_recv_ns']`` is when the host read it. An ACK of a command sent with
:meth:`SerialLink.send_command` carries the command's ``cause_trigger_index``/``cause_t_frame_ns`` and
``rtt_ns``; a ``ttl_fired`` event carries them too, plus ``latency_ns`` = pin time - frame time.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import serial
import serial.tools.list_ports

from rig.config import ArduinoConfig
from rig.errors import DeviceError, ProtocolError
from rig.messages import (
    SERIAL_EVENTS,
    AckEvent,
    AckTimeoutEvent,
    Command,
    DisconnectedEvent,
    GapEvent,
    NakEvent,
    RebootEvent,
    ReconnectedEvent,
    SerialEvent,
    UnknownEvent,
)
from rig.protocol import (
    PROTOCOL_VERSION,
    Cmd,
    DeviceMessage,
    Nak,
    StreamDecoder,
    encode_command,
    nak_reason,
)

log = logging.getLogger(__name__)

HELLO_AFTER_BOOT_NS = 250_000_000  # no HELLO reply this long after a BOOT: send HELLO again


class FirmwareVersionError(DeviceError):
    """The firmware speaks another protocol version."""


def find_port(serial_number: str) -> str:
    """Device path of the USB serial port with this serial number (``DeviceError`` if absent)."""
    for info in serial.tools.list_ports.comports():
        if info.serial_number == serial_number:
            return str(info.device)
    raise DeviceError(f"no serial port with USB serial number {serial_number!r} is connected")


class ClockMap:
    """Firmware microseconds <-> host monotonic nanoseconds, with drift.

    Samples are (fw_us, host_ns) pairs from ping round trips: the host time is the midpoint of send and
    receive, the round trip its uncertainty. The fit is a least-squares line over the recent samples
    with the smallest round trips. ``drift_ppm`` is how much faster the firmware clock runs than the host's.
    """

    def __init__(self, window: int = 64) -> None:
        self.samples: deque[tuple[int, int, int]] = deque(maxlen=window)
        self.offset_ns = 0.0
        self.slope = 1000.0  # host ns per firmware us
        self.ref_us = 0

    def add(self, fw_us: int, host_send_ns: int, host_recv_ns: int) -> None:
        rtt = host_recv_ns - host_send_ns
        self.samples.append((fw_us, (host_send_ns + host_recv_ns) // 2, rtt))
        self._fit()

    def reset(self) -> None:
        self.samples.clear()
        self.offset_ns = 0.0
        self.slope = 1000.0

    @property
    def ready(self) -> bool:
        return len(self.samples) > 0

    @property
    def drift_ppm(self) -> float:
        return (1000.0 / self.slope - 1.0) * 1e6 if len(self.samples) >= 2 else 0.0

    def _fit(self) -> None:
        s = np.array(self.samples, dtype=np.float64)
        keep = s[s[:, 2] <= np.quantile(s[:, 2], 0.25)]  # the fastest round trips bound the offset best
        self.ref_us = int(keep[0, 0])
        x = keep[:, 0] - self.ref_us
        y = keep[:, 1]
        if len(keep) >= 3 and np.ptp(x) > 5_000_000:  # >= 5 s span before trusting a slope
            slope, offset = np.polyfit(x, y, 1)
            if 990.0 < slope < 1010.0:  # +-1 % : anything else is a bad sample set
                self.slope, self.offset_ns = float(slope), float(offset)
                return
        self.slope = 1000.0
        self.offset_ns = float(np.mean(y - 1000.0 * x))

    def to_host_ns(self, fw_us: int) -> int:
        return int(self.offset_ns + self.slope * (fw_us - self.ref_us))


class _Unwrap:
    """Unwraps a counter of ``bits`` bits into a monotonically increasing integer."""

    def __init__(self, bits: int) -> None:
        self.mod = 1 << bits
        self.last: int | None = None

    def __call__(self, v: int) -> int:
        if self.last is None:
            self.last = v
            return v
        delta = (v - self.last) % self.mod
        if delta > self.mod // 2:  # went backwards a little (out-of-order timestamp): keep it close
            delta -= self.mod
        self.last += delta
        return self.last


@dataclass
class _Pending:
    seq: int
    cmd: Cmd
    t_send_ns: int
    deadline_ns: int
    cause: Command | None = None
    reply: DeviceMessage | None = None


@dataclass
class LinkStats:
    frames: int = 0
    gaps: int = 0
    lost: int = 0
    naks: int = 0
    ack_timeouts: int = 0
    reconnects: int = 0
    reboots: int = 0
    rtt_ms: deque[float] = field(default_factory=lambda: deque(maxlen=256))


class SerialLink:
    """One firmware on one serial port.

    ``port`` is a device path (a pty path for the simulator); ``serial_number`` finds a USB port
    instead. ``watchdog_ms`` is armed in the firmware at HELLO; pings go out every
    ``ping_interval_s`` (keep it well under the watchdog). Nothing here blocks longer than
    ``read_timeout_s`` except :meth:`open` and :meth:`command`.
    """

    def __init__(
        self,
        port: str | Path | None = None,
        *,
        serial_number: str | None = None,
        baud: int = 1_000_000,
        read_timeout_s: float = 0.02,
        ack_timeout_s: float = 1.0,
        handshake_timeout_s: float = 3.0,
        watchdog_ms: int = 1000,
        ping_interval_s: float = 0.2,
        reconnect_interval_s: float = 0.2,
        expected_version: int = PROTOCOL_VERSION,
    ) -> None:
        if port is None and serial_number is None:
            raise DeviceError("SerialLink needs a port path or a USB serial number")
        self.port_arg = str(port) if port is not None else None
        self.serial_number = serial_number
        self.baud = baud
        self.read_timeout_s = read_timeout_s
        self.ack_timeout_s = ack_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self.watchdog_ms = watchdog_ms
        self.ping_interval_s = ping_interval_s
        self.reconnect_interval_s = reconnect_interval_s
        self.expected_version = expected_version
        self.clock = ClockMap()
        self.stats = LinkStats()
        self.decoder = StreamDecoder()
        self._ser: serial.Serial | None = None
        self._seq = 0
        self._pending: dict[int, _Pending] = {}
        self._recent: OrderedDict[int, _Pending] = OrderedDict()  # acked commands, for TTL_FIRED causes
        self._out: list[SerialEvent] = []
        self._rx_seq = _Unwrap(16)
        self._next_rx_seq: int | None = None
        self._fw_time = _Unwrap(32)
        self._last_ping_ns = 0
        self._last_reconnect_ns = 0
        self.connected = False
        self.firmware_version: int | None = None
        self.pellet_present: bool | None = None

    @property
    def port(self) -> str:
        if self.port_arg is not None:
            return self.port_arg
        assert self.serial_number is not None
        return find_port(self.serial_number)

    # ------------------------------------------------------------------ open / close
    def open(self) -> None:
        """Open the port and do the version handshake (raises on failure; the port is left closed)."""
        port = self.port
        try:
            self._ser = serial.Serial(port, self.baud, timeout=self.read_timeout_s, write_timeout=1.0)
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"cannot open serial port {port}: {exc}") from exc
        self.decoder = StreamDecoder()
        self._next_rx_seq = None
        self._rx_seq = _Unwrap(16)
        try:
            self._handshake(port)
        except Exception:
            self._close_port()
            raise
        self.connected = True
        self._last_ping_ns = time.monotonic_ns()

    def _handshake(self, port: str) -> None:
        hello = {"version": self.expected_version, "watchdog_ms": self.watchdog_ms}
        seq = self._write(Cmd.HELLO, hello)
        deadline = time.monotonic_ns() + int(self.handshake_timeout_s * 1e9)
        resend_ns: int | None = None
        done = False
        while time.monotonic_ns() < deadline and not done:
            if resend_ns is not None and time.monotonic_ns() >= resend_ns:
                # the board booted after our HELLO (opening a real Uno's port resets it, and its boot
                # loader swallows what arrives meanwhile) and has not answered: ask again
                resend_ns = None
                self._pending.pop(seq, None)
                seq = self._write(Cmd.HELLO, hello)
            for msg, t_recv in self._read_messages():
                if done or not (msg.kind in ("ack", "nak") and msg.values.get("cmd") == Cmd.HELLO):
                    self._out.extend(self._handle(msg, t_recv))
                    if msg.kind == "boot" and not done:
                        resend_ns = time.monotonic_ns() + HELLO_AFTER_BOOT_NS
                    continue
                if msg.values["cmd_seq"] != seq:
                    self._handle(msg, t_recv)
                    continue
                if msg.kind == "nak":
                    fw = msg.values.get("firmware_version", "?")
                    self.stats.naks += 1
                    raise FirmwareVersionError(
                        f"firmware on {port} speaks serial protocol version {fw}, this host speaks "
                        f"{self.expected_version}: flash the firmware from this checkout "
                        f"(firmware/, `make -C firmware`) or update the host"
                    )
                if msg.values["version"] != self.expected_version:
                    raise FirmwareVersionError(
                        f"firmware on {port} speaks serial protocol version {msg.values['version']}, "
                        f"this host speaks {self.expected_version}"
                    )
                self.firmware_version = int(msg.values["version"])
                self.pellet_present = bool(msg.values["pellet_present"])
                self._handle(msg, t_recv)  # sequence bookkeeping; the ACK itself is not an event
                log.info("firmware protocol v%d on %s", self.firmware_version, port)
                done = True
        if done:
            return
        self._pending.pop(seq, None)
        raise DeviceError(
            f"no answer to HELLO from {port} within {self.handshake_timeout_s} s "
            f"(is it the rig firmware, at {self.baud} baud?)"
        )

    def _close_port(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            except (serial.SerialException, OSError):
                pass
        self._ser = None

    def fileno(self) -> int | None:
        """The open port's file descriptor (to wait on it in a poller), or None while disconnected."""
        ser = self._ser
        if ser is None or not self.connected:
            return None
        try:
            return int(ser.fileno())
        except (AttributeError, OSError, ValueError, serial.SerialException):
            return None

    def close(self) -> None:
        """Close the port (the firmware's watchdog makes the rig safe if the host went away)."""
        self._close_port()
        self.connected = False

    def __enter__(self) -> SerialLink:
        if not self.connected:
            self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ commands
    def _write(self, cmd: Cmd, args: dict[str, int], cause: Command | None = None) -> int:
        if self._ser is None:
            raise DeviceError(f"serial port {self.port_arg or self.serial_number} is not open")
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        wire = encode_command(cmd, seq, **args)
        now = time.monotonic_ns()
        self._pending[seq] = _Pending(seq, cmd, now, now + int(self.ack_timeout_s * 1e9), cause)
        try:
            self._ser.write(b"\x00" + wire)  # leading delimiter: resynchronise after line noise
        except (serial.SerialException, OSError) as exc:
            self._pending.pop(seq, None)
            self._lost_port(exc)
            raise DeviceError(f"write to {self.port_arg} failed: {exc}") from exc
        return seq

    def send(self, name: str | Cmd, cause: Command | None = None, **args: int) -> int:
        """Send a command without waiting; returns its seq (the ACK/NAK comes out of :meth:`poll`).

        ``name`` is a :class:`~rig.protocol.Cmd` or its lower-case name (``"ttl_pulse"``).
        """
        return self._send(name, args, cause)

    def _send(self, name: str | Cmd, args: dict[str, int], cause: Command | None) -> int:
        try:
            cmd = name if isinstance(name, Cmd) else Cmd[name.upper()]
        except KeyError:
            known = [c.name.lower() for c in Cmd]
            raise ProtocolError(f"unknown firmware command {name!r}; known: {known}") from None
        if not self.connected:
            raise DeviceError(f"serial port {self.port_arg or self.serial_number} is not connected")
        return self._write(cmd, args, cause)

    def send_command(self, command: Command) -> int:
        """Send a bus :class:`~rig.messages.Command` (its ``name`` and ``args``); returns the seq."""
        return self.send(command.name, cause=command, **command.args)

    def command(self, name: str | Cmd, timeout_s: float | None = None, **args: int) -> DeviceMessage:
        """Send a command and wait for its ACK (events arriving meanwhile are kept for :meth:`poll`).

        Raises ``DeviceError`` on a NAK (naming the reason) or when no reply comes in time.
        """
        seq = self._send(name, args, None)
        pending = self._pending[seq]
        deadline = time.monotonic_ns() + int((timeout_s or self.ack_timeout_s) * 1e9)
        pending.deadline_ns = deadline
        while time.monotonic_ns() < deadline:
            self._out.extend(self._poll_once())
            if pending.reply is not None:
                reply = pending.reply
                if reply.kind == "nak":
                    raise DeviceError(
                        f"firmware on {self.port_arg} refused {pending.cmd.name} (seq {seq}): "
                        f"{nak_reason(int(reply.values['code']))}"
                    )
                return reply
            if not self.connected:
                raise DeviceError(
                    f"serial port {self.port_arg} vanished while waiting for {pending.cmd.name}"
                )
        raise DeviceError(f"no reply to {pending.cmd.name} (seq {seq}) from {self.port_arg} in time")

    # ------------------------------------------------------------------ receive
    def poll(self, timeout_s: float | None = None) -> list[SerialEvent]:
        """Read what arrived (waiting at most ``read_timeout_s``), ping, check timeouts, reconnect.

        Returns the events in arrival order. Never raises for line noise or a vanished port.
        """
        fresh = self._poll_once(timeout_s)
        queued, self._out = self._out, []  # kept by open()/command(), or queued by a lost port
        return queued + fresh

    def _poll_once(self, timeout_s: float | None = None) -> list[SerialEvent]:
        now = time.monotonic_ns()
        if not self.connected:
            return self._try_reconnect(now)
        out: list[SerialEvent] = []
        if now - self._last_ping_ns > self.ping_interval_s * 1e9:
            self._last_ping_ns = now
            try:
                self._write(Cmd.PING, {})
            except DeviceError:
                return []  # _lost_port queued the 'disconnected' event
        if self._ser is not None and timeout_s is not None:
            self._ser.timeout = timeout_s
        for msg, t_recv in self._read_messages():
            out.extend(self._handle(msg, t_recv))
        if self._ser is not None and timeout_s is not None:
            self._ser.timeout = self.read_timeout_s
        for seq, p in list(self._pending.items()):
            if p.reply is None and now > p.deadline_ns:
                del self._pending[seq]
                self.stats.ack_timeouts += 1
                out.append(self._link_event(AckTimeoutEvent, cmd=p.cmd.name.lower(), cmd_seq=seq))
        return out

    def _read_messages(self) -> list[tuple[DeviceMessage, int]]:
        ser = self._ser
        if ser is None:
            return []
        try:
            data = ser.read(max(1, ser.in_waiting))
            if data and ser.in_waiting:
                data += ser.read(ser.in_waiting)
        except (serial.SerialException, OSError, TypeError) as exc:
            self._lost_port(exc)
            return []
        t_recv = time.monotonic_ns()
        return [(m, t_recv) for m in self.decoder.feed(data)]

    def _lost_port(self, exc: BaseException) -> None:
        if self.connected:
            log.warning("serial port %s vanished: %s", self.port_arg, exc)
            self._out.append(self._link_event(DisconnectedEvent, reason=str(exc)))
        self._close_port()
        self.connected = False
        self._last_reconnect_ns = time.monotonic_ns()
        self._pending.clear()

    def _try_reconnect(self, now: int) -> list[SerialEvent]:
        if now - self._last_reconnect_ns < self.reconnect_interval_s * 1e9:
            time.sleep(self.read_timeout_s)
            return []
        self._last_reconnect_ns = now
        try:
            self.open()
        except FirmwareVersionError:
            raise
        except DeviceError as exc:
            log.debug("reconnect to %s failed: %s", self.port_arg, exc)
            return []
        self.stats.reconnects += 1
        log.warning("serial port %s is back", self.port_arg)
        out = self._out
        self._out = []
        return [self._link_event(ReconnectedEvent, port=str(self.port_arg)), *out]

    def _link_event(self, cls: type[SerialEvent], **values: Any) -> SerialEvent:
        return cls(fw_seq=-1, t_fw_us=-1, t_host_ns=time.monotonic_ns(), **values)

    def _add_clock_sample(self, msg: DeviceMessage, cmd_seq: int, t_recv: int) -> None:
        p = self._pending.get(cmd_seq)
        t_send = p.t_send_ns if p is not None else t_recv
        fw_us = self._fw_time(msg.t_us)
        self.clock.add(fw_us, t_send, t_recv)
        self.stats.rtt_ms.append((t_recv - t_send) / 1e6)

    def _handle(self, msg: DeviceMessage, t_recv: int) -> list[SerialEvent]:
        out: list[SerialEvent] = []
        self.stats.frames += 1
        if msg.kind == "boot":
            # The firmware restarted: its sequence numbers and clock start again from zero.
            if self._next_rx_seq is not None:
                self.stats.reboots += 1
                out.append(self._link_event(RebootEvent, version=int(msg.values["version"])))
            self._rx_seq = _Unwrap(16)
            self._next_rx_seq = None
            self._fw_time = _Unwrap(32)
            self.clock.reset()
        seq = self._rx_seq(msg.seq)
        if self._next_rx_seq is not None and seq != self._next_rx_seq:
            lost = seq - self._next_rx_seq
            self.stats.gaps += 1
            self.stats.lost += max(lost, 0)
            log.warning("serial %s: %d firmware frame(s) lost before seq %d", self.port_arg, lost, msg.seq)
            out.append(self._link_event(GapEvent, lost=lost, expected=self._next_rx_seq, got=seq))
        self._next_rx_seq = seq + 1
        fw_us = self._fw_time(msg.t_us)
        values = dict(msg.values)
        extra: dict[str, Any] = {}  # what the host adds to the firmware's fields
        if msg.kind in ("ack", "nak"):
            cmd_seq = int(values["cmd_seq"])
            p = self._pending.get(cmd_seq)
            if p is not None:
                p.reply = msg
                if p.cmd is Cmd.PING and msg.kind == "ack":
                    self._add_clock_sample(msg, cmd_seq, t_recv)
                del self._pending[cmd_seq]
                self._recent[cmd_seq] = p
                while len(self._recent) > 256:
                    self._recent.popitem(last=False)
                if p.cause is not None:
                    extra["cause_trigger_index"] = p.cause.cause_trigger_index
                    extra["cause_t_frame_ns"] = p.cause.cause_t_frame_ns
                extra["rtt_ns"] = t_recv - p.t_send_ns
            if msg.kind == "nak":
                self.stats.naks += 1
                extra["reason"] = nak_reason(int(values["code"]))
                log.warning("serial %s: NAK %s %s", self.port_arg, values, extra)
            try:
                extra["cmd_name"] = Cmd(int(values["cmd"])).name.lower()
            except ValueError:
                extra["cmd_name"] = f"0x{int(values['cmd']):02x}"
            if extra["cmd_name"] == "ping" and msg.kind == "ack":
                return out  # keep-alive: not an event anyone needs
        elif msg.kind == "ir":
            self.pellet_present = bool(values["pellet_present"])
        t_host = self.clock.to_host_ns(fw_us) if self.clock.ready else t_recv
        if msg.kind == "ttl_fired":
            cause = self._recent.get(int(values["cmd_seq"]))
            if cause is not None and cause.cause is not None and cause.cause.cause_t_frame_ns >= 0:
                # camera frame -> output pin, on the host clock (through the firmware clock map)
                extra["cause_trigger_index"] = cause.cause.cause_trigger_index
                extra["cause_t_frame_ns"] = cause.cause.cause_t_frame_ns
                extra["latency_ns"] = t_host - cause.cause.cause_t_frame_ns
        ev = serial_event(msg, fw_seq=seq, t_fw_us=fw_us, t_host_ns=t_host, t_recv_ns=t_recv, **extra)
        out.append(ev)
        log.debug("serial event %s seq %d t_fw %d %s", msg.kind, seq, fw_us, ev.values)
        return out

    @property
    def rx_errors(self) -> int:
        """Frames dropped by the host decoder (garbage, bad CRC, truncated)."""
        return self.decoder.counters.dropped

    def configure(self, **cfg: int) -> None:
        """Send CONFIG (all nine fields, see ``rig.protocol.CMD_BODY[Cmd.CONFIG]``) and wait for the ACK."""
        self.command(Cmd.CONFIG, **cfg)

    def status(self) -> dict[str, Any]:
        return dict(self.command(Cmd.STATUS).values)


__all__ = ["ClockMap", "FirmwareVersionError", "Nak", "SerialLink", "configure_imaging", "find_port"]


def configure_imaging(link: SerialLink, cfg: ArduinoConfig) -> None:
    """Send ``rig.arduino``'s pseudo-random sync (RSYNC) and timestamped inputs (INPUTS) settings and wait
    for their ACKs. Sending the same settings again (after a reconnect) keeps the running sync sequence
    and the input counts (``firmware/PROTOCOL.md``)."""
    link.command(Cmd.RSYNC, **cfg.rsync_command())
    link.command(Cmd.INPUTS, **cfg.inputs_command())


def link_from_config(cfg: ArduinoConfig, port: str | Path | None = None) -> SerialLink:
    """A (not yet opened) link with the settings of ``rig.arduino``; ``port`` overrides the config's
    (the simulator's pty)."""
    return SerialLink(
        port if port is not None else cfg.port,
        serial_number=None if port is not None else cfg.serial_number,
        baud=cfg.baud,
        ack_timeout_s=cfg.ack_timeout_s,
        watchdog_ms=cfg.watchdog_ms,
        ping_interval_s=cfg.ping_interval_s,
    )


def serial_event(msg: DeviceMessage, **common: Any) -> SerialEvent:
    """The bus event of one decoded firmware frame: its kind's typed struct (``rig.messages``) with the
    firmware's fields and ``common`` (numbering, times, and what the host adds: cause, round trip)."""
    v = msg.values
    if msg.kind == "ack":
        reply = {k: int(x) for k, x in v.items() if k not in ("cmd", "cmd_seq", "data")}
        hex_ = v.get("data")
        return AckEvent(
            cmd=int(v["cmd"]),
            cmd_seq=int(v["cmd_seq"]),
            data=reply,
            data_hex=None if hex_ is None else str(hex_),
            **common,
        )
    if msg.kind == "nak":
        fw = v.get("firmware_version")
        return NakEvent(
            cmd=int(v["cmd"]),
            cmd_seq=int(v["cmd_seq"]),
            code=int(v["code"]),
            firmware_version=None if fw is None else int(fw),
            **common,
        )
    if msg.kind == "unknown":
        return UnknownEvent(type_code=msg.type, body=str(v["body"]), **common)
    return SERIAL_EVENTS[msg.kind](**v, **common)
