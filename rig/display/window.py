"""The pyqtgraph windows: the live display and the session review viewer share the same panels.

Layout: the camera views side by side (image, detected boxes with class and confidence, the current 3-D
point reprojected as a red cross), below them the 3-D paw trace of the current trial in an oblique view
and its side (y-z) and top (x-y) projections with the pellet; on the right the task state, the health of
every node and the controls. Coordinates drawn on a camera view are full-frame pixels, whatever the size
of the image shown (a bridge may downscale it).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from rig import messages as m
from rig.display.model import LiveState, Zone
from rig.display.sources import Source
from rig.errors import RigError

log = logging.getLogger(__name__)

BOX_COLOR = (0, 255, 0)
REPROJ_COLOR = (255, 40, 40)
TRAIL_COLOR = (80, 200, 255)
PELLET_COLOR = (255, 170, 0)
CLASS_NAMES = {0: "paw"}

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)


def oblique(points_n3: np.ndarray) -> np.ndarray:
    """(N, 3) mm -> (N, 2): a cabinet projection (y forward to the pellet, z up, x receding at 30 deg)."""
    p = np.asarray(points_n3, float).reshape(-1, 3)
    c, s = 0.5 * math.cos(math.radians(30)), 0.5 * math.sin(math.radians(30))
    return np.stack([p[:, 1] + c * p[:, 0], p[:, 2] + s * p[:, 0]], axis=1)


class CameraPanel:
    """One camera's view: image, boxes, labels and the reprojected 3-D point."""

    def __init__(self, layout: pg.GraphicsLayout, camera: str, row: int, col: int):
        self.camera = camera
        self.plot = layout.addPlot(row=row, col=col, title=camera)
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.vb: pg.ViewBox = self.plot.getViewBox()
        self.vb.invertY(True)
        self.vb.setAspectLocked(True)
        self.vb.setMouseEnabled(False, False)
        self.image = pg.ImageItem(levels=(0, 255))
        self.plot.addItem(self.image)
        self.boxes_item = pg.PlotDataItem(pen=pg.mkPen(BOX_COLOR, width=2), connect="finite")
        self.plot.addItem(self.boxes_item)
        self.reproj = pg.ScatterPlotItem(
            symbol="+", size=18, pen=pg.mkPen(REPROJ_COLOR, width=2), brush=pg.mkBrush(REPROJ_COLOR)
        )
        self.plot.addItem(self.reproj)
        self.labels: list[pg.TextItem] = []
        self.full_size = (0, 0)
        self.drawn_boxes: list[m.Box] = []
        self.seq: int | None = None  # frame on screen

    def set_image(self, img: np.ndarray, full_size: tuple[int, int]) -> None:
        self.image.setImage(img, autoLevels=False, levels=(0, 255))
        w, h = full_size if full_size != (0, 0) else (img.shape[1], img.shape[0])
        if (w, h) != self.full_size:
            self.full_size = (w, h)
            self.vb.setRange(xRange=(0, w), yRange=(0, h), padding=0)
        self.image.setRect(QtCore.QRectF(0, 0, w, h))

    def set_boxes(self, boxes: list[m.Box]) -> None:
        self.drawn_boxes = boxes
        xs: list[float] = []
        ys: list[float] = []
        for b in boxes:
            xs += [b.x1, b.x2, b.x2, b.x1, b.x1, math.nan]
            ys += [b.y1, b.y1, b.y2, b.y2, b.y1, math.nan]
        if xs:
            self.boxes_item.setData(np.array(xs), np.array(ys))
        else:
            self.boxes_item.setData([], [])
        while len(self.labels) < len(boxes):
            t = pg.TextItem(color=BOX_COLOR, anchor=(0, 1))
            self.plot.addItem(t)
            self.labels.append(t)
        for i, t in enumerate(self.labels):
            if i < len(boxes):
                b = boxes[i]
                t.setText(f"{CLASS_NAMES.get(b.class_id, str(b.class_id))} {b.confidence:.2f}")
                t.setPos(b.x1, b.y1)
                t.show()
            else:
                t.hide()

    def set_reprojection(self, uv: np.ndarray | None) -> None:
        if uv is None:
            self.reproj.setData([], [])
        else:
            self.reproj.setData([float(uv[0])], [float(uv[1])])

    def to_widget(self, widget: QtWidgets.QWidget, x: float, y: float) -> QtCore.QPointF:
        """Full-frame pixel (x, y) -> position in ``widget`` (for tests that read screenshots)."""
        return plot_to_widget(self.plot, widget, x, y)


