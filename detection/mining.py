"""Hard-frame mining: run a detector over recorded frames and queue the hardest for labeling.

* **A session folder** (:func:`mine_session`, the active-learning loop's step): the model runs on every
  camera's video; frames are paired across cameras by trigger index (``<camera>.frames.csv``) and, per
  class (box model) or body part (keypoint model), the best detection of each view is triangulated with the
  session's ``calibration.yaml``. A frame is queued where **the views disagree** (the 3-D point reprojects
  more than ``reproj_px`` from a view's detection), where **a part is seen in some views only** (at the
  model's operating threshold), or where **confidence is low** (a detection below that threshold). A part
  no view sees is not scored: the model alone cannot tell an absent animal from a miss (``detect extract``
  covers those frames).
* **One video** (:func:`mine_video`): low confidence, no detection, several detections of a
  single-instance class, implausible jumps.

Either way the hardest frames (spread out in time) are written as PNGs with a list (``queue.csv`` for a
session: ``image, camera, frame, trigger_index, reason, score``; ``queue.json`` for one video) that
``detect label`` opens.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from analysis.camera import CameraModel, load_calibration
from analysis.errors import AnalysisError
from analysis.geometry import reprojection_errors, triangulate
from analysis.io.rig_session import read_session_meta
from detection.base import Det, DetectionError, Runner

log = logging.getLogger(__name__)


@dataclass
class FrameScore:
    frame: int
    score: float
    reasons: list[str]


def score_frames(dets: list[list[Det]], n_classes: int = 1, jump_px: float = 50.0) -> list[FrameScore]:
    """Per frame: +1 per class with no box, +1 per extra box of a class, +(1 - best confidence), +1 for a
    jump of the best box centre by more than ``jump_px`` from the previous frame's."""
    out: list[FrameScore] = []
    prev: dict[int, tuple[float, float]] = {}
    for i, ds in enumerate(dets):
        s, why = 0.0, []
        for c in range(n_classes):
            cb = sorted((d for d in ds if d.class_id == c), key=lambda d: -d.confidence)
            if not cb:
                s += 1.0
                why.append(f"class {c}: missing")
                prev.pop(c, None)
                continue
            if len(cb) > 1:
                s += len(cb) - 1
                why.append(f"class {c}: {len(cb)} boxes")
            s += 1.0 - cb[0].confidence
            if cb[0].confidence < 0.5:
                why.append(f"class {c}: low confidence {cb[0].confidence:.2f}")
            ctr = cb[0].center()
            if c in prev and np.hypot(ctr[0] - prev[c][0], ctr[1] - prev[c][1]) > jump_px:
                s += 1.0
                why.append(f"class {c}: jump")
            prev[c] = ctr
        out.append(FrameScore(i, s, why))
    return out


def pick_hard(scores: list[FrameScore], n: int, min_gap: int = 5) -> list[FrameScore]:
    """The ``n`` highest-scoring frames at least ``min_gap`` frames apart."""
    chosen: list[FrameScore] = []
    for fs in sorted(scores, key=lambda f: (-f.score, f.frame)):
        if fs.score <= 0:
            break
        if all(abs(fs.frame - c.frame) >= min_gap for c in chosen):
            chosen.append(fs)
        if len(chosen) >= n:
            break
    return sorted(chosen, key=lambda f: f.frame)


def mine_video(runner: Runner, video: str | Path, out_dir: str | Path, n: int = 50, n_classes: int = 1,
               stride: int = 1, jump_px: float = 50.0) -> Path:  # fmt: skip
    """Detect on every ``stride``-th frame; write the hardest frames as PNGs and ``queue.json`` (frame,
    score, reasons) into ``out_dir`` for the labeling tool. Returns the queue file."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise DetectionError(f"cannot open video {video}")
    frames: dict[int, np.ndarray] = {}
    dets: list[list[Det]] = []
    idx: list[int] = []
    i = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if i % stride == 0:
            dets.append(runner.infer([img])[0])
            idx.append(i)
            frames[i] = img
        i += 1
    cap.release()
    if not idx:
        raise DetectionError(f"video {video} has no readable frames")
    scores = score_frames(dets, n_classes, jump_px)
    for s in scores:
        s.frame = idx[s.frame]
    hard = pick_hard(scores, n, min_gap=5 * stride)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for h in hard:
        cv2.imwrite(str(out / f"frame{h.frame:06d}.png"), frames[h.frame])
    q = out / "queue.json"
    q.write_text(json.dumps({"video": str(video), "frames": [asdict(h) for h in hard]}, indent=1) + "\n")
    log.info("mined %d hard frames of %d from %s", len(hard), len(idx), video)
    return q


# -- a session folder: the views against each other ---------------------------------------------------


@dataclass
class ViewIssue:
    """Why one camera's image of one trigger is worth labeling."""

    camera: str
    reason: str
    score: float


@dataclass
class TriggerScore:
    """A trigger's score, its issues, and per class/body part seen in two or more views the largest
    reprojection error of its 3-D point (px)."""

    trigger_index: int
    score: float
    issues: list[ViewIssue] = field(default_factory=list)
    reproj_px: dict[str, float] = field(default_factory=dict)


