"""Closed-loop rule: zone entry -> TTL pulse with refractory period; reach onset -> sync mark."""

from __future__ import annotations

import math

from rig.closed_loop import ClosedLoopRule
from rig.config import ClosedLoopConfig
from rig.messages import Point3D

REST = (2.0, -22.0, -14.0)


def pt(i: int, xyz: tuple[float, float, float], valid: bool = True) -> Point3D:
    return Point3D(
        name="paw",
        trigger_index=i,
        xyz=xyz,
        xyz_filtered=xyz,
        xyz_predicted=xyz,
        valid=valid,
        reproj_error_px=0.1,
        cameras=["front", "side"],
        t_frame_ns=i * 8_064_516,
        t_trigger_ns=i * 8_064_516,
        t_det_ns=0,
        t_out_ns=0,
    )


def path() -> list[tuple[float, float, float]]:
    """rest -> pellet -> rest -> pellet, 10 samples per leg."""
    out = []
    for leg in range(4):
        a, b = (REST, (0.0, 0.0, 0.0)) if leg % 2 == 0 else ((0.0, 0.0, 0.0), REST)
        for k in range(10):
            f = k / 9
            out.append(tuple(a[j] + f * (b[j] - a[j]) for j in range(3)))
    return out  # type: ignore[return-value]


def test_zone_entry_and_reach_onset_with_cause() -> None:
    rule = ClosedLoopRule(ClosedLoopConfig(enabled=True, refractory_s=0.0, ttl_width_us=250))
    cmds = []
    for i, xyz in enumerate(path()):
        cmds += rule.update(pt(i, xyz), t_host_ns=10_000 + i)
    names = [c.name for c in cmds]
    assert names.count("ttl_pulse") == 2 and names.count("sync_pulse") == 2
    first_ttl = next(c for c in cmds if c.name == "ttl_pulse")
    i = first_ttl.cause_trigger_index
    assert math.dist(path()[i], (0, 0, 0)) <= 6.0 and math.dist(path()[i - 1], (0, 0, 0)) > 6.0
    assert first_ttl.cause_t_frame_ns == i * 8_064_516 and first_ttl.t_host_ns == 10_000 + i
    assert first_ttl.args == {"width_us": 250}


def test_refractory_and_invalid_points() -> None:
    rule = ClosedLoopRule(ClosedLoopConfig(enabled=True, refractory_s=10.0, sync_mark_on_reach=False))
    cmds = []
    for i, xyz in enumerate(path()):
        cmds += rule.update(pt(i, xyz), 0)
    assert [c.name for c in cmds] == ["ttl_pulse"]  # second entry inside the refractory period
    assert rule.zone_entries == 2
    nan = (math.nan, math.nan, math.nan)
    assert rule.update(pt(99, nan), 0) == [] and rule.update(pt(100, (0, 0, 0), valid=False), 0) == []


def test_disabled_rule_is_silent() -> None:
    rule = ClosedLoopRule(ClosedLoopConfig(enabled=False))
    assert all(rule.update(pt(i, xyz), 0) == [] for i, xyz in enumerate(path()))
