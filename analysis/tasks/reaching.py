"""Mouse reaching: reaches from the 3-D paw path, success rate and per-trial outcomes from the trial table.

Inputs are arrays and simple tables. **Time base**: the paw path's times are the samples' own. For a rig
session they are the trigger times on the firmware clock (every 3-D point has a ``trigger_index``;
``triggers.csv`` gives each trigger's ``t_fw_us``; see :class:`TimeBase`), never the host's arrival
times, whose spacing a loaded machine stretches from 8 ms to 0.3-215 ms. Other files bring a stated fps
or timestamps (:func:`read_track`). Readers of the rig's plain files (``points3d.csv``, ``trials.csv``,
``triggers.csv``; columns as in ``rig/SESSION.md``) use pandas only.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.errors import AnalysisError
from analysis.events import clean, default_min_confidence
from analysis.kinematics import (
    REACH_MAX_GAP_S,
    REACH_MIN_DURATION_S,
    REACH_MIN_EXTENT_MM,
    REACH_MIN_GAP_S,
    REACH_ONSET_SPEED_MM_S,
    Reach,
    check_times,
    default_smooth_window,
    find_reaches,
    kinematics_table,
    plot_trajectories,
    plot_velocity_curves,
    reach_table,
    speed,
    velocity_curves,
)
from analysis.textfile import read_text

REACH_OUTCOMES = ("success", "knocked_off", "miss")  # trials in which the mouse reached
# outcomes the apparatus alone can tell (IR sensor, no paw position): the paw's part is unknown
UNCLASSIFIED_OUTCOMES = ("pellet_removed", "pellet_not_taken")
ALL_OUTCOMES = (*REACH_OUTCOMES, "no_reach", *UNCLASSIFIED_OUTCOMES)
UNITS_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0}  # length units a track may come in -> mm


def _check_numbers(df: Any, columns: list[str], path: Path, whole: tuple[str, ...] = ()) -> None:
    """Every cell of ``columns`` a number (empty: missing), of ``whole`` a present whole number;
    AnalysisError names the file, line and column of the first that is not."""
    import pandas as pd

    for c in columns:
        col = pd.to_numeric(df[c], errors="coerce")
        bad = (col.isna() & df[c].notna()) | (col.isna() if c in whole else False)
        idx = np.flatnonzero(np.asarray(bad))
        if len(idx):
            raise AnalysisError(
                f"{path}: line {idx[0] + 2}, column {c!r}: {df[c].iloc[idx[0]]!r} is not a number"
            )


def _read_table(path: Path, what: str, columns: list[str], whole: tuple[str, ...] = ()) -> Any:
    import pandas as pd

    text = read_text(path, what, AnalysisError)
    try:
        df = pd.read_csv(io.StringIO(text))
    except ValueError as exc:
        raise AnalysisError(f"{path}: cannot read {what} ({' '.join(str(exc).split())})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise AnalysisError(f"{path}: lacks column(s) {', '.join(missing)}")
    return df


def load_points3d(
    path: str | Path, name: str = "paw", filtered: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``points3d.csv`` -> (trigger_index (T,) int64, xyz (T, 3) mm) for the point ``name``, in trigger
    order; invalid rows are NaN. A point belongs to its trigger: give its time with :class:`TimeBase`."""
    path = Path(path)
    cols = ["x_filt", "y_filt", "z_filt"] if filtered else ["x", "y", "z"]
    df = _read_table(path, "points table", ["name", "trigger_index", *cols])
    _check_numbers(df, ["trigger_index", *cols], path, whole=("trigger_index",))
    sub = df[df["name"] == name]
    if sub.empty:
        raise AnalysisError(
            f"{path}: no rows for point {name!r} (has {', '.join(map(str, df['name'].unique()))})"
        )
    sub = sub[sub["trigger_index"].astype("int64") >= 0].sort_values("trigger_index", kind="stable")
    k = sub["trigger_index"].to_numpy(dtype=np.int64)
    dup = np.flatnonzero(np.diff(k) == 0)
    if len(dup):
        raise AnalysisError(f"{path}: point {name!r} has two rows for trigger_index {k[dup[0]]}")
    xyz = sub[cols].to_numpy(dtype=float)
    if "valid" in sub.columns:
        xyz[~sub["valid"].astype(bool).to_numpy()] = np.nan
    return k, xyz


