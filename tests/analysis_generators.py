"""Truth generators with known answers for the social analyses (used by tests and scripts/bench_analyses.py).

Each generator is deterministic for a seed and returns the truth beside the imperfect observation:

* :func:`three_chamber_case`: 60 s of a head path through known chamber boundaries (4 transitions, one
  bout at each cup) seen with 5 % missed frames, 3 % false low-likelihood points and a 2 s gap.
* :func:`two_mice_case`: two mice with two known contacts (nose-to-nose, then nose-to-tail), a 15-frame
  label swap while apart and 3 % of one mouse's body boxes lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.events import events, visits
from analysis.tasks.social import ThreeChamberGeometry

ARENA = ThreeChamberGeometry(
    chambers={"left": (0, 0, 200, 300), "center": (200, 0, 400, 300), "right": (400, 0, 600, 300)},
    cups={"mouse_cup": (100, 150, 30), "empty_cup": (500, 150, 30)},
    interaction_margin=20,
)


@dataclass
class ThreeChamberCase:
    fps: float
    t_s: np.ndarray  # (T,)
    true_head: np.ndarray  # (T, 2) px
    head: np.ndarray  # (T, 2) observed, NaN = not detected
    likelihood: np.ndarray  # (T,)
    geometry: ThreeChamberGeometry
    truth: dict[str, Any] = field(default_factory=dict)


def _dwell(center: tuple[float, float], radius: float, n: int, phase: float) -> np.ndarray:
    """n samples circling slowly (one turn per 4 s at 30 fps) around ``center``."""
    a = phase + 2 * np.pi * np.arange(n) / 120
    return np.stack([center[0] + radius * np.cos(a), center[1] + radius * np.sin(a)], axis=1)


def _walk(p0: np.ndarray, p1: np.ndarray, n: int) -> np.ndarray:
    s = (np.arange(1, n + 1) / n)[:, None]
    return p0 + s * (p1 - p0)


def chamber_truth(t_s: np.ndarray, head: np.ndarray, geometry: ThreeChamberGeometry) -> dict[str, Any]:
    """Occupancy, transitions and bouts of a clean, complete path (no minimum durations: every change)."""
    dt = float(np.median(np.diff(t_s)))
    names = np.full(len(head), "", dtype=object)
    for name, (x0, y0, x1, y1) in geometry.chambers.items():
        inside = (head[:, 0] >= x0) & (head[:, 0] < x1) & (head[:, 1] >= y0) & (head[:, 1] < y1)
        names[inside] = name
    stays = visits(t_s, names, 0.0)
    cups = {}
    for name, (cx, cy, r) in geometry.cups.items():
        near = np.linalg.norm(head - np.array([cx, cy]), axis=1) <= r + geometry.interaction_margin
        cups[name] = {"interaction_s": float(near.sum() * dt), "n_bouts": len(events(t_s, near, 0.0, 0.0))}
    return {
        "occupancy_s": {n: float((names == n).sum() * dt) for n in geometry.chambers},
        "transitions": len(stays) - 1,
        "cups": cups,
    }


def three_chamber_case(
    seed: int = 0,
    fps: float = 30.0,
    missed: float = 0.05,
    false: float = 0.03,
    gap_s: float = 2.0,
    noise_px: float = 0.5,
) -> ThreeChamberCase:
    """60 s: at the mouse cup (left), centre (with the gap), right with a bout at the empty cup, centre,
    left away from the cup: 4 transitions, 1 bout per cup. Missed frames are NaN with likelihood 0;
    false points lie anywhere in the arena with likelihood 0.05-0.5; true points 0.9-1."""
    rng = np.random.default_rng(seed)
    n = lambda s: round(s * fps)  # noqa: E731
    pieces = [_dwell((100, 150), 25, n(12), 0.0)]  # interacting with the mouse cup (zone radius 50)
    plan = [
        ((300, 150), 1.0, 12.0, 40),  # walk to the centre, stay 12 s (the gap falls here)
        ((480, 150), 1.0, 6.0, 25),  # to the right chamber, at the empty cup
        ((520, 260), 0.5, 7.0, 10),  # right chamber, away from the cup
        ((300, 60), 1.0, 9.0, 40),  # back to the centre
        ((100, 260), 1.0, 9.5, 20),  # left chamber, away from the cup
    ]
    for (cx, cy), walk_s, stay_s, radius in plan:
        start = np.array([cx + radius, cy], dtype=float)
        pieces.append(_walk(pieces[-1][-1], start, n(walk_s)))
        pieces.append(_dwell((cx, cy), radius, n(stay_s), 0.0))
    true = np.concatenate(pieces)
    t = np.arange(len(true)) / fps
    head = true + rng.normal(0, noise_px, true.shape)
    lik = rng.uniform(0.9, 1.0, len(t))
    k = np.arange(len(t))
    gap = (t >= 17.0) & (t < 17.0 + gap_s)
    free = k[~gap]
    miss = rng.choice(free, round(missed * len(t)), replace=False)
    rest = np.setdiff1d(free, miss)
    fake = rng.choice(rest, round(false * len(t)), replace=False)
    head[gap] = np.nan
    lik[gap] = 0.0
    head[miss] = np.nan
    lik[miss] = 0.0
    head[fake] = rng.uniform((0, 0), (600, 300), (len(fake), 2))
    lik[fake] = rng.uniform(0.05, 0.5, len(fake))
    case = ThreeChamberCase(fps, t, true, head, lik, ARENA)
    case.truth = chamber_truth(t, true, ARENA)
    return case


def write_dlc_single(path: Path, head: np.ndarray, likelihood: np.ndarray, part: str = "snout") -> Path:
    """A single-animal DeepLabCut CSV with one body part (NaN written as empty, as DLC does)."""
    import pandas as pd

    cols = pd.MultiIndex.from_product(
        [["gen"], [part], ["x", "y", "likelihood"]], names=["scorer", "bodyparts", "coords"]
    )
    df = pd.DataFrame(np.column_stack([head, likelihood]), columns=cols)
    df.to_csv(path)
    return path


# ------------------------------------------------------------------------------------------ two mice
@dataclass
class TwoMiceCase:
    fps: float
    t_s: np.ndarray
    px_per_cm: float
    true: dict[str, dict[str, np.ndarray]]  # "A"/"B" -> part -> (T, 2)
    observed: dict[str, dict[str, np.ndarray]]  # raw labels: "A"/"B" as the detector named them
    swapped: np.ndarray  # (T,) the detector's labels are exchanged
    lost_b: np.ndarray  # (T,) B's body box (all of B's parts) is lost
    truth: dict[str, Any] = field(default_factory=dict)


BODY_HALF_PX = 20.0  # nose and tail base 2 cm from the centre at 10 px/cm


def two_mice_case(
    seed: int = 0,
    fps: float = 30.0,
    duration_s: float = 20.0,
    swap_frames: int = 15,
    lost: float = 0.03,
    px_per_cm: float = 10.0,
    contact_cm: float = 5.0,
    noise_px: float = 0.5,
    swap_at_s: float = 8.0,
) -> TwoMiceCase:
    """A faces +x; B faces A (-x) for the contact at 5 s (nose-to-nose) and turns away (+x) for the one
    at 14 s (A's nose at B's tail base). Centres 30 px apart during each contact (2 s), 200 px apart
    between them; the pair drifts along x and y. The detector exchanges the labels for ``swap_frames``
    frames starting at ``swap_at_s`` (8 s: mice 200 px apart; 4.5 s: in the first contact) and loses
    ``lost`` of B's frames (two inside the swap)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(duration_s * fps)) / fps
    near = np.min(np.abs(t[:, None] - np.array([5.0, 14.0])[None, :]), axis=1)
    gap = 30 + 170 * np.clip((near - 1.0) / 2.0, 0, 1)
    mid_x = 300 + 100 * np.sin(2 * np.pi * t / duration_s)
    y = 200 + 30 * np.sin(2 * np.pi * t / 7.0)
    ca = np.stack([mid_x - gap / 2, y], axis=1)
    cb = np.stack([mid_x + gap / 2, y + 10], axis=1)
    h = np.array([BODY_HALF_PX, 0.0])
    b_dir = np.where(t[:, None] < 9.5, -1.0, 1.0)  # B faces A, then turns away
    true = {
        "A": {"nose": ca + h, "center": ca, "tail": ca - h},
        "B": {"nose": cb + b_dir * h, "center": cb, "tail": cb - b_dir * h},
    }
    swapped = np.zeros(len(t), dtype=bool)
    s0 = round(swap_at_s * fps)
    swapped[s0 : s0 + swap_frames] = True
    lost_b = np.zeros(len(t), dtype=bool)
    n_lost = round(lost * len(t))
    lost_b[[s0 + 3, s0 + 9]] = True  # two inside the swap, the rest anywhere
    others = np.setdiff1d(np.arange(len(t)), np.flatnonzero(lost_b))
    lost_b[rng.choice(others, n_lost - 2, replace=False)] = True
    obs: dict[str, dict[str, np.ndarray]] = {"A": {}, "B": {}}
    for part in ("nose", "center", "tail"):
        a = true["A"][part] + rng.normal(0, noise_px, ca.shape)
        b = true["B"][part] + rng.normal(0, noise_px, cb.shape)
        b[lost_b] = np.nan
        obs["A"][part] = np.where(swapped[:, None], b, a)
        obs["B"][part] = np.where(swapped[:, None], a, b)
    dist = np.linalg.norm(ca - cb, axis=1)
    contact = dist < contact_cm * px_per_cm
    ev = events(t, contact, 0.0, 0.0)
    case = TwoMiceCase(fps, t, px_per_cm, true, obs, swapped, lost_b)
    case.truth = {
        "epochs": [(a, b) for a, b in ev],
        "types": ["nose-to-nose", "nose-to-tail"],
        "contact_s": float(contact.sum() / fps),
    }
    case.truth["raw_wrong_frames"] = wrong_identity_frames(case, obs["A"]["center"], obs["B"]["center"])
    return case


