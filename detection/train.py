"""Training with Ultralytics YOLO, offline on CPU or GPU: transfer learning from a checkpoint the user
supplies (by path) or random init from a model yaml, and the seed's comparison of the two (loss and
validation mAP50 curves in one plot)."""

from __future__ import annotations

import csv
import logging
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
    **overrides: Any,
) -> TrainResult:
    """``model``: a ``.pt`` checkpoint (transfer learning) or a ``.yaml`` model file (random init),
    e.g. ``yolo11n.yaml``. ``overrides`` go to Ultralytics' ``train`` (lr0, optimizer, mosaic...).
    Returns the best weights and the per-epoch results CSV."""
    from detection.datasets import check_data_yaml
    from detection.ultra import configure_offline

    check_data_yaml(data_yaml)  # a broken data set stops here, in one line, before Ultralytics starts
    configure_offline()
    import torch
    from ultralytics import YOLO

    if threads:
        torch.set_num_threads(threads)
    m = str(model)
    if m.endswith(".pt") and not Path(m).is_file():
        raise DetectionError(f"checkpoint {m} does not exist (transfer learning needs a local file)")
    try:
        yolo = YOLO(m)
    except Exception as e:
        raise DetectionError(f"model {m} is not a loadable Ultralytics model or yaml: {e}") from e
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