def load_triggers(path: str | Path) -> dict[str, np.ndarray]:
    """``triggers.csv`` (index, t_host_ns, t_fw_us; -1 = unknown) -> columns as int64 arrays. A torn last
    line (a crash mid-write) is left out."""
    path = Path(path)
    df = _read_table(path, "trigger table", ["index", "t_host_ns", "t_fw_us"])
    df = df.dropna(subset=["index", "t_host_ns", "t_fw_us"])
    _check_numbers(df, ["index", "t_host_ns", "t_fw_us"], path)
    return {c: df[c].to_numpy(dtype=np.int64) for c in ("index", "t_host_ns", "t_fw_us")}


@dataclass(frozen=True)
class TimeBase:
    """When each trigger pulse of a rig session happened, in seconds on the firmware clock.

    ``index``/``t_fw_s``: the pulses with a firmware time (``triggers.csv``). A trigger index it lacks
    (no firmware, a clock record cut short) falls back to ``index / rate_hz``, anchored to the known pulses
    when there are any; :meth:`times` counts those. ``host_index``/``host_ns`` pair trigger indices with
    host times (``triggers.csv``'s ``t_host_ns``, or the frames'), so that host-clock times such as trial
    starts can be placed on the same time base (:meth:`from_host_ns`, to a few ms; good for which trial a
    reach belongs to, never for speeds)."""

    rate_hz: float
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    t_fw_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    host_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    host_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    source: str = ""

    @classmethod
    def from_triggers(
        cls,
        rate_hz: float,
        triggers: dict[str, np.ndarray] | None = None,
        host_pairs: tuple[np.ndarray, np.ndarray] | None = None,
        source: str = "triggers.csv",
    ) -> TimeBase:
        """From the columns of ``triggers.csv`` (or None without one); ``host_pairs`` (trigger indices,
        host ns) are used for host times where the trigger table has none."""
        if not (rate_hz > 0 and math.isfinite(rate_hz)):
            raise AnalysisError(f"trigger rate must be a positive number of Hz, got {rate_hz!r}")
        k = np.zeros(0, np.int64)
        fw = np.zeros(0, np.int64)
        hk, hns = np.zeros(0, np.int64), np.zeros(0, np.int64)
        if triggers is not None and len(triggers.get("index", [])):
            idx = np.asarray(triggers["index"], np.int64)
            t_fw = np.asarray(triggers["t_fw_us"], np.int64)
            t_h = np.asarray(triggers["t_host_ns"], np.int64)
            ok = (idx >= 0) & (t_fw >= 0)
            k, order = np.unique(idx[ok], return_index=True)
            fw = t_fw[ok][order]
            hok = (idx >= 0) & (t_h >= 0)
            hk, hns = idx[hok], t_h[hok]
        if not len(hk) and host_pairs is not None:
            a, b = (np.asarray(x, np.int64) for x in host_pairs)
            ok = (a >= 0) & (b >= 0)
            hk, hns = a[ok], b[ok]
        return cls(float(rate_hz), k, fw * 1e-6, hk, hns, source if len(k) else "")

    @property
    def has_firmware_times(self) -> bool:
        return len(self.index) > 0

    def _periodic_model(self) -> tuple[float, float]:
        """(firmware time of trigger 0 s, period s) of the trigger run: the nominal rate from 0 without
        firmware times; fitted to the known pulses with them (the crystal's period is not the nominal one:
        124 Hz is 8064.5 us on Timer1)."""
        if not len(self.index):
            return 0.0, 1.0 / self.rate_hz
        period = 1.0 / self.rate_hz
        if len(self.index) >= 2 and np.ptp(self.index) > 0:
            period = float(np.polyfit(self.index - self.index[0], self.t_fw_s - self.t_fw_s[0], 1)[0])
        return float(np.median(self.t_fw_s - self.index * period)), period

    def times(self, trigger_index: np.ndarray) -> tuple[np.ndarray, int]:
        """(T,) seconds of each trigger index, and how many fell back to ``index / rate_hz`` (the periodic
        model of the known pulses, when there are any)."""
        k = np.asarray(trigger_index, dtype=np.int64)
        t0, period = self._periodic_model()
        t = t0 + k * period
        if not len(self.index):
            return t, len(k)
        pos = np.clip(np.searchsorted(self.index, k), 0, len(self.index) - 1)
        known = self.index[pos] == k
        t[known] = self.t_fw_s[pos[known]]
        return t, int((~known).sum())

    def from_host_ns(self, t_host_ns: Any) -> np.ndarray:
        """Host ``monotonic_ns`` times on this time base: a line fitted through the (host time, trigger
        time) pairs. AnalysisError when there are none."""
        if not len(self.host_index):
            raise AnalysisError("no trigger with a host time: host-clock times cannot be placed")
        t_trig, _ = self.times(self.host_index)
        h0 = int(self.host_ns[0])
        h = (self.host_ns - h0) * 1e-9
        x = (np.asarray(t_host_ns, dtype=np.int64) - h0) * 1e-9
        if len(h) < 2 or np.ptp(h) <= 0:
            return t_trig[0] + (x - h[0])
        slope, offset = np.polyfit(h, t_trig, 1)
        return offset + slope * x

    def describe(self, n_points: int, n_fallback: int) -> dict[str, Any]:
        """What the summary says about where its times came from."""
        if n_fallback == 0 and self.has_firmware_times:
            text = f"trigger times on the firmware clock ({self.source})"
        elif not self.has_firmware_times:
            text = f"trigger index / {self.rate_hz:g} Hz (no firmware trigger times)"
        else:
            text = (
                f"trigger times on the firmware clock ({self.source}); {n_fallback} of {n_points} trigger "
                f"indices missing there: index / {self.rate_hz:g} Hz for those"
            )
        return {"time_base": text, "trigger_rate_hz": self.rate_hz, "points_timed_by_fallback": n_fallback}


