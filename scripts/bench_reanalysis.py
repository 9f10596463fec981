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

``--profile``: where a worker's time goes, before and after batching (issue 19). First the floors of one
core (PyAV decoding alone, the network per ROI crop at batch 1..64 and per full-frame search image); then
each session is reanalysed with re-detection in this process (one thread, as a worker does, decoding
inline) through the reference path (``redetect``: the online detector per stereo set) and the batched
path (``redetect_batched``, the default), alternating, its stages timed by wrapping the functions that
do them (nothing in the library is changed) and its process CPU time taken (load-robust); both paths'
detections and 3-D are compared. Then the batch on 1 and 2 local workers for both paths, timed from
before the cluster starts to the last result: the serial part gives the serial fraction and Amdahl's
speedups at 16, 64 and 256 workers; and MB/s of video read per worker. Writes the block
"reanalysis-batched" (the block "reanalysis-profile" is the earlier measurement of the old path).

    python scripts/bench_reanalysis.py --profile --sessions 3 --trials 2 --repeats 1

``--device cuda`` / ``--device tensorrt``: batched re-detection on the GPU (ONNX Runtime's CUDA provider
or a TensorRT FP16 engine; NVDEC decoding where PyAV's FFmpeg offers it), frames/s per session and the
boxes against the CPU path; writes the block "reanalysis-<device>". Without a GPU: one line, exit 2.
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
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchlib import machine, pct, write_block

from rig.errors import UserError
from rig.reanalyze import Options, run_batch
from rig.redetect import DEVICES


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
    for mod in (
        "rig.reanalyze",
        "rig.redetect",
        "detection.online",
        "detection.runners",
        "analysis.tasks.reaching",
    ):
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
    """Seconds per stage, wall (``s``) and this process's CPU time (``c``: load-robust), accumulated by
    wrappers put around the functions that do each stage."""

    def __init__(self) -> None:
        self.s: dict[str, float] = {}
        self.c: dict[str, float] = {}

    def add(self, stage: str, dt: float, dc: float) -> None:
        self.s[stage] = self.s.get(stage, 0.0) + dt
        self.c[stage] = self.c.get(stage, 0.0) + dc

    def wrap(self, owner: object, name: str, stage: str) -> None:
        fn = getattr(owner, name)

        def timed(*a, **k):  # type: ignore[no-untyped-def]
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                self.add(stage, time.perf_counter() - t, time.process_time() - c)

        setattr(owner, name, timed)

    def wrap_generator(self, owner: object, name: str, stage: str) -> None:
        """Time each ``next()`` of the generator ``owner.name`` returns (the work done per item)."""
        fn = getattr(owner, name)

        def timed(*a, **k):  # type: ignore[no-untyped-def]
            it = fn(*a, **k)
            while True:
                t, c = time.perf_counter(), time.process_time()
                try:
                    item = next(it)
                except StopIteration:
                    self.add(stage, time.perf_counter() - t, time.process_time() - c)
                    return
                self.add(stage, time.perf_counter() - t, time.process_time() - c)
                yield item

        setattr(owner, name, timed)


def derive_stages(s: dict[str, float], total: float) -> dict[str, float]:
    """The stages from the wrapped functions' times (inner ones subtracted from outer ones)."""
    out = {k: v for k, v in s.items() if not k.startswith("_")}
    inner = sum(out.get(k, 0.0) for k in ("letterbox (preprocess)", "inference (ONNX Runtime, 1 thread)"))
    out["ROI crop + tracking (Python)"] = s["_detect"] - s["_infer"]
    out["other in infer (shapes, Det objects)"] = s["_infer"] - inner - out.get("box decode + NMS", 0.0)
    out["stereo join + detection rows (Python)"] = (
        s["_redetect"] - s["_detect"] - out["decode video (PyAV) + Y plane copy"]
    )
    out["rest (summary, comparison, rename)"] = total - sum(out.values())
    out["total"] = total
    return out


def profile_session(path: Path, batched: bool = False) -> tuple[dict[str, float], dict]:
    """Reanalyse one session with re-detection in this process; (seconds per stage, summary). ``batched``:
    through ``redetect_batched`` (the default path), else the reference path (``redetect``, the online
    detector per stereo set). The stage ``cpu`` is the process CPU time of the whole session."""
    import rig.reanalyze as ra
    import rig.redetect as rd
    from analysis.tracking import PointTracker
    from detection import online, runners

    clock = StageClock()
    targets = [
        (PointTracker, "solve_many"),
        (rd, "_readable_frames"),
        (ra, "load_session"),
        (rd, "redetect"),
        (rd, "redetect_batched"),
        (rd, "_track_camera_chunk"),
        (rd._BatchedTracker, "infer"),
        (ra, "triangulate_sets"),
        (ra, "_write_table"),
        (ra, "run_analyses"),
        (online.OnlineDetector, "detect"),
        (runners.YoloRunner, "infer"),
        (runners, "preprocess"),
        (runners.OnnxRuntimeRunner, "run_raw"),
        (runners, "decode"),
    ]
    saved = [(m, n, getattr(m, n)) for m, n in targets]
    clock.wrap_generator(rd, "_readable_frames", "decode video (PyAV) + Y plane copy")
    clock.wrap(ra, "load_session", "table I/O: load session")
    clock.wrap(rd, "redetect", "_redetect")
    clock.wrap(rd, "redetect_batched", "_redetect")
    clock.wrap(rd, "_track_camera_chunk", "_detect")
    clock.wrap(rd._BatchedTracker, "infer", "_infer")
    clock.wrap(ra, "triangulate_sets", "triangulation (PointTracker)")
    if not batched:  # the old offline 3-D: the online tracker's solve, one stereo set at a time
        PointTracker.solve_many = _solve_one_by_one  # type: ignore[method-assign]
    clock.wrap(ra, "_write_table", "table I/O: write CSVs")
    clock.wrap(ra, "run_analyses", "analyses (reaching, figures)")
    clock.wrap(online.OnlineDetector, "detect", "_detect")
    clock.wrap(runners.YoloRunner, "infer", "_infer")
    clock.wrap(runners, "preprocess", "letterbox (preprocess)")
    clock.wrap(runners.OnnxRuntimeRunner, "run_raw", "inference (ONNX Runtime, 1 thread)")
    clock.wrap(runners, "decode", "box decode + NMS")
    ahead, was_batched = rd.DECODE_AHEAD, rd.BATCHED
    rd.DECODE_AHEAD = 0  # decode inline, so that its time is a stage of its own
    rd.BATCHED = batched
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        summary = ra.reanalyze_session(path, force=True, options=Options(detect=True))
    finally:
        rd.DECODE_AHEAD, rd.BATCHED = ahead, was_batched
        for m, n, fn in saved:
            setattr(m, n, fn)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = derive_stages(clock.s, total)
    out["cpu"] = cpu
    for k, v in derive_stages(clock.c, cpu).items():
        out[f"cpu: {k}"] = v
    return out, summary


def _solve_one_by_one(self: Any, keys: Any, sets: Any) -> list[Any]:
    """``PointTracker.solve`` set by set: how reanalysis triangulated before ``solve_many``."""
    return [self.solve(k, s) for k, s in zip(keys, sets)]


def video_bytes(path: Path) -> int:
    from rig.session import load_session

    s = load_session(path)
    return sum(s.video_path(c).stat().st_size for c in s.frames)


def _set_path(batched: bool) -> None:
    """In a worker: re-detect through ``redetect_batched`` (True) or the reference ``redetect``, decoding
    inline (a single-threaded worker: decoding ahead would take a second core per worker)."""
    import rig.redetect as rd

    rd.BATCHED = batched
    rd.DECODE_AHEAD = 0


def serial_batch(
    paths: list[Path], workers: int, batched: bool = True
) -> tuple[float, float, float, dict[str, dict]]:
    """(wall s from before the cluster starts to the last result, cluster start s, workers' busy s,
    results) for one batch on ``workers`` local workers (imports warmed as part of the start), re-detecting
    through the batched path or the reference one."""
    from dask.distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None, processes=True)
    with Client(cluster) as client:
        client.run(_warm)
        client.run(_set_path, batched)
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


