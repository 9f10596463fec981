"""Honest numbers: the train/val/test split, mAP computed the way Ultralytics/COCO compute it (checked
against Ultralytics' own code on the same predictions), the numbers at the operating threshold, the
threshold stored with a model and read by the runner, and export's parity check refusing to pass on
nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from detection import datasets as d
from detection.base import Det, DetectionError
from detection.commands import main as cli
from detection.evaluate import (
    IOU_THRESHOLDS,
    average_precision,
    evaluate_predictions,
    match_detections,
    pick_threshold,
    worst_sheet,
)

HEAD = {"head": ["snout", "leftear", "rightear"]}


@pytest.fixture
def dlc(shared_data: Path) -> Path:
    return shared_data / "dlc-openfield-pranav" / "labeled-data" / "m4s1" / "CollectedData_Pranav.csv"


def _random_case(rng: np.random.Generator, n_true: int, n_pred: int) -> tuple[np.ndarray, np.ndarray]:
    xy = rng.uniform(0, 200, (n_true, 2))
    wh = rng.uniform(20, 60, (n_true, 2))
    true = np.hstack([xy, xy + wh])
    # predictions: jittered copies of true boxes (some good, some poor) and some strays
    src = true[rng.integers(0, n_true, n_pred)]
    jitter = rng.normal(0, rng.uniform(1, 15, (n_pred, 1)), (n_pred, 4))
    pred = src + jitter
    pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2] + 2)
    return true, pred


def test_matching_and_ap_agree_with_ultralytics() -> None:
    """The same predictions through our code and through Ultralytics' match_predictions + ap_per_class."""
    torch = pytest.importorskip("torch")
    from ultralytics.models.yolo.detect.val import DetectionValidator
    from ultralytics.utils.metrics import ap_per_class, box_iou

    v = DetectionValidator.__new__(DetectionValidator)
    v.iouv = torch.linspace(0.5, 0.95, 10)
    rng = np.random.default_rng(3)
    tps, theirs_tp, confs, n_true = [], [], [], 0
    for _ in range(40):
        true, pred = _random_case(rng, int(rng.integers(1, 4)), int(rng.integers(0, 7)))
        conf = rng.uniform(0.01, 1, len(pred))
        order = np.argsort(-conf)
        pred, conf = pred[order], conf[order]
        ours = match_detections(pred, true)
        iou = box_iou(torch.tensor(true, dtype=torch.float32), torch.tensor(pred, dtype=torch.float32))
        zeros_t, zeros_p = torch.zeros(len(true)), torch.zeros(len(pred))
        ref = v.match_predictions(zeros_p, zeros_t, iou).numpy()
        np.testing.assert_array_equal(ours, ref)
        tps.append(ours)
        theirs_tp.append(ref)
        confs.append(conf)
        n_true += len(true)
    tp = np.concatenate(tps)
    conf = np.concatenate(confs)
    ap_ours = average_precision(conf, tp, n_true)
    out = ap_per_class(tp, conf, np.zeros(len(conf)), np.zeros(n_true))
    ap_ref = out[5]  # (nc, 10) AP at IoU 0.5:0.95
    np.testing.assert_allclose(ap_ours, ap_ref[0], atol=1e-9)
    assert 0.2 < ap_ours[0] < 1.0 and ap_ours[-1] < ap_ours[0]  # a case with something to measure
    assert len(IOU_THRESHOLDS) == 10