def wrong_identity_frames(case: TwoMiceCase, a_center: np.ndarray, b_center: np.ndarray) -> int:
    """Frames where a detected mouse carries the other's identity (its centre is closer to the other's true
    centre); a frame counts once however many of its mice are wrong."""
    wrong = np.zeros(len(case.t_s), dtype=bool)
    for mine, other, got in (("A", "B", a_center), ("B", "A", b_center)):
        d_mine = np.linalg.norm(got - case.true[mine]["center"], axis=1)
        d_other = np.linalg.norm(got - case.true[other]["center"], axis=1)
        wrong |= np.isfinite(got).all(axis=1) & (d_other < d_mine)
    return int(wrong.sum())


def write_dlc_multi(path: Path, tracks: dict[str, dict[str, np.ndarray]]) -> Path:
    """A multi-animal DeepLabCut .h5: individual name -> part -> (T, 2); lost points have likelihood 0."""
    import pandas as pd

    parts = list(next(iter(tracks.values())))
    cols = pd.MultiIndex.from_product(
        [["gen"], list(tracks), parts, ["x", "y", "likelihood"]],
        names=["scorer", "individuals", "bodyparts", "coords"],
    )
    data = []
    for ind in tracks.values():
        for part in parts:
            xy = ind[part]
            data += [xy[:, 0], xy[:, 1], np.where(np.isfinite(xy).all(axis=1), 0.95, 0.0)]
    pd.DataFrame(np.stack(data, axis=1), columns=cols).to_hdf(path, key="df_with_missing")
    return path


