"""``deepbehavior firmware flash`` without a board: the avrdude command line and every error path.

avrdude itself is replaced by a STAND-IN script put first on PATH (``fake_avrdude``): it records its
arguments and prints/exits as the test says. The handshake after flashing runs against the real
firmware in simavr on its pty (``FirmwareSim``), or against
``tests.integration.test_serial_link.ScriptedFirmware`` for a board that answers wrongly or not at all.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import rig.firmware_commands as fc
from rig.errors import DeviceError
from rig.protocol import PROTOCOL_VERSION, Cmd
from tests.integration.test_serial_link import ScriptedFirmware

REPO = Path(__file__).resolve().parents[2]

FAKE_AVRDUDE = """#!/bin/sh
# STAND-IN for avrdude, written by tests/integration/test_firmware_flash.py: records its arguments,
# prints what FAKE_AVRDUDE_OUTPUT says (on stderr, like avrdude) and exits with FAKE_AVRDUDE_RC.
# Flashes nothing.
printf '%s\\n' "$@" > "$FAKE_AVRDUDE_ARGS"
if [ -n "$FAKE_AVRDUDE_OUTPUT" ]; then printf '%s\\n' "$FAKE_AVRDUDE_OUTPUT" >&2; fi
exit "${FAKE_AVRDUDE_RC:-0}"
"""

AVRDUDE_OK = """avrdude: AVR device initialized and ready to accept instructions
avrdude: Device signature = 0x1e950f (probably m328p)
avrdude: 9070 bytes of flash verified
avrdude done.  Thank you."""


@pytest.fixture
def fake_avrdude(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A stand-in ``avrdude`` first on PATH; yields the file its arguments are written to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "avrdude"
    script.write_text(FAKE_AVRDUDE)
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    args = tmp_path / "avrdude.args"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_AVRDUDE_ARGS", str(args))
    monkeypatch.delenv("FAKE_AVRDUDE_OUTPUT", raising=False)
    monkeypatch.delenv("FAKE_AVRDUDE_RC", raising=False)
    yield args


@pytest.fixture
def hex_file(tmp_path: Path) -> Path:
    p = tmp_path / "rig_firmware.hex"
    p.write_text(":00000001FF\n")  # an empty Intel hex file: the stand-in avrdude never reads it
    return p


def test_avrdude_command_line() -> None:
    assert fc.avrdude_command("/dev/ttyACM0", Path("build/rig_firmware.hex")) == [
        "avrdude", "-p", "m328p", "-c", "arduino", "-P", "/dev/ttyACM0", "-b", "115200",
        "-U", "flash:w:build/rig_firmware.hex:i",
    ]  # fmt: skip


@pytest.mark.firmware
@pytest.mark.timeout(120)
def test_flash_builds_flashes_and_handshakes_with_the_simulated_board(fake_avrdude: Path) -> None:
    """The whole command, as a user runs it, on the simulated board's pty (avrdude faked, firmware
    built by `make` if needed): the command line avrdude got, then the version handshake."""
    from rig.firmware_sim import FirmwareSim

    with FirmwareSim(realtime=True) as sim:
        sim.release()  # the firmware runs already, as on a board that was just flashed
        r = subprocess.run(
            [sys.executable, "-m", "rig.cli", "firmware", "flash", "--port", sim.pty_path],
            capture_output=True,
            text=True,
            timeout=90,
            env={**os.environ, "FAKE_AVRDUDE_OUTPUT": AVRDUDE_OK},
        )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"to {sim.pty_path}; firmware protocol version {PROTOCOL_VERSION}" in r.stdout
    hex_path = REPO / "firmware" / "build" / "rig_firmware.hex"
    assert fake_avrdude.read_text().split("\n")[:-1] == fc.avrdude_command(sim.pty_path, hex_path)[1:]


def test_avrdude_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hex_file: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    with pytest.raises(DeviceError, match=r"avrdude is not installed: run scripts/setup.sh"):
        fc.flash(port="/dev/ttyACM0", hex_file=hex_file)
    assert "avrdude" in (REPO / "scripts" / "setup.sh").read_text()


def test_no_board(fake_avrdude: Path, hex_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DeviceError, match=r"^no board at /dev/deepbehavior-no-such-port: no such device"):
        fc.flash(port="/dev/deepbehavior-no-such-port", hex_file=hex_file)
    with pytest.raises(DeviceError, match=r"no board with USB serial number 'NOT-THERE' is connected"):
        fc.flash(serial_number="NOT-THERE", hex_file=hex_file)
    monkeypatch.setattr(fc.serial.tools.list_ports, "comports", lambda: [])
    with pytest.raises(DeviceError, match=r"no USB serial board is connected"):
        fc.flash(hex_file=hex_file)
    assert not fake_avrdude.exists()  # avrdude never ran


def test_busy_port(fake_avrdude: Path, hex_file: Path, tmp_path: Path) -> None:
    """Another process holds the port: named with its pid. (The 'port' is a stand-in file: a real tty
    needs a board; pseudo-terminals are skipped by this check, their maker always holds them.)"""
    port = tmp_path / "ttyACM-standin"
    port.write_text("")
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import os, time; fd = os.open({str(port)!r}, os.O_RDWR); time.sleep(60)"]
    )
    try:
        deadline = time.monotonic() + 10
        while not fc._port_users(str(port)) and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(DeviceError, match=rf"is busy: pid {holder.pid} \(.*\) has it open"):
            fc.flash(port=str(port), hex_file=hex_file)
    finally:
        holder.kill()
        holder.wait()
    assert not fake_avrdude.exists()


def test_no_permission(fake_avrdude: Path, hex_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fw = ScriptedFirmware()
    try:
        real_open = os.open

        def denied(path: str, *a: object, **k: object) -> int:
            if path == fw.path:
                raise PermissionError(13, "Permission denied", path)
            return real_open(path, *a, **k)  # type: ignore[arg-type]

        monkeypatch.setattr(fc.os, "open", denied)  # as root, a chmod would not stop us: pretend
        with pytest.raises(DeviceError, match=r"no permission to open .*sudo usermod -aG dialout \$USER"):
            fc.flash(port=fw.path, hex_file=hex_file)
    finally:
        fw.close()


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (
            'avrdude: ser_open(): can\'t open device "{port}": Permission denied',
            r"avrdude: no permission to open .*dialout",
        ),
        (
            'avrdude: ser_open(): can\'t open device "{port}": Device or resource busy',
            r"avrdude: .* is busy",
        ),
        (
            "avrdude: Device signature = 0x1e9587\n"
            "avrdude: Expected signature for ATmega328P is 1E 95 0F\n"
            "         Double check chip, or use -F to override this check.",
            r"wrong board at .*: it is not an ATmega328P .*0x1e9587",
        ),
        (
            "avrdude: stk500_recv(): programmer is not responding\n"
            "avrdude: stk500_getsync() attempt 10 of 10: not in sync: resp=0x00",
            r"does not answer the Arduino boot loader at 115200 baud",
        ),
        (
            "avrdude: writing flash (9070 bytes):\n"
            "avrdude: verification error, first mismatch at byte 0x0000\n"
            "avrdude: verification error; content mismatch",
            r"avrdude failed \(exit 1\) flashing .*: avrdude: writing flash .* \| .*first mismatch .* \| "
            r".*content mismatch$",
        ),
    ],
)
def test_avrdude_failures(
    fake_avrdude: Path, hex_file: Path, monkeypatch: pytest.MonkeyPatch, output: str, message: str
) -> None:
    fw = ScriptedFirmware()
    try:
        monkeypatch.setenv("FAKE_AVRDUDE_OUTPUT", output.format(port=fw.path))
        monkeypatch.setenv("FAKE_AVRDUDE_RC", "1")
        with pytest.raises(DeviceError, match=message) as exc:
            fc.flash(port=fw.path, hex_file=hex_file)
        assert "\n" not in str(exc.value)
        assert fake_avrdude.read_text().split("\n")[:-1] == fc.avrdude_command(fw.path, hex_file)[1:]
    finally:
        fw.close()


def test_wrong_board_after_flashing(fake_avrdude: Path, hex_file: Path) -> None:
    """avrdude succeeds, but the board does not answer the rig firmware's HELLO, or speaks another
    protocol version (stand-in boards on ptys)."""
    silent = ScriptedFirmware()
    silent.silent.add(Cmd.HELLO)
    try:
        with pytest.raises(
            DeviceError, match=r"flashed .*, but the board does not answer as the rig firmware"
        ):
            fc.flash(port=silent.path, hex_file=hex_file, handshake_timeout_s=0.5)
    finally:
        silent.close()
    other = ScriptedFirmware(version=7)
    try:
        with pytest.raises(
            DeviceError, match=r"flashed .*, but firmware on .* speaks serial protocol version 7"
        ):
            fc.flash(port=other.path, hex_file=hex_file)
    finally:
        other.close()


def test_missing_hex_file(fake_avrdude: Path, tmp_path: Path) -> None:
    with pytest.raises(fc.UserError, match=r"firmware file .*nope.hex does not exist"):
        fc.flash(port="/dev/null", hex_file=tmp_path / "nope.hex")
