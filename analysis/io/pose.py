"""Pose-estimation outputs -> :class:`PoseTable` (frames x individuals x keypoints).

* OpenPose JSON (one ``*_keypoints.json`` per frame; BODY_25 / COCO body, 21-point hands, face; several
  people; a keypoint at (0, 0, 0) is missing),
* DeepLabCut ``.csv`` / ``.h5`` (single animal: scorer/bodyparts/coords; multi-animal:
  scorer/individuals/bodyparts/coords; 2-D with likelihood or 3-D x, y, z),
* SLEAP analysis HDF5 (``tracks``, ``node_names``, ``track_names``, ``point_scores``),
* SLEAP labels/predictions ``.slp`` (read with sleap-io; several tracks, user and predicted instances,
  several videos).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from analysis.errors import ImportFormatError
from analysis.io._util import load_json
from analysis.textfile import read_text

log = logging.getLogger(__name__)

BODY_25 = [
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip", "RHip",
    "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar", "LBigToe", "LSmallToe",
    "LHeel", "RBigToe", "RSmallToe", "RHeel",
]  # fmt: skip
COCO_18 = [
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip", "RKnee",
    "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
]  # fmt: skip
HAND_21 = ["Wrist"] + [f"{f}{j}" for f in ("Thumb", "Index", "Middle", "Ring", "Pinky") for j in range(1, 5)]
OPENPOSE_PARTS = {
    "pose": "pose_keypoints_2d",
    "hand_left": "hand_left_keypoints_2d",
    "hand_right": "hand_right_keypoints_2d",
    "face": "face_keypoints_2d",
}
_PART_SIZES = {"hand_left": 21, "hand_right": 21, "face": 70}


@dataclass
class PoseTable:
    """Keypoints of I individuals over T frames.

    ``points`` (T, I, K, D) with D = 2 (pixels) or 3 (3-D units of the source); NaN = missing.
    ``confidence`` (T, I, K) in [0, 1] (NaN where the source has none, e.g. 3-D). ``frames`` (T,) frame
    indices (or the source's row index); ``bodyparts`` (K,) and ``individuals`` (I,) names.
    """

    points: np.ndarray
    confidence: np.ndarray
    bodyparts: list[str]
    individuals: list[str]
    frames: np.ndarray
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.points.shape[0])

    def part(self, name: str, individual: str | int = 0) -> np.ndarray:
        """(T, D) trajectory of one body part of one individual."""
        if name not in self.bodyparts:
            raise ImportFormatError(f"{self.source}: no body part {name!r} (has {', '.join(self.bodyparts)})")
        i = individual if isinstance(individual, int) else self.individuals.index(individual)
        return self.points[:, i, self.bodyparts.index(name)]

    def contiguous(self) -> PoseTable:
        """This table with one row per frame index from the first to the last (rows the source lacks are
        NaN), so that row k is frame ``frames[0] + k``; itself when the frames already are contiguous or are
        not integer indices. Per-row arrays in ``meta`` are not expanded (they are dropped)."""
        f = np.asarray(self.frames)
        if len(f) < 2 or not np.issubdtype(f.dtype, np.integer):
            return self
        if np.any(np.diff(f) <= 0):
            raise ImportFormatError(f"{self.source}: frame indices are not increasing")
        if f[-1] - f[0] + 1 == len(f):
            return self
        rows = f - f[0]
        points = np.full((int(rows[-1]) + 1, *self.points.shape[1:]), np.nan)
        conf = np.full(points.shape[:3], np.nan)
        points[rows], conf[rows] = self.points, self.confidence
        meta = {k: v for k, v in self.meta.items() if not (isinstance(v, np.ndarray) and len(v) == len(f))}
        return replace(self, points=points, confidence=conf, frames=np.arange(f[0], f[-1] + 1), meta=meta)

    def check_frame_count(self, n_frames: int, what: str = "video") -> None:
        """Raise if this table's frame count disagrees with ``n_frames`` of ``what`` (a video path)."""
        if self.n_frames != n_frames:
            raise ImportFormatError(
                f"{self.source}: {self.n_frames} frames of keypoints but {what} has {n_frames} frames"
            )


def video_frame_count(path: str | Path) -> int:
    """Number of frames in a video, counted by decoding (container counts can be wrong)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ImportFormatError(f"{path}: cannot open video")
    n = 0
    try:
        while cap.grab():
            n += 1
    finally:
        cap.release()
    return n


# ------------------------------------------------------------------------------------------- OpenPose
def _openpose_files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(source, (str, Path)):
        src = Path(source)
        if src.is_dir():
            files = sorted(src.glob("*_keypoints.json")) or sorted(src.glob("*.json"))
        elif src.is_file():
            files = [src]
        else:
            raise ImportFormatError(f"{src}: no such file or folder")
    else:
        files = [Path(p) for p in source]
    if not files:
        raise ImportFormatError(f"{source}: no OpenPose *_keypoints.json files")
    return files


_NUMBER_AT_END = re.compile(r"(\d+)(?:_keypoints)?$")


def frame_numbers(names: Sequence[str]) -> np.ndarray | None:
    """The frame number each file or image name ends with (``clip_000000000012_keypoints.json`` -> 12,
    ``labeled-data/m4s1/img0027.png`` -> 27), or None unless every name has one and they are distinct."""
    numbers = []
    for name in names:
        m = _NUMBER_AT_END.search(Path(str(name)).stem)
        if m is None:
            return None
        numbers.append(int(m.group(1)))
    if len(set(numbers)) != len(numbers):
        return None
    return np.array(numbers, dtype=np.int64)


def read_openpose(
    source: str | Path | Sequence[str | Path],
    parts: Sequence[str] = ("pose", "hand_left", "hand_right"),
    max_people: int | None = None,
) -> PoseTable:
    """OpenPose JSON files (a folder or a list) -> :class:`PoseTable`.

    ``frames`` are the numbers the file names end with (``<name>_000000000012_keypoints.json`` -> 12),
    rows in that order; a folder whose names lack distinct numbers is taken in name order as 0, 1, ...
    Frames OpenPose skipped stay absent (:meth:`PoseTable.contiguous` puts NaN rows in their place).

    ``parts`` selects keypoint groups (``pose``, ``hand_left``, ``hand_right``, ``face``); body part names
    are ``Nose``... for BODY_25/COCO and ``hand_left_Wrist``... for hands. People keep OpenPose's order in
    each file (OpenPose does not track identities); individuals are ``person0``... up to the most people
    seen in one frame (or ``max_people``).
    """
    files = _openpose_files(source)
    numbers = frame_numbers([f.name for f in files])
    if numbers is not None:  # frame order is number order ("x_10" after "x_9" even without zero padding)
        order = np.argsort(numbers, kind="stable")
        files, numbers = [files[i] for i in order], numbers[order]
    else:
        log.warning(
            "%s: file names do not all end in distinct frame numbers; frames are numbered 0.. in name order",
            source,
        )
    for p in parts:
        if p not in OPENPOSE_PARTS:
            raise ImportFormatError(f"unknown OpenPose part {p!r} (known: {', '.join(OPENPOSE_PARTS)})")
    frames_people: list[list[dict[str, Any]]] = []
    for f in files:
        data = load_json(f)
        if not isinstance(data, dict) or not isinstance(data.get("people"), list):
            raise ImportFormatError(f"{f}: not OpenPose output (no 'people' list)")
        frames_people.append(data["people"])
    n_people = max((len(p) for p in frames_people), default=0)
    if max_people is not None:
        n_people = min(n_people, max_people)
    n_people = max(n_people, 1)
    # keypoint count per part: from the first non-empty array seen (BODY_25 = 25, COCO = 18)
    sizes: dict[str, int] = {}
    for p in parts:
        key = OPENPOSE_PARTS[p]
        for people in frames_people:
            arr = next((person.get(key) for person in people if person.get(key)), None)
            if arr:
                sizes[p] = len(arr) // 3
                break
        else:
            sizes[p] = _PART_SIZES.get(p, 25)
    names: list[str] = []
    for p in parts:
        if p == "pose":
            names += (
                BODY_25
                if sizes[p] == 25
                else COCO_18
                if sizes[p] == 18
                else [f"pose{i}" for i in range(sizes[p])]
            )
        elif p.startswith("hand"):
            names += [f"{p}_{n}" for n in HAND_21[: sizes[p]]]
        else:
            names += [f"{p}{i}" for i in range(sizes[p])]
    n_kp = len(names)
    raw = np.zeros((len(files), n_people, n_kp, 3))
    for t, (f, people) in enumerate(zip(files, frames_people, strict=True)):
        for i, person in enumerate(people[:n_people]):
            off = 0
            for p in parts:
                key = OPENPOSE_PARTS[p]
                arr = person.get(key) or []
                if arr:
                    if len(arr) != 3 * sizes[p]:
                        raise ImportFormatError(
                            f"{f}: people[{i}].{key} has {len(arr)} values, expected {3 * sizes[p]}"
                        )
                    try:
                        raw[t, i, off : off + sizes[p]] = np.asarray(arr, dtype=float).reshape(-1, 3)
                    except (TypeError, ValueError):
                        raise ImportFormatError(f"{f}: people[{i}].{key} holds non-numbers") from None
                off += sizes[p]
    missing = (raw == 0).all(axis=3)
    points = raw[..., :2].copy()
    points[missing] = np.nan
    conf = raw[..., 2]
    return PoseTable(
        points=points,
        confidence=conf,
        bodyparts=names,
        individuals=[f"person{i}" for i in range(n_people)],
        frames=numbers if numbers is not None else np.arange(len(files)),
        source=str(source if isinstance(source, (str, Path)) else files[0].parent),
        meta={"format": "openpose", "files": [f.name for f in files]},
    )


# ------------------------------------------------------------------------------------------- DeepLabCut
def read_dlc(path: str | Path) -> PoseTable:
    """DeepLabCut output or labels (``.h5`` or ``.csv``), single or multi-animal, 2-D or 3-D."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ImportFormatError(f"{path}: file not found")
    try:
        if path.suffix.lower() in (".h5", ".hdf5"):
            df = pd.read_hdf(path)
        elif path.suffix.lower() == ".csv":
            df = _read_dlc_csv(path)
        else:
            raise ImportFormatError(f"{path}: expected a DeepLabCut .h5 or .csv file")
    except ImportFormatError:
        raise
    except (ValueError, KeyError, OSError, TypeError) as exc:
        raise ImportFormatError(f"{path}: not a DeepLabCut table ({exc})") from None
    if not isinstance(df, pd.DataFrame) or not isinstance(df.columns, pd.MultiIndex):
        raise ImportFormatError(f"{path}: not a DeepLabCut table (columns are not scorer/bodyparts/coords)")
    levels = list(df.columns.names)
    if "bodyparts" not in levels or "coords" not in levels:
        raise ImportFormatError(f"{path}: column levels {levels} lack 'bodyparts'/'coords'")
    cols = df.columns
    has_ind = "individuals" in levels
    bodyparts = list(dict.fromkeys(cols.get_level_values("bodyparts")))
    individuals = list(dict.fromkeys(cols.get_level_values("individuals"))) if has_ind else ["animal"]
    coords = list(dict.fromkeys(cols.get_level_values("coords")))
    space = [c for c in ("x", "y", "z") if c in coords]
    if space not in (["x", "y"], ["x", "y", "z"]):
        raise ImportFormatError(f"{path}: coords {coords} must be x, y[, z][, likelihood]")
    values = df.to_numpy(dtype=float)
    points = np.full((len(df), len(individuals), len(bodyparts), len(space)), np.nan)
    conf = np.full((len(df), len(individuals), len(bodyparts)), np.nan)
    ind_vals = cols.get_level_values("individuals") if has_ind else [individuals[0]] * len(cols)
    for j, (ind, bp, c) in enumerate(
        zip(ind_vals, cols.get_level_values("bodyparts"), cols.get_level_values("coords"), strict=True)
    ):
        i, k = individuals.index(ind), bodyparts.index(bp)
        if c in space:
            points[:, i, k, space.index(c)] = values[:, j]
        elif c == "likelihood":
            conf[:, i, k] = values[:, j]
    index = df.index
    frames = _dlc_frames(index)
    if np.any(np.diff(frames) <= 0):  # rows out of frame order (labels files are not always sorted)
        order = np.argsort(frames, kind="stable")
        points, conf, frames, index = points[order], conf[order], frames[order], index[order]
    meta = {
        "format": "deeplabcut",
        "scorer": str(cols.get_level_values(0)[0]),
        "index": [str(i) for i in index],
    }
    return PoseTable(points, conf, bodyparts, individuals, frames, str(path), meta=meta)


def _dlc_frames(index: Any) -> np.ndarray:
    """Frame numbers of a DeepLabCut table's rows: the integer index of an analysis output, or the number
    each labeled image's name ends with (``img0027.png`` -> 27; a (folder, video, image) MultiIndex uses
    its last level); row numbers when neither gives distinct numbers."""
    import pandas as pd

    if isinstance(index, pd.MultiIndex):
        index = index.get_level_values(-1)
    try:
        frames = np.asarray(index, dtype=np.int64)
        if len(np.unique(frames)) == len(frames):
            return frames
    except (TypeError, ValueError):
        numbers = frame_numbers([str(i) for i in index])
        if numbers is not None:
            return numbers
    return np.arange(len(index), dtype=np.int64)


def _read_dlc_csv(path: Path) -> Any:
    import pandas as pd

    text = read_text(path, "DeepLabCut CSV", ImportFormatError)
    head = [line.split(",")[0].strip() for line in [*text.split("\n", 4)[:4], "", "", "", ""][:4]]
    n_header = 4 if head[1] == "individuals" else 3
    if head[0] != "scorer":
        raise ImportFormatError(f"{path}: line 1 must start with 'scorer' (got {head[0]!r})")
    df = pd.read_csv(io.StringIO(text), header=list(range(n_header)), index_col=0)
    # newer DLC label files put the image path in up to 3 leading columns
    first_level = df.columns.get_level_values(0)
    extra = [c for c in df.columns if str(c[0]).startswith("Unnamed")]
    if extra:
        df = df.drop(columns=extra)
    levels = (
        ["scorer", "individuals", "bodyparts", "coords"]
        if n_header == 4
        else ["scorer", "bodyparts", "coords"]
    )
    df.columns = df.columns.set_names(levels)
    del first_level
    return df


# ------------------------------------------------------------------------------------------- SLEAP
def read_sleap_analysis(path: str | Path) -> PoseTable:
    """SLEAP analysis HDF5 (``sleap-convert --format analysis``): ``tracks`` stored (I, 2, K, T)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ImportFormatError(f"{path}: file not found")
    try:
        with h5py.File(path, "r") as f:
            for key in ("tracks", "node_names"):
                if key not in f:
                    raise ImportFormatError(f"{path}: not a SLEAP analysis file (no '{key}' dataset)")
            tracks = f["tracks"][:]  # (I, 2, K, T)
            nodes = [n.decode() if isinstance(n, bytes) else str(n) for n in f["node_names"][:]]
            names = (
                [n.decode() if isinstance(n, bytes) else str(n) for n in f["track_names"][:]]
                if "track_names" in f
                else []
            )
            scores = f["point_scores"][:] if "point_scores" in f else None  # (I, K, T)
    except OSError as exc:
        raise ImportFormatError(f"{path}: not an HDF5 file ({exc})") from None
    if tracks.ndim != 4 or tracks.shape[1] != 2 or tracks.shape[2] != len(nodes):
        raise ImportFormatError(
            f"{path}: 'tracks' has shape {tracks.shape}, expected (tracks, 2, {len(nodes)} nodes, frames)"
        )
    points = np.transpose(tracks, (3, 0, 2, 1)).astype(float)  # (T, I, K, 2)
    conf = (
        np.transpose(scores, (2, 0, 1)).astype(float)
        if scores is not None
        else np.where(np.isfinite(points).all(axis=3), 1.0, np.nan)
    )
    n_ind = points.shape[1]
    individuals = names if len(names) == n_ind and all(names) else [f"track{i}" for i in range(n_ind)]
    return PoseTable(
        points,
        conf,
        nodes,
        individuals,
        np.arange(points.shape[0]),
        str(path),
        meta={"format": "sleap-analysis"},
    )


# ------------------------------------------------------------------------------------------- SLEAP .slp
SLP_INSTANCES = ("prefer-user", "user", "predicted")
_SLP_ITEMS = ("metadata", "videos_json", "frames", "instances")


def read_sleap_slp(
    path: str | Path, video: int | str | None = None, instances: str = "prefer-user"
) -> PoseTable:
    """SLEAP labels or predictions file (``.slp``), read with sleap-io, for one of its videos.

    ``video``: index in the file's video list, or a video file name (full, or the base name when that is
    unique); ``None`` takes the only video holding labeled frames (several: an error listing them).
    ``instances``: ``"prefer-user"`` (default) takes predictions, but a user-labeled instance replaces the
    prediction of the same track, the prediction it was corrected from, or (untracked single-animal file)
    the frame's prediction, because a person's label is the better answer for that frame; ``"user"`` only
    user labels; ``"predicted"`` only predictions (e.g. to score the model against the labels).

    Rows are the labeled frames of that video in frame order; ``frames`` holds their frame indices, which
    need not be contiguous (:meth:`PoseTable.contiguous` fills the gaps with NaN). Individuals are the
    file's tracks that appear in the video, in the file's order, then ``instance0``... for instances
    without a track (in each frame: user instances first, then predictions). Missing points are NaN;
    ``confidence`` is the point score of a prediction, 1.0 for a user-labeled point, NaN where the point
    is missing.
    """
    path = Path(path)
    if instances not in SLP_INSTANCES:
        raise ImportFormatError(f"instances={instances!r}: expected one of {', '.join(SLP_INSTANCES)}")
    if not path.is_file():
        raise ImportFormatError(f"{path}: file not found")
    _check_slp_layout(path)
    try:
        import sleap_io
    except ImportError:
        raise ImportFormatError(
            f"{path}: reading SLEAP .slp files needs sleap-io (pip install 'deepbehavior[analysis]')"
        ) from None
    try:
        labels = sleap_io.load_slp(str(path), open_videos=False)
    except (OSError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise ImportFormatError(f"{path}: cannot read SLEAP file ({exc})") from None
    videos = list(labels.videos)
    by_video: list[dict[int, list[Any]]] = [{} for _ in videos]
    for lf in labels.labeled_frames:
        if lf.instances:
            vi = next((i for i, v in enumerate(videos) if v is lf.video), -1)
            if vi < 0:
                raise ImportFormatError(f"{path}: frame {lf.frame_idx} is of a video not in the file's list")
            by_video[vi].setdefault(int(lf.frame_idx), []).extend(lf.instances)
    vi = _slp_video_index(path, videos, [len(d) for d in by_video], video)
    frames_insts = sorted(by_video[vi].items())
    single = all(
        max(sum(_slp_is_user(i) for i in insts), sum(not _slp_is_user(i) for i in insts)) <= 1
        and all(_slp_track(i) is None for i in insts)
        for _, insts in frames_insts
    )
    chosen = [(f, sel) for f, insts in frames_insts if (sel := _slp_select(insts, instances, single))]
    vname = _slp_video_name(videos[vi])
    if not chosen:
        what = {"prefer-user": "", "user": " user-labeled", "predicted": " predicted"}[instances]
        raise ImportFormatError(f"{path}: video {vname} has no{what} instances")
    skeletons = list({id(i.skeleton): i.skeleton for _, sel in chosen for i in sel}.values())
    if len(skeletons) != 1:
        used_skeletons = ", ".join(repr(s.name) for s in skeletons)
        raise ImportFormatError(
            f"{path}: video {vname} uses {len(skeletons)} skeletons ({used_skeletons}); need one"
        )
    nodes = [str(n) for n in skeletons[0].node_names]
    used = {id(t) for _, sel in chosen for i in sel if (t := _slp_track(i)) is not None}
    tracks = [t for t in labels.tracks if id(t) in used]
    col = {id(t): j for j, t in enumerate(tracks)}
    n_untracked = max(sum(_slp_track(i) is None for i in sel) for _, sel in chosen)
    names = [str(t.name) for t in tracks]
    if len(set(names)) != len(names) or not all(names):
        names = [f"track{j}" for j in range(len(tracks))]
    individuals = names + [f"instance{j}" for j in range(n_untracked)]
    points = np.full((len(chosen), len(individuals), len(nodes), 2), np.nan)
    conf = np.full(points.shape[:3], np.nan)
    duplicates = 0
    for row, (_, sel) in enumerate(chosen):
        filled: set[int] = set()
        free = len(tracks)
        for inst in sel:
            t = _slp_track(inst)
            if t is None:
                j, free = free, free + 1
            else:
                j = col[id(t)]
                if j in filled:
                    duplicates += 1
                    continue
            filled.add(j)
            xy = np.asarray(inst.numpy(), dtype=np.float64)
            points[row, j] = xy
            score = np.ones(len(nodes)) if _slp_is_user(inst) else np.asarray(inst.points["score"], float)
            conf[row, j] = np.where(np.isfinite(xy).all(axis=1), score, np.nan)
    if duplicates:
        log.warning(
            "%s: %d instance(s) on a track already filled in their frame were left out", path, duplicates
        )
    return PoseTable(
        points,
        conf,
        nodes,
        individuals,
        np.array([f for f, _ in chosen], dtype=np.int64),
        str(path),
        meta={
            "format": "sleap-slp",
            "video": vname,
            "videos": [_slp_video_name(v) for v in videos],
            "instances": instances,
            "skeleton": skeletons[0].name,
        },
    )


def _check_slp_layout(path: Path) -> None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in _SLP_ITEMS if k not in f]
    except OSError as exc:
        raise ImportFormatError(f"{path}: not an HDF5 file ({exc})") from None
    if missing:
        raise ImportFormatError(f"{path}: not a SLEAP .slp file (no '{missing[0]}' in it)")


def _slp_is_user(inst: Any) -> bool:
    from sleap_io import PredictedInstance

    return not isinstance(inst, PredictedInstance)


def _slp_track(inst: Any) -> Any:
    """An instance's track; a user instance corrected from a tracked prediction keeps that track."""
    if inst.track is None and _slp_is_user(inst) and inst.from_predicted is not None:
        return inst.from_predicted.track
    return inst.track