def plot_to_widget(plot: pg.PlotItem, widget: QtWidgets.QWidget, x: float, y: float) -> QtCore.QPointF:
    """Data coordinates (x, y) of ``plot`` -> position in ``widget``."""
    scene = plot.getViewBox().mapViewToScene(QtCore.QPointF(x, y))
    view = plot.scene().views()[0]
    return QtCore.QPointF(view.mapTo(widget, view.mapFromScene(scene)))


class TracePanels:
    """The 3-D trace (oblique view) and its side and top projections, with the pellet."""

    def __init__(self, layout: pg.GraphicsLayout, row: int):
        self.plots = []
        self.curves = []
        self.heads = []
        self.pellets = []
        for col, (title, xl, yl) in enumerate(
            (("3-D trace (oblique)", "", ""), ("side (y-z)", "y mm", "z mm"), ("top (x-y)", "x mm", "y mm"))
        ):
            p = layout.addPlot(row=row, col=col, title=title)
            p.setAspectLocked(True)
            if xl:
                p.setLabel("bottom", xl)
                p.setLabel("left", yl)
            curve = p.plot(pen=pg.mkPen(TRAIL_COLOR, width=2))
            head = pg.ScatterPlotItem(size=10, brush=pg.mkBrush(REPROJ_COLOR), pen=None)
            pellet = pg.ScatterPlotItem(size=12, brush=pg.mkBrush(PELLET_COLOR), pen=None, symbol="o")
            p.addItem(head)
            p.addItem(pellet)
            p.setXRange(-30, 30) if col == 2 else p.setXRange(-35, 15)
            p.setYRange(-35, 15) if col == 2 else p.setYRange(-25, 20)
            self.plots.append(p)
            self.curves.append(curve)
            self.heads.append(head)
            self.pellets.append(pellet)
        # the oblique view's axes, drawn from the world origin
        axes = np.array([[0, 0, 0], [10, 0, 0], [0, 0, 0], [0, 10, 0], [0, 0, 0], [0, 0, 10.0]])
        uv = oblique(axes)
        for k, name in enumerate("xyz"):
            seg = uv[2 * k : 2 * k + 2]
            self.plots[0].plot(seg[:, 0], seg[:, 1], pen=pg.mkPen((150, 150, 150), width=1))
            t = pg.TextItem(name, color=(150, 150, 150))
            t.setPos(float(seg[1, 0]), float(seg[1, 1]))
            self.plots[0].addItem(t)

    @staticmethod
    def _views(p_n3: np.ndarray) -> list[np.ndarray]:
        return [oblique(p_n3), p_n3[:, [1, 2]], p_n3[:, [0, 1]]]

    def set_zones(self, zones: list[Zone]) -> None:
        """Draw each sphere as its outline in every view (in the oblique view, the outline of the sphere's
        circle around its projected center: the cabinet projection keeps y-z circles round), and each box as
        its edges."""
        circle = np.linspace(0, 2 * np.pi, 65)
        self.zone_items: list[tuple[Zone, list[Any]]] = []
        for z in zones:
            c = np.asarray(z.center, float)[None]
            items = []
            pen = pg.mkPen(z.color, width=2, style=QtCore.Qt.PenStyle.DashLine)
            if z.size_mm is not None:
                for p, v in zip(self.plots, self._views(_box_edges(z))):
                    items.append(p.plot(v[:, 0], v[:, 1], pen=pen, connect="pairs"))
            else:
                for p, v in zip(self.plots, self._views(c)):
                    x = v[0, 0] + z.radius_mm * np.cos(circle)
                    y = v[0, 1] + z.radius_mm * np.sin(circle)
                    items.append(p.plot(x, y, pen=pen))
            label = pg.TextItem(z.label, color=z.color, anchor=(0.5, 1.0))
            top = self._views(c)[1]
            label.setPos(float(top[0, 0]), float(top[0, 1] + z.radius_mm))
            self.plots[1].addItem(label)
            self.zone_items.append((z, items))

    def zone_rect_in_window(self, widget: QtWidgets.QWidget, zone: Zone, view: int = 1) -> QtCore.QRectF:
        """Where ``zone``'s outline is drawn in ``widget`` (view 0 oblique, 1 side, 2 top)."""
        if zone.size_mm is not None:
            v = self._views(_box_edges(zone))[view]
            lo, hi = v.min(axis=0), v.max(axis=0)
        else:
            c = self._views(np.asarray(zone.center, float)[None])[view][0]
            lo, hi = c - zone.radius_mm, c + zone.radius_mm
        a = plot_to_widget(self.plots[view], widget, lo[0], lo[1])
        b = plot_to_widget(self.plots[view], widget, hi[0], hi[1])
        return QtCore.QRectF(a, b).normalized()

    def update(self, trail_n3: np.ndarray, head: np.ndarray | None, pellet: np.ndarray | None) -> None:
        for curve, v in zip(self.curves, self._views(trail_n3)):
            curve.setData(v[:, 0], v[:, 1]) if len(v) else curve.setData([], [])
        heads = self._views(head[None]) if head is not None else [np.zeros((0, 2))] * 3
        for item, v in zip(self.heads, heads):
            item.setData(v[:, 0], v[:, 1])
        pel = self._views(pellet[None]) if pellet is not None else [np.zeros((0, 2))] * 3
        for item, v in zip(self.pellets, pel):
            item.setData(v[:, 0], v[:, 1])


