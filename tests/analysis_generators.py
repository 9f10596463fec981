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


# ------------------------------------------------------------------------------------------ reaching
REACH_RATE_HZ = 124.0
REACH_PERIOD_US = 8064.5  # Timer1 at 124 Hz: the firmware's trigger period
REACH_REST = np.array([2.0, -22.0, -14.0])


def _min_jerk(s: np.ndarray) -> np.ndarray:
    s = np.clip(s, 0.0, 1.0)
    return s**3 * (10 - 15 * s + 6 * s * s)


@dataclass
class ReachingCase:
    """A rig session's paw path: ``trigger_index`` (T,), firmware times ``t_fw_us``, the host's arrival
    times ``host_ns`` (jittered 0.3-215 ms apart), the true path ``true_xyz`` (T, 3) mm, the observed
    ``xyz`` (NaN where the detector missed the paw) and ``valid`` (False: a false 3-D point, displaced)."""

    trigger_index: np.ndarray
    t_fw_us: np.ndarray
    host_ns: np.ndarray
    true_xyz: np.ndarray
    xyz: np.ndarray
    valid: np.ndarray
    reaches: list[tuple[float, float, float, float, np.ndarray]]  # onset s, out s, hold s, back s, target
    blip: tuple[float, float, float]  # onset s, duration s, extent mm: a paw twitch, not a reach
    truth: dict[str, Any] = field(default_factory=dict)

    @property
    def t_s(self) -> np.ndarray:
        """Firmware trigger times, seconds from the first."""
        return (self.t_fw_us - self.t_fw_us[0]) * 1e-6


def jittered_host_ns(n: int, rng: np.random.Generator) -> np.ndarray:
    """Host arrival times of n frames on a loaded machine: mostly 8.06 ms apart with noise, stalls of up to
    215 ms and the backlog then arriving in bursts 0.3 ms apart (the issue's 0.3-215 ms)."""
    gaps = rng.normal(8.06, 1.5, n).clip(2.0, 14.0)
    for at in rng.choice(np.arange(50, n - 60), 12, replace=False):
        stall = rng.uniform(60.0, 215.0)
        gaps[at] = stall
        gaps[at + 1 : at + 2 + int((stall - 8.06) / (8.06 - 0.3))] = 0.3
    gaps[40] = 215.0
    gaps[41:69] = 0.3
    gaps[0] = 0.0
    return 5_304_365_489_875 + np.round(np.cumsum(gaps) * 1e6).astype(np.int64)


