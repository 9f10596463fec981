"""Reach kinematics from a 3-D paw path: segmentation, per-reach measures, velocity curves, plots.

Pure numpy on arrays (``t_s`` (T,) seconds, ``points_t3`` (T, 3) mm, NaN = missing); no rig import.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.errors import AnalysisError
from analysis.filters import interpolate_gaps, savgol, true_runs
from analysis.plotting import pyplot, save


@dataclass(frozen=True)
class Reach:
    """One reach: sample indices ``onset``..``offset`` (inclusive) and its measures (mm, s, mm/s)."""

    onset: int
    offset: int
    t_onset_s: float
    t_offset_s: float
    duration_s: float
    path_length_mm: float
    extent_mm: float
    max_speed_mm_s: float
    mean_speed_mm_s: float
    t_peak_speed_s: float
    t_apex_s: float


def velocity(t_s: np.ndarray, points_tn: np.ndarray, smooth_window: int = 0) -> np.ndarray:
    """(T, D) velocity in units/s: central differences, or a Savitzky-Golay derivative over
    ``smooth_window`` samples (odd, > 3) on a uniformly sampled series. NaN where the path is missing."""
    t = np.asarray(t_s, dtype=np.float64)
    p = np.asarray(points_tn, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(t):
        raise AnalysisError(f"points must have shape (T={len(t)}, D), got {p.shape}")
    if len(t) < 3:
        return np.full_like(p, np.nan)
    if smooth_window:
        dt = float(np.median(np.diff(t)))
        return savgol(p, smooth_window, 3, deriv=1, dt_s=dt)
    return np.gradient(p, t, axis=0)


def speed(t_s: np.ndarray, points_tn: np.ndarray, smooth_window: int = 0) -> np.ndarray:
    """(T,) speed, units/s."""
    return np.linalg.norm(velocity(t_s, points_tn, smooth_window), axis=1)


def segment_reaches(
    t_s: np.ndarray,
    points_t3: np.ndarray,
    onset_speed_mm_s: float = 50.0,
    offset_speed_mm_s: float | None = None,
    min_extent_mm: float = 2.0,
    min_duration_s: float = 0.05,
    merge_gap_s: float = 0.15,
    max_gap: int = 5,
    smooth_window: int = 0,
) -> list[Reach]:
    """Find reaches in a 3-D paw path with a two-threshold speed rule.

    A movement is a run of samples faster than ``offset_speed_mm_s`` (default half the onset speed) that
    somewhere exceeds ``onset_speed_mm_s``; its first and last samples are onset and offset. Movements less
    than ``merge_gap_s`` apart are merged (the out and back strokes of one reach stop briefly at the
    target). Reaches shorter than ``min_duration_s`` or reaching less than ``min_extent_mm`` from the onset
    position are dropped. Gaps of up to ``max_gap`` samples are interpolated first. ``smooth_window``
    (odd, samples) applies a Savitzky-Golay filter to speed and path; without it, tracking noise adds to the
    path length (about ``sqrt(2) * noise`` per sample).
    """
    t = np.asarray(t_s, dtype=np.float64)
    p = interpolate_gaps(np.asarray(points_t3, dtype=np.float64), max_gap)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) != len(t):
        raise AnalysisError(f"points must have shape (T={len(t)}, 3), got {p.shape}")
    off = onset_speed_mm_s / 2 if offset_speed_mm_s is None else offset_speed_mm_s
    sp = speed(t, p, smooth_window)
    if smooth_window:  # measure distances on the smoothed path too: noise inflates the path length
        p = savgol(p, smooth_window, 3)
    fast = np.nan_to_num(sp, nan=0.0) > off
    strong = np.nan_to_num(sp, nan=0.0) > onset_speed_mm_s
    moves = [(a, b) for a, b in true_runs(fast) if strong[a : b + 1].any()]
    merged: list[list[int]] = []
    for a, b in moves:
        if merged and t[a] - t[merged[-1][1]] <= merge_gap_s and np.isfinite(p[merged[-1][1] : a + 1]).all():
            merged[-1][1] = b
        else:
            merged.append([a, b])
    reaches = []
    for a, b in merged:
        seg = p[a : b + 1]
        if not np.isfinite(seg).all():
            continue
        dur = float(t[b] - t[a])
        extent = np.linalg.norm(seg - seg[0], axis=1)
        if dur < min_duration_s or extent.max() < min_extent_mm:
            continue
        length = float(np.linalg.norm(np.diff(seg, axis=0), axis=1).sum())
        s = sp[a : b + 1]
        reaches.append(
            Reach(
                onset=a,
                offset=b,
                t_onset_s=float(t[a]),
                t_offset_s=float(t[b]),
                duration_s=dur,
                path_length_mm=length,
                extent_mm=float(extent.max()),
                max_speed_mm_s=float(np.nanmax(s)),
                mean_speed_mm_s=length / dur if dur > 0 else float("nan"),
                t_peak_speed_s=float(t[a + int(np.nanargmax(s))]),
                t_apex_s=float(t[a + int(np.argmax(extent))]),
            )
        )
    return reaches


def reach_table(reaches: list[Reach]) -> Any:
    """A pandas DataFrame, one row per reach, columns = :class:`Reach` fields."""
    import pandas as pd

    cols = list(Reach.__dataclass_fields__)
    return pd.DataFrame([asdict(r) for r in reaches], columns=cols)


def velocity_curves(
    t_s: np.ndarray, speed_t: np.ndarray, reaches: list[Reach], n_samples: int = 101
) -> tuple[np.ndarray, np.ndarray]:
    """Speed-time curves of each reach resampled on normalized time 0..1: returns (n_samples,) and
    (R, n_samples)."""
    u = np.linspace(0.0, 1.0, n_samples)
    out = np.full((len(reaches), n_samples), np.nan)
    t = np.asarray(t_s, dtype=np.float64)
    for i, r in enumerate(reaches):
        tt = t[r.onset : r.offset + 1]
        ss = speed_t[r.onset : r.offset + 1]
        if len(tt) >= 2 and tt[-1] > tt[0]:
            out[i] = np.interp(u, (tt - tt[0]) / (tt[-1] - tt[0]), ss)
    return u, out


def plot_trajectories(points_t3: np.ndarray, reaches: list[Reach], path: str | Path, title: str = "") -> Path:
    """3-D trajectories of the reaches (one colour each, onset marked) as a PNG."""
    plt = pyplot()

    fig = plt.figure(figsize=(6, 5))
    ax = fig.add_subplot(projection="3d")
    cmap = plt.get_cmap("viridis")
    for i, r in enumerate(reaches):
        seg = points_t3[r.onset : r.offset + 1]
        color = cmap(i / max(1, len(reaches) - 1))
        ax.plot(seg[:, 0], seg[:, 1], seg[:, 2], color=color, lw=1)
        ax.scatter(*seg[0], color=color, s=10)
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    ax.set_zlabel("z (mm)")
    ax.set_title(title or f"{len(reaches)} reaches")
    return save(fig, path, tight=False)


def plot_velocity_curves(u: np.ndarray, curves: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Speed against normalized reach time: every reach (thin) and the mean +- SD (thick) as a PNG."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for c in curves:
        ax.plot(u, c, color="0.7", lw=0.7)
    if len(curves):
        m, s = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
        ax.plot(u, m, color="tab:blue", lw=2, label="mean")
        ax.fill_between(u, m - s, m + s, color="tab:blue", alpha=0.2, label="SD")
        ax.legend()
    ax.set_xlabel("normalized reach time")
    ax.set_ylabel("speed (mm/s)")
    ax.set_title(title or f"velocity of {len(curves)} reaches")
    return save(fig, path, tight=False)
