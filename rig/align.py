"""``deepbehavior align SESSION --imaging-sync FILE``: behavior frames and trial events on an imaging
system's clock.

The rig's firmware sends pseudo-random sync pulses (``rig.arduino.rsync``, pyControl's Rsync idea: intervals
drawn uniformly from ``min_ms .. max_ms``) and records each one's firmware time (``sync_pulses.csv``); the
imaging system records the same pulses on its own clock (``FILE``). Any few consecutive intervals are a
pattern found once in a session, so the two records are matched by their intervals, whatever the offset
between the clocks, their drift, or pulses missing on either side:

1. **Candidates** (:func:`match_sync`): every run of :data:`WINDOW` consecutive imaging intervals is
   compared with every run of firmware intervals of about the same first interval; a run whose intervals all
   agree (within twice the tolerance plus ``max_drift_ppm`` of the interval) names a candidate pair of pulses.
   A pulse missing on one side merges two intervals there, so the runs across it match nothing; the
   others still do.
2. **Line**: ``t_imaging = offset + scale * t_firmware`` through the candidates by RANSAC (two candidates
   per hypothesis, a fixed seed, so the result is reproducible), then every firmware pulse is paired with
   the nearest imaging pulse within the tolerance of the line, one to one, and the line refitted by least
   squares until the pairs stop changing; a last pass keeps the pairs within six robust standard deviations
   of the residuals (at least 1 ms, at most the tolerance), so a spurious pulse near a missing one's place
   is not taken for it.
3. **Report** (:class:`SyncMatch`): the residuals, the firmware pulses the imaging record lacks and the
   imaging pulses the firmware record lacks (within the span both cover).

The map then puts every behavior frame (``triggers.csv``: trigger index, firmware time) and every trial
event (``events.jsonl``: task events on the host clock are taken to the firmware clock
through ``clock.json``'s map, firmware events carry their firmware time) on the imaging clock. An imaging
frame index comes from the imaging system's frame times (``--imaging-frames FILE``: the frame that began
last at or before the time) and, when the session recorded the frame clock (``rig.arduino.frame_clock``,
``imaging_frames.csv``), from the firmware's own record of the frame edges (:func:`frame_clock_numbers`).

Input files (``--imaging-sync``, ``--imaging-frames``): CSV, one time per row, increasing, in seconds
(``--unit ms`` / ``us`` for others); the column named by ``--column``, else the one named ``time_s``,
``time``, ``t_s``, ``t`` or ``timestamp`` when there is a header row, else the first. Blank lines and
lines starting with ``#`` are skipped. Output (``SESSION/alignment/`` or ``--out``): ``frames.csv``,
``events.csv``, ``sync_pulses.csv``, ``summary.json`` (``rig/SESSION.md``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.textfile import read_text
from rig.errors import InputError

WINDOW = 4  # consecutive intervals that must agree for a candidate pair
DEFAULT_TOLERANCE_MS = 10.0  # a pulse's time on either record may be off by this much
DEFAULT_MAX_DRIFT_PPM = 5000.0  # an Uno's ceramic resonator is within ~0.5 % of 16 MHz
RANSAC_ITERATIONS = 400
MIN_MATCHED = WINDOW + 2
TIME_COLUMNS = ("time_s", "time", "t_s", "t", "timestamp")
SERIAL_EVENT_KINDS = (
    "ir",
    "ttl_fired",
    "servo_done",
    "dispense_done",
    "redelivery",
    "sync",
    "watchdog",
    "loopback",
)
OUT_DIR = "alignment"


# ----------------------------------------------------------------------------- reading a times file
def parse_times(
    text: str,
    path: str | Path,
    what: str = "sync pulse times",
    column_name: str | None = None,
    unit_s: float = 1.0,
) -> np.ndarray:
    """The times (seconds, float64) of a CSV file's time column (see the module; ``column_name`` picks a
    header's column by name, ``unit_s`` is the file's unit in seconds, 1e-3 for milliseconds);
    :class:`InputError` naming ``path`` and the line for anything else."""
    rows = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    rows = [(n, line) for n, line in rows if line and not line.startswith("#")]
    if not rows:
        raise InputError(f"{path}: no {what} (one time per line)")
    column = 0
    first_cells = next(csv.reader([rows[0][1]]))
    has_header = not _is_number(first_cells[0].strip())
    names = [c.strip().lower() for c in first_cells] if has_header else []
    if column_name is not None:
        if column_name.strip().lower() not in names:
            header = (
                f"the header's columns are {[c.strip() for c in first_cells]}" if has_header else "no header"
            )
            raise InputError(f"{path}:{rows[0][0]}: no column {column_name!r} ({header})")
        column = names.index(column_name.strip().lower())
    elif has_header:
        column = next((names.index(c) for c in TIME_COLUMNS if c in names), 0)
    if has_header:
        rows = rows[1:]
    times = np.empty(len(rows), dtype=np.float64)
    for k, (n, line) in enumerate(rows):
        cells = next(csv.reader([line]))
        if column >= len(cells):
            raise InputError(f"{path}:{n}: no column {column + 1} (the time column) in {line!r}")
        cell = cells[column].strip()
        if not _is_number(cell):
            raise InputError(f"{path}:{n}: {cell!r} is not a time in seconds")
        t = float(cell) * unit_s
        if not math.isfinite(t):
            raise InputError(f"{path}:{n}: {cell!r} is not a finite time")
        if k and t <= times[k - 1]:
            raise InputError(f"{path}:{n}: times must increase ({t:g} s after {times[k - 1]:g} s)")
        times[k] = t
    if len(times) == 0:
        raise InputError(f"{path}: a header and no {what}")
    return times


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def read_times(
    path: str | Path, what: str = "sync pulse times", column_name: str | None = None, unit_s: float = 1.0
) -> np.ndarray:
    return parse_times(read_text(path, what, error=InputError), path, what, column_name, unit_s)


# ----------------------------------------------------------------------------- matching (pure)
@dataclass(frozen=True)
class SyncMatch:
    """The imaging <-> firmware map from matched sync pulses: ``t_imaging_s = offset_s + scale * t_fw_s``.

    ``pairs``: (firmware pulse row, imaging pulse row) matched, in order; ``residuals_s`` their imaging time
    minus the line's; ``missing_in_imaging`` firmware rows within the imaging record's span with no partner;
    ``missing_in_session`` imaging rows within the firmware record's span with no partner;
    ``outside``: rows of either side outside the span both cover."""

    offset_s: float
    scale: float
    pairs: list[tuple[int, int]]
    residuals_s: np.ndarray
    missing_in_imaging: list[int]
    missing_in_session: list[int]
    outside_fw: int
    outside_imaging: int
    candidates: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_imaging(self, t_fw_s: np.ndarray | float) -> np.ndarray:
        return self.offset_s + self.scale * np.asarray(t_fw_s, dtype=np.float64)

    @property
    def drift_ppm(self) -> float:
        """How much faster the imaging clock runs than the firmware's (parts per million)."""
        return (self.scale - 1.0) * 1e6


