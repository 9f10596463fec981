"""N-camera calibration from checkerboard or ChArUco views: intrinsics, extrinsics, bundle adjustment.

Pipeline (:func:`calibrate`):

1. detect the board in every view of every camera (views are aligned by index across cameras: view ``i``
   of every camera shows the board at the same moment);
2. per camera, ``cv2.calibrateCamera`` (k3 fixed at 0 by default, the Bouguet toolbox's model); views whose
   RMS reprojection error is above ``max(outlier_px, outlier_factor * median)`` are dropped as outliers and
   the camera is calibrated again;
3. extrinsics relative to the reference camera with ``cv2.stereoCalibrate`` (intrinsics fixed) over shared
   views, chaining through already placed cameras when a camera shares no views with the reference;
4. optionally, a bundle adjustment (``scipy.optimize.least_squares``) over all camera poses, board poses and
   (optionally) intrinsics, minimizing the pixel reprojection error of every corner in every camera.

Every view is listed in the :class:`CalibrationReport` with its status (``used``, ``no board``, ``too few
points``, ``outlier``) and reason; left-out views never enter the estimate. World units are millimetres
(the board's square size) and the world frame is the reference camera's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from analysis.camera import Calibration, CameraModel
from analysis.errors import AnalysisError, CalibrationFailed
from analysis.plotting import pyplot, save

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm")
_SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 0.001)


# --------------------------------------------------------------------------------------------- boards
@dataclass(frozen=True)
class Detection:
    """Board corners found in one image.

    ``ids`` (K,) corner ids, ``image_points`` (K, 2) px, ``object_points`` (K, 3) mm on the board.
    """

    ids: np.ndarray
    image_points: np.ndarray
    object_points: np.ndarray


@dataclass(frozen=True)
class Checkerboard:
    """A chessboard with ``cols`` x ``rows`` inner corners and ``square_mm`` squares.

    ``subpix_window`` is the half size of the ``cv2.cornerSubPix`` window (5 -> 11x11 px, which reproduces
    Bouguet's corner positions on 640x480 images to ~0.05 px).
    """

    cols: int
    rows: int
    square_mm: float
    subpix_window: int = 5

    kind = "checkerboard"

    def object_points(self) -> np.ndarray:
        """(cols*rows, 3) corner positions in mm, row-major like OpenCV's detector output."""
        grid = np.mgrid[0 : self.cols, 0 : self.rows].T.reshape(-1, 2)
        return np.hstack([grid * self.square_mm, np.zeros((len(grid), 1))])

    @property
    def n_points(self) -> int:
        return self.cols * self.rows

    def detect(self, gray: np.ndarray) -> Detection | None:
        flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
        size = (self.cols, self.rows)
        found, corners = cv2.findChessboardCorners(gray, size, flags=flags)  # type: ignore[call-overload]
        if not found:
            sb_flags = cv2.CALIB_CB_EXHAUSTIVE
            found, corners = cv2.findChessboardCornersSB(gray, size, flags=sb_flags)  # type: ignore[call-overload]
            if not found:
                return None
        else:
            w = self.subpix_window
            corners = cv2.cornerSubPix(gray, corners, (w, w), (-1, -1), _SUBPIX_CRITERIA)
        return Detection(
            ids=np.arange(self.n_points),
            image_points=corners.reshape(-1, 2).astype(np.float64),
            object_points=self.object_points(),
        )

    def describe(self) -> dict[str, Any]:
        return {"type": self.kind, "cols": self.cols, "rows": self.rows, "square_mm": self.square_mm}


@dataclass(frozen=True)
class Charuco:
    """A ChArUco board of ``squares_x`` x ``squares_y`` squares (OpenCV 5 class-based aruco API)."""

    squares_x: int
    squares_y: int
    square_mm: float
    marker_mm: float
    dictionary: str = "DICT_4X4_50"
    min_points: int = 6

    kind = "charuco"

    def board(self) -> Any:
        try:
            dict_id = getattr(cv2.aruco, self.dictionary)
        except AttributeError:
            raise AnalysisError(f"unknown ArUco dictionary {self.dictionary!r}") from None
        dictionary = cv2.aruco.getPredefinedDictionary(dict_id)
        return cv2.aruco.CharucoBoard(
            (self.squares_x, self.squares_y), float(self.square_mm), float(self.marker_mm), dictionary
        )

    @property
    def n_points(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)

    def object_points(self) -> np.ndarray:
        return np.asarray(self.board().getChessboardCorners(), dtype=np.float64).reshape(-1, 3)

    def detect(self, gray: np.ndarray) -> Detection | None:
        detector = cv2.aruco.CharucoDetector(self.board())
        corners, ids, _, _ = detector.detectBoard(gray)
        if ids is None or len(ids) < self.min_points:
            return None
        ids = ids.reshape(-1).astype(int)
        return Detection(
            ids=ids,
            image_points=corners.reshape(-1, 2).astype(np.float64),
            object_points=self.object_points()[ids],
        )

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "squares_x": self.squares_x,
            "squares_y": self.squares_y,
            "square_mm": self.square_mm,
            "marker_mm": self.marker_mm,
            "dictionary": self.dictionary,
        }