HEALTH_COLUMNS = ("node", "fps", "processed", "drops", "queue", "p50 ms", "p99 ms", "restarts")


class ViewerBase(QtWidgets.QMainWindow):
    """The camera views and trace panels, plus a side column (filled by subclasses)."""

    def __init__(self, cameras: list[str], title: str):
        super().__init__()
        self.setWindowTitle(title)
        self.resize(1600, 900)
        central = QtWidgets.QWidget()
        self.setCentralWidget(central)
        outer = QtWidgets.QVBoxLayout(central)
        self.banner = QtWidgets.QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(
            "QLabel { background: #b00020; color: white; font-weight: bold; padding: 6px; font-size: 14px; }"
        )
        self.banner.hide()
        outer.addWidget(self.banner)
        row = QtWidgets.QHBoxLayout()
        outer.addLayout(row, 1)
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground((20, 20, 20))
        row.addWidget(self.graphics, 3)
        self.side = QtWidgets.QVBoxLayout()
        side_w = QtWidgets.QWidget()
        side_w.setLayout(self.side)
        side_w.setMinimumWidth(520)
        row.addWidget(side_w, 1)
        cams_layout = self.graphics.addLayout(row=0, col=0)
        self.panels = {c: CameraPanel(cams_layout, c, 0, i) for i, c in enumerate(cameras)}
        trace_layout = self.graphics.addLayout(row=1, col=0)
        self.traces = TracePanels(trace_layout, 0)
        self.graphics.ci.layout.setRowStretchFactor(0, 3)
        self.graphics.ci.layout.setRowStretchFactor(1, 2)

    def show_error(self, text: str) -> None:
        self.banner.setText(text)
        self.banner.show()

    def screenshot(self, path: str) -> bool:
        return bool(self.grab().save(path))

    def box_rect_in_window(self, camera: str, box: m.Box) -> QtCore.QRectF:
        """Where ``box`` (full-frame pixels) is drawn, in window pixels."""
        p = self.panels[camera]
        a = p.to_widget(self, box.x1, box.y1)
        b = p.to_widget(self, box.x2, box.y2)
        return QtCore.QRectF(a, b).normalized()


