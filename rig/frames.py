"""Shared-memory frame rings: one per camera, one writer, any number of readers.

Pixels never go through a serializer on one machine: the camera node writes each frame into the next
slot of its ring and publishes a small :class:`~rig.messages.FrameHeader` (slot, seq) on the bus.
A reader copies the slot and checks the slot's sequence number before and after the copy; if the
writer lapped the reader in between, the read is refused and counted as a drop for that reader,
never returned silently.

Layout of the backing file (``/dev/shm/<name>``), all little-endian:

====================  ======================================================
offset 0 (64 bytes)   magic ``DBRING01``, version u32, n_slots u32, width u32,
                      height u32, slot_bytes u64, writer pid u32
64                    n_slots x u64 slot sequence: ``seq + 1`` when slot holds frame ``seq``,
                      ``WRITING`` while being written, 0 when never written
64 + 8*n_slots        n_slots x slot_bytes pixels (rounded to 64-byte multiples)
====================  ======================================================

x86-64 keeps stores in order, so the sequence words written around the pixel copy are a sufficient
seqlock for one writer; the reader's second check catches any overlap.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from pathlib import Path

import numpy as np

MAGIC = b"DBRING01"
VERSION = 1
HEADER_BYTES = 64
WRITING = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
_HDR = struct.Struct("<8sIIIIQI")

SHM_DIR = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")


def ring_path(name: str) -> Path:
    return SHM_DIR / name


class FrameRing:
    """A mapped ring. Create with :meth:`create` (writer) or :meth:`attach` (reader)."""

    def __init__(self, path: Path, mm: mmap.mmap, n_slots: int, width: int, height: int, slot_bytes: int):
        self.path = path
        self._mm = mm
        self.n_slots = n_slots
        self.width = width
        self.height = height
        self.slot_bytes = slot_bytes
        buf = np.frombuffer(mm, dtype=np.uint8)
        self._seqs = np.frombuffer(mm, dtype=np.uint64, count=n_slots, offset=HEADER_BYTES)
        data_off = HEADER_BYTES + 8 * n_slots
        frame_bytes = width * height
        self._slots = [
            buf[data_off + i * slot_bytes : data_off + i * slot_bytes + frame_bytes].reshape(height, width)
            for i in range(n_slots)
        ]
        self.next_seq = 0
        self.drops = 0  # reader-side: reads refused because the writer overwrote the slot

    # -- set-up ---------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, n_slots: int, width: int, height: int) -> FrameRing:
        path = ring_path(name)
        slot_bytes = (width * height + 63) // 64 * 64
        size = HEADER_BYTES + 8 * n_slots + n_slots * slot_bytes
        fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        mm[:HEADER_BYTES] = _HDR.pack(MAGIC, VERSION, n_slots, width, height, slot_bytes, os.getpid()).ljust(
            HEADER_BYTES, b"\0"
        )
        return cls(path, mm, n_slots, width, height, slot_bytes)

    @classmethod
    def attach(cls, name: str) -> FrameRing:
        path = ring_path(name)
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        magic, version, n_slots, width, height, slot_bytes, _pid = _HDR.unpack(mm[: _HDR.size])
        if magic != MAGIC or version != VERSION:
            mm.close()
            raise ValueError(f"{path}: not a frame ring (magic {magic!r}, version {version})")
        return cls(path, mm, n_slots, width, height, slot_bytes)

    # -- writer ---------------------------------------------------------------------------
    def write(self, image: np.ndarray) -> tuple[int, int]:
        """Copy ``image`` (H, W) uint8 into the next slot; returns (slot, seq)."""
        if image.shape != (self.height, self.width):
            raise ValueError(
                f"{self.path.name}: frame shape {image.shape} != ring {(self.height, self.width)}"
            )
        seq = self.next_seq
        slot = seq % self.n_slots
        self._seqs[slot] = WRITING
        np.copyto(self._slots[slot], image)
        self._seqs[slot] = np.uint64(seq + 1)
        self.next_seq = seq + 1
        return slot, seq

    def slot_array(self, slot: int) -> np.ndarray:
        """Writable view of a slot for zero-copy producers; follow with :meth:`commit`."""
        return self._slots[slot]

    def begin(self) -> tuple[int, int, np.ndarray]:
        """Start an in-place write: (slot, seq, view). The slot is marked busy until :meth:`commit`."""
        seq = self.next_seq
        slot = seq % self.n_slots
        self._seqs[slot] = WRITING
        return slot, seq, self._slots[slot]

    def commit(self, slot: int, seq: int) -> None:
        self._seqs[slot] = np.uint64(seq + 1)
        self.next_seq = seq + 1

    # -- reader ---------------------------------------------------------------------------
    def read(self, slot: int, seq: int, out: np.ndarray | None = None) -> np.ndarray | None:
        """Copy frame ``seq`` from ``slot``; None (and ``drops += 1``) if it was overwritten."""
        expected = np.uint64(seq + 1)
        if not 0 <= slot < self.n_slots or self._seqs[slot] != expected:
            self.drops += 1
            return None
        if out is None:
            out = np.empty((self.height, self.width), np.uint8)
        np.copyto(out, self._slots[slot])
        if self._seqs[slot] != expected:
            self.drops += 1
            return None
        return out

    def still_valid(self, slot: int, seq: int) -> bool:
        return bool(self._seqs[slot] == np.uint64(seq + 1))

    def view(self, slot: int) -> np.ndarray:
        """Read-only zero-copy view; check :meth:`still_valid` after using it."""
        v = self._slots[slot].view()
        v.flags.writeable = False
        return v

    def close(self) -> None:
        self._slots = []
        self._seqs = np.zeros(0, np.uint64)
        try:
            self._mm.close()
        except BufferError:
            pass  # a caller still holds a view; the mapping goes when it is collected

    def unlink(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def process_identity(pid: int) -> str | None:
    """``<boot id>:<start time in clock ticks>`` of a process: unlike its pid, never reused (None where
    /proc cannot tell)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
        start = stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name
    except (OSError, IndexError):
        return None
    return f"{boot}:{start}"


