"""``deepbehavior cameras list`` and ``deepbehavior cameras check CONFIG``.

``list`` asks every installed backend which cameras it sees. ``check`` opens the configured cameras,
grabs for N seconds (firing software triggers itself for cameras whose ``options.trigger_source`` is
``Software``; a hardware trigger line must be driven by the rig's trigger source meanwhile) and prints
per camera the achieved frame rate, lost/incomplete frames, frame-id gaps, timeouts and the
inter-camera skew of frames paired by trigger index, then one PASS/FAIL line with the reasons.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rig.cameras.base import CameraBackend, CameraInfo, make_backend
from rig.cameras.sync import TriggerMapper
from rig.config import CameraConfig, load_config
from rig.errors import AcquisitionTimeout, ConfigError, DeviceError, RigError

log = logging.getLogger(__name__)

LISTABLE = ("spinnaker", "genicam", "aravis", "basler", "opencv")


def list_all(options: dict[str, Any]) -> list[tuple[str, list[CameraInfo] | str]]:
    """Per backend: the cameras it sees, or why it cannot look."""
    out: list[tuple[str, list[CameraInfo] | str]] = []
    for name in LISTABLE:
        try:
            module = importlib.import_module(f"rig.cameras.{name}")
            out.append((name, module.list_cameras(options)))
        except (ImportError, RigError) as exc:
            out.append((name, f"not available: {exc}"))
        except Exception as exc:  # a vendor SDK failing to enumerate must not hide the others
            out.append((name, f"enumeration failed: {type(exc).__name__}: {exc}"))
    return out


@dataclass
class CameraCheck:
    name: str
    expected_hz: float | None
    frames: int = 0
    lost: int = 0
    incomplete: int = 0
    gaps: int = 0
    timeouts: int = 0
    missed_triggers: int = 0  # pulses with no frame (from the camera clock, or the software-trigger count)
    triggers_fired: int = -1  # software triggers this check fired (-1: hardware trigger, count unknown here)
    error: str = ""
    t_first_ns: int = 0
    t_last_ns: int = 0
    by_trigger: dict[int, int] = field(default_factory=dict)  # trigger index -> t_host_ns
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        dt = (self.t_last_ns - self.t_first_ns) / 1e9
        return (self.frames - 1) / dt if self.frames > 1 and dt > 0 else 0.0


@dataclass
class CheckReport:
    cameras: dict[str, CameraCheck]
    skew_ms: dict[str, tuple[float, float]]  # "a-b" -> (median, max) |t_host difference| in ms
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


def _expected_hz(cfg: CameraConfig, trigger_hz: float) -> float | None:
    rate = getattr(cfg.options, "trigger_rate_hz", None)  # GenICam backends' options
    if cfg.hardware_trigger:
        return float(rate if rate is not None else trigger_hz)
    fps = getattr(cfg.options, "fps", None)
    return float(fps) if fps is not None else None


def run_check(
    cameras: dict[str, CameraConfig],
    trigger_hz: float,
    seconds: float,
    trigger_control: tuple[Callable[[], None], Callable[[], None]] | None = None,
) -> CheckReport:
    """Open, grab for ``seconds``, close; never raises for a camera fault (it is reported).

    ``trigger_control``: (start, stop) callables for the rig's hardware trigger (e.g. the firmware's
    camera trigger), called after every camera is armed and before the cameras are stopped."""
    checks = {n: CameraCheck(n, _expected_hz(c, trigger_hz)) for n, c in cameras.items()}
    backends: dict[str, CameraBackend] = {}
    failures: list[str] = []
    try:
        for name, cfg in cameras.items():
            if cfg.backend in ("synthetic", "replay"):
                raise ConfigError(
                    f"rig.cameras.{name}: 'cameras check' is for real cameras, not {cfg.backend!r}"
                )
            cam = make_backend(name, cfg, {"trigger_rate_hz": trigger_hz if cfg.hardware_trigger else None})
            backends[name] = cam
            cam.open()
            cam.configure()
        for cam in backends.values():
            cam.start()
        stop = threading.Event()
        soft = [
            b
            for n, b in backends.items()
            if cameras[n].hardware_trigger
            and getattr(cameras[n].options, "trigger_source", None) == "Software"
        ]

        def grab_loop(name: str, cam: CameraBackend) -> None:
            chk = checks[name]
            period = 1e9 / (chk.expected_hz or trigger_hz)
            mapper = TriggerMapper(name, int(period))
            timeout = cameras[name].grab_timeout_ms / 1000
            while not stop.is_set():
                try:
                    f = cam.grab(timeout)
                except AcquisitionTimeout:
                    chk.timeouts += 1
                    continue
                except (DeviceError, RigError) as exc:
                    chk.error = str(exc)
                    return
                if chk.frames == 0:
                    chk.t_first_ns = f.t_host_ns
                chk.t_last_ns = f.t_host_ns
                chk.frames += 1
                chk.lost += f.lost_before
                chk.gaps += int(f.lost_before > 0)
                chk.incomplete += int(f.incomplete)
                s = mapper.map(f.frame_id, f.t_device_ns if f.t_device_ns > 0 else f.t_host_ns)
                if not s.duplicate:
                    chk.by_trigger[s.trigger_index] = f.t_host_ns
                chk.missed_triggers = mapper.counts.missed_triggers

        threads = [threading.Thread(target=grab_loop, args=(n, b), daemon=True) for n, b in backends.items()]
        for t in threads:
            t.start()
        if trigger_control is not None:
            trigger_control[0]()
        t_end = time.monotonic() + seconds
        next_t = time.monotonic()
        while time.monotonic() < t_end:
            if soft:
                for b in soft:
                    b.software_trigger()  # type: ignore[attr-defined]
                    checks[b.name].triggers_fired += 1 + (checks[b.name].triggers_fired < 0)
                next_t += 1.0 / trigger_hz
                time.sleep(max(0.0, next_t - time.monotonic()))
            else:
                time.sleep(0.05)
        if trigger_control is not None:
            trigger_control[1]()
        time.sleep(0.2)  # let the last triggered frames arrive before counting
        stop.set()
        for t in threads:
            t.join(timeout=5)
        for name, cam in backends.items():
            c = checks[name]
            c.stats = cam.stream_stats()
            if c.triggers_fired >= 0:
                c.missed_triggers = max(c.missed_triggers, c.triggers_fired - c.frames - c.lost)
    finally:
        for cam in backends.values():
            try:
                cam.stop()
            finally:
                cam.close()

    names = sorted(checks)
    skew_ms: dict[str, tuple[float, float]] = {}
    for i, na in enumerate(names):
        for nb in names[i + 1 :]:
            ta, tb = checks[na].by_trigger, checks[nb].by_trigger
            common = ta.keys() & tb.keys()
            if common:
                d = np.array([abs(ta[k] - tb[k]) for k in common]) / 1e6
                skew_ms[f"{na}-{nb}"] = (float(np.median(d)), float(d.max()))
    for name in names:
        c = checks[name]
        if c.error:
            failures.append(f"{name}: {c.error}")
            continue
        if c.frames == 0:
            failures.append(
                f"{name}: no frames in {seconds:g} s (is the trigger running? cabling? TriggerSource?)"
            )
            continue
        if c.expected_hz and abs(c.fps - c.expected_hz) > 0.05 * c.expected_hz:
            failures.append(
                f"{name}: {c.fps:.1f} fps, expected {c.expected_hz:g} (exposure, bandwidth, trigger?)"
            )
        if c.lost:
            failures.append(
                f"{name}: {c.lost} frames lost in {c.gaps} gaps (bandwidth, packet size, buffers)"
            )
        if c.missed_triggers:
            failures.append(
                f"{name}: {c.missed_triggers} triggers produced no frame (exposure + read-out longer "
                "than the trigger period? TriggerOverlap?)"
            )
        if c.incomplete:
            failures.append(
                f"{name}: {c.incomplete} incomplete frames (packet loss: check the NIC/cable/MTU)"
            )
    rate = min((c.expected_hz for c in checks.values() if c.expected_hz), default=None)
    for pair, (_, worst) in skew_ms.items():
        if rate and worst > 0.5e3 / rate:
            failures.append(f"{pair}: inter-camera skew up to {worst:.1f} ms, over half a period")
    return CheckReport(checks, skew_ms, failures)


def cmd_list(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {}
    if args.cti:
        options["cti"] = args.cti
    if args.aravis_fake:
        options["fake_interface"] = True
    for backend, found in list_all(options):
        if isinstance(found, str):
            print(f"{backend:10s} {found}")
        elif not found:
            print(f"{backend:10s} no cameras")
        for info in found if isinstance(found, list) else []:
            print(f"{backend:10s} serial={info.serial!s:20s} model={info.model}  interface={info.interface}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    rig = loaded.config.rig
    cams = dict(rig.cameras)
    if args.camera:
        missing = [c for c in args.camera if c not in cams]
        if missing:
            raise ConfigError(f"{loaded.source}: rig.cameras has no {', '.join(missing)}")
        cams = {k: v for k, v in cams.items() if k in args.camera}
    report = run_check(cams, rig.trigger.rate_hz, args.seconds)
    print(f"cameras check: {loaded.source}, {args.seconds:g} s, trigger {rig.trigger.rate_hz:g} Hz")
    for name, c in sorted(report.cameras.items()):
        exp = f"/{c.expected_hz:g}" if c.expected_hz else ""
        print(
            f"  {name:12s} frames={c.frames:6d} fps={c.fps:7.2f}{exp} lost={c.lost} gaps={c.gaps} "
            f"incomplete={c.incomplete} missed_triggers={c.missed_triggers} timeouts={c.timeouts}"
            + (f" ERROR: {c.error}" if c.error else "")
        )
    for pair, (med, worst) in report.skew_ms.items():
        print(
            f"  skew {pair}: median {med:.2f} ms, max {worst:.2f} ms (host arrival, paired by trigger index)"
        )
    if report.passed:
        print("PASS: every camera delivered every frame at the expected rate")
        return 0
    print("FAIL: " + "; ".join(report.failures))
    return 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("cameras", help="list cameras, check a rig's cameras")
    sub = p.add_subparsers(dest="cameras_cmd", required=True)
    pl = sub.add_parser("list", help="every camera every installed backend sees")
    pl.add_argument("--cti", help="GenTL producer(s) for the genicam backend (default GENICAM_GENTL64_PATH)")
    pl.add_argument("--aravis-fake", action="store_true", help="also show Aravis' in-process fake camera")
    pl.set_defaults(func=cmd_list)
    pc = sub.add_parser("check", help="open the configured cameras, grab N s, report fps/drops/skew")
    pc.add_argument("config", help="session or rig config file")
    pc.add_argument("--seconds", type=float, default=5.0)
    pc.add_argument("--camera", action="append", help="check only this camera (repeatable)")
    pc.set_defaults(func=cmd_check)
