"""Mouse reaching: reaches from the 3-D paw path, success rate and per-trial outcomes from the trial table.

Inputs are arrays and simple tables; :func:`load_points3d` / :func:`load_trials` read the rig's
``points3d.csv`` / ``trials.csv`` (columns as in ``rig/SESSION.md``) with pandas only.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from analysis.errors import AnalysisError
from analysis.kinematics import (
    Reach,
    plot_trajectories,
    plot_velocity_curves,
    reach_table,
    segment_reaches,
    speed,
    velocity_curves,
)
from analysis.textfile import read_text

REACH_OUTCOMES = ("success", "knocked_off", "miss")  # trials in which the mouse reached
ALL_OUTCOMES = (*REACH_OUTCOMES, "no_reach")


def _check_numbers(df: Any, columns: list[str], path: Path, whole: tuple[str, ...] = ()) -> None:
    """Every cell of ``columns`` a number (empty: missing), of ``whole`` a present whole number;
    AnalysisError names the file, line and column of the first that is not."""
    import pandas as pd

    for c in columns:
        col = pd.to_numeric(df[c], errors="coerce")
        bad = (col.isna() & df[c].notna()) | (col.isna() if c in whole else False)
        idx = np.flatnonzero(np.asarray(bad))
        if len(idx):
            raise AnalysisError(
                f"{path}: line {idx[0] + 2}, column {c!r}: {df[c].iloc[idx[0]]!r} is not a number"
            )


def load_points3d(
    path: str | Path, name: str = "paw", filtered: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``points3d.csv`` -> (t_s (T,), xyz (T, 3) mm) for the point ``name``; invalid rows are NaN."""
    import pandas as pd

    path = Path(path)
    text = read_text(path, "points table", AnalysisError)
    try:
        df = pd.read_csv(io.StringIO(text))
    except ValueError as exc:
        raise AnalysisError(f"{path}: cannot read points table ({' '.join(str(exc).split())})") from None
    cols = ["x_filt", "y_filt", "z_filt"] if filtered else ["x", "y", "z"]
    missing = [c for c in ["name", "t_frame_ns", *cols] if c not in df.columns]
    if missing:
        raise AnalysisError(f"{path}: lacks column(s) {', '.join(missing)}")
    _check_numbers(df, ["t_frame_ns", *cols], path, whole=("t_frame_ns",))
    sub = df[df["name"] == name]
    if sub.empty:
        raise AnalysisError(
            f"{path}: no rows for point {name!r} (has {', '.join(map(str, df['name'].unique()))})"
        )
    xyz = sub[cols].to_numpy(dtype=float)
    if "valid" in sub.columns:
        xyz[~sub["valid"].astype(bool).to_numpy()] = np.nan
    t = sub["t_frame_ns"].to_numpy(dtype=np.int64)
    return (t - t[0]) * 1e-9 + t[0] * 1e-9, xyz


def load_trials(path: str | Path) -> Any:
    """``trials.csv`` (trial, t_start_ns, t_end_ns, outcome) -> DataFrame, adding t_start_s and t_end_s."""
    import pandas as pd

    path = Path(path)
    text = read_text(path, "trial table", AnalysisError)
    try:
        df = pd.read_csv(io.StringIO(text))
    except ValueError as exc:
        raise AnalysisError(f"{path}: cannot read trial table ({' '.join(str(exc).split())})") from None
    missing = [c for c in ("trial", "t_start_ns", "t_end_ns", "outcome") if c not in df.columns]
    if missing:
        raise AnalysisError(f"{path}: lacks column(s) {', '.join(missing)}")
    _check_numbers(df, ["t_start_ns", "t_end_ns"], path, whole=("t_start_ns", "t_end_ns"))
    df["t_start_s"] = df["t_start_ns"].astype("int64") * 1e-9
    df["t_end_s"] = df["t_end_ns"].astype("int64") * 1e-9
    df["outcome"] = df["outcome"].fillna("").astype(str)
    return df


