#!/usr/bin/env python
"""Build the bundled default paw detector from synthetic frames, fully offline and reproducible.

1. Render randomized labeled frames with the synthetic camera (``rig.sim``): random background seed,
   gain/offset (lighting), sensor noise, blur, paw gray/aspect/angle, paw positions along the World's
   minimum-jerk reach trajectories (plus jitter), pellet present or not, both cameras.
2. Cut 96 x 96 training crops the way the online detector sees them (``detection.online``): ROI crops at
   native scale (0.85-1.15x) around the paw, crops of the half-scale frame (0.42-0.6x: the full-frame
   fallback search runs at 0.5x), and ~12 % crops without a paw.
3. Train a narrow YOLO11 (``detection/models/paw-yolo11p.yaml``: width 0.125) from random init on CPU
   with Ultralytics configured offline (``detection.ultra``); export ONNX with dynamic H/W.
4. Evaluate on held-out synthetic sequences (other seeds) through the online ROI tracker with the ONNX
   Runtime runner: box IoU, hit rate, false-positive rate, ms per frame. Results -> ``<out>.json``.

Usage: ``python scripts/build_paw_model.py [--n-train 3000 --epochs 25 --seed 0]`` (~10 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detection.base import Det  # noqa: E402
from rig.config import SimulationConfig  # noqa: E402
from rig.sim.render import Appearance, SceneRenderer  # noqa: E402
from rig.sim.scene import PAW_RADIUS_MM, synthetic_calibration  # noqa: E402
from rig.sim.world import FreeRunSchedule, World  # noqa: E402

log = logging.getLogger("build_paw_model")
CROP = 96
MODEL_DIR = ROOT / "detection" / "models"
MODEL_YAML = MODEL_DIR / "paw-yolo11p.yaml"
MODEL_NAME = "paw-yolo11p-96"


def world_states(
    seed: int, seconds: float, rate_hz: float = 124.0
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(paw_xyz, pellet_xyz or None) at every trigger of a free-running synthetic session."""
    world = World(SimulationConfig(seed=seed))
    sched = FreeRunSchedule(world, 3.0, 10_000)
    out = []
    for i in range(int(seconds * rate_hz)):
        t = i / rate_hz
        sched.step(t)
        st = world.step(t)
        out.append((st.paw_xyz.copy(), None if st.pellet_xyz is None else st.pellet_xyz.copy()))
    return out


def random_appearance(rng: np.random.Generator) -> Appearance:
    return Appearance(
        paw_gray=int(rng.integers(130, 246)),
        paw_aspect=float(rng.uniform(0.6, 0.95)),
        paw_angle_deg=float(rng.uniform(0, 180)),
        background_seed=int(rng.integers(0, 1_000_000)),
        background_gain=float(rng.uniform(0.7, 1.4)),
        background_offset=float(rng.uniform(-20, 35)),
        noise_sigma=float(rng.uniform(0.5, 7.0)),
        blur_px=float(rng.choice([0.0, 0.0, rng.uniform(0.4, 1.8)])),
        n_noise_frames=2,
    )


def render_frames(seed: int, n_scenes: int, per_scene: int, jitter_mm: float = 3.0):
    """Yield (camera, image (H, W) uint8, box or None) from randomized scenes."""
    rng = np.random.default_rng(seed)
    calib = synthetic_calibration()
    states = world_states(seed, 40.0)
    moving = [i for i in range(1, len(states)) if np.linalg.norm(states[i][0] - states[i - 1][0]) > 0.02]
    for _ in range(n_scenes):
        cam_name = str(rng.choice(sorted(calib.cameras)))
        r = SceneRenderer(calib.cameras[cam_name], random_appearance(rng), seed=int(rng.integers(1 << 31)))
        for _ in range(per_scene):
            pick = moving if (moving and rng.uniform() < 0.6) else range(len(states))
            paw, pellet = states[int(rng.choice(pick))]
            paw = paw + rng.normal(0, jitter_mm, 3)
            radius = PAW_RADIUS_MM * rng.uniform(0.85, 1.2)
            img, box = r.render(paw, radius, pellet if rng.uniform() < 0.7 else None)
            yield cam_name, img.copy(), box