Board = Checkerboard | Charuco


def parse_board(spec: str) -> Board:
    """``checkerboard:COLSxROWS:SQUARE_MM`` or ``charuco:SXxSY:SQUARE_MM:MARKER_MM[:DICT]`` -> a board."""
    parts = spec.split(":")
    try:
        kind = parts[0].lower()
        if kind == "checkerboard" and len(parts) == 3:
            cols, rows = (int(v) for v in parts[1].lower().split("x"))
            return Checkerboard(cols, rows, float(parts[2]))
        if kind == "charuco" and len(parts) in (4, 5):
            sx, sy = (int(v) for v in parts[1].lower().split("x"))
            dictionary = parts[4] if len(parts) == 5 else "DICT_4X4_50"
            return Charuco(sx, sy, float(parts[2]), float(parts[3]), dictionary)
    except ValueError:
        pass
    raise AnalysisError(
        f"board spec {spec!r}: expected 'checkerboard:COLSxROWS:SQUARE_MM' (inner corners) or "
        "'charuco:SXxSY:SQUARE_MM:MARKER_MM[:DICT]'"
    )


# --------------------------------------------------------------------------------------------- input
def read_views(source: str | Path, every: int = 1) -> list[tuple[str, np.ndarray]]:
    """Grey images from a folder, a glob pattern, a list file, or a video (every ``every``-th frame).

    Returns ``[(label, gray_hw)]`` sorted by file name (or frame index for a video).
    """
    src = Path(source)
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif src.is_file() and src.suffix.lower() in VIDEO_SUFFIXES:
        return _read_video(src, every)
    elif src.is_file():
        files = [src]
    else:
        files = sorted(Path(p) for p in _glob(str(source)))
    if not files:
        raise CalibrationFailed(f"{source}: no images found")
    out = []
    for f in files[:: max(1, every)]:
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise CalibrationFailed(f"{f}: not a readable image")
        out.append((f.name, img))
    return out


def _glob(pattern: str) -> list[str]:
    import glob

    return glob.glob(pattern)


