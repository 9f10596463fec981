"""Human 3-D motor assessment: joint angles, forearm supination, segment velocities, repetitions, the
per-joint 3-D positions and a 3-D skeleton video.

Inputs are 3-D keypoint trajectories (T, 3) in mm (e.g. OpenPose BODY_25 + hand keypoints from two views,
triangulated with :func:`analysis.geometry.triangulate`); NaN = missing. :func:`analyze_arm` is the whole
``human`` command on tables of 2-D keypoints: views paired by frame number, each view's confidence cut
(:func:`analysis.events.default_min_confidence`), 3-D gaps up to ``max_gap_s`` filled and the joints
smoothed (Savitzky-Golay over ``smooth_s``) before any angle, with the frames cut, filled and missing
counted per joint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.camera import Calibration
from analysis.errors import AnalysisError
from analysis.io.pose import PoseTable


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return v / n


def _check(*arrays: np.ndarray) -> list[np.ndarray]:
    out = [np.asarray(a, dtype=np.float64) for a in arrays]
    shape = out[0].shape
    for i, a in enumerate(out):
        if a.ndim == 2 and a.shape[1] == 2:
            raise AnalysisError(
                f"keypoint {i}: 2-D (x, y) positions, shape {a.shape}: a 3-D angle needs (T, 3) positions; "
                "triangulate the views first"
            )
        if a.ndim != 2 or a.shape[1] != 3:
            raise AnalysisError(f"keypoint {i}: shape {a.shape}, expected (T, 3) 3-D positions")
        if a.shape != shape:
            raise AnalysisError(
                f"keypoint {i}: {len(a)} frames, keypoint 0 has {shape[0]}: one length for all"
            )
    return out


def joint_angle(a_t3: np.ndarray, b_t3: np.ndarray, c_t3: np.ndarray) -> np.ndarray:
    """(T,) angle at ``b`` between b->a and b->c, degrees (0..180)."""
    a, b, c = _check(a_t3, b_t3, c_t3)
    u, v = _unit(a - b), _unit(c - b)
    return np.degrees(np.arccos(np.clip(np.sum(u * v, axis=1), -1.0, 1.0)))


def elbow_angle(shoulder: np.ndarray, elbow: np.ndarray, wrist: np.ndarray) -> np.ndarray:
    """(T,) elbow angle, degrees: 180 = arm straight."""
    return joint_angle(shoulder, elbow, wrist)


def shoulder_angle(hip: np.ndarray, shoulder: np.ndarray, elbow: np.ndarray) -> np.ndarray:
    """(T,) angle between the trunk (shoulder->hip) and the upper arm (shoulder->elbow), degrees:
    0 = arm along the body, 90 = raised to horizontal."""
    return joint_angle(hip, shoulder, elbow)


def supination_angle(
    elbow: np.ndarray,
    wrist: np.ndarray,
    index_base: np.ndarray,
    pinky_base: np.ndarray,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """(T,) forearm rotation, degrees, signed about the forearm axis (elbow->wrist, right-hand rule).

    The hand's across-palm vector (pinky base -> index base, e.g. OpenPose hand points 17 and 5) is projected
    on the plane normal to the forearm and compared with ``reference`` (3,) projected the same way (default:
    world +z). Increasing values = rotation counter-clockwise looking from the elbow to the wrist.
    """
    e, w, i, p = _check(elbow, wrist, index_base, pinky_base)
    axis = _unit(w - e)
    palm = i - p
    palm = _unit(palm - np.sum(palm * axis, axis=1, keepdims=True) * axis)
    ref = np.broadcast_to(
        np.array([0.0, 0.0, 1.0]) if reference is None else np.asarray(reference, float), e.shape
    )
    ref = _unit(ref - np.sum(ref * axis, axis=1, keepdims=True) * axis)
    sin = np.sum(np.cross(ref, palm) * axis, axis=1)
    cos = np.sum(ref * palm, axis=1)
    return np.degrees(np.arctan2(sin, cos))


def point_speed(t_s: np.ndarray, p_t3: np.ndarray) -> np.ndarray:
    """(T,) speed of a keypoint, mm/s."""
    (p,) = _check(p_t3)
    return np.linalg.norm(np.gradient(p, np.asarray(t_s, dtype=np.float64), axis=0), axis=1)


def segment_repetitions(
    t_s: np.ndarray, signal_t: np.ndarray, min_prominence: float, min_interval_s: float = 0.3
) -> list[tuple[int, int, int]]:
    """Repetitions of a cyclic movement (e.g. elbow flexion, supination): peaks of ``signal_t`` with at
    least ``min_prominence`` and ``min_interval_s`` apart; each repetition runs from the trough before its
    peak to the trough after. Returns (start, peak, end) sample indices."""
    from scipy.signal import find_peaks

    t = np.asarray(t_s, dtype=np.float64)
    x = np.asarray(signal_t, dtype=np.float64)
    if x.shape != t.shape:
        raise AnalysisError(f"signal has shape {x.shape}, t_s {t.shape}")
    ok = np.isfinite(x)
    if ok.sum() < 3:
        return []
    xf = np.interp(t, t[ok], x[ok])
    dt = float(np.median(np.diff(t)))
    peaks, _ = find_peaks(xf, prominence=min_prominence, distance=max(1, int(min_interval_s / dt)))
    troughs, _ = find_peaks(-xf, prominence=min_prominence / 2)
    reps = []
    for pk in peaks:
        before = troughs[troughs < pk]
        after = troughs[troughs > pk]
        start = int(before[-1]) if len(before) else 0
        end = int(after[0]) if len(after) else len(x) - 1
        reps.append((start, int(pk), end))
    return reps


def smooth_angle(angle_t: np.ndarray, max_gap: int = 0, window: int = 0) -> np.ndarray:
    """(T,) angle, degrees: gaps of up to ``max_gap`` samples filled linearly, then Savitzky-Golay smoothed
    over ``window`` samples (odd, polynomial order 2; each run of data on its own). 0 turns either off."""
    from analysis.filters import interpolate_gaps, savgol

    a = np.asarray(angle_t, dtype=np.float64)
    if max_gap:
        a = interpolate_gaps(a, max_gap)
    if window:
        a = savgol(a, window, polyorder=2)
    return a


def triangulate_keypoints(
    calib: Calibration,
    tables: Mapping[str, PoseTable],
    individual: int = 0,
    min_confidence: float | None = None,
    ransac_threshold_px: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """2-D keypoints of the same person from several named cameras -> 3-D.

    ``tables``: camera name -> :class:`PoseTable` (e.g. from :func:`analysis.io.pose.read_openpose`) with
    the same body parts. Views are paired by frame number (:func:`analysis.triangulate.match_frames`),
    never by row position: rows of the result are the frames of any view, in order, and a frame a view
    lacks is missing in that view only. Views below ``min_confidence`` (default: the format's cut,
    :func:`analysis.events.default_min_confidence`; OpenPose 0.1) are ignored; confidence weights the
    rest. With ``ransac_threshold_px`` a wrong view is voted out (needs 3+ cameras to help).
    Returns (F, K, 3) world points (mm) and (C, F, K) reprojection errors (px) of the views used.
    """
    from analysis.triangulate import triangulate_views

    names = list(tables)
    if len(names) < 2:
        raise AnalysisError(f"need keypoints from at least 2 cameras, got {len(names)}")
    first = tables[names[0]]
    for n in names[1:]:
        if tables[n].bodyparts != first.bodyparts:
            raise AnalysisError(f"{tables[n].source}: body parts differ from {first.source}")
    if not 0 <= individual < len(first.individuals):
        raise AnalysisError(f"{first.source}: no individual {individual} (has {len(first.individuals)})")
    # OpenPose does not track people: person i of one view is person i of the others
    res = triangulate_views(
        calib,
        tables,
        min_confidence=min_confidence,
        ransac_px=ransac_threshold_px,
        individuals=[first.individuals[individual]],
    )
    return res.xyz[:, 0], res.per_view_px[:, :, 0]


def plot_angles(
    t_s: np.ndarray,
    angles: dict[str, np.ndarray],
    path: str | Path,
    repetitions: list[tuple[int, int, int]] | None = None,
) -> Path:
    """Angle-time curves (degrees), one panel per angle, repetitions shaded, as a PNG."""
    from analysis.plotting import pyplot, save

    plt = pyplot()
    t = np.asarray(t_s, dtype=np.float64)
    fig, axes = plt.subplots(len(angles), 1, figsize=(8, 2.2 * len(angles)), sharex=True, squeeze=False)
    for ax, (name, a) in zip(axes[:, 0], angles.items(), strict=True):
        ax.plot(t, a, lw=1)
        for s, _, e in repetitions or []:
            ax.axvspan(t[s], t[e], color="0.85", lw=0)
        ax.set_ylabel(f"{name} (deg)")
    axes[-1, 0].set_xlabel("time (s)")
    return save(fig, path)


# ----------------------------------------------------------------------------------------------- the command
HUMAN_MAX_GAP_S = 0.25
"""3-D joint gaps up to this long are filled linearly before angles (a blink of a view, a frame or two of a
low-confidence hand); longer ones stay missing."""
HUMAN_SMOOTH_S = 0.2
"""Savitzky-Golay window (polynomial order 2) over the 3-D joints before angles: 7 frames at 30 fps. Keeps
movements slower than about 2.5 Hz (a 2.5 Hz cycle loses about 2 % of its amplitude)."""

# BODY_25 and hand edges drawn in figures and the skeleton video (pairs of body part names)
BODY_EDGES = [
    ("Nose", "Neck"), ("Neck", "RShoulder"), ("RShoulder", "RElbow"), ("RElbow", "RWrist"),
    ("Neck", "LShoulder"), ("LShoulder", "LElbow"), ("LElbow", "LWrist"), ("Neck", "MidHip"),
    ("MidHip", "RHip"), ("RHip", "RKnee"), ("RKnee", "RAnkle"), ("MidHip", "LHip"), ("LHip", "LKnee"),
    ("LKnee", "LAnkle"), ("Nose", "REye"), ("Nose", "LEye"), ("REye", "REar"), ("LEye", "LEar"),
]  # fmt: skip
HAND_EDGES = [("Wrist", f"{f}1") for f in ("Thumb", "Index", "Middle", "Ring", "Pinky")] + [
    (f"{f}{j}", f"{f}{j + 1}") for f in ("Thumb", "Index", "Middle", "Ring", "Pinky") for j in range(1, 4)
]


def skeleton_edges(parts: list[str]) -> list[tuple[int, int]]:
    """Index pairs of the BODY_25 and hand edges whose two ends are both in ``parts``; a hand's wrist joins
    the body's wrist."""
    idx = {p: i for i, p in enumerate(parts)}
    pairs = list(BODY_EDGES)
    for side, hand in (("R", "hand_right"), ("L", "hand_left")):
        pairs += [(f"{hand}_{a}", f"{hand}_{b}") for a, b in HAND_EDGES]
        pairs.append((f"{side}Wrist", f"{hand}_Wrist"))
    return [(idx[a], idx[b]) for a, b in pairs if a in idx and b in idx]