class LiveWindow(ViewerBase):
    """The live display: samples ``source`` at ``rate_hz`` and draws the newest state."""

    def __init__(self, state: LiveState, source: Source | None, rate_hz: float = 40.0, title: str = ""):
        super().__init__(state.cameras, title or "DeepBehavior live")
        self.state = state
        self.source = source
        self.traces.set_zones(state.zones)
        self.ticks = 0
        self.refresh_s: list[float] = []
        self.task_label = QtWidgets.QLabel()
        self.task_label.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.task_label.setStyleSheet("font-size: 14px;")
        self.side.addWidget(self.task_label)
        self.warning_label = QtWidgets.QLabel()
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("QLabel { background: #ffb300; color: black; padding: 4px; }")
        self.warning_label.hide()
        self.side.addWidget(self.warning_label)
        self.health = QtWidgets.QTableWidget(0, len(HEALTH_COLUMNS))
        self.health.setHorizontalHeaderLabels(list(HEALTH_COLUMNS))
        self.health.verticalHeader().setVisible(False)
        self.health.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.health.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.side.addWidget(self.health, 1)
        self.latency_label = QtWidgets.QLabel()
        self.side.addWidget(self.latency_label)
        self.recording_label = QtWidgets.QLabel()
        self.recording_label.setWordWrap(True)
        self.side.addWidget(self.recording_label)
        # controls
        self.pause_button = QtWidgets.QPushButton("Pause task")
        self.pause_button.clicked.connect(self.on_pause)
        self.mark_note = QtWidgets.QLineEdit()
        self.mark_note.setPlaceholderText("note for the mark (optional)")
        self.mark_button = QtWidgets.QPushButton("Mark event")
        self.mark_button.clicked.connect(self.on_mark)
        self.stop_button = QtWidgets.QPushButton("Stop session")
        self.stop_button.setStyleSheet("QPushButton { color: #b00020; font-weight: bold; }")
        self.stop_button.clicked.connect(self.on_stop)
        self._stop_armed_until = 0.0
        self.control_label = QtWidgets.QLabel("")
        for w in (self.pause_button, self.mark_note, self.mark_button, self.stop_button, self.control_label):
            self.side.addWidget(w)
        self.sent: list[tuple[str, str]] = []
        self._text_t = 0.0
        self._trace_t = 0.0
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.tick)
        self.timer.start(max(1, round(1000 / rate_hz)))

    # ------------------------------------------------------------------------- controls
    def _send(self, command: str, detail: str = "") -> None:
        if self.source is None:
            return
        try:
            self.source.send(command, detail)
        except RigError as exc:
            self.control_label.setText(f"request failed: {exc}")
            log.error("%s", exc)
            return
        self.sent.append((command, detail))
        if command == "mark":
            self.state.marks += 1  # a node does not hear its own messages; marks from others come as ctl
        self.control_label.setText(f"sent: {command} {detail}".strip())

    def on_pause(self) -> None:
        pausing = self.pause_button.text().startswith("Pause")
        self._send("pause" if pausing else "resume")
        self.pause_button.setText("Resume task" if pausing else "Pause task")

    def on_mark(self) -> None:
        note = self.mark_note.text().strip()
        self._send("mark", note or f"mark at {self.state.elapsed_s:.2f} s")
        self.mark_note.clear()

    def on_stop(self) -> None:
        now = time.monotonic()
        if now > self._stop_armed_until:  # the first click arms, a second within 5 s stops
            self._stop_armed_until = now + 5.0
            self.stop_button.setText("Click again to stop the session")
            return
        self._stop_armed_until = 0.0
        self.stop_button.setText("Stop requested")
        self.stop_button.setEnabled(False)
        self._send("stop")

    # ------------------------------------------------------------------------- drawing
    def tick(self) -> None:
        t0 = time.perf_counter()
        if self.source is not None and not self.state.error:
            try:
                self.source.pump(self.state)
            except RigError as exc:
                self.state.error = str(exc)
                log.error("%s", exc)
        self.refresh()
        self.ticks += 1
        self.refresh_s.append(time.perf_counter() - t0)
        del self.refresh_s[:-300]
        if time.monotonic() > self._stop_armed_until and self.stop_button.isEnabled():
            self.stop_button.setText("Stop session")

    def refresh(self) -> None:
        st = self.state
        for cam, panel in self.panels.items():
            v = st.choose_frame(cam)
            h, img = v.shown_header, v.shown_image
            if img is not None and h is not None and h.seq != panel.seq:
                panel.set_image(img, v.full_size)
                panel.seq = h.seq
                v.shown += 1
            panel.set_boxes(st.boxes(cam))
            panel.set_reprojection(st.reprojection(cam))
        now = time.monotonic()
        if now - self._trace_t > 0.1:  # the 3-D panels at 10 Hz: a trace needs no more, and painting costs
            self._trace_t = now
            head = None
            if st.point is not None and st.point.valid:
                head = np.asarray(st.point.xyz_filtered, float)
            pellet = st.pellet_shown()
            self.traces.update(st.trail_n3(), head, np.asarray(pellet) if pellet is not None else None)
        if now - self._text_t > 0.2:  # text and tables at 5 Hz: cheap for the CPU, fast enough to read
            self._text_t = now
            self._task_text()
            self._health_table()
        if st.error:
            self.show_error(st.error)
        elif st.ended:
            self.show_error("the session has ended")

    def _task_text(self) -> None:
        st = self.state
        rate = st.success_rate
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(st.outcomes.items())) or "none yet"
        paused = " <b style='color:#b00020'>PAUSED</b>" if st.paused else ""
        self.task_label.setText(
            f"<b>state</b> {st.state or '-'}{paused}<br>"
            f"<b>trial</b> {st.trial} &nbsp; <b>done</b> {st.trials_done}<br>"
            f"<b>outcomes</b> {outcomes}<br>"
            f"<b>success rate</b> {'-' if rate is None else f'{rate:.0%}'}<br>"
            f"<b>time</b> {st.elapsed_s:7.1f} s &nbsp; <b>marks</b> {st.marks}"
        )
        warn = []
        if st.total_drops:
            warn.append(f"DROPS: {st.total_drops} frames dropped")
        if st.total_restarts:
            warn.append(f"RESTARTS: {st.total_restarts}")
        if warn:
            last = st.warnings[-1] if st.warnings else ""
            self.warning_label.setText(" | ".join(warn) + (f"\nlast: {last}" if last else ""))
            self.warning_label.show()
        else:
            self.warning_label.hide()

    def health_rows(self) -> list[list[str]]:
        rows = []
        for name in sorted(self.state.health):
            h = self.state.health[name]
            s = h.stats
            label = name if h.status in ("", "ready") else f"{name} ({h.status})"
            if s is None:
                rows.append([label, "", "", "", "", "", "", str(h.restarts)])
                continue
            rows.append(
                [
                    label,
                    f"{s.fps:.1f}",
                    str(s.processed),
                    str(s.drops),
                    str(s.queue_depth),
                    "" if math.isnan(s.latency_p50_ms) else f"{s.latency_p50_ms:.2f}",
                    "" if math.isnan(s.latency_p99_ms) else f"{s.latency_p99_ms:.2f}",
                    str(h.restarts),
                ]
            )
        return rows

    def _health_table(self) -> None:
        rows = self.health_rows()
        self.health.setRowCount(len(rows))
        for i, row in enumerate(rows):
            bad = row[3] not in ("", "0") or row[7] != "0" or row[0].endswith("(failed)")
            for j, text in enumerate(row):
                item = self.health.item(i, j)
                if item is None:
                    item = QtWidgets.QTableWidgetItem()
                    self.health.setItem(i, j, item)
                if item.text() != text:
                    item.setText(text)
                item.setBackground(QtGui.QColor("#ffcdd2") if bad else QtGui.QColor("white"))
        det = self.state.health.get("detector")  # it triangulates too: its latency is frame -> 3-D
        if det is not None and det.stats is not None and not math.isnan(det.stats.latency_p50_ms):
            self.latency_label.setText(
                f"frame → 3-D latency: p50 {det.stats.latency_p50_ms:.2f} ms, "
                f"p99 {det.stats.latency_p99_ms:.2f} ms"
            )
        on, sizes = self.state.recording()
        files = ", ".join(f"{k} {v:.1f} MB" for k, v in sorted(sizes.items()))
        self.recording_label.setText(f"recording: {'ON' if on else 'off'}" + (f" ({files})" if files else ""))