def pid_alive(pid: int, identity: str | None = None) -> bool:
    """True if ``pid`` exists and is a Python process (a reused pid running something else is not); with
    ``identity`` (:func:`process_identity` recorded earlier), only if it is that very process."""
    if identity is not None:
        now = process_identity(pid)
        if now is not None:
            return now == identity
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, belongs to someone else
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the kill
    return b"python" in cmdline or b"deepbehavior" in cmdline


def stale_rings(prefix: str) -> list[Path]:
    """Rings named ``<prefix>*`` whose writer process is gone (a session whose supervisor was killed
    leaves them in /dev/shm). A ring of a live session is not stale."""
    out = []
    for path in SHM_DIR.glob(prefix + "*"):
        try:
            with open(path, "rb") as f:
                magic, _v, _n, _w, _h, _sb, pid = _HDR.unpack(f.read(_HDR.size))
        except (OSError, struct.error):
            continue
        if magic == MAGIC and not pid_alive(pid):
            out.append(path)
    return out


def remove_stale_rings(prefix: str) -> list[Path]:
    """Unlink the :func:`stale_rings`; returns what was removed."""
    removed = []
    for path in stale_rings(prefix):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def ring_name(session_id: str, camera: str) -> str:
    return f"deepbehavior-{session_id}-{camera}"


class SessionRings:
    """A session's frame rings, attached on first use by any reader (detector, recorder, display, bridge)."""

    def __init__(self, session_id: str):
        self.session_id = session_id
        self.rings: dict[str, FrameRing] = {}

    def get(self, camera: str) -> FrameRing:
        """The camera's ring; raises ``OSError``/``ValueError`` if it cannot be attached."""
        ring = self.rings.get(camera)
        if ring is None:
            ring = self.rings[camera] = FrameRing.attach(ring_name(self.session_id, camera))
        return ring

    def find(self, camera: str) -> FrameRing | None:
        """The camera's ring, or None if it is not there (yet)."""
        try:
            return self.get(camera)
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        for r in self.rings.values():
            r.close()
        self.rings.clear()
