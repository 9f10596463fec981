"""Three-chamber sociability and two-mouse interaction on scripted trajectories with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.errors import AnalysisError
from analysis.filters import true_runs
from analysis.tasks.social import (
    LABEL_WEIGHT_CLASSES,
    LABEL_WEIGHT_TRACKS,
    ThreeChamberGeometry,
    apply_swaps,
    plot_contact_distance,
    repair_identities,
    three_chamber,
    two_mouse_interaction,
)
from tests.analysis_generators import (
    two_mice_case,
    write_darknet,
    write_dlc_multi,
    write_jabs_v4,
    wrong_identity_frames,
)
from tests.analysis_helpers import run_cli

GEOM = ThreeChamberGeometry(
    chambers={"left": (0, 0, 200, 300), "center": (200, 0, 400, 300), "right": (400, 0, 600, 300)},
    cups={"mouse_cup": (100, 150, 30), "empty_cup": (500, 150, 30)},
    interaction_margin=20,
)


def test_three_chamber_occupancy_interaction_and_transitions():
    rate = 10.0
    # 10 s at the mouse cup, 5 s in the centre, 3 s near the empty cup, 2 s in the right chamber away from it
    segments = [((110, 150), 100), ((300, 150), 50), ((520, 160), 30), ((560, 280), 20)]
    head = np.concatenate([np.tile(p, (n, 1)) for p, n in segments]).astype(float)
    head[30] = np.nan  # one missed detection
    t = np.arange(len(head)) / rate
    r = three_chamber(t, head, GEOM, min_bout_s=1.0)
    # the missed frame is filled (gaps up to 3 s by default): no split bout, no lost time
    assert r["occupancy_s"] == pytest.approx({"left": 10.0, "center": 5.0, "right": 5.0})
    assert r["transitions"] == 2 and [v[2] for v in r["visits"]] == ["left", "center", "right"]
    assert r["cups"]["mouse_cup"]["interaction_s"] == pytest.approx(10.0)
    assert r["cups"]["mouse_cup"]["n_bouts"] == 1
    assert r["cups"]["empty_cup"]["interaction_s"] == pytest.approx(3.0)
    assert r["cups"]["empty_cup"]["interaction_pct"] == pytest.approx(15.0)
    assert r["sociability_index"] == pytest.approx((10.0 - 3.0) / 13.0)
    assert r["distance"] == pytest.approx(190 + np.hypot(220, 10) + np.hypot(40, 120), rel=0.05)
    assert r["quality"].filled == 1 and r["quality"].missing == 0 and r["missing_s"] == 0
    # without filling the frame stays missing, and the minimum gap still keeps the bout whole
    r0 = three_chamber(t, head, GEOM, min_bout_s=1.0, max_gap_s=0)
    assert r0["occupancy_s"]["left"] == pytest.approx(9.9) and r0["missing_s"] == pytest.approx(0.1)
    assert r0["cups"]["mouse_cup"]["n_bouts"] == 1 and r0["transitions"] == 2
    # with neither, the missed frame splits the bout (what the minimum gap is for)
    r1 = three_chamber(t, head, GEOM, min_bout_s=1.0, max_gap_s=0, min_gap_s=0)
    assert r1["cups"]["mouse_cup"]["n_bouts"] == 2
    with pytest.raises(AnalysisError, match=r"head: shape \(4, 3\)"):
        three_chamber(np.arange(4.0), np.zeros((4, 3)), GEOM)


def _mice(n: int = 301, rate: float = 30.0):
    """A and B approach head-on, are closest (centres 30 apart along x) mid-way, then back off."""
    t = np.arange(n) / rate
    half = t[-1] / 2
    gap = 30 + 170 * np.abs(t - half) / half
    ca = np.stack([200 - gap / 2, np.full(n, 100.0)], axis=1)
    cb = np.stack([200 + gap / 2, np.full(n, 110.0)], axis=1)
    head = np.array([10.0, 0.0])
    parts_a = {"center": ca, "nose": ca + head, "tail": ca - head}  # faces +x
    parts_b = {"center": cb, "nose": cb - head, "tail": cb + head}  # faces -x: nose to nose
    return t, parts_a, parts_b


def test_two_mouse_identity_repair_and_contact_epochs(tmp_path):
    t, pa, pb = _mice()
    a, b = pa["center"].copy(), pb["center"].copy()
    flips = np.zeros(len(t), dtype=bool)
    flips[[40, 41, 200]] = True
    a[flips], b[flips] = pb["center"][flips], pa["center"][flips]
    ra, _, swapped = repair_identities(a, b)
    np.testing.assert_array_equal(swapped, flips)
    np.testing.assert_allclose(ra, pa["center"])
    res = two_mouse_interaction(t, pa, pb, contact_threshold=40.0, min_epoch_s=0.1)
    assert len(res["epochs"]) == 1
    s, e, kind, dmin = res["epochs"][0]
    assert kind == "nose-to-nose" and dmin == pytest.approx(np.hypot(30, 10), abs=0.5)
    assert np.all(res["distance"][s : e + 1] < 40) and res["distance"][s - 1] >= 40
    assert t[e] - t[s] == pytest.approx(2 * (np.sqrt(40**2 - 10**2) - 30) / 170 * t[-1] / 2, abs=0.1)
    np.testing.assert_allclose(res["speed_a"][5:140], 85 / (t[-1] / 2))
    # B turned around: A's nose meets B's tail
    pb2 = {"center": pb["center"], "nose": pb["tail"], "tail": pb["nose"]}
    res2 = two_mouse_interaction(t, pa, pb2, contact_threshold=40.0, min_epoch_s=0.1)
    assert res2["epochs"][0][2] == "nose-to-tail"
    assert plot_contact_distance(t, res, 40.0, tmp_path / "d.png").stat().st_size > 3000
    # no parts but the centres (body boxes): the contact is found, its type is unknown
    res3 = two_mouse_interaction(t, {"center": pa["center"]}, {"center": pb["center"]}, 40.0, 0.1)
    assert [e[2] for e in res3["epochs"]] == ["unknown"] and res3["by_type"]["unknown"]["n"] == 1
    with pytest.raises(AnalysisError, match="mouse B lacks part center"):
        two_mouse_interaction(t, pa, {"nose": pb["nose"]}, 40.0)


def test_three_chamber_command_on_real_dlc_labels(shared_data, tmp_path, capsys):
    import json

    import yaml

    labels = shared_data / "dlc-openfield-pranav" / "labeled-data" / "m4s1" / "CollectedData_Pranav.h5"
    geom = {
        "chambers": {"left": [0, 0, 213, 480], "center": [213, 0, 426, 480], "right": [426, 0, 640, 480]},
        "cups": {"a": [100, 240, 40], "b": [540, 240, 40]},
        "interaction_margin": 30,
    }
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(geom))
    out = tmp_path / "out"
    argv = f"three-chamber {labels} --geometry {tmp_path / 'g.yaml'} --fps 30 --out {out}".split()
    rc = run_cli(argv)
    assert rc == 0
    summary = json.loads((out / "three_chamber.json").read_text())
    # every labelled frame is in the arena
    assert sum(summary["occupancy_s"].values()) == pytest.approx(116 / 30)
    assert summary["distance"] > 0 and summary["transitions"] >= 0
    assert (out / "trajectory.png").stat().st_size > 3000
    (tmp_path / "g.yaml").write_text("chambers: [1, 2]\n")
    assert run_cli(argv) == 2
    assert "g.yaml: bad three-chamber geometry" in capsys.readouterr().err


def test_social_command_on_multi_animal_dlc_file(tmp_path):
    import json

    import pandas as pd

    t, pa, pb = _mice()
    flips = np.zeros(len(t), dtype=bool)
    flips[[40, 41, 200]] = True
    cols = pd.MultiIndex.from_product(
        [["sc"], ["m1", "m2"], ["nose", "center", "tail"], ["x", "y", "likelihood"]],
        names=["scorer", "individuals", "bodyparts", "coords"],
    )
    data = []
    for parts, other in ((pa, pb), (pb, pa)):  # columns m1 then m2
        for bp in ("nose", "center", "tail"):
            xy = np.where(flips[:, None], other[bp], parts[bp])  # the detector swaps labels in 3 frames
            data += [xy[:, 0], xy[:, 1], np.ones(len(t))]
    pd.DataFrame(np.stack(data, axis=1), columns=cols).to_hdf(tmp_path / "ma.h5", key="df_with_missing")
    out = tmp_path / "out"
    assert (
        run_cli(["social", str(tmp_path / "ma.h5"), "--fps", "30", "--threshold", "40", "--out", str(out)])
        == 0
    )
    summary = json.loads((out / "social.json").read_text())
    assert summary["identity"] == {"method": "tracks", "frames_swapped": 3, "swap_events": 2}
    assert summary["individuals"] == ["m1", "m2"] and summary["units"] == "px"
    assert [e["type"] for e in summary["epochs"]] == ["nose-to-nose"]
    assert (out / "distance.png").stat().st_size > 3000


# ------------------------------------------------------------------ against truth (issues 16 and 20)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weight", [LABEL_WEIGHT_TRACKS, LABEL_WEIGHT_CLASSES])
def test_identity_holds_through_a_swap_and_lost_boxes(seed, weight):
    """A 15-frame label swap while the mice are apart and 3 % of B's boxes lost (two inside the swap): the
    repaired identities are wrong in no more frames than the raw labels (here in none), and the two contacts
    come out as two epochs of the right types, each within a frame of the truth."""
    case = two_mice_case(seed)
    obs = case.observed
    raw = wrong_identity_frames(case, obs["A"]["center"], obs["B"]["center"])
    assert raw == case.truth["raw_wrong_frames"] == 15
    a, b, swapped = repair_identities(obs["A"]["center"], obs["B"]["center"], label_weight=weight)
    assert wrong_identity_frames(case, a, b) == 0 <= raw
    assert swapped.sum() == 15 and len(true_runs(swapped)) == 1
    pa, pb = ({k: v.copy() for k, v in obs[w].items()} for w in ("A", "B"))
    apply_swaps(pa, pb, swapped)
    res = two_mouse_interaction(case.t_s, pa, pb, 5.0 * case.px_per_cm)
    assert [e[2] for e in res["epochs"]] == case.truth["types"]
    for (s, e, *_), (ts, te) in zip(res["epochs"], case.truth["epochs"], strict=True):
        assert abs(s - ts) <= 1 and abs(e - te) <= 1
    # speeds come from the repaired tracks: no spike where the labels were swapped
    assert np.nanmax(res["speed_a"]) < 300 and np.nanmax(res["speed_b"]) < 300  # px/s; a swap: ~6000


def test_lone_detections_follow_position_not_a_stale_track():
    """B is lost for 10 frames while A walks past B's last position; in three of those frames the detector
    calls the lone A 'B'. Those three are given back to A, and nothing else changes."""
    a = np.stack([100 + 3 * np.arange(100.0), np.full(100, 50.0)], axis=1)
    b = np.stack([np.full(100, 250.0), np.full(100, 60.0)], axis=1)
    la, lb = a.copy(), b.copy()
    lb[45:55] = np.nan
    lb[47:50], la[47:50] = a[47:50], np.nan  # the lone detection mislabelled
    ra, rb, swapped = repair_identities(la, lb)
    np.testing.assert_array_equal(np.flatnonzero(swapped), [47, 48, 49])
    np.testing.assert_array_equal(ra, a)
    assert np.isnan(rb[45:55]).all() and np.array_equal(rb[:45], b[:45])


def test_contact_types_are_absolute_and_unknown_when_unseen():
    """Noses 5.5 cm apart are not nose-to-nose (part distance 2.5 cm); an epoch in which the noses are
    never both seen is 'unknown', with no RuntimeWarning."""
    import warnings

    t, pa, pb = _mice()
    far = {**pb, "nose": pb["center"] + np.array([55.0, 0.0]), "tail": pb["center"] + np.array([-100.0, 0])}
    res = two_mouse_interaction(t, pa, far, 40.0, 0.1, part_threshold=25.0)
    assert [e[2] for e in res["epochs"]] == ["other"]
    nan = np.full_like(pb["nose"], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # B's nose never seen: not nose-to-nose; A's nose to B's tail is seen, ~32 px: 'other'
        res = two_mouse_interaction(t, pa, {**pb, "nose": nan}, 40.0, 0.1)
        assert [e[2] for e in res["epochs"]] == ["other"]
        res = two_mouse_interaction(t, {**pa, "nose": nan}, {**pb, "nose": nan}, 40.0, 0.1)
    assert [e[2] for e in res["epochs"]] == ["unknown"]
    assert res["by_type"]["unknown"]["n"] == 1 and res["by_type"]["nose-to-nose"]["n"] == 0


def test_social_command_in_cm_with_tables_and_plots(tmp_path):
    import json

    import pandas as pd

    case = two_mice_case(0)
    path = write_dlc_multi(tmp_path / "ma.h5", {"m1": case.observed["A"], "m2": case.observed["B"]})
    out = tmp_path / "out"
    argv = ["social", str(path), "--fps", "30", "--threshold", "5cm", "--px-per-cm", "10", "--out", str(out)]
    assert run_cli(argv) == 0
    s = json.loads((out / "social.json").read_text())
    assert s["units"] == "cm" and s["criteria"]["contact_distance"] == 5.0
    assert s["criteria"]["part_distance"] == 2.5 and s["criteria"]["min_confidence"] == 0.6
    assert s["identity"]["frames_swapped"] == 15 and s["identity"]["swap_events"] == 1
    assert [e["type"] for e in s["epochs"]] == ["nose-to-nose", "nose-to-tail"]
    assert s["by_type"]["nose-to-nose"]["n"] == 1 and s["by_type"]["nose-to-tail"]["n"] == 1
    assert s["contact_s"] == pytest.approx(case.truth["contact_s"], abs=2 / 30)
    lost = [s["frames"][m]["missing_in_source"] for m in ("m1", "m2")]
    assert sum(lost) == 18 and s["frames"]["m2"]["still_missing"] == 0  # 2 of B's lost frames are labelled m1
    tab = pd.read_csv(out / "social_tracks.csv")
    assert len(tab) == len(case.t_s) and "distance_cm" in tab and "m1_speed_cm_s" in tab
    assert tab["swapped"].sum() == 15 and tab["distance_cm"].min() == pytest.approx(3.16, abs=0.2)
    for png in ("distance.png", "trajectories.png"):
        assert (out / png).stat().st_size > 3000
    # a length in cm without a scale is refused, naming the option
    bad = [a for a in argv if a not in ("--px-per-cm", "10")]
    assert run_cli(bad) == 2


def test_social_command_tells_mice_apart_by_class(tmp_path):
    """The seed's darknet log: 'body' and 'body_mini' (the miniscope-wearing mouse) boxes."""
    import json

    import pandas as pd

    case = two_mice_case(1)
    log = write_darknet(tmp_path / "result.txt", case)
    out = tmp_path / "out"
    argv = ["social", str(log), "--fps", "30", "--threshold", "50", "--out", str(out)]
    assert run_cli(argv) == 0
    s = json.loads((out / "social.json").read_text())
    assert s["individuals"] == ["body", "body_mini"] and s["identity"]["method"] == "classes"
    assert s["identity"]["frames_swapped"] == 15
    assert [e["type"] for e in s["epochs"]] == ["unknown", "unknown"]  # boxes have no nose or tail
    # the same boxes as YOLO .txt files (class 0 = body, 1 = body_mini), one per frame
    yolo = tmp_path / "yolo"
    yolo.mkdir()
    for k in range(len(case.t_s)):
        rows = [
            f"{cls} {c[0] / 640:.5f} {c[1] / 480:.5f} {44 / 640:.5f} {44 / 480:.5f} 0.9"
            for cls, who in ((0, "A"), (1, "B"))
            if np.isfinite(c := case.observed[who]["center"][k]).all()
        ]
        (yolo / f"frame{k:05d}.txt").write_text("\n".join(rows) + "\n")
    argv = ["social", str(yolo), "--fps", "30", "--threshold", "50", "--out", str(out)]
    assert run_cli(argv) == 2  # the image size is needed
    assert run_cli([*argv, "--image-size", "640x480"]) == 0
    s2 = json.loads((out / "social.json").read_text())
    assert s2["identity"] == s["identity"] and len(s2["epochs"]) == 2
    # boxes without the named classes: the two best boxes per frame, identity from movement alone
    argv = ["social", str(log), "--fps", "30", "--threshold", "50", "--classes", "mouse,rat"]
    assert run_cli([*argv, "--out", str(out)]) == 0
    s3 = json.loads((out / "social.json").read_text())
    assert s3["identity"]["method"] == "movement" and s3["individuals"] == ["mouse0", "mouse1"]
    assert len(s3["epochs"]) == 2
    tab = pd.read_csv(out / "social_tracks.csv")
    got = tab[["mouse0_x_px", "mouse0_y_px"]].to_numpy()
    truth = (
        case.true["A"]["center"]
        if np.nanmean(np.abs(got[:, 0] - case.true["A"]["center"][:, 0])) < 50
        else case.true["B"]["center"]
    )
    assert np.nanmax(np.linalg.norm(got - truth, axis=1)) < 5  # one mouse throughout, either one


