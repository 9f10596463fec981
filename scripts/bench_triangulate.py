#!/usr/bin/env python3
"""Triangulation throughput: analysis.geometry.triangulate (batched closed-form DLT, vectorized undistortion)
vs the previous per-point SVD DLT and aniposelib's CameraGroup.triangulate, measured in the same run on the
same points (distorted pixels, undistortion included in all).

Batch: points/s for one call on N points (offline reanalysis). The methods take turns call by call, so a
load change on the machine hits all alike. Per frame: microseconds for one call on 2 points (the online
triangulator; short inputs use the SVD, which is faster there). Median and p99 over repeats. Writes the
BENCHMARKS.md block "triangulate-batched".
    python scripts/bench_triangulate.py --points 100000 --repeats 9
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

from analysis import geometry
from analysis.camera import CameraModel, camera_ring
from analysis.geometry import triangulate


def cameras(n: int) -> list[CameraModel]:
    return camera_ring(n, distortion=(-0.2, 0.05, 0, 0, 0))


HEADER = (
    "| cameras | method | batch points/s (median) | batch points/s (p99 call) | vs aniposelib (median) "
    "| per-frame us p50 | per-frame us p99 | max diff mm |"
)


def svd_triangulate(cams: list[CameraModel], obs: np.ndarray) -> np.ndarray:
    """The previous implementation: one SVD per point (kept in analysis.geometry for short inputs)."""
    saved = geometry._SVD_BELOW
    geometry._SVD_BELOW = 1 << 62
    try:
        return triangulate(cams, obs)
    finally:
        geometry._SVD_BELOW = saved


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=100_000, help="points per batch call")
    ap.add_argument("--repeats", type=int, default=9, help="batch calls per method")
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
        methods = {
            "analysis.geometry.triangulate (batched DLT)": lambda o, cams=cams: triangulate(cams, o),
            "per-point SVD DLT (previous)": lambda o, cams=cams: svd_triangulate(cams, o),
            "aniposelib triangulate": lambda o, g=group: g.triangulate(o, undistort=True, progress=False),
        }
        results = {name: fn(obs) for name, fn in methods.items()}  # also warms aniposelib's numba code
        theirs = results["aniposelib triangulate"]
        batch: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.repeats):  # round robin: each method once per round
            for name, fn in methods.items():
                batch[name] += timed(lambda fn=fn, o=obs: fn(o), 1)
        ref = np.asarray(batch["aniposelib triangulate"])
        for name, fn in methods.items():
            diff = float(np.nanmax(np.abs(results[name] - theirs)))
            per_frame = timed(lambda fn=fn, o=obs[:, :2]: fn(o), args.frames)
            b50, b99 = pct(batch[name])
            f50, f99 = pct([t * 1e6 for t in per_frame])
            rows.append(
                f"| {n_cams} | {name} | {args.points / b50:,.0f} | {args.points / b99:,.0f} | "
                f"{np.median(ref / np.asarray(batch[name])):.1f}x | {f50:.0f} | {f99:.0f} | {diff:.1e} |"
            )
            print(rows[-1], flush=True)
    text = f"""## Triangulation, batched DLT: analysis.geometry vs its SVD DLT and aniposelib (same run)
Command: `python scripts/bench_triangulate.py {" ".join(sys.argv[1:])}`
Machine: {machine()}
Distorted pixel input (k1 -0.2, k2 0.05) with 0.3 px noise, undistortion included; batch = one call on
{args.points:,} points, the three methods taking turns ({args.repeats} calls each; points/s at the median and
at the p99 call time; "vs aniposelib" = median over rounds of aniposelib's call time / this method's in the
same round, robust to the machine's load changing between rounds); per frame = one call
on 2 points (us, median / p99). "max diff" = largest coordinate difference from aniposelib's result (mm).

{HEADER}
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    print(text)
    if not args.no_write:
        write_block("triangulate-batched", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