def success_summary(outcomes: Any) -> dict[str, Any]:
    """Counts per outcome and rates: ``success_rate`` over completed trials (not aborted/empty) and
    ``success_per_reach_trial`` over trials with a reach (success, knocked_off, miss)."""
    outs = [str(o) for o in outcomes]
    counts = {o: outs.count(o) for o in sorted(set(outs))}
    done = [o for o in outs if o and o != "aborted"]
    reach_trials = [o for o in done if o in REACH_OUTCOMES]
    n_succ = done.count("success")
    return {
        "n_trials": len(outs),
        "n_completed": len(done),
        "counts": counts,
        "success_rate": n_succ / len(done) if done else float("nan"),
        "success_per_reach_trial": n_succ / len(reach_trials) if reach_trials else float("nan"),
    }


def trial_outcomes(trials: Any, reaches: list[Reach]) -> Any:
    """Per trial: outcome, number of reaches whose onset falls in [t_start_s, t_end_s), first-reach
    latency from trial start, and its duration and peak speed."""
    import pandas as pd

    rows = []
    onsets = np.array([r.t_onset_s for r in reaches])
    for tr in trials.itertuples():
        inside = [r for r, on in zip(reaches, onsets, strict=True) if tr.t_start_s <= on < tr.t_end_s]
        first = inside[0] if inside else None
        rows.append(
            {
                "trial": tr.trial,
                "outcome": tr.outcome,
                "n_reaches": len(inside),
                "first_reach_latency_s": first.t_onset_s - tr.t_start_s if first else np.nan,
                "first_reach_duration_s": first.duration_s if first else np.nan,
                "first_reach_max_speed_mm_s": first.max_speed_mm_s if first else np.nan,
            }
        )
    return pd.DataFrame(rows)


def analyze_reaching(
    t_s: np.ndarray,
    paw_t3: np.ndarray,
    trials: Any | None = None,
    out_dir: str | Path | None = None,
    n_clusters: int = 0,
    **segment_kwargs: Any,
) -> dict[str, Any]:
    """Segment reaches, measure them, relate them to trials; with ``out_dir`` write ``reaches.csv``,
    ``trials_outcomes.csv``, ``summary.json``, ``trajectories.png`` and ``velocity.png``.

    ``n_clusters`` > 0 also clusters the reaches' 3-D paths (onset-aligned) by dynamic time warping into a
    ``cluster`` column of the reach table and ``dendrogram.png``.
    """
    reaches = segment_reaches(t_s, paw_t3, **segment_kwargs)
    table = reach_table(reaches)
    sp = speed(t_s, paw_t3)
    u, curves = velocity_curves(t_s, sp, reaches)
    result: dict[str, Any] = {
        "reaches": reaches,
        "reach_table": table,
        "velocity_u": u,
        "velocity_curves": curves,
    }
    summary: dict[str, Any] = {
        "n_reaches": len(reaches),
        "mean_duration_s": float(table["duration_s"].mean()) if len(table) else float("nan"),
        "mean_path_length_mm": float(table["path_length_mm"].mean()) if len(table) else float("nan"),
        "mean_max_speed_mm_s": float(table["max_speed_mm_s"].mean()) if len(table) else float("nan"),
    }
    if trials is not None:
        result["trial_outcomes"] = trial_outcomes(trials, reaches)
        summary.update(success_summary(trials["outcome"]))
    linkage = None
    if n_clusters > 0 and len(reaches) >= 2:
        from analysis.clustering import cluster, dtw_distance_matrix

        paths = [np.asarray(paw_t3, float)[r.onset : r.offset + 1] for r in reaches]
        paths = [p - p[0] for p in paths]
        labels, linkage = cluster(dtw_distance_matrix(paths), n_clusters=min(n_clusters, len(reaches)))
        table["cluster"] = labels
        summary["cluster_sizes"] = {int(c): int((labels == c).sum()) for c in np.unique(labels)}
    result["summary"] = summary
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "reaches.csv", index=False)
        if trials is not None:
            result["trial_outcomes"].to_csv(out / "trials_outcomes.csv", index=False)
        plot_trajectories(np.asarray(paw_t3, float), reaches, out / "trajectories.png")
        plot_velocity_curves(u, curves, out / "velocity.png")
        if linkage is not None:
            from analysis.clustering import plot_dendrogram

            plot_dendrogram(linkage, out / "dendrogram.png", labels=[f"r{i}" for i in range(len(reaches))])
        tmp = out / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1, default=float))
        tmp.replace(out / "summary.json")  # written last: its presence means the analysis finished
    return result
