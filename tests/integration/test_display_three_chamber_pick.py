"""Three-chamber geometry picked on a frame: the picker's model (pure), the YAML it writes as read back by
the ``three-chamber`` command, and the window, headless (QT_QPA_PLATFORM=offscreen), on a frame of the real
open-field video: driven through its handlers, and end to end through the CLI with real Qt mouse and key
events."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from analysis.errors import AnalysisError
from analysis.tasks.social import load_three_chamber_geometry
from rig.cli import main as cli_main
from rig.display.three_chamber_pick import GeometryPicker, GeometryPickWindow, read_frame

pytestmark = pytest.mark.gui

VIDEO = Path("dlc-openfield-pranav") / "videos" / "m3v1mp4.mp4"
LABELS = Path("dlc-openfield-pranav") / "labeled-data" / "m4s1" / "CollectedData_Pranav.h5"
# the arena of that video, frame 100 (640 x 480), cut in three
ARENA = {"left": (15, 50, 213, 465), "center": (213, 50, 411, 465), "right": (411, 50, 610, 465)}
CUPS = {"left_cup": (110, 258, 35), "right_cup": (510, 258, 35)}


def _placed() -> GeometryPicker:
    p = GeometryPicker()
    for name, (x0, y0, x1, y1) in ARENA.items():
        assert p.drag((x0, y0), (x1, y1)) == name
    for name, (cx, cy, r) in CUPS.items():
        assert p.drag((cx, cy), (cx, cy - r)) == name
    return p


def test_picker_order_two_clicks_drag_undo_and_redo():
    p = GeometryPicker()
    assert p.current == "left" and "[1] chamber 'left': drag out" in p.prompt()
    assert p.drag((213, 465), (15, 50)) == "left"  # corners in any order
    assert p.chambers["left"] == ARENA["left"]
    assert p.click(213, 50) is None and "click the opposite corner" in p.prompt()
    assert p.click(411, 465) == "center"
    assert p.drag((411, 50), (412, 300)) is None  # a 1 px wide slip is not a chamber
    assert p.drag((411, 50), (610, 465)) == "right"
    assert p.current == "left_cup" and "click its centre" in p.prompt()
    p.click(110, 258)
    assert "[4] cup 'left_cup': click a point on its rim" in p.prompt()
    assert p.undo() is None and p.anchor is None and p.placed("right")  # undo cancels the half-placed cup
    p.click(110, 258)
    assert p.click(110, 258 + 35) == "left_cup" and p.cups["left_cup"] == CUPS["left_cup"]
    assert p.drag((510, 258), (510 + 21, 258 + 28)) == "right_cup"  # drag centre -> rim: r = 35
    assert p.cups["right_cup"] == CUPS["right_cup"]
    assert p.current is None and p.missing() == [] and "all placed" in p.prompt()
    assert p.warnings() == []
    # redo the centre chamber: choose it, place it again (now overlapping), undo brings the old one back
    p.select(1)
    assert p.current == "center" and p.click(10, 10) is None
    p.select(1)  # choosing again drops the half-placed first corner
    assert p.anchor is None
    assert p.drag((200, 40), (420, 470)) == "center"
    assert list(p.chambers) == ["left", "center", "right"]  # configured order, not placing order
    assert p.warnings() == [
        "chambers left and center overlap (a head there counts for center)",
        "chambers center and right overlap (a head there counts for right)",
    ]
    assert p.undo() == "center" and p.chambers["center"] == ARENA["center"] and p.current == "center"
    p.cycle(1)
    assert p.current == "right"
    p.cycle(-3)
    assert p.current == "right_cup"  # wraps around
    p.adjust_margin(-100)
    assert p.interaction_margin == 0
    g = p.geometry()
    assert g.chambers == ARENA and g.cups == CUPS and g.interaction_margin == 0
    while p.history:
        p.undo()
    assert p.undo() is None and p.missing() == list(p.items)
    with pytest.raises(AnalysisError, match=r"not placed yet: left, center, right, left_cup, right_cup"):
        p.geometry()
    p.cups["right_cup"] = (700, 700, 10)
    p.chambers["left"] = ARENA["left"]
    assert p.warnings() == ["cup right_cup is outside every chamber"]
    with pytest.raises(AnalysisError, match=r"distinct and non-empty"):
        GeometryPicker(("a", "b"), ("a",))


def test_yaml_written_is_read_back_and_used_by_three_chamber(shared_data, tmp_path, capsys):
    p = _placed()
    p.comment = "picked on m3v1mp4.mp4 frame 100\ncups: A, B"
    out = tmp_path / "sub" / "geometry.yaml"
    g = p.save(out)
    text = out.read_text()
    assert text.startswith("# picked on m3v1mp4.mp4 frame 100\n# cups: A, B\nchambers:\n")
    assert "left: [15.0, 50.0, 213.0, 465.0]" in text
    assert load_three_chamber_geometry(out) == g and g.chambers == ARENA and g.cups == CUPS
    assert list(g.cups) == ["left_cup", "right_cup"]  # order kept: A, B of the sociability index
    # the three-chamber command reads it
    argv = ["three-chamber", str(shared_data / LABELS), "--geometry", str(out), "--fps", "30"]
    assert cli_main([*argv, "--out", str(tmp_path / "res")]) == 0
    summary = json.loads((tmp_path / "res" / "three_chamber.json").read_text())
    assert set(summary["cups"]) == {"left_cup", "right_cup"}
    # an existing file opens for editing, its names and margin kept unless a margin is given
    again = GeometryPicker.open(out, chambers=("a", "b", "c"))
    assert again.chamber_names == ("left", "center", "right") and again.chambers == ARENA
    assert again.current is None and GeometryPicker.open(out, margin=5).interaction_margin == 5
    # bad files name the file and the item
    out.write_text(text.replace("left: [15.0, 50.0, 213.0, 465.0]", "left: [213, 50, 15, 465]"))
    with pytest.raises(AnalysisError, match=r"geometry.yaml: bad three-chamber geometry \(chamber 'left': "):
        load_three_chamber_geometry(out)
    assert cli_main([*argv, "--out", str(tmp_path / "res")]) == 2
    assert "is not [x0, y0, x1, y1] with x0 < x1, y0 < y1" in capsys.readouterr().err
    out.write_text("- 1\n- 2\n")
    with pytest.raises(AnalysisError, match=r"bad three-chamber geometry \(expected a mapping"):
        GeometryPicker.open(out)
    out.write_text("chambers: {a: [0, 0, 1, 1]}\ncups: {c: [1, 1, 0]}\n")
    with pytest.raises(AnalysisError, match=r"cup 'c': \[1.0, 1.0, 0.0\] is not \[cx, cy, r\] with r > 0"):
        load_three_chamber_geometry(out)


def test_read_frame_video_image_and_errors(shared_data, tmp_path):
    cap = cv2.VideoCapture(str(shared_data / VIDEO))
    for _ in range(4):
        _, bgr = cap.read()
    cap.release()
    rgb = read_frame(shared_data / VIDEO, 3)
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])
    png = shared_data / "dlc-openfield-pranav" / "labeled-data" / "m4s1" / "img0000.png"
    np.testing.assert_array_equal(read_frame(png), cv2.imread(str(png))[..., ::-1])
    with pytest.raises(AnalysisError, match=r"img0000.png: an image has only frame 0 \(asked for 2\)"):
        read_frame(png, 2)
    short = tmp_path / "short.avi"
    wr = cv2.VideoWriter(str(short), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(3):
        wr.write(np.full((48, 64, 3), 40 * i, np.uint8))
    wr.release()
    assert read_frame(short, 2).shape == (48, 64, 3)
    with pytest.raises(AnalysisError, match=r"short.avi: no frame 5 \(the video has 3 frames\)"):
        read_frame(short, 5)
    with pytest.raises(AnalysisError, match=r"nope.mp4: file not found"):
        read_frame(tmp_path / "nope.mp4")
    assert (
        cli_main(["three-chamber-geometry", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "g.yaml")])
        == 2
    )


def _key(target, k, text: str = "") -> None:
    from pyqtgraph.Qt import QtCore, QtGui

    target(QtGui.QKeyEvent(QtCore.QEvent.Type.KeyPress, k, QtCore.Qt.KeyboardModifier.NoModifier, text))


@pytest.mark.gui
def test_window_headless_handlers(shared_data, tmp_path):
    from pyqtgraph.Qt import QtCore

    K = QtCore.Qt.Key
    out = tmp_path / "g.yaml"
    w = GeometryPickWindow(GeometryPicker.open(out), read_frame(shared_data / VIDEO, 100), out)
    assert w.img_item.image.shape == (480, 640, 3)

    def key(k: QtCore.Qt.Key, text: str = "") -> None:
        _key(w.on_key, k, text)

    w.on_drag_at((15, 50), (100, 200), finish=False)  # a drag in progress shows its rectangle
    assert len(w.overlay) == 1
    w.on_drag_at((15, 50), (213, 465))
    assert w.p.chambers["left"] == ARENA["left"] and len(w.overlay) == 2  # rectangle + name
    key(K.Key_S, "s")  # incomplete: says what is missing, writes nothing
    assert "not saved: not placed yet: center, right, left_cup, right_cup" in w.status.text
    assert not out.exists()
    w.on_click_at(213, 50)
    key(K.Key_Escape)  # the half-placed chamber is dropped
    assert w.p.anchor is None
    w.on_click_at(213, 50)
    w.on_click_at(411, 465)
    w.on_drag_at((411, 50), (610, 465))
    w.on_click_at(110, 258)
    assert "cup 'left_cup': click a point on its rim" in w.status.text and len(w.overlay) == 7  # + anchor
    w.on_click_at(145, 258)
    key(K.Key_Z, "z")  # undo the left cup
    assert "left_cup" not in w.p.cups and w.p.current == "left_cup"
    w.on_drag_at((110, 258), (110, 293))
    assert w.p.current == "right_cup"
    key(K.Key_Tab)
    assert w.p.current == "left"
    key(K.Key_P, "p")
    assert w.p.current == "right_cup"
    w.on_drag_at((510, 258), (545, 258))
    key(K.Key_Plus, "+")
    key(K.Key_Plus, "+")
    key(K.Key_Minus, "-")
    assert w.p.interaction_margin == 25 and "interaction margin 25 px" in w.status.text
    assert len(w.overlay) == 3 * 2 + 2 * 3  # chambers: rect + name; cups: cup, zone, name
    key(K.Key_2, "2")  # redo the centre chamber, overlapping its neighbours: a warning shows
    w.on_drag_at((200, 50), (411, 465))
    assert "chambers left and center overlap" in w.status.text
    key(K.Key_Backspace)
    assert w.p.chambers["center"] == ARENA["center"] and "overlap" not in w.status.text
    assert "(all placed)" not in w.win.windowTitle()  # the undone item is current again
    key(K.Key_S, "s")
    assert f"wrote {out}" in w.status.text and w.saved is not None
    g = load_three_chamber_geometry(out)
    assert g == w.saved and g.chambers == ARENA and g.cups == CUPS and g.interaction_margin == 25
    w.win.show()
    key(K.Key_Q, "q")
    assert not w.win.isVisible()


def _send_mouse(view, kind, pos, buttons, button) -> None:
    from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

    vp = view.viewport()
    ev = QtGui.QMouseEvent(
        kind, QtCore.QPointF(pos), QtCore.QPointF(vp.mapToGlobal(pos)), button, buttons,
        QtCore.Qt.KeyboardModifier.NoModifier,
    )  # fmt: skip
    QtWidgets.QApplication.sendEvent(vp, ev)
    QtWidgets.QApplication.processEvents()


@pytest.mark.gui
def test_cli_window_end_to_end_with_real_mouse_and_keys(shared_data, tmp_path):
    """``three-chamber-geometry`` opens the window; real Qt mouse drags/clicks and keys place the items and
    ``q`` saves and quits; the command then reports the file, which ``three-chamber`` reads."""
    import pyqtgraph as pg
    from pyqtgraph.Qt import QtCore, QtTest, QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    E, B = QtCore.QEvent.Type, QtCore.Qt.MouseButton
    out = tmp_path / "g.yaml"
    placed: dict[str, object] = {}

    def drive() -> None:
        view = next(
            w for w in app.topLevelWidgets() if isinstance(w, pg.GraphicsLayoutWidget) and w.isVisible()
        )
        img = next(i for i in view.getItem(0, 0).items if isinstance(i, pg.ImageItem))

        def at(x: float, y: float) -> QtCore.QPoint:
            return view.mapFromScene(img.mapToScene(QtCore.QPointF(x, y)))

        # let the view lay itself out before mapping image pixels to the screen: wait (up to 10 s on a
        # loaded machine) until the image's corners map to the same screen points twice in a row
        h, w = img.image.shape[:2]
        corners = None
        for _ in range(200):
            QtTest.QTest.qWait(50)
            now = (at(0, 0), at(w, h))
            if now == corners and view.viewport().rect().contains(now[1] - QtCore.QPoint(1, 1)):
                break
            corners = now

        def drag(a: tuple[float, float], b: tuple[float, float]) -> None:
            pa, pb = at(*a), at(*b)
            _send_mouse(view, E.MouseMove, pa, B.NoButton, B.NoButton)  # a hand moves there first
            _send_mouse(view, E.MouseButtonPress, pa, B.LeftButton, B.LeftButton)
            for t in (0.2, 0.6, 1.0):
                p = QtCore.QPoint(
                    round(pa.x() + t * (pb.x() - pa.x())), round(pa.y() + t * (pb.y() - pa.y()))
                )
                QtTest.QTest.qWait(5)  # and takes its time: events a few ms apart, not all at once
                _send_mouse(view, E.MouseMove, p, B.LeftButton, B.NoButton)
            _send_mouse(view, E.MouseButtonRelease, pb, B.NoButton, B.LeftButton)

        def click(x: float, y: float) -> None:
            _send_mouse(view, E.MouseButtonPress, at(x, y), B.LeftButton, B.LeftButton)
            _send_mouse(view, E.MouseButtonRelease, at(x, y), B.NoButton, B.LeftButton)

        for x0, y0, x1, y1 in ARENA.values():
            drag((x0, y0), (x1, y1))
            placed.setdefault("after_each_drag", []).append((view.windowTitle(), at(x0, y0), at(x1, y1)))
        click(510, 258)  # a first click for cup 1, dropped when key 5 chooses cup 2
        QtTest.QTest.keyClick(view, QtCore.Qt.Key.Key_5)
        click(510, 258)
        click(510, 293)
        cx, cy, r = CUPS["left_cup"]
        drag((cx, cy), (cx + r, cy))
        placed["title"] = view.windowTitle()
        QtTest.QTest.keyClick(view, QtCore.Qt.Key.Key_Q)

    def guarded() -> None:  # an error in a Qt callback would only be printed: keep it and stop
        try:
            drive()
        except Exception as exc:
            placed["error"] = exc
            app.quit()

    QtCore.QTimer.singleShot(0, guarded)
    QtCore.QTimer.singleShot(60_000, app.quit)  # never hang the suite if the window does not close
    argv = ["three-chamber-geometry", str(shared_data / VIDEO), "--frame", "100", "--out", str(out)]
    rc = cli_main([*argv, "--cups", "stranger,empty", "--margin", "30"])
    assert "error" not in placed, placed["error"]
    assert rc == 0, f"not saved; the window's title before 'q' (names the item not placed yet): {placed}"
    assert "(all placed)" in str(placed["title"])
    g = load_three_chamber_geometry(out)
    assert list(g.chambers) == ["left", "center", "right"] and list(g.cups) == ["stranger", "empty"]
    assert g.interaction_margin == 30
    for name, rect in ARENA.items():  # one screen pixel is about 0.75 image pixels here
        np.testing.assert_allclose(g.chambers[name], rect, atol=1.5)
    np.testing.assert_allclose(g.cups["stranger"], CUPS["left_cup"], atol=1.5)
    np.testing.assert_allclose(g.cups["empty"], CUPS["right_cup"], atol=1.5)
    assert out.read_text().startswith("# three-chamber geometry picked on m3v1mp4.mp4 frame 100")
    res = tmp_path / "res"
    cmd = [
        "three-chamber",
        str(shared_data / LABELS),
        "--geometry",
        str(out),
        "--fps",
        "30",
        "--out",
        str(res),
    ]
    assert cli_main(cmd) == 0
