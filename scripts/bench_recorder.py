#!/usr/bin/env python3
"""Benchmark the recorder's video encoding on realistic frames (the synthetic rig, with sensor noise).

For each codec setting: per-frame encode time (median, p99), throughput on one thread, bytes per frame,
and the mean absolute pixel error after decoding (0 = lossless). Writes BENCHMARKS.md block "recorder".

    python scripts/bench_recorder.py --frames 600
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchlib import machine, pct, write_block

from rig.config import RecorderConfig, SimulationConfig
from rig.recorder import VideoWriter
from rig.session import y_plane
from rig.sim.render import Appearance, SceneRenderer
from rig.sim.scene import PAW_RADIUS_MM, PELLET, synthetic_calibration
from rig.sim.world import FreeRunSchedule, World


def frames(n: int) -> list[np.ndarray]:
    cam = synthetic_calibration()["front"]
    r = SceneRenderer(cam, Appearance(noise_sigma=3.0, background_seed=1), seed=1)
    w = World(SimulationConfig())
    sched = FreeRunSchedule(w, 3.0, None)
    out = []
    for k in range(n):
        t = k / 124
        sched.step(t)
        st = w.step(t)
        img, _ = r.render(st.paw_xyz, PAW_RADIUS_MM, PELLET)
        out.append(img.copy())
    return out


def bench(cfg: RecorderConfig, imgs: list[np.ndarray], tmp: Path) -> dict[str, float]:
    path = tmp / f"{cfg.codec}-{cfg.lossless}-{cfg.crf}.mkv"
    vw = VideoWriter(path, imgs[0].shape[1], imgs[0].shape[0], 124, cfg, max_queue=len(imgs) + 1)
    # time the encoder directly (the writer thread is what the recorder uses; here we want per-frame cost)
    vw.queue.put(None)
    vw.thread.join()
    times = []
    for img in imgs:
        t0 = time.perf_counter()
        frame = av.VideoFrame.from_ndarray(img, format="gray")
        for p in vw.stream.encode(frame):
            vw.container.mux(p)
        times.append((time.perf_counter() - t0) * 1e3)
    for p in vw.stream.encode():
        vw.container.mux(p)
    vw.container.close()
    errs = []
    with av.open(str(path)) as c:
        for k, fr in enumerate(c.decode(video=0)):
            errs.append(np.abs(y_plane(fr).astype(int) - imgs[k]).mean())
    p50, p99 = pct(times)
    return {
        "p50": p50,
        "p99": p99,
        "fps": len(imgs) / (sum(times) / 1e3),
        "bytes": path.stat().st_size / len(imgs),
        "err": float(np.mean(errs)),
        "n": len(errs),
    }


HEADER = (
    "| codec | p50 ms/frame | p99 ms/frame | frames/s (1 thread) | cores needed at 2 x 124 Hz | kB/frame "
    "| mean abs error (gray levels) |\n|---|---|---|---|---|---|---|"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    imgs = frames(args.frames)
    settings = [
        ("libx264 ultrafast crf 12 (default)", RecorderConfig()),
        ("libx264 ultrafast crf 17", RecorderConfig(crf=17)),
        ("libx264 ultrafast qp 0 (lossless)", RecorderConfig(lossless=True)),
        ("ffv1 (lossless)", RecorderConfig(codec="ffv1", lossless=True)),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for label, cfg in settings:
            r = bench(cfg, imgs, Path(d))
            assert r["n"] == len(imgs), f"{label}: decoded {r['n']} of {len(imgs)} frames"
            rows.append(
                f"| {label} | {r['p50']:.2f} | {r['p99']:.2f} | {r['fps']:.0f} | {248 / r['fps']:.2f} | "
                f"{r['bytes'] / 1e3:.1f} | {r['err']:.2f} |"
            )
    text = f"""## Recorder: video encoding, 448x460 Mono8 synthetic frames (sensor noise sigma 3)

Command: `python scripts/bench_recorder.py {" ".join(sys.argv[1:])}`
Machine: {machine()}
One encoder thread; the recorder needs 248 frames/s for two cameras at 124 Hz ("cores needed" = 248 / fps).

{HEADER}
{chr(10).join(rows)}
"""
    print(text)
    if not args.no_write:
        write_block("recorder", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
