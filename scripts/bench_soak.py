#!/usr/bin/env python3
"""Soak: one long session of the default simulated rig (and, with --hog, the same beside CPU hogs at
normal priority), then what the session folder holds.

Reports per camera frames recorded vs trigger pulses, frames lost (dropped rows), firmware events lost
(sequence gaps, from ``deepbehavior session --verify``), the memory of every node (memory must stay
flat), file sizes, and frame -> 3-D p50/p99 per window. Writes the ``soak`` (or ``soak-hog``, or
``--block``) block of BENCHMARKS.md.

Memory per node: RSS (resident, including the shared-memory frame rings the node has touched: up to
``ring_slots`` x frame size per camera it reads) and USS (its own pages only, what a leak grows), each
at its first sample after ``--warm-s`` (models loaded, rings touched), at the end and at most, and the
USS slope from a straight-line fit over the samples after warm-up, in MB per hour.

    python scripts/bench_soak.py --minutes 60
    python scripts/bench_soak.py --minutes 10 --hog 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine, pct, write_block

CLI = [sys.executable, "-m", "rig.cli"]


def child_rss(sup: psutil.Process) -> dict[str, tuple[float, float]]:
    """(RSS, USS) in MB per child process of the supervisor, by pid (named from the session log later)."""
    out = {}
    for p in sup.children(recursive=True):
        try:
            mem = p.memory_full_info()
            out[f"{p.pid}"] = (mem.rss / 1e6, mem.uss / 1e6)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def memory_table(
    samples: list[tuple[float, dict[str, tuple[float, float]]]], names: dict[str, str], warm_s: float
) -> list[str]:
    """Per process, after warm-up (nodes start one by one and leave one by one at the end): RSS and USS
    first / last / max, and the USS slope (MB/h) of a straight line through the warm samples."""
    seen: dict[str, list[tuple[float, float, float]]] = {}
    for t, x in samples:
        for pid, (rss, uss) in x.items():
            if t >= warm_s:
                seen.setdefault(pid, []).append((t, rss, uss))
    lines = [
        "",
        f"Memory after {warm_s:g} s of warm-up (RSS includes the frame rings a node reads; USS is its own):",
        "",
        "| node | RSS MB first | last | max | USS MB first | last | max | USS slope MB/h | samples |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for pid in sorted(seen, key=lambda k: names.get(k, k)):
        t, rss, uss = (np.array(c) for c in zip(*seen[pid], strict=True))
        slope = float(np.polyfit(t / 3600, uss, 1)[0]) if len(t) >= 3 else float("nan")
        lines.append(
            f"| {names.get(pid, 'pid ' + pid)} | {rss[0]:.0f} | {rss[-1]:.0f} | {rss.max():.0f} | "
            f"{uss[0]:.0f} | {uss[-1]:.0f} | {uss.max():.0f} | {slope:+.1f} | {len(t)} |"
        )
    return lines


def pid_names(folder: Path) -> dict[str, str]:
    """pid -> node name, from the session log's 'node X starting (pid N)' lines."""
    import re

    names = {}
    log = (folder / "session.log").read_text()
    for m in re.finditer(r"node (\S+) starting \(pid (\d+)\)", log):
        names[m.group(2)] = m.group(1)
    return names


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--hog", type=int, default=0, help="busy loops at normal priority beside the session")
    ap.add_argument("--window-min", type=float, default=5.0, help="minutes per latency window")
    ap.add_argument("--sample-s", type=float, default=30.0, help="seconds between memory samples")
    ap.add_argument("--warm-s", type=float, default=90.0, help="memory growth is counted after this")
    ap.add_argument("--block", help="BENCHMARKS.md block to write (default soak, or soak-hog)")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    out = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hog)]
    cmd = [*CLI, "run", "--quiet", "--output", str(out), "--duration", str(args.minutes * 60)]
    cmd += ["--set", "experiment.n_trials=null"]  # unlimited trials: the duration ends it
    for s in args.set:
        cmd += ["--set", s]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sup = psutil.Process(proc.pid)
    samples: list[tuple[float, dict[str, tuple[float, float]]]] = []
    try:
        while proc.poll() is None:
            time.sleep(min(args.sample_s, 5.0) if not samples else args.sample_s)
            if proc.poll() is None:
                samples.append((time.monotonic() - t0, child_rss(sup)))
        text = proc.stdout.read() if proc.stdout else ""
    finally:
        for h in hogs:
            h.kill()
        if proc.poll() is None:
            proc.kill()
    wall = time.monotonic() - t0
    folder = next(p for p in out.iterdir() if p.is_dir())
    verify = subprocess.run([*CLI, "session", str(folder), "--verify"], capture_output=True, text=True)
    from rig.session import load_session

    s = load_session(folder)
    names = pid_names(folder)
    lines = [
        f"Machine: {machine(load_before)}",
        f"Command: `python scripts/bench_soak.py --minutes {args.minutes:g}"
        + (f" --hog {args.hog}" if args.hog else "")
        + "".join(f" --set {x}" for x in args.set)
        + "`",
        "",
        f"Session: status {s.meta['status']} ({s.meta.get('reason', '')}), {wall / 60:.1f} min wall, "
        f"trials {s.meta['summary'].get('trials')}, exit code {proc.returncode}",
        "",
        "| camera | trigger pulses | frame rows | recorded | dropped | video MB |",
        "|---|---|---|---|---|---|",
    ]
    n_trig = len(s.extra.get("triggers", {}).get("index", []))
    for cam, t in s.frames.items():
        rec = int((t["video_index"] >= 0).sum())
        mb = s.video_path(cam).stat().st_size / 1e6
        lines.append(f"| {cam} | {n_trig} | {len(t['seq'])} | {rec} | {int(t['dropped'].sum())} | {mb:.0f} |")
    fw = [ln for ln in verify.stdout.splitlines() if "firmware" in ln or "task commands" in ln]
    lines += ["", f"`session --verify` (exit {verify.returncode}): " + "; ".join(x.strip() for x in fw)]
    if samples:
        lines += memory_table(samples, names, args.warm_s)
    p = s.points3d
    if p and len(p.get("t_frame_ns", [])):
        lat = (p["t_out_ns"] - p["t_frame_ns"]) / 1e6
        t = (p["t_frame_ns"] - p["t_frame_ns"][0]) / 60e9
        lines += ["", "| minutes | 3-D points | frame -> 3-D p50 ms | p99 ms |", "|---|---|---|---|"]
        w = args.window_min
        for k in range(int(np.ceil(t.max() / w + 1e-9))):
            sel = (t >= k * w) & (t < (k + 1) * w)
            if sel.any():
                p50, p99 = pct(lat[sel])
                lines.append(f"| {k * w:g}-{(k + 1) * w:g} | {int(sel.sum())} | {p50:.2f} | {p99:.2f} |")
    sizes = sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 1e6
    lines += ["", f"Session folder: {sizes:.0f} MB in all. Last lines of the run:", "", "```"]
    lines += [x for x in text.splitlines() if x.strip()][-12:] + ["```"]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        write_block(
            args.block or ("soak-hog" if args.hog else "soak"),
            f"### Soak{' beside CPU hogs' if args.hog else ''}\n\n" + report,
        )
    if args.keep:
        print(f"session kept in {folder}", file=sys.stderr)
    else:
        shutil.rmtree(out, ignore_errors=True)
    return 0 if s.meta["status"] == "complete" and verify.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
