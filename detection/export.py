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

from detection.base import Det, DetectionError
from detection.evaluate import box_iou

log = logging.getLogger(__name__)
PARITY_IOU = 0.98
PARITY_CONF = 0.02


PARITY_THRESHOLDS = (0.25, 0.1, 0.05, 0.01)  # tried in turn (after the stored one) until boxes are found


@dataclass
class Parity:
    frames: int
    boxes: int  # PyTorch boxes compared (0: nothing was compared, and that is a failure)
    min_iou: float
    max_conf_diff: float
    count_mismatches: int  # frames where a box clearly above the threshold has no counterpart
    confidence: float = 0.25  # the threshold the boxes were compared at

    @property
    def ok(self) -> bool:
        return (
            self.boxes > 0
            and self.count_mismatches == 0
            and self.min_iou >= PARITY_IOU
            and self.max_conf_diff <= PARITY_CONF
        )


def export_onnx(checkpoint: str | Path, out: str | Path, imgsz: int = 320) -> Path:
    """ONNX with dynamic H/W; the confidence threshold stored with the checkpoint (its sidecar JSON) is
    written into the ONNX metadata and a copy of the sidecar goes beside ``out``."""
    from detection.runners import THRESHOLD_KEY, sidecar_path, stored_threshold
    from detection.ultra import configure_offline

    configure_offline()
    from ultralytics import YOLO  # type: ignore[attr-defined]

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
    thr = stored_threshold(ck)
    if thr is not None:
        import onnx

        m = onnx.load(str(out))
        kept = [p for p in m.metadata_props if p.key != THRESHOLD_KEY]
        del m.metadata_props[:]
        m.metadata_props.extend(kept)
        m.metadata_props.add(key=THRESHOLD_KEY, value=f"{thr:.6g}")
        onnx.save(m, str(out))
        if sidecar_path(ck).resolve() != sidecar_path(out).resolve():
            shutil.copyfile(sidecar_path(ck), sidecar_path(out))
    return out


def check_parity(checkpoint: str | Path, onnx_path: str | Path, frames: Sequence[np.ndarray],
                 input_size: int | None = 320, confidence: float | None = None) -> Parity:  # fmt: skip
    """Boxes of the PyTorch checkpoint vs the ONNX file on ``frames`` (same pre/post-processing), at
    ``confidence`` (default: the model's stored threshold, else 0.25); when PyTorch finds no box there, at
    the first of :data:`PARITY_THRESHOLDS` below it that has boxes. A box within ``PARITY_CONF`` of the
    threshold may lack its counterpart (it may fall either side); any other unmatched box is a mismatch.
    ``boxes == 0`` in the result means nothing was compared (``ok`` is then false)."""
    from detection.runners import OnnxRuntimeRunner, UltralyticsRunner, resolve_confidence

    first = resolve_confidence(confidence, checkpoint)
    pt = UltralyticsRunner(checkpoint, confidence=0.001, input_size=input_size)
    ox = OnnxRuntimeRunner(onnx_path, confidence=0.001, input_size=input_size,
                           providers=["CPUExecutionProvider"])  # fmt: skip
    pairs = [(pt.infer([f])[0], ox.infer([f])[0]) for f in frames]
    tries = [first] + [t for t in PARITY_THRESHOLDS if t < first]
    conf = tries[-1]
    for t in tries:
        if any(d.confidence >= t for a, _ in pairs for d in a):
            conf = t
            break

    def partner(d: Det, others: list[Det]) -> tuple[Det | None, float]:
        best, best_iou = None, 0.0
        for e in others:
            if e.class_id == d.class_id and e.confidence >= conf - PARITY_CONF:
                v = box_iou((d.x1, d.y1, d.x2, d.y2), (e.x1, e.y1, e.x2, e.y2))
                if v > best_iou:
                    best, best_iou = e, v
        return best, best_iou

    min_iou, max_dc, mism, nb = 1.0, 0.0, 0, 0
    for a, b in pairs:
        bad = False
        for mine, theirs, count in ((a, b, True), (b, a, False)):
            for d in mine:
                if d.confidence < conf:
                    continue
                nb += count
                e, v = partner(d, theirs)
                if e is None or v < PARITY_IOU:
                    bad |= d.confidence >= conf + PARITY_CONF  # near the threshold it may fall either side
                    if e is not None:
                        min_iou = min(min_iou, v)
                    continue
                min_iou = min(min_iou, v)
                max_dc = max(max_dc, abs(d.confidence - e.confidence))
        mism += bad
    return Parity(len(frames), nb, min_iou, max_dc, mism, conf)
