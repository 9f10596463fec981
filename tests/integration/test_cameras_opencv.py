"""The opencv backend on a real video file (no trigger: frames numbered and stamped on arrival)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rig.cameras.base import StreamEnded
from rig.cameras.opencv import OpenCVCamera
from rig.config import CameraConfig
from rig.errors import ConfigError, DeviceError

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "webcam.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (448, 460))
    assert w.isOpened()
    for i in range(12):
        frame = np.full((460, 448, 3), 20 * i, np.uint8)
        w.write(frame)
    w.release()
    return path


def cfg(video: Path, **kw: object) -> CameraConfig:
    opts: dict[str, object] = {"device": str(video)}
    opts.update(kw.pop("options", {}))  # type: ignore[arg-type]
    base: dict[str, object] = {"backend": "opencv", "hardware_trigger": False, "options": opts}
    base.update(kw)
    return CameraConfig(**base)  # type: ignore[arg-type]


def test_reads_gray_frames_numbered_on_arrival_then_ends(video: Path) -> None:
    cam = OpenCVCamera("chamber", cfg(video, options={"fps": 100}))
    with cam:
        frames = [cam.grab(1.0) for _ in range(12)]
        with pytest.raises(StreamEnded, match="chamber"):
            cam.grab(1.0)
    assert [f.frame_id for f in frames] == list(range(12))
    assert all(f.image.shape == (460, 448) and f.t_device_ns == -1 for f in frames)
    assert frames[5].image.mean() == pytest.approx(100, abs=3)
    dt_ms = (frames[-1].t_host_ns - frames[0].t_host_ns) / 11 / 1e6
    assert dt_ms >= 9.0  # paced at 100 fps


def test_hardware_trigger_is_refused_honestly(video: Path) -> None:
    with pytest.raises(ConfigError, match=r"rig.cameras.chamber.hardware_trigger.*no hardware trigger"):
        OpenCVCamera("chamber", cfg(video, hardware_trigger=True)).open()


def test_size_mismatch_and_missing_file(video: Path, tmp_path: Path) -> None:
    cam = OpenCVCamera("chamber", cfg(video, width=640, height=480))
    with (
        cam,
        pytest.raises(DeviceError, match=r"camera 'chamber': frame is 448x460, config asks for 640x480"),
    ):
        cam.grab(1.0)
    with pytest.raises(ConfigError, match="not found"):
        OpenCVCamera("chamber", cfg(tmp_path / "nope.avi")).open()
