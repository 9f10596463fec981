"""``deepbehavior`` subcommands of the analysis package: ``calibrate``, ``calibrate-import``,
``triangulate``, ``reaching``, ``three-chamber``, ``social``, ``nwb-export``,
``human``.

Wired into the CLI by ``rig/cli.py`` through :func:`register`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from analysis.camera import save_calibration
from analysis.errors import AnalysisError

log = logging.getLogger(__name__)


VIDEO_HELP = "SLEAP .slp holding several videos: the video's index or file name"


def _video_choice(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="calibrate cameras from checkerboard/ChArUco images or videos",
        description="N-camera calibration. Views are paired across cameras by sort order (images) or "
        "frame index (videos).",
    )
    p.add_argument(
        "--camera",
        action="append",
        required=True,
        metavar="NAME=SOURCE",
        help="a camera and its images: a folder, a quoted glob ('left*.jpg') or a video; repeat per camera",
    )
    p.add_argument(
        "--board",
        required=True,
        help="checkerboard:COLSxROWS:SQUARE_MM (inner corners, e.g. checkerboard:9x6:30) or "
        "charuco:SXxSY:SQUARE_MM:MARKER_MM[:DICT]",
    )
    p.add_argument("--out", required=True, type=Path, help="calibration file to write (*.calib.yaml)")
    p.add_argument("--reference", help="camera that defines the world frame (default: the first)")
    p.add_argument("--bundle-adjust", action="store_true", help="refine all cameras jointly afterwards")
    p.add_argument("--every", type=int, default=1, help="use every N-th image or video frame")
    p.add_argument(
        "--outlier-px", type=float, default=1.0, help="views above max(this, 3 x median) RMS are left out"
    )
    p.add_argument("--report", type=Path, help="write the per-view report as JSON here")
    p.add_argument("--plot", type=Path, help="write the reprojection plot (PNG) here")
    p.set_defaults(func=_cmd_calibrate)

    q = subparsers.add_parser(
        "calibrate-import", help="convert an anipose/OpenCV/Bouguet calibration to this project's format"
    )
    q.add_argument(
        "files",
        nargs="+",
        type=Path,
        help="input file(s): calibration.toml; intrinsics.yml "
        "extrinsics.yml; Calib_Results_stereo.mat or Calib_Results_left.mat Calib_Results_right.mat",
    )
    q.add_argument("--format", default="auto", choices=["auto", "anipose", "opencv", "bouguet"])
    q.add_argument(
        "--names", default="left,right", help="camera names for stereo formats (default left,right)"
    )
    q.add_argument("--out", required=True, type=Path)
    q.set_defaults(func=_cmd_import)

    from analysis.events import min_confidence_help
    from analysis.kinematics import (
        REACH_MAX_GAP_S,
        REACH_MIN_DURATION_S,
        REACH_MIN_EXTENT_MM,
        REACH_MIN_GAP_S,
        REACH_ONSET_SPEED_MM_S,
        REACH_SMOOTH_S,
    )

    r = subparsers.add_parser(
        "reaching",
        help="reach kinematics and success rate from a session folder or any 3-D table",
        description="Reaches, their kinematics (velocity, acceleration, jerk) and, for a session, per-trial "
        "outcomes. INPUT is a rig session folder (points3d.csv; times are the trigger times on the firmware "
        "clock from triggers.csv, never host arrival times) or a 3-D table: DeepLabCut 3-D .h5/.csv, an "
        "anipose CSV or a points3d.csv, timed by --fps or --timestamps. Speed thresholds are in mm/s; "
        "--units converts the table to mm. Before any derivative, points under --min-confidence (anipose "
        "score; a session's invalid points) are cut and gaps up to --max-gap filled; a reach is a movement "
        "over --onset-speed lasting --min-duration and going --min-extent from its start, movements less "
        "than --min-gap apart being one. The summary says how many frames were cut, filled and missing.",
    )
    r.add_argument("session", metavar="INPUT", type=Path, help="session folder, or a 3-D table file")
    r.add_argument("--part", default="paw", help="tracked point / body part to segment (default paw)")
    r.add_argument("--individual", default="0", help="DeepLabCut individual (name or index; default 0)")
    r.add_argument(
        "--filtered", action="store_true", help="session: use the online Kalman-filtered positions"
    )
    r.add_argument("--fps", type=float, help="frame rate of a table file (frame number / fps = time)")
    r.add_argument(
        "--timestamps", type=Path, help="file of per-row times in seconds (one per line, or a t_s column)"
    )
    r.add_argument(
        "--units", choices=["mm", "cm", "m"], default="mm", help="length unit of a table file (default mm)"
    )
    r.add_argument(
        "--onset-speed",
        type=float,
        default=REACH_ONSET_SPEED_MM_S,
        help=f"reach onset speed, mm/s (default {REACH_ONSET_SPEED_MM_S:g}; offset at half of it)",
    )
    r.add_argument(
        "--min-extent",
        type=float,
        default=REACH_MIN_EXTENT_MM,
        help=f"a reach goes at least this far from its start, mm (default {REACH_MIN_EXTENT_MM:g})",
    )
    r.add_argument(
        "--min-duration",
        type=float,
        default=REACH_MIN_DURATION_S,
        help=f"shortest reach, s (default {REACH_MIN_DURATION_S:g})",
    )
    r.add_argument(
        "--min-gap",
        type=float,
        default=REACH_MIN_GAP_S,
        help=f"movements closer than this (s) are one reach (default {REACH_MIN_GAP_S:g})",
    )
    r.add_argument(
        "--max-gap",
        type=float,
        default=REACH_MAX_GAP_S,
        help=f"fill gaps up to this many seconds linearly before derivatives (default {REACH_MAX_GAP_S:g}; "
        "0 = none)",
    )
    r.add_argument(
        "--min-confidence",
        type=float,
        help=f"cut points under this score, where the table has one (default per format: "
        f"{min_confidence_help()})",
    )
    r.add_argument(
        "--smooth",
        type=int,
        help=f"Savitzky-Golay window for speeds, samples (odd, >= 5; 0 = none; default the odd number "
        f"nearest {1000 * REACH_SMOOTH_S:g} ms, at least 5: 7 at 124 Hz)",
    )
    r.add_argument("--clusters", type=int, default=0, help="cluster reach paths by DTW into N groups")
    r.add_argument(
        "--out", type=Path, help="output folder (default SESSION/analysis/reaching, or next to the file)"
    )
    r.set_defaults(func=_cmd_reaching)

    from analysis.events import min_confidence_help
    from analysis.tasks.social import (
        SO_MAX_GAP_S,
        SO_MIN_EPOCH_S,
        SO_MIN_GAP_S,
        SOCIAL_FORMATS,
        TC_MAX_GAP_S,
        TC_MIN_BOUT_S,
        TC_MIN_GAP_S,
    )

    tc = subparsers.add_parser(
        "three-chamber",
        help="three-chamber sociability from a pose file (DLC/SLEAP/OpenPose)",
        description="Chamber times, transitions and cup bouts from the head track. Points under the "
        "confidence cut are removed, gaps up to --max-gap are filled linearly, and visits and bouts last at "
        "least --min-bout with bouts closer than --min-gap joined, so a missed or false frame never splits "
        "a bout or adds a transition. The summary says how many frames were cut, filled and still missing.",
    )
    tc.add_argument(
        "pose", type=Path, help="pose file with the head/snout track (.csv, .h5, .slp, JSON folder)"
    )
    tc.add_argument("--video", type=_video_choice, help=VIDEO_HELP)
    tc.add_argument(
        "--geometry",
        required=True,
        type=Path,
        help="YAML: chambers {name: [x0,y0,x1,y1]}, cups {name: [cx,cy,r]}, interaction_margin",
    )
    tc.add_argument("--part", default="snout", help="body part used as the head (default snout)")
    tc.add_argument("--fps", type=float, required=True, help="video frame rate")
    tc.add_argument(
        "--min-confidence",
        type=float,
        help=f"drop points under this likelihood/score (default per format: {min_confidence_help()})",
    )
    tc.add_argument(
        "--max-gap",
        type=float,
        default=TC_MAX_GAP_S,
        help=f"fill gaps up to this many seconds linearly (default {TC_MAX_GAP_S:g}; 0 = none)",
    )
    tc.add_argument(
        "--min-bout",
        type=float,
        default=TC_MIN_BOUT_S,
        help=f"shortest chamber visit or cup bout, s (default {TC_MIN_BOUT_S:g})",
    )
    tc.add_argument(
        "--min-gap",
        type=float,
        default=TC_MIN_GAP_S,
        help=f"cup bouts closer than this (s) are one bout (default {TC_MIN_GAP_S:g})",
    )
    tc.add_argument("--out", type=Path, required=True)
    tc.set_defaults(func=_cmd_three_chamber)

    so = subparsers.add_parser(
        "social",
        help="two-mouse interaction from a multi-animal pose file or body boxes",
        description="Identities that hold (by class where the boxes have the seed's classes, else by "
        "movement over the whole session, gated against lone detections), close-contact epochs (centres "
        "under --threshold for --min-epoch, stretches less than --min-gap apart joined) and their types "
        "(nose-to-nose, nose-to-tail, other, unknown when the parts are not seen). Distances are in cm "
        "when the scale is known (--px-per-cm or the file's), else in pixels. Reads: " + SOCIAL_FORMATS,
    )
    so.add_argument("pose", type=Path, help="multi-animal pose file, darknet log (.txt) or YOLO .txt folder")
    so.add_argument("--video", type=_video_choice, help=VIDEO_HELP)
    so.add_argument("--fps", type=float, required=True, help="video frame rate")
    so.add_argument(
        "--threshold",
        required=True,
        help="close-contact body-centre distance: 5cm, 50mm or 40 (pixels)",
    )
    so.add_argument(
        "--part-threshold",
        help="nose-to-nose / nose-to-tail part distance, same forms (default half of --threshold)",
    )
    so.add_argument("--px-per-cm", type=float, help="image scale (default: the file's, if it has one)")
    so.add_argument(
        "--parts",
        default="nose,center,tail",
        help="nose,center,tail part names in the file (default nose,center,tail; for JABS files "
        "nose,center_spine,base_tail)",
    )
    so.add_argument(
        "--pair",
        help="ID1,ID2: the two individuals to analyse in a file with more; 'all' for every pair",
    )
    so.add_argument(
        "--classes",
        default="body,body_mini",
        help="box classes of mouse A and B (default body,body_mini: B wears the miniscope)",
    )
    so.add_argument("--image-size", help="WxH of the images, for a folder of YOLO .txt files")
    so.add_argument(
        "--annotate",
        type=Path,
        metavar="VIDEO",
        help="the tracked video: also write OUT/annotated.mp4 (bodies, identities, contacts)",
    )
    so.add_argument(
        "--min-confidence",
        type=float,
        help=f"drop points/boxes under this confidence (default per format: {min_confidence_help()})",
    )
    so.add_argument(
        "--max-gap",
        type=float,
        default=SO_MAX_GAP_S,
        help=f"fill gaps up to this many seconds linearly (default {SO_MAX_GAP_S:g}; 0 = none)",
    )
    so.add_argument(
        "--min-epoch",
        type=float,
        default=SO_MIN_EPOCH_S,
        help=f"shortest contact epoch, s (default {SO_MIN_EPOCH_S:g})",
    )
    so.add_argument(
        "--min-gap",
        type=float,
        default=SO_MIN_GAP_S,
        help=f"contacts closer than this (s) are one epoch (default {SO_MIN_GAP_S:g})",
    )
    so.add_argument("--out", type=Path, required=True)
    so.set_defaults(func=_cmd_social)

    nw = subparsers.add_parser(
        "nwb-export", help="export a recorded session folder to NWB (pynwb + ndx-pose)"
    )
    nw.add_argument("session", type=Path, help="session folder")
    nw.add_argument("--out", type=Path, help="output .nwb (default SESSION/SESSION_NAME.nwb)")
    nw.add_argument("--species", default="Mus musculus")
    nw.set_defaults(func=_cmd_nwb)

    from analysis.tasks.human import HUMAN_MAX_GAP_S, HUMAN_SMOOTH_S

    hu = subparsers.add_parser(
        "human",
        help="3-D arm angles from OpenPose JSON of two or more calibrated views",
        description="Views are paired by frame number; a keypoint is made in 3-D from the views at or "
        "above --min-confidence; each joint's gaps up to --max-gap are filled and the joints smoothed over "
        "--smooth before the elbow, shoulder and supination angles are taken. Writes OUT/arm_angles.csv, "
        "joints_3d.csv (every joint, with measured/filled/missing per frame), arm_angles.png, human.json "
        "(settings; frames cut, filled, missing per joint and angle) and with --video skeleton.mp4 (a "
        "rotating 3-D skeleton).",
    )
    hu.add_argument("--calibration", required=True, type=Path, help="calibration file naming the cameras")
    hu.add_argument(
        "--camera",
        action="append",
        required=True,
        metavar="NAME=FOLDER",
        help="a camera and its OpenPose *_keypoints.json folder; repeat per camera",
    )
    hu.add_argument("--side", choices=["R", "L"], default="R", help="arm to measure (default R)")
    hu.add_argument("--fps", type=float, required=True, help="video frame rate (time = frame number / fps)")
    hu.add_argument(
        "--min-confidence",
        type=float,
        help=f"keypoints below this confidence are not used (default per format: {min_confidence_help()})",
    )
    hu.add_argument(
        "--max-gap",
        type=float,
        default=HUMAN_MAX_GAP_S,
        help=f"fill 3-D joint gaps up to this many seconds linearly (default {HUMAN_MAX_GAP_S:g}; 0 = none)",
    )
    hu.add_argument(
        "--smooth",
        type=float,
        default=HUMAN_SMOOTH_S,
        help=f"Savitzky-Golay window over the 3-D joints, seconds (default {HUMAN_SMOOTH_S:g}; 0 = none)",
    )
    hu.add_argument("--video", action="store_true", help="also write OUT/skeleton.mp4 (rotating 3-D view)")
    hu.add_argument("--out", type=Path, required=True)
    hu.set_defaults(func=_cmd_human)

    fg = subparsers.add_parser(
        "figures",
        help="the paper's figures of a task from the folder its analysis wrote",
        description="Each from the folder the task's analysis wrote. reaching: trajectories, velocity "
        "curves, speed over time, per-reach measures, trial outcomes. human: angle curves, angle "
        "histograms, a 3-D skeleton at five moments and the rotating 3-D skeleton video. three-chamber: "
        "time per chamber, cup interaction time and bouts (the command writes the trajectory). social: "
        "speed with contact epochs, contact time per type (the command writes trajectories and distance).",
    )
    fg.add_argument("task", choices=["reaching", "human", "three-chamber", "social"])
    fg.add_argument("input", type=Path, help="the folder the task's analysis wrote")
    fg.add_argument("--out", type=Path, help="output folder (default INPUT/figures)")
    fg.add_argument("--no-video", action="store_true", help="human: leave out skeleton.mp4")
    fg.set_defaults(func=_cmd_figures)

    from analysis.events import min_confidence_help
    from analysis.triangulate import CALIBRATION_FORMATS, OPTIM_LOSSES, OptimSettings

    tr = subparsers.add_parser(
        "triangulate",
        help="3-D points from the 2-D keypoints of two or more calibrated views (any tool's files)",
        description="Views: DeepLabCut .csv/.h5 (single or multi-animal), SLEAP .slp/analysis .h5, "
        "OpenPose JSON folders, JABS pose .h5, or detector boxes (darknet text, TensorBox JSON, a folder of "
        "YOLO .txt) as their centres. Views are matched by frame number, never by row position (by time, "
        "with --fps NAME=FPS per view, where their rates differ); frames a view lacks are listed. "
        "Calibration: this project's .calib.yaml, anipose .toml, OpenCV stereo "
        ".yml/.xml or Bouguet .mat. Writes OUT/points3d.csv (fnum, <kp>_x/_y/_z, _error px, _ncams, "
        "_cameras; one file per individual when several), OUT/qa.json (reprojection per view and keypoint, "
        "fraction triangulated, frames missing per view) and qa.png, with --h5 a DeepLabCut-layout 3-D "
        "points3d.h5, with --nwb points3d.nwb (ndx-pose).",
    )
    tr.add_argument(
        "--calibration",
        required=True,
        nargs="+",
        type=Path,
        help="calibration file(s): rig.calib.yaml, calibration.toml, intrinsics.yml extrinsics.yml, "
        "Calib_Results_stereo.mat",
    )
    tr.add_argument("--calibration-format", default="auto", choices=list(CALIBRATION_FORMATS))
    tr.add_argument(
        "--names", default="left,right", help="camera names of a stereo OpenCV/Bouguet calibration"
    )
    tr.add_argument(
        "--camera",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a calibrated camera and its 2-D keypoint file or folder; repeat per camera (2 or more)",
    )
    tr.add_argument(
        "--individual",
        action="append",
        help="individual to triangulate (repeat; default: all the views share)",
    )
    tr.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        help=f"2-D points below this confidence are not used (default per format: {min_confidence_help()})",
    )
    tr.add_argument(
        "--ransac",
        type=float,
        metavar="PX",
        help="vote out a view whose point reprojects farther than PX pixels (helps with 3+ cameras)",
    )
    tr.add_argument(
        "--smooth",
        type=int,
        default=0,
        metavar="FRAMES",
        help="temporal clean-up of each 3-D track: drop points far from the running median, fill gaps of "
        "up to --max-gap frames, Savitzky-Golay over FRAMES (odd, >= 3; default 0 = off). With --ransac "
        "this is the robust + smooth mode (BENCHMARKS.md: triangulate-accuracy)",
    )
    tr.add_argument(
        "--max-gap", type=int, default=5, help="with --smooth: longest gap filled, frames (default 5)"
    )
    tr.add_argument(
        "--optim",
        action="store_true",
        help="spatiotemporal optimization (like aniposelib's triangulate_optim): robust reprojection "
        "error + smoothness (+ limb lengths with --skeleton), started from the --ransac/--smooth result "
        "(--smooth 7 when not given)",
    )
    tr.add_argument(
        "--skeleton",
        type=Path,
        help="with --optim: a text file of keypoint pairs, one chain per line ('shoulder, elbow, wrist'); "
        "each pair's length is the median over the session",
    )
    tr.add_argument(
        "--optim-smooth",
        type=float,
        default=OptimSettings.smooth_px_per_mm,
        metavar="PX_PER_MM",
        help="weight of the second difference over frames (default %(default)s px per mm)",
    )
    tr.add_argument(
        "--optim-length",
        type=float,
        default=OptimSettings.length_px_per_mm,
        metavar="PX_PER_MM",
        help="weight of a limb's deviation from its length (default %(default)s px per mm)",
    )
    tr.add_argument(
        "--optim-loss",
        choices=list(OPTIM_LOSSES),
        default=OptimSettings.loss,
        help="robust loss of the reprojection error (default %(default)s)",
    )
    tr.add_argument("--image-size", help="WxH of the images, for a folder of YOLO .txt files")
    tr.add_argument("--h5", action="store_true", help="also write points3d.h5 (DeepLabCut 3-D layout)")
    tr.add_argument("--nwb", action="store_true", help="also write points3d.nwb (ndx-pose; needs --fps)")
    tr.add_argument(
        "--fps",
        action="append",
        metavar="[NAME=]FPS",
        help="frame rate of a view (NAME=FPS, repeat per view) or of all (FPS): frame number / fps = time. "
        "Views at different rates are matched by time, to the nearest frame within half a frame of the "
        "slowest view",
    )
    tr.add_argument(
        "--offset",
        action="append",
        metavar="NAME=SECONDS",
        help="time added to a view's frame times (frame / fps + SECONDS) before matching; needs --fps",
    )
    tr.add_argument("--out", required=True, type=Path, help="output folder")
    tr.set_defaults(func=_cmd_triangulate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from analysis.calibration import calibrate_sources, parse_board

    try:
        _out_file(args.out, "rig.calib.yaml")
        sources = {}
        for item in args.camera:
            name, sep, src = item.partition("=")
            if not sep or not name or not src:
                raise AnalysisError(f"--camera {item!r}: expected NAME=SOURCE")
            sources[name] = src
        board = parse_board(args.board)
        result = calibrate_sources(
            sources,
            board,
            every=args.every,
            reference=args.reference,
            bundle_adjust=args.bundle_adjust,
            outlier_px=args.outlier_px,
        )
    except AnalysisError as exc:
        return _fail(exc)
    try:
        save_calibration(result.calibration, args.out)
    except OSError as exc:
        return _write_failed(args.out, exc)
    print(result.report.to_text())
    if args.report:
        args.report.write_text(json.dumps(result.report.to_dict(), indent=1))
    if args.plot:
        result.report.plot(args.plot)
    print(f"wrote {args.out}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from analysis.calibration_io import import_calibration

    names = tuple(n.strip() for n in args.names.split(","))
    try:
        if len(names) != 2 or not all(names):
            raise AnalysisError(f"--names {args.names!r}: expected two names, e.g. left,right")
        _out_file(args.out, "rig.calib.yaml")
        calib = import_calibration(args.files, args.format, (names[0], names[1]))
    except AnalysisError as exc:
        return _fail(exc)
    try:
        save_calibration(calib, args.out)
    except OSError as exc:
        return _write_failed(args.out, exc)
    print(f"wrote {args.out} with cameras {', '.join(calib.cameras)}")
    from analysis.calibration_check import SAME_DIRECTION_DEG, close_cameras

    for a, b, d, angle in close_cameras(calib, same_direction_deg=SAME_DIRECTION_DEG):
        print(
            f"deepbehavior: warning: {args.out}: cameras {a!r} and {b!r} have (nearly) the same pose "
            f"(centres {d:.2f} mm apart, optical axes {angle:.1f} deg apart): is one a copy of the other?",
            file=sys.stderr,
        )
    return 0


def _cmd_reaching(args: argparse.Namespace) -> int:
    from analysis.tasks.reaching import analyze_reaching, load_session_track, read_timestamps, read_track

    src: Path = args.session
    try:
        if src.is_dir():
            if args.timestamps is not None or args.units != "mm":
                raise AnalysisError(
                    f"{src}: a session folder is timed by its triggers and in mm; --timestamps and --units "
                    "are for table files"
                )
            track = load_session_track(src, args.part, filtered=args.filtered, rate_hz=args.fps)
            out = args.out or src / "analysis" / "reaching"
        else:
            if not src.exists():
                raise AnalysisError(f"{src}: not found (a session folder or a 3-D table file)")
            ts = read_timestamps(args.timestamps) if args.timestamps is not None else None
            ind = int(args.individual) if args.individual.isdigit() else args.individual
            track = read_track(src, args.part, args.fps, ts, args.units, ind)
            out = args.out or src.with_name(f"{src.stem}_reaching")
        if args.max_gap < 0 or args.min_duration < 0 or args.min_gap < 0 or args.min_extent < 0:
            raise AnalysisError("--max-gap, --min-duration, --min-gap and --min-extent must be >= 0")
        sm = args.smooth
        if sm is not None and (sm < 0 or (sm and (sm % 2 == 0 or sm < 5))):
            raise AnalysisError(f"--smooth {args.smooth}: 0 or an odd number of samples >= 5")
        res = analyze_reaching(
            track.t_s,
            track.xyz,
            track.trials,
            out_dir=out,
            n_clusters=args.clusters,
            info=track.info,
            confidence=track.confidence,
            min_confidence=args.min_confidence,
            max_gap_s=args.max_gap,
            onset_speed_mm_s=args.onset_speed,
            min_extent_mm=args.min_extent,
            min_duration_s=args.min_duration,
            merge_gap_s=args.min_gap,
            smooth_window=args.smooth,
        )
    except AnalysisError as exc:
        return _fail(exc)
    for note in [*track.notes, res["summary"].get("note")]:
        if note:
            print(f"deepbehavior: warning: {src}: {note}", file=sys.stderr)
    print(json.dumps(res["summary"], indent=1, default=float))
    print(f"wrote {out}")
    return 0


def _fail(exc: Exception) -> int:
    """The CLI's one line for a user error (exit 2), as ``rig.cli.main`` prints it."""
    print(f"deepbehavior: error: {exc}", file=sys.stderr)
    return 2


