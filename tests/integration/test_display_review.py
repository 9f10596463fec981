"""The review viewer for real (Qt offscreen) on a recorded simulated session: the recorded boxes and 3-D
drawn on the recorded frames, the frame slider and the trial list."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from rig.session import load_session
from tests.display_helpers import box_contains, green_fraction_on_edges, gui_env, qimage_rgb
from tests.sessions import run_session

pytestmark = [pytest.mark.slow, pytest.mark.firmware, pytest.mark.gui]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("review")
    r, s = run_session(out, "--trials", "2")
    assert r.returncode == 0, r.stderr
    assert s is not None
    return s


def test_review_draws_recorded_overlays(recorded):
    from rig.display.review import ReviewWindow
    from rig.display.window import qt_app

    app = qt_app()
    s = load_session(recorded.path)
    win = ReviewWindow(s)
    win.show()
    app.processEvents()
    n_front = int(np.sum(s.frames["front"]["video_index"] >= 0))
    assert win.n == n_front and win.slider.maximum() == n_front - 1
    assert win.trial_list.count() == len(s.trials) == 2
    # choose trial 2: the slider jumps to its first frame
    win.select_trial(2)
    app.processEvents()
    t_start = int(s.trials[1]["t_start_ns"])
    k = win.slider.value()
    assert s.frames["front"]["t_host_ns"][k] >= t_start > s.frames["front"]["t_host_ns"][k - 1]
    # ~1 s into the trial the paw is moving; what is drawn is what was recorded. The first frame from there
    # whose stereo set was detected online on both cameras (a loaded machine skips some: they are recorded
    # but not detected online)
    det = s.detections
    boxed = {(str(c), int(q)) for c, q, n in zip(det["camera"], det["seq"], det["n_boxes"]) if n > 0}
    front, side = win.rows["front"], win.rows["side"]
    k = next(
        j
        for j in range(k + 120, k + 400)
        if ("front", int(front["seq"][j])) in boxed
        and int(front["trigger_index"][j]) in win.by_trigger["side"]
        and ("side", int(side["seq"][win.by_trigger["side"][int(front["trigger_index"][j])]])) in boxed
    )
    win.slider.setValue(k)
    app.processEvents()
    k = win.current
    trigger = int(win.rows["front"]["trigger_index"][k])
    assert f"trigger</b> {trigger}" in win.info.text()
    rgb = qimage_rgb(win.grab().toImage())
    det = s.detections
    for cam in s.cameras:
        j = win.by_trigger[cam][trigger]
        seq = int(win.rows[cam]["seq"][j])
        rows = np.flatnonzero((det["camera"] == cam) & (det["seq"] == seq) & (det["n_boxes"] > 0))
        drawn = win.boxes_on_screen(cam)
        assert len(drawn) == len(rows) >= 1
        for b, r in zip(drawn, rows):
            assert abs(b.x1 - float(det["x1"][r])) < 1e-6 and abs(b.y2 - float(det["y2"][r])) < 1e-6
            frac = green_fraction_on_edges(rgb, win.box_rect_in_window(cam, b))
            assert frac > 0.8, f"{cam}: recorded box not drawn where it is ({frac:.0%})"
            uv = win._reproject(cam, trigger)
            assert uv is not None and box_contains(b, uv, margin=6)
    # the frame on screen is the recorded one
    want = next(img for row, img in s.read_frames("side") if row == win.by_trigger["side"][trigger])
    assert np.array_equal(win.panels["side"].image.image, want)
    # backwards (re-seek) gives the same frames
    win.slider.setValue(3)
    app.processEvents()
    first = next(img for i, (_row, img) in enumerate(s.read_frames("front")) if i == 3)
    assert np.array_equal(win.panels["front"].image.image, first)
    win.close()


def test_review_cli_screenshot(recorded, tmp_path):
    png = tmp_path / "review.png"
    env = gui_env()
    r = subprocess.run(
        [sys.executable, "-m", "rig.cli", "review", str(recorded.path), "--trial", "1", "--seconds", "0.5"]
        + ["--screenshot", str(png)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert png.stat().st_size > 10_000, r.stderr


def test_review_cli_bad_session(tmp_path):
    env = gui_env()
    r = subprocess.run(
        [sys.executable, "-m", "rig.cli", "review", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 2, r.stderr
    assert "not a session folder" in r.stderr and "Traceback" not in r.stderr
