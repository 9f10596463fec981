#!/usr/bin/env python
"""Small-data benchmark: how well each training recipe finds labeled points after training on a handful of
real frames, how long it trains on the CPU and how fast it runs. Written to BENCHMARKS.md (block
``small-data-whole-frame`` for ``--data openfield``, ``small-data-hands`` for ``--data signlanguage``).

Data (``--data``), both in the shared data folder:

* ``openfield`` (default): the DeepLabCut open-field frames (``dlc-openfield-pranav``: mouse from above,
  640 x 480, snout / left ear / right ear / tail base), split with ``--seed`` into ``--n-train`` training
  frames (default 10), ``--n-val`` validation frames (the confidence threshold is picked there) and the rest
  for test. Hits within 10 px.
* ``signlanguage``: a real RGB video of a person signing (``openposer-body25-signlanguage``: 848 x 480, 25
  fps, 175 frames) with OpenPose BODY_25 output per frame: the two wrists (``rwrist``, ``lwrist``: the
  hands) are the parts, a part labeled where OpenPose's confidence is at least ``--cut`` (0.5), unlabeled
  otherwise (OpenPose then puts the point on the frame's border: the hand is out of view below it). A frame
  where OpenPose is unsure about a part it placed inside the frame (confidence under the cut, point away
  from the border: a hand blurred by motion) is left out: a CollectedData table cannot say "unsure". The
  frames are decoded from the mp4 and written, with the labels, as a DeepLabCut project (CollectedData csv,
  :mod:`detection.dlc`'s writer) in a temporary folder, read back as ``detect train-points`` reads it. Split
  for video (neighbouring frames are near-duplicates): consecutive blocks of ``--block`` frames (8) take
  the roles train, train, test, val in turn; training frames within ``--gap`` frames (2) of a val or test
  frame are dropped; of the rest ``--n-train`` (40) are kept, evenly spaced in time, those with a hand
  first. Test and val keep their frames without a hand. Hits within 20 px (the issue's radius).
  ``--write-project DIR`` writes that project (and ``DIR/split.json``, for ``detect train-points
  --keep-split``) and stops: the same data run through the CLI.

Recipes:

* ``heatmap`` (``heatmap-lite``: a lite fine network): :mod:`detection.keypoints` as ``detect
  train-points`` trains it (a small heatmap network from scratch, crops at the ROI's scale, photometric /
  blur / small rotation / scale augmentation, no flips, and its whole-frame search network); measured
  coarse to fine and, as ``fine net alone``, with the search network switched off.
* ``yolo-box-centre``: a box per keypoint (``--box`` px square, one class per part; 24 px, 48 px for the
  hands) trained with Ultralytics from random init (the bundled paw model's architecture
  ``paw-yolo11p.yaml``), imgsz 320, no left/right flips; the point is the centre of the class's top box.

Each is measured on whole test frames (native, and at the online full-frame search scale 0.5) and on the
online ROI path (a ``--roi`` px crop around each labeled point, offset by up to a quarter of the crop, as a
tracker's prediction would be). Hits: the predicted point above the stored threshold within ``--radius`` px of
the label. False positives: crops of test frames with no labeled part in them that get a point above the
threshold, and whole test frames without a part that get that part above the threshold. ms/frame: ONNX
Runtime, one thread, wall and CPU time, median and p99 over ``--n-time`` calls.

Usage: ``python scripts/bench_small_data.py [--data signlanguage] [--n-train N] [--epochs 300] [--steps 600]
[--recipes heatmap] [--no-write]``
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
SIGN = DATA / "openposer-body25-signlanguage" / "data"
SIGN_PARTS = {"rwrist": 4, "lwrist": 7}  # OpenPose BODY_25 indices: RWrist, LWrist
SIGN_EDGE_PX = 8.0  # OpenPose puts a part it does not see on (or next to) the frame's border
BLOCK_ROLES = ("train", "train", "test", "val")


def split(ds: kp.PointDataset, n_train: int, n_val: int, seed: int) -> tuple[kp.PointDataset, ...]:
    keys = sorted(ds.items)
    perm = np.random.default_rng(seed).permutation(len(keys))
    pick = [keys[i] for i in perm]
    return (
        ds.subset(pick[:n_train]),
        ds.subset(pick[n_train : n_train + n_val]),
        ds.subset(pick[n_train + n_val :]),
    )


def openpose_points(
    folder: Path, parts: dict[str, int], cut: float, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """OpenPose's per-frame ``*_keypoints.json`` (the first person's ``pose_keypoints_2d``: x, y, c per part)
    -> (N, K, 2) points of ``parts`` (name -> BODY_25 index), NaN where c < ``cut``, and (N,) whether each
    frame is usable: a part under the cut that OpenPose still placed inside the ``size`` (w, h) frame, away
    from its border, makes the frame unusable (OpenPose is unsure about a part in view)."""
    files = sorted(folder.glob("*_keypoints.json"))
    w, h = size
    pts = np.full((len(files), len(parts), 2), np.nan)
    usable = np.ones(len(files), bool)
    for i, f in enumerate(files):
        people = json.loads(f.read_text())["people"]
        if not people:
            continue
        body = np.asarray(people[0]["pose_keypoints_2d"], float).reshape(-1, 3)
        for k, j in enumerate(parts.values()):
            x, y, c = body[j]
            if c >= cut:
                pts[i, k] = x, y
            elif c > 0 and SIGN_EDGE_PX <= x < w - SIGN_EDGE_PX and SIGN_EDGE_PX <= y < h - SIGN_EDGE_PX:
                usable[i] = False
    return pts, usable


def _spread(items: list[int], k: int) -> list[int]:
    """``k`` of ``items``, evenly spaced (all of them when there are no more than ``k``)."""
    if k >= len(items):
        return list(items)
    return [items[int(j)] for j in np.linspace(0, len(items) - 1, k).round()] if k > 0 else []


def block_split(
    labeled: np.ndarray, usable: np.ndarray, n_train: int, block: int, gap: int
) -> dict[str, list[int]]:
    """Frame indices of one video split without neighbours across the splits: consecutive blocks of
    ``block`` frames take the roles :data:`BLOCK_ROLES` in turn (unusable frames none); training frames
    within ``gap`` frames of a val or test frame are dropped; of the rest ``n_train`` are kept, evenly
    spaced, those with a labeled part (``labeled``: (N,) bool) first."""
    role = [BLOCK_ROLES[(i // block) % len(BLOCK_ROLES)] if usable[i] else "" for i in range(len(usable))]
    held = [i for i, r in enumerate(role) if r in ("val", "test")]
    near = {j for i in held for j in range(i - gap, i + gap + 1)}
    train = [i for i, r in enumerate(role) if r == "train" and i not in near]
    picked = _spread([i for i in train if labeled[i]], n_train)
    picked += _spread([i for i in train if not labeled[i]], n_train - len(picked))
    return {"train": sorted(picked), "val": [i for i in held if role[i] == "val"],
            "test": [i for i in held if role[i] == "test"]}  # fmt: skip


def signlanguage_project(root: Path, a: argparse.Namespace) -> tuple[Path, dict[str, list[Path]], int]:
    """The sign-language video as a DeepLabCut project under ``root`` (the split's frames as
    ``labeled-data/du_wohn_wo/img0042.png``, ``CollectedData_openpose.csv``) and ``root/split.json`` (the
    split as ``detect train-points --keep-split`` reads it). Returns the CSV, the split and the number of
    frames left out for OpenPose being unsure."""
    from detection.dlc import DlcTable, write_dlc

    video = SIGN / "du_wohn_wo.mp4"
    if not video.is_file():
        raise SystemExit(f"{video}: not found (set DEEPBEHAVIOR_SHARED_DATA)")
    cap = cv2.VideoCapture(str(video))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    pts, usable = openpose_points(SIGN / "du_wohn_wo", SIGN_PARTS, a.cut, (w, h))
    if len(pts) != n:
        raise SystemExit(f"{video}: {n} frames, but {len(pts)} OpenPose JSON files")
    sp = block_split(np.isfinite(pts).all(2).any(1), usable, a.n_train, a.block, a.gap)
    keep = {i for idx in sp.values() for i in idx}
    table = DlcTable.empty("openpose", list(SIGN_PARTS))
    rel = "labeled-data/du_wohn_wo/img{:04d}.png"
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ok, im = cap.read()
        if not ok:
            raise SystemExit(f"{video}: frame {i} does not decode")
        if i in keep:
            cv2.imwrite(str(root / rel.format(i)), im)
            table.set_points(table.key(rel.format(i)), pts[i])
    cap.release()
    csv = write_dlc(table, root / rel.format(0).rsplit("/", 1)[0] / "CollectedData_openpose.csv", h5=False)[0]
    split = {s: [root / rel.format(i) for i in idx] for s, idx in sp.items()}
    (root / "split.json").write_text(json.dumps({"splits": {s: list(map(str, v)) for s, v in split.items()}}))
    return csv, split, int((~usable).sum())


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


def load(a: argparse.Namespace, tmp: Path) -> tuple[kp.PointDataset, tuple[kp.PointDataset, ...], str]:
    """The data set, its (train, val, test) split and a description of both for the block."""
    if a.data == "openfield":
        if not CSV.is_file():
            raise SystemExit(f"{CSV}: not found (set DEEPBEHAVIOR_SHARED_DATA)")
        ds = kp.load_dlc_points(CSV, skip_missing=True)
        tr, va, te = split(ds, a.n_train, a.n_val, a.seed)
        text = (
            f"`dlc-openfield-pranav` ({len(ds)} labeled 640x480 frames of one video; parts "
            f"{', '.join(ds.names)}): {len(tr)} train, {len(va)} val (threshold picked there, best F1), "
            f"{len(te)} test"
        )
        return ds, (tr, va, te), text
    csv, sp, unsure = signlanguage_project(tmp / "project", a)
    ds = kp.load_dlc_points(csv)
    tr, va, te = (ds.subset(sp[s]) for s in ("train", "val", "test"))

    def count(d: kp.PointDataset) -> str:
        lab = np.array([np.isfinite(v).all(1) for v in d.items.values()])
        parts = ", ".join(f"{n} {int(lab[:, k].sum())}" for k, n in enumerate(d.names))
        n_hand, n_none = int(lab.any(1).sum()), int((~lab.any(1)).sum())
        return f"{len(d)} frames ({n_hand} with a hand: {parts}; {n_none} with none)"

    text = (
        "`openposer-body25-signlanguage` (one 848x480 RGB video, 25 fps, 175 frames, a person signing; "
        f"OpenPose BODY_25 output as labels: parts {', '.join(ds.names)} = RWrist, LWrist, labeled where "
        f"OpenPose's confidence >= {a.cut:g}; {unsure} frames left out for OpenPose being unsure of a hand "
        f"in view). Split in blocks of {a.block} frames (train, train, test, val in turn), training frames "
        f"within {a.gap} frames of a val/test frame dropped, {a.n_train} of the rest kept, evenly spaced, "
        f"those with a hand first: train {count(tr)}; val {count(va)} (threshold picked there, best F1); "
        f"test {count(te)}"
    )
    return ds, (tr, va, te), text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["openfield", "signlanguage"], default="openfield")
    ap.add_argument(
        "--n-train", type=int, default=None, help="training frames (openfield 10, signlanguage 40)"
    )
    ap.add_argument("--n-val", type=int, default=5, help="openfield: validation frames")
    ap.add_argument("--cut", type=float, default=0.5, help="signlanguage: OpenPose confidence of a label")
    ap.add_argument("--block", type=int, default=8, help="signlanguage: frames per split block")
    ap.add_argument(
        "--gap", type=int, default=2, help="signlanguage: frames dropped between train and val/test"
    )
    ap.add_argument(
        "--write-project", metavar="DIR", help="signlanguage: write the DLC project and split, stop"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=300, help="yolo-box-centre epochs")
    ap.add_argument("--steps", type=int, default=600, help="heatmap training steps")
    ap.add_argument("--box", type=float, default=None, help="yolo-box-centre: box side, px (24; hands 48)")
    ap.add_argument("--roi", type=int, default=96, help="online ROI crop side, px")
    ap.add_argument("--radius", type=float, default=None, help="a hit: within this many px (10; hands 20)")
    ap.add_argument("--n-time", type=int, default=200)
    ap.add_argument("--recipes", default="heatmap,yolo-box-centre")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    hands = a.data == "signlanguage"
    a.n_train = a.n_train if a.n_train is not None else (40 if hands else 10)
    a.radius = a.radius if a.radius is not None else (20.0 if hands else 10.0)
    a.box = a.box if a.box is not None else (48.0 if hands else 24.0)
    logging.basicConfig(level=logging.WARNING)
    if a.write_project:
        if not hands:
            ap.error("--write-project is for --data signlanguage")
        csv, sp, _ = signlanguage_project(Path(a.write_project), a)
        print(f"{csv}: {', '.join(f'{s} {len(v)}' for s, v in sp.items())} frames; split: "
              f"{Path(a.write_project) / 'split.json'} (detect train-points --keep-split)")  # fmt: skip
        return 0
    import torch

    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    recipes: dict[str, Callable[..., tuple[Predict, Runner, float]]] = {
        "heatmap": heatmap_recipe,
        "heatmap-lite": lambda tr, va, work, a: heatmap_recipe(tr, va, work, a, arch="lite"),
        "yolo-box-centre": yolo_recipe,
    }
    rows, part_lines, summary = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        ds, (tr, va, te), data_text = load(a, Path(tmp))
        neg_val = kp.negative_crops(va, a.roi, seed=a.seed)
        neg_te = kp.negative_crops(te, a.roi, seed=a.seed + 1)
        k = len(ds.names)
        h, w = kp.read_bgr(sorted(te.items)[0]).shape[:2]
        native, half, roi = f"whole frame {w}x{h}", f"whole frame 0.5x ({w // 2}x{h // 2})", f"ROI {a.roi} px"
        frames = {
            native: test_frames(te, 1.0),
            half: test_frames(te, 0.5),
            roi: roi_frames(te, a.roi, a.seed),
        }
        for name in a.recipes.split(","):
            cpu0 = time.process_time()
            predict, runner, minutes = recipes[name](tr, va, Path(tmp), a)
            cpu_min = (time.process_time() - cpu0) / 60
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
                    (native, frame_errors(predict, te, 1.0)),
                    (half, frame_errors(predict, te, 0.5)),
                    (roi, roi_errors(predict, te, a.roi, a.seed)),
                ):
                    e = np.where(conf >= thr, err, np.inf)[~np.isnan(err)]
                    hits = int((e <= a.radius).sum())
                    med, p90 = kp._percentile(e, 50), kp._percentile(e, 90)
                    if what == roi:  # crops around labeled points: no frame without the part
                        absent = "-"
                    else:  # whole frames without a part that get it reported; frames with no part at all
                        gone, shown = np.isnan(err), conf >= thr
                        empty = gone.all(1)
                        fp_frames = int((shown & gone)[empty].any(1).sum())
                        n_fp, n_gone = int((gone & shown).sum()), int(gone.sum())
                        absent = f"{n_fp}/{n_gone} ({fp_frames}/{int(empty.sum())} frames)"
                    if name == "yolo-box-centre" and what == native:
                        wall, cpu = "(letterboxed to 320)", "-"
                    else:
                        tw, tc = timing(runner, frames[what], a.n_time)
                        wall, cpu = f"{tw[0]:.2f} / {tw[1]:.2f}", f"{tc[0]:.2f} / {tc[1]:.2f}"
                    rows.append(
                        f"| {variant} | {what} | {hits}/{e.size} | {med:.1f} | {p90:.1f} | "
                        f"{fp}/{len(neg_conf)} | {absent} | {thr:.3f} | {minutes:.1f} / {cpu_min:.1f} | "
                        f"{wall} | {cpu} |"
                    )
                    summary[f"{variant} {what}"] = {
                        "hits": hits, "n": int(e.size), "median_px": med, "p90_px": p90,
                        "ms_wall": wall, "ms_cpu": cpu,
                    }  # fmt: skip
                    if what == native:
                        per = []
                        for j, part in enumerate(ds.names):
                            ej = np.where(conf[:, j] >= thr, err[:, j], np.inf)[~np.isnan(err[:, j])]
                            hit_j = int((ej <= a.radius).sum())
                            per.append(f"{part} {hit_j}/{ej.size}, median {kp._percentile(ej, 50):.1f} px")
                        part_lines.append(f"* {variant}, {what}: {'; '.join(per)}")
                    print(rows[-1], flush=True)
    load_after = os.getloadavg()[0]
    cmd = (
        f"nice -n 10 python scripts/bench_small_data.py --data {a.data} --n-train {a.n_train} "
        f"--epochs {a.epochs} --steps {a.steps} --seed {a.seed} --recipes {a.recipes} --n-time {a.n_time}"
    )
    title = (
        "## Small-data keypoints on real hands: sign-language video, OpenPose wrists "
        "(`scripts/bench_small_data.py --data signlanguage`)"
        if hands
        else "## Keypoint model, whole frames coarse to fine (`scripts/bench_small_data.py`)"
    )
    caveat = (
        "Caveat: the labels are OpenPose's output, not a person's (see the notes); all frames come from one "
        "7-s video of one person, so the figures say how the recipe does on real hands in RGB video at this "
        "scale, not what it does on a new session."
        if hands
        else "Caveat: the 30 frames are consecutive frames of one video, so test frames are neighbours of "
        "training frames; the figures rank recipes, they do not promise the same error on a new session."
    )
    text = (
        f"{title}\n\n"
        f"Machine: {machine(load_before)}, {load_after:.1f} after. Command: `{cmd}`; torch and ONNX Runtime "
        "on 1 thread.\n"
        f"Data: {data_text}; hits within {a.radius:g} px; a point under the threshold is a miss (inf error). "
        f"False positives: of {len(neg_te)} {a.roi}-px crops of test frames with no labeled part, those with "
        "any point above the threshold; and on whole test frames, of the (frame, part) pairs where the "
        "part is not labeled, those where it is reported above the threshold (in brackets: of the test "
        "frames with no labeled part at all, those with any report). `heatmap`: what `detect train-points` "
        "makes (the base network and its whole-frame search network; an image over 160 px on its long side "
        "runs coarse to fine); `heatmap, fine net alone`: the same model with the search network switched "
        "off (the base network on the whole frame). Train min: wall / the process's CPU time. ms/frame: "
        "one `runner.infer` of one frame (the test frames in turn, resized as the row says; ROI: a crop "
        f"around each test frame's first labeled point), ONNX Runtime on one thread, {a.n_time} calls, "
        "median / p99, as wall time and as the process's CPU time (`time.process_time`: what one core "
        "spends, without the waits for a core on a loaded machine).\n"
        f"{caveat}\n\n"
        "| recipe | input | hits | median px | p90 px | false positives (crops) | false positives (frames "
        "without the part) | threshold | train min wall / CPU | ms/frame wall p50 / p99 | ms/frame CPU p50 / "
        "p99 |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
        "Per part (hits, median):\n" + "\n".join(part_lines) + "\n"
    )
    print(text)
    print(json.dumps(summary, indent=1))
    if not a.no_write:
        write_block("small-data-hands" if hands else "small-data-whole-frame", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
