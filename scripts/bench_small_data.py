#!/usr/bin/env python
"""Small-data benchmark: how well each training recipe finds labeled points after training on a handful of
real frames, how long it trains on the CPU and how fast it runs. Written to BENCHMARKS.md (block
``small-data-whole-frame``).

Data: the DeepLabCut open-field frames in the shared data folder (``dlc-openfield-pranav``: mouse from above,
640 x 480, snout / left ear / right ear / tail base), split with ``--seed`` into ``--n-train`` training
frames, ``--n-val`` validation frames (the confidence threshold is picked there) and the rest for test.

Recipes:

* ``heatmap`` (``heatmap-lite``: a lite fine network): :mod:`detection.keypoints` as ``detect
  train-points`` trains it (a small heatmap network from scratch, crops at the ROI's scale, photometric /
  blur / small rotation / scale augmentation, no flips, and its whole-frame search network); measured
  coarse to fine and, as ``fine net alone``, with the search network switched off.
* ``yolo-box-centre``: a box per keypoint (``--box`` px square, one class per part) trained with
  Ultralytics from random init (the bundled paw model's architecture ``paw-yolo11p.yaml``), imgsz 320,
  no left/right flips; the point is the centre of the class's top box.

Each is measured on whole test frames (native, and at the online full-frame search scale 0.5) and on the
online ROI path (a ``--roi`` px crop around each labeled point, offset by up to a quarter of the crop, as a
tracker's prediction would be). Hits: the predicted point above the stored threshold within ``--radius`` px of
the label. False positives: crops of test frames with no labeled part in them that get a point above the
threshold. ms/frame: ONNX Runtime, one thread, wall and CPU time, median and p99 over ``--n-time`` calls.

Usage: ``python scripts/bench_small_data.py [--n-train 10] [--epochs 300] [--steps 600] [--recipes heatmap]
[--no-write]``
(set ``DEEPBEHAVIOR_SHARED_DATA`` if the data folder is elsewhere). Run it under ``nice`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import machine, pct, write_block  # noqa: E402

from detection import keypoints as kp  # noqa: E402
from detection.base import Runner  # noqa: E402

DATA = Path(os.environ.get("DEEPBEHAVIOR_SHARED_DATA", ROOT.parent / "shared" / "data"))
CSV = DATA / "dlc-openfield-pranav" / "labeled-data" / "m4s1" / "CollectedData_Pranav.csv"
Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # BGR frame -> (K, 2) points, (K,) conf


def split(ds: kp.PointDataset, n_train: int, n_val: int, seed: int) -> tuple[kp.PointDataset, ...]:
    keys = sorted(ds.items)
    perm = np.random.default_rng(seed).permutation(len(keys))
    pick = [keys[i] for i in perm]
    return (
        ds.subset(pick[:n_train]),
        ds.subset(pick[n_train : n_train + n_val]),
        ds.subset(pick[n_train + n_val :]),
    )


def _err(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """(K,) distances; NaN where the part is unlabeled, inf where it is labeled but nothing was predicted."""
    e = np.hypot(*(pred - label).T)
    return np.where(np.isfinite(label).all(1), np.nan_to_num(e, nan=np.inf), np.nan)


def frame_errors(predict: Predict, ds: kp.PointDataset, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Whole frames resized by ``scale`` -> (N, K) errors in original px and confidences."""
    err, conf = [], []
    for k in sorted(ds.items):
        im = kp.read_bgr(k)
        if scale != 1.0:
            im = cv2.resize(
                im, (round(im.shape[1] * scale), round(im.shape[0] * scale)), interpolation=cv2.INTER_AREA
            )
        p, c = predict(im)
        err.append(_err(p / scale, ds.items[k]))
        conf.append(c)
    return np.array(err), np.array(conf)


