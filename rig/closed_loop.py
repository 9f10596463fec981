"""Closed-loop rules: 3-D paw observations -> firmware commands. Pure: no I/O, no clocks.

The rules a lab writes (``pipeline.closed_loop.rules``, :class:`rig.config.RuleConfig`), or the two
built-in ones (zone entry -> TTL pulse, reach onset -> sync mark): each watches one signal of the paw's
3-D position, with hysteresis, a refractory period and trial-state gating:

* zone rules (``zone_enter``, ``zone_exit``, ``reach_onset`` = leaving the rest zone, ``reach_offset``,
  ``dwell``): the signed distance to the zone (mm, <= 0 inside, :func:`zone_distance`). The paw is in
  once the distance is <= 0 and out again once it is > ``hysteresis``.
* speed rules (``speed_above``, ``speed_below``): the paw's speed (mm/s); fast once >= ``speed_mm_s``,
  slow again once < ``speed_mm_s - hysteresis``.

A rule fires on a change of that state seen between two valid observations (the first observation
only sets it), if it is not within ``refractory_s`` of its last firing (on the observations' trigger
times) and the task is in one of its ``states``; a change while gated is counted, never fired later.

``position: predicted`` judges where the paw will be when the command reaches the pin: the filter's
constant-velocity prediction (``xyz_predicted``, ``predict_s`` ahead of ``xyz_filtered``) taken to
``latency + lead`` after the observation's trigger, ``latency`` measured from the pin times of the
rule's own commands (of all the rules' until it has a few; :meth:`ClosedLoopRule.note_pin`) or set.
With ``anticipate``, a zone crossing predicted between that horizon and the next observation's is sent
at the predicted moment (a delayed action), not one frame late.

Each firing is an :class:`Action` carrying its cause (trigger index, observed and judged position,
horizon, rule); the task node sends its command when it is due and records it (``closed_loop`` task
event, then ``closed_loop.csv``: :mod:`rig.closed_loop_report`). ``ClosedLoopRule.update`` is the old
one-call form returning only the commands due at once.
"""

from __future__ import annotations

import math
import statistics
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from rig.config import ClosedLoopConfig, PredictionConfig, RuleConfig, ZoneConfig
from rig.messages import Command, Point3D, SyncPulseCmd, TtlPulseCmd

Vec3 = tuple[float, float, float]
NAN3: Vec3 = (math.nan, math.nan, math.nan)
RISING = ("zone_enter", "reach_offset", "speed_above", "dwell")  # fire when the state turns on
FALLING = ("zone_exit", "reach_onset", "speed_below")  # fire when it turns off
DEFAULT_MARK_US = 1000
LATENCY_WINDOW = 16
LATENCY_MIN_SAMPLES = 3  # measured figures before the median replaces initial_latency_ms
MAX_GAP_NS = 250_000_000  # a longer gap between observations is a lost paw, not the frame interval


def zone_distance(zone: ZoneConfig, xyz: Vec3) -> float:
    """Signed distance (mm) from ``xyz`` to the zone's boundary: <= 0 inside. A box's is the largest
    per-axis excess over its half size (a box grown by ``h`` on every side is ``distance <= h``)."""
    c = zone.center_mm
    if zone.shape == "sphere":
        assert zone.radius_mm is not None
        return math.dist(xyz, c) - zone.radius_mm
    assert zone.size_mm is not None
    return max(abs(xyz[i] - c[i]) - zone.size_mm[i] / 2 for i in range(3))


def next_level(rule: RuleConfig, level: bool | None, value: float) -> bool:
    """The rule's state after ``value`` (zone: inside; speed: fast), with its hysteresis."""
    if rule.speed_mm_s is not None:
        thr = rule.speed_mm_s
        return value > thr - rule.hysteresis if level else value >= thr
    return value <= rule.hysteresis if level else value <= 0.0


def edge_fires(rule: RuleConfig, before: bool | None, after: bool) -> bool:
    """Does this change of state fire the rule (dwell aside: it fires on time spent in the zone)?"""
    if before is None or before == after:
        return False
    return after if rule.when in RISING else not after


