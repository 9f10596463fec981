"""Hard-frame mining on a session folder: the bundled paw model runs on both cameras of a simulated
session, whose side video is then tampered with on known triggers (the paw blacked out: seen in one view
only; the image shifted across the epipolar line: the views disagree in 3-D). The mined triggers must be
exactly the tampered ones (beyond what the untouched session already gives), with the right reasons; the
queue opens in the label tool. Plus the scoring itself on synthetic views."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis.camera import CameraModel, camera_ring, load_calibration
from analysis.geometry import reproject
from detection.base import Det, DetectionError, Runner
from detection.commands import main as detect_main
from detection.label_tool import PointSession, list_frames
from detection.mining import mine_session, read_frame_table, score_views
from tests.sessions import run_session

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "detection" / "models" / "paw-yolo11p-96.onnx"
BLACKED = (60, 140, 220)  # triggers whose side frame loses the paw
SHIFTED = (100, 180, 300)  # triggers whose side frame is shifted across the epipolar line
SHIFT_PX = 40.0


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # a fixed length (a trial's length varies: one trial sometimes ended before trigger 300)
    r, s = run_session(tmp_path_factory.mktemp("rec"), "--set", "experiment.n_trials=null", "--duration", "4")
    assert r.returncode == 0, r.stderr[-2000:]
    assert s is not None
    return s.path


def _read_luma(video: Path) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(video)) as c:
        for f in c.decode(video=0):
            p = f.planes[0]
            out.append(
                np.frombuffer(memoryview(p), np.uint8).reshape(-1, p.line_size)[: f.height, : f.width].copy()
            )
    return out


def _write_gray(video: Path, frames: list[np.ndarray]) -> None:
    """Lossless (FFV1, gray) Matroska: the luma plane is the frame, as in the rig's videos."""
    import av

    h, w = frames[0].shape
    with av.open(str(video), "w") as c:
        st = c.add_stream("ffv1", rate=124)
        st.width, st.height, st.pix_fmt = w, h, "gray"
        for img in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="gray")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)


