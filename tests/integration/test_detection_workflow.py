"""The training workflow on real frames (dlc-openfield-pranav: mouse top view, head boxes from the
snout/ear keypoints): label formats, bad input, extraction, a tiny training run whose evaluation numbers
move the right way, hard-frame mining, export parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detection import datasets as d
from detection.commands import main as cli
from detection.evaluate import EvalResult, evaluate, evaluate_predictions, write_report

pytestmark = pytest.mark.slow

HEAD = {"head": ["snout", "leftear", "rightear"]}
REPO = Path(__file__).resolve().parents[2]
NAMES_8 = [f"mouse{i}_{p}" for i in (1, 2) for p in ("body", "nose", "head", "tail")]


@pytest.fixture
def dlc(shared_data: Path) -> Path:
    return shared_data / "dlc-openfield-pranav" / "labeled-data" / "m4s1" / "CollectedData_Pranav.csv"


def test_dlc_keypoints_to_head_boxes(dlc: Path) -> None:
    ds = d.load_dlc_boxes(dlc, HEAD, skip_missing=True, margin_px=8)
    assert len(ds) >= 20 and ds.names == ["head"]
    # this CSV labels an image that is not in the folder: by default that is an error naming both
    with pytest.raises(d.DatasetError, match=r"CollectedData_Pranav\.csv.*img0030\.png"):
        d.load_dlc_boxes(dlc, HEAD)
    sizes = [(b.x2 - b.x1, b.y2 - b.y1) for bs in ds.items.values() for b in bs]
    assert all(16 <= w < 120 and 16 <= h < 120 for w, h in sizes)
    two = d.load_dlc_boxes(
        dlc, {"head": HEAD["head"], "tail": ["tailbase"]}, min_size_px=20, skip_missing=True
    )
    assert two.names == ["head", "tail"] and {b.class_id for bs in two.items.values() for b in bs} == {0, 1}


def test_seed_json_and_yolo_round_trip(dlc: Path, tmp_path: Path) -> None:
    ds = d.load_dlc_boxes(dlc, HEAD, skip_missing=True)
    back = d.load_seed_json(d.save_seed_json(ds, tmp_path / "labels.json"), ["head"])
    assert {k.resolve(): v for k, v in back.items.items()} == {k.resolve(): v for k, v in ds.items.items()}
    d.save_yolo(ds, tmp_path / "y", "train")
    y = d.load_yolo(tmp_path / "y" / "images" / "train", names=["head"])
    a = sorted((b.x1, b.y1, b.x2, b.y2) for bs in ds.items.values() for b in bs)
    b = sorted((b.x1, b.y1, b.x2, b.y2) for bs in y.items.values() for b in bs)
    assert np.allclose(a, b, atol=0.01)


def test_bad_labels_name_the_file_and_item(dlc: Path, tmp_path: Path) -> None:
    img = sorted(dlc.parent.glob("*.png"))[0]
    lab = tmp_path / "l.json"
    for rect, msg in (
        ({"x1": 600, "x2": 700, "y1": 10, "y2": 50}, "outside the 640x480"),
        ({"x1": 50, "x2": 10, "y1": 10, "y2": 50}, "inverted"),
    ):
        lab.write_text(json.dumps([{"image_path": str(img), "rects": [rect]}]))
        with pytest.raises(d.DatasetError, match=rf"l\.json.*{img.name} box 0.*{msg}"):
            d.load_seed_json(lab)
    lab.write_text(json.dumps([{"image_path": "nope.png", "rects": []}]))
    with pytest.raises(d.DatasetError, match=r"nope\.png"):
        d.load_seed_json(lab)
    lab.write_text("[]")
    with pytest.raises(d.DatasetError, match="empty dataset"):
        d.load_seed_json(lab)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(d.DatasetError, match=r"orphan\.txt"):
        d.load_yolo(tmp_path / "images")
    # the CLI turns it into a one-line error and a non-zero exit
    assert cli(["detect", "convert", "--from", "seed", str(lab), "--to", "yolo", str(tmp_path / "o")]) == 2


def test_evaluation_metrics_on_known_predictions(dlc: Path) -> None:
    from detection.base import Det

    ds = d.load_dlc_boxes(dlc, HEAD, skip_missing=True)
    perfect = {k: [Det(b.x1, b.y1, b.x2, b.y2, 0.9, 0) for b in v] for k, v in ds.items.items()}
    shifted = {k: [Det(b.x1 + 30, b.y1, b.x2 + 30, b.y2, 0.9, 0) for b in v] for k, v in ds.items.items()}
    r1, r2 = evaluate_predictions(ds, perfect), evaluate_predictions(ds, shifted)
    # perfect boxes: 0.995, as Ultralytics reports (101-point interpolation, trapezoids to recall 1)
    assert r1.map50 == pytest.approx(0.995) and r1.mean_iou == pytest.approx(1.0)
    assert r2.map50 < 0.5 and r2.classes[0].precision < 0.5 and r2.mean_iou < r1.mean_iou


def test_extract_diverse_frames(shared_data: Path, tmp_path: Path) -> None:
    video = shared_data / "dlc-openfield-pranav" / "videos" / "m3v1mp4.mp4"
    assert cli(["detect", "extract", str(video), str(tmp_path / "x"), "-n", "8", "--stride", "50"]) == 0
    frames = sorted((tmp_path / "x").glob("*.png"))
    assert len(frames) == 8
    idx = [int(p.stem.split("frame")[1]) for p in frames]
    assert len(set(idx)) == 8 and max(idx) - min(idx) > 500  # spread over the video, not a run of frames


@pytest.mark.slow
def test_tiny_training_run_moves_evaluation_the_right_way(
    dlc: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Transfer learning from a user checkpoint (the bundled paw model, by path) to mouse heads on ~20
    real frames for a few epochs, validated and tested on frames it never trained on: held-out mAP50 and
    IoU must rise from the checkpoint's; our mAP agrees with Ultralytics' own val on the same weights and
    images; the threshold picked on val is stored and travels into the ONNX file; a random-init run is the
    seed's comparison (loss/mAP curves in one plot)."""
    from detection.runners import OnnxRuntimeRunner, UltralyticsRunner, stored_threshold
    from detection.train import compare_plot, finish, read_curves, train

    ds = d.load_dlc_boxes(dlc, HEAD, margin_px=20, skip_missing=True)
    parts = d.split_dataset(ds, (0.6, 0.2, 0.2), seed=0)
    for split, sub in parts.items():
        d.save_yolo(sub, tmp_path / "data", split)
    data = d.write_data_yaml(tmp_path / "data", ds.names, {s: s for s in d.SPLITS})
    ckpt = REPO / "detection" / "models" / "paw-yolo11p-96.pt"
    fast = {"imgsz": 320, "batch": 8, "threads": 2, "close_mosaic": 0, "seed": 0}
    lines: list[str] = []
    # 80 epochs: on this split by time (test frames a run the model never saw) 30-45 epochs left the held-out
    # IoU at or below the checkpoint's chance matches; 60-75 measured well above it (0.52-0.55 vs 0.28)
    epochs = 80
    tuned = train(data, ckpt, tmp_path / "runs", epochs=epochs, name="transfer", progress=lines.append,
                  **fast)  # fmt: skip
    assert len(lines) == epochs and lines[-1].startswith(f"transfer: epoch {epochs}/{epochs}"), lines[-3:]
    assert "val mAP50" in lines[-1]
    scratch = train(data, REPO / "detection" / "models" / "paw-yolo11p.yaml", tmp_path / "runs", epochs=3,
                    name="scratch", **fast)  # fmt: skip
    curves = read_curves(tuned.results_csv)
    assert max(curves["metrics/mAP50(B)"][-5:]) > curves["metrics/mAP50(B)"][0]
    val, test = parts["val"], parts["test"]

    def held_out(weights: Path) -> EvalResult:  # at the threshold picked on val, as 'detect train' does
        conf = evaluate(UltralyticsRunner(weights, input_size=320), val).picked_conf or 0.25
        return evaluate(UltralyticsRunner(weights, input_size=320), test, report_conf=conf)

    r_before, r_after = held_out(ckpt), held_out(tuned.weights)
    assert r_after.map50 > r_before.map50 + 0.1, (r_before.map50, r_after.map50)
    assert r_after.mean_iou > r_before.mean_iou + 0.05, (r_before.mean_iou, r_after.mean_iou)
    # the same weights and validation images through Ultralytics' val; our mAP on the very predictions
    # and labels its validator scored (in its letterboxed pixels) must be its mAP
    assert _ultralytics_val_agrees(tuned.weights, data)
    # the threshold picked on val is stored beside the weights; the test split's numbers come with it
    card = finish(tuned.weights, data, imgsz=320, threads=2)
    assert card.path.is_file() and stored_threshold(tuned.weights) == pytest.approx(card.confidence)
    assert 0.001 <= card.confidence < 1 and any("hits" in ln for ln in card.test_lines)
    assert (card.report_dir / "worst.png").is_file() and (card.report_dir / "report.json").is_file()
    assert (
        write_report(r_after, tmp_path / "report").is_file()
        and (tmp_path / "report" / "report.png").is_file()
    )
    assert compare_plot([tuned, scratch], tmp_path / "cmp.png").stat().st_size > 1000
    # mining ranks frames of new video and queues them; export matches PyTorch on real frames
    video = shared_data / "dlc-openfield-pranav" / "videos" / "m3v1mp4.mp4"
    assert cli(["detect", "mine", str(tuned.weights), str(video), str(tmp_path / "mine"), "-n", "5",
                "--stride", "60", "--imgsz", "320"]) == 0  # fmt: skip
    q = json.loads((tmp_path / "mine" / "queue.json").read_text())
    assert 1 <= len(q["frames"]) <= 5 and len(list((tmp_path / "mine").glob("*.png"))) == len(q["frames"])
    onnx = tmp_path / "m.onnx"
    assert cli(["detect", "export", str(tuned.weights), str(onnx), "--imgsz", "320",
                "--frames", str(dlc.parent), "--n-frames", "10"]) == 0  # fmt: skip
    assert stored_threshold(onnx) == pytest.approx(card.confidence, abs=1e-5)
    (tmp_path / "m.json").unlink()  # the threshold is in the ONNX file itself
    assert stored_threshold(onnx) == pytest.approx(card.confidence, abs=1e-5)
    assert OnnxRuntimeRunner(onnx, input_size=320).infer([np.zeros((64, 64, 3), np.uint8)]) is not None
    # the CLI: one epoch, its progress line, then the threshold, the val and test numbers, the report
    capsys.readouterr()
    assert cli(["detect", "train", str(data), str(tmp_path / "cli"), "--model", str(ckpt), "--epochs", "1",
                "--batch", "8", "--seed", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "epoch 1/1" in out and "confidence threshold" in out and "test split:" in out and "hits" in out
    assert (tmp_path / "cli" / "paw-yolo11p-96" / "weights" / "best.json").is_file()


def _ultralytics_val_agrees(weights: Path, data: Path) -> bool:
    from detection.base import Det
    from detection.ultra import configure_offline

    configure_offline()
    from ultralytics.models.yolo.detect import DetectionValidator

    truth = d.BoxDataset(names=["head"])
    preds: dict[Path, list] = {}

    class Capture(DetectionValidator):  # type: ignore[misc]
        def update_metrics(self, out, batch):  # type: ignore[no-untyped-def]
            for si, pred in enumerate(out):
                pb = self._prepare_batch(si, batch)
                pn = self._prepare_pred(pred)
                key = Path(f"{len(truth.items)}-{Path(pb['im_file']).name}")
                truth.items[key] = [d.Box(*map(float, b), int(c)) for b, c in zip(pb["bboxes"], pb["cls"])]
                preds[key] = [Det(*map(float, b), float(f), int(c))
                              for b, f, c in zip(pn["bboxes"], pn["conf"], pn["cls"])]  # fmt: skip
            super().update_metrics(out, batch)

    args = {"model": str(weights), "data": str(data), "split": "val", "imgsz": 320, "batch": 4,
            "conf": 0.001, "iou": 0.5, "max_det": 300, "device": "cpu", "plots": False}  # fmt: skip
    v = Capture(args=args)
    v()
    ours = evaluate_predictions(truth, preds)
    assert len(truth) >= 3 and sum(map(len, preds.values())) > 0
    assert ours.map50 == pytest.approx(v.metrics.box.map50, abs=1e-6), (ours.map50, v.metrics.box.map50)
    assert ours.map50_95 == pytest.approx(v.metrics.box.map, abs=1e-6), (ours.map50_95, v.metrics.box.map)
    return True


def test_multiclass_names_from_config(tmp_path: Path, dlc: Path) -> None:
    names_file = tmp_path / "classes.yaml"
    names_file.write_text("names:\n" + "".join(f"  - {n}\n" for n in NAMES_8))
    ds = d.load_dlc_boxes(dlc, HEAD, skip_missing=True)
    out = tmp_path / "labels.json"
    d.save_seed_json(ds, out)
    assert cli(["detect", "convert", "--from", "seed", str(out), "--to", "yolo", str(tmp_path / "y"),
                "--names-file", str(names_file)]) == 0  # fmt: skip
    text = (tmp_path / "y" / "data.yaml").read_text()
    assert all(f": {n}" in text for n in NAMES_8)
