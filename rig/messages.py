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

from typing import Any, ClassVar, Literal

import msgspec

from rig.errors import ProtocolError, SchemaMismatch

SCHEMA_VERSION = 2


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


class SerialEvent(Msg, frozen=True, kw_only=True):
    """One event from the Arduino (``serial.event``), numbered by the firmware (``fw_seq``) so gaps are
    provable. A base: every event is one of the subclasses below, one per firmware message of
    ``rig.protocol.EVENT_BODY`` (their fields are that table's names, in order; a unit test holds them
    to it), the ACK/NAK replies, and the link's own events (``fw_seq`` -1: a gap in the firmware's
    numbering, the port lost or back, a firmware restart). ``kind`` is the protocol's lower-case name.

    ``t_recv_ns`` is when the host read the frame (None for the link's own events); ``t_host_ns`` the
    event's time on the host clock (through the firmware clock map once it has samples). An optional
    field is None where it does not apply, and then left out of :attr:`values`.
    """

    kind: ClassVar[str] = ""
    fw_seq: int
    t_fw_us: int
    t_host_ns: int
    t_recv_ns: int | None = None

    @property
    def values(self) -> dict[str, Any]:
        """The kind's own fields (everything but the numbering and times), as ``events.jsonl`` stores them."""
        out = msgspec.to_builtins(self)
        assert isinstance(out, dict)
        return {k: v for k, v in out.items() if v is not None and k not in _SERIAL_COMMON}


_SERIAL_COMMON = frozenset({"type", "schema", "fw_seq", "t_fw_us", "t_host_ns"})


class BootEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.boot"):
    kind: ClassVar[str] = "boot"
    version: int
    reset_flags: int


class IrEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.ir"):
    """The IR sensor's debounced state changed (1: a pellet sits in the beam)."""

    kind: ClassVar[str] = "ir"
    pellet_present: int


class TriggerEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.trigger"):
    """Every ``report_every``-th camera trigger pulse (its rising edge)."""

    kind: ClassVar[str] = "trigger"
    index: int


class TriggerStoppedEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.trigger_stopped"):
    kind: ClassVar[str] = "trigger_stopped"
    count: int


class ServoDoneEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.servo_done"):
    kind: ClassVar[str] = "servo_done"
    position_us: int


class DispenseDoneEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.dispense_done"):
    kind: ClassVar[str] = "dispense_done"
    steps: int


class TtlFiredEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.ttl_fired"):
    """A TTL pulse went out; ``cmd_seq`` is the command's. The cause fields are the camera frame that
    caused it (when a closed-loop rule sent it) and ``latency_ns`` frame -> pin on the host clock."""

    kind: ClassVar[str] = "ttl_fired"
    width_us: int
    cmd_seq: int
    cause_trigger_index: int | None = None
    cause_t_frame_ns: int | None = None
    latency_ns: int | None = None


class WatchdogEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.watchdog"):
    kind: ClassVar[str] = "watchdog"


class RedeliveryEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.redelivery"):
    kind: ClassVar[str] = "redelivery"
    phase: int


class SyncEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.sync"):
    kind: ClassVar[str] = "sync"
    level: int


class RsyncEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.rsync"):
    kind: ClassVar[str] = "rsync"
    index: int


class FrameClockEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.frame_clock"):
    kind: ClassVar[str] = "frame_clock"
    count: int


class LoopbackEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.loopback"):
    kind: ClassVar[str] = "loopback"
    level: int
    count: int


class _Reply(SerialEvent, frozen=True, kw_only=True):
    """Fields common to ACK and NAK: the command answered, its round trip and the frame that caused it."""

    cmd: int
    cmd_seq: int
    cmd_name: str = ""
    rtt_ns: int | None = None
    cause_trigger_index: int | None = None
    cause_t_frame_ns: int | None = None


class AckEvent(_Reply, frozen=True, kw_only=True, tag="serial.ack"):
    """``data``: the reply's fields for the commands whose ACK carries data (``rig.protocol.ACK_DATA``);
    ``data_hex`` the bytes of a reply whose layout this program does not know."""

    kind: ClassVar[str] = "ack"
    data: dict[str, int] = msgspec.field(default_factory=dict)
    data_hex: str | None = None

    @property
    def values(self) -> dict[str, Any]:
        out = super().values
        out.update(out.pop("data", {}))
        if "data_hex" in out:
            out["data"] = out.pop("data_hex")
        return out


