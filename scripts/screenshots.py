#!/usr/bin/env python
"""Retake the README's screenshots (docs/display-live.png, docs/display-review.png) from a real simulated
session: the live window attached through the session's TCP bridge, then the review viewer on the
recorded session. Qt draws offscreen (no screen needed).

Usage: ``python scripts/screenshots.py [--out docs] [--trials 4]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "rig.cli"]


def _reach_frame(session_dir: Path) -> int:
    """Frame index (recorded frames of the first camera) where trial 2's paw comes closest to the pellet."""
    import numpy as np

    from rig.session import load_session

    s = load_session(session_dir)
    trial = next(t for t in s.trials if int(t["trial"]) == 2)
    p = s.points3d
    t0, t1 = int(trial["t_start_ns"]), int(trial["t_end_ns"])
    sel = (p["valid"] == 1) & (p["t_frame_ns"] >= t0) & (p["t_frame_ns"] <= t1)
    d = np.linalg.norm(np.stack([p["x"], p["y"], p["z"]], 1)[sel], axis=1)  # the pellet is the origin
    trigger = int(p["trigger_index"][sel][int(np.argmin(d))])
    table = s.frames[s.cameras[0]]
    recorded = table["trigger_index"][table["video_index"] >= 0]
    return int(np.searchsorted(recorded, trigger))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs")
    ap.add_argument("--trials", type=int, default=20, help="enough that the session outlives the live window")
    ap.add_argument("--live-seconds", type=float, default=15.0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    with tempfile.TemporaryDirectory(prefix="screenshots-") as tmp:
        run = subprocess.Popen(
            [*CLI, "run", "--quiet", "--output", tmp, "--trials", str(args.trials)]
            + ["--set", "pipeline.bridge.enabled=true"],
            cwd=REPO,
            env=env,
        )
        deadline = time.monotonic() + 120
        bridge = None
        while bridge is None and time.monotonic() < deadline and run.poll() is None:
            bridge = next(Path(tmp).glob("*/bridge.json"), None)
            time.sleep(0.2)
        if bridge is None:
            run.kill()
            print("error: the session never opened its bridge", file=sys.stderr)
            return 1
        time.sleep(3.0)  # the trigger running and a trial under way
        live = subprocess.run(
            [
                *CLI,
                "display",
                "--session",
                str(bridge.parent),
                "--nice",
                "0",
                "--seconds",
                str(args.live_seconds),
            ]
            + ["--screenshot", str(args.out / "display-live.png")],
            cwd=REPO,
            env=env,
        )
        if run.wait(300) != 0 or live.returncode != 0:
            print("error: the session or the display failed", file=sys.stderr)
            return 1
        frame = _reach_frame(bridge.parent)
        review = subprocess.run(
            [*CLI, "review", str(bridge.parent), "--frame", str(frame), "--seconds", "2"]
            + ["--screenshot", str(args.out / "display-review.png")],
            cwd=REPO,
            env=env,
        )
        if review.returncode != 0:
            return 1
    print(f"wrote {args.out / 'display-live.png'} and {args.out / 'display-review.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
