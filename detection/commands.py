"""``deepbehavior detect ...``: the training workflow as CLI subcommands.

    detect extract VIDEO OUT [-n 200]                 diverse frames (k-means) for labeling
    detect label FRAMES LABELS.json [--names a,b]     the labeling tool (resumes where it stopped)
    detect convert --from {seed,yolo,dlc} SRC --to {seed,yolo} DST [--names ...] [--group head=snout,leftear]
    detect train DATA OUT [--model yolo11n.yaml | --model my.pt] [--compare other.yaml|.pt]
    detect evaluate MODEL DATA OUT                    IoU, precision/recall, mAP50 per class + report.png
    detect mine MODEL VIDEO OUT [-n 50]               hard frames -> OUT/queue.json + PNGs
    detect export CHECKPOINT OUT.onnx [--frames DIR] [--tensorrt]

Class names come from ``--names a,b,c`` or a YAML file with a ``names`` list/dict (``--names-file``,
e.g. an Ultralytics data.yaml), so the two-mouse 8-class set uses the same commands.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from detection.base import DetectionError

log = logging.getLogger(__name__)


def _names(args: argparse.Namespace) -> list[str]:
    if getattr(args, "names_file", None):
        from analysis.textfile import read_yaml

        doc = read_yaml(args.names_file, "names file", DetectionError) or {}
        n = doc.get("names") if isinstance(doc, dict) else None
        if isinstance(n, dict):
            return [str(n[k]) for k in sorted(n)]
        if isinstance(n, list) and n:
            return [str(x) for x in n]
        raise DetectionError(f"{args.names_file}: no 'names' list or dict")
    if getattr(args, "names", None):
        return [s.strip() for s in args.names.split(",") if s.strip()]
    groups = getattr(args, "group", None)
    if groups:
        return [g.split("=", 1)[0] for g in groups]
    return ["object"]


def _load(fmt: str, src: str, args: argparse.Namespace) -> Any:
    from detection import datasets as d

    if fmt == "seed":
        return d.load_seed_json(src, _names(args))
    if fmt == "yolo":
        return d.load_yolo(src, names=_names(args))
    groups = {}
    for g in args.group or []:
        if "=" not in g:
            raise DetectionError(f"--group {g!r}: expected NAME=part1,part2")
        k, v = g.split("=", 1)
        groups[k] = [p for p in v.split(",") if p]
    if not groups:
        raise DetectionError("--from dlc needs at least one --group NAME=bodypart,bodypart")
    return d.load_dlc_boxes(src, groups, margin_px=args.margin)


def cmd_extract(args: argparse.Namespace) -> int:
    from detection.extract import extract_diverse

    paths = extract_diverse(args.video, args.out, n=args.n, stride=args.stride)
    print(f"{len(paths)} frames -> {args.out}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from detection import datasets as d

    ds = _load(args.src_format, args.src, args)
    if args.dst_format == "seed":
        d.save_seed_json(ds, args.dst)
    else:
        d.save_yolo(ds, args.dst, "train")
        d.write_data_yaml(args.dst, ds.names, {"train": "train", "val": "train"})
    print(f"{len(ds)} images, classes {ds.names} -> {args.dst}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from detection.train import compare_plot, train

    runs = [train(args.data, args.model, args.out, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                  device=args.device, name=Path(args.model).stem)]  # fmt: skip
    if args.compare:
        name = Path(args.compare).stem + "-compare"
        runs.append(
            train(args.data, args.compare, args.out, epochs=args.epochs, imgsz=args.imgsz,
                  batch=args.batch, device=args.device, name=name)
        )  # fmt: skip
        print(f"comparison plot: {compare_plot(runs, Path(args.out) / 'compare.png')}")
    for r in runs:
        print(f"{r.label}: {r.weights}")
    return 0


def _runner(model: str, conf: float, imgsz: int | None) -> Any:
    from detection.runners import OnnxRuntimeRunner, UltralyticsRunner

    if model.endswith(".onnx"):
        return OnnxRuntimeRunner(model, confidence=conf, input_size=imgsz)
    return UltralyticsRunner(model, confidence=conf, input_size=imgsz)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from detection.evaluate import evaluate, write_report

    ds = _load(args.format, args.data, args)
    res = evaluate(_runner(args.model, 0.01, args.imgsz), ds, report_conf=args.conf)
    rep = write_report(res, args.out, title=Path(args.model).name)
    for c in res.classes:
        print(f"{c.name:>12}: P {c.precision:.3f}  R {c.recall:.3f}  AP50 {c.ap50:.3f}  IoU {c.mean_iou:.3f}")
    print(f"mAP50 {res.map50:.3f}  mean IoU {res.mean_iou:.3f}  report {rep}")
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    from detection.mining import mine_video

    q = mine_video(_runner(args.model, 0.1, args.imgsz), args.video, args.out, n=args.n,
                   n_classes=len(_names(args)), stride=args.stride)  # fmt: skip
    print(f"queue: {q}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import cv2

    from detection.export import PARITY_CONF, PARITY_IOU, check_parity, export_onnx

    onnx = export_onnx(args.checkpoint, args.out, imgsz=args.imgsz)
    print(f"ONNX: {onnx}")
    if args.frames:
        frames = []
        for p in sorted(Path(args.frames).glob("*.png"))[: args.n_frames]:
            f = cv2.imread(str(p))
            if f is not None:
                frames.append(np.asarray(f))
        if not frames:
            raise DetectionError(f"--frames {args.frames}: no PNG frames")
        par = check_parity(args.checkpoint, onnx, frames, input_size=args.imgsz)
        print(
            f"parity on {par.frames} frames, {par.boxes} boxes: min IoU {par.min_iou:.4f} (>= {PARITY_IOU}), "
            f"max |conf diff| {par.max_conf_diff:.4f} (<= {PARITY_CONF}), "
            f"count mismatches {par.count_mismatches}"
        )
        if not par.ok:
            print("PARITY FAILED", file=sys.stderr)
            return 1
    if args.tensorrt:
        from detection.runners import TensorRTRunner

        r = TensorRTRunner(onnx, input_size=args.imgsz)
        print(f"TensorRT engine: {r.engine_path}")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from detection.label_tool import main as label_main

    extra = ["--yolo", args.yolo] if args.yolo else []
    return label_main([args.frames, args.labels, "--names", ",".join(_names(args)), *extra])


def _safe(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except DetectionError as e:
            print(f"deepbehavior: error: {e}", file=sys.stderr)
            return 2

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``detect`` with its subcommands to the ``deepbehavior`` CLI."""
    p = subparsers.add_parser(
        "detect", help="detector training workflow (extract, convert, train, evaluate, mine, export)"
    )
    sub = p.add_subparsers(dest="detect_cmd", required=True)

    def names_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--names", help="class names, comma-separated (default: 'object')")
        q.add_argument("--names-file", help="YAML with a 'names' list or dict (e.g. a data.yaml)")
        q.add_argument("--group", action="append", help="DLC: NAME=bodypart,bodypart (one box per group)")
        q.add_argument("--margin", type=float, default=8.0, help="DLC: box margin around keypoints, px")

    q = sub.add_parser("extract", help="diverse frames from a video by k-means")
    q.add_argument("video")
    q.add_argument("out")
    q.add_argument("-n", type=int, default=200)
    q.add_argument("--stride", type=int, default=1)
    q.set_defaults(func=_safe(cmd_extract))

    q = sub.add_parser("convert", help="convert labels between seed JSON, YOLO txt and DLC keypoints")
    q.add_argument("--from", dest="src_format", choices=["seed", "yolo", "dlc"], required=True)
    q.add_argument("src", help="seed JSON file, YOLO images folder, or DLC CollectedData CSV")
    q.add_argument("--to", dest="dst_format", choices=["seed", "yolo"], required=True)
    q.add_argument("dst")
    names_args(q)
    q.set_defaults(func=_safe(cmd_convert))

    q = sub.add_parser("label", help="labeling tool (Qt): two clicks per box; writes seed JSON (+ YOLO txt)")
    q.add_argument("frames")
    q.add_argument("labels", help="seed JSON file (created, or resumed where it stopped)")
    q.add_argument("--yolo", help="also write YOLO txt under this folder")
    names_args(q)
    q.set_defaults(func=_safe(cmd_label))

    q = sub.add_parser("train", help="train (transfer from --model X.pt, or random init from a yaml)")
    q.add_argument("data", help="Ultralytics data.yaml")
    q.add_argument("out")
    q.add_argument("--model", default="yolo11n.yaml")
    q.add_argument("--compare", help="second model (checkpoint or yaml) to train and plot against")
    q.add_argument("--epochs", type=int, default=50)
    q.add_argument("--imgsz", type=int, default=320)
    q.add_argument("--batch", type=int, default=16)
    q.add_argument("--device", default="cpu")
    q.set_defaults(func=_safe(cmd_train))

    q = sub.add_parser("evaluate", help="IoU, precision/recall, mAP50 per class; report with plots")
    q.add_argument("model", help=".onnx or .pt")
    q.add_argument("data", help="labels (see --format)")
    q.add_argument("out")
    q.add_argument("--format", choices=["seed", "yolo", "dlc"], default="yolo")
    q.add_argument("--imgsz", type=int, default=320)
    q.add_argument("--conf", type=float, default=0.25)
    names_args(q)
    q.set_defaults(func=_safe(cmd_evaluate))

    q = sub.add_parser("mine", help="queue hard frames of a video for labeling")
    q.add_argument("model")
    q.add_argument("video")
    q.add_argument("out")
    q.add_argument("-n", type=int, default=50)
    q.add_argument("--stride", type=int, default=1)
    q.add_argument("--imgsz", type=int, default=320)
    names_args(q)
    q.set_defaults(func=_safe(cmd_mine))

    q = sub.add_parser("export", help="ONNX export (+ parity check vs PyTorch on real frames, + TensorRT)")
    q.add_argument("checkpoint")
    q.add_argument("out")
    q.add_argument("--imgsz", type=int, default=320)
    q.add_argument("--frames", help="folder of PNG frames for the parity check")
    q.add_argument("--n-frames", type=int, default=20)
    q.add_argument("--tensorrt", action="store_true")
    q.set_defaults(func=_safe(cmd_export))


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m detection.commands ...``) until the lead wires ``register``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(prog="deepbehavior")
    register(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