def _slp_select(insts: list[Any], mode: str, single: bool) -> list[Any]:
    """The instances of one frame to keep: user ones first, then predictions they do not replace."""
    user = [] if mode == "predicted" else [i for i in insts if _slp_is_user(i)]
    pred = [] if mode == "user" else [i for i in insts if not _slp_is_user(i)]
    if mode == "prefer-user" and user:
        if single:
            return user
        taken = {id(t) for t in map(_slp_track, user) if t is not None}
        sources = {id(u.from_predicted) for u in user if u.from_predicted is not None}
        pred = [p for p in pred if id(p) not in sources and (p.track is None or id(p.track) not in taken)]
    return user + pred


def _slp_video_name(v: Any) -> str:
    f = v.filename
    return str(f) if isinstance(f, (str, Path)) else f"{f[0]} (+{len(f) - 1} images)"


def _slp_video_index(path: Path, videos: list[Any], n_labeled: list[int], video: int | str | None) -> int:
    listing = "; ".join(
        f"{i}: {_slp_video_name(v)} ({n} labeled frames)" for i, (v, n) in enumerate(zip(videos, n_labeled))
    )
    if video is None:
        labeled = [i for i, n in enumerate(n_labeled) if n]
        if len(labeled) == 1:
            return labeled[0]
        if not labeled:
            raise ImportFormatError(f"{path}: no labeled frames")
        raise ImportFormatError(
            f"{path}: labeled frames in {len(labeled)} videos; choose one by index or file name ({listing})"
        )
    if isinstance(video, int):
        if not 0 <= video < len(videos):
            raise ImportFormatError(f"{path}: no video {video} ({listing})")
        return video
    names = [_slp_video_name(v) for v in videos]
    hits = [i for i, n in enumerate(names) if n == video] or [
        i for i, n in enumerate(names) if Path(n).name == Path(video).name
    ]
    if len(hits) != 1:
        how = "no" if not hits else f"{len(hits)} videos"
        raise ImportFormatError(f"{path}: {how} video matching {video!r} ({listing})")
    return hits[0]


