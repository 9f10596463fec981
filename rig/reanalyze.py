"""Batch reanalysis of recorded sessions, on Dask.

For each session, the same code the online pipeline runs, over what the session recorded:

1. **Detections.** By default the recorded ``detections.csv`` (re-triangulating them reproduces the
   online 3-D to the digits written on disk). With ``detect`` (or a ``model``), every camera's video is
   decoded and re-detected by :mod:`rig.redetect` (the online detector's rule with the session's own
   detector settings; ``model`` swaps only the model file), many crops per network call, on the CPU or a
   GPU (``Options.device``). A video that holds
   fewer frames than its frame table lists (truncated) is an error naming the file and how many frames
   are missing, unless ``accept_partial``: then what is there is reanalysed and ``summary.json`` says
   ``frames_missing_from_video`` per camera and ``partial: true``.
2. **3-D.** Every stereo set, in trigger order, through :class:`analysis.tracking.PointTracker` with the
   session's calibration and triangulator settings (the online triangulator's code; ``solve_many``
   triangulates all sets at once, the same numbers bit for bit).
3. **Analyses.** For a reaching session: every trial scored again by the task's own outcome rule on the
   offline 3-D (:func:`classify_trials`: trials recorded without 3-D, ``pellet_removed`` /
   ``pellet_not_taken``, get their outcome here), then :func:`analysis.tasks.reaching.analyze_reaching`
   (reaches, kinematics, success rate), the function behind the ``reaching`` command. Every time is a
   trigger time on the firmware clock (:func:`time_base`: ``triggers.csv``, ``index / trigger_rate_hz``
   where it lacks one), never a host arrival time.

Output, ``<session>/reanalysis/``: ``points3d.csv`` (the online columns less the online-only timings),
``detections.csv`` (with re-detection; ``t_start_ns``/``t_end_ns`` are the offline detector's),
``trials.csv`` (the session's trials with the offline ``outcome``, ``outcome_online`` as recorded,
``reaches`` and ``t_removed_fw_us``; the session's own ``trials.csv`` is never changed), the ``reaching/``
folder of the ``reaching`` command, and ``summary.json``: options, counts, timings, the difference to the
online 3-D, for a simulated session the error against the simulator's truth, and which trials' outcomes
changed from the online ones.
Everything is written into ``.reanalysis.partial/`` (summary last) and renamed into place, so a
half-written result never looks finished. A session whose ``summary.json`` has the same options is
skipped (resumable) unless ``force``; a session that fails is reported and the others go on.

While a session runs, its worker rewrites ``.reanalysis.partial/progress.json`` every few seconds (host,
pid, stage, frames done of how many): the batch's per-session progress and ``reanalyze --status`` read it.
A failed attempt leaves ``.reanalysis.partial/failed.json`` (the one-line reason); a worker that died
leaves a progress file nobody rewrites any more. :func:`session_status` tells these apart from the folder
alone. On SLURM a worker job that ends (scancel, walltime, a node lost) is replaced, and the scheduler
runs its session again on another worker.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import threading
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.tracking import PointTracker
from rig import redetect as rd
from rig.errors import InputError, UserError
from rig.session import DETECTION_COLUMNS, POINT_COLUMNS, Session, Table, load_session, write_json_atomic
from rig.session_metrics import error_vs_truth_mm

if TYPE_CHECKING:
    from rig.config import TriangulatorConfig

log = logging.getLogger(__name__)

OUT_DIR = "reanalysis"
PARTIAL_DIR = ".reanalysis.partial"
OLD_DIR = ".reanalysis.old"
# points3d.csv columns offline: the online ones less t_det_ns/t_out_ns, which only exist online
OFFLINE_POINT_COLUMNS = [c for c in POINT_COLUMNS if c not in ("t_det_ns", "t_out_ns")]


@dataclass(frozen=True)
class Options:
    """What a reanalysis does; recorded in ``summary.json`` (a finished session is skipped only when its
    options match). ``model`` (an absolute path) implies ``detect``."""

    detect: bool = False
    model: str | None = None
    analyses: bool = True
    accept_partial: bool = False  # reanalyse truncated videos as far as they go instead of failing
    device: str = "cpu"  # where re-detection runs: cpu, cuda (ONNX Runtime) or tensorrt (redetect_batched)

    def __post_init__(self) -> None:
        if self.device not in rd.DEVICES:
            raise UserError(f"device {self.device!r}: expected one of {', '.join(rd.DEVICES)}")

    @property
    def redetect(self) -> bool:
        return self.detect or self.model is not None

    def record(self) -> dict[str, Any]:
        rec = {**asdict(self), "detect": self.redetect}
        for key, default in (("accept_partial", False), ("device", "cpu")):
            if rec[key] == default:  # results recorded before the option existed stay valid
                del rec[key]
        return rec


# ----------------------------------------------------------------------------- detections
def detections_by_set(det: dict[str, np.ndarray]) -> dict[int, dict[str, np.ndarray]]:
    """Columns of ``detections.csv`` -> trigger index -> camera -> (K, 5) boxes ``x1 y1 x2 y2 conf``."""
    sets: dict[int, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    if not det or not len(det.get("trigger_index", [])):
        return {}
    box = np.stack([np.asarray(det[c], dtype=np.float64) for c in ("x1", "y1", "x2", "y2", "confidence")], 1)
    for i, (k, cam, n) in enumerate(zip(det["trigger_index"], det["camera"], det["n_boxes"])):
        rows = sets[int(k)][str(cam)]
        if int(n) > 0:
            rows.append(box[i])
    return {
        k: {c: np.array(v, dtype=np.float64).reshape(-1, 5) for c, v in cams.items()}
        for k, cams in sets.items()
    }


def triangulator_settings(session: Session) -> TriangulatorConfig:
    """The session's ``pipeline.triangulator``, validated by the same model the rig ran it with."""
    from pydantic import ValidationError

    from detection.settings import settings_error
    from rig.config import TriangulatorConfig

    try:
        return TriangulatorConfig.model_validate(session.config["pipeline"]["triangulator"])
    except ValidationError as exc:
        first = settings_error(exc, "pipeline.triangulator", TriangulatorConfig).args[0].splitlines()[0]
        raise InputError(f"{session.path / 'config.yaml'}: {first}") from None


