"""`deepbehavior figures` for the three-chamber and social tasks, from what their analyses wrote on the
generated sessions of tests/analysis_generators.py: every figure written, of its size, with something
drawn. (Reaching and human figures: tests/unit/test_analysis_reaching_truth.py,
test_analysis_human_truth.py.)"""

from __future__ import annotations

import cv2
import yaml

from tests.analysis_generators import three_chamber_case, two_mice_case, write_dlc_multi, write_dlc_single
from tests.analysis_helpers import run_cli


def _check(folder, sizes):
    for name, (w, h) in sizes.items():
        img = cv2.imread(str(folder / name))
        assert img is not None and img.shape[:2] == (h, w), name
        assert (img < 200).any(axis=2).sum() > 2000, name


def test_three_chamber_figures(tmp_path, capsys):
    case = three_chamber_case(0)
    pose = write_dlc_single(tmp_path / "pose.csv", case.head, case.likelihood)
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(case.geometry.to_dict()))
    argv = ["three-chamber", str(pose), "--geometry", str(tmp_path / "g.yaml"), "--fps", "30"]
    assert run_cli([*argv, "--out", str(tmp_path / "tc")]) == 0
    assert run_cli(["figures", "three-chamber", str(tmp_path / "tc")]) == 0
    _check(tmp_path / "tc" / "figures", {"occupancy.png": (600, 400), "cup_interaction.png": (600, 400)})
    assert run_cli(["figures", "three-chamber", str(tmp_path)]) == 2
    assert (
        "no three_chamber.json: give the folder the three-chamber analysis wrote" in capsys.readouterr().err
    )


def test_social_figures(tmp_path, capsys):
    case = two_mice_case(0)
    write_dlc_multi(tmp_path / "ma.h5", case.observed)
    argv = ["social", str(tmp_path / "ma.h5"), "--fps", "30", "--threshold", "5cm", "--px-per-cm", "10"]
    assert run_cli([*argv, "--out", str(tmp_path / "so")]) == 0
    assert run_cli(["figures", "social", str(tmp_path / "so"), "--out", str(tmp_path / "f")]) == 0
    _check(tmp_path / "f", {"speed.png": (600, 400), "contact_types.png": (600, 400)})
