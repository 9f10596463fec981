"""Run the real rig firmware ELF in simavr (``firmware/build/rig_sim``) and talk to its pins.

Typical use (tests, the simulated rig)::

    with FirmwareSim() as sim:          # builds nothing; run ``make -C firmware all`` first
        link = SerialLink(sim.pty_path) # open the port first ...
        sim.release()                   # ... then let the AVR run (pyserial flushes input on open)
        sim.set_ir(True)
        edges = sim.edges("D9")         # PinEdge list of the camera-trigger pin

Pin edges arrive on the harness's stdout as ``E <pin> <level> <cycle>``; a reader thread collects them.
Times are AVR cycles at 16 MHz (``cycle / 16`` = microseconds since reset), the same clock as the
firmware's ``micros()`` up to the 4 us resolution of ``micros()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rig.errors import DeviceError

if TYPE_CHECKING:
    from rig.config import ArduinoConfig
    from rig.serial_link import SerialLink

log = logging.getLogger(__name__)

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"
DEFAULT_ELF = FIRMWARE_DIR / "build" / "rig_firmware.elf"
DEFAULT_HARNESS = FIRMWARE_DIR / "build" / "rig_sim"
F_CPU_HZ = 16_000_000

# Arduino pin names of the firmware's wiring (see firmware/PROTOCOL.md).
PIN_TRIGGER = "D9"
PIN_SERVO = "D5"
PIN_STEP = "D3"
PIN_DIR = "D4"
PIN_SYNC = "D7"
PIN_TTL = "D6"
PIN_IR = "D2"


@dataclass(frozen=True)
class PinEdge:
    """One output-pin change: ``level`` after the change, ``cycle`` of the AVR, ``t_host_ns`` when read."""

    pin: str
    level: int
    cycle: int
    t_host_ns: int

    @property
    def t_us(self) -> float:
        return self.cycle / (F_CPU_HZ / 1e6)


@dataclass(frozen=True)
class Pulse:
    """A high pulse on a pin: rising and falling cycle."""

    pin: str
    rise_cycle: int
    fall_cycle: int

    @property
    def width_us(self) -> float:
        return (self.fall_cycle - self.rise_cycle) / (F_CPU_HZ / 1e6)


def pulses(edges: list[PinEdge]) -> list[Pulse]:
    """Complete high pulses in an edge list (a leading fall or trailing rise is ignored)."""
    out: list[Pulse] = []
    rise: PinEdge | None = None
    for e in edges:
        if e.level and rise is None:
            rise = e
        elif not e.level and rise is not None:
            out.append(Pulse(e.pin, rise.cycle, e.cycle))
            rise = None
    return out


class FirmwareSim:
    """The simavr harness as a child process (own process group, killed on :meth:`stop`).

    ``link_path``: also make a symlink there pointing at the pty, replaced on each start, so a
    driver can reopen "the same port" after the simulator was killed and restarted.

    ``realtime=True`` locks the AVR to wall-clock time; ``False`` runs it flat out (5-7x real time
    on an idle core). The simulation starts paused: call :meth:`release` once the serial port is open.
    """

    def __init__(
        self,
        elf: Path | str = DEFAULT_ELF,
        harness: Path | str = DEFAULT_HARNESS,
        realtime: bool = True,
        start_timeout_s: float = 10.0,
        keep_edges: int = 200_000,
        link_path: Path | str | None = None,
    ) -> None:
        self.elf = Path(elf)
        self.harness = Path(harness)
        self.realtime = realtime
        self.keep_edges = keep_edges
        self.link_path = Path(link_path) if link_path is not None else None
        for p, what in ((self.elf, "firmware ELF"), (self.harness, "simulator harness")):
            if not p.exists():
                raise DeviceError(f"{what} {p} is missing: run `make -C firmware all`")
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._edges: dict[str, list[PinEdge]] = defaultdict(list)
        self._edge_cond = threading.Condition(self._lock)
        self._now: int | None = None
        self._subscribers: dict[str, list[queue.SimpleQueue[PinEdge]]] = defaultdict(list)
        self._wake_fds: dict[int, int] = {}  # id(queue) -> pipe write end
        self._exit_reason: str | None = None
        self.pty_path = ""
        self.released = False
        self._start(start_timeout_s)

    # ------------------------------------------------------------------ life cycle
    def _start(self, timeout_s: float) -> None:
        args = [str(self.harness), str(self.elf), "--realtime" if self.realtime else "--max"]
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        ready = False
        while time.monotonic() < deadline:
            line = self._proc.stdout.readline()
            if not line:
                break
            if line.startswith("PTY "):
                self.pty_path = line.split(None, 1)[1].strip()
            elif line.startswith("READY"):
                ready = True
                break
        if not ready or not self.pty_path:
            self.stop()
            raise DeviceError(f"simulator {self.harness} did not start (no PTY/READY within {timeout_s} s)")
        if self.link_path is not None:
            # A stable name for the port across restarts (like /dev/serial/by-id for a real board).
            tmp = self.link_path.with_name(self.link_path.name + ".tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.pty_path)
            tmp.replace(self.link_path)
        self._reader = threading.Thread(target=self._read_stdout, name="rig-sim-stdout", daemon=True)
        self._reader.start()
        log.info("firmware simulator pid %d on %s (%s)", self._proc.pid, self.pty_path, self.elf.name)

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            for line in self._proc.stdout:
                self._parse(line)
        except (ValueError, OSError):  # stdout closed under us by stop()
            pass
        with self._edge_cond:
            if self._exit_reason is None:
                self._exit_reason = "exited"
            self._edge_cond.notify_all()

    def _parse(self, line: str) -> None:
        parts = line.split()
        if not parts:
            return
        tag = parts[0]
        if tag == "E" and len(parts) == 4:
            edge = PinEdge(parts[1], int(parts[2]), int(parts[3]), time.monotonic_ns())
            for q in self._subscribers.get(edge.pin, ()):
                q.put(edge)
                fd = self._wake_fds.get(id(q))
                if fd is not None:
                    with contextlib.suppress(OSError):  # a full pipe already wakes the reader
                        os.write(fd, b"\0")
            with self._edge_cond:
                lst = self._edges[edge.pin]
                lst.append(edge)
                if len(lst) > self.keep_edges:
                    del lst[: len(lst) - self.keep_edges]
                self._edge_cond.notify_all()
        elif tag == "N" and len(parts) == 2:
            with self._edge_cond:
                self._now = int(parts[1])
                self._edge_cond.notify_all()
        elif tag == "X":
            with self._edge_cond:
                self._exit_reason = " ".join(parts[1:])
                self._edge_cond.notify_all()
        elif tag == "ERR":
            log.warning("simulator: %s", line.strip())

    def command(self, line: str) -> None:
        """One command line to the simavr harness (``firmware/sim/rig_sim.c``: ``ir``, ``wire``,
        ``imaging``, ``reset``, ``speed``, ...)."""
        if self._proc is None or self._proc.stdin is None or self._proc.poll() is not None:
            raise DeviceError(f"simulator for {self.pty_path or self.elf} is not running")
        try:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise DeviceError(f"simulator for {self.pty_path} went away: {exc}") from exc

    def release(self) -> None:
        """Let the AVR run (it starts paused so the host can open the pty first)."""
        self.command("go")
        self.released = True

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the harness: ``quit``, then SIGKILL the process group; never hangs. Wake pipes given to
        :meth:`subscribe` are written no more once this returns (their owners may close them)."""
        self._wake_fds.clear()
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.write("quit\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=timeout_s)
        reader = getattr(self, "_reader", None)
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=timeout_s)  # EOF after the process is gone
        for f in (proc.stdin, proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        self._proc = None

    def __enter__(self) -> FirmwareSim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ pins
    def set_ir(self, pellet_present: bool) -> None:
        """Drive the IR sensor input (D2): ``True`` = beam says a pellet is present."""
        self.command(f"ir {1 if pellet_present else 0}")

    def reset(self) -> None:
        """Reset the AVR (like the board's reset button): the firmware reboots and sends BOOT."""
        self.command("reset")

    def set_speed(self, realtime: bool) -> None:
        self.command("speed realtime" if realtime else "speed max")
        self.realtime = realtime

    def now_cycle(self, timeout_s: float = 2.0) -> int:
        """The AVR's current cycle count (asks the harness)."""
        with self._edge_cond:
            self._now = None
        self.command("now")
        with self._edge_cond:
            if not self._edge_cond.wait_for(lambda: self._now is not None, timeout=timeout_s):
                raise DeviceError(f"simulator for {self.pty_path} did not answer 'now' in {timeout_s} s")
            assert self._now is not None
            return self._now

    def edges(self, pin: str, since_cycle: int = 0) -> list[PinEdge]:
        """Edges recorded so far on ``pin`` (e.g. ``"D9"``) at or after ``since_cycle``."""
        with self._lock:
            return [e for e in self._edges.get(pin, []) if e.cycle >= since_cycle]

    def subscribe(self, pin: str, wake_fd: int | None = None) -> queue.SimpleQueue[PinEdge]:
        """A queue that receives every later edge of ``pin`` as it arrives (e.g. to clock cameras
        on the trigger's rising edges: ``q.get(timeout=...)``). With ``wake_fd`` (the write end of a
        pipe), a byte is also written there per edge, so a caller can wait in ``select``/``poll``."""
        q: queue.SimpleQueue[PinEdge] = queue.SimpleQueue()
        with self._lock:
            self._subscribers[pin].append(q)
            if wake_fd is not None:
                self._wake_fds[id(q)] = wake_fd
        return q

    def clear_edges(self) -> None:
        with self._lock:
            self._edges.clear()

    def wait_edges(self, pin: str, count: int, timeout_s: float, since_cycle: int = 0) -> list[PinEdge]:
        """Wait until ``pin`` has at least ``count`` edges at/after ``since_cycle``; returns them."""

        def enough() -> bool:
            return sum(1 for e in self._edges.get(pin, []) if e.cycle >= since_cycle) >= count

        with self._edge_cond:
            self._edge_cond.wait_for(lambda: enough() or self._exit_reason is not None, timeout=timeout_s)
        return self.edges(pin, since_cycle)


SESSION_KEEP_EDGES = 1024  # a session reads edges from its subscription; the history only grows memory


def start_simulated_arduino(
    cfg: ArduinoConfig, link_path: Path | str | None = None, keep_edges: int = SESSION_KEEP_EDGES
) -> tuple[FirmwareSim, SerialLink]:
    """Start the simulator, open a link to it (port first, then release), send ``cfg``'s CONFIG and
    re-delivery setting. Returns both; stop with ``link.close(); sim.stop()``. A session's Arduino node
    takes every edge from its :meth:`FirmwareSim.subscribe` queue, so the simulator keeps only the last
    ``keep_edges`` per pin (the 200,000 a test keeps by default were ~65 MB per busy pin after 14 minutes
    of a session: measured with ``scripts/bench_soak.py``)."""
    from rig.serial_link import link_from_config

    sim = FirmwareSim(
        elf=cfg.simulator.elf or DEFAULT_ELF,
        realtime=cfg.simulator.realtime,
        link_path=link_path,
        keep_edges=keep_edges,
    )
    try:
        link = link_from_config(cfg, port=link_path or sim.pty_path)
        timer = threading.Timer(0.2, sim.release)
        timer.start()
        link.open()
        link.configure(**cfg.firmware_config())
        link.command("redelivery", enable=int(cfg.redelivery))
    except Exception:
        sim.stop()
        raise
    return sim, link