def _candidates(a: np.ndarray, b: np.ndarray, tol: float, drift: float, window: int) -> list[tuple[int, int]]:
    """Pairs (firmware row, imaging row) that start a run of ``window`` intervals agreeing on both sides."""
    da, db = np.diff(a), np.diff(b)
    if len(da) < window or len(db) < window:
        return []
    wa = np.lib.stride_tricks.sliding_window_view(da, window)
    wb = np.lib.stride_tricks.sliding_window_view(db, window)
    order = np.argsort(wa[:, 0], kind="stable")
    first = wa[order, 0]
    out: list[tuple[int, int]] = []
    for j, run in enumerate(wb):
        slack = 2 * tol + drift * run[0]
        lo, hi = np.searchsorted(first, [run[0] - slack, run[0] + slack])
        if lo == hi:
            continue
        idx = order[lo:hi]
        allowed = 2 * tol + drift * np.maximum(wa[idx], run)
        ok = np.all(np.abs(wa[idx] - run) <= allowed, axis=1)
        out.extend((int(i), j) for i in idx[ok])
    return out


def _pair_nearest(
    a: np.ndarray, b: np.ndarray, offset: float, scale: float, tol: float
) -> list[tuple[int, int]]:
    """Every firmware pulse with the nearest imaging pulse within ``tol`` of the line, one to one (the
    closer firmware pulse keeps a contested imaging pulse)."""
    pred = offset + scale * a
    j = np.clip(np.searchsorted(b, pred), 1, len(b) - 1) if len(b) > 1 else np.zeros(len(a), dtype=np.int64)
    if len(b) > 1:
        left = j - 1
        j = np.where(np.abs(b[left] - pred) <= np.abs(b[j] - pred), left, j)
    err = np.abs(b[j] - pred)
    best: dict[int, tuple[float, int]] = {}
    for i in np.flatnonzero(err <= tol):
        jj = int(j[i])
        if jj not in best or err[i] < best[jj][0]:
            best[jj] = (float(err[i]), int(i))
    return sorted((i, jj) for jj, (_, i) in best.items())


