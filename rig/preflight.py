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
  ``experiment.max_duration_s`` of video from every camera at a conservative rate (:func:`bytes_per_frame`);
- **recorder rate**: a few synthetic frames of each camera size are encoded with the configured codec
  (:func:`measure_encode_cost`, well under a second) and the CPU per frame set against the cores this
  process may use (``os.sched_getaffinity``): a rig this machine cannot encode at the trigger rate is a
  loud warning naming the setting to change, and refused by ``run``/``record`` where its backlog would
  fill the RAM buffer and the disk before ``experiment.max_duration_s`` (:func:`check_recorder_rate`).

``session.name`` is checked when the config is loaded. Failures raise the project's ``UserError``
subclasses, one line naming the file and the field; what passed comes back as :class:`Finding` lines.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from analysis.calibration_check import MIN_CAMERA_DISTANCE_MM, camera_problems, close_cameras, outside_images
from analysis.camera import Calibration
from rig.config import Config, LoadedConfig, RecorderConfig
from rig.errors import CalibrationError, ConfigError, InputError, StorageError

__all__ = ["EncodeCost", "Finding", "bytes_per_frame", "check_recorder_rate", "needed_bytes", "preflight"]

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
    return pts


def rule_zone_points(cfg: Config) -> dict[str, tuple[float, float, float]]:
    """The centres of a lab's own closed-loop rule zones (config field -> (x, y, z) mm): one out of a
    camera's view is worth a warning (the rule fires only on what the cameras see), not a refusal (a box
    may reach into view, and a lab may mean a zone the paw should never reach)."""
    cl = cfg.pipeline.closed_loop
    if not (cl.enabled and cl.rules):
        return {}
    return {
        f"pipeline.closed_loop.rules.{name}.zone.center_mm": rule.zone.center_mm
        for name, rule in cl.rules.items()
        if rule.zone is not None
    }


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
    for where in outside_images(calib, rule_zone_points(cfg), names):
        out.append(Finding("closed loop", f"{where}: this rule can fire only where the cameras see", True))
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


# ----------------------------------------------------------------------------- recorder rate
# The recorder's encoding cost is measured at preflight, on this machine, not taken from a table: a
# table made on one CPU says nothing true about a lab's other one. Each distinct camera size is encoded
# through the recorder's own VideoWriter (same codec, preset, crf, lossless) for about MEASURE_CPU_S of
# CPU after one warm-up frame; frames come from the simulator's renderer (textured apparatus, a moving
# paw, sensor noise sigma 3), which x264 compresses like the simulated rig's recordings, not like a
# constant frame. scripts/bench_record.py compares this estimate with sustained encoding
# (BENCHMARKS.md, "Sizing").
MEASURE_CPU_S = 0.2  # CPU seconds of encoding measured per camera size
MEASURE_FRAMES = (6, 40)  # frames timed per size: at least, at most
PROBE_BANK = 12  # distinct frames rendered and cycled (more than x264's reference distance)


@dataclass(frozen=True)
class EncodeCost:
    """What encoding one (H, W) Mono8 frame costs here: ``cpu_ms`` process CPU per frame (one encoder
    thread), ``wall_ms`` wall time per frame, ``video_bytes`` the encoded bytes per frame, from
    ``frames`` timed frames."""

    cpu_ms: float
    wall_ms: float
    video_bytes: float
    frames: int

    def per_frame_ms(self, codec: str) -> float:
        """The cost the rate check uses: CPU time, or for ``h264_nvenc`` (the GPU encodes while the CPU
        waits) the larger of CPU and wall time."""
        return max(self.cpu_ms, self.wall_ms) if codec == "h264_nvenc" else self.cpu_ms


