"""CLI subcommands for the rig firmware: ``firmware flash``, ``firmware-sim`` and ``arduino-status``.

Wired into ``deepbehavior`` by :mod:`rig.cli` (``PLUGIN_MODULES``) through :func:`register`.

``firmware flash`` builds ``firmware/build/rig_firmware.hex`` if needed, finds the board (a port, a USB
serial number, or the one USB serial board connected), checks the port can be opened, runs avrdude
(:func:`avrdude_command`) and then does the protocol handshake to print the firmware's version. Every
failure is one :class:`~rig.errors.DeviceError` line that says what to do (:func:`avrdude_error` reads
avrdude's output).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import serial.tools.list_ports

from rig.errors import DeviceError, UserError
from rig.firmware_sim import FIRMWARE_DIR, FirmwareSim
from rig.serial_link import FirmwareVersionError, SerialLink

DEFAULT_HEX = FIRMWARE_DIR / "build" / "rig_firmware.hex"
AVRDUDE_PART = "m328p"  # ATmega328P: Arduino Uno (and Nano)
AVRDUDE_PROGRAMMER = "arduino"  # the boot loader's STK500v1 protocol
AVRDUDE_BAUD = 115200  # Optiboot on the Uno (an old Nano boot loader wants 57600: --bootloader-baud)
AVRDUDE_TIMEOUT_S = 120.0
DIALOUT_FIX = (
    "add yourself to the 'dialout' group: `sudo usermod -aG dialout $USER`, then log out and in again"
)
INSTALL_AVRDUDE = (
    "avrdude is not installed: run scripts/setup.sh (it installs it) or `sudo apt-get install avrdude`"
)


def avrdude_command(
    port: str, hex_file: Path | str, baud: int = AVRDUDE_BAUD, avrdude: str = "avrdude"
) -> list[str]:
    """The avrdude command line that writes ``hex_file`` (Intel hex) through the board's boot loader."""
    return [
        avrdude,
        "-p", AVRDUDE_PART,
        "-c", AVRDUDE_PROGRAMMER,
        "-P", str(port),
        "-b", str(baud),
        "-U", f"flash:w:{hex_file}:i",
    ]  # fmt: skip


def build_hex() -> Path:
    """``make -C firmware firmware`` (a no-op when nothing changed); the hex file it made."""
    make = shutil.which("make")
    if make is None:
        raise UserError("cannot build the firmware: `make` is not installed (run scripts/setup.sh)")
    r = subprocess.run([make, "-s", "-C", str(FIRMWARE_DIR), "firmware"], capture_output=True, text=True)
    if r.returncode != 0 or not DEFAULT_HEX.exists():
        tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
        raise UserError(
            f"building the firmware failed (make -C {FIRMWARE_DIR} firmware, exit {r.returncode}): {tail} "
            "(the AVR toolchain comes with scripts/setup.sh)"
        )
    return DEFAULT_HEX


def _connected() -> str:
    ports = [
        f"{p.device}" + (f" (serial {p.serial_number})" if p.serial_number else "")
        for p in serial.tools.list_ports.comports()
    ]
    return ", ".join(ports) if ports else "none"


def find_board(port: str | None, serial_number: str | None) -> str:
    """The device path of the board: ``port`` as given, the port with USB ``serial_number``, or the only
    USB serial port connected."""
    if port is not None:
        if not os.path.exists(port):
            raise DeviceError(f"no board at {port}: no such device (connected serial ports: {_connected()})")
        return port
    ports = list(serial.tools.list_ports.comports())
    if serial_number is not None:
        for info in ports:
            if info.serial_number == serial_number:
                return str(info.device)
        raise DeviceError(
            f"no board with USB serial number {serial_number!r} is connected (connected: {_connected()})"
        )
    usb = [p for p in ports if p.vid is not None]
    if len(usb) == 1:
        return str(usb[0].device)
    if not usb:
        raise DeviceError("no USB serial board is connected: plug the Arduino in, or give --port/--serial")
    raise DeviceError(
        f"{len(usb)} USB serial boards are connected ({_connected()}): choose one with --port or --serial"
    )


