#!/usr/bin/env python3
"""Sustained frame rate and drops of each camera backend available on this machine.

For each backend: open a (virtual) camera at 448x460 Mono8, free-run at the requested rate for N
seconds through the project's own backend, and report achieved fps, lost and incomplete frames, and the
host inter-frame interval (median / p99 / max). Backends whose SDK or virtual camera is missing are
listed with the reason. Writes BENCHMARKS.md block "cameras".

    python scripts/bench_cameras.py --seconds 10 --fps 124
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PYLON_CAMEMU", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchlib import machine, pct, write_block

from rig.cameras.base import CameraBackend, StreamEnded, make_backend
from rig.config import CameraConfig
from rig.errors import RigError

GV_SERIAL = "BENCH01"


def measure(cam: CameraBackend, seconds: float) -> dict[str, Any]:
    cam.open()
    try:
        cam.configure()
        cam.start()
        t_end = time.monotonic() + seconds
        ts, lost, incomplete = [], 0, 0
        while time.monotonic() < t_end:
            try:
                f = cam.grab(2.0)
            except StreamEnded:
                break
            ts.append(f.t_host_ns)
            lost += f.lost_before
            incomplete += int(f.incomplete)
        stats = cam.stream_stats()
        cam.stop()
    finally:
        cam.close()
    dt_ms = np.diff(np.array(ts, dtype=np.int64)) / 1e6
    p50, p99 = pct(dt_ms)
    return {
        "frames": len(ts),
        "fps": (len(ts) - 1) / ((ts[-1] - ts[0]) / 1e9) if len(ts) > 1 else 0.0,
        "lost": lost,
        "incomplete": incomplete,
        "p50": p50,
        "p99": p99,
        "max": float(dt_ms.max()) if dt_ms.size else float("nan"),
        "stats": stats,
    }


def video_file(tmp: Path, n: int) -> Path:
    import cv2

    path = tmp / "bench.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (448, 460))
    rng = np.random.default_rng(0)
    for _ in range(n):
        w.write(rng.integers(0, 255, (460, 448, 3), np.uint8))
    w.release()
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=float, default=124.0, help="requested free-run rate")
    ap.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = ap.parse_args()
    fps = args.fps
    rows: list[tuple[str, str, dict[str, Any] | str]] = []
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_cameras_"))
    try:
        fake = shutil.which("arv-fake-gv-camera-0.8")
        if fake:
            procs.append(
                subprocess.Popen(
                    [fake, "-i", "127.0.0.1", "-s", GV_SERIAL],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            time.sleep(1.0)
        viky = None
        try:
            from rig.cameras.genicam import viky_cti

            viky = viky_cti()
        except ImportError:
            pass
        cases: list[tuple[str, str, CameraConfig | str]] = [
            (
                "aravis",
                "arv-fake-gv-camera-0.8 on 127.0.0.1 (GigE Vision over UDP)",
                CameraConfig(backend="aravis", serial=GV_SERIAL, hardware_trigger=False, options={"fps": fps})
                if fake
                else "arv-fake-gv-camera-0.8 not installed",
            ),
            (
                "aravis",
                "Aravis in-process Fake camera",
                CameraConfig(
                    backend="aravis",
                    serial="1",
                    hardware_trigger=False,
                    options={"fps": fps, "fake_interface": True},
                ),
            ),
            (
                "genicam",
                "Harvesters + viky.cti (GenTL virtual camera)",
                CameraConfig(
                    backend="genicam",
                    serial="0",
                    hardware_trigger=False,
                    options={"cti": str(viky), "fps": fps, "ignore_missing": ["ExposureTime"]},
                )
                if viky
                else "viky.cti not installed",
            ),
            (
                "basler",
                "pypylon camera emulator (PYLON_CAMEMU)",
                CameraConfig(backend="basler", hardware_trigger=False, options={"fps": fps}),
            ),
            (
                "opencv",
                "MJPG video file paced at 30 fps (webcam stand-in)",
                CameraConfig(
                    backend="opencv",
                    hardware_trigger=False,
                    options={"device": str(video_file(tmp, int(30 * args.seconds) + 5)), "fps": 30},
                ),
            ),
            ("spinnaker", "FLIR camera", "PySpin (FLIR Spinnaker SDK) not installed here"),
        ]
        for backend, what, c in cases:
            if isinstance(c, str):
                rows.append((backend, what, c))
                continue
            try:
                rows.append((backend, what, measure(make_backend("bench", c), args.seconds)))
            except (RigError, ImportError) as exc:
                rows.append((backend, what, f"not measured: {exc}"))
            r = rows[-1][2]
            print(backend, what, r if isinstance(r, str) else {k: v for k, v in r.items() if k != "stats"})
    finally:
        for p in procs:
            p.terminate()
            p.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)

    lines = [
        f"## Cameras: sustained free-run rate, 448x460 Mono8, {args.seconds:g} s per backend",
        "",
        f"Command: `python scripts/bench_cameras.py --seconds {args.seconds:g} --fps {fps:g}`",
        f"Machine: {machine()}",
        "Virtual cameras only (no camera hardware here); the host inter-frame interval is measured where the",
        "backend's grab() returns. Lost = frame-id gaps; incomplete = frames with missing packets/bytes.",
        "",
        "| backend | camera | requested fps | achieved fps | frames | lost | incomplete "
        "| interval p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backend, what, r in rows:
        req = "30" if backend == "opencv" else f"{fps:g}"
        if isinstance(r, str):
            lines.append(f"| {backend} | {what} | {req} | {r} | | | | | | |")
        else:
            lines.append(
                f"| {backend} | {what} | {req} | {r['fps']:.1f} | {r['frames']} | {r['lost']} "
                f"| {r['incomplete']} "
                f"| {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.2f} |"
            )
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_block("cameras", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
