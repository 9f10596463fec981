"""The live display for real (Qt offscreen): a simulated session, its window through the bridge, screenshots
read back, the controls driven; and a frozen display that costs the pipeline nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from rig.bridge import BridgeClient, read_bridge_file
from rig.display.model import LiveState, zones_from_bridge_info
from rig.display.sources import BridgeSource
from rig.session import load_session
from tests.display_helpers import (
    box_contains,
    green_fraction_on_edges,
    gui_env,
    last_stats,
    qimage_rgb,
    wait_bridge,
)
from tests.sessions import start_session, wait_for_log

pytestmark = [pytest.mark.slow, pytest.mark.firmware, pytest.mark.gui]
PIPELINE = ("cam-front", "cam-side", "detector", "recorder")


def _pump(win, app, until, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.processEvents()
        if until():
            return True
        time.sleep(0.01)
    return False


def test_live_window_draws_the_session_and_its_controls_work(tmp_path):
    from rig.display.window import LiveWindow, qt_app

    app = qt_app()
    proc = start_session(tmp_path, "--trials", "20", "--set", "pipeline.bridge.enabled=true")
    win = None
    try:
        folder = wait_bridge(tmp_path)
        client = BridgeClient(read_bridge_file(folder))
        info = client.connect(timeout_s=30)
        state = LiveState(list(info.cameras), info.calibration)
        for c, size in info.cameras.items():
            state.views[c].full_size = size
        state.zones, state.pellet_configured = zones_from_bridge_info(info.raw)
        assert [z.label for z in state.zones] == ["closed-loop zone", "rest"]  # the default config's
        win = LiveWindow(state, BridgeSource(client), rate_hz=40)
        win.show()

        def paw_in_view() -> bool:  # frames, boxes and a valid 3-D point on both views
            return all(
                state.views[c].image is not None and state.boxes(c) and state.reprojection(c) is not None
                for c in state.cameras
            ) and all(
                n in state.health
                and state.health[n].stats is not None
                and state.health[n].stats.processed > 0
                for n in PIPELINE
            )

        source = win.source

        def settled() -> bool:
            """Freeze what the window takes in, redraw everything, and check the paw is on screen."""
            win.source = None
            win._text_t = 0.0  # the 5 Hz texts and tables redraw now
            win.refresh()
            if paw_in_view():
                return True
            win.source = source
            return False

        assert _pump(win, app, settled, 60), "no frames with detections and 3-D reached the window"
        rgb = qimage_rgb(win.grab().toImage())
        for cam, panel in win.panels.items():
            assert panel.drawn_boxes, f"{cam}: no box drawn"
            for box in panel.drawn_boxes:
                frac = green_fraction_on_edges(rgb, win.box_rect_in_window(cam, box))
                assert frac > 0.8, f"{cam}: box outline not on screen where the detection is ({frac:.0%})"
                # the reprojected 3-D point falls in the detected box
                assert box_contains(box, state.reprojection(cam), margin=6)
            # and no box-green far from the boxes: the middle of the image's left quarter
            r = win.box_rect_in_window(cam, type(box)(10, 10, 100, 100, 1.0))
            patch = rgb[int(r.top()) : int(r.bottom()), int(r.left()) : int(r.right())].astype(int)
            assert not np.any((patch[..., 1] > 180) & (patch[..., 0] < 100) & (patch[..., 2] < 100))
        # counters on screen are the stats the window received
        shown = {row[0].split(" ")[0]: row for row in win.health_rows()}
        for node in ("cam-front", "cam-side", "detector", "recorder"):
            st = state.health[node].stats
            assert st is not None and shown[node][2] == str(st.processed) and shown[node][3] == str(st.drops)
        # the closed-loop zone is outlined on the side view, in its colour
        zone = state.zones[0]
        r = win.traces.zone_rect_in_window(win, zone).adjusted(-3, -3, 3, 3)
        patch = rgb[int(r.top()) : int(r.bottom()), int(r.left()) : int(r.right())].astype(int)
        near = np.abs(patch - np.array(zone.color)).max(axis=2) < 40
        assert near.sum() > 40, f"closed-loop zone outline not drawn ({near.sum()} px)"
        win.screenshot(str(tmp_path / "live.png"))
        win.source = source
        # controls: a mark with a note, pause and resume, then stop (two clicks) -> the session stops
        win.mark_note.setText("paw slipped")
        win.mark_button.click()
        assert state.marks == 1 and win.mark_note.text() == ""
        win.pause_button.click()
        assert win.pause_button.text() == "Resume task"
        _pump(win, app, lambda: state.paused, 10)
        # the task acts on it: it pauses now (between trials) or after the trial in progress
        assert _pump(win, app, lambda: "paus" in state.state, 20), state.state
        win.pause_button.click()
        win.stop_button.click()
        assert proc.poll() is None  # the first click only arms the button
        win.stop_button.click()
        assert win.sent == [("mark", "paw slipped"), ("pause", ""), ("resume", ""), ("stop", "")]
        assert _pump(win, app, lambda: proc.poll() is not None, 90), "the session did not stop"
        _pump(win, app, lambda: state.ended, 10)
        win.tick()
    finally:
        if proc.poll() is None:
            proc.kill()
        if win is not None:
            win.close()
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    s = load_session(folder)
    assert s.meta["status"] == "stopped" and "display" in s.meta["reason"]
    assert [e["detail"] for e in s.events if e.get("command") == "mark"] == ["paw slipped"]
    task_kinds = [e.get("kind") for e in s.events if e.get("topic") == "task.event"]
    assert "pause_pending" in task_kinds or "paused" in task_kinds, task_kinds
    assert "resumed" in task_kinds or "pause_cancelled" in task_kinds, task_kinds
    kinds = [e.get("kind") for e in s.events]
    assert {"user_pause", "user_resume", "user_stop"} <= set(kinds)
    # the counters the window ended with are the session's final stats
    final = last_stats(folder)
    shown = {row[0].split(" ")[0]: row for row in win.health_rows()}
    for node in ("cam-front", "cam-side", "detector", "recorder"):
        assert shown[node][2] == str(final[node]["processed"]), node
        assert shown[node][3] == str(final[node]["drops"]), node
    assert state.trials_done == len(s.trials)
    assert state.outcomes == {
        o: sum(t["outcome"] == o for t in s.trials) for o in {t["outcome"] for t in s.trials}
    }


def _display_pid(out) -> int:
    hit = wait_for_log(out, r"\[display\] rig\.node\.display: node display starting \(pid (\d+)\)", 90)
    return int(hit.group(1))


def test_frozen_display_costs_the_pipeline_nothing(tmp_path):
    """SIGSTOP the display node for 4 s mid-session: every frame is still recorded, no node drops one; the
    display skipped frames, for itself alone."""
    env = gui_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rig.cli", "run", "--quiet", "--output", str(tmp_path), "--trials", "3"]
        + ["--set", "pipeline.display.enabled=true"]
        # 60 Hz keeps the pipeline clear of the CPU's limit on a shared 2-core machine, so that any drop
        # would be the display's doing; the principle (the display is one more subscriber) is rate-free
        + ["--set", "rig.trigger.rate_hz=60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        pid = _display_pid(tmp_path)
        wait_for_log(tmp_path, r"world: .*first trigger pulse", 90)
        time.sleep(1.0)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(4.0)
        os.kill(pid, signal.SIGCONT)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    s = load_session(folder)
    assert s.meta["status"] == "complete"
    for cam, table in s.frames.items():
        assert len(table["seq"]) > 450
        assert int(np.sum(table["dropped"])) == 0, f"{cam}: frames dropped while the display was frozen"
    final = last_stats(folder)
    for node, st in final.items():
        if node != "display":
            assert st["drops"] == 0, f"{node} dropped {st['drops']} frames"
    first_display = [
        json.loads(line)
        for line in (folder / "stats.jsonl").read_text().splitlines()
        if '"node": "display"' in line
    ]
    assert (
        max(d["extra"]["skipped"] for d in first_display) > 0
        and max(d["processed"] for d in first_display) > 0
    )
    assert not s.meta["summary"]["restarts"]


def _run_display_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = gui_env()
    return subprocess.run(
        [sys.executable, "-m", "rig.cli", "display", *args, "--error-linger", "0.3"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_display_cli_nothing_behind_endpoint(tmp_path):
    from tests.integration.test_bridge import free_port

    port = free_port()
    t0 = time.monotonic()
    r = _run_display_cli("--connect", f"127.0.0.1:{port}", "--screenshot", str(tmp_path / "err.png"))
    assert r.returncode == 2
    assert re.search(rf"error: 127\.0\.0\.1:{port}: nothing answers there", r.stderr), r.stderr
    assert "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 30
    # the window said it too: a red banner across the top
    from PySide6 import QtGui

    from rig.display.window import qt_app

    qt_app()
    rgb = qimage_rgb(QtGui.QImage(str(tmp_path / "err.png")))
    top = rgb[: rgb.shape[0] // 8].reshape(-1, 3).astype(int)
    assert np.mean((top[:, 0] > 150) & (top[:, 1] < 40) & (top[:, 2] < 60)) > 0.2


def test_display_cli_schema_mismatch():
    from tests.integration.test_bridge import _fake_bridge

    stop = threading.Event()
    port, th = _fake_bridge({"schema": 99, "control_port": 1, "frame_port": 1}, stop)
    try:
        r = _run_display_cli("--connect", f"127.0.0.1:{port}")
    finally:
        stop.set()
        th.join()
    assert r.returncode == 2
    assert "schema version 99" in r.stderr and "Traceback" not in r.stderr
