"""A session folder's life: created with its config, calibration and provenance and a ``running``
``session.json``; finished with its status and summary. What the files hold is :mod:`rig.session`'s
(the session format); the layout is specified in ``rig/SESSION.md``.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import socket
from pathlib import Path

import yaml

from analysis.camera import Calibration, load_calibration, save_calibration
from analysis.errors import CalibrationFileError
from analysis.io.rig_session import SESSION_FORMAT
from rig.config import LoadedConfig
from rig.errors import CalibrationError, StorageError
from rig.frames import process_identity
from rig.provenance import versions
from rig.session import SESSION_FORMAT_VERSION, SessionSummary, write_json_atomic


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


def finish_session(path: Path, status: str, summary: SessionSummary, reason: str = "") -> None:
    # the reserve written at creation guarantees room for the final status even on a full disk
    (path / RESERVE).unlink(missing_ok=True)
    meta = json.loads((path / "session.json").read_text())
    meta.update(
        status=status,
        ended=dt.datetime.now().isoformat(timespec="seconds"),
        reason=reason,
        summary=summary.to_json(),
    )
    write_json_atomic(path / "session.json", meta)
