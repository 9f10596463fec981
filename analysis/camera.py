"""Pinhole cameras with OpenCV lens distortion, and the project's calibration file format.

World units are millimetres. A camera maps world points to its frame with ``x_cam = R @ x_world + t``
(``rvec`` is the Rodrigues vector of ``R``). Distortion follows OpenCV's order
``(k1, k2, p1, p2, k3[, k4, k5, k6])``. Cameras are always named, never identified by position.

The calibration file (``*.calib.yaml``) is plain, diffable YAML; see ``analysis/CALIBRATION.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from analysis.errors import CalibrationFileError
from analysis.textfile import read_yaml

FORMAT = "deepbehavior-calibration"
FORMAT_VERSION = 1


def look_at(eye: np.ndarray, target: np.ndarray, up: Any = (0.0, 0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """World -> camera ``(rvec (3,), tvec (3,))`` for a camera at ``eye`` looking at ``target``; the image's
    x axis is ``z x up`` (so with ``up`` pointing up in the world, image y points down)."""
    eye, target = np.asarray(eye, np.float64), np.asarray(target, np.float64)
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, np.asarray(up, np.float64))
    x /= np.linalg.norm(x)
    r = np.stack([x, np.cross(z, x), z])  # rows: camera axes in world coordinates
    return cv2.Rodrigues(r)[0].reshape(3), -r @ eye


def camera_ring(
    n: int,
    distortion: Any = (-0.1, 0.02, 0, 0, 0),
    radius_mm: float = 300.0,
    size: tuple[int, int] = (640, 480),
) -> list[CameraModel]:
    """``n`` cameras (f = 900 px) evenly spaced on a ring of ``radius_mm`` around a target 300 mm down the
    world z axis, all looking at it, with ``distortion``: a known rig for tests and benchmarks."""
    k = np.array([[900.0, 0, size[0] / 2], [0, 900, size[1] / 2], [0, 0, 1]])
    target = np.array([0.0, 0.0, 300.0])
    cams = []
    for i in range(n):
        ang = 2 * np.pi * i / n
        eye = target + radius_mm * np.array([np.sin(ang), 0.3, -np.cos(ang)])
        rvec, tvec = look_at(eye, target, up=(0.0, -1.0, 0.0))
        cams.append(CameraModel(f"cam{i}", size, k, np.asarray(distortion, np.float64), rvec, tvec))
    return cams


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class CameraModel:
    """One calibrated camera.

    ``size`` is ``(width, height)`` in pixels; ``matrix`` the 3x3 intrinsic matrix; ``dist`` the
    distortion coefficients; ``rvec``/``tvec`` the world->camera pose (tvec in mm).
    """

    name: str
    size: tuple[int, int]
    matrix: np.ndarray
    dist: np.ndarray
    rvec: np.ndarray = field(default_factory=lambda: np.zeros(3))
    tvec: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        for attr, shape in (("matrix", (3, 3)), ("rvec", (3,)), ("tvec", (3,))):
            value = np.asarray(getattr(self, attr), dtype=np.float64).reshape(-1)
            if value.size != int(np.prod(shape)):
                raise CalibrationFileError(
                    f"camera {self.name!r}: {attr} must have shape {shape}, got {value.size} values"
                )
            object.__setattr__(self, attr, value.reshape(shape))
        dist = np.asarray(self.dist, dtype=np.float64).reshape(-1)
        if dist.size not in (0, 4, 5, 8, 12, 14):
            raise CalibrationFileError(
                f"camera {self.name!r}: dist must have 4, 5, 8, 12 or 14 coefficients, got {dist.size}"
            )
        object.__setattr__(self, "dist", dist)

    # rotation and extrinsic are computed once (the online triangulator asks for them at every frame) and
    # returned read-only: the model is immutable

    @cached_property
    def rotation(self) -> np.ndarray:
        """(3, 3) world->camera rotation."""
        return _read_only(cv2.Rodrigues(self.rvec)[0])

    @cached_property
    def extrinsic(self) -> np.ndarray:
        """(3, 4) ``[R | t]``: maps homogeneous world points to normalized camera coordinates."""
        return _read_only(np.hstack([self.rotation, self.tvec.reshape(3, 1)]))

    @property
    def projection(self) -> np.ndarray:
        """(3, 4) ``K [R | t]`` (ignores distortion)."""
        return self.matrix @ self.extrinsic

    @property
    def center(self) -> np.ndarray:
        """(3,) camera centre in world coordinates (mm)."""
        return -self.rotation.T @ self.tvec

    @property
    def focal_px(self) -> float:
        return float(0.5 * (self.matrix[0, 0] + self.matrix[1, 1]))

    def to_camera(self, points_n3: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> camera-frame points (N, 3)."""
        pts = np.asarray(points_n3, dtype=np.float64).reshape(-1, 3)
        return pts @ self.rotation.T + self.tvec

    def project(self, points_n3: np.ndarray) -> np.ndarray:
        """World points (N, 3) mm -> distorted pixel coordinates (N, 2)."""
        pts = np.asarray(points_n3, dtype=np.float64).reshape(-1, 3)
        if len(pts) == 0:
            return np.zeros((0, 2))
        out, _ = cv2.projectPoints(pts, self.rvec, self.tvec, self.matrix, self.dist)
        return out.reshape(-1, 2)

    def undistort(self, points_n2: np.ndarray) -> np.ndarray:
        """Distorted pixel coordinates (N, 2) -> normalized, undistorted image coordinates (N, 2)."""
        pts = np.asarray(points_n2, dtype=np.float64).reshape(-1, 1, 2)
        if len(pts) == 0:
            return np.zeros((0, 2))
        return cv2.undistortPoints(pts, self.matrix, self.dist).reshape(-1, 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": [int(self.size[0]), int(self.size[1])],
            "matrix": _rows(self.matrix),
            "dist": _rows(self.dist),
            "rvec": _rows(self.rvec),
            "tvec": _rows(self.tvec),
        }