def _read_video(path: Path, every: int) -> list[tuple[str, np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise CalibrationFailed(f"{path}: cannot open video")
    out = []
    idx = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if idx % max(1, every) == 0:
                gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
                out.append((f"{path.name}#{idx}", gray))
            idx += 1
    finally:
        cap.release()
    if not out:
        raise CalibrationFailed(f"{path}: video has no readable frames")
    return out


# --------------------------------------------------------------------------------------------- report
@dataclass
class ViewRecord:
    """One view of one camera: ``status`` is ``used``, ``no board``, ``too few points`` or ``outlier``."""

    camera: str
    index: int
    label: str
    status: str
    n_points: int = 0
    rms_px: float = float("nan")
    reason: str = ""


@dataclass
class CalibrationReport:
    """Per-view and per-camera reprojection results of a calibration.

    ``camera_rms_px`` is the RMS over all used corners of each camera with the final model: with per-camera
    board poses (like Bouguet's per-camera calibration) unless bundle adjustment ran, in which case the board
    poses are shared by all cameras.
    """

    views: list[ViewRecord]
    camera_rms_px: dict[str, float]
    stereo_rms_px: dict[str, float] = field(default_factory=dict)
    bundle_adjusted: bool = False
    residuals: dict[str, np.ndarray] = field(default_factory=dict)

    def excluded(self) -> list[ViewRecord]:
        return [v for v in self.views if v.status != "used"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "camera_rms_px": {k: round(v, 4) for k, v in self.camera_rms_px.items()},
            "stereo_rms_px": {k: round(v, 4) for k, v in self.stereo_rms_px.items()},
            "bundle_adjusted": self.bundle_adjusted,
            "views": [
                {
                    "camera": v.camera,
                    "index": v.index,
                    "label": v.label,
                    "status": v.status,
                    "n_points": v.n_points,
                    "rms_px": None if not np.isfinite(v.rms_px) else round(v.rms_px, 4),
                    "reason": v.reason,
                }
                for v in self.views
            ],
        }

    def to_text(self) -> str:
        lines = ["camera      view  label                 status           points  rms_px"]
        for v in self.views:
            rms_text = f"{v.rms_px:.3f}" if np.isfinite(v.rms_px) else "-"
            lines.append(
                f"{v.camera:<11} {v.index:>4}  {v.label[:20]:<20}  {v.status:<15} {v.n_points:>6}  {rms_text}"
                + (f"  ({v.reason})" if v.reason else "")
            )
        for cam, rms in self.camera_rms_px.items():
            lines.append(f"camera {cam}: RMS {rms:.3f} px")
        for pair, rms in self.stereo_rms_px.items():
            lines.append(f"stereo {pair}: RMS {rms:.3f} px")
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Bar chart of per-view RMS per camera plus a scatter of corner residuals; written to ``path``."""
        plt = pyplot()

        cams = list(self.camera_rms_px)
        fig, axes = plt.subplots(2, max(1, len(cams)), figsize=(4.5 * max(1, len(cams)), 7), squeeze=False)
        for c, cam in enumerate(cams):
            recs = [v for v in self.views if v.camera == cam]
            x = [v.index for v in recs]
            y = [v.rms_px if np.isfinite(v.rms_px) else 0.0 for v in recs]
            colors = ["tab:blue" if v.status == "used" else "tab:red" for v in recs]
            ax = axes[0, c]
            ax.bar(x, y, color=colors)
            ax.set_title(f"{cam}: RMS {self.camera_rms_px[cam]:.3f} px (red: left out)")
            ax.set_xlabel("view")
            ax.set_ylabel("RMS reprojection error (px)")
            res = self.residuals.get(cam)
            ax2 = axes[1, c]
            if res is not None and len(res):
                ax2.scatter(res[:, 0], res[:, 1], s=3, alpha=0.5)
                lim = float(np.nanmax(np.abs(res))) * 1.1 or 1.0
                ax2.set_xlim(-lim, lim)
                ax2.set_ylim(-lim, lim)
            ax2.set_aspect("equal")
            ax2.set_xlabel("residual x (px)")
            ax2.set_ylabel("residual y (px)")
        return save(fig, path)


@dataclass
class CalibrationResult:
    calibration: Calibration
    report: CalibrationReport


# --------------------------------------------------------------------------------------------- core
def detect_views(
    views: Mapping[str, Sequence[tuple[str, np.ndarray]]], board: Board
) -> tuple[dict[str, list[Detection | None]], list[ViewRecord]]:
    """Detect the board in every view; returns detections per camera (None = not usable) and records."""
    dets: dict[str, list[Detection | None]] = {}
    records: list[ViewRecord] = []
    for cam, imgs in views.items():
        dets[cam] = []
        for i, (label, img) in enumerate(imgs):
            gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            det = board.detect(gray)
            if det is None:
                records.append(ViewRecord(cam, i, label, "no board", reason="board not found"))
            dets[cam].append(det)
    return dets, records


def calibrate(
    views: Mapping[str, Sequence[tuple[str, np.ndarray]]],
    board: Board,
    *,
    reference: str | None = None,
    bundle_adjust: bool = False,
    fix_k3: bool = True,
    optimize_intrinsics: bool = True,
    outlier_px: float = 1.0,
    outlier_factor: float = 3.0,
    min_views: int = 3,
) -> CalibrationResult:
    """Calibrate named cameras from aligned views ``{camera: [(label, image)]}`` of one board."""
    sizes = {}
    for cam, imgs in views.items():
        if not imgs:
            raise CalibrationFailed(f"camera {cam!r}: no views given")
        h, w = imgs[0][1].shape[:2]
        sizes[cam] = (int(w), int(h))
    dets, records = detect_views(views, board)
    result = calibrate_from_detections(
        dets,
        sizes,
        labels={cam: [lab for lab, _ in imgs] for cam, imgs in views.items()},
        reference=reference,
        bundle_adjust=bundle_adjust,
        fix_k3=fix_k3,
        optimize_intrinsics=optimize_intrinsics,
        outlier_px=outlier_px,
        outlier_factor=outlier_factor,
        min_views=min_views,
        board_info=board.describe(),
    )
    result.report.views = sorted(
        records + result.report.views, key=lambda v: (list(views).index(v.camera), v.index)
    )
    return result


def calibrate_from_detections(
    detections: Mapping[str, Sequence[Detection | None]],
    sizes: Mapping[str, tuple[int, int]],
    *,
    labels: Mapping[str, Sequence[str]] | None = None,
    reference: str | None = None,
    bundle_adjust: bool = False,
    fix_k3: bool = True,
    optimize_intrinsics: bool = True,
    outlier_px: float = 1.0,
    outlier_factor: float = 3.0,
    min_views: int = 3,
    min_points: int = 6,
    board_info: dict[str, Any] | None = None,
) -> CalibrationResult:
    """Calibrate from per-camera board detections (``None`` = not found; index = view across cameras)."""
    names = list(detections)
    if not names:
        raise CalibrationFailed("no cameras given")
    reference = reference or names[0]
    if reference not in detections:
        raise CalibrationFailed(
            f"reference camera {reference!r} is not among the cameras ({', '.join(names)})"
        )
    labels = labels or {c: [f"view{i}" for i in range(len(d))] for c, d in detections.items()}
    records: list[ViewRecord] = []
    used: dict[str, dict[int, Detection]] = {}
    intr: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    cam_rms: dict[str, float] = {}
    per_cam_poses: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    flags = cv2.CALIB_FIX_K3 if fix_k3 else 0
    for cam in names:
        good: dict[int, Detection] = {}
        for i, det in enumerate(detections[cam]):
            if det is None:
                continue
            if len(det.ids) < min_points:
                records.append(
                    ViewRecord(
                        cam,
                        i,
                        labels[cam][i],
                        "too few points",
                        len(det.ids),
                        reason=f"{len(det.ids)} < {min_points} corners",
                    )
                )
                continue
            good[i] = det
        outliers: dict[int, tuple[float, float]] = {}
        for _ in range(3):
            if len(good) < min_views:
                raise CalibrationFailed(
                    f"camera {cam!r}: only {len(good)} valid board views (need at least {min_views}); "
                    f"{sum(d is None for d in detections[cam])} of {len(detections[cam])} views had no board"
                )
            keys = sorted(good)
            rms, k, d, rv, tv, _, _, per_view = cv2.calibrateCameraExtended(  # type: ignore[call-overload]
                [good[i].object_points.astype(np.float32) for i in keys],
                [good[i].image_points.astype(np.float32) for i in keys],
                sizes[cam],
                None,
                None,
                flags=flags,
            )
            per_view = np.asarray(per_view).reshape(-1)
            thresh = max(outlier_px, outlier_factor * float(np.median(per_view)))
            bad = [i for i, e in zip(keys, per_view, strict=True) if e > thresh]
            if not bad:
                break
            for i in bad:
                outliers[i] = (float(per_view[keys.index(i)]), thresh)
                del good[i]
        for i, (e, thresh) in outliers.items():
            det = detections[cam][i]
            records.append(
                ViewRecord(
                    cam,
                    i,
                    labels[cam][i],
                    "outlier",
                    len(det.ids) if det else 0,
                    e,
                    f"view RMS {e:.2f} px > {thresh:.2f} px",
                )
            )
        for i, e in zip(keys, per_view, strict=True):
            records.append(ViewRecord(cam, i, labels[cam][i], "used", len(good[i].ids), float(e)))
        used[cam] = good
        intr[cam] = (np.asarray(k), np.asarray(d).reshape(-1))
        cam_rms[cam] = float(rms)
        per_cam_poses[cam] = {
            i: (np.asarray(r).reshape(3), np.asarray(t).reshape(3))
            for i, r, t in zip(keys, rv, tv, strict=True)
        }
        log.info("camera %s: %d views, RMS %.3f px", cam, len(keys), rms)

    poses, stereo_rms = _place_cameras(names, reference, used, intr, sizes, min_views)
    cams = {c: CameraModel(c, sizes[c], intr[c][0], intr[c][1], poses[c][0], poses[c][1]) for c in names}
    residuals: dict[str, np.ndarray] = {}
    if bundle_adjust and len(names) > 1:
        cams, view_rms, cam_rms, residuals = _bundle_adjust(
            cams, reference, used, optimize_intrinsics, fix_k3
        )
        for r in records:
            if r.status == "used":
                r.rms_px = view_rms[(r.camera, r.index)]
    else:
        for c in names:
            chunks = []
            for i, det in used[c].items():
                rv, tv = per_cam_poses[c][i]
                proj, _ = cv2.projectPoints(det.object_points, rv, tv, intr[c][0], intr[c][1])
                chunks.append(proj.reshape(-1, 2) - det.image_points)
            residuals[c] = np.concatenate(chunks)
    meta: dict[str, Any] = {
        "method": "deepbehavior calibrate",
        "board": board_info or {},
        "bundle_adjusted": bool(bundle_adjust and len(names) > 1),
        "rms_px": {c: round(v, 4) for c, v in cam_rms.items()},
        "views_used": {c: len(used[c]) for c in names},
    }
    calib = Calibration(cameras=cams, reference=reference, units="mm", meta=meta)
    report = CalibrationReport(records, cam_rms, stereo_rms, bool(meta["bundle_adjusted"]), residuals)
    return CalibrationResult(calib, report)


def _common(
    a: Mapping[int, Detection], b: Mapping[int, Detection]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Shared views of two cameras, each as (object K3, image_a K2, image_b K2) over common corner ids."""
    out = []
    for i in sorted(set(a) & set(b)):
        ids, ia, ib = np.intersect1d(a[i].ids, b[i].ids, return_indices=True)
        if len(ids) >= 6:
            out.append((a[i].object_points[ia], a[i].image_points[ia], b[i].image_points[ib]))
    return out


def _place_cameras(
    names: list[str],
    reference: str,
    used: Mapping[str, Mapping[int, Detection]],
    intr: Mapping[str, tuple[np.ndarray, np.ndarray]],
    sizes: Mapping[str, tuple[int, int]],
    min_views: int,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, float]]:
    """World (= reference camera) -> camera poses by pairwise stereo calibration, chained breadth first."""
    poses: dict[str, tuple[np.ndarray, np.ndarray]] = {reference: (np.zeros(3), np.zeros(3))}
    stereo_rms: dict[str, float] = {}
    pending = [n for n in names if n != reference]
    while pending:
        best: tuple[int, str, str] | None = None
        for b in pending:
            for a in poses:
                n = len(_common(used[a], used[b]))
                if n >= min_views and (best is None or n > best[0]):
                    best = (n, a, b)
        if best is None:
            raise CalibrationFailed(
                f"camera(s) {', '.join(pending)} share fewer than {min_views} board views with the placed "
                f"camera(s) {', '.join(poses)}; record views where both see the board"
            )
        _, a, b = best
        shared = _common(used[a], used[b])
        rms, _, _, _, _, r, t, _, _ = cv2.stereoCalibrate(
            [s[0].astype(np.float32) for s in shared],
            [s[1].astype(np.float32) for s in shared],
            [s[2].astype(np.float32) for s in shared],
            intr[a][0],
            intr[a][1],
            intr[b][0],
            intr[b][1],
            sizes[a],
            flags=cv2.CALIB_FIX_INTRINSIC,
        )
        ra = cv2.Rodrigues(poses[a][0])[0]
        rb = r @ ra
        tb = r @ poses[a][1] + t.reshape(3)
        poses[b] = (cv2.Rodrigues(rb)[0].reshape(3), tb)
        stereo_rms[f"{a}-{b}"] = float(rms)
        log.info("placed camera %s from %s over %d views: stereo RMS %.3f px", b, a, len(shared), rms)
        pending.remove(b)
    return poses, stereo_rms


def _bundle_adjust(
    cams: dict[str, CameraModel],
    reference: str,
    used: Mapping[str, Mapping[int, Detection]],
    optimize_intrinsics: bool,
    fix_k3: bool,
) -> tuple[dict[str, CameraModel], dict[tuple[str, int], float], dict[str, float], dict[str, np.ndarray]]:
    """Jointly refine camera poses, board poses and (optionally) intrinsics with least squares (px)."""
    from scipy.optimize import least_squares
    from scipy.sparse import lil_matrix

    names = list(cams)
    n_intr = (9 if not fix_k3 else 8) if optimize_intrinsics else 0
    view_ids = sorted({i for c in names for i in used[c]})
    # board pose per view (board -> world) from the first camera that saw it, preferring the reference
    board_pose: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for v in view_ids:
        for c in [reference] + [n for n in names if n != reference]:
            if v in used[c]:
                det = used[c][v]
                cam = cams[c]
                _, rv, tv = cv2.solvePnP(det.object_points, det.image_points, cam.matrix, cam.dist)
                rc_inv = cam.rotation.T
                r_w = rc_inv @ cv2.Rodrigues(rv)[0]
                t_w = rc_inv @ (tv.reshape(3) - cam.tvec)
                board_pose[v] = (cv2.Rodrigues(r_w)[0].reshape(3), t_w)
                break
    cam_off: dict[str, int] = {}
    x0: list[float] = []
    for c in names:
        cam_off[c] = len(x0)
        if optimize_intrinsics:
            k, d = cams[c].matrix, np.zeros(5)
            d[: min(5, cams[c].dist.size)] = cams[c].dist[:5]
            x0 += [k[0, 0], k[1, 1], k[0, 2], k[1, 2], *d[:4]] + ([] if fix_k3 else [d[4]])
        if c != reference:
            x0 += [*cams[c].rvec, *cams[c].tvec]
    view_off = {}
    for v in view_ids:
        view_off[v] = len(x0)
        x0 += [*board_pose[v][0], *board_pose[v][1]]
    obs = [(c, v, used[c][v]) for c in names for v in sorted(used[c])]
    n_res = sum(2 * len(det.ids) for _, _, det in obs)

    def unpack(x: np.ndarray, c: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        o = cam_off[c]
        if optimize_intrinsics:
            fx, fy, cx, cy = x[o : o + 4]
            k = np.array([[fx, cams[c].matrix[0, 1], cx], [0, fy, cy], [0, 0, 1]])
            d = np.zeros(5)
            d[: n_intr - 4] = x[o + 4 : o + n_intr]
            if fix_k3 and cams[c].dist.size >= 5:
                d[4] = cams[c].dist[4]
            o += n_intr
        else:
            k, d = cams[c].matrix, np.zeros(5)
            d[: min(5, cams[c].dist.size)] = cams[c].dist[:5]
        if c == reference:
            return k, d, np.zeros(3), np.zeros(3)
        return k, d, x[o : o + 3], x[o + 3 : o + 6]

    # flat arrays over every observed corner: which camera, which view, board point, pixel
    cam_idx = np.concatenate([np.full(len(det.ids), names.index(c)) for c, _, det in obs])
    view_idx = np.concatenate([np.full(len(det.ids), view_ids.index(v)) for _, v, det in obs])
    obj = np.concatenate([det.object_points for _, _, det in obs])
    img = np.concatenate([det.image_points for _, _, det in obs])
    view_cols = np.array([view_off[v] for v in view_ids])

    def residuals(x: np.ndarray) -> np.ndarray:
        ks, ds, rcs, tcs = zip(*(unpack(x, c) for c in names), strict=True)
        vp = x[view_cols[:, None] + np.arange(6)]
        rot_c, rot_v = _rodrigues(np.asarray(rcs)), _rodrigues(vp[:, :3])
        pw = np.einsum("pij,pj->pi", rot_v[view_idx], obj) + vp[view_idx, 3:]
        pc = np.einsum("pij,pj->pi", rot_c[cam_idx], pw) + np.asarray(tcs)[cam_idx]
        proj = _distort_project(pc, np.asarray(ks)[cam_idx], np.asarray(ds)[cam_idx])
        return (proj - img).reshape(-1)

    sparsity = lil_matrix((n_res, len(x0)), dtype=int)
    pos = 0
    for c, v, det in obs:
        n = 2 * len(det.ids)
        width = n_intr + (6 if c != reference else 0)
        if width:
            sparsity[pos : pos + n, cam_off[c] : cam_off[c] + width] = 1
        sparsity[pos : pos + n, view_off[v] : view_off[v] + 6] = 1
        pos += n
    # small problems: a dense Jacobian (exact trust-region solves) converges in far fewer, cheaper steps
    sparse = len(x0) > 600
    if sparse:
        sol = least_squares(
            residuals, np.asarray(x0), jac_sparsity=sparsity, x_scale="jac", ftol=1e-6, xtol=1e-7
        )
    else:
        sol = least_squares(residuals, np.asarray(x0), method="lm", x_scale="jac", ftol=1e-6, xtol=1e-7)
    log.info(
        "bundle adjustment: %d parameters, cost %.4g -> %.4g after %d evaluations (%s)",
        len(x0),
        0.5 * np.sum(residuals(np.asarray(x0)) ** 2),
        sol.cost,
        sol.nfev,
        sol.message,
    )
    new = {}
    for c in names:
        k, d, r, t = unpack(sol.x, c)
        new[c] = CameraModel(c, cams[c].size, k, d, r, t)
    res = residuals(sol.x).reshape(-1, 2)
    view_rms: dict[tuple[str, int], float] = {}
    per_cam: dict[str, list[np.ndarray]] = {c: [] for c in names}
    pos = 0
    for c, v, det in obs:
        r = res[pos : pos + len(det.ids)]
        view_rms[(c, v)] = float(np.sqrt(np.mean(np.sum(r**2, axis=1))))
        per_cam[c].append(r)
        pos += len(det.ids)
    resid = {c: np.concatenate(per_cam[c]) for c in names}
    cam_rms = {c: float(np.sqrt(np.mean(np.sum(resid[c] ** 2, axis=1)))) for c in names}
    return new, view_rms, cam_rms, resid


def calibrate_sources(
    sources: Mapping[str, str | Path], board: Board, every: int = 1, **kwargs: Any
) -> CalibrationResult:
    """Read each camera's images/video (see :func:`read_views`) and :func:`calibrate` them."""
    views = {name: read_views(src, every) for name, src in sources.items()}
    counts = {name: len(v) for name, v in views.items()}
    if len(set(counts.values())) > 1:
        raise CalibrationFailed(
            "cameras have different numbers of views (views are paired by order): "
            + ", ".join(f"{k}={v}" for k, v in counts.items())
        )
    return calibrate(views, board, **kwargs)


def baseline_mm(calib: Calibration, a: str, b: str) -> float:
    """Distance between the centres of cameras ``a`` and ``b`` (mm)."""
    return float(np.linalg.norm(calib[a].center - calib[b].center))


def _rodrigues(r_n3: np.ndarray) -> np.ndarray:
    """Rodrigues vectors (N, 3) -> rotation matrices (N, 3, 3), vectorized."""
    theta = np.linalg.norm(r_n3, axis=1)
    small = theta < 1e-12
    k = r_n3 / np.where(small, 1.0, theta)[:, None]
    kx = np.zeros((len(r_n3), 3, 3))
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    kx[:, 1, 0], kx[:, 2, 0], kx[:, 2, 1] = k[:, 2], -k[:, 1], k[:, 0]
    s, c = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    out = np.eye(3) + s * kx + (1 - c) * (kx @ kx)
    out[small] = np.eye(3)
    return out


def _distort_project(pc_n3: np.ndarray, k_n33: np.ndarray, d_n5: np.ndarray) -> np.ndarray:
    """Camera-frame points (N, 3) -> pixels (N, 2) with OpenCV's 5-coefficient model, per-point K and dist."""
    x = pc_n3[:, 0] / pc_n3[:, 2]
    y = pc_n3[:, 1] / pc_n3[:, 2]
    k1, k2, p1, p2, k3 = (d_n5[:, i] for i in range(5))
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    u = k_n33[:, 0, 0] * xd + k_n33[:, 0, 1] * yd + k_n33[:, 0, 2]
    v = k_n33[:, 1, 1] * yd + k_n33[:, 1, 2]
    return np.stack([u, v], axis=1)
