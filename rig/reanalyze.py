"""Batch reanalysis of recorded sessions, on Dask.

For each session, the same code the online pipeline runs, over what the session recorded:

1. **Detections.** By default the recorded ``detections.csv`` (re-triangulating them reproduces the
   online 3-D to the digits written on disk). With ``detect`` (or a ``model``), every camera's video is
   decoded, frames are paired into stereo sets by trigger index through the frame tables
   (``video_index`` says which video frame a row is; dropped rows have none), and each set goes through
   :class:`detection.online.OnlineDetector` (ROI tracking, full-frame search) with the session's own
   detector settings, as the detector node does; ``model`` swaps only the model file. The work is done by
   :func:`redetect_batched`: the same boxes as :func:`redetect` (the online code per stereo set, kept as
   the reference), many crops per network call, on the CPU or a GPU (``Options.device``). A video that holds
   fewer frames than its frame table lists (truncated) is an error naming the file and how many frames
   are missing, unless ``accept_partial``: then what is there is reanalysed and ``summary.json`` says
   ``frames_missing_from_video`` per camera and ``partial: true``.
2. **3-D.** Every stereo set, in trigger order, through :class:`analysis.tracking.PointTracker` with the
   session's calibration and triangulator settings (the online triangulator's code).
3. **Analyses.** For a reaching session: every trial scored again by the task's own outcome rule on the
   offline 3-D (:func:`classify_trials`: trials recorded without 3-D, ``pellet_removed`` /
   ``pellet_not_taken``, get their outcome here), then :func:`analysis.tasks.reaching.analyze_reaching`
   (reaches, kinematics, success rate), the function behind the ``reaching`` command. Every time is a
   trigger time on the firmware clock (:func:`time_base`: ``triggers.csv``, ``index / trigger_rate_hz``
   where it lacks one), never a host arrival time.

Output, ``<session>/reanalysis/``: ``points3d.csv`` (the online columns less the online-only timings),
``detections.csv`` (with re-detection; ``t_start_ns``/``t_end_ns`` are the offline detector's),
``trials.csv`` (the session's trials with the offline ``outcome``, ``outcome_online`` as recorded,
``reaches`` and ``t_removed_fw_us``; the session's own ``trials.csv`` is never changed), the ``reaching/``
folder of the ``reaching`` command, and ``summary.json``: options, counts, timings, the difference to the
online 3-D, for a simulated session the error against the simulator's truth, and which trials' outcomes
changed from the online ones.
Everything is written into ``.reanalysis.partial/`` (summary last) and renamed into place, so a
half-written result never looks finished. A session whose ``summary.json`` has the same options is
skipped (resumable) unless ``force``; a session that fails is reported and the others go on.

While a session runs, its worker rewrites ``.reanalysis.partial/progress.json`` every few seconds (host,
pid, stage, frames done of how many): the batch's per-session progress and ``reanalyze --status`` read it.
A failed attempt leaves ``.reanalysis.partial/failed.json`` (the one-line reason); a worker that died
leaves a progress file nobody rewrites any more. :func:`session_status` tells these apart from the folder
alone. On SLURM a worker job that ends (scancel, walltime, a node lost) is replaced, and the scheduler
runs its session again on another worker.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import threading
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.tracking import PointTracker
from detection.settings import DetectorSettings
from rig.cameras.sync import StereoJoiner
from rig.errors import InputError, UserError
from rig.session import DETECTION_COLUMNS, POINT_COLUMNS, Session, Table, load_session, write_json_atomic
from rig.session_metrics import error_vs_truth_mm

if TYPE_CHECKING:
    from rig.config import TriangulatorConfig

log = logging.getLogger(__name__)

OUT_DIR = "reanalysis"
PARTIAL_DIR = ".reanalysis.partial"
OLD_DIR = ".reanalysis.old"
# points3d.csv columns offline: the online ones less t_det_ns/t_out_ns, which only exist online
OFFLINE_POINT_COLUMNS = [c for c in POINT_COLUMNS if c not in ("t_det_ns", "t_out_ns")]
DEVICES = ("cpu", "cuda", "tensorrt")  # where re-detection may run (Options.device)
# re-detection through redetect_batched (the same boxes as redetect, batched); False: redetect itself
BATCHED = True


@dataclass(frozen=True)
class Options:
    """What a reanalysis does; recorded in ``summary.json`` (a finished session is skipped only when its
    options match). ``model`` (an absolute path) implies ``detect``."""

    detect: bool = False
    model: str | None = None
    analyses: bool = True
    accept_partial: bool = False  # reanalyse truncated videos as far as they go instead of failing
    device: str = "cpu"  # where re-detection runs: cpu, cuda (ONNX Runtime) or tensorrt (redetect_batched)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise UserError(f"device {self.device!r}: expected one of {', '.join(DEVICES)}")

    @property
    def redetect(self) -> bool:
        return self.detect or self.model is not None

    def record(self) -> dict[str, Any]:
        rec = {**asdict(self), "detect": self.redetect}
        for key, default in (("accept_partial", False), ("device", "cpu")):
            if rec[key] == default:  # results recorded before the option existed stay valid
                del rec[key]
        return rec


# ----------------------------------------------------------------------------- detections
def detections_by_set(det: dict[str, np.ndarray]) -> dict[int, dict[str, np.ndarray]]:
    """Columns of ``detections.csv`` -> trigger index -> camera -> (K, 5) boxes ``x1 y1 x2 y2 conf``."""
    sets: dict[int, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    if not det or not len(det.get("trigger_index", [])):
        return {}
    box = np.stack([np.asarray(det[c], dtype=np.float64) for c in ("x1", "y1", "x2", "y2", "confidence")], 1)
    for i, (k, cam, n) in enumerate(zip(det["trigger_index"], det["camera"], det["n_boxes"])):
        rows = sets[int(k)][str(cam)]
        if int(n) > 0:
            rows.append(box[i])
    return {
        k: {c: np.array(v, dtype=np.float64).reshape(-1, 5) for c, v in cams.items()}
        for k, cams in sets.items()
    }


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


def triangulator_settings(session: Session) -> TriangulatorConfig:
    """The session's ``pipeline.triangulator``, validated by the same model the rig ran it with."""
    from pydantic import ValidationError

    from detection.settings import settings_error
    from rig.config import TriangulatorConfig

    try:
        return TriangulatorConfig.model_validate(session.config["pipeline"]["triangulator"])
    except ValidationError as exc:
        first = settings_error(exc, "pipeline.triangulator", TriangulatorConfig).args[0].splitlines()[0]
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
    dc = _device_settings(detector_config(session, model), device)
    names = list(session.config["rig"]["cameras"])
    opts = OnlineOptions.from_options(dc.options)
    runner = make_runner(dc)
    n_lanes = lanes or (LANES if device == "cpu" else 4 * LANES)
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
            path="batched (rig.reanalyze.redetect_batched)",
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


