"""Offline 3-D from any tool's 2-D keypoints: N named views + a calibration -> 3-D points with their
reprojection error and the cameras used, and a QA summary (``deepbehavior triangulate``).

Views are matched by the frame numbers their files carry (:attr:`analysis.io.pose.PoseTable.frames`),
never by row position: a frame one view lacks is missing in that view only, and the summary lists such
frames. Views at different frame rates (or with a clock offset) are matched by time instead
(:func:`match_times`). The geometry is :mod:`analysis.geometry` (the online triangulator's code). Modes:
plain confidence-weighted DLT, RANSAC over views, a temporal clean-up (:func:`smooth_tracks`) and a
spatiotemporal optimization with optional limb lengths (:func:`optimize_tracks`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from analysis.camera import Calibration, CameraModel
from analysis.errors import AnalysisError, ImportFormatError
from analysis.events import default_min_confidence
from analysis.geometry import reprojection_errors, triangulate, triangulate_ransac
from analysis.io.pose import PoseTable, frame_numbers, read_pose

log = logging.getLogger(__name__)

CALIBRATION_FORMATS = ("auto", "ours", "anipose", "opencv", "bouguet")


# ----------------------------------------------------------------------------------------------- input
def load_calibration_any(
    paths: Sequence[str | Path], fmt: str = "auto", names: tuple[str, str] = ("left", "right")
) -> Calibration:
    """This project's ``*.calib.yaml``, an anipose ``calibration.toml``, OpenCV stereo YAML/XML or
    Bouguet ``.mat`` (``fmt`` names it; ``auto`` tells by the suffix, and a ``.yaml``/``.yml`` file by its
    first line: OpenCV's start with ``%YAML:1.0``). ``names``: camera names for the stereo formats."""
    from analysis.calibration_io import import_calibration
    from analysis.camera import load_calibration

    if not paths:
        raise AnalysisError("no calibration file given")
    if fmt not in CALIBRATION_FORMATS:
        raise AnalysisError(f"calibration format {fmt!r}: expected one of {', '.join(CALIBRATION_FORMATS)}")
    first = Path(paths[0])
    if fmt == "auto" and first.suffix.lower() in (".yaml", ".yml"):
        try:
            with first.open("rb") as f:
                head = f.read(16)
        except OSError as exc:
            raise AnalysisError(f"{first}: cannot read ({exc.strerror or exc})") from None
        fmt = "opencv" if head.lstrip().startswith(b"%YAML") else "ours"
    if fmt == "ours":
        if len(paths) > 1:
            raise AnalysisError(f"{first}: this project's calibration is one file; got {len(paths)}")
        return load_calibration(first)
    return import_calibration(list(paths), fmt, names)


def read_boxes(path: str | Path, image_size: tuple[int, int] | None = None) -> PoseTable:
    """Detector boxes as 2-D points: one "keypoint" per box label, at the centre of that label's most
    confident box in each frame (confidence = the box's score). Reads darknet ``-ext_output`` text
    (``.txt``), TensorBox JSON (``.json`` holding a list) and a folder of YOLO ``.txt`` files (needs
    ``image_size``; frames are the numbers the file names end with)."""
    from analysis.io.detections import read_darknet_text, read_tensorbox_json, read_yolo_txt

    path = Path(path)
    if path.is_dir():
        if image_size is None:
            raise ImportFormatError(f"{path}: YOLO .txt files need the image size (--image-size WxH)")
        df = read_yolo_txt(path, image_size)
        numbers = frame_numbers(sorted(str(f.name) for f in path.glob("*.txt")))
        if numbers is not None and len(df):
            by_name = dict(zip(sorted(f.name for f in path.glob("*.txt")), numbers, strict=True))
            df["frame"] = df["source"].map(by_name).astype("int64")
    elif path.suffix.lower() == ".json":
        df = read_tensorbox_json(path)
    else:
        df = read_darknet_text(path)
    if not len(df):
        raise ImportFormatError(f"{path}: no boxes")
    labels = sorted(df["label"].unique())
    frames = np.unique(df["frame"].to_numpy(np.int64))
    row = {f: i for i, f in enumerate(frames)}
    pts = np.full((len(frames), 1, len(labels), 2), np.nan)
    conf = np.full((len(frames), 1, len(labels)), np.nan)
    best = df.sort_values("confidence").groupby(["frame", "label"]).tail(1)
    for r in best.itertuples():
        t, k = row[int(r.frame)], labels.index(r.label)
        pts[t, 0, k] = (r.left + r.width / 2, r.top + r.height / 2)
        conf[t, 0, k] = r.confidence
    return PoseTable(pts, conf, labels, ["object"], frames, str(path), meta={"format": "boxes"})


def read_view(path: str | Path, image_size: tuple[int, int] | None = None) -> PoseTable:
    """One view's 2-D points from any format read: pose files (:func:`analysis.io.pose.read_pose`) and
    detector boxes (:func:`read_boxes`: a darknet text ``.txt``, a TensorBox ``.json`` list, a folder of
    YOLO ``.txt``)."""
    path = Path(path)
    if not path.exists():
        raise ImportFormatError(f"{path}: no such file or folder")
    if path.is_dir() and not any(path.glob("*.json")) and any(path.glob("*.txt")):
        return read_boxes(path, image_size)
    if path.suffix.lower() == ".txt":
        return read_boxes(path, image_size)
    if path.suffix.lower() == ".json" and path.is_file():
        with path.open("rb") as f:
            if f.read(64).lstrip().startswith(b"["):
                return read_boxes(path)
    table = read_pose(path)
    if table.points.shape[-1] != 2:
        raise ImportFormatError(f"{path}: holds 3-D points; triangulation needs 2-D keypoints per view")
    return table


def parse_views(specs: Sequence[str]) -> dict[str, str]:
    """``NAME=PATH`` items -> {name: path}; a name given twice is an error."""
    views: dict[str, str] = {}
    for item in specs:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise AnalysisError(f"--camera {item!r}: expected NAME=PATH")
        if name in views:
            raise AnalysisError(
                f"--camera {name}: given twice ({views[name]} and {path}); each camera once, by its "
                "calibration name"
            )
        views[name] = path
    return views


# ----------------------------------------------------------------------------------------------- matching
@dataclass
class FrameMatch:
    """Views aligned by frame number: ``frames`` (F,) the union of all views' frames, ``rows[name]`` (F,)
    each view's row for that frame (-1 where the view lacks it).

    Matched by time (:func:`match_times`), ``frames`` are the frame numbers of the ``reference`` view (the
    slowest) over the whole span any view covers, ``times_s`` (F,) their times, and a view's row is its
    frame nearest in time, within ``tolerance_s`` (half a frame of the reference view)."""

    frames: np.ndarray
    rows: dict[str, np.ndarray]
    times_s: np.ndarray | None = None
    reference: str | None = None
    tolerance_s: float | None = None

    def missing(self, name: str) -> np.ndarray:
        """Frame numbers other views have and ``name`` lacks."""
        return self.frames[self.rows[name] < 0]

    def report(self) -> list[str]:
        """One line per view that lacks frames others have (empty when all views hold the same frames)."""
        lines = []
        for name in self.rows:
            miss = self.missing(name)
            if not len(miss):
                continue
            if self.reference is None or self.tolerance_s is None:
                lines.append(
                    f"view {name!r} lacks {len(miss)} of {len(self.frames)} frames the other views have: "
                    f"{frame_ranges(miss)}"
                )
            else:
                lines.append(
                    f"view {name!r} has no frame within {1000 * self.tolerance_s:.4g} ms of {len(miss)} of "
                    f"{len(self.frames)} times the other views have ({self.reference!r} frames): "
                    f"{frame_ranges(miss)}"
                )
        return lines


def frame_ranges(frames: np.ndarray, limit: int = 8) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"`` (the first ``limit`` ranges, then how many more)."""
    f = np.asarray(frames, dtype=np.int64)
    if not len(f):
        return "none"
    breaks = np.nonzero(np.diff(f) != 1)[0]
    starts, ends = np.r_[f[0], f[breaks + 1]], np.r_[f[breaks], f[-1]]
    parts = [f"{s}" if s == e else f"{s}-{e}" for s, e in zip(starts, ends, strict=True)]
    more = f" (+{len(parts) - limit} more ranges)" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


def match_frames(tables: Mapping[str, PoseTable]) -> FrameMatch:
    """Align views by their frame numbers (never by row position)."""
    for name, tb in tables.items():
        f = np.asarray(tb.frames)
        if not np.issubdtype(f.dtype, np.integer):
            raise AnalysisError(f"{tb.source} ({name}): frame numbers are not integers")
        if len(np.unique(f)) != len(f):
            raise AnalysisError(f"{tb.source} ({name}): a frame number appears twice")
    frames = np.unique(np.concatenate([np.asarray(tb.frames, dtype=np.int64) for tb in tables.values()]))
    rows = {}
    for name, tb in tables.items():
        r = np.full(len(frames), -1, dtype=np.int64)
        r[np.searchsorted(frames, np.asarray(tb.frames, dtype=np.int64))] = np.arange(tb.n_frames)
        rows[name] = r
    return FrameMatch(frames, rows)


def match_times(
    tables: Mapping[str, PoseTable], fps: Mapping[str, float], offsets_s: Mapping[str, float] | None = None
) -> FrameMatch:
    """Align views that run at different frame rates (or with a time offset) by time, never by row
    position: frame ``f`` of view ``v`` is at ``f / fps[v] + offsets_s[v]`` seconds. The slowest view is
    the reference (the first such view in order): the matched frames are its frame numbers over the span
    any view covers, and each view contributes its frame nearest in time to each, if that is within half a
    reference frame; a time no frame of a view is that near to is missing in that view (as a frame the
    view lacks is, with frame-number matching). Views all at one rate, with no offsets: exact frame-number
    matching (:func:`match_frames`)."""
    offsets_s = offsets_s or {}
    names = list(tables)
    for n in [*fps, *offsets_s]:
        if n not in tables:
            raise AnalysisError(f"frame rate or offset for {n!r}, which is not a view ({', '.join(names)})")
    missing = [n for n in names if n not in fps]
    if missing:
        raise AnalysisError(f"no frame rate for view {missing[0]!r}: give every view's (--fps NAME=FPS)")
    for n, r in fps.items():
        if not (np.isfinite(r) and r > 0):
            raise AnalysisError(f"frame rate of {n!r}: {r}; expected a positive number of frames per second")
    rates = np.array([float(fps[n]) for n in names])
    offs = np.array([float(offsets_s.get(n, 0.0)) for n in names])
    if np.all(rates == rates[0]) and not offs.any():
        m = match_frames(tables)
        return replace(m, times_s=m.frames / rates[0])
    match_frames(tables)  # the same checks: integer frame numbers, none twice
    ref = names[int(np.argmin(rates))]
    ref_fps, ref_off = float(fps[ref]), float(offsets_s.get(ref, 0.0))
    tol = 0.5 / ref_fps
    times = {}
    for n, r, o in zip(names, rates, offs, strict=True):
        f = np.asarray(tables[n].frames, dtype=np.int64)
        times[n] = f / r + o
    all_t = np.concatenate(list(times.values()))
    if not len(all_t):
        return FrameMatch(
            np.zeros(0, np.int64), {n: np.zeros(0, np.int64) for n in names}, np.zeros(0), ref, tol
        )
    k_lo, k_hi = (int(np.round((x - ref_off) * ref_fps)) for x in (all_t.min(), all_t.max()))
    grid = np.arange(k_lo, k_hi + 1)
    grid_t = grid / ref_fps + ref_off
    rows = {}
    for n in names:
        order = np.argsort(times[n], kind="stable")
        t = times[n][order]
        if not len(t):
            rows[n] = np.full(len(grid), -1, dtype=np.int64)
            continue
        i = np.clip(np.searchsorted(t, grid_t), 1, max(len(t) - 1, 1))
        prev = np.clip(i - 1, 0, len(t) - 1)
        i = np.minimum(i, len(t) - 1)
        near = np.where(np.abs(t[prev] - grid_t) <= np.abs(t[i] - grid_t), prev, i)
        ok = np.abs(t[near] - grid_t) <= tol * (1 + 1e-9)
        rows[n] = np.where(ok, order[near], -1).astype(np.int64)
    keep = np.any(np.stack([rows[n] >= 0 for n in names]), axis=0)
    return FrameMatch(
        grid[keep], {n: r[keep] for n, r in rows.items()}, grid_t[keep], reference=ref, tolerance_s=tol
    )


def parse_named_numbers(specs: Sequence[str] | None, option: str, views: Sequence[str]) -> dict[str, float]:
    """``NAME=NUMBER`` items (``--fps``, ``--offset``) -> {view: number}; a bare ``NUMBER`` applies to
    every view not named (``--fps 100`` = all views at 100 Hz)."""
    out: dict[str, float] = {}
    default: float | None = None
    for item in specs or []:
        name, sep, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            raise AnalysisError(f"{option} {item!r}: expected NAME=NUMBER or NUMBER") from None
        if not sep:
            default = number
        elif name not in views:
            raise AnalysisError(f"{option} {item!r}: no view named {name!r} (views: {', '.join(views)})")
        elif name in out:
            raise AnalysisError(f"{option} {name}: given twice")
        else:
            out[name] = number
    if default is not None:
        out = {n: out.get(n, default) for n in views}
    return out


# ----------------------------------------------------------------------------------------------- 3-D
@dataclass
class Points3D:
    """3-D keypoints of the matched frames.

    ``xyz`` (F, I, K, 3) world units of the calibration (mm), NaN = not triangulated; ``error_px`` (F, I, K)
    mean reprojection error over the cameras used; ``per_view_px`` (C, F, I, K) each view's reprojection
    error (NaN where that view was not used); ``used`` (C, F, I, K) which views made the point; ``times_s``
    (F,) the frames' times when the frame rates are known.
    """

    frames: np.ndarray
    cameras: list[str]
    individuals: list[str]
    bodyparts: list[str]
    xyz: np.ndarray
    error_px: np.ndarray
    per_view_px: np.ndarray
    used: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    match: FrameMatch | None = None
    times_s: np.ndarray | None = None
    # the 2-D input, for the optimization (:func:`optimize_tracks`): the views' camera models, pixels
    # (C, F, I, K, 2) NaN where not used, and weights (C, F, I, K), 0 below the confidence cut
    models: list[CameraModel] | None = field(default=None, repr=False)
    points_px: np.ndarray | None = field(default=None, repr=False)
    weights: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_cameras(self) -> np.ndarray:
        """(F, I, K) number of views that made each point (0 where not triangulated)."""
        return np.where(np.isfinite(self.xyz[..., 0]), self.used.sum(axis=0), 0)

    def cameras_used(self) -> np.ndarray:
        """(F, I, K) the cameras that made each point, joined by ``+`` ("" where not triangulated)."""
        bits = 1 << np.arange(len(self.cameras), dtype=np.int64)
        code = np.tensordot(bits, self.used.astype(np.int64), axes=1)  # which cameras, as a bit mask
        code[~np.isfinite(self.xyz[..., 0])] = 0
        uniq, inv = np.unique(code, return_inverse=True)
        labels = np.array(
            ["+".join(n for b, n in zip(bits, self.cameras, strict=True) if u & b) for u in uniq],
            dtype=object,
        )
        return labels[inv].reshape(code.shape)


def triangulate_views(
    calib: Calibration,
    tables: Mapping[str, PoseTable],
    min_confidence: float | None = None,
    ransac_px: float | None = None,
    individuals: Sequence[str] | None = None,
    fps: Mapping[str, float] | None = None,
    offsets_s: Mapping[str, float] | None = None,
) -> Points3D:
    """2-D keypoints of named views (camera name -> table) -> :class:`Points3D`.

    Views are matched by frame number, or with ``fps`` (view -> frames per second) and ``offsets_s`` (view
    -> seconds added to its times) by time where the rates differ (:func:`match_times`); body parts and
    individuals by name (those all views share, in the first view's order; ``individuals`` chooses some).
    Points below ``min_confidence`` are left out (default: each view's format's cut,
    :func:`analysis.events.default_min_confidence`) and confidence weights the rest; with ``ransac_px`` a
    view whose point reprojects farther than that is voted out (:func:`analysis.geometry.triangulate_ransac`,
    which needs 3+ views to help).
    """
    names = list(tables)
    if len(names) < 2:
        raise AnalysisError(f"need 2-D points from at least 2 cameras, got {len(names)}")
    if min_confidence is not None and not 0 <= min_confidence <= 1:
        raise AnalysisError(f"minimum confidence {min_confidence}: expected 0..1")
    cuts = np.array(
        [
            default_min_confidence(tables[n].meta.get("format")) if min_confidence is None else min_confidence
            for n in names
        ]
    )
    cams: list[CameraModel] = calib.subset(names)
    first = tables[names[0]]
    parts = [p for p in first.bodyparts if all(p in tables[n].bodyparts for n in names)]
    if not parts:
        raise AnalysisError(
            f"the views share no body part ({names[0]}: {', '.join(first.bodyparts[:6])}...; "
            f"{names[1]}: {', '.join(tables[names[1]].bodyparts[:6])}...)"
        )
    dropped = sorted({p for n in names for p in tables[n].bodyparts} - set(parts))
    if dropped:
        log.warning("body parts not in every view are left out: %s", ", ".join(dropped))
    if all(len(tables[n].individuals) == 1 for n in names):  # one animal per view: pair it, whatever its name
        tables = {n: replace(tables[n], individuals=list(first.individuals)) for n in names}
    inds = [i for i in first.individuals if all(i in tables[n].individuals for n in names)]
    if individuals is not None:
        unknown = [i for i in individuals if i not in inds]
        if unknown:
            raise AnalysisError(
                f"individual {unknown[0]!r} is not in every view (shared: {', '.join(inds) or 'none'})"
            )
        inds = list(individuals)
    if not inds:
        raise AnalysisError(
            f"the views share no individual name ({names[0]}: {', '.join(first.individuals)}; "
            f"{names[1]}: {', '.join(tables[names[1]].individuals)}): choose one per view"
        )
    if offsets_s and not fps:
        raise AnalysisError("a time offset needs the views' frame rates (--fps)")
    match = match_times(tables, fps, offsets_s) if fps else match_frames(tables)
    n_f, n_i, n_k, n_c = len(match.frames), len(inds), len(parts), len(names)
    pts = np.full((n_c, n_f, n_i, n_k, 2), np.nan)
    conf = np.zeros((n_c, n_f, n_i, n_k))
    for c, n in enumerate(names):
        tb, r = tables[n], match.rows[n]
        have = r >= 0
        ii = np.array([tb.individuals.index(i) for i in inds])
        kk = np.array([tb.bodyparts.index(p) for p in parts])
        sub = tb.points[np.ix_(r[have], ii, kk)][..., :2]
        pts[c, have] = sub
        cf = np.nan_to_num(tb.confidence[np.ix_(r[have], ii, kk)], nan=1.0)
        conf[c, have] = np.where(np.isfinite(sub).all(axis=-1), cf, 0.0)
    w = np.where(conf >= cuts[:, None, None, None], conf, 0.0).reshape(n_c, -1)
    flat = np.where(w[..., None] > 0, pts.reshape(n_c, -1, 2), np.nan)
    if ransac_px is None:
        xyz = triangulate(cams, flat, w)
        used = w > 0
    else:
        xyz, used = triangulate_ransac(cams, flat, w, threshold_px=ransac_px)
    ok = np.isfinite(xyz).all(axis=1)
    used &= ok[None]
    per_view = reprojection_errors(cams, xyz, flat)
    per_view = np.where(used, per_view, np.nan)
    with np.errstate(invalid="ignore"):
        err = np.where(ok, np.nansum(per_view, axis=0) / np.maximum(used.sum(axis=0), 1), np.nan)
    shape = (n_f, n_i, n_k)
    return Points3D(
        frames=match.frames,
        cameras=names,
        individuals=inds,
        bodyparts=parts,
        xyz=xyz.reshape(*shape, 3),
        error_px=err.reshape(shape),
        per_view_px=per_view.reshape(n_c, *shape),
        used=used.reshape(n_c, *shape),
        settings={
            # one number when every view has the same cut, else per view
            "min_confidence": float(cuts[0])
            if np.all(cuts == cuts[0])
            else {n: float(c) for n, c in zip(names, cuts, strict=True)},
            "mode": "dlt" if ransac_px is None else "ransac",
            "ransac_px": ransac_px,
        }
        | ({"fps": dict(fps)} if fps else {})
        | ({"offsets_s": dict(offsets_s)} if offsets_s else {}),
        match=match,
        times_s=match.times_s,
        models=cams,
        points_px=flat.reshape(n_c, *shape, 2),
        weights=w.reshape(n_c, *shape),
    )


# ----------------------------------------------------------------------------------------------- time
SMOOTH_OUTLIER_K = 6.0
"""A 3-D point farther than this many times its track's median deviation from the track's running median
(over the smoothing window) is dropped before gaps are filled and the track is smoothed."""


def smooth_tracks(
    res: Points3D, window: int = 7, max_gap: int = 5, outlier_k: float = SMOOTH_OUTLIER_K
) -> Points3D:
    """Temporal clean-up of each keypoint's 3-D track, frame numbers as the time axis (gaps between frame
    numbers are gaps in time): points far from the running median are dropped (``outlier_k``), gaps of up to
    ``max_gap`` frames are filled linearly, then each run is Savitzky-Golay smoothed over ``window`` frames
    (odd; polynomial order 2). Filled points have no cameras (``used`` all False) and no reprojection error;
    ``error_px`` of the others is that of the per-frame point before smoothing.
    """
    from analysis.filters import interpolate_gaps, median_filter, savgol

    if window < 3 or window % 2 == 0:
        raise AnalysisError(f"smoothing window {window}: expected an odd number of frames >= 3")
    if max_gap < 0:
        raise AnalysisError(f"max gap {max_gap}: expected >= 0 frames")
    if not len(res.frames):
        return res
    full = np.arange(res.frames[0], res.frames[-1] + 1)
    rows = res.frames - res.frames[0]
    n_f, n_i, n_k = res.xyz.shape[:3]
    track = np.full((len(full), n_i * n_k * 3), np.nan)
    track[rows] = res.xyz.reshape(n_f, -1)
    # outliers: distance from the running median, against the track's own typical deviation
    med = median_filter(track, window)
    dev = np.linalg.norm((track - med).reshape(len(full), n_i * n_k, 3), axis=2)  # (T, I*K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a track with no points: all-NaN median
        scale = np.nanmedian(dev, axis=0)
    with np.errstate(invalid="ignore"):
        bad = dev > outlier_k * np.maximum(scale, 1e-9)
    track.reshape(len(full), n_i * n_k, 3)[bad] = np.nan
    filled = interpolate_gaps(track, max_gap) if max_gap else track
    smooth = np.full_like(filled, np.nan)
    for j in range(0, filled.shape[1], 3):  # per keypoint: a gap in one track does not cut the others
        smooth[:, j : j + 3] = savgol(filled[:, j : j + 3], window, polyorder=2)
    xyz = smooth[rows].reshape(res.xyz.shape)
    measured = np.isfinite(track[rows].reshape(res.xyz.shape)[..., 0])
    used = res.used & measured[None]
    return replace(
        res,
        xyz=xyz,
        used=used,
        error_px=np.where(measured, res.error_px, np.nan),
        per_view_px=np.where(used, res.per_view_px, np.nan),
        settings=res.settings
        | {
            "smooth_window": window,
            "max_gap": max_gap,
            "outlier_k": outlier_k,
            "outliers_dropped": int(bad.sum()),
        },
    )


# ----------------------------------------------------------------------------------------------- optimization
OPTIM_LOSSES = ("soft_l1", "huber")
_FTOL = 1e-3
_MAXFEV = 10
_TR_OPTIONS: dict[str, Any] = {"atol": 1e-4, "btol": 1e-4}


@dataclass(frozen=True)
class OptimSettings:
    """The spatiotemporal optimization's weights (:func:`optimize_tracks`). Every residual is in pixels
    or pixel-equivalents: reprojection ``sqrt(confidence) * f * (projected - observed)`` in normalized
    undistorted coordinates times the focal length; smoothness ``smooth_px_per_mm`` times each track's
    second difference over frames (mm); limb length ``length_px_per_mm`` times a skeleton pair's
    distance minus its length (mm). ``loss`` (Huber or soft-L1, scale ``scale_px``) makes a residual past
    the scale count linearly, not squared: a wrong 2-D point pulls little. Solved in chunks of ``chunk``
    frames, each with ``overlap`` frames of context on both sides. A view counts as used for a point when
    it reprojects within ``inlier_px``."""

    smooth_px_per_mm: float = 10.0
    length_px_per_mm: float = 2.0
    loss: str = "soft_l1"
    scale_px: float = 3.0
    chunk: int = 1000
    overlap: int = 20
    inlier_px: float = 8.0

    def check(self) -> None:
        if self.loss not in OPTIM_LOSSES:
            raise AnalysisError(f"optimization loss {self.loss!r}: expected one of {', '.join(OPTIM_LOSSES)}")
        for name in ("smooth_px_per_mm", "length_px_per_mm"):
            if not getattr(self, name) >= 0:
                raise AnalysisError(f"optimization weight {name} {getattr(self, name)}: expected >= 0")
        if not self.scale_px > 0 or not self.inlier_px > 0:
            raise AnalysisError("optimization scale and inlier threshold must be > 0 px")
        if self.chunk < 10 or self.overlap < 0:
            raise AnalysisError(
                f"optimization chunk {self.chunk} / overlap {self.overlap}: expected >= 10 / >= 0"
            )


def read_skeleton(path: str | Path, bodyparts: Sequence[str]) -> list[tuple[str, str]]:
    """Limb pairs from a text file: one chain per line, keypoint names separated by commas, spaces or
    ``-`` (``a, b`` is one pair; ``shoulder elbow wrist`` two); ``#`` starts a comment. Every name must be a
    triangulated keypoint."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise AnalysisError(f"{path}: cannot read the skeleton ({exc})") from None
    pairs: list[tuple[str, str]] = []
    for no, line in enumerate(text.splitlines(), 1):
        names = line.split("#", 1)[0].replace(",", " ").replace(" - ", " ").split()
        if not names:
            continue
        if len(names) < 2:
            raise AnalysisError(f"{path}, line {no}: {line.strip()!r}: expected two or more keypoint names")
        for n in names:
            if n not in bodyparts:
                raise AnalysisError(
                    f"{path}, line {no}: no keypoint {n!r} among the triangulated ({', '.join(bodyparts)})"
                )
        for a, b in pairwise(names):
            if a == b:
                raise AnalysisError(f"{path}, line {no}: {a!r} paired with itself")
            if (a, b) not in pairs and (b, a) not in pairs:
                pairs.append((a, b))
    if not pairs:
        raise AnalysisError(f"{path}: no keypoint pairs")
    return pairs


def limb_lengths(res: Points3D, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """(I, L) each skeleton pair's length per individual: the median over frames of the distance between
    the two points (mm), NaN where never both seen."""
    a = np.array([res.bodyparts.index(p) for p, _ in pairs], dtype=np.int64)
    b = np.array([res.bodyparts.index(q) for _, q in pairs], dtype=np.int64)
    d = np.linalg.norm(res.xyz[:, :, a] - res.xyz[:, :, b], axis=-1)  # (F, I, L)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a pair never seen together: NaN
        return np.asarray(np.nanmedian(d, axis=0))


def optimize_tracks(
    res: Points3D,
    skeleton: Sequence[tuple[str, str]] = (),
    settings: OptimSettings | None = None,
) -> Points3D:
    """Spatiotemporal optimization of the 3-D tracks (like aniposelib's ``triangulate_optim``): minimize
    the robust reprojection error of every 2-D point above the confidence cut, plus smoothness (second
    differences over frames) and, with a ``skeleton`` (keypoint pairs), the deviation of each pair's
    distance from its length (the median over the session of the starting estimate). ``res`` is the starting
    estimate (best: RANSAC + :func:`smooth_tracks`) and carries the 2-D input; points NaN there stay NaN.
    Solved by :func:`scipy.optimize.least_squares` (trust region, sparse Jacobian, LSMR) in overlapping
    chunks of frames; cost grows linearly with the session's length."""
    st = settings or OptimSettings()
    st.check()
    if res.models is None or res.points_px is None or res.weights is None:
        raise AnalysisError("the optimization needs the 2-D input: start from triangulate_views()'s result")
    if not len(res.frames):
        return res
    for a, b in skeleton:
        for n in (a, b):
            if n not in res.bodyparts:
                raise AnalysisError(
                    f"skeleton keypoint {n!r} is not triangulated ({', '.join(res.bodyparts)})"
                )
    from analysis.geometry import reprojection_errors, undistort_points

    n_f, n_i, n_k = res.xyz.shape[:3]
    n_c, n_p = len(res.cameras), n_i * n_k
    full = np.arange(res.frames[0], res.frames[-1] + 1)
    rows = res.frames - res.frames[0]
    n_t = len(full)
    start = np.full((n_t, n_p, 3), np.nan)
    start[rows] = res.xyz.reshape(n_f, n_p, 3)
    keep = np.isfinite(start[..., 0])  # output where the starting estimate has a point
    # a starting point that no view it was seen in agrees with (a wrong start) starts from its neighbours
    flat_px = res.points_px.reshape(n_c, -1, 2)
    with np.errstate(invalid="ignore"):
        e0 = np.nan_to_num(reprojection_errors(res.models, res.xyz.reshape(-1, 3), flat_px), nan=np.inf)
    astray = np.isfinite(flat_px[..., 0]).any(axis=0) & (e0.min(axis=0) > st.inlier_px)
    start[rows] = np.where(astray.reshape(n_f, n_p, 1), np.nan, start[rows])
    x0 = _fill_tracks(start)  # every gap filled, for a starting value; tracks never seen stay NaN
    tracks = np.isfinite(x0[0, :, 0])
    # observations in normalized, undistorted coordinates; residuals scaled to pixels by the focal length
    obs = np.full((n_c, n_t, n_p, 2), np.nan)
    obs[:, rows] = undistort_points(res.models, res.points_px.reshape(n_c, -1, 2)).reshape(n_c, n_f, n_p, 2)
    wt = np.zeros((n_c, n_t, n_p))
    wt[:, rows] = res.weights.reshape(n_c, n_f, n_p)
    good = np.isfinite(obs).all(axis=-1) & (wt > 0) & tracks[None, None, :]
    focal = np.array([(m.matrix[0, 0] + m.matrix[1, 1]) / 2 for m in res.models])
    rot = np.stack([m.rotation for m in res.models])
    tvec = np.stack([np.asarray(m.tvec, dtype=np.float64).reshape(3) for m in res.models])
    lengths = limb_lengths(res, skeleton) if skeleton else np.zeros((n_i, 0))
    pa, pb, plen = [], [], []
    for i in range(n_i):
        for (a, b), length in zip(skeleton, lengths[i], strict=True):
            ia, ib = i * n_k + res.bodyparts.index(a), i * n_k + res.bodyparts.index(b)
            if np.isfinite(length) and tracks[ia] and tracks[ib]:
                pa.append(ia)
                pb.append(ib)
                plen.append(float(length))
    pairs = (np.array(pa, np.int64), np.array(pb, np.int64), np.array(plen))
    out = x0.copy()
    step = st.chunk
    for lo in range(0, n_t, step):
        hi = min(lo + step, n_t)
        c0, c1 = max(lo - st.overlap, 0), min(hi + st.overlap, n_t)
        sol = _solve_chunk(
            x0[c0:c1], obs[:, c0:c1], wt[:, c0:c1], good[:, c0:c1], tracks, focal, rot, tvec, pairs, st
        )
        out[lo:hi] = sol[lo - c0 : hi - c0]
    out[~keep] = np.nan
    xyz = out[rows].reshape(n_f, n_i, n_k, 3)
    per_view = reprojection_errors(res.models, xyz.reshape(-1, 3), flat_px)
    used = (res.weights.reshape(n_c, -1) > 0) & (per_view <= st.inlier_px)
    per_view = np.where(used, per_view, np.nan)
    with np.errstate(invalid="ignore"):
        err = np.nansum(per_view, axis=0) / np.maximum(used.sum(axis=0), 1)
    err = np.where(used.any(axis=0) & np.isfinite(xyz.reshape(-1, 3)[:, 0]), err, np.nan)
    return replace(
        res,
        xyz=xyz,
        used=used.reshape(res.used.shape),
        error_px=err.reshape(n_f, n_i, n_k),
        per_view_px=per_view.reshape(res.per_view_px.shape),
        settings=res.settings
        | {
            "optim": {
                "smooth_px_per_mm": st.smooth_px_per_mm,
                "length_px_per_mm": st.length_px_per_mm if skeleton else None,
                "loss": st.loss,
                "scale_px": st.scale_px,
                "skeleton": [list(p) for p in skeleton],
                "lengths_mm": {
                    ind: {
                        f"{a}-{b}": float(v) if np.isfinite(v) else None  # None: never both seen
                        for (a, b), v in zip(skeleton, lengths[i], strict=True)
                    }
                    for i, ind in enumerate(res.individuals)
                }
                if skeleton
                else {},
            }
        },
    )


def _fill_tracks(x: np.ndarray) -> np.ndarray:
    """(T, P, 3) with NaN -> every gap of each track filled linearly (held at the ends); a track with no
    point stays NaN."""
    out = x.copy()
    t = np.arange(len(x))
    for p in range(x.shape[1]):
        ok = np.isfinite(x[:, p, 0])
        if ok.any() and not ok.all():
            for d in range(3):
                out[:, p, d] = np.interp(t, t[ok], x[ok, p, d])
    return out


def _solve_chunk(
    x0: np.ndarray,
    obs: np.ndarray,
    wt: np.ndarray,
    good: np.ndarray,
    tracks: np.ndarray,
    focal: np.ndarray,
    rot: np.ndarray,
    tvec: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    st: OptimSettings,
) -> np.ndarray:
    """One chunk's least-squares problem; ``x0`` (T, P, 3) the start, the others as in
    :func:`optimize_tracks` over the chunk's frames. Returns (T, P, 3), NaN for tracks never seen."""
    from scipy import sparse
    from scipy.optimize import least_squares

    n_t = x0.shape[0]
    tr = np.nonzero(tracks)[0]
    n_p = len(tr)
    col_of = np.full(len(tracks), -1, dtype=np.int64)
    col_of[tr] = np.arange(n_p)
    c_j, t_j, p_j = np.nonzero(good)
    # a view the starting point lies behind (a wrong start) cannot reproject it: left out
    depth = np.einsum("jb,jb->j", rot[c_j, 2], x0[t_j, p_j]) + tvec[c_j, 2]
    front = depth > 1e-6
    c_j, t_j, p_j = c_j[front], t_j[front], p_j[front]
    var_j = (t_j * n_p + col_of[p_j]) * 3  # first of the point's 3 unknowns
    uv = obs[c_j, t_j, p_j]
    s_j = np.sqrt(wt[c_j, t_j, p_j]) * focal[c_j]
    r_j, tv_j = rot[c_j], tvec[c_j]
    n_obs = len(c_j)
    # smoothness: second differences of every track coordinate over frames
    n_s = max(n_t - 2, 0) * n_p * 3
    s_idx = np.arange(n_s)  # residual (t, p, axis) is laid out like unknown X[t, p, axis]
    lam = st.smooth_px_per_mm
    pa, pb, plen = col_of[pairs[0]], col_of[pairs[1]], pairs[2]  # limb pairs (may be none)
    n_l = n_t * len(pa)
    mu = st.length_px_per_mm
    n_x = n_t * n_p * 3
    # Jacobian pattern (row, col) is fixed; values change with x
    rows_r = np.repeat(np.arange(2 * n_obs), 3)
    cols_r = (var_j[:, None, None] + np.arange(3)[None, None, :]).repeat(2, axis=1).reshape(-1)
    rows_s = np.repeat(s_idx, 3) + 2 * n_obs
    cols_s = (s_idx[:, None] + np.array([0, 3 * n_p, 6 * n_p])[None, :]).reshape(-1)
    vals_s = np.tile([lam, -2 * lam, lam], n_s)
    t_l = np.repeat(np.arange(n_t), len(pa))
    ca = (t_l * n_p + np.tile(pa, n_t)) * 3
    cb = (t_l * n_p + np.tile(pb, n_t)) * 3
    rows_l = np.repeat(np.arange(n_l), 6) + 2 * n_obs + n_s
    cols_l = np.concatenate([ca[:, None] + np.arange(3), cb[:, None] + np.arange(3)], axis=1).reshape(-1)
    len_l = np.tile(plen, n_t)
    n_res = 2 * n_obs + n_s + n_l
    # the CSR layout of that pattern, once: each call then only reorders the values
    all_rows, all_cols = [rows_r, rows_s, rows_l], [cols_r, cols_s, cols_l]
    pattern = sparse.csr_matrix(
        (
            np.arange(1, sum(len(r) for r in all_rows) + 1, dtype=np.float64),
            (np.concatenate(all_rows), np.concatenate(all_cols)),
        ),
        shape=(n_res, n_x),
    )
    order = pattern.data.astype(np.int64) - 1
    indices, indptr = pattern.indices, pattern.indptr

    def points(x: np.ndarray) -> np.ndarray:
        return x.reshape(-1, 3)

    def fun(x: np.ndarray) -> np.ndarray:
        pts = points(x)
        xc = np.einsum("jab,jb->ja", r_j, pts[var_j // 3]) + tv_j
        res_r = s_j[:, None] * (xc[:, :2] / xc[:, 2:3] - uv)
        res_s = lam * (x[:n_s] - 2 * x[3 * n_p : 3 * n_p + n_s] + x[6 * n_p : 6 * n_p + n_s])
        d = pts[ca // 3] - pts[cb // 3]
        res_l = mu * (np.linalg.norm(d, axis=1) - len_l)
        return np.concatenate([res_r.reshape(-1), res_s, res_l])

    def jac(x: np.ndarray) -> Any:
        pts = points(x)
        xc = np.einsum("jab,jb->ja", r_j, pts[var_j // 3]) + tv_j
        inv_z = 1.0 / xc[:, 2]
        u, v = xc[:, 0] * inv_z, xc[:, 1] * inv_z
        du = (r_j[:, 0] - u[:, None] * r_j[:, 2]) * (s_j * inv_z)[:, None]
        dv = (r_j[:, 1] - v[:, None] * r_j[:, 2]) * (s_j * inv_z)[:, None]
        d = pts[ca // 3] - pts[cb // 3]
        g = mu * d / np.maximum(np.linalg.norm(d, axis=1), 1e-9)[:, None]
        vals = [np.stack([du, dv], axis=1).reshape(-1), vals_s, np.concatenate([g, -g], axis=1).reshape(-1)]
        return sparse.csr_matrix((np.concatenate(vals)[order], indices, indptr), shape=(n_res, n_x))

    x_init = x0[:, tr].reshape(-1)
    sol = least_squares(
        fun,
        x_init,
        jac=jac,
        method="trf",
        tr_solver="lsmr",
        loss=st.loss,
        f_scale=st.scale_px,
        x_scale=1.0,
        ftol=_FTOL,
        xtol=1e-6,
        max_nfev=_MAXFEV,
        tr_options=_TR_OPTIONS,
    )
    out = np.full(x0.shape, np.nan)
    out[:, tr] = sol.x.reshape(n_t, n_p, 3)
    return out


# ----------------------------------------------------------------------------------------------- QA
def qa_summary(res: Points3D) -> dict[str, Any]:
    """Fraction triangulated and reprojection error per keypoint and per view x keypoint, frames per view
    and the frames each view lacks."""

    def stats(e: np.ndarray) -> dict[str, float | None]:
        e = e[np.isfinite(e)]
        if not e.size:
            return {"median_px": None, "p90_px": None, "n": 0}
        return {"median_px": float(np.median(e)), "p90_px": float(np.percentile(e, 90)), "n": int(e.size)}

    ok = np.isfinite(res.xyz[..., 0])
    out: dict[str, Any] = {
        "settings": res.settings,
        "frames": len(res.frames),
        "first_frame": int(res.frames[0]) if len(res.frames) else None,
        "last_frame": int(res.frames[-1]) if len(res.frames) else None,
        "fraction_triangulated": float(ok.mean()) if ok.size else 0.0,
        "reprojection": stats(res.error_px),
        "keypoints": {},
        "views": {},
    }
    if res.match is not None and res.match.reference is not None and res.match.tolerance_s is not None:
        out["matched_by_time"] = {
            "reference_view": res.match.reference,
            "tolerance_ms": 1000 * res.match.tolerance_s,
        }
    for k, p in enumerate(res.bodyparts):
        out["keypoints"][p] = {"fraction_triangulated": float(ok[:, :, k].mean())} | stats(
            res.error_px[:, :, k]
        )
    for c, n in enumerate(res.cameras):
        view: dict[str, Any] = {"fraction_used": float(res.used[c].mean())} | stats(res.per_view_px[c])
        if res.match is not None:
            miss = res.match.missing(n)
            view["frames"] = int((res.match.rows[n] >= 0).sum())
            view["frames_missing"] = len(miss)
            view["frames_missing_ranges"] = frame_ranges(miss, limit=50)
        view["keypoints"] = {p: stats(res.per_view_px[c, :, :, k]) for k, p in enumerate(res.bodyparts)}
        out["views"][n] = view
    return out


def summary_text(qa: Mapping[str, Any]) -> str:
    """The QA summary as a few lines for the terminal."""

    def px(s: Mapping[str, Any]) -> str:
        return "-" if s["median_px"] is None else f"{s['median_px']:.2f} / {s['p90_px']:.2f}"

    st = qa["settings"]
    mode = "DLT" if st["mode"] == "dlt" else f"RANSAC over views ({st['ransac_px']} px)"
    if "smooth_window" in st:
        mode += (
            f", then temporal clean-up ({st['outliers_dropped']} outlying points dropped, gaps up to "
            f"{st['max_gap']} frames filled, Savitzky-Golay over {st['smooth_window']} frames)"
        )
    if "optim" in st:
        o = st["optim"]
        mode += (
            f", then spatiotemporal optimization ({o['loss']} reprojection, smoothness "
            f"{o['smooth_px_per_mm']} px/mm"
            + (f", {len(o['skeleton'])} limb lengths {o['length_px_per_mm']} px/mm" if o["skeleton"] else "")
            + ")"
        )
    lines = [
        f"{qa['frames']} frames ({qa['first_frame']}-{qa['last_frame']}), {mode}, confidence cut "
        f"{st['min_confidence']}: {100 * qa['fraction_triangulated']:.1f} % of points triangulated; "
        f"reprojection median / p90 {px(qa['reprojection'])} px",
        "view: frames, used, reprojection median / p90 px",
    ]
    if "matched_by_time" in qa:
        m = qa["matched_by_time"]
        lines.insert(
            1,
            f"views matched by time to the frames of {m['reference_view']!r} (the slowest): each view's "
            f"nearest frame within {m['tolerance_ms']:.4g} ms",
        )
    for n, v in qa["views"].items():
        lines.append(
            f"  {n}: {v.get('frames', '?')} frames, {100 * v['fraction_used']:.1f} % of points used, {px(v)}"
        )
    lines.append("keypoint: triangulated, reprojection median / p90 px")
    for p, k in qa["keypoints"].items():
        lines.append(f"  {p}: {100 * k['fraction_triangulated']:.1f} %, {px(k)}")
    return "\n".join(lines)


def plot_qa(res: Points3D, path: str | Path) -> Path:
    """The QA figure (PNG): each view's reprojection error per keypoint (median, bar to p90) and the
    fraction of each keypoint triangulated."""
    from analysis.plotting import pyplot, save

    plt = pyplot()
    k = np.arange(len(res.bodyparts))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6.0, 0.45 * len(k) + 2), 6), sharex=True)
    width = 0.8 / max(len(res.cameras), 1)
    for c, name in enumerate(res.cameras):
        e = res.per_view_px[c].reshape(-1, len(k))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a keypoint a view never made
            med, p90 = np.nanmedian(e, axis=0), np.nanpercentile(e, 90, axis=0)
        x = k + (c - (len(res.cameras) - 1) / 2) * width
        ax1.bar(x, med, width, label=name)
        ax1.errorbar(x, med, yerr=[np.zeros_like(p90), np.nan_to_num(p90 - med)], fmt="none", ecolor="0.3")
    ax1.set_ylabel("reprojection (px)\nmedian, bar to p90")
    ax1.legend(fontsize="small")
    ok = np.isfinite(res.xyz[..., 0]).reshape(-1, len(k)).mean(axis=0)
    ax2.bar(k, 100 * ok, 0.6, color="0.5")
    ax2.set_ylabel("triangulated (%)")
    ax2.set_ylim(0, 100)
    ax2.set_xticks(k, res.bodyparts, rotation=60, ha="right", fontsize="small")
    return save(fig, path)


# ----------------------------------------------------------------------------------------------- output
def to_frame(res: Points3D, individual: int = 0) -> Any:
    """One individual's points as an anipose-style wide table: ``fnum`` (``time_s`` too when the frame
    rates are known) then per keypoint ``<kp>_x``, ``_y``, ``_z``, ``_error`` (px), ``_ncams``, ``_cameras``
    (read back by ``reaching``)."""
    import pandas as pd

    cols: dict[str, Any] = {"fnum": res.frames}
    if res.times_s is not None:
        cols["time_s"] = res.times_s
    ncams, used = res.n_cameras, res.cameras_used()
    for k, p in enumerate(res.bodyparts):
        for a, axis in enumerate("xyz"):
            cols[f"{p}_{axis}"] = res.xyz[:, individual, k, a]
        cols[f"{p}_error"] = res.error_px[:, individual, k]
        cols[f"{p}_ncams"] = ncams[:, individual, k]
        cols[f"{p}_cameras"] = used[:, individual, k]
    return pd.DataFrame(cols)


def write_outputs(res: Points3D, out_dir: Path, h5: bool = False) -> list[Path]:
    """``points3d.csv`` (one individual) or ``points3d_<individual>.csv`` each, and with ``h5`` a
    DeepLabCut-layout 3-D ``points3d.h5`` (scorer/individuals/bodyparts/coords; read by ``reaching`` and
    :func:`analysis.io.pose.read_dlc`)."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, ind in enumerate(res.individuals):
        name = "points3d.csv" if len(res.individuals) == 1 else f"points3d_{_safe(ind)}.csv"
        to_frame(res, i).to_csv(out_dir / name, index=False, float_format="%.9g")
        written.append(out_dir / name)
    if h5:
        cols = pd.MultiIndex.from_product(
            [["deepbehavior-triangulate"], res.individuals, res.bodyparts, ["x", "y", "z"]],
            names=["scorer", "individuals", "bodyparts", "coords"],
        )
        df = pd.DataFrame(res.xyz.reshape(len(res.frames), -1), index=res.frames, columns=cols)
        df.to_hdf(out_dir / "points3d.h5", key="df_with_missing", mode="w")
        written.append(out_dir / "points3d.h5")
    return written


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "individual"