def test_numbers_at_the_operating_threshold(dlc: Path) -> None:
    ds = d.load_dlc_boxes(dlc, HEAD, skip_missing=True)
    keys = sorted(ds.items)
    preds: dict[Path, list[Det]] = {}
    for i, k in enumerate(keys):
        b = ds.items[k][0]
        if i % 3 == 0:  # a confident box 5 px to the right
            preds[k] = [Det(b.x1 + 5, b.y1, b.x2 + 5, b.y2, 0.9)]
        elif i % 3 == 1:  # only a low-confidence box: missed at 0.5
            preds[k] = [Det(b.x1, b.y1, b.x2, b.y2, 0.2)]
        else:  # a confident box far off
            preds[k] = [Det(b.x1 + 200, b.y1, b.x2 + 200, b.y2, 0.8)]
    empty = keys[0].parent / "does-not-matter.png"
    ds.items[empty] = []  # a frame without the object, with a false positive on it
    preds[empty] = [Det(10, 10, 50, 50, 0.95)]
    d._shape_cache[empty] = (480, 640)
    r = evaluate_predictions(ds, preds, report_conf=0.5, radius_px=10)
    c = r.classes[0]
    n = len(keys)
    n_near = len(range(0, n, 3))
    assert c.n_true == n and c.hits == n_near
    # per-class IoU counts every true box: missed and far-off boxes count 0
    assert c.mean_iou == pytest.approx(r.mean_iou) and c.mean_iou < 0.5
    assert c.tp == n_near and c.n_pred == n_near + len(range(2, n, 3)) + 1
    assert c.n_empty == 1 and c.fp_empty == 1
    assert math.isinf(c.p90_px) and r.frame_errors[str(keys[1])] == math.inf
    assert r.frame_errors[str(keys[0])] == pytest.approx(5.0)
    at_02 = evaluate_predictions(ds, preds, report_conf=0.1, radius_px=10)
    assert at_02.classes[0].hits == n_near + len(range(1, n, 3))
    # the exact low-confidence boxes now count: 0, 5 and 200 px, a third each
    assert at_02.classes[0].median_px == 5.0 and at_02.classes[0].p90_px == 200.0
    # the best-F1 threshold keeps the 0.9 boxes and the 0.2 ones: the middle of (0, 0.2]
    assert r.picked_conf == pytest.approx(0.1)
    js = json.dumps(r.to_json())
    assert '"inf"' in js and "NaN" not in js and "Infinity" not in js


def test_pick_threshold() -> None:
    s = np.array([0.95, 0.9, 0.6, 0.55, 0.3, 0.1])
    ok = np.array([True, True, False, True, False, False])
    # best F1 keeping the first four (any t in (0.3, 0.55]): the middle of that range
    assert pick_threshold(s, ok, n_true=3) == pytest.approx(0.425)
    assert pick_threshold(s, np.zeros(6, bool), n_true=3) is None
    # equal scores are kept or dropped together: both kept, t in (0, 0.5]
    assert pick_threshold(np.array([0.5, 0.5]), np.array([True, False]), 1) == 0.25
    # best F1 (0.8) keeps the first three: t in (0.1, 0.7] -> 0.4
    s2, ok2 = np.array([0.9, 0.8, 0.7, 0.1]), np.array([True, False, True, False])
    assert pick_threshold(s2, ok2, n_true=2, floor=0.0) == pytest.approx(0.4)


def test_split_is_seeded_disjoint_and_stratified(dlc: Path, tmp_path: Path) -> None:
    ds = d.load_dlc_boxes(dlc, HEAD, skip_missing=True)
    # a second "video": the same frames seen through a second folder of links
    other = tmp_path / "video2"
    other.mkdir()
    for k in list(ds.items)[:10]:
        (other / k.name).symlink_to(k)
        ds.items[other / k.name] = ds.items[k]
    a = d.split_dataset(ds, (0.6, 0.2, 0.2), seed=1)
    b = d.split_dataset(ds, (0.6, 0.2, 0.2), seed=1)
    c = d.split_dataset(ds, (0.6, 0.2, 0.2), seed=2)
    assert {s: list(x.items) for s, x in a.items()} == {s: list(x.items) for s, x in b.items()}
    assert {s: sorted(x.items) for s, x in a.items()} != {s: sorted(x.items) for s, x in c.items()}
    sets = [set(x.items) for x in a.values()]
    assert sum(len(s) for s in sets) == len(ds) and len(set.union(*sets)) == len(ds)
    for split in ("train", "val", "test"):  # every video in every split, in proportion
        srcs = [d.source_of(k) for k in a[split].items]
        assert srcs.count(str(other)) >= 1 and srcs.count(str(dlc.parent)) >= 1
    assert len(a["train"]) == pytest.approx(0.6 * len(ds), abs=1)
    with pytest.raises(d.DatasetError, match="--split"):
        d.parse_fractions("0.8,0.2")


