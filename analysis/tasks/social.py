"""Social tasks: three-chamber sociability and two-mouse interaction, from 2-D tracks (T, 2) in pixels or
cm (the geometry and thresholds use the same unit); NaN = not detected.

Missing and uncertain points go through :mod:`analysis.events` (confidence cut, gaps filled up to a stated
maximum, events with a minimum duration and gap). Two mice keep their identities through label swaps and
lost detections (:func:`repair_identities`); the ``social`` command's reading, pair choice and outputs
(tables, plots, the annotated video) are at the end of this module."""

from __future__ import annotations

import itertools
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


# defaults of the three-chamber analysis (the command's --help and summary state them)
TC_MAX_GAP_S = 3.0
TC_MIN_BOUT_S = 0.2
TC_MIN_GAP_S = 0.2


def three_chamber(
    t_s: np.ndarray,
    head_t2: np.ndarray,
    geometry: ThreeChamberGeometry,
    min_bout_s: float = TC_MIN_BOUT_S,
    *,
    confidence: np.ndarray | None = None,
    min_confidence: float = 0.0,
    max_gap_s: float = TC_MAX_GAP_S,
    min_gap_s: float = TC_MIN_GAP_S,
) -> dict[str, Any]:
    """Chamber occupancy, transitions, cup interaction time/percentage/bouts, distance and velocity.

    The head track is cleaned first (:func:`analysis.events.clean_track`): points whose ``confidence``
    (T,) is below ``min_confidence`` are removed, then gaps of at most ``max_gap_s`` are filled linearly.
    A chamber visit or a cup bout lasts at least ``min_bout_s``; bouts less than ``min_gap_s`` apart are
    one bout, and a shorter stay in another chamber (a false point, a flicker at a wall) is no visit, so a
    missed or false frame never splits one or adds transitions.

    Returns a dict: ``chamber`` (T,) names ('' = outside/still missing), ``occupancy_s`` per chamber,
    ``missing_s`` (time still missing after filling), ``visits`` [(start, end, chamber)],
    ``transitions`` (changes of chamber between visits), per cup ``interaction_s``, ``interaction_pct``
    (of the session), ``bouts`` ((start, end) indices) and ``n_bouts``; ``sociability_index`` for the first
    two cups ((A - B) / (A + B)); ``distance``, ``mean_speed`` and ``speed`` (T,); ``head`` (T, 2) the
    cleaned track and ``quality`` (:class:`analysis.events.DataQuality`).
    """
    from analysis.events import clean_track, events, visits

    t = np.asarray(t_s, dtype=np.float64)
    raw = _track(head_t2, "head")
    if len(t) != len(raw) or len(t) < 2:
        raise AnalysisError(f"t_s has {len(t)} samples, head {len(raw)} (need >= 2, equal)")
    head, quality = clean_track(t, raw, confidence, min_confidence, max_gap_s)
    dt = np.diff(t, append=t[-1] + np.median(np.diff(t)))
    ok = np.isfinite(head).all(axis=1)
    chamber = np.full(len(t), "", dtype=object)
    for name, (x0, y0, x1, y1) in geometry.chambers.items():
        inside = ok & (head[:, 0] >= x0) & (head[:, 0] < x1) & (head[:, 1] >= y0) & (head[:, 1] < y1)
        chamber[inside] = name
    occupancy = {name: float(dt[chamber == name].sum()) for name in geometry.chambers}
    stays = visits(t, chamber, min_bout_s)
    transitions = sum(1 for v, w in itertools.pairwise(stays) if v[2] != w[2])
    total = float(dt.sum())
    cups: dict[str, dict[str, Any]] = {}
    for name, (cx, cy, r) in geometry.cups.items():
        d = np.linalg.norm(head - np.array([cx, cy]), axis=1)
        near = ok & (d <= r + geometry.interaction_margin)
        bouts = events(t, near, min_bout_s, min_gap_s)
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
        "missing_s": float(dt[~ok].sum()),
        "visits": stays,
        "transitions": transitions,
        "cups": cups,
        "sociability_index": si,
        "distance": float(np.nansum(steps)),
        "mean_speed": float(np.nanmean(sp)) if np.isfinite(sp).any() else float("nan"),
        "speed": sp,
        "head": head,
        "quality": quality,
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
# defaults of the two-mouse analysis (the command's --help and summary state them)
SO_MAX_GAP_S = 0.5
SO_MIN_EPOCH_S = 0.2
SO_MIN_GAP_S = 0.3
LABEL_WEIGHT_TRACKS = 2.0  # a pose tool's track labels: motion overrides them readily
LABEL_WEIGHT_CLASSES = 10.0  # detector classes (body / body_mini): motion overrides only a clear swap
LONE_WINDOW = 30  # frames: a lone detection is judged against identities resolved this close in time
CONTACT_TYPES = ("nose-to-nose", "nose-to-tail", "other", "unknown")


