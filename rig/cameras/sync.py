"""Map camera frame ids to the firmware's trigger count, and pair stereo frames by trigger index.

Pure logic, no I/O: the camera node feeds each camera's frames to a :class:`TriggerMapper`; the detector
and reanalysis join them into stereo sets by trigger index with a :class:`StereoJoiner`. Three faults
are told apart:

* **lost frame**: the camera exposed it (its frame id advanced) but the frame never reached the host;
* **missed trigger**: a trigger pulse produced no exposure (the frame id did not advance, but the
  camera's clock says a whole trigger period or more went by), e.g. a pulse during read-out;
* **duplicated frame**: the same frame id arrives twice (a driver re-delivering a buffer); it must be
  dropped, never paired.

Frame ids from GigE Vision are 16-bit block ids that wrap (and skip 0); :class:`FrameIdUnwrapper` turns
them into a monotonic count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from rig.errors import DeviceError

T = TypeVar("T")


class SyncError(DeviceError):
    """Frames that cannot be paired: their trigger indices differ, or a camera lost its place."""


class FrameIdUnwrapper:
    """Unwrap a camera's ``bits``-bit frame counter into a monotonic int (``bits=None``: no wrap).

    ``skip_zero``: the counter goes ``2**bits - 1 -> 1`` (GigE Vision block ids).
    """

    def __init__(self, bits: int | None = None, skip_zero: bool = False):
        self.modulus = None if bits is None else (1 << bits) - (1 if skip_zero else 0)
        self.skip_zero = skip_zero
        self.last_raw: int | None = None
        self.value = 0

    def update(self, raw: int) -> int:
        if self.last_raw is None:
            self.value = raw
        elif self.modulus is None:
            self.value += raw - self.last_raw
        else:
            a = self.last_raw - (1 if self.skip_zero else 0)
            b = raw - (1 if self.skip_zero else 0)
            delta = (b - a) % self.modulus
            if delta > self.modulus // 2:  # a backwards step (duplicate or reorder), not a wrap
                delta -= self.modulus
            self.value += delta
        self.last_raw = raw
        return self.value


class FrameCounter:
    """Per camera: unwrap raw frame ids, and count id gaps (lost frames) and incomplete frames.

    ``update(raw_id, incomplete)`` returns ``(frame_id, lost_before)``; totals are in ``lost`` and
    ``incomplete`` (what backends report in ``stream_stats``)."""

    def __init__(self, bits: int | None = 64, skip_zero: bool = False):
        self.unwrap = FrameIdUnwrapper(bits, skip_zero)
        self.last_id: int | None = None
        self.lost = 0
        self.incomplete = 0

    def update(self, raw_id: int, incomplete: bool = False) -> tuple[int, int]:
        fid = self.unwrap.update(raw_id)
        lost = 0 if self.last_id is None else max(0, fid - self.last_id - 1)
        self.last_id = fid
        self.lost += lost
        self.incomplete += int(incomplete)
        return fid, lost

    def stats(self) -> dict[str, float]:
        return {"lost_frames": float(self.lost), "incomplete_frames": float(self.incomplete)}


@dataclass(frozen=True)
class FrameSync:
    """The mapping of one frame. ``trigger_index`` is -1 for a duplicate (drop it)."""

    trigger_index: int
    lost_before: int = 0  # frames exposed by the camera but never delivered, since the previous frame
    missed_triggers: int = 0  # trigger pulses with no exposure, since the previous frame
    duplicate: bool = False


@dataclass
class SyncCounts:
    frames: int = 0
    lost: int = 0
    missed_triggers: int = 0
    duplicates: int = 0


class TriggerMapper:
    """Per camera: frame id (+ device or host time) -> firmware trigger index.

    The first frame after arming answers ``first_trigger_index`` (the firmware's count of the first
    pulse after the camera was armed; 0 when the firmware starts counting with the session). After
    that the index advances by the frame-id step, plus any whole trigger periods the camera's clock
    says went by without a frame id step (missed triggers). ``period_ns`` is the trigger period;
    ``t_ns`` the frame's device timestamp, or host arrival time when the camera has no clock (then
    jitter must stay below half a period).
    """

    def __init__(self, camera: str, period_ns: int, first_trigger_index: int = 0):
        if period_ns <= 0:
            raise ValueError(f"camera {camera!r}: trigger period must be > 0 ns, got {period_ns}")
        self.camera = camera
        self.period_ns = period_ns
        self.next_first = first_trigger_index
        self.last_frame_id: int | None = None
        self.last_t_ns = 0
        self.last_index = -1
        self.counts = SyncCounts()

    def map(self, frame_id: int, t_ns: int) -> FrameSync:
        if self.last_frame_id is None:
            self.last_frame_id, self.last_t_ns, self.last_index = frame_id, t_ns, self.next_first
            self.counts.frames += 1
            return FrameSync(self.last_index)
        step = frame_id - self.last_frame_id
        if step <= 0:
            self.counts.duplicates += 1
            return FrameSync(-1, duplicate=True)
        periods = round((t_ns - self.last_t_ns) / self.period_ns) if t_ns >= 0 else step
        missed = max(0, periods - step)
        index = self.last_index + step + missed
        self.last_frame_id, self.last_t_ns, self.last_index = frame_id, t_ns, index
        self.counts.frames += 1
        self.counts.lost += step - 1
        self.counts.missed_triggers += missed
        return FrameSync(index, lost_before=step - 1, missed_triggers=missed)

    def check_firmware_count(self, triggers_fired: int) -> None:
        """At the end: every pulse the firmware fired after arming is a frame, a loss or a miss.
        Raises SyncError when the camera claims a trigger index the firmware never fired."""
        if self.last_index >= triggers_fired:
            raise SyncError(
                f"camera {self.camera!r}: frame mapped to trigger {self.last_index} but the firmware "
                f"fired only {triggers_fired} pulses (a frame without a trigger: free-running camera?)"
            )

    def unaccounted(self, triggers_fired: int) -> int:
        """Pulses after the camera's last frame (trailing misses or frames still in flight)."""
        return max(0, triggers_fired - 1 - self.last_index)


