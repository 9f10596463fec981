"""Writers behind the recorder node: per-camera video (PyAV) on its own thread, and append-only tables.

Videos are Matroska (``.mkv``). The default codec is libx264 ``ultrafast`` at crf 12 (mean error below
the simulated sensor noise; ~800 frames/s per core at 448x460); ``lossless: true`` gives bit-exact video
(libx264 qp 0, or ffv1). The Y plane is stored and read back directly (no colour conversion).

**Counts are what is on disk.** FFmpeg's Matroska muxer keeps the open cluster in memory and writes it
when the next one starts, so the writer closes a cluster every :data:`CLUSTER_MS` and passes every packet
straight to the file (``flush_packets``). A frame's row in the frame table is *settled* (gets its
``video_index``) only once the cluster holding its packet has reached the file: the table never claims a
frame the video lacks, and after a ``kill -9`` the video holds at least every frame the table claims.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from rig.config import RecorderConfig
from rig.session import fsync_path

CLUSTER_MS = 200  # longest a muxed frame waits in memory before it is in the file
CATCH_UP_NICE = -10  # an encoder behind, where the process may raise it (root, CAP_SYS_NICE)


def buffer_bytes(cfg: Any) -> int:
    """RAM the recorder's frame queues may take at most: ``buffer_s`` of every camera's frames."""
    rc = cfg.pipeline.recorder
    rate = cfg.rig.trigger.rate_hz
    return sum(max(64, round(rc.buffer_s * rate)) * c.width * c.height for c in cfg.rig.cameras.values())


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class FrameRow:
    """One row of a frame table, waiting for its frame to reach the video (or to be known lost).

    ``values`` are the table's columns less ``video_index`` and ``dropped``, which the writer fills in;
    ``settled`` turns true once the row is final. Written by the drain and encoder threads, read by the
    recorder's main thread (the GIL orders the two fields: ``video_index`` is set before ``settled``)."""

    __slots__ = ("settled", "values", "video_index")

    def __init__(self, values: list[Any], video_index: int = -1, settled: bool = False):
        self.values = values
        self.video_index = video_index
        self.settled = settled

    def drop(self) -> None:
        self.video_index = -1
        self.settled = True


class FrameQueue:
    """The encoder's queue: ``ram_frames`` frames in memory, then, while the encoder is further behind,
    raw frames appended to a spill file next to the video (read back in order when the encoder gets to
    them): no frame is lost while memory or disk lasts. Frames keep their order: once one frame is
    spilled, the next ones follow it to the file until the encoder has read the file to its end.

    One producer (``put``) and one consumer (``get``) thread; ``put(None)`` ends the stream after every
    frame queued before it."""

    def __init__(self, ram_frames: int, spill_path: Path | None, shape: tuple[int, int]):
        self.ram: deque[tuple[np.ndarray, FrameRow] | None] = deque()
        self.ram_frames = ram_frames
        self.spill_path = spill_path
        self.shape = shape
        self.frame_bytes = shape[0] * shape[1]
        self.spill_rows: deque[FrameRow | None] = deque()  # rows of the spilled frames, in order
        self._fd: int | None = None
        self._written = 0  # frames appended to the spill file
        self._read = 0  # frames read back from it
        self.spilled = 0  # frames that went through the file, in all
        self.spill_error: OSError | None = None
        self._cond = threading.Condition()

    def qsize(self) -> int:
        with self._cond:
            return len(self.ram) + len(self.spill_rows)

    def put(self, item: tuple[np.ndarray, FrameRow] | None) -> bool:
        """Queue a frame (or the end, None); False if it fits neither in memory nor in the spill file."""
        with self._cond:
            if not self.spill_rows and (len(self.ram) < self.ram_frames or item is None):
                self.ram.append(item)
                self._cond.notify()
                return True
            if item is None:
                self.spill_rows.append(None)
                self._cond.notify()
                return True
            if not self._spill(item[0]):
                return False
            self.spill_rows.append(item[1])
            self._cond.notify()
            return True

    def _spill(self, img: np.ndarray) -> bool:
        if self.spill_path is None or self.spill_error is not None:
            return False
        try:
            if self._fd is None:
                self._fd = os.open(self.spill_path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
            n = os.pwrite(self._fd, np.ascontiguousarray(img).data, self._written * self.frame_bytes)
            if n != self.frame_bytes:  # a short write: the disk is full
                raise OSError(
                    errno.ENOSPC, f"short write to the spill file ({n} of {self.frame_bytes} bytes)"
                )
        except OSError as exc:  # disk full: from now on a frame that does not fit in RAM is dropped
            self.spill_error = exc
            return False
        self._written += 1
        self.spilled += 1
        return True

    def get(self) -> tuple[np.ndarray, FrameRow] | None:
        with self._cond:
            while not self.ram and not self.spill_rows:
                self._cond.wait()
            if self.ram:
                return self.ram.popleft()
            row = self.spill_rows[0]
            if row is None:
                self.spill_rows.popleft()
                return None
            offset = self._read * self.frame_bytes
            fd = self._fd
        assert fd is not None
        img = np.empty(self.shape, np.uint8)
        try:
            n = os.preadv(fd, [img.data], offset)
        except OSError:  # the disk failed us: this frame is lost (its row says so), the others go on
            n = -1
        with self._cond:
            self.spill_rows.popleft()
            self._read += 1
            if not self.spill_rows:  # read to its end: start the file again from its beginning
                self._read = self._written = 0
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)  # no stale frame can stand behind a short write later
        if n != self.frame_bytes:
            row.drop()
            return self.get()
        return img, row

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.spill_path is not None:
            self.spill_path.unlink(missing_ok=True)