def run_qt(
    window: QtWidgets.QWidget, until: Callable[[], bool] | None = None, seconds: float | None = None
) -> None:
    """Show ``window`` and process events until it is closed, ``until()`` is true, or ``seconds`` pass."""
    app = QtWidgets.QApplication.instance()
    assert app is not None
    window.show()
    deadline = time.monotonic() + seconds if seconds is not None else math.inf
    while window.isVisible() and time.monotonic() < deadline and not (until is not None and until()):
        app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
        time.sleep(0.005)


def qt_app() -> QtWidgets.QApplication:
    app = QtWidgets.QApplication.instance()
    if app is None:
        # opencv-python points Qt at its own (different) Qt's plugins and fonts when cv2 is imported;
        # PySide6 must use its own, or no window opens on a real screen
        for var in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR"):
            if "cv2" in os.environ.get(var, ""):
                del os.environ[var]
        app = QtWidgets.QApplication([])
    assert isinstance(app, QtWidgets.QApplication)
    return app


def _box_edges(z: Zone) -> np.ndarray:
    """The 12 edges of a box zone as 24 points (pairs), world mm."""
    assert z.size_mm is not None
    half = np.asarray(z.size_mm, float) / 2
    corners = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], float) * half
    pairs = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
    return np.asarray(np.asarray(z.center, float) + corners[np.array(pairs).ravel()])
