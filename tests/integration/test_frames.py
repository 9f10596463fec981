"""Shared-memory frame rings: round trip, overwrite detection, a reader in another process."""

from __future__ import annotations

import multiprocessing as mp
import uuid

import numpy as np
import pytest

from rig.frames import FrameRing


@pytest.fixture
def ring():
    r = FrameRing.create(f"test-{uuid.uuid4().hex[:8]}", n_slots=4, width=32, height=24)
    yield r
    r.close()
    r.unlink()


def frame(k: int) -> np.ndarray:
    return np.full((24, 32), k % 256, np.uint8)


def test_round_trip_and_several_readers(ring):
    a, b = FrameRing.attach(ring.path.name), FrameRing.attach(ring.path.name)
    slot, seq = ring.write(frame(7))
    for reader in (a, b):
        got = reader.read(slot, seq)
        assert got is not None and (got == 7).all()
    assert a.drops == b.drops == 0
    a.close()
    b.close()


def test_overwritten_slot_is_a_counted_drop(ring):
    reader = FrameRing.attach(ring.path.name)
    slot, seq = ring.write(frame(1))
    for k in range(4):  # lap the ring: slot of frame 0 now holds frame 4
        ring.write(frame(10 + k))
    assert reader.read(slot, seq) is None
    assert reader.drops == 1
    latest_slot, latest_seq = (ring.next_seq - 1) % 4, ring.next_seq - 1
    got = reader.read(latest_slot, latest_seq)
    assert got is not None and (got == 13).all()
    reader.close()


def test_slot_being_written_is_refused(ring):
    reader = FrameRing.attach(ring.path.name)
    slot, seq, view = ring.begin()
    view[:] = 5
    assert reader.read(slot, seq) is None  # not committed yet
    ring.commit(slot, seq)
    assert reader.read(slot, seq) is not None
    reader.close()


def test_wrong_shape_is_refused(ring):
    with pytest.raises(ValueError, match="frame shape"):
        ring.write(np.zeros((10, 10), np.uint8))


def _reader_proc(name: str, slot: int, seq: int, q) -> None:
    r = FrameRing.attach(name)
    img = r.read(slot, seq)
    q.put(None if img is None else int(img.sum()))
    r.close()


def test_reader_in_another_process(ring):
    img = np.arange(24 * 32, dtype=np.uint32).reshape(24, 32).astype(np.uint8)
    slot, seq = ring.write(img)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_reader_proc, args=(ring.path.name, slot, seq, q))
    p.start()
    assert q.get(timeout=30) == int(img.sum())
    p.join(10)
    assert p.exitcode == 0


def test_attach_refuses_non_ring(tmp_path, monkeypatch):
    from rig import frames

    monkeypatch.setattr(frames, "SHM_DIR", tmp_path)
    (tmp_path / "junk").write_bytes(b"x" * 128)
    with pytest.raises(ValueError, match="not a frame ring"):
        FrameRing.attach("junk")
