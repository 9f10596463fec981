"""``deepbehavior display --connect HOST:PORT`` and ``deepbehavior review SESSION``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from rig.errors import InputError, RigError, StorageError

log = logging.getLogger(__name__)


def _need_screen() -> None:
    if not (
        os.environ.get("QT_QPA_PLATFORM") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise InputError("no screen: DISPLAY is not set (use QT_QPA_PLATFORM=offscreen with --screenshot)")


def cmd_display(args: argparse.Namespace) -> int:
    if args.nice:
        os.nice(args.nice)  # first (before Qt loads): on the rig machine itself the pipeline comes first
    from rig.bridge import BridgeClient, read_bridge_file
    from rig.display.model import LiveState, zones_from_bridge_info
    from rig.display.sources import BridgeSource
    from rig.display.window import LiveWindow, qt_app, run_qt

    _need_screen()
    endpoint = args.connect or read_bridge_file(args.session)
    app = qt_app()
    client = BridgeClient(endpoint)
    try:
        info = client.connect(timeout_s=args.timeout)
    except RigError as exc:
        # the window shows the reason too, then the command exits with it
        win = LiveWindow(LiveState([]), None, title=f"DeepBehavior live: {endpoint}")
        win.show_error(f"cannot attach to {endpoint}: {exc}")
        run_qt(win, seconds=args.error_linger)
        if args.screenshot:
            win.screenshot(args.screenshot)
        win.close()
        raise
    cams = list(info.cameras)
    state = LiveState(cams, info.calibration)
    for c, size in info.cameras.items():
        state.views[c].full_size = size
    state.seed(info.raw.get("task", {}), int(info.raw.get("t_start_ns", -1)))
    state.zones, state.pellet_configured = zones_from_bridge_info(info.raw)
    win = LiveWindow(state, BridgeSource(client), rate_hz=args.rate, title=f"DeepBehavior live: {endpoint}")
    print(
        f"attached to {endpoint}: session {info.session_id}, cameras {', '.join(cams)}, "
        f"downscale {info.downscale}",
        flush=True,
    )
    run_qt(win, seconds=args.seconds)
    if args.screenshot and not win.screenshot(args.screenshot):
        raise StorageError(f"{args.screenshot}: cannot write the screenshot (does its folder exist?)")
    drops = ", ".join(f"{c} {n}" for c, n in client.drops.items()) or "none"
    print(f"frames received {sum(client.frames.values())}, lost by this display: {drops}", flush=True)
    if state.error:
        print(f"deepbehavior: error: {state.error}", file=sys.stderr)
    win.close()
    client.close()
    del app
    return 1 if state.error else 0


def cmd_review(args: argparse.Namespace) -> int:
    from rig.display.review import ReviewWindow
    from rig.display.window import qt_app, run_qt
    from rig.session import load_session

    _need_screen()
    session = load_session(args.session)
    app = qt_app()
    win = ReviewWindow(session)
    if args.trial is not None:
        win.select_trial(args.trial)
    if args.frame is not None:
        win.slider.setValue(args.frame)
    run_qt(win, seconds=args.seconds)
    if args.screenshot and not win.screenshot(args.screenshot):
        raise StorageError(f"{args.screenshot}: cannot write the screenshot (does its folder exist?)")
    win.close()
    del app
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = subparsers.add_parser(
        "display",
        help="live display of a running session, through its TCP bridge (possibly from another machine)",
        description="Attach the live display to a running session's bridge (pipeline.bridge.enabled).",
    )
    where = d.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--connect", metavar="HOST:PORT", help="the bridge endpoint (see <session>/bridge.json)"
    )
    where.add_argument("--session", metavar="DIR", help="a running session's folder on this machine")
    d.add_argument("--rate", type=float, default=40.0, help="display refresh rate, Hz (default 40)")
    d.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the bridge (default 5)")
    d.add_argument("--seconds", type=float, help="close after this many seconds (default: when closed)")
    d.add_argument("--screenshot", metavar="PNG", help="save the window to PNG when it closes")
    d.add_argument("--nice", type=int, default=10, help="CPU niceness of the display (default 10; 0 on a PC)")
    d.add_argument("--error-linger", type=float, default=3.0, help=argparse.SUPPRESS)
    d.set_defaults(func=cmd_display)
    r = subparsers.add_parser(
        "review",
        help="review a recorded session: frames with recorded detections and 3-D, frame slider, trial list",
    )
    r.add_argument("session", help="session folder")
    r.add_argument("--trial", type=int, help="open at this trial")
    r.add_argument("--frame", type=int, help="open at this frame index")
    r.add_argument("--seconds", type=float, help="close after this many seconds (default: when closed)")
    r.add_argument("--screenshot", metavar="PNG", help="save the window to PNG when it closes")
    r.set_defaults(func=cmd_review)

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


def _cmd_three_chamber_geometry(args: argparse.Namespace) -> int:
    from rig.display.three_chamber_pick import pick_geometry

    geom = pick_geometry(
        args.source,
        args.out,
        frame=args.frame,
        chambers=[n.strip() for n in args.chambers.split(",")],
        cups=[n.strip() for n in args.cups.split(",")],
        margin=args.margin,
    )
    if geom is None:
        print(f"closed without saving: {args.out} not written", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0
