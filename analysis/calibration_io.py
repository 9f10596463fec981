"""Importers for calibrations written by other tools: anipose ``calibration.toml``, OpenCV stereo YAML/XML
(``cv2.FileStorage``: the ``stereo_calib`` sample's ``intrinsics.yml`` + ``extrinsics.yml``), and the Bouguet
Camera Calibration Toolbox's ``Calib_Results*.mat`` (the seed's MATLAB pipeline).

All return a :class:`analysis.camera.Calibration` with named cameras; errors name the file and the item.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from analysis.camera import Calibration, CameraModel
from analysis.errors import CalibrationFileError
from analysis.textfile import read_text


def import_anipose(path: str | Path) -> Calibration:
    """anipose/aniposelib ``calibration.toml``: sections ``[cam_N]`` with name, size, matrix, distortions,
    rotation (Rodrigues), translation (board units, usually mm)."""
    path = Path(path)
    text = read_text(path, "calibration file", CalibrationFileError)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CalibrationFileError(f"{path}: not valid TOML ({exc})") from None
    cams = {}
    for key, sec in data.items():
        if key == "metadata" or not isinstance(sec, dict):
            continue
        try:
            name = str(sec.get("name", key))
            cams[name] = CameraModel(
                name=name,
                size=(int(sec["size"][0]), int(sec["size"][1])),
                matrix=np.asarray(sec["matrix"], dtype=float),
                dist=_pad_dist(np.asarray(sec["distortions"], dtype=float)),
                rvec=np.asarray(sec["rotation"], dtype=float),
                tvec=np.asarray(sec["translation"], dtype=float),
            )
        except KeyError as exc:
            raise CalibrationFileError(f"{path}: [{key}] lacks {exc.args[0]!r}") from None
        except (TypeError, ValueError, IndexError, CalibrationFileError) as exc:
            raise CalibrationFileError(f"{path}: [{key}]: malformed value ({exc})") from None
    if not cams:
        raise CalibrationFileError(f"{path}: no [cam_N] sections")
    return Calibration(cams, reference=None, meta={"source": str(path), "imported_from": "anipose"})


def _pad_dist(d: np.ndarray) -> np.ndarray:
    d = d.reshape(-1)
    if d.size in (4, 5, 8, 12, 14):
        return d
    if d.size < 5:
        return np.concatenate([d, np.zeros(5 - d.size)])
    raise CalibrationFileError(f"distortion with {d.size} coefficients is not an OpenCV model")


_OPENCV_KEYS = {
    # name suffix -> (matrix key candidates, dist key candidates)
    "1": (("M1", "cameraMatrix1", "K1"), ("D1", "distCoeffs1", "dist1")),
    "2": (("M2", "cameraMatrix2", "K2"), ("D2", "distCoeffs2", "dist2")),
}


def _storage_problem(exc: BaseException) -> str:
    """OpenCV's parse error as ``line N: problem`` when it says where, else its own words (one line)."""
    cause = exc.__cause__ if isinstance(exc, SystemError) and exc.__cause__ is not None else exc
    m = re.search(r"\((\d+)\): ([^']+)'", str(getattr(cause, "msg", "")))
    if m:
        return f"line {m.group(1)}: {m.group(2).strip()}"
    return f"OpenCV's reader failed ({getattr(cause, 'err', None) or cause})"


