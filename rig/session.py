"""The session folder: creation, metadata, and a reader that loads a recorded session back.

The layout is specified in ``rig/SESSION.md``. A session folder is "complete" only when
``session.json`` says ``"status": "complete"``; it says ``"running"`` while recording and
``"failed"``/``"aborted"`` (with a reason) when the session ended otherwise.
"""

from __future__ import annotations

import csv
import datetime as dt
import errno
import json
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from analysis.camera import Calibration, load_calibration, save_calibration
from analysis.errors import CalibrationFileError
from rig.config import REPO_ROOT, LoadedConfig
from rig.errors import CalibrationError, InputError, StorageError
from rig.frames import FrameRing

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
        if len(names) != 2:
            raise CalibrationError(
                f"{loaded.source}: rig.calibration: builtin:synthetic is a two-camera rig, "
                f"config has {len(names)}"
            )
        from rig.sim.scene import synthetic_calibration

        first = cfg.rig.cameras[names[0]]
        return synthetic_calibration(first.width, first.height, (names[0], names[1]))
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


def create_session(loaded: LoadedConfig, calib: Calibration, name: str | None = None) -> Path:
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

    def read_frames(self, camera: str):
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


def read_csv_columns(path: Path) -> dict[str, np.ndarray]:
    """A CSV with a header row -> dict of numpy columns (numeric where possible). A torn last line is
    ignored (a crash mid-write leaves it)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    if not rows:
        raise InputError(f"{path}: empty (no header)")
    header, body = rows[0], rows[1:]
    if body and len(body[-1]) != len(header):
        body = body[:-1]
    bad = [i for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise InputError(f"{path}: line {bad[0] + 2} has {len(body[bad[0]])} fields, expected {len(header)}")
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
                arr = np.array(vals, dtype=object)
        cols[name] = arr
    return cols


def load_session(path: str | Path) -> Session:
    """Load a session folder; raises InputError naming the file at fault."""
    p = Path(path)
    meta_path = p / "session.json"
    if not meta_path.exists():
        raise InputError(f"{p}: not a session folder (no session.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{meta_path}: not valid JSON ({exc})") from None
    if meta.get("format") != SESSION_FORMAT:
        raise InputError(f"{meta_path}: not a {SESSION_FORMAT} file")
    try:
        calib = load_calibration(p / "calibration.yaml")
    except CalibrationFileError as exc:
        raise InputError(str(exc)) from None
    config = yaml.safe_load((p / "config.yaml").read_text())
    frames = {cam: read_csv_columns(p / f"{cam}.frames.csv") for cam in meta.get("cameras", [])}
    events = []
    ev_path = p / "events.jsonl"
    if ev_path.exists():
        for line in ev_path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line after a crash
    trials: list[dict[str, str]] = []
    if (p / "trials.csv").exists():
        with open(p / "trials.csv", newline="") as f:
            trials = list(csv.DictReader(f))
    truth = read_csv_columns(p / "truth.csv") if (p / "truth.csv").exists() else None
    extra: dict[str, Any] = {}
    if (p / "triggers.csv").exists():
        extra["triggers"] = read_csv_columns(p / "triggers.csv")
    det = read_csv_columns(p / "detections.csv") if (p / "detections.csv").exists() else {}
    pts = read_csv_columns(p / "points3d.csv") if (p / "points3d.csv").exists() else {}
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