# ----------------------------------------------------------------------------- 3-D
def triangulate_sets(
    session: Session, det: dict[str, np.ndarray], order: Iterable[int] | None = None
) -> dict[str, np.ndarray]:
    """Every stereo set of ``det`` (columns of ``detections.csv``) through the online triangulator's
    :class:`PointTracker`, in ``order`` (default: trigger order); columns of ``OFFLINE_POINT_COLUMNS``.
    ``t_frame_ns`` is the earliest frame of the set and ``t_trigger_ns`` its trigger, as online."""
    cfg = session.config
    tc = triangulator_settings(session)
    names = list(cfg["rig"]["cameras"])
    tracker = PointTracker.from_settings(
        [session.calibration[n] for n in names], float(cfg["rig"]["trigger"]["rate_hz"]), tc
    )
    sets = detections_by_set(det)
    t_frame: dict[int, int] = {}
    if det and len(det.get("trigger_index", [])):
        for k, t in zip(det["trigger_index"].tolist(), det["t_frame_ns"].tolist()):
            t_frame[k] = min(t_frame.get(k, t), t)
    t_trigger: dict[int, int] = {}
    for table in session.frames.values():
        for k, t in zip(table["trigger_index"].tolist(), table["t_trigger_ns"].tolist()):
            if k >= 0:
                t_trigger[k] = min(t_trigger.get(k, t), t)
    out: dict[str, list[Any]] = {c: [] for c in OFFLINE_POINT_COLUMNS}
    keys = sorted(sets) if order is None else list(order)
    none = np.zeros((0, 5))
    found = tracker.solve_many(keys, [[sets.get(k, {}).get(n, none) for n in names] for k in keys])
    for k, r in zip(keys, found):
        row = [
            k,
            tc.point_name,
            *r.xyz,
            *r.xyz_filtered,
            *r.xyz_predicted,
            int(r.valid),
            r.reproj_error_px,
            "+".join(r.cameras),
            t_frame.get(k, -1),
            t_trigger.get(k, -1),
            r.reason,
        ]
        for c, v in zip(OFFLINE_POINT_COLUMNS, row):
            out[c].append(v)
    return {c: np.asarray(v) for c, v in out.items()}


