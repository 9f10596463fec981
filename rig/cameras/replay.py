"""The replay camera: plays a recorded session's video, or any video file, as if it were a camera.

``options``: ``path`` (a session folder or a video file; relative paths resolve against the config
file's folder), ``realtime`` (true, the default: pace frames at their recorded timing; false: as fast
as the camera node can write them — consumers slower than that lose frames, counted as drops; offline
reanalysis reads the video directly instead), ``loop`` (start over at the end). From a session
folder the frame table supplies each frame's original frame id, trigger index and timestamps; from a
plain video file the frame number is the trigger index and the timing comes from the container's timestamps.

A truncated source is an error, not an end: when the video ends before the frames its frame table lists
(or, for a plain video, the frame count its container states), ``grab`` raises :class:`InputError` saying
how many frames are missing, so the camera node fails and the session ends "failed" with that reason.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import av
import numpy as np
from pydantic import Field

from rig.cameras.base import CameraBackend, CameraInfo, GrabbedFrame, StreamEnded
from rig.config_base import CameraOptions
from rig.errors import ConfigError, InputError
from rig.session import read_csv_columns, y_plane


class ReplayOptions(CameraOptions):
    """``rig.cameras.<name>.options`` of a replay camera."""

    path: str = Field(
        description="a session folder or a video file (relative: to the config file's folder)",
    )
    camera: str | None = Field(
        None, description="which camera of a session folder to play (default: this camera's name)"
    )
    realtime: bool = Field(
        True, description="pace frames at their recorded timing (false: as fast as the node writes them)"
    )
    loop: bool = Field(False, description="start over at the end")


class ReplayCamera(CameraBackend):
    backend_name = "replay"
    options_model = ReplayOptions

    def open(self) -> None:
        opts = self.config.options
        assert isinstance(opts, ReplayOptions)
        base = Path(self.context.get("config_dir", "."))
        path = Path(opts.path).expanduser()
        path = path if path.is_absolute() else base / path
        self.table: dict[str, np.ndarray] | None = None
        self.source_what = "the container states"
        if path.is_dir():
            video = path / f"{opts.camera or self.name}.mkv"
            table = path / f"{opts.camera or self.name}.frames.csv"
            if table.exists():
                t = read_csv_columns(table)
                self.table = {k: v[t["video_index"] >= 0] for k, v in t.items()}
                self.source_what = f"its frame table {table.name} lists"
        else:
            video = path
        self.video = video
        self.realtime = opts.realtime
        self.loop = opts.loop
        self._open_container()

    def _open_container(self) -> None:
        if not self.video.exists():
            raise InputError(f"{self.video}: video file not found (camera {self.name!r})")
        try:
            self.container = av.open(str(self.video))
            stream = self.container.streams.video[0]
        except (av.error.FFmpegError, IndexError, OSError) as exc:
            raise InputError(f"{self.video}: not a readable video (camera {self.name!r}): {exc}") from None
        if (stream.codec_context.width, stream.codec_context.height) != (
            self.config.width,
            self.config.height,
        ):
            raise ConfigError(
                f"rig.cameras.{self.name}: size {self.config.width}x{self.config.height} differs from "
                f"{self.video}'s {stream.codec_context.width}x{stream.codec_context.height}"
            )
        self.time_base = float(stream.time_base) if stream.time_base else 1 / 124
        # frames the source should hold: the frame table's, else the container's own count (0: unknown)
        self.expected = len(self.table["seq"]) if self.table is not None else int(stream.frames or 0)
        self.frames = self.container.decode(video=0)
        self.k = 0
        self.t0_host: int | None = None
        self.t0_media: int | None = None

    def configure(self) -> None:
        pass

    def start(self) -> None:
        pass

    def grab(self, timeout_s: float) -> GrabbedFrame:
        try:
            frame = next(self.frames)
        except StopIteration:
            self._check_complete()
            if self.loop:
                self.container.close()
                self._open_container()
                return self.grab(timeout_s)
            raise StreamEnded(self.name) from None
        except av.error.FFmpegError as exc:
            raise InputError(
                f"{self.video}: corrupt video at frame {self.k} (camera {self.name!r}): {exc}"
            ) from None
        img = y_plane(frame)
        k = self.k
        self.k += 1
        if self.table is not None and k < len(self.table["seq"]):
            t_media = int(self.table["t_host_ns"][k])
            frame_id = int(self.table["frame_id"][k])
            trig = int(self.table["trigger_index"][k])
        else:
            t_media = int((frame.pts or 0) * self.time_base * 1e9)
            frame_id, trig = k, k
        if self.t0_host is None:
            self.t0_host, self.t0_media = time.monotonic_ns(), t_media
        assert self.t0_media is not None
        due = self.t0_host + (t_media - self.t0_media)
        if self.realtime:
            wait = (due - time.monotonic_ns()) / 1e9
            if wait > 0:
                time.sleep(wait)
        t_host = time.monotonic_ns()
        return GrabbedFrame(
            image=np.ascontiguousarray(img),
            frame_id=frame_id,
            t_host_ns=t_host,
            trigger_index=trig,
            t_trigger_ns=due if self.realtime else t_host,
        )

    def _check_complete(self) -> None:
        """At the end of the video: refuse a truncated source (fewer frames than it should hold)."""
        if self.k < self.expected:
            raise InputError(
                f"{self.video}: truncated: the video ends after {self.k} of the {self.expected} frames "
                f"{self.source_what} ({self.expected - self.k} missing; camera {self.name!r})"
            )

    def stop(self) -> None:
        pass

    def close(self) -> None:
        c: Any = getattr(self, "container", None)
        if c is not None:
            c.close()
            del self.container

    def info(self) -> CameraInfo:
        return CameraInfo(backend="replay", model="video file", serial=str(getattr(self, "video", "")))
