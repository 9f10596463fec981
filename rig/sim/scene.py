"""Geometry of the simulated reaching rig and its built-in stereo calibration.

World frame (mm): origin at the pellet on the raised platform; +x to the mouse's right, +y from the
mouse toward the pellet (forward), +z up. The paw rests at :data:`PAW_REST`. Two roughly orthogonal
cameras like the seed's: ``front`` faces the mouse from beyond the pellet, ``side`` looks from the
mouse's right. Both have mild barrel distortion.
"""

from __future__ import annotations

import numpy as np

from analysis.camera import Calibration, CameraModel, look_at

PELLET = np.array([0.0, 0.0, 0.0])
PAW_REST = np.array([2.0, -22.0, -14.0])
PLATFORM_DROP_MM = 12.0  # the platform's travel when lowered
PAW_RADIUS_MM = 2.6
PELLET_RADIUS_MM = 1.1


def synthetic_calibration(width: int = 448, height: int = 460, names: tuple[str, str] = ("front", "side")):
    """The known calibration of the simulated stereo rig (``front`` is the reference frame's partner)."""
    target = np.array([0.0, -11.0, -7.0])  # middle of the reach workspace
    up = np.array([0.0, 0.0, 1.0])
    specs = {
        names[0]: (np.array([5.0, 88.0, 14.0]), 640.0, (-0.12, 0.05, 0.0005, -0.0003, 0.0)),
        names[1]: (np.array([95.0, -13.0, 8.0]), 620.0, (-0.10, 0.03, -0.0004, 0.0002, 0.0)),
    }
    cams = {}
    for i, (name, (eye, f, dist)) in enumerate(specs.items()):
        rvec, tvec = look_at(eye, target, up)
        k = np.array([[f, 0, width / 2 + 3 - 6 * i], [0, f * 1.002, height / 2 - 4 + 5 * i], [0, 0, 1]])
        cams[name] = CameraModel(name, (width, height), k, np.array(dist), rvec, tvec)
    return Calibration(cameras=cams, reference=None, meta={"source": "builtin:synthetic"})
