"""``deepbehavior rig check CONFIG``: the guided hardware self-test a lab runs before its first animal.

One PASS/FAIL/SKIP line per check, a JSON report, exit 1 on any FAIL:

1. **board**: the protocol handshake (the firmware's version against the one this host speaks) and
   ping round trips.
2. **trigger**: the firmware's camera trigger runs ``--seconds`` (a fixed number of pulses); its rate is
   measured on the firmware's clock from the TRIGGER reports (one per pulse) against ``rig.trigger.
   rate_hz``, each report checked against Timer1's periodic model (:class:`rig.clock.TriggerModel`), the
   firmware clock's drift against the host's from the lower-envelope fit (:class:`rig.clock.ClockFit`).
   **camera NAME**: frames received against pulses fired, frame-id gaps, the trigger index of every frame
   (0 .. pulses - 1, each once). **cameras**: every pulse gave a frame on every camera (trigger index
   agreement), with the host arrival skew. A camera that is not hardware-triggered says SKIP.
3. **platform** (servo down/up/down: SERVO_DONE with the configured widths), **dispense** (one pellet:
   DISPENSE_DONE with the configured steps), **ir sensor** (no pellet before, a pellet after). With
   ``--yes`` (or no terminal) the firmware and IR events decide; otherwise the operator is asked what
   only a person can see (did the platform move; did a pellet land when the sensor saw none).
4. **ttl** (TTL_FIRED with the configured width) and **sync** (the sync output driven high and low:
   SYNC events; in ``sync: trigger`` mode the check switches it to level mode for the test and back).
5. **loopback**: with ``rig.arduino.loopback: true`` (a jumper from the closed-loop TTL, D6, to the
   loopback input, D12, as Bonsai's and pyControl's latency tests do) the TTL is pulsed
   :data:`LOOPBACK_PULSES` times and each pulse's edges on D12, timestamped by the firmware's pin-change
   interrupt, are compared with its TTL_FIRED time: PASS when every rising edge is within
   :data:`LOOPBACK_MAX_US` of it (the output really goes out when the firmware says) and every pulse's
   width on the input is the configured one (-:data:`LOOPBACK_WIDTH_SHORT_US` ..
   +:data:`LOOPBACK_WIDTH_LONG_US`: the end is timed in the firmware's loop). It also reports host
   command -> pin (through the link's clock map). Without the declaration: SKIP with the reason. In
   simulation the harness wires D6 to D12.
6. **frame clock**: with ``rig.arduino.frame_clock: true`` (an imaging system's frame-out wired to D8, the
   record ``deepbehavior align`` uses) the check listens :data:`FRAME_CLOCK_S` seconds: PASS when at
   least :data:`FRAME_CLOCK_MIN_EDGES` rising edges arrive with the firmware's edge counter unbroken,
   with the rate measured on the firmware clock and any interval over 1.5 periods (a frame the imaging
   system did not signal) in the detail; no edges: FAIL naming the wiring. In simulation D8 is driven
   only by ``rig.arduino.simulator.imaging_clock`` (without it the check sees what an unwired board
   shows). Without the declaration: SKIP with the reason.

A user mistake (bad config, no board on the port, busy port, no permission, camera not found, no
answer to the handshake) is one line and a non-zero exit, as everywhere in the CLI.

``--sim`` (:mod:`rig.simulate`) checks the simulated rig: the real firmware in simavr, whose trigger
pin (D9) clocks synthetic cameras (one frame per rising edge, as a cable to each camera's trigger
input), and the simulated apparatus (:class:`rig.sim.world.World`) that puts a dispensed pellet in
front of the IR sensor.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zmq

from rig import messages as m
from rig.bus import Publisher
from rig.cameras.base import CameraBackend, make_backend
from rig.cameras.sync import TriggerMapper
from rig.clock import ClockFit, TriggerModel
from rig.config import ArduinoConfig, CameraConfig, LoadedConfig, SimulationConfig, load_config
from rig.errors import AcquisitionTimeout, DeviceError, RigError, StorageError, UserError
from rig.firmware_commands import check_port, find_board
from rig.firmware_sim import DEFAULT_ELF, PIN_TRIGGER, FirmwareSim
from rig.messages import SerialEvent
from rig.nodes.arduino import LOOPBACK_WIRE
from rig.protocol import PROTOCOL_VERSION, Cmd
from rig.serial_link import FirmwareVersionError, SerialLink, link_from_config
from rig.sim.world import World

E = TypeVar("E", bound=SerialEvent)
log = logging.getLogger(__name__)

DEFAULT_SECONDS = 3.0
PINGS = 20
MAX_RATE_ERROR = 1e-3  # measured trigger rate vs rig.trigger.rate_hz (Timer1 quantises by < 61 ppm)
MAX_REPORT_RESIDUAL_US = 100.0  # a TRIGGER report this far from Timer1's periodic model: irregular pulses
GRACE_S = 0.5  # after the last pulse, how long the last frames may take to arrive
IR_WAIT_S = 2.0  # after DISPENSE_DONE, how long the pellet may take to reach the IR beam
LOOPBACK_NOT_DECLARED = (
    "rig.arduino.loopback is false: no jumper from the closed-loop TTL (D6) to the loopback input (D12) is "
    "declared; wire one and set it to true to time the output"
)
LOOPBACK_PULSES = 5
FRAME_CLOCK_S = 2.0  # how long the frame-clock check listens on D8
FRAME_CLOCK_MIN_EDGES = 3
LOOPBACK_MAX_US = (
    50.0  # TTL_FIRED's time vs the edge on D12: micros()' 4 us steps and the interrupt's own time
)
LOOPBACK_WIDTH_SHORT_US = 8.0  # a pulse on D12 this much shorter than configured: a bad jumper or output
LOOPBACK_WIDTH_LONG_US = 300.0  # the end is timed in loop(): late by up to the frame being written


@dataclass
class CheckResult:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str
    values: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.status:4s}  {self.name:14s} {self.detail}"


def _pass_fail(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# ----------------------------------------------------------------------------- the board
class Board:
    """The open link to the firmware and every event it sent during the check. In simulation it also
    plays the apparatus: a dispensed pellet lands on the platform, in the IR sensor's beam."""

    def __init__(self, link: SerialLink, sim: FirmwareSim | None) -> None:
        self.link = link
        self.sim = sim
        self.world = World(SimulationConfig()) if sim is not None else None
        self.ir_level: bool | None = None
        self.events: list[SerialEvent] = []

    def poll(self) -> None:
        for ev in self.link.poll():
            self.events.append(ev)
            if self.world is not None and isinstance(ev, m.DispenseDoneEvent):
                self.world.load_pellet(0.0)
        if self.sim is not None and self.world is not None:  # the beam sees a pellet on the platform
            beam = self.world.ir_beam_blocked()
            if beam != self.ir_level:
                self.ir_level = beam
                self.sim.set_ir(beam)

    def wait(
        self, kind: type[E], timeout_s: float, since: int, pred: Callable[[E], bool] = lambda e: True
    ) -> E | None:
        """The first ``kind`` event from ``self.events[since:]`` on that satisfies ``pred``; polls the link
        until one arrives or ``timeout_s`` passes (None)."""
        deadline = time.monotonic() + timeout_s
        while True:
            for ev in self.events[since:]:
                if isinstance(ev, kind) and pred(ev):
                    return ev
            since = len(self.events)
            if time.monotonic() >= deadline:
                return None
            self.poll()


