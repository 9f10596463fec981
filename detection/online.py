"""Per-frame detection logic for the online detector node: ROI tracking with a full-frame fallback.

For each camera the detector keeps the last known paw centre. When it has one, it runs the model on a
``roi_size`` x ``roi_size`` crop at native resolution centred on the position predicted by constant
velocity; all cameras' crops go through the runner as one batch. A camera with no track (start, or the
paw was lost) gets a full-frame search on the frame downscaled by ``search_scale`` (the bundled model is
trained on both scales). After ``lost_frames`` consecutive empty searches the full-frame search runs only
every ``search_every`` frames to bound the cost while nothing is in view. Boxes come back in full-frame
pixel coordinates, best first.

With ``roi_size`` 0 every frame is a full-frame search at ``search_scale`` (or letterboxed to the
runner's ``input_size``). The settings are :class:`detection.settings.DetectorOptions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from detection.base import Det, Runner
from detection.settings import DetectorOptions


@dataclass
class Track:
    """Last known centre (x, y) in full-frame pixels and velocity in pixels per frame."""

    center: tuple[float, float] | None = None
    velocity: tuple[float, float] = (0.0, 0.0)
    lost: int = 0  # consecutive frames with no detection
    since_search: int = 0


# The ROI settings are part of the detector's options (detection.settings); the old name stays.
OnlineOptions = DetectorOptions


@dataclass
class OnlineDetector:
    """Detects on a batch of frames, one per camera, keeping a track per camera."""

    runner: Runner
    cameras: list[str]
    options: DetectorOptions = field(default_factory=DetectorOptions)
    stats: dict[str, int] = field(default_factory=lambda: {"roi": 0, "full_frame_searches": 0, "skipped": 0})

    def __post_init__(self) -> None:
        self.tracks = {c: Track() for c in self.cameras}

    def reset(self) -> None:
        self.tracks = {c: Track() for c in self.cameras}

    def detect(self, frames: Sequence[np.ndarray], cameras: Sequence[str] | None = None) -> list[list[Det]]:
        """``frames``: one (H, W) uint8 frame per camera in ``cameras`` (default: all, in order).
        Returns per frame its boxes in full-frame pixels, best first."""
        cams = list(cameras) if cameras is not None else self.cameras
        if len(cams) != len(frames):
            raise ValueError(f"{len(frames)} frames for {len(cams)} cameras")
        o = self.options
        out: list[list[Det]] = [[] for _ in frames]
        if o.roi_size <= 0:
            if o.search_scale == 1.0:
                out = self.runner.infer(list(frames))
            else:
                for i, f in enumerate(frames):
                    out[i] = self._search(f)
            for i, c in enumerate(cams):
                self._update(self.tracks[c], out[i])
            return out
        roi_idx, crops, origins = [], [], []
        for i, (c, f) in enumerate(zip(cams, frames)):
            t = self.tracks[c]
            if t.center is not None and t.lost == 0:
                x0, y0 = self._roi_origin(t, f.shape)
                crops.append(np.ascontiguousarray(f[y0 : y0 + o.roi_size, x0 : x0 + o.roi_size]))
                roi_idx.append(i)
                origins.append((x0, y0))
        if crops:
            self.stats["roi"] += len(crops)
            for i, (x0, y0), dets in zip(roi_idx, origins, self.runner.infer(crops)):
                out[i] = [
                    Det(d.x1 + x0, d.y1 + y0, d.x2 + x0, d.y2 + y0, d.confidence, d.class_id) for d in dets
                ]
        for i, (c, f) in enumerate(zip(cams, frames)):
            t = self.tracks[c]
            if not out[i]:
                if t.lost < o.lost_frames or t.since_search + 1 >= o.search_every:
                    out[i] = self._search(f)
                    t.since_search = 0
                else:
                    t.since_search += 1
                    self.stats["skipped"] += 1
            self._update(t, out[i])
        return out

    def _search(self, frame: np.ndarray) -> list[Det]:
        s = self.options.search_scale
        self.stats["full_frame_searches"] += 1
        if s == 1.0:
            return self.runner.infer([frame])[0]
        small = cv2.resize(
            frame, (round(frame.shape[1] * s), round(frame.shape[0] * s)), interpolation=cv2.INTER_AREA
        )
        return [
            Det(d.x1 / s, d.y1 / s, d.x2 / s, d.y2 / s, d.confidence, d.class_id)
            for d in self.runner.infer([small])[0]
        ]

    def _roi_origin(self, t: Track, shape: tuple[int, ...]) -> tuple[int, int]:
        assert t.center is not None
        r = self.options.roi_size
        h, w = shape[:2]
        cx, cy = t.center[0] + t.velocity[0], t.center[1] + t.velocity[1]
        x0 = int(np.clip(round(cx - r / 2), 0, max(w - r, 0)))
        y0 = int(np.clip(round(cy - r / 2), 0, max(h - r, 0)))
        return x0, y0

    def _update(self, t: Track, dets: list[Det]) -> None:
        tc = self.options.track_class
        cand = [d for d in dets if tc is None or d.class_id == tc]
        if not cand:
            t.lost += 1
            t.velocity = (0.0, 0.0)
            return
        best = max(cand, key=lambda d: d.confidence)
        c = best.center()
        if t.center is not None and t.lost == 0:
            vx, vy = c[0] - t.center[0], c[1] - t.center[1]
            lim = self.options.roi_size / 4
            t.velocity = (float(np.clip(vx, -lim, lim)), float(np.clip(vy, -lim, lim)))
        else:
            t.velocity = (0.0, 0.0)
        t.center = c
        t.lost = 0
        dets.sort(key=lambda d: -d.confidence)
