"""``deepbehavior pose``: 2-D body (and hand) keypoints from a video with MediaPipe
(:mod:`detection.pose_runner`), written as OpenPose JSON that ``human`` and the OpenPose importer read.

Wired into the CLI by ``rig/cli.py`` through :func:`register`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    po = subparsers.add_parser(
        "pose",
        help="2-D body (and hand) keypoints from a video with MediaPipe, written as OpenPose JSON",
        description="Runs MediaPipe 0.10.14 (models from inside the installed wheel, never a download) on "
        "every frame and writes OUT/<video stem>_<frame:012d>_keypoints.json in OpenPose's format (BODY_25, "
        "21-point hands), read by 'human' and the OpenPose importer. Mapping: detection/POSE_RUNNER.md.",
    )
    po.add_argument("video", type=Path, help="video file")
    po.add_argument("--out", required=True, type=Path, help="folder for the *_keypoints.json files")
    po.add_argument("--hands", action="store_true", help="also the 21-point hands (left and right)")
    po.add_argument("--max-frames", type=int, help="stop after this many frames (default: all)")
    po.add_argument(
        "--mirrored",
        action="store_true",
        help="the video is mirrored (selfie view): left/right hands are then taken as MediaPipe labels them",
    )
    po.add_argument("--overwrite", action="store_true", help="replace *_keypoints.json already in --out")
    po.add_argument("--report", type=Path, help="write frame counts and per-frame timings as JSON here")
    po.set_defaults(func=cmd_pose)


def cmd_pose(args: argparse.Namespace) -> int:
    from detection.pose_runner import run_pose

    res = run_pose(
        args.video,
        args.out,
        hands=args.hands,
        max_frames=args.max_frames,
        mirrored=args.mirrored,
        overwrite=args.overwrite,
    )
    summary = res.summary()
    if args.report:
        args.report.write_text(json.dumps(summary, indent=1) + "\n")
    timing = "; ".join(
        f"{what} {s['median_ms']:.1f} ms median, {s['p99_ms']:.1f} ms p99"
        for what in ("pose", "hands", "pose+hands")
        if (s := summary[what])
    )
    hands = f", hands: {res.hands_found['left']} left, {res.hands_found['right']} right" if args.hands else ""
    print(
        f"wrote {res.n_frames} frames ({res.frames_with_person} with a person{hands}) to {res.out_dir}; "
        f"per frame: {timing}"
    )
    return 0