def _stats(d: np.ndarray) -> dict[str, Any]:
    d = d[np.isfinite(d)]
    if not d.size:
        return {"n": 0, "median": None, "p95": None, "p99": None, "max": None}
    return {
        "n": int(d.size),
        "median": float(np.median(d)),
        "p95": float(np.percentile(d, 95)),
        "p99": float(np.percentile(d, 99)),
        "max": float(d.max()),
    }


def frames_missing_from_video(session: Session) -> set[int]:
    """Trigger indices with a frame the camera delivered but the recorder could not write (``dropped``):
    the online detector may have seen it, re-detection cannot."""
    return {
        int(k)
        for t in session.frames.values()
        for k, v in zip(t["trigger_index"].tolist(), t["video_index"].tolist())
        if v < 0 and k >= 0
    }


def compare_points(
    pts: dict[str, np.ndarray], session: Session, exclude: Iterable[int] = ()
) -> dict[str, Any]:
    """Offline vs online 3-D (sets both solved, by trigger index; ``exclude``: sets not to compare) and,
    when the session has the simulator's ``truth.csv``, both against the true paw position. In mm."""
    res: dict[str, Any] = {}
    xyz = np.stack([pts[c] for c in "xyz"], 1).astype(float)
    on = session.points3d
    if on and len(on["trigger_index"]):
        k_off = pts["trigger_index"].astype(np.int64)
        _, i_on, i_off = np.intersect1d(on["trigger_index"].astype(np.int64), k_off, return_indices=True)
        # Online, a stereo set still incomplete after pair_timeout_ms is solved with the views it has; the
        # recording holds every detection, so offline such a set may be complete. Compare the rest.
        timed_out = np.array([str(r) == "fewer than 2 views" for r in on["reason"][i_on]]) & (
            pts["valid"][i_off] == 1
        )
        skip = np.isin(pts["trigger_index"][i_off], np.array(sorted(exclude), dtype=np.int64))
        res["online_sets_with_frames_missing_from_video"] = int(skip.sum())
        i_on, i_off = i_on[~timed_out & ~skip], i_off[~timed_out & ~skip]
        a = xyz[i_off]
        b = np.stack([on[c] for c in "xyz"], 1).astype(float)[i_on]
        both = np.isfinite(a).all(1) & np.isfinite(b).all(1)
        agree = pts["valid"][i_off].astype(int) == on["valid"][i_on].astype(int)
        res["online_sets_compared"] = len(i_on)
        res["online_sets_timed_out_completed_offline"] = int(timed_out.sum())
        res["max_abs_diff_vs_online_mm"] = float(np.abs(a[both] - b[both]).max()) if both.any() else None
        res["diff_vs_online_mm"] = _stats(np.linalg.norm(a[both] - b[both], axis=1))
        res["validity_agreement"] = float(agree.mean()) if len(agree) else None
        res["validity_agrees"] = bool(agree.all())
        on_valid = on["valid"][i_on].astype(bool)  # a loaded online pipeline loses sets; offline should not
        res["online_valid_also_valid_offline"] = (
            float(pts["valid"][i_off][on_valid].astype(bool).mean()) if on_valid.any() else None
        )
    if session.truth is not None:
        res["error_vs_truth_mm"] = {
            label: _stats(error_vs_truth_mm(table, session.truth)["raw"])
            for label, table in (("offline", pts), ("online", on))
            if table and len(table.get("trigger_index", []))
        }
    return res


# ----------------------------------------------------------------------------- analyses
TRIAL_COLUMNS = ["trial", "t_start_ns", "t_end_ns", "outcome", "outcome_online", "reaches", "t_removed_fw_us"]


def time_base(session: Session) -> Any:
    """The session's :class:`analysis.tasks.reaching.TimeBase`: trigger times on the firmware clock from
    ``triggers.csv``, ``index / trigger_rate_hz`` for indices it lacks; host times (to place trials) from
    the trigger table, else the frame tables."""
    from analysis.tasks.reaching import TimeBase

    rate = session.meta.get("trigger_rate_hz") or session.config["rig"]["trigger"]["rate_hz"]
    pairs = [
        (t["trigger_index"], t["t_host_ns"])
        for t in session.frames.values()
        if len(t.get("trigger_index", [])) and "t_host_ns" in t
    ]
    host = (np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs])) if pairs else None
    return TimeBase.from_triggers(float(rate), session.extra.get("triggers"), host)


