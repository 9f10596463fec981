"""Object-detector outputs -> one table of boxes (pandas DataFrame).

Columns: ``frame`` (int), ``label`` (str), ``confidence`` (0..1), ``left``, ``top``, ``width``, ``height``
(pixels, top-left origin), ``source`` (file the row came from).

* YOLO label/prediction ``.txt`` files (``class cx cy w h [conf]``, normalized to the image size),
* darknet ``detector demo ... -ext_output`` console text (the seed's paw/pellet detector logs) and
  ``detector test`` output,
* TensorBox JSON (``[{"image_path": ..., "rects": [{"x1", "y1", "x2", "y2", "score"}]}]``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analysis.errors import ImportFormatError
from analysis.io._util import load_json
from analysis.textfile import read_text

COLUMNS = ["frame", "label", "confidence", "left", "top", "width", "height", "source"]

_BOX_RE = re.compile(
    r"^\s*(?P<label>[^:]+):\s*(?P<conf>-?\d+(?:\.\d+)?)%\s*\(\s*left_x:\s*(?P<left>-?\d+(?:\.\d+)?)\s+"
    r"top_y:\s*(?P<top>-?\d+(?:\.\d+)?)\s+width:\s*(?P<w>-?\d+(?:\.\d+)?)\s+height:\s*(?P<h>-?\d+(?:\.\d+)?)\s*\)"
)
_FRAME_START = re.compile(r"^\s*Objects:\s*$|: Predicted in ")


def _frame(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=COLUMNS).astype(
        {"frame": "int64", "confidence": float, "left": float, "top": float, "width": float, "height": float}
    )


def read_darknet_text(path: str | Path) -> Any:
    """Parse darknet ``-ext_output`` text. Each ``Objects:`` line (demo) or ``...: Predicted in`` line
    (test) starts a new frame, numbered from 0; box lines ``label: 97% (left_x: .. top_y: .. width: ..
    height: ..)`` belong to the current frame. A box line before any frame start, or a line that looks like
    a box but does not parse, raises an error naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise ImportFormatError(f"{path}: cannot read ({exc.strerror})") from None
    rows: list[dict[str, Any]] = []
    frame = -1
    for n, line in enumerate(lines, 1):
        if _FRAME_START.search(line):
            frame += 1
            continue
        if "left_x" not in line:
            continue
        m = _BOX_RE.match(line)
        if m is None:
            raise ImportFormatError(f"{path}: line {n}: malformed darknet box line {line.strip()!r}")
        if frame < 0:
            raise ImportFormatError(f"{path}: line {n}: box before the first 'Objects:' line")
        rows.append(
            {
                "frame": frame,
                "label": m["label"].strip(),
                "confidence": float(m["conf"]) / 100.0,
                "left": float(m["left"]),
                "top": float(m["top"]),
                "width": float(m["w"]),
                "height": float(m["h"]),
                "source": path.name,
            }
        )
    if frame < 0:
        raise ImportFormatError(f"{path}: no 'Objects:' or 'Predicted in' lines: not darknet output")
    df = _frame(rows)
    df.attrs["n_frames"] = frame + 1
    return df


def read_yolo_txt(
    paths: Sequence[str | Path] | str | Path,
    image_size: tuple[int, int],
    class_names: Sequence[str] | None = None,
) -> Any:
    """YOLO ``.txt`` files (one per image, sorted = frame order; a folder is read whole).

    ``image_size`` (width, height) converts normalized centres to pixel boxes. A missing confidence
    column (labels) reads as 1.0.
    """
    if isinstance(paths, (str, Path)) and Path(paths).is_dir():
        files = sorted(Path(paths).glob("*.txt"))
    elif isinstance(paths, (str, Path)):
        files = [Path(paths)]
    else:
        files = [Path(p) for p in paths]
    w_img, h_img = image_size
    rows = []
    for frame, f in enumerate(files):
        text = read_text(f, "YOLO label file", ImportFormatError)
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                if len(parts) not in (5, 6):
                    raise ValueError
                cls = int(parts[0])
                cx, cy, bw, bh = (float(v) for v in parts[1:5])
                conf = float(parts[5]) if len(parts) == 6 else 1.0
            except ValueError:
                raise ImportFormatError(
                    f"{f}: line {n}: expected 'class cx cy w h [conf]', got {line!r}"
                ) from None
            if class_names is not None and not 0 <= cls < len(class_names):
                raise ImportFormatError(
                    f"{f}: line {n}: class {cls} not among {len(class_names)} class names"
                )
            rows.append(
                {
                    "frame": frame,
                    "label": class_names[cls] if class_names is not None else str(cls),
                    "confidence": conf,
                    "left": (cx - bw / 2) * w_img,
                    "top": (cy - bh / 2) * h_img,
                    "width": bw * w_img,
                    "height": bh * h_img,
                    "source": f.name,
                }
            )
    df = _frame(rows)
    df.attrs["n_frames"] = len(files)
    return df


def read_tensorbox_json(path: str | Path, label: str = "object") -> Any:
    """TensorBox prediction JSON: a list with one entry per image (frame order) holding ``rects``."""
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, list):
        raise ImportFormatError(f"{path}: expected a JSON list of images with 'rects'")
    rows = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("rects"), list):
            raise ImportFormatError(f"{path}: item [{i}] has no 'rects' list")
        for j, r in enumerate(entry["rects"]):
            try:
                x1, y1, x2, y2 = (float(r[k]) for k in ("x1", "y1", "x2", "y2"))
                score = float(r.get("score", 1.0))
            except (KeyError, TypeError, ValueError):
                raise ImportFormatError(
                    f"{path}: item [{i}].rects[{j}] lacks numeric x1, y1, x2, y2"
                ) from None
            rows.append(
                {
                    "frame": i,
                    "label": label,
                    "confidence": score,
                    "left": min(x1, x2),
                    "top": min(y1, y2),
                    "width": abs(x2 - x1),
                    "height": abs(y2 - y1),
                    "source": str(entry.get("image_path", path.name)),
                }
            )
    df = _frame(rows)
    df.attrs["n_frames"] = len(data)
    return df


def best_box_centers(df: Any, label: str, n_frames: int) -> Any:
    """(n_frames, 2) centre of the most confident ``label`` box per frame (NaN where none) plus (n_frames,)
    confidence: the 2-D point track a detector gives for triangulation."""
    import numpy as np

    pts = np.full((n_frames, 2), np.nan)
    conf = np.zeros(n_frames)
    sub = df[df["label"] == label].sort_values("confidence")
    for row in sub.itertuples():
        if 0 <= row.frame < n_frames:
            pts[row.frame] = (row.left + row.width / 2, row.top + row.height / 2)
            conf[row.frame] = row.confidence
    return pts, conf
