"""Social tasks: three-chamber sociability and two-mouse interaction, from 2-D tracks (T, 2) in pixels or
mm (the geometry and thresholds use the same unit); NaN = not detected."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.errors import AnalysisError
from analysis.filters import true_runs
from analysis.plotting import pyplot, save


def _track(x: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise AnalysisError(f"{what}: shape {a.shape}, expected (T, 2)")
    return a


def _bouts(t: np.ndarray, mask: np.ndarray, min_s: float) -> list[tuple[int, int]]:
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
    return [(a, b) for a, b in true_runs(mask) if t[b] - t[a] + dt >= min_s]


def _speed(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.gradient(p, t, axis=0), axis=1)


# ------------------------------------------------------------------------------------ three-chamber
@dataclass(frozen=True)
class ThreeChamberGeometry:
    """``chambers``: name -> (x0, y0, x1, y1) rectangle (x0 < x1, y0 < y1); ``cups``: name -> (cx, cy,
    radius); a head within ``radius + interaction_margin`` of a cup's centre is interacting with it. The
    first two cups, in order, are A and B of the sociability index. Bad values raise AnalysisError."""

    chambers: dict[str, tuple[float, float, float, float]]
    cups: dict[str, tuple[float, float, float]]
    interaction_margin: float = 20.0

    def __post_init__(self) -> None:
        for name, rect in self.chambers.items():
            if len(rect) != 4 or not np.isfinite(rect).all() or rect[2] <= rect[0] or rect[3] <= rect[1]:
                raise AnalysisError(
                    f"chamber {name!r}: {list(rect)} is not [x0, y0, x1, y1] with x0 < x1, y0 < y1"
                )
        for name, cup in self.cups.items():
            if len(cup) != 3 or not np.isfinite(cup).all() or cup[2] <= 0:
                raise AnalysisError(f"cup {name!r}: {list(cup)} is not [cx, cy, r] with r > 0")
        if not np.isfinite(self.interaction_margin) or self.interaction_margin < 0:
            raise AnalysisError(f"interaction_margin {self.interaction_margin} must be >= 0")

    @classmethod
    def from_dict(cls, d: Any) -> ThreeChamberGeometry:
        """From the YAML layout: ``chambers`` {name: [x0, y0, x1, y1]}, ``cups`` {name: [cx, cy, r]},
        ``interaction_margin`` (default 20)."""
        if not isinstance(d, dict):
            raise AnalysisError(f"expected a mapping with 'chambers' and 'cups', got {type(d).__name__}")
        parts: dict[str, dict[str, tuple[float, ...]]] = {}
        for key, n in (("chambers", 4), ("cups", 3)):
            items = d.get(key)
            if not isinstance(items, dict):
                raise AnalysisError(f"'{key}' must be a mapping of name: [{n} numbers]")
            try:
                parts[key] = {str(k): tuple(float(x) for x in v) for k, v in items.items()}
            except (TypeError, ValueError):
                raise AnalysisError(f"'{key}' must be a mapping of name: [{n} numbers]") from None
        try:
            margin = float(d.get("interaction_margin", 20.0))
        except (TypeError, ValueError):
            raise AnalysisError(
                f"interaction_margin {d.get('interaction_margin')!r} is not a number"
            ) from None
        return cls(parts["chambers"], parts["cups"], margin)  # type: ignore[arg-type]

    def to_dict(self, ndigits: int = 2) -> dict[str, Any]:
        """The YAML layout, values rounded to ``ndigits`` decimals."""

        def r(v: tuple[float, ...]) -> list[float]:
            return [round(float(x), ndigits) for x in v]

        return {
            "chambers": {k: r(v) for k, v in self.chambers.items()},
            "cups": {k: r(v) for k, v in self.cups.items()},
            "interaction_margin": round(float(self.interaction_margin), ndigits),
        }


def load_three_chamber_geometry(path: str | Path) -> ThreeChamberGeometry:
    """Read a geometry YAML file (see :meth:`ThreeChamberGeometry.from_dict`); errors name the file."""
    from analysis.textfile import read_yaml

    path = Path(path)
    data = read_yaml(path, "three-chamber geometry", AnalysisError)
    try:
        return ThreeChamberGeometry.from_dict(data)
    except AnalysisError as exc:
        raise AnalysisError(f"{path}: bad three-chamber geometry ({exc})") from None


def save_three_chamber_geometry(
    geometry: ThreeChamberGeometry, path: str | Path, comment: str = ""
) -> ThreeChamberGeometry:
    """Write ``geometry`` as YAML (2 decimals), read it back with :func:`load_three_chamber_geometry` and
    return what was read: the geometry the ``three-chamber`` command will use."""
    import yaml

    path = Path(path)
    d = geometry.to_dict()
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + yaml.safe_dump(d, sort_keys=False, default_flow_style=None))
    back = load_three_chamber_geometry(path)
    if back.to_dict() != d:
        raise AnalysisError(f"{path}: geometry read back differs from what was written")
    return back


def three_chamber(
    t_s: np.ndarray, head_t2: np.ndarray, geometry: ThreeChamberGeometry, min_bout_s: float = 0.2
) -> dict[str, Any]:
    """Chamber occupancy, transitions, cup interaction time/percentage/bouts, distance and velocity.

    Returns a dict: ``chamber`` (T,) names ('' = outside/undetected), ``occupancy_s`` per chamber,
    ``transitions`` (count of chamber changes), per cup ``interaction_s``, ``interaction_pct`` (of the
    session), ``bouts`` ((start, end) indices) and ``n_bouts``; ``sociability_index`` for the first two cups
    ((A - B) / (A + B)); ``distance``, ``mean_speed`` and ``speed`` (T,).
    """
    t = np.asarray(t_s, dtype=np.float64)
    head = _track(head_t2, "head")
    if len(t) != len(head) or len(t) < 2:
        raise AnalysisError(f"t_s has {len(t)} samples, head {len(head)} (need >= 2, equal)")
    dt = np.diff(t, append=t[-1] + np.median(np.diff(t)))
    ok = np.isfinite(head).all(axis=1)
    chamber = np.full(len(t), "", dtype=object)
    for name, (x0, y0, x1, y1) in geometry.chambers.items():
        inside = ok & (head[:, 0] >= x0) & (head[:, 0] < x1) & (head[:, 1] >= y0) & (head[:, 1] < y1)
        chamber[inside] = name
    occupancy = {name: float(dt[chamber == name].sum()) for name in geometry.chambers}
    known = chamber[chamber != ""]
    transitions = int(np.sum(known[1:] != known[:-1])) if len(known) > 1 else 0
    total = float(dt.sum())
    cups: dict[str, dict[str, Any]] = {}
    for name, (cx, cy, r) in geometry.cups.items():
        d = np.linalg.norm(head - np.array([cx, cy]), axis=1)
        near = ok & (d <= r + geometry.interaction_margin)
        bouts = _bouts(t, near, min_bout_s)
        cups[name] = {
            "interaction_s": float(dt[near].sum()),
            "interaction_pct": 100.0 * float(dt[near].sum()) / total,
            "bouts": bouts,
            "n_bouts": len(bouts),
        }
    names = list(geometry.cups)
    si = float("nan")
    if len(names) >= 2:
        a, b = cups[names[0]]["interaction_s"], cups[names[1]]["interaction_s"]
        si = (a - b) / (a + b) if a + b > 0 else float("nan")
    sp = _speed(t, head)
    steps = np.linalg.norm(np.diff(head, axis=0), axis=1)
    return {
        "chamber": chamber,
        "occupancy_s": occupancy,
        "transitions": transitions,
        "cups": cups,
        "sociability_index": si,
        "distance": float(np.nansum(steps)),
        "mean_speed": float(np.nanmean(sp)),
        "speed": sp,
    }


def plot_three_chamber(head_t2: np.ndarray, geometry: ThreeChamberGeometry, path: str | Path) -> Path:
    """Head trajectory over the chambers (rectangles) and cups with their interaction zones, as a PNG."""
    plt = pyplot()
    from matplotlib.patches import Circle, Rectangle

    head = _track(head_t2, "head")
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (x0, y0, x1, y1) in geometry.chambers.items():
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1, ec="0.4"))
        ax.text((x0 + x1) / 2, y0, name, ha="center", va="bottom", color="0.4")
    for name, (cx, cy, r) in geometry.cups.items():
        ax.add_patch(Circle((cx, cy), r, color="tab:orange", alpha=0.6))
        ax.add_patch(Circle((cx, cy), r + geometry.interaction_margin, fill=False, ls="--", ec="tab:orange"))
        ax.text(cx, cy, name, ha="center", va="center", fontsize=8)
    ax.plot(head[:, 0], head[:, 1], lw=0.6, color="tab:blue")
    ax.set_aspect("equal")
    ax.invert_yaxis()  # image coordinates
    ax.set_title("head trajectory")
    return save(fig, path)


# ------------------------------------------------------------------------------------ two mice
def repair_identities(a_t2: np.ndarray, b_t2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fix frames where the detector swapped the two mice's labels: a frame is swapped back when exchanging
    A and B brings both closer to their last known positions. Returns (a, b, swapped (T,) bool)."""
    a, b = _track(a_t2, "mouse A").copy(), _track(b_t2, "mouse B").copy()
    if a.shape != b.shape:
        raise AnalysisError(f"mouse A has shape {a.shape}, mouse B {b.shape}")
    swapped = np.zeros(len(a), dtype=bool)
    last_a = last_b = None
    for k in range(len(a)):
        if last_a is not None and last_b is not None and np.isfinite(a[k]).all() and np.isfinite(b[k]).all():
            keep = np.linalg.norm(a[k] - last_a) + np.linalg.norm(b[k] - last_b)
            swap = np.linalg.norm(b[k] - last_a) + np.linalg.norm(a[k] - last_b)
            if swap < keep:
                a[k], b[k] = b[k].copy(), a[k].copy()
                swapped[k] = True
        if np.isfinite(a[k]).all():
            last_a = a[k]
        if np.isfinite(b[k]).all():
            last_b = b[k]
    return a, b, swapped


