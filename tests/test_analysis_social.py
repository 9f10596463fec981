"""Three-chamber sociability and two-mouse interaction on scripted trajectories with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.errors import AnalysisError
from analysis.tasks.social import (
    ThreeChamberGeometry,
    plot_contact_distance,
    repair_identities,
    three_chamber,
    two_mouse_interaction,
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
    assert r["occupancy_s"] == pytest.approx({"left": 9.9, "center": 5.0, "right": 5.0})
    assert r["transitions"] == 2
    assert r["cups"]["mouse_cup"]["interaction_s"] == pytest.approx(9.9)
    assert r["cups"]["mouse_cup"]["n_bouts"] == 2  # split by the missed frame
    assert r["cups"]["empty_cup"]["interaction_s"] == pytest.approx(3.0)
    assert r["cups"]["empty_cup"]["interaction_pct"] == pytest.approx(15.0)
    assert r["sociability_index"] == pytest.approx((9.9 - 3.0) / 12.9)
    assert r["distance"] == pytest.approx(190 + np.hypot(220, 10) + np.hypot(40, 120), rel=0.05)
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
    with pytest.raises(AnalysisError, match="mouse B lacks part"):
        two_mouse_interaction(t, pa, {"center": pb["center"]}, 40.0)


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
    assert summary["frames_swapped"] == 3 and summary["individuals"] == ["m1", "m2"]
    assert [e["type"] for e in summary["epochs"]] == ["nose-to-nose"]
    assert (out / "distance.png").stat().st_size > 3000
