"""Re-detection of a recorded session from its videos (``reanalyze --detect``).

Every camera's video is decoded (a thread per camera, ahead of detection), frames are paired into stereo
sets by trigger index through the frame tables (``video_index`` says which video frame a row is; dropped
rows have none), and each set goes through the online detector's rule
(:class:`detection.online.OnlineDetector`: ROI tracking, full-frame search) with the session's own detector
settings, as the detector node does; a ``model`` swaps only the model file.

:func:`redetect` is the reference: the online detector per stereo set. :func:`redetect_batched` (the
default, :func:`detect`) gives the same boxes with many crops per network call, on the CPU or a GPU.
A video that holds fewer frames than its frame table lists is counted (:func:`truncated_videos`); the
caller decides whether that is an error (:func:`truncation_error`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detection.settings import DetectorSettings
from rig.cameras.sync import StereoJoiner
from rig.errors import InputError
from rig.session import DETECTION_COLUMNS, Session

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "tensorrt")  # where re-detection may run
# re-detection through redetect_batched (the same boxes as redetect, batched); False: redetect itself
BATCHED = True


def detect(
    session: Session,
    model: str | None = None,
    decoded: dict[str, int] | None = None,
    on_frames: Callable[[int], None] | None = None,
    device: str = "cpu",
    stats: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Re-detect the session's videos: :func:`redetect_batched` (``BATCHED``, or any GPU ``device``), else
    the reference :func:`redetect`; arguments as theirs. ``stats`` receives which path ran and its
    counts."""
    if BATCHED or device != "cpu":
        return redetect_batched(session, model, decoded, on_frames, device, stats=stats)
    det = redetect(session, model, decoded, on_frames)
    if stats is not None:
        stats["path"] = "reference (detection.online.OnlineDetector per stereo set)"
    return det


def detector_config(session: Session, model: str | None = None) -> DetectorSettings:
    """The session's ``pipeline.detector`` with its model path made absolute (``model`` replaces it)."""
    from pydantic import ValidationError

    from detection.settings import settings_error
    from rig.config import DetectorConfig

    dc = dict(session.config["pipeline"]["detector"])
    where = f"{session.path / 'config.yaml'}: pipeline.detector"
    if model is not None:
        path = Path(model).expanduser().resolve()
        if path.suffix == ".pt":
            dc["runner"] = "ultralytics"
        elif dc.get("runner") not in ("onnxruntime", "tensorrt"):
            dc["runner"] = "onnxruntime"
    else:
        if dc.get("runner") == "oracle" or not dc.get("model"):
            raise InputError(
                f"{where}: runner {dc.get('runner')!r} has no model to re-detect with; give --model PATH"
            )
        path = Path(dc["model"]).expanduser()
        if not path.is_absolute():  # relative to the config file the session was run from
            src = session.meta.get("config_source")
            path = (Path(src).parent if src else session.path) / path
    if not path.exists():
        raise InputError(f"{where}.model: {path} not found; give --model PATH")
    dc["model"] = str(path)
    try:
        return DetectorConfig.model_validate(dc)
    except ValidationError as exc:  # e.g. an option this version no longer knows
        first = settings_error(exc, "pipeline.detector", DetectorConfig).args[0].splitlines()[0]
        raise InputError(f"{session.path / 'config.yaml'}: {first}") from None


