"""Every message on the bus: typed, frozen, versioned msgspec structs encoded as MessagePack.

A bus message is a two-part ZeroMQ message ``[topic, payload]``; topics are dotted names:

=====================  ==================  =============================================
topic                  struct              published by
=====================  ==================  =============================================
``frame.<camera>``     FrameHeader         camera node (pixels are in the shared-memory ring)
``det.<camera>``       Detections          detector node
``point3d.<name>``     Point3D             detector node (it triangulates each stereo set)
``sim.truth``          Truth               synthetic world (side channel: tests/benchmarks only)
``trigger``            Trigger             trigger source (world clock, or the Arduino node)
``sim.input``          SimInput            synthetic world -> simulated Arduino's input pins
``task.event``         TaskEvent           task / world (trial start/end, outcomes, marks)
``serial.event``       SerialEvent         arduino node
``cmd.arduino``        Command             controller / closed-loop rule
``stats.<node>``       Stats               every node, 1 Hz
``log.<node>``         LogRecord           every node
``node.<node>``        NodeStatus          every node (ready / eos / exiting)
``ctl``                Control             supervisor (start / stop / pause / resume)
=====================  ==================  =============================================

No pickle crosses a wire. A payload whose ``schema`` differs from :data:`SCHEMA_VERSION` is refused
with :class:`~rig.errors.SchemaMismatch` naming the topic and both versions.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from rig.errors import ProtocolError, SchemaMismatch

SCHEMA_VERSION = 1


class Msg(msgspec.Struct, frozen=True, kw_only=True, tag=True, tag_field="type"):
    """Base of every bus message. ``schema`` is checked on decode."""

    schema: int = SCHEMA_VERSION


class FrameHeader(Msg, tag="frame", frozen=True):
    """One camera frame. The pixels sit in the camera's shared-memory ring at ``slot``.

    Times are nanoseconds: ``t_host_ns`` is host ``time.monotonic_ns()`` when the frame was
    available to the host; ``t_device_ns`` is the camera's own clock (-1 if it has none);
    ``t_trigger_ns`` is the host-clock time of the trigger pulse when known (-1 otherwise).
    ``seq`` counts frames written to the ring (0, 1, 2, ...); a gap means frames were lost
    before the ring. ``eos`` marks the end of the stream (no pixels).
    """

    camera: str
    seq: int
    frame_id: int
    trigger_index: int
    t_host_ns: int
    t_device_ns: int = -1
    t_trigger_ns: int = -1
    slot: int = -1
    width: int = 0
    height: int = 0
    lost_before: int = 0
    incomplete: bool = False
    eos: bool = False


class Box(msgspec.Struct, frozen=True, array_like=True):
    """Axis-aligned box in full-frame pixel coordinates (x to the right, y down)."""

    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float
    class_id: int = 0


class Detections(Msg, tag="det", frozen=True):
    """Detector output for one frame; carries the frame's timestamps plus its own."""

    camera: str
    seq: int
    trigger_index: int
    t_frame_ns: int
    t_trigger_ns: int
    t_start_ns: int
    t_end_ns: int
    boxes: list[Box]
    runner: str = ""
    roi: tuple[int, int, int, int] | None = None
    eos: bool = False


class Point3D(Msg, tag="point3d", frozen=True):
    """A triangulated 3-D point in the calibration's world frame (millimetres).

    ``xyz`` is the raw triangulation (NaN when invalid), ``xyz_filtered`` the filter output
    (equal to ``xyz`` when no filter is configured), ``xyz_predicted`` the filter's forward
    prediction ``predict_ms`` ahead. ``t_frame_ns`` is the earliest frame time of the views
    used; ``t_det_ns`` the latest detection end; ``t_out_ns`` the publish time.
    """

    name: str
    trigger_index: int
    xyz: tuple[float, float, float]
    xyz_filtered: tuple[float, float, float]
    xyz_predicted: tuple[float, float, float]
    valid: bool
    reproj_error_px: float
    cameras: list[str]
    t_frame_ns: int
    t_trigger_ns: int
    t_det_ns: int
    t_out_ns: int
    reason: str = ""


class Truth(Msg, tag="truth", frozen=True):
    """Ground truth of the synthetic world for one trigger (never fed to the pipeline)."""

    trigger_index: int
    t_trigger_ns: int
    paw_xyz: tuple[float, float, float]
    paw_radius_mm: float
    pellet_xyz: tuple[float, float, float]
    pellet_present: bool
    platform_up: bool
    trial: int
    phase: str