def _read_storage(paths: Sequence[Path]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in paths:
        read_text(p, "calibration file", CalibrationFileError)  # not found, unreadable, not UTF-8
        try:
            fs = cv2.FileStorage(str(p), cv2.FILE_STORAGE_READ)
        except (cv2.error, SystemError) as exc:  # a truncated file: cv2.error, raised as SystemError
            raise CalibrationFileError(
                f"{p}: not a valid OpenCV YAML/XML file (truncated?): {_storage_problem(exc)}"
            ) from None
        if not fs.isOpened():
            raise CalibrationFileError(f"{p}: not an OpenCV YAML/XML file")
        try:
            root = fs.root()
            for key in root.keys():  # noqa: SIM118 (a cv2.FileNode, not a dict)
                node = fs.getNode(key)
                if node.isReal() or node.isInt():
                    out[key] = node.real()
                elif node.isString():
                    out[key] = node.string()
                else:
                    mat = node.mat()
                    if mat is not None:
                        out[key] = np.asarray(mat, dtype=float)
        except (cv2.error, SystemError) as exc:
            raise CalibrationFileError(
                f"{p}: not a valid OpenCV YAML/XML file (truncated?): {_storage_problem(exc)}"
            ) from None
        finally:
            fs.release()
    return out


def import_opencv(
    paths: str | Path | Sequence[str | Path],
    names: tuple[str, str] = ("left", "right"),
    size: tuple[int, int] | None = None,
) -> Calibration:
    """OpenCV stereo calibration (YAML or XML via ``cv2.FileStorage``), one file or several merged.

    Stereo keys ``M1 D1 M2 D2 R T`` (or ``cameraMatrix1``/``distCoeffs1``...): camera 1 becomes ``names[0]``
    at the origin, camera 2 ``names[1]`` with ``x2 = R x1 + T``. A single-camera file with
    ``camera_matrix``/``distortion_coefficients`` gives one camera ``names[0]``. Image size comes from
    ``image_width``/``image_height`` keys, else ``size``, else an error.
    """
    plist = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    data = _read_storage(plist)
    src = " + ".join(str(p) for p in plist)
    try:
        if "image_width" in data and "image_height" in data:
            size = (int(data["image_width"]), int(data["image_height"]))
        elif "imageSize" in data:
            size = (int(data["imageSize"].ravel()[0]), int(data["imageSize"].ravel()[1]))
    except (TypeError, ValueError, AttributeError, IndexError):
        raise CalibrationFileError(f"{src}: image size: not two whole numbers") from None
    if size is None:
        raise CalibrationFileError(f"{src}: no image_width/image_height; pass the image size")

    def get(keys: Sequence[str], what: str) -> np.ndarray:
        for k in keys:
            if k in data:
                try:
                    return np.asarray(data[k], dtype=float)
                except (TypeError, ValueError):
                    raise CalibrationFileError(
                        f"{src}: {k}: not a number or matrix (got {data[k]!r})"
                    ) from None
        raise CalibrationFileError(f"{src}: lacks {what} (looked for {', '.join(keys)})")

    if "camera_matrix" in data:
        k = get(("camera_matrix",), "camera_matrix")
        d = get(("distortion_coefficients", "dist_coeffs"), "distortion_coefficients")
        cam = CameraModel(names[0], size, k, _pad_dist(d))
        return Calibration(
            {names[0]: cam}, reference=names[0], meta={"source": src, "imported_from": "opencv"}
        )
    k1 = get(_OPENCV_KEYS["1"][0], "camera 1 matrix")
    d1 = get(_OPENCV_KEYS["1"][1], "camera 1 distortion")
    k2 = get(_OPENCV_KEYS["2"][0], "camera 2 matrix")
    d2 = get(_OPENCV_KEYS["2"][1], "camera 2 distortion")
    r = get(("R",), "R (rotation camera 1 -> 2)")
    t = get(("T",), "T (translation camera 1 -> 2)")
    if r.size == 3:
        r = cv2.Rodrigues(r.reshape(3))[0]
    try:
        cams = {
            names[0]: CameraModel(names[0], size, k1, _pad_dist(d1)),
            names[1]: CameraModel(names[1], size, k2, _pad_dist(d2), cv2.Rodrigues(r.reshape(3, 3))[0], t),
        }
    except (CalibrationFileError, ValueError) as exc:
        raise CalibrationFileError(f"{src}: {exc}") from None
    return Calibration(cams, reference=names[0], meta={"source": src, "imported_from": "opencv"})


def _mat_camera(m: dict[str, Any], suffix: str, name: str, src: str) -> CameraModel:
    def get(key: str) -> np.ndarray:
        if key + suffix not in m:
            raise CalibrationFileError(f"{src}: lacks variable {key + suffix!r}")
        return np.asarray(m[key + suffix], dtype=float).reshape(-1)

    fc, cc, kc = get("fc"), get("cc"), get("kc")
    alpha = float(get("alpha_c")[0]) if "alpha_c" + suffix in m else 0.0
    # Bouguet pixel coordinates: (0, 0) is the centre of the top-left pixel, same as OpenCV.
    k = np.array([[fc[0], alpha * fc[0], cc[0]], [0.0, fc[1], cc[1]], [0.0, 0.0, 1.0]])
    nx = int(np.asarray(m.get("nx", [[0]])).ravel()[0])
    ny = int(np.asarray(m.get("ny", [[0]])).ravel()[0])
    return CameraModel(name, (nx, ny), k, _pad_dist(kc))


def _loadmat(path: Path) -> dict[str, Any]:
    import scipy.io

    if not path.is_file():
        raise CalibrationFileError(f"{path}: file not found")
    try:
        return dict(scipy.io.loadmat(str(path)))
    except (ValueError, OSError, TypeError) as exc:
        raise CalibrationFileError(f"{path}: not a MATLAB .mat file ({exc})") from None


def import_bouguet(
    path: str | Path, right: str | Path | None = None, names: tuple[str, str] = ("left", "right")
) -> Calibration:
    """Bouguet toolbox results.

    * ``Calib_Results_stereo.mat`` (``fc_left``, ``om``, ``T``...): both cameras,
      right = ``R(om) x_left + T``.
    * one ``Calib_Results.mat``: one camera named ``names[0]``.
    * two per-camera files (``path`` = left, ``right``): intrinsics from each; the right camera's pose is
      the median over images active in both of ``Rc_r Rc_l^T`` / ``Tc_r - R Tc_l`` (same board poses).
    """
    path = Path(path)
    m = _loadmat(path)
    src = str(path)
    if "fc_left" in m:
        left = _mat_camera(m, "_left", names[0], src)
        rcam = _mat_camera(m, "_right", names[1], src)
        om = np.asarray(m.get("om"), dtype=float).reshape(-1)
        t = np.asarray(m.get("T"), dtype=float).reshape(-1)
        rcam = CameraModel(names[1], rcam.size, rcam.matrix, rcam.dist, om, t)
        return Calibration(
            {names[0]: left, names[1]: rcam}, names[0], meta={"source": src, "imported_from": "bouguet"}
        )
    left = _mat_camera(m, "", names[0], src)
    if right is None:
        return Calibration({names[0]: left}, names[0], meta={"source": src, "imported_from": "bouguet"})
    rpath = Path(right)
    mr = _loadmat(rpath)
    rcam = _mat_camera(mr, "", names[1], str(rpath))
    act_l = np.asarray(m.get("active_images", []), dtype=bool).reshape(-1)
    act_r = np.asarray(mr.get("active_images", []), dtype=bool).reshape(-1)
    rvecs, tvecs = [], []
    for i in range(1, min(len(act_l), len(act_r)) + 1):
        if not (act_l[i - 1] and act_r[i - 1]) or f"Rc_{i}" not in m or f"Rc_{i}" not in mr:
            continue
        rl, tl = np.asarray(m[f"Rc_{i}"], float), np.asarray(m[f"Tc_{i}"], float).reshape(3)
        rr, tr = np.asarray(mr[f"Rc_{i}"], float), np.asarray(mr[f"Tc_{i}"], float).reshape(3)
        rel = rr @ rl.T
        rvecs.append(cv2.Rodrigues(rel)[0].reshape(3))
        tvecs.append(tr - rel @ tl)
    if not rvecs:
        raise CalibrationFileError(f"{src} + {rpath}: no image active in both files to relate the cameras")
    rcam = CameraModel(
        names[1], rcam.size, rcam.matrix, rcam.dist, np.median(rvecs, axis=0), np.median(tvecs, axis=0)
    )
    return Calibration(
        {names[0]: left, names[1]: rcam},
        names[0],
        meta={"source": f"{src} + {rpath}", "imported_from": "bouguet", "pairs_used": len(rvecs)},
    )


def import_calibration(
    paths: Sequence[str | Path], fmt: str = "auto", names: tuple[str, str] = ("left", "right")
) -> Calibration:
    """Dispatch on ``fmt`` (``anipose``, ``opencv``, ``bouguet``) or on the file suffix."""
    if not paths:
        raise CalibrationFileError("no calibration file given")
    first = Path(paths[0])
    if fmt == "auto":
        fmt = {
            ".toml": "anipose",
            ".mat": "bouguet",
            ".yml": "opencv",
            ".yaml": "opencv",
            ".xml": "opencv",
        }.get(first.suffix.lower(), "")
        if not fmt:
            raise CalibrationFileError(f"{first}: cannot tell the format from the suffix; name it")
    if fmt == "anipose":
        return import_anipose(first)
    if fmt == "bouguet":
        return import_bouguet(first, paths[1] if len(paths) > 1 else None, names)
    if fmt == "opencv":
        return import_opencv(list(paths), names)
    raise CalibrationFileError(f"unknown calibration format {fmt!r} (anipose, opencv, bouguet)")