@dataclass(frozen=True)
class Action:
    """One output of a rule firing, due at ``t_due_ns`` (host clock): a firmware ``command``, or for a
    ``task_event`` output the ``event`` kind. The rest is its cause, for the session's records."""

    rule: str
    output: str
    command: Command | None
    event: str
    pulse: int  # 0, 1, ... within a ttl_train
    trigger_index: int
    t_ref_ns: int  # the causing observation's trigger time (host clock)
    t_decided_ns: int  # when the rule fired (host clock)
    t_due_ns: int
    xyz_observed: Vec3
    xyz_used: Vec3
    position: str
    latency_ms: float  # the trigger -> pin latency the prediction assumed (0 unless predicted)
    horizon_ms: float
    value: float  # the signal the rule judged: signed distance (mm) or speed (mm/s)

    def record(self) -> dict[str, Any]:
        """The cause, as the ``detail`` of the ``closed_loop`` task event (rig/SESSION.md)."""
        return {
            "rule": self.rule,
            "output": self.output,
            "command": self.command.name if self.command else "",
            "pulse": self.pulse,
            "trigger_index": self.trigger_index,
            "t_trigger_ns": self.t_ref_ns,
            "t_decided_ns": self.t_decided_ns,
            "t_due_ns": self.t_due_ns,
            "position": self.position,
            "xyz_observed": [round(v, 4) for v in self.xyz_observed],
            "xyz_used": [round(v, 4) for v in self.xyz_used],
            "latency_ms": round(self.latency_ms, 4),
            "horizon_ms": round(self.horizon_ms, 4),
            "value": round(self.value, 4),
        }


class LatencyEstimator:
    """Trigger -> pin latency for the prediction: ``latency_ms`` if set, else the median of the last
    :data:`LATENCY_WINDOW` measured for the rule (commands differ: a sync mark's path is not a TTL's),
    or of all rules' while the rule has fewer than :data:`LATENCY_MIN_SAMPLES` (``initial_latency_ms``
    while they have too)."""

    def __init__(self, cfg: PredictionConfig) -> None:
        self.cfg = cfg
        self.recent: deque[int] = deque(maxlen=LATENCY_WINDOW)
        self.per_rule: dict[str, deque[int]] = {}

    def add(self, latency_ns: int, rule: str = "") -> None:
        if 0 <= latency_ns < 1_000_000_000:  # a negative or > 1 s figure is a mismatched event
            self.recent.append(latency_ns)
            self.per_rule.setdefault(rule, deque(maxlen=LATENCY_WINDOW)).append(latency_ns)

    def latency_s(self, rule: str = "") -> float:
        if self.cfg.latency_ms is not None:
            return self.cfg.latency_ms / 1000
        for q in (self.per_rule.get(rule, ()), self.recent):
            if len(q) >= LATENCY_MIN_SAMPLES:
                return statistics.median(q) / 1e9
        return self.cfg.initial_latency_ms / 1000


@dataclass
class _State:
    level: bool | None = None
    t_in_ns: int = -1  # dwell: when the paw came into the zone
    dwell_fired: bool = False
    last_fire_ns: int | None = None
    edges: int = 0  # state changes that fire the rule (gated or refractory ones included)
    fired: int = 0
    prev: tuple[int, Vec3] | None = None  # speed by differences: (t_ref_ns, xyz)


@dataclass
class _Obs:
    t_ref_ns: int
    t_frame_ns: int
    filtered: Vec3
    velocity: Vec3 | None  # mm/s from the filter (predict_s > 0), else None
    raw: Vec3


def _finite(v: Vec3) -> bool:
    return all(math.isfinite(x) for x in v)


def _at(p: Vec3, v: Vec3, dt_s: float) -> Vec3:
    return (p[0] + v[0] * dt_s, p[1] + v[1] * dt_s, p[2] + v[2] * dt_s)