@dataclass
class Track:
    """A 3-D path ready for the analysis: ``t_s`` (T,) seconds, ``xyz`` (T, 3) mm, and what the summary
    should say about it (``info``: time base, units, source, format; ``notes``: one-line warnings);
    ``confidence`` (T,) where the source has one (an anipose score), for the confidence cut."""

    t_s: np.ndarray
    xyz: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    trials: Any | None = None
    confidence: np.ndarray | None = None


def session_track(
    points_index: np.ndarray,
    xyz: np.ndarray,
    time_base: TimeBase,
    trials: Any | None = None,
) -> Track:
    """A session's paw path on its time base: each point at its trigger's time, one row per trigger from
    the first point's to the last's (a trigger without a valid point is a missing row, so that gaps are
    counted and filled by time, never bridged by a derivative); ``trials`` (a table from
    :func:`load_trials`) gets ``t_start_s``/``t_end_s`` on the same time base."""
    k = np.asarray(points_index, np.int64)
    xyz = np.asarray(xyz, float)
    t_s, n_fb = time_base.times(k)
    info = time_base.describe(len(t_s), n_fb)
    notes = []
    if n_fb:
        notes.append(info["time_base"])
    span = int(k[-1] - k[0] + 1) if len(k) else 0
    if span > len(k):
        every = np.arange(k[0], k[-1] + 1)
        t_every, _ = time_base.times(every)
        if np.all(np.diff(t_every) > 0):
            xyz_every = np.full((span, 3), np.nan)
            xyz_every[k - k[0]] = xyz
            t_s, xyz = t_every, xyz_every
    if span and len(k) < 0.9 * span:  # e.g. an online detector that shed stereo sets under load
        notes.append(
            f"the 3-D covers {len(k)} of the {span} triggers it spans: gaps longer than the maximum filled "
            "stay missing (deepbehavior reanalyze --detect detects every recorded frame)"
        )
    info["triggers_spanned"] = span
    if trials is not None and len(trials):
        try:
            trials = trials.copy()
            trials["t_start_s"] = time_base.from_host_ns(trials["t_start_ns"].to_numpy())
            trials["t_end_s"] = time_base.from_host_ns(trials["t_end_ns"].to_numpy())
        except AnalysisError as exc:
            notes.append(f"trials not related to reaches: {exc}")
            trials = None
    return Track(t_s, xyz, info, notes, trials)


