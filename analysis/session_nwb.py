"""Export a rig session folder (format: ``rig/SESSION.md``) to NWB with :func:`analysis.nwb.export_nwb`.

Reads the session's plain files with pandas/json (no rig import): ``session.json`` (subject, rig, start),
``trials.csv``, ``events.jsonl``, ``<camera>.frames.csv`` (+ ``<camera>.mkv`` as an external file),
``detections.csv`` (2-D: centre of the most confident box per class and frame) and ``points3d.csv`` (3-D).
Times become seconds from the first recorded frame (host monotonic clock).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from analysis.errors import AnalysisError
from analysis.nwb import PoseSeries, export_nwb


def _read_csv(path: Path) -> Any:
    import pandas as pd

    try:
        return pd.read_csv(path, on_bad_lines="skip")  # a crash may leave a torn last line
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"{path}: cannot read ({exc})") from None


def session_to_nwb(
    session_dir: str | Path, out_path: str | Path, species: str | None = "Mus musculus"
) -> Path:
    """Write ``session_dir`` as one NWB file at ``out_path``; returns the path."""
    d = Path(session_dir)
    try:
        meta = json.loads((d / "session.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AnalysisError(f"{d / 'session.json'}: cannot read session metadata ({exc})") from None
    if meta.get("format") != "deepbehavior-session":
        raise AnalysisError(
            f"{d / 'session.json'}: not a deepbehavior session (format {meta.get('format')!r})"
        )
    cams = [str(c) for c in meta.get("cameras", [])]
    frames = {}
    for cam in cams:
        f = _read_csv(d / f"{cam}.frames.csv")
        frames[cam] = f[(f["video_index"] >= 0) & (f["dropped"] == 0)].sort_values("video_index")
    starts = [int(f["t_host_ns"].min()) for f in frames.values() if len(f)]
    if not starts:
        raise AnalysisError(f"{d}: no recorded frames in any <camera>.frames.csv")
    t0 = min(starts)

    def sec(ns: Any) -> np.ndarray:
        return (np.asarray(ns, dtype=np.int64) - t0) * 1e-9

    trials = None
    if (d / "trials.csv").exists():
        trials = _read_csv(d / "trials.csv")
        trials["t_start_s"], trials["t_end_s"] = sec(trials["t_start_ns"]), sec(trials["t_end_ns"])
        trials["outcome"] = trials["outcome"].fillna("").astype(str)
    events = []
    if (d / "events.jsonl").exists():
        lines = (d / "events.jsonl").read_text().splitlines()
        for n, line in enumerate(lines, 1):
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines):
                    continue  # torn last line
                raise AnalysisError(f"{d / 'events.jsonl'}: line {n} is not JSON") from None
            if isinstance(ev, dict) and isinstance(ev.get("t_host_ns"), int) and ev["t_host_ns"] >= 0:
                label = ":".join(str(ev[k]) for k in ("type", "kind") if ev.get(k)) or str(ev.get("topic"))
                events.append((float(sec(ev["t_host_ns"])), label))
    videos = {cam: (f"{cam}.mkv", sec(f["t_host_ns"])) for cam, f in frames.items()}
    pose: dict[str, PoseSeries] = {}
    if (d / "detections.csv").exists():
        det = _read_csv(d / "detections.csv")
        det = det[det["n_boxes"] > 0]
        for cam, f in frames.items():
            sub = det[det["camera"] == cam].sort_values("confidence")
            classes = sorted(int(c) for c in sub["class_id"].unique())
            if not classes:
                continue
            row_of = {int(s): i for i, s in enumerate(f["seq"])}
            pts = np.full((len(f), len(classes), 2), np.nan)
            conf = np.zeros((len(f), len(classes)))
            for r in sub.itertuples():
                i = row_of.get(int(r.seq))
                if i is not None:  # the most confident box is written last
                    k = classes.index(int(r.class_id))
                    pts[i, k] = ((r.x1 + r.x2) / 2, (r.y1 + r.y2) / 2)
                    conf[i, k] = r.confidence
            pose[cam] = PoseSeries(pts, sec(f["t_host_ns"]), [f"class{c}" for c in classes], conf)
    if (d / "points3d.csv").exists():
        p3 = _read_csv(d / "points3d.csv")
        names = list(dict.fromkeys(str(n) for n in p3["name"]))
        trig = np.sort(p3["trigger_index"].unique())
        row = {int(t): i for i, t in enumerate(trig)}
        xyz = np.full((len(trig), len(names), 3), np.nan)
        t_ns = np.zeros(len(trig), dtype=np.int64)
        for r in p3.itertuples():
            i = row[int(r.trigger_index)]
            t_ns[i] = r.t_frame_ns
            if int(r.valid):
                xyz[i, names.index(str(r.name))] = (r.x, r.y, r.z)
        pose["3d"] = PoseSeries(
            xyz, sec(t_ns), names, unit="mm", reference_frame="calibration world frame (mm)"
        )
    started = datetime.fromisoformat(str(meta.get("started")))
    if started.tzinfo is None:
        started = started.astimezone()  # the rig writes local time
    return export_nwb(
        out_path,
        identifier=d.name,
        session_description=f"{meta.get('rig', 'rig')} session ({meta.get('status', 'unknown')})",
        session_start_time=started,
        subject={"subject_id": str(meta.get("subject", "unknown")), "species": species},
        trials=trials[["trial", "t_start_s", "t_end_s", "outcome"]] if trials is not None else None,
        events=events,
        videos=videos,
        pose=pose,
    )
