"""Ultralytics set-up for fully offline CPU use (imported lazily; importing this module imports torch).

* ``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=0`` and a ``YOLO_CONFIG_DIR`` holding a font at
  ``Ultralytics/Arial.ttf`` (a copy of a system/matplotlib DejaVuSans), so ``train()`` never fetches one.
* torchvision's compiled ``nms`` op fails to load with CPU torch and a CUDA torchvision build; a pure-torch
  NMS is registered under ``torchvision::nms`` only when the compiled op is missing (a CUDA machine keeps
  the real one).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
)
_configured = False


def _font_source() -> Path | None:
    for cand in FONT_CANDIDATES:
        if Path(cand).is_file():
            return Path(cand)
    try:
        import matplotlib

        p = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return p if p.is_file() else None
    except ImportError:
        return None


def _nms_torch(boxes, scores, iou_threshold: float):  # type: ignore[no-untyped-def]
    """Greedy NMS in pure torch: (N, 4) x1y1x2y2 boxes, (N,) scores -> kept indices, best first."""
    import torch

    order = scores.argsort(descending=True)
    boxes = boxes[order]
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    n = boxes.shape[0]
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep = []
    if n:
        xx1 = torch.maximum(x1[:, None], x1[None, :])
        yy1 = torch.maximum(y1[:, None], y1[None, :])
        xx2 = torch.minimum(x2[:, None], x2[None, :])
        yy2 = torch.minimum(y2[:, None], y2[None, :])
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-9)
        over = (iou > iou_threshold).cpu()
        for i in range(n):
            if suppressed[i]:
                continue
            keep.append(i)
            suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.long)]


def _compiled_ops_load() -> bool:
    """Whether torchvision's compiled op library loads (checked without importing torchvision)."""
    import importlib.util

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    libs = sorted(Path(next(iter(spec.submodule_search_locations))).glob("_C*.so"))
    if not libs:
        return False
    try:
        torch.ops.load_library(str(libs[0]))  # type: ignore[no-untyped-call]
    except (OSError, RuntimeError):
        return False
    return hasattr(torch.ops.torchvision, "nms")


def _ensure_nms() -> None:
    """Register a pure-torch ``torchvision::nms`` (and a stub ``qnms``) only if the compiled ops are missing.

    Must run before torchvision is imported: its meta registrations need the ops to exist.
    """
    import sys

    import torch

    if "torchvision" in sys.modules or _compiled_ops_load():
        return
    lib = torch.library.Library("torchvision", "DEF")  # type: ignore[no-untyped-call]
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")  # type: ignore[no-untyped-call]
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")  # type: ignore[no-untyped-call]
    lib.impl("nms", _nms_torch, "CPU")  # type: ignore[no-untyped-call]
    globals()["_nms_lib"] = lib  # keep the registration alive
    import torchvision.extension

    torchvision.extension._has_ops = lambda: True  # ops.nms asserts this; our nms now exists
    log.info("torchvision's compiled ops are missing (CPU torch, CUDA torchvision): using a pure-torch NMS")


def configure_offline(config_dir: str | os.PathLike[str] | None = None) -> None:
    """Make Ultralytics work with no network; idempotent. Call before ``import ultralytics``."""
    global _configured
    if _configured:
        return
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    cdir = Path(
        config_dir or os.environ.get("YOLO_CONFIG_DIR") or Path.home() / ".config" / "deepbehavior-yolo"
    )
    os.environ["YOLO_CONFIG_DIR"] = str(cdir)
    font = cdir / "Ultralytics" / "Arial.ttf"
    if not font.is_file():
        src = _font_source()
        if src is not None:
            font.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, font)
        else:
            log.warning("no DejaVuSans font found: Ultralytics may try to download Arial.ttf")
    _ensure_nms()
    _configured = True
