"""The session folder: creation, metadata, and a reader that loads a recorded session back.

The layout is specified in ``rig/SESSION.md``. A session folder is "complete" only when
``session.json`` says ``"status": "complete"``; it says ``"running"`` while recording and
``"failed"``/``"aborted"`` (with a reason) when the session ended otherwise.
"""

from __future__ import annotations

import csv
import datetime as dt
import errno
import io
import json
import logging
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from analysis.camera import Calibration, load_calibration, save_calibration
from analysis.errors import CalibrationFileError
from analysis.textfile import read_text, read_yaml
from rig.config import REPO_ROOT, LoadedConfig
from rig.errors import CalibrationError, InputError, StorageError
from rig.frames import FrameRing, process_identity

log = logging.getLogger(__name__)

SESSION_FORMAT = "deepbehavior-session"
SESSION_FORMAT_VERSION = 1
PACKAGES = (
    "numpy",
    "scipy",
    "pyzmq",
    "msgspec",
    "pydantic",
    "av",
    "opencv-python",
    "pyserial",
    "torch",
    "ultralytics",
    "onnxruntime",
    "pyqtgraph",
)


def ring_name(session_id: str, camera: str) -> str:
    return f"deepbehavior-{session_id}-{camera}"


class SessionRings:
    """A session's frame rings, attached on first use by any reader (detector, recorder, display, bridge)."""

    def __init__(self, session_id: str):
        self.session_id = session_id
        self.rings: dict[str, FrameRing] = {}

    def get(self, camera: str) -> FrameRing:
        """The camera's ring; raises ``OSError``/``ValueError`` if it cannot be attached."""
        ring = self.rings.get(camera)
        if ring is None:
            ring = self.rings[camera] = FrameRing.attach(ring_name(self.session_id, camera))
        return ring

    def find(self, camera: str) -> FrameRing | None:
        """The camera's ring, or None if it is not there (yet)."""
        try:
            return self.get(camera)
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        for r in self.rings.values():
            r.close()
        self.rings.clear()


def resolve_calibration(loaded: LoadedConfig) -> Calibration:
    """The calibration named by ``rig.calibration``, checked to contain every configured camera."""
    cfg = loaded.config
    spec = cfg.rig.calibration
    names = list(cfg.rig.cameras)
    if spec.startswith("builtin:"):
        if spec != "builtin:synthetic":
            raise CalibrationError(f"{loaded.source}: rig.calibration: unknown built-in {spec!r}")
        if len(names) not in (1, 2):
            raise CalibrationError(
                f"{loaded.source}: rig.calibration: builtin:synthetic is a one- or two-camera rig, "
                f"config has {len(names)}"
            )
        from rig.sim.scene import synthetic_calibration

        sizes = {n: (cfg.rig.cameras[n].width, cfg.rig.cameras[n].height) for n in names}
        return synthetic_calibration(names=tuple(names), sizes=sizes)
    path = loaded.resolve(spec)
    try:
        calib = load_calibration(path)
        for n in names:
            cam = calib[n]
            want = (cfg.rig.cameras[n].width, cfg.rig.cameras[n].height)
            if cam.size != want:
                raise CalibrationError(
                    f"{path}: camera {n!r} was calibrated at {cam.size[0]}x{cam.size[1]} but rig.cameras.{n} "
                    f"is {want[0]}x{want[1]}"
                )
    except CalibrationFileError as exc:
        raise CalibrationError(str(exc)) from None
    return calib


