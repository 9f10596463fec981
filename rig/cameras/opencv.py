"""USB webcams and video devices through OpenCV's ``cv2.VideoCapture``.

Honest caveat: such cameras have no hardware trigger and no frame counter or clock of their own that
OpenCV exposes. ``hardware_trigger`` must be false; frames are numbered on arrival and stamped with the
host's monotonic clock when ``read()`` returns (so the timestamp includes driver buffering latency,
typically one frame or more). Lost frames cannot be detected, except as gaps in arrival time.

Config: ``backend: opencv``; ``options.device``: a device index (``0``), a device path
(``/dev/video0``) or a video file (then ``options.fps`` paces it like a live camera; without it the
file is read as fast as possible). Colour frames are converted to Mono8; a frame whose size differs from
``width`` x ``height`` is an error naming the camera.
"""

from __future__ import annotations

import glob
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from rig.cameras.base import CameraBackend, CameraInfo, GrabbedFrame, StreamEnded, now_ns
from rig.config_base import CameraOptions
from rig.errors import AcquisitionTimeout, ConfigError, DeviceError

log = logging.getLogger(__name__)


def list_cameras(options: dict[str, Any] | None = None) -> list[CameraInfo]:
    """Video4Linux devices that answer as capture devices (no device is opened by guessed index)."""
    import cv2

    out = []
    for path in sorted(glob.glob("/dev/video*")):
        cap = cv2.VideoCapture(path, cv2.CAP_V4L2)
        try:
            if cap.isOpened():
                name_file = Path("/sys/class/video4linux") / Path(path).name / "name"
                model = name_file.read_text().strip() if name_file.is_file() else "V4L2 device"
                out.append(CameraInfo("opencv", model, path, "V4L2"))
        finally:
            cap.release()
    return out


class OpenCVOptions(CameraOptions):
    """``rig.cameras.<name>.options`` of an OpenCV (V4L2 or video file) source."""

    device: int | str | None = Field(
        None,
        description="device index (0), device path (/dev/video0) or video file (default: serial, else 0)",
    )
    fps: float | None = Field(
        None, gt=0, description="frame rate asked of a device; paces a video file like a live camera"
    )
    v4l2_exposure: float | None = Field(
        None, description="V4L2 exposure in the driver's own units (manual exposure; only when set)"
    )


class OpenCVCamera(CameraBackend):
    backend_name = "opencv"
    options_model = OpenCVOptions

    cap: Any = None

    def open(self) -> None:
        import cv2

        self.cv2 = cv2
        if self.config.hardware_trigger:
            raise ConfigError(
                f"rig.cameras.{self.name}.hardware_trigger: the opencv backend has no hardware trigger "
                "(frames are timestamped on arrival); set it to false"
            )
        opts = self.config.options
        assert isinstance(opts, OpenCVOptions)
        self.opts = opts
        serial = self.config.serial
        dev: int | str = opts.device if opts.device is not None else (serial if serial is not None else 0)
        self.is_file = isinstance(dev, str) and not dev.startswith("/dev/") and not dev.isdigit()
        if self.is_file and not Path(str(dev)).is_file():
            raise ConfigError(f"rig.cameras.{self.name}.options.device: video file {dev!r} not found")
        source: int | str = (
            int(dev) if isinstance(dev, int) or (isinstance(dev, str) and dev.isdigit()) else dev
        )
        self.source = source
        self.cap = cv2.VideoCapture(source)
        if not self.cap.isOpened():
            self.cap = None
            raise DeviceError(f"camera {self.name!r}: OpenCV cannot open video source {source!r}")
        self.frame_id = -1
        self.fps = opts.fps
        self._next_t = 0.0

    def configure(self) -> None:
        cv2 = self.cv2
        if not self.is_file:
            self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
            self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
            if self.fps is not None:
                self.cap.set(cv2.CAP_PROP_FPS, float(self.fps))
            # exposure in OpenCV/V4L2 units is driver-specific; apply only when asked explicitly
            if self.opts.v4l2_exposure is not None:
                self.cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 1)
                self.cap.set(cv2.CAP_PROP_EXPOSURE, self.opts.v4l2_exposure)

    def start(self) -> None:
        self._next_t = time.monotonic()

    def grab(self, timeout_s: float) -> GrabbedFrame:
        if self.is_file and self.fps:
            self._next_t += 1.0 / float(self.fps)
            delay = self._next_t - time.monotonic()
            if delay > timeout_s:
                time.sleep(timeout_s)
                raise AcquisitionTimeout(f"camera {self.name!r}: no frame within {timeout_s:.3f} s")
            if delay > 0:
                time.sleep(delay)
        t0 = time.monotonic()
        ok, frame = self.cap.read()
        t_host = now_ns()
        if not ok:
            if self.is_file:
                raise StreamEnded(f"camera {self.name!r}: video file {self.source!r} ended")
            if time.monotonic() - t0 >= timeout_s:
                raise AcquisitionTimeout(f"camera {self.name!r}: no frame within {timeout_s:.3f} s")
            raise DeviceError(
                f"camera {self.name!r}: video device {self.source!r} stopped delivering (unplugged?)"
            )
        if frame.ndim == 3:
            frame = self.cv2.cvtColor(frame, self.cv2.COLOR_BGR2GRAY)
        if frame.shape != (self.config.height, self.config.width):
            raise DeviceError(
                f"camera {self.name!r}: frame is {frame.shape[1]}x{frame.shape[0]}, config asks for "
                f"{self.config.width}x{self.config.height} (the device or file does not offer that size)"
            )
        self.frame_id += 1
        return GrabbedFrame(np.ascontiguousarray(frame, np.uint8), self.frame_id, t_host)

    def stop(self) -> None:
        pass

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def info(self) -> CameraInfo:
        return CameraInfo(
            "opencv", "video file" if self.is_file else "V4L2 device", str(self.source), "OpenCV"
        )
