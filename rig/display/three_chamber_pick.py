"""Three-chamber geometry picked on a frame: drag out the chamber rectangles, click each cup's centre and
then a point on its rim (or drag from centre to rim), and write the YAML that ``three-chamber`` reads.

The state lives in :class:`GeometryPicker` (pure, no Qt); :class:`GeometryPickWindow` is a thin pyqtgraph
shell whose mouse and key handlers call it (the same split as ``detection/label_tool.py``).

Each item (a chamber or a cup) is two points: opposite corners of a chamber, centre and rim of a cup,
given by two clicks or one left-button drag. Keys: ``1``-``9`` choose the item to place (placing a placed
one replaces it), ``Tab``/``n`` next item, ``p`` previous, ``z``/``Backspace`` undo, ``Escape`` cancel a
half-placed item, ``+``/``-`` interaction margin by 5 px, ``s`` save, ``q`` save and quit. The mouse wheel
zooms; a right-button drag zooms a box.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.errors import AnalysisError
from analysis.tasks.social import (
    ThreeChamberGeometry,
    load_three_chamber_geometry,
    save_three_chamber_geometry,
)

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CHAMBERS = ("left", "center", "right")
CUPS = ("left_cup", "right_cup")
MARGIN_STEP = 5.0
MIN_SIZE_PX = 2.0  # a smaller rectangle side or cup radius is a slip of the mouse, not an item

Point = tuple[float, float]


@dataclass
class GeometryPicker:
    """Chambers and cups placed so far (image pixels), the item being placed and its first point."""

    chamber_names: tuple[str, ...] = CHAMBERS
    cup_names: tuple[str, ...] = CUPS
    interaction_margin: float = 20.0
    chambers: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    cups: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    anchor: Point | None = None  # first click of the current item
    selected: str | None = None  # chosen by key; None: the first item not placed yet
    history: list[tuple[str, tuple[float, ...] | None]] = field(default_factory=list)  # (item, before)
    comment: str = ""  # written at the top of the YAML file

    def __post_init__(self) -> None:
        names = [*self.chamber_names, *self.cup_names]
        if not self.chamber_names or not self.cup_names:
            raise AnalysisError("need at least one chamber and one cup name")
        if len(set(names)) != len(names) or not all(n.strip() for n in names):
            raise AnalysisError(f"chamber and cup names must be distinct and non-empty: {names}")

    @classmethod
    def open(
        cls,
        out: str | Path,
        chambers: Sequence[str] = CHAMBERS,
        cups: Sequence[str] = CUPS,
        margin: float | None = None,
    ) -> GeometryPicker:
        """A new picker, or the geometry already in ``out`` (its names win) ready to be edited."""
        out = Path(out)
        if not out.is_file():
            return cls(tuple(chambers), tuple(cups), 20.0 if margin is None else margin)
        g = load_three_chamber_geometry(out)
        log.info("editing %s (chambers %s, cups %s)", out, ", ".join(g.chambers), ", ".join(g.cups))
        return cls(
            tuple(g.chambers),
            tuple(g.cups),
            g.interaction_margin if margin is None else margin,
            dict(g.chambers),
            dict(g.cups),
        )

    # ------------------------------------------------------------------------------------------ state
    @property
    def items(self) -> tuple[str, ...]:
        return (*self.chamber_names, *self.cup_names)

    def is_chamber(self, name: str) -> bool:
        return name in self.chamber_names

    def placed(self, name: str) -> bool:
        return name in self.chambers or name in self.cups

    @property
    def current(self) -> str | None:
        """The item the next click or drag places (None: all placed and none chosen)."""
        if self.selected is not None:
            return self.selected
        return next((n for n in self.items if not self.placed(n)), None)

    def missing(self) -> list[str]:
        return [n for n in self.items if not self.placed(n)]

    # ------------------------------------------------------------------------------------------ input
    def click(self, x: float, y: float) -> str | None:
        """A left click: the first stores the item's first point, the second places it. Returns the name
        of the item placed, else None."""
        if self.current is None:
            return None
        if self.anchor is None:
            self.anchor = (x, y)
            return None
        first, self.anchor = self.anchor, None
        return self.drag(first, (x, y))

    def drag(self, start: Point, end: Point) -> str | None:
        """Place the current item from two points: chamber corners, or a cup's centre and rim."""
        name = self.current
        self.anchor = None
        if name is None:
            return None
        (x0, y0), (x1, y1) = start, end
        value: tuple[float, ...]
        if self.is_chamber(name):
            if abs(x1 - x0) < MIN_SIZE_PX or abs(y1 - y0) < MIN_SIZE_PX:
                return None
            value = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        else:
            r = float(np.hypot(x1 - x0, y1 - y0))
            if r < MIN_SIZE_PX:
                return None
            value = (x0, y0, r)
        self.history.append((name, self._set(name, value)))
        self.selected = None
        return name

    def _set(self, name: str, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        """Set (None: remove) an item, keeping the configured order; returns its value before."""
        chamber = self.is_chamber(name)
        store: dict[str, Any] = self.chambers if chamber else self.cups
        before = store.pop(name, None)
        if value is not None:
            store[name] = tuple(float(v) for v in value)
        order = self.chamber_names if chamber else self.cup_names
        ordered = {n: store[n] for n in order if n in store}
        store.clear()
        store.update(ordered)
        return None if before is None else tuple(before)

    def undo(self) -> str | None:
        """Cancel a half-placed item, else take back the last placement (the item becomes current)."""
        if self.anchor is not None:
            self.anchor = None
            return None
        if not self.history:
            return None
        name, before = self.history.pop()
        self._set(name, before)
        self.selected = name
        return name

    def cancel(self) -> None:
        self.anchor = None

    def select(self, index: int) -> None:
        """Choose item ``index`` (0-based, chambers then cups) to place next."""
        if 0 <= index < len(self.items):
            self.selected = self.items[index]
            self.anchor = None

    def cycle(self, step: int) -> None:
        cur = self.current
        i = self.items.index(cur) if cur is not None else -1 if step > 0 else 0
        self.select((i + step) % len(self.items))

    def adjust_margin(self, delta: float) -> None:
        self.interaction_margin = max(0.0, self.interaction_margin + delta)

    # ------------------------------------------------------------------------------------------ output
    def geometry(self) -> ThreeChamberGeometry:
        if self.missing():
            raise AnalysisError(f"not placed yet: {', '.join(self.missing())}")
        return ThreeChamberGeometry(dict(self.chambers), dict(self.cups), self.interaction_margin)

    def warnings(self) -> list[str]:
        """What is placed but probably wrong: overlapping chambers, a cup outside every chamber."""
        out = []
        rects = list(self.chambers.items())
        for i, (a, (ax0, ay0, ax1, ay1)) in enumerate(rects):
            for b, (bx0, by0, bx1, by1) in rects[i + 1 :]:
                if min(ax1, bx1) > max(ax0, bx0) and min(ay1, by1) > max(ay0, by0):
                    out.append(f"chambers {a} and {b} overlap (a head there counts for {b})")
        for name, (cx, cy, _) in self.cups.items():
            if rects and not any(x0 <= cx < x1 and y0 <= cy < y1 for _, (x0, y0, x1, y1) in rects):
                out.append(f"cup {name} is outside every chamber")
        return out

    def prompt(self) -> str:
        """What the user should do next, in words."""
        name = self.current
        if name is None:
            return "all placed: s saves, q saves and quits; 1-9 or Tab chooses an item to redo"
        n = self.items.index(name) + 1
        if self.is_chamber(name):
            if self.anchor is None:
                return f"[{n}] chamber '{name}': drag out its rectangle (or click two opposite corners)"
            return f"[{n}] chamber '{name}': click the opposite corner"
        if self.anchor is None:
            return f"[{n}] cup '{name}': click its centre, then a point on its rim (or drag centre -> rim)"
        return f"[{n}] cup '{name}': click a point on its rim"

    def save(self, path: str | Path) -> ThreeChamberGeometry:
        """Write the YAML and read it back through the ``three-chamber`` command's loader."""
        return save_three_chamber_geometry(self.geometry(), path, self.comment)


def read_frame(path: str | Path, index: int = 0) -> np.ndarray:
    """(H, W, 3) RGB uint8 frame ``index`` of a video (decoded in order, not seeked), or an image file."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"{path}: file not found")
    if index < 0:
        raise AnalysisError(f"{path}: frame index {index} is negative")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if index != 0:
            raise AnalysisError(f"{path}: an image has only frame 0 (asked for {index})")
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise AnalysisError(f"{path}: not a readable image")
    else:
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise AnalysisError(f"{path}: cannot open video")
        try:
            n = 0
            while n < index and cap.grab():
                n += 1
            ok, img = cap.read() if n == index else (False, None)
        finally:
            cap.release()
        if not ok or img is None:
            raise AnalysisError(f"{path}: no frame {index} (the video has {n} frames)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class GeometryPickWindow:
    """pyqtgraph window over a :class:`GeometryPicker` and one frame (Qt is imported here only)."""

    HELP = (
        "1-9 item · Tab/n next · p previous · z undo · Esc cancel · +/- margin · s save · q save+quit · "
        "wheel zoom"
    )

    def __init__(self, picker: GeometryPicker, image_rgb: np.ndarray, out: str | Path):
        import pyqtgraph as pg
        from pyqtgraph.Qt import QtCore, QtWidgets

        self.p, self.out, self._pg, self.QtCore, self.QtWidgets = picker, Path(out), pg, QtCore, QtWidgets
        self.saved: ThreeChamberGeometry | None = None
        self.closed = False
        self.message = ""
        self.app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
        self.win = pg.GraphicsLayoutWidget(title="deepbehavior three-chamber geometry")
        self.win.resize(1000, 800)
        self.plot = self.win.addPlot(row=0, col=0)
        self.plot.invertY(True)
        self.plot.setAspectLocked(True)
        self.status = self.win.addLabel("", row=1, col=0, justify="left")
        self.win.addLabel(self.HELP, row=2, col=0, justify="left", size="8pt")
        self.img_item = pg.ImageItem(np.asarray(image_rgb), axisOrder="row-major", levels=(0, 255))
        self.plot.addItem(self.img_item)
        self.overlay: list[Any] = []
        self.keys = self._keymap()
        self.win.keyPressEvent = self.on_key
        self.img_item.mouseDragEvent = self.on_drag
        self.plot.scene().sigMouseClicked.connect(self.on_mouse)
        self.redraw()

    # ------------------------------------------------------------------------------------ drawing
    def _add(self, item: Any) -> None:
        self.plot.addItem(item)
        self.overlay.append(item)

    def _text(self, text: str, x: float, y: float, color: Any) -> None:
        t = self._pg.TextItem(text, color=color, anchor=(0.5, 0.5))
        t.setPos(x, y)
        self._add(t)

    def redraw(self, preview: tuple[Point, Point] | None = None) -> None:
        pg, QtWidgets = self._pg, self.QtWidgets
        for it in self.overlay:
            self.plot.removeItem(it)
        self.overlay = []
        cur = self.p.current
        for name, (x0, y0, x1, y1) in self.p.chambers.items():
            i = self.p.chamber_names.index(name)  # a chamber keeps its colour
            r = QtWidgets.QGraphicsRectItem(x0, y0, x1 - x0, y1 - y0)
            r.setPen(pg.mkPen(pg.intColor(i, 6), width=4 if name == cur else 2))
            self._add(r)
            self._text(f"{self.p.items.index(name) + 1} {name}", (x0 + x1) / 2, y0 + 12, pg.intColor(i, 6))
        margin = self.p.interaction_margin
        for name, (cx, cy, rad) in self.p.cups.items():
            for rr, style in (
                (rad, self.QtCore.Qt.PenStyle.SolidLine),
                (rad + margin, self.QtCore.Qt.PenStyle.DashLine),
            ):
                c = QtWidgets.QGraphicsEllipseItem(cx - rr, cy - rr, 2 * rr, 2 * rr)
                c.setPen(pg.mkPen((255, 140, 0), width=3 if name == cur else 2, style=style))
                self._add(c)
            self._text(f"{self.p.items.index(name) + 1} {name}", cx, cy, (255, 140, 0))
        if self.p.anchor is not None:
            self._add(pg.ScatterPlotItem([self.p.anchor[0]], [self.p.anchor[1]], size=10, brush="y"))
        if preview is not None and cur is not None:
            (x0, y0), (x1, y1) = preview
            pen = pg.mkPen("y", width=1, style=self.QtCore.Qt.PenStyle.DashLine)
            if self.p.is_chamber(cur):
                item = QtWidgets.QGraphicsRectItem(min(x0, x1), min(y0, y1), abs(x1 - x0), abs(y1 - y0))
            else:
                rr = float(np.hypot(x1 - x0, y1 - y0))
                item = QtWidgets.QGraphicsEllipseItem(x0 - rr, y0 - rr, 2 * rr, 2 * rr)
            item.setPen(pen)
            self._add(item)
        lines = [self.p.prompt(), f"interaction margin {margin:g} px", *self.p.warnings()]
        if self.message:
            lines.append(self.message)
        self.status.setText("<br>".join(lines))
        self.win.setWindowTitle(f"three-chamber geometry -> {self.out.name} ({cur or 'all placed'})")

    # ------------------------------------------------------------------------------------ input
    def on_click_at(self, x: float, y: float) -> None:
        """A left click at image pixel (x, y) (what a mouse click maps to)."""
        self.message = ""
        self.p.click(x, y)
        self.redraw()

    def on_drag_at(self, start: Point, end: Point, finish: bool = True) -> None:
        """A left-button drag from ``start`` to ``end`` (image pixels); ``finish`` when the button is up."""
        self.message = ""
        if finish:
            self.p.drag(start, end)
            self.redraw()
        else:
            self.redraw(preview=(start, end))

    def on_mouse(self, ev: Any) -> None:
        if ev.button() != self.QtCore.Qt.MouseButton.LeftButton:
            return
        p = self.img_item.mapFromScene(ev.scenePos())
        self.on_click_at(float(p.x()), float(p.y()))

    def on_drag(self, ev: Any) -> None:
        if ev.button() != self.QtCore.Qt.MouseButton.LeftButton:
            ev.ignore()  # other buttons zoom/pan the view
            return
        ev.accept()
        start, end = ev.buttonDownPos(), ev.pos()  # item (image pixel) coordinates
        self.on_drag_at((float(start.x()), float(start.y())), (float(end.x()), float(end.y())), ev.isFinish())

    def _keymap(self) -> dict[Any, Callable[[], object]]:
        K, p = self.QtCore.Qt.Key, self.p
        return {
            K.Key_Tab: lambda: p.cycle(1),
            K.Key_N: lambda: p.cycle(1),
            K.Key_Backtab: lambda: p.cycle(-1),
            K.Key_P: lambda: p.cycle(-1),
            K.Key_Z: p.undo,
            K.Key_Backspace: p.undo,
            K.Key_Escape: p.cancel,
            K.Key_Plus: lambda: p.adjust_margin(MARGIN_STEP),
            K.Key_Equal: lambda: p.adjust_margin(MARGIN_STEP),
            K.Key_Minus: lambda: p.adjust_margin(-MARGIN_STEP),
            K.Key_S: self.save,
            K.Key_Q: self.save_and_close,
        }

    def on_key(self, ev: Any) -> None:
        self.message = ""
        text = ev.text()
        if text.isdigit() and text != "0":
            self.p.select(int(text) - 1)
        elif (action := self.keys.get(ev.key())) is not None:
            action()
        if not self.closed:  # closing deletes the plot's Qt objects
            self.redraw()

    def save_and_close(self) -> None:
        """Save, then close the window; a failed save says why and the window stays open."""
        if self.save():
            self.closed = True
            self.win.close()

    def save(self) -> bool:
        try:
            self.saved = self.p.save(self.out)
        except AnalysisError as exc:
            self.message = f"not saved: {exc}"
            return False
        self.message = f"wrote {self.out}"
        log.info("wrote %s", self.out)
        return True


def pick_geometry(
    source: str | Path,
    out: str | Path,
    frame: int = 0,
    chambers: Sequence[str] = CHAMBERS,
    cups: Sequence[str] = CUPS,
    margin: float | None = None,
) -> ThreeChamberGeometry | None:
    """Open the window on frame ``frame`` of ``source`` and run it until closed; returns the geometry
    last saved to ``out`` (None if never saved)."""
    image = read_frame(source, frame)
    picker = GeometryPicker.open(out, chambers, cups, margin)
    picker.comment = (
        f"three-chamber geometry picked on {Path(source).name} frame {frame} (image pixels)\n"
        f"cups in order: A and B of the sociability index (A - B) / (A + B)"
    )
    w = GeometryPickWindow(picker, image, out)
    w.win.show()
    w.app.exec()
    return w.saved