def _typical_step(a: np.ndarray, b: np.ndarray) -> float:
    """Median per-frame movement of the two tracks together (their own units); 1 when unknown."""
    steps = np.linalg.norm(np.diff(a, axis=0), axis=1) + np.linalg.norm(np.diff(b, axis=0), axis=1)
    steps = steps[np.isfinite(steps)]
    return float(np.median(steps)) if len(steps) and np.median(steps) > 0 else 1.0


def repair_identities(
    a_t2: np.ndarray,
    b_t2: np.ndarray,
    label_weight: float = LABEL_WEIGHT_TRACKS,
    window: int = LONE_WINDOW,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Identities of two mice that hold through label swaps and lost detections.

    ``a_t2`` / ``b_t2`` (T, 2): the positions the source labelled A and B (NaN = not detected). Over the
    frames where both are detected, the labelling (kept or exchanged) is chosen for the whole session at
    once (Viterbi): each mouse's movement between consecutive such frames costs its distance, and each
    frame whose labels are exchanged costs ``label_weight`` x the typical per-frame movement, so the labels
    are overridden only where they make both mice jump (a detector's swap), never by noise. A lone
    detection (the other mouse lost) keeps its label unless it lies closer to the other identity's position
    (interpolated between resolved frames at most ``window`` frames away on each side) by more than that
    cost: a lone detection never drags an identity to a stale position. Returns (a, b, swapped (T,) bool:
    frames whose labels were exchanged)."""
    a, b = _track(a_t2, "mouse A").copy(), _track(b_t2, "mouse B").copy()
    if a.shape != b.shape:
        raise AnalysisError(f"mouse A has shape {a.shape}, mouse B {b.shape}")
    swapped = np.zeros(len(a), dtype=bool)
    ok_a, ok_b = np.isfinite(a).all(axis=1), np.isfinite(b).all(axis=1)
    full = np.flatnonzero(ok_a & ok_b)
    cost = label_weight * _typical_step(a, b)
    if len(full):
        fa, fb = a[full], b[full]
        same = np.linalg.norm(np.diff(fa, axis=0), axis=1) + np.linalg.norm(np.diff(fb, axis=0), axis=1)
        cross = np.linalg.norm(fb[1:] - fa[:-1], axis=1) + np.linalg.norm(fa[1:] - fb[:-1], axis=1)
        # Viterbi over two states (0 labels kept, 1 exchanged); cross = the labelling changes between frames
        keep, swap = 0.0, cost
        back = np.zeros((len(full), 2), dtype=bool)  # True: came from the other state
        for j in range(1, len(full)):
            k_from_k, k_from_s = keep + same[j - 1], swap + cross[j - 1]
            s_from_s, s_from_k = swap + same[j - 1], keep + cross[j - 1]
            back[j] = (k_from_s < k_from_k, s_from_k < s_from_s)
            keep, swap = min(k_from_k, k_from_s), min(s_from_s, s_from_k) + cost
        state = int(swap < keep)
        states = np.zeros(len(full), dtype=bool)
        for j in range(len(full) - 1, -1, -1):
            states[j] = bool(state)
            if back[j, state]:
                state = 1 - state
        swapped[full[states]] = True
        a[full[states]], b[full[states]] = fb[states], fa[states]
    lone = np.flatnonzero(ok_a ^ ok_b)
    if len(full) and len(lone):
        pos = np.searchsorted(full, lone)
        prev = full[np.clip(pos - 1, 0, len(full) - 1)]
        nxt = full[np.clip(pos, 0, len(full) - 1)]
        lone = lone[(np.abs(lone - prev) <= window) | (np.abs(nxt - lone) <= window)]
        exp_a = np.stack([np.interp(lone, full, a[full, d]) for d in range(2)], axis=1)
        exp_b = np.stack([np.interp(lone, full, b[full, d]) for d in range(2)], axis=1)
        is_a = ok_a[lone][:, None]
        p = np.where(is_a, a[lone], b[lone])
        d_own = np.linalg.norm(p - np.where(is_a, exp_a, exp_b), axis=1)
        d_other = np.linalg.norm(p - np.where(is_a, exp_b, exp_a), axis=1)
        flip = lone[d_other + cost < d_own]
        a[flip], b[flip] = b[flip].copy(), a[flip].copy()
        swapped[flip] = True
    return a, b, swapped


def apply_swaps(parts: dict[str, np.ndarray], other: dict[str, np.ndarray], swapped: np.ndarray) -> None:
    """Exchange every part of two mice in the ``swapped`` (T,) frames, in place."""
    for role in parts.keys() & other.keys():
        pa, pb = parts[role], other[role]
        pa[swapped], pb[swapped] = pb[swapped].copy(), pa[swapped].copy()


def _contact_type(pair_d: dict[str, np.ndarray], s: int, e: int, part_threshold: float) -> str:
    """The epoch's type: the closest part pair whose median distance (over the frames where both parts are
    seen) is under ``part_threshold``; ``other`` when parts are seen but none is that close; ``unknown``
    when no pair is ever seen in the epoch."""
    med = {}
    for kind, d in pair_d.items():
        seen = d[s : e + 1][np.isfinite(d[s : e + 1])]
        if len(seen):
            med[kind] = float(np.median(seen))
    if not med:
        return "unknown"
    kind = min(med, key=lambda k: med[k])
    return kind if med[kind] <= part_threshold else "other"


def two_mouse_interaction(
    t_s: np.ndarray,
    parts_a: dict[str, np.ndarray],
    parts_b: dict[str, np.ndarray],
    contact_threshold: float,
    min_epoch_s: float = SO_MIN_EPOCH_S,
    *,
    part_threshold: float | None = None,
    min_gap_s: float = SO_MIN_GAP_S,
    max_gap_s: float = SO_MAX_GAP_S,
) -> dict[str, Any]:
    """Body-centre distance over time, close-contact epochs and their types.

    ``parts_a`` / ``parts_b``: part -> (T, 2) track of each mouse (identities already repaired); ``center``
    is required, ``nose`` and ``tail`` (tail base) give the types. Every track's gaps of at most
    ``max_gap_s`` are filled first. An epoch is a stretch with the centres under ``contact_threshold``
    lasting at least ``min_epoch_s``; stretches less than ``min_gap_s`` apart are one epoch. Its type is
    ``nose-to-nose`` or ``nose-to-tail`` when that pair's median distance is within ``part_threshold``
    (default half the contact threshold), ``other`` when the parts are seen but not that close, ``unknown``
    when they are not seen. Distances are in the tracks' unit.

    Returns ``distance`` (T,), ``epochs`` [(start, end, type, min distance)], ``by_type`` {type: {n,
    duration_s}}, ``speed_a``/``speed_b`` (T,), ``center_a``/``center_b`` (T, 2) filled centres.
    """
    from analysis.events import events, fill_gaps

    t = np.asarray(t_s, dtype=np.float64)
    for who, parts in (("A", parts_a), ("B", parts_b)):
        if "center" not in parts:
            raise AnalysisError(f"mouse {who} lacks part center (has {', '.join(sorted(parts)) or 'none'})")
    a = {k: fill_gaps(t, _track(v, f"mouse A {k}"), max_gap_s)[0] for k, v in parts_a.items()}
    b = {k: fill_gaps(t, _track(v, f"mouse B {k}"), max_gap_s)[0] for k, v in parts_b.items()}
    part_threshold = contact_threshold / 2 if part_threshold is None else part_threshold
    dist = np.linalg.norm(a["center"] - b["center"], axis=1)
    close = np.nan_to_num(dist, nan=np.inf) < contact_threshold
    pair_d: dict[str, np.ndarray] = {}
    if "nose" in a and "nose" in b:
        pair_d["nose-to-nose"] = np.linalg.norm(a["nose"] - b["nose"], axis=1)
    if "tail" in a and "tail" in b and "nose" in a and "nose" in b:
        ab = np.linalg.norm(a["nose"] - b["tail"], axis=1)
        ba = np.linalg.norm(b["nose"] - a["tail"], axis=1)
        pair_d["nose-to-tail"] = np.where(np.isnan(ab), ba, np.where(np.isnan(ba), ab, np.fmin(ab, ba)))
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
    epochs = []
    by_type = {k: {"n": 0, "duration_s": 0.0} for k in CONTACT_TYPES}
    for s, e in events(t, close, min_epoch_s, min_gap_s):
        kind = _contact_type(pair_d, s, e, part_threshold)
        epochs.append((s, e, kind, float(np.nanmin(dist[s : e + 1]))))
        by_type[kind]["n"] += 1
        by_type[kind]["duration_s"] += float(t[e] - t[s] + dt)
    return {
        "distance": dist,
        "epochs": epochs,
        "by_type": by_type,
        "speed_a": _speed(t, a["center"]),
        "speed_b": _speed(t, b["center"]),
        "center_a": a["center"],
        "center_b": b["center"],
    }


def boxes_to_tracks(
    boxes: Any, classes: tuple[str, str], n_frames: int, min_confidence: float = 0.0
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Two mice's body-box centres from a detector's box table (``analysis.io.detections`` columns).

    Where the boxes carry the two ``classes`` (the seed's ``body`` and ``body_mini``: the mouse wearing
    the miniscope), mouse A is the most confident box of the first class in each frame and mouse B of the
    second: identity by class. Otherwise the two most confident boxes of each frame are taken in no
    particular order (identity then comes from movement alone). Boxes under ``min_confidence`` are left
    out. Returns (A (T, 2), B (T, 2), whether the classes were used)."""
    df = boxes[(boxes["confidence"] >= min_confidence) & (boxes["frame"] >= 0) & (boxes["frame"] < n_frames)]
    cx = (df["left"] + df["width"] / 2).to_numpy()
    cy = (df["top"] + df["height"] / 2).to_numpy()
    frame = df["frame"].to_numpy()
    label = df["label"].astype(str).to_numpy()
    conf = df["confidence"].to_numpy()
    out = [np.full((n_frames, 2), np.nan), np.full((n_frames, 2), np.nan)]
    by_class = bool(np.isin(label, classes).any())
    order = np.argsort(conf, kind="stable")  # later (more confident) boxes overwrite earlier ones
    if by_class:
        for i, cls in enumerate(classes):
            sel = order[label[order] == cls]
            out[i][frame[sel]] = np.stack([cx[sel], cy[sel]], axis=1)
    else:
        rank = np.zeros(len(df), dtype=int)
        seen: dict[int, int] = {}
        for j in order[::-1]:  # most confident first
            rank[j] = seen.get(int(frame[j]), 0)
            seen[int(frame[j])] = rank[j] + 1
        for i in (0, 1):
            sel = rank == i
            out[i][frame[sel]] = np.stack([cx[sel], cy[sel]], axis=1)
    return out[0], out[1], by_class


def plot_contact_distance(
    t_s: np.ndarray, result: dict[str, Any], threshold: float, path: str | Path
) -> Path:
    """The paper's distance-time plot: body-centre distance with the contact epochs shaded."""
    plt = pyplot()

    t = np.asarray(t_s, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(t, result["distance"], lw=1, color="k")
    ax.axhline(threshold, color="0.5", ls="--", lw=1)
    colors = {"nose-to-nose": "tab:red", "nose-to-tail": "tab:blue", "other": "tab:green"}
    for s, e, kind, _ in result["epochs"]:
        ax.axvspan(t[s], t[e], color=colors.get(kind, "tab:gray"), alpha=0.3, lw=0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("body-centre distance")
    return save(fig, path)


# ------------------------------------------------------------------------------------ the social command
SOCIAL_BOXES = (
    "body boxes: a darknet detector log .txt (the seed's body/body_mini classes) or a folder of YOLO .txt "
    "files (with --image-size)"
)
SOCIAL_FORMATS = (
    "pose files with two or more individuals (DeepLabCut .csv/.h5, SLEAP .h5/.slp, JABS .h5) and "
    + SOCIAL_BOXES
)
JABS_PARTS = (("nose", "nose"), ("center", "center_spine"), ("tail", "base_tail"))  # --parts for JABS
_LENGTH_UNITS = {"px": None, "cm": 1.0, "mm": 0.1}


def parse_length(text: str, what: str) -> tuple[float, str]:
    """'5cm', '50mm', '40px' or '40' (pixels) -> (value, 'cm' or 'px'); mm become cm."""
    raw = str(text).strip().lower()
    unit = next((u for u in ("px", "cm", "mm") if raw.endswith(u)), "px")
    number = raw[: -len(unit)] if raw.endswith(unit) else raw
    try:
        value = float(number)
    except ValueError:
        raise AnalysisError(f"{what} {text!r}: expected a distance like 5cm, 50mm or 40 (pixels)") from None
    if not np.isfinite(value) or value <= 0:
        raise AnalysisError(f"{what} {text!r}: must be a positive distance")
    factor = _LENGTH_UNITS[unit]
    return (value * factor, "cm") if factor is not None else (value, "px")


@dataclass(frozen=True)
class SocialOptions:
    """The ``social`` command's settings (see its --help); lengths as (value, 'cm' | 'px')."""

    fps: float
    threshold: tuple[float, str]
    part_threshold: tuple[float, str] | None = None
    px_per_cm: float | None = None
    parts: tuple[str, str, str] = ("nose", "center", "tail")
    classes: tuple[str, str] = ("body", "body_mini")
    image_size: tuple[int, int] | None = None
    min_confidence: float | None = None
    max_gap_s: float = SO_MAX_GAP_S
    min_epoch_s: float = SO_MIN_EPOCH_S
    min_gap_s: float = SO_MIN_GAP_S

    @classmethod
    def from_args(cls, args: Any) -> SocialOptions:
        names = tuple(p.strip() for p in args.parts.split(","))
        if len(names) != 3 or not all(names):
            raise AnalysisError(f"--parts {args.parts!r}: expected nose,center,tail")
        classes = tuple(c.strip() for c in args.classes.split(","))
        if len(classes) != 2 or not all(classes) or classes[0] == classes[1]:
            raise AnalysisError(f"--classes {args.classes!r}: expected two class names, e.g. body,body_mini")
        size = None
        if args.image_size:
            w, sep, h = args.image_size.lower().partition("x")
            if not sep or not w.isdigit() or not h.isdigit() or int(w) <= 0 or int(h) <= 0:
                raise AnalysisError(f"--image-size {args.image_size!r}: expected WxH, e.g. 640x480")
            size = (int(w), int(h))
        for name in ("fps", "px_per_cm"):
            v = getattr(args, name)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise AnalysisError(f"--{name.replace('_', '-')} {v}: must be > 0")
        for name in ("max_gap", "min_epoch", "min_gap"):
            v = getattr(args, name)
            if not (np.isfinite(v) and v >= 0):
                raise AnalysisError(f"--{name.replace('_', '-')} {v}: must be >= 0 seconds")
        return cls(
            fps=args.fps,
            threshold=parse_length(args.threshold, "--threshold"),
            part_threshold=parse_length(args.part_threshold, "--part-threshold")
            if args.part_threshold
            else None,
            px_per_cm=args.px_per_cm,
            parts=(names[0], names[1], names[2]),
            classes=(classes[0], classes[1]),
            image_size=size,
            min_confidence=args.min_confidence,
            max_gap_s=args.max_gap,
            min_epoch_s=args.min_epoch,
            min_gap_s=args.min_gap,
        )


@dataclass
class SocialInput:
    """Tracks read for ``social``: per individual, role (nose/center/tail) -> (T, 2) px and (T,)
    confidence; ``identity`` is 'classes', 'tracks' or 'movement' (what the source's labels are worth)."""

    source: str
    format: str
    individuals: list[str]
    points: dict[str, dict[str, np.ndarray]]
    confidence: dict[str, dict[str, np.ndarray]]
    identity: str
    n_frames: int
    px_per_cm: float | None = None


def _is_darknet_log(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(65536).decode("utf-8", "replace")
    except OSError:
        return False
    return "Objects:" in head or "Predicted in" in head or "left_x" in head


def load_social_input(path: Path, opts: SocialOptions, video: int | str | None = None) -> SocialInput:
    """Read a pose file (via :func:`analysis.io.pose.read_pose`) or body boxes (darknet log, YOLO .txt
    folder); a file in none of these formats is one error that lists the formats read."""
    from analysis.errors import ImportFormatError
    from analysis.io.detections import read_darknet_text, read_yolo_txt
    from analysis.io.pose import read_pose

    path = Path(path)
    if not path.exists():
        raise AnalysisError(f"{path}: not found (social reads {SOCIAL_FORMATS})")
    boxes = None
    if path.is_file() and path.suffix.lower() == ".txt":
        if not _is_darknet_log(path):
            raise AnalysisError(
                f"{path}: not a darknet detector log (no 'Objects:' lines); social reads {SOCIAL_FORMATS}"
            )
        boxes, fmt = read_darknet_text(path), "darknet"
    elif path.is_dir() and any(path.glob("*.txt")) and not any(path.glob("*.json")):
        if opts.image_size is None:
            raise AnalysisError(f"{path}: a folder of YOLO .txt files needs --image-size WxH")
        boxes = read_yolo_txt(path, opts.image_size, class_names=list(opts.classes))
        fmt = "yolo"
    if boxes is not None:
        n = int(boxes.attrs["n_frames"])
        cut = opts.min_confidence if opts.min_confidence is not None else 0.0
        a, b, by_class = boxes_to_tracks(boxes, opts.classes, n, cut)
        names = list(opts.classes) if by_class else ["mouse0", "mouse1"]
        ones = np.ones(n)
        return SocialInput(
            str(path),
            fmt,
            names,
            {names[0]: {"center": a}, names[1]: {"center": b}},
            {names[0]: {"center": ones}, names[1]: {"center": ones}},
            "classes" if by_class else "movement",
            n,
        )
    try:
        table = read_pose(path, video=video).contiguous()
    except ImportFormatError as exc:
        if "formats read" in str(exc):  # the pose readers listed theirs
            raise AnalysisError(f"{exc}; social also reads {SOCIAL_BOXES}") from None
        raise AnalysisError(f"{exc}; social reads {SOCIAL_FORMATS}") from None
    roles = dict(zip(("nose", "center", "tail"), opts.parts, strict=True))
    if opts.parts == SocialOptions.parts and table.meta.get("format") == "jabs":
        roles = dict(JABS_PARTS)
    if roles["center"] not in table.bodyparts:
        raise AnalysisError(
            f"{path}: no body part {roles['center']!r} for the centre (has {', '.join(table.bodyparts)}); "
            "set --parts nose,center,tail"
        )
    points: dict[str, dict[str, np.ndarray]] = {}
    conf: dict[str, dict[str, np.ndarray]] = {}
    for i, ind in enumerate(table.individuals):
        points[ind], conf[ind] = {}, {}
        for role, part in roles.items():
            if part in table.bodyparts:
                k = table.bodyparts.index(part)
                points[ind][role] = np.asarray(table.points[:, i, k, :2], dtype=np.float64)
                conf[ind][role] = np.asarray(table.confidence[:, i, k], dtype=np.float64)
    scale = None
    for key, invert in (("px_per_cm", False), ("cm_per_pixel", True)):
        v = table.meta.get(key)
        if isinstance(v, (int, float)) and np.isfinite(v) and v > 0:
            scale = 1.0 / float(v) if invert else float(v)
            break
    return SocialInput(
        str(path),
        str(table.meta.get("format", "pose")),
        list(table.individuals),
        points,
        conf,
        "tracks",
        table.n_frames,
        scale,
    )


def _choose_pairs(individuals: list[str], pair: str | None, source: str) -> list[tuple[str, str]]:
    if pair is None:
        if len(individuals) != 2:
            raise AnalysisError(
                f"{source}: {len(individuals)} individuals ({', '.join(individuals)}); choose two with "
                "--pair ID1,ID2 or every pair with --pair all"
            )
        return [(individuals[0], individuals[1])]
    if pair.strip().lower() == "all":
        if len(individuals) < 2:
            raise AnalysisError(f"{source}: {len(individuals)} individual(s), a pair needs 2")
        return [(a, b) for i, a in enumerate(individuals) for b in individuals[i + 1 :]]
    ids = [p.strip() for p in pair.split(",")]
    out = []
    for p in ids:
        if p in individuals:
            out.append(p)
        elif p.isdigit() and int(p) < len(individuals):
            out.append(individuals[int(p)])
        else:
            raise AnalysisError(
                f"--pair {pair!r}: no individual {p!r} in {source} (has {', '.join(individuals)})"
            )
    if len(out) != 2 or out[0] == out[1]:
        raise AnalysisError(
            f"--pair {pair!r}: expected two different individuals, e.g. {','.join(individuals[:2])}"
        )
    return [(out[0], out[1])]


def social_pairs(
    data: SocialInput,
    opts: SocialOptions,
    pair: str | None = None,
    out_dir: Path | None = None,
    annotate: Path | None = None,
) -> list[dict[str, Any]]:
    """Analyse each chosen pair (:func:`repair_identities`, :func:`two_mouse_interaction`); with
    ``out_dir``, write per pair ``social_tracks.csv`` (time, both centres, distance, speeds, contact,
    relabelled), ``distance.png`` and ``trajectories.png`` (in a subfolder per pair when there are
    several), and with ``annotate`` (the video the tracks come from) ``annotated.mp4``
    (:func:`write_annotated_video`). Returns one summary dict per pair."""
    from analysis.events import confidence_cut, default_min_confidence, fill_gaps

    pairs = _choose_pairs(data.individuals, pair, data.source)
    scale = opts.px_per_cm or data.px_per_cm
    lengths = {"--threshold": opts.threshold}
    if opts.part_threshold is not None:
        lengths["--part-threshold"] = opts.part_threshold
    if scale is None:
        for name, (_, unit) in lengths.items():
            if unit == "cm":
                raise AnalysisError(
                    f"{name} in cm needs the image scale: give --px-per-cm ({data.source} has no scale)"
                )
        unit, to_unit = "px", 1.0
    else:
        unit, to_unit = "cm", 1.0 / scale

    def length(v: tuple[float, str]) -> float:
        return v[0] * to_unit if v[1] == "px" else v[0]

    threshold = length(opts.threshold)
    part_threshold = length(opts.part_threshold) if opts.part_threshold else threshold / 2
    cut = opts.min_confidence if opts.min_confidence is not None else default_min_confidence(data.format)
    t = np.arange(data.n_frames) / opts.fps
    weight = {"classes": LABEL_WEIGHT_CLASSES, "tracks": LABEL_WEIGHT_TRACKS, "movement": 0.0}[data.identity]
    results = []
    for ida, idb in pairs:
        parts: list[dict[str, np.ndarray]] = []
        quality = {}
        for ind in (ida, idb):
            d = {}
            for role, xy in data.points[ind].items():
                d[role] = confidence_cut(xy, data.confidence[ind][role], cut)[0] * to_unit
            parts.append(d)
        _, _, swapped = repair_identities(parts[0]["center"], parts[1]["center"], label_weight=weight)
        apply_swaps(parts[0], parts[1], swapped)
        for ind, d, raw in ((ida, parts[0], data.points[ida]), (idb, parts[1], data.points[idb])):
            before = ~np.isfinite(raw["center"]).all(axis=1)
            now = ~np.isfinite(d["center"]).all(axis=1)
            filled = fill_gaps(t, d["center"], opts.max_gap_s)[1]
            quality[ind] = {
                "frames": data.n_frames,
                "missing_in_source": int(before.sum()),
                "cut_low_confidence": int((now & ~before).sum()),
                "filled": int(filled.sum()),
                "still_missing": int((now & ~filled).sum()),
            }
        res = two_mouse_interaction(
            t,
            parts[0],
            parts[1],
            threshold,
            opts.min_epoch_s,
            part_threshold=part_threshold,
            min_gap_s=opts.min_gap_s,
            max_gap_s=opts.max_gap_s,
        )
        epochs = [
            {"start_s": t[s], "end_s": t[e] + 1 / opts.fps, "type": k, "min_distance": d}
            for s, e, k, d in res["epochs"]
        ]
        summary: dict[str, Any] = {
            "individuals": [ida, idb],
            "units": unit,
            "px_per_cm": scale,
            "identity": {
                "method": data.identity,
                "frames_swapped": int(swapped.sum()),
                "swap_events": len(true_runs(swapped)),
            },
            "criteria": {
                "contact_distance": threshold,
                "part_distance": part_threshold,
                "min_confidence": cut,
                "max_gap_s": opts.max_gap_s,
                "min_epoch_s": opts.min_epoch_s,
                "min_gap_s": opts.min_gap_s,
            },
            "frames": quality,
            "contact_s": sum(v["duration_s"] for v in res["by_type"].values()),
            "by_type": res["by_type"],
            "mean_speed": {
                ida: float(np.nanmean(res["speed_a"])) if np.isfinite(res["speed_a"]).any() else None,
                idb: float(np.nanmean(res["speed_b"])) if np.isfinite(res["speed_b"]).any() else None,
            },
            "epochs": epochs,
        }
        results.append(summary)
        if out_dir is not None:
            folder = Path(out_dir) if len(pairs) == 1 else Path(out_dir) / f"{ida}-{idb}"
            _write_pair(folder, t, res, swapped, summary, threshold)
            if annotate is not None:
                px = tuple({k: v / to_unit for k, v in d.items()} for d in parts)
                summary["video"] = write_annotated_video(
                    annotate, folder / "annotated.mp4", (px[0], px[1]), (ida, idb), res["epochs"], opts.fps
                )
    return results


def _write_pair(
    folder: Path, t: np.ndarray, res: dict[str, Any], swapped: np.ndarray, summary: dict[str, Any], thr: float
) -> None:
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    unit = summary["units"]
    contact = np.zeros(len(t), dtype=bool)
    for s, e, *_ in res["epochs"]:
        contact[s : e + 1] = True
    ida, idb = summary["individuals"]
    pd.DataFrame(
        {
            "t_s": t,
            f"{ida}_x_{unit}": res["center_a"][:, 0],
            f"{ida}_y_{unit}": res["center_a"][:, 1],
            f"{idb}_x_{unit}": res["center_b"][:, 0],
            f"{idb}_y_{unit}": res["center_b"][:, 1],
            f"distance_{unit}": res["distance"],
            f"{ida}_speed_{unit}_s": res["speed_a"],
            f"{idb}_speed_{unit}_s": res["speed_b"],
            "contact": contact,
            "swapped": swapped,
        }
    ).to_csv(folder / "social_tracks.csv", index=False, float_format="%.4f")
    plot_contact_distance(t, res, thr, folder / "distance.png")
    plot_trajectories(t, res, summary, folder / "trajectories.png")


def plot_trajectories(
    t_s: np.ndarray, res: dict[str, Any], summary: dict[str, Any], path: str | Path
) -> Path:
    """Both mice's centre paths, contact epochs marked, and their speeds over time."""
    plt = pyplot()
    ida, idb = summary["individuals"]
    unit = summary["units"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for c, name, color in ((res["center_a"], ida, "tab:blue"), (res["center_b"], idb, "tab:orange")):
        ax.plot(c[:, 0], c[:, 1], lw=0.7, color=color, label=name)
    for s, e, *_ in res["epochs"]:
        mid = (res["center_a"][s : e + 1] + res["center_b"][s : e + 1]) / 2
        ax.plot(mid[:, 0], mid[:, 1], ".", ms=2, color="tab:red")
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    ax.set_title(f"centre paths ({unit}); contacts in red")
    ax2.plot(t_s, res["speed_a"], lw=0.6, color="tab:blue", label=ida)
    ax2.plot(t_s, res["speed_b"], lw=0.6, color="tab:orange", label=idb)
    ax2.set_xlabel("time (s)")
    ax2.set_ylabel(f"speed ({unit}/s)")
    ax2.legend(fontsize=8)
    return save(fig, path)


def write_annotated_video(
    video: str | Path,
    out: str | Path,
    parts_px: tuple[dict[str, np.ndarray], dict[str, np.ndarray]],
    names: tuple[str, str],
    epochs: list[tuple[int, int, str, float]],
    fps: float,
) -> dict[str, int]:
    """The seed's annotated social video: each mouse's body (a box around its centre, or its nose - centre
    - tail line when those are tracked) and identity in its own colour, and during a contact epoch its
    type in a banner. ``parts_px``: per mouse, part -> (T, 2) image pixels (identities repaired); row k is
    video frame k. Written with PyAV as H.264 in Matroska/MP4 (libx264 crf 18). Returns the frames drawn
    and the counts of video frames and track rows, which may differ (the shorter one ends the video)."""
    import av
    import cv2

    video, out = Path(video), Path(out)
    cap = cv2.VideoCapture(str(video))
    if not video.is_file() or not cap.isOpened():
        raise AnalysisError(f"{video}: cannot open video")
    n_rows = len(parts_px[0]["center"])
    kind = np.full(n_rows, "", dtype=object)
    for s, e, what, _ in epochs:
        kind[s : e + 1] = what
    colors = ((255, 140, 0), (0, 170, 255))  # RGB: A orange, B blue
    box = 22
    container = None
    drawn = 0
    try:
        while drawn < n_rows:
            ok, bgr = cap.read()
            if not ok:
                break
            img = np.ascontiguousarray(
                cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[: bgr.shape[0] // 2 * 2, : bgr.shape[1] // 2 * 2]
            )
            if container is None:
                from fractions import Fraction

                container = av.open(str(out), "w")
                stream = container.add_stream(
                    "libx264", rate=Fraction(fps).limit_denominator(1001), options={"crf": "18"}
                )
                stream.width = img.shape[1]
                stream.height = img.shape[0]
                stream.pix_fmt = "yuv420p"
            k = drawn
            for parts, name, color in zip(parts_px, names, colors, strict=True):
                c = parts["center"][k]
                if not np.isfinite(c).all():
                    continue
                cx, cy = round(float(c[0])), round(float(c[1]))
                line = [parts[p][k] for p in ("nose", "center", "tail") if p in parts]
                if len(line) == 3 and all(np.isfinite(p).all() for p in line):
                    pts = np.round(np.array(line)).astype(np.int32)
                    cv2.polylines(img, [pts], False, color, 2)
                    cv2.circle(img, tuple(int(v) for v in pts[0]), 4, color, -1)
                else:
                    cv2.rectangle(img, (cx - box, cy - box), (cx + box, cy + box), color, 2)
                cv2.putText(img, name, (cx + box + 2, cy), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1)
            if kind[k]:
                cv2.rectangle(img, (0, 0), (img.shape[1], 22), (200, 0, 0), -1)
                cv2.putText(img, f"contact: {kind[k]}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255,) * 3, 1)
            frame = av.VideoFrame.from_ndarray(np.asarray(img, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            drawn += 1
        n_video = drawn
        while cap.grab():
            n_video += 1
    finally:
        cap.release()
        if container is not None:
            for packet in stream.encode():
                container.mux(packet)
            container.close()
    if drawn == 0:
        raise AnalysisError(f"{video}: no frames could be read")
    return {"frames_drawn": drawn, "video_frames": n_video, "track_rows": n_rows}