def roi_errors(predict: Predict, ds: kp.PointDataset, roi: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per labeled point a ``roi`` crop around it, offset by up to roi/4 -> that part's error and conf."""
    rng = np.random.default_rng(seed)
    err = np.full((len(ds), len(ds.names)), np.nan)
    conf = np.zeros_like(err)
    for i, k in enumerate(sorted(ds.items)):
        im = kp.read_bgr(k)
        h, w = im.shape[:2]
        for j, (x, y) in enumerate(ds.items[k]):
            if not np.isfinite(x):
                continue
            cx, cy = np.array([x, y]) + rng.uniform(-roi / 4, roi / 4, 2)
            x0 = int(np.clip(round(cx - roi / 2), 0, w - roi))
            y0 = int(np.clip(round(cy - roi / 2), 0, h - roi))
            p, c = predict(np.ascontiguousarray(im[y0 : y0 + roi, x0 : x0 + roi]))
            err[i, j] = _err(p[j : j + 1] + (x0, y0), np.array([[x, y]]))[0]
            conf[i, j] = c[j]
    return err, conf


def negatives(predict: Predict, crops: list[np.ndarray], k: int) -> np.ndarray:
    return np.array([predict(c)[1] for c in crops]).reshape(-1, k)


def timing(runner: Runner, frames: list[np.ndarray], n: int) -> tuple[list[float], list[float]]:
    """ms per ``runner.infer`` of one frame, cycling through ``frames`` ``n`` times: (wall p50, p99) and
    (CPU time of this process p50, p99). Wall time includes waiting for a core on a loaded machine; CPU time
    does not."""
    for im in frames[:5]:
        runner.infer([im])
    wall, cpu = [], []
    for i in range(n):
        im = frames[i % len(frames)]
        t, c = time.perf_counter(), time.process_time()
        runner.infer([im])
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return pct(wall), pct(cpu)


def test_frames(ds: kp.PointDataset, scale: float) -> list[np.ndarray]:
    out = []
    for k in sorted(ds.items):
        im = kp.read_bgr(k)
        if scale != 1.0:
            im = cv2.resize(
                im, (round(im.shape[1] * scale), round(im.shape[0] * scale)), interpolation=cv2.INTER_AREA
            )
        out.append(im)
    return out


def roi_frames(ds: kp.PointDataset, roi: int, seed: int) -> list[np.ndarray]:
    """A ``roi`` crop around each frame's first labeled point, offset as in :func:`roi_errors`."""
    rng = np.random.default_rng(seed)
    out = []
    for k in sorted(ds.items):
        im = kp.read_bgr(k)
        h, w = im.shape[:2]
        lab = ds.items[k][np.isfinite(ds.items[k]).all(1)]
        if not len(lab):
            continue
        cx, cy = lab[0] + rng.uniform(-roi / 4, roi / 4, 2)
        x0 = int(np.clip(round(cx - roi / 2), 0, w - roi))
        y0 = int(np.clip(round(cy - roi / 2), 0, h - roi))
        out.append(np.ascontiguousarray(im[y0 : y0 + roi, x0 : x0 + roi]))
    return out


# -- recipes ------------------------------------------------------------------------------------------------


def yolo_recipe(
    tr: kp.PointDataset, va: kp.PointDataset, work: Path, a: argparse.Namespace
) -> tuple[Predict, Runner, float]:
    from detection import datasets as d
    from detection.export import export_onnx
    from detection.runners import OnnxRuntimeRunner
    from detection.train import train

    def boxes(ds: kp.PointDataset) -> d.BoxDataset:
        out = d.BoxDataset(names=list(ds.names))
        for img, pts in ds.items.items():
            h, w = d.image_shape(img)
            r = a.box / 2
            out.items[img] = [
                d.Box(max(x - r, 0), max(y - r, 0), min(x + r, w), min(y + r, h), j)
                for j, (x, y) in enumerate(pts)
                if np.isfinite(x)
            ]
        return out

    d.save_yolo(boxes(tr), work / "yolo", "train")
    d.save_yolo(boxes(va), work / "yolo", "val")
    data = d.write_data_yaml(work / "yolo", tr.names, {"train": "train", "val": "val"})
    t0 = time.monotonic()
    arch = ROOT / "detection" / "models" / "paw-yolo11p.yaml"
    res = train(data, arch, work / "runs", epochs=a.epochs, imgsz=320, batch=8, seed=a.seed, threads=1,
                name="yolo", fliplr=0.0, close_mosaic=0, val=False)  # fmt: skip
    minutes = (time.monotonic() - t0) / 60
    weights = res.weights if res.weights.is_file() else res.weights.parent / "last.pt"
    onnx = export_onnx(weights, work / "yolo.onnx", imgsz=320)
    runner = OnnxRuntimeRunner(
        onnx, confidence=0.001, input_size=None, threads=1, providers=["CPUExecutionProvider"]
    )
    k = len(tr.names)

    def predict(im: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        runner.input_size = 320 if max(im.shape[:2]) > 320 else None  # whole frames letterboxed to 320
        pts, conf = np.full((k, 2), np.nan), np.zeros(k)
        for det in runner.infer([im])[0]:  # best first per class
            if conf[det.class_id] == 0:
                pts[det.class_id], conf[det.class_id] = det.center(), det.confidence
        return pts, conf

    return predict, runner, minutes


def heatmap_recipe(
    tr: kp.PointDataset, va: kp.PointDataset, work: Path, a: argparse.Namespace, arch: str = "base"
) -> tuple[Predict, Runner, float]:
    recipe = kp.Recipe(steps=a.steps, arch=arch)
    model = kp.train_keypoints(tr, recipe, seed=a.seed, threads=1, progress=print, search=True)
    onnx = kp.export_keypoints_onnx(model, work / f"heatmap-{arch}.onnx")
    runner = kp.KeypointOnnxRunner(onnx, confidence=0.0, threads=1, providers=["CPUExecutionProvider"])

    def predict(im: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return runner.infer_points([im])[0]

    return predict, runner, model.train_s / 60


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=10)
    ap.add_argument("--n-val", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=300, help="yolo-box-centre epochs")
    ap.add_argument("--steps", type=int, default=600, help="heatmap training steps")
    ap.add_argument("--box", type=float, default=24.0, help="yolo-box-centre: box side around each point, px")
    ap.add_argument("--roi", type=int, default=96, help="online ROI crop side, px")
    ap.add_argument("--radius", type=float, default=10.0, help="a hit: within this many px of the label")
    ap.add_argument("--n-time", type=int, default=200)
    ap.add_argument("--recipes", default="heatmap,yolo-box-centre")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)
    if not CSV.is_file():
        print(f"{CSV}: not found (set DEEPBEHAVIOR_SHARED_DATA)", file=sys.stderr)
        return 2
    load = os.getloadavg()[0]
    ds = kp.load_dlc_points(CSV, skip_missing=True)
    tr, va, te = split(ds, a.n_train, a.n_val, a.seed)
    neg_val = kp.negative_crops(va, a.roi, seed=a.seed)
    neg_te = kp.negative_crops(te, a.roi, seed=a.seed + 1)
    k = len(ds.names)
    rows, summary = [], {}
    recipes: dict[str, Callable[..., tuple[Predict, Runner, float]]] = {
        "heatmap": heatmap_recipe,
        "heatmap-lite": lambda *x: heatmap_recipe(*x, arch="lite"),
        "yolo-box-centre": yolo_recipe,
    }
    frames = {"whole frame 640x480": test_frames(te, 1.0), "whole frame 0.5x (320x240)": test_frames(te, 0.5),
              f"ROI {a.roi} px": roi_frames(te, a.roi, a.seed)}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.recipes.split(","):
            predict, runner, minutes = recipes[name](tr, va, Path(tmp), a)
            variants = [name]
            if getattr(runner, "has_search", False):  # the same model without its search network
                variants.append(f"{name}, fine net alone")
            for variant in variants:
                if variant != name:
                    runner.has_search = False  # type: ignore[attr-defined]
                ev, cv = frame_errors(predict, va, 1.0)
                thr = kp.pick_point_threshold(ev, cv, negatives(predict, neg_val, k), a.radius)
                neg_conf = negatives(predict, neg_te, k)
                fp = int((neg_conf >= thr).any(1).sum())
                for what, (err, conf) in (
                    ("whole frame 640x480", frame_errors(predict, te, 1.0)),
                    ("whole frame 0.5x (320x240)", frame_errors(predict, te, 0.5)),
                    (f"ROI {a.roi} px", roi_errors(predict, te, a.roi, a.seed)),
                ):
                    e = np.where(conf >= thr, err, np.inf)[~np.isnan(err)]
                    hits = int((e <= a.radius).sum())
                    med, p90 = kp._percentile(e, 50), kp._percentile(e, 90)
                    if name == "yolo-box-centre" and what.startswith("whole frame 640"):
                        wall, cpu = "(letterboxed to 320)", "-"
                    else:
                        tw, tc = timing(runner, frames[what], a.n_time)
                        wall, cpu = f"{tw[0]:.2f} / {tw[1]:.2f}", f"{tc[0]:.2f} / {tc[1]:.2f}"
                    rows.append(
                        f"| {variant} | {what} | {hits}/{e.size} | {med:.1f} | {p90:.1f} | "
                        f"{fp}/{len(neg_conf)} | {thr:.3f} | {minutes:.1f} | {wall} | {cpu} |"
                    )
                    summary[f"{variant} {what}"] = {
                        "hits": hits, "n": int(e.size), "median_px": med, "p90_px": p90,
                        "ms_wall": wall, "ms_cpu": cpu,
                    }  # fmt: skip
                    print(rows[-1], flush=True)
    load_after = os.getloadavg()[0]
    text = (
        "## Keypoint model, whole frames coarse to fine (`scripts/bench_small_data.py`)\n\n"
        f"Machine: {machine(load)}, {load_after:.1f} after. Command: `nice -n 10 python "
        f"scripts/bench_small_data.py --n-train {a.n_train} --epochs {a.epochs} --steps {a.steps} "
        f"--seed {a.seed} "
        f"--recipes {a.recipes} --n-time {a.n_time}`; torch and ONNX Runtime on 1 thread.\n"
        f"Data: `dlc-openfield-pranav` ({len(ds)} labeled 640x480 frames of one video; parts "
        f"{', '.join(ds.names)}): "
        f"{len(tr)} train, {len(va)} val (threshold picked there, best F1), {len(te)} test; hits within "
        f"{a.radius:g} px; a point under the threshold is a miss (inf error). False positives: of "
        f"{len(neg_te)} {a.roi}-px crops of test frames with no labeled part, those with any point above the "
        "threshold. `heatmap`: what `detect train-points` makes (the base network and its whole-frame search "
        "network; an image over 160 px on its long side runs coarse to fine); `heatmap, fine net alone`: the "
        "same model with the search network switched off (the base network on the whole frame). ms/frame: "
        "one "
        "`runner.infer` of one frame (the test frames in turn, resized as the row says; ROI: a crop around "
        f"each test frame's first labeled point), ONNX Runtime on one thread, {a.n_time} calls, median / "
        "p99, "
        "as wall time and as the process's CPU time (`time.process_time`: what one core spends, without the "
        "waits for a core on a loaded machine).\n"
        "Caveat: the 30 frames are consecutive frames of one video, so test frames are neighbours of "
        "training frames; the figures rank recipes, they do not promise the same error on a new session.\n\n"
        "| recipe | input | hits | median px | p90 px | false positives | threshold | train min "
        "| ms/frame wall p50 / p99 | ms/frame CPU p50 / p99 |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )
    print(text)
    print(json.dumps(summary, indent=1))
    if not a.no_write:
        write_block("small-data-whole-frame", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
