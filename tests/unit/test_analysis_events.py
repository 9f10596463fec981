"""analysis.events: the confidence cut, gap filling up to a stated maximum, events with a minimum duration
and gap, and stable visits, on small series whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.errors import AnalysisError
from analysis.events import (
    clean_track,
    confidence_cut,
    default_min_confidence,
    events,
    fill_gaps,
    visits,
)

T10 = np.arange(20) / 10.0  # 10 Hz


def test_confidence_cut_keeps_sources_without_confidence():
    x = np.arange(10.0).reshape(5, 2)
    x[1] = np.nan
    conf = np.array([0.9, 0.1, 0.3, np.nan, 0.6])
    out, cut = confidence_cut(x, conf, 0.5)
    # frame 1 was already missing (not "cut"), 2 is cut, 3 has no confidence (kept), 4 is at the cut (kept)
    np.testing.assert_array_equal(cut, [False, False, True, False, False])
    assert np.isnan(out[[1, 2]]).all() and np.isfinite(out[[0, 3, 4]]).all()
    assert confidence_cut(x, None, 0.5)[1].sum() == 0
    with pytest.raises(AnalysisError, match=r"confidence: shape \(4,\), expected \(5,\)"):
        confidence_cut(x, conf[:4], 0.5)
    assert default_min_confidence("deeplabcut") == 0.6 and default_min_confidence("sleap-slp") == 0.2
    assert default_min_confidence(None) == 0.5


def test_fill_gaps_up_to_the_stated_maximum():
    x = np.stack([np.arange(20.0), np.zeros(20)], axis=1)
    x[3:6] = np.nan  # 3 frames = 0.3 s
    x[10:15] = np.nan  # 5 frames = 0.5 s
    x[18:] = np.nan  # at the end: held at the last sample when short enough
    out, filled = fill_gaps(T10, x, 0.3)
    np.testing.assert_allclose(out[3:6, 0], [3, 4, 5])
    np.testing.assert_allclose(out[18:, 0], [17, 17])
    assert np.isnan(out[10:15]).all()
    assert filled.sum() == 5
    out, filled = fill_gaps(T10, x, 0.5)
    np.testing.assert_allclose(out[10:15, 0], [10, 11, 12, 13, 14])
    assert filled.sum() == 10
    assert np.isnan(fill_gaps(T10, x, 0.1)[0][18:]).all()  # 2 frames at the end > 0.1 s: kept missing
    y = x.copy()
    y[:2] = np.nan
    np.testing.assert_allclose(fill_gaps(T10, y, 0.3)[0][:2, 0], [2, 2])
    assert fill_gaps(T10, x, 0.0)[1].sum() == 0
    with pytest.raises(AnalysisError, match="max gap -1"):
        fill_gaps(T10, x, -1)


def test_clean_track_counts_what_it_did():
    x = np.stack([np.arange(20.0), np.zeros(20)], axis=1)
    conf = np.full(20, 0.9)
    x[2] = np.nan  # missed
    conf[7] = 0.1  # a false point
    x[7] = (100, 100)
    x[12:18] = np.nan  # a 0.6 s gap
    out, q = clean_track(T10, x, conf, 0.5, max_gap_s=0.3)
    assert (q.frames, q.missing_in, q.cut, q.filled, q.missing) == (20, 7, 1, 2, 6)
    assert out[7, 0] == pytest.approx(7.0)  # the false point is replaced by the interpolation
    assert q.to_dict()["cut_low_confidence"] == 1 and q.to_dict()["max_gap_s"] == 0.3


def test_events_minimum_gap_and_duration():
    m = np.zeros(20, dtype=bool)
    m[2:6] = True  # 0.4 s
    m[7:10] = True  # 1 frame gap (0.1 s): the same event
    m[14] = True  # a lone frame 0.4 s later
    assert events(T10, m, 0.0, 0.0) == [(2, 5), (7, 9), (14, 14)]
    assert events(T10, m, 0.0, 0.2) == [(2, 9), (14, 14)]
    assert events(T10, m, 0.2, 0.2) == [(2, 9)]
    assert events(T10, m, 0.0, 0.5) == [(2, 14)]
    assert events(T10, np.zeros(20, dtype=bool), 0.0, 1.0) == []
    with pytest.raises(AnalysisError, match="mask: shape"):
        events(T10, m[:5], 0.0, 0.0)


def test_visits_ignore_unknown_samples_and_short_stays():
    lab = np.array(["a"] * 6 + [""] * 3 + ["a"] * 2 + ["b"] + ["a"] * 3 + ["b"] * 5, dtype=object)
    v = visits(T10, lab, 0.2)
    # the unknown samples and the lone 'b' (0.1 s) do not break the first visit
    assert v == [(0, 14, "a"), (15, 19, "b")]
    assert [x[2] for x in visits(T10, lab, 0.0)] == ["a", "b", "a", "b"]
