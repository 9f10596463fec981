"""NWB export with pynwb + ndx-pose: subject and session metadata, the trial table with outcomes, events,
videos as external-file image series with their timestamps, 2-D detections per camera and 3-D positions as
pose-estimation series. Written to a temporary file and renamed, so a file at ``path`` is always complete.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from analysis.errors import AnalysisError


@dataclass
class PoseSeries:
    """Keypoints of one view (or 3-D).

    ``points`` (T, K, 2|3), ``timestamps_s`` (T,) seconds from session start, ``confidence`` (T, K).
    """

    points: np.ndarray
    timestamps_s: np.ndarray
    bodyparts: list[str]
    confidence: np.ndarray | None = None
    unit: str = "pixels"
    reference_frame: str = "image pixels, origin at the centre of the top-left pixel"
    source_software: str = "deepbehavior"
    edges: list[tuple[str, str]] = field(default_factory=list)


def export_nwb(
    path: str | Path,
    *,
    identifier: str,
    session_description: str,
    session_start_time: datetime,
    subject: Mapping[str, Any] | None = None,
    trials: Any | None = None,
    events: Sequence[tuple[float, str]] = (),
    videos: Mapping[str, tuple[str, np.ndarray]] | None = None,
    pose: Mapping[str, PoseSeries] | None = None,
    experimenter: str | None = None,
    lab: str | None = None,
) -> Path:
    """Write one session to ``path`` (.nwb).

    ``trials``: DataFrame with ``t_start_s``, ``t_end_s``, ``outcome`` (seconds from session start; other
    columns are added as trial columns). ``events``: (t_s, label) pairs. ``videos``: camera -> (video file,
    frame timestamps (T,) s). ``pose``: name -> :class:`PoseSeries` (a camera name for 2-D, e.g. ``3d`` for
    world coordinates in mm).
    """
    from ndx_pose import PoseEstimation, PoseEstimationSeries, Skeleton, Skeletons
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.file import Subject
    from pynwb.image import ImageSeries

    path = Path(path)
    if session_start_time.tzinfo is None:
        raise AnalysisError("session_start_time must be timezone-aware (NWB requires it)")
    nwb = NWBFile(
        session_description=session_description,
        identifier=identifier,
        session_start_time=session_start_time,
        experimenter=[experimenter] if experimenter else None,
        lab=lab,
    )
    if subject:
        nwb.subject = Subject(**{k: v for k, v in subject.items() if v is not None})
    if trials is not None and len(trials):
        missing = [c for c in ("t_start_s", "t_end_s", "outcome") if c not in trials.columns]
        if missing:
            raise AnalysisError(f"trials table lacks column(s) {', '.join(missing)}")
        extra = [c for c in trials.columns if c not in ("t_start_s", "t_end_s", "t_start_ns", "t_end_ns")]
        for c in extra:
            nwb.add_trial_column(name=str(c), description=f"{c} (from the rig's trials.csv)")
        for row in trials.itertuples(index=False):
            d = row._asdict()
            nwb.add_trial(
                start_time=float(d["t_start_s"]),
                stop_time=float(d["t_end_s"]),
                **{str(c): (str(d[c]) if c == "outcome" else d[c]) for c in extra},
            )
    if events:
        t = np.array([float(e[0]) for e in events])
        labels = [str(e[1]) for e in events]
        names = sorted(set(labels))
        mod = nwb.create_processing_module("events", "task and serial events")
        mod.add(
            TimeSeries(
                name="events",
                data=np.array([names.index(lab) for lab in labels], dtype=np.int32),
                timestamps=t,
                unit="n.a.",
                description="event code; codes index the comma-separated labels in comments",
                comments=",".join(names),
            )
        )
    for cam, (video, ts) in (videos or {}).items():
        nwb.add_acquisition(
            ImageSeries(
                name=f"video_{cam}",
                external_file=[str(video)],
                starting_frame=[0],
                format="external",
                timestamps=np.asarray(ts, dtype=np.float64),
                description=f"camera {cam}",
            )
        )
    if pose:
        behavior = nwb.create_processing_module("behavior", "pose estimation")
        skeletons = []
        estimations = []
        for name, ps in pose.items():
            pts = np.asarray(ps.points, dtype=np.float64)
            if pts.ndim != 3 or pts.shape[1] != len(ps.bodyparts) or pts.shape[2] not in (2, 3):
                raise AnalysisError(
                    f"pose {name!r}: points must be (T, K={len(ps.bodyparts)}, 2|3), got {pts.shape}"
                )
            if len(ps.timestamps_s) != len(pts):
                raise AnalysisError(f"pose {name!r}: {len(ps.timestamps_s)} timestamps for {len(pts)} frames")
            edges = np.array(
                [[ps.bodyparts.index(a), ps.bodyparts.index(b)] for a, b in ps.edges], dtype="uint8"
            )
            skel = Skeleton(name=f"skeleton_{name}", nodes=list(ps.bodyparts), edges=edges.reshape(-1, 2))
            skeletons.append(skel)
            conf = np.ones(pts.shape[:2]) if ps.confidence is None else np.asarray(ps.confidence, float)
            series = [
                PoseEstimationSeries(
                    name=bp,
                    data=pts[:, k],
                    unit=ps.unit,
                    reference_frame=ps.reference_frame,
                    timestamps=np.asarray(ps.timestamps_s, dtype=np.float64),
                    confidence=conf[:, k],
                    confidence_definition="detector confidence (1 where none)",
                    description=f"{bp} ({name})",
                )
                for k, bp in enumerate(ps.bodyparts)
            ]
            estimations.append(
                PoseEstimation(
                    name=f"pose_{name}",
                    pose_estimation_series=series,
                    description=f"keypoints from {name}",
                    source_software=ps.source_software,
                    skeleton=skel,
                )
            )
        behavior.add(Skeletons(skeletons=skeletons))
        for est in estimations:
            behavior.add(est)
    tmp = path.with_name(f".{path.stem}.partial.nwb")
    try:
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
