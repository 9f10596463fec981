#!/usr/bin/env python3
"""Benchmark the whole simulated pipeline at 2 x 124 Hz: sustained fps, drops, frame -> 3-D latency.

Runs a real `deepbehavior run` (default config unless --config) for --duration seconds, --runs times,
samples each node's CPU use, then reads each recorded session back and reports median and p99 latencies
per stage (steady state: after --warmup seconds; the start-up on its own), per run and pooled. The
sessions are deleted afterwards unless --keep. Writes the result into BENCHMARKS.md (block "pipeline",
or "pipeline-<label>" with --set/--config) unless --no-write.

    python scripts/bench_pipeline.py --duration 30 --runs 3
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
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

from rig.session import Session, load_session
from rig.session_metrics import closed_loop_latencies_ms, error_vs_truth_mm


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


def run_session(args: argparse.Namespace, out: Path) -> tuple[Session, dict[str, list[float]]]:
    """One `deepbehavior run` into ``out``; returns the recorded session and per-node CPU samples."""
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
        raise SystemExit(f"deepbehavior run failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    return load_session(next(p for p in out.iterdir() if p.is_dir())), cpu


def steady(t_ns: np.ndarray, t0_ns: int, warmup_s: float) -> np.ndarray:
    """Mask of rows after the warm-up (``t_ns`` host frame times; 0 = never arrived)."""
    return t_ns >= t0_ns + warmup_s * 1e9


RUN_HEADER = (
    "| run | s | frames | lost | not detected online | valid 3-D | frame -> 3-D p50 ms | p99 ms "
    "| sets > {period_ms:.2f} ms (a frame) |\n|---|---|---|---|---|---|---|---|---|"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per session")
    ap.add_argument("--runs", type=int, default=3, help="sessions, one after the other")
    ap.add_argument(
        "--warmup", type=float, default=2.0, help="seconds at the start of each session left out of the "
        "steady-state stage table (reported on their own)",
    )  # fmt: skip
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument(
        "--label", default="default config: firmware trigger in simavr, bundled paw model, closed loop"
    )
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the recorded sessions (printed)")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    period_ms = 1000 / 124
    runs, per_run, lines = [], [], []
    stage: dict[str, list[np.ndarray]] = {}
    startup: list[np.ndarray] = []
    cpu: dict[str, list[float]] = {}
    for i in range(args.runs):
        out = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
        try:
            s, run_cpu = run_session(args, out)
        finally:
            if args.keep:
                print(f"run {i + 1}: session kept in {out}", file=sys.stderr)
            else:
                shutil.rmtree(out, ignore_errors=True)
        runs.append(s)
        for n, v in run_cpu.items():
            cpu.setdefault(n, []).extend(v[1:])  # the first sample covers start-up
        p, d = s.points3d, s.detections
        t0 = int(min(t["t_host_ns"][t["t_host_ns"] > 0].min() for t in s.frames.values()))
        lat = (p["t_out_ns"] - p["t_frame_ns"]) / 1e6
        ok_p, ok_d = steady(p["t_frame_ns"], t0, args.warmup), steady(d["t_frame_ns"], t0, args.warmup)
        startup.append(lat[~ok_p])
        dropped = sum(int(t["dropped"].sum()) for t in s.frames.values())
        p50, p99 = pct(lat[ok_p])
        over = int((lat[ok_p] > period_ms).sum())
        n_frames = sum(len(t["seq"]) for t in s.frames.values())
        det = s.meta["summary"].get("nodes", {}).get("detector", {})
        offline = int(det.get("shed_for_recording", 0) + det.get("skipped_late", 0))
        per_run.append(
            f"| {i + 1} | {s.meta['summary']['duration_s']:.0f} | {n_frames} "
            f"| {dropped} | {offline} | {int(p['valid'].sum())}/{len(lat)} | {p50:.2f} | {p99:.2f} "
            f"| {over}/{int(ok_p.sum())} ({100 * over / max(1, int(ok_p.sum())):.1f}%) |"
        )
        for cam, t in s.frames.items():
            th_ns = t["t_host_ns"][t["t_host_ns"] > 0]
            fps = (len(th_ns) - 1) / ((th_ns[-1] - th_ns[0]) / 1e9)
            lines.append(f"| {i + 1} | {cam} | {len(t['seq'])} | {fps:.2f} | {int(t['dropped'].sum())} |")
        got = {
            "trigger -> frame on host (render + grab)": np.concatenate(
                [((t["t_host_ns"] - t["t_trigger_ns"]) / 1e6)[steady(t["t_host_ns"], t0, args.warmup)]
                 for t in s.frames.values()]
            ),
            "frame -> detector start": ((d["t_start_ns"] - d["t_frame_ns"]) / 1e6)[ok_d],
            "detector inference": ((d["t_end_ns"] - d["t_start_ns"]) / 1e6)[ok_d],
            "detections -> 3-D published": ((p["t_out_ns"] - p["t_det_ns"]) / 1e6)[ok_p],
            "**frame -> 3-D (total)**": lat[ok_p],
            "trigger -> 3-D": ((p["t_out_ns"] - p["t_trigger_ns"]) / 1e6)[ok_p],
        }  # fmt: skip
        cl = closed_loop_latencies_ms(s)
        if len(cl):
            got["closed loop: trigger pulse -> TTL pin edge, firmware clock"] = cl
        for k, v in got.items():
            stage.setdefault(k, []).append(np.asarray(v, float))
    rows = []
    for name, arrs in stage.items():
        a = np.concatenate(arrs)
        p50, p99 = pct(a)
        label = f"{name} ({len(a)} pulses)" if name.startswith("closed loop") else name
        rows.append(f"| {label} | {p50:.2f} | {p99:.2f} | {np.nanmax(a):.2f} |")
    su = np.concatenate(startup)
    su50, su99 = pct(su)
    cpu_rows = [f"| {n} | {np.mean(v) if v else float('nan'):.0f} |" for n, v in sorted(cpu.items())]
    s = runs[-1]
    err = error_vs_truth_mm(s.points3d, s.truth)
    accuracy = "".join(
        f"3-D error vs the simulator's true paw centre (last run, {name}, {len(e)} points): "
        f"median {np.median(e):.2f} mm, p95 {np.percentile(e, 95):.2f} mm, max {e.max():.2f} mm.\n"
        for name, e in err.items()
        if len(e)
    )
    text = f"""## Pipeline: 2 x 124 Hz simulated stereo rig ({args.label})

Command: `{" ".join(["python", "scripts/bench_pipeline.py", *sys.argv[1:]])}`
Machine: {machine(load_before)}
{args.runs} sessions of {args.duration:g} s one after the other. Latencies are steady state: sets whose frames
arrived more than {args.warmup:g} s after the session's first frame. The first {args.warmup:g} s (processes
still settling) on their own: frame -> 3-D p50 {su50:.2f} ms, p99 {su99:.2f} ms, max {np.nanmax(su):.2f} ms
({len(su)} sets over all runs).
{accuracy}"Not detected online": frames the detector left to `reanalyze --detect` (shed while the recorder was
behind, or too late to be useful online); "lost": frames missing from the recording.

{RUN_HEADER.format(period_ms=period_ms)}
{chr(10).join(per_run)}

| run | camera | frames | sustained fps | dropped |
|---|---|---|---|---|
{chr(10).join(lines)}

| stage (all runs, steady state) | p50 ms | p99 ms | max ms |
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
