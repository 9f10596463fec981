"""Keypoints as first-class: a small heatmap network trained from scratch on tens of labeled points, beside
the box detector, run by the same runner interface.

* **Labels**: :class:`PointDataset` (image -> (K, 2) pixel points, NaN where a part is unlabeled), read from
  DeepLabCut's ``CollectedData_*.csv`` (:func:`load_dlc_points`).
* **Network** (:func:`build_net`): four stride-2 stages (16-32-64-64 channels), a two-step upsampling
  path with skips, one heatmap per keypoint at stride 4, sigmoid; fully convolutional, so it runs on an
  online ROI crop or on a whole (scaled) frame. ~200 k parameters ("base"; "lite": ~47 k, depthwise-
  separable, ~4x less compute); no downloaded weights. A model is two of them: the fine network and a lite
  whole-frame search network (:func:`train_keypoints` with ``search``); a whole frame runs coarse to fine
  (:class:`KeypointRunner`), an online ROI crop through the fine network alone.
* **Recipe for few labels** (:class:`Recipe`): training on crops at the online ROI's scale (``crop`` px,
  scale jitter around 1 and down to the full-frame search scale), brightness/contrast, blur and noise,
  small rotations, **no flips** (left/right parts stay left/right), crops without any labeled part as
  negatives (the heatmaps must stay dark there); penalty-reduced focal loss on Gaussian targets (as
  CenterNet), AdamW with a cosine schedule, a fixed number of steps.
* **Decoding**: per keypoint the heatmap's peak (its value is the confidence) refined to sub-pixel by the
  centroid of its 3x3 neighbourhood. A runner returns one :class:`detection.base.Det` per keypoint above
  the threshold: a ``box_px`` square centred on the point, ``class_id`` = the keypoint's index, so the
  online ROI tracking (box centre) and triangulation work unchanged.
* **Export**: ONNX (dynamic H, W) with metadata ``deepbehavior_kind = heatmap-keypoints``, the keypoint
  names, stride, box size, the confidence threshold picked on validation and the search network (its ONNX,
  base64, under ``search_model``);
  :func:`detection.runners.make_runner` gives such a file a :class:`KeypointOnnxRunner`.
* **Evaluation** (:func:`evaluate_points`): per keypoint the pixel error (and mm), hits, precision/recall
  and false positives at the operating threshold; ``detect train-points`` and ``detect evaluate`` both
  use it, :mod:`detection.evaluate` writes its report.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detection.base import Det, DetectionError, Runner
from detection.datasets import DatasetError, image_shape
from detection.runners import THRESHOLD_KEY, preprocess

log = logging.getLogger(__name__)

KIND_KEY = "deepbehavior_kind"
KIND = "heatmap-keypoints"
STRIDE = 4


# -- labels ------------------------------------------------------------------------------------------


@dataclass
class PointDataset:
    """``items``: image path -> (K, 2) float pixel points (x right, y down; NaN: not labeled)."""

    items: dict[Path, np.ndarray] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, keys: Sequence[Path]) -> PointDataset:
        return PointDataset({k: self.items[k] for k in keys}, list(self.names))


def load_dlc_points(
    csv_path: str | Path,
    parts: Sequence[str] | None = None,
    root: str | Path | None = None,
    skip_missing: bool = False,
) -> PointDataset:
    """DeepLabCut ``CollectedData_*.csv`` or ``.h5`` (single animal; read by :func:`detection.dlc.read_dlc`,
    either index form) -> points of ``parts`` (default: all body parts, in the table's order). Image paths
    are relative to the project root (default: two folders above the table's folder). DatasetError names
    the file (and image) at fault; a missing image is an error, or with ``skip_missing`` a warning and the
    row is left out."""
    from detection.dlc import read_dlc

    csv_path = Path(csv_path)
    root = Path(root) if root is not None else csv_path.parent.parent.parent
    table = read_dlc(csv_path)
    table.require_single_animal(csv_path)
    all_parts = table.bodyparts
    names = list(parts) if parts else all_parts
    for p in names:
        if p not in all_parts:
            what = "CSV" if csv_path.suffix.lower() == ".csv" else "table"
            raise DatasetError(
                f"{csv_path}: body part {p!r} not in the {what} (it has {', '.join(all_parts)})"
            )
    pick = [all_parts.index(p) for p in names]
    ds = PointDataset(names=names)
    skipped = 0
    for key in table.rows:
        rel = table.rel_path(key)
        img = root / rel
        if not img.is_file() and skip_missing:
            skipped += 1
            continue
        h, w = image_shape(img, csv_path)
        pts = table.points(key)[pick]
        for k, p in enumerate(names):
            if np.isfinite(pts[k]).all() and not (-1 <= pts[k, 0] <= w + 1 and -1 <= pts[k, 1] <= h + 1):
                raise DatasetError(
                    f"{csv_path}: image {rel}: body part {p!r} at {pts[k]} is outside the {w}x{h} image"
                )
        ds.items[img] = pts
    if skipped:
        log.warning("%s: %d rows name missing images; skipped", csv_path, skipped)
    if not ds.items:
        raise DatasetError(f"{csv_path}: no labeled images")
    return ds


# -- the network ---------------------------------------------------------------------------------------


def build_net(n_keypoints: int, width: int = 16, arch: str = "base") -> Any:
    """The heatmap network (a ``torch.nn.Module``): (B, 3, H, W) in [0, 1] -> (B, K, H/4, W/4) in [0, 1]
    (H and W multiples of 32). ``arch``: ``"lite"`` (one plain conv per downsampling step, depthwise-
    separable convs elsewhere; ~47 k parameters at width 16) or ``"base"`` (two plain 3x3 convs per stage,
    ~200 k parameters, ~3.5x the compute)."""
    import torch
    from torch import nn

    if arch not in ("lite", "base"):
        raise DetectionError(f"keypoint network arch {arch!r}: expected 'lite' or 'base'")

    def conv(ci: int, co: int, s: int = 1, k: int = 3) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(ci, co, k, s, k // 2, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True)
        )

    def dw(ci: int, co: int, s: int = 1) -> nn.Sequential:  # depthwise 3x3 then pointwise 1x1
        return nn.Sequential(
            nn.Conv2d(ci, ci, 3, s, 1, groups=ci, bias=False), nn.BatchNorm2d(ci), nn.ReLU(inplace=True),
            conv(ci, co, 1, 1),
        )  # fmt: skip

    w = width
    lite = arch == "lite"
    block = dw if lite else conv

    class HeatmapNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.s1 = conv(3, w, 2) if lite else nn.Sequential(conv(3, w, 2), conv(w, w))  # /2
            self.s2 = nn.Sequential(conv(w, 2 * w, 2), block(2 * w, 2 * w))  # /4
            self.s3 = nn.Sequential(conv(2 * w, 4 * w, 2), block(4 * w, 4 * w))  # /8
            self.s4 = nn.Sequential(block(4 * w, 4 * w, 2), block(4 * w, 4 * w))  # /16
            if lite:
                self.u3 = nn.Sequential(conv(8 * w, 2 * w, 1, 1), dw(2 * w, 2 * w))
                self.u2 = nn.Sequential(conv(4 * w, w, 1, 1), dw(w, w))
                self.head = nn.Conv2d(w, n_keypoints, 1)
            else:
                self.u3 = conv(8 * w, 2 * w)
                self.u2 = conv(4 * w, 2 * w)
                self.head = nn.Conv2d(2 * w, n_keypoints, 1)
            assert self.head.bias is not None
            nn.init.constant_(self.head.bias, -4.0)  # start dark: p ~ 0.02 everywhere

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f2 = self.s2(self.s1(x))
            f3 = self.s3(f2)
            f4 = self.s4(f3)
            up = nn.functional.interpolate
            g3 = self.u3(torch.cat([up(f4, size=f3.shape[2:], mode="nearest"), f3], 1))
            g2 = self.u2(torch.cat([up(g3, size=f2.shape[2:], mode="nearest"), f2], 1))
            return torch.sigmoid(self.head(g2))

    return HeatmapNet()


# -- training ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How a keypoint model is trained from few labels (the defaults are the measured recipe)."""

    crop: int = 128  # training crop side, px (the online ROI's scale)
    scale_min: float = 0.45  # crops are resampled by a scale in [scale_min, scale_max] (log-uniform):
    scale_max: float = 1.15  # ~1 for the ROI path, ~0.5 for the full-frame search
    rotate_deg: float = 15.0
    brightness: float = 30.0  # +- added grey level
    contrast: float = 0.35  # gain in 1 +- contrast
    blur_p: float = 0.3
    noise: float = 4.0  # sigma of added Gaussian noise, grey levels
    negative_p: float = 0.2  # fraction of crops with no labeled part in them
    sigma_px: float = 3.0  # Gaussian target's sigma in input pixels
    steps: int = 1500
    batch: int = 24
    lr: float = 3e-3
    width: int = 16
    arch: str = "base"  # or "lite" (~4x less compute, for whole-frame search); see build_net
    box_px: float = 16.0  # side of the square box a keypoint is reported as


def _targets(pts: np.ndarray, size: int, sigma_px: float) -> np.ndarray:
    """(K, 2) crop-pixel points (NaN or outside: absent) -> (K, size/4, size/4) Gaussian heatmaps whose peak
    pixel is exactly 1."""
    g = size // STRIDE
    ys, xs = np.mgrid[0:g, 0:g].astype(np.float32)
    out = np.zeros((len(pts), g, g), np.float32)
    s = sigma_px / STRIDE
    for k, (x, y) in enumerate(pts):
        if not (np.isfinite(x) and np.isfinite(y)) or not (0 <= x < size and 0 <= y < size):
            continue
        gx, gy = x / STRIDE, y / STRIDE
        h = np.exp(-((xs - gx) ** 2 + (ys - gy) ** 2) / (2 * s * s))
        h /= h.max()
        out[k] = h
    return out


def _sample_crop(
    img: np.ndarray, pts: np.ndarray, r: Recipe, rng: np.random.Generator, negative: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """One augmented training crop (crop, crop, 3) uint8 and its points in crop pixels."""
    h, w = img.shape[:2]
    c = r.crop
    s = math.exp(rng.uniform(math.log(r.scale_min), math.log(r.scale_max)))
    ang = rng.uniform(-r.rotate_deg, r.rotate_deg)
    lab = pts[np.isfinite(pts).all(1)]
    half = c / 2 / s  # half the crop's side in source pixels
    if negative:
        for _ in range(20):
            cx, cy = rng.uniform(half * 0.5, w - half * 0.5), rng.uniform(half * 0.5, h - half * 0.5)
            if not len(lab) or np.all(np.abs(lab - (cx, cy)).max(1) > half * 1.5 + r.sigma_px * 3):
                break
        else:
            return None
    else:
        if not len(lab):
            return None
        cx, cy = lab[rng.integers(len(lab))] + rng.uniform(-0.8, 0.8, 2) * half
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), float(ang), float(s))
    m[:, 2] += (c / 2 - cx, c / 2 - cy)
    crop = cv2.warpAffine(img, m, (c, c), flags=cv2.INTER_LINEAR, borderValue=(114, 114, 114))
    p = np.full_like(pts, np.nan)
    ok = np.isfinite(pts).all(1)
    p[ok] = pts[ok] @ m[:, :2].T + m[:, 2]
    if negative:
        p[:] = np.nan
    crop = crop.astype(np.float32) * (1 + rng.uniform(-r.contrast, r.contrast))
    crop += rng.uniform(-r.brightness, r.brightness)
    if rng.random() < r.blur_p:
        crop = cv2.GaussianBlur(crop, (0, 0), rng.uniform(0.5, 1.5))
    crop += rng.normal(0, r.noise, crop.shape)
    return np.clip(crop, 0, 255).astype(np.uint8), p


def _to_input(crops: Sequence[np.ndarray]) -> np.ndarray:
    """BGR uint8 crops -> (B, 3, H, W) float32 RGB in [0, 1], as :func:`detection.runners.preprocess`."""
    x = np.stack([c[:, :, ::-1] for c in crops]).astype(np.float32) * (1 / 255.0)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def focal_loss(pred: Any, gt: Any) -> Any:
    """Penalty-reduced focal loss on Gaussian heatmaps (CenterNet), normalised by the number of peaks."""
    import torch

    p = pred.clamp(1e-4, 1 - 1e-4)
    pos = gt >= 0.999
    pos_loss = -(torch.log(p) * (1 - p) ** 2)[pos].sum()
    neg_loss = -(torch.log(1 - p) * p**2 * (1 - gt) ** 4)[~pos].sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1)