def load_session_track(
    folder: str | Path, name: str = "paw", filtered: bool = False, rate_hz: float | None = None
) -> Track:
    """A session folder's paw path on the firmware trigger clock, read from its plain files:
    ``points3d.csv``, ``triggers.csv``, ``session.json`` (``trigger_rate_hz``, for triggers the table
    lacks; ``rate_hz`` without one) and ``trials.csv`` when present."""
    d = Path(folder)
    k, xyz = load_points3d(d / "points3d.csv", name, filtered)
    meta_rate = None
    if (d / "session.json").exists():
        try:
            meta_rate = json.loads(read_text(d / "session.json", "session file", AnalysisError)).get(
                "trigger_rate_hz"
            )
        except (ValueError, AttributeError):
            raise AnalysisError(f"{d / 'session.json'}: not a JSON object") from None
    rate = meta_rate if meta_rate is not None else rate_hz
    if rate is None:
        raise AnalysisError(f"{d}: no session.json with trigger_rate_hz: give --fps (the trigger rate)")
    triggers = load_triggers(d / "triggers.csv") if (d / "triggers.csv").exists() else None
    host_pairs = None
    pts = _read_table(d / "points3d.csv", "points table", ["trigger_index"])
    for col in ("t_trigger_ns", "t_frame_ns"):  # host times of frames: only to place trials
        if col in pts.columns:
            pts = pts[_ints(pts["trigger_index"]) >= 0]
            host_pairs = (_ints(pts["trigger_index"]), _ints(pts[col]))
            break
    tb = TimeBase.from_triggers(float(rate), triggers, host_pairs)
    trials = load_trials(d / "trials.csv") if (d / "trials.csv").exists() else None
    track = session_track(k, xyz, tb, trials)
    track.info.update(source=str(d), units="mm")
    return track


def _ints(col: Any) -> np.ndarray:
    """A column as int64, anything not a number as -1."""
    import pandas as pd

    return pd.to_numeric(col, errors="coerce").fillna(-1).to_numpy(dtype=np.int64)


def read_timestamps(path: str | Path) -> np.ndarray:
    """Per-row times in seconds: a text/CSV file with one number per line, or a CSV whose column ``t_s``
    (or its first column) holds them."""
    import pandas as pd

    path = Path(path)
    text = read_text(path, "timestamp file", AnalysisError)
    first = text.split("\n", 1)[0].split(",")[0].strip()
    try:
        float(first)
        header = None
    except ValueError:
        header = 0
    try:
        df = pd.read_csv(io.StringIO(text), header=header)
    except ValueError as exc:
        raise AnalysisError(f"{path}: cannot read timestamps ({' '.join(str(exc).split())})") from None
    col = "t_s" if "t_s" in df.columns else df.columns[0]
    _check_numbers(df, [col], path, whole=(col,))
    return df[col].to_numpy(dtype=float)


def _anipose_columns(columns: list[str], part: str) -> list[str] | None:
    cols = [f"{part}_{c}" for c in "xyz"]
    return cols if all(c in columns for c in cols) else None


