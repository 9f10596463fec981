"""Reach segmentation and kinematics on synthetic minimum-jerk reaches with known timing and speed, and the
reaching task analysis on tables in the rig's session format."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.errors import AnalysisError
from analysis.kinematics import segment_reaches, speed, velocity, velocity_curves
from analysis.tasks.reaching import (
    TimeBase,
    analyze_reaching,
    load_points3d,
    load_trials,
    session_track,
    success_summary,
)
from tests.analysis_helpers import run_cli

RATE = 200.0
ONSETS = [1.0, 4.0, 7.5, 12.0]
OUT_S, HOLD_S, BACK_S = 0.15, 0.05, 0.20


def _min_jerk(tau: np.ndarray) -> np.ndarray:
    tau = np.clip(tau, 0, 1)
    return 10 * tau**3 - 15 * tau**4 + 6 * tau**5


def _session(seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.arange(0, 15, 1 / RATE)
    path = rng.normal(0, 0.05, (len(t), 3))
    targets = []
    for k, t0 in enumerate(ONSETS):
        target = np.array([10.0, 5.0, -3.0]) * (1 + 0.1 * k)
        targets.append(target)
        out = _min_jerk((t - t0) / OUT_S)
        back = _min_jerk((t - t0 - OUT_S - HOLD_S) / BACK_S)
        active = (t >= t0) & (t <= t0 + OUT_S + HOLD_S + BACK_S)
        path[active] += np.outer(out[active] - back[active], target)
    path[int((ONSETS[1] + 0.07) * RATE) : int((ONSETS[1] + 0.07) * RATE) + 3] = np.nan  # a short dropout
    return t, path, targets


def test_reaches_found_with_onset_offset_distance_and_speed():
    t, path, targets = _session()
    reaches = segment_reaches(t, path, onset_speed_mm_s=50.0, smooth_window=9)
    assert len(reaches) == len(ONSETS)
    raw = segment_reaches(t, path, onset_speed_mm_s=50.0)
    assert [r.onset for r in raw] == pytest.approx([r.onset for r in reaches], abs=3)
    # unsmoothed, the 0.05 mm tracking noise lengthens the path
    assert all(a.path_length_mm > b.path_length_mm for a, b in zip(raw, reaches, strict=True))
    for r, t0, target in zip(reaches, ONSETS, targets, strict=True):
        d = float(np.linalg.norm(target))
        t_end = t0 + OUT_S + HOLD_S + BACK_S
        # the 25 mm/s offset threshold is crossed 10-13 % into / before the end of a minimum-jerk stroke:
        # ~16 ms after the true onset (150 ms stroke) and ~26 ms before the true end (200 ms stroke)
        assert t0 <= r.t_onset_s < t0 + 0.03
        assert t_end - 0.04 < r.t_offset_s <= t_end
        assert r.extent_mm == pytest.approx(d, rel=0.02)
        assert r.path_length_mm == pytest.approx(2 * d, rel=0.05)  # out and back
        assert r.max_speed_mm_s == pytest.approx(1.875 * d / OUT_S, rel=0.05)  # min-jerk peak speed
        assert r.mean_speed_mm_s == pytest.approx(r.path_length_mm / r.duration_s)
        assert t0 + 0.06 < r.t_peak_speed_s < t0 + 0.09  # mid-stroke of the outward movement
        assert t0 + OUT_S - 0.01 < r.t_apex_s < t0 + OUT_S + HOLD_S + 0.01


def test_no_merge_splits_out_and_back_and_thresholds_drop_tremor():
    t, path, _ = _session()
    split = segment_reaches(t, path, onset_speed_mm_s=50.0, merge_gap_s=0.0)
    assert len(split) == 2 * len(ONSETS)
    assert segment_reaches(t, path, onset_speed_mm_s=5000.0) == []
    still = np.random.default_rng(1).normal(0, 0.05, (400, 3))
    assert segment_reaches(np.arange(400) / RATE, still) == []
    with pytest.raises(AnalysisError, match=r"shape \(T=10, 3\)"):
        segment_reaches(np.arange(10), np.zeros((10, 2)))


def test_velocity_and_curves():
    t = np.arange(100) / RATE
    p = np.stack([3 * t, -2 * t, t**2], axis=1)
    v = velocity(t, p)
    np.testing.assert_allclose(v[1:-1], np.stack([np.full(98, 3.0), np.full(98, -2.0), 2 * t[1:-1]], axis=1))
    np.testing.assert_allclose(velocity(t, p, smooth_window=9)[10:-10, 2], 2 * t[10:-10], atol=1e-9)
    t2, path, _ = _session()
    reaches = segment_reaches(t2, path)
    u, curves = velocity_curves(t2, speed(t2, path), reaches, 51)
    assert curves.shape == (4, 51) and u[0] == 0 and u[-1] == 1
    assert np.all(np.nanargmax(curves, axis=1) < 25)  # the fast stroke is the outward one (shorter)


def test_success_summary_counts():
    s = success_summary(["success", "miss", "knocked_off", "success", "no_reach", "aborted"])
    assert s["n_trials"] == 6 and s["n_completed"] == 5
    assert s["success_rate"] == pytest.approx(2 / 5)
    assert s["success_per_reach_trial"] == pytest.approx(2 / 4)
    assert s["counts"]["aborted"] == 1


def test_analyze_reaching_from_session_tables(tmp_path):
    t, path, _ = _session()
    t0_ns = 1_700_000_000_000_000_000
    t_ns = t0_ns + np.round(t * 1e9).astype(np.int64)
    valid = np.isfinite(path).all(axis=1).astype(int)
    xyz = {"x": path[:, 0], "y": path[:, 1], "z": path[:, 2]}
    rows = pd.DataFrame(
        {"trigger_index": np.arange(len(t)), "name": "paw", **xyz, "valid": valid, "t_frame_ns": t_ns}
    )
    other = rows.assign(name="pellet", x=0.0, y=0.0, z=0.0)
    pd.concat([rows, other]).to_csv(tmp_path / "points3d.csv", index=False)
    starts = [0.5, 3.5, 7.0, 11.5, 13.5]
    outcomes = ["success", "miss", "knocked_off", "success", "no_reach"]
    pd.DataFrame(
        {
            "trial": range(5),
            "t_start_ns": [t0_ns + int(s * 1e9) for s in starts],
            "t_end_ns": [t0_ns + int((s + 1.4) * 1e9) for s in starts],
            "outcome": outcomes,
        }
    ).to_csv(tmp_path / "trials.csv", index=False)
    k, paw = load_points3d(tmp_path / "points3d.csv", "paw")
    assert paw.shape == (len(t), 3) and np.isnan(paw).any() and np.array_equal(k, np.arange(len(t)))
    trials = load_trials(tmp_path / "trials.csv")
    # no trigger table: the time base is the trigger index / rate; trials are placed through the host times
    track = session_track(k, paw, TimeBase.from_triggers(RATE, None, (k, t_ns)), trials)
    assert track.info["time_base"] == "trigger index / 200 Hz (no firmware trigger times)"
    res = analyze_reaching(track.t_s, track.xyz, track.trials, out_dir=tmp_path / "out")
    per_trial = res["trial_outcomes"]
    assert list(per_trial["n_reaches"]) == [1, 1, 1, 1, 0]
    np.testing.assert_allclose(per_trial["first_reach_latency_s"][:4], 0.5, atol=0.03)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_reaches"] == 4 and summary["success_rate"] == pytest.approx(0.4)
    assert len(pd.read_csv(tmp_path / "out" / "reaches.csv")) == 4
    for png in ("trajectories.png", "velocity.png"):
        assert (tmp_path / "out" / png).stat().st_size > 5000
    with pytest.raises(AnalysisError, match=r"points3d.csv: no rows for point 'nose' \(has paw, pellet\)"):
        load_points3d(tmp_path / "points3d.csv", "nose")
    pd.DataFrame({"trial": [0]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(AnalysisError, match=r"bad.csv: lacks column\(s\) t_start_ns, t_end_ns, outcome"):
        load_trials(tmp_path / "bad.csv")


def _points3d(path, t, path_t3, scale=1.0):
    pd.DataFrame(
        {
            "trigger_index": np.arange(len(t)),
            "name": "paw",
            **{c: path_t3[:, i] * scale for i, c in enumerate("xyz")},
            "t_frame_ns": 1_000_000_000 + np.round(t * 1e9).astype(np.int64),
        }
    ).to_csv(path, index=False)


def test_reaching_command(tmp_path, capsys):
    t, path, _ = _session()
    _points3d(tmp_path / "points3d.csv", t, path)
    # a folder without session.json: its trigger rate must be given
    assert run_cli(["reaching", str(tmp_path)]) == 2
    assert "no session.json with trigger_rate_hz: give --fps" in capsys.readouterr().err
    assert run_cli(["reaching", str(tmp_path), "--fps", "200", "--smooth", "9", "--clusters", "2"]) == 0
    out = tmp_path / "analysis" / "reaching"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_reaches"] == 4
    # the four reaches scale one path by 1.0, 1.1, 1.2, 1.3: DTW groups the two short and the two long ones
    assert list(pd.read_csv(out / "reaches.csv")["cluster"]) in ([1, 1, 2, 2], [2, 2, 1, 1])
    assert (out / "dendrogram.png").exists()
    assert run_cli(["reaching", str(tmp_path / "nope")]) == 2
    assert "nope: not found (a session folder or a 3-D table file)" in capsys.readouterr().err


def _reference(tmp_path):
    """Reaches found in the reference path in mm at 200 Hz."""
    t, path, _ = _session()
    return t, path, segment_reaches(t, path)


def test_reaching_reads_any_3d_table_with_fps_and_units(tmp_path, capsys):
    t, path, ref = _reference(tmp_path)
    ref_speeds = [r.max_speed_mm_s for r in ref]
    # DeepLabCut 3-D, .h5 and .csv, in cm
    cols = pd.MultiIndex.from_product([["DLC3D"], ["paw", "nose"], ["x", "y", "z"]])
    cols = cols.set_names(["scorer", "bodyparts", "coords"])
    dlc = pd.DataFrame(np.concatenate([path / 10, np.zeros_like(path)], axis=1), columns=cols)
    dlc.to_hdf(tmp_path / "dlc3d.h5", key="df_with_missing")
    dlc.to_csv(tmp_path / "dlc3d.csv")
    # anipose pose-3d CSV, in m, timed by a timestamp file
    pd.DataFrame(
        {
            **{f"paw_{c}": path[:, i] / 1000 for i, c in enumerate("xyz")},
            "paw_error": 0.5,
            "paw_score": 0.9,
            "fnum": np.arange(len(t)),
        }
    ).to_csv(tmp_path / "pose3d.csv", index=False)
    np.savetxt(tmp_path / "times.txt", t)
    _points3d(tmp_path / "points3d.csv", t, path)
    cases = [
        (["dlc3d.h5", "--fps", "200", "--units", "cm"], "deeplabcut"),
        (["dlc3d.csv", "--fps", "200", "--units", "cm"], "deeplabcut"),
        (["pose3d.csv", "--timestamps", str(tmp_path / "times.txt"), "--units", "m"], "anipose"),
        (["points3d.csv", "--fps", "200"], "points3d"),
    ]
    for (name, *opts), fmt in cases:
        out = tmp_path / f"out-{name}"
        argv = ["reaching", str(tmp_path / name), *opts, "--smooth", "0", "--out", str(out)]
        assert run_cli(argv) == 0, name
        summary = json.loads((out / "summary.json").read_text())
        assert summary["format"] == fmt and summary["n_reaches"] == 4, name
        got = pd.read_csv(out / "reaches.csv")["max_speed_mm_s"]
        np.testing.assert_allclose(got, ref_speeds, rtol=1e-6, err_msg=name)  # in mm/s whatever the units
    capsys.readouterr()
    # a file in cm read as mm: the threshold finds nothing, and says so in one line
    assert (
        run_cli(["reaching", str(tmp_path / "dlc3d.h5"), "--fps", "200", "--out", str(tmp_path / "o")]) == 0
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no reach found: the paw never moves faster than" in err[0]
    assert "--units mm|cm|m" in err[0]
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["note"] in err[0]
    # no frame rate, a 2-D table
    assert run_cli(["reaching", str(tmp_path / "dlc3d.h5")]) == 2
    assert "give --fps (the file's frame rate) or --timestamps" in capsys.readouterr().err
    cols2 = pd.MultiIndex.from_product([["DLC"], ["paw"], ["x", "y", "likelihood"]])
    pd.DataFrame(np.ones((5, 3)), columns=cols2.set_names(["scorer", "bodyparts", "coords"])).to_hdf(
        tmp_path / "dlc2d.h5", key="df_with_missing"
    )
    assert run_cli(["reaching", str(tmp_path / "dlc2d.h5"), "--fps", "30"]) == 2
    assert "2-D keypoints (x, y); reaching needs a 3-D table (x, y, z)" in capsys.readouterr().err


def test_success_rate_is_unknown_with_unclassified_trials():
    s = success_summary(["success", "pellet_removed", "pellet_not_taken", "aborted"])
    assert s["success_rate"] is None and s["success_per_reach_trial"] is None
    assert s["n_unclassified"] == 2 and s["n_completed"] == 3
