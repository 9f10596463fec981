"""The synthetic mouse and apparatus: where the paw, pellet and platform are at any time.

A pure, deterministic simulation (given its seed and the times it is told about). The platform and
pellet are driven from outside (:meth:`World.platform`, :meth:`World.load_pellet`) by the task and
firmware, or by :class:`FreeRunSchedule` when no task runs. The mouse reacts to a presented pellet
with minimum-jerk reaches (rest -> pellet -> back) with trial-to-trial variability: some reaches
grasp the pellet, some miss it, some knock it off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rig.config import SimulationConfig
from rig.sim.scene import PAW_REST, PELLET, PLATFORM_DROP_MM

PLATFORM_TRAVEL_S = 0.25


def min_jerk(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s**3 * (10 - 15 * s + 6 * s * s)


@dataclass
class Segment:
    """A minimum-jerk move from ``p0`` to ``p1`` over [t0, t1] with a vertical lift ``lift_mm``."""

    t0: float
    t1: float
    p0: np.ndarray
    p1: np.ndarray
    lift_mm: float
    phase: str

    def at(self, t: float) -> np.ndarray:
        s = (t - self.t0) / (self.t1 - self.t0)
        m = min_jerk(s)
        p = self.p0 + (self.p1 - self.p0) * m
        p = p.copy()
        p[2] += self.lift_mm * 4 * m * (1 - m)
        return np.asarray(p)


@dataclass
class WorldState:
    paw_xyz: np.ndarray
    pellet_xyz: np.ndarray | None
    pellet_on_platform: bool
    platform_up: bool
    phase: str
    trial: int


@dataclass
class WorldEvent:
    t: float
    kind: str  # reach_start, grasp, pellet_taken, pellet_knocked, miss, reach_end
    detail: dict[str, Any] = field(default_factory=dict)


class World:
    """Synthetic mouse + platform + pellet. Call :meth:`step` with non-decreasing times (seconds)."""

    def __init__(self, cfg: SimulationConfig):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.t = 0.0
        self.trial = 0
        self.platform_target_up = False
        self.platform_t = -10.0  # time of the last platform command
        self.pellet_loaded = False  # a pellet sits on the platform
        self.pellet_in_paw = False
        self.segment: Segment | None = None
        self.phase = "rest"
        self.next_reach_t: float | None = None
        self.reaches_this_trial = 0
        self.rest = PAW_REST.copy()
        self.tremor = np.zeros(3)
        self.events: list[WorldEvent] = []

    # -- inputs ------------------------------------------------------------------------------
    def platform(self, t: float, up: bool) -> None:
        if up != self.platform_target_up:
            self.platform_target_up = up
            self.platform_t = t
            if up:
                self.reaches_this_trial = 0
                self.next_reach_t = t + PLATFORM_TRAVEL_S + self.rng.uniform(*self.cfg.reach_latency_s)
            else:
                self.next_reach_t = None

    def load_pellet(self, t: float) -> None:
        self.pellet_loaded = True

    def new_trial(self, trial: int) -> None:
        self.trial = trial

    # -- state ---------------------------------------------------------------------------------
    def platform_height(self, t: float) -> float:
        """Platform offset in mm (0 = up, -PLATFORM_DROP_MM = down)."""
        s = min_jerk((t - self.platform_t) / PLATFORM_TRAVEL_S)
        up_frac = s if self.platform_target_up else 1 - s
        return -PLATFORM_DROP_MM * (1 - up_frac)

    def platform_is_up(self, t: float) -> bool:
        return self.platform_target_up and t - self.platform_t >= PLATFORM_TRAVEL_S

    def pellet_position(self, t: float) -> np.ndarray:
        return np.asarray(PELLET + np.array([0.0, 0.0, self.platform_height(t)]))

    def ir_beam_blocked(self) -> bool:
        """The IR sensor sees the pellet sitting on the platform."""
        return self.pellet_loaded

    def step(self, t: float) -> WorldState:
        """Advance to time ``t`` (s) and return the state; new events are appended to ``events``."""
        self.t = t
        if self.segment is not None and t >= self.segment.t1:
            self._segment_done(self.segment)
        if (
            self.segment is None
            and self.next_reach_t is not None
            and t >= self.next_reach_t
            and self.platform_is_up(t)
            and self.pellet_loaded
        ):
            self._start_reach(t)
        # resting tremor: a slow bounded random walk
        self.tremor = 0.97 * self.tremor + self.rng.normal(0, 0.05, 3)
        paw = self.segment.at(t) if self.segment is not None else self.rest + self.tremor
        pellet: np.ndarray | None
        if self.pellet_in_paw:
            pellet = paw + np.array([0.0, 1.5, -0.5])
        elif self.pellet_loaded:
            pellet = self.pellet_position(t)
        else:
            pellet = None
        return WorldState(
            paw_xyz=paw,
            pellet_xyz=pellet,
            pellet_on_platform=self.pellet_loaded,
            platform_up=self.platform_is_up(t),
            phase=self.phase,
            trial=self.trial,
        )

    # -- behaviour -----------------------------------------------------------------------------
    def _start_reach(self, t: float) -> None:
        rng = self.rng
        self.reaches_this_trial += 1
        u = rng.uniform()
        if u < self.cfg.success_prob:
            outcome, offset = "grasp", rng.normal(0, 0.6, 3)
        elif u < self.cfg.success_prob + self.cfg.miss_prob:
            outcome = "miss"
            direction = rng.normal(0, 1, 3)
            offset = direction / np.linalg.norm(direction) * rng.uniform(4.0, 7.0)
        else:
            outcome, offset = "knock", np.array([rng.uniform(-2.5, 2.5), 2.0, 0.5])
        target = self.pellet_position(t) + np.array([0.0, -1.2, 0.8]) + offset
        dur = rng.uniform(*self.cfg.reach_duration_s)
        start = self.rest + self.tremor
        self.segment = Segment(t, t + dur, start, target, rng.uniform(3.0, 6.0), "reach")
        self.phase = "reach"
        self.next_reach_t = None
        self.events.append(WorldEvent(t, "reach_start", {"outcome": outcome, "n": self.reaches_this_trial}))
        self._pending_outcome = outcome

    def _segment_done(self, seg: Segment) -> None:
        t = seg.t1
        rng = self.rng
        if seg.phase == "reach":
            outcome = self._pending_outcome
            if outcome == "grasp" and self.pellet_loaded:
                self.pellet_loaded = False
                self.pellet_in_paw = True
                self.events.append(WorldEvent(t, "pellet_taken"))
            elif outcome == "knock" and self.pellet_loaded:
                self.pellet_loaded = False
                self.events.append(WorldEvent(t, "pellet_knocked"))
            else:
                self.events.append(WorldEvent(t, "miss"))
            # grasped pellets go to the mouth (up and back), others straight back to rest
            back = self.rest + (np.array([0.0, -3.0, 9.0]) if self.pellet_in_paw else np.zeros(3))
            dur = rng.uniform(*self.cfg.reach_duration_s) * 1.3
            self.segment = Segment(t, t + dur, seg.p1, back, 1.0, "return")
            self.phase = "return"
        elif seg.phase == "return":
            if self.pellet_in_paw:
                self.segment = Segment(t, t + 0.5, seg.p1, self.rest, 0.0, "eat")
                self.phase = "eat"
                self.pellet_in_paw = False  # eaten
                return
            self._back_at_rest(t)
        else:
            self._back_at_rest(t)

    def _back_at_rest(self, t: float) -> None:
        self.segment = None
        self.phase = "rest"
        self.tremor[:] = 0
        self.events.append(WorldEvent(t, "reach_end"))
        if self.pellet_loaded and self.reaches_this_trial < self.cfg.reaches_per_trial_max:
            self.next_reach_t = t + self.rng.uniform(0.15, 0.6)


class FreeRunSchedule:
    """Runs trials on a fixed period when no task/firmware drives the world (the spine's simulation).

    Each trial: load a pellet and raise the platform; lower it once the pellet is gone and the paw is
    back, or at the end of the period. Emits task-like events: trial_start, outcome, trial_end.
    """

    def __init__(self, world: World, period_s: float, n_trials: int | None):
        self.world = world
        self.period = period_s
        self.n_trials = n_trials
        self.trial = 0
        self.trial_t0 = 0.0
        self.active = False
        self.outcome = ""
        self.finished = False

    def step(self, t: float) -> list[tuple[str, int, str]]:
        """Advance to ``t``; returns task events as (kind, trial, outcome)."""
        out: list[tuple[str, int, str]] = []
        w = self.world
        if not self.active and not self.finished and t >= self.trial * self.period + 0.2:
            if self.n_trials is not None and self.trial >= self.n_trials:
                self.finished = True
                return out
            self.trial += 1
            self.active = True
            self.outcome = ""
            self.trial_t0 = t
            w.new_trial(self.trial)
            w.load_pellet(t)
            w.platform(t, True)
            out.append(("trial_start", self.trial, ""))
        if self.active:
            for ev in w.events:
                if ev.kind == "pellet_taken":
                    self.outcome = "success"
                elif ev.kind == "pellet_knocked":
                    self.outcome = "knocked_off"
            w.events.clear()
            at_rest = w.segment is None
            timed_out = t >= self.trial_t0 + self.period - 0.5
            if (not w.pellet_loaded and at_rest) or timed_out:
                outcome = self.outcome or ("no_reach" if w.reaches_this_trial == 0 else "fail")
                w.platform(t, False)
                w.pellet_loaded = False
                self.active = False
                out.append(("outcome", self.trial, outcome))
                out.append(("trial_end", self.trial, outcome))
        return out
