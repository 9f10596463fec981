"""The keypoint model: DeepLabCut labels, targets and decoding, augmentation that keeps points on their
pixels, and a short from-scratch training on a handful of real frames that finds the held-out points, runs
through make_runner / ONNX Runtime and the online ROI tracker, and stays dark on crops without the mouse."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from detection import keypoints as kp
from detection.datasets import DatasetError

pytestmark = pytest.mark.slow


@pytest.fixture
def dlc(shared_data: Path) -> Path:
    return shared_data / "dlc-openfield-pranav" / "labeled-data" / "m4s1" / "CollectedData_Pranav.csv"


def test_dlc_points(dlc: Path, tmp_path: Path) -> None:
    ds = kp.load_dlc_points(dlc, skip_missing=True)
    assert ds.names == ["snout", "leftear", "rightear", "tailbase"] and len(ds) == 30
    first = ds.items[dlc.parent / "img0000.png"]
    np.testing.assert_allclose(first[0], (21.521, 265.428))
    two = kp.load_dlc_points(dlc, ["tailbase", "snout"], skip_missing=True)
    assert two.items[dlc.parent / "img0000.png"].shape == (2, 2)
    with pytest.raises(DatasetError, match=r"CollectedData_Pranav\.csv.*'paw' not in the CSV"):
        kp.load_dlc_points(dlc, ["paw"], skip_missing=True)
    with pytest.raises(DatasetError, match=r"img0030\.png"):
        kp.load_dlc_points(dlc)


def test_targets_and_decoding_agree_to_a_fraction_of_a_pixel() -> None:
    pts = np.array([[37.3, 50.8], [90.0, 11.6], [np.nan, np.nan], [300.0, 5.0]])
    hm = kp._targets(pts, 128, sigma_px=3.0)
    assert hm.shape == (4, 32, 32) and hm[2].max() == 0 and hm[3].max() == 0  # unlabeled, outside
    assert hm[0].max() == pytest.approx(1.0)
    got, conf = kp.decode_heatmaps(hm[:2])
    np.testing.assert_allclose(got, pts[:2], atol=0.6)
    assert conf.tolist() == pytest.approx([1.0, 1.0])
    got2, _ = kp.decode_heatmaps(hm[:2], scale=0.5)  # a frame downscaled by 0.5: points in its pixels
    np.testing.assert_allclose(got2, pts[:2] / 0.5, atol=1.2)


def test_search_network_sees_frames_at_their_search_scale() -> None:
    # a whole frame reaches the search network at 160 px on its long side: it is trained down to that scale
    assert kp.search_recipe(kp.Recipe(), 640).scale_min == pytest.approx(0.22)
    r = kp.search_recipe(kp.Recipe(steps=77), 1280)
    assert r.scale_min == pytest.approx(0.9 * 160 / 1280) and r.arch == "lite" and r.steps == 77


def test_augmented_crops_keep_points_on_their_pixels(dlc: Path) -> None:
    ds = kp.load_dlc_points(dlc, skip_missing=True)
    img_path, pts = sorted(ds.items.items())[5]
    img = kp.read_bgr(img_path)
    # plant a bright dot at each labeled point; after the random affine it must sit under the moved point
    marked = img.copy()
    for x, y in pts:
        marked[round(y) - 1 : round(y) + 2, round(x) - 1 : round(x) + 2] = (0, 0, 255)
    r = kp.Recipe(brightness=0, contrast=0, blur_p=0, noise=0)
    rng = np.random.default_rng(0)
    n_checked = 0
    for _ in range(20):
        got = kp._sample_crop(marked, pts, r, rng, negative=False)
        assert got is not None
        crop, p = got
        assert crop.shape == (r.crop, r.crop, 3)
        for x, y in p:
            if np.isfinite(x) and 2 <= x < r.crop - 2 and 2 <= y < r.crop - 2:
                win = crop[round(y) - 1 : round(y) + 2, round(x) - 1 : round(x) + 2]
                assert (win[..., 2].astype(int) - win[..., 0]).max() > 60  # the red dot is there
                n_checked += 1
    assert n_checked >= 20
    neg = kp._sample_crop(img, pts, r, rng, negative=True)
    assert neg is not None and np.isnan(neg[1]).all()


@pytest.mark.slow
def test_short_training_finds_held_out_points(dlc: Path, tmp_path: Path) -> None:
    from detection.online import OnlineDetector
    from detection.runners import inspect_model, make_runner, stored_threshold
    from detection.settings import DetectorOptions

    ds = kp.load_dlc_points(dlc, skip_missing=True)
    keys = sorted(ds.items)
    perm = np.random.default_rng(0).permutation(len(keys))
    train = ds.subset([keys[i] for i in perm[:10]])
    val = ds.subset([keys[i] for i in perm[10:15]])
    test = ds.subset([keys[i] for i in perm[15:]])
    lines: list[str] = []
    model = kp.train_keypoints(
        train, kp.Recipe(steps=200), seed=0, threads=1, progress=lines.append, search=True
    )
    assert len(lines) == 20 and lines[-1].startswith("search network: keypoints: step 200/200")
    runner = kp.TorchKeypointRunner(model, confidence=0.0)
    assert runner.has_search  # whole frames below run coarse to fine
    ev, cv, _ = kp.point_errors(runner, val)
    neg_val = kp.negative_confidences(runner, kp.negative_crops(val, 96))
    model.confidence = kp.pick_point_threshold(ev, cv, neg_val, radius_px=10)
    err, conf, _ = kp.point_errors(runner, test)
    neg = kp.negative_confidences(runner, kp.negative_crops(test, 96, seed=1))
    res = kp.summarize_points(ds.names, err, conf, neg, model.confidence, radius_px=10)
    assert all(r.n == len(test) for r in res)
    assert np.median([r.median_px for r in res]) <= 6.0, [(r.name, r.median_px) for r in res]
    assert sum(r.hits for r in res) >= 0.75 * 4 * len(test), [(r.name, r.hits) for r in res]
    # crops without the mouse: at most one with any point above the stored threshold
    assert int((neg >= model.confidence).any(1).sum()) <= 1, neg.max(0)

    onnx = kp.export_keypoints_onnx(model, tmp_path / "kp.onnx")
    assert kp.is_keypoint_model(onnx) and stored_threshold(onnx) == pytest.approx(model.confidence, rel=1e-5)
    r = make_runner(SimpleNamespace(runner="onnxruntime", model=str(onnx), confidence=None, options={}))
    assert isinstance(r, kp.KeypointOnnxRunner) and r.names == ds.names
    info = inspect_model(SimpleNamespace(runner="onnxruntime", model=str(onnx), confidence=None, options={}))
    assert info.class_names == ds.names and "keypoint" in info.notes[0]
    assert r.confidence == pytest.approx(model.confidence, rel=1e-5)
    frame = kp.read_bgr(sorted(test.items)[0])
    searched: list[tuple[int, ...]] = []
    run_search = r.run_search_raw

    def spy(x: np.ndarray) -> np.ndarray:
        searched.append(x.shape)
        return run_search(x)

    r.run_search_raw = spy  # type: ignore[method-assign]
    r.infer_points([frame[:128, :128]])  # an ROI crop: the fine network alone
    assert searched == []
    r.infer_points([frame])  # a whole frame: the search network on it resized to 160 px, then fine crops
    assert searched == [(1, 3, 128, 160)]
    (p_onnx, c_onnx), (p_torch, c_torch) = r.infer_points([frame])[0], runner.infer_points([frame])[0]
    np.testing.assert_allclose(p_onnx, p_torch, atol=0.05)
    np.testing.assert_allclose(c_onnx, c_torch, atol=1e-3)
    # the online ROI tracker runs it unchanged: a full-frame search, then ROI crops around the best point
    online = OnlineDetector(r, ["top"], DetectorOptions(roi_size=128, search_scale=1.0, track_class=0))
    truth = test.items[sorted(test.items)[0]][0]
    for _ in range(3):
        dets = online.detect([frame])[0]
    assert online.stats["roi"] >= 2
    snout = [d for d in dets if d.class_id == 0]
    assert snout and np.hypot(*(np.array(snout[0].center()) - truth)) < 10


@pytest.mark.slow
def test_train_points_and_evaluate_give_the_same_numbers(
    dlc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``train-points``' own test evaluation and ``detect evaluate`` are one code path: the same frames give
    the same points, confidences and errors; with a calibration, the mm are the pixels times its scale."""
    from analysis.camera import Calibration, camera_ring, save_calibration
    from detection.commands import main as cli

    out = tmp_path / "m"
    rc = cli(
        ["detect", "train-points", str(dlc), str(out), "--steps", "100", "--skip-missing", "--radius", "10"]
    )
    printed = capsys.readouterr().out
    assert rc == 0 and "test split: " in printed and "hits" in printed and "worst frames" in printed
    card = json.loads((out / "keypoints.json").read_text())
    own = json.loads((out / "report" / "report.json").read_text())
    assert (out / "report" / "worst.png").is_file()
    assert sorted(f["image"] for f in own["frames"]) == card["splits"]["test"]

    # two cameras of f = 900 px at 640 px aimed at a point 313.2 mm away
    rig = Calibration({c.name: c for c in camera_ring(2)})
    calib = save_calibration(rig, tmp_path / "rig.calib.yaml")
    ev_dir = tmp_path / "ev"
    args = ["detect", "evaluate", str(out / "keypoints.onnx"), str(dlc), str(ev_dir), "--skip-missing"]
    rc = cli([*args, "--radius", "10", "--calibration", str(calib), "--camera", "cam0"])
    printed = capsys.readouterr().out
    assert rc == 0 and "mm: 0.3480 mm/px = working distance 313.2 mm" in printed, printed
    ev = json.loads((ev_dir / "report.json").read_text())
    assert (ev_dir / "worst.png").is_file()
    assert ev["threshold"] == pytest.approx(card["confidence_threshold"], rel=1e-5)
    by_image = {f["image"]: f for f in ev["frames"]}
    assert len(by_image) == 30
    for f in own["frames"]:
        g = by_image[f["image"]]
        np.testing.assert_allclose(g["confidence"], f["confidence"], atol=1e-6)
        assert [e is None for e in g["error_px"]] == [e is None for e in f["error_px"]]
        for a, b in zip(g["error_px"], f["error_px"]):
            if isinstance(a, float):
                assert a == pytest.approx(b, abs=1e-4)
            else:
                assert a == b  # None (not labeled) or "inf" (missed)
    scale = 300 * math.sqrt(1.09) / 900
    assert ev["mm_per_px"] == pytest.approx(scale, rel=1e-6)
    for p in ev["parts"]:
        if isinstance(p["median_px"], float):
            assert p["median_mm"] == pytest.approx(p["median_px"] * scale)

    # --split test: the frames train-points held out, and the same numbers as its own report
    rc = cli(["detect", "evaluate", str(out / "keypoints.onnx"), str(dlc), str(tmp_path / "t"), "--split",
              "test", "--skip-missing", "--radius", "10"])  # fmt: skip
    assert rc == 0 and f"{len(card['splits']['test'])} frames of the test split" in capsys.readouterr().out
    held = json.loads((tmp_path / "t" / "report.json").read_text())
    assert [f["image"] for f in held["frames"]] == [f["image"] for f in own["frames"]]
    assert held["parts"] == own["parts"]

    # mistakes: one line naming what is wrong, exit 2
    rc = cli(["detect", "train-points", str(dlc), str(tmp_path / "x"), "--steps", "10"])
    assert rc == 2 and "--steps 10: train for at least 20 steps" in capsys.readouterr().err
    rc = cli(["detect", "evaluate", str(out / "keypoints.onnx"), str(dlc.parent), str(ev_dir)])
    err = capsys.readouterr().err
    assert (
        rc == 2 and "keypoint model: DATA is a DeepLabCut CollectedData CSV" in err and "Traceback" not in err
    )
    rc = cli([*args, "--calibration", str(calib)])
    err = capsys.readouterr().err
    assert (
        rc == 2 and "rig.calib.yaml: has cameras cam0, cam1: say which one took the frames (--camera)" in err
    )