POSE_FORMATS = (
    "OpenPose JSON folder, DeepLabCut .csv/.h5 (single or multi-animal), SLEAP analysis .h5 or .slp, "
    "JABS pose .h5 (v2-v6)"
)


def read_pose(path: str | Path, video: int | str | None = None) -> PoseTable:
    """Any supported pose file (:data:`POSE_FORMATS`): a folder of OpenPose JSON, a DeepLabCut .csv/.h5, a
    SLEAP analysis .h5, a JABS pose .h5 or a SLEAP .slp (``video`` chooses one of its videos, see
    :func:`read_sleap_slp`). A file in none of these formats is refused with the list of formats read."""
    path = Path(path)
    if path.suffix.lower() == ".slp":
        return read_sleap_slp(path, video=video)
    if video is not None:
        raise ImportFormatError(f"{path}: a video can be chosen only in a SLEAP .slp file")
    if path.is_dir() or path.suffix.lower() == ".json":
        return read_openpose(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        import h5py

        from analysis.io.jabs import read_jabs

        try:
            with h5py.File(path, "r") as f:
                is_sleap = "tracks" in f and "node_names" in f
                is_jabs = "poseest" in f
        except OSError as exc:
            raise ImportFormatError(f"{path}: not an HDF5 file ({exc})") from None
        if is_jabs:
            return read_jabs(path)
        return read_sleap_analysis(path) if is_sleap else _read_dlc_or_list(path)
    if path.suffix.lower() == ".csv":
        return _read_dlc_or_list(path)
    raise ImportFormatError(f"{path}: unknown pose format; formats read: {POSE_FORMATS}")


def _read_dlc_or_list(path: Path) -> PoseTable:
    try:
        return read_dlc(path)
    except ImportFormatError as exc:
        if "not a DeepLabCut table" not in str(exc) and "line 1 must start with 'scorer'" not in str(exc):
            raise
        raise ImportFormatError(f"{exc}; formats read: {POSE_FORMATS}") from None