def _device_settings(dc: DetectorSettings, device: str) -> DetectorSettings:
    """The detector settings for ``device``: the session's on the CPU; ONNX Runtime with only the CUDA
    provider, or the TensorRT runner (no CPU fallback), on the GPU. No CUDA: InputError saying so."""
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
    opts = dc.options.model_copy(update={"cpu_fallback": False})
    return dc.model_copy(update={"runner": "tensorrt", "options": opts})


# ----------------------------------------------------------------------------- 3-D
def triangulate_sets(
    session: Session, det: dict[str, np.ndarray], order: Iterable[int] | None = None
) -> dict[str, np.ndarray]:
    """Every stereo set of ``det`` (columns of ``detections.csv``) through the online triangulator's
    :class:`PointTracker`, in ``order`` (default: trigger order); columns of ``OFFLINE_POINT_COLUMNS``.
    ``t_frame_ns`` is the earliest frame of the set and ``t_trigger_ns`` its trigger, as online."""
    cfg = session.config
    tc = triangulator_settings(session)
    names = list(cfg["rig"]["cameras"])
    tracker = PointTracker.from_settings(
        [session.calibration[n] for n in names], float(cfg["rig"]["trigger"]["rate_hz"]), tc
    )
    sets = detections_by_set(det)
    t_frame: dict[int, int] = {}
    if det and len(det.get("trigger_index", [])):
        for k, t in zip(det["trigger_index"].tolist(), det["t_frame_ns"].tolist()):
            t_frame[k] = min(t_frame.get(k, t), t)
    t_trigger: dict[int, int] = {}
    for table in session.frames.values():
        for k, t in zip(table["trigger_index"].tolist(), table["t_trigger_ns"].tolist()):
            if k >= 0:
                t_trigger[k] = min(t_trigger.get(k, t), t)
    out: dict[str, list[Any]] = {c: [] for c in OFFLINE_POINT_COLUMNS}
    for k in sorted(sets) if order is None else order:
        cams_boxes = sets.get(k, {})
        r = tracker.solve(k, [cams_boxes.get(n, np.zeros((0, 5))) for n in names])
        row = [
            k,
            tc.point_name,
            *r.xyz,
            *r.xyz_filtered,
            *r.xyz_predicted,
            int(r.valid),
            r.reproj_error_px,
            "+".join(r.cameras),
            t_frame.get(k, -1),
            t_trigger.get(k, -1),
            r.reason,
        ]
        for c, v in zip(OFFLINE_POINT_COLUMNS, row):
            out[c].append(v)
    return {c: np.asarray(v) for c, v in out.items()}