def floors(path: Path) -> dict[str, float]:
    """What one core can do at best, this session's first video and model: frames per CPU second of PyAV
    decoding alone (one decoder thread; the Y plane left in place, viewed, or copied out; the best of 5
    passes), and the network's CPU time per 64x64 ROI crop and per half-scale full-frame search image at
    several batch sizes (1 thread; median of many calls). CPU time, as load inflates wall time."""
    import av

    from detection.runners import make_runner, preprocess
    from rig.redetect import detector_config
    from rig.session import load_session, y_plane

    s = load_session(path)
    cam = next(iter(s.frames))
    out: dict[str, float] = {}
    h = w = 0
    for mode in ("decode only", "decode + Y view", "decode + Y copy"):
        rates = []
        for _ in range(5):
            with av.open(str(s.video_path(cam))) as c:
                st = c.streams.video[0]
                st.thread_type = "NONE"
                st.codec_context.thread_count = 1
                n, t = 0, time.process_time()
                for f in c.decode(st):
                    h, w = f.height, f.width
                    if mode != "decode only":
                        img = y_plane(f)
                        if mode == "decode + Y copy":
                            img.copy()
                    n += 1
                rates.append(n / (time.process_time() - t))
        out[f"{mode}, frames per CPU s"] = float(np.max(rates))
    runner = make_runner(detector_config(s))
    rng = np.random.default_rng(0)
    small = (round(h * 0.5), round(w * 0.5))
    for what, shape, batches in (("ROI crop 64x64", (64, 64), (1, 2, 16, 64)), ("search", small, (1, 2))):
        for b in batches:
            x, _ = preprocess([rng.integers(0, 256, shape, np.uint8) for _ in range(b)], None)
            runner.run_raw(x)  # type: ignore[attr-defined]
            ts = []
            for _ in range(max(5, 256 // b)):
                t = time.process_time()
                runner.run_raw(x)  # type: ignore[attr-defined]
                ts.append(time.process_time() - t)
            out[f"{what}, batch {b}, CPU us per image"] = 1e6 * float(np.median(ts)) / b
    runner.close()
    return out


def redetection_only(paths: list[Path], repeats: int) -> dict[tuple[bool, bool], list[tuple[float, float]]]:
    """Re-detection alone (decode + detect, no triangulation, analyses or files), per session: {(batched,
    decode thread): [(frames/s wall, frames per CPU s)]}, the four variants alternating. With the decode
    threads (one per camera, ``_decoded_ahead``) the process uses more than one core where it has them."""
    import rig.redetect as rd
    from rig.session import load_session

    out: dict[tuple[bool, bool], list[tuple[float, float]]] = {}
    ahead = rd.DECODE_AHEAD
    try:
        for p in paths:
            s = load_session(p)
            for _ in range(repeats):
                for thread in (False, True):
                    for batched in (False, True):
                        rd.DECODE_AHEAD = ahead if thread else 0
                        t, c = time.perf_counter(), time.process_time()
                        d = rd.redetect_batched(s) if batched else rd.redetect(s)
                        wall, cpu = time.perf_counter() - t, time.process_time() - c
                        n = len(set(zip(d["camera"].tolist(), d["seq"].tolist())))
                        out.setdefault((batched, thread), []).append((n / wall, n / cpu))
    finally:
        rd.DECODE_AHEAD = ahead
    return out


def same_results(a: Path, b: Path) -> bool:
    """Two reanalysis folders hold the same detections (but their timings) and the same 3-D."""
    from rig.session import read_csv_columns

    da, db = read_csv_columns(a / "detections.csv"), read_csv_columns(b / "detections.csv")
    same = da.keys() == db.keys() and all(
        np.array_equal(da[c], db[c], equal_nan=da[c].dtype.kind == "f")
        for c in da
        if c not in ("t_start_ns", "t_end_ns")
    )
    return same and (a / "points3d.csv").read_bytes() == (b / "points3d.csv").read_bytes()


def profile(args: argparse.Namespace, paths: list[Path], reused: int) -> str:
    """Before (the reference path) and after (the batched path): stages, frames/s per worker (wall and
    CPU), 1 vs 2 workers, serial fraction, Amdahl; with the single-core floors."""
    import shutil

    load_start = os.getloadavg()
    info = machine(load_start[0])
    _warm()
    fl = floors(paths[0])
    print("floors: " + ", ".join(f"{k} {v:.0f}" for k, v in fl.items()), flush=True)
    for batched in (False, True):  # model load and first figures are not a stage
        profile_session(paths[0], batched)
    stages: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    frames, mb, same, stats = [], [], True, []
    keep = Path(tempfile.mkdtemp(prefix="bench-reanalysis-ref-"))
    for i, p in enumerate(paths):
        for _ in range(args.repeats):
            for batched in (False, True) if i % 2 == 0 else (True, False):  # which goes first alternates
                st, summary = profile_session(p, batched)
                stages[batched].append(st)
                if batched:
                    stats.append(summary["redetection"])
                kept = keep / f"{p.name}-{'batched' if batched else 'reference'}"
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(p / "reanalysis", kept)
                n = summary["frames_detected"]
                print(
                    f"{p.name} {'batched' if batched else 'reference'}: {n / st['total']:.0f} frames/s wall, "
                    f"{n / st['cpu']:.0f} per CPU s (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
            same &= same_results(keep / f"{p.name}-reference", keep / f"{p.name}-batched")
            frames.append(summary["frames_detected"])
            mb.append(video_bytes(p) / 1e6)
    shutil.rmtree(keep, ignore_errors=True)
    alone = redetection_only(paths, args.repeats)
    alone_rows = [
        [
            "batched" if b else "reference",
            "thread per camera" if th else "inline",
            f"{np.median([r[0] for r in runs]):.0f}",
            f"{np.median([r[1] for r in runs]):.0f}",
        ]
        for (b, th), runs in sorted(alone.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]

    def is_stage(k: str) -> bool:
        return k not in ("total", "cpu") and not k.startswith("cpu: ")

    keys = [k for k in stages[False][0] if is_stage(k)]
    keys += [k for k in stages[True][0] if is_stage(k) and k not in keys]

    def per_frame(batched: bool, k: str) -> float:
        return float(np.median([1e6 * s.get(k, 0.0) / n for s, n in zip(stages[batched], frames)]))

    rows = []
    for k in [*sorted(keys, key=lambda k: -per_frame(False, f"cpu: {k}")), "total"]:
        cb, ca = per_frame(False, f"cpu: {k}"), per_frame(True, f"cpu: {k}")
        wb, wa = per_frame(False, k), per_frame(True, k)
        name = "**total**" if k == "total" else k
        rows.append([name, f"{cb:.0f}", f"{ca:.0f}", f"{cb - ca:+.0f}", f"{wb:.0f}", f"{wa:.0f}"])
    fps = {b: [n / s["total"] for s, n in zip(stages[b], frames)] for b in (False, True)}
    cfps = {b: [n / s["cpu"] for s, n in zip(stages[b], frames)] for b in (False, True)}
    mbps = [m / s["total"] for s, m in zip(stages[True], mb)]
    batches: dict[tuple[bool, int], list[tuple[float, float, float]]] = {}
    for rep in range(args.repeats):
        for batched in (False, True):
            for w in (1, 2):
                wall, start, busy, _ = serial_batch(paths, w, batched)
                batches.setdefault((batched, w), []).append((wall, start, busy))
                print(
                    f"round {rep + 1}, {'batched' if batched else 'reference'}, {w} worker(s): "
                    f"wall {wall:.1f} s, cluster start {start:.1f} s (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    load_end = os.getloadavg()
    n_frames = sum(frames[:: args.repeats])
    brow, serial, wall1 = [], {}, {}
    for (batched, w), runs in batches.items():
        wall, start, busy = (float(np.median([r[i] for r in runs])) for i in range(3))
        serial[(batched, w)] = wall - busy / w
        wall1[(batched, w)] = wall
        brow.append(
            [
                "batched" if batched else "reference",
                str(w),
                f"{wall:.1f}",
                f"{start:.1f}",
                f"{busy:.1f}",
                f"{serial[(batched, w)]:.1f}",
                f"{n_frames / wall:.0f}",
                f"{n_frames / wall / w:.0f}",
            ]
        )
    f = serial[(True, 1)] / wall1[(True, 1)]
    speed = {b: wall1[(b, 1)] / wall1[(b, 2)] for b in (False, True)}
    start1 = float(np.median([r[1] for r in batches[(True, 1)]]))
    per_session_serial = max(serial[(True, 1)] - start1, 0.0) / len(paths)
    hour_s = 892_800 / float(np.median(fps[True]))
    lab_serial = start1 + 256 * per_session_serial
    f_lab = lab_serial / (lab_serial + 256 * hour_s)
    amd = " | ".join(f"{amdahl(f, n):.1f}x" for n in (2, 16, 64, 256))
    amd_lab = " | ".join(f"{amdahl(f_lab, n):.1f}x" for n in (2, 16, 64, 256))
    trials = "/".join(str(t) for t in sorted({len(load_session_trials(p)) for p in paths}))
    origin = f"{min(reused, len(paths))} reused from an earlier run, " if reused else ""
    st = stats[0]
    again = float(np.median([s["frames_detected_again"] / s["frames"] for s in stats]))
    crops = float(np.median([s["crops"] / s["network_calls"] for s in stats]))
    floor_rows = [[k.rsplit(", ", 1)[0], f"{v:.0f}", k.rsplit(", ", 1)[1]] for k, v in fl.items()]
    dec = fl["decode + Y copy, frames per CPU s"]
    crop1, crop64 = (fl[f"ROI crop 64x64, batch {b}, CPU us per image"] for b in (1, 64))
    ceiling = 1e6 / (1e6 / dec + crop64)
    cpu_b, cpu_a = per_frame(False, "cpu: total"), per_frame(True, "cpu: total")
    dec_a = per_frame(True, "cpu: decode video (PyAV) + Y plane copy")
    inf_a = per_frame(True, "cpu: inference (ONNX Runtime, 1 thread)")
    tri_a = per_frame(True, "cpu: triangulation (PointTracker)")
    tri_b = per_frame(False, "cpu: triangulation (PointTracker)")
    stage_table = table(
        [
            "stage",
            "before: CPU us per camera frame",
            "after: CPU us",
            "saved CPU us",
            "before: wall us",
            "after: wall us",
        ],
        rows,
    )
    batch_table = table(
        [
            "path",
            "workers",
            "batch wall s (incl. cluster start)",
            "cluster start s",
            "workers' session s",
            "serial s",
            "batch frames/s",
            "frames/s per worker",
        ],
        brow,
    )
    b50, b99 = pct(fps[False])
    a50, a99 = pct(fps[True])
    m50, m99 = pct(mbps)
    return f"""## Reanalysis per worker after batching (issue 19): stages before/after, floors, 1 vs 2 workers

**After** (`rig.redetect.redetect_batched`, the default re-detection path, and 3-D by
`PointTracker.solve_many`, all stereo sets at once), compared with the path they replace (`redetect`: the
online detector per stereo set, kept as the reference, and `PointTracker.solve` one set at a time) on the
same sessions, alternating, in one process, one thread, decoding inline so that it is a stage of its own.
The section "Reanalysis profile" above is the earlier measurement of the old path (at load ~8).

Command: `{" ".join(["python", "scripts/bench_reanalysis.py", *sys.argv[1:]])}`
Machine: {info}
Load average (1 min) {load_start[0]:.1f} at start, {load_end[0]:.1f} at the end (2 cores shared with
other engineers' jobs: wall figures are noisy; medians over sessions, and the CPU time per frame, which
load disturbs less, beside them).
Input: {len(paths)} simulated sessions ({origin}{trials} trials each), {n_frames} camera frames (2 cameras
448x460, 124 Hz, libx264 ultrafast crf 12, {sum(mb[:: args.repeats]):.0f} MB of video), each profiled
{args.repeats} time(s) per path.

**Floors on one core** (this machine, first video of the first session, bundled model, 1 thread):

{table(["what", "value", "unit"], floor_rows)}

Decoding alone runs at ~{dec:.0f} frames/s per core; one ROI crop costs {crop1:.0f} us at batch 1 and
{crop64:.0f} us at batch 64. So a single-threaded worker cannot exceed ~{ceiling:.0f} camera frames/s here
even with nothing but decoding and one batched crop per frame: **the issue's target of 1000 frames/s per
single-threaded CPU worker is not reachable on this CPU** with PyAV/FFmpeg software decoding; it needs
the decoder on a second core (a worker of 2 CPUs: `_decoded_ahead` already decodes in a thread per
camera), or the GPU path (NVDEC decoding, batched inference).

**What the batched path changes**: each camera's frames are cut into segments of {st["segment_frames"]}
frames tracked side by side in {st["lanes"]} lanes per camera, all lanes' ROI crops (and all full-frame
searches) in one network call (median {crops:.1f} crops per call, against 1-2 before), boxes decoded
vectorised over the batch (`detection.runners.decode`), detection rows built per frame without
per-box Python lists. A lane starts from a guessed track (the online run's recorded detections); its
predecessor carries on into it until both tracks are equal, from where the lane's own boxes are the
reference's: {100 * again:.1f} % of the frames were detected twice (median). Detections and 3-D of
the two paths: **{"identical (every box, every 3-D point)" if same else "DIFFERENT"}** on every session.

Per stage, microseconds per camera frame (median over sessions), before (reference path) and after
(batched): the process's CPU time (load-robust) and wall time:

{stage_table}

Where a worker's CPU time goes now: decoding {100 * dec_a / cpu_a:.0f} % ({dec_a:.0f} us per frame, its
floor being {1e6 / dec:.0f}); the network {inf_a:.0f} us per frame, {inf_a / crop64:.1f}x its batch-64
floor (frames detected twice at lane boundaries, smaller batches where segments end); triangulation
{tri_a:.0f} us (`PointTracker.solve_many`: the online tracker's arithmetic for all sets at once, then its
Kalman filter set by set; before, `solve` per set: {tri_b:.0f} us).
The CPU time per frame fell {cpu_b / cpu_a:.2f}x, not the 3x
the issue hoped for: the old path's time was decoding and the network, not per-frame Python (~10 %).

Re-detection alone (decode + detect; `redetect` / `redetect_batched` on each session, medians; load
{os.getloadavg()[0]:.1f} after), decoding inline or in a thread per camera (`_decoded_ahead`, on by
default): a worker process given 2 CPUs decodes on the second one:

{table(["path", "decoding", "camera frames/s (wall)", "frames per CPU s"], alone_rows)}

Per worker (whole session: re-detection, triangulation, analyses, files; decoding inline):
before **{b50:.0f} camera frames/s** (p50 over sessions; p99 {b99:.0f}), after **{a50:.0f}
frames/s** (p99 {a99:.0f}); per CPU second (load-robust): before {np.median(cfps[False]):.0f}, after
{np.median(cfps[True]):.0f} frames. Video read per worker after: **{m50:.1f} MB/s** (p50; p99 {m99:.1f}):
64 workers need {64 * m50:.0f} MB/s from the storage.

Batch on a local Dask cluster, timed from before the cluster starts to the last result (medians of
{args.repeats} round(s)):

{batch_table}

Speedup 1 -> 2 workers: reference {speed[False]:.2f}x, batched {speed[True]:.2f}x ({len(paths)} sessions on 2
workers: at most {len(paths) / -(-len(paths) // 2):.2f}x). The workers here are
single-threaded (decoding inline, not ahead in a thread per camera as by default: that would give each
worker both of this machine's cores). Batched, serial part with 1 worker
{serial[(True, 1)]:.1f} s of {wall1[(True, 1)]:.1f} s: serial fraction {f:.3f} for this short batch; Amdahl,
speedup at 2 | 16 | 64 | 256 workers: {amd}; a lab batch of 256 one-hour sessions
({hour_s / 60:.0f} worker-minutes each at the batched rate; serial fraction {f_lab:.5f}): {amd_lab}.
"""


def gpu(args: argparse.Namespace, paths: list[Path]) -> str:
    """Batched re-detection on the GPU (``--device``), session by session in this process: frames/s (wall,
    decoding included), and the boxes against the CPU path's (the reference: FP16 may move a box edge)."""
    from rig.redetect import redetect_batched
    from rig.session import load_session

    info = machine()
    rates, diffs, counts, stats = [], [], [], []
    for i, p in enumerate([paths[0], *paths]):  # the first: engine build / CUDA start, not timed
        s = load_session(p)
        st: dict = {}
        t = time.perf_counter()
        det = redetect_batched(s, device=args.device, stats=st)
        dt = time.perf_counter() - t
        if i == 0:
            continue
        ref = redetect_batched(s)
        rates.append(st["frames"] / dt)
        stats.append(st)
        gi, ci = best_rows(det), best_rows(ref)
        keys = sorted(set(gi) & set(ci))
        g, c = np.array([gi[k] for k in keys]), np.array([ci[k] for k in keys])
        counts.append(float(np.mean(det["n_boxes"][g] == ref["n_boxes"][c])))
        both = (det["n_boxes"][g] > 0) & (ref["n_boxes"][c] > 0)
        if both.any():
            d = np.abs(np.stack([det[k][g][both] - ref[k][c][both] for k in ("x1", "y1", "x2", "y2")], 1))
            diffs.append(float(np.max(d)))
        print(f"{p.name}: {st['frames']} frames, {rates[-1]:.0f} frames/s", flush=True)
    p50, p99 = pct(rates)
    per_call = float(np.median([s["crops"] / s["network_calls"] for s in stats]))
    return f"""## Reanalysis on the GPU (`--device {args.device}`): batched re-detection, frames/s per worker

Command: `{" ".join(["python", "scripts/bench_reanalysis.py", *sys.argv[1:]])}`
Machine: {info}
{len(paths)} simulated sessions, {sum(s["frames"] for s in stats)} camera frames; lanes
{stats[0]["lanes"]} per camera, {per_call:.1f} crops per network call (median).
Per session (decode + detection, one process): **{p50:.0f} camera frames/s** (p50; p99 {p99:.0f}).
Against the CPU path: frames with the same number of boxes {min(counts):.4f} (worst session); largest box
edge difference {max(diffs) if diffs else float("nan"):.3f} px.
"""


def best_rows(det: dict[str, np.ndarray]) -> dict[tuple[str, int], int]:
    """(camera, seq) -> the row of that frame's best box (its first row) in detection columns."""
    out: dict[tuple[str, int], int] = {}
    for i, k in enumerate(zip(det["camera"].tolist(), det["seq"].tolist())):
        out.setdefault(k, i)
    return out


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
    ap.add_argument(
        "--profile", action="store_true", help="floors; per-stage profile before/after batching; Amdahl"
    )
    ap.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="cuda / tensorrt: frames/s of batched re-detection on the GPU (NVDEC decoding where offered)",
    )
    args = ap.parse_args()
    if args.profile:
        out = args.dir or Path(tempfile.mkdtemp(prefix="bench-reanalysis-"))
        out.mkdir(parents=True, exist_ok=True)
        reused = sum(1 for p in out.glob("*") if (p / "session.json").exists())
        text = profile(args, record(out, args.sessions, args.trials), reused)
        print(text)
        if not args.no_write:
            write_block("reanalysis-batched", text)
        return 0
    if args.device != "cpu":
        out = args.dir or Path(tempfile.mkdtemp(prefix="bench-reanalysis-"))
        out.mkdir(parents=True, exist_ok=True)
        try:
            text = gpu(args, record(out, args.sessions, args.trials))
        except UserError as exc:
            print(f"bench_reanalysis.py --device: {exc}", file=sys.stderr)
            return 2
        print(text)
        if not args.no_write:
            write_block(f"reanalysis-{args.device}", text)
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