def summary_lines(scores: Sequence[TriggerScore], names: Sequence[str], reproj_px: float) -> list[str]:
    """What tells a lab whether another round is worth it: per class/body part, how often the views agree
    and the reprojection error; how many triggers have an issue, by kind."""
    lines = []
    n = len(scores)
    for name in names:
        err = np.array([s.reproj_px[name] for s in scores if name in s.reproj_px])
        if err.size:
            agree = float((err <= reproj_px).mean())
            med, p90 = np.median(err), np.percentile(err, 90)
            lines.append(
                f"{name}: seen in 2+ views on {err.size}/{n} triggers; views agree (<= {reproj_px:g} px) on "
                f"{100 * agree:.1f}%; reprojection median {med:.2f} px, p90 {p90:.2f} px"
            )
        else:
            lines.append(f"{name}: never seen in two views")
    kinds = {"views disagree": 0, "seen in one view only": 0, "low confidence": 0}
    for s in scores:
        why = " ".join(i.reason for i in s.issues)
        kinds["views disagree"] += "disagree" in why
        kinds["seen in one view only"] += " only" in why
        kinds["low confidence"] += "low confidence" in why
    flagged = sum(1 for s in scores if s.score > 0)
    detail = ", ".join(f"{k} {v}" for k, v in kinds.items())
    lines.append(f"triggers with an issue: {flagged}/{n} ({100 * flagged / max(n, 1):.1f}%): {detail}")
    return lines


def _best(ds: Sequence[Det], c: int) -> Det | None:
    cand = [d for d in ds if d.class_id == c]
    return max(cand, key=lambda d: d.confidence) if cand else None


def score_views(
    dets: Mapping[str, Mapping[int, Sequence[Det]]],
    cameras: Mapping[str, CameraModel],
    names: Sequence[str],
    threshold: float,
    reproj_px: float = 10.0,
) -> list[TriggerScore]:
    """Score every trigger all cameras have detections for (``dets``: camera -> trigger index -> boxes,
    confidence down to a floor below ``threshold``). Per class/body part ``c`` (``names[c]``), with each
    view's best box:

    * seen (confidence >= ``threshold``) in two or more views: triangulated; a view whose detection is more
      than ``reproj_px`` from the 3-D point's reprojection adds ``error / reproj_px``, reason "views
      disagree";
    * seen in some views only: each view adds 1, reason "seen in <cams> only";
    * a best box below ``threshold``: adds ``1 - confidence / threshold``, reason "low confidence".

    A trigger's score is the sum over its views and classes; returned in trigger order."""
    cams = list(dets)
    if len(cams) < 2:
        raise DetectionError(f"mining by view agreement needs two or more cameras, got {cams}")
    common = sorted(set.intersection(*(set(dets[c]) for c in cams)))
    out = []
    for k in common:
        ts = TriggerScore(k, 0.0)
        for c, name in enumerate(names):
            best = {cam: _best(dets[cam][k], c) for cam in cams}
            seen = [cam for cam in cams if (b := best[cam]) is not None and b.confidence >= threshold]
            for cam in cams:
                b = best[cam]
                if b is not None and b.confidence < threshold:
                    sc = 1.0 - b.confidence / threshold if threshold > 0 else 0.0
                    ts.issues.append(ViewIssue(cam, f"{name}: low confidence {b.confidence:.2f}", sc))
            if 0 < len(seen) < len(cams):
                why = f"{name}: seen in {'+'.join(seen)} only"
                ts.issues += [ViewIssue(cam, why, 1.0) for cam in cams]
            if len(seen) >= 2:
                seen_boxes = [b for cam in seen if (b := best[cam]) is not None]
                pts = np.array([[b.center()] for b in seen_boxes])  # (C, 1, 2)
                models = [cameras[cam] for cam in seen]
                x = triangulate(models, pts)
                err = reprojection_errors(models, x, pts)[:, 0]
                ts.reproj_px[name] = float(np.nanmax(err))
                if np.nanmax(err) > reproj_px:
                    why = f"{name}: views disagree (reprojection {np.nanmax(err):.1f} px)"
                    ts.issues += [ViewIssue(cam, why, float(np.nanmax(err)) / reproj_px) for cam in seen]
        ts.score = sum(i.score for i in ts.issues)
        out.append(ts)
    return out


def pick_hard_triggers(scores: Sequence[TriggerScore], n: int, min_gap: int) -> list[TriggerScore]:
    """The ``n`` highest-scoring triggers at least ``min_gap`` triggers apart, in trigger order."""
    chosen: list[TriggerScore] = []
    for ts in sorted(scores, key=lambda t: (-t.score, t.trigger_index)):
        if ts.score <= 0 or len(chosen) >= n:
            break
        if all(abs(ts.trigger_index - c.trigger_index) >= min_gap for c in chosen):
            chosen.append(ts)
    return sorted(chosen, key=lambda t: t.trigger_index)


