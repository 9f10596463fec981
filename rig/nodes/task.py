"""The task node: runs the reaching task state machine (:mod:`rig.task`) and the closed-loop rules
(:mod:`rig.closed_loop`), both pure, and does their I/O on the bus: firmware events and 3-D paw
observations in, ``cmd.arduino`` commands and ``task.event`` events out. The Arduino node does the
serial I/O, so a slow serial line never blocks the rule.

Every closed-loop action is recorded as a ``closed_loop`` task event (its cause: rule, trigger index,
observed and judged position; rig/SESSION.md) as its command goes out; delayed actions (trains, output
delays, anticipated crossings) go out when due: the node wakes for them. The firmware's reply to each
closed-loop command (``ttl_fired``, the ``sync_pulse`` ack) gives the trigger -> pin latency that the
prediction cancels (:meth:`rig.closed_loop.ClosedLoopRule.note_pin`).
"""

from __future__ import annotations

import time

from rig import messages as m
from rig.closed_loop import Action, ClosedLoopRule
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
        tri = self.cfg.pipeline.triangulator
        self.rule = ClosedLoopRule(
            self.cfg.pipeline.closed_loop,
            predict_s=tri.predict_ms / 1000 if tri.filter == "kalman" else 0.0,
            frame_period_s=1 / self.cfg.rig.trigger.rate_hz,
        )
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

    def _act(self, a: Action) -> None:
        """Send one closed-loop action and record it with its cause."""
        now = time.monotonic_ns()
        sent = True
        if a.command is not None:
            sent = not (self.sync_is_clock and a.command.name == "sync_pulse")
            if sent:
                self.publish("cmd.arduino", a.command)
                self.rule.note_sent(a)
        else:
            detail = {"rule": a.rule, "trigger_index": a.trigger_index}
            ev = m.TaskEvent(
                kind=a.event, trial=self.task.trial, t_host_ns=now, state=self.task.state, detail=detail
            )
            self.publish("task.event", ev)
        record = {**a.record(), "sent": sent, "t_sent_ns": now}
        ev = m.TaskEvent(
            kind="closed_loop", trial=self.task.trial, t_host_ns=now, state=self.task.state, detail=record
        )
        self.publish("task.event", ev)

    def _note_pin(self, ev: m.SerialEvent) -> None:
        """A closed-loop command reached its pin: one trigger -> pin latency for the prediction."""
        pin = isinstance(ev, m.TtlFiredEvent) or (isinstance(ev, m.AckEvent) and ev.cmd_name == "sync_pulse")
        cause = getattr(ev, "cause_trigger_index", None) if pin else None
        if cause is not None and cause >= 0:
            self.rule.note_pin(cause, ev.t_host_ns)

    def step(self) -> None:
        assert self.sub is not None
        wait_ms = 5.0
        if (due := self.rule.next_due_ns()) is not None:
            wait_ms = min(wait_ms, max(0.0, (due - time.monotonic_ns()) / 1e6 - 1.0))
        for _topic, msg in self.sub.recv_all(wait_ms, limit=500):
            now = time.monotonic_ns()
            if isinstance(msg, m.SerialEvent):
                self._note_pin(msg)
                if self.started:
                    self._emit(self.task.on_serial(msg, now))
            elif isinstance(msg, m.Point3D):
                if self.started:
                    self._emit(self.task.on_point(msg, now))
                    if not self.task.paused:  # a paused task stimulates nothing
                        for a in self.rule.step(msg, now, self.task.state):
                            self._act(a)
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
            if self.task.paused:
                self.rule.cancel_pending()
            elif (due := self.rule.next_due_ns()) is not None:
                left_s = (due - time.monotonic_ns()) / 1e9
                if 0 < left_s < 0.0015:  # the last millisecond: sleep exactly, not a poll's rounding
                    time.sleep(left_s)
                for a in self.rule.due(time.monotonic_ns()):
                    self._act(a)
        if self.stop_requested:
            self.done = True

    def extra_stats(self) -> dict[str, float]:
        return {
            "trial": float(self.task.trial),
            "zone_entries": float(self.rule.zone_entries),
            "reach_onsets": float(self.rule.reach_onsets),
            **{f"rule_{name}_fired": float(n) for name, n in self.rule.fired.items()},
            "closed_loop_latency_ms": self.rule.latency.latency_s() * 1000,
        }
