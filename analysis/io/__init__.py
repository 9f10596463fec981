"""Readers for files other tools write: pose estimators (OpenPose, DeepLabCut, SLEAP, JABS), detectors
(YOLO/darknet, TensorBox) and StreamPix ``.seq`` video. Bad input raises
:class:`analysis.errors.ImportFormatError` naming the file and the item at fault."""

from analysis.io.jabs import read_jabs
from analysis.io.pose import (
    POSE_FORMATS,
    PoseTable,
    read_dlc,
    read_openpose,
    read_pose,
    read_sleap_analysis,
    read_sleap_slp,
)

__all__ = [
    "POSE_FORMATS",
    "PoseTable",
    "read_dlc",
    "read_jabs",
    "read_openpose",
    "read_pose",
    "read_sleap_analysis",
    "read_sleap_slp",
]
