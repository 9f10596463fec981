"""Importers on real files from other tools (OpenPose, DeepLabCut, StreamPix) and on hand-written files in
the formats of SLEAP, darknet, YOLO and TensorBox; bad input names the file and the item."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from analysis.errors import ImportFormatError
from analysis.io.detections import best_box_centers, read_darknet_text, read_tensorbox_json, read_yolo_txt
from analysis.io.pose import BODY_25, read_dlc, read_openpose, read_sleap_analysis, video_frame_count
from analysis.io.seq import SeqReader, read_seq


@pytest.fixture
def openpose_dir(shared_data: Path) -> Path:
    return shared_data / "openposer-body25-signlanguage"


def test_openpose_body25_matches_openposer_csv(openpose_dir):
    table = read_openpose(openpose_dir / "data" / "du_wohn_wo")
    assert table.points.shape == (175, 1, 25 + 21 + 21, 2)
    assert table.bodyparts[:25] == BODY_25 and table.bodyparts[25] == "hand_left_Wrist"
    csv = pd.read_csv(openpose_dir / "du_wohn_wo_body25.csv").to_numpy().reshape(175, 25, 3)
    missing = (csv == 0).all(axis=2)
    np.testing.assert_allclose(table.points[:, 0, :25][~missing], csv[..., :2][~missing])
    assert np.isnan(table.points[:, 0, :25][missing]).all()  # zeros are missing, not the image corner
    np.testing.assert_allclose(table.confidence[:, 0, :25], csv[..., 2])
    assert np.isnan(table.points[:, 0, 25:]).all()  # hands were not run for this video
    np.testing.assert_allclose(table.part("RWrist")[0], [367.254, 476.905])
    table.check_frame_count(video_frame_count(openpose_dir / "data" / "du_wohn_wo.mp4"), "du_wohn_wo.mp4")
    with pytest.raises(
        ImportFormatError, match=r"175 frames of keypoints but du_wohn_wo\.mp4 has 174 frames"
    ):
        table.check_frame_count(174, "du_wohn_wo.mp4")


def test_openpose_several_people_hands_and_bad_json(tmp_path):
    body = [float(v) for v in range(1, 76)]
    hand = [0.0] * 3 + [float(v) for v in range(1, 61)]
    people = [
        {"pose_keypoints_2d": body, "hand_left_keypoints_2d": hand, "hand_right_keypoints_2d": []},
        {"pose_keypoints_2d": [0.0] * 75, "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": hand},
    ]
    (tmp_path / "v_000000000000_keypoints.json").write_text(json.dumps({"version": 1.3, "people": people}))
    (tmp_path / "v_000000000001_keypoints.json").write_text(
        json.dumps({"version": 1.3, "people": people[:1]})
    )
    t = read_openpose(tmp_path)
    assert t.points.shape == (2, 2, 67, 2) and t.individuals == ["person0", "person1"]
    np.testing.assert_allclose(t.points[0, 0, 0], [1, 2])
    assert np.isnan(t.points[0, 0, 25]).all()  # the left-hand wrist is (0, 0, 0): missing
    np.testing.assert_allclose(t.points[0, 0, 26], [1, 2])
    assert np.isnan(t.points[1, 1]).all()  # person 1 absent in frame 1
    np.testing.assert_allclose(t.points[0, 1, 46 + 1], [1, 2])  # person 1's right hand
    (tmp_path / "v_000000000001_keypoints.json").write_text('{"people": [ {"pose_keypoints_2d": [1, 2,')
    with pytest.raises(ImportFormatError, match=r"v_000000000001_keypoints.json: malformed JSON at line 1"):
        read_openpose(tmp_path)
    (tmp_path / "v_000000000001_keypoints.json").write_text(
        json.dumps({"people": [{"pose_keypoints_2d": [1, 2]}]})
    )
    with pytest.raises(ImportFormatError, match=r"people\[0\].pose_keypoints_2d has 2 values, expected 75"):
        read_openpose(tmp_path)


def test_dlc_reaching_2d_and_3d(shared_data):
    d = shared_data / "dlc2kinematics-mouse-reaching"
    two = read_dlc(d / "reachingDEMO_2D.h5")
    three = read_dlc(d / "reachingDEMO_3D.h5")
    assert two.points.shape == (800, 1, 33, 2) and three.points.shape == (800, 1, 33, 3)
    assert two.frames[0] == 42150 and two.frames[-1] == 42949
    assert "Right_wrist" in two.bodyparts and two.bodyparts == three.bodyparts
    raw = pd.read_hdf(d / "reachingDEMO_2D.h5")
    scorer = raw.columns.get_level_values(0)[0]
    np.testing.assert_allclose(two.part("Right_wrist")[:, 0], raw[(scorer, "Right_wrist", "x")].to_numpy())
    np.testing.assert_allclose(two.confidence[:, 0, 0], raw[(scorer, "nose", "likelihood")].to_numpy())
    assert np.isnan(three.points).any(axis=3).mean() == pytest.approx(0.175, abs=0.01)
    assert np.isnan(three.confidence).all()


def test_dlc_labels_csv_equals_h5(shared_data):
    d = shared_data / "dlc-openfield-pranav" / "labeled-data" / "m4s1"
    a, b = read_dlc(d / "CollectedData_Pranav.csv"), read_dlc(d / "CollectedData_Pranav.h5")
    assert a.points.shape == (116, 1, 4, 2) and a.bodyparts == ["snout", "leftear", "rightear", "tailbase"]
    np.testing.assert_allclose(a.points, b.points)
    assert a.meta["index"][0].endswith("img0000.png")


def test_dlc_multi_animal_csv_and_h5(tmp_path):
    cols = pd.MultiIndex.from_product(
        [["sc"], ["mouse1", "mouse2"], ["snout", "tail"], ["x", "y", "likelihood"]],
        names=["scorer", "individuals", "bodyparts", "coords"],
    )
    vals = np.arange(5 * 12, dtype=float).reshape(5, 12)
    vals[2, 3:6] = np.nan
    df = pd.DataFrame(vals, columns=cols)
    df.to_hdf(tmp_path / "ma.h5", key="df_with_missing")
    df.to_csv(tmp_path / "ma.csv")
    for f in ("ma.h5", "ma.csv"):
        t = read_dlc(tmp_path / f)
        assert t.individuals == ["mouse1", "mouse2"] and t.points.shape == (5, 2, 2, 2)
        np.testing.assert_allclose(t.part("tail", "mouse1")[0], [3, 4])
        np.testing.assert_allclose(t.part("snout", "mouse2")[4], [54, 55])
        assert np.isnan(t.part("tail", "mouse1")[2]).all()
    (tmp_path / "bad.csv").write_text("frame,a,b\n1,2,3\n")
    with pytest.raises(ImportFormatError, match=r"bad.csv: line 1 must start with 'scorer'"):
        read_dlc(tmp_path / "bad.csv")


def test_sleap_analysis_h5(tmp_path):
    n_t, n_i, n_k = 7, 2, 3
    tracks = np.arange(n_i * 2 * n_k * n_t, dtype=float).reshape(n_i, 2, n_k, n_t)
    tracks[1, :, 2, 4] = np.nan
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["tracks"] = tracks
        f["node_names"] = [b"nose", b"head", b"tail"]
        f["track_names"] = [b"resident", b"intruder"]
        f["point_scores"] = np.full((n_i, n_k, n_t), 0.9)
    t = read_sleap_analysis(tmp_path / "a.h5")
    assert t.points.shape == (n_t, n_i, n_k, 2) and t.individuals == ["resident", "intruder"]
    np.testing.assert_allclose(t.part("head", "intruder")[3], tracks[1, :, 1, 3])
    assert np.isnan(t.part("tail", "intruder")[4]).all()
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["tracks"] = tracks
    with pytest.raises(ImportFormatError, match=r"b.h5: not a SLEAP analysis file \(no 'node_names'"):
        read_sleap_analysis(tmp_path / "b.h5")


DARKNET_DEMO = """ CUDA-version: 10010 (10020), cuDNN: 7.6.5, GPU count: 1
 OpenCV version: 3.2.0
