"""SLEAP ``.slp`` import on real files: sleap-io's own writer saves the real DeepLabCut labels of
dlc-openfield-pranav (116 frames, 4 body parts) as tracked, user-labeled and predicted instances over
non-contiguous frames of two videos; the reader must give those keypoints back exactly, NaN pattern and
scores too. Bad input names the file and the item."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import sleap_io as sio

from analysis.errors import ImportFormatError
from analysis.io.pose import read_dlc, read_pose, read_sleap_slp
from tests.analysis_helpers import run_cli

VIDEO_A = "/data/openfield/m4s1.mp4"  # the labels' video (not shipped; a .slp only names it)
VIDEO_B = "/data/openfield/m3v1mp4.mp4"
WRONG = 7.5  # offset of the predictions a user corrected


@pytest.fixture
def dlc_labels(shared_data: Path):
    return read_dlc(
        shared_data / "dlc-openfield-pranav" / "labeled-data" / "m4s1" / "CollectedData_Pranav.h5"
    )


def _scores(n: int, k: int, seed: int) -> np.ndarray:
    """Deterministic point scores in [0.5, 0.95]."""
    return 0.5 + 0.05 * ((np.arange(n * k).reshape(n, k) * 7 + seed) % 10)


def _skeleton(dlc_labels) -> sio.Skeleton:
    return sio.Skeleton(list(dlc_labels.bodyparts), name="openfield")  # a copy: it turns the list into Nodes


def _hide(xy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = xy.copy()
    out[mask] = np.nan
    return out


def _two_mice(dlc_labels):
    """Resident = the labels, intruder = the labels in reverse order; points hidden in a pattern."""
    truth = dlc_labels.points[:, 0]  # (116, 4, 2)
    n, k = truth.shape[:2]
    kk, jj = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    res = _hide(truth, (kk + jj) % 7 == 0)
    intr = _hide(truth[::-1], (3 * kk + jj) % 5 == 0)
    absent = np.arange(n) % 9 == 4  # the intruder is not found in these frames
    user = np.arange(n) % 4 == 0  # the resident was corrected by hand in these frames
    frame_idx = np.array([2 * i + i // 10 for i in range(n)])  # gaps of one and two frames
    return truth, res, intr, absent, user, frame_idx


def _write_two_mice(path: Path, dlc_labels) -> tuple[np.ndarray, np.ndarray]:
    truth, res, intr, absent, user, frame_idx = _two_mice(dlc_labels)
    n = len(truth)
    skel = _skeleton(dlc_labels)
    resident, intruder = sio.Track("resident"), sio.Track("intruder")
    va, vb = sio.Video(VIDEO_A, open_backend=False), sio.Video(VIDEO_B, open_backend=False)
    s_res, s_int = _scores(n, 4, 1), _scores(n, 4, 4)
    lfs = []
    for i in range(n):
        insts: list = []
        if user[i]:
            wrong = sio.PredictedInstance.from_numpy(
                res[i] + WRONG, skeleton=skel, point_scores=s_res[i], score=0.6, track=resident
            )
            # half the corrections keep the track, half are linked to the prediction they replace
            track = resident if i % 8 else None
            insts += [
                sio.Instance.from_numpy(res[i], skeleton=skel, track=track, from_predicted=wrong),
                wrong,
            ]
        else:
            insts.append(
                sio.PredictedInstance.from_numpy(
                    res[i], skeleton=skel, point_scores=s_res[i], score=0.9, track=resident
                )
            )
        if not absent[i]:
            insts.append(
                sio.PredictedInstance.from_numpy(
                    intr[i], skeleton=skel, point_scores=s_int[i], score=0.8, track=intruder
                )
            )
        lfs.append(sio.LabeledFrame(video=va, frame_idx=int(frame_idx[i]), instances=insts))
    for f in (30, 10, 20):  # a few untracked labels on a second video, written out of order
        lfs.append(
            sio.LabeledFrame(video=vb, frame_idx=f, instances=[sio.Instance.from_numpy(truth[f], skel)])
        )
    sio.Labels(lfs, videos=[va, vb], skeletons=[skel], tracks=[resident, intruder]).save(str(path))
    return s_res, s_int


def test_slp_multi_animal_user_over_predicted_sparse_frames(dlc_labels, tmp_path, caplog):
    p = tmp_path / "two.slp"
    s_res, s_int = _write_two_mice(p, dlc_labels)
    truth, res, intr, absent, user, frame_idx = _two_mice(dlc_labels)
    with pytest.raises(ImportFormatError) as err:  # two videos hold labels: say which
        read_sleap_slp(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}: labeled frames in 2 videos")
    assert f"0: {VIDEO_A} (116 labeled frames)" in msg and f"1: {VIDEO_B} (3 labeled frames)" in msg

    t = read_sleap_slp(p, video="m4s1.mp4")
    assert "left out" not in caplog.text  # corrected predictions are replaced, not dropped as duplicates
    assert t.individuals == ["resident", "intruder"] and t.bodyparts == dlc_labels.bodyparts
    np.testing.assert_array_equal(t.frames, frame_idx)
    want = np.full((116, 2, 4, 2), np.nan)
    want[:, 0], want[:, 1] = res, intr
    want[absent, 1] = np.nan
    np.testing.assert_array_equal(t.points, want)  # exact, NaN in the same places
    assert np.isnan(t.points).any() and not np.isnan(t.points[:, 0][~np.isnan(res)]).any()
    conf = np.stack([np.where(user[:, None], 1.0, s_res), s_int], axis=1)
    conf[np.isnan(want).any(axis=3)] = np.nan
    np.testing.assert_array_equal(t.confidence, conf)
    assert t.meta["video"] == VIDEO_A and t.meta["videos"] == [VIDEO_A, VIDEO_B]
    np.testing.assert_array_equal(read_sleap_slp(p, video=0).points, t.points)
    np.testing.assert_array_equal(read_pose(p, video=VIDEO_A).points, t.points)

    # predictions only: the corrected frames show what the model said
    pr = read_sleap_slp(p, video=0, instances="predicted")
    np.testing.assert_array_equal(pr.points[user, 0], res[user] + WRONG)
    np.testing.assert_array_equal(
        pr.confidence[user, 0], np.where(np.isnan(res[user, :, 0]), np.nan, s_res[user])
    )
    # user labels only: the frames a person labeled, one track
    us = read_sleap_slp(p, video=0, instances="user")
    assert us.individuals == ["resident"]
    np.testing.assert_array_equal(us.frames, frame_idx[user])
    np.testing.assert_array_equal(us.points[:, 0], res[user])

    # the second video: untracked user labels, frames sorted
    b = read_sleap_slp(p, video=1)
    assert b.individuals == ["instance0"] and list(b.frames) == [10, 20, 30]
    np.testing.assert_array_equal(b.points[:, 0], truth[[10, 20, 30]])

    # contiguous(): one row per frame index, NaN rows in the gaps
    c = t.contiguous()
    assert c.n_frames == frame_idx[-1] + 1 and list(c.frames[:3]) == [0, 1, 2]
    np.testing.assert_array_equal(c.points[frame_idx], t.points)
    gaps = np.setdiff1d(np.arange(c.n_frames), frame_idx)
    assert len(gaps) > 100 and np.isnan(c.points[gaps]).all() and np.isnan(c.confidence[gaps]).all()


def test_slp_single_animal_untracked_user_label_replaces_prediction(dlc_labels, tmp_path):
    truth = dlc_labels.points[:6, 0]
    skel = _skeleton(dlc_labels)
    v = sio.Video(VIDEO_A, open_backend=False)
    lfs = []
    for i in range(6):
        insts: list = [sio.PredictedInstance.from_numpy(truth[i] + WRONG, skel, point_scores=np.full(4, 0.7))]
        if i in (2, 3):  # drawn from scratch: not linked to the prediction, no track
            insts.insert(0, sio.Instance.from_numpy(truth[i], skel))
        lfs.append(sio.LabeledFrame(video=v, frame_idx=i, instances=insts))
    sio.Labels(lfs).save(str(tmp_path / "one.slp"))
    t = read_pose(tmp_path / "one.slp")
    assert t.individuals == ["instance0"] and t.points.shape == (6, 1, 4, 2)
    np.testing.assert_array_equal(t.points[[2, 3], 0], truth[[2, 3]])
    np.testing.assert_array_equal(t.points[[0, 1, 4, 5], 0], truth[[0, 1, 4, 5]] + WRONG)
    np.testing.assert_array_equal(t.confidence[:, 0, 0], [0.7, 0.7, 1.0, 1.0, 0.7, 0.7])


def test_slp_bad_input_names_file_and_item(dlc_labels, tmp_path):
    (tmp_path / "text.slp").write_text("not hdf5\n")
    with pytest.raises(ImportFormatError, match=r"text\.slp: not an HDF5 file"):
        read_pose(tmp_path / "text.slp")
    with h5py.File(tmp_path / "other.slp", "w") as f:
        f["tracks"] = np.zeros((1, 2, 3, 4))
    with pytest.raises(ImportFormatError, match=r"other\.slp: not a SLEAP \.slp file \(no 'metadata'"):
        read_sleap_slp(tmp_path / "other.slp")
    sio.Labels().save(str(tmp_path / "empty.slp"))
    with pytest.raises(ImportFormatError, match=r"empty\.slp: no labeled frames"):
        read_sleap_slp(tmp_path / "empty.slp")
    with pytest.raises(ImportFormatError, match=r"missing\.slp: file not found"):
        read_sleap_slp(tmp_path / "missing.slp")
    skel = _skeleton(dlc_labels)
    v = sio.Video(VIDEO_A, open_backend=False)
    lf = sio.LabeledFrame(
        video=v, frame_idx=0, instances=[sio.Instance.from_numpy(dlc_labels.points[0, 0], skel)]
    )
    sio.Labels([lf]).save(str(tmp_path / "one.slp"))
    with pytest.raises(
        ImportFormatError, match=r"one\.slp: no video matching 'nope\.mp4' \(0: /data/openfield/m4s1"
    ):
        read_sleap_slp(tmp_path / "one.slp", video="nope.mp4")
    with pytest.raises(ImportFormatError, match=r"one\.slp: no video 3 \("):
        read_sleap_slp(tmp_path / "one.slp", video=3)
    with pytest.raises(
        ImportFormatError, match=r"one\.slp: video /data/openfield/m4s1\.mp4 has no predicted"
    ):
        read_sleap_slp(tmp_path / "one.slp", instances="predicted")
    with pytest.raises(ImportFormatError, match=r"x\.csv: a video can be chosen only in a SLEAP \.slp file"):
        read_pose(tmp_path / "x.csv", video=0)


def test_three_chamber_command_reads_slp_like_the_dlc_file(shared_data, dlc_labels, tmp_path, capsys):
    """The same labels as a .slp (untracked user labels, two videos) give the same summary as the DLC .h5."""
    import yaml

    labels = shared_data / "dlc-openfield-pranav" / "labeled-data" / "m4s1" / "CollectedData_Pranav.h5"
    skel = _skeleton(dlc_labels)
    va, vb = sio.Video(VIDEO_A, open_backend=False), sio.Video(VIDEO_B, open_backend=False)
    lfs = [
        sio.LabeledFrame(video=va, frame_idx=i, instances=[sio.Instance.from_numpy(xy, skel)])
        for i, xy in enumerate(dlc_labels.points[:, 0])
    ]
    lfs.append(
        sio.LabeledFrame(
            video=vb, frame_idx=0, instances=[sio.Instance.from_numpy(dlc_labels.points[0, 0], skel)]
        )
    )
    sio.Labels(lfs).save(str(tmp_path / "m4s1.slp"))
    geom = {
        "chambers": {"left": [0, 0, 213, 480], "center": [213, 0, 426, 480], "right": [426, 0, 640, 480]},
        "cups": {"a": [100, 240, 40], "b": [540, 240, 40]},
        "interaction_margin": 30,
    }
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(geom))
    # the same confidence cut for both (each format has its own default; the summary states the cut)
    common = ["--geometry", str(tmp_path / "g.yaml"), "--fps", "30", "--min-confidence", "0.5"]
    assert run_cli(["three-chamber", str(labels), *common, "--out", str(tmp_path / "dlc")]) == 0
    assert run_cli(["three-chamber", str(tmp_path / "m4s1.slp"), *common, "--out", str(tmp_path / "x")]) == 2
    assert "m4s1.slp: labeled frames in 2 videos" in capsys.readouterr().err
    slp_argv = [
        "three-chamber",
        str(tmp_path / "m4s1.slp"),
        "--video",
        "0",
        *common,
        "--out",
        str(tmp_path / "slp"),
    ]
    assert run_cli(slp_argv) == 0
    a = json.loads((tmp_path / "dlc" / "three_chamber.json").read_text())
    b = json.loads((tmp_path / "slp" / "three_chamber.json").read_text())
    assert a == b and sum(b["occupancy_s"].values()) == pytest.approx(116 / 30)
