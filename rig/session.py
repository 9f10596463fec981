"""The session format, in one module: the tables' columns, the writers the recorder writes through, and
the reader everything else loads a recorded session with.

The layout is specified in ``rig/SESSION.md``. A session folder is "complete" only when
``session.json`` says ``"status": "complete"``; it says ``"running"`` while recording and
``"failed"``/``"aborted"`` (with a reason) when the session ended otherwise. Creating and finishing a
folder is :mod:`rig.session_folder`'s; the figures judged from one, :mod:`rig.session_metrics`'.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from analysis.camera import Calibration, load_calibration
from analysis.errors import CalibrationFileError
from analysis.io.rig_session import parse_events, read_session_meta
from analysis.textfile import read_text, read_yaml
from rig import messages as m
from rig.errors import InputError

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

SESSION_FORMAT_VERSION = 1


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


# ----------------------------------------------------------------------------- writing
FRAME_COLUMNS = [
    "seq",
    "frame_id",
    "trigger_index",
    "t_trigger_ns",
    "t_device_ns",
    "t_host_ns",
    "t_recorded_ns",
    "video_index",
    "dropped",
    "lost_before",
    "incomplete",
]
DETECTION_COLUMNS = [
    "camera",
    "seq",
    "trigger_index",
    "t_frame_ns",
    "t_start_ns",
    "t_end_ns",
    "n_boxes",
    "box",
    "x1",
    "y1",
    "x2",
    "y2",
    "confidence",
    "class_id",
]
POINT_COLUMNS = [
    "trigger_index",
    "name",
    "x",
    "y",
    "z",
    "x_filt",
    "y_filt",
    "z_filt",
    "x_pred",
    "y_pred",
    "z_pred",
    "valid",
    "reproj_error_px",
    "cameras",
    "t_frame_ns",
    "t_trigger_ns",
    "t_det_ns",
    "t_out_ns",
    "reason",
]
TRUTH_COLUMNS = [
    "trigger_index",
    "t_trigger_ns",
    "paw_x",
    "paw_y",
    "paw_z",
    "paw_radius_mm",
    "pellet_x",
    "pellet_y",
    "pellet_z",
    "pellet_present",
    "platform_up",
    "trial",
    "phase",
]
TRIAL_COLUMNS = ["trial", "t_start_ns", "t_end_ns", "outcome"]
TRIGGER_COLUMNS = ["index", "t_host_ns", "t_fw_us"]


class AppendFile:
    """An append-only text file, flushed on :meth:`flush` and fsynced on request and at close."""

    def __init__(self, path: Path):
        self.path = path
        self.f = open(path, "w", newline="", buffering=1 << 16)  # noqa: SIM115 - closed in close()

    def flush(self, fsync: bool = False) -> None:
        self.f.flush()
        if fsync:
            os.fsync(self.f.fileno())

    def close(self) -> None:
        """Flush, fsync and close; the file is closed even when the flush fails (disk full)."""
        if self.f.closed:
            return
        try:
            self.flush(fsync=True)
        finally:
            with contextlib.suppress(OSError):
                self.f.close()


class Table(AppendFile):
    """A CSV table with a header row."""

    def __init__(self, path: Path, columns: list[str]):
        super().__init__(path)
        self.columns = columns
        self.w = csv.writer(self.f)
        self.w.writerow(columns)
        self.rows = 0

    def write(self, row: list[Any]) -> None:
        self.w.writerow(row)
        self.rows += 1


class CameraFrames(msgspec.Struct, frozen=True):
    """One camera's rows in its frame table: all, recorded (in the video) and dropped."""

    frames: int
    recorded: int
    dropped: int


class ErrorVsTruth(msgspec.Struct, frozen=True):
    median: float
    p95: float


class PointsSummary(msgspec.Struct, frozen=True, omit_defaults=True):
    """The 3-D table: points, valid ones, frame -> 3-D latency (ms) and, in simulation, the error in mm."""

    n: int
    valid: int
    latency_ms_p50: float
    latency_ms_p99: float
    error_vs_truth_mm: ErrorVsTruth | None = None


class PulseSummary(msgspec.Struct, frozen=True):
    """Closed-loop TTL pulses and their trigger -> pin latency on the firmware clock (ms)."""

    pulses: int
    trigger_to_ttl_ms_p50: float
    trigger_to_ttl_ms_p99: float


class SessionSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``session.json``'s ``summary``, read back from the session's own files when it ended. A part that
    does not apply (no 3-D, no closed loop, nothing left undetected) is left out of the file;
    ``success_rate`` is always there (null while a trial is unclassified). ``closed_loop_report`` is
    :func:`rig.closed_loop_report.closed_loop_summary`'s report; ``nodes`` every node's last counters."""

    trials: int
    outcomes: dict[str, int]
    restarts: list[str]
    duration_s: float
    success_rate: float | None
    read_back_error: str | None = None
    frames: dict[str, CameraFrames] | None = None
    points3d: PointsSummary | None = None
    closed_loop: PulseSummary | None = None
    closed_loop_report: dict[str, Any] | None = None
    detector_skipped_late: int | None = None
    detector_shed_for_recording: int | None = None
    nodes: dict[str, dict[str, float]] | None = None

    def to_json(self) -> dict[str, Any]:
        out = msgspec.to_builtins(self)
        assert isinstance(out, dict)
        return out


def event_record(topic: str, msg: m.Msg) -> str:
    """One line of ``events.jsonl`` for a bus message: its fields and ``topic``. A serial event is stored
    as ``kind`` + ``values`` (its kind's own fields) and a command as ``name`` + ``args`` beside the
    numbering and times, whichever typed struct carried it on the bus, so the file keeps one shape per
    topic for every reader (``rig.verify``, ``rig.align``, the closed-loop report, analyses)."""
    rec: dict[str, Any] = {"topic": topic, **m.to_builtins(msg)}
    if isinstance(msg, m.SerialEvent):
        rec = {
            "topic": topic,
            "type": "serial",
            "schema": msg.schema,
            "fw_seq": msg.fw_seq,
            "kind": msg.kind,
            "t_fw_us": msg.t_fw_us,
            "t_host_ns": msg.t_host_ns,
            "values": msg.values,
        }
    elif isinstance(msg, m.Command):
        rec = {
            "topic": topic,
            "type": "cmd",
            "schema": msg.schema,
            "name": msg.name,
            "args": msg.args,
            "cause_trigger_index": msg.cause_trigger_index,
            "cause_t_frame_ns": msg.cause_t_frame_ns,
            "t_host_ns": msg.t_host_ns,
        }
    return json.dumps(rec)


class JsonLines(AppendFile):
    def write(self, line: str) -> None:
        self.f.write(line + "\n")


def y_plane(frame: av.VideoFrame) -> np.ndarray:
    """The luma plane of a decoded frame as (H, W) uint8, read directly (no colour conversion)."""
    plane = frame.planes[0]
    buf = memoryview(plane)
    return np.frombuffer(buf, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]


def fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


WRITER_LOCK = ".recorder.lock"  # held (flock) by the recorder for as long as it writes the folder


def hold_writer_lock(folder: Path) -> int:
    """Take the folder's writer lock for this process's lifetime (the kernel drops it when the process
    ends, however it ends); returns the file descriptor to keep."""
    import fcntl

    fd = os.open(folder / WRITER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def writer_active(folder: Path) -> bool:
    """Whether a recorder still holds the folder's writer lock (e.g. finishing its files after the
    supervisor was killed)."""
    import fcntl

    try:
        fd = os.open(folder / WRITER_LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# ----------------------------------------------------------------------------- reading back
@dataclass
class Session:
    """A recorded session loaded back. Tables are dicts of numpy columns (see SESSION.md)."""

    path: Path
    meta: dict[str, Any]
    config: dict[str, Any]
    calibration: Calibration
    frames: dict[str, dict[str, np.ndarray]]
    detections: dict[str, np.ndarray]
    points3d: dict[str, np.ndarray]
    trials: list[dict[str, str]]
    events: list[dict[str, Any]]
    truth: dict[str, np.ndarray] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cameras(self) -> list[str]:
        return list(self.meta.get("cameras", []))

    @property
    def complete(self) -> bool:
        return self.meta.get("status") == "complete"

    def video_path(self, camera: str) -> Path:
        return self.path / f"{camera}.mkv"

    def read_frames(self, camera: str) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame_table_row_index, image (H, W) uint8) for every recorded frame of ``camera``."""
        import av

        table = self.frames[camera]
        rows = np.flatnonzero(table["video_index"] >= 0)
        try:
            container = av.open(str(self.video_path(camera)))
        except (av.error.FFmpegError, OSError) as exc:
            raise InputError(f"{self.video_path(camera)}: cannot open video: {exc}") from None
        with container:
            for k, frame in enumerate(container.decode(video=0)):
                if k >= len(rows):
                    break
                img = y_plane(frame)
                yield int(rows[k]), img.copy()


# columns of a session's tables that hold text; every other column holds numbers (or is empty)
TEXT_COLUMNS = frozenset({"camera", "name", "cameras", "reason", "outcome", "phase"})
FRAME_COLUMNS_READ = ("seq", "trigger_index", "t_host_ns", "video_index", "dropped")
MAX_READ_WARNINGS = 20


@dataclass
class Rows:
    """A session table's text: its header, its rows (each a list of cells), each row's line number, and
    whether a torn last line (a crash mid-write) was left out."""

    header: list[str]
    body: list[list[str]]
    lines: list[int]
    torn: bool = False