def read_track(
    path: str | Path,
    part: str = "paw",
    fps: float | None = None,
    timestamps: np.ndarray | None = None,
    units: str = "mm",
    individual: str | int = 0,
) -> Track:
    """A 3-D path from a file another tool (or this project) wrote, in mm with times in seconds:

    * DeepLabCut 3-D ``.h5``/``.csv`` (coords x, y, z; any individual), read by :mod:`analysis.io.pose`;
    * an anipose ``pose-3d`` CSV (columns ``<part>_x``, ``_y``, ``_z``, frame numbers in ``fnum``);
    * this project's ``points3d.csv`` (rows of the point ``part``; frame = ``trigger_index``).

    Times: ``timestamps`` (seconds, one per row of the file) or frame number / ``fps``. ``units``: the
    file's length unit (mm, cm or m), converted to mm so that speed thresholds stay in mm/s."""
    import pandas as pd

    path = Path(path)
    if units not in UNITS_MM:
        raise AnalysisError(f"units must be one of {', '.join(UNITS_MM)}, got {units!r}")
    if timestamps is None and fps is None:
        raise AnalysisError(f"{path}: give --fps (the file's frame rate) or --timestamps")
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise AnalysisError(f"--fps must be a positive number, got {fps}")
    suffix = path.suffix.lower()
    fmt = "deeplabcut"
    confidence = None
    if suffix == ".csv":
        head = read_text(path, "3-D table", AnalysisError).split("\n", 1)[0]
        names = [c.strip() for c in head.split(",")]
        if names and names[0] != "scorer":
            fmt = "points3d" if {"trigger_index", "name"} <= set(names) else "anipose"
    if fmt == "deeplabcut":
        from analysis.io.pose import read_dlc

        table = read_dlc(path)
        if table.points.shape[-1] != 3:
            raise AnalysisError(
                f"{path}: 2-D keypoints (x, y); reaching needs a 3-D table (x, y, z): triangulate first"
            )
        xyz = table.part(part, individual)
        frames = np.asarray(table.frames, dtype=float)
    else:
        df = _read_table(path, "3-D table", [])
        if fmt == "points3d":
            k, xyz = load_points3d(path, part)
            frames = k.astype(float)
            if timestamps is not None and len(timestamps) != len(df):
                raise AnalysisError(
                    f"{path}: --timestamps has {len(timestamps)} times but the table {len(df)} rows"
                )
            if timestamps is not None:  # one time per row of the file: keep those of this point's rows
                rows = df.index[(df["name"] == part) & (_ints(df["trigger_index"]) >= 0)]
                order = np.argsort(_ints(df.loc[rows, "trigger_index"]), kind="stable")
                timestamps = np.asarray(timestamps)[np.asarray(rows)[order]]
        else:
            cols = _anipose_columns(list(df.columns), part)
            if cols is None:
                parts = sorted({c[:-2] for c in df.columns if str(c).endswith(("_x", "_y", "_z"))})
                if parts:
                    raise AnalysisError(f"{path}: no body part {part!r} (has {', '.join(parts)})")
                raise AnalysisError(
                    f"{path}: not a 3-D table this command reads (DeepLabCut 3-D .h5/.csv, anipose "
                    "CSV with <part>_x/_y/_z columns, or points3d.csv)"
                )
            score = f"{part}_score" if f"{part}_score" in df.columns else None
            _check_numbers(df, cols + ([score] if score else []), path)
            xyz = df[cols].to_numpy(dtype=float)
            if score:  # anipose's mean 2-D score of the views used; 0 where it failed
                confidence = df[score].to_numpy(dtype=float)
            frames = (
                pd.to_numeric(df["fnum"], errors="coerce").to_numpy(dtype=float)
                if "fnum" in df.columns
                else np.arange(len(df), dtype=float)
            )
            fmt = "anipose"
    if timestamps is not None:
        if len(timestamps) != len(xyz):
            raise AnalysisError(
                f"{path}: --timestamps has {len(timestamps)} times but the table {len(xyz)} rows"
            )
        t = np.asarray(timestamps, dtype=float)
        time_text = "timestamps given"
    else:
        assert fps is not None
        t = frames / fps
        time_text = f"frame number / {fps:g} fps"
    try:
        t = check_times(t)
    except AnalysisError as exc:
        raise AnalysisError(f"{path}: {exc}") from None
    info = {"source": str(path), "format": fmt, "units": units, "time_base": time_text}
    return Track(t, xyz * UNITS_MM[units], info, confidence=confidence)


def load_trials(path: str | Path) -> Any:
    """``trials.csv`` (trial, t_start_ns, t_end_ns, outcome) -> DataFrame, adding t_start_s and t_end_s
    (host clock: place them on a session's time base with :func:`session_track`)."""
    path = Path(path)
    df = _read_table(path, "trial table", ["trial", "t_start_ns", "t_end_ns", "outcome"])
    _check_numbers(df, ["t_start_ns", "t_end_ns"], path, whole=("t_start_ns", "t_end_ns"))
    df["t_start_s"] = df["t_start_ns"].astype("int64") * 1e-9
    df["t_end_s"] = df["t_end_ns"].astype("int64") * 1e-9
    df["outcome"] = df["outcome"].fillna("").astype(str)
    return df