def _out_file(path: Path, example: str) -> None:
    """Refuse an output file that is an existing folder, or whose folder does not exist."""
    if path.is_dir():
        raise AnalysisError(f"--out {path}: is a folder; give a file name, e.g. {path / example}")
    if not path.parent.is_dir():
        raise AnalysisError(f"--out {path}: folder {path.parent} does not exist")


def _write_failed(path: Path, exc: OSError) -> int:
    return _fail(AnalysisError(f"{path}: cannot write: {exc.strerror or exc}"))


def _cmd_three_chamber(args: argparse.Namespace) -> int:
    import numpy as np

    from analysis.events import default_min_confidence
    from analysis.io.pose import read_pose
    from analysis.tasks.social import load_three_chamber_geometry, plot_three_chamber, three_chamber

    try:
        geom = load_three_chamber_geometry(args.geometry)
        table = read_pose(args.pose, video=args.video).contiguous()
        head = table.part(args.part)
        conf = table.confidence[:, 0, table.bodyparts.index(args.part)]
        cut = args.min_confidence
        if cut is None:
            cut = default_min_confidence(table.meta.get("format"))
        t = np.arange(len(head)) / args.fps
        res = three_chamber(
            t,
            head,
            geom,
            args.min_bout,
            confidence=conf,
            min_confidence=cut,
            max_gap_s=args.max_gap,
            min_gap_s=args.min_gap,
        )
    except AnalysisError as exc:
        return _fail(exc)
    summary = {
        k: res[k]
        for k in ("occupancy_s", "missing_s", "transitions", "sociability_index", "distance", "mean_speed")
    }
    summary["cups"] = {}
    for cup, d in res["cups"].items():
        bouts_s = [[t[s], t[e] + 1 / args.fps] for s, e in d["bouts"]]
        summary["cups"][cup] = {k: v for k, v in d.items() if k != "bouts"} | {"bouts_s": bouts_s}
    summary["frames"] = res["quality"].to_dict() | {
        "min_bout_s": args.min_bout,
        "min_gap_s": args.min_gap,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "three_chamber.json").write_text(json.dumps(summary, indent=1, default=float))
    plot_three_chamber(res["head"], geom, args.out / "trajectory.png")
    print(json.dumps(summary, indent=1, default=float))
    return 0