def _trial_events(session: Session) -> dict[int, dict[str, int]]:
    """Per trial, the host times the task logged: ``present`` (wait_response entered), ``removed`` (settle
    entered: the IR sensor saw the pellet go) and ``end`` (trial_end)."""
    out: dict[int, dict[str, int]] = defaultdict(dict)
    for e in session.events:
        if e.get("topic") != "task.event" or not isinstance(e.get("trial"), int):
            continue
        t, when = e.get("t_host_ns", -1), out[e["trial"]]
        if e.get("kind") == "state" and e.get("state") in ("wait_response", "settle"):
            when.setdefault("present" if e["state"] == "wait_response" else "removed", t)
        elif e.get("kind") == "trial_end":
            when.setdefault("end", t)
    return out


def _removal_fw_us(session: Session, t_from_ns: int, t_to_ns: int) -> int | None:
    """Firmware time of the IR sensor's 'pellet gone' the task acted on: the last such event received
    between ``t_from_ns`` and ``t_to_ns`` (host)."""
    best = None
    for e in session.events:
        v = e.get("values") or {}
        if e.get("topic") == "serial.event" and e.get("kind") == "ir" and v.get("pellet_present") == 0:
            t_recv = v.get("t_recv_ns", e.get("t_host_ns", -1))
            if t_from_ns <= t_recv <= t_to_ns and e.get("t_fw_us", -1) >= 0:
                best = int(e["t_fw_us"])
    return best


def classify_trials(session: Session, t_s: np.ndarray, paw_t3: np.ndarray, tb: Any) -> list[dict[str, Any]]:
    """Every trial of ``trials.csv`` scored again by the task's own rule (:func:`rig.task.trial_outcome`)
    on the offline 3-D: paw observations at their trigger times and the pellet's removal at the IR event's
    firmware time, both on the firmware clock; the response window from the task's logged states. Trials
    without a response window (aborted before the pellet was presented) keep their online outcome."""
    from rig.config import ReachingTaskConfig
    from rig.task import trial_outcome

    cfg = ReachingTaskConfig.model_validate(session.config["experiment"]["reaching"])
    events = _trial_events(session)
    d = np.linalg.norm(np.asarray(paw_t3, float) - np.asarray(cfg.pellet_xyz_mm, float), axis=1)
    seen = np.isfinite(d)
    rows = []
    for tr in session.trials:
        n, online = int(tr["trial"]), tr.get("outcome", "")
        when = events.get(n, {})
        row = {
            "trial": n,
            "t_start_ns": int(tr["t_start_ns"]),
            "t_end_ns": int(tr["t_end_ns"]),
            "outcome": online,
            "outcome_online": online,
            "reaches": -1,
            "t_removed_fw_us": -1,
        }
        rows.append(row)
        if online in ("", "aborted") or "present" not in when or "end" not in when:
            continue
        start, end = tb.from_host_ns([when["present"], when["end"]])
        removed_us = _removal_fw_us(session, when["present"], when["removed"]) if "removed" in when else None
        if "removed" in when and removed_us is None:  # no firmware time for it: place the host time
            removed_us = int(tb.from_host_ns([when["removed"]])[0] * 1e6)
        t_stop = removed_us / 1e6 if removed_us is not None else end
        inside = seen & (t_s >= start) & (t_s <= max(end, t_stop))
        near = d[inside] <= cfg.reach_radius_mm
        before = t_s[inside] < t_stop  # reaches count while the pellet waits (wait_response)
        entries = near & ~np.concatenate([[False], near[:-1]])
        reaches = int((entries & before).sum())
        obs = list(zip((t_s[inside] * 1e9).astype(np.int64).tolist(), d[inside].tolist()))
        removed_ns = removed_us * 1000 if removed_us is not None else None
        row.update(
            outcome=trial_outcome(cfg, removed_ns, reaches, obs),
            reaches=reaches,
            t_removed_fw_us=removed_us if removed_us is not None else -1,
        )
    return rows


