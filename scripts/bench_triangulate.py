#!/usr/bin/env python3
"""Triangulation throughput: analysis.geometry.triangulate vs aniposelib's CameraGroup.triangulate, measured
in the same run on the same points (distorted pixels, undistortion included in both).

Batch: points/s for one call on N points (offline reanalysis). Per frame: microseconds for one call on a
few points (the online triangulator). Median and p99 over repeats. Writes BENCHMARKS.md block "triangulate".
    python scripts/bench_triangulate.py --points 20000 --repeats 7
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine, pct, write_block

from analysis.camera import CameraModel, camera_ring
from analysis.geometry import triangulate


def cameras(n: int) -> list[CameraModel]:
    return camera_ring(n, distortion=(-0.2, 0.05, 0, 0, 0))


HEADER = (
    "| cameras | method | batch points/s (median) | batch points/s (p99 call) | per-frame us p50 "
    "| per-frame us p99 | max diff mm |"
)


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=20000, help="points per batch call")
    ap.add_argument("--repeats", type=int, default=7, help="batch calls per method")
    ap.add_argument("--frames", type=int, default=1000, help="per-frame calls (2 points each)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from aniposelib.cameras import Camera, CameraGroup

    rng = np.random.default_rng(0)
    rows = []
    for n_cams in (2, 4):
        cams = cameras(n_cams)
        group = CameraGroup(
            [
                Camera(name=c.name, size=c.size, matrix=c.matrix, dist=c.dist, rvec=c.rvec, tvec=c.tvec)
                for c in cams
            ]
        )
        pts = rng.uniform([-30, -30, 270], [30, 30, 330], (args.points, 3))
        obs = np.stack([c.project(pts) for c in cams]) + rng.normal(0, 0.3, (n_cams, args.points, 2))
        ours = triangulate(cams, obs)
        theirs = group.triangulate(obs, undistort=True, progress=False)
        diff = float(np.nanmax(np.abs(ours - theirs)))
        methods = {
            "analysis.geometry.triangulate": lambda o, cams=cams: triangulate(cams, o),
            "aniposelib triangulate": lambda o, g=group: g.triangulate(o, undistort=True, progress=False),
        }
        for name, fn in methods.items():
            reps = args.repeats if name.startswith("analysis") else max(3, args.repeats // 2)
            small = obs[:, :2]
            batch = timed(lambda fn=fn, o=obs: fn(o), reps)
            per_frame = timed(lambda fn=fn, o=small: fn(o), args.frames)
            b50, b99 = pct(batch)
            f50, f99 = pct([t * 1e6 for t in per_frame])
            rows.append(
                f"| {n_cams} | {name} | {args.points / b50:,.0f} | {args.points / b99:,.0f} | {f50:.0f} | "
                f"{f99:.0f} | {diff:.1e} |"
            )
            print(rows[-1], flush=True)
    text = f"""## Triangulation: analysis.geometry vs aniposelib (same run, same points)
Command: `python scripts/bench_triangulate.py {" ".join(sys.argv[1:])}`
Machine: {machine()}
Distorted pixel input with 0.3 px noise, undistortion included; batch = one call on {args.points} points
(points/s at the median and at the p99 call time); per frame = one call on 2 points (us, median / p99).
"max diff" = largest coordinate difference between the two libraries' results (mm).

{HEADER}
|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    print(text)
    if not args.no_write:
        write_block("triangulate", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