def _fit(a: np.ndarray, b: np.ndarray, pairs: list[tuple[int, int]]) -> tuple[float, float]:
    ia = np.array([p[0] for p in pairs])
    ib = np.array([p[1] for p in pairs])
    x = a[ia]
    x0 = float(x.mean())
    scale, icpt = np.polyfit(x - x0, b[ib], 1)
    return float(icpt - scale * x0), float(scale)


def match_sync(
    fw_s: np.ndarray,
    imaging_s: np.ndarray,
    tolerance_s: float = DEFAULT_TOLERANCE_MS / 1e3,
    max_drift_ppm: float = DEFAULT_MAX_DRIFT_PPM,
    window: int = WINDOW,
) -> SyncMatch:
    """Match the firmware's sync pulse times with the imaging system's (both increasing, seconds, each on
    its own clock) and fit the map (see the module). Raises :class:`InputError` when they do not match."""
    a = np.asarray(fw_s, dtype=np.float64)
    b = np.asarray(imaging_s, dtype=np.float64)
    drift = max_drift_ppm * 1e-6
    for arr, side in ((a, "the session"), (b, "the imaging record")):
        if len(arr) < window + 1:
            raise InputError(
                f"{side} has {len(arr)} sync pulses: matching needs {window + 1} in a row on each side"
            )
    cands = _candidates(a, b, tolerance_s, drift, window)
    if not cands:
        hint = ""
        ratio = float(np.median(np.diff(b)) / np.median(np.diff(a)))
        if 500 < ratio < 2000:
            hint = " (the imaging times look like milliseconds: the file must hold seconds)"
        elif not 0.5 < ratio < 2:
            hint = f" (the imaging pulses' median interval is {ratio:.3g} x the session's: another signal?)"
        raise InputError(
            f"no run of {window} sync intervals in the imaging record matches the session's within "
            f"{tolerance_s * 1e3:g} ms{hint}; a coarser imaging record needs a larger --tolerance-ms"
        )
    # points of every candidate run (its window + 1 pulses on both sides), for the line
    pts = sorted({(i + k, j + k) for i, j in cands for k in range(window + 1)})
    pa = np.array([a[i] for i, _ in pts])
    pb = np.array([b[j] for _, j in pts])
    rng = np.random.default_rng(0)  # fixed: the same files always give the same result
    best: tuple[int, float, float] | None = None
    n = len(pts)
    for _ in range(RANSAC_ITERATIONS if n > 2 else 1):
        if n >= 2:
            p, q = rng.choice(n, 2, replace=False)
            if pa[p] == pa[q]:
                continue
            scale = (pb[q] - pb[p]) / (pa[q] - pa[p])
        else:
            p, scale = 0, 1.0
        if abs(scale - 1.0) > drift:
            continue
        offset = pb[p] - scale * pa[p]
        inliers = int(np.count_nonzero(np.abs(offset + scale * pa - pb) <= 2 * tolerance_s))
        if best is None or inliers > best[0]:
            best = (inliers, float(offset), float(scale))
    if best is None:
        raise InputError(
            f"the matching sync intervals imply a drift beyond {max_drift_ppm:g} ppm between the clocks: "
            "raise --max-drift-ppm if the clocks really are that far apart"
        )
    _, offset, scale = best
    pairs: list[tuple[int, int]] = []
    for _ in range(10):
        new = _pair_nearest(a, b, offset, scale, tolerance_s)
        if len(new) < 2:
            break
        offset, scale = _fit(a, b, new)
        if new == pairs:
            break
        pairs = new
    if len(pairs) >= MIN_MATCHED:
        # the records' own scatter bounds a pair tighter than the tolerance does: a spurious pulse near a
        # missing one's place is then left out (6 robust sigmas, never under 1 ms)
        ia = np.array([p[0] for p in pairs])
        ib = np.array([p[1] for p in pairs])
        res = b[ib] - (offset + scale * a[ia])
        sigma = 1.4826 * float(np.median(np.abs(res - np.median(res))))
        tight = min(tolerance_s, max(6 * sigma, 1e-3))
        if tight < tolerance_s:
            pairs = _pair_nearest(a, b, offset, scale, tight)
            offset, scale = _fit(a, b, pairs)
    if len(pairs) < MIN_MATCHED:
        raise InputError(
            f"only {len(pairs)} sync pulses matched ({MIN_MATCHED} needed): are these the same pulses?"
        )
    ia = np.array([p[0] for p in pairs])
    ib = np.array([p[1] for p in pairs])
    residuals = b[ib] - (offset + scale * a[ia])
    matched_a, matched_b = set(ia.tolist()), set(ib.tolist())
    lo_b, hi_b = b[0] - tolerance_s, b[-1] + tolerance_s  # the span both records cover, imaging clock
    pred = offset + scale * a
    in_b = (pred >= lo_b) & (pred <= hi_b)
    back = (b - offset) / scale
    in_a = (back >= a[0] - tolerance_s) & (back <= a[-1] + tolerance_s)
    return SyncMatch(
        offset_s=offset,
        scale=scale,
        pairs=pairs,
        residuals_s=residuals,
        missing_in_imaging=[i for i in np.flatnonzero(in_b).tolist() if i not in matched_a],
        missing_in_session=[j for j in np.flatnonzero(in_a).tolist() if j not in matched_b],
        outside_fw=int(np.count_nonzero(~in_b)),
        outside_imaging=int(np.count_nonzero(~in_a)),
        candidates=len(cands),
    )


