"""The Arduino node: the only process that talks to the rig's Arduino (or the simulator running its real
firmware). It publishes every firmware event as ``serial.event``, sends every ``cmd.arduino`` command,
and starts / stops the camera trigger.

The clock record (``rig/clock.py``, ``rig/SESSION.md``): every camera trigger pulse becomes a
``trigger`` message (index = pulse number since the session's first trigger start, ``t_fw_us`` = the
firmware's ``micros()`` unwrapped, ``t_host_ns``), which the recorder writes to ``triggers.csv``. Timer1
makes the pulses exactly periodic, so pulse ``i`` of a run is at ``start + i * period`` on the firmware
clock (:class:`~rig.clock.TriggerModel`, anchored and checked by the firmware's periodic TRIGGER reports,
``rig.arduino.trigger_report_every``). A real board gives no per-pulse stream: the pulses up to each
report are published when it arrives, the rest at TRIGGER_STOPPED, with ``t_host_ns`` from the clock
map (:class:`~rig.clock.ClockFit`, a lower-envelope fit over every firmware event's (``t_fw_us``,
host read time) pair). The node keeps ``clock.json`` in the session folder up to date (rewritten
atomically every :data:`CLOCK_WRITE_S`, final at the end).

Imaging alignment (``rig.arduino.rsync``, ``rig.arduino.frame_clock``): every pseudo-random sync pulse
(``rsync`` event) becomes a row of ``sync_pulses.csv`` and every rising edge of the imaging system's frame
clock (``frame_clock`` event) a row of ``imaging_frames.csv``, both ``index, t_fw_us, t_host_ns`` (the
firmware's count and time, the host time through the clock map as it stands then); ``deepbehavior align``
reads them. A gap in ``index`` is a report that never arrived (counted in ``clock.json``).

With the simulator (``rig.arduino.backend: simulator``) it also owns the simavr harness. With
``rig.arduino.simulator.edges`` (the default) each rising edge of the trigger pin (D9) is published as
it happens (``t_host_ns`` = when the harness reported it; ``t_fw_us`` from the same periodic model, so
it is on the firmware's ``micros()`` clock like every other event); the edges clock the synthetic
cameras through the world node. ``edges: false`` stands in for a real board: the pulses come from the
reports as above. ``sim.ir`` requests from the synthetic mouse drive the IR sensor pin. With
``rig.arduino.simulator.imaging_clock`` the harness drives D8 with a simulated imaging frame clock (rate,
jitter, drift, dropped pulses); with ``rig.arduino.loopback`` it wires D6 to D12 (the jumper).

Stopping: the trigger stops after its current pulse, the platform goes down, then ``node.arduino eos``
carries the number of pulses fired.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any

import zmq

from rig import messages as m
from rig.clock import ClockFit, TriggerModel
from rig.errors import DeviceError
from rig.nodes.base import Node
from rig.serial_link import configure_imaging
from rig.session import write_json_atomic

TRIGGER_PIN = "D9"
IDLE_WAKE_S = 0.02  # at the latest, wake this often (link pings, timeouts, reconnects, stop)
CLOCK_WRITE_S = 2.0  # rewrite clock.json this often
CLOCK_FILE = "clock.json"
TRIGGER_CHECK_TOL_US = 50.0  # a TRIGGER report this far from the periodic model is a warning
EDGE_ANCHOR_WAIT_S = 1.0  # simulator edges wait this long at most for the run's first TRIGGER report
SYNC_FILE = "sync_pulses.csv"  # the pseudo-random sync pulses (rig.arduino.rsync)
FRAMES_FILE = "imaging_frames.csv"  # the imaging frame clock's rising edges (rig.arduino.frame_clock)
LOOPBACK_WIRE = "wire D6 D12"  # the harness's jumper from the closed-loop TTL to the loopback input


class EdgeTable:
    """``index, t_fw_us, t_host_ns`` rows of firmware-timed edges, append-only (``rig/SESSION.md``).

    ``index`` is the firmware's own count (0-based since the output or input was switched on), so a
    report that never arrived leaves a gap, counted in :meth:`summary`."""

    HEADER = "index,t_fw_us,t_host_ns\n"

    def __init__(self, path: Any) -> None:
        self.path = path
        self._f = open(path, "w", encoding="ascii")  # noqa: SIM115 - closed in close()
        self._f.write(self.HEADER)
        self.rows = 0
        self.first: tuple[int, int] | None = None  # (index, t_fw_us)
        self.last: tuple[int, int] | None = None
        self.missing = 0  # indices skipped (reports lost)
        self.restarts = 0  # the count went back (the firmware restarted it)

    def add(self, index: int, t_fw_us: int, t_host_ns: int) -> None:
        if self.last is not None:
            if index > self.last[0] + 1:
                self.missing += index - self.last[0] - 1
            elif index <= self.last[0]:
                self.restarts += 1
        if self.first is None:
            self.first = (index, t_fw_us)
        self.last = (index, t_fw_us)
        self.rows += 1
        self._f.write(f"{index},{t_fw_us},{t_host_ns}\n")

    def flush(self, sync: bool = False) -> None:
        self._f.flush()
        if sync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self.flush(sync=True)
            self._f.close()

    def summary(self) -> dict[str, Any]:
        return {
            "file": os.path.basename(self.path),
            "rows": self.rows,
            "first_index": None if self.first is None else self.first[0],
            "last_index": None if self.last is None else self.last[0],
            "first_fw_us": None if self.first is None else self.first[1],
            "last_fw_us": None if self.last is None else self.last[1],
            "missing_reports": self.missing,
            "count_restarts": self.restarts,
        }


class ClockWriter:
    """Writes ``clock.json`` from a thread, so an fsync on a busy disk never stalls the serial loop."""

    def __init__(self, path: Any, log: Any) -> None:
        self.path = path
        self.log = log
        self._cond = threading.Condition()
        self._latest: dict[str, Any] | None = None
        self._closed = False
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="clock-json", daemon=True)
        self._thread.start()

    def put(self, data: dict[str, Any]) -> None:
        with self._cond:
            self._latest = data
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._latest is not None or self._closed)
                data, self._latest = self._latest, None
                if data is None:
                    return
            try:
                write_json_atomic(self.path, data)
            except OSError as exc:
                if not self._failed:
                    self.log.error("arduino: cannot write %s: %s", self.path, exc)
                self._failed = True

    def close(self, final: dict[str, Any] | None = None) -> None:
        """Write ``final`` (if given) and stop the thread."""
        with self._cond:
            if final is not None:
                self._latest = final
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5.0)


class ArduinoNode(Node):
    def setup(self) -> None:
        acfg = self.cfg.rig.arduino
        assert acfg is not None
        self.acfg = acfg
        self.sim: Any = None
        self.edges: queue.SimpleQueue[Any] | None = None  # the simulator's trigger-pin edges, if used
        self.serial_fd: int | None = None
        self.firmware_trigger = self.cfg.rig.trigger.source == "firmware"
        self.triggering = False
        self.pulses = 0  # trigger messages published (the next one's session index)
        self.gaps = 0
        # the clock record
        self.clock = ClockFit()
        self.clock_segments: list[dict[str, Any]] = []  # fits before a firmware reboot
        self.trun: TriggerModel | None = None  # the current (or last) trigger run
        self.runs = 0
        self.run_base = 0  # session index of the run's pulse 0
        self.run_next = 0  # next pulse of the run to publish
        self.run_count: int | None = None  # pulses the run produced (TRIGGER_STOPPED)
        self.check_violations = 0
        self.pending_edges: list[Any] = []
        self._rtt_t = 0.0
        self._clock_t = time.monotonic()
        self.clock_writer = ClockWriter(self.session_dir / CLOCK_FILE, self.log)
        self.sync_table = EdgeTable(self.session_dir / SYNC_FILE) if acfg.rsync.enabled else None
        self.frames_table = EdgeTable(self.session_dir / FRAMES_FILE) if acfg.frame_clock else None
        if acfg.backend == "simulator":
            from rig.firmware_sim import start_simulated_arduino

            self.sim, self.link = start_simulated_arduino(acfg)
        if self.sim is not None and acfg.simulator.edges:
            # each trigger edge also writes a byte to this pipe: the node sleeps until something happens
            self.wake_r, self.wake_w = os.pipe()
            os.set_blocking(self.wake_r, False)
            os.set_blocking(self.wake_w, False)
            self.edges = self.sim.subscribe(TRIGGER_PIN, wake_fd=self.wake_w)
        if self.sim is None:
            from rig.serial_link import link_from_config

            self.link = link_from_config(acfg)
            self.link.open()
            self.link.configure(**acfg.firmware_config())
            self.link.command("redelivery", enable=int(acfg.redelivery))
        configure_imaging(self.link, acfg)
        if self.sim is not None:
            if acfg.loopback:
                self.sim.command(LOOPBACK_WIRE)
            if acfg.simulator.imaging_clock is not None:
                self.sim.command(acfg.simulator.imaging_clock.harness_command())
        # one wait for everything: bus messages, bytes from the board, trigger edges from the simulator
        assert self.sub is not None
        self.poller = zmq.Poller()
        self.poller.register(self.sub.sock, zmq.POLLIN)
        if self.edges is not None:
            self.poller.register(self.wake_r, zmq.POLLIN)

    def _wait(self) -> None:
        """Sleep until a bus message, bytes from the board or a trigger edge arrive (or IDLE_WAKE_S)."""
        fd = self.link.fileno()
        if fd != self.serial_fd:
            if self.serial_fd is not None:
                self.poller.unregister(self.serial_fd)
            if fd is not None:
                self.poller.register(fd, zmq.POLLIN)
            self.serial_fd = fd
        if self.edges is not None and not self.edges.empty():
            return  # edges already queued: no wait
        # a link without a file descriptor (e.g. a network port) is polled every millisecond instead
        ready = dict(self.poller.poll(round(IDLE_WAKE_S * 1000) if fd is not None else 1))
        if self.edges is not None and self.wake_r in ready:
            try:
                while os.read(self.wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def step(self) -> None:
        assert self.sub is not None
        self._wait()
        for topic, msg in self.sub.recv_all(0, limit=200):
            if isinstance(msg, m.Command) and topic == "cmd.arduino":
                self._send(msg)
            elif isinstance(msg, m.SimInput) and self.sim is not None and msg.pin == "ir":
                self.sim.set_ir(msg.level)
            elif isinstance(msg, m.Control):
                if msg.command == "start" and self.firmware_trigger and not self.triggering:
                    self._start_trigger()
                self.on_control(msg)
        # non-blocking when the port has a descriptor (the wait above already slept); while the port is
        # gone the link paces its own reconnect attempts
        for ev in self.link.poll(0 if self.serial_fd is not None else 0.001):
            if isinstance(ev, m.GapEvent):
                self.gaps += ev.lost
            elif isinstance(ev, m.ReconnectedEvent):
                self.log.warning("arduino: link back; sending the configuration again")
                self._reconfigure()
            self._note_event(ev)
            self.publish("serial.event", ev)
        self._publish_triggers()
        if time.monotonic() - self._clock_t >= CLOCK_WRITE_S:
            self._clock_t = time.monotonic()
            self.clock_writer.put(self.clock_record(final=False))
            for table in (self.sync_table, self.frames_table):
                if table is not None:
                    table.flush()
        if self.stop_requested:
            self._stop_trigger()
            self.done = True

    def _send(self, cmd: m.Command) -> None:
        try:
            self.link.send_command(cmd)
        except DeviceError as exc:  # disconnected: the task sees 'disconnected' and pauses
            self.log.warning("arduino: command %s not sent: %s", cmd.name, exc)
        self.processed += 1

    def _reconfigure(self) -> None:
        try:
            self.link.configure(**self.acfg.firmware_config())
            configure_imaging(self.link, self.acfg)
            if self.triggering:
                self._start_trigger()
        except DeviceError as exc:
            self.log.error("arduino: could not reconfigure after reconnect: %s", exc)

    def _start_trigger(self) -> None:
        rate = self.cfg.rig.trigger.rate_hz
        every = self.acfg.trigger_report_every
        if every == 0 and self.edges is None:
            self.log.warning(
                "arduino: rig.arduino.trigger_report_every is 0, but without an edge stream the "
                "firmware's TRIGGER reports are the only clock record: asking for one every 124 pulses"
            )
            every = 124
        ack = self.link.command("trigger_start", rate_uhz=round(rate * 1e6), max_pulses=0, report_every=every)
        self._end_run("a new trigger start")
        self.trun = TriggerModel(
            prescaler=int(ack.values["prescaler"]),
            top=int(ack.values["top"]),
            achieved_uhz=int(ack.values["achieved_uhz"]),
            report_every=every,
        )
        self.runs += 1
        self.run_base, self.run_next, self.run_count = self.pulses, 0, None
        self._update_rtt(force=True)
        achieved = ack.values.get("achieved_uhz", 0) / 1e6
        self.log.info(
            "arduino: trigger started at %.6f Hz (asked %.6f Hz, error %.1f ppm)",
            achieved,
            rate,
            (achieved - rate) / rate * 1e6 if rate else 0.0,
        )
        self.triggering = True

    # ------------------------------------------------------------------ the clock record
    def _note_event(self, ev: m.SerialEvent) -> None:
        """Feed a serial event to the clock map and the trigger record (may publish triggers)."""
        if isinstance(ev, m.RebootEvent):
            self._clock_reset()
            return
        if ev.fw_seq >= 0 and ev.t_fw_us >= 0 and ev.t_recv_ns is not None:
            self.clock.add(ev.t_fw_us, ev.t_recv_ns)
        if isinstance(ev, m.RsyncEvent | m.FrameClockEvent):
            line = self.clock.line()
            t_host = line.to_host_ns(ev.t_fw_us) if line is not None else -1
            if isinstance(ev, m.RsyncEvent) and self.sync_table is not None:
                self.sync_table.add(ev.index, ev.t_fw_us, t_host)
            elif isinstance(ev, m.FrameClockEvent) and self.frames_table is not None:
                self.frames_table.add(ev.count, ev.t_fw_us, t_host)
        run = self.trun
        if run is None:
            return
        if isinstance(ev, m.TriggerEvent):
            index = ev.index
            resid = run.add_report(index, ev.t_fw_us)
            if abs(resid) > TRIGGER_CHECK_TOL_US:
                self.check_violations += 1
                if self.check_violations <= 5:
                    self.log.warning(
                        "arduino: TRIGGER report of pulse %d is %.1f us from the periodic model "
                        "(period %.4f us): a lost or extra pulse, or a wrong period?",
                        index, resid, run.period_us,
                    )  # fmt: skip
            self._publish_run(index)
        elif isinstance(ev, m.TriggerStoppedEvent):
            self.run_count = ev.count
            self._publish_run(self.run_count - 1)

    def _clock_reset(self) -> None:
        """The firmware restarted: its clock starts again from 0, so a new fit starts (and the trigger
        run ended without telling how many pulses it made)."""
        self.log.warning("arduino: firmware rebooted: new clock map segment")
        if self.clock.pairs:
            self.clock_segments.append(self.clock.summary())
        rtt = self.clock.rtt_min_ns
        self.clock = ClockFit()
        if rtt is not None:
            self.clock.note_rtt_ns(rtt)
        self._end_run("a firmware reboot")

    def _end_run(self, why: str) -> None:
        run = self.trun
        if run is None or self.run_count is not None:
            return
        if self.edges is None:
            made = max(run.last_report_index + 1, self.run_next)
            if self.triggering:  # pulses after the last report are unknown
                self.log.warning(
                    "arduino: trigger run ended by %s with no TRIGGER_STOPPED: pulses after index %d "
                    "have no record",
                    why, self.run_base + made - 1,
                )  # fmt: skip
            self._publish_run(made - 1)
            self.run_count = made
        else:
            self._flush_edges(force=True)
            self.run_count = self.pulses - self.run_base

    def _update_rtt(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._rtt_t < 0.5:
            return
        self._rtt_t = now
        link = getattr(self, "link", None)
        rtts = link.stats.rtt_ms if link is not None else None
        if rtts:
            self.clock.note_rtt_ns(round(min(rtts) * 1e6))

    def _publish_run(self, upto: int) -> None:
        """Publish the run's pulses up to index ``upto`` (inclusive) from the periodic model, with host
        times from the clock map. With a simulator edge stream, the edges publish instead."""
        if self.edges is not None:
            self._flush_edges()
            return
        run = self.trun
        if run is None or not run.anchored or self.run_next > upto:
            return
        self._update_rtt()
        line = self.clock.line()
        while self.run_next <= upto:
            t_fw = run.t_fw_us(self.run_next)
            t_host = line.to_host_ns(t_fw) if line is not None else -1
            self.publish(
                "trigger", m.Trigger(index=self.run_base + self.run_next, t_host_ns=t_host, t_fw_us=t_fw)
            )
            self.run_next += 1
            self.pulses += 1

    def _publish_triggers(self) -> None:
        """Simulator edge stream: queue the trigger pin's rising edges, publish what can be."""
        if self.edges is None:
            return
        while True:
            try:
                edge = self.edges.get_nowait()
            except queue.Empty:
                break
            if edge.level == 1:
                self.pending_edges.append(edge)
        self._flush_edges()

    def _flush_edges(self, force: bool = False) -> None:
        """Publish queued edges: host time = when the harness reported the edge (real-time simulation:
        read time ~ edge time); firmware time from the run's periodic model, so it is on ``micros()``
        like every event (the simulator's cycle clock runs ~0.3 ms ahead of it). Until the run's first
        TRIGGER report anchors the model they wait (a millisecond); with no reports at all they fall
        back to the cycle clock."""
        if not self.pending_edges:
            return
        run = self.trun
        model = run is not None and run.report_every > 0
        if model and run is not None and not run.anchored:
            waited = (time.monotonic_ns() - self.pending_edges[0].t_host_ns) / 1e9
            if not force and waited < EDGE_ANCHOR_WAIT_S:
                return
            self.log.warning(
                "arduino: no TRIGGER report anchors the run: t_fw_us on the simulator's cycle clock"
            )
            model = False
        for edge in self.pending_edges:
            k = self.pulses - self.run_base
            if model and run is not None:
                run.add_edge(k, edge.cycle)
                t_fw = run.t_fw_us(k)
            else:
                t_fw = round(edge.t_us)
            self.publish("trigger", m.Trigger(index=self.pulses, t_host_ns=edge.t_host_ns, t_fw_us=t_fw))
            self.pulses += 1
        self.pending_edges.clear()

    def _record_complete(self) -> bool:
        if self.trun is None:
            return True
        if self.run_count is None:
            return False
        if self.edges is None:
            return self.run_next >= self.run_count
        return not self.pending_edges and self.pulses - self.run_base >= self.run_count

    def clock_record(self, final: bool) -> dict[str, Any]:
        """The content of ``clock.json`` (format: ``rig/SESSION.md``)."""
        self._update_rtt()
        trigger: dict[str, Any] | None = None
        if self.trun is not None:
            trigger = {
                **self.trun.summary(),
                "source": "simulator edges" if self.edges is not None else "firmware reports",
                "first_index": self.run_base,
                "published": self.pulses - self.run_base,
                "stopped_count": self.run_count,
                "check_tolerance_us": TRIGGER_CHECK_TOL_US,
                "check_violations": self.check_violations,
            }
        return {
            "format": "deepbehavior-clock",
            "version": 1,
            "final": final,
            "t_written_ns": time.monotonic_ns(),
            "map": "t_host_ns = offset_ns + slope_ns_per_us * (t_fw_us - ref_fw_us)",
            **self.clock.summary(),
            "earlier_segments": self.clock_segments,
            "trigger_runs": self.runs,
            "trigger": trigger,
            "rsync": None if self.sync_table is None else self.sync_table.summary(),
            "frame_clock": None if self.frames_table is None else self.frames_table.summary(),
        }

    def _stop_trigger(self) -> None:
        if not self.triggering:
            return
        try:
            self.link.command("trigger_stop")
            deadline = time.monotonic() + 1.0
            # the last pulse completes before the stop; TRIGGER_STOPPED says how many were made
            while time.monotonic() < deadline and not self._record_complete():
                for ev in self.link.poll(0.01):
                    self._note_event(ev)
                    self.publish("serial.event", ev)
                self._publish_triggers()
        except DeviceError as exc:
            self.log.warning("arduino: trigger stop: %s", exc)
        if not self._record_complete():
            self.log.warning(
                "arduino: no TRIGGER_STOPPED after the stop: the clock record may lack the last pulses"
            )
            self._end_run("the stop")
        self.triggering = False
        self.log.info("arduino: trigger stopped after %d pulses", self.pulses)

    def teardown(self) -> None:
        link = getattr(self, "link", None)
        if link is not None:
            try:
                self._stop_trigger()
                if self.acfg.rsync.enabled:  # the imaging side records no pulse the session did not
                    link.command("rsync", min_ms=0, max_ms=0, width_ms=0, seed=0)
                link.command("platform", up=0)  # leave the rig safe
            except DeviceError as exc:
                self.log.warning("arduino: could not lower the platform: %s", exc)
            finally:
                link.close()
        if self.sim is not None:
            self.sim.stop()
            for fd in (getattr(self, "wake_r", None), getattr(self, "wake_w", None)):
                if fd is not None:
                    os.close(fd)
        for name in ("sync_table", "frames_table"):
            table = getattr(self, name, None)
            if table is not None:
                table.close()
        writer = getattr(self, "clock_writer", None)
        if writer is not None:
            writer.close(self.clock_record(final=True))
        self.status("eos", str(getattr(self, "pulses", 0)))

    def extra_stats(self) -> dict[str, float]:
        return {
            "pulses": float(self.pulses),
            "gaps": float(self.gaps),
            "rx_errors": float(self.link.rx_errors),
            "clock_pairs": float(self.clock.pairs),
            "trigger_check_violations": float(self.check_violations),
        }