def two_mouse_interaction(
    t_s: np.ndarray,
    parts_a: dict[str, np.ndarray],
    parts_b: dict[str, np.ndarray],
    contact_threshold: float,
    min_epoch_s: float = 0.2,
) -> dict[str, Any]:
    """Body-centre distance over time, close-contact epochs (distance under ``contact_threshold`` for at
    least ``min_epoch_s``), and per epoch the contact type from part distances: ``nose-to-nose`` when the
    two noses are closest, ``nose-to-tail`` when a nose is closest to the other's tail base.

    ``parts_a`` / ``parts_b``: ``{"nose", "center", "tail"}`` -> (T, 2) tracks of each mouse (identities
    already repaired). Returns ``distance`` (T,), ``epochs`` [(start, end, type, min distance)],
    ``speed_a``/``speed_b`` (T,).
    """
    t = np.asarray(t_s, dtype=np.float64)
    for who, parts in (("A", parts_a), ("B", parts_b)):
        missing = {"nose", "center", "tail"} - set(parts)
        if missing:
            raise AnalysisError(f"mouse {who} lacks part(s) {', '.join(sorted(missing))}")
    a = {k: _track(v, f"mouse A {k}") for k, v in parts_a.items()}
    b = {k: _track(v, f"mouse B {k}") for k, v in parts_b.items()}
    dist = np.linalg.norm(a["center"] - b["center"], axis=1)
    close = np.nan_to_num(dist, nan=np.inf) < contact_threshold
    epochs = []
    pair_d = {
        "nose-to-nose": np.linalg.norm(a["nose"] - b["nose"], axis=1),
        "nose-to-tail": np.fmin(
            np.linalg.norm(a["nose"] - b["tail"], axis=1), np.linalg.norm(b["nose"] - a["tail"], axis=1)
        ),
    }
    for s, e in _bouts(t, close, min_epoch_s):
        med = {k: float(np.nanmedian(v[s : e + 1])) for k, v in pair_d.items()}
        kind = min(med, key=lambda k: med[k])
        epochs.append((s, e, kind, float(np.nanmin(dist[s : e + 1]))))
    return {
        "distance": dist,
        "epochs": epochs,
        "speed_a": _speed(t, a["center"]),
        "speed_b": _speed(t, b["center"]),
    }


def plot_contact_distance(
    t_s: np.ndarray, result: dict[str, Any], threshold: float, path: str | Path
) -> Path:
    """The paper's distance-time plot: body-centre distance with the contact epochs shaded."""
    plt = pyplot()

    t = np.asarray(t_s, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(t, result["distance"], lw=1, color="k")
    ax.axhline(threshold, color="0.5", ls="--", lw=1)
    colors = {"nose-to-nose": "tab:red", "nose-to-tail": "tab:blue"}
    for s, e, kind, _ in result["epochs"]:
        ax.axvspan(t[s], t[e], color=colors.get(kind, "tab:gray"), alpha=0.3, lw=0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("body-centre distance")
    return save(fig, path)
