"""ORACLE detector: a stand-in that reads the synthetic world's ground truth instead of pixels.

It projects the true paw position through the known synthetic calibration (exactly the box the
renderer drew) and adds Gaussian corner noise. It exists to test the pipeline before a learned model
exists and as an upper bound in benchmarks; it is never the default once a learned model is bundled,
and it only works with synthetic cameras (the config refuses it otherwise).
"""

from __future__ import annotations

import numpy as np

from analysis.camera import Calibration
from detection.base import Det
from rig import messages as m
from rig.sim.render import SceneRenderer


class OracleRunner:
    name = "oracle"

    def __init__(self, calib: Calibration, noise_px: float, seed: int = 0):
        self.renderers = {name: SceneRenderer(cam, seed=seed) for name, cam in calib.cameras.items()}
        self.noise_px = noise_px
        self.rng = np.random.default_rng(seed)

    def detect(self, camera: str, truth: m.Truth) -> list[Det]:
        box = self.renderers[camera].truth_box(np.array(truth.paw_xyz), truth.paw_radius_mm)
        if box is None:
            return []
        x1, y1, x2, y2 = np.array(box) + self.rng.normal(0, self.noise_px, 4)
        return [Det(float(x1), float(y1), float(x2), float(y2), 0.99, 0)]
