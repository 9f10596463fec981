"""The labeling tool, headless (QT_QPA_PLATFORM=offscreen): mouse and key handlers, undo, class
selection, save as seed JSON + YOLO txt, resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from detection.datasets import load_seed_json, load_yolo
from detection.label_tool import LabelSession, LabelWindow

pytestmark = pytest.mark.gui


@pytest.mark.gui
def test_label_tool_headless(shared_data: Path, tmp_path: Path) -> None:
    from pyqtgraph.Qt import QtCore, QtGui

    src = shared_data / "dlc-openfield-pranav" / "labeled-data" / "m4s1"
    frames = tmp_path / "frames"
    frames.mkdir()
    for p in sorted(src.glob("img000[0-3].png")):
        shutil.copy(p, frames / p.name)
    out = tmp_path / "labels.json"
    w = LabelWindow(LabelSession.open(frames, out, ["head", "tail"]), yolo_dir=tmp_path / "yolo")

    def key(k: QtCore.Qt.Key, text: str = "") -> None:
        w.on_key(QtGui.QKeyEvent(QtCore.QEvent.Type.KeyPress, k, QtCore.Qt.KeyboardModifier.NoModifier, text))

    w.on_mouse_at(30, 270)
    w.on_mouse_at(5, 245)  # corners in any order
    w.on_mouse_at(10, 10)
    w.on_mouse_at(50, 60)
    key(QtCore.Qt.Key.Key_Z, "z")  # undo the second box
    key(QtCore.Qt.Key.Key_1, "1")  # class 'tail'
    w.on_mouse_at(80, 140)
    w.on_mouse_at(100, 160)
    assert len(w.rects) == 2 and "tail" in w.win.windowTitle()
    key(QtCore.Qt.Key.Key_N, "n")
    key(QtCore.Qt.Key.Key_0, "0")
    w.on_mouse_at(100, 100)
    key(QtCore.Qt.Key.Key_Escape)  # half-drawn box cancelled
    w.on_mouse_at(1, 1)
    w.on_mouse_at(20, 30)
    key(QtCore.Qt.Key.Key_Right)
    key(QtCore.Qt.Key.Key_Right)  # third image passed with no box: a negative
    key(QtCore.Qt.Key.Key_Left)
    key(QtCore.Qt.Key.Key_Right)
    key(QtCore.Qt.Key.Key_S, "s")
    ds = load_seed_json(out, ["head", "tail"])
    by_name = {p.name: b for p, b in ds.items.items()}
    assert [(b.x1, b.y1, b.x2, b.y2, b.class_id) for b in by_name["img0000.png"]] == [
        (5, 245, 30, 270, 0),
        (80, 140, 100, 160, 1),
    ]
    assert len(by_name["img0001.png"]) == 1 and by_name["img0002.png"] == []
    y = load_yolo(tmp_path / "yolo" / "images" / "train", names=["head", "tail"])
    assert sum(len(b) for b in y.items.values()) == 3
    # resume: a new session starts at the first image not yet seen and keeps the boxes
    s2 = LabelSession.open(frames, out, ["head", "tail"])
    assert s2.current.name == "img0003.png" and len(s2.boxes[frames / "img0000.png"]) == 2
    key(QtCore.Qt.Key.Key_Q, "q")


@pytest.mark.gui
def test_point_tool_headless(shared_data: Path, tmp_path: Path) -> None:
    """Points mode: a click per body part, Tab/digits pick the part, x clears it, z undoes, s saves a
    DeepLabCut table (csv + h5) that DeepLabCut's loader here reads back."""
    from pyqtgraph.Qt import QtCore, QtGui

    from detection.dlc import h5_available, read_dlc
    from detection.keypoints import load_dlc_points
    from detection.label_tool import PointSession, PointWindow

    src = shared_data / "dlc-openfield-pranav" / "labeled-data" / "m4s1"
    frames = tmp_path / "labeled-data" / "m4s1"
    frames.mkdir(parents=True)
    for p in sorted(src.glob("img000[0-2].png")):
        shutil.copy(p, frames / p.name)
    out = frames / "CollectedData_me.csv"
    w = PointWindow(PointSession.open(frames, out, ["snout", "leftear", "tailbase"]))

    def key(k: QtCore.Qt.Key, text: str = "") -> None:
        w.on_key(QtGui.QKeyEvent(QtCore.QEvent.Type.KeyPress, k, QtCore.Qt.KeyboardModifier.NoModifier, text))

    assert "part snout (0/3 labeled)" in w.win.windowTitle()
    w.on_mouse_at(20, 265)  # snout
    assert "part leftear (1/3 labeled)" in w.win.windowTitle()
    key(QtCore.Qt.Key.Key_Tab)  # skip to tailbase
    w.on_mouse_at(87, 152)
    w.on_mouse_at(33, 266)  # the one left: leftear
    assert len(w.scatter.data) == 3
    key(QtCore.Qt.Key.Key_Z, "z")  # undo leftear
    key(QtCore.Qt.Key.Key_2, "2")
    key(QtCore.Qt.Key.Key_X, "x")  # tailbase: not visible after all
    assert len(w.scatter.data) == 1
    key(QtCore.Qt.Key.Key_N, "n")
    w.on_mouse_at(10, 288)
    key(QtCore.Qt.Key.Key_S, "s")
    t = read_dlc(out)
    assert [k[0] for k in t.rows] == ["labeled-data/m4s1/img0000.png", "labeled-data/m4s1/img0001.png"]
    assert (tmp_path / "labeled-data" / "m4s1" / "CollectedData_me.h5").is_file() == h5_available()
    ds = load_dlc_points(out)
    assert ds.names == ["snout", "leftear", "tailbase"]
    assert ds.items[frames / "img0000.png"].tolist()[0] == [20, 265]
    assert np.isnan(ds.items[frames / "img0000.png"][1:]).all()
    assert ds.items[frames / "img0001.png"].tolist()[0] == [10, 288]
    key(QtCore.Qt.Key.Key_Q, "q")