def reaching_case(
    seed: int = 0,
    n_reaches: int = 6,
    missed: float = 0.03,
    false: float = 0.02,
    noise_mm: float = 0.05,
) -> ReachingCase:
    """17 s at 124 Hz with ``n_reaches`` minimum-jerk reaches (rest -> target 18-28 mm away -> rest; out
    0.12-0.20 s, hold 0.05-0.10 s, back 0.18-0.26 s) and one 0.19 s / 6.7 mm twitch between reaches 2 and
    3. The detector misses ``missed`` of the frames, always including the frame at each reach's peak speed,
    and a 6-frame (48 ms) run in reach 4's return stroke; ``false`` of the frames are false 3-D points
    (displaced 5-20 mm, marked invalid, as the triangulator marks them). Truth per reach: its peak speed
    (the true path's, on a 0.1 ms grid) and, on the trigger samples (seconds from the first trigger),
    the first and last sample whose true speed is over half the 50 mm/s onset speed and the sample of the
    peak speed."""
    rng = np.random.default_rng(seed)
    n = round(17.0 * REACH_RATE_HZ)
    k = np.arange(n)
    t_fw_us = np.round(2_244_390 + k * REACH_PERIOD_US).astype(np.int64)
    reaches = []
    for i in range(n_reaches):
        onset = 1.2 + 2.5 * i + rng.uniform(0.0, 0.4)
        direction = np.array([rng.uniform(-0.15, 0.15), 1.0, rng.uniform(0.1, 0.4)])
        target = direction / np.linalg.norm(direction) * rng.uniform(18.0, 28.0)
        reaches.append(
            (onset, rng.uniform(0.12, 0.20), rng.uniform(0.05, 0.10), rng.uniform(0.18, 0.26), target)
        )
    blip = (reaches[2][0] - 1.1, 0.19, 6.7)

    def path(t: np.ndarray) -> np.ndarray:
        p = np.tile(REACH_REST, (len(t), 1))
        for t0, out_s, hold_s, back_s, target in reaches:
            m = _min_jerk((t - t0) / out_s) - _min_jerk((t - t0 - out_s - hold_s) / back_s)
            p += np.outer(m, target)
        b0, b_dur, b_mm = blip
        m = _min_jerk((t - b0) / (b_dur / 2)) - _min_jerk((t - b0 - b_dur / 2) / (b_dur / 2))
        p += np.outer(m, np.array([0.0, 0.6, 0.8]) * b_mm)
        return p

    t_s = (t_fw_us - t_fw_us[0]) * 1e-6
    true = path(t_s)
    fine = np.arange(0.0, t_s[-1], 1e-4)
    sp_fine = np.linalg.norm(np.gradient(path(fine), fine, axis=0), axis=1)
    sp_samples = np.interp(t_s, fine, sp_fine)
    truth_reaches = []
    for t0, out_s, hold_s, back_s, target in reaches:
        t_end = t0 + out_s + hold_s + back_s
        inside = (fine >= t0) & (fine <= t_end)
        over = np.flatnonzero((t_s >= t0) & (t_s <= t_end) & (sp_samples > 25.0))
        peak = over[int(np.argmax(sp_samples[over]))]
        truth_reaches.append(
            {
                "t_onset_s": float(t_s[over[0]]),
                "t_offset_s": float(t_s[over[-1]]),
                "max_speed_mm_s": float(sp_fine[inside].max()),
                "t_peak_speed_s": float(t_s[peak]),
                "extent_mm": float(np.linalg.norm(target)),
            }
        )
    xyz = true + rng.normal(0.0, noise_mm, true.shape)
    valid = np.ones(n, dtype=bool)
    peaks = [int(np.searchsorted(t_s, r["t_peak_speed_s"])) for r in truth_reaches]
    t0, out_s, hold_s, back_s, _ = reaches[3]
    run_start = int((t0 + out_s + hold_s + back_s / 2) * REACH_RATE_HZ) - 3
    forced = np.array(peaks + list(range(run_start, run_start + 6)))
    free = np.setdiff1d(k, forced)
    miss = np.concatenate([forced, rng.choice(free, round(missed * n) - len(forced), replace=False)])
    rest = np.setdiff1d(free, miss)
    fake = rng.choice(rest, round(false * n), replace=False)
    xyz[miss] = np.nan
    shift = rng.normal(0.0, 1.0, (len(fake), 3))
    xyz[fake] += shift / np.linalg.norm(shift, axis=1, keepdims=True) * rng.uniform(5.0, 20.0, (len(fake), 1))
    valid[fake] = False
    case = ReachingCase(k, t_fw_us, jittered_host_ns(n, rng), true, xyz, valid, reaches, blip)
    case.truth = {"reaches": truth_reaches, "missed_frames": len(miss), "false_points": len(fake)}
    return case


