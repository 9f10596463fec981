"""``deepbehavior review SESSION``: a recorded session with the live display's overlays, drawn from the
recorded detections and 3-D points, with a frame slider and a trial list.

The slider walks the first camera's recorded frames; the other cameras show the frame of the same trigger
index. Videos are decoded on demand (a seek to the nearest key frame, then forward), never loaded whole.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
from PySide6 import QtCore, QtWidgets

from rig import messages as m
from rig.display.model import zones_from_recorded_config
from rig.display.window import ViewerBase
from rig.errors import InputError
from rig.session import Session, y_plane

log = logging.getLogger(__name__)

TRAIL_S = 5.0


class VideoCursor:
    """Random access to frame ``k`` of a recorded video (by decode position, as the frame table counts)."""

    def __init__(self, path: Path):
        self.path = path
        self.container: av.container.InputContainer | None = None
        self.pos = -1
        self.last: np.ndarray | None = None
        self._frames: Iterator[av.VideoFrame] | None = None

    def _open(self, k: int) -> None:
        if self.container is not None:
            self.container.close()
        try:
            self.container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as exc:
            raise InputError(f"{self.path}: cannot open video: {exc}") from None
        stream = self.container.streams.video[0]
        self.rate = float(stream.average_rate or stream.guessed_rate or 0)
        self.tb = float(stream.time_base) if stream.time_base else 0.0
        self.pos = -1
        if k > 0 and self.rate and self.tb:
            self.container.seek(int(k / self.rate / self.tb), stream=stream, backward=True)
        self._frames = self.container.decode(video=0)
        self._seeked = k > 0 and bool(self.rate and self.tb)

    def get(self, k: int) -> np.ndarray | None:
        """(H, W) uint8 frame ``k``, or None past the end."""
        if k == self.pos:
            return self.last
        if self.container is None or k < self.pos or k - self.pos > 300:
            self._open(k)
        assert self._frames is not None
        for frame in self._frames:
            if self._seeked and frame.pts is not None:
                self.pos = round(frame.pts * self.tb * self.rate)
                self._seeked = False
            else:
                self.pos += 1
            if self.pos >= k:
                self.last = y_plane(frame).copy()
                return self.last
        return None

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None


class ReviewWindow(ViewerBase):
    def __init__(self, session: Session):
        self.session = session
        cams = session.cameras
        if not cams:
            raise InputError(f"{session.path}/session.json: no cameras")
        super().__init__(cams, f"DeepBehavior review: {session.path.name}")
        self.cursors = {c: VideoCursor(session.video_path(c)) for c in cams}
        # frame tables: recorded rows only, trigger index -> video index per camera
        self.rows: dict[str, dict[str, np.ndarray]] = {}
        self.by_trigger: dict[str, dict[int, int]] = {}
        for c in cams:
            t = session.frames[c]
            keep = t["video_index"] >= 0 if len(t.get("video_index", [])) else np.zeros(0, bool)
            self.rows[c] = {k: v[keep] for k, v in t.items()}
            self.by_trigger[c] = {int(ti): j for j, ti in enumerate(self.rows[c]["trigger_index"])}
        self.main = cams[0]
        self.n = len(self.rows[self.main].get("video_index", []))
        self.boxes = self._boxes(session.detections)
        self._points(session.points3d)
        self._pellet(session.truth)
        zones, self.pellet_configured = zones_from_recorded_config(session.config or {})
        self.traces.set_zones(zones)
        self.trials = [
            (int(t["trial"]), int(t["t_start_ns"]), int(t["t_end_ns"]), t["outcome"]) for t in session.trials
        ]
        # side column: info, trial list, slider
        self.info = QtWidgets.QLabel()
        self.info.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.info.setStyleSheet("font-size: 14px;")
        self.side.addWidget(self.info)
        self.trial_list = QtWidgets.QListWidget()
        for trial, t0, _t1, outcome in self.trials:
            self.trial_list.addItem(f"trial {trial}: {outcome} (at {(t0 - self._t0) / 1e9:.1f} s)")
        self.trial_list.currentRowChanged.connect(self._trial_chosen)
        self.side.addWidget(QtWidgets.QLabel("<b>trials</b>"))
        self.side.addWidget(self.trial_list, 1)
        summary = session.meta.get("summary") or {}
        self.side.addWidget(
            QtWidgets.QLabel(
                f"status {session.meta.get('status')}; trials {summary.get('trials', len(self.trials))}; "
                f"success rate {summary.get('success_rate')}"
            )
        )
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(0, max(0, self.n - 1))
        self.slider.valueChanged.connect(self.show_frame)
        self.centralWidget().layout().addWidget(self.slider)  # type: ignore[union-attr]
        self.current = -1
        if self.n:
            self.show_frame(0)
        else:
            self.show_error(f"{session.path}: no recorded frames")

    # ------------------------------------------------------------------------- tables
    def _boxes(self, det: dict[str, np.ndarray]) -> dict[tuple[str, int], list[m.Box]]:
        out: dict[tuple[str, int], list[m.Box]] = {}
        if not det or not len(det.get("camera", [])):
            return out
        for i in range(len(det["camera"])):
            if int(det["n_boxes"][i]) == 0:
                continue
            key = (str(det["camera"][i]), int(det["seq"][i]))
            out.setdefault(key, []).append(
                m.Box(
                    float(det["x1"][i]),
                    float(det["y1"][i]),
                    float(det["x2"][i]),
                    float(det["y2"][i]),
                    float(det["confidence"][i]),
                    int(det["class_id"][i]),
                )
            )
        return out

    def _points(self, p: dict[str, np.ndarray]) -> None:
        self._t0 = int(self.rows[self.main]["t_host_ns"][0]) if self.n else 0
        if p and len(p.get("trigger_index", [])):
            order = np.argsort(p["trigger_index"])
            self.p_trigger = p["trigger_index"][order].astype(np.int64)
            self.p_xyz = np.stack([_num(p["x_filt"]), _num(p["y_filt"]), _num(p["z_filt"])], axis=1)[order]
            self.p_valid = p["valid"][order].astype(bool) & np.all(np.isfinite(self.p_xyz), axis=1)
            self.p_t = p["t_frame_ns"][order].astype(np.int64)
        else:
            self.p_trigger = np.zeros(0, np.int64)
            self.p_xyz = np.zeros((0, 3))
            self.p_valid = np.zeros(0, bool)
            self.p_t = np.zeros(0, np.int64)

    def _pellet(self, truth: dict[str, np.ndarray] | None) -> None:
        self.pellet_trigger = np.zeros(0, np.int64)
        if truth and len(truth.get("trigger_index", [])) and "pellet_x" in truth:
            self.pellet_trigger = truth["trigger_index"].astype(np.int64)
            self.pellet_xyz = np.stack([truth["pellet_x"], truth["pellet_y"], truth["pellet_z"]], axis=1)
            self.pellet_present = truth["pellet_present"].astype(bool)

    # ------------------------------------------------------------------------- navigation
    def select_trial(self, trial: int) -> None:
        for row, (t, *_rest) in enumerate(self.trials):
            if t == trial:
                self.trial_list.setCurrentRow(row)
                return
        raise InputError(f"{self.session.path}/trials.csv: no trial {trial}")

    def _trial_chosen(self, row: int) -> None:
        if not 0 <= row < len(self.trials):
            return
        t_start = self.trials[row][1]
        k = int(np.searchsorted(self.rows[self.main]["t_host_ns"], t_start))
        self.slider.setValue(min(k, self.n - 1))

    def trial_at(self, t_ns: int) -> tuple[int, str]:
        for trial, t0, t1, outcome in self.trials:
            if t0 <= t_ns <= t1:
                return trial, outcome
        return 0, ""

    def show_frame(self, k: int) -> None:
        if not 0 <= k < self.n:
            return
        self.current = k
        main_rows = self.rows[self.main]
        trigger = int(main_rows["trigger_index"][k])
        t_ns = int(main_rows["t_host_ns"][k])
        for cam, panel in self.panels.items():
            j = self.by_trigger[cam].get(trigger)
            rows = self.rows[cam]
            img = self.cursors[cam].get(int(rows["video_index"][j])) if j is not None else None
            if img is None or j is None:
                panel.set_boxes([])
                panel.set_reprojection(None)
                continue
            panel.set_image(img, (img.shape[1], img.shape[0]))
            panel.set_boxes(self.boxes.get((cam, int(rows["seq"][j])), []))
            panel.set_reprojection(self._reproject(cam, trigger))
        # 3-D: the current trial's trace up to this frame (last TRAIL_S seconds)
        i = bisect.bisect_right(self.p_trigger.tolist(), trigger) if len(self.p_trigger) else 0
        trial, outcome = self.trial_at(t_ns)
        start = t_ns - int(TRAIL_S * 1e9)
        for _t, t0, t1, _o in self.trials:
            if t0 <= t_ns <= t1:
                start = max(start, t0)
        sel = slice(0, i)
        mask = self.p_valid[sel] & (self.p_t[sel] >= start)
        trail = self.p_xyz[sel][mask]
        head = self._point(trigger)
        self.traces.update(trail, head, self._pellet_at(trigger))
        self.info.setText(
            f"<b>frame</b> {k + 1}/{self.n} &nbsp; <b>trigger</b> {trigger}<br>"
            f"<b>time</b> {(t_ns - self._t0) / 1e9:.3f} s<br>"
            f"<b>trial</b> {trial or '-'} {outcome}<br>"
            f"<b>3-D</b> {'-' if head is None else ', '.join(f'{v:.1f}' for v in head)} mm"
        )

    def _point(self, trigger: int) -> np.ndarray | None:
        j = int(np.searchsorted(self.p_trigger, trigger))
        if j < len(self.p_trigger) and self.p_trigger[j] == trigger and self.p_valid[j]:
            return np.asarray(self.p_xyz[j])
        return None

    def _reproject(self, cam: str, trigger: int) -> np.ndarray | None:
        p = self._point(trigger)
        cal = self.session.calibration
        if p is None or cam not in cal.cameras:
            return None
        return np.asarray(cal[cam].project(p[None])[0])

    def _pellet_at(self, trigger: int) -> np.ndarray | None:
        if not len(self.pellet_trigger):  # a real rig's session: the configured pellet position
            return None if self.pellet_configured is None else np.asarray(self.pellet_configured)
        j = min(int(np.searchsorted(self.pellet_trigger, trigger)), len(self.pellet_trigger) - 1)
        return self.pellet_xyz[j] if self.pellet_present[j] else None

    def boxes_on_screen(self, cam: str) -> list[m.Box]:
        return self.panels[cam].drawn_boxes

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        for c in self.cursors.values():
            c.close()
        super().closeEvent(event)


def _num(col: np.ndarray) -> np.ndarray:
    """A CSV column as float, empty cells (invalid values) as NaN."""
    if col.dtype != object:
        return col.astype(float)
    return np.array([float(v) if v != "" else math.nan for v in col], float)