def read_frame_table(path: Path) -> dict[int, int]:
    """``<camera>.frames.csv`` -> {video index: trigger index} of the frames in the video (a torn last
    line, as a crash leaves, is ignored)."""
    if not path.is_file():
        raise DetectionError(f"{path}: no such frame table")
    out: dict[int, int] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"trigger_index", "video_index"} - set(reader.fieldnames or [])
        if missing:
            raise DetectionError(f"{path}: not a frame table (no {', '.join(sorted(missing))} column)")
        for row in reader:
            try:
                vi, ti = int(row["video_index"]), int(row["trigger_index"])
            except (TypeError, ValueError):
                continue
            if vi >= 0:
                out[vi] = ti
    return out


def _luma_frames(video: Path) -> Iterator[tuple[int, np.ndarray]]:
    """(video index, (H, W) uint8) of every frame: the luma plane, which is the rig's Mono8 frame."""
    import av

    try:
        container = av.open(str(video))
    except (av.error.FFmpegError, OSError) as e:
        raise DetectionError(f"{video}: cannot open video: {e}") from None
    with container:
        for i, frame in enumerate(container.decode(video=0)):
            plane = frame.planes[0]
            img = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
            yield i, img[: frame.height, : frame.width].copy()


@dataclass
class SessionMining:
    queue: Path
    triggers: int  # triggers scored (every camera has the frame)
    chosen: list[TriggerScore]
    rows: int  # images queued
    summary: list[str]  # summary_lines()


def mine_session(
    runner: Runner | Callable[[str], Runner],
    session: str | Path,
    out_dir: str | Path,
    names: Sequence[str],
    threshold: float,
    n: int = 50,
    stride: int = 1,
    reproj_px: float = 10.0,
) -> SessionMining:
    """Run the model on every ``stride``-th trigger of every camera of a session folder, score the views
    against each other (:func:`score_views`), and write the ``n`` hardest triggers (at least ``5 * stride``
    apart) as ``<camera>_frame<video index>.png`` (the views with an issue) and ``queue.csv`` (``image,
    camera, frame, trigger_index, reason, score``; hardest first) into ``out_dir``. ``runner``: one runner
    for every camera, or a function camera -> runner. ``threshold``: the model's operating confidence (the
    runner must return boxes below it, down to a floor, for "low confidence" to be seen)."""
    folder = Path(session)
    meta = read_session_meta(folder, DetectionError)
    cams = list(meta["cameras"])
    if len(cams) < 2:
        raise DetectionError(f"{folder}: one camera ({cams}); mine its video instead (MODEL VIDEO OUT)")
    try:
        calib = load_calibration(folder / "calibration.yaml")
        models = {c: calib[c] for c in cams}
    except AnalysisError as e:
        raise DetectionError(str(e)) from None
    tables = {c: read_frame_table(folder / f"{c}.frames.csv") for c in cams}
    wanted = set.intersection(*(set(t.values()) for t in tables.values()))
    wanted = {k for k in wanted if k % stride == 0}
    if not wanted:
        raise DetectionError(f"{folder}: no trigger has a recorded frame in every camera ({', '.join(cams)})")
    dets: dict[str, dict[int, list[Det]]] = {}
    for cam in cams:
        r = runner(cam) if callable(runner) and not isinstance(runner, Runner) else runner
        dets[cam] = {}
        for vi, img in _luma_frames(folder / f"{cam}.mkv"):
            k = tables[cam].get(vi)
            if k in wanted:
                dets[cam][k] = r.infer([img])[0]
        log.info("%s: %d frames detected", cam, len(dets[cam]))
    scores = score_views(dets, models, names, threshold, reproj_px)
    chosen = pick_hard_triggers(scores, n, min_gap=5 * stride)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[float, str, str, int, int, str]] = []
    for cam in cams:
        need = {}
        for ts in chosen:
            mine = [i for i in ts.issues if i.camera == cam]
            if mine:
                need[ts.trigger_index] = mine
        if not need:
            continue
        vi_of = {k: vi for vi, k in tables[cam].items()}
        todo = {vi_of[k]: k for k in need}
        for vi, img in _luma_frames(folder / f"{cam}.mkv"):
            if vi in todo:
                name = f"{cam}_frame{vi:06d}.png"
                if not cv2.imwrite(str(out / name), img):
                    raise DetectionError(f"{out / name}: cannot write")
                iss = need[todo.pop(vi)]
                reason = "; ".join(dict.fromkeys(i.reason for i in iss))
                rows.append((sum(i.score for i in iss), name, cam, vi, tables[cam][vi], reason))
                if not todo:
                    break
    rows.sort(key=lambda r: (-r[0], r[4], r[2]))
    q = out / "queue.csv"
    with q.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image", "camera", "frame", "trigger_index", "reason", "score"])
        w.writerows([[name, cam, vi, k, why, f"{sc:.3f}"] for sc, name, cam, vi, k, why in rows])
    log.info("mined %d triggers (%d images) of %d from %s", len(chosen), len(rows), len(scores), folder)
    return SessionMining(q, len(scores), chosen, len(rows), summary_lines(scores, names, reproj_px))
