"""CLI subcommands for the rig firmware: ``firmware-sim`` and ``arduino-status``.

Wired into ``deepbehavior`` by :mod:`rig.cli` (``PLUGIN_MODULES``) through :func:`register`.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

from rig.firmware_sim import FirmwareSim
from rig.serial_link import SerialLink


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
