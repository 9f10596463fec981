"""Detector runners: ONNX Runtime (CPU; CUDA / TensorRT execution providers when present), a TensorRT
engine built from the ONNX file (FP16, cached), and Ultralytics (PyTorch). All share one YOLO
pre/post-processing: letterbox to a multiple of 32, raw head output ``(B, 4 + nc, N)`` decoded and NMS'd
in numpy, boxes mapped back to the input frame's pixels.

Heavy imports (onnxruntime, tensorrt, torch/ultralytics) are lazy: importing this module is cheap.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detection.base import Det, DetectionError, Runner
from detection.settings import DetectorOptions, DetectorSettings

log = logging.getLogger(__name__)

STRIDE = 32
PAD_VALUE = 114
DEFAULT_IOU = 0.5
DEFAULT_MAX_DET = 10


# -- shared YOLO pre/post-processing --------------------------------------------------------------


def letterbox_shape(h: int, w: int, size: int | None) -> tuple[float, int, int]:
    """(scale, padded H, padded W) for an (h, w) image: scale so the long side is ``size`` (None: 1),
    then pad right/bottom to a multiple of 32."""
    s = 1.0 if size is None else size / max(h, w)
    nh, nw = round(h * s), round(w * s)
    return s, -(-nh // STRIDE) * STRIDE, -(-nw // STRIDE) * STRIDE


def preprocess(images: Sequence[np.ndarray], size: int | None) -> tuple[np.ndarray, list[float]]:
    """Batch of (H, W) gray or (H, W, 3) BGR uint8 frames -> (B, 3, Hp, Wp) float32 in [0, 1] and the
    per-frame scale. Frames of one batch are padded to the largest padded shape."""
    if not images:
        raise DetectionError("empty batch")
    shapes = [letterbox_shape(im.shape[0], im.shape[1], size) for im in images]
    hp = max(s[1] for s in shapes)
    wp = max(s[2] for s in shapes)
    out = np.full((len(images), 3, hp, wp), PAD_VALUE / 255.0, np.float32)
    scales = []
    for i, (im, (s, _h, _w)) in enumerate(zip(images, shapes)):
        if im.dtype != np.uint8 or im.ndim not in (2, 3):
            raise DetectionError(f"frame {i}: expected (H, W) or (H, W, 3) uint8, got {im.shape} {im.dtype}")
        if s != 1.0:
            im = cv2.resize(
                im, (round(im.shape[1] * s), round(im.shape[0] * s)), interpolation=cv2.INTER_AREA
            )
        f = im.astype(np.float32) * (1.0 / 255.0)
        h, w = f.shape[:2]
        if f.ndim == 2:
            out[i, :, :h, :w] = f
        else:  # BGR -> RGB, as Ultralytics trains
            out[i, :, :h, :w] = f[:, :, ::-1].transpose(2, 0, 1)
        scales.append(s)
    return out, scales


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy NMS: (N, 4) x1y1x2y2, (N,) scores -> kept indices, best first."""
    order = np.argsort(-scores)
    keep: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        ov = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[ov <= iou]
    return keep