@contextmanager
def open_board(cfg: ArduinoConfig) -> Iterator[tuple[SerialLink, FirmwareSim | None]]:
    """Open the link (and start the simulator for ``backend: simulator``); the handshake is done here, so a
    firmware of another version raises :class:`FirmwareVersionError`. Every other failure to reach the
    board is a one-line :class:`DeviceError`. The firmware's watchdog stays off: the check talks to the
    board between steps only (a camera may take seconds to open), and leaves it safe itself (trigger
    stopped after its pulses, platform down, outputs low)."""
    sim: FirmwareSim | None = None
    if cfg.backend == "simulator":
        sim = FirmwareSim(elf=cfg.simulator.elf or DEFAULT_ELF, realtime=cfg.simulator.realtime)
        link = link_from_config(cfg, port=sim.pty_path)
        threading.Timer(0.2, sim.release).start()  # the AVR starts once the port is open
    else:
        port = find_board(cfg.port, cfg.serial_number)
        check_port(port)
        link = link_from_config(cfg, port=port)
    link.watchdog_ms = 0
    try:
        try:
            link.open()
        except FirmwareVersionError:
            raise
        except DeviceError as exc:
            raise DeviceError(
                f"{exc}; flash the rig firmware with `deepbehavior firmware flash --port {link.port}`"
            ) from None
        yield link, sim
    finally:
        link.close()
        if sim is not None:
            sim.stop()


def check_board(link: SerialLink) -> CheckResult:
    """Version (already agreed in the handshake) and ``PINGS`` round trips."""
    rtt_ms = []
    for _ in range(PINGS):
        t0 = time.monotonic_ns()
        link.command(Cmd.PING)
        rtt_ms.append((time.monotonic_ns() - t0) / 1e6)
    status = link.status()
    med, worst = float(np.median(rtt_ms)), float(max(rtt_ms))
    ok = link.firmware_version == PROTOCOL_VERSION
    return CheckResult(
        "board",
        _pass_fail(ok),
        f"firmware protocol v{link.firmware_version} (this host speaks v{PROTOCOL_VERSION}) on "
        f"{link.port}; ping round trip median {med:.2f} ms, max {worst:.2f} ms ({PINGS} pings)",
        {
            "firmware_version": link.firmware_version,
            "host_version": PROTOCOL_VERSION,
            "port": link.port,
            "rtt_ms": {"median": round(med, 3), "max": round(worst, 3)},
            "status": status,
        },
    )


# ----------------------------------------------------------------------------- trigger and cameras
@dataclass
class Frame:
    frame_id: int
    trigger_index: int  # from the backend (it sees the trigger) or the frame-id mapping, -1 if unknown
    t_host_ns: int
    t_device_ns: int
    lost_before: int


