"""2-D body (and hand) keypoints from a video with MediaPipe, written as OpenPose JSON.

``deepbehavior pose VIDEO --out DIR [--hands]`` runs MediaPipe's legacy solutions API (``Pose`` with
``model_complexity=1``, ``Hands`` with ``model_complexity=1``) on every frame and writes one
``<stem>_<frame:012d>_keypoints.json`` per frame, so :func:`analysis.io.pose.read_openpose` and the ``human``
command read the folder unchanged. The models come from inside the installed mediapipe wheel: only
mediapipe 0.10.14 ships them there for these settings; any other version is refused before a model is
loaded, and so is a 0.10.14 whose model files are missing (MediaPipe would then download them).

Output format, the BODY_25 mapping (direct, derived, approximate, none), confidences and handedness:
``POSE_RUNNER.md`` beside this file. The mapping is pure (:func:`body25_from_mediapipe`,
:func:`assign_hands`, :func:`openpose_frame`); :func:`run_pose` is the shell that decodes, infers and writes.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from analysis.io.pose import BODY_25
from detection.base import DetectionError

log = logging.getLogger(__name__)

MEDIAPIPE_VERSION = "0.10.14"
# Model files the graphs load (paths inside the mediapipe package). MediaPipe downloads a missing one.
POSE_MODELS = (
    "modules/pose_detection/pose_detection.tflite",
    "modules/pose_landmark/pose_landmark_full.tflite",  # model_complexity=1
)
HAND_MODELS = (
    "modules/palm_detection/palm_detection_full.tflite",
    "modules/hand_landmark/hand_landmark_full.tflite",  # model_complexity=1
)

# MediaPipe Pose's 33 landmarks (mp.solutions.pose.PoseLandmark), by the names used below.
MEDIAPIPE_POSE = {
    "nose": 0, "left_eye_inner": 1, "left_eye": 2, "left_eye_outer": 3, "right_eye_inner": 4,
    "right_eye": 5, "right_eye_outer": 6, "left_ear": 7, "right_ear": 8, "mouth_left": 9,
    "mouth_right": 10, "left_shoulder": 11, "right_shoulder": 12, "left_elbow": 13, "right_elbow": 14,
    "left_wrist": 15, "right_wrist": 16, "left_pinky": 17, "right_pinky": 18, "left_index": 19,
    "right_index": 20, "left_thumb": 21, "right_thumb": 22, "left_hip": 23, "right_hip": 24,
    "left_knee": 25, "right_knee": 26, "left_ankle": 27, "right_ankle": 28, "left_heel": 29,
    "right_heel": 30, "left_foot_index": 31, "right_foot_index": 32,
}  # fmt: skip

# BODY_25 point -> (kind, MediaPipe landmarks). Kinds: "direct" (the same anatomical point), "derived"
# (midpoint of two landmarks, confidence = the lower visibility), "approximate" (nearest landmark, not the
# same point: MediaPipe's foot_index is the foot's tip, between the big and second toe), "none" (MediaPipe
# has no such point: written as 0, 0, 0 = missing, as OpenPose writes a point it did not find).
# Left/right are the subject's in both models (checked against OpenPose on a real video in the tests).
BODY25_FROM_MEDIAPIPE: dict[str, tuple[str, tuple[str, ...]]] = {
    "Nose": ("direct", ("nose",)),
    "Neck": ("derived", ("left_shoulder", "right_shoulder")),
    "RShoulder": ("direct", ("right_shoulder",)),
    "RElbow": ("direct", ("right_elbow",)),
    "RWrist": ("direct", ("right_wrist",)),
    "LShoulder": ("direct", ("left_shoulder",)),
    "LElbow": ("direct", ("left_elbow",)),
    "LWrist": ("direct", ("left_wrist",)),
    "MidHip": ("derived", ("left_hip", "right_hip")),
    "RHip": ("direct", ("right_hip",)),
    "RKnee": ("direct", ("right_knee",)),
    "RAnkle": ("direct", ("right_ankle",)),
    "LHip": ("direct", ("left_hip",)),
    "LKnee": ("direct", ("left_knee",)),
    "LAnkle": ("direct", ("left_ankle",)),
    "REye": ("direct", ("right_eye",)),
    "LEye": ("direct", ("left_eye",)),
    "REar": ("direct", ("right_ear",)),
    "LEar": ("direct", ("left_ear",)),
    "LBigToe": ("approximate", ("left_foot_index",)),
    "LSmallToe": ("none", ()),
    "LHeel": ("direct", ("left_heel",)),
    "RBigToe": ("approximate", ("right_foot_index",)),
    "RSmallToe": ("none", ()),
    "RHeel": ("direct", ("right_heel",)),
}

OPENPOSE_JSON_VERSION = 1.3


class PoseRunnerError(DetectionError):
    """The pose runner cannot run: unreadable video, unusable mediapipe install, output folder in use."""


# ------------------------------------------------------------------------------------------- pure core
def body25_from_mediapipe(landmarks_k3: np.ndarray) -> np.ndarray:
    """(33, 3) MediaPipe pose landmarks (x px, y px, visibility) -> (25, 3) BODY_25 (x px, y px, confidence),
    following :data:`BODY25_FROM_MEDIAPIPE`; points MediaPipe lacks are (0, 0, 0)."""
    lm = np.asarray(landmarks_k3, dtype=np.float64)
    if lm.shape != (33, 3):
        raise DetectionError(f"MediaPipe pose landmarks have shape {lm.shape}, expected (33, 3)")
    out = np.zeros((25, 3))
    for k, part in enumerate(BODY_25):  # OpenPose's order, whatever the order of the mapping's keys
        kind, names = BODY25_FROM_MEDIAPIPE[part]
        if kind == "none":
            continue
        rows = lm[[MEDIAPIPE_POSE[n] for n in names]]
        out[k, :2] = rows[:, :2].mean(axis=0)
        out[k, 2] = rows[:, 2].min()
    return out


def hand_side(label: str, mirrored: bool = False) -> str:
    """MediaPipe's handedness label -> ``"left"``/``"right"``, the subject's hand.

    MediaPipe Hands labels a hand as if the image were mirrored (a selfie view): on an ordinary camera's
    image its ``"Left"`` is the subject's right hand. ``mirrored``: the video already is mirrored.
    """
    if label not in ("Left", "Right"):
        raise DetectionError(f"MediaPipe handedness label {label!r}, expected 'Left' or 'Right'")
    side = label.lower()
    if mirrored:
        return side
    return "right" if side == "left" else "left"


def assign_hands(
    hands: Sequence[tuple[str, float, np.ndarray]], mirrored: bool = False
) -> tuple[dict[str, np.ndarray], int]:
    """Detected hands -> {"left"|"right": (21, 3) x px, y px, confidence}, and how many were dropped.

    ``hands``: (MediaPipe handedness label, its score, (21, 2) pixel points) per detected hand. A hand's
    points all get its handedness score as confidence (MediaPipe gives no per-point hand confidence). Two
    hands with the same side: the higher score keeps it, the other is dropped and counted.
    """
    out: dict[str, np.ndarray] = {}
    scores: dict[str, float] = {}
    dropped = 0
    for label, score, pts in hands:
        xy = np.asarray(pts, dtype=np.float64)
        if xy.shape != (21, 2):
            raise DetectionError(f"MediaPipe hand landmarks have shape {xy.shape}, expected (21, 2)")
        side = hand_side(label, mirrored)
        if side in out:
            dropped += 1
            if score <= scores[side]:
                continue
        out[side] = np.column_stack([xy, np.full(21, float(score))])
        scores[side] = float(score)
    return out, dropped


def _flat(a: np.ndarray) -> list[float]:
    return [round(float(v), 3) if i % 3 < 2 else round(float(v), 5) for i, v in enumerate(a.ravel())]


def openpose_frame(
    body_k3: np.ndarray | None, hands: dict[str, np.ndarray] | None, with_hands: bool
) -> dict[str, Any]:
    """One frame as OpenPose JSON (a dict for ``json.dumps``): no person -> ``people: []``; otherwise one
    person with ``pose_keypoints_2d`` (BODY_25, zeros when only hands were found) and, ``with_hands``, both
    hand arrays (63 values; zeros for a hand not found), else empty hand arrays, as OpenPose writes them."""
    hands = hands or {}
    if body_k3 is None and not hands:
        return {"version": OPENPOSE_JSON_VERSION, "people": []}
    body = np.zeros((25, 3)) if body_k3 is None else np.asarray(body_k3, dtype=np.float64)
    person: dict[str, Any] = {"person_id": [-1], "pose_keypoints_2d": _flat(body), "face_keypoints_2d": []}
    for side in ("left", "right"):
        hand = hands.get(side, np.zeros((21, 3)))
        person[f"hand_{side}_keypoints_2d"] = _flat(hand) if with_hands else []
    for key in ("pose", "face", "hand_left", "hand_right"):
        person[f"{key}_keypoints_3d"] = []
    return {"version": OPENPOSE_JSON_VERSION, "people": [person]}


# ------------------------------------------------------------------------------------------- mediapipe
def load_mediapipe(hands: bool) -> Any:
    """Import mediapipe after checking that its models load from inside the wheel (no download)."""
    try:
        version = metadata.version("mediapipe")
    except metadata.PackageNotFoundError:
        raise PoseRunnerError(
            f"mediapipe is not installed: run scripts/setup.sh (it installs mediapipe {MEDIAPIPE_VERSION})"
        ) from None
    if version != MEDIAPIPE_VERSION:
        raise PoseRunnerError(
            f"mediapipe {version} is installed; the pose runner needs {MEDIAPIPE_VERSION}, the release it is "
            "checked with, whose legacy pose/hand models ship inside the wheel (newer releases download "
            "models at run time): run scripts/setup.sh"
        )
    spec = importlib.util.find_spec("mediapipe")
    roots = list(spec.submodule_search_locations or []) if spec else []
    if not roots:
        raise PoseRunnerError("mediapipe is installed but its package folder cannot be found")
    for rel in POSE_MODELS + (HAND_MODELS if hands else ()):
        path = Path(roots[0]) / rel
        if not path.is_file():
            raise PoseRunnerError(
                f"{path}: missing from the mediapipe {version} install (MediaPipe would download it): "
                "reinstall with scripts/setup.sh"
            )
    import mediapipe

    return mediapipe


# ------------------------------------------------------------------------------------------- shell
@dataclass
class PoseRunResult:
    """What :func:`run_pose` did. Times: per frame, milliseconds, model calls only (not decoding/writing)."""

    video: str
    out_dir: Path
    n_frames: int
    size: tuple[int, int]  # width, height (px)
    frames_with_person: int
    hands_found: dict[str, int]
    hands_dropped: int
    pose_ms: np.ndarray
    hands_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def summary(self) -> dict[str, Any]:
        def stats(ms: np.ndarray) -> dict[str, float] | None:
            if not len(ms):
                return None
            return {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99))}

        return {
            "video": self.video,
            "out": str(self.out_dir),
            "frames": self.n_frames,
            "size": list(self.size),
            "frames_with_person": self.frames_with_person,
            "hands_found": self.hands_found,
            "hands_dropped": self.hands_dropped,
            "pose": stats(self.pose_ms),
            "hands": stats(self.hands_ms),
            "pose+hands": stats(self.pose_ms + self.hands_ms) if len(self.hands_ms) else None,
            "mediapipe": MEDIAPIPE_VERSION,
        }


def _open_video(path: Path) -> Any:
    import av

    if not path.exists():
        raise PoseRunnerError(f"{path}: no such video file")
    if not path.is_file():
        raise PoseRunnerError(f"{path}: not a file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise PoseRunnerError(f"{path}: cannot read video ({_why(exc)})") from None
    streams = container.streams.video
    codec = streams[0].codec_context.name if streams else None
    if codec is None or codec in _NOT_VIDEO_CODECS:
        container.close()
        what = "no video stream" if codec is None else f"not a video (FFmpeg reads it as {codec!r} text)"
        raise PoseRunnerError(f"{path}: {what}")
    return container


# FFmpeg renders text files as video ("tty" demuxer): a text file given by mistake is refused.
_NOT_VIDEO_CODECS = {"ansi", "bintext", "xbin", "idf"}


def _why(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _prepare_out(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise PoseRunnerError(f"{out_dir}: exists and is not a folder")
    old = sorted(out_dir.glob("*_keypoints.json")) if out_dir.is_dir() else []
    if old and not overwrite:
        raise PoseRunnerError(
            f"{out_dir}: already holds {len(old)} *_keypoints.json files (e.g. {old[0].name}); "
            "choose an empty folder or pass --overwrite to replace them"
        )
    for f in old:
        f.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def run_pose(
    video: str | Path,
    out_dir: str | Path,
    hands: bool = False,
    max_frames: int | None = None,
    mirrored: bool = False,
    overwrite: bool = False,
) -> PoseRunResult:
    """Run MediaPipe on every frame (or the first ``max_frames``) of ``video`` and write OpenPose JSON to
    ``out_dir``. ``hands``: also the 21-point hands; ``mirrored``: the video is a mirrored (selfie) view, so
    MediaPipe's handedness needs no swapping. One person per frame (MediaPipe Pose finds the most prominent).
    """
    video, out_dir = Path(video), Path(out_dir)
    if max_frames is not None and max_frames < 1:
        raise PoseRunnerError(f"max_frames {max_frames}: must be at least 1")
    container = _open_video(video)
    try:
        mp = load_mediapipe(hands)
        _prepare_out(out_dir, overwrite)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        pose_model = mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1)
        hand_model = (
            mp.solutions.hands.Hands(static_image_mode=False, max_num_hands=2, model_complexity=1)
            if hands
            else None
        )
        try:
            return _run(video, out_dir, container, stream, pose_model, hand_model, max_frames, mirrored)
        finally:
            pose_model.close()
            if hand_model is not None:
                hand_model.close()
    finally:
        container.close()


def _run(
    video: Path,
    out_dir: Path,
    container: Any,
    stream: Any,
    pose_model: Any,
    hand_model: Any,
    max_frames: int | None,
    mirrored: bool,
) -> PoseRunResult:
    import av

    pose_ms: list[float] = []
    hands_ms: list[float] = []
    found = {"left": 0, "right": 0}
    dropped = with_person = n = 0
    size = (0, 0)
    frames = container.decode(stream)
    while max_frames is None or n < max_frames:
        try:
            frame = next(frames)
        except StopIteration:
            break
        except (av.FFmpegError, OSError) as exc:
            raise PoseRunnerError(
                f"{video}: decoding failed after frame {n} ({_why(exc)}); {n} frames written to {out_dir}"
            ) from None
        rotation = getattr(frame, "rotation", None)
        if n == 0 and rotation:
            log.warning(
                "%s: rotation metadata %s deg is not applied; keypoints are in the stored frame's pixels",
                video,
                rotation,
            )
        rgb = frame.to_ndarray(format="rgb24")
        h, w = rgb.shape[:2]
        size = (w, h)
        with warnings.catch_warnings():  # protobuf 4's deprecation notice, raised inside MediaPipe
            warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype")
            t0 = time.perf_counter()
            res = pose_model.process(rgb)
            t1 = time.perf_counter()
            hres = hand_model.process(rgb) if hand_model is not None else None
            t2 = time.perf_counter()
        pose_ms.append((t1 - t0) * 1e3)
        body = None
        if res.pose_landmarks:
            lm = np.array([(p.x, p.y, p.visibility) for p in res.pose_landmarks.landmark])
            body = body25_from_mediapipe(_to_pixels(lm, w, h))
            with_person += 1
        side_hands: dict[str, np.ndarray] = {}
        if hres is not None:
            hands_ms.append((t2 - t1) * 1e3)
            detected = [
                (
                    hd.classification[0].label,
                    hd.classification[0].score,
                    _to_pixels(np.array([(p.x, p.y) for p in hl.landmark]), w, h),
                )
                for hl, hd in zip(hres.multi_hand_landmarks or [], hres.multi_handedness or [], strict=True)
            ]
            side_hands, d = assign_hands(detected, mirrored)
            dropped += d
            for s in side_hands:
                found[s] += 1
        doc = openpose_frame(body, side_hands, with_hands=hand_model is not None)
        (out_dir / f"{video.stem}_{n:012d}_keypoints.json").write_text(json.dumps(doc))
        n += 1
        if n % 500 == 0:
            log.info("%s: %d frames", video, n)
    if n == 0:
        raise PoseRunnerError(f"{video}: no frames could be decoded")
    return PoseRunResult(
        str(video), out_dir, n, size, with_person, found, dropped, np.asarray(pose_ms), np.asarray(hands_ms)
    )


def _to_pixels(norm: np.ndarray, width: int, height: int) -> np.ndarray:
    """MediaPipe's normalized x, y (0..1 across the image's edges) -> pixels with (0, 0) at the centre of the
    top-left pixel (OpenCV's and the calibration's convention); other columns are kept."""
    out = np.asarray(norm, dtype=np.float64).copy()
    out[:, 0] = out[:, 0] * width - 0.5
    out[:, 1] = out[:, 1] * height - 0.5
    return out
