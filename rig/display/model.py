"""What the display shows, as plain state (no Qt): fed bus messages, read by the window 30 times a second.

:class:`LiveState` keeps only what is drawn: the newest frame per camera (never a queue of them), the
detections of recent frames (to draw the boxes of the frame on screen), the current 3-D point and the
current trial's 3-D trace (last ``trail_s`` seconds), the pellet, the task state and outcomes, and the
health of every node from its 1 Hz stats, with warnings when drops grow or a node restarts.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.camera import Calibration
from rig import messages as m
from rig.config import ClosedLoopConfig, Config

DET_KEEP = 64  # detections kept per camera to match the frame on screen (0.5 s at 124 Hz)
RECENT = 16  # sampled frames kept per camera to wait for their detections (~0.4 s at a 40 Hz refresh)


ZONE_COLORS = ((60, 220, 90), (230, 160, 40), (80, 160, 240), (220, 90, 200))
REST_COLOR = (140, 140, 140)


@dataclass(frozen=True)
class Zone:
    """A closed-loop rule's region drawn on the 3-D panels: a sphere (``radius_mm``), or an axis-aligned box
    (``size_mm``, its edge lengths; ``radius_mm`` is then half the longest)."""

    label: str
    center: tuple[float, float, float]
    radius_mm: float
    color: tuple[int, int, int]
    size_mm: tuple[float, float, float] | None = None


def zones_of(cl: ClosedLoopConfig) -> list[Zone]:
    """The zones to draw: the region of every closed-loop rule that has one (the built-in zone and rest
    sphere, or the lab's own rules)."""
    zones: list[Zone] = []
    if not cl.enabled:
        return zones
    colors = iter(ZONE_COLORS * 8)
    for name, rule in cl.active_rules().items():
        z = rule.zone
        if z is None:
            continue
        rest = rule.when in ("reach_onset", "reach_offset")
        label = ("rest" if rest else "closed-loop zone") if not cl.rules else name
        color = REST_COLOR if rest else next(colors)
        if z.shape == "box" and z.size_mm is not None:
            zones.append(Zone(label, _vec(z.center_mm), max(z.size_mm) / 2, color, _vec(z.size_mm)))
        else:
            zones.append(Zone(label, _vec(z.center_mm), float(z.radius_mm or 0), color))
    return zones


def zones_from_config(cfg: Config) -> tuple[list[Zone], tuple[float, float, float] | None]:
    """The zones to draw and the configured pellet position of a session's resolved config."""
    return zones_of(cfg.pipeline.closed_loop), _vec(cfg.experiment.reaching.pellet_xyz_mm)


def zones_from_recorded_config(raw: dict[str, Any]) -> tuple[list[Zone], tuple[float, float, float] | None]:
    """The same from a recorded session's ``config`` (a dict, perhaps written by another version: what
    does not validate is not outlined)."""
    from pydantic import ValidationError

    try:
        cl = ClosedLoopConfig.model_validate((raw.get("pipeline") or {}).get("closed_loop") or {})
    except ValidationError:  # a session recorded by another version: nothing to outline
        cl = ClosedLoopConfig(enabled=False)
    reaching = (raw.get("experiment") or {}).get("reaching") or {}
    pellet = _vec(reaching["pellet_xyz_mm"]) if "pellet_xyz_mm" in reaching else None
    return zones_of(cl), pellet


def zones_from_bridge_info(raw: dict[str, Any]) -> tuple[list[Zone], tuple[float, float, float] | None]:
    """The same, from a bridge's ``bridge.info`` (which carries them as plain JSON)."""
    zones = [
        Zone(
            str(z["label"]),
            _vec(z["center"]),
            float(z["radius_mm"]),
            _rgb(z["color"]),
            _vec(z["size_mm"]) if z.get("size_mm") else None,
        )
        for z in raw.get("zones") or []
    ]
    pellet = raw.get("pellet_configured")
    return zones, _vec(pellet) if pellet else None


def _rgb(v: Iterable[Any]) -> tuple[int, int, int]:
    r, g, b = (int(a) for a in list(v)[:3])
    return (r, g, b)


def _vec(v: Iterable[Any]) -> tuple[float, float, float]:
    x, y, z = (float(a) for a in v)
    return (x, y, z)


@dataclass
class NodeHealth:
    """One node's last stats and status, plus what the display derived from them."""

    name: str
    stats: m.Stats | None = None
    status: str = ""
    restarts: int = 0
    drops_seen: int = 0  # drops in the stats when the display first saw the node
    t_seen: float = 0.0  # display's monotonic time of the last stats

    @property
    def drops(self) -> int:
        return self.stats.drops if self.stats is not None else 0


@dataclass
class CameraView:
    """The newest frame of one camera and the frame size in full-resolution pixels."""

    header: m.FrameHeader | None = None
    image: np.ndarray | None = None
    full_size: tuple[int, int] = (0, 0)  # (width, height) of the camera's frames before any downscale
    shown: int = 0  # frames drawn
    skipped: int = 0  # frames that arrived but were never drawn (the display samples the newest)
    # the last sampled frames: the one drawn is the newest whose detections have arrived, so boxes and
    # the 3-D point are always drawn on the frame they belong to (the picture lags by the detection time)
    recent: deque[tuple[m.FrameHeader, np.ndarray]] = field(default_factory=lambda: deque(maxlen=RECENT))
    shown_header: m.FrameHeader | None = None
    shown_image: np.ndarray | None = None


@dataclass
class LiveState:
    cameras: list[str]
    calibration: Calibration | None = None
    trail_s: float = 5.0
    views: dict[str, CameraView] = field(default_factory=dict)
    detections: dict[str, OrderedDict[int, m.Detections]] = field(default_factory=dict)
    point: m.Point3D | None = None
    points: OrderedDict[int, m.Point3D] = field(default_factory=OrderedDict)  # recent, by trigger index
    trail: deque[tuple[int, tuple[float, float, float]]] = field(default_factory=lambda: deque(maxlen=4096))
    pellet: tuple[float, float, float] | None = None
    pellet_configured: tuple[float, float, float] | None = None  # where the pellet is presented (config)
    zones: list[Zone] = field(default_factory=list)
    truth_seen: bool = False  # a simulated rig tells where the pellet is, and when it is gone
    state: str = ""
    trial: int = 0
    trials_done: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    paused: bool = False
    t0_ns: int | None = None
    t_last_ns: int = 0
    health: dict[str, NodeHealth] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    marks: int = 0
    ended: bool = False
    error: str = ""

    def __post_init__(self) -> None:
        for cam in self.cameras:
            self.views.setdefault(cam, CameraView())
            self.detections.setdefault(cam, OrderedDict())

    # ------------------------------------------------------------------------- ingest
    def ingest(self, topic: str, msg: m.AnyMsg) -> None:
        """Take one bus message into the state (frames go through :meth:`set_frame`)."""
        if isinstance(msg, m.Detections):
            if not msg.eos:
                d = self.detections.setdefault(msg.camera, OrderedDict())
                d[msg.seq] = msg
                while len(d) > DET_KEEP:
                    d.popitem(last=False)
        elif isinstance(msg, m.Point3D):
            self._clock(msg.t_out_ns)
            self.point = msg
            self.points[msg.trigger_index] = msg
            while len(self.points) > DET_KEEP:
                self.points.popitem(last=False)
            xyz = msg.xyz_filtered if msg.valid else None
            if xyz is not None and all(math.isfinite(v) for v in xyz):
                self.trail.append((msg.t_frame_ns, xyz))
            horizon = msg.t_frame_ns - int(self.trail_s * 1e9)
            while self.trail and self.trail[0][0] < horizon:
                self.trail.popleft()
        elif isinstance(msg, m.Truth):
            self.truth_seen = True
            self.pellet = msg.pellet_xyz if msg.pellet_present else None
            if not self.state:
                self.state = msg.phase
        elif isinstance(msg, m.TaskEvent):
            self._task(msg)
        elif isinstance(msg, m.Stats):
            self._clock(msg.t_host_ns)
            h = self.health.setdefault(msg.node, NodeHealth(msg.node, drops_seen=msg.drops))
            if h.stats is not None and msg.drops > h.stats.drops:
                self.warn(f"{msg.node}: {msg.drops - h.stats.drops} frames dropped (total {msg.drops})")
            h.stats = msg
            h.t_seen = time.monotonic()
        elif isinstance(msg, m.NodeStatus):
            h = self.health.setdefault(msg.node, NodeHealth(msg.node))
            h.status = msg.status
            if msg.status == "failed":
                self.warn(f"{msg.node} failed: {msg.detail}")
        elif isinstance(msg, m.Control):
            self._clock(msg.t_host_ns)
            if msg.command == "start" and self.t0_ns is None:
                self.t0_ns = msg.t_host_ns
            elif msg.command in ("pause", "resume"):
                self.paused = msg.command == "pause"
            elif msg.command == "mark":
                self.marks += 1

    def _clock(self, t_ns: int) -> None:
        if t_ns > 0:
            if self.t0_ns is None:
                self.t0_ns = t_ns
            self.t_last_ns = max(self.t_last_ns, t_ns)

    def _task(self, e: m.TaskEvent) -> None:
        self._clock(e.t_host_ns)
        if e.state:
            self.state = e.state
        if e.kind == "trial_start":
            self.trial = e.trial
            self.trail.clear()  # the trace is the current trial's
            self.state = e.state or "trial"
        elif e.kind == "trial_end":
            self.trials_done += 1
            self.outcomes[e.outcome] = self.outcomes.get(e.outcome, 0) + 1
            self.state = e.state or "inter-trial"
        elif e.kind == "session_end":
            self.state = "session end"
        elif e.kind == "node_restart":
            node = str(e.detail.get("node", "?"))
            self.health.setdefault(node, NodeHealth(node)).restarts += 1
            self.warn(f"{node} restarted (exit code {e.detail.get('exit_code')})")
        elif e.kind == "pause_pending":
            self.state = f"{e.state} (pausing after trial {e.trial})"
        elif e.kind in ("user_pause", "user_resume"):
            self.paused = e.kind == "user_pause"

    def seed(self, task: dict[str, Any], t_start_ns: int = -1) -> None:
        """Counts so far, for a display that joins a running session (from the bridge's info)."""
        self.trial = int(task.get("trial", 0))
        self.trials_done = int(task.get("done", 0))
        self.outcomes = {str(k): int(v) for k, v in task.get("outcomes", {}).items()}
        if t_start_ns > 0:
            self.t0_ns = t_start_ns

    def set_frame(self, header: m.FrameHeader, image: np.ndarray, skipped: int = 0) -> None:
        """The newest frame of a camera; ``skipped`` frames arrived since the last one and were not drawn."""
        v = self.views.setdefault(header.camera, CameraView())
        v.header, v.image = header, image
        v.recent.append((header, image))
        v.skipped += skipped
        if v.full_size == (0, 0):
            v.full_size = (header.width, header.height)

    def pellet_shown(self) -> tuple[float, float, float] | None:
        """The simulated pellet while it is there; on a real rig, the configured position."""
        return self.pellet if self.truth_seen else self.pellet_configured

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        del self.warnings[:-20]

    # ------------------------------------------------------------------------- read
    @property
    def elapsed_s(self) -> float:
        return (self.t_last_ns - self.t0_ns) / 1e9 if self.t0_ns is not None else 0.0

    @property
    def success_rate(self) -> float | None:
        """None while a completed trial is unclassified (no 3-D), as in the session summary."""
        from rig.task import success_rate

        return success_rate(self.outcomes)

    @property
    def total_drops(self) -> int:
        return sum(h.drops for h in self.health.values() if h.name != "display")

    @property
    def total_restarts(self) -> int:
        return sum(h.restarts for h in self.health.values())

    def choose_frame(self, camera: str) -> CameraView:
        """Pick the frame to draw: the newest sampled one whose detections have arrived; the newest frame
        when none has (no detector, or it is further behind than the frames kept)."""
        v = self.views.setdefault(camera, CameraView())
        d: dict[int, m.Detections] | OrderedDict[int, m.Detections] = self.detections.get(camera) or {}
        pick = next(((h, img) for h, img in reversed(v.recent) if h.seq in d), None)
        if pick is None and v.header is not None:
            pick = (v.header, v.image)
        if pick is not None:
            v.shown_header, v.shown_image = pick
        return v

    def boxes(self, camera: str) -> list[m.Box]:
        """Boxes of the frame on screen (:meth:`choose_frame`); none if its detections have not arrived
        (another frame's boxes would be drawn where that frame's paw was, not this one's)."""
        d = self.detections.get(camera)
        h = self._drawn(camera)
        if not d or h is None or h.seq not in d:
            return []
        return list(d[h.seq].boxes)

    def reprojection(self, camera: str) -> np.ndarray | None:
        """(2,) full-frame pixel position in ``camera`` of the 3-D point of the frame on screen (triangulated
        from that frame's boxes); None until it arrives."""
        h = self._drawn(camera)
        p = self.points.get(h.trigger_index) if h is not None else None
        if p is None or not p.valid or self.calibration is None or camera not in self.calibration.cameras:
            return None
        xyz = np.asarray(p.xyz, float)
        if not np.all(np.isfinite(xyz)):
            return None
        return np.asarray(self.calibration[camera].project(xyz[None])[0])

    def _drawn(self, camera: str) -> m.FrameHeader | None:
        v = self.views.get(camera)
        if v is None:
            return None
        return v.shown_header if v.shown_header is not None else v.header

    def trail_n3(self) -> np.ndarray:
        """(N, 3) mm: the current trial's 3-D trace (last ``trail_s`` seconds)."""
        if not self.trail:
            return np.zeros((0, 3))
        return np.array([xyz for _t, xyz in self.trail], float)

    def recording(self) -> tuple[bool, dict[str, float]]:
        """(recording on?, MB per camera file) from the recorder's stats."""
        h = self.health.get("recorder")
        if h is None or h.stats is None:
            return False, {}
        sizes = {k[:-3]: v for k, v in h.stats.extra.items() if k.endswith(".mb")}
        on = h.status not in ("exiting", "failed") and time.monotonic() - h.t_seen < 3.0
        return on, sizes
