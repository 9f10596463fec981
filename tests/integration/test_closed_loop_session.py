"""The closed loop judged against the simulator's truth in a real simulated session (firmware in simavr,
synthetic cameras, the bundled detector): per-event records in closed_loop.csv, and per rule the delay
from the true event to the pin, misses and false pulses in the summary."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from rig.closed_loop_report import RECORD_COLUMNS
from tests.sessions import run_session

pytestmark = [pytest.mark.slow, pytest.mark.firmware]

REPO = Path(__file__).resolve().parents[2]
ZONE = "{radius_mm: 6}"
TTL = "{kind: ttl_pulse, width_us: 200}"
RULES = (
    "{"
    f"direct: {{when: zone_enter, zone: {ZONE}, refractory_s: 0.5, output: {TTL}}}, "
    f"late: {{when: zone_enter, zone: {ZONE}, refractory_s: 0.5, "
    "output: {kind: ttl_pulse, width_us: 200, delay_ms: 30}}, "
    f"ahead: {{when: zone_enter, zone: {ZONE}, refractory_s: 0.5, position: predicted, "
    "output: {kind: ttl_pulse, width_us: 200}}, "
    "far: {when: zone_enter, zone: {center_mm: [0, 40, 0], radius_mm: 3}, output: {kind: ttl_pulse}}, "
    f"gated: {{when: zone_enter, zone: {ZONE}, states: [iti], output: {{kind: ttl_pulse}}}}, "
    "mark: {when: reach_onset, zone: {center_mm: [2, -22, -14], radius_mm: 12}, output: {kind: sync_mark}}"
    "}"
)


@pytest.fixture(scope="module")
def firmware_built() -> None:
    subprocess.run(["make", "-s", "-C", str(REPO / "firmware"), "all"], check=True)


@pytest.mark.firmware
def test_session_judges_its_rules_against_the_truth(tmp_path: Path, firmware_built: None) -> None:
    r, s = run_session(
        tmp_path,
        "--set", "simulation.seed=3",
        "--set", "experiment.n_trials=1",
        "--set", "pipeline.triangulator.predict_ms=8",
        # the sync line carries the trigger: the 'mark' rule's sync marks cannot reach their pin
        "--set", "rig.arduino.ttl.sync=trigger",
        "--set", f"pipeline.closed_loop.rules={RULES}",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert s is not None and s.meta["status"] == "complete"
    cl = json.loads((s.path / "session.json").read_text())["summary"]["closed_loop_report"]
    assert "report_error" not in cl
    with open(s.path / "closed_loop.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == RECORD_COLUMNS and cl["records"] == len(rows)
    by = {name: [r for r in rows if r["rule"] == name] for name in ("direct", "late", "ahead", "mark")}
    # every TTL command reached its pin, after its trigger, on the firmware clock
    assert by["direct"] and all(
        r["status"] == "pin" and float(r["trigger_to_pin_ms"]) > 0 for r in by["direct"]
    )
    # the cause: the observed position was in the zone (the rule's own signal <= 0)
    assert all(float(r["value"]) <= 0 for r in by["direct"])
    # a late rule: sent 30 ms after it fired (a promise, host clock), so later against the truth too (bounds
    # looser than 30 ms: simavr's clock follows the host's only as well as a loaded machine lets it)
    assert by["late"] and all(int(r["t_sent_ns"]) - int(r["t_decided_ns"]) >= 30_000_000 for r in by["late"])
    t = cl["truth"]
    direct, late = t["direct"], t["late"]
    assert direct["expected"] >= 1 and direct["pulses"] >= 1
    assert direct["expected"] - direct["misses"] >= 1 and late["expected"] - late["misses"] >= 1
    assert direct["delay_ms_p50"] > 0  # acting on what was seen, the pin is never before the truth
    assert late["delay_ms_p50"] >= 20 and late["delay_ms_p50"] - direct["delay_ms_p50"] >= 10
    # a zone no reach comes near: no true entry, no pulse
    assert (t["far"]["true_events"], t["far"]["pulses"], t["far"]["false_pulses"]) == (0, 0, 0)
    # entries outside the rule's task states are gated: expected none, fired none
    g = t["gated"]
    assert g["true_events"] >= 1 and g["gated"] == g["true_events"] and g["pulses"] == 0 and g["misses"] == 0
    # a rule whose pin the command cannot reach: every reach onset a miss, no pulse
    m = t["mark"]
    assert m["expected"] >= 1 and m["pulses"] == 0 and m["misses"] == m["expected"]
    assert by["mark"] and all(r["status"] == "not_sent" for r in by["mark"])
    # prediction: its horizon is the latency it assumed (measured online, or the initial figure) or more
    assert by["ahead"] and all(float(r["horizon_ms"]) >= float(r["latency_ms"]) > 0 for r in by["ahead"])
    err = cl["prediction_error_mm"]
    assert err["points"] > 100 and 0 < err["median_mm"] < 5
