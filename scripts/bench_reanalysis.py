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

``--profile``: where a worker's time goes. Each session is reanalysed with re-detection in this process
(one thread, as a worker does), its stages timed by wrapping the functions that do them (decode, ROI crop
and tracking, letterbox, ONNX inference, box decoding, triangulation, table I/O, analyses; nothing in the
library is changed); then the batch on 1 and 2 local workers, timed from before the cluster starts to
the last result: the serial part (cluster start, scheduling and result collection: wall time less the
workers' session time) gives the serial fraction and Amdahl's speedups at 16, 64 and 256 workers. Also
MB/s of video read per worker. Writes the block "reanalysis-profile".

    python scripts/bench_reanalysis.py --profile --sessions 3 --trials 2 --repeats 1
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

from rig.reanalyze import DECODE_AHEAD, Options, run_batch


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


# ----------------------------------------------------------------------------- --profile
class StageClock:
    """Seconds per stage, accumulated by wrappers put around the functions that do each stage."""

    def __init__(self) -> None:
        self.s: dict[str, float] = {}

    def add(self, stage: str, dt: float) -> None:
        self.s[stage] = self.s.get(stage, 0.0) + dt

    def wrap(self, owner: object, name: str, stage: str) -> None:
        fn = getattr(owner, name)

        def timed(*a, **k):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.add(stage, time.perf_counter() - t)

        setattr(owner, name, timed)

    def wrap_generator(self, owner: object, name: str, stage: str) -> None:
        """Time each ``next()`` of the generator ``owner.name`` returns (the work done per item)."""
        fn = getattr(owner, name)

        def timed(*a, **k):  # type: ignore[no-untyped-def]
            it = fn(*a, **k)
            while True:
                t = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    self.add(stage, time.perf_counter() - t)
                    return
                self.add(stage, time.perf_counter() - t)
                yield item

        setattr(owner, name, timed)


def profile_session(path: Path) -> tuple[dict[str, float], dict]:
    """Reanalyse one session with re-detection in this process; (seconds per stage, summary)."""
    import rig.reanalyze as ra
    from detection import online, runners

    clock = StageClock()
    saved = [
        (m, n, getattr(m, n))
        for m, n in [
            (ra, "_readable_frames"),
            (ra, "load_session"),
            (ra, "redetect"),
            (ra, "triangulate_sets"),
            (ra, "_write_table"),
            (ra, "run_analyses"),
            (online.OnlineDetector, "detect"),
            (runners.YoloRunner, "infer"),
            (runners, "preprocess"),
            (runners.OnnxRuntimeRunner, "run_raw"),
            (runners, "decode"),
        ]
    ]
    clock.wrap_generator(ra, "_readable_frames", "decode video (PyAV) + Y plane copy")
    clock.wrap(ra, "load_session", "table I/O: load session")
    clock.wrap(ra, "redetect", "_redetect")
    clock.wrap(ra, "triangulate_sets", "triangulation (PointTracker)")
    clock.wrap(ra, "_write_table", "table I/O: write CSVs")
    clock.wrap(ra, "run_analyses", "analyses (reaching, figures)")
    clock.wrap(online.OnlineDetector, "detect", "_detect")
    clock.wrap(runners.YoloRunner, "infer", "_infer")
    clock.wrap(runners, "preprocess", "letterbox (preprocess)")
    clock.wrap(runners.OnnxRuntimeRunner, "run_raw", "inference (ONNX Runtime, 1 thread)")
    clock.wrap(runners, "decode", "box decode + NMS")
    ahead = ra.DECODE_AHEAD
    ra.DECODE_AHEAD = 0  # decode inline, so that its time is a stage of its own
    t0 = time.perf_counter()
    try:
        summary = ra.reanalyze_session(path, force=True, options=Options(detect=True))
    finally:
        ra.DECODE_AHEAD = ahead
        for m, n, fn in saved:
            setattr(m, n, fn)
    total = time.perf_counter() - t0
    s = clock.s
    out = {k: v for k, v in s.items() if not k.startswith("_")}
    inner = sum(out.get(k, 0.0) for k in ("letterbox (preprocess)", "inference (ONNX Runtime, 1 thread)"))
    out["ROI crop + tracking (OnlineDetector, Python)"] = s["_detect"] - s["_infer"]
    out["other in infer (shapes, Det objects)"] = s["_infer"] - inner - out.get("box decode + NMS", 0.0)
    out["stereo join + detection rows (Python)"] = (
        s["_redetect"] - s["_detect"] - out["decode video (PyAV) + Y plane copy"]
    )
    out["rest (summary, comparison, rename)"] = total - sum(out.values())
    out["total"] = total
    return out, summary


def decode_thread_effect(paths: list[Path]) -> tuple[list[float], list[float], bool]:
    """Frames/s per session with decoding inline and in a thread ahead of detection (alternating, in
    this process), and whether the two gave the same detections and 3-D."""
    import rig.reanalyze as ra
    from rig.session import read_csv_columns

    ahead = ra.DECODE_AHEAD
    fps: dict[int, list[float]] = {0: [], ahead: []}
    same = True
    try:
        for i, p in enumerate(paths):
            out = {}
            for n in (0, ahead) if i % 2 == 0 else (ahead, 0):  # which goes first alternates
                ra.DECODE_AHEAD = n
                t = time.perf_counter()
                r = ra.reanalyze_session(p, force=True, options=Options(detect=True))
                fps[n].append(r["frames_detected"] / (time.perf_counter() - t))
                det = read_csv_columns(p / "reanalysis" / "detections.csv")
                out[n] = (det, (p / "reanalysis" / "points3d.csv").read_bytes())
            (d0, p0), (d1, p1) = out[0], out[ahead]
            same &= p0 == p1 and all(
                np.array_equal(d0[c], d1[c], equal_nan=d0[c].dtype.kind == "f")
                for c in d0
                if c not in ("t_start_ns", "t_end_ns")
            )
    finally:
        ra.DECODE_AHEAD = ahead
    return fps[0], fps[ahead], same


def video_bytes(path: Path) -> int:
    from rig.session import load_session

    s = load_session(path)
    return sum(s.video_path(c).stat().st_size for c in s.frames)


def serial_batch(paths: list[Path], workers: int) -> tuple[float, float, float, dict[str, dict]]:
    """(wall s from before the cluster starts to the last result, cluster start s, workers' busy s,
    results) for one batch on ``workers`` local workers (imports warmed as part of the start)."""
    from dask.distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None, processes=True)
    with Client(cluster) as client:
        client.run(_warm)
        start = time.perf_counter() - t0
        res = run_batch(paths, scheduler=cluster.scheduler_address, force=True, options=Options(detect=True))
    wall = time.perf_counter() - t0
    cluster.close()
    bad = {p: r["error"] for p, r in res.items() if "error" in r}
    if bad:
        raise SystemExit(f"reanalysis failed: {bad}")
    return wall, start, sum(r["seconds"] for r in res.values()), res


