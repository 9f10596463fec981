#!/usr/bin/env python3
"""3-D accuracy of the triangulation modes on synthetic truth with realistic 2-D errors, beside aniposelib
in the same run: plain DLT, RANSAC over views, temporal smoothing, both (robust + smooth), and the
spatiotemporal optimization (``triangulate --optim``, with and without a skeleton) beside aniposelib's
``triangulate`` and ``triangulate_optim``.

A body of 12 keypoints moves smoothly for T frames at 100 Hz in front of a ring of cameras (k1 -0.2 lens
distortion). Every view's 2-D point gets 1 px Gaussian noise; on top, per view and point: 3 % gross errors
(20-100 px away, confidence drawn as for good points but lower on average), 2 % swaps (the point lands on
another keypoint, with a good confidence), 5 % misses (NaN or confidence < 0.3). Error = distance from the
true 3-D point (mm) over all points a method outputs; "output" = the fraction it outputs.
Runs on one core (BLAS limited to one thread: the issue's target is per core).
Writes the BENCHMARKS.md block "triangulate-accuracy".
    python scripts/bench_triangulate_accuracy.py --frames 2000
"""

from __future__ import annotations

import argparse
import os
import sys

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine, write_block  # noqa: E402

from analysis.camera import Calibration, camera_ring  # noqa: E402
from analysis.io.pose import PoseTable  # noqa: E402
from analysis.triangulate import OptimSettings, optimize_tracks, smooth_tracks, triangulate_views  # noqa: E402

N_KP = 12
SKELETON = [(f"kp{k}", f"kp{k + 1}") for k in range(N_KP - 1)]  # lengths vary: a soft body
FPS = 100.0


