"""Labeling tool: click two corners for a box, undo, next/previous, class selection, keyboard
shortcuts; resumes where it stopped; writes the seed's JSON (x1, x2, y1, y2 per box per image) and YOLO
txt. The state lives in :class:`LabelSession` (pure, testable); :class:`LabelWindow` is a thin pyqtgraph
shell whose key and mouse handlers call it.

Keys: ``n``/Right next, ``p``/Left previous, ``z``/Backspace undo, ``0``-``9`` class, ``s`` save,
``Escape`` cancel a half-drawn box, ``q`` save and quit. Run: ``python -m detection.label_tool FRAMES
LABELS.json --names paw`` (a ``detect label`` CLI can wrap it).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detection.datasets import Box, BoxDataset, load_seed_json, save_seed_json, save_yolo

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class LabelSession:
    """Images of a folder, their boxes, the current image and class, a half-drawn box's first corner."""

    images: list[Path]
    out_json: Path
    names: list[str] = field(default_factory=lambda: ["object"])
    boxes: dict[Path, list[Box]] = field(default_factory=dict)
    visited: set[Path] = field(default_factory=set)
    index: int = 0
    class_id: int = 0
    first_corner: tuple[float, float] | None = None

    @classmethod
    def open(
        cls, frames_dir: str | Path, out_json: str | Path, names: list[str] | None = None
    ) -> LabelSession:
        """Load the folder's images and any labels already saved; resume at the first unlabeled image."""
        frames = sorted(p for p in Path(frames_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        s = cls(frames, Path(out_json), list(names or ["object"]))
        if s.out_json.is_file():
            ds = load_seed_json(s.out_json, s.names)
            for img, bx in ds.items.items():
                key = next((f for f in frames if f.resolve() == img.resolve()), img)
                s.boxes[key] = list(bx)
                s.visited.add(key)
        s.index = next((i for i, f in enumerate(frames) if f not in s.visited), max(len(frames) - 1, 0))
        return s

    @property
    def current(self) -> Path:
        return self.images[self.index]

    def click(self, x: float, y: float) -> Box | None:
        """A corner click: the first stores the corner, the second makes the box (any corner order)."""
        self.visited.add(self.current)
        if self.first_corner is None:
            self.first_corner = (x, y)
            return None
        x0, y0 = self.first_corner
        self.first_corner = None
        if abs(x - x0) < 1 or abs(y - y0) < 1:
            return None  # a double click is not a box
        b = Box(min(x0, x), min(y0, y), max(x0, x), max(y0, y), self.class_id)
        self.boxes.setdefault(self.current, []).append(b)
        return b

    def undo(self) -> None:
        if self.first_corner is not None:
            self.first_corner = None
        elif self.boxes.get(self.current):
            self.boxes[self.current].pop()

    def set_class(self, k: int) -> None:
        if 0 <= k < len(self.names):
            self.class_id = k

    def step(self, d: int) -> None:
        self.visited.add(self.current)
        self.first_corner = None
        self.index = min(max(self.index + d, 0), len(self.images) - 1)

    def dataset(self) -> BoxDataset:
        return BoxDataset(
            {p: list(self.boxes.get(p, [])) for p in self.images if p in self.visited}, self.names
        )

    def save(self, yolo_dir: str | Path | None = None) -> Path:
        """Seed JSON (images seen so far, empty lists for negatives) and optionally YOLO txt."""
        ds = self.dataset()
        save_seed_json(ds, self.out_json)
        if yolo_dir is not None and len(ds):
            save_yolo(ds, yolo_dir, "train", copy_images=False)
        return self.out_json


class LabelWindow:
    """pyqtgraph window over a :class:`LabelSession` (created lazily: Qt is imported here only)."""

    def __init__(self, session: LabelSession, yolo_dir: str | Path | None = None):
        import cv2
        import pyqtgraph as pg
        from pyqtgraph.Qt import QtCore, QtWidgets

        self.s, self.yolo_dir, self._cv2, self._pg, self.QtCore = session, yolo_dir, cv2, pg, QtCore
        self.app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
        self.win = pg.GraphicsLayoutWidget(title="deepbehavior label")
        self.plot = self.win.addPlot()
        self.plot.invertY(True)
        self.plot.setAspectLocked(True)
        self.img_item = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.img_item)
        self.rects: list[Any] = []
        self.win.keyPressEvent = self.on_key
        self.plot.scene().sigMouseClicked.connect(self.on_mouse)
        self.show_current()

    def show_current(self) -> None:
        im = self._cv2.imread(str(self.s.current), self._cv2.IMREAD_GRAYSCALE)
        if im is not None:
            self.img_item.setImage(im, levels=(0, 255))
        for r in self.rects:
            self.plot.removeItem(r)
        self.rects = []
        for b in self.s.boxes.get(self.s.current, []):
            r = self._pg.QtWidgets.QGraphicsRectItem(b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1)
            r.setPen(self._pg.mkPen(self._pg.intColor(b.class_id, 10), width=2))
            self.plot.addItem(r)
            self.rects.append(r)
        pos = f"{self.s.index + 1}/{len(self.s.images)}"
        self.win.setWindowTitle(f"{self.s.current.name} ({pos}) class {self.s.names[self.s.class_id]}")

    def on_mouse_at(self, x: float, y: float) -> None:
        """A click at image pixel (x, y) (what a mouse click maps to)."""
        if self.s.click(x, y) is not None:
            self.show_current()

    def on_mouse(self, ev: Any) -> None:
        p = self.img_item.mapFromScene(ev.scenePos())
        self.on_mouse_at(float(p.x()), float(p.y()))

    def on_key(self, ev: Any) -> None:
        K = self.QtCore.Qt.Key
        k, text = ev.key(), ev.text()
        if k in (K.Key_N, K.Key_Right):
            self.s.step(1)
        elif k in (K.Key_P, K.Key_Left):
            self.s.step(-1)
        elif k in (K.Key_Z, K.Key_Backspace):
            self.s.undo()
        elif k == K.Key_Escape:
            self.s.first_corner = None
        elif text.isdigit():
            self.s.set_class(int(text))
        elif k == K.Key_S:
            self.s.save(self.yolo_dir)
        elif k == K.Key_Q:
            self.s.save(self.yolo_dir)
            self.win.close()
            return
        self.show_current()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="box labeling tool (seed JSON + YOLO txt)")
    ap.add_argument("frames")
    ap.add_argument("labels", help="seed JSON file (created or resumed)")
    ap.add_argument("--names", default="object", help="class names, comma-separated")
    ap.add_argument("--yolo", help="also write YOLO txt under this folder on save")
    a = ap.parse_args(argv)
    s = LabelSession.open(a.frames, a.labels, a.names.split(","))
    w = LabelWindow(s, a.yolo)
    w.win.show()
    w.app.exec()
    s.save(a.yolo)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