def smooth_window_frames(smooth_s: float, fps: float) -> int:
    """The odd number of frames nearest ``smooth_s`` at ``fps`` (0 = no smoothing; at least 3)."""
    if smooth_s <= 0:
        return 0
    n = round(smooth_s * fps)
    return max(3, n + 1 - n % 2)


def _views_seen(tables: Mapping[str, PoseTable], frames: np.ndarray, parts: list[str]) -> np.ndarray:
    """(F, K) how many views detected each part in each frame (any confidence above 0)."""
    from analysis.triangulate import match_frames

    match = match_frames(tables)
    pos = np.searchsorted(frames, match.frames)
    n = np.zeros((len(frames), len(parts)), dtype=np.int64)
    for name, tb in tables.items():
        r = match.rows[name]
        have = r >= 0
        kk = [tb.bodyparts.index(p) for p in parts]
        pts = tb.points[r[have]][:, 0][:, kk]
        conf = np.nan_to_num(tb.confidence[r[have]][:, 0][:, kk], nan=1.0)
        n[pos[have]] += np.isfinite(pts).all(axis=-1) & (conf > 0)
    return n


@dataclass
class ArmResult:
    """What :func:`analyze_arm` found: per frame (``frames`` (F,), ``t_s``), the joints (``xyz`` (F, K, 3)
    mm after filling and smoothing; ``xyz_measured`` as triangulated), the arm's angles (``angles``: name ->
    (F,) degrees, from ``xyz``; ``angles_measured`` from ``xyz_measured``), the table ``arm_angles.csv``
    holds, and the summary (``summary``: settings, frames cut/filled/missing per joint and per angle)."""

    frames: np.ndarray
    t_s: np.ndarray
    parts: list[str]
    xyz: np.ndarray
    xyz_measured: np.ndarray
    angles: dict[str, np.ndarray]
    angles_measured: dict[str, np.ndarray]
    table: Any
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def analyze_arm(
    calib: Calibration,
    tables: Mapping[str, PoseTable],
    fps: float,
    side: str = "R",
    min_confidence: float | None = None,
    max_gap_s: float = HUMAN_MAX_GAP_S,
    smooth_s: float = HUMAN_SMOOTH_S,
) -> ArmResult:
    """Elbow, shoulder and supination angles of one arm (``side`` R or L) from 2-D keypoints of two or more
    calibrated views (OpenPose BODY_25 + hand tables, :func:`analysis.io.pose.read_openpose`).

    Views are paired by frame number; one row per frame number from the first to the last (time = frame /
    ``fps``). A keypoint is made in 3-D from the views at or above ``min_confidence`` (default per format);
    each joint's 3-D gaps up to ``max_gap_s`` are filled linearly and the joints smoothed by a
    Savitzky-Golay filter over ``smooth_s`` (0 = none) before the angles are taken."""
    import warnings

    import pandas as pd

    from analysis.events import DataQuality, default_min_confidence, fill_gaps
    from analysis.filters import savgol
    from analysis.triangulate import match_frames

    if not (fps > 0 and np.isfinite(fps)):
        raise AnalysisError(f"--fps must be a positive number, got {fps}")
    if not max_gap_s >= 0 or not smooth_s >= 0:
        raise AnalysisError("--max-gap and --smooth must be >= 0 seconds")
    if side not in ("R", "L"):
        raise AnalysisError(f"side must be R or L, got {side!r}")
    hand = "hand_right" if side == "R" else "hand_left"
    xyz_m, err_m = triangulate_keypoints(calib, tables, min_confidence=min_confidence)
    match = match_frames(tables)
    frames = np.arange(match.frames[0], match.frames[-1] + 1)
    rows = match.frames - match.frames[0]
    measured = np.full((len(frames), *xyz_m.shape[1:]), np.nan)
    err = np.full((len(err_m), len(frames), err_m.shape[2]), np.nan)
    measured[rows], err[:, rows] = xyz_m, err_m
    parts = list(next(iter(tables.values())).bodyparts)
    t = frames / fps
    names = {
        "shoulder": f"{side}Shoulder",
        "elbow": f"{side}Elbow",
        "wrist": f"{side}Wrist",
        "hip": "MidHip",
        "index": f"{hand}_Index1",
        "pinky": f"{hand}_Pinky1",
    }
    missing_parts = [n for n in names.values() if n not in parts]
    if missing_parts:
        raise AnalysisError(
            f"{next(iter(tables.values())).source}: no keypoint {missing_parts[0]!r} in the views "
            "(OpenPose BODY_25 with hands: --hand in OpenPose)"
        )
    cuts = {
        n: default_min_confidence(tb.meta.get("format")) if min_confidence is None else min_confidence
        for n, tb in tables.items()
    }
    used = [parts.index(n) for n in names.values()]
    seen_any = _views_seen(tables, frames, [parts[k] for k in used])
    win = smooth_window_frames(smooth_s, fps)
    xyz = measured.copy()
    quality: dict[str, Any] = {}
    for k in range(len(parts)):
        filled_k, filled = fill_gaps(t, measured[:, k], max_gap_s)
        if win and win > 2:
            filled_k = savgol(filled_k, win, polyorder=2)
        xyz[:, k] = filled_k
        if k in used:
            j = used.index(k)
            miss = ~np.isfinite(measured[:, k]).all(axis=1)
            no_views = seen_any[:, j] < 2
            quality[parts[k]] = DataQuality(
                frames=len(frames),
                missing_in=int((miss & no_views).sum()),
                cut=int((miss & ~no_views).sum()),
                filled=int(filled.sum()),
                missing=int((~np.isfinite(filled_k).all(axis=1)).sum()),
                min_confidence=min(cuts.values()),
                max_gap_s=float(max_gap_s),
            ).to_dict()

    def angles_of(p: np.ndarray) -> dict[str, np.ndarray]:
        kp = {role: p[:, parts.index(n)] for role, n in names.items()}
        return {
            "elbow_angle_deg": elbow_angle(kp["shoulder"], kp["elbow"], kp["wrist"]),
            "shoulder_angle_deg": shoulder_angle(kp["hip"], kp["shoulder"], kp["elbow"]),
            "supination_deg": supination_angle(kp["elbow"], kp["wrist"], kp["index"], kp["pinky"]),
        }

    raw, angles = angles_of(measured), angles_of(xyz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # frames no view holds: all-NaN medians
        reproj = np.nanmedian(err, axis=(0, 2))
    wrist, elbow_p = xyz[:, parts.index(names["wrist"])], xyz[:, parts.index(names["elbow"])]
    table = pd.DataFrame(
        {
            "frame": frames,
            "t_s": t,
            **angles,
            "wrist_speed_mm_s": point_speed(t, wrist),
            "elbow_speed_mm_s": point_speed(t, elbow_p),
            "reprojection_px": reproj,
        }
    )
    notes = list(match.report())
    hand_ok = np.isfinite(measured[:, parts.index(names["index"])]).all(axis=1) & np.isfinite(
        measured[:, parts.index(names["pinky"])]
    ).all(axis=1)
    if not hand_ok.any():
        notes.append(
            f"no usable {'left' if side == 'L' else 'right'} hand in any frame ({hand} keypoints "
            f"Index1/Pinky1 missing or below confidence {min(cuts.values()):g} in the views): "
            "supination_deg is empty"
        )
    per_angle = {
        k.replace("_deg", ""): {
            "measured": int(np.isfinite(raw[k]).sum()),
            "filled": int((np.isfinite(angles[k]) & ~np.isfinite(raw[k])).sum()),
            "missing": int((~np.isfinite(angles[k])).sum()),
        }
        for k in raw
    }
    summary = {
        "frames": len(frames),
        "first_frame": int(frames[0]),
        "last_frame": int(frames[-1]),
        "fps": float(fps),
        "side": side,
        "settings": {
            "min_confidence": cuts,
            "max_gap_s": float(max_gap_s),
            "smooth_s": float(smooth_s),
            "smooth_window_frames": win,
        },
        "angles": per_angle,
        "joints": quality,
    }
    return ArmResult(frames, t, parts, xyz, measured, angles, raw, table, summary, notes)


def write_arm_outputs(res: ArmResult, out_dir: str | Path, video: bool = False) -> list[Path]:
    """``arm_angles.csv``, ``joints_3d.csv`` (every joint seen in some frame: ``<part>_x/_y/_z`` mm after
    filling and smoothing, beside ``<part>_status`` measured/filled/missing), ``arm_angles.png``,
    ``human.json`` (the summary) and, with ``video``, ``skeleton.mp4`` (:func:`write_skeleton_video`)."""
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res.table.to_csv(out / "arm_angles.csv", index=False)
    joints: dict[str, Any] = {"frame": res.frames, "t_s": res.t_s}
    for k, name in enumerate(res.parts):
        ok_m = np.isfinite(res.xyz_measured[:, k]).all(axis=1)
        if ok_m.any():
            for a, axis in enumerate("xyz"):
                joints[f"{name}_{axis}"] = res.xyz[:, k, a]
            ok = np.isfinite(res.xyz[:, k]).all(axis=1)
            joints[f"{name}_status"] = np.where(~ok, "missing", np.where(ok_m, "measured", "filled"))
    pd.DataFrame(joints).to_csv(out / "joints_3d.csv", index=False, float_format="%.9g")
    plot = {c.replace("_deg", ""): res.table[c].to_numpy() for c in res.table.columns if c.endswith("_deg")}
    reps = segment_repetitions(res.t_s, plot["elbow_angle"], min_prominence=20.0)
    written = [out / "arm_angles.csv", out / "joints_3d.csv"]
    written.append(plot_angles(res.t_s, plot, out / "arm_angles.png", reps))
    res.summary["repetitions"] = len(reps)
    if video:
        fps = float(res.summary["fps"])
        res.summary["video"] = write_skeleton_video(res.xyz, res.parts, out / "skeleton.mp4", fps)
        written.append(out / "skeleton.mp4")
    (out / "human.json").write_text(json.dumps(res.summary, indent=1, default=float))
    written.append(out / "human.json")
    return written


# ----------------------------------------------------------------------------------------------- video
def _view_rotation(azimuth_deg: float, elevation_deg: float, up: np.ndarray) -> np.ndarray:
    """(3, 3) world -> view rotation: rows are the screen's right, down and the viewing direction, for a
    camera circling the vertical ``up`` at ``azimuth_deg``, looking down by ``elevation_deg``."""
    up = up / np.linalg.norm(up)
    ref = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = ref - up * (ref @ up)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    fwd_h = np.cos(az) * e1 + np.sin(az) * e2  # horizontal viewing direction
    fwd = np.cos(el) * fwd_h - np.sin(el) * up
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    return np.stack([right, down, fwd])


def write_skeleton_video(
    xyz_fk3: np.ndarray,
    parts: list[str],
    out: str | Path,
    fps: float,
    size: tuple[int, int] = (640, 480),
    degrees_per_s: float = 30.0,
    up: np.ndarray | None = None,
) -> dict[str, Any]:
    """The seed's rotating 3-D skeleton video: every joint of ``xyz_fk3`` (F, K, 3) mm and the BODY_25 and
    hand edges between them (:func:`skeleton_edges`), seen by a camera circling the body's vertical at
    ``degrees_per_s`` (one turn in 12 s by default), 15 degrees from above, one video frame per row at
    ``fps``. ``up``: the world's up direction (default: from the mid-hip to the neck, else world +z).
    Written with PyAV as H.264 (libx264 crf 20, yuv420p), like the annotated social video. Returns the
    frame count and size."""
    import av
    import cv2

    xyz = np.asarray(xyz_fk3, dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[2] != 3 or xyz.shape[1] != len(parts):
        raise AnalysisError(f"skeleton: shape {xyz.shape}, expected (F, K={len(parts)}, 3)")
    ok = np.asarray(np.isfinite(xyz).all(axis=2))
    if not ok.any():
        raise AnalysisError("skeleton video: no joint has a 3-D position in any frame")
    pts = xyz[ok]
    centre = np.median(pts, axis=0)
    if up is None:
        up = np.array([0.0, 0.0, 1.0])
        if "Neck" in parts and "MidHip" in parts:
            d = xyz[:, parts.index("Neck")] - xyz[:, parts.index("MidHip")]
            d = d[np.isfinite(d).all(axis=1)]
            if len(d):
                up = np.median(d, axis=0)
    radius = float(np.percentile(np.linalg.norm(pts - centre, axis=1), 99)) or 1.0
    w, h = size[0] // 2 * 2, size[1] // 2 * 2
    scale = 0.45 * min(w, h) / radius
    edges = skeleton_edges(parts)
    from fractions import Fraction

    out = Path(out)
    container = av.open(str(out), "w")
    try:
        stream = container.add_stream(
            "libx264", rate=Fraction(fps).limit_denominator(1001), options={"crf": "20"}
        )
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for f in range(len(xyz)):
            rot = _view_rotation(degrees_per_s * f / fps, 15.0, np.asarray(up, float))
            v = (xyz[f] - centre) @ rot.T
            px = np.stack([w / 2 + scale * v[:, 0], h / 2 + scale * v[:, 1]], axis=1)
            img = np.full((h, w, 3), 255, dtype=np.uint8)
            for a, b in edges:
                if ok[f, a] and ok[f, b]:
                    p, q = px[a].round().astype(int), px[b].round().astype(int)
                    cv2.line(
                        img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), (40, 90, 200), 2, cv2.LINE_AA
                    )
            for k in np.flatnonzero(ok[f]):
                p = px[k].round().astype(int)
                cv2.circle(img, (int(p[0]), int(p[1])), 3, (220, 60, 30), -1, cv2.LINE_AA)
            cv2.putText(
                img, f"frame {f}  {f / fps:.2f} s", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1
            )
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return {"frames": len(xyz), "width": w, "height": h, "fps": float(fps)}


# ----------------------------------------------------------------------------------------------- figures
def human_figures(folder: str | Path, out_dir: str | Path, video: bool = True) -> list[Path]:
    """The seed's human figures from what the ``human`` command wrote in ``folder`` (``arm_angles.csv``,
    ``joints_3d.csv``, ``human.json``) into ``out_dir``: ``arm_angles.png`` (angle-time curves,
    repetitions shaded), ``angle_histograms.png`` (range of motion per angle, 600 x 400 px),
    ``skeleton_3d.png`` (the 3-D skeleton at five moments, 600 x 500 px) and, with ``video``,
    ``skeleton.mp4`` (the rotating 3-D skeleton)."""
    import pandas as pd

    from analysis.plotting import pyplot, save

    d, out = Path(folder), Path(out_dir)
    for name in ("arm_angles.csv", "joints_3d.csv", "human.json"):
        if not (d / name).is_file():
            raise AnalysisError(f"{d}: no {name}: give the folder the human analysis wrote")
    angles = pd.read_csv(d / "arm_angles.csv")
    joints = pd.read_csv(d / "joints_3d.csv")
    fps = float(json.loads((d / "human.json").read_text())["fps"])
    out.mkdir(parents=True, exist_ok=True)
    t = angles["t_s"].to_numpy(float)
    cols = [c for c in angles.columns if c.endswith("_deg")]
    plot = {c.replace("_deg", ""): angles[c].to_numpy(float) for c in cols}
    reps = segment_repetitions(t, plot["elbow_angle"], min_prominence=20.0) if "elbow_angle" in plot else []
    written = [plot_angles(t, plot, out / "arm_angles.png", reps)]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(cols), figsize=(6, 4), squeeze=False)
    for ax, c in zip(axes[0], cols, strict=True):
        v = angles[c].to_numpy(float)
        ax.hist(v[np.isfinite(v)], bins=30, color="tab:blue")
        ax.set_title(c.replace("_deg", "").replace("_", " "), fontsize=9)
        ax.set_xlabel("deg")
    written.append(save(fig, out / "angle_histograms.png"))
    parts = [c[:-2] for c in joints.columns if c.endswith("_x")]
    xyz = np.stack([joints[[f"{p}_x", f"{p}_y", f"{p}_z"]].to_numpy(float) for p in parts], axis=1)
    fig = plt.figure(figsize=(6, 5))
    ax = fig.add_subplot(projection="3d")
    cmap = plt.get_cmap("viridis")
    edges = skeleton_edges(parts)
    for i, f in enumerate(np.linspace(0, len(xyz) - 1, 5).round().astype(int)):
        color = cmap(i / 4)
        for a, b in edges:
            seg = xyz[f, [a, b]]
            if np.isfinite(seg).all():
                ax.plot(seg[:, 0], seg[:, 1], seg[:, 2], color=color, lw=1.5)
        ax.scatter(*xyz[f].T, color=color, s=6, label=f"{t[f]:.1f} s")
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    ax.set_zlabel("z (mm)")
    ax.legend(fontsize=7)
    written.append(save(fig, out / "skeleton_3d.png", tight=False))
    if video:
        write_skeleton_video(xyz, parts, out / "skeleton.mp4", fps)
        written.append(out / "skeleton.mp4")
    return written
