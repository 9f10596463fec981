"""The video writer: frames round-trip through the file; only the encoder thread is niced."""

from __future__ import annotations

import os

import numpy as np

from rig.config import RecorderConfig
from rig.recorder import VideoWriter, y_plane


def test_encoder_thread_alone_is_niced_and_frames_round_trip(tmp_path):
    import av

    base = os.getpriority(os.PRIO_PROCESS, 0)
    w = VideoWriter(
        tmp_path / "v.mkv", 64, 48, 124.0, RecorderConfig(lossless=True, encoder_nice=4), max_queue=8
    )
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64), dtype=np.uint8) for _ in range(20)]
    assert w.put(frames[0])
    while w.encoded < 1:  # the thread has started and set its own niceness
        assert w.thread.is_alive() and w.error is None
        w.thread.join(0.01)
    assert w.thread.native_id is not None
    assert os.getpriority(os.PRIO_PROCESS, w.thread.native_id) == min(19, base + 4)
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the caller (taking frames off the rings) is not
    for f in frames[1:]:
        while not w.put(f):  # a full queue refuses (the recorder counts a drop); here, wait
            w.thread.join(0.005)
    w.close()
    assert w.error is None and w.encoded == 20
    with av.open(str(tmp_path / "v.mkv")) as c:
        got = [y_plane(fr) for fr in c.decode(video=0)]
    assert len(got) == 20 and all(np.array_equal(a, b) for a, b in zip(got, frames))