class SimInput(Msg, tag="sim_input", frozen=True):
    """Simulation only: the synthetic world sets an input pin of the simulated Arduino (the IR sensor)."""

    pin: str
    level: bool
    t_host_ns: int


class Trigger(Msg, tag="trigger", frozen=True):
    """One camera trigger pulse; ``t_fw_us`` is the firmware's clock when it comes from the Arduino."""

    index: int
    t_host_ns: int
    t_fw_us: int = -1


class TaskEvent(Msg, tag="task", frozen=True):
    """Something that happened in the task: a state change, a trial boundary, an outcome, a mark."""

    kind: str
    trial: int
    t_host_ns: int
    state: str = ""
    outcome: str = ""
    detail: dict[str, Any] = msgspec.field(default_factory=dict)


class SerialEvent(Msg, tag="serial", frozen=True):
    """One event from the Arduino, numbered by the firmware (``fw_seq``) so gaps are provable."""

    fw_seq: int
    kind: str
    t_fw_us: int
    t_host_ns: int
    values: dict[str, Any] = msgspec.field(default_factory=dict)


class Command(Msg, tag="cmd", frozen=True):
    """A command for the Arduino, with the timestamps of the frame that caused it (if any)."""

    name: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    cause_trigger_index: int = -1
    cause_t_frame_ns: int = -1
    t_host_ns: int = 0


class Stats(Msg, tag="stats", frozen=True):
    """Once a second from every node. Latencies are milliseconds; counters are since start."""

    node: str
    t_host_ns: int
    fps: float = 0.0
    processed: int = 0
    drops: int = 0
    queue_depth: int = 0
    latency_p50_ms: float = float("nan")
    latency_p99_ms: float = float("nan")
    extra: dict[str, float] = msgspec.field(default_factory=dict)


class LogRecord(Msg, tag="log", frozen=True):
    node: str
    level: int
    logger: str
    message: str
    t_wall: float


class NodeStatus(Msg, tag="node", frozen=True):
    node: str
    status: Literal["ready", "eos", "exiting", "failed"]
    pid: int
    detail: str = ""


class Control(Msg, tag="ctl", frozen=True):
    command: Literal["start", "stop", "pause", "resume", "mark"]
    t_host_ns: int
    detail: str = ""


AnyMsg = (
    FrameHeader
    | Detections
    | Point3D
    | Truth
    | Trigger
    | SimInput
    | TaskEvent
    | SerialEvent
    | Command
    | Stats
    | LogRecord
    | NodeStatus
    | Control
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyMsg)


def encode(msg: Msg) -> bytes:
    return _encoder.encode(msg)


def decode(payload: bytes | memoryview, topic: str = "?") -> AnyMsg:
    """Decode a payload, refusing a different schema version with a clear message."""
    try:
        msg = _decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError, MemoryError, ValueError, TypeError) as exc:
        # hostile or corrupt bytes (e.g. deeply nested arrays: RecursionError) never end a node
        version = _peek_schema(payload)
        if version is not None and version != SCHEMA_VERSION:
            raise SchemaMismatch(
                f"message on topic {topic!r} has schema version {version}, this program speaks "
                f"{SCHEMA_VERSION}: upgrade the older side"
            ) from exc
        raise ProtocolError(f"undecodable message on topic {topic!r}: {exc}") from exc
    if msg.schema != SCHEMA_VERSION:
        raise SchemaMismatch(
            f"message on topic {topic!r} has schema version {msg.schema}, this program speaks "
            f"{SCHEMA_VERSION}: upgrade the older side"
        )
    return msg


def _peek_schema(payload: bytes | memoryview) -> int | None:
    try:
        raw = msgspec.msgpack.decode(payload)
    except (msgspec.DecodeError, RecursionError, MemoryError, ValueError, TypeError):
        return None
    if isinstance(raw, dict) and isinstance(raw.get("schema"), int):
        return int(raw["schema"])
    return None


def to_builtins(msg: Msg) -> dict[str, Any]:
    """A JSON-ready dict of a message (for logs and tables)."""
    out = msgspec.to_builtins(msg)
    assert isinstance(out, dict)
    return out