def write_reaching_session(folder: Path, case: ReachingCase) -> Path:
    """A session folder with what the reaching analysis reads: ``points3d.csv`` (rows for the frames the
    detector saw, host times in ``t_frame_ns`` as online, false points with ``valid`` 0), ``triggers.csv``
    (firmware times), ``session.json``, ``trials.csv`` (one trial around each reach, host clock)."""
    import json

    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    seen = np.isfinite(case.xyz).all(axis=1)
    k = case.trigger_index[seen]
    pts: dict[str, Any] = {"trigger_index": k, "name": "paw"}
    for i, c in enumerate("xyz"):
        pts[c] = case.xyz[seen, i]
        pts[f"{c}_filt"] = case.xyz[seen, i]
    pts.update(valid=case.valid[seen].astype(int), t_frame_ns=case.host_ns[seen])
    pts["t_trigger_ns"] = case.host_ns[seen] - 3_000_000
    pd.DataFrame(pts).to_csv(folder / "points3d.csv", index=False)
    pd.DataFrame(
        {"index": case.trigger_index, "t_host_ns": case.host_ns - 3_000_000, "t_fw_us": case.t_fw_us}
    ).to_csv(folder / "triggers.csv", index=False)
    (folder / "session.json").write_text(
        json.dumps({"format": "deepbehavior-session", "trigger_rate_hz": REACH_RATE_HZ})
    )
    starts = [int(case.host_ns[int((r[0] - 0.5) * REACH_RATE_HZ)]) for r in case.reaches]
    ends = [int(case.host_ns[int((r[0] + 1.2) * REACH_RATE_HZ)]) for r in case.reaches]
    pd.DataFrame(
        {
            "trial": np.arange(1, len(starts) + 1),
            "t_start_ns": starts,
            "t_end_ns": ends,
            "outcome": ["success"] * len(starts),
        }
    ).to_csv(folder / "trials.csv", index=False)
    return folder


# ------------------------------------------------------------------------------------------ human arm
@dataclass
class HumanArmCase:
    """A right arm seen by two calibrated cameras as OpenPose JSON: ``folder`` holds ``calib.yaml`` and
    one folder of ``*_keypoints.json`` per camera; ``truth`` the angles per frame (degrees)."""

    folder: Path
    cameras: list[str]
    fps: float
    truth: dict[str, np.ndarray]
    low_confidence: dict[str, int] = field(default_factory=dict)