def run_analyses(session: Session, points_csv: Path, out_dir: Path) -> dict[str, Any]:
    """The task's analyses on the offline 3-D; returns {analysis: summary}. Figures and tables go to
    ``out_dir/<analysis>/`` exactly as the analysis's own command writes them. Every time is a trigger
    time on the firmware clock (:func:`time_base`), never a host arrival time. Trials are scored again
    from the offline 3-D (:func:`classify_trials`) into ``out_dir/trials.csv``; the online table stays as
    recorded."""
    task = session.config.get("experiment", {}).get("task")
    if task != "reaching":
        return {}
    from analysis.tasks.reaching import analyze_reaching, load_points3d, load_trials, session_track

    name = session.config["pipeline"]["triangulator"]["point_name"]
    k, paw = load_points3d(points_csv, name)
    tb = time_base(session)
    trials = None
    out: dict[str, Any] = {}
    if session.trials:
        kf, paw_filt = load_points3d(points_csv, name, filtered=True)
        rows = classify_trials(session, tb.times(kf)[0], paw_filt, tb)
        _write_table(out_dir / "trials.csv", TRIAL_COLUMNS, {c: [r[c] for r in rows] for c in TRIAL_COLUMNS})
        changed = [r for r in rows if r["outcome"] != r["outcome_online"]]
        out["trials"] = {
            "n": len(rows),
            "changed_from_online": len(changed),
            "changes": {str(r["trial"]): f"{r['outcome_online']} -> {r['outcome']}" for r in changed},
        }
        trials = load_trials(out_dir / "trials.csv")
    track = session_track(k, paw, tb, trials)
    for note in track.notes:
        log.warning("%s: %s", session.path, note)
    res = analyze_reaching(track.t_s, track.xyz, track.trials, out_dir=out_dir / "reaching", info=track.info)
    return {"reaching": res["summary"], **out}


