"""Missing and uncertain data, handled the same way by every analysis: a confidence cut, gap filling up to a
stated maximum, and events (bouts, epochs, visits) with a minimum duration and a minimum gap, so that one
missed frame never splits an event. Every step counts what it did (:class:`DataQuality`).

Pure functions over arrays; times ``t_s`` (T,) in seconds, tracks (T, D) with NaN = missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.errors import AnalysisError
from analysis.filters import interpolate_gaps, true_runs

# Confidence cut per source format (PoseTable.meta["format"]): DeepLabCut's own default pcutoff (0.6),
# SLEAP's default peak threshold (0.2), OpenPose's usual render threshold (0.1), JABS's own cut (0.3);
# other sources 0.5.
MIN_CONFIDENCE = {
    "deeplabcut": 0.6,
    "sleap-analysis": 0.2,
    "sleap-slp": 0.2,
    "openpose": 0.1,
    "jabs": 0.3,
}
MIN_CONFIDENCE_OTHER = 0.5


def default_min_confidence(fmt: str | None) -> float:
    """The confidence cut used for a source format when the user gives none."""
    return MIN_CONFIDENCE.get(fmt or "", MIN_CONFIDENCE_OTHER)


def min_confidence_help() -> str:
    """The defaults in words, for --help."""
    per = ", ".join(f"{k} {v:g}" for k, v in MIN_CONFIDENCE.items())
    return f"{per}, other formats {MIN_CONFIDENCE_OTHER:g}"


@dataclass(frozen=True)
class DataQuality:
    """What happened to a track's frames: ``frames`` in all; ``missing_in`` not detected in the source;
    ``cut`` detected but below ``min_confidence``; ``filled`` missing (either way) and filled by
    interpolation over a gap of at most ``max_gap_s``; ``missing`` still missing after filling."""

    frames: int
    missing_in: int
    cut: int
    filled: int
    missing: int
    min_confidence: float
    max_gap_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "missing_in_source": self.missing_in,
            "cut_low_confidence": self.cut,
            "filled": self.filled,
            "still_missing": self.missing,
            "min_confidence": self.min_confidence,
            "max_gap_s": self.max_gap_s,
        }


def _frame_s(t_s: np.ndarray) -> float:
    """The typical frame interval (median step) of a time base; 0 with fewer than 2 samples."""
    t = np.asarray(t_s, dtype=np.float64)
    return float(np.median(np.diff(t))) if len(t) > 1 else 0.0


def confidence_cut(
    track_tn: np.ndarray, confidence_t: np.ndarray | None, min_confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """``track_tn`` (T, D) with the samples whose confidence is below ``min_confidence`` set to NaN.

    ``confidence_t`` (T,); NaN confidence (a source without one, e.g. 3-D) is never cut. Returns (the cut
    track, (T,) bool of the samples cut: present before, removed now)."""
    x = np.array(track_tn, dtype=np.float64)
    if x.ndim != 2:
        raise AnalysisError(f"track: shape {x.shape}, expected (T, D)")
    cut = np.zeros(len(x), dtype=bool)
    if confidence_t is not None:
        c = np.asarray(confidence_t, dtype=np.float64)
        if c.shape != (len(x),):
            raise AnalysisError(f"confidence: shape {c.shape}, expected ({len(x)},) like the track")
        cut = np.isfinite(x).all(axis=1) & np.isfinite(c) & (c < min_confidence)
        x[cut] = np.nan
    return x, cut


def fill_gaps(
    t_s: np.ndarray, track_tn: np.ndarray, max_gap_s: float, kind: str = "linear"
) -> tuple[np.ndarray, np.ndarray]:
    """Linearly (or ``cubic``: PCHIP) fill runs of missing samples lasting at most ``max_gap_s`` (the
    number of missing frames x the frame interval); such a run at the start or end of the track is held at
    the nearest sample (the track neither starts nor ends in a gap shorter than ``max_gap_s``).

    Returns (the filled track, (T,) bool of the samples filled)."""
    x = np.asarray(track_tn, dtype=np.float64)
    if x.ndim != 2:
        raise AnalysisError(f"track: shape {x.shape}, expected (T, D)")
    if not max_gap_s >= 0:
        raise AnalysisError(f"max gap {max_gap_s} s must be >= 0")
    dt = _frame_s(t_s)
    if dt <= 0:
        return x.copy(), np.zeros(len(x), dtype=bool)
    max_frames = int(np.floor(max_gap_s / dt + 1e-6))
    out = interpolate_gaps(x, max_frames, kind) if max_frames > 0 else x.copy()
    ok = np.flatnonzero(np.isfinite(x).all(axis=1))
    if len(ok) and max_frames > 0:
        first, last = ok[0], ok[-1]
        if 0 < first <= max_frames:
            out[:first] = x[first]
        if 0 < len(x) - 1 - last <= max_frames:
            out[last + 1 :] = x[last]
    filled = np.asarray(~np.isfinite(x).all(axis=1) & np.isfinite(out).all(axis=1))
    return out, filled


@dataclass(frozen=True)
class CleanTrack:
    """A track after :func:`clean`: ``track`` (T, D), ``cut_t`` (T,) the samples the confidence cut
    removed, ``filled_t`` (T,) the samples filled (either way missing before), ``quality`` the counts."""

    track: np.ndarray
    cut_t: np.ndarray
    filled_t: np.ndarray
    quality: DataQuality

    def status(self) -> np.ndarray:
        """(T,) per sample: ``measured``, ``filled`` or ``missing`` (for the tables an analysis writes)."""
        ok = np.isfinite(self.track).all(axis=1)
        return np.where(~ok, "missing", np.where(self.filled_t, "filled", "measured"))


def clean(
    t_s: np.ndarray,
    track_tn: np.ndarray,
    confidence_t: np.ndarray | None,
    min_confidence: float,
    max_gap_s: float,
    kind: str = "linear",
) -> CleanTrack:
    """Confidence cut, then gap filling (:func:`confidence_cut`, :func:`fill_gaps`), with masks."""
    x = np.asarray(track_tn, dtype=np.float64)
    missing_in = int((~np.isfinite(x).all(axis=1)).sum()) if x.ndim == 2 else 0
    cut_x, cut = confidence_cut(x, confidence_t, min_confidence)
    out, filled = fill_gaps(t_s, cut_x, max_gap_s, kind)
    q = DataQuality(
        frames=len(out),
        missing_in=missing_in,
        cut=int(cut.sum()),
        filled=int(filled.sum()),
        missing=int((~np.isfinite(out).all(axis=1)).sum()),
        min_confidence=float(min_confidence),
        max_gap_s=float(max_gap_s),
    )
    return CleanTrack(out, cut, filled, q)


def clean_track(
    t_s: np.ndarray,
    track_tn: np.ndarray,
    confidence_t: np.ndarray | None,
    min_confidence: float,
    max_gap_s: float,
) -> tuple[np.ndarray, DataQuality]:
    """Confidence cut, then gap filling: the track every count and derivative should be taken from."""
    c = clean(t_s, track_tn, confidence_t, min_confidence, max_gap_s)
    return c.track, c.quality


def events(
    t_s: np.ndarray, mask_t: np.ndarray, min_duration_s: float, min_gap_s: float
) -> list[tuple[int, int]]:
    """Inclusive (start, end) index pairs of the events in a (T,) boolean mask.

    Runs of True separated by less than ``min_gap_s`` of False are one event (a missed or uncertain frame
    never splits one); then events shorter than ``min_duration_s`` are dropped. A run [a, b] lasts
    ``t[b] - t[a] + one frame``; the gap between runs [.., b] and [c, ..] is ``t[c] - t[b] - one frame``."""
    t = np.asarray(t_s, dtype=np.float64)
    mask = np.asarray(mask_t, dtype=bool)
    if t.shape != mask.shape or t.ndim != 1:
        raise AnalysisError(f"mask: shape {mask.shape}, expected {t.shape} like the times")
    dt = _frame_s(t)
    runs = true_runs(mask)
    merged: list[tuple[int, int]] = []
    for a, b in runs:
        if merged and t[a] - t[merged[-1][1]] - dt < min_gap_s - 1e-9:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return [(a, b) for a, b in merged if t[b] - t[a] + dt >= min_duration_s - 1e-9]


def visits(
    t_s: np.ndarray, labels_t: np.ndarray, min_duration_s: float, unknown: Any = ""
) -> list[tuple[int, int, Any]]:
    """Stable visits in a (T,) sequence of place labels (``unknown`` = not known, e.g. missing).

    A visit is a run of one label, across unknown samples, lasting at least ``min_duration_s``; shorter
    runs (a false point in another place, a flicker at a border) are dropped and the visits on either side
    of them with the same label join. Returns (start, end, label) with inclusive indices; a transition is a
    change of label between consecutive visits."""
    t = np.asarray(t_s, dtype=np.float64)
    lab = np.asarray(labels_t, dtype=object)
    if t.shape != lab.shape or t.ndim != 1:
        raise AnalysisError(f"labels: shape {lab.shape}, expected {t.shape} like the times")
    dt = _frame_s(t)
    known = np.flatnonzero(lab != unknown)
    runs: list[tuple[int, int, Any]] = []
    for i in known:
        if runs and runs[-1][2] == lab[i]:
            runs[-1] = (runs[-1][0], int(i), runs[-1][2])
        else:
            runs.append((int(i), int(i), lab[i]))
    out: list[tuple[int, int, Any]] = []
    for a, b, name in runs:
        if t[b] - t[a] + dt < min_duration_s - 1e-9:
            continue
        if out and out[-1][2] == name:
            out[-1] = (out[-1][0], b, name)
        else:
            out.append((a, b, name))
    return out
