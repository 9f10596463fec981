"""``deepbehavior detect ...``: the training workflow as CLI subcommands.

    detect extract VIDEO|SESSION OUT [-n 200]         diverse frames (k-means) for labeling
    detect label FRAMES LABELS.json [--names a,b]     the labeling tool (resumes where it stopped)
    detect label FRAMES CollectedData_me.csv --points snout,tail   keypoints, DeepLabCut's table
    detect convert --from {seed,yolo,dlc} SRC --to {seed,yolo} DST [--names ...] [--group head=snout,leftear]
                   [--split 0.7,0.15,0.15 --seed 0]   seeded train/val/test split, stratified by source video
    detect train DATA OUT [--model yolo11n.yaml | --model my.pt] [--compare other.yaml|.pt] [--seed 0]
                   ends by picking the confidence threshold on val, storing it (best.json), evaluating test
    detect evaluate MODEL DATA OUT [--labels DIR] [--radius 20]   mAP (COCO), P/R, pixel error, worst.png
                   (a keypoint model on DLC labels: pixel error per keypoint, [--calibration C --camera N] mm)
    detect train-points DLC.csv OUT [--parts a,b] [--steps 600]  keypoint (heatmap) model from scratch
    detect mine MODEL SESSION|VIDEO OUT [-n 50]       hard frames (views disagree in 3-D, low confidence)
                                                      -> OUT/queue.csv (session) or queue.json + PNGs
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
    from detection.extract import extract_diverse, extract_session

    if Path(args.video).is_dir():
        paths = extract_session(args.video, args.out, n=args.n, stride=args.stride)
        print(f"{len(paths)} frames ({args.n} per camera at most) -> {args.out}")
        return 0
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
    from detection.datasets import BLOCKS_PER_VIDEO, carry_split, parse_fractions, split_keys
    from detection.evaluate import write_point_report

    if args.steps < 20:
        raise DetectionError(f"--steps {args.steps}: train for at least 20 steps (default 600)")

    parts = [p.strip() for p in args.parts.split(",") if p.strip()] if args.parts else None
    ds = kp.load_dlc_points(args.csv, parts, skip_missing=args.skip_missing)
    if args.keep_split:
        sp, gone = carry_split(list(ds.items), args.keep_split)
        print(f"split carried over from {args.keep_split}; new labeled frames go to train")
        if gone:
            print(f"  {len(gone)} frame(s) of that split are no longer labeled, e.g. {gone[0]}")
    else:
        labeled = [k for k, v in ds.items.items() if np.isfinite(v).any()]
        sp = split_keys(list(ds.items), parse_fractions(args.split), seed=args.seed, labeled=labeled)
    tr, va, te = (ds.subset(sp[s]) for s in ("train", "val", "test"))
    with_part = sum(bool(np.isfinite(v).any()) for v in ds.items.values())
    print(
        f"{len(ds)} frames ({with_part} with a labeled part), parts {', '.join(ds.names)}: train {len(tr)}, "
        f"val {len(va)}, test {len(te)}"
        + ("" if args.keep_split else f" (each video's frames in {BLOCKS_PER_VIDEO} runs of neighbours)")
    )
    recipe = kp.Recipe(steps=args.steps, crop=args.crop, arch=args.arch)
    model = kp.train_keypoints(tr, recipe, seed=args.seed, threads=args.threads, progress=_say, search=True)
    runner = kp.TorchKeypointRunner(model, confidence=0.0)
    ev, cv, _ = kp.point_errors(runner, va)
    neg_v = kp.negative_confidences(runner, kp.negative_crops(va, args.crop))
    model.confidence = kp.pick_point_threshold(ev, cv, neg_v, args.radius)
    out = Path(args.out)
    onnx = kp.export_keypoints_onnx(model, out / "keypoints.onnx")
    ds_eval, which = (te, "test") if len(te) else (va, "val")
    res = kp.evaluate_points(kp.KeypointOnnxRunner(onnx, threads=args.threads), ds_eval, model.confidence,
                             args.radius, crop_px=args.crop)  # fmt: skip
    rep = write_point_report(res, ds_eval, out / "report")
    card = {"confidence_threshold": model.confidence, "threshold_picked_on": f"val ({len(va)} frames)",
            "train_s": round(model.train_s, 1), "splits": {s: sorted(map(str, sp[s])) for s in sp},
            which: [r.__dict__ for r in res.parts]}  # fmt: skip
    (out / "keypoints.json").write_text(json.dumps(card, indent=1, default=str) + "\n")
    print(
        f"trained in {model.train_s / 60:.1f} min; "
        f"confidence threshold {model.confidence:.3f} (picked on val)"
    )
    print(f"{which} split: " + "\n".join(res.summary_lines()))
    print(f"report {rep}, worst frames {rep.parent / 'worst.png'}")
    print(f"model: {onnx} (runner 'onnxruntime'; a {recipe.box_px:g}-px box per keypoint, class = keypoint)")
    return 0


def _runner(model: str, conf: float, imgsz: int | None) -> Any:
    from detection.runners import OnnxRuntimeRunner, UltralyticsRunner

    if model.endswith(".onnx"):
        return OnnxRuntimeRunner(model, confidence=conf, input_size=imgsz)
    return UltralyticsRunner(model, confidence=conf, input_size=imgsz)


def _evaluate_points(args: argparse.Namespace) -> int:
    """``detect evaluate`` of a keypoint model on DeepLabCut labels (:func:`keypoints.evaluate_points`)."""
    from detection import keypoints as kp
    from detection.datasets import card_splits, frame_key, image_shape
    from detection.evaluate import mm_per_px, write_point_report
    from detection.runners import resolve_confidence

    if not args.data.lower().endswith(".csv") or args.labels:
        raise DetectionError(f"{args.model} is a keypoint model: DATA is a DeepLabCut CollectedData CSV")
    runner = kp.KeypointOnnxRunner(args.model, confidence=0.0, input_size=args.imgsz)
    ds = kp.load_dlc_points(args.data, runner.names, skip_missing=args.skip_missing)
    if args.split:
        card = Path(args.model).with_name("keypoints.json")
        splits = card_splits(card)
        ds = ds.subset([k for k in ds.items if splits.get(frame_key(k)) == args.split])
        if not len(ds):
            raise DetectionError(f"{args.data}: none of its frames is in the {args.split} split of {card}")
        print(f"{len(ds)} frames of the {args.split} split of {card}")
    scale, note = None, ""
    if args.calibration:
        widths = {image_shape(k, args.data)[1] for k in ds.items}
        if len(widths) > 1:
            raise DetectionError(
                f"{args.data}: frames of widths {sorted(widths)}: mm need one camera's frames"
            )
        scale, note = mm_per_px(args.calibration, args.camera, args.distance_mm, widths.pop())
    conf = resolve_confidence(args.conf, args.model)
    ev = kp.evaluate_points(runner, ds, conf, args.radius, runner.crop, mm_per_px=scale, mm_note=note)
    rep = write_point_report(ev, ds, args.out)
    print("\n".join(ev.summary_lines()))
    print(f"report {rep}, worst frames {Path(args.out) / 'worst.png'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from detection.evaluate import candidates_runner, evaluate_predictions, predict_dataset, write_report
    from detection.keypoints import is_keypoint_model
    from detection.runners import resolve_confidence

    if is_keypoint_model(args.model):
        return _evaluate_points(args)
    if args.calibration or args.split:
        raise DetectionError(
            "--calibration and --split are for keypoint models (a box model's split is its images folder)"
        )
    if args.labels and args.format != "yolo":
        raise DetectionError("--labels is for --format yolo (a YOLO labels folder)")
    ds = _load(args.format, args.data, args, "--format")
    conf = resolve_confidence(args.conf, args.model)
    preds = predict_dataset(candidates_runner(_runner(args.model, 0.001, args.imgsz or 320)), ds)
    res = evaluate_predictions(ds, preds, report_conf=conf, radius_px=args.radius)
    rep = write_report(res, args.out, title=Path(args.model).name, truth=ds, preds=preds)
    print("\n".join(res.summary_lines()))
    print(f"report {rep}, worst frames {Path(args.out) / 'worst.png'}")
    return 0


def _mining_runner(model: str, floor: float, imgsz: int | None) -> Any:
    """A runner of a box or keypoint model (``.onnx`` / ``.pt``) returning boxes down to ``floor``."""
    from detection.runners import make_runner
    from detection.settings import DetectorSettings

    if not Path(model).is_file():
        raise DetectionError(f"model file {model} does not exist")
    kind = "ultralytics" if Path(model).suffix.lower() == ".pt" else "onnxruntime"
    return make_runner(
        DetectorSettings(runner=kind, model=model, confidence=floor, options={"input_size": imgsz})
    )


def cmd_mine(args: argparse.Namespace) -> int:
    from detection.mining import mine_session, mine_video
    from detection.runners import resolve_confidence

    if not Path(args.video).is_dir():
        imgsz = args.imgsz or 320
        q = mine_video(_runner(args.model, 0.1, imgsz), args.video, args.out, n=args.n,
                       n_classes=len(_names(args)), stride=args.stride)  # fmt: skip
        print(f"queue: {q}")
        return 0
    threshold = resolve_confidence(args.conf, args.model)
    runner = _mining_runner(args.model, min(0.05, threshold / 2), args.imgsz)
    names = list(getattr(runner, "names", None) or _names(args))
    res = mine_session(runner, args.video, args.out, names, threshold, n=args.n, stride=args.stride,
                       reproj_px=args.reproj_px)  # fmt: skip
    print(f"{res.triggers} triggers scored (every {args.stride}), operating confidence {threshold:.3f}, "
          f"reprojection limit {args.reproj_px:g} px")  # fmt: skip
    print("\n".join(res.summary))
    gap = 5 * args.stride
    print(f"queued: the {len(res.chosen)} hardest triggers (at least {gap} apart), {res.rows} images")
    print(f"queue: {res.queue} (open it with: deepbehavior detect label {res.queue} LABELS)")
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
    for opt in ("points", "scorer", "root"):
        if getattr(args, opt):
            extra += [f"--{opt}", getattr(args, opt)]
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
            "labels, repeat for more classes (e.g. --group head=snout,leftear,rightear); in a multi-animal "
            "table name the animal: --group mouse1/head=snout,leftear",
        )
        q.add_argument("--margin", type=float, default=8.0, help="DLC: box margin around keypoints, px")
        q.add_argument(
            "--skip-missing",
            action="store_true",
            help="DLC: leave out (with a warning) rows whose image is missing",
        )

    q = add("extract", "diverse frames (k-means) from a video, or from each camera of a session folder")
    q.add_argument("video", metavar="SOURCE", help="a video, or a session folder (every camera's video)")
    q.add_argument("out", help="folder for the PNGs (for DeepLabCut tables: PROJECT/labeled-data/NAME)")
    q.add_argument("-n", type=int, default=200, help="frames (per camera for a session)")
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

    q = add(
        "label",
        "labeling tool (Qt): boxes (two clicks each; seed JSON + YOLO txt) or, with --points, keypoints "
        "(one click per body part; DeepLabCut CollectedData csv + h5)",
    )
    q.add_argument("frames", help="folder of images, or the queue.csv 'detect mine' wrote")
    q.add_argument(
        "labels",
        help="seed JSON file, or a DeepLabCut CollectedData_<scorer>.csv (created, or resumed where it "
        "stopped; rows of images not in FRAMES are kept as they are)",
    )
    q.add_argument("--yolo", help="also write YOLO txt under this folder")
    q.add_argument(
        "--points", "--parts", dest="points", help="points mode: body parts, comma-separated (snout,leftear)"
    )
    q.add_argument("--scorer", help="points mode: the table's scorer (default: from the file name)")
    q.add_argument(
        "--root",
        help="points mode: folder the table's image paths are relative to (default: DLC project root)",
    )
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
        "train a keypoint (heatmap) model and its whole-frame search network from scratch on DeepLabCut "
        "labels: seeded split, threshold picked on val, test evaluation (OUT/report: report.json, "
        "worst.png), ONNX export (OUT/keypoints.onnx, OUT/keypoints.json)",
    )
    q.add_argument("csv", help="DeepLabCut CollectedData_*.csv (single animal)")
    q.add_argument("out")
    q.add_argument("--parts", help="body parts, comma-separated (default: all in the CSV)")
    q.add_argument("--split", default="0.7,0.15,0.15", help="TRAIN,VAL,TEST fractions")
    q.add_argument(
        "--keep-split",
        metavar="KEYPOINTS_JSON",
        help="retraining after mining: keep the previous round's split (its keypoints.json, or any JSON "
        'file {"splits": {"train": [...], "val": [...], "test": [...]}} of image paths, matched by '
        "<video>/<image>); frames labeled since go to train, so val and test stay the same frames",
    )
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--steps", type=int, default=600, help="training steps (batches of 24 crops)")
    q.add_argument("--crop", type=int, default=128, help="training crop side, px (the online ROI's scale)")
    q.add_argument(
        "--arch", choices=["base", "lite"], default="base",
        help="the fine network: base (most accurate) or lite (~4x less compute); a lite whole-frame search "
        "network is always trained beside it (whole frames run coarse to fine)",
    )  # fmt: skip
    q.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    q.add_argument("--radius", type=float, default=20.0, help="a hit: within this many px of the label")
    q.add_argument("--skip-missing", action="store_true", help="leave out rows whose image is missing")
    q.set_defaults(func=_safe(cmd_train_points))

    q = add(
        "evaluate",
        "box models: mAP50 / mAP50-95 (COCO), and at the operating threshold precision/recall, IoU, "
        "centre error (median, p90), hits within --radius, false positives on frames without the object; "
        "report.json, report.png and worst.png (the worst frames). Keypoint models (from train-points) on "
        "DeepLabCut labels: per keypoint the pixel error (median, p90; in mm with --calibration), hits "
        "within --radius, precision/recall and false positives on frames and crops without the part, at "
        "the operating threshold; report.json and worst.png",
    )
    q.add_argument("model", help=".onnx or .pt (box model), or a keypoint .onnx")
    q.add_argument(
        "data",
        help="YOLO images folder, seed JSON or DLC CollectedData CSV (see --format); keypoint models: a DLC "
        "CollectedData CSV",
    )
    q.add_argument("out")
    q.add_argument("--format", choices=["seed", "yolo", "dlc"], default="yolo", help="dlc needs --group")
    q.add_argument("--labels", help="YOLO labels folder (default: 'labels' beside the 'images' folder)")
    q.add_argument(
        "--imgsz", type=int, default=None,
        help="box models: letterbox size (default 320); keypoint models: letterbox each frame to this for "
        "the fine network alone (default: frames as they are, coarse to fine)",
    )  # fmt: skip
    q.add_argument(
        "--conf", type=float, default=None,
        help="operating confidence threshold (default: the one stored with the model, else 0.25)",
    )  # fmt: skip
    q.add_argument("--radius", type=float, default=20.0, help="a hit: predicted centre within this many px")
    q.add_argument(
        "--calibration",
        help="keypoint models: a camera calibration (this project's .calib.yaml/json, anipose toml, OpenCV "
        "stereo yaml, Bouguet .mat) to also give the error in mm: pixel error x mm per pixel, where mm per "
        "pixel = working distance / the camera's focal length in px. It assumes every point lies at the "
        "working distance (a point at depth Z has its error scaled by Z / distance) near the image centre",
    )
    q.add_argument("--camera", help="keypoint models: the calibrated camera that took the frames")
    q.add_argument(
        "--split", choices=["train", "val", "test"],
        help="keypoint models: only the frames of this split of the model's training (the keypoints.json "
        "beside the model), e.g. test: the frames train-points held out",
    )  # fmt: skip
    q.add_argument(
        "--distance-mm", type=float,
        help="keypoint models: working distance from the camera along its axis, mm (default: the depth of "
        "the point where the calibration's cameras' optical axes pass closest)",
    )  # fmt: skip
    names_args(q)
    q.set_defaults(func=_safe(cmd_evaluate))

    q = add(
        "mine",
        "queue hard frames for labeling: of a session folder (the views disagree in 3-D, a part seen in "
        "one view only, low confidence) or of one video; PNGs + OUT/queue.csv (session) or queue.json",
    )
    q.add_argument("model", help="box or keypoint model (.onnx or .pt)")
    q.add_argument("video", metavar="SOURCE", help="a session folder (two or more cameras) or one video")
    q.add_argument("out")
    q.add_argument("-n", type=int, default=50, help="hard frames (triggers) to queue")
    q.add_argument("--stride", type=int, default=1, help="look at every this many frames")
    q.add_argument(
        "--imgsz", type=int, default=None,
        help="model input size (default: the model's own; a keypoint model: native resolution; "
        "one video with a .pt: 320)",
    )  # fmt: skip
    q.add_argument(
        "--conf", type=float, default=None,
        help="session: operating confidence; below it is 'low confidence' (default: stored with the model)",
    )  # fmt: skip
    q.add_argument(
        "--reproj-px", type=float, default=10.0,
        help="session: views disagree when the 3-D point reprojects farther than this from a view's box",
    )  # fmt: skip
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
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(console)
    try:
        ap = argparse.ArgumentParser(prog="deepbehavior")
        register(ap.add_subparsers(dest="cmd", required=True))
        args = ap.parse_args(argv)
        return int(args.func(args))
    finally:  # called again in one process (tests): no handler left on a stale stderr
        root.removeHandler(console)


if __name__ == "__main__":
    raise SystemExit(main())
