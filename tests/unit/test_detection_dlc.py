"""DeepLabCut's CollectedData table (detection/dlc.py) and the label tool's points mode without Qt
(detection/label_tool.PointSession): a real DeepLabCut project's table read, written and read back
identical, in DeepLabCut's own conventions (what pandas writes for its DataFrame), and labeling that
resumes and keeps the rows of other images untouched."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from detection.datasets import DatasetError, load_dlc_boxes
from detection.dlc import DlcTable, dlc_csv_text, h5_available, read_dlc, to_dataframe, write_dlc
from detection.keypoints import load_dlc_points
from detection.label_tool import PointSession

PROJECT = "dlc-openfield-pranav"
PARTS = ["snout", "leftear", "rightear", "tailbase"]


@pytest.fixture
def project(shared_data: Path) -> Path:
    p = shared_data / PROJECT
    if not (p / "labeled-data" / "m4s1" / "CollectedData_Pranav.csv").is_file():
        pytest.skip(f"{p}: no labeled-data/m4s1/CollectedData_Pranav.csv")
    return p


def test_round_trip_of_a_real_table(project: Path, tmp_path: Path) -> None:
    src = project / "labeled-data" / "m4s1" / "CollectedData_Pranav.csv"
    t = read_dlc(src)
    assert t.scorer == "Pranav" and t.bodyparts == PARTS and t.index_levels == 1 and len(t.rows) == 116
    assert next(iter(t.rows)) == ("labeled-data/m4s1/img0000.png",)
    written = write_dlc(t, tmp_path / "CollectedData_Pranav.csv")
    back = read_dlc(written[0])
    assert (back.scorer, back.columns, list(back.rows)) == (t.scorer, t.columns, list(t.rows))
    assert all(np.array_equal(back.rows[k], t.rows[k], equal_nan=True) for k in t.rows)
    # byte for byte what DeepLabCut wrote (pandas' to_csv of its DataFrame)
    assert written[0].read_text() == src.read_text()
    if h5_available():
        import pandas as pd

        ours = pd.read_hdf(written[1], "df_with_missing")
        theirs = pd.read_hdf(project / "labeled-data" / "m4s1" / "CollectedData_Pranav.h5", "df_with_missing")
        pd.testing.assert_frame_equal(ours, theirs, check_index_type=False)
        h5 = read_dlc(written[1])
        assert list(h5.rows) == list(t.rows) and h5.columns == t.columns


def test_written_as_pandas_writes_it_both_index_forms(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    for levels in (1, 3):
        t = DlcTable.empty("me", ["snout", "tail"], index_levels=levels)
        t.set_points(
            t.key("labeled-data/v1/img0.png"), np.array([[1.5, 250.05599999999998], [np.nan, np.nan]])
        )
        t.set_points(t.key("labeled-data/v1/img1.png"), np.array([[3.0, 4.0], [5.0, 6.25]]))
        assert dlc_csv_text(t) == to_dataframe(t).to_csv()
        p = write_dlc(t, tmp_path / f"CollectedData_me{levels}.csv", h5=False)[0]
        back = read_dlc(p)
        assert back.index_levels == levels and list(back.rows) == list(t.rows)
        assert np.isnan(back.points(t.key("labeled-data/v1/img0.png"))[1]).all()
        assert pd.read_csv(p, header=[0, 1, 2], index_col=list(range(levels))).shape == (2, 4)


MULTI = (
    "scorer,,,me,me,me,me,me,me\n"
    "individuals,,,m1,m1,m1,m1,m2,m2\n"
    "bodyparts,,,snout,snout,tail,tail,snout,snout\n"
    "coords,,,x,y,x,y,x,y\n"
    "labeled-data,v1,img0.png,10.0,20.0,30.0,40.0,100.0,120.0\n"
    "labeled-data,v1,img1.png,,,,,50.0,60.0\n"
)


def _image(root: Path, rel: str, h: int = 200, w: int = 300) -> None:
    import cv2

    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(p), np.zeros((h, w), np.uint8))


def test_multi_animal_table_read_written_and_boxed(tmp_path: Path) -> None:
    """A maDeepLabCut table (individuals row; three-part row index) reads, writes back as pandas writes it,
    converts to boxes per animal, and is refused with one line where single-animal labels are needed."""
    src = tmp_path / "labeled-data" / "v1" / "CollectedData_me.csv"
    src.parent.mkdir(parents=True)
    src.write_text(MULTI)
    t = read_dlc(src)
    assert t.individuals == ["m1", "m1", "m1", "m1", "m2", "m2"] and t.index_levels == 3
    assert t.column("snout", "x", "m2") == 4 and t.column("tail", "y", "m2") is None
    assert dlc_csv_text(t) == MULTI
    if h5_available():
        import pandas as pd

        assert dlc_csv_text(t) == to_dataframe(t).to_csv()
        written = write_dlc(t, tmp_path / "out" / "CollectedData_me.csv")
        back = read_dlc(written[1])
        assert back.individuals == t.individuals and list(back.rows) == list(t.rows)
        assert list(pd.read_hdf(written[1]).columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    for rel in ("labeled-data/v1/img0.png", "labeled-data/v1/img1.png"):
        _image(tmp_path, rel)
    ds = load_dlc_boxes(src, {"m1/head": ["snout", "tail"], "m2/head": ["snout"]}, margin_px=5, min_size_px=4)
    assert ds.names == ["m1/head", "m2/head"]
    b0 = ds.items[tmp_path / "labeled-data/v1/img0.png"]
    assert [(b.x1, b.y1, b.x2, b.y2, b.class_id) for b in b0] == [(5, 15, 35, 45, 0), (95, 115, 105, 125, 1)]
    b1 = ds.items[tmp_path / "labeled-data/v1/img1.png"]  # m1 unlabeled there: m2's box only
    assert [(b.x1, b.y1, b.x2, b.y2, b.class_id) for b in b1] == [(45, 55, 55, 65, 1)]
    with pytest.raises(DatasetError, match=r"multi-animal table \(individuals m1, m2\); name the animal"):
        load_dlc_boxes(src, {"head": ["snout"]})
    with pytest.raises(DatasetError, match="class 'head': body part 'tail' not in the CSV"):
        load_dlc_boxes(src, {"m2/head": ["tail"]})
    with pytest.raises(
        DatasetError, match=r"CollectedData_me.csv: a multi-animal table \(individuals m1, m2\)"
    ):
        load_dlc_points(src)


def test_boxes_from_a_three_part_row_index(tmp_path: Path) -> None:
    """DeepLabCut >= 2.2 writes the image path as three index columns; boxes come from them as from the
    one-column form."""
    for levels in (1, 3):
        root = tmp_path / str(levels)
        t = DlcTable.empty("me", ["snout", "tail"], index_levels=levels)
        t.set_points(t.key("labeled-data/v1/img0.png"), np.array([[50.0, 60.0], [70.0, 90.0]]))
        src = write_dlc(t, root / "labeled-data" / "v1" / "CollectedData_me.csv", h5=False)[0]
        _image(root, "labeled-data/v1/img0.png")
        ds = load_dlc_boxes(src, {"mouse": ["snout", "tail"]}, margin_px=2)
        (b,) = ds.items[root / "labeled-data/v1/img0.png"]
        assert (b.x1, b.y1, b.x2, b.y2, b.class_id) == (48, 58, 72, 92, 0)
        with pytest.raises(DatasetError, match="single-animal table has no individual 'm1'"):
            load_dlc_boxes(src, {"m1/mouse": ["snout"]})


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("a,b\n1,2\n", "not a DeepLabCut CollectedData CSV"),
        (
            "scorer,me,me\nbodyparts,s,s\ncoords,x,y\nimg.png,1,zz\n",
            "line 4: body part .s.: no number in its x/y columns",
        ),
        ("scorer,me,me\nbodyparts,s,s\ncoords,x,y\nimg.png,1\n", "line 4: 2 cells, the header has 3"),
        (
            "scorer,me,me\nbodyparts,s,s\ncoords,x,y\ni.png,1,2\ni.png,1,2\n",
            "line 5: image i.png has a second",
        ),
    ],
)
def test_bad_tables_are_named(tmp_path: Path, text: str, msg: str) -> None:
    p = tmp_path / "CollectedData_me.csv"
    p.write_text(text)
    with pytest.raises(DatasetError, match=msg):
        read_dlc(p)


def test_point_session_labels_resumes_and_keeps_other_rows(project: Path, tmp_path: Path) -> None:
    """Label 3 of a project's images into a copy of its table: the other 113 rows stay as they were, the
    result trains (load_dlc_points reads it), and a new session resumes at the first unlabeled image."""
    proj = tmp_path / "proj"
    vid = proj / "labeled-data" / "m4s1"
    vid.mkdir(parents=True)
    orig = project / "labeled-data" / "m4s1" / "CollectedData_Pranav.csv"
    table = vid / "CollectedData_Pranav.csv"
    shutil.copy(orig, table)
    new = proj / "labeled-data" / "m4s1-mined"
    new.mkdir()
    for p in sorted((project / "labeled-data" / "m4s1").glob("img000[0-2].png")):
        shutil.copy(p, new / p.name)
    s = PointSession.open(new, table, PARTS)
    assert s.current.name == "img0000.png" and s.names[s.part] == "snout"
    s.click(10, 20)
    s.click(30, 40)  # leftear
    s.clear()  # rightear not visible
    s.click(50, 60)  # rightear cleared, then labeled: the part stays selected after a clear
    s.click(70, 80)  # tailbase
    s.undo()  # tailbase again
    s.step(1)
    s.click(5, 6)
    s.set_part(3)
    s.click(7, 8)
    s.step(1)  # now at img0002
    s.save()
    t = read_dlc(table)
    k0, k1, k2 = (("labeled-data/m4s1-mined/" + n,) for n in ("img0000.png", "img0001.png", "img0002.png"))
    assert np.array_equal(
        t.points(k0), np.array([[10, 20], [30, 40], [50, 60], [np.nan, np.nan]]), equal_nan=True
    )
    assert np.array_equal(
        t.points(k1), np.array([[5, 6], [np.nan] * 2, [np.nan] * 2, [7, 8]]), equal_nan=True
    )
    assert k2 not in t.rows  # the last image was shown, never left: not yet seen
    before = read_dlc(orig)
    assert list(t.rows)[: len(before.rows)] == list(before.rows)
    assert all(np.array_equal(t.rows[k], v, equal_nan=True) for k, v in before.rows.items())
    csv_lines = table.read_text().splitlines()
    assert csv_lines[: len(before.rows) + 3] == orig.read_text().splitlines()
    ds = load_dlc_points(table, PARTS, skip_missing=True)  # the 113 other images are not in this copy
    assert len(ds) == 2 and np.allclose(ds.items[new / "img0000.png"][0], [10, 20])
    s2 = PointSession.open(new, table)
    assert s2.current.name == "img0002.png" and s2.names == PARTS


def test_point_session_refuses_mismatched_parts_and_bad_names(project: Path, tmp_path: Path) -> None:
    frames = project / "labeled-data" / "m4s1"
    with pytest.raises(DatasetError, match="its body parts are snout,leftear,rightear,tailbase"):
        PointSession.open(frames, frames / "CollectedData_Pranav.csv", ["snout", "tail"])
    with pytest.raises(DatasetError, match="name the body parts"):
        PointSession.open(frames, tmp_path / "CollectedData_me.csv")
    with pytest.raises(DatasetError, match=r"a \.csv"):
        PointSession.open(frames, tmp_path / "labels.txt", ["a"])


def test_a_kept_split_sends_new_frames_to_train(tmp_path: Path) -> None:
    """Retraining after mining: frames keep the split of the previous round's card (matched by
    <video>/<image>, wherever the project now lies); newly labeled frames go to train."""
    import json

    from detection.datasets import carry_split

    d = "/a/labeled-data/v"
    old = {"train": [f"{d}/0.png", f"{d}/1.png"], "val": [f"{d}/2.png"], "test": [f"{d}/3.png", f"{d}/9.png"]}
    card = tmp_path / "keypoints.json"
    card.write_text(json.dumps({"splits": old}))
    now = [Path("moved/labeled-data/v") / f"{i}.png" for i in (0, 1, 2, 3, 4, 5)]
    sp, gone = carry_split(now, card)
    names = {s: [p.name for p in v] for s, v in sp.items()}
    assert names == {"train": ["0.png", "1.png", "4.png", "5.png"], "val": ["2.png"], "test": ["3.png"]}
    assert gone == ["v/9.png"]
    card.write_text(json.dumps({"confidence_threshold": 0.3}))
    with pytest.raises(DatasetError, match="not a model card with 'splits'"):
        carry_split(now, card)
