"""Preflight: everything a session will need, checked before any process starts, without hardware.

``deepbehavior config`` prints what it checked; ``deepbehavior run`` runs the same checks right after
loading the config, so a broken input is one line (exit 2) instead of a failed session folder:

- **detector model**: the file ``pipeline.detector.model`` names exists and loads in its runner (ONNX
  Runtime on the CPU, run once on a blank frame); its input size and class names are read; a serialized
  TensorRT engine is recognised by its header and refused (the runner takes the ONNX file), and a
  ``tensorrt`` runner without a GPU is stated;
- **calibration**: it holds every camera at the configured size (``rig.session_folder.resolve_calibration``),
  its numbers are finite and physically plausible (positive focal lengths, principal point inside the
  image), no two cameras are closer than a few mm, and the task's world points (the pellet; the closed
  loop's zone centre and rest position when it is on) project inside every camera's image; a
  placeholder calibration (``meta.placeholder``, shipped with the templates in ``configs/``) is a
  warning for ``config`` and refused by ``run`` when the session would compute 3-D from it;
- **replay sources**: a replay camera's ``options.path`` exists;
- **output**: ``session.output_dir`` (or the folder that will hold it) is a writable folder with room for
  ``experiment.max_duration_s`` of video from every camera at a conservative rate (:func:`bytes_per_frame`).

``session.name`` is checked when the config is loaded. Failures raise the project's ``UserError``
subclasses, one line naming the file and the field; what passed comes back as :class:`Finding` lines.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from analysis.calibration_check import MIN_CAMERA_DISTANCE_MM, camera_problems, close_cameras, outside_images
from analysis.camera import Calibration
from rig.config import Config, LoadedConfig
from rig.errors import CalibrationError, ConfigError, InputError, StorageError

__all__ = ["Finding", "bytes_per_frame", "needed_bytes", "preflight"]

# Bytes per pixel of recorded Mono8 video, measured on the simulated rig's recordings (448x460 at 124 Hz,
# sensor noise sigma 3; `deepbehavior run --duration 4`, 513 frames per camera, 2026-12-04):
#   libx264 crf 12 ultrafast (the default)  44.6 kB/frame = 0.216 B/px
#   libx264 lossless (qp 0)                122.4 kB/frame = 0.594 B/px
#   ffv1                                   102.3 kB/frame = 0.497 B/px
# and assumed at 1.5x that (rounded up), for sensors noisier than the simulation's. Below crf 12 the
# lossy rate grows fast: it is assumed as lossless.
BYTES_PER_PIXEL_LOSSY = 0.33
BYTES_PER_PIXEL_LOSSLESS = 0.9
MIN_ROOM_S = 60.0  # refused with room for less than this much of a session
TABLE_BYTES_PER_FRAME = 1024  # frame table, detections, 3-D points, triggers, truth: ~0.5 kB measured


@dataclass(frozen=True)
class Finding:
    """One thing checked and found good (``warning``: good enough to run, but worth knowing)."""

    check: str
    text: str
    warning: bool = False

    def __str__(self) -> str:
        return f"{'WARN' if self.warning else 'ok'}  {self.check}: {self.text}"


def bytes_per_frame(cfg: Config, camera: str) -> float:
    """Conservative bytes one frame of ``camera`` takes on disk (video and tables), by codec."""
    cam = cfg.rig.cameras[camera]
    rec = cfg.pipeline.recorder
    lossless = rec.lossless or rec.codec == "ffv1" or (rec.codec == "libx264" and rec.crf < 12)
    return cam.width * cam.height * (BYTES_PER_PIXEL_LOSSLESS if lossless else BYTES_PER_PIXEL_LOSSY) + (
        TABLE_BYTES_PER_FRAME
    )


def needed_bytes(cfg: Config) -> float:
    """Disk a session of ``experiment.max_duration_s`` needs at the trigger rate, every camera."""
    if not cfg.pipeline.recorder.enabled:
        return 0.0
    frames = cfg.experiment.max_duration_s * cfg.rig.trigger.rate_hz
    return frames * sum(bytes_per_frame(cfg, c) for c in cfg.rig.cameras)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


# ----------------------------------------------------------------------------- detector
def check_detector(loaded: LoadedConfig) -> list[Finding]:
    from detection.base import DetectionError
    from detection.runners import inspect_model

    det = loaded.config.pipeline.detector
    if not det.enabled:
        return [Finding("detector", "off")]
    if det.runner == "oracle":
        return [Finding("detector", "oracle (the simulator's truth; no model)")]
    try:
        info = inspect_model(det, loaded.base_dir)
    except DetectionError as exc:
        raise ConfigError(f"{loaded.source}: pipeline.detector.model: {exc}") from None
    if info.kind != "onnx":
        return [Finding("detector model", f"{info.path} ({'; '.join(info.notes)})")]
    shape = "(" + ", ".join(str(d) for d in info.input_shape) + ")"
    size = (
        f"letterboxed to {info.input_size}x{info.input_size}"
        if info.input_size
        else "native resolution (options.input_size not set)"
    )
    trained = f", trained at {info.trained_size}" if info.trained_size else ""
    classes = ", ".join(info.class_names) or "unknown"
    out = [
        Finding(
            "detector model",
            f"{info.path} loads in ONNX Runtime (runner {det.runner}): input {shape}, {size}{trained}; "
            f"classes: {classes}",
        )
    ]
    out += [Finding("detector runner", n, warning="on the CPU" in n) for n in info.notes]
    return out


# ----------------------------------------------------------------------------- calibration
def task_points(cfg: Config) -> dict[str, tuple[float, float, float]]:
    """The task's world points every camera must see (config field -> (x, y, z) in mm)."""
    pts = {"experiment.reaching.pellet_xyz_mm": cfg.experiment.reaching.pellet_xyz_mm}
    cl = cfg.pipeline.closed_loop
    if cl.enabled and not cl.rules:
        pts["pipeline.closed_loop.zone_center_mm"] = cl.zone_center_mm
        pts["pipeline.closed_loop.rest_xyz_mm"] = cl.rest_xyz_mm
    elif cl.enabled:
        for name, rule in cl.rules.items():
            if rule.zone is not None:
                pts[f"pipeline.closed_loop.rules.{name}.zone.center_mm"] = rule.zone.center_mm
    return pts


