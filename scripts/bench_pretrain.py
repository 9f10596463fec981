#!/usr/bin/env python
"""Self-supervised pretraining of the keypoint network on unlabeled session video: does it help with few
labels? (issue 15, "worth trying"). Written to BENCHMARKS.md (block ``keypoint-pretrain``).

Data: the DeepLabCut open-field set in the shared data folder (``dlc-openfield-pranav``): 30 labeled,
CONSECUTIVE 640x480 frames of video m4s1 (snout, left ear, right ear, tail base) and the UNLABELED video of
another session of the same rig, ``videos/m3v1mp4.mp4`` (2330 frames): labels from one session,
pretraining on another. Per ``--seeds`` seed the 30 frames are shuffled once: 5 val (the threshold is
picked there, as ``detect train-points`` does), 15 test, 10 left as the training pool; a run with n
training frames takes the pool's first n, so every n is scored on the same 15 test frames.

Pretext tasks (the encoder is :func:`detection.keypoints.build_net`'s four stride-2 stages ``s1``-``s4``;
only they are copied into the network that is then fine-tuned):

* ``masked``: masked reconstruction (MAE-style for a convnet): a crop with half of its 16-px patches
  greyed out goes through the whole network with a 48-channel head (4x4 pixels x RGB per output cell,
  pixel-shuffled back to full size); mean squared error on the masked pixels.
* ``simclr``: SimCLR: two views of the same place in a frame, each augmented as the recipe augments
  (:func:`detection.keypoints._sample_crop`: scale, rotation, brightness/contrast, blur, noise), the encoder's
  globally pooled features through a 2-layer projection, NT-Xent loss (temperature 0.2).

Crops for pretraining come from ``--video-frames`` frames spread evenly over the video, centred (with the
recipe's jitter) on a moving pixel (differs from the median frame by > 25 grey levels) 75 % of the time, else
anywhere: the animal is what moves, whatever the rig.

Conditions per (n training frames, seed), each fine-tuned by :func:`detection.keypoints.train_keypoints`
with the recipe (``--steps`` steps; the fine network alone, no search network):

* ``scratch``: from random init, ``--steps`` steps;
* ``scratch+`` : from random init, ``--steps`` plus as many steps as the pretraining's CPU time buys
  (the same total CPU budget as a pretrained run);
* ``masked`` / ``simclr``: the encoder pretrained (``--pretrain-steps`` steps, its own seed), then ``--steps``
  steps.

Scored on the 15 test frames: the online ROI path (a 96-px crop around each labeled point, offset up to
a quarter of the crop, as :mod:`bench_small_data` does) and the whole native frame through the fine
network; hits within ``--radius`` px above the val-picked threshold (a point under it is a miss: inf),
median / p90 px, false positives on 96-px crops of the test frames with no labeled part. The table gives
each condition's median over seeds and the per-seed values.

Usage: ``nice -n 10 python scripts/bench_pretrain.py [--n-train 3,10] [--seeds 0,1,2] [--steps 600]
[--pretrain-steps 300] [--tasks masked,simclr] [--no-write]`` (``DEEPBEHAVIOR_SHARED_DATA`` if the data
folder is elsewhere). Torch on one thread: a lab's CPU core.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_small_data import CSV, DATA, frame_errors, negatives, roi_errors  # noqa: E402
from benchlib import machine, write_block  # noqa: E402

from detection import keypoints as kp  # noqa: E402

VIDEO = DATA / "dlc-openfield-pranav" / "videos" / "m3v1mp4.mp4"
ENCODER = ("s1.", "s2.", "s3.", "s4.")


# -- unlabeled crops -----------------------------------------------------------------------------------------


def read_frames(video: Path, n: int) -> list[np.ndarray]:
    """``n`` BGR frames spread evenly over ``video``."""
    cap = cv2.VideoCapture(str(video))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    want = set(np.linspace(0, total - 1, n).round().astype(int).tolist())
    out, i = [], 0
    while True:
        ok, im = cap.read()
        if not ok:
            break
        if i in want:
            out.append(im)
        i += 1
    cap.release()
    if not out:
        raise SystemExit(f"{video}: no frames read")
    return out


class CropSource:
    """Augmented crops of unlabeled frames, centred on moving pixels most of the time."""

    def __init__(self, frames: list[np.ndarray], recipe: kp.Recipe, seed: int, moving_p: float = 0.75):
        self.frames, self.recipe, self.moving_p = frames, recipe, moving_p
        self.rng = np.random.default_rng(seed)
        grey = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]).astype(np.int16)
        bg = np.median(grey, 0)
        self.moving = []
        for g in grey:
            ys, xs = np.nonzero(np.abs(g - bg) > 25)
            self.moving.append(np.stack([xs, ys], 1)[:: max(len(xs) // 500, 1)].astype(float))

    def centre(self, i: int) -> np.ndarray:
        h, w = self.frames[i].shape[:2]
        mv = self.moving[i]
        if len(mv) and self.rng.random() < self.moving_p:
            return np.asarray(mv[self.rng.integers(len(mv))])
        return np.asarray(self.rng.uniform((0, 0), (w, h)))

    def crop(self, i: int, c: np.ndarray) -> np.ndarray:
        got = kp._sample_crop(self.frames[i], c[None], self.recipe, self.rng, negative=False)
        assert got is not None
        return got[0]

    def batch(self, n: int) -> list[np.ndarray]:
        out = []
        for _ in range(n):
            i = int(self.rng.integers(len(self.frames)))
            out.append(self.crop(i, self.centre(i)))
        return out

    def pairs(self, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        a, b = [], []
        for _ in range(n):
            i = int(self.rng.integers(len(self.frames)))
            c = self.centre(i)
            a.append(self.crop(i, c))
            b.append(self.crop(i, c))
        return a, b


# -- pretext tasks -------------------------------------------------------------------------------------------


def encoder_state(net: Any) -> dict[str, Any]:
    return {k: v.clone() for k, v in net.state_dict().items() if k.startswith(ENCODER)}


def pretrain_masked(src: CropSource, steps: int, seed: int, recipe: kp.Recipe, batch: int = 24) -> Any:
    """Masked reconstruction; returns the pretrained network (48-channel head)."""
    import torch

    torch.manual_seed(seed)
    net = build_for_pretext(48, recipe)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(seed)
    c, p = recipe.crop, 16
    net.train()
    for step in range(steps):
        x = torch.from_numpy(kp._to_input(src.batch(batch)))
        keep = torch.from_numpy(rng.random((batch, 1, c // p, c // p)) >= 0.5)
        mask = (~keep).float().repeat_interleave(p, 2).repeat_interleave(p, 3)  # 1: masked
        xin = x * (1 - mask) + 0.45 * mask
        rec = torch.nn.functional.pixel_shuffle(net(xin), 4)
        loss = (((rec - x) ** 2) * mask).sum() / (mask.sum() * 3).clamp(min=1)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
        if (step + 1) % max(steps // 5, 1) == 0:
            print(f"  masked: step {step + 1}/{steps} loss {float(loss.detach()):.4f}", flush=True)
    return net


def pretrain_simclr(src: CropSource, steps: int, seed: int, recipe: kp.Recipe, batch: int = 32) -> Any:
    """SimCLR on the encoder's pooled features; returns the network (its encoder is what counts)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = build_for_pretext(1, recipe)
    w = 4 * recipe.width
    proj = nn.Sequential(nn.Linear(w, 128), nn.ReLU(inplace=True), nn.Linear(128, 64))
    params = [p for n, p in net.named_parameters() if n.startswith(ENCODER)] + list(proj.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=steps, pct_start=0.1)
    net.train()
    labels = torch.arange(2 * batch) ^ 1  # view 2i pairs with 2i + 1

    def embed(x: Any) -> Any:
        f = net.s4(net.s3(net.s2(net.s1(x))))
        return nn.functional.normalize(proj(f.mean((2, 3))), dim=1)

    for step in range(steps):
        a, b = src.pairs(batch)
        views = [v for pair in zip(a, b) for v in pair]
        z = embed(torch.from_numpy(kp._to_input(views)))
        sim = z @ z.T / 0.2
        sim.fill_diagonal_(-1e9)
        loss = nn.functional.cross_entropy(sim, labels)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
        if (step + 1) % max(steps // 5, 1) == 0:
            print(f"  simclr: step {step + 1}/{steps} loss {float(loss.detach()):.4f}", flush=True)
    return net


def build_for_pretext(channels: int, recipe: kp.Recipe) -> Any:
    return _ORIG_BUILD(channels, recipe.width, recipe.arch)


_ORIG_BUILD = kp.build_net


@contextmanager
def encoder_init(state: dict[str, Any] | None) -> Iterator[None]:
    """While active, :func:`detection.keypoints.build_net` (as ``train_keypoints`` calls it) starts from
    ``state``'s encoder weights (None: random init, unchanged)."""

    def build(*args: Any, **kw: Any) -> Any:
        net = _ORIG_BUILD(*args, **kw)
        if state is not None:
            missing = net.load_state_dict(state, strict=False)
            assert not missing.unexpected_keys, missing.unexpected_keys
        return net

    kp.build_net = build
    try:
        yield
    finally:
        kp.build_net = _ORIG_BUILD


# -- one run -----------------------------------------------------------------------------------------------


def score(
    model: kp.KeypointModel, va: kp.PointDataset, te: kp.PointDataset, a: argparse.Namespace, seed: int
) -> dict[str, Any]:
    runner = kp.TorchKeypointRunner(model, confidence=0.0)

    def predict(im: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return runner.infer_points([im])[0]

    k = len(va.names)
    ev, cv = frame_errors(predict, va, 1.0)
    thr = kp.pick_point_threshold(ev, cv, negatives(predict, kp.negative_crops(va, a.roi, seed=seed), k),
                                  a.radius)  # fmt: skip
    neg = negatives(predict, kp.negative_crops(te, a.roi, seed=seed + 1), k)
    out: dict[str, Any] = {"threshold": thr, "fp": int((neg >= thr).any(1).sum()), "n_neg": len(neg)}
    for what, (err, conf) in (("roi", roi_errors(predict, te, a.roi, seed)),
                              ("frame", frame_errors(predict, te, 1.0))):  # fmt: skip
        e = np.where(conf >= thr, err, np.inf)[~np.isnan(err)]
        out[what] = {"hits": int((e <= a.radius).sum()), "n": int(e.size),
                     "median": kp._percentile(e, 50), "p90": kp._percentile(e, 90)}  # fmt: skip
    return out


def finetune(tr: kp.PointDataset, steps: int, seed: int, state: dict[str, Any] | None) -> tuple[Any, float]:
    """(model, CPU s) from the recipe with ``steps`` steps, starting from ``state``'s encoder."""
    c0 = time.process_time()
    with encoder_init(state):
        model = kp.train_keypoints(tr, kp.Recipe(steps=steps), seed=seed, threads=1)
    return model, time.process_time() - c0


def _fmt(v: float) -> str:
    return f"{v:.1f}" if math.isfinite(v) else "inf"


def table(
    runs: list[dict[str, Any]],
    tasks: list[str],
    a: argparse.Namespace,
    where: str,
    n_labeled: int,
    n_frames: int,
) -> str:
    """The BENCHMARKS.md block from every run's numbers (:func:`score` + condition, seed, n, steps, CPU s)."""
    rows = []
    ns = sorted({r["n"] for r in runs})
    for n in ns:
        for cond in ["scratch", "scratch+", *tasks]:
            rs = [r for r in runs if r["n"] == n and r["cond"] == cond]
            if not rs:
                continue

            def med(f: Any, rs: list[dict[str, Any]] = rs) -> float:
                return float(np.median([f(r) for r in rs]))

            def per(f: Any, rs: list[dict[str, Any]] = rs) -> str:
                return " / ".join(str(f(r)) for r in rs)

            rows.append(
                f"| {n} | {cond} | {med(lambda r: r['steps']):.0f} | "
                f"{med(lambda r: (r['cpu_s'] + r['pre_s']) / 60):.1f} | "
                f"{med(lambda r: r['roi']['hits']):.0f}/{rs[0]['roi']['n']} "
                f"({per(lambda r: r['roi']['hits'])}) | "
                f"{_fmt(med(lambda r: r['roi']['median']))} | {_fmt(med(lambda r: r['roi']['p90']))} | "
                f"{med(lambda r: r['frame']['hits']):.0f}/{rs[0]['frame']['n']} "
                f"({per(lambda r: r['frame']['hits'])}) | "
                f"{_fmt(med(lambda r: r['frame']['median']))} | {_fmt(med(lambda r: r['frame']['p90']))} | "
                f"{med(lambda r: r['fp']):.0f}/{rs[0]['n_neg']} ({per(lambda r: r['fp'])}) |"
            )
    pre = ", ".join(
        f"{t} {np.median([r['pre_s'] for r in runs if r['cond'] == t]) / 60:.1f} min"
        for t in tasks
        if any(r["cond"] == t for r in runs)
    )
    step = np.median([r["cpu_s"] / r["steps"] for r in runs if r["cond"] == "scratch"])
    seeds = ",".join(str(s) for s in sorted({r["seed"] for r in runs}))
    return (
        "## Keypoint model: self-supervised pretraining on unlabeled video (`scripts/bench_pretrain.py`)\n\n"
        f"Machine: {where}. Command: `nice -n 10 python "
        f"scripts/bench_pretrain.py --n-train {','.join(map(str, ns))} --seeds {seeds} --steps {a.steps} "
        f"--pretrain-steps {a.pretrain_steps} --tasks {','.join(tasks)} --video-frames {a.video_frames}`; "
        "torch on 1 thread.\n"
        f"Pretraining ({a.pretrain_steps} steps, CPU time of one core, median over seeds): {pre}; one "
        f"fine-tuning step: {step:.2f} s CPU. Data: {n_labeled} labeled frames of `{a.csv.parent.name}` "
        "(the open-field set's are CONSECUTIVE frames of one video, m4s1), per seed 5 val / 15 test / n "
        f"train; pretraining on {n_frames} frames of the unlabeled video `{a.video.name}` (the open-field "
        "set's: another session, m3v1). Columns: steps = fine-tuning "
        "steps (`scratch+`: the recipe's plus what the costlier pretraining's CPU time buys); CPU min = "
        "fine-tuning + pretraining; hits within "
        f"{a.radius:g} px on the {a.roi}-px ROI path and on the whole native frame (the fine network "
        "alone), median over seeds (per seed in brackets); median / p90 px likewise; false positives: of "
        f"the {a.roi}-px crops of test frames without a labeled part, those with a point above the "
        "val-picked threshold.\n\n"
        "| n train | condition | steps | CPU min | ROI hits | ROI median px | ROI p90 px | frame hits "
        "| frame median px | frame p90 px | false positives |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, default=CSV, help="labeled frames (DeepLabCut CollectedData)")
    ap.add_argument("--video", type=Path, default=VIDEO, help="unlabeled video to pretrain on")
    ap.add_argument("--n-train", default="3,10")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=600, help="fine-tuning steps (the recipe's)")
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--tasks", default="masked,simclr")
    ap.add_argument("--video-frames", type=int, default=120)
    ap.add_argument("--roi", type=int, default=96)
    ap.add_argument("--radius", type=float, default=10.0)
    ap.add_argument("--json", type=Path, default=None, help="also write every run's numbers here")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--from-runs", type=Path, nargs="+", default=None,
                    help="train nothing: make the table from earlier runs' --json files or logs (one JSON "
                         "object per line), e.g. of runs split over processes by --n-train")  # fmt: skip
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)
    for f in (a.csv, a.video):
        if not f.is_file():
            print(f"{f}: not found (set DEEPBEHAVIOR_SHARED_DATA)", file=sys.stderr)
            return 2
    load = os.getloadavg()[0]
    ds = kp.load_dlc_points(a.csv, skip_missing=True)
    tasks = [t for t in a.tasks.split(",") if t]
    if bad := [t for t in tasks if t not in ("masked", "simclr")]:
        print(f"--tasks: unknown {bad[0]!r} (masked, simclr)", file=sys.stderr)
        return 2
    if min(a.steps, a.pretrain_steps) < 20:
        print("--steps and --pretrain-steps: at least 20 (the one-cycle schedule's warm-up)", file=sys.stderr)
        return 2
    if len(ds) < 20 + max(int(x) for x in a.n_train.split(",")):
        print(f"{a.csv}: {len(ds)} labeled frames; 5 val + 15 test + --n-train need more", file=sys.stderr)
        return 2
    if a.from_runs:
        runs = [r for f in a.from_runs for r in read_runs(f)]
        text = table(runs, tasks, a, machine(load) + " (when the table was made)", len(ds), a.video_frames)
    else:
        text = experiment(ds, tasks, a, load)
    print(text)
    if not a.no_write:
        write_block("keypoint-pretrain", text)
    return 0


