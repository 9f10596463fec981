#!/usr/bin/env python3
"""Benchmark camera frame -> firmware output pin latency of the closed loop in the simulated rig.

The real firmware runs in simavr locked to wall-clock time and makes the 124 Hz camera trigger. Each
trigger rising edge (a "frame") reaches the host as a pin edge from the harness, the way the synthetic
cameras are clocked; every 4th frame the paw is "in the zone", so the pure closed-loop rule emits a
``ttl_pulse`` command that rig.serial_link sends over the pty. Latency is measured on the AVR's own
clock: closed-loop TTL rising edge (D6) minus the causing trigger's rising edge (D9), both in CPU
cycles. Detection and triangulation are not included (see the pipeline block for frame -> 3-D).
Writes the result into BENCHMARKS.md (block "closed_loop") unless --no-write.

    python scripts/bench_closed_loop.py --duration 20
"""

from __future__ import annotations

import argparse
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine, pct, write_block

from rig.closed_loop import ClosedLoopRule
from rig.config import ClosedLoopConfig
from rig.firmware_sim import PIN_TRIGGER, PIN_TTL, FirmwareSim, pulses
from rig.messages import Point3D
from rig.protocol import Cmd
from rig.serial_link import SerialLink

REPO = Path(__file__).resolve().parent.parent


def point(index: int, in_zone: bool, t_ns: int) -> Point3D:
    xyz = (0.0, 0.0, 0.0) if in_zone else (2.0, -22.0, -14.0)
    return Point3D(
        name="paw",
        trigger_index=index,
        xyz=xyz,
        xyz_filtered=xyz,
        xyz_predicted=xyz,
        valid=True,
        reproj_error_px=0.0,
        cameras=["front", "side"],
        t_frame_ns=t_ns,
        t_trigger_ns=t_ns,
        t_det_ns=t_ns,
        t_out_ns=t_ns,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=124.0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", str(REPO / "firmware"), "all"], check=True)
    rule = ClosedLoopRule(ClosedLoopConfig(enabled=True, refractory_s=0.0, ttl_width_us=200))
    cause_cycles: dict[int, int] = {}  # command seq -> rising-edge cycle of the causing frame
    with FirmwareSim(realtime=True) as sim:
        link = SerialLink(sim.pty_path, watchdog_ms=1000)
        threading.Timer(0.2, sim.release).start()
        link.open()
        link.command(Cmd.TRIGGER_START, rate_uhz=int(args.rate * 1e6), max_pulses=0, report_every=1)
        frames = sim.subscribe(PIN_TRIGGER)
        c0, w0 = sim.now_cycle(), time.monotonic()
        index = -1
        sent = 0
        end = time.monotonic() + args.duration
        fired: list[int] = []  # cmd_seq of each TTL_FIRED event, in firmware order

        def drain(timeout_s: float = 0.0) -> None:
            fired.extend(ev.values["cmd_seq"] for ev in link.poll(timeout_s) if ev.kind == "ttl_fired")

        while time.monotonic() < end:
            drain()
            try:
                e = frames.get(timeout=0.002)
            except queue.Empty:
                continue
            if not e.level:
                continue
            index += 1
            for cmd in rule.update(point(index, index % 4 == 0, e.t_host_ns), time.monotonic_ns()):
                seq = link.send_command(cmd)
                if cmd.name == "ttl_pulse":
                    cause_cycles[seq] = e.cycle
                    sent += 1
        rt_factor = (sim.now_cycle() - c0) / 16e6 / (time.monotonic() - w0)
        settle = time.monotonic() + 5.0
        while len(fired) < sent and time.monotonic() < settle:
            drain(0.01)
        link.command(Cmd.TRIGGER_STOP)
        time.sleep(0.1)
        ttl = pulses(sim.edges(PIN_TTL))
        link.close()
    # The k-th pulse on the pin is the k-th TTL_FIRED event; its cmd_seq names the causing frame.
    n = min(len(fired), len(ttl))
    lat_ms = np.array([(ttl[k].rise_cycle - cause_cycles[fired[k]]) / 16e3 for k in range(n)])
    p50, p99 = pct(lat_ms)
    lines = [
        "## Closed loop: camera frame -> firmware output pin (simulated rig)",
        "",
        f"`python scripts/bench_closed_loop.py --duration {args.duration:g}`: real firmware in simavr "
        f"(real time), {args.rate:g} Hz trigger, a ttl_pulse every 4th frame via rig.closed_loop + "
        "rig.serial_link over the pty (1 Mbaud); latency = D6 rising edge - causing D9 rising edge, "
        "AVR cycles. Excludes detection and triangulation.",
        "",
        f"- commands sent {sent}, TTL_FIRED events {len(fired)}, pulses on the pin {len(ttl)}",
        f"- latency p50 **{p50:.2f} ms**, p99 **{p99:.2f} ms**, max {lat_ms.max():.2f} ms "
        "(target p99 <= 10 ms)",
        f"- simulator speed {rt_factor:.3f} x real time during the run (below 1 the AVR-clock latency "
        "understates the wall-clock one by that factor)",
        f"- link round trip (ping) median {np.median(list(link.stats.rtt_ms)):.2f} ms",
        f"- machine: {machine()}",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_block("closed_loop", text)
    return 0 if len(ttl) == len(fired) == sent else 1


if __name__ == "__main__":
    sys.exit(main())
