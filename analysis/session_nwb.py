"""Export a rig session folder (format: ``rig/SESSION.md``) to NWB with :func:`analysis.nwb.export_nwb`.

Reads the session's plain files with pandas/json (no rig import): ``session.json`` (subject, rig, start),
``trials.csv``, ``events.jsonl``, ``<camera>.frames.csv`` (+ ``<camera>.mkv`` as an external file),
``detections.csv`` (2-D: centre of the most confident box per class and frame) and ``points3d.csv`` (3-D).
Times are the session's one time base (:class:`analysis.tasks.reaching.TimeBase`): a frame or a 3-D point
is timed by its trigger pulse on the firmware clock (``triggers.csv``; ``index / trigger_rate_hz`` where a
pulse has no firmware time), never by when the host got it; host-clock times (trials, events) are placed
on it through the (trigger, host time) pairs. A rig without a trigger (every frame's trigger index -1)
keeps the host clock. Seconds from the first recorded frame.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.errors import AnalysisError
from analysis.io.rig_session import parse_events, read_session_meta
from analysis.nwb import PoseSeries, export_nwb
from analysis.tasks.reaching import TimeBase
from analysis.textfile import read_text

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def _read_csv(path: Path, numbers: Sequence[str] = ()) -> Any:
    """A session table as a DataFrame; a torn last line (a crash mid-write) is left out. The ``numbers``
    columns must be there and hold numbers; AnalysisError names the file and the line or byte at fault."""
    import pandas as pd

    text = read_text(path, "session table", AnalysisError)
    lines = text.split("\n")
    if (
        len(lines) > 2
        and lines[-1]
        and len(next(csv.reader([lines[-1]]), [])) != len(next(csv.reader([lines[0]]), []))
    ):
        log.info("%s: line %d is torn (a crash mid-write): left out", path, len(lines))
        text = "\n".join(lines[:-1]) + "\n"
    try:
        df = pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError) as exc:
        raise AnalysisError(f"{path}: cannot read ({' '.join(str(exc).split())})") from None
    missing = [c for c in numbers if c not in df.columns]
    if missing:
        raise AnalysisError(f"{path}: lacks column(s) {', '.join(missing)}")
    for c in numbers:
        col = pd.to_numeric(df[c], errors="coerce")
        bad = np.flatnonzero((col.isna() & df[c].notna()).to_numpy())
        if len(bad):
            raise AnalysisError(
                f"{path}: line {bad[0] + 2}, column {c!r}: {df[c].iloc[bad[0]]!r} is not a number"
            )
        df[c] = col
    return df


def _read_events(path: Path, sec: Any) -> list[tuple[float, str]]:
    """``events.jsonl`` (:func:`analysis.io.rig_session.parse_events`, the readers' one rule) as (seconds,
    label); a malformed line is left out with a warning naming it, a torn last line quietly."""
    events, bad, _torn = parse_events(read_text(path, "event log", AnalysisError))
    for n, problem in bad:
        log.warning("%s: line %d: %s; left out", path, n, problem)
    out = []
    for ev in events:
        if isinstance(ev.get("t_host_ns"), int) and ev["t_host_ns"] >= 0:
            label = ":".join(str(ev[k]) for k in ("type", "kind") if ev.get(k)) or str(ev.get("topic"))
            out.append((float(sec(ev["t_host_ns"])), label))
    return out


@dataclass
class _Clock:
    """The session's time base for NWB: trigger times on the firmware clock; the host clock only for a
    rig without a trigger."""

    base: TimeBase | None  # None: no trigger indices at all (host clock)

    def trigger_s(self, k: Any) -> np.ndarray:
        assert self.base is not None
        return self.base.times(np.asarray(k, dtype=np.int64))[0]

    def host_s(self, ns: Any) -> np.ndarray:
        if self.base is None:
            return np.asarray(ns, dtype=np.int64) * 1e-9
        return self.base.from_host_ns(ns)

    def frame_s(self, f: pd.DataFrame) -> np.ndarray:
        k = f["trigger_index"].to_numpy(np.int64)
        if self.base is None:
            return self.host_s(f["t_host_ns"])
        t = self.host_s(f["t_host_ns"])  # a frame without a trigger index (none expected on a triggered rig)
        ok = k >= 0
        t[ok] = self.trigger_s(k[ok])
        return t


def _clock(d: Path, meta: dict[str, Any], frames: dict[str, pd.DataFrame]) -> _Clock:
    pairs = [f[f["trigger_index"] >= 0] for f in frames.values()]
    if not any(len(p) for p in pairs):
        return _Clock(None)
    rate = meta.get("trigger_rate_hz")
    if not isinstance(rate, int | float) or not rate > 0:
        raise AnalysisError(
            f"{d / 'session.json'}: trigger_rate_hz: expected a positive number, got {rate!r}"
        )
    triggers = None
    if (d / "triggers.csv").exists():
        t = _read_csv(d / "triggers.csv", ("index", "t_host_ns", "t_fw_us"))
        triggers = {c: t[c].to_numpy(np.int64) for c in ("index", "t_host_ns", "t_fw_us")}
    host = (
        np.concatenate([p["trigger_index"].to_numpy(np.int64) for p in pairs]),
        np.concatenate([p["t_host_ns"].to_numpy(np.int64) for p in pairs]),
    )
    return _Clock(TimeBase.from_triggers(float(rate), triggers, host))


def session_to_nwb(
    session_dir: str | Path, out_path: str | Path, species: str | None = "Mus musculus"
) -> Path:
    """Write ``session_dir`` as one NWB file at ``out_path``; returns the path."""
    d = Path(session_dir)
    meta_path = d / "session.json"
    meta = read_session_meta(d, AnalysisError)
    cams = meta.get("cameras", [])
    frames = {}
    for cam in cams:
        f = _read_csv(
            d / f"{cam}.frames.csv", ("seq", "trigger_index", "t_host_ns", "video_index", "dropped")
        )
        frames[cam] = f[(f["video_index"] >= 0) & (f["dropped"] == 0)].sort_values("video_index")
    if not any(len(f) for f in frames.values()):
        raise AnalysisError(f"{d}: no recorded frames in any <camera>.frames.csv")
    clock = _clock(d, meta, frames)
    t0 = min(float(clock.frame_s(f).min()) for f in frames.values() if len(f))

    def sec(ns: Any) -> np.ndarray:
        return clock.host_s(ns) - t0

    def frame_sec(f: pd.DataFrame) -> np.ndarray:
        return clock.frame_s(f) - t0

    trials = None
    if (d / "trials.csv").exists():
        trials = _read_csv(d / "trials.csv", ("trial", "t_start_ns", "t_end_ns"))
        trials["t_start_s"], trials["t_end_s"] = sec(trials["t_start_ns"]), sec(trials["t_end_ns"])
        trials["outcome"] = trials["outcome"].fillna("").astype(str)
    events = _read_events(d / "events.jsonl", sec) if (d / "events.jsonl").exists() else []
    videos = {cam: (f"{cam}.mkv", frame_sec(f)) for cam, f in frames.items()}
    pose: dict[str, PoseSeries] = {}
    if (d / "detections.csv").exists():
        det = _read_csv(
            d / "detections.csv", ("seq", "n_boxes", "x1", "y1", "x2", "y2", "confidence", "class_id")
        )
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
            pose[cam] = PoseSeries(pts, frame_sec(f), [f"class{c}" for c in classes], conf)
    if (d / "points3d.csv").exists():
        p3 = _read_csv(d / "points3d.csv", ("trigger_index", "x", "y", "z", "valid", "t_frame_ns"))
        names = list(dict.fromkeys(str(n) for n in p3["name"]))
        trig = np.sort(p3["trigger_index"].unique())
        row = {int(t): i for i, t in enumerate(trig)}
        xyz = np.full((len(trig), len(names), 3), np.nan)
        for r in p3.itertuples():
            if int(r.valid):
                xyz[row[int(r.trigger_index)], names.index(str(r.name))] = (r.x, r.y, r.z)
        pose["3d"] = PoseSeries(
            xyz, clock.trigger_s(trig) - t0, names, unit="mm", reference_frame="calibration world frame (mm)"
        )
    try:
        started = datetime.fromisoformat(str(meta.get("started")))
    except ValueError:
        raise AnalysisError(
            f"{meta_path}: started: {meta.get('started')!r} is not an ISO date and time"
        ) from None
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