@dataclass
class KeypointModel:
    """A trained network with its keypoint names and the threshold picked on validation."""

    net: Any
    names: list[str]
    recipe: Recipe
    confidence: float = 0.25
    train_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    search: KeypointModel | None = None  # the whole-frame search network (see KeypointRunner)


def read_bgr(path: Path) -> np.ndarray:
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if im is None:
        raise DatasetError(f"image {path} is missing or not an image")
    return np.asarray(im)


def train_keypoints(
    ds: PointDataset,
    recipe: Recipe = Recipe(),
    seed: int = 0,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
    search: bool = False,
) -> KeypointModel:
    """Train a :func:`build_net` from scratch on ``ds`` with ``recipe`` (CPU, ``threads`` torch threads);
    with ``search``, then its whole-frame search network with :func:`search_recipe` for ``ds``'s largest
    frames (same data and steps): the model :class:`KeypointRunner` runs coarse to fine."""
    import torch

    if not len(ds):
        raise DatasetError("no labeled images to train on")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = [(read_bgr(k), v) for k, v in sorted(ds.items.items())]
    net = build_net(len(ds.names), recipe.width, recipe.arch)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=1e-4)
    # warm-up over 10 % of the steps, at least 2 (OneCycleLR divides by the warm-up's length)
    warm = max(0.1, 2.5 / recipe.steps)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=recipe.steps, pct_start=warm)
    net.train()
    t0 = time.monotonic()
    every = max(recipe.steps // 10, 1)
    run = 0.0
    for step in range(recipe.steps):
        crops: list[np.ndarray] = []
        tg: list[np.ndarray] = []
        while len(crops) < recipe.batch:
            img, pts = images[int(rng.integers(len(images)))]
            got = _sample_crop(img, pts, recipe, rng, negative=rng.random() < recipe.negative_p)
            if got is None:
                continue
            crops.append(got[0])
            tg.append(_targets(got[1], recipe.crop, recipe.sigma_px))
        x = torch.from_numpy(_to_input(crops))
        y = torch.from_numpy(np.stack(tg))
        loss = focal_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        lv = float(loss.detach())
        run = 0.9 * run + 0.1 * lv if step else lv
        if progress is not None and ((step + 1) % every == 0 or step + 1 == recipe.steps):
            progress(
                f"keypoints: step {step + 1}/{recipe.steps}  loss {run:.3f}  {time.monotonic() - t0:.0f} s"
            )
    net.eval()
    model = KeypointModel(net, list(ds.names), recipe, train_s=time.monotonic() - t0)
    if search:
        say = (lambda line: progress("search network: " + line)) if progress is not None else None
        frame_px = max(max(image_shape(k)) for k in ds.items)
        model.search = train_keypoints(ds, search_recipe(recipe, frame_px), seed + 1, threads, say)
        model.train_s += model.search.train_s
    return model


# -- decoding and running ------------------------------------------------------------------------------


def decode_heatmaps(hm: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(K, h, w) heatmaps -> (K, 2) points in input pixels divided by ``scale`` (the letterbox scale) and
    (K,) peak values. Sub-pixel: the centroid of the 3x3 neighbourhood of the peak."""
    k, h, w = hm.shape
    flat = hm.reshape(k, -1).argmax(1)
    py, px = np.divmod(flat, w)
    pts = np.zeros((k, 2))
    conf = hm.reshape(k, -1)[np.arange(k), flat].astype(float)
    for i in range(k):
        y0, y1 = max(py[i] - 1, 0), min(py[i] + 2, h)
        x0, x1 = max(px[i] - 1, 0), min(px[i] + 2, w)
        win = hm[i, y0:y1, x0:x1].astype(float)
        tot = win.sum()
        yy, xx = np.mgrid[y0:y1, x0:x1]
        gx = (win * xx).sum() / tot if tot > 0 else px[i]
        gy = (win * yy).sum() / tot if tot > 0 else py[i]
        pts[i] = gx * STRIDE, gy * STRIDE
    return pts / scale, conf


SEARCH_PX = 160  # the search network's input: a whole frame resized to this long side
FINE_PX = 64  # the fine network's crops around each searched point, at the frame's own scale


def search_recipe(r: Recipe, frame_px: int = 640) -> Recipe:
    """The whole-frame search network's recipe: ``r`` with the lite network, trained down to the scale that
    frames of ``frame_px`` on their long side have once resized to :data:`SEARCH_PX` (0.9 of it, and 0.22
    at most: the scale measured best for 640-px frames)."""
    return replace(r, arch="lite", scale_min=min(0.22, 0.9 * SEARCH_PX / frame_px))


class KeypointRunner(Runner):
    """Heatmaps -> one :class:`Det` per keypoint above ``confidence``: a ``box_px`` square around the point,
    ``class_id`` the keypoint's index. Subclasses implement :meth:`run_raw` (and, with a search network,
    :meth:`run_search_raw`).

    **Coarse to fine** (a model with a search network, no ``input_size``): an image whose long side is over
    ``search_px`` (a whole frame, not a small online ROI crop) is resized to ``search_px`` on its long side
    for the small search network; then the fine network runs on a ``fine_px`` crop of the frame, at its own
    scale, around each keypoint's searched peak (keypoints inside an earlier crop, away from its border,
    share it). The points and confidences are the fine network's, so the stored threshold means the same on
    a whole frame and on an ROI crop, and the cost of a whole frame is one small search plus at most K small
    crops."""

    name = "keypoints"
    confidence: float = 0.25
    input_size: int | None = None
    box_px: float = 16.0
    names: list[str]
    has_search: bool = False
    search_px: int = SEARCH_PX
    fine_px: int = FINE_PX

    def infer_points(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per frame (K, 2) points in that frame's pixels and (K,) confidences (no threshold)."""
        whole = [
            self.has_search and self.input_size is None and max(im.shape[:2]) > self.search_px
            for im in images
        ]
        out: list[tuple[np.ndarray, np.ndarray]] = [self._coarse_to_fine(im) if w else (np.empty(0),) * 2
                                                    for im, w in zip(images, whole)]  # fmt: skip
        direct = [i for i, w in enumerate(whole) if not w]
        if direct:
            x, scales = preprocess([images[i] for i in direct], self.input_size)
            hm = self.run_raw(x)
            for j, i in enumerate(direct):
                out[i] = decode_heatmaps(hm[j], scales[j])
        return out

    def _coarse_to_fine(self, im: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, (s,) = preprocess([im], self.search_px)
        coarse, cconf = decode_heatmaps(self.run_search_raw(x)[0], s)
        h, w = im.shape[:2]
        c, m = self.fine_px, self.fine_px // 4  # a point within m px of a crop's border gets its own crop
        origins: list[tuple[int, int]] = []
        owner = np.zeros(len(coarse), int)
        for k in np.argsort(-cconf):
            px, py = coarse[k]
            for j, (x0, y0) in enumerate(origins):
                if x0 + m <= px < x0 + c - m and y0 + m <= py < y0 + c - m:
                    owner[k] = j
                    break
            else:
                owner[k] = len(origins)
                origins.append((int(np.clip(round(px - c / 2), 0, max(w - c, 0))),
                                int(np.clip(round(py - c / 2), 0, max(h - c, 0)))))  # fmt: skip
        crops = [np.ascontiguousarray(im[y0 : y0 + c, x0 : x0 + c]) for x0, y0 in origins]
        hm = self.run_raw(preprocess(crops, None)[0])
        pts, conf = np.zeros((len(coarse), 2)), np.zeros(len(coarse))
        for k, j in enumerate(owner):
            p, cf = decode_heatmaps(hm[j, k : k + 1])
            pts[k], conf[k] = p[0] + origins[j], cf[0]
        return pts, conf

    def infer(self, images: Sequence[np.ndarray]) -> list[list[Det]]:
        out = []
        r = self.box_px / 2
        for (h, w), (pts, conf) in zip((im.shape[:2] for im in images), self.infer_points(images)):
            dets = []
            for k in np.argsort(-conf):
                if conf[k] < self.confidence:
                    continue
                x, y = float(np.clip(pts[k, 0], 0, w - 1)), float(np.clip(pts[k, 1], 0, h - 1))
                dets.append(Det(x - r, y - r, x + r, y + r, float(conf[k]), int(k)))
            out.append(dets)
        return out

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 in [0, 1] -> (B, K, H/4, W/4) heatmaps."""
        raise NotImplementedError

    def run_search_raw(self, x: np.ndarray) -> np.ndarray:
        """:meth:`run_raw` of the search network."""
        raise NotImplementedError


class TorchKeypointRunner(KeypointRunner):
    """A :class:`KeypointModel` in PyTorch (training, evaluation)."""

    name = "keypoints-torch"

    def __init__(self, model: KeypointModel, confidence: float | None = None, input_size: int | None = None):
        import torch

        self.model, self._torch = model, torch
        self.names = model.names
        self.confidence = model.confidence if confidence is None else confidence
        self.input_size, self.box_px = input_size, model.recipe.box_px
        self.has_search = model.search is not None

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return np.asarray(self.model.net(self._torch.from_numpy(x)).numpy())

    def run_search_raw(self, x: np.ndarray) -> np.ndarray:
        assert self.model.search is not None
        with self._torch.inference_mode():
            return np.asarray(self.model.search.net(self._torch.from_numpy(x)).numpy())


class KeypointOnnxRunner(KeypointRunner):
    """An exported keypoint model in ONNX Runtime (CPU; CUDA when present)."""

    name = "onnxruntime"

    def __init__(
        self,
        model: str | os.PathLike[str],
        confidence: float | None = None,
        input_size: int | None = None,
        threads: int = 1,
        providers: Sequence[str] | None = None,
    ):
        import onnxruntime as ort

        self.path = Path(model)
        if not self.path.is_file():
            raise DetectionError(f"model file {self.path} does not exist")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        avail = ort.get_available_providers()
        want = (
            list(providers)
            if providers
            else [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]
        )
        providers = [p for p in want if p in avail]
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as e:
            raise DetectionError(f"model file {self.path} is not a loadable ONNX model: {e}") from e
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.search_session = None
        if meta.get("search_model"):  # the search network travels inside the file (base64 ONNX)
            try:
                blob = base64.b64decode(meta["search_model"])
                self.search_session = ort.InferenceSession(blob, so, providers=providers)
                self.search_px = int(meta.get("search_px", SEARCH_PX))
                self.fine_px = int(meta.get("fine_px", FINE_PX))
            except Exception as e:
                raise DetectionError(f"model file {self.path}: its search network does not load: {e}") from e
            self.has_search = True
        if meta.get(KIND_KEY) != KIND:
            raise DetectionError(f"model file {self.path}: not a keypoint model (no {KIND_KEY}: {KIND})")
        self.names = json.loads(meta.get("names", "[]"))
        self.box_px = float(meta.get("box_px", 16))
        try:  # the training crop: the size of the crops without the animal an evaluation runs on
            self.crop = int(json.loads(meta.get("recipe", "{}")).get("crop", Recipe.crop))
        except (ValueError, TypeError, AttributeError):
            self.crop = Recipe.crop
        stored = meta.get(THRESHOLD_KEY)
        self.confidence = float(confidence if confidence is not None else (stored or 0.25))
        self.input_size = input_size
        self.providers = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: x})[0])

    def run_search_raw(self, x: np.ndarray) -> np.ndarray:
        assert self.search_session is not None
        return np.asarray(self.search_session.run(None, {self.input_name: x})[0])


def is_keypoint_model(path: str | os.PathLike[str]) -> bool:
    """Whether an ONNX file is a keypoint model (its metadata says ``heatmap-keypoints``)."""
    p = Path(path)
    if p.suffix.lower() != ".onnx" or not p.is_file():
        return False
    try:
        import onnx

        meta = {m.key: m.value for m in onnx.load(str(p), load_external_data=False).metadata_props}
    except Exception:  # not loadable: the ONNX runner reports it, naming the file
        return False
    return meta.get(KIND_KEY) == KIND


def _export(torch: Any, net: Any, x: Any, out: Path) -> None:
    torch.onnx.export(
        net, (x,), str(out), input_names=["images"], output_names=["heatmaps"], opset_version=17,
        dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                      "heatmaps": {0: "batch", 2: "h", 3: "w"}},
        dynamo=False,
    )  # fmt: skip


def export_keypoints_onnx(model: KeypointModel, out: str | Path) -> Path:
    """ONNX (opset 17, dynamic batch/H/W) with the keypoint metadata and stored threshold; a search
    network goes into the same file (metadata ``search_model``: its ONNX, base64)."""
    import onnx
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(1, 3, model.recipe.crop, model.recipe.crop)
    meta = {KIND_KEY: KIND, "names": json.dumps(model.names), "stride": str(STRIDE),
            "box_px": f"{model.recipe.box_px:g}", THRESHOLD_KEY: f"{model.confidence:.6g}",
            "recipe": json.dumps(asdict(model.recipe))}  # fmt: skip
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        if model.search is not None:
            model.search.net.eval()
            _export(torch, model.search.net, x, out)
            meta["search_model"] = base64.b64encode(out.read_bytes()).decode("ascii")
            meta.update(search_px=str(SEARCH_PX), fine_px=str(FINE_PX),
                        search_recipe=json.dumps(asdict(model.search.recipe)))  # fmt: skip
        model.net.eval()
        _export(torch, model.net, x, out)
    m = onnx.load(str(out))
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(out))
    return out


# -- evaluation ----------------------------------------------------------------------------------------


@dataclass
class PointResult:
    """One keypoint's numbers at the operating threshold (a peak under it is not reported):

    * ``median_px`` / ``p90_px``: error of the reported point to the label over the frames where the part
      is labeled (a frame with nothing reported counts as infinitely far); ``*_mm``: the same times the
      evaluation's mm per pixel (None without a calibration);
    * ``hits``: labeled frames with a reported point within ``radius_px``; ``n_reported``: labeled frames
      with a reported point at all;
    * ``precision`` = hits / every report on whole frames (the labeled ones and those without the part);
      ``recall`` = hits / labeled frames;
    * ``fp_absent`` of ``n_absent``: frames where the part is not labeled (not visible) that got a report;
      ``fp_negative`` of ``n_negative``: crops of the frames with no labeled part in them that got one."""

    name: str
    n: int = 0
    median_px: float = 0.0
    p90_px: float = 0.0
    median_mm: float | None = None
    p90_mm: float | None = None
    hits: int = 0
    n_reported: int = 0
    precision: float = 0.0
    recall: float = 0.0
    n_absent: int = 0
    fp_absent: int = 0
    n_negative: int = 0
    fp_negative: int = 0


def predict_frames(
    runner: KeypointRunner, ds: PointDataset, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Whole frames (resized by ``scale``) -> (N, K, 2) points in original pixels and (N, K) confidences,
    frames in sorted order (the third value)."""
    keys = sorted(ds.items)
    pts = np.full((len(keys), len(ds.names), 2), np.nan)
    conf = np.zeros((len(keys), len(ds.names)))
    for i, k in enumerate(keys):
        im = read_bgr(k)
        if scale != 1.0:
            im = cv2.resize(
                im, (round(im.shape[1] * scale), round(im.shape[0] * scale)), interpolation=cv2.INTER_AREA
            )
        p, conf[i] = runner.infer_points([im])[0]
        pts[i] = p / scale
    return pts, conf, keys


def point_errors(
    runner: KeypointRunner, ds: PointDataset, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Whole frames (resized by ``scale``) -> (N, K) errors in original pixels (NaN: unlabeled) and (N, K)
    confidences."""
    pts, conf, keys = predict_frames(runner, ds, scale)
    labels = np.stack([ds.items[k] for k in keys]) if keys else np.zeros((0, len(ds.names), 2))
    return np.hypot(*(pts - labels).transpose(2, 0, 1)), conf, keys


def negative_crops(ds: PointDataset, size: int, n_per_image: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Crops of ``size`` px from ``ds``'s frames that contain no labeled part (with a margin): the frames
    without the object for the false-positive count. A frame's crops depend only on the frame (its folder
    and file name) and ``seed``, not on the other frames evaluated with it: ``train-points``' test report,
    ``evaluate`` and ``evaluate --split test`` count the same crops."""
    out = []
    for k in sorted(ds.items):
        rng = np.random.default_rng([seed, zlib.crc32(f"{Path(k).parent.name}/{Path(k).name}".encode())])
        im = read_bgr(k)
        lab = ds.items[k][np.isfinite(ds.items[k]).all(1)]
        h, w = im.shape[:2]
        got = 0
        for _ in range(50):
            if got >= n_per_image or w <= size or h <= size:
                break
            x0, y0 = int(rng.integers(0, w - size)), int(rng.integers(0, h - size))
            ctr = np.array([x0 + size / 2, y0 + size / 2])
            if len(lab) and np.abs(lab - ctr).max(1).min() < size / 2 + 24:
                continue
            out.append(np.ascontiguousarray(im[y0 : y0 + size, x0 : x0 + size]))
            got += 1
    return out


def pick_point_threshold(err: np.ndarray, conf: np.ndarray, neg_conf: np.ndarray, radius_px: float) -> float:
    """The threshold with the best F1 over all keypoints (a hit: peak within ``radius_px`` above it; a
    false positive: a peak above it that is off, or any on a crop without the animal), the middle of the
    widest best range (:func:`detection.evaluate.pick_threshold`); 0.25 when no peak is a hit."""
    from detection.evaluate import pick_threshold

    lab = ~np.isnan(err)  # NaN: unlabeled; inf: labeled, nothing predicted
    s = np.concatenate([conf[lab], neg_conf.ravel()])
    good = np.concatenate([err[lab] <= radius_px, np.zeros(neg_conf.size, bool)])
    t = pick_threshold(s, good, int(lab.sum()), floor=0.0)
    return 0.25 if t is None else t


def _percentile(e: np.ndarray, q: float) -> float:
    """A percentile that stays honest with misses (inf): no interpolation between inf and a number."""
    if np.isinf(e).any():
        return float(np.percentile(e, q, method="higher"))
    return float(np.percentile(e, q))


def summarize_points(
    names: Sequence[str],
    err: np.ndarray,
    conf: np.ndarray,
    neg_conf: np.ndarray,
    threshold: float,
    radius_px: float,
    mm_per_px: float | None = None,
) -> list[PointResult]:
    """Per keypoint :class:`PointResult` from (N, K) errors (NaN: the part is not labeled in that frame),
    (N, K) confidences and (M, K) confidences on crops without the animal."""
    out = []
    for k, name in enumerate(names):
        lab = ~np.isnan(err[:, k])
        shown = conf[:, k] >= threshold
        e = np.where(shown, err[:, k], np.inf)[lab]
        r = PointResult(name, n=int(lab.sum()), n_absent=int((~lab).sum()), n_negative=len(neg_conf))
        r.fp_absent = int((shown & ~lab).sum())
        r.n_reported = int((shown & lab).sum())
        if r.n:
            r.median_px, r.p90_px = _percentile(e, 50), _percentile(e, 90)
            r.hits = int((e <= radius_px).sum())
            r.recall = r.hits / r.n
            if mm_per_px is not None:
                r.median_mm, r.p90_mm = r.median_px * mm_per_px, r.p90_px * mm_per_px
        reports = r.n_reported + r.fp_absent
        r.precision = r.hits / reports if reports else 0.0
        r.fp_negative = int((neg_conf[:, k] >= threshold).sum()) if len(neg_conf) else 0
        out.append(r)
    return out


def negative_confidences(runner: KeypointRunner, crops: Sequence[np.ndarray]) -> np.ndarray:
    """(N, K) peak values on crops without the object."""
    if not crops:
        return np.zeros((0, len(runner.names)))
    return np.stack([c for _, c in (runner.infer_points([x])[0] for x in crops)])


@dataclass
class FramePoints:
    """One evaluated frame: the reported points (None: under the threshold) and their errors (None: the
    part is not labeled; ``inf``: labeled but nothing reported)."""

    image: str
    points: list[list[float] | None]
    confidence: list[float]
    error_px: list[float | None]

    def worst_px(self) -> float | None:
        """The frame's largest error (inf when a labeled part was missed; None: nothing labeled)."""
        e = [x for x in self.error_px if x is not None]
        return max(e) if e else None


@dataclass
class PointEvaluation:
    """A keypoint model on labeled frames: per keypoint :class:`PointResult`, per frame
    :class:`FramePoints`, and what the numbers are at."""

    parts: list[PointResult]
    frames: list[FramePoints]
    threshold: float
    radius_px: float
    negative_crop_px: int
    mm_per_px: float | None = None
    mm_note: str = ""

    def to_json(self) -> dict[str, Any]:
        from detection.evaluate import json_clean

        return dict(json_clean(asdict(self)))

    def summary_lines(self) -> list[str]:
        """What ``detect train-points`` and ``detect evaluate`` print."""
        n = len(self.frames)
        lines = [
            f"{n} frames (whole frames), at confidence {self.threshold:.3f}, radius {self.radius_px:g} px:"
        ]
        for r in self.parts:
            mm = f" ({_mm(r.median_mm)} / {_mm(r.p90_mm)})" if self.mm_per_px is not None else ""
            fp = (
                f"false positives on {r.fp_absent}/{r.n_absent} frames without it, "
                f"{r.fp_negative}/{r.n_negative} crops without a labeled part"
            )
            if not r.n:  # nothing to measure an error or a recall on
                lines.append(f"{r.name:>12}: not labeled in any of these frames  {fp}")
                continue
            lines.append(
                f"{r.name:>12}: hits {r.hits}/{r.n}  error median {_px(r.median_px)} "
                f"p90 {_px(r.p90_px)}{mm}  P {r.precision:.3f} R {r.recall:.3f}  {fp}"
            )
        if self.mm_per_px is not None:
            lines.append(f"mm: {self.mm_note}")
        return lines


def _px(v: float) -> str:
    return f"{v:.1f} px" if math.isfinite(v) else "inf (missed)"


def _mm(v: float | None) -> str:
    return "-" if v is None else (f"{v:.2f} mm" if math.isfinite(v) else "inf")


def evaluate_points(
    runner: KeypointRunner,
    ds: PointDataset,
    threshold: float,
    radius_px: float,
    crop_px: int = 128,
    mm_per_px: float | None = None,
    mm_note: str = "",
) -> PointEvaluation:
    """Run ``runner`` on ``ds``'s whole frames and on ``crop_px`` crops of them with no labeled part (4 per
    frame, :func:`negative_crops`), and score it at ``threshold`` (:class:`PointResult`). The one evaluation
    of a keypoint model: ``detect train-points`` (its test split) and ``detect evaluate`` both call it."""
    pts, conf, keys = predict_frames(runner, ds)
    labels = np.stack([ds.items[k] for k in keys]) if keys else np.zeros((0, len(ds.names), 2))
    err = np.hypot(*(pts - labels).transpose(2, 0, 1))
    neg = negative_confidences(runner, negative_crops(ds, crop_px))
    parts = summarize_points(ds.names, err, conf, neg, threshold, radius_px, mm_per_px)
    frames = []
    for i, k in enumerate(keys):
        shown = conf[i] >= threshold
        frames.append(
            FramePoints(
                str(k),
                [[float(x), float(y)] if s else None for (x, y), s in zip(pts[i], shown)],
                [float(c) for c in conf[i]],
                [None if np.isnan(e) else (float(e) if s else math.inf) for e, s in zip(err[i], shown)],
            )
        )
    return PointEvaluation(parts, frames, threshold, radius_px, crop_px, mm_per_px, mm_note)