def measure_encode_cost(width: int, height: int, rate_hz: float, rc: RecorderConfig) -> EncodeCost:
    """Encode synthetic frames with ``rc``'s codec settings (one thread) and time them: the CPU per frame
    of the recorder's encoder on this machine. Raises ``av.error.FFmpegError`` (or ``ValueError``) if
    the encoder cannot run here (``h264_nvenc`` without an NVIDIA GPU)."""
    import av

    from rig.recorder import VideoWriter
    from rig.sim.render import Appearance, SceneRenderer
    from rig.sim.scene import PAW_RADIUS_MM, PELLET, synthetic_calibration

    cam = synthetic_calibration(width, height, names=("front",))["front"]
    renderer = SceneRenderer(cam, Appearance(noise_sigma=3.0, n_noise_frames=5), seed=0)
    bank = [
        renderer.render(np.array([0.0, -20.0 + 1.5 * k, -7.0 + 0.5 * k]), PAW_RADIUS_MM, PELLET)[0].copy()
        for k in range(PROBE_BANK)
    ]
    one = rc.model_copy(update={"threads": 1, "encoder_priority": "normal"})
    with tempfile.TemporaryDirectory(prefix="deepbehavior-encode-probe-") as d:
        vw = VideoWriter(Path(d) / "probe.mkv", width, height, rate_hz, one, max_queue=2, spill=False)
        vw.queue.put(None)  # the writer's thread ends at once: this thread encodes, timed
        vw.thread.join()

        def encode(k: int | None) -> None:  # frame k of the bank (None: flush), muxed as the writer does
            frame = None if k is None else av.VideoFrame.from_ndarray(bank[k % PROBE_BANK], format="gray")
            if frame is not None:
                frame.pts = k
                frame.time_base = Fraction(1, vw.rate)
            for packet in vw.stream.encode(frame):
                vw.container.mux(packet)

        try:
            encode(0)  # opens the encoder; the first (intra) frame
            lo, hi = MEASURE_FRAMES
            n, c0, t0 = 0, time.process_time(), time.perf_counter()
            while n < hi and (n < lo or time.process_time() - c0 < MEASURE_CPU_S):
                n += 1
                encode(n)
            encode(None)  # frames the encoder still holds (lookahead, B-frames): their cost counts too
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        finally:
            vw.container.close()
        size = (Path(d) / "probe.mkv").stat().st_size
    return EncodeCost(cpu_ms=1e3 * cpu / n, wall_ms=1e3 * wall / n, video_bytes=size / (n + 1), frames=n)


def encoder_threads(rc: RecorderConfig, cores: int) -> int:
    """Encoder threads one camera's video can use: ``threads`` (0: FFmpeg picks, one per core), at
    most the cores there are."""
    return min(rc.threads or cores, cores)


def sustained_rates(cost_ms: dict[str, float], rate_hz: float, threads: int, cores: int) -> dict[str, float]:
    """Frames/s each camera's encoder keeps up with: at most the trigger rate, at most ``threads`` cores
    per camera (a camera's frames are encoded by its own thread(s), assumed to scale linearly: an upper
    bound), and all cameras together at most ``cores``. ``cost_ms``: camera -> CPU ms per frame."""
    rates = {c: min(rate_hz, threads * 1e3 / ms) for c, ms in cost_ms.items()}
    used = sum(r * cost_ms[c] / 1e3 for c, r in rates.items())
    if used > cores:
        rates = {c: r * cores / used for c, r in rates.items()}
    return rates


def backlog_bytes(
    deficit_hz: dict[str, float], frame_bytes: dict[str, int], ram_frames: int, t_s: float
) -> float:
    """Raw bytes waiting in the spill files after ``t_s`` seconds, each camera ``deficit_hz`` frames/s
    behind and holding ``ram_frames`` in RAM first."""
    return sum(max(0.0, d * t_s - ram_frames) * frame_bytes[c] for c, d in deficit_hz.items())


def _fix(rc: RecorderConfig, need_cores: float, per_camera: float, cores: int) -> str:
    """The one setting to change, most effective first."""
    if rc.codec == "libx264" and rc.preset != "ultrafast":
        return "set pipeline.recorder.preset: ultrafast (x264's fastest)"
    if need_cores < cores and encoder_threads(rc, cores) < per_camera:
        return f"set pipeline.recorder.threads: {math.ceil(per_camera)} (encoder threads per camera)"
    threads = math.ceil(per_camera)
    return (
        "set pipeline.recorder.codec: h264_nvenc (an NVIDIA GPU with NVENC), or record on a machine with "
        f"at least {math.ceil(need_cores)} cores for encoding alone and pipeline.recorder.threads: {threads}"
    )