def decode(
    raw: np.ndarray,
    scales: Sequence[float],
    shapes: Sequence[tuple[int, int]],
    confidence: float,
    iou: float = DEFAULT_IOU,
    max_det: int = DEFAULT_MAX_DET,
) -> list[list[Det]]:
    """YOLO head output (B, 4 + nc, N) (cx, cy, w, h in input pixels, then class scores) -> boxes per
    frame in that frame's pixels, class-aware NMS, clipped to the frame (H, W) in ``shapes``. The
    thresholding, box arithmetic and clipping are done once over the whole batch; only NMS runs per frame,
    on that frame's few candidates (a large batch of small crops costs little more than its NMS)."""
    if raw.ndim != 3 or raw.shape[1] < 5:
        raise DetectionError(f"unexpected model output shape {raw.shape}; expected (B, 4 + classes, N)")
    if raw.shape[1] == 5:
        cls_all = None
        conf_all = raw[:, 4, :]
    else:
        cls_all = raw[:, 4:, :].argmax(1)
        conf_all = np.take_along_axis(raw[:, 4:, :], cls_all[:, None, :], 1)[:, 0, :]
    out: list[list[Det]] = [[] for _ in range(raw.shape[0])]
    b_idx, n_idx = np.nonzero(conf_all >= confidence)  # by frame, then anchor: decode's order
    if b_idx.size == 0:
        return out
    cx, cy, w, h = raw[b_idx, :4, n_idx].T.astype(np.float64)
    inv = 1.0 / np.asarray(scales, np.float64)[b_idx]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1) * inv[:, None]
    hw = np.asarray(shapes, np.float64)[b_idx]
    np.clip(boxes, 0, hw[:, [1, 0, 1, 0]], out=boxes)
    s = conf_all[b_idx, n_idx]
    c = np.zeros(b_idx.size, np.int64) if cls_all is None else cls_all[b_idx, n_idx]
    bl, sl, cl = boxes.tolist(), s.tolist(), c.tolist()
    starts = np.flatnonzero(np.r_[True, b_idx[1:] != b_idx[:-1]])
    ends = np.r_[starts[1:], b_idx.size]
    for a, e in zip(starts.tolist(), ends.tolist()):
        if e - a == 1:
            keep = [0]
        else:
            bb = boxes[a:e] if cls_all is None else boxes[a:e] + c[a:e, None] * 1e5
            keep = nms(bb, s[a:e], iou)
        out[int(b_idx[a])] = [
            Det(bl[a + k][0], bl[a + k][1], bl[a + k][2], bl[a + k][3], sl[a + k], cl[a + k])
            for k in keep[:max_det]
        ]
    return out


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_model_file(path: Path, suffixes: tuple[str, ...]) -> Path:
    if not path.is_file():
        raise DetectionError(f"model file {path} does not exist")
    if path.suffix.lower() not in suffixes:
        raise DetectionError(f"model file {path}: expected a {'/'.join(suffixes)} file")
    return path


class YoloRunner(Runner):
    """Shared letterbox -> raw network -> decode path; subclasses implement :meth:`run_raw`."""

    confidence: float = 0.25
    iou: float = DEFAULT_IOU
    input_size: int | None = None
    max_det: int = DEFAULT_MAX_DET
    max_batch: int | None = None  # the most frames one run_raw call takes (None: any)

    def infer(self, images: Sequence[np.ndarray]) -> list[list[Det]]:
        x, scales = preprocess(images, self.input_size)
        raw = self.run_raw(x)
        shapes = [im.shape[:2] for im in images]
        return decode(raw, scales, shapes, self.confidence, self.iou, self.max_det)

    def infer_batched(self, images: Sequence[np.ndarray], batch: int = 64) -> list[list[Det]]:
        """:meth:`infer` for many frames of one shape, ``batch`` (at most :attr:`max_batch`) per network
        call, boxes decoded by :func:`decode`. Frames of one shape are letterboxed alone exactly
        as in a batch, so each frame's boxes are :meth:`infer`'s wherever the network's output does not
        depend on the batch (ONNX Runtime on the CPU: bit for bit; FP16 on a GPU: within its rounding)."""
        step = max(1, min(batch, self.max_batch or batch))
        out: list[list[Det]] = []
        for i in range(0, len(images), step):
            part = images[i : i + step]
            x, scales = preprocess(part, self.input_size)
            raw = self.run_raw(x)
            shapes = [im.shape[:2] for im in part]
            out += decode(raw, scales, shapes, self.confidence, self.iou, self.max_det)
        return out

    @abc.abstractmethod
    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 in [0, 1] -> raw head output (B, 4 + nc, N)."""


# -- ONNX Runtime ------------------------------------------------------------------------------------


class OnnxRuntimeRunner(YoloRunner):
    """ONNX Runtime. ``providers``: ``None`` = the best available (TensorRT, CUDA, CPU) or a list of names.
    Warns loudly when a requested GPU provider is not what the session ended up with."""

    name = "onnxruntime"

    def __init__(
        self,
        model: str | os.PathLike[str],
        confidence: float = 0.25,
        input_size: int | None = None,
        threads: int = 1,
        providers: Sequence[str] | None = None,
        iou: float = DEFAULT_IOU,
    ):
        import onnxruntime as ort

        self.path = _check_model_file(Path(model), (".onnx",))
        self.confidence, self.iou, self.input_size = confidence, iou, input_size
        avail = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]
        wanted = list(providers)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # worker threads sleep between runs instead of spinning: the detector may run at real-time
        # priority (pipeline.realtime), where a spinning thread would hold a CPU from everything else
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(self.path), so, providers=[p for p in wanted if p in avail]
            )
        except Exception as e:
            why = str(e).split("failed:")[-1].strip() or type(e).__name__
            raise DetectionError(f"model file {self.path} is not a loadable ONNX model: {why}") from e
        used = self.session.get_providers()
        gpu_wanted = [p for p in wanted if p != "CPUExecutionProvider"]
        if gpu_wanted and not any(p in used for p in gpu_wanted):
            log.warning(
                "!!! GPU FALLBACK: ONNX Runtime asked for %s but runs on %s (%s): expect CPU speed !!!",
                gpu_wanted, used, self.path,
            )  # fmt: skip
        self.providers = used
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = list(inp.shape)
        self._check_shape()

    def _check_shape(self) -> None:
        shp = self.input_shape
        if len(shp) != 4 or (isinstance(shp[1], int) and shp[1] != 3):
            raise DetectionError(f"model file {self.path}: input shape {shp} is not (B, 3, H, W)")
        fixed = [d for d in shp[2:] if isinstance(d, int)]
        if self.input_size is not None and fixed and any(d != self.input_size for d in fixed):
            raise DetectionError(
                f"model file {self.path}: ONNX input shape {shp} disagrees with the configured "
                f"input_size {self.input_size} (options.input_size)"
            )
        if self.input_size is None and len(fixed) == 2 and fixed[0] == fixed[1]:
            self.input_size = fixed[0]  # fixed-shape model: letterbox to it
        self.fixed_batch = shp[0] if isinstance(shp[0], int) else None

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 -> raw head output (B, 4 + nc, N)."""
        if self.fixed_batch is not None and x.shape[0] != self.fixed_batch:
            return np.concatenate([self.run_raw(x[i : i + 1]) for i in range(x.shape[0])])
        return np.asarray(self.session.run(None, {self.input_name: x})[0])