def test_split_keeps_neighbouring_frames_together() -> None:
    """Consecutive labeled frames of a video are cut into runs that stay in one split (frame order by the
    number in the name, padded or not), so test frames are not the neighbours of training frames."""
    frames = [Path(f"labeled-data/v1/img{i}.png") for i in range(100)]  # unpadded: img9 before img10
    other = [Path(f"labeled-data/v2/img{i:04d}.png") for i in range(0, 400, 20)]
    sp = d.split_keys(frames + other, (0.7, 0.15, 0.15), seed=4)
    where = {k: s for s, ks in sp.items() for k in ks}
    assert sorted(where) == sorted(frames + other)
    for run in range(10):  # 100 frames in 10 runs of 10
        assert len({where[frames[10 * run + i]] for i in range(10)}) == 1, run
    for s, frac in zip(d.SPLITS, (0.7, 0.15, 0.15)):
        assert len(sp[s]) == pytest.approx(frac * 120, abs=10), s
        assert any(k.parent.name == "v2" for k in sp[s]), s  # every video in every split
    assert d.split_keys(frames + other, (0.7, 0.15, 0.15), seed=4) == sp
    # the object in view in two stretches only (40 frames of 120): every split gets frames with it
    labeled = frames[:20] + frames[60:80]
    for seed in range(5):
        sp = d.split_keys(frames, (0.7, 0.15, 0.15), seed=seed, labeled=labeled)
        for s in d.SPLITS:
            assert any(k in labeled for k in sp[s]) and any(k not in labeled for k in sp[s]), (seed, s)


def test_convert_writes_separate_splits(dlc: Path, tmp_path: Path) -> None:
    out = tmp_path / "y"
    assert cli(["detect", "convert", "--from", "dlc", str(dlc), "--to", "yolo", str(out), "--group",
                "head=snout,leftear,rightear", "--seed", "3", "--skip-missing"]) == 0  # fmt: skip
    text = (out / "data.yaml").read_text()
    assert "train: images/train" in text and "val: images/val" in text and "test: images/test" in text
    names = {s: {p.name.split("_", 1)[1] for p in (out / "images" / s).iterdir()} for s in d.SPLITS}
    assert names["train"] and names["val"] and names["test"]
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"])
    val = d.data_yaml_split(out / "data.yaml", "val")
    assert val is not None and len(val) == len(names["val"])