def check_recorder_rate(loaded: LoadedConfig, session: bool = False) -> list[Finding]:
    """Can this machine's cores (os.sched_getaffinity) encode every camera at the trigger rate with the
    configured codec? Measured here (:func:`measure_encode_cost`). If not: frames wait in RAM
    (``buffer_s``), then raw on disk (the spill), and are encoded after the session; none is lost while
    the disk lasts. That is a loud warning. A session whose backlog would fill the RAM buffer and the
    disk before ``max_duration_s`` would lose frames: ``run``/``record`` (``session``) refuse it, and
    ``config`` says so in its warning."""
    import av

    cfg = loaded.config
    rc = cfg.pipeline.recorder
    if not rc.enabled:
        return [Finding("recorder", "off")]
    rate = cfg.rig.trigger.rate_hz
    cores = len(os.sched_getaffinity(0))
    codec = rc.codec + (f" {rc.preset}" if rc.codec == "libx264" else "")
    codec += " lossless" if rc.lossless or rc.codec == "ffv1" else f" crf {rc.crf}"
    sizes = {n: (c.width, c.height) for n, c in cfg.rig.cameras.items()}
    costs: dict[tuple[int, int], EncodeCost] = {}
    for w, h in sorted(set(sizes.values())):
        try:
            costs[(w, h)] = measure_encode_cost(w, h, rate, rc)
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            msg = f"pipeline.recorder.codec: {rc.codec} does not encode on this machine ({exc})"
            if session:
                raise ConfigError(f"{loaded.source}: {msg}; choose another codec") from None
            return [Finding("recorder", msg + ": `run` and `record` refuse it", warning=True)]
    cost_ms = {n: costs[s].per_frame_ms(rc.codec) for n, s in sizes.items()}
    threads = encoder_threads(rc, cores)
    need = sum(rate * ms / 1e3 for ms in cost_ms.values())  # cores of encoding at the trigger rate
    per_camera = max(cost_ms.values()) * rate / 1e3
    measured = ", ".join(f"{w}x{h} {c.per_frame_ms(rc.codec):.1f} ms" for (w, h), c in costs.items())
    what = (
        f"{len(sizes)} camera(s) at {rate:g} Hz, {codec}: measured {measured} CPU per frame here, "
        f"~{need:.2f} cores of encoding"
    )
    rates = sustained_rates(cost_ms, rate, threads, cores)
    deficit = {c: rate - r for c, r in rates.items() if r < rate * 0.999}
    if not deficit:
        return [Finding("recorder", f"{what}; {cores} core(s) here, {threads} encoder thread(s) per camera")]
    slowest = min(rates.values())
    ram_frames = max(64, round(rc.buffer_s * rate))  # the recorder node's queue per camera
    frame_bytes = {n: w * h for n, (w, h) in sizes.items()}
    duration = cfg.experiment.max_duration_s
    spill = backlog_bytes(deficit, frame_bytes, ram_frames, duration)
    spill_mb_s = sum(d * frame_bytes[c] for c, d in deficit.items()) / 1e6
    late_s = max(d * duration / rates[c] for c, d in deficit.items())
    late = f"~{late_s / 60:.0f} min" if late_s >= 90 else f"~{late_s:.0f} s"
    free = shutil.disk_usage(_existing_folder(Path(cfg.session.output_dir).expanduser().absolute())).free
    video = needed_bytes(cfg)
    fix = _fix(rc, need, per_camera, cores)
    head = (
        f"CANNOT KEEP UP: {what}, but {cores} core(s) here ({threads} encoder thread(s) per camera) encode "
        f"~{slowest:.0f} of {rate:g} frames/s per camera"
    )
    if spill > 0 and video + spill > free:  # RAM and disk run out before max_duration_s: frames lost
        t_full = _time_to_fill(deficit, frame_bytes, ram_frames, video / duration, free, duration)
        lost = (
            f"{head}: the backlog fills the RAM buffer (buffer_s {rc.buffer_s:g}) and the {_gb(free)} "
            f"free on disk after ~{t_full:.0f} s of the {duration:g} s session (experiment.max_duration_s), "
            f"and frames are lost from then on; {fix}"
        )
        if session:
            raise ConfigError(f"{loaded.source}: pipeline.recorder: {lost}")
        return [Finding("recorder", lost + " (`run` and `record` refuse it)", warning=True)]
    where = (
        f"then raw on disk ({spill_mb_s:.0f} MB/s, up to {_gb(spill)} after {duration:g} s)"
        if spill > 0
        else f"where a {duration:g} s session's backlog fits"
    )
    return [
        Finding(
            "recorder",
            f"{head}: the rest wait in RAM (buffer_s {rc.buffer_s:g}), {where} and are encoded after the "
            f"session ({late} later); none lost while the disk lasts; {fix}",
            warning=True,
        )
    ]


def _time_to_fill(
    deficit: dict[str, float],
    frame_bytes: dict[str, int],
    ram_frames: int,
    video_b_s: float,
    free: float,
    t_max: float,
) -> float:
    """Seconds until video (``video_b_s`` bytes/s) and spill together fill ``free`` bytes (bisection:
    both grow monotonically)."""
    lo, hi = 0.0, t_max
    for _ in range(60):
        mid = (lo + hi) / 2
        if video_b_s * mid + backlog_bytes(deficit, frame_bytes, ram_frames, mid) > free:
            hi = mid
        else:
            lo = mid
    return hi


def preflight(loaded: LoadedConfig, calib: Calibration | None = None, session: bool = False) -> list[Finding]:
    """Every check above, in order; raises the first failure (a ``UserError``, one line). ``session``:
    checking for a session about to start (``run``, ``record``) rather than for ``config``: a placeholder
    calibration is then refused where the session would compute 3-D from it."""
    findings = check_calibration(loaded, calib, session)
    findings += check_replay_sources(loaded)
    findings += check_detector(loaded)
    findings += check_output(loaded)
    findings += check_recorder_rate(loaded, session)
    return findings