# -- Ultralytics (PyTorch) ---------------------------------------------------------------------------


class UltralyticsRunner(YoloRunner):
    """Ultralytics YOLO in PyTorch (``.pt`` checkpoint or ``.yaml`` for random init). Runs the bare
    network and decodes with the same numpy code as the ONNX runners, so boxes are comparable."""

    name = "ultralytics"

    def __init__(
        self,
        model: str | os.PathLike[str],
        confidence: float = 0.25,
        input_size: int | None = None,
        threads: int = 1,
        device: str = "cpu",
        iou: float = DEFAULT_IOU,
    ):
        from detection.ultra import configure_offline

        configure_offline()
        import torch

        self.path = _check_model_file(Path(model), (".pt", ".yaml", ".yml"))
        self.confidence, self.iou, self.input_size = confidence, iou, input_size
        if device == "cpu":
            torch.set_num_threads(threads)
        elif not torch.cuda.is_available():
            log.warning(
                "!!! GPU FALLBACK: Ultralytics asked for %s but CUDA is not available: CPU !!!", device
            )
            device = "cpu"
        from ultralytics import YOLO  # type: ignore[attr-defined]

        try:
            self.yolo = YOLO(str(self.path))
        except Exception as e:
            raise DetectionError(f"model file {self.path} is not a loadable Ultralytics model: {e}") from e
        self.device = device
        self.net = self.yolo.model.to(device).eval()  # type: ignore[union-attr]
        self.names: dict[int, str] = dict(self.yolo.names)
        self._torch = torch

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            y = self.net(self._torch.from_numpy(x).to(self.device))
        y = y[0] if isinstance(y, (list, tuple)) else y
        return np.asarray(y.float().cpu().numpy())


# -- TensorRT ----------------------------------------------------------------------------------------


class TensorRTUnavailable(DetectionError):
    """No tensorrt package or no CUDA GPU on this machine."""


def engine_cache_path(
    onnx_path: Path,
    cache_dir: Path,
    gpu_name: str,
    trt_version: str,
    fp16: bool,
    max_batch: int = 8,
    max_hw: int = 640,
) -> Path:
    """Cache file name keyed by the ONNX file's hash, the GPU, the TensorRT version and what the engine is
    built for (precision, batch and image size profile): an engine built for batch 8 is never reused
    where batch 64 is asked for."""
    what = f"{file_hash(onnx_path)}|{gpu_name}|{trt_version}|fp16={fp16}|batch={max_batch}|hw={max_hw}"
    key = hashlib.sha256(what.encode()).hexdigest()
    return cache_dir / f"{onnx_path.stem}-{key[:16]}.engine"