def amdahl(f: float, n: int) -> float:
    return 1.0 / (f + (1.0 - f) / n)


def profile(args: argparse.Namespace, paths: list[Path], reused: int) -> str:
    load_start = os.getloadavg()
    info = machine(load_start[0])
    _warm()  # imports, then one untimed session: model load and first figures are not a stage
    profile_session(paths[0])
    stages: list[dict[str, float]] = []
    frames, mb = [], []
    for p in paths:
        st, summary = profile_session(p)
        stages.append(st)
        frames.append(summary["frames_detected"])
        mb.append(video_bytes(p) / 1e6)
        print(f"profiled {p.name}: {summary['frames_detected'] / st['total']:.0f} frames/s", flush=True)
    inline, threaded, same = decode_thread_effect(paths)
    print(
        f"decode inline {np.median(inline):.0f} frames/s, in a thread {np.median(threaded):.0f}", flush=True
    )
    keys = list(stages[0])
    total = float(np.sum([s["total"] for s in stages]))
    rows = []
    for k in sorted((k for k in keys if k != "total"), key=lambda k: -np.sum([s.get(k, 0) for s in stages])):
        v = float(np.sum([s.get(k, 0.0) for s in stages]))
        per_frame = [1e6 * s.get(k, 0.0) / n for s, n in zip(stages, frames)]
        rows.append([k, f"{v:.2f}", f"{100 * v / total:.1f}", f"{np.median(per_frame):.0f}"])
    rows.append(
        [
            "**total**",
            f"{total:.2f}",
            "100",
            f"{np.median([1e6 * s['total'] / n for s, n in zip(stages, frames)]):.0f}",
        ]
    )
    fps = [n / s["total"] for s, n in zip(stages, frames)]
    mbps = [m / s["total"] for s, m in zip(stages, mb)]
    batches: dict[int, list[tuple[float, float, float]]] = {1: [], 2: []}
    for rep in range(args.repeats):
        for w in (1, 2):
            wall, start, busy, _ = serial_batch(paths, w)
            batches[w].append((wall, start, busy))
            print(
                f"round {rep + 1}, {w} worker(s): wall {wall:.1f} s, cluster start {start:.1f} s", flush=True
            )
    load_end = os.getloadavg()
    n_frames = sum(frames)
    brow = []
    serial = {}
    for w, runs in batches.items():
        wall, start, busy = (float(np.median([r[i] for r in runs])) for i in range(3))
        serial[w] = wall - busy / w  # what parallel workers cannot shorten
        brow.append(
            [
                str(w),
                f"{wall:.1f}",
                f"{start:.1f}",
                f"{busy:.1f}",
                f"{serial[w]:.1f}",
                f"{n_frames / wall:.0f}",
                f"{n_frames / wall / w:.0f}",
            ]
        )
    wall1, _, _ = (float(np.median([r[i] for r in batches[1]])) for i in range(3))
    f = serial[1] / wall1
    speedup2 = wall1 / float(np.median([r[0] for r in batches[2]]))
    # a lab batch: 256 one-hour sessions (2 x 124 Hz: 892,800 frames each) at the measured rate, same
    # fixed serial part (cluster start) and per-session scheduling/collection cost
    per_session_serial = max(serial[1] - float(np.median([r[1] for r in batches[1]])), 0.0) / len(paths)
    hour_s = 892_800 / float(np.median(fps))
    lab_work = 256 * hour_s
    lab_serial = float(np.median([r[1] for r in batches[1]])) + 256 * per_session_serial
    f_lab = lab_serial / (lab_serial + lab_work)
    amd = " | ".join(f"{amdahl(f, n):.1f}x" for n in (2, 16, 64, 256))
    amd_lab = " | ".join(f"{amdahl(f_lab, n):.1f}x" for n in (2, 16, 64, 256))
    trials = "/".join(str(t) for t in sorted({len(load_session_trials(p)) for p in paths}))
    origin = f"{min(reused, len(paths))} reused from an earlier run, " if reused else ""
    stage_table = table(
        ["stage", "seconds (all sessions)", "% of a worker's time", "us per camera frame (median)"], rows
    )
    batch_table = table(
        [
            "workers",
            "batch wall s (incl. cluster start)",
            "cluster start s",
            "workers' session s",
            "serial s (wall - session s / workers)",
            "batch frames/s",
            "frames/s per worker",
        ],
        brow,
    )
    p50, p99 = pct(fps)
    m50, m99 = pct(mbps)
    return f"""## Reanalysis profile: where a worker's time goes (`--detect`), serial fraction, Amdahl

Command: `{" ".join(["python", "scripts/bench_reanalysis.py", *sys.argv[1:]])}`
Machine: {info}
Load average (1 min) {load_start[0]:.1f} at start, {load_end[0]:.1f} at the end. This machine's 2
cores are shared with four other engineers' builds and tests: absolute figures are low and noisy (above
all the 2-worker batch, which needs both cores free), the stage shares are the useful part. Kept short on
purpose ({len(paths)} sessions, {args.repeats} round(s)).
Input: {len(paths)} simulated sessions ({origin}{trials} trials each), {n_frames} camera frames (2 cameras
448x460, 124 Hz, libx264 crf 12, {sum(mb):.0f} MB of video).

**Before** (today's code path: the online detector per stereo set, decode in the same thread). One
session at a time in one process, one thread, each stage timed by wrapping its function:

{stage_table}

**After**: decoding in a thread per camera up to {DECODE_AHEAD} frames ahead of detection
(`rig.reanalyze._decoded_ahead`; FFmpeg and ONNX Runtime both run without the GIL), alternating with
inline decoding session by session: **{np.median(threaded):.0f} vs {np.median(inline):.0f} frames/s** (median
over sessions, thread vs inline; each: {" / ".join(f"{a:.0f} vs {b:.0f}" for a, b in zip(threaded, inline))});
detections and 3-D {"identical" if same else "DIFFERENT"}. The overlap can pay only where a worker has
a core free to decode on (e.g. a SLURM job of 2 CPUs); on 1 allocated core the threads take turns.

Per worker (before): **{p50:.0f} camera frames/s** (p50 over sessions; p99 {p99:.0f}), **{m50:.1f} MB/s of
video read** (p50; p99 {m99:.1f}): a worker reads its videos at this rate, so N workers need N x
{m50:.1f} MB/s from the storage (64 workers: {64 * m50:.0f} MB/s).

Batch on a local Dask cluster, timed from before the cluster starts to the last result (medians of
{args.repeats} round(s)):

{batch_table}

Speedup 1 -> 2 workers: {speedup2:.2f}x. Serial part with 1 worker: {serial[1]:.1f} s of {wall1:.1f} s,
**serial fraction {f:.3f}** for this batch; per session, scheduling and result collection cost
{per_session_serial:.2f} s. Amdahl's law, speedup at 2 | 16 | 64 | 256 workers:

- this batch's serial fraction ({f:.3f}): {amd} (a batch of {len(paths)} sessions cannot use more than
  {len(paths)} workers: one session is one task)
- a lab batch of 256 one-hour sessions (892,800 frames each, {hour_s / 60:.0f} worker-minutes at the rate
  above; serial = the cluster start + 256 x the per-session cost: fraction {f_lab:.5f}): {amd_lab}

Amdahl's law counts only the serial part: at 256 workers the storage must also deliver
256 x {m50:.1f} = {256 * m50 / 1000:.1f} GB/s of video, which is the likelier limit. On SLURM the cluster
start is the queue wait for the worker jobs (minutes on a busy cluster) plus a worker's start (~5-10 s): a
fixed cost per batch, small against a lab batch.
"""


def load_session_trials(path: Path) -> list:
    from rig.session import load_session

    return load_session(path).trials


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
    ap.add_argument("--profile", action="store_true", help="per-stage profile, serial fraction, Amdahl")
    args = ap.parse_args()
    if args.profile:
        out = args.dir or Path(tempfile.mkdtemp(prefix="bench-reanalysis-"))
        out.mkdir(parents=True, exist_ok=True)
        reused = sum(1 for p in out.glob("*") if (p / "session.json").exists())
        text = profile(args, record(out, args.sessions, args.trials), reused)
        print(text)
        if not args.no_write:
            write_block("reanalysis-profile", text)
        return 0
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
