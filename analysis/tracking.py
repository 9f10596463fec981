"""One 3-D point per stereo set from per-camera detection boxes: the online triangulator's logic as a
pure class, so offline reanalysis runs literally the same code and reproduces the online 3-D.

Per set: keep each camera's boxes above ``min_confidence`` (at most 3, highest first), triangulate
every combination (confidence-weighted DLT through :func:`analysis.geometry.triangulate`), keep the
combination with the smallest worst-view reprojection error, refuse it above
``max_reproj_error_px``, then filter with :class:`analysis.filters.KalmanCV` (time = trigger index /
rate) and predict ``predict_s`` ahead.

Its settings are one typed model, :class:`TrackerSettings`: the rig's ``pipeline.triangulator`` extends it,
and reanalysis validates a session's ``config.yaml`` through it, so online and offline build the tracker
the same way (:meth:`PointTracker.from_settings`). Offline, :meth:`PointTracker.solve_many` triangulates
every set at once (:func:`best_points`) with the same per-point arithmetic, so its 3-D is the online
tracker's bit for bit at a third of the CPU time.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from analysis.camera import CameraModel
from analysis.filters import KalmanCV
from analysis.geometry import reprojection_errors, triangulate

MAX_CANDIDATES = 3


@dataclass
class PointResult:
    xyz: np.ndarray  # (3,) raw triangulation, NaN when invalid
    xyz_filtered: np.ndarray
    xyz_predicted: np.ndarray
    valid: bool
    reproj_error_px: float
    cameras: list[str] = field(default_factory=list)
    reason: str = ""


Best = tuple[np.ndarray, float, list[int]]  # xyz (3,), worst-view reprojection error px, cameras used


def _candidates(boxes: Sequence[np.ndarray], min_confidence: float) -> list[np.ndarray]:
    """Per camera, the boxes that may be triangulated: finite, above ``min_confidence``, best first, at most
    ``MAX_CANDIDATES``."""
    cands = []
    for b in boxes:
        b = np.asarray(b, dtype=np.float64).reshape(-1, 5)
        b = b[np.isfinite(b).all(axis=1) & (b[:, 4] >= min_confidence)]
        if len(b) > 1:
            b = b[np.argsort(-b[:, 4], kind="stable")][:MAX_CANDIDATES]
        cands.append(b)
    return cands


def best_point(
    cameras: Sequence[CameraModel], boxes: Sequence[np.ndarray], min_confidence: float
) -> Best | None:
    """``boxes[c]`` is (K, 5) ``x1, y1, x2, y2, confidence`` for camera c (K may be 0).

    Returns (xyz (3,), worst-view reprojection error px, indices of the cameras used) or None when
    fewer than two cameras have a box above ``min_confidence``.
    """
    return _best_of(cameras, _candidates(boxes, min_confidence))


def _best_of(cameras: Sequence[CameraModel], cands: list[np.ndarray]) -> Best | None:
    views = [i for i, c in enumerate(cands) if len(c)]
    if len(views) < 2:
        return None
    sub = [cameras[i] for i in views]
    # every combination of one box per view as one point: (V, M, 5), M = product of the box counts
    # (first combination = every view's best box; ties keep the earliest combination)
    if all(len(cands[i]) == 1 for i in views):
        arr = np.stack([cands[i] for i in views])
    else:
        idx = np.array(list(itertools.product(*(range(len(cands[i])) for i in views)))).T  # (V, M)
        arr = np.stack([cands[i][idx[v]] for v, i in enumerate(views)])
    pts = np.stack([0.5 * (arr[..., 0] + arr[..., 2]), 0.5 * (arr[..., 1] + arr[..., 3])], axis=2)
    xyz = triangulate(sub, pts, arr[..., 4])
    errs = reprojection_errors(sub, xyz, pts)  # (V, M); NaN where a combination was not triangulated
    worst = np.where(np.isnan(errs), -np.inf, errs).max(axis=0)  # (M,) worst-view error
    worst[~np.isfinite(worst)] = np.nan
    k = int(np.argmin(np.where(np.isnan(worst), np.inf, worst)))
    return xyz[k], float(worst[k]), views


def best_points(
    cameras: Sequence[CameraModel], sets: Sequence[Sequence[np.ndarray]], min_confidence: float
) -> list[Best | None]:
    """:func:`best_point` of many stereo sets, result for result bit-identical, without its per-set cost.

    Sets where no camera has more than one candidate box (nearly all: one paw) are triangulated together,
    one group per combination of cameras that see it, through the same per-point arithmetic
    (``per_point``: the SVD and OpenCV's projection, as one set alone); the rest go one by one.
    """
    out: list[Best | None] = [None] * len(sets)
    groups: dict[tuple[int, ...], list[tuple[int, list[np.ndarray]]]] = {}
    for s, boxes in enumerate(sets):
        cands = _candidates(boxes, min_confidence)
        if any(len(c) > 1 for c in cands):
            out[s] = _best_of(cameras, cands)
            continue
        views = tuple(i for i, c in enumerate(cands) if len(c))
        if len(views) >= 2:
            groups.setdefault(views, []).append((s, cands))
    for views, members in groups.items():
        sub = [cameras[i] for i in views]
        arr = np.stack([np.concatenate([cands[i] for _, cands in members]) for i in views])  # (V, N, 5)
        pts = np.stack([0.5 * (arr[..., 0] + arr[..., 2]), 0.5 * (arr[..., 1] + arr[..., 3])], axis=2)
        xyz = triangulate(sub, pts, arr[..., 4], per_point=True)
        errs = reprojection_errors(sub, xyz, pts, per_point=True)  # (V, N)
        worst = np.where(np.isnan(errs), -np.inf, errs).max(axis=0)
        worst[~np.isfinite(worst)] = np.nan
        for j, (s, _) in enumerate(members):
            out[s] = xyz[j], float(worst[j]), list(views)
    return out


class TrackerSettings(BaseModel):
    """How a stereo set's boxes become one filtered 3-D point (unknown keys refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    min_confidence: float = Field(0.25, ge=0, le=1, description="boxes below this are not triangulated")
    max_reproj_error_px: float = Field(
        8.0, gt=0, description="a point whose worst view reprojects further than this is refused"
    )
    filter: Literal["none", "kalman"] = "kalman"
    process_noise_mm: float = Field(2000.0, gt=0, description="acceleration noise, mm/s^2")
    measurement_noise_mm: float = Field(0.5, gt=0)
    predict_ms: float = Field(0.0, ge=0, description="the filter's prediction horizon (xyz_predicted)")


class PointTracker:
    """Stateful per-session solver: call :meth:`solve` once per stereo set, in trigger order."""

    @classmethod
    def from_settings(
        cls, cameras: Sequence[CameraModel], rate_hz: float, settings: TrackerSettings
    ) -> PointTracker:
        """The tracker of ``settings`` (online and offline alike)."""
        noise = (settings.process_noise_mm, settings.measurement_noise_mm)
        kalman = noise if settings.filter == "kalman" else None
        return cls(
            cameras,
            rate_hz,
            settings.min_confidence,
            settings.max_reproj_error_px,
            kalman,
            settings.predict_ms / 1000,
        )

    def __init__(
        self,
        cameras: Sequence[CameraModel],
        rate_hz: float,
        min_confidence: float,
        max_reproj_error_px: float,
        kalman: tuple[float, float] | None = None,
        predict_s: float = 0.0,
    ):
        self.cameras = list(cameras)
        self.names = [c.name for c in cameras]
        self.rate = rate_hz
        self.min_conf = min_confidence
        self.max_err = max_reproj_error_px
        self.kalman = KalmanCV(*kalman) if kalman else None
        self.predict_s = predict_s
        self.last_index = -1

    def solve(self, trigger_index: int, boxes: Sequence[np.ndarray]) -> PointResult:
        return self._filtered(trigger_index, best_point(self.cameras, boxes, self.min_conf))

    def solve_many(
        self, trigger_indices: Sequence[int], sets: Sequence[Sequence[np.ndarray]]
    ) -> list[PointResult]:
        """:meth:`solve` of each set in turn (offline: the sets are all known), the same results bit for
        bit, the triangulation done for all sets at once (:func:`best_points`)."""
        found = best_points(self.cameras, sets, self.min_conf)
        return [self._filtered(k, res) for k, res in zip(trigger_indices, found, strict=True)]

    def _filtered(self, trigger_index: int, res: Best | None) -> PointResult:
        nan3 = np.full(3, np.nan)
        xyz, err, used, reason = nan3, float("nan"), [], ""
        if res is None:
            reason = "fewer than 2 views"
        else:
            xyz, err, views = res
            used = [self.names[i] for i in views]
            if not err <= self.max_err:  # NaN (no view reprojects) is refused too
                reason = f"reprojection error {err:.1f} px > {self.max_err:g}"
                xyz = nan3
        valid = bool(np.isfinite(xyz).all())
        filt, pred = xyz, xyz
        if self.kalman is not None and trigger_index > self.last_index:
            filt = self.kalman.update(trigger_index / self.rate, xyz if valid else None)
            pred = self.kalman.predict(self.predict_s)
        self.last_index = max(self.last_index, trigger_index)
        return PointResult(xyz, filt, pred, valid, err, used, reason)
