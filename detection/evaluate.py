"""Evaluation of a detector on a labeled box dataset: IoU, precision/recall, AP50 per class, mAP50,
and a report (JSON + plots)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from detection.base import Det, Runner
from detection.datasets import Box, BoxDataset, DatasetError

log = logging.getLogger(__name__)
IOU_MATCH = 0.5


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def average_precision(scores: np.ndarray, tp: np.ndarray, n_true: int) -> float:
    """All-point interpolated AP (VOC 2010+) from per-detection scores and true-positive flags."""
    if n_true == 0:
        return float("nan")
    if scores.size == 0:
        return 0.0
    order = np.argsort(-scores)
    tpc = np.cumsum(tp[order])
    fpc = np.cumsum(~tp[order])
    recall = tpc / n_true
    precision = tpc / np.maximum(tpc + fpc, 1e-9)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


@dataclass
class ClassResult:
    name: str
    n_true: int = 0
    n_pred: int = 0
    tp: int = 0
    precision: float = 0.0
    recall: float = 0.0
    ap50: float = 0.0
    mean_iou: float = 0.0  # over matched pairs


@dataclass
class EvalResult:
    classes: list[ClassResult] = field(default_factory=list)
    map50: float = 0.0
    mean_iou: float = 0.0  # best-matching IoU per true box (0 when missed), all classes
    n_images: int = 0
    per_image_iou: list[float] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def evaluate_predictions(
    truth: BoxDataset, preds: dict[Path, list[Det]], report_conf: float = 0.25
) -> EvalResult:
    """Match predictions to truth per class (greedy by confidence, IoU >= 0.5). Precision/recall at
    ``report_conf``; AP50 over all confidences given."""
    res = EvalResult(n_images=len(truth))
    all_best: list[float] = []
    for ci, name in enumerate(truth.names):
        scores: list[float] = []
        tps: list[bool] = []
        ious: list[float] = []
        n_true = 0
        for img, boxes in truth.items.items():
            tb = [b for b in boxes if b.class_id == ci]
            pb = sorted((d for d in preds.get(img, []) if d.class_id == ci), key=lambda d: -d.confidence)
            n_true += len(tb)
            used = [False] * len(tb)
            best_per_true = [0.0] * len(tb)
            for d in pb:
                db = (d.x1, d.y1, d.x2, d.y2)
                ov = [box_iou(db, (b.x1, b.y1, b.x2, b.y2)) for b in tb]
                for k, v in enumerate(ov):
                    best_per_true[k] = (
                        max(best_per_true[k], v) if d.confidence >= report_conf else best_per_true[k]
                    )
                j = int(np.argmax(ov)) if ov else -1
                ok = j >= 0 and ov[j] >= IOU_MATCH and not used[j]
                if ok:
                    used[j] = True
                    ious.append(ov[j])
                scores.append(d.confidence)
                tps.append(ok)
            all_best.extend(best_per_true)
        s, t = np.array(scores), np.array(tps, bool)
        sel = s >= report_conf
        cr = ClassResult(name=name, n_true=n_true, n_pred=int(sel.sum()), tp=int(t[sel].sum()))
        cr.precision = cr.tp / cr.n_pred if cr.n_pred else 0.0
        cr.recall = cr.tp / n_true if n_true else 0.0
        cr.ap50 = average_precision(s, t, n_true)
        cr.mean_iou = float(np.mean(ious)) if ious else 0.0
        res.classes.append(cr)
    aps = [c.ap50 for c in res.classes if c.n_true > 0]
    res.map50 = float(np.mean(aps)) if aps else 0.0
    res.mean_iou = float(np.mean(all_best)) if all_best else 0.0
    res.per_image_iou = all_best
    return res


def predict_dataset(runner: Runner, ds: BoxDataset, batch: int = 8) -> dict[Path, list[Det]]:
    keys = sorted(ds.items)
    out: dict[Path, list[Det]] = {}
    for i in range(0, len(keys), batch):
        chunk = keys[i : i + batch]
        imgs = []
        for k in chunk:
            im = cv2.imread(str(k), cv2.IMREAD_COLOR)
            if im is None:
                raise DatasetError(f"image {k} is missing or not an image")
            imgs.append(im)
        for k, dets in zip(chunk, runner.infer(imgs)):
            out[k] = dets
    return out


def evaluate(runner: Runner, ds: BoxDataset, report_conf: float = 0.25) -> EvalResult:
    """Run ``runner`` (built with a low confidence threshold, e.g. 0.01, for a meaningful AP) over ``ds``."""
    return evaluate_predictions(ds, predict_dataset(runner, ds), report_conf)


def write_report(res: EvalResult, out_dir: str | Path, title: str = "evaluation") -> Path:
    """``report.json`` + ``report.png`` (per-class precision/recall/AP50 bars, IoU histogram)."""
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
    ax[0].set_title(f"{title}: mAP50 {res.map50:.3f}")
    ax[1].hist(res.per_image_iou, bins=20, range=(0, 1))
    ax[1].set_xlabel("best IoU per labeled box")
    ax[1].set_title(f"mean IoU {res.mean_iou:.3f}")
    fig.tight_layout()
    fig.savefig(out / "report.png", dpi=80)
    plt.close(fig)
    return out / "report.json"


__all__ = ["Box", "EvalResult", "box_iou", "evaluate", "evaluate_predictions", "write_report"]