def stereo_frames(
    session: Session,
    decoded: dict[str, int] | None = None,
    read: Callable[[Session, str], Iterator[tuple[int, np.ndarray]]] | None = None,
    ahead: int | None = None,
) -> Iterator[tuple[int, dict[str, tuple[int, np.ndarray]]]]:
    """Decode every camera's video and yield ``(trigger_index, {camera: (frame_row, image (H, W) uint8)})``
    in trigger order, one set per trigger index with the cameras that recorded it. Frames without a trigger
    index (-1) cannot be paired and are left out. ``decoded`` receives each camera's count of decoded
    frames once its video has ended (compare :func:`frames_in_table`). ``read(session, camera)`` yields a
    camera's ``(frame_row, image)`` (default: :func:`_readable_frames`), in a thread per camera up to
    ``ahead`` frames ahead (:func:`_decoded_ahead`)."""
    names = list(session.config["rig"]["cameras"])
    read = read or _readable_frames

    def stream(cam: str) -> Iterator[tuple[int, int, np.ndarray]]:
        table = session.frames[cam]
        last = -1
        if decoded is not None:
            decoded[cam] = 0
        for n, (row, img) in enumerate(_decoded_ahead(read(session, cam), ahead)):
            if decoded is not None:
                decoded[cam] = n + 1
            if int(table["video_index"][row]) != n:
                raise InputError(
                    f"{session.path / f'{cam}.frames.csv'}: line {row + 2} has video_index "
                    f"{table['video_index'][row]}, but it is video frame {n}"
                )
            k = int(table["trigger_index"][row])
            if k < 0:
                continue
            if k <= last:
                raise InputError(
                    f"{session.path / f'{cam}.frames.csv'}: line {row + 2}: trigger_index {k} after {last} "
                    "(frames cannot be paired by trigger index)"
                )
            last = k
            yield k, row, img

    joiner: StereoJoiner[tuple[int, np.ndarray]] = StereoJoiner(names)
    streams = {c: stream(c) for c in names}
    heads: dict[str, tuple[int, int, np.ndarray]] = {}  # each camera's next frame

    def advance(cam: str) -> None:
        h = next(streams[cam], None)
        if h is None:
            heads.pop(cam, None)
            joiner.end(cam)
        else:
            heads[cam] = h

    for c in names:
        advance(c)
    while not joiner.finished:
        if heads:  # feed the camera furthest behind: each video is in trigger order
            c = min(heads, key=lambda c: heads[c][0])
            k, row, img = heads[c]
            joiner.push(c, k, (row, img))
            advance(c)
        while (s := joiner.peek()) is not None:
            joiner.pop()
            yield s.trigger_index, s.items


DECODE_AHEAD = (
    32  # frames a camera's decode thread may hold ahead of detection (~6 MB at 448x460); 0: no thread
)