def test_cli_help_and_errors_name_the_option(
    dlc: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for sub, want in (("convert", "--group"), ("train", "default: 0"), ("evaluate", "--labels")):
        with pytest.raises(SystemExit):
            cli(["detect", sub, "--help"])
        out = capsys.readouterr().out
        assert want in out, (sub, out)
    with pytest.raises(SystemExit):
        cli(["detect", "convert", "--help"])
    assert "required with dlc" in " ".join(capsys.readouterr().out.split())
    rc = cli(["detect", "evaluate", "model.onnx", str(dlc), str(tmp_path / "r"), "--format", "dlc"])
    err = capsys.readouterr().err
    assert rc == 2 and "--format dlc needs at least one --group" in err and "Traceback" not in err


def test_stored_threshold_is_what_the_runner_uses(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from detection.runners import make_runner, resolve_confidence, stored_threshold

    repo = Path(__file__).resolve().parents[2]
    model = tmp_path / "m.onnx"
    model.write_bytes((repo / "detection" / "models" / "paw-yolo11p-96.onnx").read_bytes())
    assert stored_threshold(model) is None and resolve_confidence(None, model) == 0.25
    (tmp_path / "m.json").write_text(json.dumps({"confidence_threshold": 0.137}))
    cfg = SimpleNamespace(runner="onnxruntime", model=str(model), confidence=None, options={})
    assert make_runner(cfg).confidence == pytest.approx(0.137)  # type: ignore[attr-defined]
    cfg.confidence = 0.5  # a configured threshold wins
    assert make_runner(cfg).confidence == pytest.approx(0.5)  # type: ignore[attr-defined]
    (tmp_path / "m.json").write_text(json.dumps({"confidence_threshold": 7}))
    with pytest.raises(DetectionError, match=r"m\.json: confidence_threshold"):
        stored_threshold(model)


def test_parity_with_nothing_compared_fails() -> None:
    from detection.export import Parity

    assert not Parity(15, 0, 1.0, 0.0, 0).ok
    assert Parity(15, 12, 0.999, 0.001, 0).ok


def test_worst_sheet_draws_the_worst_frames(dlc: Path, tmp_path: Path) -> None:
    import cv2

    ds = d.load_dlc_boxes(dlc, HEAD, skip_missing=True)
    keys = sorted(ds.items)
    preds = {
        k: [Det(b.x1 + 3 * i, b.y1, b.x2 + 3 * i, b.y2, 0.9) for b in ds.items[k]] for i, k in enumerate(keys)
    }
    r = evaluate_predictions(ds, preds, 0.5)
    png = worst_sheet(ds, preds, r, tmp_path / "worst.png", n=8)
    im = cv2.imread(str(png))
    assert im is not None and im.shape[1] == 4 * 240 and im.shape[0] == 2 * (240 + 18)


def test_mm_per_px_from_a_calibration(tmp_path: Path) -> None:
    from analysis.camera import Calibration, camera_ring, save_calibration
    from detection.evaluate import mm_per_px

    # three cameras 313.2 mm (300 * sqrt(1 + 0.3^2)) from the point they all look at, f = 900 px at 640 px
    cams = {c.name: c for c in camera_ring(3)}
    calib = save_calibration(Calibration(cams), tmp_path / "rig.calib.yaml")
    dist = 300 * math.sqrt(1 + 0.3**2)
    scale, note = mm_per_px(calib, "cam1", None, 640)
    assert scale == pytest.approx(dist / 900, rel=1e-6)
    assert "313.2 mm" in note and "900.0 px" in note and "cam1" in note
    half, note = mm_per_px(calib, "cam1", None, 320)  # frames resized to half: twice the mm per pixel
    assert half == pytest.approx(2 * scale, rel=1e-6) and "calibrated width 640" in note
    assert mm_per_px(calib, "cam0", 450.0, 640)[0] == pytest.approx(0.5)
    with pytest.raises(DetectionError, match=r"rig\.calib\.yaml: has cameras cam0, cam1, cam2.*--camera"):
        mm_per_px(calib, None, None, 640)
    with pytest.raises(DetectionError, match=r"no camera named 'top'"):
        mm_per_px(calib, "top", None, 640)
    one = save_calibration(Calibration({"cam0": cams["cam0"]}), tmp_path / "one.calib.yaml")
    with pytest.raises(DetectionError, match=r"one\.calib\.yaml: one camera.*--distance-mm"):
        mm_per_px(one, None, None, 640)
    assert mm_per_px(one, None, 900.0, 640)[0] == pytest.approx(1.0)
    (tmp_path / "bad.calib.yaml").write_text("format: something-else\n")
    with pytest.raises(DetectionError, match=r"bad\.calib\.yaml"):
        mm_per_px(tmp_path / "bad.calib.yaml", None, None, 640)


def test_keypoint_numbers_at_the_threshold() -> None:
    from detection.keypoints import summarize_points

    nan, inf = math.nan, math.inf
    # 5 frames x 2 parts: errors (NaN: the part is not labeled there) and peak confidences
    err = np.array([[1.0, nan], [2.0, 3.0], [30.0, 4.0], [5.0, nan], [inf, 50.0]])
    conf = np.array([[0.9, 0.8], [0.9, 0.2], [0.9, 0.9], [0.1, 0.1], [0.9, 0.9]])
    neg = np.array([[0.6, 0.1], [0.2, 0.1], [0.1, 0.1]])
    a, b = summarize_points(["a", "b"], err, conf, neg, threshold=0.5, radius_px=10, mm_per_px=0.1)
    # a: labeled in all 5; reported in 4 (frame 3 under the threshold: a miss), hits frames 0, 1
    assert (a.n, a.hits, a.n_reported, a.n_absent, a.fp_absent) == (5, 2, 4, 0, 0)
    assert a.precision == pytest.approx(2 / 4) and a.recall == pytest.approx(2 / 5)
    assert a.median_px == pytest.approx(30.0) and a.p90_px == inf  # errors 1, 2, 30, inf, inf
    assert a.median_mm == pytest.approx(3.0) and a.fp_negative == 1 and a.n_negative == 3
    # b: labeled in 3 (frame 1 under the threshold), reported on frame 0 where it is not labeled
    assert (b.n, b.hits, b.n_reported, b.n_absent, b.fp_absent) == (3, 1, 2, 2, 1)
    assert b.precision == pytest.approx(1 / 3) and b.recall == pytest.approx(1 / 3)
    assert b.median_px == pytest.approx(50.0) and b.fp_negative == 0


def test_keypoint_worst_frames_and_report(dlc: Path, tmp_path: Path) -> None:
    import cv2

    from detection import keypoints as kp
    from detection.evaluate import worst_frames, write_point_report

    ds = kp.load_dlc_points(dlc, ["snout", "tailbase"], skip_missing=True)
    keys = sorted(ds.items)[:6]
    sub = ds.subset(keys)

    def frame(i: int) -> kp.FramePoints:
        lab = sub.items[keys[i]]
        pts = [[float(x) + i, float(y)] for x, y in lab]
        errs: list[float | None] = [float(i), float(i)]
        if i == 2:  # snout missed
            pts[0], errs[0] = None, math.inf  # type: ignore[call-overload]
        return kp.FramePoints(str(keys[i]), pts, [0.9, 0.9], errs)  # type: ignore[arg-type]

    parts = [kp.PointResult("snout"), kp.PointResult("tailbase")]
    ev = kp.PointEvaluation(parts, [frame(i) for i in range(6)], 0.5, 10.0, 128)
    order = [Path(f.image) for f in worst_frames(ev, 3)]
    assert order == [keys[2], keys[5], keys[4]]
    rep = write_point_report(ev, sub, tmp_path / "r")
    doc = json.loads(rep.read_text())
    assert doc["frames"][2]["error_px"][0] == "inf" and doc["frames"][2]["points"][0] is None
    assert doc["threshold"] == 0.5 and [p["name"] for p in doc["parts"]] == ["snout", "tailbase"]
    im = cv2.imread(str(tmp_path / "r" / "worst.png"))
    assert im is not None and im.shape[:2] == (2 * (240 + 18), 4 * 240)
    # a tile is the frame around its worst keypoint at the frame's own scale (not the frame shrunk)
    from detection.evaluate import _window

    snout = sub.items[keys[2]][0]
    x0, y0, side = _window((480, 640), snout[None], 240)
    assert side == 240 and x0 <= snout[0] - 24 and snout[0] + 24 <= x0 + 240
    frame2 = cv2.imread(str(keys[2]))[y0 : y0 + 240, x0 : x0 + 240]
    assert (np.abs(im[18 : 18 + 240, :240].astype(int) - frame2).max(2) <= 2).mean() > 0.95
