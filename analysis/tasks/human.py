"""Human 3-D motor assessment: joint angles, forearm supination, segment velocities, repetitions.

Inputs are 3-D keypoint trajectories (T, 3) in mm (e.g. OpenPose BODY_25 + hand keypoints from two views,
triangulated with :func:`analysis.geometry.triangulate`); NaN = missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

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
    min_confidence: float = 0.1,
    ransac_threshold_px: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """2-D keypoints of the same person from several named cameras -> 3-D.

    ``tables``: camera name -> :class:`PoseTable` (e.g. from :func:`analysis.io.pose.read_openpose`) with
    the same body parts. Views are paired by frame number (:func:`analysis.triangulate.match_frames`),
    never by row position: rows of the result are the frames of any view, in order, and a frame a view
    lacks is missing in that view only. Views below ``min_confidence`` are ignored; confidence weights the
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
