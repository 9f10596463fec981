"""Batched re-detection (``rig.redetect.redetect_batched``, the default path of ``reanalyze --detect``)
against the reference path (``redetect``: the online detector per stereo set) on a real simulated session
(crf-12 video, the bundled ONNX model): the same boxes, bit for bit, however the frames are cut into lanes,
whether the lanes start from the online run's detections or from nothing, and through the detector's
lost / skipped-search branches. The GPU path (``device``) is checked against the CPU where CUDA exists.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from detection.base import Det, DetectionError
from detection.runners import DEFAULT_IOU, DEFAULT_MAX_DET, decode, gpu_visible, nms
from rig.errors import InputError, UserError
from rig.reanalyze import Options, reanalyze_session
from rig.redetect import redetect, redetect_batched
from rig.session import load_session
from tests.sessions import run_session

pytestmark = [pytest.mark.slow, pytest.mark.firmware, pytest.mark.timeout(600)]

TIMING = ("t_start_ns", "t_end_ns")  # when the detector ran: the only columns that differ


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory):
    r, s = run_session(tmp_path_factory.mktemp("rec"), "--trials", "1")
    assert r.returncode == 0 and s is not None, r.stderr
    return s.path


def assert_same_detections(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> None:
    assert ref.keys() == got.keys()
    for c, a in ref.items():
        if c in TIMING:
            continue
        b = got[c]
        assert a.shape == b.shape, (c, a.shape, b.shape)
        same = np.array_equal(a, b, equal_nan=True) if a.dtype.kind == "f" else np.array_equal(a, b)
        assert same, f"column {c}: first difference at row {int(np.flatnonzero(a != b)[0])}"


def with_detector(session, **changes):
    """The session with ``pipeline.detector`` changed in memory (what both paths read)."""
    cfg = {**session.config, "pipeline": {**session.config["pipeline"]}}
    cfg["pipeline"]["detector"] = {**cfg["pipeline"]["detector"], **changes}
    return replace(session, config=cfg)


def test_batched_redetection_gives_the_reference_boxes(recorded):
    s = load_session(recorded)
    ref = redetect(s)
    assert len(ref["camera"]) >= sum(int((t["video_index"] >= 0).sum()) for t in s.frames.values())
    default: dict = {}
    assert_same_detections(ref, redetect_batched(s, stats=default))
    assert default["frames"] == len({(c, q) for c, q in zip(ref["camera"], ref["seq"])})
    assert default["crops"] / default["network_calls"] > 4  # batched: many crops per network call
    # short segments: many lane boundaries, some of which do not converge within the next segment and
    # are re-run from the exact track
    short: dict = {}
    assert_same_detections(ref, redetect_batched(s, lanes=5, segment=3, stats=short))
    assert short["boundaries_not_converged"] > 0
    # lanes starting from nothing (no online detections to guess from): a full-frame search first
    cold = replace(s, detections={})
    cold_stats: dict = {}
    assert_same_detections(redetect(cold), redetect_batched(cold, lanes=4, segment=40, stats=cold_stats))
    assert cold_stats["frames_detected_again"] > 0


def test_batched_redetection_through_lost_tracks_and_skipped_searches(recorded):
    """A confidence threshold near the model's typical confidence on the paw (0.85-0.94 here; lower on the
    half-scale full-frame search): the paw is found in some of the frames, so tracks are lost, full-frame
    searches run and, after ``lost_frames`` empty ones, are skipped (``search_every``)."""
    s = with_detector(load_session(recorded), confidence=0.9)
    ref = redetect(s)
    found = ref["n_boxes"] > 0
    assert 0.1 < found.mean() < 0.9
    st: dict = {}
    assert_same_detections(ref, redetect_batched(s, lanes=6, segment=25, stats=st))
    assert st["frames_detected_again"] > 0
    everyframe = with_detector(s, options={**s.config["pipeline"]["detector"]["options"], "roi_size": 0})
    assert_same_detections(redetect(everyframe), redetect_batched(everyframe, lanes=3, segment=50))


def test_reanalysis_records_the_batched_path(recorded, tmp_path):
    import shutil

    p = shutil.copytree(recorded, tmp_path / "s")
    summary = reanalyze_session(p, options=Options(detect=True, analyses=False))
    assert summary["redetection"]["path"].startswith("batched")
    assert summary["redetection"]["frames"] == summary["frames_detected"]
    assert summary["online_valid_also_valid_offline"] >= 0.99
    assert summary["diff_vs_online_mm"]["median"] < 0.1  # the reanalysis tolerance (test_reanalyze.py)
    # a device is part of the options only when it is not the CPU (earlier results stay valid)
    assert Options(detect=True).record() == {"detect": True, "model": None, "analyses": True}
    assert Options(detect=True, device="cuda").record()["device"] == "cuda"
    with pytest.raises(UserError, match="device 'gpu': expected one of cpu, cuda, tensorrt"):
        Options(device="gpu")


def _reference_decode(
    raw: np.ndarray,
    scales: Sequence[float],
    shapes: Sequence[tuple[int, int]],
    confidence: float,
    iou: float = DEFAULT_IOU,
    max_det: int = DEFAULT_MAX_DET,
) -> list[list[Det]]:
    """The plain per-frame decoder (what detection.runners.decode replaced): the reference it must match."""
    if raw.ndim != 3 or raw.shape[1] < 5:
        raise DetectionError(f"unexpected model output shape {raw.shape}; expected (B, 4 + classes, N)")
    if raw.shape[1] == 5:  # one class (the paw models): its score is the confidence
        cls_all = None
        conf_all = raw[:, 4, :]
    else:
        cls_all = raw[:, 4:, :].argmax(1)  # (B, N)
        conf_all = np.take_along_axis(raw[:, 4:, :], cls_all[:, None, :], 1)[:, 0, :]
    out: list[list[Det]] = []
    for b in range(raw.shape[0]):
        sel = np.flatnonzero(conf_all[b] >= confidence)
        if sel.size == 0:
            out.append([])
            continue
        cx, cy, w, h = raw[b, :4][:, sel].astype(np.float64)
        hh, ww = shapes[b]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1) * (1.0 / scales[b])
        np.clip(boxes, 0, [ww, hh, ww, hh], out=boxes)
        s = conf_all[b, sel]
        c = np.zeros(sel.size, np.int64) if cls_all is None else cls_all[b, sel]
        # class-aware NMS by offsetting classes apart
        keep = nms(boxes if cls_all is None else boxes + c[:, None] * 1e5, s, iou)[:max_det]
        bl, sl, cl = boxes.tolist(), s.tolist(), c.tolist()
        out.append([Det(bl[k][0], bl[k][1], bl[k][2], bl[k][3], sl[k], cl[k]) for k in keep])
    return out


@pytest.mark.parametrize("classes", [1, 3])
def test_decode_gives_the_per_frame_reference_boxes(classes):
    """Random head outputs with many overlapping candidates per frame, some frames with none or one."""
    rng = np.random.default_rng(classes)
    b, n = 12, 300
    raw = np.zeros((b, 4 + classes, n), np.float32)
    raw[:, 0:2] = rng.uniform(0, 64, (b, 2, n))
    raw[:, 2:4] = rng.uniform(2, 30, (b, 2, n))
    raw[:, 4:] = rng.uniform(0, 1, (b, classes, n)) ** 6  # few above the threshold
    raw[3, 4:] = 0.0  # a frame with no candidate
    raw[5, 4:] = 0.0
    raw[5, 4, 7] = 0.9  # a frame with one
    scales = [1.0, 0.5] * (b // 2)
    shapes = [(64, 64), (40, 50)] * (b // 2)
    for conf, iou, max_det in ((0.25, 0.5, 10), (0.05, 0.3, 3), (0.5, 0.7, 300)):
        want = _reference_decode(raw, scales, shapes, conf, iou, max_det)
        got = decode(raw, scales, shapes, conf, iou, max_det)
        assert got == want
        assert any(len(d) > 1 for d in want) and want[3] == [] and len(want[5]) == 1
        assert all(isinstance(d, Det) for dets in got for d in dets)


def test_gpu_device_without_a_gpu_is_one_clear_error(recorded):
    if gpu_visible():
        pytest.skip("an NVIDIA GPU is visible here: the GPU test below runs instead")
    s = load_session(recorded)
    for device in ("cuda", "tensorrt"):
        with pytest.raises(InputError, match=f"device '{device}': no NVIDIA GPU visible"):
            redetect_batched(s, device=device)


def test_gpu_decoding_gives_the_cpu_frames(recorded, caplog):
    """The GPU reader yields what ``Session.read_frames`` does: NVDEC where FFmpeg has a CUDA device (H.264
    decoding is exact), else (as here without a GPU) FFmpeg on the CPU, said in the log."""
    from rig.redetect import _gpu_frames

    s = load_session(recorded)
    cam = next(iter(s.frames))
    with caplog.at_level("INFO", logger="rig.redetect"):
        got = list(_gpu_frames(s, cam))
    want = list(s.read_frames(cam))
    assert [r for r, _ in got] == [r for r, _ in want]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, want))
    said = "decoding on the" if gpu_visible() else "no GPU decoding"  # GPU: NVDEC, or the CPU if it cannot
    assert said in caplog.text, caplog.text


@pytest.mark.gpu
@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_gpu_batched_redetection_matches_the_cpu(recorded, device):
    """On a GPU (ONNX Runtime's CUDA provider, or a TensorRT FP16 engine; NVDEC decoding where FFmpeg has
    it) the boxes are the CPU's within the network's rounding: the same frames, nearly always the same
    box count, box edges within a pixel."""
    import onnxruntime as ort

    if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    if device == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        pytest.skip("the tensorrt package is not installed")
    s = load_session(recorded)
    cpu = redetect_batched(s)
    st: dict = {}
    gpu = redetect_batched(s, device=device, stats=st)
    assert st["device"] == device and st["frames"] > 0
    key = lambda d: list(zip(d["camera"].tolist(), d["seq"].tolist()))  # noqa: E731
    assert sorted(set(key(gpu))) == sorted(set(key(cpu)))
    first = {}
    for i, k in enumerate(key(gpu)):
        first.setdefault(k, i)
    ref = {}
    for i, k in enumerate(key(cpu)):
        ref.setdefault(k, i)
    gi = np.array([first[k] for k in ref])
    ci = np.array(list(ref.values()))
    assert np.mean(gpu["n_boxes"][gi] == cpu["n_boxes"][ci]) > 0.98
    both = (gpu["n_boxes"][gi] > 0) & (cpu["n_boxes"][ci] > 0)
    d = np.abs(np.stack([gpu[c][gi][both] - cpu[c][ci][both] for c in ("x1", "y1", "x2", "y2")], 1))
    assert np.median(d) < 0.25 and np.percentile(d, 99) < 1.0, (np.median(d), np.percentile(d, 99))
