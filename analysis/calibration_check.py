"""Is a calibration physically plausible? Pure checks, run before a session and on import.

A calibration can parse and still be useless: an all-zero or NaN camera matrix, a principal point off
the image, two cameras at the same place (a copied entry), or a rig whose cameras do not see the task's
points. Triangulation then yields nothing, or nonsense, silently. These functions say what is wrong, in
one line each, naming the camera and the field; the callers decide what is fatal.

Distances are in the calibration's units (``Calibration.units``: mm unless it says otherwise); the
thresholds below are in mm and scaled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from analysis.camera import Calibration, CameraModel

# two cameras whose centres are closer than this are one camera (or a copy of it): a real rig's are cm apart
MIN_CAMERA_DISTANCE_MM = 5.0
# ... and with optical axes within this angle, they also look the same way (a copied pose)
SAME_DIRECTION_DEG = 5.0
MM_PER_UNIT = {"mm": 1.0, "cm": 10.0, "m": 1000.0}


def camera_problems(cam: CameraModel) -> list[str]:
    """Why ``cam`` cannot be a real camera, field by field: non-finite values, focal lengths that are not
    positive, a principal point outside the image, a last matrix row that is not (0, 0, 1)."""
    out = []
    for name in ("matrix", "dist", "rvec", "tvec"):
        value = np.asarray(getattr(cam, name), dtype=np.float64)
        if not np.isfinite(value).all():
            out.append(
                f"cameras.{cam.name}.{name}: not finite ({np.count_nonzero(~np.isfinite(value))} NaN/inf)"
            )
    if out:
        return out
    k = cam.matrix
    w, h = cam.size
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    if fx <= 0 or fy <= 0:
        out.append(f"cameras.{cam.name}.matrix: focal lengths fx={fx:g}, fy={fy:g} px must be positive")
    if not (0 <= cx <= w and 0 <= cy <= h):
        out.append(
            f"cameras.{cam.name}.matrix: principal point ({cx:g}, {cy:g}) px is outside the {w}x{h} image"
        )
    if not np.allclose(k[2], (0.0, 0.0, 1.0)):
        out.append(f"cameras.{cam.name}.matrix: last row {k[2].tolist()} must be [0, 0, 1]")
    if w <= 0 or h <= 0:
        out.append(f"cameras.{cam.name}.size: {w}x{h} is not an image size")
    return out


def _unit_mm(calib: Calibration) -> float:
    return MM_PER_UNIT.get(str(calib.units), 1.0)


def close_cameras(
    calib: Calibration,
    min_distance_mm: float = MIN_CAMERA_DISTANCE_MM,
    same_direction_deg: float | None = None,
) -> list[tuple[str, str, float, float]]:
    """Pairs of cameras whose centres are closer than ``min_distance_mm``: ``(a, b, distance in mm, angle
    between their optical axes in degrees)``. With ``same_direction_deg``, only pairs that also look the
    same way (a copied pose)."""
    unit = _unit_mm(calib)
    names = list(calib.cameras)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ca, cb = calib.cameras[a], calib.cameras[b]
            if camera_problems(ca) or camera_problems(cb):
                continue
            d = float(np.linalg.norm(ca.center - cb.center)) * unit
            za, zb = ca.rotation[2], cb.rotation[2]  # optical axes in world coordinates
            angle = float(np.degrees(np.arccos(np.clip(za @ zb, -1.0, 1.0))))
            if d < min_distance_mm and (same_direction_deg is None or angle < same_direction_deg):
                out.append((a, b, d, angle))
    return out


def outside_images(
    calib: Calibration, points: Mapping[str, Sequence[float]], cameras: Sequence[str] | None = None
) -> list[str]:
    """World points (name -> (x, y, z) in the calibration's units) that some camera cannot see: behind it,
    or projected outside its image. One line per (point, camera)."""
    out = []
    for cam_name in cameras if cameras is not None else list(calib.cameras):
        cam = calib[cam_name]
        if camera_problems(cam):
            continue
        w, h = cam.size
        for label, xyz in points.items():
            p = np.asarray(xyz, dtype=np.float64).reshape(1, 3)
            depth = float(cam.to_camera(p)[0, 2])
            if depth <= 0:
                out.append(f"{label} {tuple(float(v) for v in xyz)} is behind camera {cam_name!r}")
                continue
            u, v = cam.project(p)[0]
            if not (0 <= u < w and 0 <= v < h):
                out.append(
                    f"{label} {tuple(float(v) for v in xyz)} projects to ({u:.0f}, {v:.0f}) px, outside the "
                    f"{w}x{h} image of camera {cam_name!r}"
                )
    return out