def read_runs(path: Path) -> list[dict[str, Any]]:
    """Runs from a ``--json`` file (a list) or a log (the lines that are JSON objects)."""
    text = path.read_text()
    if text.lstrip().startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def experiment(ds: kp.PointDataset, tasks: list[str], a: argparse.Namespace, load: float) -> str:
    """Every (seed, n, condition) run; the BENCHMARKS.md block."""
    frames = read_frames(a.video, a.video_frames)
    ns = [int(x) for x in a.n_train.split(",")]
    seeds = [int(x) for x in a.seeds.split(",")]
    runs: list[dict[str, Any]] = []
    pre_cpu: dict[str, list[float]] = {t: [] for t in tasks}
    for seed in seeds:
        keys = sorted(ds.items)
        perm = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
        va, te, pool = ds.subset(perm[:5]), ds.subset(perm[5:20]), perm[20:]
        states: dict[str, dict[str, Any]] = {}
        extra: dict[str, int] = {}
        for t in tasks:
            src = CropSource(frames, kp.Recipe(), seed + 1000)
            c0 = time.process_time()
            fn = pretrain_masked if t == "masked" else pretrain_simclr
            net = fn(src, a.pretrain_steps, seed + 1000, kp.Recipe())
            pre_cpu[t].append(time.process_time() - c0)
            states[t] = encoder_state(net)
            print(f"seed {seed}: {t} pretraining {pre_cpu[t][-1]:.0f} s CPU", flush=True)
        for n in ns:
            tr = ds.subset(pool[:n])
            model, cpu = finetune(tr, a.steps, seed, None)
            conds: list[tuple[str, int, dict[str, Any] | None]] = [("scratch", a.steps, None)]
            for t in tasks:
                extra[t] = round(pre_cpu[t][-1] / (cpu / a.steps))
                conds.append((t, a.steps, states[t]))
            if tasks:  # the same CPU budget as the costlier pretraining, spent on more supervised steps
                most = max(tasks, key=lambda t: extra[t])
                conds.append((f"scratch+ ({most})", a.steps + extra[most], None))
            for name, steps, state in conds:
                if name != "scratch":
                    model, cpu = finetune(tr, steps, seed, state)
                s = score(model, va, te, a, seed)
                s.update(cond=name.split(" ")[0], seed=seed, n=n, steps=steps, cpu_s=cpu,
                         pre_s=pre_cpu[name][-1] if name in pre_cpu else 0.0)  # fmt: skip
                runs.append(s)
                print(json.dumps(s), flush=True)
    if a.json:
        a.json.write_text(json.dumps(runs, indent=1) + "\n")
    return table(runs, tasks, a, machine(load) + f", {os.getloadavg()[0]:.1f} after", len(ds), len(frames))


if __name__ == "__main__":
    raise SystemExit(main())