def _cmd_social(args: argparse.Namespace) -> int:
    from analysis.tasks.social import SocialOptions, load_social_input, social_pairs

    try:
        opts = SocialOptions.from_args(args)
        data = load_social_input(args.pose, opts, video=args.video)
        results = social_pairs(data, opts, pair=args.pair, out_dir=args.out, annotate=args.annotate)
        summary = results[0] if len(results) == 1 else {"pairs": results}
        (args.out / "social.json").write_text(json.dumps(summary, indent=1, default=float))
    except AnalysisError as exc:
        return _fail(exc)
    except OSError as exc:
        return _write_failed(args.out, exc)
    print(json.dumps(summary, indent=1, default=float))
    return 0


def _cmd_human(args: argparse.Namespace) -> int:
    from analysis.camera import load_calibration
    from analysis.io.pose import read_openpose
    from analysis.tasks.human import analyze_arm, write_arm_outputs
    from analysis.triangulate import parse_views

    hand = "hand_right" if args.side == "R" else "hand_left"
    try:
        calib = load_calibration(args.calibration)
        tables = {}
        for name, folder in parse_views(args.camera).items():
            calib[name]  # fails early, naming the calibration file, if the camera is not in it
            tables[name] = read_openpose(folder, parts=("pose", hand))
        res = analyze_arm(calib, tables, args.fps, args.side, args.min_confidence, args.max_gap, args.smooth)
        written = write_arm_outputs(res, args.out, video=args.video)
    except AnalysisError as exc:
        return _fail(exc)
    except OSError as exc:
        return _write_failed(args.out, exc)
    for line in res.notes:
        print(f"deepbehavior: warning: {line}", file=sys.stderr)
    print(res.table.drop(columns="frame").describe().T[["mean", "min", "max"]].to_string())
    angles = res.summary["angles"]
    print(
        f"{len(res.frames)} frames ({res.frames[0]}-{res.frames[-1]}); angle values measured / filled / "
        "missing: "
        + ", ".join(f"{k} {v['measured']}/{v['filled']}/{v['missing']}" for k, v in angles.items())
    )
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _cmd_figures(args: argparse.Namespace) -> int:
    from analysis.plotting import social_figures, three_chamber_figures
    from analysis.tasks.human import human_figures
    from analysis.tasks.reaching import reaching_figures

    out = args.out or args.input / "figures"
    try:
        if not args.input.is_dir():
            raise AnalysisError(f"{args.input}: not a folder (the folder the {args.task} analysis wrote)")
        if args.task == "reaching":
            written = reaching_figures(args.input, out)
        elif args.task == "human":
            written = human_figures(args.input, out, video=not args.no_video)
        elif args.task == "three-chamber":
            written = three_chamber_figures(args.input, out)
        else:
            written = social_figures(args.input, out)
    except AnalysisError as exc:
        return _fail(exc)
    except OSError as exc:
        return _write_failed(out, exc)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _cmd_triangulate(args: argparse.Namespace) -> int:
    from analysis.triangulate import (
        OptimSettings,
        load_calibration_any,
        optimize_tracks,
        parse_named_numbers,
        parse_views,
        plot_qa,
        qa_summary,
        read_skeleton,
        read_view,
        smooth_tracks,
        summary_text,
        triangulate_views,
        write_outputs,
    )

    try:
        names = tuple(n.strip() for n in args.names.split(","))
        if len(names) != 2 or not all(names):
            raise AnalysisError(f"--names {args.names!r}: expected two names, e.g. left,right")
        size = None
        if args.image_size:
            w, sep, h = args.image_size.lower().partition("x")
            if not sep or not w.isdigit() or not h.isdigit():
                raise AnalysisError(f"--image-size {args.image_size!r}: expected WxH, e.g. 1280x720")
            size = (int(w), int(h))
        views = parse_views(args.camera)
        fps = parse_named_numbers(args.fps, "--fps", list(views))
        offsets = parse_named_numbers(args.offset, "--offset", list(views))
        if args.nwb and not fps:
            raise AnalysisError("--nwb needs --fps (NWB times are frame number / fps)")
        if args.skeleton and not args.optim:
            raise AnalysisError("--skeleton needs --optim (limb lengths are a term of the optimization)")
        calib = load_calibration_any(args.calibration, args.calibration_format, (names[0], names[1]))
        for name in views:
            calib[name]  # fails early, naming the calibration file, if the camera is not in it
        tables = {name: read_view(path, size) for name, path in views.items()}
        res = triangulate_views(
            calib,
            tables,
            min_confidence=args.min_confidence,
            ransac_px=args.ransac,
            individuals=args.individual,
            fps=fps or None,
            offsets_s=offsets or None,
        )
        if args.smooth or args.optim:
            res = smooth_tracks(res, window=args.smooth or 7, max_gap=args.max_gap)
        if args.optim:
            settings = OptimSettings(
                smooth_px_per_mm=args.optim_smooth, length_px_per_mm=args.optim_length, loss=args.optim_loss
            )
            skeleton = read_skeleton(args.skeleton, res.bodyparts) if args.skeleton else []
            res = optimize_tracks(res, skeleton, settings)
    except AnalysisError as exc:
        return _fail(exc)
    for line in res.match.report() if res.match else []:
        print(f"deepbehavior: warning: {line}", file=sys.stderr)
    qa = qa_summary(res)
    try:
        written = write_outputs(res, args.out, h5=args.h5)
        (args.out / "qa.json").write_text(json.dumps(qa, indent=1) + "\n")
        written += [args.out / "qa.json", plot_qa(res, args.out / "qa.png")]
        if args.nwb:
            written.append(_triangulate_nwb(res, args.out / "points3d.nwb", calib.units))
    except OSError as exc:
        return _write_failed(args.out, exc)
    except AnalysisError as exc:
        return _fail(exc)
    print(summary_text(qa))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _triangulate_nwb(res: object, path: Path, units: str) -> Path:
    from datetime import UTC, datetime

    from analysis.nwb import PoseSeries, export_nwb
    from analysis.triangulate import Points3D

    assert isinstance(res, Points3D) and res.times_s is not None
    t = res.times_s
    pose = {
        f"3d_{ind}": PoseSeries(
            points=res.xyz[:, i],
            timestamps_s=t,
            bodyparts=res.bodyparts,
            unit=units,
            reference_frame="world frame of the calibration",
            source_software="deepbehavior triangulate",
        )
        for i, ind in enumerate(res.individuals)
    }
    return export_nwb(
        path,
        identifier=path.stem,
        session_description=f"3-D keypoints triangulated from {', '.join(res.cameras)}",
        session_start_time=datetime.now(UTC),
        pose=pose,
    )


def _cmd_nwb(args: argparse.Namespace) -> int:
    from analysis.session_nwb import session_to_nwb

    out = args.out or args.session / f"{args.session.resolve().name}.nwb"
    try:
        if args.out:
            _out_file(args.out, f"{args.session.resolve().name}.nwb")
        session_to_nwb(args.session, out, species=args.species)
    except AnalysisError as exc:
        return _fail(exc)
    except OSError as exc:
        return _write_failed(out, exc)
    print(f"wrote {out}")
    return 0
