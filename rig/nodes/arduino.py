"""The Arduino node: the only process that talks to the rig's Arduino (or the simulator running its real
firmware). It publishes every firmware event as ``serial.event``, sends every ``cmd.arduino`` command,
and starts / stops the camera trigger.

With the simulator (``rig.arduino.backend: simulator``) it also owns the simavr harness: each rising
edge of the trigger pin (D9) becomes a ``trigger`` message (index = pulse number since the trigger
started, ``t_fw_us`` = the simulated chip's clock), which clocks the synthetic cameras through the world
node; and ``sim.ir`` requests from the synthetic mouse drive the IR sensor pin.

Stopping: the trigger stops after its current pulse, the platform goes down, then ``node.arduino eos``
carries the number of pulses fired.
"""

from __future__ import annotations

import os
import queue
import time
from typing import Any

import zmq

from rig import messages as m
from rig.errors import DeviceError
from rig.nodes.base import Node

TRIGGER_PIN = "D9"
IDLE_WAKE_S = 0.02  # at the latest, wake this often (link pings, timeouts, reconnects, stop)


class ArduinoNode(Node):
    def setup(self) -> None:
        acfg = self.cfg.rig.arduino
        assert acfg is not None
        self.acfg = acfg
        self.sim: Any = None
        if acfg.backend == "simulator":
            from rig.firmware_sim import start_simulated_arduino

            self.sim, self.link = start_simulated_arduino(acfg)
            # each trigger edge also writes a byte to this pipe: the node sleeps until something happens
            self.wake_r, self.wake_w = os.pipe()
            os.set_blocking(self.wake_r, False)
            os.set_blocking(self.wake_w, False)
            self.edges: queue.SimpleQueue | None = self.sim.subscribe(TRIGGER_PIN, wake_fd=self.wake_w)
        else:
            from rig.serial_link import link_from_config

            self.link = link_from_config(acfg)
            self.link.open()
            self.link.configure(**acfg.firmware_config())
            self.link.command("redelivery", enable=int(acfg.redelivery))
            self.edges = None
        # one wait for everything: bus messages, bytes from the board, trigger edges from the simulator
        assert self.sub is not None
        self.poller = zmq.Poller()
        self.poller.register(self.sub.sock, zmq.POLLIN)
        if self.sim is not None:
            self.poller.register(self.wake_r, zmq.POLLIN)
        self.serial_fd: int | None = None
        self.firmware_trigger = self.cfg.rig.trigger.source == "firmware"
        self.triggering = False
        self.pulses = 0
        self.gaps = 0

    def _wait(self) -> None:
        """Sleep until a bus message, bytes from the board or a trigger edge arrive (or IDLE_WAKE_S)."""
        fd = self.link.fileno()
        if fd != self.serial_fd:
            if self.serial_fd is not None:
                self.poller.unregister(self.serial_fd)
            if fd is not None:
                self.poller.register(fd, zmq.POLLIN)
            self.serial_fd = fd
        if self.sim is not None and self.edges is not None and not self.edges.empty():
            return  # edges already queued: no wait
        # a link without a file descriptor (e.g. a network port) is polled every millisecond instead
        ready = dict(self.poller.poll(round(IDLE_WAKE_S * 1000) if fd is not None else 1))
        if self.sim is not None and self.wake_r in ready:
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
            if ev.kind == "gap":
                self.gaps += int(ev.values.get("lost", 0))
            elif ev.kind == "reconnected":
                self.log.warning("arduino: link back; sending the configuration again")
                self._reconfigure()
            self.publish("serial.event", ev)
        self._publish_triggers()
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
            if self.triggering:
                self._start_trigger()
        except DeviceError as exc:
            self.log.error("arduino: could not reconfigure after reconnect: %s", exc)

    def _start_trigger(self) -> None:
        rate = self.cfg.rig.trigger.rate_hz
        ack = self.link.command(
            "trigger_start",
            rate_uhz=round(rate * 1e6),
            max_pulses=0,
            report_every=self.acfg.trigger_report_every,
        )
        achieved = ack.values.get("achieved_uhz", 0) / 1e6
        self.log.info(
            "arduino: trigger started at %.6f Hz (asked %.6f Hz, error %.1f ppm)",
            achieved,
            rate,
            (achieved - rate) / rate * 1e6 if rate else 0.0,
        )
        self.triggering = True

    def _publish_triggers(self) -> None:
        if self.edges is None:
            return
        while True:
            try:
                edge = self.edges.get_nowait()
            except queue.Empty:
                return
            if edge.level != 1:
                continue
            # the harness reports each edge as it happens (real-time simulation): read time ~ edge time
            self.publish(
                "trigger", m.Trigger(index=self.pulses, t_host_ns=edge.t_host_ns, t_fw_us=round(edge.t_us))
            )
            self.pulses += 1

    def _stop_trigger(self) -> None:
        if not self.triggering:
            return
        try:
            self.link.command("trigger_stop")
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:  # the last pulse completes before the stop
                for ev in self.link.poll(0.01):
                    self.publish("serial.event", ev)
                self._publish_triggers()
        except DeviceError as exc:
            self.log.warning("arduino: trigger stop: %s", exc)
        self.triggering = False
        self.log.info("arduino: trigger stopped after %d pulses", self.pulses)

    def teardown(self) -> None:
        link = getattr(self, "link", None)
        if link is not None:
            try:
                self._stop_trigger()
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
        self.status("eos", str(getattr(self, "pulses", 0)))

    def extra_stats(self) -> dict[str, float]:
        return {
            "pulses": float(self.pulses),
            "gaps": float(self.gaps),
            "rx_errors": float(self.link.rx_errors),
        }
