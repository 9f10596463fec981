"""JABS pose files (``*_pose_est_v2.h5`` ... ``_v6.h5``, the Kumar Lab's mouse pose estimation) ->
:class:`analysis.io.pose.PoseTable`.

The layout read (HDF5 group ``poseest``; its attribute ``version`` holds the major version first):

* ``points``: v2 (frames, 12, 2); v3+ (frames, instances, 12, 2); pixel coordinates stored **(y, x)**,
* ``confidence``: v2 (frames, 12); v3+ (frames, instances, 12); 0 = the point was not found,
* v3: ``instance_count`` (frames,) valid instances per frame, ``instance_track_id`` (frames, instances),
* v4+: ``id_mask`` (frames, instances), 0 where the instance holds an identity, and
  ``instance_embed_id`` (frames, instances), that identity's number from 1 (0 = none); optional
  ``external_identity_mapping`` (names of the identities),
* attribute ``cm_per_pixel`` of ``poseest`` (optional),
* v5+: group ``static_objects`` (e.g. ``corners``, ``lixit``, ``food_hopper``), kept in ``meta`` as stored.

Twelve keypoints (:data:`JABS_KEYPOINTS`). Individuals: v2 one mouse (``mouse``); v3 the instance slots
(``instance0``...; tracks are not re-linked into identities); v4+ the identities (``id1``... or the
external names), each instance placed in its identity's column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from analysis.errors import ImportFormatError
from analysis.io.pose import PoseTable

JABS_KEYPOINTS = [
    "nose", "left_ear", "right_ear", "base_neck", "left_front_paw", "right_front_paw", "center_spine",
    "left_rear_paw", "right_rear_paw", "base_tail", "mid_tail", "tip_tail",
]  # fmt: skip
JABS_MIN_CONFIDENCE = 0.3  # JABS itself treats points at or below this confidence as missing


def is_jabs(path: str | Path) -> bool:
    """Whether an HDF5 file has a JABS ``poseest`` group with ``points``."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            grp = f.get("poseest")
            return isinstance(grp, h5py.Group) and "points" in grp
    except OSError:
        return False


