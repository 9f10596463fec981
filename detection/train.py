"""Training with Ultralytics YOLO, offline on CPU or GPU: transfer learning from a checkpoint the user
supplies (by path) or random init from a model yaml, and the seed's comparison of the two (loss and
validation mAP50 curves in one plot)."""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detection.base import DetectionError

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    weights: Path  # best.pt
    results_csv: Path
    label: str


def train(
    data_yaml: str | Path,
    model: str | Path,
    out_dir: str | Path,
    epochs: int = 50,
    imgsz: int = 320,
    batch: int = 16,
    seed: int = 0,
    device: str = "cpu",
    name: str = "train",
    workers: int = 0,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> TrainResult:
    """``model``: a ``.pt`` checkpoint (transfer learning) or a ``.yaml`` model file (random init),
    e.g. ``yolo11n.yaml``. ``overrides`` go to Ultralytics' ``train`` (lr0, optimizer, mosaic...).
    ``progress`` gets one line per epoch (losses, validation mAP50, elapsed time). Returns the best
    weights and the per-epoch results CSV."""
    from detection.datasets import check_data_yaml
    from detection.ultra import configure_offline

    check_data_yaml(data_yaml)  # a broken data set stops here, in one line, before Ultralytics starts
    configure_offline()
    import torch
    from ultralytics import YOLO  # type: ignore[attr-defined]

    if threads:
        torch.set_num_threads(threads)
    m = str(model)
    if m.endswith(".pt") and not Path(m).is_file():
        raise DetectionError(f"checkpoint {m} does not exist (transfer learning needs a local file)")
    try:
        yolo = YOLO(m)
    except Exception as e:
        raise DetectionError(f"model {m} is not a loadable Ultralytics model or yaml: {e}") from e
    if progress is not None:
        t0 = time.monotonic()

        def epoch_end(trainer: Any) -> None:
            if trainer.epoch >= trainer.epochs:  # the final validation of best.pt, after the last epoch
                return
            loss = trainer.tloss
            losses = trainer.label_loss_items(loss, prefix="train") if loss is not None else {}
            lo = "  ".join(f"{k.split('/')[-1]} {float(v):.3f}" for k, v in losses.items())
            m50 = (trainer.metrics or {}).get("metrics/mAP50(B)")
            val = f"  val mAP50 {float(m50):.3f}" if m50 is not None else ""
            took = time.monotonic() - t0
            progress(f"{name}: epoch {trainer.epoch + 1}/{trainer.epochs}  {lo}{val}  {took:.0f} s")

        yolo.add_callback("on_fit_epoch_end", epoch_end)
    out = Path(out_dir).resolve()
    yolo.train(
        data=str(data_yaml), epochs=epochs, imgsz=imgsz, batch=batch, seed=seed, deterministic=True,
        device=device, workers=workers, amp=False, plots=False, project=str(out), name=name, exist_ok=True,
        verbose=False, patience=1000, **overrides,
    )  # fmt: skip
    run = out / name
    return TrainResult(run / "weights" / "best.pt", run / "results.csv", name)


def read_curves(results_csv: str | Path) -> dict[str, list[float]]:
    with open(results_csv) as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, list[float]] = {}
    for r in rows:
        for k, v in r.items():
            cols.setdefault(k.strip(), []).append(float(v))
    return cols


def compare_plot(runs: list[TrainResult], out_png: str | Path) -> Path:
    """Train box loss and validation mAP50 per epoch for each run (e.g. transfer vs random init)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for r in runs:
        c = read_curves(r.results_csv)
        ax[0].plot(c["epoch"], c["train/box_loss"], label=r.label)
        ax[1].plot(c["epoch"], c["metrics/mAP50(B)"], label=r.label)
    ax[0].set_title("train box loss")
    ax[1].set_title("validation mAP50")
    for a in ax:
        a.set_xlabel("epoch")
        a.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return Path(out_png)


@dataclass
class ModelCard:
    """What ``detect train`` stores beside the weights (``best.json``) and prints at the end."""

    path: Path
    confidence: float
    val_lines: list[str]
    test_lines: list[str]
    report_dir: Path


def finish(
    weights: str | Path,
    data_yaml: str | Path,
    imgsz: int = 320,
    radius_px: float = 20.0,
    threads: int | None = 1,
    report_dir: str | Path | None = None,
) -> ModelCard:
    """Pick the confidence threshold on the validation split (best F1 at IoU 0.5), store it with the
    model (:func:`detection.runners.sidecar_path`, key ``confidence_threshold``), and evaluate the test
    split (when the data file has one; else the validation split) at that threshold: report folder with
    ``worst.png``. The rig's detector reads the stored threshold when its ``confidence`` is null."""
    from detection.datasets import data_yaml_split
    from detection.evaluate import EvalResult, evaluate_predictions, predict_dataset, write_report
    from detection.runners import DEFAULT_CONFIDENCE, THRESHOLD_KEY, UltralyticsRunner, sidecar_path

    weights = Path(weights)
    val = data_yaml_split(data_yaml, "val")
    if val is None:
        raise DetectionError(f"{data_yaml}: no 'val' split to pick the confidence threshold on")
    test = data_yaml_split(data_yaml, "test")
    train_split = data_yaml_split(data_yaml, "train")
    if train_split is not None and set(val.items) & set(train_split.items):
        log.warning(
            "%s: %d validation images are also training images: the threshold and the numbers below are "
            "optimistic (make the splits with 'detect convert --to yolo')",
            data_yaml, len(set(val.items) & set(train_split.items)),
        )  # fmt: skip
    if threads is None:  # torch's own choice, as training had
        import torch

        threads = torch.get_num_threads()
    runner = UltralyticsRunner(weights, confidence=0.001, input_size=imgsz, threads=threads)
    runner.max_det = 300
    pv = predict_dataset(runner, val)
    rv = evaluate_predictions(val, pv, DEFAULT_CONFIDENCE, radius_px)
    conf = rv.picked_conf
    if conf is None:
        log.warning("%s: no correct detection on the validation split; storing %.2f", weights,
                    DEFAULT_CONFIDENCE)  # fmt: skip
        conf = DEFAULT_CONFIDENCE
    rv = evaluate_predictions(val, pv, conf, radius_px)
    split, ds = ("test", test) if test is not None and len(test) else ("val", val)
    pt = pv if split == "val" else predict_dataset(runner, ds)
    rt: EvalResult = evaluate_predictions(ds, pt, conf, radius_px)
    rep = Path(report_dir) if report_dir else weights.parent.parent / f"report-{split}"
    write_report(rt, rep, title=f"{weights.name} on {split}", truth=ds, preds=pt)

    def brief(r: EvalResult) -> dict[str, Any]:
        return r.to_json() | {"per_image_iou": [], "frame_errors": {}, "frame_fp": {}}

    doc: dict[str, Any] = {
        THRESHOLD_KEY: conf,
        "threshold_picked_on": f"val ({len(val)} images, best F1 at IoU 0.5)",
        "imgsz": imgsz,
        "radius_px": radius_px,
        "val": brief(rv),
    }
    if split == "test":
        doc["test"] = brief(rt)
    card = sidecar_path(weights)
    card.write_text(json.dumps(doc, indent=1) + "\n")
    return ModelCard(card, conf, rv.summary_lines(), rt.summary_lines() if split == "test" else [], rep)