def crops_from(img: np.ndarray, box, rng: np.random.Generator, negative: bool):
    """One (crop (96, 96) uint8, boxes [(x1, y1, x2, y2)] in crop pixels) sample, or None."""
    s = rng.uniform(0.85, 1.15) if rng.uniform() < 0.65 else rng.uniform(0.42, 0.6)
    h, w = img.shape
    im = cv2.resize(
        img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    )
    hh, ww = im.shape
    b = None if box is None else np.array(box) * s
    if negative or b is None:
        for _ in range(20):
            x0, y0 = int(rng.integers(0, ww - CROP + 1)), int(rng.integers(0, hh - CROP + 1))
            if b is None or b[2] < x0 or b[0] > x0 + CROP or b[3] < y0 or b[1] > y0 + CROP:
                return im[y0 : y0 + CROP, x0 : x0 + CROP], []
        return None
    cx, cy = 0.5 * (b[0] + b[2]), 0.5 * (b[1] + b[3])
    # the paw centre lands anywhere within the central 70 % (the tracker centres on the last position)
    x0 = int(np.clip(round(cx - CROP * rng.uniform(0.15, 0.85)), 0, ww - CROP))
    y0 = int(np.clip(round(cy - CROP * rng.uniform(0.15, 0.85)), 0, hh - CROP))
    c = np.array([b[0] - x0, b[1] - y0, b[2] - x0, b[3] - y0])
    cc = np.clip(c, 0, CROP)
    if (cc[2] - cc[0]) * (cc[3] - cc[1]) < 0.5 * (c[2] - c[0]) * (c[3] - c[1]):
        return None
    return im[y0 : y0 + CROP, x0 : x0 + CROP], [tuple(cc)]


