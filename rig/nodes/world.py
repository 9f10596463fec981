"""The simulated world node: the internal trigger clock and the synthetic mouse.

On ``ctl start`` it fires triggers at ``rig.trigger.rate_hz`` from the host clock; for each pulse it
advances the synthetic world and publishes ``trigger`` and ``sim.truth`` (which the synthetic cameras
render). With no task attached, a :class:`~rig.sim.world.FreeRunSchedule` runs the trials and
publishes ``task.event`` trial_start / outcome / trial_end, then ``session_end``.
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
        self.schedule = FreeRunSchedule(self.world, sim.trial_period_s, self.cfg.experiment.n_trials)
        self.period_ns = round(1e9 / self.cfg.rig.trigger.rate_hz)
        self.started = False
        self.t0_ns = 0
        self.index = 0
        self.late_triggers = 0
        self.session_end_sent = False

    def step(self) -> None:
        assert self.sub is not None
        if not self.started:
            got = self.sub.recv(50)
            if got and isinstance(got[1], m.Control):
                if got[1].command == "start":
                    self.started = True
                    self.log.info("world: start received")
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

    def _fire(self, t_ns: int, t_s: float) -> None:
        for kind, trial, outcome in self.schedule.step(t_s):
            self.publish("task.event", m.TaskEvent(kind=kind, trial=trial, t_host_ns=t_ns, outcome=outcome))
        st = self.world.step(t_s)
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
        if self.schedule.finished and not self.session_end_sent:
            self.session_end_sent = True
            self.publish(
                "task.event", m.TaskEvent(kind="session_end", trial=self.schedule.trial, t_host_ns=t_ns)
            )

    def _finish(self) -> None:
        self.status("eos", str(self.index - 1))
        self.done = True

    def extra_stats(self) -> dict[str, float]:
        return {"triggers": float(self.index), "late_triggers": float(self.late_triggers)}
