"""The rules a lab writes (rig.closed_loop): zones (sphere, box), speed, reach, dwell; hysteresis, refractory
period, trial-state gating, outputs, prediction; their config's validation; the truth metrics
(rig.closed_loop_report) on hand-made sessions; the rules on a real recorded 3-D reach."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from rig.closed_loop import Action, ClosedLoopRule, LatencyEstimator, zone_distance
from rig.closed_loop_report import closed_loop_records, true_events, truth_metrics
from rig.config import DEFAULT_CONFIG, ClosedLoopConfig, PredictionConfig, ZoneConfig, load_config
from rig.errors import ConfigError
from rig.messages import Point3D
from rig.session import Session

PERIOD_NS = 8_064_516  # 124 Hz


def pt(
    i: int, xyz: tuple[float, float, float], velocity: tuple[float, float, float] | None = None
) -> Point3D:
    """Observation ``i`` at ``i`` trigger periods; ``velocity`` (mm/s) makes xyz_predicted 10 ms ahead."""
    pred = xyz if velocity is None else tuple(p + v * 0.01 for p, v in zip(xyz, velocity, strict=True))
    return Point3D(
        name="paw",
        trigger_index=i,
        xyz=xyz,
        xyz_filtered=xyz,
        xyz_predicted=pred,  # type: ignore[arg-type]
        valid=True,
        reproj_error_px=0.1,
        cameras=["front", "side"],
        t_frame_ns=i * PERIOD_NS + 1_000_000,
        t_trigger_ns=i * PERIOD_NS,
        t_det_ns=0,
        t_out_ns=0,
    )


def engine(rules: dict[str, dict[str, Any]], predict_s: float = 0.0, **extra: Any) -> ClosedLoopRule:
    cfg = ClosedLoopConfig.model_validate({"enabled": True, "rules": rules, **extra})
    return ClosedLoopRule(cfg, predict_s=predict_s)


def run(rule: ClosedLoopRule, xs: list[float], states: list[str] | None = None) -> list[Action]:
    """Feed points along x (y = z = 0), one per trigger; returns every action (delayed ones included)."""
    out: list[Action] = []
    for i, x in enumerate(xs):
        now = i * PERIOD_NS + 3_000_000
        out += rule.step(pt(i, (x, 0.0, 0.0)), now, states[i] if states else "wait_response")
    out += rule.due(10**18)
    return out


def fired_at(actions: list[Action], rule: str | None = None) -> list[int]:
    return [a.trigger_index for a in actions if rule is None or a.rule == rule]


SPHERE = {"shape": "sphere", "center_mm": [0, 0, 0], "radius_mm": 5.0}
TTL = {"kind": "ttl_pulse"}
# x: far, in (4.9), just out (5.1), in, out by 1 mm (6.0), out by 3 mm, in, far
CHATTER = [20.0, 4.9, 5.1, 4.9, 6.0, 4.9, 8.0, 4.9, 20.0]


def test_zone_enter_and_exit_with_hysteresis() -> None:
    plain = run(engine({"in": {"when": "zone_enter", "zone": SPHERE, "output": TTL}}), CHATTER)
    assert fired_at(plain) == [1, 3, 5, 7]  # every crossing of the 5 mm sphere
    hyst = engine({"in": {"when": "zone_enter", "zone": SPHERE, "hysteresis": 2.0, "output": TTL}})
    assert fired_at(run(hyst, CHATTER)) == [1, 7]  # out again only beyond 7 mm (at x = 8)
    out = engine({"out": {"when": "zone_exit", "zone": SPHERE, "hysteresis": 2.0, "output": TTL}})
    assert fired_at(run(out, CHATTER)) == [6, 8]
    assert hyst.edges == {"in": 2}


def test_box_zone_signed_distance_and_entry() -> None:
    box = ZoneConfig(shape="box", center_mm=(0, 0, 0), size_mm=(10, 2, 4))
    assert zone_distance(box, (0, 0, 0)) == pytest.approx(-1.0)  # nearest face: y at 1 mm
    assert zone_distance(box, (5, 0, 0)) == pytest.approx(0.0)
    assert zone_distance(box, (0, 0, 3)) == pytest.approx(1.0)
    rule = engine({"b": {"when": "zone_enter", "zone": box.model_dump(), "output": TTL}})
    assert fired_at(run(rule, [9.0, 6.0, 4.0, 0.0, 6.0, 4.5])) == [2, 5]


def test_refractory_period_counts_the_suppressed_entries() -> None:
    rule = engine({"in": {"when": "zone_enter", "zone": SPHERE, "refractory_s": 0.030, "output": TTL}})
    # entries at triggers 1, 3, 5, 7: 16 ms apart; 30 ms refractory lets 1, 5 through (5 is 32 ms after 1)
    assert fired_at(run(rule, CHATTER)) == [1, 5]
    assert rule.edges == {"in": 4} and rule.fired == {"in": 2}


def test_trial_state_gating_never_fires_late() -> None:
    rule = engine({"g": {"when": "zone_enter", "zone": SPHERE, "states": ["wait_response"], "output": TTL}})
    states = ["iti", "iti", "iti", "wait_response", "wait_response", "wait_response", "wait_response"]
    # the paw enters at 1 (gated), stays in at 3 when the window opens: nothing; enters again at 5
    got = run(rule, [20.0, 4.0, 4.0, 4.0, 9.0, 4.0, 4.0], states)
    assert fired_at(got) == [5] and rule.edges == {"g": 2}
    assert got[0].record()["rule"] == "g"


def test_reach_onset_offset_and_dwell() -> None:
    rest: dict[str, Any] = {"shape": "sphere", "center_mm": [0, 0, 0], "radius_mm": 3.0}
    rules: dict[str, dict[str, Any]] = {
        "onset": {"when": "reach_onset", "zone": rest, "output": {"kind": "sync_mark"}},
        "offset": {"when": "reach_offset", "zone": rest, "output": {"kind": "task_event"}},
        "stay": {"when": "dwell", "zone": SPHERE, "dwell_s": 0.020, "output": TTL},
    }
    rule = engine(rules)
    xs = [0.0, 0.0, 10.0, 20.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0, 0.0]
    got = run(rule, xs)
    assert fired_at(got, "onset") == [2, 9] and fired_at(got, "offset") == [4, 10]
    # in the 5 mm sphere from trigger 4: 20 ms later is trigger 6.5 -> fires at 7, once per stay
    assert fired_at(got, "stay") == [7]
    mark = next(a for a in got if a.rule == "onset")
    assert (
        mark.command is not None
        and mark.command.name == "sync_pulse"
        and mark.command.args == {"width_us": 1000}
    )
    ev = next(a for a in got if a.rule == "offset")
    assert ev.command is None and ev.event == "offset"


def test_dwell_needs_the_whole_time_inside() -> None:
    rule = engine({"stay": {"when": "dwell", "zone": SPHERE, "dwell_s": 0.020, "output": TTL}})
    # in for 2 triggers (16 ms), out, in for 3 (24 ms)
    assert fired_at(run(rule, [9.0, 1.0, 1.0, 9.0, 1.0, 1.0, 1.0, 1.0])) == [7]


def test_speed_above_and_below_with_hysteresis() -> None:
    # steps of x per trigger: speed = step / 8.06 ms: 124, 99, 124, 62, 124, 25, 25 mm/s from trigger 1
    steps = [0.0, 1.0, 0.8, 1.0, 0.5, 1.0, 0.2, 0.2]
    xs = list(np.cumsum(steps))
    fast = {"when": "speed_above", "speed_mm_s": 110.0, "output": TTL}
    slow = {"when": "speed_below", "speed_mm_s": 110.0, "output": TTL}
    assert fired_at(run(engine({"f": fast}), xs)) == [3, 5]  # the first speed (at 1) has no "before"
    # slow again only under 70 mm/s: the dip to 99 at 2 is not a change
    assert fired_at(run(engine({"f": {**fast, "hysteresis": 40.0}}), xs)) == [5]
    assert fired_at(run(engine({"s": slow}), xs)) == [2, 4, 6]
    assert fired_at(run(engine({"s": {**slow, "hysteresis": 40.0}}), xs)) == [4, 6]


def test_outputs_train_delay_and_widths() -> None:
    train = {"kind": "ttl_train", "count": 3, "period_ms": 20, "width_us": 500, "delay_ms": 5}
    rule = engine({"t": {"when": "zone_enter", "zone": SPHERE, "output": train}})
    now = 10 * PERIOD_NS
    assert rule.step(pt(0, (9.0, 0, 0)), now) == []
    assert rule.step(pt(1, (0.0, 0, 0)), now) == []  # all of it is delayed
    assert rule.due(now + 4_999_999) == []
    got = rule.due(now + 10**9)
    assert [a.t_due_ns - now for a in got] == [5_000_000, 25_000_000, 45_000_000]
    assert [a.pulse for a in got] == [0, 1, 2]
    assert all(a.command is not None and a.command.args == {"width_us": 500} for a in got)
    assert all(a.command is not None and a.command.cause_trigger_index == 1 for a in got)


def test_prediction_acts_before_the_paw_arrives_and_latency_is_measured() -> None:
    pred = {"latency_ms": 16.2, "anticipate": False}  # 2.009 mm at 124 mm/s
    rules = {
        "now": {"when": "zone_enter", "zone": SPHERE, "output": TTL},
        "ahead": {"when": "zone_enter", "zone": SPHERE, "position": "predicted", "output": TTL},
    }
    rule = engine(rules, predict_s=0.01, prediction=pred)
    # 124 mm/s towards the sphere (1 mm per trigger) from x = 12: in at x <= 5, i.e. trigger 7
    out: list[Action] = []
    for i in range(12):
        x = 12.0 - i
        out += rule.step(pt(i, (x, 0.0, 0.0), velocity=(-124.0, 0, 0)), i * PERIOD_NS)
    assert fired_at(out, "now") == [7]
    assert fired_at(out, "ahead") == [5]  # 2 triggers ahead
    ahead = next(a for a in out if a.rule == "ahead")
    assert ahead.horizon_ms == pytest.approx(16.2) and ahead.xyz_used[0] == pytest.approx(
        7.0 - 2.0088, abs=1e-3
    )
    # anticipation: the crossing between this horizon and the next observation's is sent when predicted
    rule = engine(rules, predict_s=0.01, prediction={"latency_ms": 16.2})
    out = []
    for i in range(12):
        out += rule.step(pt(i, (12.0 - i, 0.0, 0.0), velocity=(-124.0, 0, 0)), i * PERIOD_NS)
        out += rule.due(i * PERIOD_NS + PERIOD_NS - 1)
    a = next(a for a in out if a.rule == "ahead")
    assert a.trigger_index == 4 and 0 < a.t_due_ns - a.t_decided_ns < PERIOD_NS
    # measured latency: initial until 3 figures, then their median; a rule's own once it has 3
    est = LatencyEstimator(PredictionConfig(initial_latency_ms=7.0))
    for ms in (12.0, 9.0):
        est.add(round(ms * 1e6), "a")
    assert est.latency_s("a") == pytest.approx(0.007)
    est.add(10_000_000, "b")
    est.add(-5, "b")  # a mismatched event is ignored
    assert est.latency_s("a") == est.latency_s("b") == est.latency_s() == pytest.approx(0.010)
    for ms in (20.0, 21.0):
        est.add(round(ms * 1e6), "b")
    assert est.latency_s("b") == pytest.approx(0.020) and est.latency_s("a") == pytest.approx(0.012)
    # the engine measures from its own commands' pin times, intended delays taken off
    rule = engine({"d": {"when": "zone_enter", "zone": SPHERE, "output": {**TTL, "delay_ms": 20}}})
    for k in range(3):
        rule.step(pt(2 * k, (9.0, 0, 0)), 0)
        rule.step(pt(2 * k + 1, (0.0, 0, 0)), (2 * k + 1) * PERIOD_NS)
        (act,) = rule.due(10**15)
        rule.note_sent(act)
        rule.note_pin(act.trigger_index, act.t_ref_ns + 20_000_000 + 6_000_000)
    assert rule.latency.latency_s("d") == pytest.approx(0.006)


def test_invalid_and_nan_observations_change_nothing() -> None:
    rule = engine({"in": {"when": "zone_enter", "zone": SPHERE, "output": TTL}})
    assert rule.step(pt(0, (9.0, 0, 0)), 0) == []
    nan = pt(1, (math.nan, math.nan, math.nan))
    invalid = Point3D(
        **{**{f: getattr(pt(2, (0.0, 0, 0)), f) for f in Point3D.__struct_fields__}, "valid": False}
    )
    assert rule.step(nan, 0) == [] and rule.step(invalid, 0) == []
    assert fired_at(rule.step(pt(3, (0.0, 0, 0)), 0)) == [3]


# ----------------------------------------------------------------------------- config
def write_cfg(tmp_path: Path, closed_loop: dict[str, Any], predict_ms: float = 0.0) -> Path:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["pipeline"]["closed_loop"] = {"enabled": True, **closed_loop}
    raw["pipeline"]["triangulator"]["predict_ms"] = predict_ms
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


ZE = {"when": "zone_enter", "zone": SPHERE, "output": TTL}
MISTAKES = [
    ({**ZE, "hysterisis": 1}, r"rules\.r\.hysterisis: unknown key \(did you mean 'hysteresis'\?\)"),
    ({**ZE, "zone": {"shape": "sphere", "rdius_mm": 3}}, r"rules\.r\.zone\.rdius_mm: unknown key"),
    ({**ZE, "zone": {"shape": "sphere"}}, r"rules\.r\.zone: .*a sphere zone takes 'radius_mm'"),
    ({"when": "zone_enter", "output": TTL}, r"rules\.r: .*'zone_enter' needs a 'zone'"),
    ({"when": "speed_above", "output": TTL}, r"'speed_mm_s' is needed by speed_above"),
    ({**ZE, "states": ["wait_respons"]}, r"no task state 'wait_respons' \(did you mean 'wait_response'\?\)"),
    ({**ZE, "output": {"kind": "ttl_train", "count": 3}}, r"a ttl_train needs count >= 2 and period_ms > 0"),
    ({**ZE, "when": "zone_entre"}, r"rules\.r\.when: "),
    ({**ZE, "lead_ms": 2}, r"'lead_ms' is for a rule on the predicted position"),
    ({**ZE, "position": "predicted"}, r"needs pipeline\.triangulator\.filter: kalman and predict_ms > 0"),
]


@pytest.mark.parametrize(("rule", "message"), MISTAKES)
def test_rule_mistakes_are_one_line_naming_the_key(
    tmp_path: Path, rule: dict[str, Any], message: str
) -> None:
    p = write_cfg(tmp_path, {"rules": {"r": rule}})
    with pytest.raises(ConfigError, match=message) as e:
        load_config(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_rules_in_a_config_load_and_prediction_needs_the_filter(tmp_path: Path) -> None:
    train = {"kind": "ttl_train", "count": 5, "period_ms": 20}
    box = {"shape": "box", "size_mm": [4, 4, 4]}
    rules = {
        "laser": {
            **ZE,
            "position": "predicted",
            "states": ["wait_response"],
            "hysteresis": 0.5,
            "output": train,
        },
        "box_out": {"when": "zone_exit", "zone": box, "output": {"kind": "task_event"}},
    }
    cfg = load_config(write_cfg(tmp_path, {"rules": rules}, predict_ms=8)).config.pipeline.closed_loop
    assert sorted(cfg.active_rules()) == ["box_out", "laser"] and cfg.uses_prediction
    assert cfg.rules["laser"].output.count == 5 and cfg.rules["box_out"].zone is not None
    # the built-in rules without 'rules'
    assert list(ClosedLoopConfig(enabled=True).active_rules()) == ["zone", "reach"]
    assert list(ClosedLoopConfig(enabled=True, sync_mark_on_reach=False).active_rules()) == ["zone"]


def test_task_states_in_the_config_are_the_tasks() -> None:
    from rig.config import TASK_STATES
    from rig.task import ReachingTask

    task = ReachingTask(load_config().config.experiment.reaching)
    assert set(TASK_STATES) == set(task._states)


# ----------------------------------------------------------------------------- truth metrics
def fake_session(
    tmp_path: Path, truth_x: np.ndarray, events: list[dict[str, Any]], rules: dict[str, Any]
) -> Session:
    n = len(truth_x)
    idx = np.arange(n)
    truth = {
        "trigger_index": idx,
        "t_trigger_ns": idx * 10_000_000 + 5_000_000_000,
        "paw_x": truth_x,
        "paw_y": np.zeros(n),
        "paw_z": np.zeros(n),
    }
    triggers = {"index": idx, "t_fw_us": idx * 10_000 + 1_000_000, "t_host_ns": truth["t_trigger_ns"]}
    state = {"topic": "task.event", "kind": "state", "state": "wait_response", "t_host_ns": 0}
    cfg = {"pipeline": {"closed_loop": {"enabled": True, "rules": rules}}}
    return Session(tmp_path, {}, cfg, None, {}, {}, {}, [], [state, *events], truth, {"triggers": triggers})  # type: ignore[arg-type]


def record(rule: str, trigger: int) -> dict[str, Any]:
    detail = {"rule": rule, "command": "ttl_pulse", "pulse": 0, "trigger_index": trigger, "sent": True}
    return {"topic": "task.event", "kind": "closed_loop", "state": "wait_response", "detail": detail}


def fired(trigger: int, t_fw_us: int) -> dict[str, Any]:
    return {
        "topic": "serial.event",
        "kind": "ttl_fired",
        "t_fw_us": t_fw_us,
        "values": {"cause_trigger_index": trigger},
    }


def test_truth_metrics_delay_misses_and_false_pulses(tmp_path: Path) -> None:
    # triggers every 10 ms (firmware: 1 s + 10 ms * k); the paw goes 9 -> 1 -> 9 -> 1 -> 9 ... in 1 mm steps
    x = np.concatenate(
        [np.arange(9, 0, -1), np.arange(1, 10), np.arange(9, 0, -1), np.arange(1, 10), [9.0] * 60]
    )
    x = x.astype(float)
    rules = {"in": {"when": "zone_enter", "zone": SPHERE, "output": TTL}}
    cfg_rules = ClosedLoopConfig.model_validate({"enabled": True, "rules": rules}).active_rules()
    t = np.arange(len(x)) * 10_000.0 + 1_000_000
    entries = true_events(cfg_rules["in"], t, np.stack([x, 0 * x, 0 * x], 1))
    # 5 mm is reached exactly at samples 4 and 22 (x = 5): the crossing is that trigger's time
    assert entries == [pytest.approx(1_040_000), pytest.approx(1_220_000)]
    # pulse 1: 7 ms after the first entry; the second entry has none (a miss); a pulse at 1.6 s is false
    events = [record("in", 5), fired(5, 1_047_000), record("in", 60), fired(60, 1_600_000)]
    s = fake_session(tmp_path, x, events, rules)
    recs = closed_loop_records(s)
    assert [r["status"] for r in recs] == ["pin", "pin"] and recs[0]["trigger_to_pin_ms"] == pytest.approx(
        -3.0
    )
    m = truth_metrics(s, cfg_rules, recs)["in"]
    assert (m["true_events"], m["expected"], m["pulses"], m["misses"], m["false_pulses"]) == (2, 2, 2, 1, 1)
    assert m["delay_ms_p50"] == pytest.approx(7.0) and m["delay_ms_max"] == pytest.approx(7.0)
    # outside the rule's states the entries are gated, not missed
    gated = {"in": {**rules["in"], "states": ["iti"]}}
    g = truth_metrics(
        s, ClosedLoopConfig.model_validate({"enabled": True, "rules": gated}).active_rules(), []
    )
    assert (g["in"]["gated"], g["in"]["expected"], g["in"]["misses"]) == (2, 0, 0)


# ----------------------------------------------------------------------------- a real recorded reach
def reference_entries(d: np.ndarray, h: float) -> list[int]:
    """Zone entries by hand: in at d <= 0, out at d > h, NaN skipped; the first sample sets the state."""
    out, inside = [], None
    for i, v in enumerate(d):
        if np.isnan(v):
            continue
        now = bool(v <= h if inside else v <= 0)
        if inside is False and now:
            out.append(i)
        inside = now
    return out


def test_rules_on_a_recorded_3d_reach(shared_data: Path) -> None:
    """DLC2Kinematics' 3-D reaching demo (800 frames, 17.5 % NaN): the right wrist's zone entries match
    a hand-written reference, hysteresis only removes entries, the refractory period spaces them."""
    from analysis.io.pose import read_dlc

    src = shared_data / "dlc2kinematics-mouse-reaching" / "reachingDEMO_3D.h5"
    if not src.exists():
        pytest.skip(f"{src} not found (set DEEPBEHAVIOR_SHARED_DATA)")
    wrist = read_dlc(src).part("Right_wrist") * 10  # cm -> mm (units not stated; the scale is)
    ok = np.isfinite(wrist).all(axis=1)
    centre = np.nanmedian(wrist, axis=0)
    radius = float(np.nanpercentile(np.linalg.norm(wrist[ok] - centre, axis=1), 30))
    zone = {"shape": "sphere", "center_mm": centre.tolist(), "radius_mm": radius}
    d = np.linalg.norm(wrist - centre, axis=1) - radius
    counts = []
    for h in (0.0, 1.0, 3.0):
        rule = engine({"in": {"when": "zone_enter", "zone": zone, "hysteresis": h, "output": TTL}})
        got = []
        for i, p in enumerate(wrist):
            got += rule.step(pt(i, tuple(float(v) for v in p)), i * PERIOD_NS)  # type: ignore[arg-type]
        assert fired_at(got) == reference_entries(d, h)
        counts.append(len(got))
    assert counts[0] >= counts[1] >= counts[2] and counts[0] > counts[2] > 0
    rule = engine({"in": {"when": "zone_enter", "zone": zone, "refractory_s": 0.3, "output": TTL}})
    got = [a for i, p in enumerate(wrist) for a in rule.step(pt(i, tuple(float(v) for v in p)), 0)]  # type: ignore[arg-type]
    gaps = np.diff([a.t_ref_ns for a in got])
    assert 0 < len(got) < counts[0] and (gaps >= 300_000_000).all()
    assert rule.edges == {"in": counts[0]}
