"""Labeling tool, boxes or points; resumes where it stopped.

* **Boxes**: click two corners for a box, undo, next/previous, class selection; writes the seed's JSON
  (x1, x2, y1, y2 per box per image) and YOLO txt. State: :class:`LabelSession`; window: :class:`LabelWindow`.
* **Points** (``--points snout,leftear,...``): one click per body part (the next unlabeled part is selected
  after each click); reads and writes DeepLabCut's ``CollectedData_<scorer>.csv`` (+ its ``.h5`` twin when
  PyTables is installed) the way DeepLabCut does (:mod:`detection.dlc`): rows of images not being labeled
  stay as they were. State: :class:`PointSession`; window: :class:`PointWindow`.

The state classes are pure (no Qt) and testable; the windows are thin pyqtgraph shells whose key and mouse
handlers call them.

FRAMES is a folder of images, or a ``queue.csv`` written by ``detect mine`` (its images in queue order).

Keys (boxes): ``n``/Right next, ``p``/Left previous, ``z``/Backspace undo, ``0``-``9`` class, ``s`` save,
``Escape`` cancel a half-drawn box, ``q`` save and quit. Keys (points): the same, with ``0``-``9``/Tab the
body part, ``x``/Delete clear the selected part (not visible). Run: ``deepbehavior detect label FRAMES
LABELS.json --names paw`` or ``deepbehavior detect label FRAMES CollectedData_me.csv --points snout,tail``.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detection.datasets import Box, BoxDataset, DatasetError, load_seed_json, save_seed_json, save_yolo
from detection.dlc import DlcTable, RowKey, read_dlc, scorer_from_name, write_dlc

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def list_frames(frames: str | Path) -> list[Path]:
    """The images of a folder (sorted), or of a ``detect mine`` queue CSV (its ``image`` column, relative
    to the CSV's folder, in queue order, each once)."""
    src = Path(frames)
    if src.is_file() and src.suffix.lower() == ".csv":
        import csv

        with src.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and "image" not in rows[0]:
            raise DatasetError(f"{src}: not a mining queue (no 'image' column)")
        out = list(dict.fromkeys(src.parent / r["image"] for r in rows if r.get("image")))
        if not out:
            raise DatasetError(f"{src}: the queue is empty (mining found nothing to label)")
        gone = [p.name for p in out if not p.is_file()]
        if gone:
            raise DatasetError(f"{src}: {len(gone)} queued images are missing, e.g. {gone[0]}")
    elif src.is_dir():
        out = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise DatasetError(f"{src}: not a folder of frames or a queue CSV")
    if not out:
        raise DatasetError(f"{src}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return out


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
        frames = list_frames(frames_dir)
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


@dataclass
class PointSession:
    """Points mode: images, a DeepLabCut table (rows of other images kept as read), the current image and
    body part, and an undo history of (image, part, previous x, y)."""

    images: list[Path]
    out: Path
    table: DlcTable
    root: Path
    index: int = 0
    part: int = 0
    history: list[tuple[Path, int, np.ndarray]] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        frames: str | Path,
        out: str | Path,
        parts: list[str] | None = None,
        scorer: str | None = None,
        root: str | Path | None = None,
    ) -> PointSession:
        """Load the images and the table at ``out`` if it exists (``.csv``, or ``.h5`` when only that is
        there); resume at the first image without a row. ``root``: the folder image paths are relative to
        in the table (default: DeepLabCut's project root, two folders above the table's folder)."""
        images = list_frames(frames)
        out = Path(out)
        if out.suffix.lower() not in (".csv", ".h5"):
            raise DatasetError(f"{out}: a DeepLabCut table is a .csv (or .h5) file")
        csv_path, h5_path = out.with_suffix(".csv"), out.with_suffix(".h5")
        src = out if out.is_file() else (csv_path if csv_path.is_file() else h5_path)
        if src.is_file():
            table = read_dlc(src)
            table.require_single_animal(src)
            if parts and parts != table.bodyparts:
                raise DatasetError(
                    f"{src}: its body parts are {','.join(table.bodyparts)}; --points gave {','.join(parts)}"
                )
            if scorer and scorer != table.scorer:
                raise DatasetError(f"{src}: its scorer is {table.scorer!r}; --scorer gave {scorer!r}")
        elif parts:
            if len(set(parts)) != len(parts):
                raise DatasetError(f"--points {','.join(parts)}: a body part named twice")
            table = DlcTable.empty(scorer or scorer_from_name(out), list(parts))
        else:
            raise DatasetError(f"{out}: no such table yet; name the body parts (--points snout,leftear,...)")
        s = cls(images, out.with_suffix(".csv"), table, Path(root) if root else out.parent.parent.parent)
        s.index = next((i for i, f in enumerate(images) if s.key(f) not in table.rows), len(images) - 1)
        s.part = s._next_unlabeled(0)
        return s

    @property
    def current(self) -> Path:
        return self.images[self.index]

    @property
    def names(self) -> list[str]:
        return self.table.bodyparts

    def key(self, img: Path) -> RowKey:
        """The table's index of an image: its path relative to the project root, as DeepLabCut writes it."""
        return self.table.key(os.path.relpath(img.resolve(), self.root.resolve()))

    def points(self, img: Path | None = None) -> np.ndarray:
        """(K, 2) points of an image (NaN: not labeled)."""
        return self.table.points(self.key(self.current if img is None else img))

    def _set(self, k: int, xy: tuple[float, float]) -> None:
        pts = self.points()
        self.history.append((self.current, k, pts[k].copy()))
        pts[k] = xy
        self.table.set_points(self.key(self.current), pts)

    def _next_unlabeled(self, start: int) -> int:
        pts = self.points()
        n = len(self.names)
        return next(((start + i) % n for i in range(n) if np.isnan(pts[(start + i) % n, 0])), start % n)

    def click(self, x: float, y: float) -> None:
        """Place the selected body part at image pixel (x, y); select the next part not yet labeled."""
        self._set(self.part, (x, y))
        self.part = self._next_unlabeled(self.part + 1)

    def clear(self) -> None:
        """The selected part is not visible in this image: no point (an empty cell)."""
        self._set(self.part, (np.nan, np.nan))

    def undo(self) -> None:
        """Undo the last click or clear (on whichever image it was), showing that image and part."""
        if not self.history:
            return
        img, k, old = self.history.pop()
        pts = self.table.points(self.key(img))
        pts[k] = old
        self.table.set_points(self.key(img), pts)
        self.index, self.part = self.images.index(img), k

    def set_part(self, k: int) -> None:
        if 0 <= k < len(self.names):
            self.part = k

    def step(self, d: int) -> None:
        """Next/previous image; an image passed is a row (all empty: nothing visible) once seen."""
        key = self.key(self.current)
        if key not in self.table.rows:
            self.table.set_points(key, self.points())
        self.index = min(max(self.index + d, 0), len(self.images) - 1)
        self.part = self._next_unlabeled(0)

    def save(self) -> list[Path]:
        """The table as CSV (+ its .h5 twin when PyTables is installed); other images' rows unchanged."""
        return write_dlc(self.table, self.out)


class _Window:
    """What both labeling windows share: a pyqtgraph image view (Qt imported here only), clicks mapped to
    image pixels, and the keys every mode has (N/right, P/left: next/previous image; Z/backspace: undo;
    S: save; Q: save and close). A mode adds its own keys in :meth:`mode_key` and draws in
    :meth:`draw`."""

    title = "deepbehavior label"

    def __init__(self, session: LabelSession | PointSession) -> None:
        import cv2
        import pyqtgraph as pg
        from pyqtgraph.Qt import QtCore, QtWidgets

        self.session, self._cv2, self._pg, self.QtCore = session, cv2, pg, QtCore
        self.app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
        self.win = pg.GraphicsLayoutWidget(title=self.title)
        self.plot = self.win.addPlot()
        self.plot.invertY(True)
        self.plot.setAspectLocked(True)
        self.img_item = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.img_item)
        self.setup()
        self.win.keyPressEvent = self.on_key
        self.plot.scene().sigMouseClicked.connect(self.on_mouse)
        self.show_current()

    def setup(self) -> None:
        """A mode's own plot items."""

    def draw(self) -> None:
        """A mode's labels on the current image, and the window title."""

    def mode_key(self, k: Any, text: str) -> None:
        """A mode's own keys."""

    def save(self) -> None:
        raise NotImplementedError

    def show_current(self) -> None:
        im = self._cv2.imread(str(self.session.current), self._cv2.IMREAD_GRAYSCALE)
        if im is not None:
            self.img_item.setImage(im, levels=(0, 255))
        self.draw()

    def on_mouse_at(self, x: float, y: float) -> None:
        """A click at image pixel (x, y) (what a mouse click maps to)."""
        self.session.click(x, y)
        self.show_current()

    def on_mouse(self, ev: Any) -> None:
        p = self.img_item.mapFromScene(ev.scenePos())
        self.on_mouse_at(float(p.x()), float(p.y()))

    def on_key(self, ev: Any) -> None:
        K = self.QtCore.Qt.Key
        k, text = ev.key(), ev.text()
        if k in (K.Key_N, K.Key_Right):
            self.session.step(1)
        elif k in (K.Key_P, K.Key_Left):
            self.session.step(-1)
        elif k in (K.Key_Z, K.Key_Backspace):
            self.session.undo()
        elif k == K.Key_S:
            self.save()
        elif k == K.Key_Q:
            self.save()
            self.win.close()
            return
        else:
            self.mode_key(k, text)
        self.show_current()