def check_calibration(
    loaded: LoadedConfig, calib: Calibration | None = None, session: bool = False
) -> list[Finding]:
    from rig.session_folder import resolve_calibration

    cfg = loaded.config
    calib = calib if calib is not None else resolve_calibration(loaded)
    spec = cfg.rig.calibration
    source = spec if spec.startswith("builtin:") else str(loaded.resolve(spec))
    names = list(cfg.rig.cameras)
    for n in names:
        problems = camera_problems(calib[n])
        if problems:
            raise CalibrationError(f"{source}: {problems[0]}")
    close = [c for c in close_cameras(calib) if c[0] in names and c[1] in names]
    if close:
        a, b, d, _ = close[0]
        raise CalibrationError(
            f"{source}: cameras {a!r} and {b!r} are {d:.2f} mm apart (under {MIN_CAMERA_DISTANCE_MM:g} mm): "
            "one camera's pose copied to the other? Recalibrate the rig"
        )
    if cfg.experiment.task == "reaching":
        outside = outside_images(calib, task_points(cfg), names)
        if outside:
            raise ConfigError(
                f"{loaded.source}: {outside[0]} (calibration {source}); check the point or the calibration"
            )
    sizes = ", ".join(
        f"{n} {calib[n].size[0]}x{calib[n].size[1]} f={calib[n].focal_px:.0f} px" for n in names
    )
    out = [Finding("calibration", f"{source}: {sizes}; plausible, cameras apart")]
    if cfg.experiment.task == "reaching":
        out.append(Finding("task points", f"{', '.join(task_points(cfg))} inside every camera's image"))
    placeholder = calib.meta.get("placeholder")
    if placeholder:
        out.insert(1, check_placeholder(loaded, source, str(placeholder), session))
    return out


def computes_3d(cfg: Config) -> bool:
    """Whether a session of this config triangulates online (and so depends on its calibration)."""
    return cfg.pipeline.detector.enabled and cfg.pipeline.triangulator.enabled


