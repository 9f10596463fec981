"""What the closed loop did, and (in simulation) how it did against the truth. Pure computation over a
recorded session, plus the one file it writes: ``closed_loop.csv`` (rig/SESSION.md).

* **Records** (:func:`closed_loop_records`): each closed-loop action the task node sent (its
  ``closed_loop`` task event: rule, trigger index, observed and judged position, horizon) joined to the
  firmware's word on its pin: ``ttl_fired`` for a TTL pulse, the ``sync_pulse`` ack (built right after
  the pin is set) for a sync mark, both on the firmware clock. Commands of one kind caused by one
  trigger are matched in order (they are sent and answered in order).
* **Truth** (:func:`truth_metrics`, simulation only): the rule's own condition (same zone, threshold and
  hysteresis; :mod:`rig.closed_loop`) run over the simulator's true paw at every trigger; a change of
  state between triggers ``k-1`` and ``k`` happened where the signal, linearly interpolated between
  them, crosses the threshold, on the firmware clock of the two triggers. True events outside the
  rule's task states (or before the task started) are ``gated``; those within ``refractory_s`` of the
  previous expected one are ``refractory``; neither is expected to fire. Each expected event is matched
  to the rule's nearest first pulse within ``tolerance_s`` (plus the rule's output delay): the delay
  is pin - true event; an expected event with none is a *miss*; a pulse matched to no true event is a
  *false pulse*.
* **Prediction error**: where a rule acts on the predicted position, the prediction at the horizon the
  rule used (median) against the truth at that moment, over every valid 3-D point.
"""

from __future__ import annotations

import bisect
import csv
import logging
import os
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from rig.closed_loop import edge_fires, next_level, zone_distance
from rig.config import ClosedLoopConfig, RuleConfig
from rig.errors import RigError
from rig.session import Session

log = logging.getLogger(__name__)

RECORDS_FILE = "closed_loop.csv"
RECORD_COLUMNS = [
    "rule",
    "output",
    "command",
    "pulse",
    "trigger_index",
    "state",
    "position",
    "x_obs",
    "y_obs",
    "z_obs",
    "x_used",
    "y_used",
    "z_used",
    "latency_ms",
    "horizon_ms",
    "value",
    "t_trigger_ns",
    "t_decided_ns",
    "t_sent_ns",
    "t_trigger_fw_us",
    "t_pin_fw_us",
    "trigger_to_pin_ms",
    "status",
]
TOLERANCE_S = 0.2


def _pin_events(events: list[dict[str, Any]]) -> dict[tuple[str, int], deque[dict[str, Any]]]:
    """The firmware's answers to closed-loop commands, by (command, causing trigger), in order."""
    out: dict[tuple[str, int], deque[dict[str, Any]]] = defaultdict(deque)
    for e in events:
        if e.get("topic") != "serial.event":
            continue
        v = e.get("values") or {}
        idx = v.get("cause_trigger_index", -1)
        if not isinstance(idx, int) or idx < 0:
            continue
        kind = e.get("kind")
        if kind == "ttl_fired":
            out[("ttl_pulse", idx)].append({"status": "pin", "t_fw_us": e.get("t_fw_us", -1)})
        elif kind in ("ack", "nak") and v.get("cmd_name") == "sync_pulse":
            status = "pin" if kind == "ack" else f"nak: {v.get('reason', '')}"
            out[("sync_pulse", idx)].append({"status": status, "t_fw_us": e.get("t_fw_us", -1)})
    return out


def _trigger_fw(s: Session) -> dict[int, int]:
    trig = s.extra.get("triggers")
    if not trig or not len(trig.get("index", [])):
        return {}
    return {int(k): int(t) for k, t in zip(trig["index"], trig["t_fw_us"], strict=True) if int(t) >= 0}