class LabelWindow(_Window):
    """Boxes over a :class:`LabelSession`: two clicks per box; digits pick the class, Esc drops a first
    corner."""

    def __init__(self, session: LabelSession, yolo_dir: str | Path | None = None):
        self.s, self.yolo_dir = session, yolo_dir
        self.rects: list[Any] = []
        super().__init__(session)

    def draw(self) -> None:
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

    def mode_key(self, k: Any, text: str) -> None:
        if k == self.QtCore.Qt.Key.Key_Escape:
            self.s.first_corner = None
        elif text.isdigit():
            self.s.set_class(int(text))

    def save(self) -> None:
        self.s.save(self.yolo_dir)


class PointWindow(_Window):
    """Points over a :class:`PointSession`: the image, its labeled points (one colour per body part, the
    selected part's name in the title); Tab or a digit picks the part, X/Delete clears it."""

    title = "deepbehavior label (points)"

    def __init__(self, session: PointSession):
        self.s = session
        super().__init__(session)

    def setup(self) -> None:
        self.scatter = self._pg.ScatterPlotItem(size=9)
        self.plot.addItem(self.scatter)

    def draw(self) -> None:
        pts = self.s.points()
        n = len(self.s.names)
        spots = [
            {"pos": (float(x), float(y)), "brush": self._pg.intColor(k, max(n, 2)), "data": k}
            for k, (x, y) in enumerate(pts)
            if np.isfinite(x)
        ]
        self.scatter.setData(spots)
        done = int(np.isfinite(pts[:, 0]).sum())
        pos = f"{self.s.index + 1}/{len(self.s.images)}"
        self.win.setWindowTitle(
            f"{self.s.current.name} ({pos}) part {self.s.names[self.s.part]} ({done}/{n} labeled)"
        )

    def mode_key(self, k: Any, text: str) -> None:
        K = self.QtCore.Qt.Key
        if k in (K.Key_X, K.Key_Delete):
            self.s.clear()
        elif k == K.Key_Tab:
            self.s.set_part((self.s.part + 1) % len(self.s.names))
        elif text.isdigit():
            self.s.set_part(int(text))

    def save(self) -> None:
        self.s.save()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="labeling tool: boxes (seed JSON + YOLO txt) or points (DLC)")
    ap.add_argument("frames", help="folder of images, or a queue.csv from 'detect mine'")
    ap.add_argument("labels", help="seed JSON file, or with --points a DLC CollectedData_<scorer>.csv")
    ap.add_argument("--names", default="object", help="class names, comma-separated")
    ap.add_argument("--yolo", help="also write YOLO txt under this folder on save")
    ap.add_argument("--points", help="points mode: body parts, comma-separated")
    ap.add_argument("--scorer", help="points mode: the table's scorer (default: from CollectedData_<scorer>)")
    ap.add_argument("--root", help="points mode: folder image paths are relative to (default: DLC project)")
    a = ap.parse_args(argv)
    if a.points is not None or Path(a.labels).suffix.lower() in (".csv", ".h5"):
        parts = [p.strip() for p in (a.points or "").split(",") if p.strip()] or None
        ps = PointSession.open(a.frames, a.labels, parts, a.scorer, a.root)
        pw = PointWindow(ps)
        pw.win.show()
        pw.app.exec()
        for f in ps.save():
            print(f"labels: {f} ({len(ps.table.rows)} images)")
        return 0
    s = LabelSession.open(a.frames, a.labels, a.names.split(","))
    w = LabelWindow(s, a.yolo)
    w.win.show()
    w.app.exec()
    s.save(a.yolo)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