def _stats(d: np.ndarray) -> dict[str, Any]:
    d = d[np.isfinite(d)]
    if not d.size:
        return {"n": 0, "median": None, "p95": None, "p99": None, "max": None}
    return {
        "n": int(d.size),
        "median": float(np.median(d)),
        "p95": float(np.percentile(d, 95)),
        "p99": float(np.percentile(d, 99)),
        "max": float(d.max()),
    }


def frames_missing_from_video(session: Session) -> set[int]:
    """Trigger indices with a frame the camera delivered but the recorder could not write (``dropped``):
    the online detector may have seen it, re-detection cannot."""
    return {
        int(k)
        for t in session.frames.values()
        for k, v in zip(t["trigger_index"].tolist(), t["video_index"].tolist())
        if v < 0 and k >= 0
    }


def compare_points(
    pts: dict[str, np.ndarray], session: Session, exclude: Iterable[int] = ()
) -> dict[str, Any]:
    """Offline vs online 3-D (sets both solved, by trigger index; ``exclude``: sets not to compare) and,
    when the session has the simulator's ``truth.csv``, both against the true paw position. In mm."""
    res: dict[str, Any] = {}
    xyz = np.stack([pts[c] for c in "xyz"], 1).astype(float)
    on = session.points3d
    if on and len(on["trigger_index"]):
        k_off = pts["trigger_index"].astype(np.int64)
        _, i_on, i_off = np.intersect1d(on["trigger_index"].astype(np.int64), k_off, return_indices=True)
        # Online, a stereo set still incomplete after pair_timeout_ms is solved with the views it has; the
        # recording holds every detection, so offline such a set may be complete. Compare the rest.
        timed_out = np.array([str(r) == "fewer than 2 views" for r in on["reason"][i_on]]) & (
            pts["valid"][i_off] == 1
        )
        skip = np.isin(pts["trigger_index"][i_off], np.array(sorted(exclude), dtype=np.int64))
        res["online_sets_with_frames_missing_from_video"] = int(skip.sum())
        i_on, i_off = i_on[~timed_out & ~skip], i_off[~timed_out & ~skip]
        a = xyz[i_off]
        b = np.stack([on[c] for c in "xyz"], 1).astype(float)[i_on]
        both = np.isfinite(a).all(1) & np.isfinite(b).all(1)
        agree = pts["valid"][i_off].astype(int) == on["valid"][i_on].astype(int)
        res["online_sets_compared"] = len(i_on)
        res["online_sets_timed_out_completed_offline"] = int(timed_out.sum())
        res["max_abs_diff_vs_online_mm"] = float(np.abs(a[both] - b[both]).max()) if both.any() else None
        res["diff_vs_online_mm"] = _stats(np.linalg.norm(a[both] - b[both], axis=1))
        res["validity_agreement"] = float(agree.mean()) if len(agree) else None
        res["validity_agrees"] = bool(agree.all())
        on_valid = on["valid"][i_on].astype(bool)  # a loaded online pipeline loses sets; offline should not
        res["online_valid_also_valid_offline"] = (
            float(pts["valid"][i_off][on_valid].astype(bool).mean()) if on_valid.any() else None
        )
    if session.truth is not None:
        res["error_vs_truth_mm"] = {
            label: _stats(error_vs_truth_mm(table, session.truth)["raw"])
            for label, table in (("offline", pts), ("online", on))
            if table and len(table.get("trigger_index", []))
        }
    return res


# ----------------------------------------------------------------------------- analyses
TRIAL_COLUMNS = ["trial", "t_start_ns", "t_end_ns", "outcome", "outcome_online", "reaches", "t_removed_fw_us"]