def require_same_trigger(frames: dict[str, int]) -> int:
    """Return the common trigger index of a would-be pair; raise SyncError naming the cameras if
    their indices differ (``frames`` maps camera name -> trigger index)."""
    values = set(frames.values())
    if len(values) != 1 or -1 in values:
        detail = ", ".join(f"{k}={v}" for k, v in sorted(frames.items()))
        raise SyncError(f"refusing to pair frames from different triggers: {detail}")
    return values.pop()


@dataclass
class StereoSet(Generic[T]):
    """The frames of one trigger index, per camera (only the cameras that delivered one)."""

    trigger_index: int
    items: dict[str, T]
    first_arrival_s: float  # when its first frame was pushed (the caller's clock)


class StereoJoiner(Generic[T]):
    """Join per-camera frames into sets by trigger index, released strictly in trigger order.

    The one place where stereo sets are joined: the online detector (frames from the bus, a timeout),
    reanalysis (frames decoded from each camera's video, no timeout) and the tests. The set with the lowest
    index is released (:meth:`peek`, then :meth:`pop`) once it is complete, or once it can no longer be
    completed (every missing camera has delivered a later index, or ended: each camera delivers in trigger
    order), or ``timeout_s`` after its first frame. A later set never overtakes an earlier one, so whatever
    consumes the sets (the ROI tracker, the filter) never goes back in time. A frame whose set was already
    released is late, a camera's second frame for one index a duplicate: both counted, neither kept.
    """

    def __init__(self, cameras: Sequence[str], timeout_s: float = math.inf):
        self.cameras = tuple(cameras)
        self.timeout_s = timeout_s
        self._sets: dict[int, StereoSet[T]] = {}
        self._newest = dict.fromkeys(self.cameras, -1)  # the highest index each camera has delivered
        self._ended: set[str] = set()
        self.released_index = -1
        self.incomplete_sets = 0  # sets released without every camera
        self.late_frames = 0
        self.duplicates = 0

    def push(self, camera: str, trigger_index: int, item: T, now: float = 0.0) -> bool:
        """Add one frame; False when it is not kept (no trigger index, late, or a duplicate)."""
        if camera not in self._newest:
            raise SyncError(f"unknown camera {camera!r} (joining {', '.join(self.cameras)})")
        if trigger_index < 0:
            return False
        if trigger_index <= self.released_index:
            self.late_frames += 1
            return False
        s = self._sets.get(trigger_index)
        if s is None:
            s = self._sets[trigger_index] = StereoSet(trigger_index, {}, now)
        elif camera in s.items:
            self.duplicates += 1
            return False
        s.items[camera] = item
        self._newest[camera] = max(self._newest[camera], trigger_index)
        return True

    def end(self, camera: str) -> None:
        """``camera`` delivers nothing more."""
        self._ended.add(camera)

    @property
    def finished(self) -> bool:
        """Every camera has ended and every set has been released."""
        return len(self._ended) == len(self.cameras) and not self._sets

    def peek(self, now: float = 0.0) -> StereoSet[T] | None:
        """The next set if it may be released now, else None."""
        if not self._sets:
            return None
        s = self._sets[min(self._sets)]
        k = s.trigger_index
        if len(s.items) == len(self.cameras) or now - s.first_arrival_s >= self.timeout_s:
            return s
        missing = [c for c in self.cameras if c not in s.items]
        return s if all(c in self._ended or self._newest[c] > k for c in missing) else None

    def pop(self) -> StereoSet[T]:
        """Release the lowest set (call after :meth:`peek` said it may go)."""
        s = self._sets.pop(min(self._sets))
        self.released_index = s.trigger_index
        self.incomplete_sets += len(s.items) < len(self.cameras)
        return s

    def __len__(self) -> int:
        return len(self._sets)
