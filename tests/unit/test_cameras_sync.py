"""Trigger-index mapping and stereo pairing (pure logic)."""

from __future__ import annotations

import pytest

from rig.cameras.sync import (
    FrameCounter,
    FrameIdUnwrapper,
    StereoJoiner,
    SyncError,
    TriggerMapper,
    require_same_trigger,
)

P = 8_064_516  # 124 Hz period, ns


def test_unwrap_gige_block_ids_skip_zero() -> None:
    u = FrameIdUnwrapper(bits=16, skip_zero=True)
    assert [u.update(x) for x in (65533, 65534, 65535, 1, 2)] == [65533, 65534, 65535, 65536, 65537]
    u = FrameIdUnwrapper(bits=16)
    assert [u.update(x) for x in (65534, 65535, 0, 3)] == [65534, 65535, 65536, 65539]


def test_unwrap_backwards_step_is_not_a_wrap() -> None:
    u = FrameIdUnwrapper(bits=16, skip_zero=True)
    assert [u.update(x) for x in (10, 11, 11, 12)] == [10, 11, 11, 12]


def test_mapper_contiguous_frames_follow_triggers() -> None:
    m = TriggerMapper("front", P, first_trigger_index=5)
    out = [m.map(100 + i, 1_000 + i * P) for i in range(4)]
    assert [s.trigger_index for s in out] == [5, 6, 7, 8]
    assert m.counts.lost == m.counts.missed_triggers == 0


def test_mapper_lost_frame_vs_missed_trigger() -> None:
    m = TriggerMapper("front", P)
    m.map(0, 0)
    lost = m.map(3, 3 * P + 200_000)  # ids 1, 2 exposed but never delivered
    assert (lost.trigger_index, lost.lost_before, lost.missed_triggers) == (3, 2, 0)
    missed = m.map(4, 6 * P - 300_000)  # id advanced by 1 but 3 periods passed: 2 pulses not exposed
    assert (missed.trigger_index, missed.lost_before, missed.missed_triggers) == (6, 0, 2)
    assert (m.counts.lost, m.counts.missed_triggers, m.counts.frames) == (2, 2, 3)


def test_mapper_duplicate_is_flagged_and_not_indexed() -> None:
    m = TriggerMapper("side", P)
    m.map(7, 0)
    d = m.map(7, P)
    assert d.duplicate and d.trigger_index == -1
    assert m.map(8, P).trigger_index == 1
    assert m.counts.duplicates == 1


def test_mapper_check_against_firmware_count() -> None:
    m = TriggerMapper("side", P)
    for i in range(5):
        m.map(i, i * P)
    m.check_firmware_count(5)
    assert m.unaccounted(7) == 2
    with pytest.raises(SyncError, match=r"side.*fired only 4"):
        m.check_firmware_count(4)


def test_refuse_pair_with_different_trigger_indices() -> None:
    assert require_same_trigger({"front": 12, "side": 12}) == 12
    with pytest.raises(SyncError, match="front=12, side=13"):
        require_same_trigger({"front": 12, "side": 13})
    with pytest.raises(SyncError):
        require_same_trigger({"front": -1, "side": -1})


def _released(j: StereoJoiner[str], now: float = 0.0) -> list[tuple[int, dict[str, str]]]:
    out = []
    while (s := j.peek(now)) is not None:
        j.pop()
        out.append((s.trigger_index, s.items))
    return out


def test_joiner_releases_sets_in_trigger_order() -> None:
    j: StereoJoiner[str] = StereoJoiner(("front", "side"))
    assert j.push("front", 0, "f0") and _released(j) == []  # side may still deliver 0
    assert j.push("side", 0, "s0")
    assert _released(j) == [(0, {"front": "f0", "side": "s0"})]
    j.push("front", 1, "f1")  # side lost trigger 1 ...
    j.push("front", 2, "f2")
    assert _released(j) == []  # ... which only a later side frame (or its end) tells
    j.push("side", 2, "s2")
    assert _released(j) == [(1, {"front": "f1"}), (2, {"front": "f2", "side": "s2"})]
    assert j.incomplete_sets == 1 and len(j) == 0
    # a frame of a set already released is late; a second frame for one index a duplicate: neither kept
    assert not j.push("side", 1, "late") and j.late_frames == 1
    assert j.push("side", 3, "a") and not j.push("side", 3, "b") and j.duplicates == 1
    assert not j.push("front", -1, "no trigger")
    with pytest.raises(SyncError, match="unknown camera"):
        j.push("top", 3, "x")
    j.end("front")
    assert _released(j) == [(3, {"side": "a"})] and not j.finished
    j.end("side")
    assert j.finished


def test_joiner_timeout_releases_a_set_whose_partner_is_late() -> None:
    j: StereoJoiner[str] = StereoJoiner(("front", "side"), timeout_s=0.05)
    j.push("front", 5, "f5", now=10.0)
    j.push("front", 6, "f6", now=10.001)  # side's frame 5 may still be on its way
    assert _released(j, now=10.04) == []
    assert _released(j, now=10.06) == [(5, {"front": "f5"}), (6, {"front": "f6"})]
    j.push("side", 5, "s5")  # it came, too late
    assert j.late_frames == 1 and j.incomplete_sets == 2


def test_frame_counter_counts_gaps_and_incomplete_across_wrap() -> None:
    c = FrameCounter(bits=16, skip_zero=True)
    out = [c.update(r, inc) for r, inc in ((65534, False), (65535, True), (2, False), (3, False))]
    assert out == [(65534, 0), (65535, 0), (65537, 1), (65538, 0)]
    assert c.stats() == {"lost_frames": 1.0, "incomplete_frames": 1.0}
