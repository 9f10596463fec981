#!/usr/bin/env python3
"""``deepbehavior align``'s matcher (:func:`rig.align.match_sync`) on synthetic sessions: pseudo-random sync
pulses at 0.5-1.5 s (as the firmware draws them), an imaging record with an offset, a 3000 ppm drift, 10 %
of the pulses missing on each side and spurious extra pulses; jittered (0.3 ms) or sampled once per 30 Hz
frame. Time per call (median and p99 over seeds) and correctness: wrong pairs, common pulses not matched,
drift error, residual p99. Writes BENCHMARKS.md block "align".

    python scripts/bench_align.py --seeds 9
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine, pct, write_block

from rig.align import match_sync

DRIFT_PPM = 3000.0
DROP = 0.10


def case(
    hours: float, seed: int, frame_hz: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Firmware times, imaging times, and the true pulse of each firmware row and of each imaging row (-1:
    a spurious pulse)."""
    rng = np.random.default_rng(seed)
    n = int(hours * 3600)
    t = 2.0 + np.cumsum(rng.integers(500, 1501, n) / 1e3) + rng.uniform(0, 1e-3, n)
    img = 777.0 + (t - t[0]) * (1 + DRIFT_PPM * 1e-6)
    if frame_hz is None:
        img = img + rng.normal(0, 3e-4, n)
    else:  # seen at the first frame after the edge
        img = np.ceil(img * frame_hz) / frame_hz
    kf = np.flatnonzero(rng.random(n) >= DROP)
    ki = np.flatnonzero(rng.random(n) >= DROP)
    extra = n // 200
    b = np.concatenate([img[ki], rng.uniform(img[0], img[-1], extra)])
    label = np.concatenate([ki, np.full(extra, -1)])
    order = np.argsort(b)
    return t[kf], b[order], kf, label[order]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=9)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    rows = []
    scenarios = [
        ("1 h, jitter 0.3 ms", 1.0, None, 10.0),
        ("4 h, jitter 0.3 ms", 4.0, None, 10.0),
        ("1 h, sampled per 30 Hz frame", 1.0, 30.0, 40.0),
    ]
    for name, hours, frame_hz, tol_ms in scenarios:
        times: list[float] = []
        drift_err: list[float] = []
        res99: list[float] = []
        wrong = missed = 0
        for seed in range(args.seeds):
            a, b, kf, label = case(hours, seed, frame_hz)
            t0 = time.perf_counter()
            m = match_sync(a, b, tolerance_s=tol_ms / 1e3)
            times.append(time.perf_counter() - t0)
            bad = sum(int(label[j] != kf[i]) for i, j in m.pairs)
            wrong += bad
            missed += len(set(kf.tolist()) & set(label.tolist())) - (len(m.pairs) - bad)
            drift_err.append(abs(m.drift_ppm - DRIFT_PPM))
            res99.append(float(np.percentile(np.abs(m.residuals_s), 99)) * 1e3)
        p50, p99 = pct(np.array(times) * 1e3)
        rows.append(
            f"| {name} | {len(a)} / {len(b)} | {tol_ms:g} | {p50:.0f} | {p99:.0f} | {wrong} | {missed} | "
            f"{max(drift_err):.2f} | {max(res99):.2f} |"
        )
        print(rows[-1], flush=True)
    text = "\n".join(
        [
            "## Imaging alignment: `deepbehavior align`'s sync matcher (`scripts/bench_align.py`)",
            "",
            f"Machine: {machine(load)}.",
            f"Command: `python scripts/bench_align.py --seeds {args.seeds}`. Per scenario, {args.seeds} "
            f"seeds: sync intervals 0.5-1.5 s, imaging clock +{DRIFT_PPM:g} ppm, {DROP:.0%} of pulses "
            "missing on each side, 0.5 % spurious imaging pulses. Wrong pairs (a firmware pulse paired with "
            "another pulse than its own) and common pulses missed (in both records, not paired with each "
            "other): summed over seeds; drift error and residual p99: the worst seed. "
            "Pulses: the last seed's.",
            "",
            "| scenario | pulses (session / imaging) | tolerance ms | time p50 ms | time p99 ms "
            "| wrong pairs | common pulses missed | drift error ppm | residual p99 ms |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    write_block("align", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
