"""Figures of a recorded session against what it should have been: 3-D error against the simulator's
truth, closed-loop latency on the firmware clock."""

from __future__ import annotations

import numpy as np

from rig.session import Session


def error_vs_truth_mm(
    points: dict[str, np.ndarray], truth: dict[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """Distance (mm) from each valid 3-D point to the simulator's true paw centre at the same trigger:
    ``{"raw": ..., "filtered": ...}`` (``x,y,z`` and ``x_filt,y_filt,z_filt`` columns of a points table).
    Empty arrays when there is no truth (a real rig) or no valid point."""
    empty = {"raw": np.zeros(0), "filtered": np.zeros(0)}
    if truth is None or not len(truth.get("trigger_index", [])) or not len((points or {}).get("valid", [])):
        return empty
    lut = {int(k): i for i, k in enumerate(truth["trigger_index"])}
    valid = points["valid"].astype(bool) & np.array([int(k) in lut for k in points["trigger_index"]], bool)
    rows = [lut[int(k)] for k in points["trigger_index"][valid]]
    true_xyz = np.stack([truth[f"paw_{c}"][rows] for c in "xyz"], 1).astype(float)
    out = {}
    for name, cols in (("raw", ("x", "y", "z")), ("filtered", ("x_filt", "y_filt", "z_filt"))):
        est = np.stack([points[c][valid] for c in cols], 1).astype(float)
        err = np.linalg.norm(est - true_xyz, axis=1)
        out[name] = err[np.isfinite(err)]
    return out


def closed_loop_latencies_ms(s: Session) -> np.ndarray:
    """Per closed-loop TTL pulse: trigger pulse of the frame that caused it -> TTL pin edge, in ms, both
    on the firmware's clock (exposure, transfer, detection, 3-D, rule, serial and firmware included)."""
    trig = s.extra.get("triggers")
    if not trig or not len(trig.get("index", [])):
        return np.zeros(0)
    fw = dict(zip(trig["index"].tolist(), trig["t_fw_us"].tolist()))
    out = []
    for e in s.events:
        if e.get("topic") == "serial.event" and e.get("kind") == "ttl_fired":
            k = e.get("values", {}).get("cause_trigger_index", -1)
            if k in fw and fw[k] >= 0 and e.get("t_fw_us", -1) >= 0:
                out.append((e["t_fw_us"] - fw[k]) / 1000.0)
    return np.asarray(out, dtype=float)