def session_calibration(loaded: LoadedConfig, session_dir: Path) -> Calibration:
    """Inside a running session, nodes read the calibration the supervisor saved into the folder."""
    path = session_dir / "calibration.yaml"
    if path.exists():
        return load_calibration(path)
    return resolve_calibration(loaded)


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, Any]:
    pk: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            pk[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pk[name] = None
    return {
        "deepbehavior": metadata.version("deepbehavior") if _installed() else "source",
        "git_revision": git_revision(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "packages": pk,
    }


def _installed() -> bool:
    try:
        metadata.version("deepbehavior")
        return True
    except metadata.PackageNotFoundError:
        return False


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def create_session(
    loaded: LoadedConfig, calib: Calibration, name: str | None = None, session_id: str = ""
) -> Path:
    """Make the session folder and write config, calibration, versions and a 'running' session.json."""
    cfg = loaded.config
    out = Path(cfg.session.output_dir).expanduser().resolve()  # relative to the current directory
    now = dt.datetime.now()
    folder = name or cfg.session.name.format(
        subject=cfg.experiment.subject, date=now.strftime("%Y%m%d"), time=now.strftime("%H%M%S")
    )
    path = out / folder
    try:
        out.mkdir(parents=True, exist_ok=True)
        k = 1
        while path.exists():
            k += 1
            path = out / f"{folder}-{k}"
        path.mkdir()
        (path / "config.yaml").write_text(
            f"# resolved config of this session (source: {loaded.source})\n"
            + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
        )
        save_calibration(calib, path / "calibration.yaml")
        write_json_atomic(path / "versions.json", versions())
        with open(path / RESERVE, "wb") as f:
            f.write(b"\0" * RESERVE_BYTES)
        write_json_atomic(
            path / "session.json",
            {
                "format": SESSION_FORMAT,
                "version": SESSION_FORMAT_VERSION,
                "status": "running",
                "subject": cfg.experiment.subject,
                "rig": cfg.rig.name,
                "cameras": list(cfg.rig.cameras),
                "trigger_rate_hz": cfg.rig.trigger.rate_hz,
                "started": now.isoformat(timespec="seconds"),
                "config_source": loaded.source,
                # who writes the final status: `deepbehavior session` reports a 'running' session whose
                # supervisor is gone (killed) as interrupted
                "session_id": session_id,  # names its frame rings (/dev/shm/deepbehavior-<id>-<camera>)
                "supervisor_pid": os.getpid(),
                "supervisor_identity": process_identity(os.getpid()),  # boot id + start time: no reuse
                "host": socket.gethostname(),
            },
        )
    except OSError as exc:
        raise storage_error(exc, path) from None
    return path


def storage_error(exc: OSError, path: Path) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"{path}: disk full ({exc.strerror})")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(f"{exc.filename or path}: output directory is not writable ({exc.strerror})")
    return StorageError(f"{exc.filename or path}: {exc.strerror}")


RESERVE = ".space-reserve"
RESERVE_BYTES = 1 << 20


def finish_session(path: Path, status: str, summary: dict[str, Any], reason: str = "") -> None:
    # the reserve written at creation guarantees room for the final status even on a full disk
    (path / RESERVE).unlink(missing_ok=True)
    meta = json.loads((path / "session.json").read_text())
    meta.update(
        status=status,
        ended=dt.datetime.now().isoformat(timespec="seconds"),
        reason=reason,
        summary=summary,
    )
    write_json_atomic(path / "session.json", meta)


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

        from rig.recorder import y_plane

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


def _read_rows(path: Path, what: str) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, rows, line number of each row) of a CSV; a torn last line (a crash mid-write) is left
    out. InputError names the file and the line at fault."""
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
    if body and len(body[-1]) != len(header):
        log.info("%s: line %d is torn (a crash mid-write): left out", path, lines[-1])
        body, lines = body[:-1], lines[:-1]
    bad = [i for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise InputError(
            f"{path}: line {lines[bad[0]]} has {len(body[bad[0]])} fields, expected {len(header)}"
        )
    return header, body, lines


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
    header, body, lines = _read_rows(path, what)
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
    header, body, lines = _read_rows(path, "trial table")
    for j, name in enumerate(header):
        if name not in TEXT_COLUMNS and (err := _not_numbers(path, name, [r[j] for r in body], lines)):
            raise err
    return [dict(zip(header, r)) for r in body]


def parse_events(text: str) -> tuple[list[dict[str, Any]], list[tuple[int, str]], int]:
    """The lines of ``events.jsonl``: ``(events, [(line number, problem)], torn line number or 0)``. A
    malformed line is left out and reading goes on; a last line without its newline that does not parse
    is a crash mid-write (torn), not a malformed line."""
    lines = text.split("\n")
    events: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    torn = 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError as exc:
            if n == len(lines):  # the last line has no newline: torn
                torn = n
                continue
            bad.append((n, f"not valid JSON ({exc.msg}, column {exc.colno})"))
            continue
        if isinstance(ev, dict):
            events.append(ev)
        else:
            bad.append((n, f"not a JSON object (a {type(ev).__name__})"))
    return events, bad, torn


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
    meta_path = p / "session.json"
    if not meta_path.exists():
        raise InputError(f"{p}: not a session folder (no session.json)")
    try:
        meta = json.loads(read_text(meta_path, "session file", InputError))
    except json.JSONDecodeError as exc:
        raise InputError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{meta_path}: expected a JSON object, got a {type(meta).__name__}")
    if meta.get("format") != SESSION_FORMAT:
        raise InputError(f"{meta_path}: not a {SESSION_FORMAT} file")
    cameras = meta.get("cameras", [])
    if not isinstance(cameras, list) or not all(isinstance(c, str) and c for c in cameras):
        raise InputError(f"{meta_path}: cameras: expected a list of camera names, got {cameras!r}")
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
