"""The video writer: frames round-trip through the file; the encoder thread alone runs in the background."""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np

from rig.config import RecorderConfig
from rig.recorder import VideoWriter, y_plane


def _round_trip(path, frames):
    import av

    with av.open(str(path)) as c:
        got = [y_plane(fr) for fr in c.decode(video=0)]
    return len(got) == len(frames) and all(np.array_equal(a, b) for a, b in zip(got, frames))


def test_background_encoder_is_idle_when_caught_up_and_frames_round_trip(tmp_path):
    policy = os.sched_getscheduler(0)
    w = VideoWriter(tmp_path / "v.mkv", 64, 48, 124.0, RecorderConfig(lossless=True), max_queue=8)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64), dtype=np.uint8) for _ in range(20)]
    assert w.put(frames[0])
    while w.encoded < 1:  # the thread has started, found the queue short and gone idle
        assert w.thread.is_alive() and w.error is None
        w.thread.join(0.01)
    assert w.thread.native_id is not None
    assert os.sched_getscheduler(w.thread.native_id) == os.SCHED_IDLE
    assert os.sched_getscheduler(0) == policy  # the caller (taking frames off the rings) is not
    for f in frames[1:]:
        while not w.put(f):  # a full queue refuses (the recorder counts a drop); here, wait
            w.thread.join(0.005)
    w.close()
    assert w.error is None and w.encoded == 20
    assert _round_trip(tmp_path / "v.mkv", frames)


def test_background_encoder_goes_back_to_normal_priority_when_behind(tmp_path):
    """A backlog of high_water frames: the idle thread steps down and a normal-priority thread drains."""
    w = VideoWriter(tmp_path / "v.mkv", 448, 460, 124.0, RecorderConfig(lossless=True), max_queue=64)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (460, 448), dtype=np.uint8) for _ in range(60)]
    assert w.put(frames[0])
    while w.encoded < 1:
        w.thread.join(0.01)
    idle_thread = w.thread
    for f in frames[1:]:  # lossless noise at 448x460 takes milliseconds a frame: the queue fills
        assert w.put(f)
    normal_seen = False
    while w.encoded < len(frames) and w.error is None:
        w._resume()  # what the recorder's next put() does
        t = w.thread
        if t is not idle_thread and t.native_id is not None and t.is_alive():
            with contextlib.suppress(OSError):  # the thread may exit between the two calls
                normal_seen |= os.sched_getscheduler(t.native_id) != os.SCHED_IDLE
        time.sleep(0.001)
    w.close()
    assert w.handoffs >= 1 and normal_seen
    assert w.error is None and w.encoded == len(frames)
    assert _round_trip(tmp_path / "v.mkv", frames)


def test_normal_priority_encoder_never_goes_idle(tmp_path):
    w = VideoWriter(
        tmp_path / "v.mkv",
        64,
        48,
        124.0,
        RecorderConfig(lossless=True, encoder_priority="normal"),
        max_queue=8,
    )
    frame = np.zeros((48, 64), np.uint8)
    assert w.put(frame)
    while w.encoded < 1:
        w.thread.join(0.01)
    assert w.thread.native_id is not None
    assert os.sched_getscheduler(w.thread.native_id) == os.sched_getscheduler(0)
    w.close()
    assert w.error is None and w.encoded == 1
