#!/usr/bin/env python3
"""Benchmark the whole simulated pipeline at 2 x 124 Hz: sustained fps, drops, frame -> 3-D latency.

Runs a real `deepbehavior run` (default config unless --config) for --duration seconds, samples each
node's CPU use, then reads the recorded session back and reports median and p99 latencies per stage.
Writes the result into BENCHMARKS.md (block "pipeline") unless --no-write.

    python scripts/bench_pipeline.py --duration 30
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchlib import machine, pct, write_block

from rig.session import closed_loop_latencies_ms, error_vs_truth_mm, load_session


def sample_cpu(out: Path, stop: threading.Event, cpu: dict[str, list[float]]) -> None:
    procs: dict[str, psutil.Process] = {}
    while not stop.is_set():
        for log in out.glob("*/session.log"):
            for name, pid in re.findall(r"node (\S+) starting \(pid (\d+)\)", log.read_text()):
                if name not in procs:
                    try:
                        procs[name] = psutil.Process(int(pid))
                        procs[name].cpu_percent(None)
                    except psutil.NoSuchProcess:
                        pass
        time.sleep(1.0)
        for name, p in procs.items():
            try:
                cpu.setdefault(name, []).append(p.cpu_percent(None))
            except psutil.NoSuchProcess:
                pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument(
        "--label", default="default config: firmware trigger in simavr, bundled paw model, closed loop"
    )
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    out = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    cmd = [
        sys.executable,
        "-m",
        "rig.cli",
        "run",
        "--quiet",
        "--output",
        str(out),
        "--trials",
        "100000",
        "--duration",
        str(args.duration),
    ]
    if args.config:
        cmd.insert(4, args.config)
    for s in args.set:
        cmd += ["--set", s]
    stop = threading.Event()
    cpu: dict[str, list[float]] = {}
    th = threading.Thread(target=sample_cpu, args=(out, stop, cpu), daemon=True)
    th.start()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    stop.set()
    th.join()
    if r.returncode != 0:
        print(r.stdout, r.stderr, file=sys.stderr)
        return 1
    s = load_session(next(p for p in out.iterdir() if p.is_dir()))
    lines = []
    dur = s.meta["summary"]["duration_s"]
    for cam, t in s.frames.items():
        n = len(t["seq"])
        th_ns = t["t_host_ns"][t["t_host_ns"] > 0]
        fps = (len(th_ns) - 1) / ((th_ns[-1] - th_ns[0]) / 1e9)
        lines.append(f"| {cam} | {n} | {fps:.2f} | {int(t['dropped'].sum())} |")
    p, d = s.points3d, s.detections
    lat = (p["t_out_ns"] - p["t_frame_ns"]) / 1e6
    trig = (p["t_out_ns"] - p["t_trigger_ns"]) / 1e6
    stage = {
        "trigger -> frame on host (render + grab)": [
            (t["t_host_ns"] - t["t_trigger_ns"]) / 1e6 for t in s.frames.values()
        ],
        "frame -> detector start": [(d["t_start_ns"] - d["t_frame_ns"]) / 1e6],
        "detector inference": [(d["t_end_ns"] - d["t_start_ns"]) / 1e6],
        "detections -> 3-D published": [(p["t_out_ns"] - p["t_det_ns"]) / 1e6],
        "**frame -> 3-D (total)**": [lat],
        "trigger -> 3-D": [trig],
    }
    cl = closed_loop_latencies_ms(s)
    if len(cl):
        stage[f"closed loop: trigger pulse -> TTL pin edge, firmware clock ({len(cl)} pulses)"] = [cl]
    rows = []
    for name, arrs in stage.items():
        a = np.concatenate([np.asarray(x, float) for x in arrs])
        p50, p99 = pct(a)
        rows.append(f"| {name} | {p50:.2f} | {p99:.2f} | {np.nanmax(a):.2f} |")
    cpu_rows = [
        f"| {n} | {np.mean(v[1:]) if len(v) > 1 else float('nan'):.0f} |" for n, v in sorted(cpu.items())
    ]
    total_frames = sum(len(t["seq"]) for t in s.frames.values())
    err = error_vs_truth_mm(p, s.truth)
    accuracy = "".join(
        f"3-D error vs the simulator's true paw centre ({name}, {len(e)} points): "
        f"median {np.median(e):.2f} mm, p95 {np.percentile(e, 95):.2f} mm, max {e.max():.2f} mm.\n"
        for name, e in err.items()
        if len(e)
    )
    text = f"""## Pipeline: 2 x 124 Hz simulated stereo rig ({args.label})

Command: `{" ".join(["python", "scripts/bench_pipeline.py", *sys.argv[1:]])}`
Machine: {machine(load_before)}
Session: {dur:.0f} s, {total_frames} frames, {int(p["valid"].sum())}/{len(lat)} valid 3-D points.
{accuracy}
| camera | frames | sustained fps | dropped |
|---|---|---|---|
{chr(10).join(lines)}

| stage | p50 ms | p99 ms | max ms |
|---|---|---|---|
{chr(10).join(rows)}

| node | mean CPU % (100 = one core) |
|---|---|
{chr(10).join(cpu_rows)}
"""
    print(text)
    if not args.no_write:
        write_block(
            "pipeline"
            if not args.set and not args.config
            else "pipeline-" + re.sub(r"\W+", "-", args.label).strip("-"),
            text,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
