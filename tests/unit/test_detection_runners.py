"""Detector runners, decoding, the online ROI tracker and the bundled paw model (real models, real
synthetic frames)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from detection.base import DetectionError
from detection.evaluate import box_iou
from detection.online import OnlineDetector
from detection.runners import OnnxRuntimeRunner, decode, make_runner, nms, preprocess

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "detection" / "models" / "paw-yolo11p-96"


def _cfg(**kw):
    d = {"runner": "onnxruntime", "model": None, "confidence": 0.25, "options": {}}
    d.update(kw)
    return SimpleNamespace(**d)


def test_bad_model_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"this is not a model")
    with pytest.raises(DetectionError, match=r"garbage\.onnx"):
        make_runner(_cfg(model="garbage.onnx"), base_dir=tmp_path)
    with pytest.raises(DetectionError, match=r"missing\.onnx"):
        make_runner(_cfg(model="missing.onnx"), base_dir=tmp_path)
    with pytest.raises(DetectionError, match=r"garbage\.onnx"):
        make_runner(_cfg(runner="tensorrt", model=str(bad)))  # no TensorRT here, or not a model on a GPU


def _fixed_shape_onnx(path: Path, hw: int) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, hw, hw])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, hw, hw])
    g = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def test_onnx_input_shape_disagreeing_with_config(tmp_path: Path) -> None:
    p = _fixed_shape_onnx(tmp_path / "fixed64.onnx", 64)
    with pytest.raises(DetectionError, match=r"fixed64\.onnx.*input_size 96"):
        make_runner(_cfg(model=str(p), options={"input_size": 96}))
    r = make_runner(_cfg(model=str(p), options={"input_size": 64}))
    assert r.input_size == 64


def test_decode_maps_boxes_back_and_suppresses_duplicates() -> None:
    # two overlapping class-0 candidates, one class-1 candidate, one below threshold; input scale 0.5
    raw = np.zeros((1, 6, 4), np.float32)
    raw[0, :4, 0] = [50, 40, 20, 10]
    raw[0, 4, 0] = 0.9
    raw[0, :4, 1] = [51, 40, 20, 10]
    raw[0, 4, 1] = 0.8
    raw[0, :4, 2] = [50, 40, 20, 10]
    raw[0, 5, 2] = 0.7
    raw[0, :4, 3] = [10, 10, 4, 4]
    raw[0, 4, 3] = 0.1
    dets = decode(raw, [0.5], [(200, 200)], confidence=0.25)[0]
    assert [(d.class_id, round(d.confidence, 2)) for d in dets] == [(0, 0.9), (1, 0.7)]
    assert (dets[0].x1, dets[0].y1, dets[0].x2, dets[0].y2) == pytest.approx((80, 70, 120, 90))
    assert nms(np.array([[0, 0, 10, 10], [20, 20, 30, 30.0]]), np.array([0.5, 0.9]), 0.5) == [1, 0]


def test_preprocess_letterbox_and_bad_frames() -> None:
    x, s = preprocess([np.zeros((460, 448), np.uint8), np.zeros((96, 96, 3), np.uint8)], None)
    assert x.shape == (2, 3, 480, 448) and s == [1.0, 1.0]
    x, s = preprocess([np.zeros((460, 448), np.uint8)], 96)
    assert x.shape == (1, 3, 96, 96) and s[0] == pytest.approx(96 / 460)
    with pytest.raises(DetectionError, match="frame 0"):
        preprocess([np.zeros((10, 10), np.float32)], None)


def _synthetic_sequence(n: int, seed: int = 3):
    from rig.config import SimulationConfig
    from rig.sim.render import SceneRenderer
    from rig.sim.scene import PAW_RADIUS_MM, synthetic_calibration
    from rig.sim.world import FreeRunSchedule, World

    calib = synthetic_calibration()
    rend = {c: SceneRenderer(cam, seed=seed) for c, cam in calib.cameras.items()}
    world = World(SimulationConfig(seed=seed))
    sched = FreeRunSchedule(world, 1.5, 100)
    seq = []
    for i in range(n):
        t = 1.0 + i / 124  # reaches start ~1 s in
        sched.step(t)
        st = world.step(t)
        frames, boxes = [], []
        for r in rend.values():
            img, box = r.render(st.paw_xyz, PAW_RADIUS_MM, st.pellet_xyz)
            frames.append(img.copy())
            boxes.append(box)
        seq.append((frames, boxes))
    return list(rend), seq


def test_gpu_fallback_warns_loudly(caplog: pytest.LogCaptureFixture) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA execution provider present: no fallback to observe")
    r = OnnxRuntimeRunner(
        MODEL.with_suffix(".onnx"), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert r.providers == ["CPUExecutionProvider"]
    assert "GPU FALLBACK" in caplog.text
    caplog.clear()
    try:
        import tensorrt  # noqa: F401
        import torch

        if torch.cuda.is_available():
            pytest.skip("TensorRT and a GPU present: no fallback to observe")
    except ImportError:
        pass
    onnx = str(MODEL.with_suffix(".onnx"))
    r2 = make_runner(_cfg(runner="tensorrt", model=onnx))
    assert r2.name == "onnxruntime" and "GPU FALLBACK" in caplog.text
    with pytest.raises(DetectionError, match="tensorrt"):
        make_runner(_cfg(runner="tensorrt", model=onnx, options={"cpu_fallback": False}))


@pytest.mark.skipif(not MODEL.with_suffix(".onnx").is_file(), reason="bundled paw model not built")
def test_bundled_paw_model_tracks_the_synthetic_paw() -> None:
    runner = make_runner(_cfg(model="detection/models/paw-yolo11p-96.onnx"), base_dir=REPO)
    cams, seq = _synthetic_sequence(120)
    online = OnlineDetector(runner, cams)
    ious = []
    for frames, boxes in seq:
        for d, b in zip(online.detect(frames), boxes):
            ious.append(box_iou((d[0].x1, d[0].y1, d[0].x2, d[0].y2), b) if d and b else 0.0)
    ious_a = np.array(ious)
    assert np.mean(ious_a > 0.5) > 0.95, f"hit rate {np.mean(ious_a > 0.5):.3f}"
    assert np.median(ious_a) > 0.75
    # after the first stereo pair, the ROI crops carry the work: few full-frame searches
    assert online.stats["full_frame_searches"] < 0.1 * len(ious)
    # nothing in an empty scene
    blank = [np.full((460, 448), 60, np.uint8)] * 2
    assert all(not d for d in online.detect(blank))


@pytest.mark.skipif(not MODEL.with_suffix(".pt").is_file(), reason="bundled paw model not built")
def test_onnx_matches_pytorch_on_the_bundled_model() -> None:
    from detection.export import check_parity

    _cams, seq = _synthetic_sequence(20, seed=4)
    frames = [f for fr, _b in seq[::4] for f in fr]
    par = check_parity(MODEL.with_suffix(".pt"), MODEL.with_suffix(".onnx"), frames, input_size=None)
    assert par.boxes >= len(frames) - 1
    assert par.ok, par


@pytest.mark.gpu
def test_tensorrt_engine_matches_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="tensorrt Python package not installed")
    from detection.runners import TensorRTRunner

    trt = TensorRTRunner(MODEL.with_suffix(".onnx"), cache_dir=tmp_path)
    assert trt.engine_path.is_file()
    ort_r = OnnxRuntimeRunner(MODEL.with_suffix(".onnx"), providers=["CPUExecutionProvider"])
    _cams, seq = _synthetic_sequence(10, seed=5)
    for frames, _b in seq:
        a, b = ort_r.infer(frames), trt.infer(frames)
        for da, db in zip(a, b):
            assert len(da) == len(db)
            for x, y in zip(da, db):
                assert box_iou((x.x1, x.y1, x.x2, x.y2), (y.x1, y.y1, y.x2, y.y2)) > 0.95  # FP16
    again = TensorRTRunner(MODEL.with_suffix(".onnx"), cache_dir=tmp_path)  # cached engine reused
    assert again.engine_path == trt.engine_path


def test_tensorrt_engine_cache_is_keyed_by_what_it_was_built_for(tmp_path: Path) -> None:
    """A cached engine is reused only for the same model, GPU, TensorRT, precision and build profile: an
    engine built for batch 8 (the online detector) is not taken where re-detection asks for batch 64."""
    from detection.runners import engine_cache_path

    onnx = MODEL.with_suffix(".onnx")
    base: dict = dict(gpu_name="NVIDIA H200", trt_version="10.0", fp16=True, max_batch=8, max_hw=640)
    ref = engine_cache_path(onnx, tmp_path, **base)
    assert ref == engine_cache_path(onnx, tmp_path, **base)
    for change in ({"max_batch": 64}, {"max_hw": 1280}, {"fp16": False}, {"gpu_name": "A100"}):
        assert engine_cache_path(onnx, tmp_path, **{**base, **change}) != ref, change
    other = tmp_path / "copy.onnx"
    other.write_bytes(onnx.read_bytes() + b"\0")
    assert engine_cache_path(other, tmp_path, **base).name.split("-")[-1] != ref.name.split("-")[-1]