class TensorRTRunner(YoloRunner):
    """A TensorRT engine built from the ONNX file (FP16 by default) and cached next to it (or in
    ``cache_dir``); input shapes from ``min_hw``..``max_hw`` with batch 1..``max_batch``. Needs the
    ``tensorrt`` Python package and a CUDA GPU; torch (CUDA) holds the device buffers."""

    name = "tensorrt"

    def __init__(
        self,
        model: str | os.PathLike[str],
        confidence: float = 0.25,
        input_size: int | None = None,
        fp16: bool = True,
        max_batch: int = 8,
        max_hw: int = 640,
        cache_dir: str | os.PathLike[str] | None = None,
        iou: float = DEFAULT_IOU,
    ):
        self.path = _check_model_file(Path(model), (".onnx",))
        try:
            import tensorrt as trt
            import torch
        except ImportError as e:
            raise TensorRTUnavailable(
                f"runner 'tensorrt' needs the tensorrt package ({e}); model {self.path}"
            ) from e
        if not torch.cuda.is_available():
            raise TensorRTUnavailable(f"runner 'tensorrt' needs a CUDA GPU; none visible (model {self.path})")
        self._torch, self.trt = torch, trt
        self.max_batch = max_batch  # the engine's optimization profile
        self.confidence, self.iou, self.input_size = confidence, iou, input_size
        self.logger = trt.Logger(trt.Logger.WARNING)
        cache = Path(cache_dir) if cache_dir else self.path.parent / ".trt-cache"
        cache.mkdir(parents=True, exist_ok=True)
        gpu = torch.cuda.get_device_name(0)
        self.engine_path = engine_cache_path(self.path, cache, gpu, trt.__version__, fp16, max_batch, max_hw)
        if not self.engine_path.is_file():
            self._build(fp16, max_batch, max_hw)
        runtime = trt.Runtime(self.logger)
        self.engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise DetectionError(f"TensorRT could not load engine {self.engine_path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]

    def _build(self, fp16: bool, max_batch: int, max_hw: int) -> None:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(self.path.read_bytes()):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise DetectionError(f"TensorRT cannot parse {self.path}: {errs}")
        config = builder.create_builder_config()
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        inp = network.get_input(0)
        prof = builder.create_optimization_profile()
        opt = self.input_size or 96
        prof.set_shape(inp.name, (1, 3, 32, 32), (2, 3, opt, opt), (max_batch, 3, max_hw, max_hw))
        config.add_optimization_profile(prof)
        blob = builder.build_serialized_network(network, config)
        if blob is None:
            raise DetectionError(f"TensorRT failed to build an engine from {self.path}")
        self.engine_path.write_bytes(bytes(blob))
        log.info("built TensorRT engine %s", self.engine_path)

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        xin = torch.from_numpy(x).cuda()
        self.context.set_input_shape(self.input_name, tuple(xin.shape))
        oshape = tuple(self.context.get_tensor_shape(self.output_name))
        out = torch.empty(oshape, dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self.input_name, xin.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return np.asarray(out.cpu().numpy())


# -- the model's own confidence threshold -------------------------------------------------------------

DEFAULT_CONFIDENCE = 0.25
THRESHOLD_KEY = "confidence_threshold"  # in the model's sidecar JSON and in an exported ONNX's metadata


def sidecar_path(model: str | os.PathLike[str]) -> Path:
    """``best.pt`` -> ``best.json``: the model's card (threshold picked on validation, its evaluation)."""
    return Path(model).with_suffix(".json")


def stored_threshold(model: str | os.PathLike[str]) -> float | None:
    """The confidence threshold stored with a model (picked on its validation split by ``detect train``):
    from an ONNX file's metadata, else from its sidecar JSON (:func:`sidecar_path`); None when neither
    has one."""
    import json

    path = Path(model)
    if path.suffix.lower() == ".onnx" and path.is_file():
        try:
            import onnx

            meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            if THRESHOLD_KEY in meta:
                return float(meta[THRESHOLD_KEY])
        except Exception as e:  # a broken file is reported by the runner that loads it
            log.debug("no metadata read from %s: %s", path, e)
    card = sidecar_path(path)
    if card.is_file():
        try:
            v = json.loads(card.read_text()).get(THRESHOLD_KEY)
        except (ValueError, AttributeError, OSError) as e:
            raise DetectionError(f"{card}: not a readable model card ({e})") from None
        if v is not None:
            if not isinstance(v, int | float) or not 0 <= v <= 1:
                raise DetectionError(f"{card}: {THRESHOLD_KEY}: expected a number in [0, 1], got {v!r}")
            return float(v)
    return None


def resolve_confidence(confidence: float | None, model: str | os.PathLike[str]) -> float:
    """The threshold a runner uses: the configured one, else the model's stored one, else 0.25."""
    if confidence is not None:
        return float(confidence)
    stored = stored_threshold(model)
    if stored is None:
        log.info("%s: no stored confidence threshold; using %.2f", model, DEFAULT_CONFIDENCE)
        return DEFAULT_CONFIDENCE
    log.info("%s: confidence threshold %.3f (stored with the model)", model, stored)
    return stored


# -- factory -----------------------------------------------------------------------------------------


def make_runner(dc: DetectorSettings, base_dir: str | os.PathLike[str] | None = None) -> Runner:
    """Build the runner a detector's settings name: ``dc.runner``, ``dc.model`` (relative paths are resolved
    against ``base_dir``, the config file's folder), ``dc.confidence`` and ``dc.options`` (input_size,
    threads, providers, iou, fp16, max_batch, cache_dir, cpu_fallback, device; the ROI options are read by
    :mod:`detection.online`). The rig's ``pipeline.detector`` config is a :class:`DetectorSettings`."""
    if not dc.model:
        raise DetectionError(f"runner {dc.runner!r} needs a 'model' file")
    path = Path(dc.model)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    opts = DetectorOptions.from_options(dc.options)
    conf = resolve_confidence(dc.confidence, path)
    common: dict[str, Any] = {"confidence": conf, "input_size": opts.input_size, "iou": opts.iou}
    providers = list(opts.providers) if opts.providers is not None else None
    from detection.keypoints import KeypointOnnxRunner, is_keypoint_model

    if dc.runner in ("onnxruntime", "tensorrt") and is_keypoint_model(path):
        if dc.runner == "tensorrt":
            log.warning(
                "%s: a keypoint model runs in ONNX Runtime (CUDA when present), not a TensorRT engine", path
            )
        return KeypointOnnxRunner(path, conf, opts.input_size, opts.threads, providers)
    if dc.runner == "onnxruntime":
        return OnnxRuntimeRunner(path, threads=opts.threads, providers=providers, **common)
    if dc.runner == "ultralytics":
        return UltralyticsRunner(path, threads=opts.threads, device=opts.device, **common)
    if dc.runner == "tensorrt":
        try:
            return TensorRTRunner(
                path, fp16=opts.fp16, max_batch=opts.max_batch, cache_dir=opts.cache_dir, **common
            )
        except TensorRTUnavailable as e:
            if not opts.cpu_fallback:
                raise
            log.warning("!!! GPU FALLBACK: %s; running ONNX Runtime on the CPU instead !!!", e)
            return OnnxRuntimeRunner(path, threads=opts.threads, providers=providers, **common)
    raise DetectionError(f"runner {dc.runner!r} has no model runner (onnxruntime, tensorrt, ultralytics)")


# -- checking a model before a session ---------------------------------------------------------------

TENSORRT_PLAN_MAGIC = b"ftrt"


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`inspect_model` learnt of a model file: enough to print and to trust it will load."""

    path: Path
    kind: str  # "onnx" or "pytorch"
    input_shape: list[Any] = field(
        default_factory=list
    )  # the ONNX input, e.g. ['batch', 3, 'height', 'width']
    input_size: int | None = None  # what the runner letterboxes to (None: native resolution)
    trained_size: str = ""  # the exporter's 'imgsz', when the file says
    class_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def tensorrt_engine_header(data: bytes) -> bool:
    """Whether ``data`` (a file's first bytes) start a serialized TensorRT engine: a plan (``ftrt``), or an
    Ultralytics ``.engine`` (4-byte little-endian length, JSON metadata, then the plan)."""
    if data.startswith(TENSORRT_PLAN_MAGIC):
        return True
    if len(data) >= 8:
        n = int.from_bytes(data[:4], "little")
        return 0 < n < len(data) - 4 and data[4 + n : 8 + n] == TENSORRT_PLAN_MAGIC
    return False


def gpu_visible() -> bool:
    """An NVIDIA GPU the driver shows (no CUDA library is loaded to find out)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def _class_names(meta: dict[str, str], n_outputs: Any) -> list[str]:
    import ast

    try:
        names = ast.literal_eval(meta.get("names", ""))
    except (ValueError, SyntaxError):
        names = None
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, list | tuple):
        return [str(n) for n in names]
    if isinstance(n_outputs, int) and n_outputs > 4:
        return [f"class {i}" for i in range(n_outputs - 4)]
    return []


def inspect_model(dc: DetectorSettings, base_dir: str | os.PathLike[str] | None = None) -> ModelInfo:
    """Check, without a GPU and without running a session, that the model ``dc`` names exists and loads in
    its runner: an ONNX file is loaded in ONNX Runtime on the CPU (the runner 'tensorrt' builds its engine
    from that very file) and run once on a blank frame; a PyTorch checkpoint is recognised by its format.
    A serialized TensorRT engine is recognised by its header and refused (the runner takes the ONNX file).
    DetectionError names the file and what is wrong."""
    import numpy as np

    if not dc.model:
        raise DetectionError(f"runner {dc.runner!r} needs a 'model' file")
    path = Path(dc.model).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(os.path.normpath(Path(base_dir) / path))
    if not path.exists():
        raise DetectionError(f"{path}: model file not found")
    if not path.is_file():
        raise DetectionError(f"{path}: is a folder, expected a model file")
    opts = DetectorOptions.from_options(dc.options)
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    gpu = gpu_visible()
    if tensorrt_engine_header(head):
        raise DetectionError(
            f"{path}: a serialized TensorRT engine (built for one GPU and TensorRT version); runner "
            f"{dc.runner!r} takes the ONNX model (runner 'tensorrt' builds and caches its engine from it)"
            + ("" if gpu else "; and no NVIDIA GPU is visible on this machine")
        )
    if dc.runner == "ultralytics":
        import zipfile

        if path.suffix.lower() == ".pt" and not zipfile.is_zipfile(path):
            raise DetectionError(f"{path}: not a PyTorch checkpoint (a .pt file is a zip archive)")
        if path.suffix.lower() not in (".pt", ".yaml", ".yml"):
            raise DetectionError(f"{path}: runner 'ultralytics' expects a .pt checkpoint or a .yaml model")
        return ModelInfo(path, "pytorch", notes=["PyTorch checkpoint (loaded by the detector node)"])
    from detection.keypoints import KeypointOnnxRunner, is_keypoint_model

    if is_keypoint_model(path):
        kr = KeypointOnnxRunner(path, dc.confidence, opts.input_size, 1, ["CPUExecutionProvider"])
        try:
            kr.infer([np.zeros((96, 96), np.uint8)])
        except Exception as e:
            raise DetectionError(f"{path}: loads but does not run in ONNX Runtime: {e}") from None
        note = f"keypoint model (heatmaps), confidence {kr.confidence:.3f}"
        return ModelInfo(
            path, "onnx", list(kr.session.get_inputs()[0].shape), opts.input_size, "", kr.names, [note]
        )
    try:
        runner = OnnxRuntimeRunner(
            path, resolve_confidence(dc.confidence, path), opts.input_size, 1, ["CPUExecutionProvider"],
            opts.iou,
        )  # fmt: skip
    except DetectionError as e:  # "model file X is not ..." -> "X: not ..."
        raise DetectionError(
            f"{path}: {str(e).removeprefix(f'model file {path} ').removeprefix('is ')}"
        ) from None
    try:
        meta = dict(runner.session.get_modelmeta().custom_metadata_map)
        out_shape = list(runner.session.get_outputs()[0].shape)
        names = _class_names(meta, out_shape[1] if len(out_shape) == 3 else None)
        side = runner.input_size or 96
        try:
            runner.infer([np.zeros((side, side), np.uint8)])
        except Exception as e:  # any failure to run is the model's: name the file
            raise DetectionError(f"{path}: loads but does not run in ONNX Runtime: {e}") from None
        notes: list[str] = []
        if dc.runner == "tensorrt":
            import importlib.util

            missing = [
                what
                for what, ok in (
                    ("no NVIDIA GPU is visible", gpu),
                    ("the tensorrt package is not installed", importlib.util.find_spec("tensorrt")),
                )
                if not ok
            ]
            if missing and not opts.cpu_fallback:
                raise DetectionError(
                    f"{path}: runner 'tensorrt' cannot run here ({'; '.join(missing)}) and "
                    "options.cpu_fallback is false"
                )
            notes.append(
                f"runner 'tensorrt': {'; '.join(missing)}: the session will run ONNX Runtime on the CPU "
                "(options.cpu_fallback)"
                if missing
                else "runner 'tensorrt': GPU visible; the engine is built (or read from its cache) at start"
            )
        return ModelInfo(
            path,
            "onnx",
            runner.input_shape,
            runner.input_size,
            meta.get("imgsz", ""),
            names,
            notes,
        )
    finally:
        runner.close()
