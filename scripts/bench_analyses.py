#!/usr/bin/env python3
"""The social analyses against truth: the generators of tests/analysis_generators.py (known answers) over
many seeds, each analysis's error against the truth, beside the previous rules' error on the same data, and
the time per call (median and p99). Writes BENCHMARKS.md block "analyses-social".

    python scripts/bench_analyses.py --seeds 50
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, machine, pct, write_block

from analysis.events import events
from analysis.tasks.social import (
    LABEL_WEIGHT_CLASSES,
    LABEL_WEIGHT_TRACKS,
    apply_swaps,
    repair_identities,
    three_chamber,
    two_mouse_interaction,
)
from tests.analysis_generators import three_chamber_case, two_mice_case, wrong_identity_frames


def previous_repair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rule ``repair_identities`` had before (git d4d66d0): per frame, swap when exchanging brings both
    closer to their last known positions; lone detections are never judged."""
    a, b = a.copy(), b.copy()
    last_a = last_b = None
    for k in range(len(a)):
        if last_a is not None and last_b is not None and np.isfinite(a[k]).all() and np.isfinite(b[k]).all():
            keep = np.linalg.norm(a[k] - last_a) + np.linalg.norm(b[k] - last_b)
            swap = np.linalg.norm(b[k] - last_a) + np.linalg.norm(a[k] - last_b)
            if swap < keep:
                a[k], b[k] = b[k].copy(), a[k].copy()
        if np.isfinite(a[k]).all():
            last_a = a[k]
        if np.isfinite(b[k]).all():
            last_b = b[k]
    return a, b


def bench_three_chamber(seeds: int) -> tuple[dict[str, list[float]], list[float]]:
    err: dict[str, list[float]] = {k: [] for k in ("trans", "bouts", "occ", "trans0", "bouts0", "occ0")}
    times = []
    for seed in range(seeds):
        case = three_chamber_case(seed)
        truth = case.truth
        t0 = time.perf_counter()
        r = three_chamber(case.t_s, case.head, case.geometry, confidence=case.likelihood, min_confidence=0.6)
        times.append(time.perf_counter() - t0)
        # the previous rules: no cut, no filling, every change of a known chamber is a transition, bouts
        # of >= 0.2 s split by any missed frame
        r0 = three_chamber(case.t_s, case.head, case.geometry, 0.2, max_gap_s=0, min_gap_s=0)
        known = r0["chamber"][r0["chamber"] != ""]
        trans0 = int(np.sum(known[1:] != known[:-1]))
        for key, res, trans in (("", r, r["transitions"]), ("0", r0, trans0)):
            err["trans" + key].append(abs(trans - truth["transitions"]))
            err["bouts" + key].append(
                sum(abs(res["cups"][c]["n_bouts"] - truth["cups"][c]["n_bouts"]) for c in truth["cups"])
            )
            err["occ" + key].append(
                max(abs(res["occupancy_s"][n] - s) for n, s in truth["occupancy_s"].items()) * case.fps
            )
    return err, times


def bench_social(seeds: int) -> tuple[dict[str, list[float]], list[float]]:
    err: dict[str, list[float]] = {
        k: []
        for k in (
            "raw",
            "prev",
            "tracks",
            "classes",
            "epochs",
            "epochs0",
            "types",
            "edge",
            "raw_c",
            "tracks_c",
        )
    }
    times = []
    for seed in range(seeds):
        case = two_mice_case(seed)
        obs = case.observed
        ca, cb = obs["A"]["center"], obs["B"]["center"]
        err["raw"].append(wrong_identity_frames(case, ca, cb))
        err["prev"].append(wrong_identity_frames(case, *previous_repair(ca, cb)))
        t0 = time.perf_counter()
        a, b, swapped = repair_identities(ca, cb, label_weight=LABEL_WEIGHT_TRACKS)
        pa, pb = ({k: v.copy() for k, v in obs[w].items()} for w in ("A", "B"))
        apply_swaps(pa, pb, swapped)
        res = two_mouse_interaction(case.t_s, pa, pb, 5.0 * case.px_per_cm)
        times.append(time.perf_counter() - t0)
        err["tracks"].append(wrong_identity_frames(case, a, b))
        a2, b2, _ = repair_identities(ca, cb, label_weight=LABEL_WEIGHT_CLASSES)
        err["classes"].append(wrong_identity_frames(case, a2, b2))
        n_true = len(case.truth["epochs"])
        err["epochs"].append(abs(len(res["epochs"]) - n_true))
        err["types"].append(int([e[2] for e in res["epochs"]] != case.truth["types"]))
        if len(res["epochs"]) == n_true:
            err["edge"].append(
                max(
                    max(abs(s - ts), abs(e - te))
                    for (s, e, *_), (ts, te) in zip(res["epochs"], case.truth["epochs"], strict=True)
                )
            )
        # the previous epoch rule: previous repair, no filling, any frame under the threshold splits
        pa0, pb0 = previous_repair(ca, cb)
        d0 = np.linalg.norm(pa0 - pb0, axis=1)
        close0 = np.nan_to_num(d0, nan=np.inf) < 5.0 * case.px_per_cm
        err["epochs0"].append(abs(len(events(case.t_s, close0, 0.2, 0.0)) - n_true))
        # the swap during the first contact (centres 3 cm apart): the hard case
        hard = two_mice_case(seed, swap_at_s=4.5)
        ha, hb = hard.observed["A"]["center"], hard.observed["B"]["center"]
        err["raw_c"].append(wrong_identity_frames(hard, ha, hb))
        err["tracks_c"].append(wrong_identity_frames(hard, *repair_identities(ha, hb)[:2]))
    return err, times


