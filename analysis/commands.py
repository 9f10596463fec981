"""``deepbehavior`` subcommands of the analysis package: ``calibrate``, ``calibrate-import``, ``reaching``,
``three-chamber``, ``three-chamber-geometry``, ``social``, ``nwb-export``, ``human``, ``pose``.

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

    r = subparsers.add_parser(
        "reaching",
        help="reach kinematics and success rate from a session folder or any 3-D table",
        description="Reaches, their kinematics (velocity, acceleration, jerk) and, for a session, per-trial "
        "outcomes. INPUT is a rig session folder (points3d.csv; times are the trigger times on the firmware "
        "clock from triggers.csv, never host arrival times) or a 3-D table: DeepLabCut 3-D .h5/.csv, an "
        "anipose CSV or a points3d.csv, timed by --fps or --timestamps. Speed thresholds are in mm/s; "
        "--units converts the table to mm.",
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
    r.add_argument("--onset-speed", type=float, default=50.0, help="reach onset speed, mm/s (default 50)")
    r.add_argument("--smooth", type=int, default=0, help="Savitzky-Golay window in samples (odd; 0 = none)")
    r.add_argument("--clusters", type=int, default=0, help="cluster reach paths by DTW into N groups")
    r.add_argument(
        "--out", type=Path, help="output folder (default SESSION/analysis/reaching, or next to the file)"
    )
    r.set_defaults(func=_cmd_reaching)

    tc = subparsers.add_parser(
        "three-chamber", help="three-chamber sociability from a pose file (DLC/SLEAP/OpenPose)"
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
    tc.add_argument("--out", type=Path, required=True)
    tc.set_defaults(func=_cmd_three_chamber)

    tg = subparsers.add_parser(
        "three-chamber-geometry",
        help="pick three-chamber geometry on a video frame or image (Qt window); writes the YAML",
        description="Drag out the chamber rectangles and click each cup's centre then a point on its rim "
        "(or drag centre -> rim). Keys: number keys choose the item, Tab next, z/Backspace undo, Esc cancel, "
        "+/- interaction margin, s save, q save and quit. An existing --out file is opened for editing.",
    )
    tg.add_argument("source", type=Path, help="video or image of the arena")
    tg.add_argument("--out", type=Path, required=True, help="geometry YAML to write (read by three-chamber)")
    tg.add_argument("--frame", type=int, default=0, help="video frame index to show (default 0)")
    tg.add_argument(
        "--chambers", default="left,center,right", help="chamber names (default left,center,right)"
    )
    tg.add_argument(
        "--cups",
        default="left_cup,right_cup",
        help="cup names, default left_cup,right_cup; the first is A of the sociability index (A-B)/(A+B)",
    )
    tg.add_argument(
        "--margin", type=float, help="interaction margin in pixels (default 20, or the --out file's)"
    )
    tg.set_defaults(func=_cmd_three_chamber_geometry)

    so = subparsers.add_parser("social", help="two-mouse interaction from a multi-animal pose file")
    so.add_argument(
        "pose", type=Path, help="multi-animal DeepLabCut or SLEAP (.h5/.slp) file (2 individuals)"
    )
    so.add_argument("--video", type=_video_choice, help=VIDEO_HELP)
    so.add_argument("--fps", type=float, required=True, help="video frame rate")
    so.add_argument("--threshold", type=float, required=True, help="close-contact body-centre distance")
    so.add_argument("--parts", default="nose,center,tail", help="nose,center,tail part names in the file")
    so.add_argument("--out", type=Path, required=True)
    so.set_defaults(func=_cmd_social)

    nw = subparsers.add_parser(
        "nwb-export", help="export a recorded session folder to NWB (pynwb + ndx-pose)"
    )
    nw.add_argument("session", type=Path, help="session folder")
    nw.add_argument("--out", type=Path, help="output .nwb (default SESSION/SESSION_NAME.nwb)")
    nw.add_argument("--species", default="Mus musculus")
    nw.set_defaults(func=_cmd_nwb)

    hu = subparsers.add_parser(
        "human", help="3-D arm angles from OpenPose JSON of two or more calibrated views"
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
    hu.add_argument("--fps", type=float, required=True, help="video frame rate")
    hu.add_argument("--out", type=Path, required=True)
    hu.set_defaults(func=_cmd_human)

    po = subparsers.add_parser(
        "pose",
        help="2-D body (and hand) keypoints from a video with MediaPipe, written as OpenPose JSON",
        description="Runs MediaPipe 0.10.14 (models from inside the installed wheel, never a download) on "
        "every frame and writes OUT/<video stem>_<frame:012d>_keypoints.json in OpenPose's format (BODY_25, "
        "21-point hands), read by 'human' and the OpenPose importer. Mapping: analysis/POSE_RUNNER.md.",
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
    po.set_defaults(func=_cmd_pose)


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
        res = analyze_reaching(
            track.t_s,
            track.xyz,
            track.trials,
            out_dir=out,
            n_clusters=args.clusters,
            info=track.info,
            onset_speed_mm_s=args.onset_speed,
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

    from analysis.io.pose import read_pose
    from analysis.tasks.social import load_three_chamber_geometry, plot_three_chamber, three_chamber

    try:
        geom = load_three_chamber_geometry(args.geometry)
        table = read_pose(args.pose, video=args.video).contiguous()
        head = table.part(args.part)
        t = np.arange(len(head)) / args.fps
        res = three_chamber(t, head, geom)
    except AnalysisError as exc:
        return _fail(exc)
    summary = {
        k: res[k] for k in ("occupancy_s", "transitions", "sociability_index", "distance", "mean_speed")
    }
    summary["cups"] = {}
    for cup, d in res["cups"].items():
        bouts_s = [[s / args.fps, e / args.fps] for s, e in d["bouts"]]
        summary["cups"][cup] = {k: v for k, v in d.items() if k != "bouts"} | {"bouts_s": bouts_s}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "three_chamber.json").write_text(json.dumps(summary, indent=1, default=float))
    plot_three_chamber(head, geom, args.out / "trajectory.png")
    print(json.dumps(summary, indent=1, default=float))
    return 0


def _cmd_three_chamber_geometry(args: argparse.Namespace) -> int:
    from analysis.tasks.three_chamber_pick import pick_geometry

    try:
        geom = pick_geometry(
            args.source,
            args.out,
            frame=args.frame,
            chambers=[n.strip() for n in args.chambers.split(",")],
            cups=[n.strip() for n in args.cups.split(",")],
            margin=args.margin,
        )
    except AnalysisError as exc:
        return _fail(exc)
    if geom is None:
        print(f"closed without saving: {args.out} not written", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


def _cmd_social(args: argparse.Namespace) -> int:
    import numpy as np

    from analysis.io.pose import read_pose
    from analysis.tasks.social import plot_contact_distance, repair_identities, two_mouse_interaction

    try:
        names = [p.strip() for p in args.parts.split(",")]
        if len(names) != 3:
            raise AnalysisError(f"--parts {args.parts!r}: expected nose,center,tail")
        table = read_pose(args.pose, video=args.video).contiguous()
        if len(table.individuals) != 2:
            raise AnalysisError(f"{args.pose}: {len(table.individuals)} individuals, expected 2")
        _, _, swapped = repair_identities(table.part(names[1], 0), table.part(names[1], 1))
        parts = []
        for who in (0, 1):
            d = {
                role: table.part(n, who).copy()
                for role, n in zip(("nose", "center", "tail"), names, strict=True)
            }
            parts.append(d)
        for role in ("nose", "center", "tail"):  # apply the identity repair to every part
            pa, pb = parts[0][role], parts[1][role]
            pa[swapped], pb[swapped] = pb[swapped].copy(), pa[swapped].copy()
        t = np.arange(table.n_frames) / args.fps
        res = two_mouse_interaction(t, parts[0], parts[1], args.threshold)
    except AnalysisError as exc:
        return _fail(exc)
    args.out.mkdir(parents=True, exist_ok=True)
    epochs = [
        {"start_s": s / args.fps, "end_s": e / args.fps, "type": k, "min_distance": d}
        for s, e, k, d in res["epochs"]
    ]
    summary = {"individuals": table.individuals, "frames_swapped": int(swapped.sum()), "epochs": epochs}
    (args.out / "social.json").write_text(json.dumps(summary, indent=1, default=float))
    plot_contact_distance(t, res, args.threshold, args.out / "distance.png")
    print(json.dumps(summary, indent=1, default=float))
    return 0


def _cmd_human(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from analysis.camera import load_calibration
    from analysis.io.pose import read_openpose
    from analysis.tasks.human import (
        elbow_angle,
        plot_angles,
        point_speed,
        segment_repetitions,
        shoulder_angle,
        supination_angle,
        triangulate_keypoints,
    )

    side, hand = args.side, "hand_right" if args.side == "R" else "hand_left"
    try:
        calib = load_calibration(args.calibration)
        tables = {}
        for item in args.camera:
            name, sep, folder = item.partition("=")
            if not sep:
                raise AnalysisError(f"--camera {item!r}: expected NAME=FOLDER")
            calib[name]  # fails early, naming the calibration file, if the camera is not in it
            tables[name] = read_openpose(folder, parts=("pose", hand))
        xyz, err = triangulate_keypoints(calib, tables)
        parts = next(iter(tables.values())).bodyparts

        def kp(n: str) -> np.ndarray:
            return xyz[:, parts.index(n)]

        t = np.arange(len(xyz)) / args.fps
        sh, el, wr = kp(f"{side}Shoulder"), kp(f"{side}Elbow"), kp(f"{side}Wrist")
        table = pd.DataFrame(
            {
                "t_s": t,
                "elbow_angle_deg": elbow_angle(sh, el, wr),
                "shoulder_angle_deg": shoulder_angle(kp("MidHip"), sh, el),
                "supination_deg": supination_angle(el, wr, kp(f"{hand}_Index1"), kp(f"{hand}_Pinky1")),
                "wrist_speed_mm_s": point_speed(t, wr),
                "elbow_speed_mm_s": point_speed(t, el),
                "reprojection_px": np.nanmedian(err, axis=(0, 2)),
            }
        )
    except AnalysisError as exc:
        return _fail(exc)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "arm_angles.csv", index=False)
    angles = {c.replace("_deg", ""): table[c].to_numpy() for c in table.columns if c.endswith("_deg")}
    reps = segment_repetitions(table["t_s"].to_numpy(), angles["elbow_angle"], min_prominence=20.0)
    plot_angles(table["t_s"].to_numpy(), angles, args.out / "arm_angles.png", reps)
    print(table.describe().T[["mean", "min", "max"]].to_string())
    return 0


def _cmd_pose(args: argparse.Namespace) -> int:
    from analysis.pose_runner import run_pose

    try:
        res = run_pose(
            args.video,
            args.out,
            hands=args.hands,
            max_frames=args.max_frames,
            mirrored=args.mirrored,
            overwrite=args.overwrite,
        )
    except AnalysisError as exc:
        return _fail(exc)
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
