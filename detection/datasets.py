"""Box datasets and label formats: the seed's JSON, YOLO txt, and DeepLabCut keypoints -> boxes.

A :class:`BoxDataset` maps image paths to boxes (pixels, x right, y down) plus the class names. Every
loader validates: images exist, boxes lie inside the image with x1 < x2 and y1 < y2, the set is not
empty; errors name the file and the item.

Seed JSON (TensorBox style, what the seed's labeling tool wrote)::

    [{"image_path": "img0000.png", "rects": [{"x1": 10, "x2": 50, "y1": 20, "y2": 60, "class": 0}]}]

(paths relative to the JSON file's folder; ``class`` optional, default 0).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from analysis.textfile import read_text, read_yaml
from detection.base import DetectionError

log = logging.getLogger(__name__)


class DatasetError(DetectionError):
    """A label file that does not match its images, a box outside its image, an empty dataset."""


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float
    class_id: int = 0


@dataclass
class BoxDataset:
    """``items``: image path -> boxes; ``names``: class index -> name."""

    items: dict[Path, list[Box]] = field(default_factory=dict)
    names: list[str] = field(default_factory=lambda: ["object"])

    def __len__(self) -> int:
        return len(self.items)

    def validate(self, source: str | Path) -> BoxDataset:
        """Check every image exists and every box is inside it; raise DatasetError naming ``source``."""
        if not self.items:
            raise DatasetError(f"{source}: empty dataset (no labeled images)")
        for img, boxes in self.items.items():
            shape = image_shape(img, source)
            h, w = shape
            for k, b in enumerate(boxes):
                where = f"{source}: image {img.name} box {k}"
                if not (b.x1 < b.x2 and b.y1 < b.y2):
                    raise DatasetError(f"{where}: inverted or empty corners ({b.x1}, {b.y1}, {b.x2}, {b.y2})")
                if b.x1 < -0.5 or b.y1 < -0.5 or b.x2 > w + 0.5 or b.y2 > h + 0.5:
                    raise DatasetError(
                        f"{where}: ({b.x1}, {b.y1}, {b.x2}, {b.y2}) is outside the {w}x{h} image"
                    )
                if not 0 <= b.class_id < len(self.names):
                    raise DatasetError(f"{where}: class {b.class_id} not in {self.names}")
        return self

    def subset(self, keys: Iterable[Path]) -> BoxDataset:
        """The images ``keys`` (in that order) with their boxes, same class names."""
        return BoxDataset({k: self.items[k] for k in keys}, list(self.names))

    def split(self, every: int = 5) -> tuple[BoxDataset, BoxDataset]:
        """Deterministic train/test split: every ``every``-th image (sorted by path) goes to test."""
        keys = sorted(self.items)
        test = {k: self.items[k] for i, k in enumerate(keys) if i % every == every - 1}
        train = {k: v for k, v in self.items.items() if k not in test}
        return BoxDataset(train, list(self.names)), BoxDataset(test, list(self.names))


SPLITS = ("train", "val", "test")


def source_of(img: Path) -> str:
    """The source video of a labeled frame: its folder (DeepLabCut's ``labeled-data/<video>/``, a folder of
    extracted frames per session)."""
    return str(img.parent)


def parse_fractions(text: str) -> tuple[float, float, float]:
    """``"0.7,0.15,0.15"`` -> (train, val, test) fractions; DatasetError on anything else."""
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or parts[0] <= 0 or parts[1] <= 0 or sum(parts) <= 0:
        raise DatasetError(
            f"--split {text!r}: expected TRAIN,VAL,TEST fractions, e.g. 0.7,0.15,0.15 (train and val > 0)"
        )
    t = sum(parts)
    return parts[0] / t, parts[1] / t, parts[2] / t


def split_dataset(
    ds: BoxDataset, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, BoxDataset]:
    """Seeded train/val/test split, stratified by source video and cut in time (:func:`split_keys`): every
    split sees every video in proportion, and frames next to each other in a video stay in one split. No
    image is in two splits. Val (and test, when its fraction is > 0) get at
    least one image when the set has enough; DatasetError when it has fewer images than needed."""
    labeled = [k for k, boxes in ds.items.items() if boxes]
    return {s: ds.subset(k) for s, k in split_keys(list(ds.items), fractions, seed, labeled).items()}


BLOCKS_PER_VIDEO = 10  # a video's frames are dealt out to the splits in this many runs of neighbours


def _natural(p: Path) -> list[Any]:
    """Sort key: ``img9`` before ``img10`` (frame numbers in names, padded or not)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def split_keys(
    images: Sequence[Path],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    labeled: Collection[Path] | None = None,
) -> dict[str, list[Path]]:
    """:func:`split_dataset` for a list of image paths (any label kind). Each source video's frames
    (:func:`source_of`), in frame order, are cut into ``BLOCKS_PER_VIDEO`` runs of neighbouring frames; the
    runs, shuffled with ``seed``, are dealt to train / val / test in the given fractions (counted in frames;
    a split's shortfall carries over to the next video, so small videos still feed val and test).
    Consecutive labeled frames are near-duplicates: split one by one, test frames would be neighbours of
    training frames and the test figures optimistic. Frames spread through a video (as DeepLabCut's
    extraction picks them) make runs of one or two frames, and the split is then as good as random.
    ``labeled``: the frames with the object (a labeled part or box); runs holding any are dealt apart from
    runs without, so every split gets frames with the object and frames without it in proportion."""
    fr = np.asarray(fractions, float)
    need = 2 + int(fr[2] > 0)
    if len(images) < need:
        raise DatasetError(f"{len(images)} labeled images: a train/val/test split needs at least {need}")
    rng = np.random.default_rng(seed)
    groups: dict[str, list[Path]] = {}
    for k in sorted(images, key=_natural):
        groups.setdefault(source_of(k), []).append(k)
    has = set(images if labeled is None else labeled)
    out: dict[str, list[Path]] = {s: [] for s in SPLITS}
    carry = {True: np.zeros(3), False: np.zeros(3)}  # per kind of run: with the object, without
    for g in sorted(groups):
        keys = groups[g]
        size = -(-len(keys) // BLOCKS_PER_VIDEO)
        runs = [keys[i : i + size] for i in range(0, len(keys), size)]
        for kind in (True, False):
            mine = [r for r in runs if any(k in has for k in r) == kind]
            want = fr * sum(map(len, mine)) + carry[kind]
            have = np.zeros(3)
            for i in rng.permutation(len(mine)):  # each run to the split furthest below its share, relatively
                short = np.where(want > 0, (want - have) / np.maximum(want, 1e-9), -np.inf)
                j = int(np.argmax(short))
                out[SPLITS[j]] += mine[i]
                have[j] += len(mine[i])
            carry[kind] = np.maximum(want - have, 0)  # a shortfall is made up later, a surplus not taken back
    for s in ("val", "test"):  # a tiny set: take one image from the largest split
        if not out[s] and (s == "val" or fr[2] > 0):
            donor = max(SPLITS, key=lambda x: len(out[x]))
            out[s].append(out[donor].pop())
    return {s: sorted(v, key=_natural) for s, v in out.items()}


def frame_key(img: str | Path) -> str:
    """How a split names a frame: ``<video>/<image>``, its last two path parts (DeepLabCut's rows)."""
    return "/".join(Path(img).parts[-2:])


def card_splits(card: str | Path) -> dict[str, str]:
    """A model card's split (``keypoints.json``, or any JSON ``{"splits": {"train": [paths], ...}}``):
    :func:`frame_key` of each image -> its split. DatasetError naming the file when it has none."""
    card = Path(card)
    try:
        old = json.loads(read_text(card, "model card", DatasetError))["splits"]
        return {frame_key(p): s for s in SPLITS for p in old.get(s, [])}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DatasetError(
            f"{card}: not a model card with 'splits' (train-points writes keypoints.json)"
        ) from None


def carry_split(images: Sequence[Path], card: str | Path) -> tuple[dict[str, list[Path]], list[str]]:
    """The split of a model card (``keypoints.json``'s ``splits``) carried over to a grown label set, for
    the active-learning loop: an image keeps the split it had (matched by its last two path parts,
    ``<video>/<image>``, as DeepLabCut's rows name it), a new one goes to ``train`` (a mined hard frame is
    for training), so validation and test stay the same frames from round to round. Returns the split and
    the previous split's images that are no longer labeled."""
    prev = card_splits(card)
    out: dict[str, list[Path]] = {s: [] for s in SPLITS}
    seen = set()
    for img in sorted(images):
        key = frame_key(img)
        seen.add(key)
        out[prev.get(key, "train")].append(img)
    if not out["val"]:
        raise DatasetError(
            f"{card}: none of its validation images is in the labels: nothing to pick a threshold on"
        )
    return out, sorted(set(prev) - seen)


_shape_cache: dict[Path, tuple[int, int]] = {}


def image_shape(path: Path, source: str | Path = "") -> tuple[int, int]:
    """(H, W) of an image file; DatasetError naming the label file and the image when unreadable."""
    if path not in _shape_cache:
        if not path.is_file():  # before OpenCV, which would print a warning of its own
            raise DatasetError(f"{source}: image {path} is missing or not an image")
        im = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if im is None:
            raise DatasetError(f"{source}: image {path} is missing or not an image")
        _shape_cache[path] = (int(im.shape[0]), int(im.shape[1]))
    return _shape_cache[path]


# -- seed JSON ---------------------------------------------------------------------------------------


def load_seed_json(path: str | Path, names: Sequence[str] = ("object",)) -> BoxDataset:
    path = Path(path)
    text = read_text(path, "label file", DatasetError)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: line {e.lineno}, column {e.colno}: not valid JSON: {e.msg}") from None
    if not isinstance(doc, list):
        raise DatasetError(f"{path}: expected a list of {{image_path, rects}} entries")
    ds = BoxDataset(names=list(names))
    for i, entry in enumerate(doc):
        try:
            img = path.parent / entry["image_path"]
            boxes = [
                Box(float(r["x1"]), float(r["y1"]), float(r["x2"]), float(r["y2"]), int(r.get("class", 0)))
                for r in entry.get("rects", [])
            ]
        except KeyError as e:
            raise DatasetError(f"{path}: entry {i}: lacks {e.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise DatasetError(f"{path}: entry {i}: bad field ({e})") from None
        ds.items[img] = boxes
    return ds.validate(path)


def save_seed_json(ds: BoxDataset, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = []
    for img, boxes in sorted(ds.items.items()):
        try:
            rel = str(img.resolve().relative_to(path.parent.resolve()))
        except ValueError:
            rel = str(img.resolve())
        doc.append(
            {"image_path": rel,
             "rects": [{"x1": b.x1, "x2": b.x2, "y1": b.y1, "y2": b.y2, "class": b.class_id} for b in boxes]}
        )  # fmt: skip
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


# -- YOLO txt ----------------------------------------------------------------------------------------


def save_yolo(ds: BoxDataset, out_dir: str | Path, split: str = "train", copy_images: bool = True) -> Path:
    """Write ``images/<split>/`` (copies or symlinks) and ``labels/<split>/*.txt`` under ``out_dir``;
    returns the folder. Use :func:`write_data_yaml` for the Ultralytics data file."""
    out = Path(out_dir)
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    for i, (img, boxes) in enumerate(sorted(ds.items.items())):
        h, w = image_shape(img)
        stem = f"{i:06d}_{img.stem}"
        dst = out / "images" / split / f"{stem}{img.suffix}"
        if not dst.exists():
            if copy_images:
                shutil.copyfile(img, dst)
            else:
                dst.symlink_to(img.resolve())
        lines = [
            f"{b.class_id} {(b.x1 + b.x2) / 2 / w:.6f} {(b.y1 + b.y2) / 2 / h:.6f} {(b.x2 - b.x1) / w:.6f} "
            f"{(b.y2 - b.y1) / h:.6f}"
            for b in boxes
        ]
        (out / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    return out


def write_data_yaml(out_dir: str | Path, names: Sequence[str], splits: Mapping[str, str]) -> Path:
    out = Path(out_dir)
    lines = [f"path: {out.resolve()}"] + [f"{k}: images/{v}" for k, v in splits.items()] + ["names:"]
    lines += [f"  {i}: {n}" for i, n in enumerate(names)]
    p = out / "data.yaml"
    p.write_text("\n".join(lines) + "\n")
    return p


def load_yolo(images_dir: str | Path, labels_dir: str | Path | None = None,
              names: Sequence[str] = ("object",)) -> BoxDataset:  # fmt: skip
    """Images in ``images_dir``, labels ``<stem>.txt`` in ``labels_dir`` (default: the sibling
    ``labels`` folder of an ``images`` folder). A label file with no image is an error."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        what = "is not a folder" if images_dir.exists() else "no such folder"
        raise DatasetError(f"{images_dir}: {what} (expected a YOLO images folder)")
    if labels_dir is None:
        parts = list(images_dir.parts)
        if "images" not in parts:
            raise DatasetError(f"{images_dir}: give the labels folder (no 'images' in the path)")
        idx = len(parts) - 1 - parts[::-1].index("images")
        parts[idx] = "labels"
        labels_dir = Path(*parts)
    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise DatasetError(f"{labels_dir}: no such folder (the labels of {images_dir})")
    imgs = {p.stem: p for p in images_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")}
    ds = BoxDataset(names=list(names))
    for lab in sorted(labels_dir.glob("*.txt")):
        img = imgs.get(lab.stem)
        if img is None:
            raise DatasetError(f"{lab}: no image named {lab.stem}.* in {images_dir}")
        h, w = image_shape(img, lab)
        boxes = []
        for ln, line in enumerate(read_text(lab, "label file", DatasetError).splitlines(), 1):
            if not line.strip():
                continue
            try:
                c, cx, cy, bw, bh = line.split()
                x, y, ww, hh = float(cx) * w, float(cy) * h, float(bw) * w, float(bh) * h
            except ValueError:
                raise DatasetError(f"{lab}: line {ln}: expected 'class cx cy w h', got {line!r}") from None
            if not c.isdigit():
                raise DatasetError(f"{lab}: line {ln}: class {c!r} is not a class index (0, 1, ...)")
            boxes.append(Box(x - ww / 2, y - hh / 2, x + ww / 2, y + hh / 2, int(c)))
        ds.items[img] = boxes
    for img in imgs.values():
        ds.items.setdefault(img, [])  # an image with no label file: no objects (a negative)
    return ds.validate(labels_dir)


# -- DeepLabCut keypoints -> boxes -------------------------------------------------------------------


def load_dlc_boxes(
    csv_path: str | Path,
    groups: Mapping[str, Sequence[str]],
    margin_px: float = 8.0,
    min_size_px: float = 16.0,
    root: str | Path | None = None,
    skip_missing: bool = False,
) -> BoxDataset:
    """DeepLabCut ``CollectedData_*.csv`` or ``.h5`` (read by :func:`detection.dlc.read_dlc`: either row
    index form, single- or multi-animal) -> a box per group of body parts per image: the keypoints'
    bounding box grown by ``margin_px`` (at least ``min_size_px`` wide/high), clipped to the image.
    ``groups``: class name -> body parts (e.g. ``{"head": ["snout", "leftear", "rightear"]}``); the
    class order is the dict order. Image paths in the table are relative to the project root (``root``;
    default: two folders up from the table). Images where a group's parts are all unlabeled get no box
    for that class. In a multi-animal table the class names the animal: a group ``"mouse1/head"`` takes
    ``mouse1``'s parts (its class is ``head``). A row whose image is missing is an error, or with
    ``skip_missing`` a warning and the row is left out."""
    from detection.dlc import read_dlc

    csv_path = Path(csv_path)
    root = Path(root) if root is not None else csv_path.parent.parent.parent
    table = read_dlc(csv_path)
    what = "CSV" if csv_path.suffix.lower() == ".csv" else "table"
    cols: list[list[tuple[int, int]]] = []  # per class: (x column, y column) of each part
    for cname, parts in groups.items():
        who, cn = cname.split("/", 1) if "/" in cname else (None, cname)
        if table.individuals is not None and who is None:
            animals = ", ".join(dict.fromkeys(table.individuals))
            raise DatasetError(
                f"{csv_path}: class {cn!r}: a multi-animal table (individuals {animals}); name the animal: "
                f"--group {table.individuals[0]}/{cn}=..."
            )
        if table.individuals is None and who is not None:
            raise DatasetError(
                f"{csv_path}: class {cname!r}: a single-animal table has no individual {who!r}"
            )
        xy = []
        for part in parts:
            jx, jy = table.column(part, "x", who), table.column(part, "y", who)
            if jx is None or jy is None:
                raise DatasetError(f"{csv_path}: class {cn!r}: body part {part!r} not in the {what}")
            xy.append((jx, jy))
        cols.append(xy)
    ds = BoxDataset(names=list(groups))
    skipped: list[str] = []
    for key, vals in table.rows.items():
        img = root / table.rel_path(key)
        if skip_missing and not img.is_file():
            skipped.append(table.rel_path(key))
            continue
        h, w = image_shape(img, csv_path)
        boxes = []
        for ci, xy in enumerate(cols):
            pts = np.array([(vals[jx], vals[jy]) for jx, jy in xy], float).reshape(-1, 2)
            pts = pts[np.isfinite(pts).all(1)]
            if not len(pts):
                continue
            (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            hw = max((x1 - x0) / 2 + margin_px, min_size_px / 2)
            hh = max((y1 - y0) / 2 + margin_px, min_size_px / 2)
            boxes.append(Box(max(cx - hw, 0), max(cy - hh, 0), min(cx + hw, w), min(cy + hh, h), ci))
        ds.items[img] = boxes
    if skipped:
        log.warning("%s: %d rows name missing images (%s .. %s); skipped", csv_path, len(skipped),
                    skipped[0], skipped[-1])  # fmt: skip
    return ds.validate(csv_path)


def merge(datasets: Iterable[BoxDataset]) -> BoxDataset:
    dss = list(datasets)
    out = BoxDataset(names=list(dss[0].names) if dss else ["object"])
    for d in dss:
        out.items.update(d.items)
    return out


# -- Ultralytics data.yaml ---------------------------------------------------------------------------


def check_data_yaml(path: str | Path) -> list[str]:
    """Check an Ultralytics ``data.yaml`` before training; returns its class names. It must parse, name
    its classes (``names`` or ``nc``) and its ``train`` and ``val`` images; folders under its ``path``
    must exist, and those named ``images`` must hold images with valid YOLO labels (:func:`load_yolo`).
    DatasetError names the file and the key, or the label file and line, at fault."""
    path = Path(path)
    doc = read_yaml(path, "data file", DatasetError)
    if not isinstance(doc, dict):
        raise DatasetError(f"{path}: expected a mapping with 'train', 'val' and 'names'")
    raw = doc.get("names")
    if isinstance(raw, dict) and raw:
        names = [str(raw[k]) for k in sorted(raw, key=str)]
    elif isinstance(raw, list) and raw:
        names = [str(n) for n in raw]
    elif raw is None and isinstance(doc.get("nc"), int) and doc["nc"] > 0:
        names = [str(i) for i in range(doc["nc"])]
    else:
        raise DatasetError(f"{path}: names: expected a non-empty list or mapping of class names")
    for key in ("train", "val"):
        if key not in doc:
            raise DatasetError(f"{path}: lacks {key!r} (the {key} images)")
    root = Path(str(doc.get("path") or "")).expanduser()
    if not root.is_absolute():
        root = path.parent / root
        if not root.is_dir():
            return names  # Ultralytics looks for a relative 'path' under its datasets folder
    for key in ("train", "val"):
        for entry in doc[key] if isinstance(doc[key], list) else [doc[key]]:
            if not isinstance(entry, str):
                raise DatasetError(f"{path}: {key}: expected a folder or list file, got {entry!r}")
            d = root / entry
            if d.suffix == ".txt" and d.is_file():
                continue  # a list of image files
            if not d.is_dir():
                raise DatasetError(f"{path}: {key}: {d} does not exist")
            if "images" in d.parts:
                load_yolo(d, names=names)
    return names


def data_yaml_split(path: str | Path, key: str) -> BoxDataset | None:
    """The ``key`` split (``train``/``val``/``test``) of an Ultralytics data file as a BoxDataset (labels in
    the sibling ``labels`` folder), or None when the file has no such split."""
    path = Path(path)
    names = check_data_yaml(path)
    doc = read_yaml(path, "data file", DatasetError)
    entry = doc.get(key)
    if not entry:
        return None
    if not isinstance(entry, str):
        raise DatasetError(f"{path}: {key}: expected one images folder, got {entry!r}")
    root = Path(str(doc.get("path") or "")).expanduser()
    if not root.is_absolute():
        root = path.parent / root
    return load_yolo(root / entry, names=names)