class VideoWriter:
    """Encodes (H, W) uint8 frames to ``path`` on a background thread; keeps each frame's table row until
    the frame is in the file (:meth:`take_settled` hands finished rows out, in order).

    ``put`` never blocks: ``max_queue`` frames wait in memory; while the encoder is further behind, the
    frames go raw to ``<video>.spill`` beside the video and are encoded, in order, when the encoder gets
    to them (after the session if need be). Only a frame that fits neither (the disk full too) is
    refused: its row settles as dropped. ``error`` holds the first exception the encoder hit; every
    frame not in the file by then settles as dropped.

    With ``encoder_priority: background`` (Linux) the encoding thread puts itself at the idle scheduling
    priority (SCHED_IDLE) while the queue is short, so it only takes CPU nobody else wants. When the
    queue reaches ``high_water`` frames (a quarter of the queue, one second at most), :meth:`keep_up`
    (called by the feeding threads) puts it back to normal priority at nice ``CATCH_UP_NICE`` where the
    process may (root, CAP_SYS_NICE). Without that right a thread cannot leave SCHED_IDLE: the idle
    thread finishes its frame and exits, and the next ``keep_up`` starts a fresh thread, which sets
    itself to normal priority. Either way it drains the queue to ``low_water`` and then goes idle again.
    One thread encodes at a time, frames in order. ``handoffs`` counts the escalations.
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        rate_hz: float,
        cfg: RecorderConfig,
        max_queue: int = 512,
        spill: bool = True,
    ):
        self.path = path
        self.queue = FrameQueue(
            max_queue, path.with_name(path.name + ".spill") if spill else None, (height, width)
        )
        self.error: BaseException | None = None
        self.encoded = 0  # frames given to the encoder
        self.in_file = 0  # frames whose packets have reached the file
        self.rows: deque[FrameRow] = deque()  # every row, in order, until taken by take_settled()
        self._in_flight: dict[int, FrameRow] = {}  # pts -> row: encoded, not yet in the file
        self._muxed: list[tuple[int, int]] = []  # (pts, bytes) muxed since the file last grew
        self._file_pts: set[int] = set()  # in the file, above the settled prefix (B-frames reorder)
        self._next_settle = 0  # the lowest pts not yet settled
        self.container = av.open(
            str(path),
            "w",
            format="matroska",
            options={"flush_packets": "1", "cluster_time_limit": str(CLUSTER_MS)},
        )
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
        self.rate = round(rate_hz)
        self.stream = self.container.add_stream(codec, rate=self.rate, options=options)
        self.stream.width = width
        self.stream.height = height
        self.stream.pix_fmt = "gray" if codec != "h264_nvenc" else "yuv420p"
        self.stream.codec_context.thread_count = cfg.threads
        self.background = cfg.encoder_priority == "background" and hasattr(os, "SCHED_IDLE")
        self.high_water = max(2, min(max_queue // 4, self.rate))  # a quarter of the queue, 1 s at most
        self.low_water = max(1, min(8, self.high_water // 4))
        self.handoffs = 0
        self._restart_lock = threading.Lock()
        self._stopping = False  # set by keep_up(stopping=True): the thread no longer goes idle
        self._start_thread()

    def _start_thread(self) -> None:
        self._handoff = False
        self._idle_tid: int | None = None  # the encoding thread's id while it runs at SCHED_IDLE
        self.thread = threading.Thread(target=self._run, name=f"video-{self.path.stem}", daemon=True)
        self.thread.start()

    def keep_up(self, stopping: bool = False) -> None:
        """Called by the threads that feed and stop the writer (normal or real-time priority). With a
        backlog of ``high_water`` frames, or any backlog once the session is ``stopping``, an idle
        encoding thread goes back to normal priority: set directly where the process may (root,
        CAP_SYS_NICE), else the thread steps down when it next runs and a fresh normal-priority thread
        takes over here. On a machine kept busy by other work an idle thread may barely run at all (the
        idle class yields even to nice 19): only the direct way is immediate."""
        self._stopping = self._stopping or stopping  # from now on the thread never goes idle again
        tid = self._idle_tid
        if tid is not None and self.queue.qsize() >= (1 if self._stopping else self.high_water):
            try:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                self._idle_tid = None
                self.handoffs += 1
                # behind, the recording comes before other work on the machine too (nice -10: ~10x the
                # CPU share of a normal process); it is idle again once caught up
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, tid, CATCH_UP_NICE)
            except (OSError, AttributeError):
                pass  # not allowed: the thread steps down by itself
        with self._restart_lock:  # the drain and the main thread both call this: one replacement only
            if self._handoff and not self.thread.is_alive():
                self.handoffs += 1
                self._start_thread()

    def put(self, image: np.ndarray, values: list[Any] | None = None) -> bool:
        """Queue a frame (and its table row's ``values``); False (the row settles dropped) if refused."""
        row = FrameRow(values or [])
        self.rows.append(row)
        if self.error is not None:
            row.drop()
            return False
        self.keep_up()
        if self.queue.put((image, row)):
            return True
        row.drop()
        return False

    def lost(self, values: list[Any]) -> None:
        """A frame that never reached the recorder: its row, dropped, in order with the others."""
        self.rows.append(FrameRow(values, -1, True))

    def take_settled(self) -> list[FrameRow]:
        """The rows at the head of the table that are final (in order); later rows wait for the file."""
        out = []
        while self.rows and self.rows[0].settled:
            out.append(self.rows.popleft())
        return out

    def _run(self) -> None:
        """The encoding thread. It starts at normal priority whoever started it (a replacement may be
        started from the real-time drain thread: lowering is always allowed). Any error ends the video
        (``error``), never the thread: the rows of every later frame still settle, as dropped."""
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_OTHER, os.sched_param(0))
        while True:
            try:
                if not self._encode_next():
                    return
            except BaseException as exc:  # recorded; the rows still settle (dropped)
                self._fail(exc)

    def _encode_next(self) -> bool:
        """Encode one frame from the queue; False when the thread is to end (the end, or a step down)."""
        if self.background:
            backlog = self.queue.qsize()
            if self._idle_tid is None and backlog <= self.low_water and not self._stopping:
                if _set_idle_priority():
                    self._idle_tid = threading.get_native_id()
            elif self._idle_tid is not None and backlog >= self.high_water:
                self._handoff = True  # step down: keep_up() starts a normal-priority thread
                return False
        item = self.queue.get()
        if item is None:
            return False
        img, row = item
        if self.error is not None:
            row.drop()
            return True
        pts = self.encoded
        self._in_flight[pts] = row  # from here an error drops the row (_fail)
        self.encoded += 1
        frame = av.VideoFrame.from_ndarray(img, format="gray")
        frame.pts = pts
        frame.time_base = Fraction(1, self.rate)
        self._mux(self.stream.encode(frame))
        return True

    def _mux(self, packets: list[av.Packet[Any]]) -> None:
        """Mux packets; when the file grows by at least the bytes of every packet muxed before the last
        one, a cluster holding those packets has reached the file and their rows settle."""
        for packet in packets:
            pts, size = int(packet.pts or 0), packet.size
            before = self._size()  # growth of this call alone: the header, written by the first call,
            self.container.mux(packet)  # never counts for a cluster
            self._muxed.append((pts, size))
            grown = self._size() - before
            done = self._muxed[:-1]  # the packet just muxed opens the new cluster
            if grown > 0 and done and grown >= sum(n for _, n in done):
                self._settle([p for p, _ in done])
                self._muxed = self._muxed[-1:]

    def _size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:  # FFmpeg creates the file at its first write
            return 0

    def _settle(self, pts_in_file: list[int]) -> None:
        """Frames whose packets are in the file get their video index, lowest pts first (with B-frames a
        packet may reach the file before an earlier frame's; that frame's row waits for it)."""
        self._file_pts.update(pts_in_file)
        self.in_file += len(pts_in_file)
        while self._next_settle in self._file_pts:
            k = self._next_settle
            self._file_pts.discard(k)
            row = self._in_flight.pop(k)
            row.video_index = k
            row.settled = True
            self._next_settle += 1

    def _fail(self, exc: BaseException) -> None:
        """The first error: every frame not in the file is lost (its row settles dropped)."""
        self.error = self.error or exc
        self._drop_unsettled()

    def _drop_unsettled(self) -> None:
        for row in self._in_flight.values():
            row.drop()
        self._in_flight.clear()
        self._muxed.clear()

    def close(self) -> None:
        """Drain the queue, flush the encoder, close and fsync the file; every row settles."""
        self.queue.put(None)  # after every frame queued, in memory or spilled
        while self.thread.is_alive() or self._handoff:
            self.thread.join(0.1)
            self.keep_up(stopping=True)
        try:
            if self.error is None:
                self._mux(self.stream.encode())
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._fail(exc)
        try:
            self.container.close()
            if self.error is None:  # the trailer is written: every muxed packet is in the file
                self._settle([p for p, _ in self._muxed])
                self._muxed.clear()
        except (av.error.FFmpegError, OSError) as exc:
            self._fail(exc)
        self._drop_unsettled()
        self.queue.close()
        fsync_path(self.path)


def _set_idle_priority() -> bool:
    """This thread (only: Linux scheduling policy is per thread) to SCHED_IDLE; False if not possible."""
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
        return True
    except (OSError, AttributeError):
        return False