def success_summary(outcomes: Any) -> dict[str, Any]:
    """Counts per outcome and rates: ``success_rate`` over completed trials (not aborted/empty) and
    ``success_per_reach_trial`` over trials with a reach (success, knocked_off, miss). A rate is None
    (unknown) while any completed trial is unclassified (``pellet_removed``/``pellet_not_taken``: recorded
    without 3-D); ``n_unclassified`` says how many."""
    outs = [str(o) for o in outcomes]
    counts = {o: outs.count(o) for o in sorted(set(outs))}
    done = [o for o in outs if o and o != "aborted"]
    unclassified = [o for o in done if o in UNCLASSIFIED_OUTCOMES]
    reach_trials = [o for o in done if o in REACH_OUTCOMES]
    n_succ = done.count("success")
    known = not unclassified
    return {
        "n_trials": len(outs),
        "n_completed": len(done),
        "n_unclassified": len(unclassified),
        "counts": counts,
        "success_rate": (n_succ / len(done) if done else float("nan")) if known else None,
        "success_per_reach_trial": (n_succ / len(reach_trials) if reach_trials else float("nan"))
        if known
        else None,
    }


def trial_outcomes(trials: Any, reaches: list[Reach]) -> Any:
    """Per trial: outcome, number of reaches whose onset falls in [t_start_s, t_end_s), first-reach
    latency from trial start, and its duration and peak speed."""
    import pandas as pd

    rows = []
    onsets = np.array([r.t_onset_s for r in reaches])
    for tr in trials.itertuples():
        inside = [r for r, on in zip(reaches, onsets, strict=True) if tr.t_start_s <= on < tr.t_end_s]
        first = inside[0] if inside else None
        rows.append(
            {
                "trial": tr.trial,
                "outcome": tr.outcome,
                "n_reaches": len(inside),
                "first_reach_latency_s": first.t_onset_s - tr.t_start_s if first else np.nan,
                "first_reach_duration_s": first.duration_s if first else np.nan,
                "first_reach_max_speed_mm_s": first.max_speed_mm_s if first else np.nan,
            }
        )
    return pd.DataFrame(rows)


def no_reach_note(
    t_s: np.ndarray,
    paw_t3: np.ndarray,
    onset_speed_mm_s: float,
    smooth_window: int = 0,
    movements: int | None = None,
) -> str:
    """One line on why no reach was found: the path's peak speed against the onset threshold."""
    sp = speed(t_s, paw_t3, smooth_window)
    if not np.isfinite(sp).any():
        return "no reach found: the paw path has no two consecutive positions (all missing)"
    peak = float(np.nanmax(sp))
    if peak <= onset_speed_mm_s:
        return (
            f"no reach found: the paw never moves faster than {peak:.3g} mm/s, below the onset speed "
            f"{onset_speed_mm_s:g} mm/s (are the units right? --units mm|cm|m; or lower --onset-speed)"
        )
    n = "" if movements is None else f" ({movements} movement(s) over it)"
    return (
        f"no reach found: the paw reaches {peak:.3g} mm/s (onset speed {onset_speed_mm_s:g} mm/s){n} but no "
        "movement is long or far enough to be a reach, or each has missing samples (--min-duration, "
        "--min-extent, --max-gap)"
    )