Video stream: 448 x 460
FPS:0.0 	 AVG_FPS:0.0
Objects:

paw: 97%	(left_x:  210   top_y:  181   width:   32   height:   28)
pellet: 64%	(left_x:  301   top_y:  250   width:   12   height:   11)

FPS:118.4 	 AVG_FPS:0.0
Objects:


FPS:120.1 	 AVG_FPS:0.0
Objects:

paw: 88%	(left_x:  215   top_y:  175   width:   31   height:   29)
paw: 35%	(left_x:   20   top_y:   15   width:   30   height:   30)
"""


def test_darknet_ext_output_text(tmp_path):
    p = tmp_path / "demo.txt"
    p.write_text(DARKNET_DEMO)
    df = read_darknet_text(p)
    assert df.attrs["n_frames"] == 3 and len(df) == 4
    assert list(df["frame"]) == [0, 0, 2, 2] and df.iloc[1]["label"] == "pellet"
    assert df.iloc[0][["confidence", "left", "top", "width", "height"]].tolist() == [0.97, 210, 181, 32, 28]
    pts, conf = best_box_centers(df, "paw", 3)
    np.testing.assert_allclose(pts[0], [226, 195])
    assert np.isnan(pts[1]).all() and conf[2] == 0.88
    np.testing.assert_allclose(pts[2], [230.5, 189.5])
    p.write_text(DARKNET_DEMO.replace("width:   12", "width: twelve"))
    with pytest.raises(ImportFormatError, match=r"demo.txt: line 8: malformed darknet box line"):
        read_darknet_text(p)


def test_yolo_txt_and_tensorbox_json(tmp_path):
    (tmp_path / "f0.txt").write_text("0 0.5 0.5 0.1 0.2 0.9\n1 0.25 0.25 0.5 0.5\n")
    (tmp_path / "f1.txt").write_text("")
    df = read_yolo_txt(tmp_path, (400, 300), ["paw", "pellet"])
    assert df.attrs["n_frames"] == 2 and list(df["label"]) == ["paw", "pellet"]
    np.testing.assert_allclose(
        df.iloc[0][["left", "top", "width", "height"]].astype(float), [180, 120, 40, 60]
    )
    assert df.iloc[1]["confidence"] == 1.0
    (tmp_path / "f1.txt").write_text("0 0.5 0.5\n")
    with pytest.raises(ImportFormatError, match=r"f1.txt: line 1: expected 'class cx cy w h \[conf\]'"):
        read_yolo_txt(tmp_path, (400, 300))
    tb = tmp_path / "tb.json"
    tb.write_text(
        json.dumps(
            [
                {
                    "image_path": "frame0.png",
                    "rects": [{"x1": 10, "y1": 20, "x2": 30, "y2": 60, "score": 0.8}],
                },
                {"image_path": "frame1.png", "rects": []},
            ]
        )
    )
    df = read_tensorbox_json(tb, label="paw")
    assert len(df) == 1 and df.attrs["n_frames"] == 2
    assert df.iloc[0][["left", "top", "width", "height", "confidence"]].tolist() == [10, 20, 20, 40, 0.8]
    tb.write_text(json.dumps([{"image_path": "a.png", "rects": [{"x1": 1}]}]))
    with pytest.raises(ImportFormatError, match=r"tb.json: item \[0\].rects\[0\] lacks numeric"):
        read_tensorbox_json(tb)


def test_norpix_seq_real_file(shared_data):
    frames, ts, hdr = read_seq(shared_data / "norpix-seq-pims" / "sample_norpix6.seq")
    assert frames.shape == (6, 32, 36) and frames.dtype == np.uint8
    assert (hdr.width, hdr.height, hdr.n_frames, hdr.frame_rate) == (36, 32, 6, 10.0)
    assert all(not np.array_equal(frames[i], frames[j]) for i in range(6) for j in range(i + 1, 6))
    assert (np.diff(ts) > 0).all() and ts[0] > 1.4e9  # seconds since the epoch (2015)
    with SeqReader(shared_data / "norpix-seq-pims" / "sample_norpix6.seq") as r:
        np.testing.assert_array_equal(r[-1], frames[5])
        with pytest.raises(IndexError, match="frame 6 out of range"):
            r[6]


def test_norpix_seq_corrupt_header_and_truncation(shared_data, tmp_path):
    src = shared_data / "norpix-seq-pims" / "sample_norpix6.seq"
    bad = tmp_path / "bad.seq"
    shutil.copy(src, bad)
    with bad.open("r+b") as f:
        f.write(b"\x00\x00")
    with pytest.raises(ImportFormatError, match=r"bad.seq: byte 0: magic 0x0 is not 0xFEED"):
        read_seq(bad)
    data = src.read_bytes()
    short = tmp_path / "short.seq"
    short.write_bytes(data[: 8192 + 4 * 8192 + 100])
    with pytest.raises(ImportFormatError, match=r"short.seq: header says 6 frames but the file holds 4"):
        read_seq(short)
    geo = tmp_path / "geo.seq"
    geo.write_bytes(data[:564] + (999).to_bytes(4, "little") + data[568:])
    with pytest.raises(ImportFormatError, match=r"geo.seq: byte 564: image size 999 B"):
        read_seq(geo)


def _openpose_file(path: Path, x: float) -> None:
    body = [0.0] * 75
    body[3:6] = [x, 2 * x, 0.9]  # Neck
    path.write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": body}]}))


def test_openpose_keeps_file_frame_numbers_and_contiguous_fills_gaps(tmp_path):
    """Files 1..129 with 14 missing (as OpenPose leaves them after dropped frames) keep their numbers."""
    missing = set(range(20, 27)) | set(range(60, 67))
    present = [n for n in range(1, 130) if n not in missing]
    for n in present:
        _openpose_file(tmp_path / f"clip_{n:012d}_keypoints.json", float(n))
    t = read_openpose(tmp_path, parts=("pose",))
    assert t.n_frames == 115
    np.testing.assert_array_equal(t.frames, present)
    np.testing.assert_allclose(t.part("Neck")[:, 0], present)  # row k holds file frames[k]
    full = t.contiguous()
    np.testing.assert_array_equal(full.frames, np.arange(1, 130))
    neck = full.part("Neck")[:, 0]
    assert np.isnan(neck[np.isin(full.frames, sorted(missing))]).all()
    np.testing.assert_allclose(neck[~np.isin(full.frames, sorted(missing))], present)


def test_openpose_numbers_order_files_without_zero_padding(tmp_path):
    for n in (8, 9, 10, 11):
        _openpose_file(tmp_path / f"v_{n}_keypoints.json", float(n))
    t = read_openpose(tmp_path, parts=("pose",))
    np.testing.assert_array_equal(t.frames, [8, 9, 10, 11])  # not 10, 11, 8, 9 (name order)
    np.testing.assert_allclose(t.part("Neck")[:, 0], [8, 9, 10, 11])


def test_real_files_keep_their_frame_numbers(shared_data):
    op = read_openpose(shared_data / "openposer-body25-signlanguage" / "data" / "du_wohn_wo")
    np.testing.assert_array_equal(op.frames, np.arange(175))  # du_wohn_wo_000000000000 .. 174
    reach = read_dlc(shared_data / "dlc2kinematics-mouse-reaching" / "reachingDEMO_2D.h5")
    np.testing.assert_array_equal(reach.frames, np.arange(42150, 42950))
    labels = shared_data / "dlc-openfield-pranav" / "labeled-data" / "m4s1"
    for f in ("CollectedData_Pranav.csv", "CollectedData_Pranav.h5"):
        t = read_dlc(labels / f)
        # frame numbers from the labeled images' names (img0000.png ...), in the file's row order
        expect = [int(Path(i).stem[3:]) for i in t.meta["index"]]
        np.testing.assert_array_equal(t.frames, expect)
        assert t.individuals == ["animal"]


def test_dlc_labels_numbered_by_image_names_with_gaps(tmp_path):
    cols = pd.MultiIndex.from_product(
        [["me"], ["snout"], ["x", "y"]], names=["scorer", "bodyparts", "coords"]
    )
    index = [f"labeled-data/v/img{n:04d}.png" for n in (40, 3, 17)]
    pd.DataFrame([[1.0, 2], [3, 4], [5, 6]], index=index, columns=cols).to_csv(tmp_path / "c.csv")
    t = read_dlc(tmp_path / "c.csv")
    np.testing.assert_array_equal(t.frames, [3, 17, 40])  # sorted into frame order with their rows
    np.testing.assert_allclose(t.part("snout")[:, 0], [3, 5, 1])


# ------------------------------------------------------------------------------------------- JABS
def _jabs_file(path: Path, version: int, n_frames: int = 6) -> np.ndarray:
    """A JABS pose file in the documented layout; returns the (x, y) points written, (T, I, 12, 2)."""
    rng = np.random.default_rng(version)
    n_inst = 1 if version == 2 else 3
    xy = rng.uniform(10, 500, (n_frames, n_inst, 12, 2))
    conf = rng.uniform(0.5, 1.0, (n_frames, n_inst, 12))
    conf[1, 0, 3] = 0.0  # a point not found
    with h5py.File(path, "w") as f:
        g = f.create_group("poseest")
        g.attrs["version"] = np.array([version, 0], dtype=np.uint16)
        g.attrs["cm_per_pixel"] = np.float32(0.0705)
        yx = xy[..., ::-1].astype(np.uint16)  # stored (y, x), whole pixels
        if version == 2:
            g["points"], g["confidence"] = yx[:, 0], conf[:, 0].astype(np.float32)
        else:
            g["points"], g["confidence"] = yx, conf.astype(np.float32)
        if version == 3:
            g["instance_count"] = np.array([3, 2, 2, 3, 1, 0][:n_frames], dtype=np.uint8)
            g["instance_track_id"] = np.zeros((n_frames, n_inst), dtype=np.uint32)
        if version >= 4:
            # identities 1..3; in frame 2 instances 0 and 2 swap identities; instance 1 masked in frame 4
            ids = np.tile(np.array([1, 2, 3], dtype=np.uint32), (n_frames, 1))
            ids[2] = [3, 2, 1]
            mask = np.zeros((n_frames, n_inst), dtype=np.uint8)
            mask[4, 1] = 1
            g["instance_embed_id"], g["id_mask"] = ids, mask
        if version >= 5:
            so = f.create_group("static_objects")
            so["corners"] = np.array([[10, 20], [10, 500], [500, 20], [500, 500]], dtype=np.uint16)
    return np.floor(xy)


@pytest.mark.parametrize("version", [2, 3, 4, 5, 6])
def test_jabs_pose_files(tmp_path, version):
    from analysis.io.jabs import JABS_KEYPOINTS, read_jabs
    from analysis.io.pose import read_pose

    path = tmp_path / f"video_pose_est_v{version}.h5"
    xy = _jabs_file(path, version)
    t = read_pose(path)
    assert t.meta["format"] == "jabs" and t.meta["version"] == version
    assert t.meta["cm_per_pixel"] == pytest.approx(0.0705)
    assert t.bodyparts == JABS_KEYPOINTS and t.bodyparts[0] == "nose" and len(t.bodyparts) == 12
    np.testing.assert_array_equal(t.frames, np.arange(6))
    assert np.isnan(t.points[1, 0, 3]).all() and np.isnan(t.confidence[1, 0, 3])  # confidence 0: missing
    if version == 2:
        assert t.individuals == ["mouse"]
        np.testing.assert_allclose(t.points[0, 0], xy[0, 0])  # (y, x) on disk -> (x, y)
    elif version == 3:
        assert t.individuals == ["instance0", "instance1", "instance2"]
        np.testing.assert_allclose(t.points[0, 2], xy[0, 2])
        assert np.isnan(t.points[1, 2]).all() and np.isnan(t.points[5]).all()  # beyond instance_count
    else:
        assert t.individuals == ["id1", "id2", "id3"]
        np.testing.assert_allclose(t.part("tip_tail", "id1")[0], xy[0, 0, 11])
        np.testing.assert_allclose(t.part("tip_tail", "id1")[2], xy[2, 2, 11])  # the swap is undone
        np.testing.assert_allclose(t.part("nose", "id3")[2], xy[2, 0, 0])
        assert np.isnan(t.part("nose", "id2")[4]).all()  # masked instance
    if version >= 5:
        assert t.meta["static_objects"]["corners"].shape == (4, 2)
    with h5py.File(path, "a") as f:
        del f["poseest/confidence"]
        f["poseest/confidence"] = np.zeros((6, 5))
    with pytest.raises(ImportFormatError, match=r"poseest/confidence has shape \(6, 5\)"):
        read_jabs(path)


def test_pose_format_error_lists_the_formats_read(tmp_path):
    from analysis.io.pose import read_pose

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(ImportFormatError, match=r"other.h5: not a DeepLabCut table.*formats read: .*JABS"):
        read_pose(tmp_path / "other.h5")
    (tmp_path / "x.tsv").write_text("")
    with pytest.raises(ImportFormatError, match=r"unknown pose format; formats read: OpenPose"):
        read_pose(tmp_path / "x.tsv")