class NakEvent(_Reply, frozen=True, kw_only=True, tag="serial.nak"):
    kind: ClassVar[str] = "nak"
    code: int = 0
    reason: str = ""
    firmware_version: int | None = None


class UnknownEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.unknown"):
    """A well-formed frame of a type this program does not know (a newer firmware): its body in hex."""

    kind: ClassVar[str] = "unknown"
    type_code: int
    body: str


class GapEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.gap"):
    """The link's own: ``lost`` firmware frames never arrived (``expected`` .. ``got`` - 1)."""

    kind: ClassVar[str] = "gap"
    lost: int
    expected: int
    got: int


class DisconnectedEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.disconnected"):
    kind: ClassVar[str] = "disconnected"
    reason: str


class ReconnectedEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.reconnected"):
    kind: ClassVar[str] = "reconnected"
    port: str


class AckTimeoutEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.ack_timeout"):
    """The link's own: command ``cmd`` (its lower-case name) got neither ACK nor NAK in time."""

    kind: ClassVar[str] = "ack_timeout"
    cmd: str
    cmd_seq: int


class RebootEvent(SerialEvent, frozen=True, kw_only=True, tag="serial.reboot"):
    """The firmware restarted mid-session (its numbering and clock begin again)."""

    kind: ClassVar[str] = "reboot"
    version: int


AnySerialEvent = (
    BootEvent
    | IrEvent
    | TriggerEvent
    | TriggerStoppedEvent
    | ServoDoneEvent
    | DispenseDoneEvent
    | TtlFiredEvent
    | WatchdogEvent
    | RedeliveryEvent
    | SyncEvent
    | RsyncEvent
    | FrameClockEvent
    | LoopbackEvent
    | AckEvent
    | NakEvent
    | UnknownEvent
    | GapEvent
    | DisconnectedEvent
    | ReconnectedEvent
    | AckTimeoutEvent
    | RebootEvent
)
SERIAL_EVENTS: dict[str, type[SerialEvent]] = {c.kind: c for c in AnySerialEvent.__args__}


class Command(Msg, frozen=True, kw_only=True):
    """A command for the Arduino (``cmd.arduino``), with the timestamps of the frame that caused it (if
    any). A base: each command a task, a rule or a client may send is a subclass named after
    ``rig.protocol.Cmd`` with that command's body fields (``rig.protocol.CMD_BODY``, held to it by a unit
    test). The session set-up commands (HELLO, CONFIG, TRIGGER_START, ...) are the Arduino node's own and
    never travel on the bus."""

    name: ClassVar[str] = ""
    cause_trigger_index: int = -1
    cause_t_frame_ns: int = -1
    t_host_ns: int = 0

    @property
    def args(self) -> dict[str, int]:
        """The command's body fields, for ``rig.protocol.encode_command``."""
        return {f: int(getattr(self, f)) for f in self.__struct_fields__ if f not in _COMMAND_COMMON}


_COMMAND_COMMON = frozenset({"schema", "cause_trigger_index", "cause_t_frame_ns", "t_host_ns"})


class PlatformCmd(Command, frozen=True, kw_only=True, tag="cmd.platform"):
    name: ClassVar[str] = "platform"
    up: int


class ServoUsCmd(Command, frozen=True, kw_only=True, tag="cmd.servo_us"):
    name: ClassVar[str] = "servo_us"
    target_us: int


class DispenseCmd(Command, frozen=True, kw_only=True, tag="cmd.dispense"):
    name: ClassVar[str] = "dispense"
    pellets: int


class TtlPulseCmd(Command, frozen=True, kw_only=True, tag="cmd.ttl_pulse"):
    name: ClassVar[str] = "ttl_pulse"
    width_us: int


class SyncLevelCmd(Command, frozen=True, kw_only=True, tag="cmd.sync_level"):
    name: ClassVar[str] = "sync_level"
    level: int


class SyncPulseCmd(Command, frozen=True, kw_only=True, tag="cmd.sync_pulse"):
    name: ClassVar[str] = "sync_pulse"
    width_us: int


class RedeliveryCmd(Command, frozen=True, kw_only=True, tag="cmd.redelivery"):
    name: ClassVar[str] = "redelivery"
    enable: int


AnyCommand = (
    PlatformCmd | ServoUsCmd | DispenseCmd | TtlPulseCmd | SyncLevelCmd | SyncPulseCmd | RedeliveryCmd
)
COMMANDS: dict[str, type[Command]] = {c.name: c for c in AnyCommand.__args__}


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
    | AnySerialEvent
    | AnyCommand
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
