"""Batch reanalysis of recorded sessions, on Dask.

For each session: rebuild every stereo set from the recorded detections and run it through
:class:`analysis.tracking.PointTracker` with the session's own calibration and triangulator settings
(the code the online triangulator runs), in the online order. The result goes to
``<session>/reanalysis/points3d.csv`` (same columns as the online table) and ``summary.json``,
which also records how far the offline 3-D is from the online 3-D (it should be ~0: same code).

Sessions already reanalysed are skipped (resumable) unless ``force``; a session that fails is reported
and the others go on.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from analysis.tracking import PointTracker
from rig.errors import InputError
from rig.recorder import POINT_COLUMNS, Table
from rig.session import Session, load_session, write_json_atomic

OUT_DIR = "reanalysis"


def detections_by_set(session: Session) -> dict[int, dict[str, np.ndarray]]:
    """trigger index -> camera -> (K, 5) boxes from ``detections.csv``."""
    d = session.detections
    sets: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    if not d or not len(d.get("trigger_index", [])):
        return {}
    for i in range(len(d["trigger_index"])):
        k, cam = int(d["trigger_index"][i]), str(d["camera"][i])
        rows = sets[k][cam]
        if int(d["n_boxes"][i]) > 0:
            rows.append([float(d[c][i]) for c in ("x1", "y1", "x2", "y2", "confidence")])
    return {
        k: {c: np.array(v, dtype=np.float64).reshape(-1, 5) for c, v in cams.items()}
        for k, cams in sets.items()
    }


def retriangulate(session: Session) -> dict[str, np.ndarray]:
    """Re-run the online triangulation over a recorded session; columns like ``points3d.csv``."""
    cfg = session.config
    tc = cfg["pipeline"]["triangulator"]
    names = list(cfg["rig"]["cameras"])
    cams = [session.calibration[n] for n in names]
    tracker = PointTracker(
        cams,
        float(cfg["rig"]["trigger"]["rate_hz"]),
        float(tc["min_confidence"]),
        float(tc["max_reproj_error_px"]),
        (float(tc["process_noise_mm"]), float(tc["measurement_noise_mm"]))
        if tc["filter"] == "kalman"
        else None,
        float(tc["predict_ms"]) / 1000,
    )
    sets = detections_by_set(session)
    online = session.points3d
    order = [int(k) for k in online["trigger_index"]] if online else sorted(sets)
    out: dict[str, list] = {
        c: []
        for c in (
            "trigger_index",
            "x",
            "y",
            "z",
            "x_filt",
            "y_filt",
            "z_filt",
            "valid",
            "reproj_error_px",
            "reason",
        )
    }
    for k in order:
        cams_boxes = sets.get(k, {})
        boxes = [cams_boxes.get(n, np.zeros((0, 5))) for n in names]
        r = tracker.solve(k, boxes)
        out["trigger_index"].append(k)
        for c, v in zip(("x", "y", "z"), r.xyz):
            out[c].append(v)
        for c, v in zip(("x_filt", "y_filt", "z_filt"), r.xyz_filtered):
            out[c].append(v)
        out["valid"].append(int(r.valid))
        out["reproj_error_px"].append(r.reproj_error_px)
        out["reason"].append(r.reason)
    return {c: np.asarray(v) for c, v in out.items()}


def reanalyze_session(path: str | Path, force: bool = False) -> dict[str, Any]:
    """Reanalyse one session folder; returns its summary (also written to disk)."""
    p = Path(path)
    done = p / OUT_DIR / "summary.json"
    if done.exists() and not force:
        return {**json.loads(done.read_text()), "skipped": True}
    t0 = time.perf_counter()
    s = load_session(p)
    if not s.detections:
        raise InputError(f"{p}: no detections.csv to reanalyse")
    pts = retriangulate(s)
    (p / OUT_DIR).mkdir(exist_ok=True)
    table = Table(p / OUT_DIR / "points3d.csv", [c for c in POINT_COLUMNS if c in pts])
    for i in range(len(pts["trigger_index"])):
        table.write([_fmt(pts[c][i]) for c in table.columns])
    table.close()
    summary: dict[str, Any] = {
        "session": str(p),
        "n_points": len(pts["trigger_index"]),
        "valid": int(pts["valid"].sum()),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    on = s.points3d
    if on and len(on["trigger_index"]):
        # Online, a stereo set still incomplete after pair_timeout_ms is solved with the views it has; the
        # recording holds every detection, so offline such a set may be complete. Compare the rest.
        timed_out = np.array([str(r) == "fewer than 2 views" for r in on["reason"]]) & (pts["valid"] == 1)
        same = ~timed_out
        a = np.stack([pts[c] for c in "xyz"], 1)[same]
        b = np.stack([on[c] for c in "xyz"], 1).astype(float)[same]
        both = np.isfinite(a).all(1) & np.isfinite(b).all(1)
        summary["max_abs_diff_vs_online_mm"] = float(np.abs(a[both] - b[both]).max()) if both.any() else None
        summary["validity_agrees"] = bool(np.array_equal(pts["valid"][same], on["valid"].astype(int)[same]))
        summary["online_sets_timed_out_completed_offline"] = int(timed_out.sum())
    tmp = p / OUT_DIR / "summary.json"
    write_json_atomic(tmp, summary)
    return summary


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return "" if math.isnan(v) else f"{float(v):.10g}"
    return str(v)


def run_batch(
    sessions: Iterable[str | Path],
    scheduler: str | None = None,
    n_workers: int = 2,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    slurm: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Reanalyse sessions on a Dask cluster; returns {session: summary or {"error": message}}."""
    from dask.distributed import Client, LocalCluster, as_completed

    paths = [str(Path(s).resolve()) for s in sessions]
    cluster: Any = None
    if scheduler:
        client = Client(scheduler)
    elif slurm is not None:
        from dask_jobqueue import SLURMCluster

        cluster = SLURMCluster(**slurm)
        cluster.scale(n_workers)
        client = Client(cluster)
    else:
        cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, dashboard_address=None, processes=True
        )
        client = Client(cluster)
    results: dict[str, dict[str, Any]] = {}
    try:
        futures = {client.submit(reanalyze_session, p, force, pure=False): p for p in paths}
        for i, fut in enumerate(as_completed(futures), 1):
            p = futures[fut]
            try:
                results[p] = fut.result()
            except Exception as exc:
                results[p] = {"error": f"{type(exc).__name__}: {exc}"}
            if progress:
                progress(i, len(paths))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return results
