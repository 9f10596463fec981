"""Offline 3-D from any tool's 2-D keypoints: N named views + a calibration -> 3-D points with their
reprojection error and the cameras used, and a QA summary (``deepbehavior triangulate``).

Views are matched by the frame numbers their files carry (:attr:`analysis.io.pose.PoseTable.frames`),
never by row position: a frame one view lacks is missing in that view only, and the summary lists such
frames. The geometry is :mod:`analysis.geometry` (the online triangulator's code).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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
    each view's row for that frame (-1 where the view lacks it)."""

    frames: np.ndarray
    rows: dict[str, np.ndarray]

    def missing(self, name: str) -> np.ndarray:
        """Frame numbers other views have and ``name`` lacks."""
        return self.frames[self.rows[name] < 0]

    def report(self) -> list[str]:
        """One line per view that lacks frames others have (empty when all views hold the same frames)."""
        lines = []
        for name in self.rows:
            miss = self.missing(name)
            if len(miss):
                lines.append(
                    f"view {name!r} lacks {len(miss)} of {len(self.frames)} frames the other views have: "
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


# ----------------------------------------------------------------------------------------------- 3-D
@dataclass
class Points3D:
    """3-D keypoints of the matched frames.

    ``xyz`` (F, I, K, 3) world units of the calibration (mm), NaN = not triangulated; ``error_px`` (F, I, K)
    mean reprojection error over the cameras used; ``per_view_px`` (C, F, I, K) each view's reprojection
    error (NaN where that view was not used); ``used`` (C, F, I, K) which views made the point.
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
) -> Points3D:
    """2-D keypoints of named views (camera name -> table) -> :class:`Points3D`.

    Views are matched by frame number; body parts and individuals by name (those all views share, in the
    first view's order; ``individuals`` chooses some). Points below ``min_confidence`` are left out (default:
    each view's format's cut, :func:`analysis.events.default_min_confidence`) and confidence weights the
    rest; with ``ransac_px`` a view whose point reprojects farther than that is voted
    out (:func:`analysis.geometry.triangulate_ransac`, which needs 3+ views to help).
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
    match = match_frames(tables)
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
        },
        match=match,
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
    lines = [
        f"{qa['frames']} frames ({qa['first_frame']}-{qa['last_frame']}), {mode}, confidence cut "
        f"{st['min_confidence']}: {100 * qa['fraction_triangulated']:.1f} % of points triangulated; "
        f"reprojection median / p90 {px(qa['reprojection'])} px",
        "view: frames, used, reprojection median / p90 px",
    ]
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
    """One individual's points as an anipose-style wide table: ``fnum`` then per keypoint ``<kp>_x``,
    ``_y``, ``_z``, ``_error`` (px), ``_ncams``, ``_cameras`` (read back by ``reaching``)."""
    import pandas as pd

    cols: dict[str, Any] = {"fnum": res.frames}
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