def bench_hour(repeats: int) -> list[float]:
    """repair_identities + two_mouse_interaction on one hour at 30 fps (the 20 s case tiled)."""
    case = two_mice_case(0)
    reps = 180
    t = np.arange(len(case.t_s) * reps) / case.fps
    tile = {w: {k: np.tile(v, (reps, 1)) for k, v in case.observed[w].items()} for w in ("A", "B")}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, _, swapped = repair_identities(tile["A"]["center"], tile["B"]["center"])
        pa, pb = ({k: v.copy() for k, v in tile[w].items()} for w in ("A", "B"))
        apply_swaps(pa, pb, swapped)
        two_mouse_interaction(t, pa, pb, 50.0)
        times.append(time.perf_counter() - t0)
    return times


def summary_row(name: str, values: list[float], unit: str = "") -> str:
    v = np.asarray(values, dtype=float)
    p50, p99 = pct(v)
    return f"| {name} | {np.mean(v):.2f} | {p50:.0f} | {p99:.1f} | {v.max():.0f}{unit} |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--hour-repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    mach = machine()
    code = ["analysis/events.py", "analysis/tasks/social.py", "tests/analysis_generators.py"]
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", *code], capture_output=True, text=True, cwd=REPO, check=False
    ).stdout.strip()
    if dirty:
        mach += " (with uncommitted changes to the analyses measured)"
    tc, tc_t = bench_three_chamber(args.seeds)
    so, so_t = bench_social(args.seeds)
    hour = bench_hour(args.hour_repeats)
    ms = lambda v: "{:.1f} / {:.1f}".format(*(1000 * x for x in pct(v)))  # noqa: E731
    lines = [
        "### Social analyses against truth (tests/analysis_generators.py)",
        "",
        f"Machine: {mach}",
        f"Command: `python scripts/bench_analyses.py --seeds {args.seeds}` (one seed per generated session)",
        "",
        "Three-chamber: 60 s at 30 fps, 5 % missed frames, 3 % false points (likelihood 0.05-0.5), a 2 s "
        "gap; truth 4 transitions, 1 bout per cup. Defaults: DeepLabCut cut 0.6, gaps filled up to 3 s, "
        "visits and bouts >= 0.2 s, bouts < 0.2 s apart joined. Errors per session:",
        "",
        "| error | mean | median | p99 | max |",
        "|---|---|---|---|---|",
        summary_row("transitions (count)", tc["trans"]),
        summary_row("cup bouts (count, both cups)", tc["bouts"]),
        summary_row("chamber time (frames, worst chamber)", tc["occ"]),
        summary_row("previous rules: transitions", tc["trans0"]),
        summary_row("previous rules: cup bouts", tc["bouts0"]),
        summary_row("previous rules: chamber time (frames)", tc["occ0"]),
        "",
        "Two mice: 20 s at 30 fps, two contacts (nose-to-nose, nose-to-tail; 5 cm at 10 px/cm), a 15-frame "
        "label swap while 20 cm apart, 3 % of one mouse's boxes lost (2 inside the swap). Identity: frames "
        "in which a detected mouse carries the other's identity.",
        "",
        "| error | mean | median | p99 | max |",
        "|---|---|---|---|---|",
        summary_row("identity, raw labels (frames)", so["raw"]),
        summary_row("identity, previous repair (frames)", so["prev"]),
        summary_row("identity, repaired, track labels (frames)", so["tracks"]),
        summary_row("identity, repaired, class labels (frames)", so["classes"]),
        summary_row("swap during a contact: raw labels (frames)", so["raw_c"]),
        summary_row("swap during a contact: repaired, track labels (frames)", so["tracks_c"]),
        summary_row("contact epochs (count)", so["epochs"]),
        summary_row("previous rules: contact epochs (count)", so["epochs0"]),
        summary_row("epoch types wrong (sessions)", so["types"]),
        summary_row("epoch edges (frames, worst)", so["edge"]),
        "",
        "Time per call, median / p99 ms: three-chamber (1800 frames) "
        f"{ms(tc_t)}; identity repair + contacts (600 frames) {ms(so_t)}; one hour at 30 fps (108,000 "
        f"frames, {args.hour_repeats} runs) {ms(hour)}.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_block("analyses-social", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