def write_darknet(
    path: Path, case: TwoMiceCase, classes: tuple[str, str] = ("body", "body_mini"), box_px: float = 44.0
) -> Path:
    """The seed's darknet ``-ext_output`` log of the observed body boxes: A is ``body``, B (the
    miniscope-wearing mouse) ``body_mini``; the detector's swap exchanges the classes."""
    lines = []
    for k in range(len(case.t_s)):
        lines.append("Objects:")
        lines.append("")
        for who, cls in zip(("A", "B"), classes, strict=True):
            c = case.observed[who]["center"][k]
            if not np.isfinite(c).all():
                continue
            left, top = c[0] - box_px / 2, c[1] - box_px / 2
            lines.append(
                f"{cls}: 97%\t(left_x: {left:5.0f}   top_y: {top:5.0f}   width: {box_px:4.0f}   "
                f"height: {box_px:4.0f})"
            )
        lines.append(f"FPS:{case.fps:.1f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jabs_v4(path: Path, tracks: list[dict[str, np.ndarray]], cm_per_pixel: float) -> Path:
    """A JABS v4 pose file (documented layout: ``poseest/points`` (T, I, 12, 2) stored (y, x),
    ``confidence``, ``instance_embed_id`` identities from 1, ``id_mask`` 0 = holds an identity) with one
    identity per track; a track's ``nose``, ``center`` and ``tail`` go to JABS's nose, center_spine and
    base_tail, its other keypoints sit at the centre. Lost points are written with confidence 0."""
    import h5py

    n_frames, n_inst = len(tracks[0]["center"]), len(tracks)
    xy = np.zeros((n_frames, n_inst, 12, 2))
    conf = np.full((n_frames, n_inst, 12), 0.9, dtype=np.float32)
    for i, tr in enumerate(tracks):
        xy[:, i] = np.nan_to_num(tr["center"])[:, None, :]
        for k, part in ((0, "nose"), (6, "center"), (9, "tail")):
            xy[:, i, k] = np.nan_to_num(tr[part])
        conf[~np.isfinite(tr["center"]).all(axis=1), i] = 0.0
    with h5py.File(path, "w") as f:
        g = f.create_group("poseest")
        g.attrs["version"] = np.array([4, 0], dtype=np.uint16)
        g.attrs["cm_per_pixel"] = np.float32(cm_per_pixel)
        g["points"] = np.round(xy[..., ::-1]).astype(np.uint16)
        g["confidence"] = conf
        g["instance_embed_id"] = np.tile(np.arange(1, n_inst + 1, dtype=np.uint32), (n_frames, 1))
        g["id_mask"] = np.zeros((n_frames, n_inst), dtype=np.uint8)
    return path