def closed_loop_records(s: Session) -> list[dict[str, Any]]:
    """One row per closed-loop action (columns :data:`RECORD_COLUMNS`), in the order they were sent."""
    pins = _pin_events(s.events)
    fw = _trigger_fw(s)
    rows = []
    for e in s.events:
        if e.get("topic") != "task.event" or e.get("kind") != "closed_loop":
            continue
        d = e.get("detail") or {}
        idx = int(d.get("trigger_index", -1))
        cmd = str(d.get("command", ""))
        t_pin, status = -1, "event" if not cmd else "not_sent"
        if cmd and d.get("sent", True):
            q = pins.get((cmd, idx))
            status = "no_reply"
            if q:
                p = q.popleft()
                status, t_pin = p["status"], int(p["t_fw_us"]) if p["status"] == "pin" else -1
        t_trig = fw.get(idx, -1)
        lat = round((t_pin - t_trig) / 1000, 4) if t_pin >= 0 and t_trig >= 0 else ""
        obs, used = d.get("xyz_observed") or [""] * 3, d.get("xyz_used") or [""] * 3
        rows.append(
            {
                "rule": d.get("rule", ""),
                "output": d.get("output", ""),
                "command": cmd,
                "pulse": d.get("pulse", 0),
                "trigger_index": idx,
                "state": e.get("state", ""),
                "position": d.get("position", ""),
                **dict(zip(("x_obs", "y_obs", "z_obs"), obs, strict=False)),
                **dict(zip(("x_used", "y_used", "z_used"), used, strict=False)),
                "latency_ms": d.get("latency_ms", ""),
                "horizon_ms": d.get("horizon_ms", ""),
                "value": d.get("value", ""),
                "t_trigger_ns": d.get("t_trigger_ns", -1),
                "t_decided_ns": d.get("t_decided_ns", -1),
                "t_sent_ns": d.get("t_sent_ns", -1),
                "t_trigger_fw_us": t_trig,
                "t_pin_fw_us": t_pin,
                "trigger_to_pin_ms": lat,
                "status": status,
            }
        )
    return rows


def write_records(path: Path, rows: list[dict[str, Any]]) -> None:
    """``closed_loop.csv`` in session folder ``path`` (written whole, then renamed into place)."""
    tmp = path / (RECORDS_FILE + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, RECORD_COLUMNS)
        w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path / RECORDS_FILE)


# ----------------------------------------------------------------------------- truth
def true_events(rule: RuleConfig, t: np.ndarray, xyz_n3: np.ndarray) -> list[float]:
    """When the rule's condition really changed (the times ``t`` of the samples, interpolated), over
    the true positions ``xyz_n3`` (N, 3) mm. Dwell: when the paw had really been in the zone ``dwell_s``."""
    out: list[float] = []
    level: bool | None = None
    prev_v = np.nan
    t_in = None
    for k in range(len(t)):
        if rule.zone is not None:
            v = zone_distance(rule.zone, tuple(xyz_n3[k]))
        elif k == 0 or t[k] <= t[k - 1]:
            continue
        else:
            v = float(np.linalg.norm(xyz_n3[k] - xyz_n3[k - 1]) / (t[k] - t[k - 1]) * 1e6)  # t in us
        if not np.isfinite(v):
            continue
        after = next_level(rule, level, v)
        if level is not None and after != level and k > 0:
            if rule.speed_mm_s is not None:
                bound = rule.speed_mm_s - rule.hysteresis if level else rule.speed_mm_s
            else:
                bound = rule.hysteresis if level else 0.0
            frac = (bound - prev_v) / (v - prev_v) if v != prev_v else 1.0
            tc = float(t[k - 1] + min(max(frac, 0.0), 1.0) * (t[k] - t[k - 1]))
            if rule.when == "dwell":
                t_in = tc if after else None
            elif edge_fires(rule, level, after):
                out.append(tc)
        if rule.when == "dwell" and after and t_in is not None and t[k] - t_in >= rule.dwell_s * 1e6:  # type: ignore[operator]
            out.append(t_in + rule.dwell_s * 1e6)  # type: ignore[operator]
            t_in = None
        level, prev_v = after, v
    return out


