"""The simulated world node: the synthetic mouse and apparatus, clocked by the camera trigger.

Trigger source ``internal``: on ``ctl start`` it fires triggers at ``rig.trigger.rate_hz`` from the
host clock, and a :class:`~rig.sim.world.FreeRunSchedule` runs trials on its own, publishing
``task.event`` trial_start / outcome / trial_end, then ``session_end``.

Trigger source ``firmware``: the real firmware in the simulator makes the trigger; each ``trigger``
message from the Arduino node (one per rising edge of the trigger pin) advances the world to the
pulse's firmware time. The task's commands move the platform (``cmd.arduino platform``), the firmware's
``dispense_done`` puts a pellet on it, and the world tells the simulated IR sensor whether a pellet sits
there (``sim.input``), so trials play out through the real firmware and task.

Either way, each pulse publishes ``sim.truth`` (which the synthetic cameras render).
"""

from __future__ import annotations

import time

from rig import messages as m
from rig.nodes.base import Node
from rig.sim.scene import PAW_RADIUS_MM
from rig.sim.world import FreeRunSchedule, World


class WorldNode(Node):
    def setup(self) -> None:
        sim = self.cfg.simulation
        assert sim is not None
        self.world = World(sim)
        self.firmware = self.cfg.rig.trigger.source == "firmware"
        self.schedule = (
            None
            if self.firmware
            else FreeRunSchedule(self.world, sim.trial_period_s, self.cfg.experiment.n_trials)
        )
        self.fw0_us: int | None = None  # firmware time of pulse 0
        self.host0_ns = 0
        self.ir: bool | None = None
        self.period_ns = round(1e9 / self.cfg.rig.trigger.rate_hz)
        self.started = False
        self.t0_ns = 0
        self.index = 0
        self.late_triggers = 0
        self.session_end_sent = False

    def step(self) -> None:
        assert self.sub is not None
        if self.firmware:
            self._step_firmware()
            return
        if not self.started:
            got = self.sub.recv(50)
            if got and isinstance(got[1], m.Control):
                if got[1].command == "start":
                    self.started = True
                    self.log.info("world: start received; first trigger pulse in 20 ms (internal clock)")
                    self.t0_ns = time.monotonic_ns() + 20_000_000
                elif got[1].command == "stop" and got[1].detail in ("", self.name):
                    self._finish()
            return
        for _topic, msg in self.sub.recv_all(0):
            if isinstance(msg, m.Control) and msg.command == "stop" and msg.detail in ("", self.name):
                self._finish()
                return
        target = self.t0_ns + self.index * self.period_ns
        now = time.monotonic_ns()
        if target > now:
            # sleep in short slices so a stop is seen promptly; Linux wakes within ~0.1 ms
            time.sleep(min(target - now, 20_000_000) / 1e9)
            if time.monotonic_ns() < target:
                return
        t_ns = time.monotonic_ns()
        if t_ns - target > self.period_ns // 2:
            self.late_triggers += 1
        self._fire(t_ns, (target - self.t0_ns) / 1e9)
        self.index += 1

    def _step_firmware(self) -> None:
        assert self.sub is not None
        for topic, msg in self.sub.recv_all(5, limit=500):
            if isinstance(msg, m.Trigger):
                if self.fw0_us is None:
                    self.fw0_us, self.host0_ns = msg.t_fw_us, msg.t_host_ns
                    self.log.info("world: first trigger pulse received (firmware clock)")
                self.index = msg.index
                self._fire(msg.t_host_ns, (msg.t_fw_us - self.fw0_us) / 1e6)
            elif isinstance(msg, m.PlatformCmd):
                self.world.platform(self._t_world(msg.t_host_ns), bool(msg.up))
            elif isinstance(msg, m.DispenseCmd):
                self.world.new_trial(self.world.trial + 1)
            elif isinstance(msg, m.DispenseDoneEvent):
                self.world.load_pellet(self._t_world(msg.t_host_ns))
            elif (
                isinstance(msg, m.NodeStatus)
                and topic == "node.arduino"
                and msg.status in ("eos", "exiting", "failed")
            ):
                self._finish()  # the trigger source is gone: no more frames
                return
        # the IR beam sees the pellet on the platform; tell the simulated sensor when that changes
        beam = self.world.ir_beam_blocked()
        if beam != self.ir:
            self.ir = beam
            self.publish("sim.input", m.SimInput(pin="ir", level=beam, t_host_ns=time.monotonic_ns()))

    def _t_world(self, t_host_ns: int) -> float:
        """World time (s since pulse 0) of a host time; before the first pulse, 0."""
        return max(0.0, (t_host_ns - self.host0_ns) / 1e9) if self.fw0_us is not None else 0.0

    def _fire(self, t_ns: int, t_s: float) -> None:
        if self.schedule is not None:
            for kind, trial, outcome in self.schedule.step(t_s):
                self.publish(
                    "task.event", m.TaskEvent(kind=kind, trial=trial, t_host_ns=t_ns, outcome=outcome)
                )
        else:
            self.world.events.clear()  # with a task, the firmware's IR sensor reports what happened
        st = self.world.step(t_s)
        if not self.firmware:  # with the firmware, the Arduino node publishes the pulses
            self.publish("trigger", m.Trigger(index=self.index, t_host_ns=t_ns))
        self.publish(
            "sim.truth",
            m.Truth(
                trigger_index=self.index,
                t_trigger_ns=t_ns,
                paw_xyz=tuple(float(v) for v in st.paw_xyz),  # type: ignore[arg-type]
                paw_radius_mm=PAW_RADIUS_MM,
                pellet_xyz=tuple(float(v) for v in st.pellet_xyz)
                if st.pellet_xyz is not None
                else (0.0, 0.0, 0.0),  # type: ignore[arg-type]
                pellet_present=st.pellet_xyz is not None,
                platform_up=st.platform_up,
                trial=st.trial,
                phase=st.phase,
            ),
        )
        self.processed += 1
        if self.schedule is not None and self.schedule.finished and not self.session_end_sent:
            self.session_end_sent = True
            self.publish(
                "task.event", m.TaskEvent(kind="session_end", trial=self.schedule.trial, t_host_ns=t_ns)
            )

    def _finish(self) -> None:
        self.status("eos", str(self.index - 1))
        self.done = True

    def extra_stats(self) -> dict[str, float]:
        return {"triggers": float(self.index), "late_triggers": float(self.late_triggers)}
