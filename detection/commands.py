"""``deepbehavior detect ...``: the training workflow as CLI subcommands.

    detect extract VIDEO OUT [-n 200]                 diverse frames (k-means) for labeling
    detect label FRAMES LABELS.json [--names a,b]     the labeling tool (resumes where it stopped)
    detect convert --from {seed,yolo,dlc} SRC --to {seed,yolo} DST [--names ...] [--group head=snout,leftear]
                   [--split 0.7,0.15,0.15 --seed 0]   seeded train/val/test split, stratified by source video
    detect train DATA OUT [--model yolo11n.yaml | --model my.pt] [--compare other.yaml|.pt] [--seed 0]
                   ends by picking the confidence threshold on val, storing it (best.json), evaluating test
    detect evaluate MODEL DATA OUT [--labels DIR] [--radius 20]   mAP (COCO), P/R, pixel error, worst.png
    detect train-points DLC.csv OUT [--parts a,b] [--steps 600]  keypoint (heatmap) model from scratch
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


def _load(fmt: str, src: str, args: argparse.Namespace, option: str = "--from") -> Any:
    from detection import datasets as d

    if fmt == "seed":
        return d.load_seed_json(src, _names(args))
    if fmt == "yolo":
        return d.load_yolo(src, getattr(args, "labels", None), names=_names(args))
    groups = {}
    for g in args.group or []:
        if "=" not in g:
            raise DetectionError(f"--group {g!r}: expected NAME=part1,part2")
        k, v = g.split("=", 1)
        groups[k] = [p for p in v.split(",") if p]
    if not groups:
        raise DetectionError(
            f"{option} dlc needs at least one --group NAME=bodypart,bodypart "
            "(e.g. --group head=snout,leftear)"
        )
    return d.load_dlc_boxes(src, groups, margin_px=args.margin, skip_missing=args.skip_missing)


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
        print(f"{len(ds)} images, classes {ds.names} -> {args.dst}")
        return 0
    parts = d.split_dataset(ds, d.parse_fractions(args.split), seed=args.seed)
    for split, sub in parts.items():
        if len(sub):
            d.save_yolo(sub, args.dst, split)
    d.write_data_yaml(args.dst, ds.names, {s: s for s, sub in parts.items() if len(sub)})
    counts = ", ".join(f"{s} {len(sub)}" for s, sub in parts.items())
    print(f"{len(ds)} images ({counts}; seed {args.seed}), classes {ds.names} -> {args.dst}")
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    from detection.train import compare_plot, finish, train

    common = {"epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch, "device": args.device,
              "seed": args.seed, "threads": args.threads, "progress": _say}  # fmt: skip
    runs = [train(args.data, args.model, args.out, name=Path(args.model).stem, **common)]
    if args.compare:
        name = Path(args.compare).stem + "-compare"
        runs.append(train(args.data, args.compare, args.out, name=name, **common))
        print(f"comparison plot: {compare_plot(runs, Path(args.out) / 'compare.png')}")
    for r in runs:
        print(f"{r.label}: {r.weights}")
        card = finish(r.weights, args.data, imgsz=args.imgsz, radius_px=args.radius, threads=args.threads)
        print(f"confidence threshold {card.confidence:.3f} (picked on val, stored in {card.path})")
        print("validation split:")
        print("\n".join(card.val_lines))
        if card.test_lines:
            print("test split:")
            print("\n".join(card.test_lines))
        print(f"report and worst frames: {card.report_dir}")
    return 0


def cmd_train_points(args: argparse.Namespace) -> int:
    import json

    from detection import keypoints as kp
    from detection.datasets import parse_fractions, split_keys

    parts = [p.strip() for p in args.parts.split(",") if p.strip()] if args.parts else None
    ds = kp.load_dlc_points(args.csv, parts, skip_missing=args.skip_missing)
    sp = split_keys(list(ds.items), parse_fractions(args.split), seed=args.seed)
    tr, va, te = (ds.subset(sp[s]) for s in ("train", "val", "test"))
    print(f"{len(ds)} labeled frames, parts {ds.names}: train {len(tr)}, val {len(va)}, test {len(te)}")
    recipe = kp.Recipe(steps=args.steps, crop=args.crop, arch=args.arch)
    model = kp.train_keypoints(tr, recipe, seed=args.seed, threads=args.threads, progress=_say)
    runner = kp.TorchKeypointRunner(model, confidence=0.0)
    ev, cv, _ = kp.point_errors(runner, va)
    neg_v = kp.negative_confidences(runner, kp.negative_crops(va, args.crop, seed=args.seed))
    model.confidence = kp.pick_point_threshold(ev, cv, neg_v, args.radius)
    out = Path(args.out)
    onnx = kp.export_keypoints_onnx(model, out / "keypoints.onnx")
    ds_eval, which = (te, "test") if len(te) else (va, "val")
    err, conf, _ = kp.point_errors(runner, ds_eval)
    neg = kp.negative_confidences(runner, kp.negative_crops(ds_eval, args.crop, seed=args.seed + 1))
    res = kp.summarize_points(ds.names, err, conf, neg, model.confidence, args.radius)
    card = {"confidence_threshold": model.confidence, "threshold_picked_on": f"val ({len(va)} frames)",
            "train_s": round(model.train_s, 1), which: [r.__dict__ for r in res]}  # fmt: skip
    (out / "keypoints.json").write_text(json.dumps(card, indent=1, default=str) + "\n")
    print(
        f"trained in {model.train_s / 60:.1f} min; "
        f"confidence threshold {model.confidence:.3f} (picked on val)"
    )
    print(f"{which} split, {len(ds_eval)} frames, whole frames, radius {args.radius:g} px:")
    for r in res:
        print(f"{r.name:>12}: hits {r.hits}/{r.n}  error median {r.median_px:.1f} px  p90 {r.p90_px:.1f} px  "
              f"false positives on {r.fp_negative}/{r.n_negative} crops without the animal")  # fmt: skip
    print(f"model: {onnx} (runner 'onnxruntime'; a {recipe.box_px:g}-px box per keypoint, class = keypoint)")
    return 0


def _runner(model: str, conf: float, imgsz: int | None) -> Any:
    from detection.runners import OnnxRuntimeRunner, UltralyticsRunner

    if model.endswith(".onnx"):
        return OnnxRuntimeRunner(model, confidence=conf, input_size=imgsz)
    return UltralyticsRunner(model, confidence=conf, input_size=imgsz)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from detection.evaluate import candidates_runner, evaluate_predictions, predict_dataset, write_report
    from detection.runners import resolve_confidence

    if args.labels and args.format != "yolo":
        raise DetectionError("--labels is for --format yolo (a YOLO labels folder)")
    ds = _load(args.format, args.data, args, "--format")
    conf = resolve_confidence(args.conf, args.model)
    preds = predict_dataset(candidates_runner(_runner(args.model, 0.001, args.imgsz)), ds)
    res = evaluate_predictions(ds, preds, report_conf=conf, radius_px=args.radius)
    rep = write_report(res, args.out, title=Path(args.model).name, truth=ds, preds=preds)
    print("\n".join(res.summary_lines()))
    print(f"report {rep}, worst frames {Path(args.out) / 'worst.png'}")
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
        if par.boxes == 0:
            print(f"PARITY FAILED: no box on {par.frames} frames even at confidence {par.confidence:.3f}: "
                  "nothing was compared", file=sys.stderr)  # fmt: skip
            return 1
        print(
            f"parity on {par.frames} frames, {par.boxes} boxes at confidence {par.confidence:.3f}: "
            f"min IoU {par.min_iou:.4f} (>= {PARITY_IOU}), max |conf diff| {par.max_conf_diff:.4f} "
            f"(<= {PARITY_CONF}), count mismatches {par.count_mismatches}"
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


class _DefaultsHelp(argparse.HelpFormatter):
    """Every option's help ends with its default (also options without a help text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        shown = d is not None and d is not False and d is not argparse.SUPPRESS
        if action.option_strings and shown and "%(default)" not in text:
            text = f"{text} (default: %(default)s)".strip()
        return text


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``detect`` with its subcommands to the ``deepbehavior`` CLI."""
    p = subparsers.add_parser(
        "detect", help="detector training workflow (extract, convert, train, evaluate, mine, export)"
    )
    sub = p.add_subparsers(dest="detect_cmd", required=True)
    fmt = _DefaultsHelp

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=fmt)

    def names_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--names", help="class names, comma-separated (none: 'object', or the --group names)")
        q.add_argument("--names-file", help="YAML with a 'names' list or dict (e.g. a data.yaml)")
        q.add_argument(
            "--group",
            action="append",
            help="DLC: NAME=bodypart,bodypart, one box per group around its keypoints; required with dlc "
            "labels, repeat for more classes (e.g. --group head=snout,leftear,rightear)",
        )
        q.add_argument("--margin", type=float, default=8.0, help="DLC: box margin around keypoints, px")
        q.add_argument(
            "--skip-missing",
            action="store_true",
            help="DLC: leave out (with a warning) rows whose image is missing",
        )

    q = add("extract", "diverse frames from a video by k-means")
    q.add_argument("video")
    q.add_argument("out")
    q.add_argument("-n", type=int, default=200)
    q.add_argument("--stride", type=int, default=1)
    q.set_defaults(func=_safe(cmd_extract))

    q = add(
        "convert", "convert labels between seed JSON, YOLO txt and DLC keypoints (--from dlc needs --group)"
    )
    q.add_argument("--from", dest="src_format", choices=["seed", "yolo", "dlc"], required=True)
    q.add_argument("src", help="seed JSON file, YOLO images folder, or DLC CollectedData CSV")
    q.add_argument("--to", dest="dst_format", choices=["seed", "yolo"], required=True)
    q.add_argument("dst")
    q.add_argument(
        "--split",
        default="0.7,0.15,0.15",
        help="--to yolo: TRAIN,VAL,TEST fractions; images are shuffled with --seed within each source video",
    )
    q.add_argument("--seed", type=int, default=0, help="seed of the split")
    names_args(q)
    q.set_defaults(func=_safe(cmd_convert))

    q = add("label", "labeling tool (Qt): two clicks per box; writes seed JSON (+ YOLO txt)")
    q.add_argument("frames")
    q.add_argument("labels", help="seed JSON file (created, or resumed where it stopped)")
    q.add_argument("--yolo", help="also write YOLO txt under this folder")
    names_args(q)
    q.set_defaults(func=_safe(cmd_label))

    q = add(
        "train",
        "train (transfer from --model X.pt, or random init from a yaml); ends by picking the confidence "
        "threshold on the val split, storing it beside the weights and evaluating the test split",
    )
    q.add_argument("data", help="Ultralytics data.yaml (from 'detect convert': train/val/test splits)")
    q.add_argument("out")
    q.add_argument(
        "--model", default="yolo11n.yaml", help="a .pt checkpoint (transfer) or a model .yaml (random init)"
    )
    q.add_argument("--compare", help="second model (checkpoint or yaml) to train and plot against")
    q.add_argument("--epochs", type=int, default=50)
    q.add_argument("--imgsz", type=int, default=320)
    q.add_argument("--batch", type=int, default=16)
    q.add_argument("--device", default="cpu")
    q.add_argument("--seed", type=int, default=0, help="seed of initialisation, augmentation and batch order")
    q.add_argument("--threads", type=int, default=None, help="CPU threads for torch (none: torch's choice)")
    q.add_argument("--radius", type=float, default=20.0, help="a hit: predicted centre within this many px")
    q.set_defaults(func=_safe(cmd_train))

    q = add(
        "train-points",
        "train a keypoint (heatmap) model from scratch on DeepLabCut labels: seeded split, threshold picked "
        "on val, test evaluation, ONNX export (OUT/keypoints.onnx, OUT/keypoints.json)",
    )
    q.add_argument("csv", help="DeepLabCut CollectedData_*.csv (single animal)")
    q.add_argument("out")
    q.add_argument("--parts", help="body parts, comma-separated (default: all in the CSV)")
    q.add_argument("--split", default="0.7,0.15,0.15", help="TRAIN,VAL,TEST fractions")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--steps", type=int, default=600, help="training steps (batches of 24 crops)")
    q.add_argument("--crop", type=int, default=128, help="training crop side, px (the online ROI's scale)")
    q.add_argument(
        "--arch", choices=["base", "lite"], default="base",
        help="network: base (most accurate) or lite (~4x less compute, for whole-frame search on a CPU)",
    )  # fmt: skip
    q.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    q.add_argument("--radius", type=float, default=10.0, help="a hit: within this many px of the label")
    q.add_argument("--skip-missing", action="store_true", help="leave out rows whose image is missing")
    q.set_defaults(func=_safe(cmd_train_points))

    q = add(
        "evaluate",
        "mAP50 / mAP50-95 (COCO), and at the operating threshold precision/recall, IoU, "
        "centre error (median, p90), hits within --radius, false positives on frames without the object; "
        "report.json, report.png and worst.png (the worst frames)",
    )
    q.add_argument("model", help=".onnx or .pt")
    q.add_argument("data", help="YOLO images folder, seed JSON or DLC CollectedData CSV (see --format)")
    q.add_argument("out")
    q.add_argument("--format", choices=["seed", "yolo", "dlc"], default="yolo", help="dlc needs --group")
    q.add_argument("--labels", help="YOLO labels folder (default: 'labels' beside the 'images' folder)")
    q.add_argument("--imgsz", type=int, default=320)
    q.add_argument(
        "--conf", type=float, default=None,
        help="operating confidence threshold (default: the one stored with the model, else 0.25)",
    )  # fmt: skip
    q.add_argument("--radius", type=float, default=20.0, help="a hit: predicted centre within this many px")
    names_args(q)
    q.set_defaults(func=_safe(cmd_evaluate))

    q = add("mine", "queue hard frames of a video for labeling")
    q.add_argument("model")
    q.add_argument("video")
    q.add_argument("out")
    q.add_argument("-n", type=int, default=50)
    q.add_argument("--stride", type=int, default=1)
    q.add_argument("--imgsz", type=int, default=320)
    names_args(q)
    q.set_defaults(func=_safe(cmd_mine))

    q = add(
        "export",
        "ONNX export (+ parity check vs PyTorch on real frames, + TensorRT); the stored "
        "confidence threshold travels into the ONNX file",
    )
    q.add_argument("checkpoint")
    q.add_argument("out")
    q.add_argument("--imgsz", type=int, default=320)
    q.add_argument("--frames", help="folder of PNG frames for the parity check")
    q.add_argument("--n-frames", type=int, default=20)
    q.add_argument("--tensorrt", action="store_true")
    q.set_defaults(func=_safe(cmd_export))
    for sp in sub.choices.values():  # argparse prints no help line for an option without help text
        for act in sp._actions:
            if act.option_strings and act.help is None and act.default not in (None, False):
                act.help = "(default: %(default)s)"


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m detection.commands ...``) until the lead wires ``register``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(prog="deepbehavior")
    register(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
