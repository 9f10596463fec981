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
from detection.evaluate import evaluate, evaluate_predictions, write_report

HEAD = {"head": ["snout", "leftear", "rightear"]}
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
    assert r1.map50 == pytest.approx(1.0) and r1.mean_iou == pytest.approx(1.0)
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
    dlc: Path, shared_data: Path, tmp_path: Path
) -> None:
    from detection.runners import UltralyticsRunner
    from detection.train import compare_plot, read_curves, train

    ds = d.load_dlc_boxes(dlc, HEAD, skip_missing=True, margin_px=10)
    d.save_yolo(ds, tmp_path / "data", "train")
    data = d.write_data_yaml(tmp_path / "data", ds.names, {"train": "train", "val": "train"})
    yaml_ = Path(__file__).resolve().parent.parent / "detection" / "models" / "paw-yolo11p.yaml"
    short = train(data, yaml_, tmp_path / "runs", epochs=1, imgsz=160, batch=8, name="e1", threads=2)
    long = train(data, yaml_, tmp_path / "runs", epochs=30, imgsz=160, batch=8, name="e30", threads=2)
    curves = read_curves(long.results_csv)
    assert curves["train/box_loss"][-1] < 0.8 * curves["train/box_loss"][0]
    r_short = evaluate(UltralyticsRunner(short.weights, confidence=0.01, input_size=160), ds)
    r_long = evaluate(UltralyticsRunner(long.weights, confidence=0.01, input_size=160), ds)
    assert r_long.map50 > r_short.map50 + 0.2, (r_short.map50, r_long.map50)
    assert r_long.mean_iou > r_short.mean_iou
    assert (
        write_report(r_long, tmp_path / "report").is_file() and (tmp_path / "report" / "report.png").is_file()
    )
    assert compare_plot([short, long], tmp_path / "cmp.png").stat().st_size > 1000
    # mining ranks frames; export matches PyTorch on real frames; transfer from the checkpoint trains
    video = shared_data / "dlc-openfield-pranav" / "videos" / "m3v1mp4.mp4"
    assert cli(["detect", "mine", str(long.weights), str(video), str(tmp_path / "mine"), "-n", "5",
                "--stride", "40", "--imgsz", "160"]) == 0  # fmt: skip
    q = json.loads((tmp_path / "mine" / "queue.json").read_text())
    assert 1 <= len(q["frames"]) <= 5 and len(list((tmp_path / "mine").glob("*.png"))) == len(q["frames"])
    frames_dir = dlc.parent
    assert cli(["detect", "export", str(long.weights), str(tmp_path / "m.onnx"), "--imgsz", "160",
                "--frames", str(frames_dir), "--n-frames", "10"]) == 0  # fmt: skip
    tr = train(
        data, long.weights, tmp_path / "runs", epochs=1, imgsz=160, batch=8, name="transfer", threads=2
    )
    r_tr = evaluate(UltralyticsRunner(tr.weights, confidence=0.01, input_size=160), ds)
    assert r_tr.map50 > r_short.map50


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