def _rotation(axis_n3: np.ndarray, angle_n: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotations about unit axes (N, 3) by angles (N,) radians (Rodrigues)."""
    a = axis_n3 / np.linalg.norm(axis_n3, axis=1, keepdims=True)
    k = np.zeros((len(a), 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -a[:, 2], a[:, 1], -a[:, 0]
    k = k - k.transpose(0, 2, 1)
    s, c = np.sin(angle_n)[:, None, None], np.cos(angle_n)[:, None, None]
    return np.eye(3)[None] + s * k + (1 - c) * (k @ k)


def arm_truth(t_s: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A right arm with known elbow angle (100 +- 40 deg at 0.5 Hz), shoulder abduction (30 +- 10 deg at
    0.25 Hz) and forearm rotation (70 deg at 0.75 Hz): (joints name -> (T, 3) mm, angles name -> (T,)).
    The forearm stays at least 20 deg from vertical, where supination (measured from world up) is
    undefined."""
    n = len(t_s)
    flex = 100 + 40 * np.sin(2 * np.pi * 0.5 * t_s)
    abd = 30 + 10 * np.sin(2 * np.pi * 0.25 * t_s)
    sup = 70 * np.sin(2 * np.pi * 0.75 * t_s)
    y = np.tile([0.0, 1.0, 0.0], (n, 1))
    shoulder = np.tile([0.0, 0.0, 1400.0], (n, 1))
    hip = np.tile([0.0, 0.0, 900.0], (n, 1))
    neck = np.tile([150.0, 0.0, 1450.0], (n, 1))
    ua = _rotation(y, np.radians(abd)) @ np.array([0.0, 0.0, -300.0])
    elbow = shoulder + ua
    fa_dir = np.einsum("nij,nj->ni", _rotation(y, np.radians(180 - flex)), ua / 300)
    wrist = elbow + 250 * fa_dir
    ref = np.array([0.0, 0.0, 1.0]) - fa_dir[:, 2:3] * fa_dir
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    across = np.einsum("nij,nj->ni", _rotation(fa_dir, np.radians(sup)), ref)
    joints = {
        "RShoulder": shoulder,
        "RElbow": elbow,
        "RWrist": wrist,
        "MidHip": hip,
        "Neck": neck,
        "hand_right_Wrist": wrist,
        "hand_right_Index1": wrist + 40 * fa_dir + 35 * across,
        "hand_right_Pinky1": wrist + 40 * fa_dir - 35 * across,
    }
    return joints, {"elbow_angle_deg": flex, "shoulder_angle_deg": abd, "supination_deg": sup}


def human_arm_case(
    folder: Path,
    seed: int = 0,
    fps: float = 30.0,
    n_frames: int = 300,
    noise_px: float = 0.15,
    low_body: float = 0.018,
    low_hand: float = 0.032,
) -> HumanArmCase:
    """10 s of the arm (:func:`arm_truth`) seen by two cameras 3 m away, 1.6 m apart, as OpenPose JSON:
    every keypoint with ``noise_px`` of Gaussian noise, and per view and keypoint ``low_body`` (arm and hip)
    or ``low_hand`` (hand) of the frames at OpenPose's low confidence (0.05, below its 0.1 cut) and 20 px
    off, as OpenPose's unsure points are."""
    import json

    import cv2

    from analysis.camera import Calibration, CameraModel, save_calibration
    from analysis.io.pose import BODY_25, HAND_21

    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / fps
    joints, truth = arm_truth(t)
    k = np.array([[1000.0, 0, 640], [0, 1000, 360], [0, 0, 1]])
    cams = {}
    for name, x in (("left", -800.0), ("right", 800.0)):
        c = np.array([x, -3000.0, 1200.0])
        look = np.array([0.0, 0.0, 1150.0]) - c
        z = look / np.linalg.norm(look)
        xr = np.cross(z, [0.0, 0.0, 1.0])
        xr /= np.linalg.norm(xr)
        r = np.stack([xr, np.cross(z, xr), z])
        cams[name] = CameraModel(
            name, (1280, 720), k, [-0.05, 0.01, 0, 0, 0], cv2.Rodrigues(r)[0].ravel(), -r @ c
        )
    folder.mkdir(parents=True, exist_ok=True)
    save_calibration(Calibration(cams, reference=None), folder / "calib.yaml")
    low: dict[str, int] = {}
    for name, cam in cams.items():
        body, hand = np.zeros((n_frames, 25, 3)), np.zeros((n_frames, 21, 3))
        for part, xyz in joints.items():
            px = cam.project(xyz) + rng.normal(0.0, noise_px, (n_frames, 2))
            is_hand = part.startswith("hand_right_")
            bad = rng.random(n_frames) < (low_hand if is_hand else low_body)
            bad &= part not in ("Neck", "hand_right_Wrist")
            px[bad] += rng.normal(0.0, 20.0, (int(bad.sum()), 2))
            conf = np.where(bad, 0.05, 0.85)
            low[f"{name}:{part}"] = int(bad.sum())
            arr, idx = (hand, HAND_21.index(part[11:])) if is_hand else (body, BODY_25.index(part))
            arr[:, idx] = np.column_stack([px, conf])
        (folder / name).mkdir(exist_ok=True)
        for f in range(n_frames):
            person = {
                "pose_keypoints_2d": body[f].ravel().tolist(),
                "hand_right_keypoints_2d": hand[f].ravel().tolist(),
            }
            (folder / name / f"{name}_{f:012d}_keypoints.json").write_text(
                json.dumps({"version": 1.3, "people": [person]})
            )
    return HumanArmCase(folder, list(cams), fps, truth, low)


def angle_errors(got: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per angle: frames missing, and RMS and max error (degrees) over the frames present."""
    out = {}
    for k, tr in truth.items():
        g = np.asarray(got[k], dtype=float)
        ok = np.isfinite(g)
        e = (g[ok] - tr[ok] + 180.0) % 360.0 - 180.0
        out[k] = {
            "missing": int((~ok).sum()),
            "rms_deg": float(np.sqrt(np.mean(e**2))) if ok.any() else float("nan"),
            "max_deg": float(np.abs(e).max()) if ok.any() else float("nan"),
        }
    return out
