"""Calibration on Bouguet's real stereo data set, ChArUco N-camera calibration on rendered views, importers,
the file format's golden example, and the ``calibrate`` commands."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from analysis.calibration import (
    Charuco,
    Checkerboard,
    Detection,
    baseline_mm,
    calibrate,
    calibrate_from_detections,
    detect_views,
    parse_board,
    read_views,
)
from analysis.calibration_io import import_anipose, import_bouguet, import_calibration, import_opencv
from analysis.camera import Calibration, CameraModel, calibration_from_dict, load_calibration, look_at
from analysis.errors import AnalysisError, CalibrationFailed, CalibrationFileError
from analysis.geometry import triangulate
from tests.analysis_helpers import run_cli

# Bouguet's own per-camera results (Calib_Results_{left,right}.mat, quoted in the data set's SOURCE.txt).
# fc_error / cc_error are the toolbox's stated uncertainties (about three standard deviations).
BOUGUET = {
    "left": {
        "fc": (533.00371, 533.15260),
        "cc": (341.58612, 234.25940),
        "fc_err": (1.08, 1.11),
        "cc_err": (1.24, 1.33),
        "rms": 0.187,
    },
    "right": {
        "fc": (536.98262, 536.56938),
        "cc": (326.47209, 249.33257),
        "fc_err": (1.20, 1.16),
        "cc_err": (1.37, 1.34),
        "rms": 0.193,
    },
}
BASELINE_MM = 99.85  # median over the 14 pairs of Bouguet's per-image extrinsics; per-pair range 98.9-100.7


@pytest.fixture
def bouguet_dir(shared_data: Path) -> Path:
    d = shared_data / "bouguet-stereo-checkerboard"
    if not d.is_dir():
        pytest.skip(f"{d} missing")
    return d


@pytest.fixture
def bouguet_detections(bouguet_dir: Path):
    return _detect_bouguet(str(bouguet_dir))


@functools.lru_cache(maxsize=1)
def _detect_bouguet(bouguet_dir: str):  # detected once per test run, shared by the tests below
    bouguet_dir = Path(bouguet_dir)
    views = {cam: read_views(bouguet_dir / f"{cam}*.jpg") for cam in ("left", "right")}
    dets, records = detect_views(views, Checkerboard(9, 6, 30.0))
    return views, dets, records


def _check_against_bouguet(calib: Calibration, tol_factor: float) -> None:
    for cam, ref in BOUGUET.items():
        k = calib[cam].matrix
        for got, want, err, what in (
            (k[0, 0], ref["fc"][0], ref["fc_err"][0], "fx"),
            (k[1, 1], ref["fc"][1], ref["fc_err"][1], "fy"),
            (k[0, 2], ref["cc"][0], ref["cc_err"][0], "cx"),
            (k[1, 2], ref["cc"][1], ref["cc_err"][1], "cy"),
        ):
            assert abs(got - want) <= tol_factor * err, (
                f"{cam} {what}: {got:.3f} vs Bouguet {want:.3f} +- {err}"
            )
    assert abs(baseline_mm(calib, "left", "right") - BASELINE_MM) < 0.5


def test_bouguet_real_check(bouguet_detections):
    """Per-camera calibration matches Bouguet's toolbox.

    Tolerance: focal lengths and principal points within Bouguet's stated uncertainty (1x fc_error/cc_error,
    which the toolbox gives as ~3 sigma): both tools fit the same model (k3 = 0, no skew) to the same
    images, so only corner localization differs (our corners lie ~0.05 px from Bouguet's). RMS within
    0.03 px of Bouguet's 0.187 / 0.193 px (a different corner refiner gives slightly different residuals).
    Baseline within 0.5 mm of 99.85 mm (Bouguet's per-pair estimates spread over 98.9-100.7 mm).
    """
    _, dets, _ = bouguet_detections
    assert all(d is not None for ds in dets.values() for d in ds), "all 28 boards must be found"
    res = calibrate_from_detections(dets, {"left": (640, 480), "right": (640, 480)})
    _check_against_bouguet(res.calibration, 1.0)
    for cam, ref in BOUGUET.items():
        assert abs(res.report.camera_rms_px[cam] - ref["rms"]) < 0.03, res.report.camera_rms_px
    assert res.calibration.reference == "left"
    np.testing.assert_allclose(res.calibration["left"].tvec, 0)
    # the right camera sits ~100 mm along -x in the left camera's frame (Bouguet: T = [-99.85, 0.82, 0.44])
    t = res.calibration["right"].tvec
    assert t[0] == pytest.approx(-99.85, abs=0.5) and abs(t[1]) < 2 and abs(t[2]) < 2
    assert res.report.stereo_rms_px["left-right"] < 0.3
    assert len([v for v in res.report.views if v.status == "used"]) == 28


def test_bouguet_bundle_adjustment(bouguet_detections):
    """Joint refinement keeps Bouguet's values (2x their uncertainty: the shared board poses now also pull on
    the intrinsics) and gives each camera a sub-0.25 px RMS with one set of board poses for both cameras."""
    _, dets, _ = bouguet_detections
    res = calibrate_from_detections(dets, {"left": (640, 480), "right": (640, 480)}, bundle_adjust=True)
    assert res.report.bundle_adjusted
    _check_against_bouguet(res.calibration, 2.0)
    for cam in ("left", "right"):
        assert res.report.camera_rms_px[cam] < 0.25
        assert res.report.residuals[cam].shape == (14 * 54, 2)


def test_outliers_and_missing_boards_are_listed_and_left_out(bouguet_detections):
    _, dets, _ = bouguet_detections
    rng = np.random.default_rng(1)
    bad = {cam: list(ds) for cam, ds in dets.items()}
    d3 = bad["right"][3]
    assert d3 is not None
    bad["right"][3] = Detection(
        d3.ids, d3.image_points + rng.normal(0, 4.0, d3.image_points.shape), d3.object_points
    )
    bad["left"][5] = None
    res = calibrate_from_detections(bad, {"left": (640, 480), "right": (640, 480)})
    excluded = {(v.camera, v.index): v for v in res.report.excluded()}
    assert excluded[("right", 3)].status == "outlier"
    assert "px >" in excluded[("right", 3)].reason
    assert ("left", 5) not in {(v.camera, v.index) for v in res.report.views if v.status == "used"}
    assert res.calibration.meta["views_used"]["right"] == 13
    _check_against_bouguet(res.calibration, 1.5)  # 13 views instead of 14: slightly looser
    assert "outlier" in res.report.to_text()


def test_too_few_views_is_an_error_naming_the_camera(bouguet_detections):
    _, dets, _ = bouguet_detections
    few = {"left": list(dets["left"]), "right": [dets["right"][0], dets["right"][1]] + [None] * 12}
    with pytest.raises(CalibrationFailed, match=r"camera 'right': only 2 valid board views.*12 of 14"):
        calibrate_from_detections(few, {"left": (640, 480), "right": (640, 480)})


def test_no_board_in_image_is_reported(bouguet_dir):
    views = {
        "left": read_views(bouguet_dir / "left0[1-4].jpg"),
        "right": read_views(bouguet_dir / "right0[1-4].jpg"),
    }
    blank = np.full((480, 640), 128, np.uint8)
    views["left"].append(("blank.png", blank))
    views["right"].append(("right05.jpg", read_views(bouguet_dir / "right05.jpg")[0][1]))
    res = calibrate(views, Checkerboard(9, 6, 30.0))
    rec = next(v for v in res.report.views if v.camera == "left" and v.index == 4)
    assert (rec.status, rec.label, rec.reason) == ("no board", "blank.png", "board not found")
    assert res.calibration.meta["views_used"] == {"left": 4, "right": 5}


def test_bouguet_importer_matches_source_values(bouguet_dir, bouguet_detections):
    calib = import_bouguet(bouguet_dir / "Calib_Results_left.mat", bouguet_dir / "Calib_Results_right.mat")
    for cam, ref in BOUGUET.items():
        k = calib[cam].matrix
        np.testing.assert_allclose([k[0, 0], k[1, 1]], ref["fc"], atol=1e-4)
        np.testing.assert_allclose([k[0, 2], k[1, 2]], ref["cc"], atol=1e-4)
        assert calib[cam].size == (640, 480)
    np.testing.assert_allclose(calib["left"].dist, [-0.28947, 0.10326, 0.00103, -0.00029, 0], atol=1e-5)
    assert baseline_mm(calib, "left", "right") == pytest.approx(BASELINE_MM, abs=0.01)
    assert calib.meta["pairs_used"] == 14
    # Bouguet's own detected corners triangulate to a flat 30 mm grid with his calibration
    import scipy.io

    ml = scipy.io.loadmat(str(bouguet_dir / "Calib_Results_left.mat"))
    mr = scipy.io.loadmat(str(bouguet_dir / "Calib_Results_right.mat"))
    obs = np.stack([ml["x_1"].T, mr["x_1"].T])
    pts = triangulate([calib["left"], calib["right"]], obs)
    d = np.linalg.norm(np.diff(pts.reshape(6, 9, 3), axis=1), axis=2)
    assert np.median(d) == pytest.approx(30.0, abs=0.2)
    single = import_bouguet(bouguet_dir / "Calib_Results_right.mat", names=("right", "x"))
    assert list(single.cameras) == ["right"]
    with pytest.raises(CalibrationFileError, match=r"SOURCE\.txt: not a MATLAB"):
        import_bouguet(bouguet_dir / "SOURCE.txt")


def _stereo_calib() -> Calibration:
    k = np.array([[800.0, 0, 320], [0, 790, 240], [0, 0, 1]])
    left = CameraModel("left", (640, 480), k, [-0.2, 0.1, 0.001, -0.002, 0.0])
    right = CameraModel(
        "right",
        (640, 480),
        k * [[1.01], [1], [1]],
        [-0.21, 0.09, 0, 0, 0.01],
        [0.02, -0.2, 0.01],
        [-100.0, 2.0, 5.0],
    )
    return Calibration({"left": left, "right": right}, reference="left")


@pytest.mark.parametrize("suffix", [".yml", ".xml"])
def test_opencv_stereo_yaml_xml_importer(tmp_path, suffix):
    calib = _stereo_calib()
    intr, extr = tmp_path / f"intrinsics{suffix}", tmp_path / f"extrinsics{suffix}"
    fs = cv2.FileStorage(str(intr), cv2.FILE_STORAGE_WRITE)
    for i, cam in (("1", calib["left"]), ("2", calib["right"])):
        fs.write(f"M{i}", cam.matrix)
        fs.write(f"D{i}", cam.dist.reshape(1, -1))
    fs.write("image_width", 640)
    fs.write("image_height", 480)
    fs.release()
    fs = cv2.FileStorage(str(extr), cv2.FILE_STORAGE_WRITE)
    fs.write("R", calib["right"].rotation)
    fs.write("T", calib["right"].tvec.reshape(3, 1))
    fs.release()
    got = import_opencv([intr, extr], names=("left", "right"))
    for name in ("left", "right"):
        np.testing.assert_allclose(got[name].matrix, calib[name].matrix)
        np.testing.assert_allclose(got[name].dist, calib[name].dist)
        np.testing.assert_allclose(got[name].rvec, calib[name].rvec, atol=1e-9)
        np.testing.assert_allclose(got[name].tvec, calib[name].tvec)
    assert got.reference == "left" and got["right"].size == (640, 480)
    with pytest.raises(CalibrationFileError, match=r"extrinsics.*lacks camera 1 matrix"):
        import_opencv(extr, size=(640, 480))


def test_anipose_importer_reads_aniposelib_output(tmp_path):
    aniposelib = pytest.importorskip("aniposelib.cameras")
    calib = _stereo_calib()
    group = aniposelib.CameraGroup(
        [
            aniposelib.Camera(
                name=c.name, size=c.size, matrix=c.matrix, dist=c.dist, rvec=c.rvec, tvec=c.tvec
            )
            for c in calib.cameras.values()
        ]
    )
    path = tmp_path / "calibration.toml"
    group.dump(str(path))
    got = import_calibration([path])
    rng = np.random.default_rng(0)
    pts = rng.uniform([-50, -50, 400], [50, 50, 600], (50, 3))
    for name in ("left", "right"):
        assert got[name].size == (640, 480)
        np.testing.assert_allclose(got[name].project(pts), calib[name].project(pts), atol=1e-6)
    # aniposelib projects the same points to the same pixels
    ap = group.project(pts)
    np.testing.assert_allclose(ap[1].reshape(-1, 2), got["right"].project(pts), atol=1e-6)
    path.write_text(path.read_text().replace("matrix", "matrx", 1))
    with pytest.raises(CalibrationFileError, match=r"calibration.toml: \[cam_0\] lacks 'matrix'"):
        import_anipose(path)


def test_golden_example_in_calibration_md_loads():
    text = (Path(__file__).parents[2] / "analysis" / "CALIBRATION.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block, "CALIBRATION.md must hold a ```yaml golden example"
    calib = calibration_from_dict(yaml.safe_load(block.group(1)), source="CALIBRATION.md")
    assert list(calib.cameras) == ["left", "right"] and calib.reference == "left" and calib.units == "mm"
    assert calib["right"].matrix[0, 0] == 537.0 and calib["left"].dist.size == 5
    assert baseline_mm(calib, "left", "right") == pytest.approx(np.linalg.norm([-99.85, 0.82, 0.44]))
    with pytest.raises(CalibrationFileError, match=r"CALIBRATION\.md: no camera named 'top'"):
        calib["top"]


def _look_at(center: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return look_at(center, target, up=(0.0, -1.0, 0.0))


def test_charuco_three_cameras_rendered_views_with_bundle_adjustment():
    """Three pinhole cameras see a ChArUco board rendered at 10 poses; calibration recovers their poses."""
    board = Charuco(7, 5, 30.0, 22.0, "DICT_4X4_50")
    s, m = 4.0, 40  # board image: 4 px per mm, 40 px white margin
    img = board.board().generateImage((int(7 * 30 * s), int(5 * 30 * s)), marginSize=0)
    img = cv2.copyMakeBorder(img, m, m, m, m, cv2.BORDER_CONSTANT, value=255)
    to_mm = np.array([[1 / s, 0, (0.5 - m) / s], [0, 1 / s, (0.5 - m) / s], [0, 0, 1]])
    k = np.array([[820.0, 0, 322], [0, 815, 238], [0, 0, 1]])
    target = np.array([0.0, 0.0, 600.0])
    truth = {
        name: CameraModel(name, (640, 480), k, np.zeros(5), *_look_at(np.asarray(c, float), target))
        for name, c in (("front", (0, 0, 0)), ("left", (-150, 10, 20)), ("right", (140, -20, 10)))
    }
    rng = np.random.default_rng(3)
    views: dict[str, list[tuple[str, np.ndarray]]] = {n: [] for n in truth}
    for v in range(10):
        rb = cv2.Rodrigues(rng.uniform(-0.5, 0.5, 3))[0]
        tb = target + rng.uniform([-60, -40, -60], [60, 40, 60]) - rb @ np.array([105.0, 75.0, 0.0])
        for name, cam in truth.items():
            r, t = cam.rotation @ rb, cam.rotation @ tb + cam.tvec
            h = k @ np.column_stack([r[:, 0], r[:, 1], t]) @ to_mm
            views[name].append((f"v{v}", cv2.warpPerspective(img, h, (640, 480), borderValue=200)))
    dets, records = detect_views(views, board)
    assert not records, "the board is found in every rendered view"
    sizes = {n: (640, 480) for n in truth}
    plain = calibrate_from_detections(dets, sizes, reference="front")
    res = calibrate_from_detections(dets, sizes, reference="front", bundle_adjust=True)
    calib = res.calibration
    assert list(calib.cameras) == ["front", "left", "right"]

    def worst_center_error(c: Calibration) -> float:
        return max(float(np.linalg.norm(c[n].center - cam.center)) for n, cam in truth.items())

    # 10 views of a 24-corner board leave per-camera intrinsics loose (the pairwise 'left' pose is ~18 mm
    # off in depth); the joint adjustment must pull every camera centre to within 5 mm of the truth
    assert worst_center_error(calib) < 5.0 < worst_center_error(plain.calibration)
    for name, cam in truth.items():
        got = calib[name]
        rel = got.rotation @ cam.rotation.T
        assert np.degrees(np.linalg.norm(cv2.Rodrigues(rel)[0])) < 0.5
        assert got.matrix[0, 0] == pytest.approx(820, rel=0.01)
        assert res.report.camera_rms_px[name] < 0.5
    assert baseline_mm(calib, "left", "right") == pytest.approx(
        np.linalg.norm(truth["left"].center - truth["right"].center), abs=3.0
    )


def test_parse_board_specs():
    assert parse_board("checkerboard:9x6:30") == Checkerboard(9, 6, 30.0)
    assert parse_board("charuco:7x5:30:22:DICT_5X5_100") == Charuco(7, 5, 30.0, 22.0, "DICT_5X5_100")
    with pytest.raises(AnalysisError, match="board spec 'checker:9x6'"):
        parse_board("checker:9x6")


def test_calibrate_command_writes_file_report_and_plot(bouguet_dir, tmp_path, capsys):
    out = tmp_path / "rig.calib.yaml"
    rc = run_cli(
        [
            "calibrate",
            "--camera",
            f"left={bouguet_dir}/left*.jpg",
            "--camera",
            f"right={bouguet_dir}/right*.jpg",
            "--board",
            "checkerboard:9x6:30",
            "--every",
            "2",
            "--out",
            str(out),
            "--report",
            str(tmp_path / "r.json"),
            "--plot",
            str(tmp_path / "r.png"),
        ]
    )
    assert rc == 0
    calib = load_calibration(out)
    assert baseline_mm(calib, "left", "right") == pytest.approx(BASELINE_MM, abs=1.5)  # 7 pairs only
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["views"]) == 14 and set(report["camera_rms_px"]) == {"left", "right"}
    assert cv2.imread(str(tmp_path / "r.png")) is not None
    assert "camera right: RMS" in capsys.readouterr().out


def test_calibrate_commands_report_bad_input(bouguet_dir, tmp_path, capsys):
    out = tmp_path / "x.yaml"
    rc = run_cli(
        [
            "calibrate",
            "--camera",
            f"left={tmp_path}/none*.png",
            "--board",
            "checkerboard:9x6:30",
            "--out",
            str(out),
        ]
    )
    assert rc == 2 and "none*.png: no images found" in capsys.readouterr().err
    assert not out.exists()
    rc = run_cli(["calibrate-import", str(tmp_path / "missing.toml"), "--out", str(out)])
    assert rc == 2 and "missing.toml: calibration file not found" in capsys.readouterr().err
    rc = run_cli(
        [
            "calibrate-import",
            str(bouguet_dir / "Calib_Results_left.mat"),
            str(bouguet_dir / "Calib_Results_right.mat"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0 and baseline_mm(load_calibration(out), "left", "right") == pytest.approx(
        BASELINE_MM, abs=0.01
    )


def test_calibration_from_videos_matches_images(bouguet_dir, bouguet_detections, tmp_path):
    """Lossless (FFV1) videos of the 14 pairs give exactly the image-based calibration."""
    from analysis.calibration import calibrate_sources

    views, dets, _ = bouguet_detections
    sources = {}
    for cam in ("left", "right"):
        path = tmp_path / f"{cam}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10, (640, 480), isColor=False)
        assert writer.isOpened(), "OpenCV's FFV1 writer is needed for this test"
        for _, img in views[cam]:
            writer.write(img)
        writer.release()
        sources[cam] = path
    res = calibrate_sources(sources, Checkerboard(9, 6, 30.0))
    ref = calibrate_from_detections(dets, {"left": (640, 480), "right": (640, 480)})
    # same pixels, same corners: equal up to the solver's floating-point summation order, which OpenCV's
    # threads may change from run to run (5e-9 relative seen once under load); lossy MJPG videos of the
    # same views move the matrix by 2e-4 relative (measured)
    for cam in ("left", "right"):
        np.testing.assert_allclose(res.calibration[cam].matrix, ref.calibration[cam].matrix, rtol=1e-7)
        np.testing.assert_allclose(res.calibration[cam].tvec, ref.calibration[cam].tvec, atol=1e-6)
    assert res.report.views[0].label == "left.avi#0"
    with pytest.raises(CalibrationFailed, match=r"different numbers of views.*left=14, right=7"):
        calibrate_sources(
            {"left": sources["left"], "right": bouguet_dir / "right0[1-7].jpg"}, Checkerboard(9, 6, 30)
        )


def test_cameras_without_views_shared_with_the_reference_are_chained():
    """'far' never sees the board together with 'ref': it is placed through 'mid'. A camera sharing no
    views with any placed camera is an error that names it."""
    board = Checkerboard(9, 6, 30.0)
    obj = board.object_points()
    k = np.array([[800.0, 0, 320], [0, 800, 240], [0, 0, 1]])
    target = np.array([0.0, 0.0, 700.0])
    truth = {
        name: CameraModel(name, (640, 480), k, np.zeros(5), *_look_at(np.asarray(c, float), target))
        for name, c in (("ref", (0, 0, 0)), ("mid", (-200, 0, 50)), ("far", (-400, 0, 150)))
    }
    rng = np.random.default_rng(5)
    dets: dict[str, list[Detection | None]] = {n: [] for n in truth}
    seen_by = [("ref", "mid")] * 8 + [("mid", "far")] * 8 + [("ref",), ("mid",), ("far",)] * 3
    for cams in seen_by:
        rb = cv2.Rodrigues(rng.uniform(-0.4, 0.4, 3))[0]
        tb = target + rng.uniform(-50, 50, 3) - rb @ np.array([120.0, 75.0, 0.0])
        for name, cam in truth.items():
            if name not in cams:
                dets[name].append(None)
                continue
            r, t = cam.rotation @ rb, cam.rotation @ tb + cam.tvec
            px = cv2.projectPoints(obj, cv2.Rodrigues(r)[0], t, k, np.zeros(5))[0].reshape(-1, 2)
            dets[name].append(Detection(np.arange(len(obj)), px + rng.normal(0, 0.05, px.shape), obj))
    sizes = {n: (640, 480) for n in truth}
    res = calibrate_from_detections(dets, sizes, reference="ref")
    assert set(res.report.stereo_rms_px) == {"ref-mid", "mid-far"}
    for name, cam in truth.items():
        assert np.linalg.norm(res.calibration[name].center - cam.center) < 2.0, name
    cut = {n: list(d) for n, d in dets.items()}
    cut["far"] = [d if seen_by[i] == ("far",) else None for i, d in enumerate(cut["far"])]
    with pytest.raises(CalibrationFailed, match=r"camera\(s\) far share fewer than 3 board views"):
        calibrate_from_detections(cut, sizes, reference="ref")