class CameraGrabber:
    """One camera's grab loop on a thread: every frame's ids and times, until :meth:`stop`."""

    def __init__(self, name: str, cam: CameraBackend, period_ns: int) -> None:
        self.name = name
        self.cam = cam
        self.mapper = TriggerMapper(name, period_ns)
        self.frames: list[Frame] = []
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"check-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                f = self.cam.grab(0.1)
            except AcquisitionTimeout:
                continue
            except RigError as exc:
                self.error = str(exc)
                return
            index = f.trigger_index
            if index < 0:  # a real camera: its frame id (and clock) says which pulse it answered
                t = f.t_device_ns if f.t_device_ns > 0 else f.t_host_ns
                index = self.mapper.map(f.frame_id, t).trigger_index
            self.frames.append(Frame(f.frame_id, index, f.t_host_ns, f.t_device_ns, f.lost_before))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def camera_result(name: str, frames: list[Frame], pulses: int, error: str = "") -> CheckResult:
    """Frames against pulses: every pulse 0 .. pulses - 1 answered by one frame, no frame-id gap."""
    ids = [f.frame_id for f in frames]
    gaps = sum(max(f.lost_before, b - a - 1) for f, a, b in zip(frames[1:], ids[:-1], ids[1:], strict=True))
    indices = [f.trigger_index for f in frames]
    unexpected = sorted({i for i in indices if not 0 <= i < pulses})
    duplicates = len(indices) - len(set(indices))
    missing = pulses - len(set(indices) - set(unexpected))
    t = [f.t_host_ns for f in frames]
    fps = (len(t) - 1) / ((t[-1] - t[0]) / 1e9) if len(t) > 1 and t[-1] > t[0] else 0.0
    values = {
        "pulses": pulses,
        "frames": len(frames),
        "frame_id_gaps": gaps,
        "missing_pulses": missing,
        "duplicate_indices": duplicates,
        "unexpected_indices": unexpected[:10],
        "fps_host": round(fps, 2),
    }
    problems = []
    if error:
        problems.append(error)
    if missing:
        problems.append(f"{missing} pulses gave no frame")
    if gaps:
        problems.append(f"{gaps} frames lost (frame-id gaps)")
    if duplicates:
        problems.append(f"{duplicates} trigger indices twice")
    if unexpected:
        problems.append(f"frames for pulses never fired ({unexpected[:3]}...: free-running camera?)")
    head = f"{len(frames)} frames for {pulses} pulses, {gaps} frame-id gaps, {fps:.1f} fps on arrival"
    if problems:
        hint = " (bandwidth, exposure + read-out longer than the period, trigger cabling?)"
        return CheckResult(f"camera {name}", "FAIL", f"{head}: {'; '.join(problems)}{hint}", values)
    return CheckResult(f"camera {name}", "PASS", f"{head}; trigger indices 0..{pulses - 1}", values)


def cameras_result(frames: dict[str, list[Frame]], pulses: int, period_ns: int) -> CheckResult:
    """Trigger index agreement across cameras (every pulse on every camera) and the arrival skew."""
    by_index = {n: {f.trigger_index: f.t_host_ns for f in fr} for n, fr in frames.items()}
    fired = set(range(pulses))
    common = set.intersection(*(set(d) for d in by_index.values())) & fired
    names = sorted(by_index)
    skews = [
        abs(by_index[a][i] - by_index[b][i]) / 1e6
        for i in common
        for k, a in enumerate(names)
        for b in names[k + 1 :]
    ]
    med = float(np.median(skews)) if skews else 0.0
    worst = float(max(skews)) if skews else 0.0
    values = {"pulses": pulses, "on_every_camera": len(common), "skew_ms": {"median": med, "max": worst}}
    detail = (
        f"{len(common)} of {pulses} pulses have a frame on every camera ({', '.join(names)}); host "
        f"arrival skew median {med:.2f} ms, max {worst:.2f} ms"
    )
    # the arrival skew includes host scheduling: only its median must stay within half a period
    ok = len(common) == pulses and med <= 0.5 * period_ns / 1e6
    return CheckResult("cameras", _pass_fail(ok), detail, values)