def time_base(session: Session) -> Any:
    """The session's :class:`analysis.tasks.reaching.TimeBase`: trigger times on the firmware clock from
    ``triggers.csv``, ``index / trigger_rate_hz`` for indices it lacks; host times (to place trials) from
    the trigger table, else the frame tables."""
    from analysis.tasks.reaching import TimeBase

    rate = session.meta.get("trigger_rate_hz") or session.config["rig"]["trigger"]["rate_hz"]
    pairs = [
        (t["trigger_index"], t["t_host_ns"])
        for t in session.frames.values()
        if len(t.get("trigger_index", [])) and "t_host_ns" in t
    ]
    host = (np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs])) if pairs else None
    return TimeBase.from_triggers(float(rate), session.extra.get("triggers"), host)


def _trial_events(session: Session) -> dict[int, dict[str, int]]:
    """Per trial, the host times the task logged: ``present`` (wait_response entered), ``removed`` (settle
    entered: the IR sensor saw the pellet go) and ``end`` (trial_end)."""
    out: dict[int, dict[str, int]] = defaultdict(dict)
    for e in session.events:
        if e.get("topic") != "task.event" or not isinstance(e.get("trial"), int):
            continue
        t, when = e.get("t_host_ns", -1), out[e["trial"]]
        if e.get("kind") == "state" and e.get("state") in ("wait_response", "settle"):
            when.setdefault("present" if e["state"] == "wait_response" else "removed", t)
        elif e.get("kind") == "trial_end":
            when.setdefault("end", t)
    return out


def _removal_fw_us(session: Session, t_from_ns: int, t_to_ns: int) -> int | None:
    """Firmware time of the IR sensor's 'pellet gone' the task acted on: the last such event received
    between ``t_from_ns`` and ``t_to_ns`` (host)."""
    best = None
    for e in session.events:
        v = e.get("values") or {}
        if e.get("topic") == "serial.event" and e.get("kind") == "ir" and v.get("pellet_present") == 0:
            t_recv = v.get("t_recv_ns", e.get("t_host_ns", -1))
            if t_from_ns <= t_recv <= t_to_ns and e.get("t_fw_us", -1) >= 0:
                best = int(e["t_fw_us"])
    return best


def classify_trials(session: Session, t_s: np.ndarray, paw_t3: np.ndarray, tb: Any) -> list[dict[str, Any]]:
    """Every trial of ``trials.csv`` scored again by the task's own rule (:func:`rig.task.trial_outcome`)
    on the offline 3-D: paw observations at their trigger times and the pellet's removal at the IR event's
    firmware time, both on the firmware clock; the response window from the task's logged states. Trials
    without a response window (aborted before the pellet was presented) keep their online outcome."""
    from rig.config import ReachingTaskConfig
    from rig.task import trial_outcome

    cfg = ReachingTaskConfig.model_validate(session.config["experiment"]["reaching"])
    events = _trial_events(session)
    d = np.linalg.norm(np.asarray(paw_t3, float) - np.asarray(cfg.pellet_xyz_mm, float), axis=1)
    seen = np.isfinite(d)
    rows = []
    for tr in session.trials:
        n, online = int(tr["trial"]), tr.get("outcome", "")
        when = events.get(n, {})
        row = {
            "trial": n,
            "t_start_ns": int(tr["t_start_ns"]),
            "t_end_ns": int(tr["t_end_ns"]),
            "outcome": online,
            "outcome_online": online,
            "reaches": -1,
            "t_removed_fw_us": -1,
        }
        rows.append(row)
        if online in ("", "aborted") or "present" not in when or "end" not in when:
            continue
        start, end = tb.from_host_ns([when["present"], when["end"]])
        removed_us = _removal_fw_us(session, when["present"], when["removed"]) if "removed" in when else None
        if "removed" in when and removed_us is None:  # no firmware time for it: place the host time
            removed_us = int(tb.from_host_ns([when["removed"]])[0] * 1e6)
        t_stop = removed_us / 1e6 if removed_us is not None else end
        inside = seen & (t_s >= start) & (t_s <= max(end, t_stop))
        near = d[inside] <= cfg.reach_radius_mm
        before = t_s[inside] < t_stop  # reaches count while the pellet waits (wait_response)
        entries = near & ~np.concatenate([[False], near[:-1]])
        reaches = int((entries & before).sum())
        obs = list(zip((t_s[inside] * 1e9).astype(np.int64).tolist(), d[inside].tolist()))
        removed_ns = removed_us * 1000 if removed_us is not None else None
        row.update(
            outcome=trial_outcome(cfg, removed_ns, reaches, obs),
            reaches=reaches,
            t_removed_fw_us=removed_us if removed_us is not None else -1,
        )
    return rows