def read_rows(path: Path, what: str) -> Rows:
    """A session table (CSV with a header row), read the one way every reader reads it: a torn last line
    (a crash mid-write) is left out; InputError names the file (missing, not UTF-8, not CSV) and the line
    at fault (a row with the wrong number of fields)."""
    text = read_text(path, what, InputError)
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for row in reader:
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise InputError(f"{path}: line {reader.line_num + 1}: not valid CSV ({exc})") from None
    if not rows:
        raise InputError(f"{path}: empty (no header)")
    header, body, lines = rows[0], rows[1:], lines[1:]
    torn = bool(body) and len(body[-1]) != len(header)
    if torn:
        log.info("%s: line %d is torn (a crash mid-write): left out", path, lines[-1])
        body, lines = body[:-1], lines[:-1]
    bad = [i for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise InputError(
            f"{path}: line {lines[bad[0]]} has {len(body[bad[0]])} fields, expected {len(header)}"
            + (f" (and {len(bad) - 1} more such lines)" if len(bad) > 1 else "")
        )
    return Rows(header, body, lines, torn)


def _not_numbers(path: Path, name: str, vals: list[str], lines: list[int]) -> InputError | None:
    """The error naming the first cell of a number column that is neither empty nor a number."""
    for v, ln in zip(vals, lines):
        if v != "":
            try:
                float(v)
            except ValueError:
                return InputError(f"{path}: line {ln}, column {name!r}: {v!r} is not a number")
    return None


def read_csv_columns(
    path: Path, what: str = "table", text: frozenset[str] | None = None, required: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """A CSV with a header row -> dict of numpy columns (numeric where possible). A torn last line is
    ignored (a crash mid-write leaves it). With ``text`` (the columns that hold text), every other column
    must hold numbers or be empty; ``required`` columns must be there. InputError names the file and the
    line, column or byte at fault."""
    header, body, lines, _ = astuple(read_rows(path, what))
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"{path}: lacks column(s) {', '.join(missing)}")
    cols: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        vals = [r[j] for r in body]
        try:
            arr = np.array(vals, dtype=np.int64)
        except ValueError:
            try:  # empty cells are missing numbers (NaN), e.g. the coordinates of an invalid 3-D point
                arr = np.array([v if v != "" else "nan" for v in vals], dtype=np.float64)
                if all(v == "" for v in vals):
                    arr = np.array(vals, dtype=object)
            except ValueError:
                if text is not None and name not in text:
                    err = _not_numbers(path, name, vals, lines)
                    if err is not None:
                        raise err from None
                arr = np.array(vals, dtype=object)
        cols[name] = arr
    return cols


def _read_trials(path: Path) -> list[dict[str, str]]:
    header, body, lines, _ = astuple(read_rows(path, "trial table"))
    for j, name in enumerate(header):
        if name not in TEXT_COLUMNS and (err := _not_numbers(path, name, [r[j] for r in body], lines)):
            raise err
    return [dict(zip(header, r)) for r in body]


def _read_events(path: Path, warnings: list[str]) -> list[dict[str, Any]]:
    """``events.jsonl`` (:func:`parse_events`): each malformed line is a warning naming the file and line
    (appended to ``warnings`` and logged); a torn last line is left out quietly."""
    events, bad, torn = parse_events(read_text(path, "event log", InputError))
    if torn:
        log.info("%s: line %d is torn (a crash mid-write): left out", path, torn)
    for n, problem in bad[:MAX_READ_WARNINGS]:
        warnings.append(f"{path}: line {n}: {problem}; left out")
        log.warning("%s", warnings[-1])
    if len(bad) > MAX_READ_WARNINGS:
        warnings.append(f"{path}: {len(bad) - MAX_READ_WARNINGS} more malformed lines left out")
        log.warning("%s", warnings[-1])
    return events


def load_session(path: str | Path) -> Session:
    """Load a session folder; raises InputError naming the file (and line, field or byte) at fault.
    Problems that lose only part of a file (a malformed line in ``events.jsonl``) are warnings: logged,
    and listed in ``extra["read_warnings"]``."""
    p = Path(path)
    meta = read_session_meta(p, InputError)
    cameras = meta.get("cameras", [])
    try:
        calib = load_calibration(p / "calibration.yaml")
    except CalibrationFileError as exc:
        raise InputError(str(exc)) from None
    config = read_yaml(p / "config.yaml", "session config", InputError)
    if not isinstance(config, dict):
        raise InputError(
            f"{p / 'config.yaml'}: expected the session's config (a mapping), got {type(config).__name__}"
        )
    frames = {
        cam: read_csv_columns(p / f"{cam}.frames.csv", "frame table", TEXT_COLUMNS, FRAME_COLUMNS_READ)
        for cam in cameras
    }
    warnings: list[str] = []
    ev_path = p / "events.jsonl"
    events = _read_events(ev_path, warnings) if ev_path.exists() else []
    trials = _read_trials(p / "trials.csv") if (p / "trials.csv").exists() else []

    def table(name: str, what: str) -> dict[str, np.ndarray] | None:
        f = p / name
        return read_csv_columns(f, what, TEXT_COLUMNS) if f.exists() else None

    truth = table("truth.csv", "truth table")
    extra: dict[str, Any] = {"read_warnings": warnings}
    if (triggers := table("triggers.csv", "trigger table")) is not None:
        extra["triggers"] = triggers
    det = table("detections.csv", "detection table") or {}
    pts = table("points3d.csv", "3-D point table") or {}
    return Session(p, meta, config, calib, frames, det, pts, trials, events, truth, extra)