def test_social_command_pairs_and_format_errors(tmp_path, capsys):
    import json

    case = two_mice_case(2)
    third = {k: v + np.array([0.0, 150.0]) for k, v in case.true["A"].items()}
    path = write_dlc_multi(
        tmp_path / "three.h5", {"m1": case.observed["A"], "m2": case.observed["B"], "m3": third}
    )
    out = tmp_path / "out"
    base = ["social", str(path), "--fps", "30", "--threshold", "50", "--out", str(out)]
    assert run_cli(base) == 2
    assert "3 individuals (m1, m2, m3); choose two with --pair ID1,ID2" in capsys.readouterr().err
    assert run_cli([*base, "--pair", "m1,m2"]) == 0
    s = json.loads((out / "social.json").read_text())
    assert s["individuals"] == ["m1", "m2"] and len(s["epochs"]) == 2
    assert run_cli([*base, "--pair", "all"]) == 0
    s = json.loads((out / "social.json").read_text())
    assert [p["individuals"] for p in s["pairs"]] == [["m1", "m2"], ["m1", "m3"], ["m2", "m3"]]
    assert (out / "m1-m3" / "social_tracks.csv").is_file()
    assert run_cli([*base, "--pair", "m1,m9"]) == 2
    assert "no individual 'm9'" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("hello\n")
    assert run_cli(["social", str(tmp_path / "notes.txt"), *base[2:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a darknet detector log" in err and "SLEAP" in err
    (tmp_path / "x.pkl").write_text("x")
    assert run_cli(["social", str(tmp_path / "x.pkl"), *base[2:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "darknet detector log" in err and "DeepLabCut" in err


def test_social_command_on_a_jabs_file_with_three_mice(tmp_path):
    """JABS: three identities, the scale from the file (cm_per_pixel), JABS's part names by default."""
    import json

    pytest.importorskip("analysis.io.jabs", reason="the JABS importer is not in this tree")
    case = two_mice_case(0)
    third = {k: v + np.array([0.0, 150.0]) for k, v in case.true["A"].items()}
    path = write_jabs_v4(tmp_path / "v_pose_est_v4.h5", [case.true["A"], case.true["B"], third], 0.1)
    out = tmp_path / "out"
    argv = ["social", str(path), "--fps", "30", "--threshold", "5cm", "--pair", "id1,id2", "--out", str(out)]
    assert run_cli(argv) == 0
    s = json.loads((out / "social.json").read_text())
    assert s["units"] == "cm" and s["px_per_cm"] == pytest.approx(10.0, rel=1e-6)
    assert s["criteria"]["min_confidence"] == 0.3 and s["individuals"] == ["id1", "id2"]
    assert [e["type"] for e in s["epochs"]] == ["nose-to-nose", "nose-to-tail"]
    assert run_cli([*argv[:-4], "--pair", "all", "--out", str(out)]) == 0
    pairs = json.loads((out / "social.json").read_text())["pairs"]
    assert [p["individuals"] for p in pairs] == [["id1", "id2"], ["id1", "id3"], ["id2", "id3"]]


def test_social_annotated_video(tmp_path):
    """--annotate draws each mouse in its colour and a banner during contacts; the video's 300 frames end
    it before the tracks' 600 rows, and the summary says so."""
    import json

    import cv2

    case = two_mice_case(0)
    src = tmp_path / "arena.avi"
    w = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 360))
    for _ in range(300):
        w.write(np.full((360, 640, 3), 60, np.uint8))
    w.release()
    path = write_dlc_multi(tmp_path / "ma.h5", {"m1": case.observed["A"], "m2": case.observed["B"]})
    out = tmp_path / "out"
    argv = [
        "social",
        str(path),
        "--fps",
        "30",
        "--threshold",
        "50",
        "--annotate",
        str(src),
        "--out",
        str(out),
    ]
    assert run_cli(argv) == 0
    s = json.loads((out / "social.json").read_text())
    assert s["video"] == {"frames_drawn": 300, "video_frames": 300, "track_rows": 600}
    cap = cv2.VideoCapture(str(out / "annotated.mp4"))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    assert len(frames) == 300
    banner = [frames[k][5, 320] for k in (50, 150)]  # BGR; the contact banner is red
    assert banner[0][2] < 100 and banner[1][2] > 150 and banner[1][0] < 80
    # A (orange) at its nose, frame 50
    x, y = np.round(case.true["A"]["nose"][50]).astype(int)
    patch = frames[50][y - 3 : y + 4, x - 3 : x + 4].reshape(-1, 3)
    assert (patch[:, 2].astype(int) - patch[:, 0] > 100).any()