class SimTriggerCable:
    """Simulation: the cable from the trigger pin (D9) to every camera. Each rising edge of the simulated
    firmware's pin publishes one ``sim.truth`` (a still scene: paw at rest, pellet on the platform),
    which every synthetic camera renders as one frame."""

    ENDPOINT = "inproc://rig-check-trigger"

    def __init__(self, sim: FirmwareSim, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        from rig.sim.scene import PAW_RADIUS_MM, PAW_REST, PELLET

        self.paw = (float(PAW_REST[0]), float(PAW_REST[1]), float(PAW_REST[2]))
        self.pellet = (float(PELLET[0]), float(PELLET[1]), float(PELLET[2]))
        self.radius = PAW_RADIUS_MM
        self.pub = Publisher(ctx, self.ENDPOINT)
        self.edges = sim.subscribe(PIN_TRIGGER)
        self.rises = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="check-trigger-cable", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                edge = self.edges.get(timeout=0.1)
            except queue.Empty:
                continue
            if not edge.level:
                continue
            truth = m.Truth(
                trigger_index=self.rises,
                t_trigger_ns=edge.t_host_ns,
                paw_xyz=self.paw,
                paw_radius_mm=self.radius,
                pellet_xyz=self.pellet,
                pellet_present=True,
                platform_up=True,
                trial=0,
                phase="rest",
            )
            self.pub.publish("sim.truth", truth)
            self.rises += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.pub.close()


def check_trigger(
    board: Board, loaded: LoadedConfig, seconds: float, camera_context: dict[str, Any]
) -> list[CheckResult]:
    """Arm the hardware-triggered cameras, run ``seconds`` of trigger pulses, compare."""
    cfg = loaded.config
    rate = cfg.rig.trigger.rate_hz
    period_ns = round(1e9 / rate)
    triggered = {n: c for n, c in cfg.rig.cameras.items() if c.hardware_trigger}
    skipped = [
        CheckResult(
            f"camera {n}",
            "SKIP",
            "not hardware-triggered (hardware_trigger: false): it runs on its own clock, so frames "
            "cannot be matched to pulses; `deepbehavior cameras check` measures its rate and gaps",
        )
        for n, c in cfg.rig.cameras.items()
        if not c.hardware_trigger
    ]
    pulses = max(2, round(rate * seconds))
    grabbers: dict[str, CameraGrabber] = {}
    with ExitStack() as stack:
        for name, ccfg in triggered.items():
            grabbers[name] = CameraGrabber(
                name, _open_camera(stack, name, ccfg, rate, camera_context), period_ns
            )
        for g in grabbers.values():
            g.start()
            stack.callback(g.stop)  # the grab loops end before their cameras stop
        time.sleep(0.2)  # the cameras are armed (and, simulated, subscribed) before the first pulse
        since = len(board.events)
        try:
            ack = board.link.command(
                Cmd.TRIGGER_START, rate_uhz=round(rate * 1e6), max_pulses=pulses, report_every=1
            )
        except DeviceError as exc:
            return [CheckResult("trigger", "FAIL", str(exc)), *skipped]
        stopped = board.wait(m.TriggerStoppedEvent, pulses / rate + 3.0, since)
        time.sleep(GRACE_S)
        board.poll()
    results = [trigger_result(board.events[since:], ack.values, rate, pulses, stopped)]
    fired = stopped.count if stopped is not None else pulses
    for name, g in grabbers.items():
        results.append(camera_result(name, g.frames, fired, g.error))
    if len(grabbers) > 1:
        results.append(cameras_result({n: g.frames for n, g in grabbers.items()}, fired, period_ns))
    return results + skipped


def _open_camera(
    stack: ExitStack, name: str, ccfg: CameraConfig, rate: float, context: dict[str, Any]
) -> CameraBackend:
    cam = make_backend(name, ccfg, {**context, "trigger_rate_hz": rate})
    cam.open()
    stack.callback(cam.close)
    cam.configure()
    cam.start()
    stack.callback(cam.stop)
    return cam


def trigger_result(
    events: list[SerialEvent],
    ack: dict[str, Any],
    rate: float,
    pulses: int,
    stopped: m.TriggerStoppedEvent | None,
) -> CheckResult:
    """The trigger run from its events: count, every report present, the rate on the firmware clock, each
    report against Timer1's periodic model, the firmware clock's drift against the host's."""
    reports = [e for e in events if isinstance(e, m.TriggerEvent)]
    lost = sum(e.lost for e in events if isinstance(e, m.GapEvent))
    model = TriggerModel(int(ack["prescaler"]), int(ack["top"]), int(ack["achieved_uhz"]), 1)
    fit = ClockFit()
    for e in reports:
        model.add_report(e.index, e.t_fw_us)
        fit.add(e.t_fw_us, e.t_recv_ns if e.t_recv_ns is not None else e.t_host_ns)
    residual = max((abs(e.t_fw_us - model.t_fw_us(e.index)) for e in reports), default=0)
    indices = [e.index for e in reports]
    measured = 0.0
    if len(reports) > 1 and reports[-1].t_fw_us > reports[0].t_fw_us:
        measured = (indices[-1] - indices[0]) / ((reports[-1].t_fw_us - reports[0].t_fw_us) / 1e6)
    error = measured / rate - 1.0
    line = fit.line()
    drift = round(line.drift_ppm, 1) if line is not None and fit.summary().get("drift_fitted") else None
    count = stopped.count if stopped is not None else None
    values = {
        "config_hz": rate,
        "achieved_hz": int(ack["achieved_uhz"]) / 1e6,
        "measured_hz_fw_clock": round(measured, 6),
        "error_ppm": round(error * 1e6, 1),
        "pulses_requested": pulses,
        "pulses_fired": count,
        "reports": len(reports),
        "frames_lost_on_serial": lost,
        "max_report_residual_us": residual,
        "fw_clock_drift_vs_host_ppm": drift,
    }
    problems = []
    if count != pulses:
        problems.append(f"TRIGGER_STOPPED {'never came' if count is None else f'says {count}'}")
    if indices != list(range(pulses)):
        problems.append(f"{pulses - len(set(indices))} TRIGGER reports missing ({lost} frames lost)")
    if abs(error) > MAX_RATE_ERROR:
        problems.append(f"rate off by {error * 1e6:+.0f} ppm (limit {MAX_RATE_ERROR * 1e6:.0f})")
    if residual > MAX_REPORT_RESIDUAL_US:
        problems.append(f"a pulse {residual} us off Timer1's period (limit {MAX_REPORT_RESIDUAL_US:g} us)")
    detail = (
        f"{count} pulses at {measured:.4f} Hz on the firmware clock (config {rate:g} Hz, "
        f"{error * 1e6:+.1f} ppm); every TRIGGER report within {residual} us of Timer1's period"
        + (f"; firmware clock {drift:+.1f} ppm vs the host" if drift is not None else "")
    )
    return CheckResult(
        "trigger", _pass_fail(not problems), detail + (": " + "; ".join(problems) if problems else ""), values
    )


# ----------------------------------------------------------------------------- pellet apparatus
Ask = Callable[[str], bool] | None


def check_pellet(board: Board, arduino: ArduinoConfig, ask: Ask) -> list[CheckResult]:
    """Platform down, one pellet, platform up (the pellet presented), platform down again."""
    servo, stepper = arduino.servo, arduino.stepper
    travel_s = abs(servo.up_us - servo.down_us) / servo.speed_us_per_s if servo.speed_us_per_s else 0.0
    ir_before = bool(board.link.status()["pellet_present"])

    def move(up: bool) -> m.ServoDoneEvent | None:
        width = servo.up_us if up else servo.down_us
        since = len(board.events)
        board.link.command(Cmd.PLATFORM, up=int(up))
        return board.wait(m.ServoDoneEvent, travel_s + 1.5, since, lambda e: e.position_us == width)

    moves = [move(False)]
    since = len(board.events)
    board.link.command(Cmd.DISPENSE, pellets=1)
    done = board.wait(m.DispenseDoneEvent, stepper.steps_per_pellet / stepper.step_rate_hz + 2.0, since)
    seen = board.wait(m.IrEvent, IR_WAIT_S, since, lambda e: e.pellet_present == 1)
    moves += [move(True), move(False)]

    servo_ok = all(mv is not None for mv in moves)
    detail = f"down {servo.down_us} us, up {servo.up_us} us, down again: SERVO_DONE " + (
        "for each" if servo_ok else f"missing for {sum(mv is None for mv in moves)} of 3 moves"
    )
    if servo_ok and ask is not None:
        servo_ok = ask("Did the platform go down, up and down again?")
        detail += "; operator: " + ("saw it move" if servo_ok else "did NOT see it move (servo power, D5?)")
    results = [CheckResult("platform", _pass_fail(servo_ok), detail, {"moves_done": moves.count(None) == 0})]

    steps = done.steps if done is not None else None
    stepped = steps == stepper.steps_per_pellet
    ir_values = {"before": ir_before, "seen_after_dispense": seen is not None}
    landed: bool | None = True if seen is not None else None
    if seen is None and stepped and ask is not None:
        landed = ask("The IR sensor saw no pellet. Did a pellet land on the platform?")
    detail = f"DISPENSE_DONE {steps} steps (configured {stepper.steps_per_pellet})"
    if landed is False:
        detail += "; operator: no pellet landed (pellet cylinder empty? stepper driver, D3/D4?)"
    results.append(
        CheckResult("dispense", _pass_fail(stepped and landed is not False), detail, {"steps": steps})
    )

    if ir_before:
        results.append(
            CheckResult(
                "ir sensor",
                "FAIL",
                "saw a pellet before one was dispensed: clear the platform, or the beam is blocked or "
                "misaligned (D2 reads HIGH for 'pellet present')",
                ir_values,
            )
        )
    elif seen is not None:
        dt_ms = (seen.t_fw_us - done.t_fw_us) / 1e3 if done is not None else float("nan")
        results.append(
            CheckResult(
                "ir sensor",
                "PASS",
                f"no pellet before; pellet seen {dt_ms:.0f} ms after DISPENSE_DONE (IR event)",
                ir_values,
            )
        )
    elif landed is False:
        results.append(CheckResult("ir sensor", "SKIP", "no pellet landed, so nothing to see", ir_values))
    else:
        why = "the operator saw one land" if landed else "nobody confirmed one landed (--yes)"
        results.append(
            CheckResult(
                "ir sensor",
                "FAIL",
                f"no IR event within {IR_WAIT_S:g} s of dispensing ({why}): emitter/receiver alignment, "
                "wiring to D2",
                ir_values,
            )
        )
    return results


# ----------------------------------------------------------------------------- outputs
def _sync_at(level: int, e: m.SyncEvent) -> bool:
    return e.level == level


def _fired_by(seq: int, e: m.TtlFiredEvent) -> bool:
    return e.cmd_seq == seq


def check_ttl(board: Board, arduino: ArduinoConfig) -> CheckResult:
    since = len(board.events)
    t0 = time.monotonic_ns()
    seq = board.link.send(Cmd.TTL_PULSE, width_us=0)
    fired = board.wait(m.TtlFiredEvent, 2.0, since, lambda e: e.cmd_seq == seq)
    want = arduino.ttl.closed_loop_width_us
    if fired is None:
        return CheckResult("ttl", "FAIL", "no TTL_FIRED for TTL_PULSE within 2 s")
    width = fired.width_us
    host_ms = ((fired.t_recv_ns or fired.t_host_ns) - t0) / 1e6
    return CheckResult(
        "ttl",
        _pass_fail(width == want),
        f"closed-loop TTL (D6) fired, {width} us wide (configured {want} us); command -> TTL_FIRED back "
        f"on the host {host_ms:.2f} ms",
        {"width_us": width, "configured_us": want, "host_round_trip_ms": round(host_ms, 3)},
    )


def check_sync(board: Board, arduino: ArduinoConfig) -> CheckResult:
    """Drive the sync output (D7) high then low; in ``sync: trigger`` mode switch to level mode for it."""
    cfg = arduino.firmware_config()
    trigger_mode = cfg["sync_div"] != 0
    if trigger_mode:
        board.link.configure(**{**cfg, "sync_div": 0})
    try:
        levels = []
        for level in (1, 0):
            since = len(board.events)
            board.link.command(Cmd.SYNC_LEVEL, level=level)
            ev = board.wait(m.SyncEvent, 2.0, since, partial(_sync_at, level))
            levels.append(ev is not None)
        board.link.command(Cmd.SYNC_PULSE, width_us=arduino.ttl.mark_width_us)
    finally:
        if trigger_mode:
            board.link.configure(**cfg)
    detail = (
        f"D7 set high then low ({sum(levels)} of 2 SYNC events) and a {arduino.ttl.mark_width_us} us mark"
    )
    if trigger_mode:
        detail += (
            f"; in use it makes one pulse per {cfg['sync_div']} camera trigger(s), which the firmware does "
            "not report: check that the imaging system records them"
        )
    return CheckResult("sync", _pass_fail(all(levels)), detail, {"sync_events": sum(levels)})


def fit_jumper(sim: FirmwareSim) -> None:
    """In simulation, the lab's jumper from the closed-loop TTL (D6) to the loopback input (D12)."""
    sim.command(LOOPBACK_WIRE)


def check_loopback(board: Board, arduino: ArduinoConfig) -> CheckResult:
    """Pulse the closed-loop TTL and time it on the loopback input (see the module's docstring)."""
    if not arduino.loopback:
        return CheckResult("loopback", "SKIP", LOOPBACK_NOT_DECLARED)
    board.link.command(Cmd.INPUTS, frame_clock=int(arduino.frame_clock), loopback=1)
    if board.sim is not None:
        fit_jumper(board.sim)
    want = arduino.ttl.closed_loop_width_us
    latencies: list[float] = []
    widths: list[float] = []
    host_ms: list[float] = []
    for _ in range(LOOPBACK_PULSES):
        since = len(board.events)
        t_send = time.monotonic_ns()
        seq = board.link.send(Cmd.TTL_PULSE, width_us=0)
        fired = board.wait(m.TtlFiredEvent, 2.0, since, partial(_fired_by, seq))
        rise = board.wait(m.LoopbackEvent, 2.0, since, lambda e: e.level == 1)
        fall = board.wait(m.LoopbackEvent, 2.0 + want / 1e6, since, lambda e: e.level == 0)
        if fired is None or rise is None or fall is None:
            missing = (
                "no TTL_FIRED" if fired is None else "no rising edge" if rise is None else "no falling edge"
            )
            return CheckResult(
                "loopback",
                "FAIL",
                f"{missing} on D12 within 2 s of a TTL pulse: is the jumper from D6 to D12 in place "
                "(and nothing else driving D12)?",
                {"pulses_timed": len(latencies)},
            )
        latencies.append(float(rise.t_fw_us - fired.t_fw_us))
        widths.append(float(fall.t_fw_us - rise.t_fw_us))
        if board.link.clock.ready:
            host_ms.append((board.link.clock.to_host_ns(rise.t_fw_us) - t_send) / 1e6)
        time.sleep(0.02)
    worst = max(latencies, key=abs)
    ok_latency = abs(worst) <= LOOPBACK_MAX_US
    ok_width = all(want - LOOPBACK_WIDTH_SHORT_US <= w <= want + LOOPBACK_WIDTH_LONG_US for w in widths)
    detail = (
        f"{len(latencies)} TTL pulses seen on D12: edge - TTL_FIRED time median "
        f"{np.median(latencies):+.0f} us, worst {worst:+.0f} us (bound +-{LOOPBACK_MAX_US:.0f} us, firmware "
        f"clock); width {min(widths):.0f}"
        f"-{max(widths):.0f} us (configured {want} us, allowed -{LOOPBACK_WIDTH_SHORT_US:.0f}/"
        f"+{LOOPBACK_WIDTH_LONG_US:.0f} us)"
    )
    if host_ms:
        detail += f"; host command -> pin median {np.median(host_ms):.2f} ms"
    if not ok_latency:
        detail += (
            ": the output edge is not where the firmware's TTL_FIRED says (a slow driver or opto-coupler?)"
        )
    elif not ok_width:
        detail += ": the pulse on D12 has the wrong width (a loose jumper, or another device driving D12?)"
    values = {
        "pulses": len(latencies),
        "edge_minus_fired_us": latencies,
        "width_us": widths,
        "configured_width_us": want,
        "bound_us": LOOPBACK_MAX_US,
        "host_command_to_pin_ms": [round(h, 3) for h in host_ms],
    }
    return CheckResult("loopback", _pass_fail(ok_latency and ok_width), detail, values)


def check_frame_clock(board: Board, arduino: ArduinoConfig) -> CheckResult:
    """Listen on D8 for the imaging system's frame clock (see the module's docstring)."""
    if not arduino.frame_clock:
        return CheckResult(
            "frame clock", "SKIP", "rig.arduino.frame_clock is false: no imaging frame clock declared on D8"
        )
    board.link.command(Cmd.INPUTS, **arduino.inputs_command())
    if board.sim is not None and arduino.simulator.imaging_clock is not None:
        board.sim.command(arduino.simulator.imaging_clock.harness_command())
    since = len(board.events)
    deadline = time.monotonic() + FRAME_CLOCK_S
    while time.monotonic() < deadline:
        board.poll()
    edges = [e for e in board.events[since:] if isinstance(e, m.FrameClockEvent)]
    return frame_clock_result(edges)


def frame_clock_result(edges: list[m.FrameClockEvent]) -> CheckResult:
    """The frame clock from its FRAME_CLOCK events: edges seen, counter continuity, rate on the firmware
    clock, intervals over 1.5 periods."""
    if len(edges) < FRAME_CLOCK_MIN_EDGES:
        return CheckResult(
            "frame clock",
            "FAIL",
            f"{len(edges)} rising edge(s) on D8 in {FRAME_CLOCK_S:g} s: is the imaging system acquiring, "
            "and its frame-out (TTL, 5 V or 3.3 V) wired to D8 with a common ground?",
            {"edges": len(edges)},
        )
    counts = np.array([e.count for e in edges])
    t_us = np.array([e.t_fw_us for e in edges], dtype=float)
    skipped = int(np.sum(np.diff(counts) != 1))
    dt = np.diff(t_us)
    period = float(np.median(dt))
    rate = (counts[-1] - counts[0]) / ((t_us[-1] - t_us[0]) / 1e6) if t_us[-1] > t_us[0] else 0.0
    long_gaps = int(np.sum(dt > 1.5 * period))
    ok = skipped == 0 and rate > 0
    detail = (
        f"{len(edges)} edges on D8 in {FRAME_CLOCK_S:g} s: {rate:.3f} Hz on the firmware clock, period "
        f"median {period / 1000:.3f} ms, p99 deviation {np.percentile(np.abs(dt - period), 99):.0f} us"
    )
    if long_gaps:
        detail += f"; {long_gaps} interval(s) over 1.5 periods (frames the imaging system did not signal?)"
    if skipped:
        detail += f": the firmware's edge counter jumped {skipped} time(s) (events lost on the way)"
    values = {"edges": len(edges), "rate_hz": round(rate, 6), "period_us": period, "long_gaps": long_gaps}
    return CheckResult("frame clock", _pass_fail(ok), detail, values)


# ----------------------------------------------------------------------------- the whole check
def _skip_all(names: list[str], reason: str) -> list[CheckResult]:
    return [CheckResult(n, "SKIP", reason) for n in names]


def _guarded(name: str, run: Callable[[], list[CheckResult]]) -> list[CheckResult]:
    """``run()``, or one FAIL line for ``name`` when the board refused a command or stopped answering."""
    try:
        return run()
    except DeviceError as exc:
        return [CheckResult(name, "FAIL", str(exc))]


BOARD_CHECKS = ["trigger", "platform", "dispense", "ir sensor", "ttl", "sync"]


def run_checks(
    loaded: LoadedConfig, seconds: float, ask: Ask, emit: Callable[[CheckResult], None]
) -> list[CheckResult]:
    """Every check in order; ``emit`` is called with each result as soon as it is known."""
    cfg = loaded.config
    arduino = cfg.rig.arduino
    out: list[CheckResult] = []

    def add(results: list[CheckResult]) -> None:
        for r in results:
            out.append(r)
            emit(r)

    if arduino is None:
        add([CheckResult("board", "SKIP", "no rig.arduino in the config: nothing to check on a board")])
        add(check_cameras_without_board(loaded))
        add(_skip_all(BOARD_CHECKS[1:], "no rig.arduino in the config"))
        add(_skip_all(["loopback", "frame clock"], "no rig.arduino in the config"))
        return out
    with ExitStack() as stack:
        try:
            link, sim = stack.enter_context(open_board(arduino))
        except FirmwareVersionError as exc:
            add([CheckResult("board", "FAIL", str(exc))])
            add(
                _skip_all(
                    ["trigger", "cameras", *BOARD_CHECKS[1:], "loopback", "frame clock"],
                    "the board failed its check",
                )
            )
            return out
        board = Board(link, sim)
        add([check_board(link)])
        link.configure(**arduino.firmware_config())
        link.command(Cmd.REDELIVERY, enable=0)  # the firmware's own pellet cycle stays out of the way
        context = stack.enter_context(_camera_context(loaded, sim))
        if cfg.rig.trigger.source == "firmware":
            add(check_trigger(board, loaded, seconds, context))
        else:
            add(
                [CheckResult("trigger", "SKIP", "rig.trigger.source is internal: the board triggers nothing")]
            )
        if cfg.experiment.task == "reaching":
            add(_guarded("platform", lambda: check_pellet(board, arduino, ask)))
        else:
            reason = f"experiment.task is {cfg.experiment.task!r}: the pellet apparatus is not used"
            add(_skip_all(["platform", "dispense", "ir sensor"], reason))
        add(_guarded("ttl", lambda: [check_ttl(board, arduino)]))
        add(_guarded("sync", lambda: [check_sync(board, arduino)]))
        add(_guarded("loopback", lambda: [check_loopback(board, arduino)]))
        add(_guarded("frame clock", lambda: [check_frame_clock(board, arduino)]))
        if board.link.stats.lost:
            add(
                [
                    CheckResult(
                        "serial", "FAIL", f"{board.link.stats.lost} firmware frames lost during the check"
                    )
                ]
            )
    return out


def check_cameras_without_board(loaded: LoadedConfig) -> list[CheckResult]:
    return [
        CheckResult(
            f"camera {n}",
            "SKIP",
            "no board makes a trigger on this rig"
            + (
                ""
                if c.hardware_trigger
                else " and the camera runs on its own clock (hardware_trigger: false)"
            )
            + ": `deepbehavior cameras check` measures its rate and gaps",
        )
        for n, c in loaded.config.rig.cameras.items()
    ]


@contextmanager
def _camera_context(loaded: LoadedConfig, sim: FirmwareSim | None) -> Iterator[dict[str, Any]]:
    """What the camera backends need: nothing for real cameras; for synthetic ones the simulated trigger
    cable from the firmware's D9, the calibration and the scene settings."""
    if not any(c.backend == "synthetic" for c in loaded.config.rig.cameras.values()):
        yield {}
        return
    if sim is None:
        raise DeviceError(
            "synthetic cameras need the simulated board (rig.arduino.backend: simulator, or --sim)"
        )
    from rig.session_folder import resolve_calibration

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    cable = SimTriggerCable(sim, ctx)
    try:
        yield {
            "zmq_context": ctx,
            "truth_endpoint": cable.ENDPOINT,
            "calibration": resolve_calibration(loaded),
            "simulation": loaded.config.simulation or SimulationConfig(),
        }
    finally:
        cable.close()
        ctx.term()


# ----------------------------------------------------------------------------- CLI
def _ask_operator(question: str) -> bool:
    while True:
        try:
            answer = input(f"  ? {question} [y/n] ").strip().lower()
        except EOFError:
            raise UserError(
                "no answer from the operator (end of input): run with --yes to let the "
                "firmware's and the IR sensor's events decide"
            ) from None
        if answer in ("y", "yes", "n", "no"):
            return answer.startswith("y")


def default_report_path(loaded: LoadedConfig, started: datetime) -> Path:
    """``<session.output_dir>/rig-checks/<rig name>_<YYYYMMDD>_<HHMMSS>.json``, beside the sessions."""
    out = Path(loaded.config.session.output_dir).expanduser()
    return out / "rig-checks" / f"{loaded.config.rig.name}_{started:%Y%m%d_%H%M%S}.json"


def write_report(path: Path, report: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    except OSError as exc:
        raise StorageError(f"cannot write the rig check report {path}: {exc.strerror}") from None


def cmd_rig_check(args: argparse.Namespace) -> int:
    from rig.provenance import git_revision
    from rig.simulate import sim_overrides

    if args.seconds <= 0:
        raise UserError(f"--seconds {args.seconds:g}: must be > 0")
    over, sim_note = sim_overrides(args.config, {}) if args.sim else ({}, "")
    loaded = load_config(args.config, over)
    interactive = not args.yes and sys.stdin.isatty()
    started = datetime.now(UTC)
    report_path = Path(args.report) if args.report else default_report_path(loaded, started)
    header = [f"rig check: {loaded.source}" + (f" ({sim_note})" if sim_note else "")]
    if not interactive:
        header.append("  operator questions skipped (--yes or no terminal): firmware and IR events decide")

    def emit(result: CheckResult) -> None:
        if header:  # printed with the first result: a mistake found before it is the only line
            print("\n".join(header), flush=True)
            header.clear()
        print(result.line(), flush=True)

    results = run_checks(loaded, args.seconds, _ask_operator if interactive else None, emit)
    failed = [r.name for r in results if r.status == "FAIL"]
    write_report(
        report_path,
        {
            "config": loaded.source,
            "rig": loaded.config.rig.name,
            "sim": bool(args.sim),
            "started": started.isoformat(),
            "host": platform.node(),
            "git_revision": git_revision(),
            "protocol_version": PROTOCOL_VERSION,
            "interactive": interactive,
            "seconds": args.seconds,
            "passed": not failed,
            "checks": [asdict(r) for r in results],
        },
    )
    n_pass = sum(r.status == "PASS" for r in results)
    n_skip = sum(r.status == "SKIP" for r in results)
    verdict = f"FAIL: {', '.join(failed)}" if failed else "PASS: nothing failed"
    print(f"{verdict} ({n_pass} passed, {len(failed)} failed, {n_skip} skipped); report {report_path}")
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    r = sub.add_parser("rig", help="bring-up of a real rig: the hardware self-test")
    r_sub = r.add_subparsers(dest="rig_command", metavar="ACTION", required=True)
    c = r_sub.add_parser(
        "check",
        help="guided hardware self-test: board, trigger and cameras, pellet apparatus, TTL and sync outputs, "
        "TTL loopback latency",
        description="Check a rig before its first animal: the board's handshake and round trip; the camera "
        "trigger's rate on the firmware's clock and, per camera, frames against pulses, frame-id gaps and "
        "trigger index agreement; the platform servo, one pellet dispensed and the IR sensor; the TTL and "
        "sync outputs; with rig.arduino.loopback (a jumper D6 -> D12) the TTL's latency and width on the "
        "firmware clock. One PASS/FAIL/SKIP line per check, a JSON report, exit 1 on any FAIL.",
    )
    c.add_argument("config", help="the rig's config file")
    c.add_argument("--sim", action="store_true", help="check the simulated rig (synthetic cameras, simavr)")
    c.add_argument(
        "--yes", action="store_true", help="ask the operator nothing: the firmware's events decide"
    )
    c.add_argument(
        "--report",
        help="report file (JSON); default <session.output_dir>/rig-checks/<rig>_<date>_<time>.json",
    )
    c.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="trigger run length (default 3 s)")
    c.set_defaults(func=cmd_rig_check)