@pytest.fixture(scope="module")
def tampered(session: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session whose side video is altered on BLACKED and SHIFTED triggers (from the
    simulator's truth: the paw's true position projected into the side camera)."""
    d = tmp_path_factory.mktemp("tampered") / session.name
    shutil.copytree(session, d)
    calib = load_calibration(d / "calibration.yaml")
    front, side = calib["front"], calib["side"]
    with (d / "truth.csv").open(newline="") as f:
        truth = {
            int(r["trigger_index"]): np.array([float(r[f"paw_{a}"]) for a in "xyz"])
            for r in csv.DictReader(f)
        }
    trig = read_frame_table(d / "side.frames.csv")
    vi_of = {k: vi for vi, k in trig.items()}
    frames = _read_luma(d / "side.mkv")
    import cv2

    for k in (*BLACKED, *SHIFTED):
        x = truth[k]
        p = reproject([side], x[None])[0, 0]
        img = frames[vi_of[k]]
        if k in BLACKED:
            cv2.circle(img, (round(p[0]), round(p[1])), 22, int(np.median(img)), -1)
        else:  # shift across the epipolar line of the front camera's ray through the paw
            q = reproject([side], (x + 0.05 * (x - front.center))[None])[0, 0]
            along = (q - p) / np.linalg.norm(q - p)
            dx, dy = SHIFT_PX * np.array([-along[1], along[0]])
            m = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
            frames[vi_of[k]] = cv2.warpAffine(
                img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE
            )
    _write_gray(d / "side.mkv", frames)
    return d


def _queue(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_mined_frames_are_where_the_views_disagree(session: Path, tampered: Path, tmp_path: Path) -> None:
    clean = mine_session(_runner(), session, tmp_path / "clean", ["paw"], 0.25, n=100)
    found = mine_session(_runner(), tampered, tmp_path / "mined", ["paw"], 0.25, n=100)
    assert clean.triggers == found.triggers > 300
    base = {t.trigger_index for t in clean.chosen}
    got = {t.trigger_index: t for t in found.chosen}
    assert set(BLACKED) | set(SHIFTED) <= set(got), f"tampered triggers not mined: {sorted(got)}"
    assert set(got) - set(BLACKED) - set(SHIFTED) <= base  # nothing new besides the tampered ones
    for k in BLACKED:  # the side view misses the paw, or takes something else for it (the pellet)
        side = {i.reason for i in got[k].issues if i.camera == "side"}
        assert side & {"paw: seen in front only"} or any("disagree" in r for r in side), got[k].issues
    for k in SHIFTED:
        why = [i.reason for i in got[k].issues if "disagree" in i.reason]
        assert why and {i.camera for i in got[k].issues} == {"front", "side"}, got[k].issues
        err = float(why[0].split("reprojection ")[1].split(" px")[0])
        assert 10 < err < SHIFT_PX  # the shift, split between the two views
    rows = _queue(found.queue)
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    side_vi = {k: vi for vi, k in read_frame_table(tampered / "side.frames.csv").items()}
    by_key = {(int(r["trigger_index"]), r["camera"]): r for r in rows}
    for k in (*BLACKED, *SHIFTED):
        r = by_key[(k, "side")]
        assert int(r["frame"]) == side_vi[k] and (found.queue.parent / r["image"]).is_file()
    # the label tool opens the queue, hardest first
    frames = list_frames(found.queue)
    assert [p.name for p in frames] == list(dict.fromkeys(r["image"] for r in rows))
    ps = PointSession.open(found.queue, tmp_path / "labeled-data" / "mined" / "CollectedData_me.csv", ["paw"])
    assert ps.current == frames[0]


def _runner() -> Runner:
    from detection.commands import _mining_runner

    runner: Runner = _mining_runner(str(MODEL), 0.05, None)
    return runner


def test_mine_cli_on_a_session(tampered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = detect_main(
        ["detect", "mine", str(MODEL), str(tampered), str(tmp_path / "q"), "-n", "10", "--stride", "2"]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "triggers scored (every 2)" in out and "queue:" in out
    rows = _queue(tmp_path / "q" / "queue.csv")
    assert rows and all(int(r["trigger_index"]) % 2 == 0 for r in rows)
    assert {int(r["trigger_index"]) for r in rows} >= {k for k in (*BLACKED, *SHIFTED) if k % 2 == 0}


def test_mine_refuses_a_folder_that_is_not_a_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = detect_main(["detect", "mine", str(MODEL), str(tmp_path), str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a session folder (no session.json)" in err and "Traceback" not in err


# -- the scoring alone, on synthetic views ----------------------------------------------------------------


def _two_views() -> tuple[dict[str, CameraModel], np.ndarray]:
    cams = camera_ring(2)
    return {c.name: c for c in cams}, np.array([[0.0, 0.0, 300.0], [10.0, 5.0, 297.0]])


def test_score_views_flags_exactly_the_corrupted_view() -> None:
    cams, pts = _two_views()
    names = list(cams)
    rng = np.random.default_rng(0)
    dets: dict[str, dict[int, list[Det]]] = {c: {} for c in names}
    for k in range(40):
        x = pts + rng.normal(0, 2.0, pts.shape)
        for c in names:
            uv = reproject([cams[c]], x)[0]
            dets[c][k] = [Det(u - 8, v - 8, u + 8, v + 8, 0.9, j) for j, (u, v) in enumerate(uv)]
    dets[names[1]][7] = [dets[names[1]][7][0]]  # part 1 missing in one view
    d = dets[names[0]][13][0]
    dets[names[0]][13][0] = Det(d.x1 + 30, d.y1 - 30, d.x2 + 30, d.y2 - 30, 0.9, 0)  # off in one view
    d = dets[names[0]][21][1]
    dets[names[0]][21][1] = Det(d.x1, d.y1, d.x2, d.y2, 0.1, 1)  # weak
    scores = score_views(dets, cams, ["snout", "tail"], threshold=0.25, reproj_px=10.0)
    flagged = {s.trigger_index: s for s in scores if s.score > 0}
    assert set(flagged) == {7, 13, 21}
    assert any("tail: seen in" in i.reason for i in flagged[7].issues)
    assert any("snout: views disagree" in i.reason for i in flagged[13].issues)
    assert next(i.reason for i in flagged[21].issues if i.camera == names[0]) == "tail: low confidence 0.10"


def test_score_views_needs_two_cameras() -> None:
    cams, _ = _two_views()
    with pytest.raises(DetectionError, match="two or more cameras"):
        score_views({"front": {0: []}}, cams, ["paw"], 0.25)


def test_extract_from_every_camera_of_a_session(session: Path, tmp_path: Path) -> None:
    assert detect_main(["detect", "extract", str(session), str(tmp_path / "x"), "-n", "3"]) == 0
    names = sorted(p.name for p in (tmp_path / "x").glob("*.png"))
    assert len(names) == 6 and {n.split("_frame")[0] for n in names} == {"front", "side"}
    recorded = {c: set(read_frame_table(session / f"{c}.frames.csv")) for c in ("front", "side")}
    assert all(int(n.split("_frame")[1][:6]) in recorded[n.split("_frame")[0]] for n in names)
