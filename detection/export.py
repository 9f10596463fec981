"""Export a trained Ultralytics checkpoint to ONNX (dynamic H/W) and check parity with PyTorch on real
frames; optionally build the TensorRT engine. Parity: every PyTorch box has an ONNX box of the same
class with IoU >= ``PARITY_IOU`` and confidence within ``PARITY_CONF`` (and the counts agree)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detection.base import DetectionError
from detection.evaluate import box_iou

log = logging.getLogger(__name__)
PARITY_IOU = 0.98
PARITY_CONF = 0.02


@dataclass
class Parity:
    frames: int
    boxes: int
    min_iou: float
    max_conf_diff: float
    count_mismatches: int

    @property
    def ok(self) -> bool:
        return self.count_mismatches == 0 and self.min_iou >= PARITY_IOU and self.max_conf_diff <= PARITY_CONF


def export_onnx(checkpoint: str | Path, out: str | Path, imgsz: int = 320) -> Path:
    from detection.ultra import configure_offline

    configure_offline()
    from ultralytics import YOLO

    ck = Path(checkpoint)
    if not ck.is_file():
        raise DetectionError(f"checkpoint {ck} does not exist")
    try:
        path = Path(YOLO(str(ck)).export(format="onnx", imgsz=imgsz, dynamic=True, simplify=False))
    except Exception as e:
        raise DetectionError(f"cannot export {ck} to ONNX: {e}") from e
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if path.resolve() != out.resolve():
        shutil.copyfile(path, out)
    return out


def check_parity(checkpoint: str | Path, onnx_path: str | Path, frames: Sequence[np.ndarray],
                 input_size: int | None = 320, confidence: float = 0.25) -> Parity:  # fmt: skip
    """Boxes of the PyTorch checkpoint vs the ONNX file on ``frames`` (same pre/post-processing)."""
    from detection.runners import OnnxRuntimeRunner, UltralyticsRunner

    pt = UltralyticsRunner(checkpoint, confidence=confidence, input_size=input_size)
    ox = OnnxRuntimeRunner(onnx_path, confidence=confidence, input_size=input_size,
                           providers=["CPUExecutionProvider"])  # fmt: skip
    min_iou, max_dc, mism, nb = 1.0, 0.0, 0, 0
    for f in frames:
        a, b = pt.infer([f])[0], ox.infer([f])[0]
        if len(a) != len(b):
            mism += 1
        for d in a:
            nb += 1
            same = [e for e in b if e.class_id == d.class_id]
            if not same:
                min_iou = 0.0
                continue
            ious = [box_iou((d.x1, d.y1, d.x2, d.y2), (e.x1, e.y1, e.x2, e.y2)) for e in same]
            j = int(np.argmax(ious))
            min_iou = min(min_iou, ious[j])
            max_dc = max(max_dc, abs(d.confidence - same[j].confidence))
    return Parity(len(frames), nb, min_iou, max_dc, mism)
