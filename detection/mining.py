"""Hard-frame mining: run a detector over a video, score each frame by how hard it looks (low
confidence, no detection, several detections of a single-instance class, implausible jumps), and queue
the hardest (spread out in time) for labeling."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

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