def _rows(a: np.ndarray) -> Any:
    return np.round(np.asarray(a, dtype=float), 10).tolist()


@dataclass(frozen=True)
class Calibration:
    """A set of named cameras sharing one world frame (usually the reference camera's)."""

    cameras: dict[str, CameraModel]
    reference: str | None = None
    units: str = "mm"
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> CameraModel:
        try:
            return self.cameras[name]
        except KeyError:
            known = ", ".join(sorted(self.cameras)) or "none"
            source = self.meta.get("source", "calibration")
            raise CalibrationFileError(f"{source}: no camera named {name!r} (it has: {known})") from None

    def subset(self, names: list[str]) -> list[CameraModel]:
        return [self[n] for n in names]


def calibration_to_dict(calib: Calibration) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "units": calib.units,
        "reference": calib.reference,
        "meta": {k: v for k, v in calib.meta.items() if k != "source"},
        "cameras": {name: cam.to_dict() for name, cam in calib.cameras.items()},
    }


def save_calibration(calib: Calibration, path: str | Path) -> Path:
    """Write ``calib`` as YAML (atomically: a temp file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(calibration_to_dict(calib), sort_keys=False, default_flow_style=None))
    tmp.replace(path)
    return path


def calibration_from_dict(data: Mapping[str, Any], source: str = "calibration") -> Calibration:
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise CalibrationFileError(f"{source}: not a {FORMAT} file (missing 'format: {FORMAT}')")
    if data.get("version") != FORMAT_VERSION:
        raise CalibrationFileError(
            f"{source}: version {data.get('version')!r} not supported (expected {FORMAT_VERSION})"
        )
    cams_raw = data.get("cameras")
    if not isinstance(cams_raw, Mapping) or not cams_raw:
        raise CalibrationFileError(f"{source}: 'cameras' must be a non-empty mapping of named cameras")
    cams = {}
    for name, c in cams_raw.items():
        if not isinstance(c, Mapping):
            raise CalibrationFileError(f"{source}: cameras.{name} must be a mapping")
        missing = [k for k in ("size", "matrix", "dist") if k not in c]
        if missing:
            raise CalibrationFileError(f"{source}: cameras.{name} lacks {', '.join(missing)}")
        try:
            cams[str(name)] = CameraModel(
                name=str(name),
                size=(int(c["size"][0]), int(c["size"][1])),
                matrix=np.asarray(c["matrix"], dtype=float),
                dist=np.asarray(c["dist"], dtype=float),
                rvec=np.asarray(c.get("rvec", [0, 0, 0]), dtype=float),
                tvec=np.asarray(c.get("tvec", [0, 0, 0]), dtype=float),
            )
        except CalibrationFileError as exc:
            raise CalibrationFileError(f"{source}: {exc}") from None
        except (TypeError, ValueError, IndexError) as exc:
            raise CalibrationFileError(f"{source}: cameras.{name}: malformed value ({exc})") from None
    meta = dict(data.get("meta") or {})
    meta["source"] = source
    return Calibration(
        cameras=cams, reference=data.get("reference"), units=data.get("units", "mm"), meta=meta
    )


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; errors name the file and the field."""
    path = Path(path)
    data = read_yaml(path, "calibration file", CalibrationFileError)
    return calibration_from_dict(data, source=str(path))