def run_analyses(session: Session, points_csv: Path, out_dir: Path) -> dict[str, Any]:
    """The task's analyses on the offline 3-D; returns {analysis: summary}. Figures and tables go to
    ``out_dir/<analysis>/`` exactly as the analysis's own command writes them. Every time is a trigger
    time on the firmware clock (:func:`time_base`), never a host arrival time. Trials are scored again
    from the offline 3-D (:func:`classify_trials`) into ``out_dir/trials.csv``; the online table stays as
    recorded."""
    task = session.config.get("experiment", {}).get("task")
    if task != "reaching":
        return {}
    from analysis.tasks.reaching import analyze_reaching, load_points3d, load_trials, session_track

    name = session.config["pipeline"]["triangulator"]["point_name"]
    k, paw = load_points3d(points_csv, name)
    tb = time_base(session)
    trials = None
    out: dict[str, Any] = {}
    if session.trials:
        kf, paw_filt = load_points3d(points_csv, name, filtered=True)
        rows = classify_trials(session, tb.times(kf)[0], paw_filt, tb)
        _write_table(out_dir / "trials.csv", TRIAL_COLUMNS, {c: [r[c] for r in rows] for c in TRIAL_COLUMNS})
        changed = [r for r in rows if r["outcome"] != r["outcome_online"]]
        out["trials"] = {
            "n": len(rows),
            "changed_from_online": len(changed),
            "changes": {str(r["trial"]): f"{r['outcome_online']} -> {r['outcome']}" for r in changed},
        }
        trials = load_trials(out_dir / "trials.csv")
    track = session_track(k, paw, tb, trials)
    for note in track.notes:
        log.warning("%s: %s", session.path, note)
    res = analyze_reaching(track.t_s, track.xyz, track.trials, out_dir=out_dir / "reaching", info=track.info)
    return {"reaching": res["summary"], **out}