def frame_clock_numbers(t_fw_us: np.ndarray) -> tuple[np.ndarray, float]:
    """Frame numbers (0 = the first recorded edge) of the imaging frame-clock edges the firmware reported,
    and the frame period (us, firmware clock). Numbers come from the time between edges, so a pulse missing
    on the line or a report lost on the way skips a number instead of shifting every later frame."""
    t = np.asarray(t_fw_us, dtype=np.float64)
    if len(t) < 2:
        return np.zeros(len(t), dtype=np.int64), float("nan")
    period = float(np.median(np.diff(t)))  # most neighbours are one frame apart
    steps = np.maximum(np.rint(np.diff(t) / period), 1).astype(np.int64)
    numbers = np.concatenate([[0], np.cumsum(steps)])
    slope, _ = np.polyfit(numbers.astype(np.float64), t - t[0], 1)  # refine over the whole record
    steps = np.maximum(np.rint(np.diff(t) / slope), 1).astype(np.int64)
    numbers = np.concatenate([[0], np.cumsum(steps)])
    slope, _ = np.polyfit(numbers.astype(np.float64), t - t[0], 1)
    return numbers, float(slope)


def frame_at(edges: np.ndarray, numbers: np.ndarray, period: float, t: np.ndarray) -> np.ndarray:
    """The number of the frame that began last at or before each time ``t`` (on the edges' clock): from the
    last recorded edge before it plus whole periods since (missing edges included); -1 before the first
    edge or more than a period after the last."""
    t = np.asarray(t, dtype=np.float64)
    out = np.full(len(t), -1, dtype=np.int64)
    if len(edges) == 0:
        return out
    k = np.searchsorted(edges, t, side="right") - 1
    ok = (k >= 0) & (t <= edges[-1] + period) if math.isfinite(period) else (k >= 0)
    kk = np.clip(k, 0, len(edges) - 1)
    since = np.floor((t - edges[kk]) / period) if math.isfinite(period) else np.zeros(len(t))
    out[ok] = (numbers[kk] + since.astype(np.int64))[ok]
    return out


