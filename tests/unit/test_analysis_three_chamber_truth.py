"""Three-chamber against truth (issue 20): a head path through known boundaries seen with 5 % missed
frames, 3 % false low-likelihood points and a 2 s gap gives the true transitions and bouts exactly and the
chamber times within one frame, through the function and through the command on a DeepLabCut file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.tasks.social import three_chamber
from tests.analysis_generators import three_chamber_case, write_dlc_single
from tests.analysis_helpers import run_cli


def _check_truth(res: dict, case) -> None:
    truth = case.truth
    assert res["transitions"] == truth["transitions"] == 4
    for cup, t in truth["cups"].items():
        assert t["n_bouts"] == 1
        assert res["cups"][cup]["n_bouts"] == t["n_bouts"], cup
    frame = 1 / case.fps
    for name, s in truth["occupancy_s"].items():
        assert abs(res["occupancy_s"][name] - s) <= frame + 1e-9, name


@pytest.mark.parametrize("seed", [0, 1, 2, 17])  # 17: the last two frames missed
def test_cut_and_fill_give_the_truth(seed):
    case = three_chamber_case(seed)
    res = three_chamber(case.t_s, case.head, case.geometry, confidence=case.likelihood, min_confidence=0.6)
    _check_truth(res, case)
    q = res["quality"]
    n = len(case.t_s)
    assert q.missing_in == round(0.05 * n) + 60  # missed frames + the 2 s gap
    assert q.cut == round(0.03 * n)  # every false point
    assert q.filled == q.missing_in + q.cut and q.missing == 0


def test_without_cut_and_fill_the_answer_is_wrong():
    """The same data analysed the way the project did before (no cut, no fill, no minimum gap) is far from
    the truth: what the test above guards against."""
    case = three_chamber_case(0)
    res = three_chamber(case.t_s, case.head, case.geometry, min_bout_s=0, max_gap_s=0, min_gap_s=0)
    assert res["transitions"] > 20
    assert all(c["n_bouts"] > 5 for c in res["cups"].values())
    assert abs(res["occupancy_s"]["center"] - case.truth["occupancy_s"]["center"]) > 1.0


def test_unfilled_long_gap_is_reported_missing():
    case = three_chamber_case(0)
    res = three_chamber(
        case.t_s, case.head, case.geometry, confidence=case.likelihood, min_confidence=0.6, max_gap_s=1.0
    )
    assert res["missing_s"] == pytest.approx(2.0, abs=0.1) and res["quality"].missing >= 60
    # the gap sits inside one centre visit: transitions and bouts are still right
    assert res["transitions"] == 4


def test_command_states_defaults_and_counts(tmp_path, capsys):
    import yaml

    case = three_chamber_case(0)
    pose = write_dlc_single(tmp_path / "gen.csv", case.head, case.likelihood)
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(case.geometry.to_dict()))
    out = tmp_path / "out"
    argv = ["three-chamber", str(pose), "--geometry", str(tmp_path / "g.yaml"), "--fps", "30"]
    assert run_cli([*argv, "--out", str(out)]) == 0
    s = json.loads((out / "three_chamber.json").read_text())
    assert s["transitions"] == 4
    assert {c: d["n_bouts"] for c, d in s["cups"].items()} == {"mouse_cup": 1, "empty_cup": 1}
    for name, v in case.truth["occupancy_s"].items():
        assert abs(s["occupancy_s"][name] - v) <= 1 / 30 + 1e-9
    f = s["frames"]
    assert f["min_confidence"] == 0.6  # DeepLabCut's default pcutoff
    assert (f["cut_low_confidence"], f["max_gap_s"]) == (54, 3.0)
    assert f["filled"] == f["missing_in_source"] + f["cut_low_confidence"] and f["still_missing"] == 0
    assert len(s["cups"]["mouse_cup"]["bouts_s"]) == 1
    # a stricter user cut and no filling: the counts say so
    assert run_cli([*argv, "--out", str(out), "--min-confidence", "0.95", "--max-gap", "0"]) == 0
    s = json.loads((out / "three_chamber.json").read_text())
    assert s["frames"]["filled"] == 0 and s["frames"]["cut_low_confidence"] > 54
    assert (
        s["frames"]["still_missing"] == s["frames"]["missing_in_source"] + s["frames"]["cut_low_confidence"]
    )
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_cli(["three-chamber", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "deeplabcut 0.6" in text and "default 3" in text and "(default 0.2)" in text


def test_truth_generator_is_deterministic():
    a, b = three_chamber_case(3), three_chamber_case(3)
    np.testing.assert_array_equal(a.head, b.head)
    assert not np.array_equal(a.head, three_chamber_case(4).head, equal_nan=True)
