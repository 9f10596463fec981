"""The session folder format (rig/SESSION.md) stays readable: a trimmed golden v1 session, committed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rig.errors import InputError
from rig.session import (
    DETECTION_COLUMNS,
    FRAME_COLUMNS,
    POINT_COLUMNS,
    TRUTH_COLUMNS,
    load_session,
    read_csv_columns,
)

GOLDEN = Path(__file__).parents[1] / "golden" / "session-v1"


def test_golden_v1_session_loads():
    s = load_session(GOLDEN)
    assert s.complete and s.cameras == ["front", "side"]
    for cam in s.cameras:
        t = s.frames[cam]
        assert list(t) == FRAME_COLUMNS
        assert np.array_equal(t["trigger_index"], np.arange(5)) and t["dropped"].sum() == 0
    assert list(s.points3d) == POINT_COLUMNS and list(s.detections) == DETECTION_COLUMNS
    assert s.truth is not None and list(s.truth) == TRUTH_COLUMNS
    assert [t["outcome"] for t in s.trials] == ["success", "success"]
    assert s.events[0]["kind"] == "trial_start"
    assert s.points3d["cameras"][0] == "front+side"
    np.testing.assert_allclose(s.points3d["x"][0], 1.99003)
    assert set(s.calibration.cameras) == {"front", "side"}


def test_torn_last_line_is_ignored_and_bad_rows_named(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,b\n1,2\n3,4\n5")  # a crash mid-row leaves a torn last line
    cols = read_csv_columns(p)
    assert cols["a"].tolist() == [1, 3]
    p.write_text("a,b\n1,2\n3\n5,6\n")
    with pytest.raises(InputError, match=r"t\.csv: line 3 has 1 fields, expected 2"):
        read_csv_columns(p)


def test_not_a_session_is_named(tmp_path):
    with pytest.raises(InputError, match="not a session folder"):
        load_session(tmp_path)
