#!/usr/bin/env python3
"""Benchmark batch reanalysis with re-detection on Dask: frames/s per worker and the 1 -> 2 worker speedup.

Records --sessions short simulated sessions (`deepbehavior run --trials N`, the default rig: crf-12 video,
the bundled ONNX paw model), then reanalyses all of them with re-detection (decode both videos, the online
detection code, triangulation, reaching analysis) on a local Dask cluster of 1 and of 2 single-threaded
workers, alternating (1, 2, 1, 2, ...) --repeats times so that a change in the machine's load hits both.
Each cluster is started and its workers' imports warmed before the clock starts. Per session, a worker's
throughput is camera frames / the session's seconds in the worker; per run, the batch's throughput is all
frames / wall time. Writes the block "reanalysis" of BENCHMARKS.md unless --no-write.

    python scripts/bench_reanalysis.py --sessions 6 --trials 2 --repeats 2
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchlib import machine, pct, write_block

from rig.reanalyze import Options, run_batch


def record(out: Path, n: int, trials: int) -> list[Path]:
    """``n`` sessions in ``out`` (those already there are reused)."""
    have = sorted(p for p in out.glob("*") if (p / "session.json").exists())
    for i in range(len(have), n):
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "rig.cli", "run", "--quiet", "--output", str(out)]
        r = subprocess.run([*cmd, "--trials", str(trials)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise SystemExit(f"recording session {i + 1} failed:\n{r.stdout}\n{r.stderr}")
        print(f"recorded session {i + 1}/{n} in {time.perf_counter() - t0:.0f} s", flush=True)
    return sorted(p for p in out.glob("*") if (p / "session.json").exists())[:n]


def _warm() -> None:
    """Imports a worker's first session would otherwise pay for."""
    for mod in ("rig.reanalyze", "detection.online", "detection.runners", "analysis.tasks.reaching"):
        importlib.import_module(mod)
    from analysis.plotting import pyplot

    pyplot()


def timed_batch(paths: list[Path], workers: int) -> tuple[float, float, dict[str, dict]]:
    """(cluster start s, batch wall s, results) for one run on ``workers`` local workers."""
    from dask.distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None, processes=True)
    with Client(cluster) as client:
        client.run(_warm)
        start = time.perf_counter() - t0
        t1 = time.perf_counter()
        res = run_batch(paths, scheduler=cluster.scheduler_address, force=True, options=Options(detect=True))
        wall = time.perf_counter() - t1
    cluster.close()
    bad = {p: r["error"] for p, r in res.items() if "error" in r}
    if bad:
        raise SystemExit(f"reanalysis failed: {bad}")
    return start, wall, res


