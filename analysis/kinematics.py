"""Reach kinematics from a 3-D paw path: velocity, acceleration and jerk, segmentation, per-reach
measures, velocity curves, plots.

Pure numpy on arrays (``t_s`` (T,) seconds, ``points_t3`` (T, 3) mm, NaN = missing); no rig import. The
times are the samples' own (for a rig session: each 3-D point's trigger time on the firmware clock), and
may be uneven: every derivative is weighted for the actual spacing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.errors import AnalysisError
from analysis.events import events
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


def check_times(t_s: np.ndarray, n: int | None = None) -> np.ndarray:
    """``t_s`` as a (T,) float array of strictly increasing, finite times; AnalysisError names the first
    sample at fault (a repeated or backward time gives no derivative)."""
    t = np.asarray(t_s, dtype=np.float64)
    if t.ndim != 1 or (n is not None and len(t) != n):
        raise AnalysisError(f"times must have shape (T={n},), got {t.shape}")
    bad = np.flatnonzero(~np.isfinite(t))
    if len(bad):
        raise AnalysisError(f"time {bad[0]} is {t[bad[0]]} (times must be finite)")
    back = np.flatnonzero(np.diff(t) <= 0)
    if len(back):
        i = int(back[0])
        raise AnalysisError(f"time {i + 1} ({t[i + 1]:.9g} s) is not after time {i} ({t[i]:.9g} s)")
    return t


# stencil width per derivative order: 3 points (second-order accurate on a uniform grid) for velocity and
# acceleration, 5 for jerk (the narrowest centred stencil for a third derivative)
_WIDTH = {1: 3, 2: 3, 3: 5}


def _fd_weights(t: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Finite-difference weights for the ``order``-th derivative at every sample of possibly uneven times:
    ``(idx (T, W), w (T, W))`` with ``d^order x / dt^order (t[i]) ~= sum_j w[i, j] * x[idx[i, j]]``.

    Each row solves the Taylor (Vandermonde) conditions on the sample's own offsets (Fornberg's weights),
    so the estimate is exact for polynomials of degree < W at any spacing; the stencil is centred, shifted
    inward at the ends (one-sided there)."""
    width = _WIDTH[order]
    n = len(t)
    start = np.clip(np.arange(n) - width // 2, 0, n - width)
    idx = start[:, None] + np.arange(width)
    h = float(np.median(np.diff(t)))  # scale the offsets to ~1 so the small systems are well conditioned
    d = (t[idx] - t[:, None]) / h
    vander = d[:, None, :] ** np.arange(width)[None, :, None]  # [i, k, j] = d_ij ** k
    rhs = np.zeros((n, width, 1))
    rhs[:, order, 0] = math.factorial(order)
    w = np.linalg.solve(vander, rhs)[..., 0] / h**order
    return idx, w


def _resample(t: np.ndarray, x: np.ndarray, t_new: np.ndarray, max_step_s: float) -> np.ndarray:
    """Linear interpolation of ``x`` (T, D) at ``t_new``; NaN where a bracketing sample is NaN or the two
    bracketing samples are more than ``max_step_s`` apart (a gap is not bridged)."""
    j = np.clip(np.searchsorted(t, t_new, side="right") - 1, 0, len(t) - 2)
    step = t[j + 1] - t[j]
    a = ((t_new - t[j]) / step)[:, None]
    out = x[j] * (1 - a) + x[j + 1] * a
    out[step > max_step_s + 1e-12] = np.nan
    return out


def _smoothed_derivative(t: np.ndarray, p: np.ndarray, order: int, window: int) -> np.ndarray:
    """Savitzky-Golay ``order``-th derivative (polynomial order 3) over ``window`` samples. Samples on a
    uniform grid with holes (missing triggers) are placed on it (NaN holes); other uneven times are
    resampled to the median step and the result is interpolated back to ``t``."""
    dt = float(np.median(np.diff(t)))
    k = np.rint((t - t[0]) / dt).astype(np.int64)
    if np.all(np.abs(t - t[0] - k * dt) <= 0.05 * dt):
        grid = np.full((int(k[-1]) + 1, p.shape[1]), np.nan)
        grid[k] = p
        return savgol(grid, window, 3, deriv=order, dt_s=dt)[k]
    t_grid = t[0] + dt * np.arange(int((t[-1] - t[0]) / dt) + 1)
    d_grid = savgol(_resample(t, p, t_grid, 2 * dt), window, 3, deriv=order, dt_s=dt)
    if len(t_grid) < 2:
        return np.full_like(p, np.nan)
    return _resample(t_grid, d_grid, np.clip(t, t_grid[0], t_grid[-1]), 2 * dt)


def derivative(t_s: np.ndarray, points_tn: np.ndarray, order: int = 1, smooth_window: int = 0) -> np.ndarray:
    """(T, D) ``order``-th time derivative (1 velocity, 2 acceleration, 3 jerk) in units/s**order.

    ``t_s`` (T,) strictly increasing seconds, evenly spaced or not (trigger times with missing triggers,
    camera timestamps): finite differences are weighted for each sample's own neighbours (see
    :func:`_fd_weights`), never assume a nominal rate. ``smooth_window`` (odd, > 3 samples): a
    Savitzky-Golay derivative instead. NaN where a sample the estimate needs is missing."""
    if order not in _WIDTH:
        raise AnalysisError(f"derivative order must be 1, 2 or 3, got {order}")
    p = np.asarray(points_tn, dtype=np.float64)
    if p.ndim != 2:
        raise AnalysisError(f"points must have shape (T={len(np.asarray(t_s))}, D), got {p.shape}")
    t = check_times(t_s, len(p))
    if len(t) < _WIDTH[order]:
        return np.full_like(p, np.nan)
    if smooth_window:
        return _smoothed_derivative(t, p, order, smooth_window)
    idx, w = _fd_weights(t, order)
    return np.einsum("tw,twd->td", w, p[idx])


def velocity(t_s: np.ndarray, points_tn: np.ndarray, smooth_window: int = 0) -> np.ndarray:
    """(T, D) velocity in units/s (see :func:`derivative`). NaN where the path is missing."""
    return derivative(t_s, points_tn, 1, smooth_window)


def acceleration(t_s: np.ndarray, points_tn: np.ndarray, smooth_window: int = 0) -> np.ndarray:
    """(T, D) acceleration in units/s^2 (see :func:`derivative`)."""
    return derivative(t_s, points_tn, 2, smooth_window)


def jerk(t_s: np.ndarray, points_tn: np.ndarray, smooth_window: int = 0) -> np.ndarray:
    """(T, D) jerk in units/s^3 (see :func:`derivative`)."""
    return derivative(t_s, points_tn, 3, smooth_window)


def speed(t_s: np.ndarray, points_tn: np.ndarray, smooth_window: int = 0) -> np.ndarray:
    """(T,) speed, units/s."""
    return np.linalg.norm(velocity(t_s, points_tn, smooth_window), axis=1)


def kinematics_table(t_s: np.ndarray, points_t3: np.ndarray, smooth_window: int = 0) -> Any:
    """A pandas DataFrame, one row per sample: ``t_s``, position ``x y z`` (mm), velocity ``vx vy vz``
    (mm/s), ``speed_mm_s``, ``acceleration_mm_s2`` and ``jerk_mm_s3`` (magnitudes), on the same times."""
    import pandas as pd

    p = np.asarray(points_t3, dtype=np.float64)
    v = velocity(t_s, p, smooth_window)
    return pd.DataFrame(
        {
            "t_s": np.asarray(t_s, dtype=np.float64),
            **{c: p[:, i] for i, c in enumerate("xyz")},
            **{f"v{c}": v[:, i] for i, c in enumerate("xyz")},
            "speed_mm_s": np.linalg.norm(v, axis=1),
            "acceleration_mm_s2": np.linalg.norm(acceleration(t_s, p, smooth_window), axis=1),
            "jerk_mm_s3": np.linalg.norm(jerk(t_s, p, smooth_window), axis=1),
        }
    )


# Reach defaults (mm, s), shown in --help and written into every summary. A reach is a movement faster than
# the onset speed somewhere, bounded by the offset speed (half the onset), that goes at least
# REACH_MIN_EXTENT_MM from where it started and lasts at least REACH_MIN_DURATION_S; movements less than
# REACH_MIN_GAP_S apart are one reach (the out and back strokes stop briefly at the target).
REACH_ONSET_SPEED_MM_S = 50.0
REACH_MIN_EXTENT_MM = 10.0  # a mouse's reach to the pellet is 15-30 mm; a posture shift or twitch a few mm
REACH_MIN_DURATION_S = 0.1  # a reach's stroke out and back takes 0.2-0.6 s
REACH_MIN_GAP_S = 0.15
REACH_MAX_GAP_S = 0.1  # missing samples filled before derivatives: up to 12 frames at 124 Hz
# Savitzky-Golay (cubic) window for speeds by default: the odd number of samples nearest 60 ms, at least 5
# (7 at 124 Hz). Unsmoothed, 0.05 mm of tracking noise adds ~2-5 % to a 250 mm/s peak (the largest of
# several noisy samples); this window keeps a minimum-jerk stroke of 0.12 s within 3 %.
REACH_SMOOTH_S = 0.06


def default_smooth_window(t_s: np.ndarray, smooth_s: float = REACH_SMOOTH_S) -> int:
    """The odd number of samples nearest ``smooth_s`` at the times' median rate, at least 5."""
    t = np.asarray(t_s, dtype=np.float64)
    if len(t) < 2:
        return 0
    n = round(smooth_s / float(np.median(np.diff(t))))
    return max(5, n + 1 - n % 2)


@dataclass(frozen=True)
class ReachSearch:
    """What the segmentation saw besides the reaches: movements over the onset speed, those dropped as too
    short or too small, and those left out because samples inside them are missing (an unfilled gap)."""

    movements: int = 0
    too_short: int = 0
    too_small: int = 0
    with_missing_samples: int = 0


def find_reaches(
    t_s: np.ndarray,
    points_t3: np.ndarray,
    onset_speed_mm_s: float = REACH_ONSET_SPEED_MM_S,
    offset_speed_mm_s: float | None = None,
    min_extent_mm: float = REACH_MIN_EXTENT_MM,
    min_duration_s: float = REACH_MIN_DURATION_S,
    merge_gap_s: float = REACH_MIN_GAP_S,
    max_gap: int = 0,
    smooth_window: int = 0,
) -> tuple[list[Reach], ReachSearch]:
    """Reaches in a 3-D paw path (see :func:`segment_reaches`) and what else the search saw."""
    t = np.asarray(t_s, dtype=np.float64)
    p = np.asarray(points_t3, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) != len(t):
        raise AnalysisError(f"points must have shape (T={len(t)}, 3), got {p.shape}")
    if max_gap:
        p = interpolate_gaps(p, max_gap)
    off = onset_speed_mm_s / 2 if offset_speed_mm_s is None else offset_speed_mm_s
    sp = speed(t, p, smooth_window)
    if smooth_window:  # measure distances on the smoothed path too: noise inflates the path length
        p = savgol(p, smooth_window, 3)
    fast = np.nan_to_num(sp, nan=0.0) > off
    strong = np.nan_to_num(sp, nan=0.0) > onset_speed_mm_s
    moving = np.zeros(len(t), dtype=bool)
    for a, b in true_runs(fast):
        if strong[a : b + 1].any():
            moving[a : b + 1] = True
    # movements less than merge_gap_s apart are one; no minimum duration yet (counted below)
    merged = events(t, moving, 0.0, merge_gap_s) if len(t) else []
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
    reaches = []
    search = {"movements": len(merged), "too_short": 0, "too_small": 0, "with_missing_samples": 0}
    for a, b in merged:
        seg = p[a : b + 1]
        if not np.isfinite(seg).all():
            search["with_missing_samples"] += 1
            continue
        dur = float(t[b] - t[a])
        extent = np.linalg.norm(seg - seg[0], axis=1)
        if dur + dt < min_duration_s - 1e-9:
            search["too_short"] += 1
            continue
        if extent.max() < min_extent_mm:
            search["too_small"] += 1
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
    return reaches, ReachSearch(**search)


def segment_reaches(
    t_s: np.ndarray,
    points_t3: np.ndarray,
    onset_speed_mm_s: float = REACH_ONSET_SPEED_MM_S,
    offset_speed_mm_s: float | None = None,
    min_extent_mm: float = REACH_MIN_EXTENT_MM,
    min_duration_s: float = REACH_MIN_DURATION_S,
    merge_gap_s: float = REACH_MIN_GAP_S,
    max_gap: int = 5,
    smooth_window: int = 0,
) -> list[Reach]:
    """Find reaches in a 3-D paw path with a two-threshold speed rule.

    A movement is a run of samples faster than ``offset_speed_mm_s`` (default half the onset speed) that
    somewhere exceeds ``onset_speed_mm_s``; its first and last samples are onset and offset. Movements less
    than ``merge_gap_s`` apart are one (:func:`analysis.events.events`: the out and back strokes of one
    reach stop briefly at the target; a missed sample never splits a reach). Reaches lasting less than
    ``min_duration_s`` (first to last sample plus one frame) or going less than ``min_extent_mm`` from the
    onset position are dropped, and so are those with a missing sample inside. Gaps of up to ``max_gap``
    samples are interpolated first (:func:`analysis.tasks.reaching.analyze_reaching` fills them by time,
    :func:`analysis.events.fill_gaps`, and passes 0). ``smooth_window`` (odd, samples) applies a
    Savitzky-Golay filter to speed and path; without it, tracking noise adds to the path length (about
    ``sqrt(2) * noise`` per sample).
    """
    return find_reaches(
        t_s,
        points_t3,
        onset_speed_mm_s,
        offset_speed_mm_s,
        min_extent_mm,
        min_duration_s,
        merge_gap_s,
        max_gap,
        smooth_window,
    )[0]


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