def read_jabs(path: str | Path) -> PoseTable:
    """A JABS pose file (v2-v6) -> :class:`PoseTable` in pixels (x, y), frames 0.. (one row per video
    frame). Points with confidence 0 are NaN; the others keep their confidence (JABS's own cut is
    :data:`JABS_MIN_CONFIDENCE`). ``meta``: ``version``, ``cm_per_pixel`` (None when absent),
    ``static_objects``."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ImportFormatError(f"{path}: file not found")
    try:
        with h5py.File(path, "r") as f:
            grp = f.get("poseest")
            if not isinstance(grp, h5py.Group):
                raise ImportFormatError(f"{path}: not a JABS pose file (no 'poseest' group)")
            data = {k: grp[k][()] for k in grp if isinstance(grp[k], h5py.Dataset)}
            attrs = dict(grp.attrs)
            statics: dict[str, Any] = {}
            if isinstance(f.get("static_objects"), h5py.Group):
                statics = {k: np.asarray(v[()]) for k, v in f["static_objects"].items()}
    except OSError as exc:
        raise ImportFormatError(f"{path}: not an HDF5 file ({exc})") from None
    for key in ("points", "confidence"):
        if key not in data:
            raise ImportFormatError(f"{path}: JABS file lacks poseest/{key}")
    raw = np.asarray(data["points"], dtype=np.float64)
    conf = np.asarray(data["confidence"], dtype=np.float64)
    version = _version(path, attrs, raw)
    if raw.ndim not in (3, 4) or raw.shape[-2:] != (len(JABS_KEYPOINTS), 2):
        raise ImportFormatError(
            f"{path}: poseest/points has shape {raw.shape}, expected (frames, [instances,] 12, 2)"
        )
    if conf.shape != raw.shape[:-1]:
        raise ImportFormatError(
            f"{path}: poseest/confidence has shape {conf.shape}, expected {raw.shape[:-1]} like the points"
        )
    if raw.ndim == 3:  # v2: one mouse
        raw, conf = raw[:, None], conf[:, None]
    xy = raw[..., ::-1].copy()  # stored (y, x)
    xy[conf <= 0] = np.nan
    conf = np.where(conf > 0, conf, np.nan)
    n_frames, n_inst = raw.shape[:2]
    if version >= 4:
        xy, conf, individuals = _by_identity(path, data, xy, conf)
    elif version == 3:
        count = np.asarray(data.get("instance_count", np.full(n_frames, n_inst)), dtype=np.int64)
        if count.shape != (n_frames,):
            raise ImportFormatError(
                f"{path}: poseest/instance_count has shape {count.shape}, expected ({n_frames},)"
            )
        unused = np.arange(n_inst)[None, :] >= count[:, None]
        xy[unused], conf[unused] = np.nan, np.nan
        individuals = [f"instance{i}" for i in range(n_inst)]
    else:
        individuals = ["mouse"]
    cm = attrs.get("cm_per_pixel")
    return PoseTable(
        xy,
        conf,
        list(JABS_KEYPOINTS),
        individuals,
        np.arange(n_frames, dtype=np.int64),
        str(path),
        meta={
            "format": "jabs",
            "version": version,
            "cm_per_pixel": None if cm is None else float(np.asarray(cm).reshape(-1)[0]),
            "static_objects": statics,
        },
    )


def _version(path: Path, attrs: dict[str, Any], raw: np.ndarray) -> int:
    v = attrs.get("version")
    if v is None:  # unversioned files: v2 is the one with no instance axis
        return 2 if raw.ndim == 3 else 3
    try:
        major = int(np.asarray(v).reshape(-1)[0])
    except (TypeError, ValueError):
        raise ImportFormatError(f"{path}: poseest attribute 'version' is {v!r}, not a number") from None
    if not 2 <= major <= 6:
        raise ImportFormatError(f"{path}: JABS pose version {major}; versions 2 to 6 are read")
    return major


def _by_identity(
    path: Path, data: dict[str, Any], xy: np.ndarray, conf: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """v4+: instances -> identity columns through ``id_mask`` and ``instance_embed_id`` (1-based)."""
    for key in ("id_mask", "instance_embed_id"):
        if key not in data:
            raise ImportFormatError(f"{path}: JABS v4+ file lacks poseest/{key}")
    shape = xy.shape[:2]
    mask = np.asarray(data["id_mask"])
    ids = np.asarray(data["instance_embed_id"], dtype=np.int64)
    if mask.shape != shape or ids.shape != shape:
        raise ImportFormatError(
            f"{path}: poseest/id_mask {mask.shape} and instance_embed_id {ids.shape} must be {shape} "
            "(frames, instances) like the points"
        )
    used = (mask == 0) & (ids > 0)
    n_ids = int(ids[used].max()) if used.any() else 0
    t, i = np.nonzero(used)
    slot = ids[t, i] - 1
    dup = np.unique(t * (n_ids + 1) + slot, return_counts=True)[1]
    if (dup > 1).any():
        raise ImportFormatError(f"{path}: an identity is given to two instances of one frame")
    out_xy = np.full((shape[0], n_ids, *xy.shape[2:]), np.nan)
    out_conf = np.full((shape[0], n_ids, xy.shape[2]), np.nan)
    out_xy[t, slot], out_conf[t, slot] = xy[t, i], conf[t, i]
    names = [f"id{k + 1}" for k in range(n_ids)]
    ext = data.get("external_identity_mapping")
    if ext is not None and len(ext) >= n_ids:
        ext_names = [x.decode() if isinstance(x, bytes) else str(x) for x in list(ext)[:n_ids]]
        if len(set(ext_names)) == n_ids and all(ext_names):
            names = ext_names
    return out_xy, out_conf, names