# ----------------------------------------------------------------------------- one session
def finished(path: str | Path, options: Options) -> dict[str, Any] | None:
    """The summary of a finished reanalysis done with ``options``, else None."""
    import json

    done = Path(path) / OUT_DIR / "summary.json"
    try:
        summary = json.loads(done.read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("options") == options.record() else None


def _write_table(path: Path, columns: list[str], cols: dict[str, Any]) -> None:
    table = Table(path, columns)
    try:
        for i in range(len(cols[columns[0]])):
            table.write([_fmt(cols[c][i]) for c in columns])
    finally:
        table.close()


def reanalyze_session(
    path: str | Path, force: bool = False, options: Options | None = None
) -> dict[str, Any]:
    """Reanalyse one session folder; returns its summary (also written to ``reanalysis/summary.json``)."""
    options = options or Options()
    p = Path(path)
    if not force and (prev := finished(p, options)) is not None:
        return {**prev, "skipped": True}
    t0 = time.perf_counter()
    s = load_session(p)
    partial = p / PARTIAL_DIR
    shutil.rmtree(partial, ignore_errors=True)  # an earlier attempt's leftovers (failed or killed)
    partial.mkdir()
    progress = Progress(partial)
    progress.start()
    try:
        summary = _reanalyze(s, options, progress, t0)
    finally:
        progress.stop()
    final, old = p / OUT_DIR, p / OLD_DIR
    progress.remove()  # the heartbeat is not part of the result
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return summary


def _reanalyze(s: Session, options: Options, progress: Progress, t0: float) -> dict[str, Any]:
    """The work of :func:`reanalyze_session` for a loaded session, written into its partial folder."""
    p, partial = s.path, s.path / PARTIAL_DIR
    timings: dict[str, float] = {}
    lost: dict[str, dict[str, int]] = {}
    rstats: dict[str, Any] = {}
    if options.redetect:
        decoded: dict[str, int] = {}
        progress.update(stage="detect", frames_total=sum(frames_in_table(s, c) for c in s.frames))
        if BATCHED or options.device != "cpu":
            det = redetect_batched(
                s, options.model, decoded, progress.add_frames, options.device, stats=rstats
            )
        else:
            det = redetect(s, options.model, decoded, progress.add_frames)
            rstats["path"] = "reference (detection.online.OnlineDetector per stereo set)"
        lost = truncated_videos(s, decoded)
        if lost and not options.accept_partial:
            raise truncation_error(s, lost)
        order = None
    else:
        if not s.detections:
            raise InputError(f"{p}: no detections.csv to reanalyse (use --detect to detect from the videos)")
        det, order = s.detections, ([int(k) for k in s.points3d["trigger_index"]] if s.points3d else None)
    timings["detections_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    progress.update(stage="triangulate")
    pts = triangulate_sets(s, det, order)
    timings["triangulation_s"] = time.perf_counter() - t1
    progress.update(stage="write")
    if options.redetect:
        _write_table(partial / "detections.csv", DETECTION_COLUMNS, det)
    _write_table(partial / "points3d.csv", OFFLINE_POINT_COLUMNS, pts)
    t2 = time.perf_counter()
    progress.update(stage="analyses")
    analyses = run_analyses(s, partial / "points3d.csv", partial) if options.analyses else {}
    timings["analyses_s"] = time.perf_counter() - t2
    # detections.csv has a row per box (or per empty frame): count frames, not rows
    n_frames = len({(c, int(q)) for c, q in zip(det["camera"], det["seq"])}) if options.redetect else 0
    seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "session": str(p),
        "options": options.record(),
        "worker": f"{socket.gethostname()} pid {os.getpid()}",
        "n_points": len(pts["trigger_index"]),
        "valid": int(pts["valid"].sum()),
        "frames_detected": n_frames,
        # frames the tables list as recorded that the videos lack (truncated videos); only with re-detection
        "frames_missing_from_video": {c: lost.get(c, {}).get("missing", 0) for c in s.frames}
        if options.redetect
        else None,
        "partial": bool(lost),
        "frames_per_s": n_frames / seconds if n_frames else None,
        "seconds": round(seconds, 3),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "redetection": rstats or None,
        **compare_points(pts, s, frames_missing_from_video(s) if options.redetect else set()),
        "analyses": analyses,
    }
    progress.check_owner()  # a worker given up for dead must not put its result over the retry's
    write_json_atomic(partial / "summary.json", summary)  # last: its presence means finished
    return summary


def _run_one(path: str, force: bool, options: Options) -> dict[str, Any]:
    """A Dask task: a session's failure comes back as ``{"error": one line}`` (plus the traceback when it
    is not a user error), so the worker does not log it as a crash and the batch goes on. The reason is
    also left in the session's folder (:func:`record_failure`) for ``--status``."""
    try:
        return reanalyze_session(path, force, options)
    except Exception as exc:  # one session's failure, whatever it is, must not stop the batch
        text = str(exc).strip()
        out = {"error": f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"}
        if not isinstance(exc, UserError):
            out["traceback"] = traceback.format_exc()
        if not isinstance(exc, Superseded):
            record_failure(path, out["error"])
        return out


# ----------------------------------------------------------------------------- progress and status
HEARTBEAT_S = 2.0  # how often a running session rewrites its progress.json
STALE_S = 30.0  # a progress.json not rewritten for this long: its worker is gone
PROGRESS_FILE = "progress.json"
FAILED_FILE = "failed.json"


class Superseded(RuntimeError):
    """Another attempt at the same session took over its partial folder (this worker was given up)."""


class Progress:
    """A running session's ``.reanalysis.partial/progress.json``, rewritten every ``HEARTBEAT_S`` by a
    thread: host, pid, this attempt's id, stage (load, detect, triangulate, write, analyses), camera
    frames detected of ``frames_total``, ``t_detect_start`` and ``t_updated`` (Unix s)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / PROGRESS_FILE
        now = time.time()
        self.attempt = uuid.uuid4().hex
        self._state: dict[str, Any] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "attempt": self.attempt,
            "stage": "load",
            "frames_done": 0,
            "frames_total": None,
            "t_start": now,
            "t_detect_start": None,
        }
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="reanalysis-progress", daemon=True)

    def start(self) -> None:
        self._write()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def update(self, **kw: Any) -> None:
        with self._lock:
            if kw.get("stage") == "detect":
                self._state["t_detect_start"] = time.time()
            self._state.update(kw)

    def add_frames(self, n: int) -> None:
        with self._lock:
            self._state["frames_done"] += n

    def check_owner(self) -> None:
        """Raise :class:`Superseded` when the progress file is another attempt's."""
        owner = _read_json(self.path).get("attempt")
        if owner is not None and owner != self.attempt:
            raise Superseded(f"{self.path.parent.parent}: another worker took this session over")

    def remove(self) -> None:
        for f in (self.path, self.path.with_name(self.path.name + ".tmp")):
            f.unlink(missing_ok=True)

    def _write(self) -> None:
        with self._lock:
            state = {**self._state, "t_updated": time.time()}
        write_json_atomic(self.path, state)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.check_owner()
                self._write()
            except (OSError, Superseded):  # the folder went (renamed, retried elsewhere): stop beating
                return


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_failure(path: str | Path, error: str) -> None:
    """Leave a failed attempt's one-line reason in ``<session>/.reanalysis.partial/failed.json``, where
    the folder exists and may be written (never creates the session folder)."""
    p = Path(path)
    if not p.is_dir():
        return
    try:
        (p / PARTIAL_DIR).mkdir(exist_ok=True)
        write_json_atomic(
            p / PARTIAL_DIR / FAILED_FILE,
            {"error": error, "host": socket.gethostname(), "t_failed": time.time()},
        )
    except OSError as exc:
        log.warning("%s: cannot record the failure (%s)", p, exc)


def session_progress(path: str | Path) -> dict[str, Any] | None:
    """A running session's progress (``progress.json``) with ``frames_per_s`` and ``eta_s`` added where
    detection has started; None when it has none."""
    prog = _read_json(Path(path) / PARTIAL_DIR / PROGRESS_FILE)
    if not prog:
        return None
    done, total, t0 = prog.get("frames_done", 0), prog.get("frames_total"), prog.get("t_detect_start")
    fps = done / (prog["t_updated"] - t0) if t0 and done and prog.get("t_updated", 0) > t0 else None
    prog["frames_per_s"] = fps
    prog["eta_s"] = (total - done) / fps if fps and total is not None and prog["stage"] == "detect" else None
    return prog


def session_status(path: str | Path, now: float | None = None) -> dict[str, Any]:
    """What a session's folder says about its reanalysis: ``{"state": ..., "detail": one line}`` with
    state ``running`` (progress rewritten within ``STALE_S``), ``failed`` (a recorded failure, or a
    worker that stopped rewriting its progress: killed), ``done`` (a finished ``summary.json``), ``not
    started``, or ``not a session`` (no session.json)."""
    p = Path(path)
    now = time.time() if now is None else now
    if not (p / "session.json").is_file():
        return {"state": "not a session", "detail": "no session.json"}
    summary = _read_json(p / OUT_DIR / "summary.json")
    earlier = " (an earlier result is in reanalysis/)" if summary else ""
    failed = _read_json(p / PARTIAL_DIR / FAILED_FILE)
    if failed:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(failed.get("t_failed", 0)))
        return {
            "state": "failed",
            "detail": f"{failed.get('error', '?')} [{failed.get('host')}, {when}]{earlier}",
        }
    prog = session_progress(p)
    if prog is not None:
        age = now - prog.get("t_updated", 0)
        where = f"{prog.get('host')} pid {prog.get('pid')}"
        if age > STALE_S:
            return {
                "state": "failed",
                "detail": f"interrupted: the worker ({where}) stopped {age:.0f} s ago in stage "
                f"{prog.get('stage')} (killed?); run it again{earlier}",
            }
        detail = f"{prog.get('stage')} on {where}"
        if prog.get("frames_total"):
            detail += f", {prog['frames_done']}/{prog['frames_total']} frames"
        if prog.get("frames_per_s"):
            detail += f", {prog['frames_per_s']:.0f} frames/s"
        if prog.get("eta_s") is not None:
            detail += f", ETA {_hms(prog['eta_s'])}"
        return {"state": "running", "detail": detail}
    if summary:
        opts = summary.get("options", {})
        what = "re-detected" if opts.get("detect") else "re-triangulated"
        fps = f", {summary['frames_per_s']:.0f} frames/s" if summary.get("frames_per_s") else ""
        return {
            "state": "done",
            "detail": f"{what}, {summary.get('valid')}/{summary.get('n_points')} valid 3-D points in "
            f"{summary.get('seconds', 0):.1f} s{fps}" + (" (PARTIAL)" if summary.get("partial") else ""),
        }
    return {"state": "not started", "detail": ""}


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return "" if math.isnan(v) else f"{float(v):.10g}"
    return str(v)


# ----------------------------------------------------------------------------- the batch
def slurm_options(
    queue: str | None = None, memory: str = "4GB", walltime: str = "01:00:00", cores: int = 1
) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster``: one single-threaded worker per job."""
    kw: dict[str, Any] = {"cores": cores, "processes": 1, "memory": memory, "walltime": walltime}
    if queue:
        kw["queue"] = queue
    return kw


def _client(scheduler: str | None, n_workers: int, slurm: dict[str, Any] | None) -> tuple[Any, Any]:
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="30s"), None
        except OSError as exc:
            raise UserError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
    if slurm is not None:
        if shutil.which("sbatch") is None:
            raise UserError("--slurm: sbatch not found (run from a SLURM login node, or use --scheduler)")
        from dask_jobqueue import SLURMCluster

        cluster: Any = SLURMCluster(**slurm)
        log.info("SLURM job script:\n%s", cluster.job_script())
        cluster.scale(n_workers)
        return Client(cluster), cluster
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=None, processes=True)
    return Client(cluster), cluster


ProgressCallback = Callable[[int, int, dict[str, dict[str, Any]]], None]
RESCALE_S = 10.0  # how often a SLURM batch asks for its workers again (replacing jobs that ended)


def run_batch(
    sessions: Iterable[str | Path],
    scheduler: str | None = None,
    n_workers: int = 2,
    force: bool = False,
    progress: ProgressCallback | None = None,
    slurm: dict[str, Any] | None = None,
    options: Options | None = None,
) -> dict[str, dict[str, Any]]:
    """Reanalyse sessions on a Dask cluster (a local one by default, the one at ``scheduler``, or SLURM
    jobs with ``slurm`` keyword arguments); returns {session: summary, or {"error": one line}}.
    Finished sessions are skipped without a worker; a failing session does not stop the others. A session
    whose worker dies (killed, out of memory, a SLURM job cancelled) is run again on another worker by
    the scheduler; on SLURM, ended worker jobs are replaced. ``progress(done, total, running)`` is called
    about once a second, ``running`` being {session: :func:`session_progress`} of the sessions in a
    worker now."""
    from dask.distributed import wait

    options = options or Options()
    paths = list(dict.fromkeys(str(Path(s).resolve()) for s in sessions))
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for p in paths:
        prev = None if force else finished(p, options)
        if prev is not None:
            results[p] = {**prev, "skipped": True}
        else:
            todo.append(p)
    if progress:
        progress(len(results), len(paths), {})
    if not todo:
        return results
    n_workers = min(n_workers, len(todo))  # no idle workers (or SLURM jobs)
    client, cluster = _client(scheduler, n_workers, slurm)
    try:
        futures = {client.submit(_run_one, p, force, options, pure=False): p for p in todo}
        by_key = {f.key: p for f, p in futures.items()}
        pending = set(futures)
        rescaled = time.monotonic()
        while pending:
            try:
                done, pending = wait(pending, timeout=1.0, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            for fut in done:
                p = futures[fut]
                try:
                    results[p] = fut.result()
                except Exception as exc:  # the worker died too often (KilledWorker) or the task was lost
                    results[p] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
                    record_failure(p, results[p]["error"])
            if slurm is not None and time.monotonic() - rescaled > RESCALE_S:
                cluster.scale(n_workers)  # a job that ended (scancel, walltime) is submitted again
                rescaled = time.monotonic()
            if progress:
                running = {}
                if pending:
                    keys = {k for ks in client.processing().values() for k in ks}
                    running = {
                        by_key[k]: prog
                        for k in keys
                        if k in by_key and (prog := session_progress(by_key[k])) is not None
                    }
                progress(len(results), len(paths), running)
    finally:
        if cluster is not None:
            _stop_workers(client, cluster)
        client.close()
        if cluster is not None:
            cluster.close()
    return {p: results[p] for p in paths}


def _stop_workers(client: Any, cluster: Any, timeout_s: float = 20.0) -> None:
    """Close a cluster's workers while its scheduler still runs: a worker whose heartbeat meets a closed
    scheduler logs a traceback into the batch's output."""
    try:
        cluster.scale(0)
        end = time.monotonic() + timeout_s
        while client.scheduler_info(n_workers=-1)["workers"] and time.monotonic() < end:
            time.sleep(0.1)
    except Exception as exc:  # closing is best effort: cluster.close() follows whatever happened here
        log.debug("stopping the workers before the scheduler: %s", exc)
