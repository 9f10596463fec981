"""Which CPUs the detector and the video encoders run on (Linux CPU affinity).

On a small machine the encoders' x264 work, even at idle scheduling priority, evicts the detector's model
and buffers from the core's caches; the next inference on that core then runs slower. Keeping them on
different CPUs removes that (measured on the 2-core VM: frame -> 3-D p99 from 9-14 ms to 8 ms, see
BENCHMARKS.md). Everything else (cameras, recorder main loop, task, Arduino) stays free to move.

``auto``: the detector gets the first ``threads`` CPUs this process may use, the encoders every other
one; with too few CPUs nothing is pinned. A list pins to exactly those CPUs; ``null`` leaves the
scheduler alone.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Literal

from rig.errors import ConfigError

if TYPE_CHECKING:
    from rig.config import LoadedConfig

CpuSpec = list[int] | Literal["auto"] | None


def allowed_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return []


def resolve_cpus(
    detector: CpuSpec, detector_threads: int, encoder: CpuSpec, allowed: list[int] | None = None
) -> tuple[set[int] | None, set[int] | None]:
    """(detector CPUs, encoder CPUs) on this machine; None = not pinned. Raises ConfigError naming the
    key when a listed CPU is not one this process may run on."""
    cpus = allowed_cpus() if allowed is None else allowed
    for key, spec in (("pipeline.detector.cpus", detector), ("pipeline.recorder.encoder_cpus", encoder)):
        if isinstance(spec, list):
            bad = [c for c in spec if c not in cpus]
            if bad or not spec:
                raise ConfigError(
                    f"{key}: CPU(s) {bad or spec} not available here (this machine offers {cpus or 'none'})"
                )
    det: set[int] | None
    if detector == "auto":
        n = max(1, detector_threads)
        det = set(cpus[:n]) if len(cpus) > n else None
    else:
        det = set(detector) if detector is not None else None
    enc: set[int] | None
    if encoder == "auto":
        rest = set(cpus) - det if det is not None else set()
        enc = rest or None
    else:
        enc = set(encoder) if encoder is not None else None
    return det, enc


def pin(cpus: set[int] | None, thread_id: int = 0) -> bool:
    """Pin a thread (native id; 0 = the calling thread) to ``cpus``; False if not possible."""
    if not cpus:
        return False
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(thread_id, cpus)
        return True
    return False


def session_cpus(loaded: LoadedConfig) -> tuple[set[int] | None, set[int] | None]:
    """(detector CPUs, encoder CPUs) for a session's config; a bad list names the file and key."""
    pipe = loaded.config.pipeline
    det_on = pipe.detector.enabled
    try:
        return resolve_cpus(
            pipe.detector.cpus if det_on else None,
            int(pipe.detector.options.get("threads", 1)),
            pipe.recorder.encoder_cpus,
        )
    except ConfigError as exc:
        raise ConfigError(f"{loaded.source}: {exc}") from None
