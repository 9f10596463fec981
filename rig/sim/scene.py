"""Geometry of the simulated reaching rig and its built-in stereo calibration.

World frame (mm): origin at the pellet on the raised platform; +x to the mouse's right, +y from the
mouse toward the pellet (forward), +z up. The paw rests at :data:`PAW_REST`. Two roughly orthogonal
cameras like the seed's: ``front`` faces the mouse from beyond the pellet, ``side`` looks from the
mouse's right. Both have mild barrel distortion. A one-camera rig (``deepbehavior run --sim`` of a
one-camera config) gets the front view.
"""

from __future__ import annotations

import numpy as np

from analysis.camera import Calibration, CameraModel, look_at

PELLET = np.array([0.0, 0.0, 0.0])
PAW_REST = np.array([2.0, -22.0, -14.0])
PLATFORM_DROP_MM = 12.0  # the platform's travel when lowered
PAW_RADIUS_MM = 2.6
PELLET_RADIUS_MM = 1.1


def synthetic_calibration(
    width: int = 448,
    height: int = 460,
    names: tuple[str, ...] = ("front", "side"),
    sizes: dict[str, tuple[int, int]] | None = None,
) -> Calibration:
    """The known calibration of the simulated rig: ``names[0]`` is the front view, ``names[1]`` (if given)
    the side view; one or two cameras. Every camera is ``width`` x ``height`` unless ``sizes`` (name ->
    (width, height)) says otherwise; the focal length scales with the width (448 px: the seed's cameras),
    so a larger sensor sees the same scene at a higher resolution."""
    if not 1 <= len(names) <= 2:
        raise ValueError(f"the simulated rig has one or two cameras (front, side), not {len(names)}")
    target = np.array([0.0, -11.0, -7.0])  # middle of the reach workspace
    up = np.array([0.0, 0.0, 1.0])
    views = (
        (np.array([5.0, 88.0, 14.0]), 640.0, (-0.12, 0.05, 0.0005, -0.0003, 0.0)),
        (np.array([95.0, -13.0, 8.0]), 620.0, (-0.10, 0.03, -0.0004, 0.0002, 0.0)),
    )
    cams = {}
    for i, (name, (eye, f0, dist)) in enumerate(zip(names, views)):
        w, h = (sizes or {}).get(name, (width, height))
        f = f0 * w / 448
        rvec, tvec = look_at(eye, target, up)
        k = np.array([[f, 0, w / 2 + 3 - 6 * i], [0, f * 1.002, h / 2 - 4 + 5 * i], [0, 0, 1]])
        cams[name] = CameraModel(name, (w, h), k, np.array(dist), rvec, tvec)
    return Calibration(cameras=cams, reference=None, meta={"source": "builtin:synthetic"})
