"""Evaluation of a detector on a labeled box dataset, the numbers a user acts on.

* **mAP the standard way** (COCO, as Ultralytics' ``val`` computes it): per class, detections sorted by
  confidence each take the best still-unclaimed true box of that class at each IoU threshold 0.50:0.05:0.95;
  AP is the area under the precision envelope sampled at 101 recall points. ``map50`` and ``map50_95``
  average the classes that have true boxes. Checked against Ultralytics' own code in the tests.
* **At the operating threshold** (``conf``: the model's stored threshold, or the one picked on a validation
  split by :func:`pick_threshold`): precision/recall (IoU >= 0.5), per-class IoU over *all* true boxes (a
  missed box counts 0), the pixel error of each true box's centre to its nearest predicted centre (one to
  one; a missed box counts as infinitely far), hits within ``radius_px``, and the false positives on
  frames without that class.
* A report folder: ``report.json``, ``report.png`` (bars, IoU histogram, error CDF) and ``worst.png`` (a
  picture sheet of the worst frames: labels green, predictions red).
* Keypoint models: the numbers come from :func:`detection.keypoints.evaluate_points`; here their report
  (:func:`write_point_report`: ``report.json`` and ``worst.png``) and the pixel -> mm scale from a camera
  calibration (:func:`mm_per_px`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from detection.base import Det, DetectionError, Runner
from detection.datasets import Box, BoxDataset, DatasetError

if TYPE_CHECKING:
    from detection.keypoints import FramePoints, PointDataset, PointEvaluation

log = logging.getLogger(__name__)
IOU_MATCH = 0.5
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
DEFAULT_RADIUS_PX = 20.0
EVAL_CONFIDENCE = 0.001  # the candidates AP is computed over (Ultralytics' val uses the same)
EVAL_MAX_DET = 300


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) x1y1x2y2 boxes -> (N, M) IoU."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_detections(
    pred: np.ndarray, true: np.ndarray, thresholds: np.ndarray = IOU_THRESHOLDS
) -> np.ndarray:
    """COCO matching for one class on one image: ``pred`` (D, 4) sorted by descending confidence, ``true``
    (M, 4). Each detection in turn takes the best unclaimed true box at each threshold. Returns (D, T)
    booleans: detection d is a true positive at threshold t."""
    correct = np.zeros((len(pred), len(thresholds)), bool)
    if len(pred) == 0 or len(true) == 0:
        return correct
    iou = iou_matrix(true, pred)  # (M, D)
    claimed = np.zeros((len(true), len(thresholds)), bool)
    cols = np.arange(len(thresholds))
    for j in range(len(pred)):
        avail = np.where(claimed, 0.0, iou[:, j, None])  # (M, T)
        k = avail.argmax(0)
        correct[j] = avail[k, cols] >= thresholds
        claimed[k, cols] |= correct[j]
    return correct


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope, sampled at 101 recall points (COCO; Ultralytics' ``compute_ap``)."""
    last = recall[-1] if len(recall) else 1.0
    mrec = np.concatenate(([0.0], recall, [last], [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    y = np.interp(x, mrec, mpre)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def average_precision(scores: np.ndarray, tp: np.ndarray, n_true: int) -> np.ndarray | float:
    """AP from per-detection ``scores`` (N,) and true-positive flags ``tp`` (N,) or (N, T): a float for
    (N,), one AP per threshold for (N, T). NaN for a class with no true boxes, 0 with no detections."""
    tp = np.asarray(tp, bool)
    one = tp.ndim == 1
    tp2 = tp.reshape(len(tp), -1)
    if n_true == 0:
        return float("nan") if one else np.full(tp2.shape[1], np.nan)
    if len(scores) == 0:
        return 0.0 if one else np.zeros(tp2.shape[1])
    order = np.argsort(-np.asarray(scores), kind="stable")
    tpc = np.cumsum(tp2[order], 0)
    fpc = np.cumsum(~tp2[order], 0)
    recall = tpc / (n_true + 1e-16)
    precision = tpc / (tpc + fpc)
    aps = np.array([compute_ap(recall[:, t], precision[:, t]) for t in range(tp2.shape[1])])
    return float(aps[0]) if one else aps


def pick_threshold(scores: np.ndarray, correct: np.ndarray, n_true: int, floor: float = 0.01) -> float | None:
    """The confidence threshold with the best F1 (``correct``: each detection's true-positive flag; all
    classes pooled). The thresholds between two neighbouring scores all give the same F1: of the widest
    range of thresholds with the best F1, the middle is taken, so a small validation set's margin is kept
    on both sides (a higher threshold drops hits first seen in new data, a lower one lets false positives
    in). None when no detection is correct (nothing to operate on)."""
    s = np.asarray(scores, float)
    c = np.asarray(correct, bool)
    keep = s >= floor
    s, c = s[keep], c[keep]
    if n_true == 0 or not c.any():
        return None
    order = np.argsort(-s, kind="stable")
    s, c = s[order], c[order]
    f1 = 2 * np.cumsum(c) / (np.arange(1, len(s) + 1) + n_true)
    # a threshold keeps every detection of equal score: the cuts are at the last index of each score run
    cut = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    f1c, hi_c = f1[cut], s[cut]
    lo_c = np.r_[hi_c[1:], 0.0]  # cut m keeps the same detections for any t in (lo_c[m], hi_c[m]]
    best = f1c >= f1c.max() - 1e-12
    spans: list[tuple[float, float]] = []  # (lo, hi) of each run of consecutive best cuts
    for m in np.flatnonzero(best):
        if spans and m > 0 and best[m - 1]:
            spans[-1] = (float(lo_c[m]), spans[-1][1])
        else:
            spans.append((float(lo_c[m]), float(hi_c[m])))
    lo, hi = max(spans, key=lambda p: p[1] - p[0])
    return float((lo + hi) / 2)


@dataclass
class ClassResult:
    name: str
    n_true: int = 0
    n_pred: int = 0  # detections at the operating threshold
    tp: int = 0
    precision: float = 0.0
    recall: float = 0.0
    ap50: float = 0.0
    ap50_95: float = 0.0
    mean_iou: float = 0.0  # best IoU per true box at the operating threshold, 0 when missed
    median_px: float = 0.0  # centre error per true box (inf when missed)
    p90_px: float = 0.0
    hits: int = 0  # true boxes with a predicted centre within radius_px
    n_missed: int = 0  # true boxes with no detection of their class at all
    n_empty: int = 0  # frames without this class
    fp_empty: int = 0  # of those, frames with a detection of this class at the operating threshold


@dataclass
class EvalResult:
    classes: list[ClassResult] = field(default_factory=list)
    map50: float = 0.0
    map50_95: float = 0.0
    mean_iou: float = 0.0  # best-matching IoU per true box (0 when missed), all classes
    n_images: int = 0
    conf: float = 0.25  # the operating threshold the per-threshold numbers are at
    radius_px: float = DEFAULT_RADIUS_PX
    picked_conf: float | None = None  # the best-F1 threshold on this set (what train stores from val)
    per_image_iou: list[float] = field(default_factory=list)
    frame_errors: dict[str, float] = field(default_factory=dict)  # image -> worst centre error (inf: miss)
    frame_fp: dict[str, int] = field(default_factory=dict)  # image -> unmatched detections at conf

    def to_json(self) -> dict[str, Any]:
        return dict(json_clean(asdict(self)))

    def summary_lines(self) -> list[str]:
        """What ``detect train`` / ``detect evaluate`` print."""
        lines = [
            f"{len(self.classes)} classes, {self.n_images} images; at confidence {self.conf:.3f}, "
            f"radius {self.radius_px:g} px:"
        ]
        for c in self.classes:
            lines.append(
                f"{c.name:>12}: hits {c.hits}/{c.n_true}  centre error median {_px(c.median_px)} "
                f"p90 {_px(c.p90_px)}  P {c.precision:.3f} R {c.recall:.3f}  IoU {c.mean_iou:.3f}  "
                f"AP50 {c.ap50:.3f} AP50-95 {c.ap50_95:.3f}  false positives on {c.fp_empty}/{c.n_empty} "
                "frames without it"
            )
        lines.append(f"mAP50 {self.map50:.3f}  mAP50-95 {self.map50_95:.3f}  mean IoU {self.mean_iou:.3f}")
        if self.picked_conf is not None:
            lines.append(f"best-F1 confidence threshold on this set: {self.picked_conf:.3f}")
        return lines


def _px(v: float) -> str:
    return f"{v:.1f} px" if math.isfinite(v) else "inf (over half missed)"


def json_clean(x: Any) -> Any:
    """``x`` with NaN as null and infinities as the string "inf" (JSON has neither)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else "inf"
    if isinstance(x, dict):
        return {k: json_clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_clean(v) for v in x]
    return x


def centre_errors(truth: Sequence[Box], dets: Sequence[Det]) -> list[float]:
    """Per true box (one class), the distance of its centre to a predicted centre, paired one to one by
    increasing distance; inf for a true box left without a prediction."""
    out = [math.inf] * len(truth)
    if not truth or not dets:
        return out
    t = np.array([((b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2) for b in truth])
    p = np.array([d.center() for d in dets])
    dist = np.hypot(t[:, None, 0] - p[None, :, 0], t[:, None, 1] - p[None, :, 1])
    used_t, used_p = set(), set()
    for flat in np.argsort(dist, axis=None):
        i, j = divmod(int(flat), len(dets))
        if i in used_t or j in used_p:
            continue
        out[i] = float(dist[i, j])
        used_t.add(i)
        used_p.add(j)
    return out


def evaluate_predictions(
    truth: BoxDataset,
    preds: dict[Path, list[Det]],
    report_conf: float = 0.25,
    radius_px: float = DEFAULT_RADIUS_PX,
) -> EvalResult:
    """Score ``preds`` (all candidates, e.g. at confidence 0.001) against ``truth``: AP over every
    confidence, the rest at ``report_conf`` (see the module docstring)."""
    res = EvalResult(n_images=len(truth), conf=report_conf, radius_px=radius_px)
    all_scores: list[np.ndarray] = []
    all_tp50: list[np.ndarray] = []
    n_true_all = 0
    for ci, name in enumerate(truth.names):
        scores: list[float] = []
        tps: list[np.ndarray] = []
        errors: list[float] = []
        best_iou: list[float] = []
        cr = ClassResult(name=name)
        for img, boxes in truth.items.items():
            tb = [b for b in boxes if b.class_id == ci]
            pb = sorted((d for d in preds.get(img, []) if d.class_id == ci), key=lambda d: -d.confidence)
            txy = np.array([(b.x1, b.y1, b.x2, b.y2) for b in tb], float).reshape(-1, 4)
            pxy = np.array([(d.x1, d.y1, d.x2, d.y2) for d in pb], float).reshape(-1, 4)
            correct = match_detections(pxy, txy)
            cr.n_true += len(tb)
            scores += [d.confidence for d in pb]
            tps.append(correct)
            at = [d for d in pb if d.confidence >= report_conf]
            cr.n_pred += len(at)
            cr.tp += int(correct[: len(at), 0].sum())  # pb is sorted: the first len(at) are at threshold
            cr.n_missed += len(tb) if not pb else 0
            iou_at = iou_matrix(txy, pxy[: len(at)])
            best_iou += (iou_at.max(1) if iou_at.shape[1] else np.zeros(len(tb))).tolist()
            errs = centre_errors(tb, at)
            errors += errs
            key = str(img)
            if tb:
                res.frame_errors[key] = max(res.frame_errors.get(key, 0.0), *errs)
            else:
                cr.n_empty += 1
                cr.fp_empty += bool(at)
            res.frame_fp[key] = res.frame_fp.get(key, 0) + len(at) - int(correct[: len(at), 0].sum())
        tp = np.concatenate(tps) if tps else np.zeros((0, len(IOU_THRESHOLDS)), bool)
        s = np.asarray(scores, float)
        aps = np.asarray(average_precision(s, tp, cr.n_true))
        cr.ap50, cr.ap50_95 = float(aps[0]), float(np.mean(aps))
        cr.precision = cr.tp / cr.n_pred if cr.n_pred else 0.0
        cr.recall = cr.tp / cr.n_true if cr.n_true else 0.0
        cr.mean_iou = float(np.mean(best_iou)) if best_iou else 0.0
        if errors:
            e = np.asarray(errors)
            cr.median_px = float(np.percentile(e, 50, method="higher" if np.isinf(e).any() else "linear"))
            cr.p90_px = float(np.percentile(e, 90, method="higher" if np.isinf(e).any() else "linear"))
            cr.hits = int((e <= radius_px).sum())
        res.classes.append(cr)
        res.per_image_iou += best_iou
        all_scores.append(s)
        all_tp50.append(tp[:, 0])
        n_true_all += cr.n_true
    with_truth = [c for c in res.classes if c.n_true > 0]
    res.map50 = float(np.mean([c.ap50 for c in with_truth])) if with_truth else 0.0
    res.map50_95 = float(np.mean([c.ap50_95 for c in with_truth])) if with_truth else 0.0
    res.mean_iou = float(np.mean(res.per_image_iou)) if res.per_image_iou else 0.0
    if all_scores:
        res.picked_conf = pick_threshold(np.concatenate(all_scores), np.concatenate(all_tp50), n_true_all)
    return res


def read_image(path: Path) -> np.ndarray:
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if im is None:
        raise DatasetError(f"image {path} is missing or not an image")
    return np.asarray(im)


def predict_dataset(runner: Runner, ds: BoxDataset, batch: int = 8) -> dict[Path, list[Det]]:
    keys = sorted(ds.items)
    out: dict[Path, list[Det]] = {}
    for i in range(0, len(keys), batch):
        chunk = keys[i : i + batch]
        for k, dets in zip(chunk, runner.infer([read_image(k) for k in chunk])):
            out[k] = dets
    return out


def candidates_runner(runner: Runner) -> Runner:
    """Set a YOLO runner to return every candidate an AP needs (confidence 0.001, up to 300 boxes)."""
    if hasattr(runner, "confidence"):
        runner.confidence = EVAL_CONFIDENCE
    if hasattr(runner, "max_det"):
        runner.max_det = EVAL_MAX_DET
    return runner


def evaluate(
    runner: Runner, ds: BoxDataset, report_conf: float = 0.25, radius_px: float = DEFAULT_RADIUS_PX
) -> EvalResult:
    """Run ``runner`` over ``ds`` with every candidate kept (:func:`candidates_runner`) and score it."""
    return evaluate_predictions(ds, predict_dataset(candidates_runner(runner), ds), report_conf, radius_px)


def picture_sheet(tiles: Sequence[tuple[np.ndarray, str]], out_png: str | Path, tile: int = 240) -> Path:
    """(frame, caption) pairs -> one PNG: each frame scaled into a ``tile``-px tile under its caption,
    four to a row."""
    cells = []
    for im, caption in tiles:
        s = tile / max(im.shape[:2])
        im = cv2.resize(im, (round(im.shape[1] * s), round(im.shape[0] * s)), interpolation=cv2.INTER_AREA)
        t = np.zeros((tile + 18, tile, 3), np.uint8)
        t[18 : 18 + im.shape[0], : im.shape[1]] = im
        cv2.putText(t, caption, (2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        cells.append(t)
    cols = 4
    while len(cells) % cols:
        cells.append(np.zeros_like(cells[0]) if cells else np.zeros((tile + 18, tile, 3), np.uint8))
    rows = [np.hstack(cells[i : i + cols]) for i in range(0, len(cells), cols)]
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.vstack(rows) if rows else np.zeros((10, 10, 3), np.uint8))
    return out


def worst_sheet(
    truth: BoxDataset, preds: dict[Path, list[Det]], res: EvalResult, out_png: str | Path, n: int = 12,
    tile: int = 240,
) -> Path:  # fmt: skip
    """A picture sheet of the ``n`` worst frames (largest centre error, misses first, then frames with
    false positives), each whole frame scaled into a ``tile``-px tile: labels green, detections at the
    operating threshold red with their confidence."""

    def badness(k: Path) -> tuple[float, int]:
        e = res.frame_errors.get(str(k), 0.0)
        return (e if math.isfinite(e) else 1e9, res.frame_fp.get(str(k), 0))

    tiles = []
    for k in sorted(truth.items, key=badness, reverse=True)[:n]:
        im = read_image(k)
        dets = [d for d in preds.get(k, []) if d.confidence >= res.conf]
        for b in truth.items[k]:
            cv2.rectangle(im, (int(b.x1), int(b.y1)), (int(b.x2), int(b.y2)), (0, 200, 0), 2)
        for d in dets:
            cv2.rectangle(im, (int(d.x1), int(d.y1)), (int(d.x2), int(d.y2)), (0, 0, 255), 2)
            cv2.putText(im, f"{d.confidence:.2f}", (int(d.x1), max(int(d.y1) - 3, 10)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1)  # fmt: skip
        e = res.frame_errors.get(str(k))
        what = "no object" if e is None else ("missed" if not math.isfinite(e) else f"{e:.1f} px")
        tiles.append((im, f"{k.name[:22]} {what}"))
    return picture_sheet(tiles, out_png, tile)


def worst_frames(ev: PointEvaluation, n: int) -> list[FramePoints]:
    """The ``n`` worst frames: a labeled part missed first, then by largest error, then by the number of
    points reported for parts that are not labeled there."""

    def badness(f: FramePoints) -> tuple[float, int]:
        w = f.worst_px()
        fp = sum(e is None and p is not None for e, p in zip(f.error_px, f.points))
        return (1e9 if w is not None and not math.isfinite(w) else (w or 0.0), fp)

    return sorted(ev.frames, key=badness, reverse=True)[:n]


def point_worst_sheet(
    ev: PointEvaluation, truth: PointDataset, out_png: str | Path, n: int = 12, tile: int = 240
) -> Path:
    """The keypoint model's ``n`` worst frames (largest error, misses first, then frames with a point
    reported for a part that is not labeled): labels green dots, reported points red dots with the
    keypoint's index and a line to their label. Each tile is the part of the frame around its worst
    keypoint (label and report) at the frame's own scale where they fit in ``tile`` px, so an error of a
    few pixels stays visible on a large frame."""
    names = [r.name for r in ev.parts]
    tiles = []
    for f in worst_frames(ev, n):
        k = Path(f.image)
        im = read_image(k)
        labeled = [(e, i) for i, e in enumerate(f.error_px) if e is not None]
        j = max(labeled)[1] if labeled else None
        focus = [truth.items[k][j]] if j is not None else []
        focus += [p for i, p in enumerate(f.points) if p is not None and (j is None or i == j)]
        x0, y0, side = _window(im.shape[:2], np.array([p for p in focus if np.isfinite(p).all()]), tile)
        r = max(2, round(side / 120))  # dots stay visible where the window is shrunk into the tile
        for j, (lab, p) in enumerate(zip(truth.items[k], f.points)):
            if np.isfinite(lab).all():
                cv2.circle(im, (round(lab[0]), round(lab[1])), r, (0, 200, 0), -1)
            if p is not None:
                if np.isfinite(lab).all():
                    cv2.line(im, (round(lab[0]), round(lab[1])), (round(p[0]), round(p[1])), (0, 0, 255), 1)
                cv2.circle(im, (round(p[0]), round(p[1])), r, (0, 0, 255), -1)
                cv2.putText(im, str(j), (round(p[0]) + r, round(p[1]) - r), cv2.FONT_HERSHEY_SIMPLEX,
                            0.4 * r / 2, (0, 0, 255), 1)  # fmt: skip
        worst = [(e, nm) for e, nm in zip(f.error_px, names) if e is not None]
        if not worst:
            what = "no part labeled"
        else:
            e, nm = max(worst)
            what = f"{nm} missed" if not math.isfinite(e) else f"{nm} {e:.1f} px"
        tiles.append((im[y0 : y0 + side, x0 : x0 + side], f"{k.name[:18]} {what}"))
    return picture_sheet(tiles, out_png, tile)


def _window(hw: tuple[int, ...], pts: np.ndarray, tile: int, margin: int = 24) -> tuple[int, int, int]:
    """(x0, y0, side) of a square window of a (H, W) frame holding ``pts`` (with ``margin``): ``tile``
    px where they fit (the frame's own scale in the sheet), larger where not, the whole frame's short
    side at most; centred on them, inside the frame. No points: the frame from its top left."""
    h, w = int(hw[0]), int(hw[1])
    if not len(pts):
        return 0, 0, max(h, w)
    lo, hi = pts.min(0) - margin, pts.max(0) + margin
    side = int(min(max(tile, *(hi - lo)), h, w))
    cx, cy = (lo + hi) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    return x0, y0, side


def write_point_report(ev: PointEvaluation, truth: PointDataset, out_dir: str | Path) -> Path:
    """``report.json`` (:meth:`PointEvaluation.to_json`: per keypoint and per frame) and ``worst.png``
    (:func:`point_worst_sheet`) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(ev.to_json(), indent=1) + "\n")
    point_worst_sheet(ev, truth, out / "worst.png")
    return out / "report.json"


def mm_per_px(
    calib_path: str | Path, camera: str | None, distance_mm: float | None, frame_width: int
) -> tuple[float, str]:
    """The scale that turns a pixel error into mm for frames of ``camera`` in the calibration at
    ``calib_path`` (this project's calibration YAML/JSON, anipose TOML, OpenCV stereo YAML or Bouguet
    .mat): ``distance_mm / f``, with ``f`` the camera's focal length in px (the mean of fx and fy, scaled
    by ``frame_width`` / the calibrated width when the frames were resized). Without ``distance_mm`` the
    working distance is the depth, in that camera, of the point nearest to every camera's optical axis (where
    the cameras are aimed). Assumes the point lies at that distance, near the image centre (pinhole, lens
    distortion and depth differences ignored): a point at depth Z has its error scaled by Z /
    distance. Returns the scale and one line saying what was computed. Raises DetectionError."""
    from analysis.errors import AnalysisError
    from analysis.triangulate import load_calibration_any

    try:
        calib = load_calibration_any([calib_path])
    except AnalysisError as e:
        raise DetectionError(str(e)) from None
    names = list(calib.cameras)
    if camera is None:
        if len(names) != 1:
            raise DetectionError(
                f"{calib_path}: has cameras {', '.join(names)}: say which one took the frames (--camera)"
            )
        camera = names[0]
    if camera not in calib.cameras:
        raise DetectionError(f"{calib_path}: no camera named {camera!r} (it has {', '.join(names)})")
    cam = calib.cameras[camera]
    f = cam.focal_px * frame_width / cam.size[0]
    how = "given (--distance-mm)"
    if distance_mm is None:
        if len(names) < 2:
            raise DetectionError(
                f"{calib_path}: one camera: the working distance cannot be found; give --distance-mm"
            )
        a = np.zeros((3, 3))
        b = np.zeros(3)
        for c in calib.cameras.values():
            d = c.rotation.T @ np.array([0.0, 0.0, 1.0])  # optical axis in world coordinates
            m = np.eye(3) - np.outer(d, d)
            a += m
            b += m @ c.center
        if abs(np.linalg.det(a)) < 1e-9:
            raise DetectionError(f"{calib_path}: the cameras' optical axes are parallel; give --distance-mm")
        distance_mm = float(cam.to_camera(np.linalg.solve(a, b))[0, 2])
        if distance_mm <= 0:
            raise DetectionError(
                f"{calib_path}: the cameras' axes meet behind camera {camera!r}; give --distance-mm"
            )
        how = "where the cameras' optical axes pass closest (--distance-mm to set it)"
    scale = distance_mm / f
    resized = (
        f", {cam.focal_px:.1f} px at the calibrated width {cam.size[0]}" if frame_width != cam.size[0] else ""
    )
    note = (
        f"{scale:.4f} mm/px = working distance {distance_mm:.1f} mm ({how}) / focal length {f:.1f} px "
        f"(camera {camera!r} of {calib_path}{resized}); a point nearer or farther than that distance, or "
        "far off the image centre, has a different scale"
    )
    return scale, note


def write_report(
    res: EvalResult,
    out_dir: str | Path,
    title: str = "evaluation",
    truth: BoxDataset | None = None,
    preds: dict[Path, list[Det]] | None = None,
) -> Path:
    """``report.json`` + ``report.png`` (per-class precision/recall/AP50 bars, IoU histogram); with the
    truth and predictions also ``worst.png`` (:func:`worst_sheet`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(res.to_json(), indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    names = [c.name for c in res.classes]
    x = np.arange(len(names))
    for k, (key, lab) in enumerate((("precision", "precision"), ("recall", "recall"), ("ap50", "AP50"))):
        ax[0].bar(x + (k - 1) * 0.27, [getattr(c, key) for c in res.classes], 0.27, label=lab)
    ax[0].set_xticks(x, names, rotation=30)
    ax[0].set_ylim(0, 1)
    ax[0].legend()
    ax[0].set_title(f"{title}: mAP50 {res.map50:.3f} (P/R at conf {res.conf:.2f})")
    ax[1].hist(res.per_image_iou, bins=20, range=(0, 1))
    ax[1].set_xlabel("best IoU per labeled box")
    ax[1].set_title(f"mean IoU {res.mean_iou:.3f}")
    fig.tight_layout()
    fig.savefig(out / "report.png", dpi=80)
    plt.close(fig)
    if truth is not None and preds is not None:
        worst_sheet(truth, preds, res, out / "worst.png")
    return out / "report.json"


__all__ = [
    "Box",
    "EvalResult",
    "box_iou",
    "compute_ap",
    "evaluate",
    "evaluate_predictions",
    "match_detections",
    "mm_per_px",
    "pick_threshold",
    "point_worst_sheet",
    "worst_sheet",
    "write_point_report",
    "write_report",
]
