"""The video writer: frames round-trip through the file; the encoder thread alone runs in the background."""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import pytest

from rig.config import RecorderConfig
from rig.recorder import VideoWriter
from rig.session import y_plane


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
    for f in frames[1:]:  # lossless noise at 448x460 takes milliseconds a frame: the queue fills
        assert w.put(f)
    normal_seen = False
    while w.encoded < len(frames) and w.error is None:
        w.keep_up()  # what the recorder's next put() does
        t = w.thread  # promoted in place (root, CAP_SYS_NICE), or a fresh normal-priority thread
        if t.native_id is not None and t.is_alive():
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


def _frames_in_file(path) -> int:
    """Frames a reader finds in the file as it is on disk now (a copy: the writer keeps writing)."""
    import shutil

    import av

    if not path.exists():  # FFmpeg creates the file at its first write
        return 0
    snap = path.with_name("snapshot.mkv")
    shutil.copyfile(path, snap)
    try:
        with av.open(str(snap)) as c:
            return sum(1 for p in c.demux(video=0) if p.size)
    except av.error.FFmpegError:
        return 0


@pytest.mark.parametrize(
    ("codec", "content"),
    [("libx264", "noise"), ("ffv1", "black")],  # ffv1 black frames: packets smaller than the file's header
)
def test_rows_settle_only_once_their_frames_are_in_the_file(tmp_path, codec, content):
    """While encoding, every row the writer hands out claims a frame the file already holds; at close every
    row is settled with video indices 0..n-1 and the file decodes to exactly those frames."""
    path = tmp_path / "v.mkv"
    w = VideoWriter(path, 448, 460, 124.0, RecorderConfig(codec=codec), max_queue=256)
    rng = np.random.default_rng(2)
    base = (
        rng.integers(0, 200, (460, 448), dtype=np.uint8)
        if content == "noise"
        else np.zeros((460, 448), np.uint8)
    )
    settled: list = []
    checks = 0
    for k in range(200):
        assert w.put(np.roll(base, k, axis=1), [k])
        if k % 25 == 24:
            w.thread.join(0.05)
            settled += w.take_settled()
            claimed = sum(1 for r in settled if r.video_index >= 0)
            assert claimed <= _frames_in_file(path), (k, claimed)
            checks += claimed > 0
    w.close()
    settled += w.take_settled()
    assert checks > 0  # rows did settle while encoding (clusters every 200 ms), not only at close
    assert [r.values[0] for r in settled] == list(range(200))
    assert [r.video_index for r in settled] == list(range(200))
    assert _frames_in_file(path) == 200


def test_a_slow_encoder_spills_to_disk_and_loses_nothing(tmp_path):
    """Four frames of RAM and a lossless encoder far slower than the producer: the rest waits raw on disk
    and every frame reaches the video, in order, bit-exact; the spill file is gone afterwards."""
    path = tmp_path / "v.mkv"
    w = VideoWriter(path, 448, 460, 124.0, RecorderConfig(lossless=True, preset="veryslow"), max_queue=4)
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 255, (460, 448), dtype=np.uint8) for _ in range(40)]
    for k, f in enumerate(frames):
        assert w.put(f, [k])
    assert w.queue.spilled > 0
    w.close()
    rows = w.take_settled()
    assert w.error is None and [r.video_index for r in rows] == list(range(40))
    assert _round_trip(path, frames)
    assert not path.with_name("v.mkv.spill").exists()


def test_without_spill_room_a_full_queue_drops_and_says_so(tmp_path):
    w = VideoWriter(
        tmp_path / "v.mkv", 448, 460, 124.0, RecorderConfig(lossless=True), max_queue=2, spill=False
    )
    rng = np.random.default_rng(4)
    results = [w.put(rng.integers(0, 255, (460, 448), dtype=np.uint8), [k]) for k in range(30)]
    w.close()
    rows = w.take_settled()
    kept = [r.video_index for r in rows if r.video_index >= 0]
    assert not all(results) and len(rows) == 30
    assert kept == list(range(len(kept))) == list(range(sum(results)))  # refused frames are dropped rows


def test_an_encoder_error_ends_the_video_not_the_rows(tmp_path):
    """A frame the encoder cannot take (here: the wrong shape) ends the video with ``error``; every row,
    before and after, still settles (the later ones dropped), so the table stays complete and honest."""
    w = VideoWriter(tmp_path / "v.mkv", 64, 48, 124.0, RecorderConfig(), max_queue=64)
    good = np.zeros((48, 64), np.uint8)
    for k in range(30):
        w.put(good if k != 10 else np.zeros((5,), np.uint8), [k])
    w.close()
    rows = w.take_settled()
    assert w.error is not None
    assert [r.values[0] for r in rows] == list(range(30))  # every row, in order
    kept = [r.video_index for r in rows if r.video_index >= 0]
    assert kept == list(range(len(kept))) and len(kept) <= 10