def check_placeholder(loaded: LoadedConfig, source: str, note: str, session: bool) -> Finding:
    """A placeholder calibration (``meta.placeholder`` in the file: the templates in ``configs/`` ship
    one so that a new rig can ``record`` its checkerboard video before it has a calibration). A session
    that computes 3-D from it is refused; ``config`` says so as a warning."""
    how = (
        "record a checkerboard (`deepbehavior record`), run `deepbehavior calibrate` on the videos and point "
        "rig.calibration at the file it writes (docs/RIG.md)"
    )
    if not computes_3d(loaded.config):
        return Finding(
            "calibration", f"a PLACEHOLDER, not of your cameras ({note}); this config computes no 3-D online"
        )
    if session:
        raise CalibrationError(
            f"{source}: a placeholder calibration, not of your cameras: 3-D and the closed loop would be "
            f"meaningless; {how} (`deepbehavior record` runs with the placeholder)"
        )
    return Finding(
        "calibration",
        f"a PLACEHOLDER, not of your cameras ({note}): `run` refuses it (3-D and the closed loop would be "
        f"meaningless), `record` runs with it; {how}",
        warning=True,
    )


# ----------------------------------------------------------------------------- inputs and output
def check_replay_sources(loaded: LoadedConfig) -> list[Finding]:
    from rig.cameras.replay import ReplayOptions

    out = []
    for name, cam in loaded.config.rig.cameras.items():
        if isinstance(cam.options, ReplayOptions):
            path = loaded.resolve(cam.options.path)
            if not path.exists():
                raise InputError(f"{loaded.source}: rig.cameras.{name}.options.path: {path} not found")
            out.append(Finding(f"replay {name}", str(path)))
    return out


def _existing_folder(path: Path) -> Path:
    """``path`` if it exists, else the nearest folder above it that does (the one that must be writable)."""
    p = path
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def check_output(loaded: LoadedConfig) -> list[Finding]:
    cfg = loaded.config
    out = Path(cfg.session.output_dir).expanduser().absolute()
    where = f"{loaded.source}: session.output_dir"
    base = _existing_folder(out)
    if not base.is_dir():
        raise StorageError(f"{where}: {base} is a file, not a folder (output {out})")
    try:
        fd, probe = tempfile.mkstemp(prefix=".deepbehavior-write-test-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StorageError(f"{where}: {base} is not writable ({exc.strerror})") from None
    need = needed_bytes(cfg)
    free = shutil.disk_usage(base).free
    rate = ", ".join(f"{c} {bytes_per_frame(cfg, c) / 1e3:.0f} kB/frame" for c in cfg.rig.cameras)
    # max_duration_s is an upper bound (the trials usually end the session first): room for less is a
    # warning; room for less than the first minute is refused (a full disk mid-session still stops it
    # cleanly, every frame written so far kept)
    first_s = min(cfg.experiment.max_duration_s, MIN_ROOM_S)
    if free < need * first_s / cfg.experiment.max_duration_s:
        raise StorageError(
            f"{where}: {base} has {_gb(free)} free, not enough for the first {first_s:g} s at "
            f"{cfg.rig.trigger.rate_hz:g} Hz ({rate}, codec {cfg.pipeline.recorder.codec}); free space"
        )
    text = f"{out} writable; {_gb(free)} free, a {cfg.experiment.max_duration_s:g} s session needs at most "
    text += "about "
    if free < need:
        return [
            Finding(
                "output",
                text + f"{_gb(need)} ({rate}): it stops with 'disk full' after about "
                f"{cfg.experiment.max_duration_s * free / need:.0f} s",
                warning=True,
            )
        ]
    return [Finding("output", text + f"{_gb(need)} ({rate})")]


def preflight(loaded: LoadedConfig, calib: Calibration | None = None, session: bool = False) -> list[Finding]:
    """Every check above, in order; raises the first failure (a ``UserError``, one line). ``session``:
    checking for a session about to start (``run``, ``record``) rather than for ``config``: a placeholder
    calibration is then refused where the session would compute 3-D from it."""
    findings = check_calibration(loaded, calib, session)
    findings += check_replay_sources(loaded)
    findings += check_detector(loaded)
    findings += check_output(loaded)
    return findings