def _state_timeline(events: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
    times, states = [], []
    for e in events:
        if e.get("topic") == "task.event" and e.get("kind") == "state":
            times.append(int(e.get("t_host_ns", -1)))
            states.append(str(e.get("state", "")))
    order = np.argsort(times, kind="stable")
    return [times[i] for i in order], [states[i] for i in order]


def _pct(x: list[float], q: float) -> float:
    return round(float(np.percentile(x, q)), 3)


def truth_metrics(
    s: Session,
    rules: dict[str, RuleConfig],
    records: list[dict[str, Any]],
    tolerance_s: float = TOLERANCE_S,
    raw: bool = False,
) -> dict[str, dict[str, Any]]:
    """Per rule, its firings against the simulator's truth (see the module docstring). Delays are in
    ms on the firmware clock for pin outputs, on the host clock for task events (``raw``: every one,
    as ``delays_ms``). Empty without truth."""
    truth = s.truth
    fw = _trigger_fw(s)
    if truth is None or not len(truth.get("trigger_index", [])):
        return {}
    idx = truth["trigger_index"].astype(int)
    xyz = np.stack([truth[f"paw_{c}"] for c in "xyz"], 1).astype(float)
    host = truth["t_trigger_ns"].astype(np.int64)
    times, states = _state_timeline(s.events)
    keep_fw = np.array([k in fw for k in idx], bool)
    out: dict[str, dict[str, Any]] = {}
    for name, rule in rules.items():
        pin = rule.output.kind != "task_event"
        if pin:  # firmware clock, us
            sel = keep_fw
            t = np.array([fw[k] for k in idx[sel]], float)
        else:  # host clock, in us too (the same arithmetic)
            sel = np.ones(len(idx), bool)
            t = host.astype(float) / 1000
        if len(t) < 2:
            continue
        t_host = host[sel].astype(float)
        truth_t = true_events(rule, t, xyz[sel])
        expected, gated, refractory = [], 0, 0
        last: float | None = None
        for tc in truth_t:
            th = float(np.interp(tc, t, t_host))  # the task state when it happened
            i = bisect.bisect_right(times, th) - 1
            state = states[i] if i >= 0 else None
            if state is None or state == "paused" or (rule.states and state not in rule.states):
                gated += 1
            elif last is not None and tc - last < rule.refractory_s * 1e6:
                refractory += 1
            else:
                expected.append(tc)
                last = tc
        mine = [r for r in records if r["rule"] == name and int(r["pulse"]) == 0]
        if pin:
            pulses = [float(r["t_pin_fw_us"]) for r in mine if r["status"] == "pin"]
        else:
            pulses = [float(r["t_sent_ns"]) / 1000 for r in mine if int(r["t_sent_ns"]) >= 0]
        pulses.sort()
        used = [False] * len(pulses)
        delays, misses = [], 0
        lag = rule.output.delay_ms * 1000
        tol = tolerance_s * 1e6
        for tc in expected:
            best = None
            for j, tp in enumerate(pulses):
                near = not used[j] and tc - tol <= tp <= tc + lag + tol
                if near and (best is None or abs(tp - tc - lag) < abs(pulses[best] - tc - lag)):
                    best = j
            if best is None:
                misses += 1
            else:
                used[best] = True
                delays.append((pulses[best] - tc) / 1000)
        row: dict[str, Any] = {
            "when": rule.when,
            "output": rule.output.kind,
            "position": rule.position,
            "clock": "firmware" if pin else "host",
            "true_events": len(truth_t),
            "gated": gated,
            "refractory": refractory,
            "expected": len(expected),
            "pulses": len(pulses),
            "misses": misses,
            "false_pulses": used.count(False),
        }
        if delays:
            row.update(
                delay_ms_p50=_pct(delays, 50),
                delay_ms_p99=_pct(delays, 99),
                delay_ms_max=round(max(delays), 3),
                abs_delay_ms_p50=_pct([abs(d) for d in delays], 50),
            )
        if raw:
            row["delays_ms"] = delays
        out[name] = row
    return out


def prediction_error_mm(
    s: Session, cfg: ClosedLoopConfig, predict_ms: float, horizon_ms: float
) -> dict[str, Any]:
    """The filter's constant-velocity prediction taken ``horizon_ms`` past each valid 3-D point's
    trigger, against the true paw then (interpolated between triggers): median and p95 in mm."""
    p, truth = s.points3d, s.truth
    if truth is None or not p or not len(p.get("valid", [])) or not predict_ms > 0:
        return {}
    rate = float(
        s.meta.get("trigger_rate_hz") or s.config.get("rig", {}).get("trigger", {}).get("rate_hz", 0)
    )
    if not rate > 0:
        return {}
    ok = p["valid"].astype(bool) & (p["name"] == cfg.point)
    filt = np.stack([p[c][ok] for c in ("x_filt", "y_filt", "z_filt")], 1).astype(float)
    pred = np.stack([p[c][ok] for c in ("x_pred", "y_pred", "z_pred")], 1).astype(float)
    at = filt + (pred - filt) * (horizon_ms / predict_ms)
    when = p["trigger_index"][ok].astype(float) + horizon_ms / 1000 * rate
    ti = truth["trigger_index"].astype(float)
    order = np.argsort(ti)
    true_at = np.stack([np.interp(when, ti[order], truth[f"paw_{c}"].astype(float)[order]) for c in "xyz"], 1)
    inside = (when >= ti.min()) & (when <= ti.max())
    err = np.linalg.norm(at - true_at, axis=1)[inside]
    err = err[np.isfinite(err)]
    if not len(err):
        return {}
    return {
        "horizon_ms": round(horizon_ms, 3),
        "points": len(err),
        "median_mm": round(float(np.median(err)), 3),
        "p95_mm": round(float(np.percentile(err, 95)), 3),
    }


def closed_loop_summary(s: Session) -> dict[str, Any]:
    """Writes ``closed_loop.csv`` into the session folder and returns the summary's ``closed_loop_report``:
    ``records`` and, in simulation, ``truth`` (per rule) and ``prediction_error_mm``. Never raises on
    a session's content (a summary must not fail a session): a problem is ``report_error``."""
    try:
        raw = ((s.config.get("pipeline") or {}).get("closed_loop")) or {}
        cfg = ClosedLoopConfig.model_validate(raw)
        if not cfg.enabled:
            return {}
        records = closed_loop_records(s)
        write_records(s.path, records)
        out: dict[str, Any] = {"records": len(records)}
        lat = [float(r["trigger_to_pin_ms"]) for r in records if r["trigger_to_pin_ms"] != ""]
        if lat:
            out["records_trigger_to_pin_ms_p50"] = _pct(lat, 50)
            out["records_trigger_to_pin_ms_p99"] = _pct(lat, 99)
        truth = truth_metrics(s, cfg.active_rules(), records)
        if truth:
            out["truth"] = truth
        tri = (s.config.get("pipeline") or {}).get("triangulator") or {}
        horizons = [
            float(r["horizon_ms"]) for r in records if r["position"] == "predicted" and r["pulse"] == 0
        ]
        if horizons and s.truth is not None:
            err = prediction_error_mm(
                s, cfg, float(tri.get("predict_ms", 0) or 0), float(np.median(horizons))
            )
            if err:
                out["prediction_error_mm"] = err
        return out
    except (RigError, OSError, ValidationError, KeyError, ValueError, TypeError) as exc:
        log.warning("closed-loop report of %s failed: %s", s.path, exc)
        return {"report_error": f"{type(exc).__name__}: {exc}"}


__all__ = [
    "closed_loop_records",
    "closed_loop_summary",
    "prediction_error_mm",
    "true_events",
    "truth_metrics",
]
