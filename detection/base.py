"""The detector runner interface shared by every backend (ONNX Runtime, TensorRT, Ultralytics).

A runner is loaded once, warmed up, then called with a batch of frames; it returns, per frame, a
list of :class:`Det` boxes in that frame's pixel coordinates. Runners know nothing of the rig.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class DetectionError(ValueError):
    """Bad model file, bad input shape, or a runner that cannot load; names the file/item at fault."""


@dataclass(frozen=True)
class Det:
    """One box: corners in pixels (x right, y down), confidence in [0, 1], class index."""

    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float
    class_id: int = 0

    def center(self) -> tuple[float, float]:
        return 0.5 * (self.x1 + self.x2), 0.5 * (self.y1 + self.y2)


class Runner(abc.ABC):
    name = "runner"

    @abc.abstractmethod
    def infer(self, images: Sequence[np.ndarray]) -> list[list[Det]]:
        """Detect on a batch of (H, W) uint8 or (H, W, 3) frames; one list of boxes per frame."""

    def warmup(self, shape: tuple[int, int] = (460, 448), n: int = 3) -> None:
        img = np.zeros(shape, np.uint8)
        for _ in range(n):
            self.infer([img])

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model."""
