#!/usr/bin/env python
"""Detector latency and throughput per runner at batch 1 and 2, written to BENCHMARKS.md (block ``detector``).

Frames are real synthetic-camera frames (448 x 460) with the paw in view; each runner sees what the
online detector feeds it: the ROI crops (64 x 64 by default; the steady state) and the half-scale
full-frame search (the fallback). Also the whole online step (ROI tracking, both cameras) per stereo pair.
ONNX Runtime CUDA and TensorRT are measured when a GPU and the packages exist.

Usage: ``python scripts/bench_detector.py [--n 300] [--threads 1] [--no-write]``
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import machine, pct, write_block  # noqa: E402

from detection.base import DetectionError, Runner  # noqa: E402
from detection.online import OnlineDetector  # noqa: E402
from detection.runners import OnnxRuntimeRunner, TensorRTRunner, UltralyticsRunner  # noqa: E402
from rig.sim.render import SceneRenderer  # noqa: E402
from rig.sim.scene import PAW_RADIUS_MM, synthetic_calibration  # noqa: E402

MODEL = ROOT / "detection" / "models" / "paw-yolo11p-96"


def frames(n: int) -> dict[str, list[np.ndarray]]:
    from build_paw_model import world_states

    calib = synthetic_calibration()
    rend = {c: SceneRenderer(cam, seed=1) for c, cam in calib.cameras.items()}
    states = world_states(5, n / 124 + 1)[:n]
    return {c: [r.render(p, PAW_RADIUS_MM, q)[0].copy() for p, q in states] for c, r in rend.items()}


def time_calls(fn, items, warm: int = 10) -> list[float]:
    for it in items[:warm]:
        fn(it)
    out = []
    for it in items:
        t0 = time.perf_counter()
        fn(it)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def bench_runner(r: Runner, fr: dict[str, list[np.ndarray]], rows: list[str]) -> None:
    front, side = fr["front"], fr["side"]
    on = OnlineDetector(r, ["front", "side"])
    R = on.options.roi_size
    on.detect([front[0], side[0]])
    crops = []
    for a, b in zip(front, side):
        x0, y0 = on._roi_origin(on.tracks["front"], a.shape)
        crops.append((a[y0 : y0 + R, x0 : x0 + R].copy(), b[y0 : y0 + R, x0 : x0 + R].copy()))
    cases = [
        (f"ROI {R} px", 1, lambda c: r.infer([c[0]]), crops),
        (f"ROI {R} px", 2, lambda c: r.infer([c[0], c[1]]), crops),
        ("full frame 0.5x (224x230)", 1, lambda i: on._search(front[i]), list(range(len(front)))[:100]),
    ]
    for label, batch, fn, items in cases:
        ms = time_calls(fn, items)
        p50, p99 = pct(ms)
        rows.append(
            f"| {r.name} | {label} | {batch} | {p50 / batch:.2f} | {p99 / batch:.2f} "
            f"| {1e3 * batch / np.median(ms):.0f} |"
        )
    on.reset()
    pair = time_calls(lambda i: on.detect([front[i], side[i]]), list(range(len(front))), warm=0)
    p50, p99 = pct(pair)
    rows.append(
        f"| {r.name} | online step, ROI tracking, stereo pair | 2 | {p50 / 2:.2f} | {p99 / 2:.2f} "
        f"| {2e3 / np.mean(pair):.0f} (mean) |"
    )
    logging.info("%s done; searches %s", r.name, on.stats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    fr = frames(a.n)
    rows = [
        "| runner | input | batch | ms/frame p50 | ms/frame p99 | frames/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    runners: list[Runner] = [
        OnnxRuntimeRunner(f"{MODEL}.onnx", threads=a.threads, providers=["CPUExecutionProvider"]),
        UltralyticsRunner(f"{MODEL}.pt", threads=a.threads),
    ]
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        runners.append(OnnxRuntimeRunner(f"{MODEL}.onnx", providers=["CUDAExecutionProvider"]))
    try:
        runners.append(TensorRTRunner(f"{MODEL}.onnx"))
    except DetectionError as e:
        rows_note = f"TensorRT not measured: {e}"
    else:
        rows_note = ""
    for r in runners:
        bench_runner(r, fr, rows)
    cmd = "python scripts/bench_detector.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(
        [
            "## Detector (default paw model `detection/models/paw-yolo11p-96.onnx`)",
            "",
            f"Machine: {machine()}. Command: `{cmd.strip()}`; {a.threads} CPU thread(s) per runner; "
            f"{a.n} synthetic frames per case. Per-frame numbers divide the batch's time by its size. "
            "Target on CPU: 248 frames/s (2 cameras x 124 Hz) on about one core.",
            "",
            *rows,
            "",
            rows_note or "GPU runners measured above.",
        ]
    )
    print(text)
    if not a.no_write:
        write_block("detector", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
