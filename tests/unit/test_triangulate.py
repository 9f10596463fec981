"""``deepbehavior triangulate`` end to end against ground truth: known 3-D points projected through a known
calibration into views written in different tools' formats, with noise, outliers and gaps that differ
per view; views must be matched by frame number."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from analysis.camera import Calibration, camera_ring, save_calibration
from analysis.errors import AnalysisError
from analysis.triangulate import frame_ranges, match_frames, read_view, triangulate_views
from tests.analysis_helpers import run_cli

PARTS = ["snout", "ear_l", "ear_r", "tailbase"]
N_FRAMES = 80
FIRST = 1000  # the source files' frame numbers start here (a clip cut from a longer video)


def _truth() -> np.ndarray:
    """(T, K, 3) mm: a body moving in a loop near the ring's centre (300 mm down z)."""
    t = np.arange(N_FRAMES) / 50.0
    centre = np.stack([25 * np.sin(2 * t), 15 * np.cos(2 * t), 300 + 10 * np.sin(t)], axis=1)
    offsets = np.array([[12.0, 0, 0], [6, 6, 3], [6, -6, 3], [-20, 0, 0]])
    return centre[:, None, :] + offsets[None]


def _views(calib: Calibration, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per camera: (T, K, 2) noisy pixels with ~4 % gross outliers, (T, K) confidence."""
    truth = _truth()
    out = {}
    for name, cam in calib.cameras.items():
        px = cam.project(truth.reshape(-1, 3)).reshape(N_FRAMES, len(PARTS), 2)
        px += rng.normal(0, 0.5, px.shape)
        conf = rng.uniform(0.7, 1.0, px.shape[:2])
        bad = rng.random(px.shape[:2]) < 0.04
        px[bad] += rng.uniform(25, 60, (int(bad.sum()), 2)) * rng.choice([-1, 1], (int(bad.sum()), 2))
        out[name] = (px, conf)
    return out


def _write_dlc(path: Path, frames: np.ndarray, px: np.ndarray, conf: np.ndarray) -> None:
    cols = pd.MultiIndex.from_product(
        [["DLC_resnet50"], PARTS, ["x", "y", "likelihood"]], names=["scorer", "bodyparts", "coords"]
    )
    vals = np.concatenate([px, conf[..., None]], axis=2).reshape(len(frames), -1)
    df = pd.DataFrame(vals, index=frames, columns=cols)
    if path.suffix == ".h5":
        df.to_hdf(path, key="df_with_missing")
    else:
        df.to_csv(path)


def _write_sleap_analysis(path: Path, px: np.ndarray, conf: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f["tracks"] = np.transpose(px[:, None], (1, 3, 2, 0))  # (I, 2, K, T)
        f["point_scores"] = np.transpose(conf[:, None], (1, 2, 0))
        f["node_names"] = np.array([p.encode() for p in PARTS])
        f["track_names"] = np.array([b"animal"])


@pytest.fixture
def rig(tmp_path: Path):
    """3 cameras: cam0 a DLC csv with frames 1010-1014 missing, cam1 a DLC h5 with 1040-1049 missing,
    cam2 a SLEAP analysis file (every frame from 0, so offset: its frame numbers are 0..79)."""
    cams = camera_ring(3, distortion=(-0.15, 0.04, 0.001, -0.001, 0.0))
    calib = Calibration({c.name: c for c in cams}, reference="cam0")
    save_calibration(calib, tmp_path / "rig.calib.yaml")
    views = _views(calib, np.random.default_rng(7))
    frames = FIRST + np.arange(N_FRAMES)
    keep0 = (frames < 1010) | (frames > 1014)
    keep1 = (frames < 1040) | (frames > 1049)
    _write_dlc(tmp_path / "cam0.csv", frames[keep0], views["cam0"][0][keep0], views["cam0"][1][keep0])
    _write_dlc(tmp_path / "cam1.h5", frames[keep1], views["cam1"][0][keep1], views["cam1"][1][keep1])
    _write_dlc(tmp_path / "cam2.csv", frames, *views["cam2"])
    return tmp_path, calib


def _cli(tmp: Path, *extra: str, cams=("cam0=cam0.csv", "cam1=cam1.h5", "cam2=cam2.csv")) -> list[str]:
    argv = ["triangulate", "--calibration", str(tmp / "rig.calib.yaml"), "--out", str(tmp / "out")]
    for c in cams:
        name, _, f = c.partition("=")
        argv += ["--camera", f"{name}={tmp / f}"]
    return argv + list(extra)


def test_triangulate_command_recovers_truth_and_reports_gaps(rig, capsys):
    tmp, _ = rig
    assert run_cli(_cli(tmp, "--ransac", "6", "--h5")) == 0
    captured = capsys.readouterr()
    assert "view 'cam0' lacks 5 of 80 frames the other views have: 1010-1014" in captured.err
    assert "view 'cam1' lacks 10 of 80 frames the other views have: 1040-1049" in captured.err
    df = pd.read_csv(tmp / "out" / "points3d.csv")
    np.testing.assert_array_equal(df["fnum"], FIRST + np.arange(N_FRAMES))
    truth = _truth()
    est = np.stack([df[[f"{p}_x", f"{p}_y", f"{p}_z"]].to_numpy() for p in PARTS], axis=1)
    err = np.linalg.norm(est - truth, axis=2)
    assert np.isfinite(err).mean() > 0.97
    # 0.5 px noise at f = 900 px, 300 mm: ~0.2 mm per view; outliers voted out by RANSAC
    assert np.nanmedian(err) < 0.4 and np.nanpercentile(err, 90) < 0.8
    # frames one view lacks are made by the other two, and say so
    gap = df["fnum"].between(1010, 1014)
    assert set(df.loc[gap, "snout_cameras"].dropna()) <= {"cam1+cam2"}
    assert (df.loc[gap, "snout_ncams"] <= 2).all()
    qa = json.loads((tmp / "out" / "qa.json").read_text())
    assert qa["views"]["cam1"]["frames_missing"] == 10
    assert qa["views"]["cam1"]["frames_missing_ranges"] == "1040-1049"
    # DeepLabCut views: that format's default cut (analysis.events.MIN_CONFIDENCE, the one table)
    assert qa["settings"] == {"min_confidence": 0.6, "mode": "ransac", "ransac_px": 6.0}
    assert 0.97 < qa["fraction_triangulated"] <= 1.0
    assert qa["views"]["cam0"]["keypoints"]["snout"]["median_px"] < 1.0
    assert (tmp / "out" / "qa.png").stat().st_size > 5000
    # the h5 is DeepLabCut's 3-D layout, read back by the importer with the same frames
    from analysis.io.pose import read_dlc

    back = read_dlc(tmp / "out" / "points3d.h5")
    np.testing.assert_array_equal(back.frames, df["fnum"])
    np.testing.assert_allclose(back.part("snout")[:, 2], df["snout_z"], rtol=1e-5)


def test_plain_dlt_is_hurt_by_outliers_that_ransac_removes(rig, capsys):
    tmp, _ = rig
    assert run_cli(_cli(tmp)) == 0
    plain = pd.read_csv(tmp / "out" / "points3d.csv")
    assert run_cli(_cli(tmp, "--ransac", "6")) == 0
    robust = pd.read_csv(tmp / "out" / "points3d.csv")
    truth = _truth()

    def p90(df: pd.DataFrame) -> float:
        est = np.stack([df[[f"{p}_x", f"{p}_y", f"{p}_z"]].to_numpy() for p in PARTS], axis=1)
        return float(np.nanpercentile(np.linalg.norm(est - truth, axis=2), 99))

    assert p90(robust) < 0.5 * p90(plain)


def test_views_are_paired_by_frame_number_not_position(rig):
    """Same row count, different gaps: pairing by position would misalign every frame after the gaps."""
    tmp, calib = rig
    tables = {n: read_view(tmp / f) for n, f in (("cam0", "cam0.csv"), ("cam1", "cam1.h5"))}
    assert tables["cam0"].n_frames == 75 and tables["cam1"].n_frames == 70
    res = triangulate_views(calib, tables, min_confidence=0.3)
    np.testing.assert_array_equal(res.frames, FIRST + np.arange(N_FRAMES))
    err = np.linalg.norm(res.xyz[:, 0] - _truth(), axis=2)
    # two views, no RANSAC: the outliers remain, but the well-seen points are right after the gaps too
    after = res.frames > 1049
    assert np.nanmedian(err[after]) < 0.5
    # frames one of two views lacks cannot be triangulated
    lacking = np.isin(res.frames, np.r_[1010:1015, 1040:1050])
    assert np.isnan(res.xyz[lacking]).all()


def test_anipose_toml_and_sleap_view_give_the_same_points(rig, capsys):
    tmp, calib = rig
    lines = []
    for i, (name, c) in enumerate(calib.cameras.items()):
        lines += [
            f"[cam_{i}]",
            f'name = "{name}"',
            f"size = [{c.size[0]}, {c.size[1]}]",
            f"matrix = {json.dumps(c.matrix.tolist())}",
            f"distortions = {json.dumps(c.dist.tolist())}",
            f"rotation = {json.dumps(c.rvec.tolist())}",
            f"translation = {json.dumps(c.tvec.tolist())}",
            "",
        ]
    (tmp / "calibration.toml").write_text("\n".join(lines))
    views = _views(calib, np.random.default_rng(7))
    _write_sleap_analysis(tmp / "cam2.analysis.h5", *views["cam2"])  # frames 0..79, not 1000..
    argv = _cli(tmp, cams=("cam0=cam0.csv", "cam1=cam1.h5", "cam2=cam2.csv"))
    assert run_cli(argv) == 0
    ours = pd.read_csv(tmp / "out" / "points3d.csv")
    argv[2] = str(tmp / "calibration.toml")
    assert run_cli(argv) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp / "out" / "points3d.csv"), ours, rtol=1e-4)
    # a SLEAP analysis file numbers its frames from 0: nothing pairs with the others' 1000..1079
    assert run_cli(_cli(tmp, cams=("cam0=cam0.csv", "cam2=cam2.analysis.h5"))) == 0
    err = capsys.readouterr().err
    assert "view 'cam0' lacks 80 of 155 frames" in err and "view 'cam2' lacks 75 of 155 frames" in err


def test_user_mistakes_are_one_line(rig, capsys):
    tmp, _ = rig
    rc = run_cli(_cli(tmp, cams=("cam0=cam0.csv", "cam0=cam0.csv")))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "--camera cam0: given twice" in err
    rc = run_cli(_cli(tmp, cams=("cam0=cam0.csv", "top=cam1.h5")))
    assert rc == 2 and "no camera named 'top'" in capsys.readouterr().err
    rc = run_cli(_cli(tmp, cams=("cam0=cam0.csv",)))
    assert rc == 2 and "at least 2 cameras, got 1" in capsys.readouterr().err
    (tmp / "junk.csv").write_text("a,b\n1,2\n")
    rc = run_cli(_cli(tmp, cams=("cam0=cam0.csv", "cam1=junk.csv")))
    err = capsys.readouterr().err
    assert rc == 2 and "junk.csv" in err and "formats read:" in err and "JABS" in err
    rc = run_cli(_cli(tmp, "--nwb"))
    assert rc == 2 and "--nwb needs --fps" in capsys.readouterr().err
    rc = run_cli(_cli(tmp, "--individual", "mouse2"))
    assert rc == 2 and "individual 'mouse2' is not in every view" in capsys.readouterr().err


def test_nwb_output(rig, capsys):
    pytest.importorskip("ndx_pose")
    tmp, _ = rig
    assert run_cli(_cli(tmp, "--nwb", "--fps", "50")) == 0
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(tmp / "out" / "points3d.nwb"), "r") as io:
        nwb = io.read()
        pe = nwb.processing["behavior"]["pose_3d_animal"]
        series = pe.pose_estimation_series["snout"]
        assert series.data.shape == (N_FRAMES, 3)
        np.testing.assert_allclose(series.timestamps[:2], np.array([FIRST, FIRST + 1]) / 50)


def test_match_frames_and_ranges():
    from analysis.io.pose import PoseTable

    def table(frames):
        n = len(frames)
        return PoseTable(np.zeros((n, 1, 1, 2)), np.ones((n, 1, 1)), ["a"], ["x"], np.asarray(frames))

    m = match_frames({"a": table([0, 1, 2, 5]), "b": table([1, 2, 3, 4, 5])})
    np.testing.assert_array_equal(m.frames, [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(m.rows["a"], [0, 1, 2, -1, -1, 3])
    np.testing.assert_array_equal(m.rows["b"], [-1, 0, 1, 2, 3, 4])
    assert m.report() == [
        "view 'a' lacks 2 of 6 frames the other views have: 3-4",
        "view 'b' lacks 1 of 6 frames the other views have: 0",
    ]
    assert frame_ranges(np.array([1, 2, 3, 7, 9, 10])) == "1-3, 7, 9-10"
    with pytest.raises(AnalysisError, match="a frame number appears twice"):
        match_frames({"a": table([0, 0]), "b": table([0, 1])})


def test_smooth_tracks_drops_spikes_fills_short_gaps_and_smooths():
    from analysis.triangulate import Points3D, smooth_tracks

    frames = np.arange(100, 160)
    rng = np.random.default_rng(3)
    true = np.stack([np.linspace(0, 30, 60), np.sin(frames / 9.0) * 10, np.full(60, 300.0)], axis=1)
    xyz = true + rng.normal(0, 0.3, true.shape)
    xyz[20] += [40, 0, 0]  # a wrong point
    xyz[30:33] = np.nan  # 3 missing frames: filled
    xyz[45:53] = np.nan  # 8 missing frames: longer than max_gap, stays missing
    used = np.isfinite(xyz[:, 0])[None, :, None, None].repeat(2, axis=0)
    res = Points3D(
        frames=frames,
        cameras=["a", "b"],
        individuals=["m"],
        bodyparts=["p"],
        xyz=xyz[:, None, None],
        error_px=np.where(used[0], 0.5, np.nan),
        per_view_px=np.where(used, 0.5, np.nan),
        used=used,
    )
    out = smooth_tracks(res, window=7, max_gap=5)
    got = out.xyz[:, 0, 0]
    assert out.settings["outliers_dropped"] == 1
    assert np.isfinite(got[30:33]).all() and np.isnan(got[45:53]).all()
    assert not out.used[:, 30:33].any() and not out.used[:, 20].any()  # filled / dropped: no cameras
    err_raw = np.linalg.norm(xyz - true, axis=1)
    err = np.linalg.norm(got - true, axis=1)
    keep = np.isfinite(err_raw) & (np.arange(60) != 20)
    assert np.median(err[keep]) < 0.8 * np.median(err_raw[keep])  # smoothing lowers the noise
    assert err[20] < 2.0  # the spike is gone
    with pytest.raises(AnalysisError, match="smoothing window 4"):
        smooth_tracks(res, window=4)


def test_robust_smooth_mode_from_the_command(rig, capsys):
    tmp, _ = rig
    assert run_cli(_cli(tmp, "--ransac", "6")) == 0
    ransac = pd.read_csv(tmp / "out" / "points3d.csv")
    assert run_cli(_cli(tmp, "--ransac", "6", "--smooth", "5")) == 0
    assert "then temporal clean-up (" in capsys.readouterr().out
    smooth = pd.read_csv(tmp / "out" / "points3d.csv")
    truth = _truth()

    def errors(df: pd.DataFrame) -> np.ndarray:
        est = np.stack([df[[f"{p}_x", f"{p}_y", f"{p}_z"]].to_numpy() for p in PARTS], axis=1)
        return np.linalg.norm(est - truth, axis=2)

    a, b = errors(ransac), errors(smooth)
    assert np.nanmedian(b) < np.nanmedian(a) and np.nanpercentile(b, 90) < np.nanpercentile(a, 90)


def test_detector_boxes_as_centres(tmp_path, capsys):
    """Darknet text for one view and a folder of YOLO .txt (numbered files, one missing) for the other;
    the box centres triangulate to the truth."""
    cams = camera_ring(2, distortion=(-0.1, 0.02, 0, 0, 0))
    calib = Calibration({c.name: c for c in cams}, reference="cam0")
    save_calibration(calib, tmp_path / "rig.calib.yaml")
    rng = np.random.default_rng(2)
    paw = rng.uniform([-20, -20, 290], [20, 20, 310], (12, 3))
    px0, px1 = cams[0].project(paw), cams[1].project(paw)
    lines = []
    for x, y in px0:
        lines += [
            "Objects:",
            f"paw: 97% (left_x: {x - 10:.3f} top_y: {y - 8:.3f} width: 20.000 height: 16.000)",
        ]
        lines.append(f"pellet: 55% (left_x: {x + 40:.3f} top_y: {y:.3f} width: 8.000 height: 8.000)")
    (tmp_path / "front.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "side").mkdir()
    w, h = cams[1].size
    for f, (x, y) in enumerate(px1):
        if f != 5:
            (tmp_path / "side" / f"frame_{f:06d}.txt").write_text(
                f"0 {x / w:.9f} {y / h:.9f} {24 / w:.9f} 0.05 0.9\n"
            )
    table = read_view(tmp_path / "side", image_size=(w, h))
    np.testing.assert_array_equal(table.frames, [f for f in range(12) if f != 5])
    out = tmp_path / "out"
    argv = ["triangulate", "--calibration", str(tmp_path / "rig.calib.yaml"), "--out", str(out)]
    argv += ["--camera", f"cam0={tmp_path / 'front.txt'}", "--camera", f"cam1={tmp_path / 'side'}"]
    assert run_cli(argv) == 2
    assert "need the image size (--image-size WxH)" in capsys.readouterr().err
    # YOLO classes are numbers: class 0 is not darknet's "paw", so the views share no keypoint name
    assert run_cli([*argv, "--image-size", f"{w}x{h}"]) == 2
    assert "the views share no body part" in capsys.readouterr().err
    (tmp_path / "front.txt").write_text("\n".join(lines).replace("paw:", "0:") + "\n")
    assert run_cli([*argv, "--image-size", f"{w}x{h}"]) == 0
    assert "view 'cam1' lacks 1 of 12 frames the other views have: 5" in capsys.readouterr().err
    df = pd.read_csv(out / "points3d.csv")
    est = df[["0_x", "0_y", "0_z"]].to_numpy()
    assert np.isnan(est[5]).all()
    ok = np.arange(12) != 5
    np.testing.assert_allclose(est[ok], paw[ok], atol=0.01)


def test_multi_animal_views_give_one_file_per_individual(tmp_path, capsys):
    cams = camera_ring(2, distortion=(-0.1, 0.02, 0, 0, 0))
    calib = Calibration({c.name: c for c in cams}, reference="cam0")
    save_calibration(calib, tmp_path / "rig.calib.yaml")
    true = {"m1": _truth(), "m2": _truth() + [0, 0, 15]}
    frames = np.arange(N_FRAMES)
    for c in cams:
        cols = pd.MultiIndex.from_product(
            [["sc"], ["m1", "m2"], PARTS, ["x", "y", "likelihood"]],
            names=["scorer", "individuals", "bodyparts", "coords"],
        )
        vals = []
        for ind in ("m1", "m2"):
            px = c.project(true[ind].reshape(-1, 3)).reshape(N_FRAMES, len(PARTS), 2)
            vals.append(
                np.concatenate([px, np.ones((N_FRAMES, len(PARTS), 1))], axis=2).reshape(N_FRAMES, -1)
            )
        pd.DataFrame(np.hstack(vals), index=frames, columns=cols).to_hdf(tmp_path / f"{c.name}.h5", key="df")
    argv = ["triangulate", "--calibration", str(tmp_path / "rig.calib.yaml"), "--out", str(tmp_path / "o")]
    argv += ["--camera", f"cam0={tmp_path / 'cam0.h5'}", "--camera", f"cam1={tmp_path / 'cam1.h5'}"]
    assert run_cli(argv) == 0
    for ind in ("m1", "m2"):
        df = pd.read_csv(tmp_path / "o" / f"points3d_{ind}.csv")
        est = df[["ear_l_x", "ear_l_y", "ear_l_z"]].to_numpy()
        np.testing.assert_allclose(est, true[ind][:, 1], atol=1e-4)
    assert run_cli([*argv, "--individual", "m2"]) == 0
    assert (tmp_path / "o" / "points3d.csv").is_file()  # one individual chosen: one file


# ----------------------------------------------------------------------------------------------- frame rates
def _moving(t: np.ndarray) -> np.ndarray:
    """(T, K, 3) mm at times ``t`` (s): the body of :func:`_truth` moving fast enough (~100 mm/s) that
    pairing frames 10-20 ms apart shows as millimetres of error."""
    centre = np.stack([40 * np.sin(3 * t), 25 * np.cos(4 * t), 300 + 15 * np.sin(2 * t)], axis=1)
    offsets = np.array([[12.0, 0, 0], [6, 6, 3], [6, -6, 3], [-20, 0, 0]])
    return centre[:, None, :] + offsets[None]


def _rate_views(calib: Calibration, rng: np.random.Generator) -> tuple[dict, dict]:
    """cam0 at 100 Hz (frames 0-299, 100-109 missing), cam1 at 50 Hz (frames 0-149), cam2 at 50 Hz whose
    clock started 0.04 s late (its frame f is at f / 50 + 0.04 s). 0.3 px noise, no outliers."""
    from analysis.io.pose import PoseTable

    spec = {
        "cam0": (100.0, 0.0, np.setdiff1d(np.arange(300), np.arange(100, 110))),
        "cam1": (50.0, 0.0, np.arange(150)),
        "cam2": (50.0, 0.04, np.arange(150)),
    }
    tables, pixels = {}, {}
    for name, (fps, offset, frames) in spec.items():
        xyz = _moving(frames / fps + offset)
        px = calib[name].project(xyz.reshape(-1, 3)).reshape(len(frames), len(PARTS), 2)
        px += rng.normal(0, 0.3, px.shape)
        conf = np.full(px.shape[:2], 0.9)
        tables[name] = PoseTable(px[:, None], conf[:, None], list(PARTS), ["m"], frames, f"{name}.csv")
        pixels[name] = (frames, px, conf)
    return tables, pixels


def test_views_at_different_frame_rates_are_matched_by_time():
    cams = camera_ring(3, distortion=(-0.15, 0.04, 0.001, -0.001, 0.0))
    calib = Calibration({c.name: c for c in cams}, reference="cam0")
    tables, _ = _rate_views(calib, np.random.default_rng(11))
    fps = {"cam0": 100.0, "cam1": 50.0, "cam2": 50.0}
    res = triangulate_views(calib, tables, fps=fps, offsets_s={"cam2": 0.04})
    # the slowest view (cam1, the first at 50 Hz) sets the frames: 0..151 (cam2 reaches 149 + 2)
    np.testing.assert_array_equal(res.frames, np.arange(152))
    np.testing.assert_allclose(res.times_s, np.arange(152) / 50)
    err = np.linalg.norm(res.xyz[:, 0] - _moving(res.times_s), axis=2)
    assert np.nanmedian(err) < 0.3 and np.nanmax(err) < 1.5
    m = res.match
    assert m is not None and m.reference == "cam1" and m.tolerance_s == pytest.approx(0.01)
    # cam0 lacks 1.00-1.09 s: its frame 99 (0.99 s) is within half a 50 Hz frame of 1.00 s, 110 of 1.10 s;
    # its last frame (2.99 s) pairs with 3.00 s, not 3.02 s
    np.testing.assert_array_equal(m.missing("cam0"), [51, 52, 53, 54, 151])
    np.testing.assert_array_equal(m.missing("cam2"), [0, 1])  # before its clock started
    np.testing.assert_array_equal(m.missing("cam1"), [150, 151])
    # by time, never by row position: 1.20 s is cam0 frame 120 (row 110), cam2 frame 58
    assert (
        tables["cam0"].frames[m.rows["cam0"][60]] == 120 and tables["cam2"].frames[m.rows["cam2"][60]] == 58
    )
    assert m.report()[0] == (
        "view 'cam0' has no frame within 10 ms of 5 of 152 times the other views have ('cam1' frames): "
        "51-54, 151"
    )
    # the offset matters: without it cam2's frames are paired 40 ms off and the points are wrong
    wrong = triangulate_views(calib, tables, fps=fps)
    err_wrong = np.linalg.norm(wrong.xyz[:, 0] - _moving(wrong.times_s), axis=2)
    assert np.nanmedian(err_wrong) > 5 * np.nanmedian(err)


def test_one_frame_rate_everywhere_keeps_exact_frame_matching(rig):
    tmp, calib = rig
    tables = {n: read_view(tmp / f) for n, f in (("cam0", "cam0.csv"), ("cam1", "cam1.h5"))}
    by_frame = triangulate_views(calib, tables, min_confidence=0.3)
    by_rate = triangulate_views(calib, tables, min_confidence=0.3, fps={"cam0": 50.0, "cam1": 50.0})
    np.testing.assert_array_equal(by_rate.frames, by_frame.frames)
    np.testing.assert_array_equal(by_rate.xyz, by_frame.xyz)
    assert by_rate.match is not None and by_rate.match.reference is None
    np.testing.assert_allclose(by_rate.times_s, by_frame.frames / 50.0)


def test_frame_rates_from_the_command(tmp_path, capsys):
    cams = camera_ring(3, distortion=(-0.15, 0.04, 0.001, -0.001, 0.0))
    calib = Calibration({c.name: c for c in cams}, reference="cam0")
    save_calibration(calib, tmp_path / "rig.calib.yaml")
    _, pixels = _rate_views(calib, np.random.default_rng(12))
    for name, (frames, px, conf) in pixels.items():
        _write_dlc(tmp_path / f"{name}.csv", frames, px, conf)
    cams3 = ("cam0=cam0.csv", "cam1=cam1.csv", "cam2=cam2.csv")
    argv = _cli(tmp_path, "--fps", "cam0=100", "--fps", "50", "--offset", "cam2=0.04", cams=cams3)
    assert run_cli(argv) == 0
    out = capsys.readouterr()
    assert "has no frame within 10 ms of 5 of 152 times" in out.err
    assert "views matched by time to the frames of 'cam1' (the slowest)" in out.out
    df = pd.read_csv(tmp_path / "out" / "points3d.csv")
    np.testing.assert_allclose(df["time_s"], df["fnum"] / 50)
    est = np.stack([df[[f"{p}_x", f"{p}_y", f"{p}_z"]].to_numpy() for p in PARTS], axis=1)
    assert np.nanmedian(np.linalg.norm(est - _moving(df["time_s"].to_numpy()), axis=2)) < 0.3
    qa = json.loads((tmp_path / "out" / "qa.json").read_text())
    assert qa["matched_by_time"] == {"reference_view": "cam1", "tolerance_ms": 10.0}
    assert qa["settings"]["fps"] == {"cam0": 100.0, "cam1": 50.0, "cam2": 50.0}
    for bad, msg in (
        (("--fps", "cam0=100"), "no frame rate for view 'cam1'"),
        (("--fps", "top=100", "--fps", "50"), "--fps 'top=100': no view named 'top'"),
        (("--fps", "cam0=fast"), "--fps 'cam0=fast': expected NAME=NUMBER"),
        (("--offset", "cam2=0.04"), "a time offset needs the views' frame rates"),
        (("--fps", "cam0=0", "--fps", "50"), "frame rate of 'cam0': 0.0"),
    ):
        assert run_cli(_cli(tmp_path, *bad, cams=cams3)) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err, err


# ----------------------------------------------------------------------------------------------- optimization
def _errors(df: pd.DataFrame, truth: np.ndarray, parts=PARTS) -> np.ndarray:
    est = np.stack([df[[f"{p}_x", f"{p}_y", f"{p}_z"]].to_numpy() for p in parts], axis=1)
    return np.linalg.norm(est - truth, axis=2)


def test_optim_mode_beats_robust_smooth_and_holds_limb_lengths(rig, capsys):
    """The fixture's body is rigid: with a skeleton, each pair's length is the median over the session
    and holds within a fraction of a millimetre in every frame."""
    tmp, _ = rig
    assert run_cli(_cli(tmp, "--ransac", "6", "--smooth", "5")) == 0
    smooth = _errors(pd.read_csv(tmp / "out" / "points3d.csv"), _truth())
    (tmp / "skeleton.txt").write_text("# the body\nsnout, ear_l\nsnout ear_r\near_l - tailbase - ear_r\n")
    assert (
        run_cli(
            _cli(tmp, "--ransac", "6", "--smooth", "5", "--optim", "--skeleton", str(tmp / "skeleton.txt"))
        )
        == 0
    )
    assert "then spatiotemporal optimization (soft_l1 reprojection" in capsys.readouterr().out
    df = pd.read_csv(tmp / "out" / "points3d.csv")
    optim = _errors(df, _truth())
    assert np.isfinite(optim).mean() >= np.isfinite(smooth).mean()  # outputs what the start has
    assert np.nanmedian(optim) < np.nanmedian(smooth) and np.nanpercentile(optim, 90) < np.nanpercentile(
        smooth, 90
    )
    qa = json.loads((tmp / "out" / "qa.json").read_text())
    lengths = qa["settings"]["optim"]["lengths_mm"]["animal"]
    true = _truth()[0]
    for pair, got in lengths.items():
        a, b = pair.split("-")
        want = np.linalg.norm(true[PARTS.index(a)] - true[PARTS.index(b)])
        assert abs(got - want) < 0.3, (pair, got, want)
        est = np.linalg.norm(
            df[[f"{a}_x", f"{a}_y", f"{a}_z"]].to_numpy() - df[[f"{b}_x", f"{b}_y", f"{b}_z"]].to_numpy(),
            axis=1,
        )
        assert np.nanmax(np.abs(est - want)) < 0.5
    # the views' reprojection is still reported, per view and keypoint
    assert qa["views"]["cam0"]["keypoints"]["snout"]["median_px"] < 1.0


def test_optim_without_data_for_a_keypoint_and_user_mistakes(rig, capsys):
    tmp, calib = rig
    (tmp / "bad.txt").write_text("snout, ear_l\nsnout, paw\n")
    rc = run_cli(_cli(tmp, "--optim", "--skeleton", str(tmp / "bad.txt")))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "bad.txt, line 2: no keypoint 'paw' among the triangulated" in err and "\n" not in err
    (tmp / "one.txt").write_text("snout\n")
    assert run_cli(_cli(tmp, "--optim", "--skeleton", str(tmp / "one.txt"))) == 2
    assert "one.txt, line 1: 'snout': expected two or more keypoint names" in capsys.readouterr().err
    assert run_cli(_cli(tmp, "--skeleton", str(tmp / "one.txt"))) == 2
    assert "--skeleton needs --optim" in capsys.readouterr().err
    assert run_cli(_cli(tmp, "--optim", "--optim-smooth", "-1")) == 2
    assert "optimization weight smooth_px_per_mm -1.0" in capsys.readouterr().err
    # a keypoint no view ever saw stays NaN; the others are optimized
    from analysis.triangulate import optimize_tracks, smooth_tracks

    tables = {
        n: read_view(tmp / f) for n, f in (("cam0", "cam0.csv"), ("cam1", "cam1.h5"), ("cam2", "cam2.csv"))
    }
    for tb in tables.values():
        tb.points[:, :, PARTS.index("ear_r")] = np.nan
    start = smooth_tracks(triangulate_views(calib, tables, ransac_px=6), window=5)
    # a wrong starting point behind a camera (its view cannot reproject it) does not stop the solve
    start.xyz[7, 0, 0] = calib["cam0"].center - 50 * calib["cam0"].rotation[2]
    res = optimize_tracks(start)
    assert np.isnan(res.xyz[:, :, PARTS.index("ear_r")]).all()
    err = np.linalg.norm(res.xyz[:, 0] - _truth(), axis=2)
    assert np.nanmedian(err[:, PARTS.index("snout")]) < 0.3 and err[7, 0] < 1.0


# ----------------------------------------------------------------------------------------------- end to end
def test_triangulate_end_to_end_on_the_simulated_rig(tmp_path, capsys):
    """As a user runs it (``deepbehavior triangulate`` through rig.cli.main): the simulated rig's
    calibration, the paw's 3-D path from the simulated mouse's reaches, a digit 2 mm ahead of it; the
    front view a DeepLabCut csv, the side view a SLEAP analysis file; 1 px noise, 4 % gross errors at
    lower confidence, 3 % points missing, and the side camera's file starting 20 frames later."""
    from analysis.camera import save_calibration
    from rig.cli import main
    from rig.config import SimulationConfig
    from rig.sim.scene import synthetic_calibration
    from rig.sim.world import FreeRunSchedule, World

    fps, n = 100.0, 400
    world = World(SimulationConfig(seed=4))
    schedule = FreeRunSchedule(world, 1.5, 10)
    paw = np.empty((n, 3))
    for i in range(n):
        schedule.step(i / fps)
        paw[i] = world.step(i / fps).paw_xyz
    assert np.ptp(paw[:, 1]) > 15  # the path holds reaches toward the pellet, not only rest
    truth = np.stack([paw, paw + [0.0, 2.0, 0.0]], axis=1)  # (T, 2, 3): paw, digit
    parts = ["paw", "digit"]
    calib = synthetic_calibration()
    save_calibration(calib, tmp_path / "rig.calib.yaml")
    rng = np.random.default_rng(9)
    views = {}
    for name, cam in calib.cameras.items():
        px = cam.project(truth.reshape(-1, 3)).reshape(n, 2, 2) + rng.normal(0, 1.0, (n, 2, 2))
        conf = rng.uniform(0.75, 1.0, (n, 2))
        u = rng.random((n, 2))
        bad = u < 0.04
        px[bad] += rng.uniform(15, 50, (int(bad.sum()), 2)) * rng.choice([-1, 1], (int(bad.sum()), 2))
        conf[bad] = rng.uniform(0.5, 0.9, int(bad.sum()))
        px[(u >= 0.04) & (u < 0.07)] = np.nan
        views[name] = (px, conf)
    frames = np.arange(n)
    cols = pd.MultiIndex.from_product(
        [["DLC"], parts, ["x", "y", "likelihood"]], names=["scorer", "bodyparts", "coords"]
    )
    px, conf = views["front"]
    pd.DataFrame(
        np.concatenate([px, conf[..., None]], axis=2).reshape(n, -1), index=frames, columns=cols
    ).to_csv(tmp_path / "front.csv")
    px, conf = views["side"]
    with h5py.File(tmp_path / "side.analysis.h5", "w") as f:  # SLEAP numbers frames from 0: starts 20 later
        f["tracks"] = np.transpose(px[20:, None], (1, 3, 2, 0))
        f["point_scores"] = np.transpose(conf[20:, None], (1, 2, 0))
        f["node_names"] = np.array([p.encode() for p in parts])
        f["track_names"] = np.array([b"mouse"])
    (tmp_path / "skeleton.txt").write_text("paw, digit\n")
    # the side file's frame 0 is the front's frame 20: an offset of 0.2 s puts it there
    base = [
        "triangulate",
        "--calibration",
        str(tmp_path / "rig.calib.yaml"),
        "--camera",
        f"front={tmp_path / 'front.csv'}",
    ]
    base += [
        "--camera",
        f"side={tmp_path / 'side.analysis.h5'}",
        "--fps",
        "100",
        "--offset",
        "side=0.2",
        "--min-confidence",
        "0.7",
    ]
    results = {}
    for mode, extra in (
        ("plain", []),
        ("smooth", ["--smooth", "7"]),
        ("optim", ["--optim", "--skeleton", str(tmp_path / "skeleton.txt")]),
    ):
        out = tmp_path / mode
        assert main([*base, *extra, "--out", str(out), "--nwb"]) == 0, capsys.readouterr().err
        df = pd.read_csv(out / "points3d.csv")
        np.testing.assert_array_equal(df["fnum"], frames)  # front's frame numbers, side placed by time
        results[mode] = _errors(df, truth, parts)
    err = capsys.readouterr().err
    assert (
        "view 'side' has no frame within 5 ms of 20 of 400 times the other views have ('front' frames): 0-19"
        in err
    )
    plain, smooth, optim = results["plain"], results["smooth"], results["optim"]
    assert np.isnan(plain[:20]).all()  # only the front view saw frames 0-19
    assert np.isfinite(optim[20:]).mean() > 0.99  # the modes with a temporal step fill the gaps
    # 1 px at ~90 mm with f ~ 640 px is ~0.15 mm; plain DLT carries the gross errors (p99 several mm),
    # the optimization removes them and beats the robust + smooth mode's median
    assert np.nanpercentile(plain, 99) > 3
    assert np.nanmedian(optim) < 0.2 and np.nanpercentile(optim, 90) < 0.35 and np.nanmax(optim) < 1.0
    assert np.nanpercentile(optim, 99) < 0.1 * np.nanpercentile(plain, 99)
    assert np.nanmedian(optim) < np.nanmedian(smooth) < np.nanmedian(plain)
    pytest.importorskip("ndx_pose")
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(tmp_path / "optim" / "points3d.nwb"), "r") as io:
        behavior = io.read().processing["behavior"]
        (name,) = [k for k in behavior.data_interfaces if k.startswith("pose_3d_")]
        series = behavior[name].pose_estimation_series["paw"]
        np.testing.assert_allclose(series.timestamps[:3], [0.0, 0.01, 0.02])
