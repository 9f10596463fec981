"""The reaching task as a state machine you can read (pyControl-like). Pure: no I/O, no clocks.

One trial::

    dispense --dispense_done + pellet seen--> raise --servo_done--> wait_response
    wait_response --pellet removed--> settle --settle_s--> lower      (outcome: success / knocked_off)
    wait_response --response_window_s--> lower                        (outcome: miss / no_reach)
    lower --servo_done--> iti --iti_s--> dispense (next trial) | done

Inputs: :meth:`ReachingTask.on_serial` (firmware events from :class:`rig.serial_link.SerialLink`),
:meth:`ReachingTask.on_point` (3-D paw observations), :meth:`ReachingTask.tick` (time passes). Each
returns the :class:`~rig.messages.Command` and :class:`~rig.messages.TaskEvent` messages to publish.
Times are host ``monotonic_ns``. The serial link going away pauses the task with the platform
lowered as soon as it is back (``paused`` state); the trial in progress is scored ``aborted``.
A user's pause (:meth:`ReachingTask.pause`, from the display) lets the trial in progress finish
and holds the task in ``paused`` with the platform down before the next one; :meth:`ReachingTask.resume`
starts the next trial (or cancels a pause not yet in effect).

Outcome rules (:func:`trial_outcome`, ``ReachingTaskConfig``): a *reach* is the paw coming within
``reach_radius_mm`` of the pellet. When the IR sensor reports the pellet gone, the trial is a *success*
if the paw was within ``grasp_radius_mm`` of the pellet within ``grasp_window_s`` of the removal (it took
it), otherwise *knocked_off*. With no removal in ``response_window_s``: *miss* if there was a reach, else
*no_reach*. Those need the paw: with no 3-D position of it at all (``deepbehavior record``, or the
detector lost it), the outcome is what the apparatus knows: *pellet_removed* (the IR sensor saw it go;
taken or knocked off is unknown) or *pellet_not_taken*, and the success rate is unknown (None), never 0.
``deepbehavior reanalyze`` classifies such trials from the offline 3-D with the same rule.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rig.config import ReachingTaskConfig
from rig.messages import (
    Command,
    DisconnectedEvent,
    DispenseCmd,
    IrEvent,
    PlatformCmd,
    Point3D,
    SerialEvent,
    SyncLevelCmd,
    TaskEvent,
)

Out = list[Command | TaskEvent]
# outcomes the paw's path tells apart, then those the IR sensor alone can tell (no 3-D of the paw)
CLASSIFIED = ("success", "knocked_off", "miss", "no_reach")
UNCLASSIFIED = ("pellet_removed", "pellet_not_taken")
OUTCOMES = (*CLASSIFIED, *UNCLASSIFIED, "aborted")


def trial_outcome(
    cfg: ReachingTaskConfig,
    t_removed_ns: int | None,
    reaches: int,
    paw_near: Sequence[tuple[int, float]],
) -> str:
    """The outcome rule (see the module docstring), pure: ``t_removed_ns`` when the IR sensor saw the
    pellet go (None: it stayed), ``reaches`` counted in the response window, ``paw_near`` every paw
    observation of the trial as (time ns, distance to the pellet mm), on the same clock as the removal.
    The task calls it online (host clock); reanalysis offline (firmware clock, offline 3-D)."""
    if t_removed_ns is None:
        if not paw_near:  # the paw was never seen: a reach cannot be ruled out
            return "pellet_not_taken"
        return "miss" if reaches else "no_reach"
    w = int(cfg.grasp_window_s * 1e9)
    around = [d for t, d in paw_near if abs(t - t_removed_ns) <= w]
    if not around:  # nothing of the paw when the pellet went: taken or knocked off is unknown
        return "pellet_removed"
    return "success" if min(around) <= cfg.grasp_radius_mm else "knocked_off"


def success_rate(outcomes: dict[str, int]) -> float | None:
    """Successes over completed trials (not aborted); None when there are none, or when any completed
    trial is unclassified (its outcome needed the paw's position, which was not there)."""
    done = sum(n for o, n in outcomes.items() if o and o != "aborted")
    if not done or any(outcomes.get(o, 0) for o in UNCLASSIFIED):
        return None
    return outcomes.get("success", 0) / done


@dataclass
class TrialRecord:
    trial: int
    t_start_ns: int
    outcome: str = ""
    reaches: int = 0
    t_first_reach_ns: int = -1
    t_presented_ns: int = -1
    t_removed_ns: int = -1

    @property
    def latency_first_reach_s(self) -> float:
        if self.t_first_reach_ns < 0 or self.t_presented_ns < 0:
            return math.nan
        return (self.t_first_reach_ns - self.t_presented_ns) / 1e9


@dataclass
class SessionStats:
    trials: list[TrialRecord] = field(default_factory=list)

    @property
    def completed(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.outcome and t.outcome != "aborted"]

    def summary(self) -> dict[str, Any]:
        done = self.completed
        lat = [t.latency_first_reach_s for t in done if not math.isnan(t.latency_first_reach_s)]
        seen = [t for t in done if t.outcome in CLASSIFIED]
        counts = {o: sum(t.outcome == o for t in self.trials) for o in OUTCOMES}
        rate = success_rate(counts)
        return {
            "trials": len(done),
            "outcomes": counts,
            "unclassified": sum(counts[o] for o in UNCLASSIFIED),
            "success_rate": rate,
            # over trials whose outcome saw the paw: without 3-D, 0 reaches would be invented
            "reaches_per_trial": statistics.fmean(t.reaches for t in seen) if seen else math.nan,
            "latency_first_reach_s_median": statistics.median(lat) if lat else math.nan,
        }


class ReachingTask:
    """See the module docstring. ``start(t)`` begins; ``done`` tells when it is over."""

    def __init__(self, cfg: ReachingTaskConfig) -> None:
        self.cfg = cfg
        self.state = "idle"
        self.done = False
        self.stats = SessionStats()
        self.trial = 0
        self.pellet_present = False
        self._t_session_ns = 0
        self._timer_ns: int | None = None
        self._out: Out = []
        self._now = 0
        self._rec: TrialRecord | None = None
        self._paw_near: list[tuple[int, float]] = []  # (t_frame_ns, distance to pellet mm)
        self._was_near = False
        self._dispense_tries = 0
        self._user_pause = False  # a user asked to pause: take effect at the next trial boundary
        self._pause_by = ""
        self._pause_reason = ""
        self._states: dict[str, Callable[[str, Any], None]] = {
            "dispense": self._dispense,
            "raise": self._raise,
            "wait_response": self._wait_response,
            "settle": self._settle,
            "lower": self._lower,
            "iti": self._iti,
            "paused": self._paused,
            "done": self._done,
        }

    # ------------------------------------------------------------------ inputs
    def start(self, t_ns: int) -> Out:
        self._now = self._t_session_ns = t_ns
        self._emit("session_start")
        self._next_trial()
        return self._flush()

    def tick(self, t_ns: int) -> Out:
        """Time passes: fire the state's timer when due."""
        self._now = t_ns
        if self._timer_ns is not None and t_ns >= self._timer_ns:
            self._timer_ns = None
            self._dispatch("timeout", None)
        return self._flush()

    def pause(self, t_ns: int, by: str = "user") -> Out:
        """A user's pause: at once between trials, else when the trial in progress ends."""
        self._now = t_ns
        if self.done or self._user_pause or self.state == "idle":
            return self._flush()
        self._user_pause, self._pause_by = True, by
        if self.state == "iti":
            self._pause_reason = f"paused by {by}"
            self._goto("paused")
        else:
            self._emit("pause_pending", detail={"by": by, "after_trial": self.trial})
        return self._flush()

    def resume(self, t_ns: int, by: str = "user") -> Out:
        """Undo :meth:`pause`: the next trial starts now (a link-loss pause waits for the link)."""
        self._now = t_ns
        if not self._user_pause:
            return self._flush()
        self._user_pause = False
        if self.state == "paused" and self._pause_reason.startswith("paused by"):
            self._emit("resumed", detail={"by": by})
            self._next_trial()
        elif self.state != "paused":
            self._emit("pause_cancelled", detail={"by": by})
        return self._flush()

    @property
    def paused(self) -> bool:
        return self.state == "paused"

    def on_serial(self, ev: SerialEvent, t_ns: int) -> Out:
        self._now = t_ns
        if isinstance(ev, IrEvent):
            self.pellet_present = bool(ev.pellet_present)
        if isinstance(ev, DisconnectedEvent) and self.state not in ("done", "paused"):
            self._abort_trial("serial link lost")
            self._pause_reason = "serial link lost"
            self._goto("paused")
        else:
            self._dispatch(ev.kind, ev)
        return self._flush()

    def on_point(self, p: Point3D, t_ns: int) -> Out:
        """A 3-D paw observation (invalid ones are ignored)."""
        self._now = t_ns
        if not p.valid or self._rec is None or self.state not in ("wait_response", "settle"):
            return []
        d = math.dist(p.xyz_filtered, self.cfg.pellet_xyz_mm)
        if math.isnan(d):
            return []
        # when the paw was there: its trigger (on the host clock), not when the frame reached the host,
        # which a loaded machine delays by up to hundreds of ms (the grasp window is 0.15 s)
        t = p.t_trigger_ns if p.t_trigger_ns > 0 else p.t_frame_ns
        self._paw_near.append((t, d))
        near = d <= self.cfg.reach_radius_mm
        if near and not self._was_near and self.state == "wait_response":
            self._rec.reaches += 1
            if self._rec.t_first_reach_ns < 0:
                self._rec.t_first_reach_ns = t
            self._emit("reach", detail={"n": self._rec.reaches, "trigger_index": p.trigger_index})
        self._was_near = near
        return self._flush()

    # ------------------------------------------------------------------ states
    def _dispense(self, ev: str, data: Any) -> None:
        if ev == "entry":
            self._command(DispenseCmd(pellets=1, t_host_ns=self._now))
            self._timer(self.cfg.dispense_timeout_s)
        elif ev in ("dispense_done", "ir") and (self.pellet_present or not self.cfg.pellet_check):
            self._goto("raise")
        elif ev == "timeout":
            self._dispense_tries += 1
            if self._dispense_tries >= 3:
                self._emit("error", detail={"reason": "no pellet seen after 3 dispenses"})
                self._abort_trial("dispenser")
                self._goto("done")
            else:
                self._goto("dispense")

    def _raise(self, ev: str, data: Any) -> None:
        if ev == "entry":
            self._command(PlatformCmd(up=1, t_host_ns=self._now))
            self._timer(self.cfg.platform_timeout_s)
        elif ev == "servo_done":
            self._goto("wait_response")
        elif ev == "timeout":
            self._emit("error", detail={"reason": "platform did not report raised"})
            self._goto("wait_response")

    def _wait_response(self, ev: str, data: Any) -> None:
        assert self._rec is not None
        if ev == "entry":
            self._rec.t_presented_ns = self._now
            self._command(SyncLevelCmd(level=1, t_host_ns=self._now))
            self._timer(self.cfg.response_window_s)
        elif ev == "ir" and not self.pellet_present:
            self._rec.t_removed_ns = data.t_host_ns if isinstance(data, SerialEvent) else self._now
            self._goto("settle")
        elif ev == "timeout":
            self._finish_trial(trial_outcome(self.cfg, None, self._rec.reaches, self._paw_near))
            self._goto("lower")

    def _settle(self, ev: str, data: Any) -> None:
        if ev == "entry":
            self._timer(self.cfg.settle_s)
        elif ev == "timeout":
            assert self._rec is not None
            r = self._rec
            self._finish_trial(trial_outcome(self.cfg, r.t_removed_ns, r.reaches, self._paw_near))
            self._goto("lower")

    def _lower(self, ev: str, data: Any) -> None:
        if ev == "entry":
            self._command(SyncLevelCmd(level=0, t_host_ns=self._now))
            self._command(PlatformCmd(up=0, t_host_ns=self._now))
            self._timer(self.cfg.platform_timeout_s)
        elif ev in ("servo_done", "timeout"):
            self._goto("iti")

    def _iti(self, ev: str, data: Any) -> None:
        if ev == "entry":
            self._timer(self.cfg.iti_s)
        elif ev == "timeout":
            self._next_trial()

    def _paused(self, ev: str, data: Any) -> None:
        if ev == "entry":
            self._emit("paused", detail={"reason": self._pause_reason})
        elif ev == "reconnected" and self._pause_reason == "serial link lost":
            self._emit("resumed", detail={"by": "serial link back"})
            self._pause_reason = ""
            self._goto("lower")  # lower -> iti -> next trial, or a user's pause

    def _done(self, ev: str, data: Any) -> None:
        if ev == "entry":
            self.done = True
            self._command(PlatformCmd(up=0, t_host_ns=self._now))
            self._emit("session_end", detail=self.stats.summary())

    # ------------------------------------------------------------------ helpers
    def _next_trial(self) -> None:
        elapsed_s = (self._now - self._t_session_ns) / 1e9
        n = self.cfg.n_trials
        if (n is not None and self.trial >= n) or elapsed_s >= self.cfg.max_duration_s:
            self._goto("done")
            return
        if self._user_pause:
            self._pause_reason = f"paused by {self._pause_by}"
            self._goto("paused")
            return
        self.trial += 1
        self._rec = TrialRecord(self.trial, self._now)
        self.stats.trials.append(self._rec)
        self._paw_near = []
        self._was_near = False
        self._dispense_tries = 0
        self._emit("trial_start")
        self._goto("dispense")

    def _finish_trial(self, outcome: str) -> None:
        assert self._rec is not None
        self._rec.outcome = outcome
        r = self._rec
        self._emit(
            "trial_end",
            outcome=outcome,
            detail={"reaches": r.reaches, "latency_first_reach_s": r.latency_first_reach_s},
        )

    def _abort_trial(self, reason: str) -> None:
        if self._rec is not None and not self._rec.outcome:
            self._rec.outcome = "aborted"
            self._emit("trial_end", outcome="aborted", detail={"reason": reason})

    def _goto(self, state: str) -> None:
        if self.state in self._states:
            self._dispatch("exit", None)
        self._timer_ns = None
        self.state = state
        self._emit("state")
        self._dispatch("entry", None)

    def _dispatch(self, ev: str, data: Any) -> None:
        handler = self._states.get(self.state)
        if handler is not None:
            handler(ev, data)

    def _timer(self, seconds: float) -> None:
        self._timer_ns = self._now + int(seconds * 1e9)

    def _command(self, cmd: Command) -> None:
        self._out.append(cmd)

    def _emit(self, kind: str, outcome: str = "", detail: dict[str, Any] | None = None) -> None:
        self._out.append(
            TaskEvent(
                kind=kind,
                trial=self.trial,
                t_host_ns=self._now,
                state=self.state,
                outcome=outcome,
                detail=detail or {},
            )
        )

    def _flush(self) -> Out:
        out, self._out = self._out, []
        return out