# ----------------------------------------------------------------------------- the session side
def _read_csv(path: Path) -> list[dict[str, str]]:
    text = read_text(path, "session table", error=InputError)
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines = lines[:-1]  # a torn last line (a crash mid-write)
    return list(csv.DictReader(lines))


def _int_column(rows: list[dict[str, str]], key: str, path: Path) -> np.ndarray:
    try:
        return np.array([int(r[key]) for r in rows], dtype=np.int64)
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: column {key!r} missing or not whole numbers") from None


@dataclass(frozen=True)
class HostToFirmware:
    """``clock.json``'s map, inverted: host ns -> firmware us."""

    ref_fw_us: float
    offset_ns: float
    slope_ns_per_us: float

    def __call__(self, t_host_ns: float) -> float:
        return self.ref_fw_us + (t_host_ns - self.offset_ns) / self.slope_ns_per_us


def read_clock_map(session: Path) -> HostToFirmware | None:
    path = session / "clock.json"
    if not path.exists():
        return None
    try:
        data = json.loads(read_text(path, "clock record", error=InputError))
        if not data.get("ready"):
            return None
        return HostToFirmware(
            float(data["ref_fw_us"]), float(data["offset_ns"]), float(data["slope_ns_per_us"])
        )
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{path}: not a clock record (format: rig/SESSION.md)") from None


def _events(session: Path, to_fw: HostToFirmware | None) -> list[dict[str, Any]]:
    """Trial events on the firmware clock: ``events.jsonl``'s task events (trial start, outcome, trial end,
    ...; host clock, through ``clock.json``) and apparatus firmware events (``SERIAL_EVENT_KINDS``)."""
    from analysis.io.rig_session import parse_events

    out: list[dict[str, Any]] = []

    def fw_of(t_host: int) -> float:
        return to_fw(t_host) if to_fw is not None and t_host >= 0 else float("nan")

    ev_path = session / "events.jsonl"
    if ev_path.exists():
        events, _, _ = parse_events(read_text(ev_path, "event log", error=InputError))
        for e in events:
            topic, kind = e.get("topic"), str(e.get("kind", ""))
            if topic == "task.event":
                t = int(e.get("t_host_ns", -1))
                detail = e.get("outcome") or e.get("state") or ""
                row = {"source": "task", "kind": kind, "trial": int(e.get("trial", -1)), "t_host_ns": t}
                out.append({**row, "t_fw_us": fw_of(t), "detail": detail})
            elif topic == "serial.event" and kind in SERIAL_EVENT_KINDS and int(e.get("t_fw_us", -1)) >= 0:
                values = e.get("values", {})
                detail = " ".join(
                    f"{k}={v}" for k, v in values.items() if k not in ("t_recv_ns", "latency_ns")
                )
                row = {
                    "source": "firmware",
                    "kind": kind,
                    "trial": -1,
                    "t_host_ns": int(e.get("t_host_ns", -1)),
                }
                out.append({**row, "t_fw_us": float(e["t_fw_us"]), "detail": detail})
    out.sort(key=lambda r: (math.isnan(r["t_fw_us"]), r["t_fw_us"]))
    return out


# ----------------------------------------------------------------------------- the command
def _ms_stats(residuals_s: np.ndarray) -> dict[str, float]:
    r = np.abs(residuals_s) * 1e3
    return {
        "p50": round(float(np.percentile(r, 50)), 4),
        "p99": round(float(np.percentile(r, 99)), 4),
        "max": round(float(r.max()), 4),
    }