def _port_users(port: str) -> list[str]:
    """Other processes that have ``port`` open (Linux /proc), as 'pid N (command)'."""
    try:
        target = os.path.realpath(port)
    except OSError:
        return []
    me = os.getpid()
    out: list[str] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for d in proc.iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            fds = list((d / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                    out.append(f"pid {d.name} ({cmd[:60] or '?'})")
                    break
            except OSError:
                continue
    return out


def check_port(port: str) -> None:
    """Raise a one-line ``DeviceError`` if ``port`` cannot be opened for flashing (permission, busy)."""
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except PermissionError:
        raise DeviceError(f"no permission to open {port}: {DIALOUT_FIX}") from None
    except FileNotFoundError:
        raise DeviceError(
            f"no board at {port}: no such device (connected serial ports: {_connected()})"
        ) from None
    except OSError as exc:
        if exc.errno == 16:  # EBUSY
            raise DeviceError(f"{port} is busy (another program has it open): close it and retry") from None
        raise DeviceError(f"cannot open {port}: {exc.strerror}") from None
    os.close(fd)
    if os.path.realpath(port).startswith("/dev/pts/"):
        return  # a pseudo-terminal (the simulator's): its maker always holds it open
    users = _port_users(port)
    if users:
        raise DeviceError(
            f"{port} is busy: {', '.join(users)} has it open (a running session, a serial monitor?): "
            "stop it and retry"
        )


def avrdude_error(port: str, rc: int, output: str) -> DeviceError:
    """One line for a failed avrdude run, from its output."""
    low = output.lower()
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    tail = " | ".join(lines[-3:]) if lines else "(no output)"
    if "permission denied" in low:
        return DeviceError(f"avrdude: no permission to open {port}: {DIALOUT_FIX}")
    if "resource busy" in low:
        return DeviceError(f"avrdude: {port} is busy (another program has it open): close it and retry")
    if "no such file or directory" in low and port in output:
        return DeviceError(f"avrdude: no board at {port} (connected serial ports: {_connected()})")
    if "signature" in low and ("invalid" in low or "mismatch" in low or "expected signature" in low):
        sig = next((ln for ln in lines if "signature" in ln.lower()), tail)
        return DeviceError(
            f"wrong board at {port}: it is not an ATmega328P (Arduino Uno/Nano): avrdude says {sig!r}"
        )
    if "not in sync" in low or "not responding" in low or "getsync" in low:
        return DeviceError(
            f"the board at {port} does not answer the Arduino boot loader at {AVRDUDE_BAUD} baud (not an "
            f"Uno/Nano with its boot loader, the wrong port, or an old Nano: --bootloader-baud 57600): {tail}"
        )
    return DeviceError(f"avrdude failed (exit {rc}) flashing {port}: {tail}")


def flash(
    port: str | None = None,
    serial_number: str | None = None,
    hex_file: Path | str | None = None,
    bootloader_baud: int = AVRDUDE_BAUD,
    handshake_timeout_s: float = 5.0,
) -> tuple[str, int]:
    """Build (unless ``hex_file``), flash, handshake. Returns (port, firmware protocol version)."""
    avrdude = shutil.which("avrdude")
    if avrdude is None:
        raise DeviceError(INSTALL_AVRDUDE)
    if hex_file is None:
        hex_path = build_hex()
    else:
        hex_path = Path(hex_file)
        if not hex_path.is_file():
            raise UserError(f"firmware file {hex_path} does not exist")
    dev = find_board(port, serial_number)
    check_port(dev)
    cmd = avrdude_command(dev, hex_path, bootloader_baud, avrdude)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=AVRDUDE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"avrdude did not finish flashing {dev} in {AVRDUDE_TIMEOUT_S:g} s") from None
    except OSError as exc:
        raise DeviceError(f"cannot run {avrdude}: {exc}") from None
    if r.returncode != 0:
        raise avrdude_error(dev, r.returncode, (r.stdout or "") + (r.stderr or ""))
    link = SerialLink(dev, watchdog_ms=0, handshake_timeout_s=handshake_timeout_s)
    try:
        link.open()
    except FirmwareVersionError as exc:
        raise DeviceError(f"flashed {dev}, but {exc}") from None
    except DeviceError as exc:
        raise DeviceError(
            f"flashed {dev}, but the board does not answer as the rig firmware (wrong board?): {exc}"
        ) from None
    try:
        version = link.firmware_version
        assert version is not None
    finally:
        link.close()
    return dev, version


def cmd_firmware_flash(args: argparse.Namespace) -> int:
    hex_file = args.hex or DEFAULT_HEX
    dev, version = flash(args.port, args.serial, args.hex, args.bootloader_baud)
    print(f"flashed {hex_file} to {dev}; firmware protocol version {version}")
    return 0


def cmd_firmware_sim(args: argparse.Namespace) -> int:
    """Run the real firmware in simavr; print its port; release it after a delay; run until Ctrl-C."""
    sim = FirmwareSim(realtime=not args.max, link_path=args.link)
    try:
        print(f"firmware simulator on {args.link or sim.pty_path} (pty {sim.pty_path})", flush=True)
        print(f"open the port now; the AVR starts in {args.release_after:g} s", flush=True)
        time.sleep(args.release_after)
        sim.release()
        while sim.running:
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        sim.stop()


def cmd_arduino_status(args: argparse.Namespace) -> int:
    """Handshake with the firmware (a port, a USB serial number or the simulator) and print its status."""
    sim = None
    try:
        if args.sim:
            sim = FirmwareSim(realtime=True)
            link = SerialLink(sim.pty_path, watchdog_ms=0)
            threading.Timer(0.2, sim.release).start()
        else:
            link = SerialLink(args.port, serial_number=args.serial_number, baud=args.baud, watchdog_ms=0)
        link.open()
        status = link.status()
        status["protocol_version"] = link.firmware_version
        status["port"] = link.port
        print(json.dumps(status, indent=2))
        link.close()
        return 0
    finally:
        if sim is not None:
            sim.stop()


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    fw = sub.add_parser("firmware", help="the rig's Arduino firmware: flash a board")
    fw_sub = fw.add_subparsers(dest="firmware_command", metavar="ACTION", required=True)
    f = fw_sub.add_parser(
        "flash",
        help="build (if needed) and flash the firmware with avrdude, then check its version",
        description="Build firmware/build/rig_firmware.hex if needed, flash it to an Arduino Uno with "
        "avrdude through its boot loader, then do the protocol handshake and print the firmware version.",
    )
    where_f = f.add_mutually_exclusive_group()
    where_f.add_argument("--port", help="serial device, e.g. /dev/ttyACM0 (default: the only USB board)")
    where_f.add_argument("--serial", help="USB serial number of the board")
    f.add_argument("--hex", help="Intel hex file to flash instead of building firmware/")
    f.add_argument(
        "--bootloader-baud", type=int, default=AVRDUDE_BAUD, help="boot loader baud (57600: old Nano)"
    )
    f.set_defaults(func=cmd_firmware_flash)
    p = sub.add_parser("firmware-sim", help="run the rig firmware in the simavr simulator on a pty")
    p.add_argument("--max", action="store_true", help="run flat out instead of locked to wall time")
    p.add_argument("--link", default=None, help="also make a symlink to the pty at this path")
    p.add_argument("--release-after", type=float, default=1.0, help="seconds before the AVR starts")
    p.set_defaults(func=cmd_firmware_sim)
    a = sub.add_parser("arduino-status", help="handshake with the rig firmware and print its status")
    where = a.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial device path, e.g. /dev/ttyACM0")
    where.add_argument("--serial-number", help="USB serial number of the board")
    where.add_argument("--sim", action="store_true", help="the firmware in the simulator")
    a.add_argument("--baud", type=int, default=1_000_000)
    a.set_defaults(func=cmd_arduino_status)
