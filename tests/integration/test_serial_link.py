"""SerialLink against a scripted firmware on a real pseudo-terminal: handshake, acks, NAKs, timeouts,
sequence gaps, line noise; and the firmware-clock map."""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from rig.errors import DeviceError
from rig.protocol import PROTOCOL_VERSION, Cmd, DeviceMsg, FrameReader, encode_device_message
from rig.serial_link import ClockMap, FirmwareVersionError, SerialLink, _Unwrap, find_port


class ScriptedFirmware:
    """Answers commands on the master side of a pty; ``version`` and ``silent`` shape its replies."""

    def __init__(self, version: int = PROTOCOL_VERSION) -> None:
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        self._slave = slave
        self.version = version
        self.silent: set[int] = set()
        self.nak: dict[int, int] = {}
        self.seq = 0
        self.t_us = 1000
        self.received: list[bytes] = []
        self._stop = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def send(self, type_: int, body: bytes = b"", skip: int = 0) -> None:
        with self._lock:
            self.seq = (self.seq + skip) & 0xFFFF
            self.t_us += 500
            os.write(self.master, encode_device_message(type_, self.seq, self.t_us, body))
            self.seq = (self.seq + 1) & 0xFFFF

    def _run(self) -> None:
        reader = FrameReader()
        while not self._stop:
            try:
                data = os.read(self.master, 256)
            except OSError:
                return
            for p in reader.feed(data):
                self.received.append(p)
                cmd, seq = struct.unpack_from("<BH", p)
                if cmd in self.silent:
                    continue
                if cmd in self.nak:
                    self.send(DeviceMsg.NAK, struct.pack("<BHB", cmd, seq, self.nak[cmd]))
                elif cmd == Cmd.HELLO:
                    if p[3] != self.version:
                        self.send(DeviceMsg.NAK, struct.pack("<BHBB", cmd, seq, 5, self.version))
                    else:
                        self.send(DeviceMsg.ACK, struct.pack("<BHBHB", cmd, seq, self.version, 16, 0))
                else:
                    self.send(DeviceMsg.ACK, struct.pack("<BH", cmd, seq))

    def close(self) -> None:
        self._stop = True
        os.close(self.master)
        os.close(self._slave)


@pytest.fixture
def fw() -> Iterator[ScriptedFirmware]:
    f = ScriptedFirmware()
    yield f
    f.close()


def collect(link: SerialLink, pred, timeout_s: float = 3.0) -> list:  # type: ignore[no-untyped-def]
    out: list = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not pred(out):
        out += link.poll()
    return out


def test_handshake_acks_and_gap_detection(fw: ScriptedFirmware) -> None:
    link = SerialLink(fw.path, watchdog_ms=500, ping_interval_s=0.05)
    link.open()
    assert link.firmware_version == PROTOCOL_VERSION
    assert fw.received[0][:1] == bytes([Cmd.HELLO]) and struct.unpack_from("<H", fw.received[0], 4)[0] == 500
    fw.send(DeviceMsg.IR, b"\x01")
    fw.send(DeviceMsg.TRIGGER, struct.pack("<I", 0), skip=2)  # two frames lost on the wire
    os.write(fw.master, b"\x13\x37garbage\x00\x05\x00")  # line noise
    ev = collect(link, lambda out: any(e.kind == "trigger" for e in out))
    kinds = [e.kind for e in ev]
    assert kinds == ["ir", "gap", "trigger"]
    assert ev[1].values["lost"] == 2 and link.stats.lost == 2
    assert link.rx_errors >= 1
    assert link.pellet_present is True
    # pings keep flowing while polling and their ACKs are not events
    n0 = sum(p[0] == Cmd.PING for p in fw.received)
    collect(link, lambda out: False, timeout_s=0.3)
    assert sum(p[0] == Cmd.PING for p in fw.received) >= n0 + 3
    link.close()


def test_nak_and_timeout(fw: ScriptedFirmware) -> None:
    link = SerialLink(fw.path, ack_timeout_s=0.3, ping_interval_s=10)
    link.open()
    fw.nak[Cmd.DISPENSE] = 4
    with pytest.raises(DeviceError, match=r"refused DISPENSE .*busy"):
        link.command(Cmd.DISPENSE, pellets=1)
    fw.silent.add(Cmd.PLATFORM)
    seq = link.send("platform", up=1)
    ev = collect(link, lambda out: any(e.kind == "ack_timeout" for e in out))
    assert [e.values for e in ev if e.kind == "ack_timeout"] == [{"cmd": "platform", "cmd_seq": seq}]
    with pytest.raises(DeviceError, match="no reply to PLATFORM"):
        link.command("platform", up=0)
    link.close()


def test_wrong_version_names_port_and_versions() -> None:
    f = ScriptedFirmware(version=7)
    try:
        with pytest.raises(FirmwareVersionError) as exc:
            SerialLink(f.path).open()
        assert f.path in str(exc.value) and "version 7" in str(exc.value)
        assert f"speaks {PROTOCOL_VERSION}" in str(exc.value)
    finally:
        f.close()


def test_no_answer_and_missing_port(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DeviceError, match="cannot open serial port"):
        SerialLink(tmp_path / "nope").open()
    with pytest.raises(DeviceError, match="no serial port with USB serial number"):
        find_port("DEEPBEHAVIOR-NOT-THERE")
    f = ScriptedFirmware()
    f.silent.add(Cmd.HELLO)
    try:
        with pytest.raises(DeviceError, match="no answer to HELLO"):
            SerialLink(f.path, handshake_timeout_s=0.3).open()
    finally:
        f.close()


def test_unwrap() -> None:
    u = _Unwrap(16)
    assert [u(v) for v in (65534, 65535, 0, 1, 0, 2)] == [65534, 65535, 65536, 65537, 65536, 65538]


def test_clock_map_drift_and_offset() -> None:
    rng = np.random.default_rng(0)
    cm = ClockMap()
    drift_ppm = 40.0
    offset_ns = 5_000_000_000
    for k in range(60):
        fw_us = k * 200_000  # every 0.2 s for 12 s
        true_host = offset_ns + fw_us * 1000 / (1 + drift_ppm * 1e-6)
        delay_out, delay_back = rng.uniform(0.2e6, 3e6, 2)
        cm.add(fw_us, int(true_host - delay_out), int(true_host + delay_back))
    assert cm.drift_ppm == pytest.approx(drift_ppm, abs=15)
    fw_us = 12_000_000
    truth = offset_ns + fw_us * 1000 / (1 + drift_ppm * 1e-6)
    assert abs(cm.to_host_ns(fw_us) - truth) < 1.5e6  # within the round-trip asymmetry
