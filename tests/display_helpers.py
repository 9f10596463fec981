"""Helpers shared by the display and bridge tests: wait for a running session's bridge, read screenshots."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from rig import messages as m


def wait_bridge(out: Path, timeout: float = 90) -> Path:
    """The session folder under ``out`` once its bridge has written bridge.json."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(out.glob("*/bridge.json"))
        if found:
            return found[-1].parent
        time.sleep(0.1)
    raise TimeoutError(f"no bridge.json under {out} after {timeout} s")


def qimage_rgb(img) -> np.ndarray:
    """A QImage -> (H, W, 3) uint8."""
    from PySide6 import QtGui

    img = img.convertToFormat(QtGui.QImage.Format.Format_RGB888)
    w, h, stride = img.width(), img.height(), img.bytesPerLine()
    buf = np.frombuffer(img.constBits(), np.uint8, count=stride * h).reshape(h, stride)
    return buf[:, : 3 * w].reshape(h, w, 3).copy()


def green_fraction_on_edges(rgb: np.ndarray, rect) -> float:
    """Fraction of points on the outline of ``rect`` (a QRectF in image pixels) that are box-green."""
    x1, y1, x2, y2 = rect.left(), rect.top(), rect.right(), rect.bottom()
    pts = []
    for t in np.linspace(0.1, 0.9, 12):
        x = x1 + t * (x2 - x1)
        y = y1 + t * (y2 - y1)
        pts += [(x, y1), (x, y2), (x1, y), (x2, y)]
    hits = 0
    for x, y in pts:
        xi, yi = round(x), round(y)
        patch = rgb[max(yi - 2, 0) : yi + 3, max(xi - 2, 0) : xi + 3].reshape(-1, 3).astype(int)
        if np.any((patch[:, 1] > 180) & (patch[:, 0] < 100) & (patch[:, 2] < 100)):
            hits += 1
    return hits / len(pts)


def green_pixels(rgb: np.ndarray) -> int:
    g = rgb.astype(int)
    return int(np.sum((g[..., 1] > 180) & (g[..., 0] < 100) & (g[..., 2] < 100)))


def last_stats(session_dir: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for line in (session_dir / "stats.jsonl").read_text().splitlines():
        d = json.loads(line)
        out[d["node"]] = d
    return out


def box_contains(box: m.Box, uv, margin: float = 4.0) -> bool:
    return bool(box.x1 - margin <= uv[0] <= box.x2 + margin and box.y1 - margin <= uv[1] <= box.y2 + margin)


def gui_env() -> dict[str, str]:
    """Environment for a GUI subprocess: Qt offscreen, without what importing cv2 left in os.environ."""
    import os

    env = {k: v for k, v in os.environ.items() if not (k.startswith("QT_QPA_") and "cv2" in v)}
    env["QT_QPA_PLATFORM"] = "offscreen"
    return env