class ClosedLoopRule:
    """Every rule of a :class:`~rig.config.ClosedLoopConfig` (see the module docstring).

    ``predict_s``: the triangulator's ``predict_ms`` / 1000 (``xyz_predicted`` is that far ahead of
    ``xyz_filtered``); ``frame_period_s``: the trigger period (how far the next frame's horizon is).
    """

    def __init__(
        self, cfg: ClosedLoopConfig, predict_s: float = 0.0, frame_period_s: float = 1 / 124
    ) -> None:
        self.cfg = cfg
        self.rules = cfg.active_rules()
        if any(r.position == "predicted" for r in self.rules.values()) and not predict_s > 0:
            raise ValueError("a rule on the predicted position needs the filter's prediction (predict_s > 0)")
        self.predict_s = predict_s
        self.period_ns = round(frame_period_s * 1e9)
        self.latency = LatencyEstimator(cfg.prediction)
        self.state = {name: _State() for name in self.rules}
        self.pending: list[Action] = []  # delayed actions, by due time
        self._last_t_ref: int | None = None  # the previous valid observation's trigger time
        # commands sent, per causing trigger: (t_ref_ns, intended delay ns, rule) for the latency
        self._causes: OrderedDict[int, deque[tuple[int, int, str]]] = OrderedDict()

    # ------------------------------------------------------------------ counters
    @property
    def edges(self) -> dict[str, int]:
        return {name: st.edges for name, st in self.state.items()}

    @property
    def fired(self) -> dict[str, int]:
        return {name: st.fired for name, st in self.state.items()}

    def _count(self, when: str) -> int:
        return sum(st.edges for name, st in self.state.items() if self.rules[name].when == when)

    @property
    def zone_entries(self) -> int:
        return self._count("zone_enter")

    @property
    def reach_onsets(self) -> int:
        return self._count("reach_onset")

    # ------------------------------------------------------------------ inputs
    def update(self, obs: Point3D, t_host_ns: int, state: str = "") -> list[Command]:
        """The commands due at once (the old one-call form; delayed actions stay in ``pending``)."""
        return [a.command for a in self.step(obs, t_host_ns, state) if a.command is not None]

    def step(self, obs: Point3D, t_host_ns: int, state: str = "") -> list[Action]:
        """Feed one observation (``t_host_ns``: now; ``state``: the task's state). Returns the actions
        due now; later ones (delays, trains, anticipated crossings) come out of :meth:`due`."""
        cfg = self.cfg
        if not cfg.enabled or obs.name != cfg.point or not obs.valid:
            return []
        o = self._obs(obs)
        if o is None:
            return []
        # the next observation is expected one interval later: the frame period, or longer while the
        # detector skips frames
        gap = o.t_ref_ns - self._last_t_ref if self._last_t_ref is not None else 0
        self._last_t_ref = o.t_ref_ns
        ahead_ns = max(self.period_ns, gap if gap < MAX_GAP_NS else 0)
        new: list[Action] = []
        for name, rule in self.rules.items():
            new += self._judge(name, rule, obs.trigger_index, o, t_host_ns, state, ahead_ns)
        self.pending.extend(new)
        self.pending.sort(key=lambda a: a.t_due_ns)
        return self.due(t_host_ns)

    def due(self, t_host_ns: int) -> list[Action]:
        """Pending actions due by ``t_host_ns``, in due order."""
        out = []
        while self.pending and self.pending[0].t_due_ns <= t_host_ns:
            out.append(self.pending.pop(0))
        return out

    def note_sent(self, action: Action) -> None:
        """``action``'s command went out (now): its pin time will be a latency figure (:meth:`note_pin`)."""
        if action.command is None:
            return
        q = self._causes.setdefault(action.trigger_index, deque())
        q.append((action.t_ref_ns, action.t_due_ns - action.t_decided_ns, action.rule))
        while len(self._causes) > 256:
            self._causes.popitem(last=False)

    def next_due_ns(self) -> int | None:
        return self.pending[0].t_due_ns if self.pending else None

    def cancel_pending(self) -> int:
        """Drop every action not yet due (a paused task stimulates nothing); returns how many."""
        n = len(self.pending)
        self.pending.clear()
        return n

    def note_pin(self, trigger_index: int, t_pin_ns: int) -> None:
        """A command caused by ``trigger_index`` reached its pin at ``t_pin_ns`` (host clock, from the
        firmware's event): one trigger -> pin latency for the prediction (intended delays taken off)."""
        q = self._causes.get(trigger_index)
        if not q:
            return
        t_ref, delay, rule = q.popleft()
        if not q:
            del self._causes[trigger_index]
        self.latency.add(t_pin_ns - t_ref - delay, rule)

    # ------------------------------------------------------------------ the rules
    def _obs(self, obs: Point3D) -> _Obs | None:
        velocity = None
        if self.predict_s > 0 and _finite(obs.xyz_predicted) and _finite(obs.xyz_filtered):
            velocity = tuple(
                (p - f) / self.predict_s for p, f in zip(obs.xyz_predicted, obs.xyz_filtered, strict=True)
            )
        t_ref = obs.t_trigger_ns if obs.t_trigger_ns > 0 else obs.t_frame_ns
        o = _Obs(t_ref, obs.t_frame_ns, obs.xyz_filtered, velocity, obs.xyz)  # type: ignore[arg-type]
        return o if _finite(o.filtered) or _finite(o.raw) else None

    def _position(self, rule: RuleConfig, o: _Obs, ahead_s: float) -> Vec3:
        if rule.position == "raw":
            return o.raw
        if rule.position == "filtered":
            return o.filtered
        if o.velocity is None:
            return NAN3
        return _at(o.filtered, o.velocity, ahead_s)

    def _value(self, rule: RuleConfig, st: _State, o: _Obs, xyz: Vec3) -> float:
        if rule.zone is not None:
            return zone_distance(rule.zone, xyz)
        if o.velocity is not None and rule.position != "raw":
            return math.hypot(*o.velocity)
        prev, st.prev = st.prev, (o.t_ref_ns, xyz)
        if prev is None or o.t_ref_ns <= prev[0]:
            return math.nan
        return math.dist(xyz, prev[1]) / ((o.t_ref_ns - prev[0]) / 1e9)

    def _judge(
        self, name: str, rule: RuleConfig, index: int, o: _Obs, now: int, task_state: str, ahead_ns: int
    ) -> list[Action]:
        st = self.state[name]
        predicted = rule.position == "predicted"
        latency_s = self.latency.latency_s(name) if predicted else 0.0
        lead_ms = rule.lead_ms if rule.lead_ms is not None else self.cfg.prediction.lead_ms
        horizon_s = latency_s + lead_ms / 1000 if predicted else 0.0
        xyz = self._position(rule, o, horizon_s)
        if not _finite(xyz):
            return []
        value = self._value(rule, st, o, xyz)
        if math.isnan(value):
            return []
        before = st.level
        after = next_level(rule, before, value)
        extra_ns = 0  # anticipated crossing: how long after now it is predicted
        fires = edge_fires(rule, before, after)
        if (
            not fires
            and rule.position == "predicted"
            and rule.zone is not None
            and rule.when != "dwell"
            and self.cfg.prediction.anticipate
            and before is not None
        ):
            # where the next observation's decision would look: does the crossing come before then?
            period_s = ahead_ns / 1e9
            xyz2 = self._position(rule, o, horizon_s + period_s)
            v2 = zone_distance(rule.zone, xyz2)
            after2 = next_level(rule, before, v2)
            if edge_fires(rule, before, after2):
                bound = rule.hysteresis if before else 0.0  # the threshold being crossed
                frac = (bound - value) / (v2 - value) if v2 != value else 0.0
                extra_ns = round(min(max(frac, 0.0), 1.0) * period_s * 1e9)
                after, fires = after2, True
                horizon_s += extra_ns / 1e9
                xyz = self._position(rule, o, horizon_s)
                value = zone_distance(rule.zone, xyz)
        st.level = after
        if rule.when == "dwell":
            fires = False
            if after and not before:
                st.t_in_ns, st.dwell_fired = o.t_ref_ns, False
            if after and not st.dwell_fired and o.t_ref_ns - st.t_in_ns >= (rule.dwell_s or 0) * 1e9:
                st.dwell_fired = fires = True
        if not fires:
            return []
        st.edges += 1
        if rule.states and task_state not in rule.states:
            return []
        refractory_ns = rule.refractory_s * 1e9
        if st.last_fire_ns is not None and o.t_ref_ns - st.last_fire_ns < refractory_ns:
            return []
        st.last_fire_ns = o.t_ref_ns
        st.fired += 1
        lat_hor = (latency_s, horizon_s)
        return self._outputs(name, rule, index, o, now, now + extra_ns, xyz, lat_hor, value)

    def _outputs(
        self,
        name: str,
        rule: RuleConfig,
        index: int,
        o: _Obs,
        now: int,
        t_fire: int,
        xyz: Vec3,
        latency_horizon_s: tuple[float, float],
        value: float,
    ) -> list[Action]:
        out = rule.output
        start = t_fire + round(out.delay_ms * 1e6)
        base: dict[str, Any] = dict(
            rule=name,
            output=out.kind,
            trigger_index=index,
            t_ref_ns=o.t_ref_ns,
            t_decided_ns=now,
            xyz_observed=o.raw if rule.position == "raw" else o.filtered,
            xyz_used=xyz,
            position=rule.position,
            latency_ms=latency_horizon_s[0] * 1000,
            horizon_ms=latency_horizon_s[1] * 1000,
            value=value,
        )
        if out.kind == "task_event":
            return [Action(command=None, event=out.event or name, pulse=0, t_due_ns=start, **base)]
        if out.kind == "sync_mark":
            pulse: type[SyncPulseCmd | TtlPulseCmd] = SyncPulseCmd
            width = out.width_us or DEFAULT_MARK_US
        else:
            pulse, width = TtlPulseCmd, out.width_us
        actions = []
        for k in range(out.count):
            t_due = start + round(k * out.period_ms * 1e6)
            cmd = pulse(
                width_us=width,
                cause_trigger_index=index,
                cause_t_frame_ns=o.t_frame_ns,
                t_host_ns=t_due,
            )
            actions.append(Action(command=cmd, event="", pulse=k, t_due_ns=t_due, **base))
        return actions


__all__ = ["Action", "ClosedLoopRule", "LatencyEstimator", "edge_fires", "next_level", "zone_distance"]