def analyze_reaching(
    t_s: np.ndarray,
    paw_t3: np.ndarray,
    trials: Any | None = None,
    out_dir: str | Path | None = None,
    n_clusters: int = 0,
    info: dict[str, Any] | None = None,
    confidence: np.ndarray | None = None,
    min_confidence: float | None = None,
    max_gap_s: float = REACH_MAX_GAP_S,
    **segment_kwargs: Any,
) -> dict[str, Any]:
    """Clean the paw path, segment reaches, measure them, relate them to trials; with ``out_dir`` write
    ``reaches.csv``, ``kinematics.csv`` (per sample: position, velocity, speed, acceleration, jerk and
    whether the sample was measured, filled or is missing), ``trials_outcomes.csv``, ``summary.json``,
    ``trajectories.png`` and ``velocity.png``.

    ``t_s`` are the samples' own times (a session's trigger times on the firmware clock; see
    :class:`TimeBase`), ``paw_t3`` mm, NaN = missing; ``trials`` has ``t_start_s``/``t_end_s`` on the same
    time base. Cleaning (:func:`analysis.events.clean`): samples whose ``confidence`` (T,) is below
    ``min_confidence`` (default per ``info["format"]``, :func:`analysis.events.default_min_confidence`) are
    cut, then gaps of up to ``max_gap_s`` are filled linearly, before any derivative. ``segment_kwargs``
    go to :func:`analysis.kinematics.find_reaches` (onset speed, minimum extent, duration and gap,
    smoothing: ``smooth_window`` samples, default the odd number nearest
    :data:`analysis.kinematics.REACH_SMOOTH_S`, 0 = none). ``info`` (time base, units, source) goes
    into the summary with the settings used and the frames cut, filled and missing. When no reach is
    found the summary's ``note`` says why in one line.
    ``n_clusters`` > 0 also clusters the reaches' 3-D paths (onset-aligned) by dynamic time warping into a
    ``cluster`` column of the reach table and ``dendrogram.png``.
    """
    t = check_times(t_s)
    fmt = (info or {}).get("format")
    cut = default_min_confidence(fmt) if min_confidence is None else float(min_confidence)
    cleaned = clean(t, np.asarray(paw_t3, dtype=np.float64), confidence, cut, max_gap_s)
    paw = cleaned.track
    if segment_kwargs.get("smooth_window") is None:
        segment_kwargs["smooth_window"] = default_smooth_window(t)
    onset = float(segment_kwargs.get("onset_speed_mm_s", REACH_ONSET_SPEED_MM_S))
    offset = segment_kwargs.get("offset_speed_mm_s")
    window = int(segment_kwargs["smooth_window"])
    settings = {
        "onset_speed_mm_s": onset,
        "offset_speed_mm_s": onset / 2 if offset is None else float(offset),
        "min_extent_mm": float(segment_kwargs.get("min_extent_mm", REACH_MIN_EXTENT_MM)),
        "min_duration_s": float(segment_kwargs.get("min_duration_s", REACH_MIN_DURATION_S)),
        "min_gap_s": float(segment_kwargs.get("merge_gap_s", REACH_MIN_GAP_S)),
        "smooth_window": window,
    }
    reaches, search = find_reaches(t, paw, **segment_kwargs)
    table = reach_table(reaches)
    sp = speed(t, paw, window)
    u, curves = velocity_curves(t, sp, reaches)
    result: dict[str, Any] = {
        "reaches": reaches,
        "reach_table": table,
        "velocity_u": u,
        "velocity_curves": curves,
        "paw": paw,
        "sample_status": cleaned.status(),
    }
    frames = cleaned.quality.to_dict()
    if confidence is None:
        frames["min_confidence"] = None  # the source has no confidence: nothing was cut
    summary: dict[str, Any] = {
        "n_reaches": len(reaches),
        "mean_duration_s": float(table["duration_s"].mean()) if len(table) else float("nan"),
        "mean_path_length_mm": float(table["path_length_mm"].mean()) if len(table) else float("nan"),
        "mean_max_speed_mm_s": float(table["max_speed_mm_s"].mean()) if len(table) else float("nan"),
        "n_samples": len(sp),
        "n_samples_missing": cleaned.quality.missing,
        "frames": frames,
        "settings": settings,
        "movements": asdict(search),
        **(info or {}),
    }
    if not reaches:
        summary["note"] = no_reach_note(t, paw, onset, window, search.movements)
    if trials is not None:
        result["trial_outcomes"] = trial_outcomes(trials, reaches)
        summary.update(success_summary(trials["outcome"]))
    linkage = None
    if n_clusters > 0 and len(reaches) >= 2:
        from analysis.clustering import cluster, dtw_distance_matrix

        paths = [paw[r.onset : r.offset + 1] for r in reaches]
        paths = [p - p[0] for p in paths]
        labels, linkage = cluster(dtw_distance_matrix(paths), n_clusters=min(n_clusters, len(reaches)))
        table["cluster"] = labels
        summary["cluster_sizes"] = {int(c): int((labels == c).sum()) for c in np.unique(labels)}
    result["summary"] = summary
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "reaches.csv", index=False)
        kin = kinematics_table(t, paw, window)
        kin["sample"] = cleaned.status()
        kin.to_csv(out / "kinematics.csv", index=False)
        if trials is not None:
            result["trial_outcomes"].to_csv(out / "trials_outcomes.csv", index=False)
        plot_trajectories(paw, reaches, out / "trajectories.png")
        plot_velocity_curves(u, curves, out / "velocity.png")
        if linkage is not None:
            from analysis.clustering import plot_dendrogram

            plot_dendrogram(linkage, out / "dendrogram.png", labels=[f"r{i}" for i in range(len(reaches))])
        tmp = out / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1, default=float))
        tmp.replace(out / "summary.json")  # written last: its presence means the analysis finished
    return result