def truth(n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """(T, K, 3) mm: a smooth random path of the body centre plus keypoints on a turning, flexing body."""
    t = np.arange(n_frames) / FPS
    freqs = rng.uniform(0.2, 1.5, (3, 3))
    phases = rng.uniform(0, 2 * np.pi, (3, 3))
    amp = np.array([20.0, 20.0, 12.0])
    centre = np.stack(
        [
            amp[d] * np.sin(2 * np.pi * freqs[d][:, None] * t + phases[d][:, None]).sum(0) / 3
            for d in range(3)
        ],
        axis=1,
    ) + [0, 0, 300]
    heading = 0.8 * np.sin(2 * np.pi * 0.3 * t)
    offsets = rng.uniform([-25, -10, -8], [25, 10, 8], (N_KP, 3))
    c, s = np.cos(heading), np.sin(heading)
    rot = np.zeros((n_frames, 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1
    wiggle = 3 * np.sin(2 * np.pi * 2.0 * t[:, None, None] + np.arange(N_KP)[None, :, None])
    return centre[:, None] + np.einsum("tij,kj->tki", rot, offsets) + wiggle


def observe(calib: Calibration, xyz: np.ndarray, rng: np.random.Generator) -> dict[str, PoseTable]:
    """One PoseTable per camera with the realistic errors described in the module docstring."""
    n_t, n_k, _ = xyz.shape
    tables = {}
    for name, cam in calib.cameras.items():
        px = cam.project(xyz.reshape(-1, 3)).reshape(n_t, n_k, 2)
        px += rng.normal(0, 1.0, px.shape)
        conf = rng.beta(8, 2, (n_t, n_k))  # good points: mostly 0.6-1.0
        u = rng.random((n_t, n_k))
        gross = u < 0.03
        n = int(gross.sum())
        px[gross] += rng.uniform(20, 100, (n, 1)) * _unit(rng.normal(size=(n, 2)))
        conf[gross] = rng.beta(4, 3, n)  # lower on average, overlapping the good ones
        swap = (u >= 0.03) & (u < 0.05)
        t_idx, k_idx = np.nonzero(swap)
        px[t_idx, k_idx] = px[t_idx, (k_idx + rng.integers(1, n_k, len(k_idx))) % n_k]
        miss = (u >= 0.05) & (u < 0.10)
        px[miss & (u < 0.075)] = np.nan
        conf[miss & (u >= 0.075)] = rng.uniform(0.0, 0.3, int((miss & (u >= 0.075)).sum()))
        tables[name] = PoseTable(
            px[:, None], conf[:, None], [f"kp{k}" for k in range(n_k)], ["a"], np.arange(n_t)
        )
    return tables


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def score(est: np.ndarray, true: np.ndarray) -> tuple[float, float, float, float]:
    err = np.linalg.norm(est - true, axis=-1).ravel()
    ok = np.isfinite(err)
    e = err[ok]
    return float(np.median(e)), float(np.percentile(e, 90)), float(np.percentile(e, 99)), float(ok.mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=3000, help="frames (100 Hz)")
    ap.add_argument("--ransac-px", type=float, default=8.0, help="RANSAC reprojection threshold (px)")
    ap.add_argument("--window", type=int, default=7, help="smoothing window (frames, odd)")
    ap.add_argument(
        "--anipose-optim-frames",
        type=int,
        default=None,
        help="run aniposelib's triangulate_optim on the first N frames only (default: all)",
    )
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from aniposelib.cameras import Camera, CameraGroup

    rows = []
    hour: dict[str, float] = {}  # 4 cameras: seconds for an hour of 15 keypoints at 100 Hz at that rate
    found: dict[tuple[int, str], tuple[float, float]] = {}  # (cameras, method) -> median, p90 mm
    for n_cams in (2, 4):
        rng = np.random.default_rng(n_cams)
        cams = camera_ring(n_cams, distortion=(-0.2, 0.05, 0, 0, 0))
        calib = Calibration({c.name: c for c in cams}, reference=cams[0].name)
        true = truth(args.frames, rng)
        tables = observe(calib, true, rng)

        def ours(
            ransac: float | None, smooth: bool, optim: int = 0, tables=tables, calib=calib
        ) -> np.ndarray:
            res = triangulate_views(calib, tables, min_confidence=0.3, ransac_px=ransac)
            if smooth:
                res = smooth_tracks(res, window=args.window, max_gap=5)
            if optim:
                res = optimize_tracks(res, SKELETON if optim == 2 else ())
            return res.xyz[:, 0]

        group = CameraGroup(
            [
                Camera(name=c.name, size=c.size, matrix=c.matrix, dist=c.dist, rvec=c.rvec, tvec=c.tvec)
                for c in cams
            ]
        )
        obs = np.stack([tables[c.name].points[:, 0].reshape(-1, 2) for c in cams])
        conf = np.stack([tables[c.name].confidence[:, 0].reshape(-1) for c in cams])
        obs_cut = np.where((conf >= 0.3)[..., None], obs, np.nan)
        group.triangulate(obs_cut[:, :50], undistort=True, progress=False)  # numba compiles here, untimed

        def anipose(obs_cut=obs_cut, group=group) -> np.ndarray:
            return group.triangulate(obs_cut, undistort=True, progress=False).reshape(args.frames, N_KP, 3)

        n_opt = min(args.anipose_optim_frames or args.frames, args.frames)
        obs_opt = obs_cut.reshape(n_cams, args.frames, N_KP, 2)[:, :n_opt]
        group.triangulate_optim(obs_opt[:, :20], init_progress=False)  # numba compiles here, untimed

        def anipose_optim(obs_opt=obs_opt, group=group, n_opt=n_opt) -> np.ndarray:
            out = np.full((args.frames, N_KP, 3), np.nan)
            # its defaults (scale_smooth 4 on velocity, soft-L1 at 15 px); no constraints: see the notes
            out[:n_opt] = group.triangulate_optim(obs_opt, init_ransac=False, init_progress=False)
            return out

        methods = {
            "DLT, confidence-weighted (analysis.triangulate)": lambda: ours(None, False),
            "RANSAC over views": lambda: ours(args.ransac_px, False),
            f"DLT + temporal (outliers, gaps <= 5, Savitzky-Golay {args.window})": lambda: ours(None, True),
            f"robust + smooth: RANSAC + temporal ({args.window})": lambda: ours(args.ransac_px, True),
            "optim: robust + smooth, then spatiotemporal optimization (`--optim`)": lambda: ours(
                args.ransac_px, True, 1
            ),
            "optim with a skeleton of 11 pairs (`--optim --skeleton`)": lambda: ours(args.ransac_px, True, 2),
            "aniposelib triangulate (plain, same confidence cut)": anipose,
            "aniposelib triangulate_optim (defaults, same cut)"
            + (f", first {n_opt} frames" if n_opt < args.frames else ""): anipose_optim,
        }
        for name, fn in methods.items():
            t0 = time.perf_counter()
            est = fn()
            dt = time.perf_counter() - t0
            n_scored = n_opt if name.startswith("aniposelib triangulate_optim") else args.frames
            med, p90, p99, out = score(est[:n_scored], true[:n_scored])
            rows.append(
                f"| {n_cams} | {name} | {med:.3f} | {p90:.3f} | {p99:.2f} | {100 * out:.1f} % | "
                f"{n_scored * N_KP / dt:,.0f} |"
            )
            key = name.split(":")[0].split(" (")[
                0
            ]  # "robust + smooth", "optim", "aniposelib triangulate", ...
            found[n_cams, key] = (med, p90)
            if n_cams == 4:
                hour[key] = 3600 * 100 * 15 / (n_scored * N_KP / dt)
            print(rows[-1], flush=True)
    verdict = []
    for n_cams in (2, 4):
        o, r = found[n_cams, "optim"], found[n_cams, "robust + smooth"]
        p, a = found[n_cams, "DLT, confidence-weighted"], found[n_cams, "aniposelib triangulate_optim"]
        better = "beats" if o[0] < r[0] and o[1] < r[1] else "does not beat"
        verdict.append(
            f"{n_cams} cameras: optim {o[0]:.3f} / {o[1]:.3f} mm (median / p90) {better} robust + smooth "
            f"{r[0]:.3f} / {r[1]:.3f}; plain DLT {p[0]:.3f} / {p[1]:.3f}, aniposelib triangulate_optim "
            f"{a[0]:.3f} / {a[1]:.3f}"
        )
    text = f"""## Triangulation accuracy: plain, RANSAC, smoothing, optimization, aniposelib; synthetic truth
Command: `python scripts/bench_triangulate_accuracy.py {" ".join(sys.argv[1:])}`
Machine: {machine()}
{args.frames} frames at 100 Hz x {N_KP} keypoints, camera ring (radius 300 mm, f = 900 px, k1 -0.2) around the
body. Per view and point: 1 px Gaussian noise; 3 % gross errors 20-100 px (lower confidence on average,
overlapping the good ones); 2 % swaps onto another keypoint (good confidence); 5 % misses (NaN or confidence
< 0.3). Confidence cut 0.3 for all methods; RANSAC threshold {args.ransac_px} px. Error = distance from
the true 3-D point, over the points each method outputs. Speed = keypoints per second, whole method, one
call (aniposelib's numba code compiled beforehand), one BLAS thread. The optimization: {OptimSettings()}.
The keypoints are not rigidly linked (each wiggles 3 mm at 2 Hz with its own phase): the skeleton's
lengths vary by a few mm, as on a soft body.
{("." + chr(10)).join(verdict)}.
An hour of 4 cameras x 15 keypoints at 100 Hz at the 4-camera rates below: {
        ", ".join(f"{k} {v:.0f} s" for k, v in hour.items() if k in ("robust + smooth", "optim"))
    }.

| cameras | method | median mm | p90 mm | p99 mm | output | keypoints/s |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    print(text)
    if not args.no_write:
        write_block("triangulate-accuracy", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
