"""The task node: runs the reaching task state machine (:mod:`rig.task`) and the closed-loop rule
(:mod:`rig.closed_loop`), both pure, and does their I/O on the bus: firmware events and 3-D paw
observations in, ``cmd.arduino`` commands and ``task.event`` events out. The Arduino node does the
serial I/O, so a slow serial line never blocks the rule.
"""

from __future__ import annotations

import time

from rig import messages as m
from rig.closed_loop import ClosedLoopRule
from rig.nodes.base import Node
from rig.task import ReachingTask


class TaskNode(Node):
    def setup(self) -> None:
        exp = self.cfg.experiment
        # the experiment's trial count and duration govern the task
        tcfg = exp.reaching.model_copy(
            update={"n_trials": exp.n_trials, "max_duration_s": exp.max_duration_s}
        )
        self.task = ReachingTask(tcfg)
        self.rule = ClosedLoopRule(self.cfg.pipeline.closed_loop)
        # rig.arduino.ttl.sync 'trigger': the sync line carries the divided frame trigger, which the
        # firmware refuses to mix with trial levels and marks (NAK busy): those are not sent
        acfg = self.cfg.rig.arduino
        self.sync_is_clock = acfg is not None and acfg.ttl.sync == "trigger"
        self.started = False
        self.session_end_sent = False

    def _emit(self, out: list[m.Command | m.TaskEvent]) -> None:
        for msg in out:
            if isinstance(msg, m.Command):
                if self.sync_is_clock and msg.name in ("sync_level", "sync_pulse"):
                    continue
                self.publish("cmd.arduino", msg)
            else:
                self.publish("task.event", msg)
                self.session_end_sent |= msg.kind == "session_end"

    def step(self) -> None:
        assert self.sub is not None
        for _topic, msg in self.sub.recv_all(5, limit=500):
            now = time.monotonic_ns()
            if isinstance(msg, m.SerialEvent):
                if self.started:
                    self._emit(self.task.on_serial(msg, now))
            elif isinstance(msg, m.Point3D):
                if self.started:
                    self._emit(self.task.on_point(msg, now))
                    if not self.task.paused:  # a paused task stimulates nothing
                        self._emit(list(self.rule.update(msg, now)))
                    self.processed += 1
                    self.latency.add((now - msg.t_frame_ns) / 1e6)
            elif isinstance(msg, m.Control):
                if msg.command == "start" and not self.started:
                    self.started = True
                    self._emit(self.task.start(now))
                elif msg.command == "pause" and self.started:
                    self._emit(self.task.pause(now, by=msg.detail or "user"))
                elif msg.command == "resume" and self.started:
                    self._emit(self.task.resume(now, by=msg.detail or "user"))
                self.on_control(msg)
        if self.started:
            self._emit(self.task.tick(time.monotonic_ns()))
        if self.stop_requested:
            self.done = True

    def extra_stats(self) -> dict[str, float]:
        return {
            "trial": float(self.task.trial),
            "zone_entries": float(self.rule.zone_entries),
            "reach_onsets": float(self.rule.reach_onsets),
        }
