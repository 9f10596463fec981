"""Frame extraction for labeling: pick diverse frames from videos by k-means over downscaled frames (the
seed recommends 200-600 frames to start): one frame per cluster, the one nearest its centre. From one
video, or from every camera's video of a rig session folder (:func:`extract_session`)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from detection.base import DetectionError

log = logging.getLogger(__name__)


def extract_diverse(video: str | Path, out_dir: str | Path, n: int = 200, stride: int = 1,
                    thumb: int = 32, seed: int = 0) -> list[Path]:  # fmt: skip
    """Read every ``stride``-th frame, k-means (``n`` clusters) the ``thumb`` x ``thumb`` gray
    thumbnails, write the frame nearest each centre as ``<video stem>_frame<index>.png``."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise DetectionError(f"cannot open video {video}")
    thumbs, idx = [], []
    i = 0
    while True:
        ok = cap.grab()
        if not ok:
            break
        if i % stride == 0:
            ok, img = cap.retrieve()
            if ok:
                g = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
                thumbs.append(cv2.resize(g, (thumb, thumb), interpolation=cv2.INTER_AREA).ravel())
                idx.append(i)
        i += 1
    cap.release()
    if not idx:
        raise DetectionError(f"video {video} has no readable frames")
    x = np.asarray(thumbs, np.float32)
    x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)
    k = min(n, len(idx))
    cv2.setRNGSeed(seed)
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-3)
    _c, labels, centers = cv2.kmeans(x, k, None, crit, 2, cv2.KMEANS_PP_CENTERS)
    chosen = []
    for c in range(k):
        members = np.nonzero(labels.ravel() == c)[0]
        if members.size:
            d = np.linalg.norm(x[members] - centers[c], axis=1)
            chosen.append(idx[int(members[np.argmin(d)])])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(chosen)
    paths = []
    cap = cv2.VideoCapture(str(video))
    i = 0
    while wanted:
        ok, img = cap.read()
        if not ok:
            break
        if i in wanted:
            p = out / f"{Path(video).stem}_frame{i:06d}.png"
            cv2.imwrite(str(p), img)
            paths.append(p)
            wanted.discard(i)
        i += 1
    cap.release()
    log.info("extracted %d diverse frames of %d from %s", len(paths), len(idx), video)
    return sorted(paths)


def extract_session(
    session: str | Path, out_dir: str | Path, n: int = 20, stride: int = 1, seed: int = 0
) -> list[Path]:
    """``n`` diverse frames from each camera's video (``<camera>.mkv``) of a session folder, written as
    ``<camera>_frame<video index>.png`` into ``out_dir`` (one folder: the session's ``labeled-data/``
    folder)."""
    from analysis.io.rig_session import read_session_meta

    folder = Path(session)
    meta = read_session_meta(folder, DetectionError)
    paths: list[Path] = []
    for cam in meta["cameras"]:
        video = folder / f"{cam}.mkv"
        if not video.is_file():
            raise DetectionError(f"{folder}: camera {cam!r} has no video ({video.name})")
        paths += extract_diverse(video, out_dir, n=n, stride=stride, seed=seed)
    return paths
