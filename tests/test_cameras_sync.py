"""Trigger-index mapping and stereo pairing (pure logic)."""

from __future__ import annotations

import pytest

from rig.cameras.sync import (
    FrameCounter,
    FrameIdUnwrapper,
    StereoPairer,
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


def test_pairer_emits_complete_sets_and_drops_stale_ones() -> None:
    p = StereoPairer(("front", "side"))
    assert p.push("front", 0, "f0") is None
    assert p.push("side", 0, "s0") == (0, {"front": "f0", "side": "s0"})
    assert p.push("front", 1, "f1") is None  # side lost trigger 1
    assert p.push("front", 2, "f2") is None
    assert p.push("side", 2, "s2") == (2, {"front": "f2", "side": "s2"})
    assert p.incomplete_sets == 1 and not p.pending
    with pytest.raises(SyncError, match="two frames for trigger 3"):
        p.push("side", 3, "a")
        p.push("side", 3, "b")
    with pytest.raises(SyncError, match="unknown camera"):
        p.push("top", 3, "x")


def test_frame_counter_counts_gaps_and_incomplete_across_wrap() -> None:
    c = FrameCounter(bits=16, skip_zero=True)
    out = [c.update(r, inc) for r, inc in ((65534, False), (65535, True), (2, False), (3, False))]
    assert out == [(65534, 0), (65535, 0), (65537, 1), (65538, 0)]
    assert c.stats() == {"lost_frames": 1.0, "incomplete_frames": 1.0}