def write_dataset(root: Path, split: str, seed: int, n: int) -> None:
    rng = np.random.default_rng(seed + 17)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    k = 0
    per_scene = 6
    for _cam, img, box in render_frames(seed, n // per_scene + 50, per_scene):
        if k >= n:
            break
        got = crops_from(img, box, rng, negative=rng.uniform() < 0.12)
        if got is None:
            continue
        crop, boxes = got
        cv2.imwrite(str(root / "images" / split / f"{k:06d}.png"), crop)
        lines = [
            f"0 {(x1 + x2) / 2 / CROP:.6f} {(y1 + y2) / 2 / CROP:.6f} "
            f"{(x2 - x1) / CROP:.6f} {(y2 - y1) / CROP:.6f}"
            for x1, y1, x2, y2 in boxes
        ]
        (root / "labels" / split / f"{k:06d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        k += 1


def train(args: argparse.Namespace, work: Path) -> Path:
    from detection.ultra import configure_offline

    configure_offline(work / "yolo-config")
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(args.threads)
    data = work / "data"
    t0 = time.monotonic()
    write_dataset(data, "train", args.seed, args.n_train)
    write_dataset(data, "val", args.seed + 1000, args.n_val)
    (data / "paw.yaml").write_text(f"path: {data}\ntrain: images/train\nval: images/val\nnames:\n  0: paw\n")
    log.info("dataset: %d train, %d val crops in %.0f s", args.n_train, args.n_val, time.monotonic() - t0)
    model = YOLO(str(args.yaml))
    t0 = time.monotonic()
    model.train(
        data=str(data / "paw.yaml"), imgsz=CROP, epochs=args.epochs, batch=64, device="cpu", workers=2,
        seed=args.seed, deterministic=True, amp=False, plots=False, mosaic=0.0, scale=0.15, translate=0.1,
        fliplr=0.5, hsv_h=0.0, hsv_s=0.0, hsv_v=0.3, project=str(work / "runs"), name="paw", exist_ok=True,
        verbose=False, patience=100, close_mosaic=0, lr0=0.01, warmup_epochs=1,
    )  # fmt: skip
    log.info("trained %d epochs in %.0f s", args.epochs, time.monotonic() - t0)
    best = work / "runs" / "paw" / "weights" / "best.pt"
    onnx_path = Path(YOLO(str(best)).export(format="onnx", imgsz=CROP, dynamic=True, simplify=False))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, args.out_dir / f"{MODEL_NAME}.onnx")
    shutil.copyfile(best, args.out_dir / f"{MODEL_NAME}.pt")
    return args.out_dir / f"{MODEL_NAME}.onnx"


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / u if u > 0 else 0.0


def evaluate(model: Path, seed: int, n_seq: int, seq_len: int, conf: float) -> dict[str, float]:
    """Held-out sequences of full frames through the online ROI tracker (one tracker per sequence)."""
    from detection.online import OnlineDetector, OnlineOptions
    from detection.runners import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(model, confidence=conf, threads=1)
    rng = np.random.default_rng(seed)
    calib = synthetic_calibration()
    ious: list[float] = []
    hits = misses = wrong = fp_empty = frames_with = frames_without = 0
    t_total = 0.0
    searches = 0
    for s in range(n_seq):
        states = world_states(seed + s, seq_len / 124.0 + 1.0)
        start = int(rng.integers(0, max(1, len(states) - seq_len)))
        rend = {
            c: SceneRenderer(calib.cameras[c], random_appearance(rng), seed=seed + s) for c in calib.cameras
        }
        online = OnlineDetector(runner, list(rend))
        for i in range(start, start + seq_len):
            paw, pellet = states[i]
            visible = rng.uniform() > 0.05  # sometimes the paw is out of view: must give no box
            frames, truths = [], []
            for r in rend.values():
                img, box = r.render(paw if visible else None, PAW_RADIUS_MM, pellet)
                frames.append(img.copy())
                truths.append(box)
            t0 = time.perf_counter()
            dets = online.detect(frames)
            t_total += time.perf_counter() - t0
            for d, box in zip(dets, truths):
                best: Det | None = max(d, key=lambda x: x.confidence) if d else None
                if box is None:
                    frames_without += 1
                    fp_empty += int(best is not None)
                    continue
                frames_with += 1
                if best is None:
                    misses += 1
                    continue
                v = iou((best.x1, best.y1, best.x2, best.y2), box)
                ious.append(v)
                if v >= 0.5:
                    hits += 1
                else:
                    wrong += 1
        searches += online.stats["full_frame_searches"]
    n_frames = frames_with + frames_without
    return {
        "frames": n_frames,
        "frames_with_paw": frames_with,
        "frames_without_paw": frames_without,
        "mean_iou": float(np.mean(ious)) if ious else 0.0,
        "median_iou": float(np.median(ious)) if ious else 0.0,
        "hit_rate_iou50": hits / max(frames_with, 1),
        "miss_rate": misses / max(frames_with, 1),
        "wrong_box_rate": wrong / max(frames_with, 1),
        "false_positive_rate": (wrong + fp_empty) / max(n_frames, 1),
        "false_positive_rate_no_paw": fp_empty / max(frames_without, 1),
        "ms_per_frame": 1e3 * t_total / max(n_frames, 1),
        "full_frame_search_fraction": searches / max(n_frames, 1),
        "roi_size": OnlineOptions().roi_size,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-val", type=int, default=400)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    p.add_argument("--yaml", type=Path, default=MODEL_YAML, help="network definition (Ultralytics YAML)")
    p.add_argument(
        "--out-dir",
        type=Path,
        default=MODEL_DIR,
        help="where the model and its .json go (default: the bundled model's folder)",
    )
    p.add_argument("--eval-only", action="store_true", help="skip training; evaluate the model in --out-dir")
    p.add_argument("--eval-seqs", type=int, default=12)
    p.add_argument("--eval-len", type=int, default=150)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    work = a.work or Path(tempfile.mkdtemp(prefix="pawmodel-"))
    model = a.out_dir / f"{MODEL_NAME}.onnx"
    if not a.eval_only:
        model = train(a, work)
    res = evaluate(model, 90_000 + a.seed, a.eval_seqs, a.eval_len, 0.25)
    res.update({"model": model.name, "size_bytes": model.stat().st_size, "seed": a.seed,
                "n_train": a.n_train, "epochs": a.epochs})  # fmt: skip
    (a.out_dir / f"{MODEL_NAME}.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