def online_order_clean(det: dict[str, np.ndarray]) -> bool:
    """Did the online detector see each camera's frames in trigger order?"""
    for cam in set(det["camera"].tolist()):
        m = det["camera"] == cam
        if np.any(np.diff(det["trigger_index"][m][np.argsort(det["t_start_ns"][m], kind="stable")]) < 0):
            return False
    return True


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=6, help="sessions to record and reanalyse")
    ap.add_argument("--trials", type=int, default=2, help="trials per session")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating rounds over the worker counts")
    ap.add_argument("--dir", type=Path, help="keep (and reuse) the recorded sessions here")
    ap.add_argument("--note", default="", help="a sentence about the conditions, added to the block")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    load_start = os.getloadavg()
    print("load average at start: " + " ".join(f"{x:.2f}" for x in load_start), flush=True)
    info = machine()
    out = args.dir or Path(tempfile.mkdtemp(prefix="bench-reanalysis-"))
    out.mkdir(parents=True, exist_ok=True)
    reused = sum(1 for p in out.glob("*") if (p / "session.json").exists())
    paths = record(out, args.sessions, args.trials)
    counts = [int(w) for w in args.workers.split(",")]
    walls: dict[int, list[float]] = {w: [] for w in counts}
    starts: dict[int, list[float]] = {w: [] for w in counts}
    fps: dict[int, list[float]] = {w: [] for w in counts}
    first: dict[str, dict] = {}
    for rep in range(args.repeats):
        for w in counts:
            start, wall, res = timed_batch(paths, w)
            walls[w].append(wall)
            starts[w].append(start)
            fps[w] += [r["frames_per_s"] for r in res.values()]
            first = first or res
            n = sum(r["frames_detected"] for r in res.values())
            load = os.getloadavg()[0]
            print(f"round {rep + 1}, {w} worker(s): {n} frames in {wall:.1f} s (load {load:.1f})", flush=True)
    load_end = os.getloadavg()
    frames = sum(r["frames_detected"] for r in first.values())
    rows = []
    for w in counts:
        wall = float(np.median(walls[w]))
        p50, p99 = pct(fps[w])
        rows.append(
            [
                str(w),
                " / ".join(f"{x:.1f}" for x in walls[w]),
                f"{frames / wall:.0f}",
                f"{frames / wall / w:.0f}",
                f"{p50:.0f}",
                f"{p99:.0f}",
                f"{np.median(starts[w]):.1f}",
            ]
        )
    speedup = ""
    if 1 in walls and 2 in walls:
        s = float(np.median(walls[1]) / np.median(walls[2]))
        speedup = f"**Speedup 1 -> 2 workers: {s:.2f}x** (median batch wall time).\n"
    timing_keys = next(iter(first.values()))["timings_s"]
    stage = ", ".join(
        f"{k.removesuffix('_s')} {np.median([r['timings_s'][k] for r in first.values()]):.2f} s"
        for k in timing_keys
    )
    from rig.session import load_session

    sessions = [load_session(p) for p in paths]
    trials = sorted({len(x.trials) for x in sessions})
    origin = f"{min(reused, len(paths))} reused from an earlier run, " if reused else ""
    acc = []
    for p, sess in zip(paths, sessions):
        r = first[str(p.resolve())]
        d, t = r["diff_vs_online_mm"], r.get("error_vs_truth_mm", {})
        off, on = t.get("offline", {}), t.get("online", {})
        acc.append(
            [
                p.name,
                str(r["frames_detected"]),
                "yes" if online_order_clean(sess.detections) else "no",
                str(r.get("online_sets_with_frames_missing_from_video", 0)),
                f"{d['median']:.3f} / {d['p95']:.3f} / {d['max']:.3f}",
                f"{r['online_valid_also_valid_offline']:.3f}",
                f"{off.get('median', np.nan):.3f} / {on.get('median', np.nan):.3f}",
                f"{off.get('max', np.nan):.3f} / {on.get('max', np.nan):.3f}",
            ]
        )
    loaded = max(load_start[0], load_end[0]) > 0.5 * (os.cpu_count() or 1)
    note = ": the 2 cores were shared with other engineers' jobs" if loaded else ""
    extra = f" {args.note}" if args.note else ""
    perf = table(
        [
            "workers",
            "batch wall s (each round)",
            "batch frames/s",
            "batch frames/s per worker",
            "per-session frames/s p50",
            "p99",
            "cluster start s",
        ],
        rows,
    )
    accuracy = table(
        [
            "session",
            "frames",
            "online order clean",
            "sets not in video",
            "offline-online median / p95 / max",
            "online-valid also valid offline",
            "vs truth median (offline / online)",
            "vs truth max (offline / online)",
        ],
        acc,
    )
    text = f"""## Reanalysis: re-detection from video on Dask, 1 vs 2 workers

Command: `{" ".join(["python", "scripts/bench_reanalysis.py", *sys.argv[1:]])}`
Machine: {info}
Load average (1 min) {load_start[0]:.1f} at start, {load_end[0]:.1f} at the end{note}.{extra}
Input: {len(paths)} simulated sessions ({origin}{"/".join(map(str, trials))} trials each), {frames} camera
frames (2 cameras 448x460, 124 Hz, libx264 crf 12). Per session, `deepbehavior reanalyze --detect`: decode
both videos, the online detection code (ROI tracking, bundled ONNX paw model, 1 thread), triangulation,
reaching analysis with figures. A worker is one single-threaded process; cluster start and imports are
not timed; 1- and 2-worker runs alternate ({args.repeats} rounds).
Median time per session in a worker: {stage}.
"per-session frames/s" = a session's camera frames / its seconds inside the worker (p50, p99 over all
sessions of all rounds).
{speedup}
{perf}

Re-detected vs online 3-D (crf-12 video, so boxes move slightly; sets whose frame the recorder dropped are
not compared) and both against the simulator's truth, mm. "online order clean": the online detector saw
each camera's frames in trigger order (re-detection's order).

{accuracy}
"""
    print(text)
    if not args.no_write:
        write_block("reanalysis", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