def _decoded_ahead(
    frames: Iterator[tuple[int, np.ndarray]], ahead: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """``frames``, produced by a thread up to ``ahead`` (default ``DECODE_AHEAD``) items ahead: a video
    decodes (FFmpeg, without the GIL) while the previous frames are detected (ONNX Runtime, without the
    GIL). Same items, same order; an exception in the thread is raised here; leaving early stops the
    thread. ``DECODE_AHEAD`` 0 turns the thread off whatever ``ahead`` says."""
    import queue

    if DECODE_AHEAD <= 0:
        yield from frames
        return

    q: queue.Queue[tuple[str, Any]] = queue.Queue(ahead or DECODE_AHEAD)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for f in frames:
                if not put(("frame", f)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="reanalysis-decode", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _readable_frames(session: Session, cam: str) -> Iterator[tuple[int, np.ndarray]]:
    """``session.read_frames(cam)``, ending (with a warning) where the video stops being decodable: a file
    cut short mid-packet is a truncated video, counted as such, not a crash."""
    import av

    try:
        yield from session.read_frames(cam)
    except av.error.FFmpegError as exc:
        log.warning(
            "%s: cannot decode past this point (%s): treated as the end of the video",
            session.video_path(cam),
            exc,
        )


def _gpu_frames(session: Session, cam: str) -> Iterator[tuple[int, np.ndarray]]:
    """:meth:`Session.read_frames` decoded by the GPU (PyAV's ``HWAccel``: FFmpeg's NVDEC through CUDA,
    frames downloaded to memory as NV12, whose Y plane is the same pixels: H.264 decoding is exact);
    where this FFmpeg, driver or GPU cannot decode the stream, FFmpeg decodes on the CPU (logged)."""
    import av
    from av.codec.hwaccel import HWAccel

    from rig.session import y_plane

    table = session.frames[cam]
    rows = np.flatnonzero(table["video_index"] >= 0)
    path = session.video_path(cam)
    try:
        container = av.open(str(path), hwaccel=HWAccel("cuda", allow_software_fallback=True))
    except (av.error.FFmpegError, OSError) as exc:  # no CUDA device for FFmpeg: decode on the CPU
        log.warning("%s: no GPU decoding (%s); decoding on the CPU", path, exc)
        container = None
    if container is None:
        yield from _readable_frames(session, cam)
        return
    try:
        with container:
            for k, frame in enumerate(container.decode(video=0)):
                if k >= len(rows):
                    break
                if k == 0:
                    where = (
                        "on the GPU" if frame.format.name == "nv12" else f"on the CPU ({frame.format.name})"
                    )
                    log.info("%s: decoding %s", path, where)
                yield int(rows[k]), y_plane(frame).copy()
    except av.error.FFmpegError as exc:
        log.warning("%s: cannot decode past this point (%s): treated as the end of the video", path, exc)


def frames_in_table(session: Session, camera: str) -> int:
    """How many frames ``camera``'s frame table says its video holds (rows with a ``video_index``)."""
    return int(np.count_nonzero(session.frames[camera]["video_index"] >= 0))


def truncated_videos(session: Session, decoded: dict[str, int]) -> dict[str, dict[str, int]]:
    """Cameras whose video held fewer frames than its table lists: ``{camera: {decoded, expected,
    missing}}``."""
    out = {}
    for cam, n in decoded.items():
        expected = frames_in_table(session, cam)
        if n < expected:
            out[cam] = {"decoded": n, "expected": expected, "missing": expected - n}
    return out


def truncation_error(session: Session, lost: dict[str, dict[str, int]]) -> InputError:
    cam, m = next(iter(lost.items()))
    others = [f"{c} {v['missing']}" for c, v in lost.items() if c != cam]
    return InputError(
        f"{session.video_path(cam)}: truncated: the video ends after {m['decoded']} of the {m['expected']} "
        f"frames {cam}.frames.csv lists ({m['missing']} missing"
        + (f"; other cameras missing: {', '.join(others)}" if others else "")
        + "); --accept-partial reanalyses what is there"
    )


def redetect(
    session: Session,
    model: str | None = None,
    decoded: dict[str, int] | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Run the online detection code over the session's videos; columns like ``detections.csv``.
    ``decoded`` receives each camera's count of decoded video frames; ``on_frames(n)`` is called after
    each stereo set with its number of camera frames (progress)."""
    from detection.online import OnlineDetector, OnlineOptions
    from detection.runners import make_runner

    dc = detector_config(session, model)
    names = list(session.config["rig"]["cameras"])
    runner = make_runner(dc)
    online = OnlineDetector(runner, names, OnlineOptions.from_options(dc.options))
    out: dict[str, list[Any]] = {c: [] for c in DETECTION_COLUMNS}
    try:
        for k, group in stereo_frames(session, decoded):
            cams = [c for c in names if c in group]
            t_start = time.monotonic_ns()
            boxes = online.detect([group[c][1] for c in cams], cams)
            t_end = time.monotonic_ns()
            for cam, dets in zip(cams, boxes):
                table, row = session.frames[cam], group[cam][0]
                base = [
                    cam,
                    int(table["seq"][row]),
                    k,
                    int(table["t_host_ns"][row]),
                    t_start,
                    t_end,
                    len(dets),
                ]
                rows = [[i, d.x1, d.y1, d.x2, d.y2, d.confidence, d.class_id] for i, d in enumerate(dets)]
                for r in rows or [[-1, math.nan, math.nan, math.nan, math.nan, math.nan, -1]]:
                    for c, v in zip(DETECTION_COLUMNS, base + r):
                        out[c].append(v)
            if on_frames is not None:
                on_frames(len(cams))
    finally:
        runner.close()
    return {c: np.asarray(v, dtype=object if c == "camera" else None) for c, v in out.items()}


# ----------------------------------------------------------------------------- batched re-detection
# Offline, every frame is on disk, but the online detector is causal: the ROI of a camera's frame t is
# placed from its detection at t-1, so one session offers a batch of two crops (its two cameras) per
# network call. :func:`redetect_batched` gets larger batches without changing a single box: each camera's
# frames are cut into segments of SEGMENT_FRAMES, and LANES segments per camera are tracked side by side
# ("lanes"), all their crops in one call. A lane other than the first starts from a guessed track (the
# online run's recorded detections where the session has them, else no track: a full-frame search), so
# its first frames may differ from the reference; its predecessor lane therefore carries on into it,
# frame by frame (again all boundaries in one call), until the two lanes' tracks are equal (centre,
# velocity, lost and search counters, exactly): from there on both would detect the same boxes, so the
# lane's own results are the reference's. A boundary that does not converge within the segment is
# covered by the predecessor (exact) and the next one is re-run from the exact track. With ONNX Runtime
# on the CPU a frame's network output does not depend on its batch, so the detections are the reference
# path's (:func:`redetect`) bit for bit; the integration test checks it.
SEGMENT_FRAMES = 64  # frames of one camera a lane tracks before the next lane's start
# lanes per camera at a time on the CPU (4x on a GPU); a chunk holds 2 x LANES x SEGMENT_FRAMES frames in
# memory, ~210 MB at 448x460 (~840 MB on a GPU), and as many may be decoded ahead of it
LANES = 8


@dataclass
class _Lane:
    """One camera's frames ``start``..``end`` (indices into ``frames``) tracked from ``track``; after each
    frame, its boxes and the track's state."""

    frames: list[np.ndarray]
    start: int
    end: int
    track: Any  # detection.online.Track
    compare: dict[int, tuple[Any, ...]] | None = None  # states to converge with (stop when equal)
    converged_at: int | None = None

    def __post_init__(self) -> None:
        self.i = self.start
        self.dets: list[list[Any]] = []
        self.states: dict[int, tuple[Any, ...]] = {}

    @property
    def active(self) -> bool:
        return self.i < self.end and self.converged_at is None


def _state(t: Any) -> tuple[Any, ...]:
    return (t.center, t.velocity, t.lost, t.since_search)


class _BatchedTracker:
    """The online detector's per-frame rule (:class:`detection.online.OnlineDetector`: ROI at the position
    predicted from the last detection, full-frame search when there is none, the same track update), one
    frame of many lanes per step, every lane's crops in one network call per crop shape."""

    def __init__(self, online: Any, runner: Any, batch: int) -> None:
        self.online, self.runner, self.batch = online, runner, batch
        self.o = online.options
        self.calls = 0
        self.crops = 0

    def infer(self, images: list[np.ndarray]) -> list[list[Any]]:
        """Boxes per image; images grouped by shape (a shape's letterbox is then the one it gets alone)."""
        out: list[list[Any]] = [[] for _ in images]
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, im in enumerate(images):
            groups[im.shape].append(i)
        batched = getattr(self.runner, "infer_batched", None)
        for idx in groups.values():
            ims = [images[i] for i in idx]
            res = batched(ims, self.batch) if batched is not None else self.runner.infer(ims)
            self.calls += -(-len(ims) // self.batch) if batched is not None else 1
            self.crops += len(ims)
            for i, r in zip(idx, res):
                out[i] = r
        return out

    def step(self, lanes: list[_Lane]) -> None:
        """Detect the next frame of every lane, as ``OnlineDetector.detect`` does for one camera."""
        import cv2

        from detection.base import Det

        o, r = self.o, self.o.roi_size
        out: list[list[Any]] = [[] for _ in lanes]
        roi = []
        for n, ln in enumerate(lanes):
            t, f = ln.track, ln.frames[ln.i]
            if r > 0 and t.center is not None and t.lost == 0:
                x0, y0 = self.online._roi_origin(t, f.shape)
                roi.append((n, np.ascontiguousarray(f[y0 : y0 + r, x0 : x0 + r]), x0, y0))
        if roi:
            for (n, _, x0, y0), dets in zip(roi, self.infer([c for _, c, _, _ in roi])):
                out[n] = [
                    Det(d.x1 + x0, d.y1 + y0, d.x2 + x0, d.y2 + y0, d.confidence, d.class_id) for d in dets
                ]
        search = []
        for n, ln in enumerate(lanes):
            t = ln.track
            if out[n]:
                continue
            if r <= 0:
                search.append(n)
            elif t.lost < o.lost_frames or t.since_search + 1 >= o.search_every:
                search.append(n)
                t.since_search = 0
            else:
                t.since_search += 1
        s = o.search_scale
        if search:
            imgs = []
            for n in search:
                f = lanes[n].frames[lanes[n].i]
                size = (round(f.shape[1] * s), round(f.shape[0] * s))
                imgs.append(f if s == 1.0 else cv2.resize(f, size, interpolation=cv2.INTER_AREA))
            for n, dets in zip(search, self.infer(imgs)):
                out[n] = (
                    dets
                    if s == 1.0
                    else [Det(d.x1 / s, d.y1 / s, d.x2 / s, d.y2 / s, d.confidence, d.class_id) for d in dets]
                )
        for n, ln in enumerate(lanes):
            self.online._update(ln.track, out[n])
            ln.dets.append(out[n])
            ln.states[ln.i] = st = _state(ln.track)
            if ln.compare is not None and ln.compare.get(ln.i) == st:
                ln.converged_at = ln.i
            ln.i += 1

    def run(self, lanes: list[_Lane]) -> None:
        while active := [ln for ln in lanes if ln.active]:
            self.step(active)


def _seed_tracks(session: Session, options: Any) -> dict[str, dict[int, tuple[float, float]]]:
    """The online run's best box centre per camera and trigger index (``detections.csv``): where a lane
    guesses its starting track. Only a guess: a wrong one costs frames, never a different result."""
    det = session.detections
    out: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
    if not det or not len(det.get("trigger_index", [])):
        return out
    best: dict[tuple[str, int], float] = {}
    tc = options.track_class
    for cam, k, n, x1, y1, x2, y2, conf, cls in zip(
        det["camera"].tolist(), det["trigger_index"].tolist(), det["n_boxes"].tolist(),
        det["x1"].tolist(), det["y1"].tolist(), det["x2"].tolist(), det["y2"].tolist(),
        det["confidence"].tolist(), det["class_id"].tolist(),
    ):  # fmt: skip
        if n <= 0 or math.isnan(conf) or (tc is not None and cls != tc):
            continue
        if conf > best.get((cam, k), -1.0):
            best[(cam, k)] = conf
            out[cam][k] = (0.5 * (x1 + x2), 0.5 * (y1 + y2))
    return out


def _guess(seeds: dict[int, tuple[float, float]], k1: int, k2: int, roi_size: int) -> Any:
    """A lane's starting track from the online centres at its previous two frames (trigger ``k1``, ``k2``)."""
    from detection.online import Track

    c1, c2 = seeds.get(k1), seeds.get(k2)
    if c1 is None:
        return Track()
    if c2 is None:
        return Track(center=c1)
    lim = roi_size / 4
    v = (float(np.clip(c1[0] - c2[0], -lim, lim)), float(np.clip(c1[1] - c2[1], -lim, lim)))
    return Track(center=c1, velocity=v)


def _track_camera_chunk(
    bt: _BatchedTracker,
    jobs: list[tuple[list[np.ndarray], list[int], Any, dict[int, tuple[float, float]]]],
    segment: int,
) -> tuple[list[list[list[Any]]], list[Any], int, int]:
    """Each job: one camera's frames of a chunk, their trigger indices, the exact track before the first
    and the seed centres. Returns per job the boxes per frame (the reference path's) and the exact track
    after the last frame; how many frames were detected more than once (the price of batching) and at how
    many lane boundaries the tracks did not converge within the segment."""
    from dataclasses import replace

    lanes: list[list[_Lane]] = []
    for frames, ks, carry, seeds in jobs:
        bounds = list(range(0, len(frames), segment))
        lanes.append(
            [
                _Lane(
                    frames,
                    a,
                    min(a + segment, len(frames)),
                    replace(carry)
                    if j == 0
                    else _guess(seeds, ks[a - 1], ks[a - 2] if a >= 2 else -1, bt.o.roi_size),
                )
                for j, a in enumerate(bounds)
            ]
        )
    bt.run([ln for cam in lanes for ln in cam])
    # each lane carries on into the next one's segment until their tracks agree (all at once)
    conts: dict[tuple[int, int], _Lane] = {}
    for c, cam in enumerate(lanes):
        for j in range(1, len(cam)):
            nxt = cam[j]
            conts[(c, j)] = _Lane(nxt.frames, nxt.start, nxt.end, replace(cam[j - 1].track), nxt.states)
    bt.run(list(conts.values()))
    results, ends, rerun, unconverged = [], [], 0, 0
    for c, cam in enumerate(lanes):
        dets = list(cam[0].dets)
        exact_end = True  # lane j-1's final track is the reference's
        track = cam[0].track
        for j in range(1, len(cam)):
            nxt = cam[j]
            x = conts[(c, j)]
            if not exact_end:  # the precomputed continuation started from a guess: redo it from the truth
                x = _Lane(nxt.frames, nxt.start, nxt.end, replace(track), nxt.states)
                bt.run([x])
            rerun += len(x.dets)
            dets += x.dets
            if x.converged_at is not None:
                dets += nxt.dets[x.converged_at + 1 - nxt.start :]
                track, exact_end = nxt.track, True
            else:
                track, exact_end = x.track, False
                unconverged += 1
        results.append(dets)
        ends.append(track)
    return results, ends, rerun, unconverged


def redetect_batched(
    session: Session,
    model: str | None = None,
    decoded: dict[str, int] | None = None,
    on_frames: Callable[[int], None] | None = None,
    device: str = "cpu",
    lanes: int | None = None,
    segment: int = SEGMENT_FRAMES,
    stats: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """:func:`redetect` (the same columns, the same boxes) with each camera's frames tracked in ``lanes``
    lanes of ``segment`` frames side by side, their crops batched into one network call (see above).
    ``device``: ``cpu`` (the session's runner), ``cuda`` (ONNX Runtime's CUDA provider) or ``tensorrt``
    (the TensorRT runner: an FP16 engine built from the ONNX model, cached beside it); on a GPU the videos
    are decoded by the GPU too where this FFmpeg has NVDEC (:func:`_gpu_frames`). ``t_start_ns`` /
    ``t_end_ns`` of a row are those of its chunk's detection. ``stats`` receives the counts (network
    calls, crops, frames detected again at lane boundaries)."""
    from detection.online import OnlineDetector, OnlineOptions, Track
    from detection.runners import make_runner

    if device not in DEVICES:
        raise InputError(f"device {device!r}: expected one of {', '.join(DEVICES)}")
    if segment < 1 or (lanes is not None and lanes < 1):
        raise ValueError(f"lanes {lanes} and segment {segment}: expected at least 1 each")
    n_lanes = lanes or (LANES if device == "cpu" else 4 * LANES)
    dc = _device_settings(detector_config(session, model), device, batch=2 * n_lanes)
    names = list(session.config["rig"]["cameras"])
    opts = OnlineOptions.from_options(dc.options)
    runner = make_runner(dc)
    bt = _BatchedTracker(OnlineDetector(runner, names, opts), runner, batch=2 * n_lanes)
    seeds = _seed_tracks(session, opts)
    carry = {c: Track() for c in names}
    out: dict[str, list[Any]] = {c: [] for c in DETECTION_COLUMNS}
    rerun = n_frames = unconverged = 0
    chunk_sets = n_lanes * segment

    def detect(chunk: list[tuple[int, dict[str, tuple[int, np.ndarray]]]]) -> None:
        nonlocal rerun, n_frames, unconverged
        t_start = time.monotonic_ns()
        jobs, cams = [], []
        for c in names:
            fr = [(k, g[c][1]) for k, g in chunk if c in g]
            if fr:
                cams.append(c)
                jobs.append(([f for _, f in fr], [k for k, _ in fr], carry[c], seeds.get(c, {})))
        boxes, ends, again, missed = _track_camera_chunk(bt, jobs, segment)
        t_end = time.monotonic_ns()
        rerun += again
        unconverged += missed
        per_cam = {c: iter(b) for c, b in zip(cams, boxes)}
        carry.update(zip(cams, ends))
        n = 0
        for k, group in chunk:
            for cam in (c for c in names if c in group):
                dets = next(per_cam[cam])
                table, row = session.frames[cam], group[cam][0]
                base = [cam, int(table["seq"][row]), k, int(table["t_host_ns"][row]), t_start, t_end]
                _detection_rows(out, base, dets)
                n += 1
        n_frames += n
        if on_frames is not None:
            on_frames(n)

    # decoding runs a chunk ahead (where a worker has a second core, the next chunk decodes meanwhile)
    read = _gpu_frames if device != "cpu" else None
    frames = stereo_frames(session, decoded, read, ahead=chunk_sets)
    try:
        chunk: list[tuple[int, dict[str, tuple[int, np.ndarray]]]] = []
        for k, group in frames:
            chunk.append((k, group))
            if len(chunk) >= chunk_sets:
                detect(chunk)
                chunk = []
        if chunk:
            detect(chunk)
    finally:
        runner.close()
    if stats is not None:
        stats.update(
            path="batched (rig.redetect.redetect_batched)",
            device=device, lanes=n_lanes, segment_frames=segment, network_calls=bt.calls,
            crops=bt.crops, frames=n_frames, frames_detected_again=rerun,
            boundaries_not_converged=unconverged,
        )  # fmt: skip
    return {c: np.asarray(v, dtype=object if c == "camera" else None) for c, v in out.items()}


def _detection_rows(out: dict[str, list[Any]], base: list[Any], dets: list[Any]) -> None:
    """Append one frame's rows (one per box, or one empty row) to the columns of ``detections.csv``."""
    n = len(dets)
    for c, v in zip(DETECTION_COLUMNS, [*base, n]):
        out[c].extend([v] * max(n, 1))
    if not n:
        for c, v in zip(DETECTION_COLUMNS[7:], [-1, math.nan, math.nan, math.nan, math.nan, math.nan, -1]):
            out[c].append(v)
        return
    out[DETECTION_COLUMNS[7]].extend(range(n))
    for c, attr in zip(DETECTION_COLUMNS[8:], ("x1", "y1", "x2", "y2", "confidence", "class_id")):
        out[c].extend(getattr(d, attr) for d in dets)


def _device_settings(dc: DetectorSettings, device: str, batch: int = 8) -> DetectorSettings:
    """The detector settings for ``device``: the session's on the CPU; ONNX Runtime with only the CUDA
    provider, or the TensorRT runner (no CPU fallback, its engine built for ``batch`` images per call), on
    the GPU. No CUDA: InputError saying so."""
    if device == "cpu":
        return dc
    from detection.runners import gpu_visible

    if not gpu_visible():
        raise InputError(f"device {device!r}: no NVIDIA GPU visible on this machine")
    if device == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise InputError(
                "device 'cuda': this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
            )
        opts = dc.options.model_copy(update={"providers": ("CUDAExecutionProvider",)})
        return dc.model_copy(update={"runner": "onnxruntime", "options": opts})
    opts = dc.options.model_copy(update={"cpu_fallback": False, "max_batch": batch})
    return dc.model_copy(update={"runner": "tensorrt", "options": opts})
