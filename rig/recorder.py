"""Writers behind the recorder node: per-camera video (PyAV) on its own thread, and append-only tables.

Videos are Matroska (``.mkv``): a file cut short by a crash stays readable up to its last complete
cluster. The default codec is libx264 ``ultrafast`` at crf 12 (mean error below the simulated sensor
noise; ~800 frames/s per core at 448x460); ``lossless: true`` gives bit-exact video (libx264 qp 0, or
ffv1). The Y plane is stored and read back directly (no colour conversion).
"""

from __future__ import annotations

import contextlib
import csv
import os
import queue
import threading
from pathlib import Path
from typing import Any

import av
import numpy as np

from rig.config import RecorderConfig


class VideoWriter:
    """Encodes (H, W) uint8 frames to ``path`` on a background thread.

    ``put`` never blocks: when the encoder is more than ``max_queue`` frames behind, the frame is refused
    (the caller records it as dropped). ``error`` holds the first exception the encoder hit.

    With ``encoder_priority: background`` (Linux) the encoding thread puts itself at the idle scheduling
    priority (SCHED_IDLE) while the queue is short, so it only takes CPU nobody else wants. A thread
    cannot leave SCHED_IDLE without privileges, so when the queue reaches ``high_water`` frames the idle
    thread finishes its frame and exits, and the next ``put`` (the caller's normal priority) starts a
    fresh thread, which inherits normal priority; it drains the queue to ``low_water`` and then goes
    idle itself. One thread encodes at a time, frames in order. ``handoffs`` counts the escalations.
    """

    def __init__(
        self, path: Path, width: int, height: int, rate_hz: float, cfg: RecorderConfig, max_queue: int = 512
    ):
        self.path = path
        self.queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=max_queue)
        self.error: BaseException | None = None
        self.encoded = 0
        self.container = av.open(str(path), "w", format="matroska")
        options: dict[str, str]
        codec = cfg.codec
        if codec == "libx264":
            options = {"preset": cfg.preset}
            options.update({"qp": "0"} if cfg.lossless else {"crf": str(cfg.crf)})
        elif codec == "h264_nvenc":
            options = {"preset": "p1", "tune": "ull"}
            options.update({"tune": "lossless"} if cfg.lossless else {"cq": str(cfg.crf)})
        else:
            options = {}
        self.stream = self.container.add_stream(codec, rate=round(rate_hz), options=options)
        self.stream.width = width
        self.stream.height = height
        self.stream.pix_fmt = "gray" if codec != "h264_nvenc" else "yuv420p"
        self.stream.codec_context.thread_count = cfg.threads
        self.background = cfg.encoder_priority == "background" and hasattr(os, "SCHED_IDLE")
        self.high_water = max(2, max_queue // 4)
        self.low_water = max(1, min(8, self.high_water // 4))
        self.handoffs = 0
        self._start_thread()

    def _start_thread(self) -> None:
        self._handoff = False
        self.thread = threading.Thread(target=self._run, name=f"video-{self.path.stem}", daemon=True)
        self.thread.start()

    def _resume(self) -> None:
        """Start a normal-priority thread if the idle one has stepped down for it."""
        if self._handoff and not self.thread.is_alive():
            self.handoffs += 1
            self._start_thread()

    def put(self, image: np.ndarray) -> bool:
        if self.error is not None:
            return False
        self._resume()
        try:
            self.queue.put_nowait(image)
            return True
        except queue.Full:
            return False

    def _run(self) -> None:
        idle = False
        while True:
            if self.background:
                backlog = self.queue.qsize()
                if not idle and backlog <= self.low_water:
                    idle = _set_idle_priority()
                elif idle and backlog >= self.high_water:
                    self._handoff = True  # step down: put() starts a normal-priority thread
                    return
            img = self.queue.get()
            if img is None:
                break
            if self.error is not None:
                continue
            try:
                frame = av.VideoFrame.from_ndarray(img, format="gray")
                for packet in self.stream.encode(frame):
                    self.container.mux(packet)
                self.encoded += 1
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                self.error = exc

    def close(self) -> None:
        """Drain the queue, flush the encoder, close and fsync the file."""
        while True:
            self._resume()
            try:
                self.queue.put(None, timeout=0.1)
                break
            except queue.Full:
                pass
        while self.thread.is_alive() or self._handoff:
            self.thread.join(0.1)
            self._resume()
        try:
            if self.error is None:
                for packet in self.stream.encode():
                    self.container.mux(packet)
        except (av.error.FFmpegError, OSError) as exc:
            self.error = exc
        finally:
            try:
                self.container.close()
            except (av.error.FFmpegError, OSError) as exc:
                self.error = self.error or exc
        fsync_path(self.path)


def _set_idle_priority() -> bool:
    """This thread (only: Linux scheduling policy is per thread) to SCHED_IDLE; False if not possible."""
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
        return True
    except (OSError, AttributeError):
        return False


class AppendFile:
    """An append-only text file, flushed on :meth:`flush` and fsynced on request and at close."""

    def __init__(self, path: Path):
        self.path = path
        self.f = open(path, "w", newline="", buffering=1 << 16)  # noqa: SIM115 - closed in close()

    def flush(self, fsync: bool = False) -> None:
        self.f.flush()
        if fsync:
            os.fsync(self.f.fileno())

    def close(self) -> None:
        """Flush, fsync and close; the file is closed even when the flush fails (disk full)."""
        if self.f.closed:
            return
        try:
            self.flush(fsync=True)
        finally:
            with contextlib.suppress(OSError):
                self.f.close()


class Table(AppendFile):
    """A CSV table with a header row."""

    def __init__(self, path: Path, columns: list[str]):
        super().__init__(path)
        self.columns = columns
        self.w = csv.writer(self.f)
        self.w.writerow(columns)
        self.rows = 0

    def write(self, row: list[Any]) -> None:
        self.w.writerow(row)
        self.rows += 1


class JsonLines(AppendFile):
    def write(self, line: str) -> None:
        self.f.write(line + "\n")


def y_plane(frame: av.VideoFrame) -> np.ndarray:
    """The luma plane of a decoded frame as (H, W) uint8, read directly (no colour conversion)."""
    plane = frame.planes[0]
    buf = memoryview(plane)  # type: ignore[arg-type]
    return np.frombuffer(buf, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]


def fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


FRAME_COLUMNS = [
    "seq",
    "frame_id",
    "trigger_index",
    "t_trigger_ns",
    "t_device_ns",
    "t_host_ns",
    "t_recorded_ns",
    "video_index",
    "dropped",
    "lost_before",
    "incomplete",
]
DETECTION_COLUMNS = [
    "camera",
    "seq",
    "trigger_index",
    "t_frame_ns",
    "t_start_ns",
    "t_end_ns",
    "n_boxes",
    "box",
    "x1",
    "y1",
    "x2",
    "y2",
    "confidence",
    "class_id",
]
POINT_COLUMNS = [
    "trigger_index",
    "name",
    "x",
    "y",
    "z",
    "x_filt",
    "y_filt",
    "z_filt",
    "x_pred",
    "y_pred",
    "z_pred",
    "valid",
    "reproj_error_px",
    "cameras",
    "t_frame_ns",
    "t_trigger_ns",
    "t_det_ns",
    "t_out_ns",
    "reason",
]
TRUTH_COLUMNS = [
    "trigger_index",
    "t_trigger_ns",
    "paw_x",
    "paw_y",
    "paw_z",
    "paw_radius_mm",
    "pellet_x",
    "pellet_y",
    "pellet_z",
    "pellet_present",
    "platform_up",
    "trial",
    "phase",
]
TRIAL_COLUMNS = ["trial", "t_start_ns", "t_end_ns", "outcome"]
TRIGGER_COLUMNS = ["index", "t_host_ns", "t_fw_us"]