# ----------------------------------------------------------------------------------------------- figures
def reaching_figures(folder: str | Path, out_dir: str | Path) -> list[Path]:
    """The paper's reaching figures from what :func:`analyze_reaching` wrote in ``folder``
    (``kinematics.csv``, ``reaches.csv``, ``trials_outcomes.csv`` when there are trials), into ``out_dir``:
    ``trajectories.png`` (3-D paths of the reaches), ``velocity.png`` (speed over normalized reach time,
    mean and SD), ``speed_time.png`` (speed over the session, reaches shaded, the onset speed marked),
    ``reach_measures.png`` (duration, path length, peak speed per reach) and, with trials,
    ``outcomes.png`` (trials per outcome). Each is 600 x 400 px except the 3-D one (600 x 500)."""
    import pandas as pd

    from analysis.plotting import pyplot, save

    d, out = Path(folder), Path(out_dir)
    for name in ("kinematics.csv", "reaches.csv", "summary.json"):
        if not (d / name).is_file():
            raise AnalysisError(f"{d}: no {name}: give the folder the reaching analysis wrote")
    kin = _read_table(d / "kinematics.csv", "kinematics table", ["t_s", "x", "y", "z", "speed_mm_s"])
    reaches_df = _read_table(d / "reaches.csv", "reach table", list(Reach.__dataclass_fields__))
    summary = json.loads(read_text(d / "summary.json", "summary", AnalysisError))
    reaches = [Reach(**{k: r[k] for k in Reach.__dataclass_fields__}) for _, r in reaches_df.iterrows()]
    reaches = [Reach(**{**r.__dict__, "onset": int(r.onset), "offset": int(r.offset)}) for r in reaches]
    out.mkdir(parents=True, exist_ok=True)
    t = kin["t_s"].to_numpy(float)
    xyz = kin[["x", "y", "z"]].to_numpy(float)
    sp = kin["speed_mm_s"].to_numpy(float)
    written = [plot_trajectories(xyz, reaches, out / "trajectories.png")]
    u, curves = velocity_curves(t, sp, reaches)
    written.append(plot_velocity_curves(u, curves, out / "velocity.png"))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(t - t[0], sp, lw=0.6, color="0.3")
    for r in reaches:
        ax.axvspan(r.t_onset_s - t[0], r.t_offset_s - t[0], color="tab:orange", alpha=0.3, lw=0)
    onset = summary.get("settings", {}).get("onset_speed_mm_s")
    if onset is not None:
        ax.axhline(onset, color="tab:red", lw=0.8, ls="--", label=f"onset {onset:g} mm/s")
        ax.legend(loc="upper right")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("speed (mm/s)")
    ax.set_title(f"paw speed, {len(reaches)} reaches")
    written.append(save(fig, out / "speed_time.png"))
    fig, axes = plt.subplots(1, 3, figsize=(6, 4))
    for ax, col, label in zip(
        axes,
        ("duration_s", "path_length_mm", "max_speed_mm_s"),
        ("duration (s)", "path length (mm)", "peak speed (mm/s)"),
        strict=True,
    ):
        v = reaches_df[col].to_numpy(float)
        ax.bar(np.arange(len(v)) + 1, v, color="tab:blue")
        ax.set_xlabel("reach")
        ax.set_title(label, fontsize=9)
    written.append(save(fig, out / "reach_measures.png"))
    if (d / "trials_outcomes.csv").is_file():
        trials = pd.read_csv(d / "trials_outcomes.csv")
        counts = trials["outcome"].fillna("").astype(str).value_counts()
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.bar(list(counts.index), counts.to_numpy(), color="tab:green")
        rate = summary.get("success_rate")
        ax.set_title(f"trial outcomes (success rate {rate:.0%})" if rate is not None else "trial outcomes")
        ax.set_ylabel("trials")
        written.append(save(fig, out / "outcomes.png"))
    return written