def _fmt(x: float, digits: int = 6) -> str:
    return "" if not math.isfinite(x) else f"{x:.{digits}f}"


def align_session(
    session: Path,
    imaging_sync: Path,
    imaging_frames: Path | None = None,
    out_dir: Path | None = None,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    max_drift_ppm: float = DEFAULT_MAX_DRIFT_PPM,
    column: str | None = None,
    unit_s: float = 1.0,
) -> dict[str, Any]:
    """Align one session (see the module); writes the files and returns the summary."""
    if not (session / "session.json").exists():
        raise InputError(f"{session}: not a session folder (no session.json)")
    sync_path = session / "sync_pulses.csv"
    if not sync_path.exists():
        raise InputError(
            f"{sync_path}: missing: the session sent no pseudo-random sync (rig.arduino.rsync.enabled: true)"
        )
    sync_rows = _read_csv(sync_path)
    fw_index = _int_column(sync_rows, "index", sync_path)
    fw_us = _int_column(sync_rows, "t_fw_us", sync_path)
    img = read_times(imaging_sync, "sync pulse times", column, unit_s)
    frames_img = (
        read_times(imaging_frames, "imaging frame times", column, unit_s)
        if imaging_frames is not None
        else None
    )
    match = match_sync(fw_us / 1e6, img, tolerance_ms / 1e3, max_drift_ppm)

    edges_path = session / "imaging_frames.csv"
    edges_us = numbers = None
    period_us = float("nan")
    edge_missing_reports = 0
    if edges_path.exists():
        er = _read_csv(edges_path)
        if len(er) >= 2:
            edges_us = _int_column(er, "t_fw_us", edges_path).astype(np.float64)
            counts = _int_column(er, "index", edges_path)
            edge_missing_reports = int(np.sum(np.clip(np.diff(counts) - 1, 0, None)))
            numbers, period_us = frame_clock_numbers(edges_us)

    trig_path = session / "triggers.csv"
    trig = _read_csv(trig_path) if trig_path.exists() else []
    t_index = _int_column(trig, "index", trig_path)
    t_fw = _int_column(trig, "t_fw_us", trig_path).astype(np.float64) if trig else np.zeros(0)
    if len(t_fw) and np.any(t_fw < 0):
        raise InputError(
            f"{trig_path}: triggers without a firmware time (t_fw_us -1): no firmware clock record"
        )
    out = out_dir if out_dir is not None else session / OUT_DIR
    out.mkdir(parents=True, exist_ok=True)

    def imaging_columns(t_fw_us: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ok = np.isfinite(t_fw_us)
        t_img = np.where(ok, match.to_imaging(np.where(ok, t_fw_us, 0.0) / 1e6), np.nan)
        clock_idx = (
            frame_at(edges_us, numbers, period_us, np.where(ok, t_fw_us, -np.inf))
            if edges_us is not None and numbers is not None
            else np.full(len(t_fw_us), -1, dtype=np.int64)
        )
        if frames_img is not None:
            period = float(np.median(np.diff(frames_img))) if len(frames_img) > 1 else math.inf
            k = np.searchsorted(frames_img, np.where(ok, t_img, -np.inf), side="right") - 1
            img_idx = np.where((k >= 0) & (t_img <= frames_img[-1] + period), k, -1)
        else:
            img_idx = np.full(len(t_fw_us), -1, dtype=np.int64)
        return t_img, clock_idx, img_idx

    t_img, clock_idx, img_idx = imaging_columns(t_fw)
    with open(out / "frames.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trigger_index", "t_fw_us", "t_imaging_s", "frame_clock_index", "imaging_frame"])
        for row in zip(t_index.tolist(), t_fw.tolist(), t_img.tolist(), clock_idx.tolist(), img_idx.tolist()):
            w.writerow([row[0], int(row[1]), _fmt(row[2]), row[3], row[4]])

    to_fw = read_clock_map(session)
    events = _events(session, to_fw)
    ev_fw = np.array([e["t_fw_us"] for e in events], dtype=np.float64)
    ev_img, ev_clock, ev_idx = imaging_columns(ev_fw)
    with open(out / "events.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["source", "kind", "trial", "t_host_ns", "t_fw_us", "t_imaging_s", "frame_clock_index",
             "imaging_frame", "detail"]
        )  # fmt: skip
        for e, ti, ci, ii in zip(events, ev_img.tolist(), ev_clock.tolist(), ev_idx.tolist()):
            fw = e["t_fw_us"]
            w.writerow(
                [e["source"], e["kind"], e["trial"], e["t_host_ns"], "" if math.isnan(fw) else round(fw),
                 _fmt(ti), ci, ii, e["detail"]]
            )  # fmt: skip

    partner_fw = dict(match.pairs)
    partner_img = {j: i for i, j in match.pairs}
    resid = {i: r for (i, _), r in zip(match.pairs, match.residuals_s.tolist())}
    with open(out / "sync_pulses.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fw_index", "t_fw_us", "imaging_row", "t_imaging_s", "residual_ms", "status"])
        missing_img, missing_fw = set(match.missing_in_imaging), set(match.missing_in_session)
        for i in range(len(fw_us)):
            j = partner_fw.get(i)
            if j is not None:
                w.writerow([fw_index[i], fw_us[i], j + 1, _fmt(img[j]), f"{resid[i] * 1e3:.4f}", "matched"])
            else:
                status = "missing_in_imaging" if i in missing_img else "outside_imaging_record"
                w.writerow([fw_index[i], fw_us[i], "", "", "", status])
        for j in range(len(img)):
            if j not in partner_img:
                status = "missing_in_session" if j in missing_fw else "outside_session"
                w.writerow(["", "", j + 1, _fmt(img[j]), "", status])

    inside = np.isfinite(t_img) & (t_img >= img[0]) & (t_img <= img[-1])
    summary: dict[str, Any] = {
        "format": "deepbehavior-alignment",
        "version": 1,
        "session": str(session),
        "imaging_sync": str(imaging_sync),
        "imaging_frames": None if imaging_frames is None else str(imaging_frames),
        "map": "t_imaging_s = offset_s + scale * t_fw_us / 1e6",
        "offset_s": match.offset_s,
        "scale": match.scale,
        "drift_ppm": round(match.drift_ppm, 3),
        "tolerance_ms": tolerance_ms,
        "max_drift_ppm": max_drift_ppm,
        "sync": {
            "session_pulses": len(fw_us),
            "imaging_pulses": len(img),
            "candidates": match.candidates,
            "matched": len(match.pairs),
            "residual_ms": _ms_stats(match.residuals_s),
            "missing_in_imaging": [int(fw_index[i]) for i in match.missing_in_imaging],
            "missing_in_session_rows": [j + 1 for j in match.missing_in_session],
            "session_reports_lost": int(np.sum(np.clip(np.diff(fw_index) - 1, 0, None)))
            if len(fw_index)
            else 0,
            "outside_common_span": {"session": match.outside_fw, "imaging": match.outside_imaging},
        },
        "frames": {
            "behavior_frames": len(t_fw),
            "within_sync_span": int(np.count_nonzero(inside)),
            "extrapolated": int(len(t_fw) - np.count_nonzero(inside)),
        },
        "events": len(events),
        "events_without_firmware_time": int(np.count_nonzero(np.isnan(ev_fw))),
        "frame_clock": None,
    }
    if edges_us is not None and numbers is not None:
        summary["frame_clock"] = {
            "edges_recorded": len(edges_us),
            "reports_lost": edge_missing_reports,
            "frames_spanned": int(numbers[-1] + 1),
            "pulses_missing": int(numbers[-1] + 1 - len(edges_us)),
            "period_us_fw": round(period_us, 4),
            "rate_hz_imaging_clock": round(1e6 / (period_us * match.scale), 6),
        }
    with open(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    summary["out_dir"] = str(out)
    return summary


def summary_lines(s: dict[str, Any]) -> list[str]:
    sync = s["sync"]
    res = sync["residual_ms"]
    lines = [
        f"sync: {sync['matched']} of {sync['session_pulses']} session pulses matched to "
        f"{sync['imaging_pulses']} "
        f"imaging pulses; residual p50 {res['p50']:.3f} ms, p99 {res['p99']:.3f} ms, max {res['max']:.3f} ms",
        f"map: t_imaging = {s['offset_s']:.6f} s + {s['scale']:.9f} x t_firmware (imaging clock "
        f"{s['drift_ppm']:+.1f} ppm against the firmware's)",
        f"missing: {len(sync['missing_in_imaging'])} session pulses not in the imaging record "
        f"{sync['missing_in_imaging'][:10]}; {len(sync['missing_in_session_rows'])} imaging pulses not in "
        "the "
        f"session (rows {sync['missing_in_session_rows'][:10]}); {sync['session_reports_lost']} session "
        f"reports lost",
        f"frames: {s['frames']['behavior_frames']} behavior frames, {s['frames']['extrapolated']} outside "
        "the "
        f"sync span (extrapolated); {s['events']} trial events",
    ]
    fc = s.get("frame_clock")
    if fc:
        lines.append(
            f"frame clock: {fc['edges_recorded']} edges over {fc['frames_spanned']} frames "
            f"({fc['pulses_missing']} pulses missing, {fc['reports_lost']} reports lost), "
            f"{fc['rate_hz_imaging_clock']:.4f} Hz on the imaging clock"
        )
    lines.append(f"written: {s['out_dir']}/ (frames.csv, events.csv, sync_pulses.csv, summary.json)")
    return lines


def cmd_align(args: argparse.Namespace) -> int:
    if args.tolerance_ms <= 0:
        raise InputError(f"--tolerance-ms {args.tolerance_ms:g}: must be > 0")
    if args.max_drift_ppm < 0:
        raise InputError(f"--max-drift-ppm {args.max_drift_ppm:g}: must be >= 0")
    s = align_session(
        Path(args.session),
        Path(args.imaging_sync),
        Path(args.imaging_frames) if args.imaging_frames else None,
        Path(args.out) if args.out else None,
        args.tolerance_ms,
        args.max_drift_ppm,
        args.column,
        {"s": 1.0, "ms": 1e-3, "us": 1e-6}[args.unit],
    )
    print("\n".join(summary_lines(s)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "align",
        help="put a session's behavior frames and trial events on an imaging system's clock",
        description="Match the session's pseudo-random sync pulses (sync_pulses.csv, rig.arduino.rsync) to "
        "the times the imaging system recorded for them, fit the imaging <-> firmware clock map (offset, "
        "drift; pulses missing on either side are reported), and write every behavior frame's and trial "
        "event's imaging time and frame (SESSION/alignment/). Files: CSV, one time per row (seconds unless "
        "--unit).",
    )
    p.add_argument("session", help="the session folder")
    p.add_argument(
        "--imaging-sync", required=True, help="CSV of the sync pulse times the imaging system recorded (s)"
    )
    p.add_argument(
        "--imaging-frames", help="CSV of the imaging frames' times on the imaging clock (s), optional"
    )
    p.add_argument("--out", help="output folder (default SESSION/alignment)")
    p.add_argument(
        "--column",
        help="the files' time column by its header name (default: time_s, time, t_s, t or timestamp, else "
        "the first column), e.g. 'Time Stamp (ms)' of a UCLA Miniscope timeStamps.csv",
    )
    p.add_argument(
        "--unit", choices=("s", "ms", "us"), default="s", help="the unit of the files' times (default s)"
    )
    p.add_argument(
        "--tolerance-ms",
        type=float,
        default=DEFAULT_TOLERANCE_MS,
        help=f"how far a pulse's time may be off on either record (default {DEFAULT_TOLERANCE_MS:g} ms; an "
        "imaging system that samples the sync line once per frame needs about a frame period)",
    )
    p.add_argument(
        "--max-drift-ppm",
        type=float,
        default=DEFAULT_MAX_DRIFT_PPM,
        help=f"largest rate difference between the two clocks (default {DEFAULT_MAX_DRIFT_PPM:g} ppm)",
    )
    p.set_defaults(func=cmd_align)