# ----------------------------------------------------------------------------- one session
def finished(path: str | Path, options: Options) -> dict[str, Any] | None:
    """The summary of a finished reanalysis done with ``options``, else None."""
    import json

    done = Path(path) / OUT_DIR / "summary.json"
    try:
        summary = json.loads(done.read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("options") == options.record() else None


def _write_table(path: Path, columns: list[str], cols: dict[str, Any]) -> None:
    table = Table(path, columns)
    try:
        for i in range(len(cols[columns[0]])):
            table.write([_fmt(cols[c][i]) for c in columns])
    finally:
        table.close()


def reanalyze_session(
    path: str | Path, force: bool = False, options: Options | None = None
) -> dict[str, Any]:
    """Reanalyse one session folder; returns its summary (also written to ``reanalysis/summary.json``)."""
    options = options or Options()
    p = Path(path)
    if not force and (prev := finished(p, options)) is not None:
        return {**prev, "skipped": True}
    t0 = time.perf_counter()
    s = load_session(p)
    partial = p / PARTIAL_DIR
    shutil.rmtree(partial, ignore_errors=True)  # an earlier attempt's leftovers (failed or killed)
    partial.mkdir()
    progress = Progress(partial)
    progress.start()
    try:
        summary = _reanalyze(s, options, progress, t0)
    finally:
        progress.stop()
    final, old = p / OUT_DIR, p / OLD_DIR
    progress.remove()  # the heartbeat is not part of the result
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return summary


def _reanalyze(s: Session, options: Options, progress: Progress, t0: float) -> dict[str, Any]:
    """The work of :func:`reanalyze_session` for a loaded session, written into its partial folder."""
    p, partial = s.path, s.path / PARTIAL_DIR
    timings: dict[str, float] = {}
    lost: dict[str, dict[str, int]] = {}
    rstats: dict[str, Any] = {}
    if options.redetect:
        decoded: dict[str, int] = {}
        progress.update(stage="detect", frames_total=sum(rd.frames_in_table(s, c) for c in s.frames))
        det = rd.detect(s, options.model, decoded, progress.add_frames, options.device, stats=rstats)
        lost = rd.truncated_videos(s, decoded)
        if lost and not options.accept_partial:
            raise rd.truncation_error(s, lost)
        order = None
    else:
        if not s.detections:
            raise InputError(f"{p}: no detections.csv to reanalyse (use --detect to detect from the videos)")
        det, order = s.detections, ([int(k) for k in s.points3d["trigger_index"]] if s.points3d else None)
    timings["detections_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    progress.update(stage="triangulate")
    pts = triangulate_sets(s, det, order)
    timings["triangulation_s"] = time.perf_counter() - t1
    progress.update(stage="write")
    if options.redetect:
        _write_table(partial / "detections.csv", DETECTION_COLUMNS, det)
    _write_table(partial / "points3d.csv", OFFLINE_POINT_COLUMNS, pts)
    t2 = time.perf_counter()
    progress.update(stage="analyses")
    analyses = run_analyses(s, partial / "points3d.csv", partial) if options.analyses else {}
    timings["analyses_s"] = time.perf_counter() - t2
    # detections.csv has a row per box (or per empty frame): count frames, not rows
    n_frames = len({(c, int(q)) for c, q in zip(det["camera"], det["seq"])}) if options.redetect else 0
    seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "session": str(p),
        "options": options.record(),
        "worker": f"{socket.gethostname()} pid {os.getpid()}",
        "n_points": len(pts["trigger_index"]),
        "valid": int(pts["valid"].sum()),
        "frames_detected": n_frames,
        # frames the tables list as recorded that the videos lack (truncated videos); only with re-detection
        "frames_missing_from_video": {c: lost.get(c, {}).get("missing", 0) for c in s.frames}
        if options.redetect
        else None,
        "partial": bool(lost),
        "frames_per_s": n_frames / seconds if n_frames else None,
        "seconds": round(seconds, 3),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "redetection": rstats or None,
        **compare_points(pts, s, frames_missing_from_video(s) if options.redetect else set()),
        "analyses": analyses,
    }
    progress.check_owner()  # a worker given up for dead must not put its result over the retry's
    write_json_atomic(partial / "summary.json", summary)  # last: its presence means finished
    return summary


def _run_one(path: str, force: bool, options: Options) -> dict[str, Any]:
    """A Dask task: a session's failure comes back as ``{"error": one line}`` (plus the traceback when it
    is not a user error), so the worker does not log it as a crash and the batch goes on. The reason is
    also left in the session's folder (:func:`record_failure`) for ``--status``."""
    try:
        return reanalyze_session(path, force, options)
    except Exception as exc:  # one session's failure, whatever it is, must not stop the batch
        text = str(exc).strip()
        out = {"error": f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"}
        if not isinstance(exc, UserError):
            out["traceback"] = traceback.format_exc()
        if not isinstance(exc, Superseded):
            record_failure(path, out["error"])
        return out


# ----------------------------------------------------------------------------- progress and status
HEARTBEAT_S = 2.0  # how often a running session rewrites its progress.json
STALE_S = 30.0  # a progress.json not rewritten for this long: its worker is gone
PROGRESS_FILE = "progress.json"
FAILED_FILE = "failed.json"


class Superseded(RuntimeError):
    """Another attempt at the same session took over its partial folder (this worker was given up)."""


class Progress:
    """A running session's ``.reanalysis.partial/progress.json``, rewritten every ``HEARTBEAT_S`` by a
    thread: host, pid, this attempt's id, stage (load, detect, triangulate, write, analyses), camera
    frames detected of ``frames_total``, ``t_detect_start`` and ``t_updated`` (Unix s)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / PROGRESS_FILE
        now = time.time()
        self.attempt = uuid.uuid4().hex
        self._state: dict[str, Any] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "attempt": self.attempt,
            "stage": "load",
            "frames_done": 0,
            "frames_total": None,
            "t_start": now,
            "t_detect_start": None,
        }
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="reanalysis-progress", daemon=True)

    def start(self) -> None:
        self._write()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def update(self, **kw: Any) -> None:
        with self._lock:
            if kw.get("stage") == "detect":
                self._state["t_detect_start"] = time.time()
            self._state.update(kw)

    def add_frames(self, n: int) -> None:
        with self._lock:
            self._state["frames_done"] += n

    def check_owner(self) -> None:
        """Raise :class:`Superseded` when the progress file is another attempt's."""
        owner = _read_json(self.path).get("attempt")
        if owner is not None and owner != self.attempt:
            raise Superseded(f"{self.path.parent.parent}: another worker took this session over")

    def remove(self) -> None:
        for f in (self.path, self.path.with_name(self.path.name + ".tmp")):
            f.unlink(missing_ok=True)

    def _write(self) -> None:
        with self._lock:
            state = {**self._state, "t_updated": time.time()}
        write_json_atomic(self.path, state)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.check_owner()
                self._write()
            except (OSError, Superseded):  # the folder went (renamed, retried elsewhere): stop beating
                return


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_failure(path: str | Path, error: str) -> None:
    """Leave a failed attempt's one-line reason in ``<session>/.reanalysis.partial/failed.json``, where
    the folder exists and may be written (never creates the session folder)."""
    p = Path(path)
    if not p.is_dir():
        return
    try:
        (p / PARTIAL_DIR).mkdir(exist_ok=True)
        write_json_atomic(
            p / PARTIAL_DIR / FAILED_FILE,
            {"error": error, "host": socket.gethostname(), "t_failed": time.time()},
        )
    except OSError as exc:
        log.warning("%s: cannot record the failure (%s)", p, exc)


def session_progress(path: str | Path) -> dict[str, Any] | None:
    """A running session's progress (``progress.json``) with ``frames_per_s`` and ``eta_s`` added where
    detection has started; None when it has none."""
    prog = _read_json(Path(path) / PARTIAL_DIR / PROGRESS_FILE)
    if not prog:
        return None
    done, total, t0 = prog.get("frames_done", 0), prog.get("frames_total"), prog.get("t_detect_start")
    fps = done / (prog["t_updated"] - t0) if t0 and done and prog.get("t_updated", 0) > t0 else None
    prog["frames_per_s"] = fps
    prog["eta_s"] = (total - done) / fps if fps and total is not None and prog["stage"] == "detect" else None
    return prog


def session_status(path: str | Path, now: float | None = None) -> dict[str, Any]:
    """What a session's folder says about its reanalysis: ``{"state": ..., "detail": one line}`` with
    state ``running`` (progress rewritten within ``STALE_S``), ``failed`` (a recorded failure, or a
    worker that stopped rewriting its progress: killed), ``done`` (a finished ``summary.json``), ``not
    started``, or ``not a session`` (no session.json)."""
    p = Path(path)
    now = time.time() if now is None else now
    if not (p / "session.json").is_file():
        return {"state": "not a session", "detail": "no session.json"}
    summary = _read_json(p / OUT_DIR / "summary.json")
    earlier = " (an earlier result is in reanalysis/)" if summary else ""
    failed = _read_json(p / PARTIAL_DIR / FAILED_FILE)
    if failed:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(failed.get("t_failed", 0)))
        return {
            "state": "failed",
            "detail": f"{failed.get('error', '?')} [{failed.get('host')}, {when}]{earlier}",
        }
    prog = session_progress(p)
    if prog is not None:
        age = now - prog.get("t_updated", 0)
        where = f"{prog.get('host')} pid {prog.get('pid')}"
        if age > STALE_S:
            return {
                "state": "failed",
                "detail": f"interrupted: the worker ({where}) stopped {age:.0f} s ago in stage "
                f"{prog.get('stage')} (killed?); run it again{earlier}",
            }
        detail = f"{prog.get('stage')} on {where}"
        if prog.get("frames_total"):
            detail += f", {prog['frames_done']}/{prog['frames_total']} frames"
        if prog.get("frames_per_s"):
            detail += f", {prog['frames_per_s']:.0f} frames/s"
        if prog.get("eta_s") is not None:
            detail += f", ETA {_hms(prog['eta_s'])}"
        return {"state": "running", "detail": detail}
    if summary:
        opts = summary.get("options", {})
        what = "re-detected" if opts.get("detect") else "re-triangulated"
        fps = f", {summary['frames_per_s']:.0f} frames/s" if summary.get("frames_per_s") else ""
        return {
            "state": "done",
            "detail": f"{what}, {summary.get('valid')}/{summary.get('n_points')} valid 3-D points in "
            f"{summary.get('seconds', 0):.1f} s{fps}" + (" (PARTIAL)" if summary.get("partial") else ""),
        }
    return {"state": "not started", "detail": ""}


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return "" if math.isnan(v) else f"{float(v):.10g}"
    return str(v)


# ----------------------------------------------------------------------------- the batch
def slurm_options(
    queue: str | None = None, memory: str = "4GB", walltime: str = "01:00:00", cores: int = 1
) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster``: one single-threaded worker per job."""
    kw: dict[str, Any] = {"cores": cores, "processes": 1, "memory": memory, "walltime": walltime}
    if queue:
        kw["queue"] = queue
    return kw


def _client(scheduler: str | None, n_workers: int, slurm: dict[str, Any] | None) -> tuple[Any, Any]:
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="30s"), None
        except OSError as exc:
            raise UserError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
    if slurm is not None:
        if shutil.which("sbatch") is None:
            raise UserError("--slurm: sbatch not found (run from a SLURM login node, or use --scheduler)")
        from dask_jobqueue import SLURMCluster

        cluster: Any = SLURMCluster(**slurm)
        log.info("SLURM job script:\n%s", cluster.job_script())
        cluster.scale(n_workers)
        return Client(cluster), cluster
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=None, processes=True)
    return Client(cluster), cluster


ProgressCallback = Callable[[int, int, dict[str, dict[str, Any]]], None]
RESCALE_S = 10.0  # how often a SLURM batch asks for its workers again (replacing jobs that ended)


def run_batch(
    sessions: Iterable[str | Path],
    scheduler: str | None = None,
    n_workers: int = 2,
    force: bool = False,
    progress: ProgressCallback | None = None,
    slurm: dict[str, Any] | None = None,
    options: Options | None = None,
) -> dict[str, dict[str, Any]]:
    """Reanalyse sessions on a Dask cluster (a local one by default, the one at ``scheduler``, or SLURM
    jobs with ``slurm`` keyword arguments); returns {session: summary, or {"error": one line}}.
    Finished sessions are skipped without a worker; a failing session does not stop the others. A session
    whose worker dies (killed, out of memory, a SLURM job cancelled) is run again on another worker by
    the scheduler; on SLURM, ended worker jobs are replaced. ``progress(done, total, running)`` is called
    about once a second, ``running`` being {session: :func:`session_progress`} of the sessions in a
    worker now."""
    from dask.distributed import wait

    options = options or Options()
    paths = list(dict.fromkeys(str(Path(s).resolve()) for s in sessions))
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for p in paths:
        prev = None if force else finished(p, options)
        if prev is not None:
            results[p] = {**prev, "skipped": True}
        else:
            todo.append(p)
    if progress:
        progress(len(results), len(paths), {})
    if not todo:
        return results
    n_workers = min(n_workers, len(todo))  # no idle workers (or SLURM jobs)
    client, cluster = _client(scheduler, n_workers, slurm)
    try:
        futures = {client.submit(_run_one, p, force, options, pure=False): p for p in todo}
        by_key = {f.key: p for f, p in futures.items()}
        pending = set(futures)
        rescaled = time.monotonic()
        while pending:
            try:
                done, pending = wait(pending, timeout=1.0, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            for fut in done:
                p = futures[fut]
                try:
                    results[p] = fut.result()
                except Exception as exc:  # the worker died too often (KilledWorker) or the task was lost
                    results[p] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
                    record_failure(p, results[p]["error"])
            if slurm is not None and time.monotonic() - rescaled > RESCALE_S:
                cluster.scale(n_workers)  # a job that ended (scancel, walltime) is submitted again
                rescaled = time.monotonic()
            if progress:
                running = {}
                if pending:
                    keys = {k for ks in client.processing().values() for k in ks}
                    running = {
                        by_key[k]: prog
                        for k in keys
                        if k in by_key and (prog := session_progress(by_key[k])) is not None
                    }
                progress(len(results), len(paths), running)
    finally:
        if cluster is not None:
            _stop_workers(client, cluster)
        client.close()
        if cluster is not None:
            cluster.close()
    return {p: results[p] for p in paths}


def _stop_workers(client: Any, cluster: Any, timeout_s: float = 20.0) -> None:
    """Close a cluster's workers while its scheduler still runs: a worker whose heartbeat meets a closed
    scheduler logs a traceback into the batch's output."""
    try:
        cluster.scale(0)
        end = time.monotonic() + timeout_s
        while client.scheduler_info(n_workers=-1)["workers"] and time.monotonic() < end:
            time.sleep(0.1)
    except Exception as exc:  # closing is best effort: cluster.close() follows whatever happened here
        log.debug("stopping the workers before the scheduler: %s", exc)
