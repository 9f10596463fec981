"""NWB export round trip: write a session with pynwb + ndx-pose, read it back, compare."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from analysis.errors import AnalysisError
from analysis.nwb import PoseSeries, export_nwb


def test_nwb_round_trip(tmp_path):
    from pynwb import NWBHDF5IO

    rng = np.random.default_rng(0)
    t = np.arange(50) / 124.0
    pts2d = rng.uniform(0, 400, (50, 3, 2))
    pts2d[5, 1] = np.nan
    conf = rng.uniform(0, 1, (50, 3))
    pts3d = rng.normal(0, 10, (50, 2, 3))
    trials = pd.DataFrame(
        {"trial": [0, 1], "t_start_s": [0.0, 0.2], "t_end_s": [0.19, 0.39], "outcome": ["success", "miss"]}
    )
    start = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    out = export_nwb(
        tmp_path / "s.nwb",
        identifier="sess-1",
        session_description="reaching",
        session_start_time=start,
        subject={"subject_id": "m1", "species": "Mus musculus", "sex": "F", "age": "P90D"},
        trials=trials,
        events=[(0.01, "platform_up"), (0.15, "pellet_removed"), (0.21, "platform_up")],
        videos={"front": ("front.mkv", t)},
        pose={
            "front": PoseSeries(pts2d, t, ["paw", "pellet", "nose"], conf, edges=[("paw", "nose")]),
            "3d": PoseSeries(pts3d, t, ["paw", "pellet"], unit="mm", reference_frame="calibration world, mm"),
        },
    )
    assert [p.name for p in tmp_path.iterdir()] == ["s.nwb"]
    from pynwb import validate

    problems = validate(path=str(out))  # a list of schema violations
    assert isinstance(problems, list) and not problems, problems
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert nwb.identifier == "sess-1" and nwb.session_start_time == start
        assert nwb.subject.subject_id == "m1" and nwb.subject.species == "Mus musculus"
        tr = nwb.trials.to_dataframe()
        assert list(tr["outcome"]) == ["success", "miss"]
        np.testing.assert_allclose(tr["start_time"], [0.0, 0.2])
        ev = nwb.processing["events"]["events"]
        labels = ev.comments.split(",")
        assert [labels[c] for c in ev.data[:]] == ["platform_up", "pellet_removed", "platform_up"]
        np.testing.assert_allclose(ev.timestamps[:], [0.01, 0.15, 0.21])
        video = nwb.acquisition["video_front"]
        assert list(video.external_file[:]) == ["front.mkv"]
        np.testing.assert_allclose(video.timestamps[:], t)
        behavior = nwb.processing["behavior"]
        front = behavior["pose_front"]
        np.testing.assert_array_equal(front.pose_estimation_series["pellet"].data[:], pts2d[:, 1])
        np.testing.assert_allclose(front.pose_estimation_series["nose"].confidence[:], conf[:, 2])
        assert list(front.skeleton.nodes[:]) == ["paw", "pellet", "nose"]
        np.testing.assert_array_equal(front.skeleton.edges[:], [[0, 2]])
        p3 = behavior["pose_3d"].pose_estimation_series["paw"]
        np.testing.assert_allclose(p3.data[:], pts3d[:, 0])
        assert p3.unit == "mm"
        np.testing.assert_allclose(p3.timestamps[:], t)


def test_nwb_bad_input_leaves_no_file(tmp_path):
    start = datetime(2026, 11, 21, tzinfo=UTC)
    bad = PoseSeries(np.zeros((5, 2, 2)), np.arange(4.0), ["a", "b"])
    with pytest.raises(AnalysisError, match="pose 'front': 4 timestamps for 5 frames"):
        export_nwb(
            tmp_path / "x.nwb",
            identifier="x",
            session_description="d",
            session_start_time=start,
            pose={"front": bad},
        )
    assert not list(tmp_path.iterdir())
    with pytest.raises(AnalysisError, match="timezone-aware"):
        export_nwb(
            tmp_path / "x.nwb",
            identifier="x",
            session_description="d",
            session_start_time=datetime(2026, 1, 1),
        )
