"""One validated configuration for a session.

A config file has separate sections for the rig's wiring (``rig``: cameras by name, trigger,
calibration, serial port) and the experiment (``experiment``: task parameters), plus the
processing ``pipeline``, the optional ``simulation`` (synthetic mouse) and ``session`` output.
``rig`` may be given inline or as a path to a separate rig file, so one wiring file serves many
experiments.

Everything is validated before any process starts. Unknown keys are refused; an error names the
file, the key path and what was expected, e.g.::

    configs/x.yaml: pipeline.detector.runer: unknown key (did you mean 'runner'?)
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from analysis.textfile import read_yaml
from analysis.tracking import TrackerSettings
from detection.settings import DetectorOptions, DetectorSettings
from rig.config_base import CameraOptions, Strict
from rig.errors import ConfigError

__all__ = ["CameraOptions", "Config", "DetectorOptions", "LoadedConfig", "Strict", "load_config"]

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "sim-reaching.yaml"

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


# ----------------------------------------------------------------------------- rig wiring
class TriggerConfig(Strict):
    """Where camera triggers come from: the host clock (simulation only) or the Arduino."""

    source: Literal["internal", "firmware"] = "internal"
    rate_hz: float = Field(124.0, gt=0, le=1000)


class CameraConfig(Strict):
    backend: Literal["synthetic", "replay", "spinnaker", "genicam", "aravis", "basler", "opencv"]
    serial: str | None = None
    width: int = Field(448, gt=0, le=8192)
    height: int = Field(460, gt=0, le=8192)
    pixel_format: Literal["Mono8"] = "Mono8"
    exposure_us: float = Field(2000.0, gt=0)
    gain_db: float = Field(0.0, ge=0)
    hardware_trigger: bool = True
    ring_slots: int = Field(256, ge=4, le=4096, description="frames kept in shared memory (~2 s at 124 Hz)")
    grab_timeout_ms: float = Field(1000.0, gt=0)
    options: SerializeAsAny[CameraOptions] = Field(
        default_factory=CameraOptions,
        description="the backend's own settings: the options model in the backend's module (rig/cameras/)",
    )

    @field_validator("options", mode="before")
    @classmethod
    def _backend_options(cls, value: Any, info: ValidationInfo) -> Any:
        """Validate ``options`` against the model of this camera's ``backend`` (unknown keys refused)."""
        backend = info.data.get("backend")
        if backend is None:  # the backend itself is invalid: that error is enough
            return CameraOptions()
        from rig.cameras.base import backend_options_model  # the backends import this module: import late

        model = backend_options_model(backend)
        if isinstance(value, model):
            return value
        if isinstance(value, BaseModel):
            value = value.model_dump()
        return model.model_validate({} if value is None else value)


# The firmware's fixed wiring (firmware/PROTOCOL.md). The config states it so a rig file documents the
# cabling; a different value is refused (rebuild the firmware to change a pin).
FIRMWARE_PINS = {
    "ir": 2,
    "step": 3,
    "dir": 4,
    "servo": 5,
    "ttl": 6,
    "sync": 7,
    "trigger": 9,
    "frame_clock": 8,
    "loopback": 12,
    "rsync": 14,
}


class ArduinoPins(Strict):
    ir: int = 2
    step: int = 3
    dir: int = 4
    servo: int = 5
    ttl: int = 6
    sync: int = 7
    trigger: int = 9
    frame_clock: int = 8
    loopback: int = 12
    rsync: int = 14  # A0

    @model_validator(mode="after")
    def _match_firmware(self) -> ArduinoPins:
        for name, pin in FIRMWARE_PINS.items():
            if getattr(self, name) != pin:
                raise ValueError(
                    f"pins.{name}={getattr(self, name)}: the firmware drives {name} on D{pin} "
                    "(firmware/PROTOCOL.md); rewire or change the firmware"
                )
        return self


class ServoConfig(Strict):
    up_us: int = Field(1000, ge=400, le=2600, description="pulse width with the platform raised")
    down_us: int = Field(2000, ge=400, le=2600, description="pulse width with the platform lowered")
    speed_us_per_s: int = Field(2000, ge=0, le=65535, description="0 = jump")


class StepperConfig(Strict):
    steps_per_pellet: int = Field(50, ge=1, le=6000)
    step_rate_hz: int = Field(500, ge=1, le=5000)


class TtlConfig(Strict):
    closed_loop_width_us: int = Field(1000, ge=1, le=60000)
    sync: Literal["level", "trigger"] = Field(
        "level", description="level: trial start/stop level and marks; trigger: pulse every sync_div-th frame"
    )
    sync_div: int = Field(1, ge=1, le=65535)
    mark_width_us: int = Field(1000, ge=1, le=60000)


class RsyncConfig(Strict):
    """The pseudo-random sync output (A0, firmware/PROTOCOL.md): pulses at intervals drawn uniformly from
    ``min_ms .. max_ms``, each one's firmware time recorded (``sync_pulses.csv``), for ``deepbehavior
    align``."""

    enabled: bool = False
    min_ms: int = Field(500, ge=2, le=65535, description="shortest interval, rising edge to rising edge")
    max_ms: int = Field(1500, ge=2, le=65535, description="longest interval")
    width_ms: int = Field(50, ge=1, le=65534, description="pulse width (under min_ms)")
    seed: int = Field(0, ge=0, le=65535, description="0 = a different sequence every time")

    @model_validator(mode="after")
    def _range(self) -> RsyncConfig:
        if self.max_ms < self.min_ms:
            raise ValueError(f"max_ms={self.max_ms} must be >= min_ms={self.min_ms}")
        if self.width_ms >= self.min_ms:
            raise ValueError(f"width_ms={self.width_ms} must be under min_ms={self.min_ms}")
        return self


class ImagingClockSimConfig(Strict):
    """Simulation only: the simavr harness drives D8 with an imaging system's frame clock."""

    rate_hz: float = Field(30.0, gt=0, le=5000, description="frames per second on the imaging clock")
    jitter_us: float = Field(20.0, ge=0, le=100_000, description="uniform +- jitter of each edge")
    drift_ppm: float = Field(
        0.0, ge=-10_000, le=10_000, description="imaging clock slower (+) than the AVR's"
    )
    drop_permille: int = Field(0, ge=0, le=1000, description="frames whose pulse is missing, per 1000")
    seed: int = Field(1, ge=0, le=2**32 - 1)
    width_us: float = Field(1000.0, gt=0, le=1_000_000)

    def harness_command(self) -> str:
        """The simavr harness's ``imaging`` line (firmware/sim/rig_sim.c)."""
        return (
            f"imaging {self.rate_hz:.9g} {self.jitter_us:.9g} {self.drift_ppm:.9g} {self.drop_permille} "
            f"{self.seed} {self.width_us:.9g}"
        )


class SimulatorConfig(Strict):
    realtime: bool = True
    edges: bool = Field(
        True,
        description="publish each trigger edge as the harness sees it; false = like a real board: the "
        "trigger record comes from the firmware's TRIGGER reports (rig.arduino.trigger_report_every)",
    )
    elf: str | None = Field(None, description="firmware ELF (default firmware/build/rig_firmware.elf)")
    imaging_clock: ImagingClockSimConfig | None = Field(
        None,
        description="drive the frame-clock input (D8) with a simulated imaging clock (needs frame_clock)",
    )


class ArduinoConfig(Strict):
    """How the rig's Arduino is reached and what its peripherals do."""

    backend: Literal["simulator", "serial"] = "simulator"
    port: str | None = Field(None, description="device path, e.g. /dev/ttyACM0 (serial backend)")
    serial_number: str | None = Field(None, description="USB serial number instead of a path")
    baud: int = Field(1_000_000, gt=0)
    watchdog_ms: int = Field(1000, ge=0, le=65535, description="host silence -> safe state; 0 = off")
    ping_interval_s: float = Field(0.2, gt=0)
    ack_timeout_s: float = Field(1.0, gt=0)
    ir_debounce_ms: int = Field(5, ge=0, le=1000)
    redelivery: bool = False
    redelivery_delay_ms: int = Field(500, ge=0, le=65535)
    trigger_report_every: int = Field(1, ge=0, le=65535, description="TRIGGER event every N pulses")
    rsync: RsyncConfig = RsyncConfig()
    frame_clock: bool = Field(
        False, description="record the imaging system's frame clock wired to D8 (imaging_frames.csv)"
    )
    loopback: bool = Field(
        False, description="a jumper wires the closed-loop TTL (D6) back to D12: rig check times it"
    )
    pins: ArduinoPins = ArduinoPins()
    servo: ServoConfig = ServoConfig()
    stepper: StepperConfig = StepperConfig()
    ttl: TtlConfig = TtlConfig()
    simulator: SimulatorConfig = SimulatorConfig()

    @model_validator(mode="after")
    def _port(self) -> ArduinoConfig:
        if self.backend == "serial" and not (self.port or self.serial_number):
            raise ValueError("backend 'serial' needs 'port' or 'serial_number'")
        if self.watchdog_ms and self.ping_interval_s * 1000 >= self.watchdog_ms / 2:
            raise ValueError(
                f"ping_interval_s={self.ping_interval_s:g} must be under half of "
                f"watchdog_ms={self.watchdog_ms}"
            )
        if self.simulator.imaging_clock is not None and not self.frame_clock:
            raise ValueError(
                "simulator.imaging_clock drives the frame-clock input: it needs frame_clock: true"
            )
        return self

    def rsync_command(self) -> dict[str, int]:
        """The RSYNC command's fields (``min_ms`` 0 = off)."""
        r = self.rsync
        if not r.enabled:
            return {"min_ms": 0, "max_ms": 0, "width_ms": 0, "seed": 0}
        return {"min_ms": r.min_ms, "max_ms": r.max_ms, "width_ms": r.width_ms, "seed": r.seed}

    def inputs_command(self) -> dict[str, int]:
        """The INPUTS command's fields."""
        return {"frame_clock": int(self.frame_clock), "loopback": int(self.loopback)}

    def firmware_config(self) -> dict[str, int]:
        """The CONFIG command's fields (rig.protocol.CMD_BODY[Cmd.CONFIG])."""
        return {
            "servo_up_us": self.servo.up_us,
            "servo_down_us": self.servo.down_us,
            "servo_speed_us_per_s": self.servo.speed_us_per_s,
            "steps_per_pellet": self.stepper.steps_per_pellet,
            "step_rate_hz": self.stepper.step_rate_hz,
            "ttl_width_us": self.ttl.closed_loop_width_us,
            "sync_div": self.ttl.sync_div if self.ttl.sync == "trigger" else 0,
            "debounce_ms": self.ir_debounce_ms,
            "redelivery_delay_ms": self.redelivery_delay_ms,
        }


class RigConfig(Strict):
    name: str = "rig"
    cameras: dict[str, CameraConfig]
    calibration: str = Field(
        description="calibration file (path relative to the config file) or 'builtin:synthetic'"
    )
    trigger: TriggerConfig = TriggerConfig()
    arduino: ArduinoConfig | None = Field(None, description="the rig's Arduino (or its simulator)")

    @field_validator("cameras")
    @classmethod
    def _camera_names(cls, cams: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
        if not cams:
            raise ValueError("at least one camera is needed")
        for name in cams:
            if not _NAME.match(name):
                raise ValueError(f"camera name {name!r} must be lower-case letters, digits and '_'")
        return cams


# ----------------------------------------------------------------------------- experiment
Vec3 = tuple[float, float, float]


class ReachingTaskConfig(Strict):
    """Reaching task parameters (times in seconds, positions in the calibration's world frame, mm)."""

    n_trials: int | None = Field(10, ge=1)
    max_duration_s: float = Field(600.0, gt=0)
    iti_s: float = Field(2.0, ge=0, description="inter-trial interval")
    dispense_timeout_s: float = Field(3.0, gt=0)
    platform_timeout_s: float = Field(3.0, gt=0)
    pellet_check: bool = Field(True, description="require the IR sensor to see the pellet before raising")
    response_window_s: float = Field(5.0, gt=0, description="wait for reach + pellet removal")
    settle_s: float = Field(0.3, ge=0, description="after removal: let the paw finish before lowering")
    pellet_xyz_mm: Vec3 = (0.0, 0.0, 0.0)
    reach_radius_mm: float = Field(12.0, gt=0, description="paw this close to the pellet = a reach")
    grasp_radius_mm: float = Field(4.0, gt=0, description="paw this close when the pellet vanishes = taken")
    grasp_window_s: float = Field(
        0.15, ge=0, description="how long before/after removal the paw may be close"
    )
    lower_after_fail: bool = True


class ExperimentConfig(Strict):
    task: Literal["reaching", "none"] = Field(
        "reaching",
        description="'reaching': the reaching task runs the pellet apparatus trial by trial (needs "
        "rig.arduino); 'none': no trials, the session records (and detects) until max_duration_s or Ctrl-C, "
        "the Arduino (if any) only makes the camera trigger and the sync output",
    )
    subject: str = "sim-mouse-01"
    n_trials: int | None = Field(10, ge=1)
    max_duration_s: float = Field(600.0, gt=0)
    notes: str = ""
    reaching: ReachingTaskConfig = Field(
        default_factory=ReachingTaskConfig,
        description="reaching task parameters (its n_trials / max_duration_s are taken from experiment)",
    )


# ----------------------------------------------------------------------------- pipeline
class DetectorConfig(DetectorSettings):
    """``pipeline.detector``: the detector's own settings (:class:`detection.settings.DetectorSettings`:
    runner, model, confidence, options) and how the rig runs it online."""

    enabled: bool = True
    oracle_noise_px: float = Field(0.5, ge=0)
    max_lag_ms: float = Field(
        150.0,
        ge=0,
        description="frames older than this when their turn comes are not detected online (counted as "
        "skipped_late; recorded all the same, `reanalyze --detect` covers them): an overloaded machine "
        "catches up instead of drifting ever later. 0 = detect every frame however late",
    )
    recorder_behind_s: float | None = Field(
        1.0,
        gt=0,
        description="the recording comes first: while the recorder is this many seconds of frames behind "
        "(encoder backlog, or frames leaving the rings late), detect only every other stereo set (one in 4 "
        "from twice that, one in 8 from three times; counted as shed_for_recording; recorded all the same), "
        "until it is back under a quarter of it. null = never step back",
    )

    @model_validator(mode="after")
    def _model_needed(self) -> DetectorConfig:
        if self.runner != "oracle" and not self.model:
            raise ValueError(f"runner {self.runner!r} needs a 'model' file")
        return self


class TriangulatorConfig(TrackerSettings):
    """``pipeline.triangulator``: the tracker's settings (:class:`analysis.tracking.TrackerSettings`) and
    how the rig runs it online."""

    enabled: bool = True
    point_name: str = "paw"
    pair_timeout_ms: float = Field(
        50.0,
        gt=0,
        description="how long a stereo set waits for a missing camera's frame before it runs without it "
        "(later sets wait behind it: sets run in trigger order)",
    )


class RecorderConfig(Strict):
    enabled: bool = True
    codec: Literal["libx264", "ffv1", "h264_nvenc"] = "libx264"
    lossless: bool = Field(
        False,
        description="bit-exact video (libx264 qp 0 / ffv1); measured at 1280x1024: libx264 lossless ~1.1x "
        "the CPU of the default, ffv1 ~1.9x, and 3x the disk (docs/SIZING.md)",
    )
    crf: int = Field(
        12, ge=0, le=51, description="libx264 quality when not lossless (12: error < sensor noise)"
    )
    preset: str = "ultrafast"
    threads: int = Field(1, ge=0, le=16)
    encoder_priority: Literal["background", "normal"] = Field(
        "background",
        description="'background': each camera's encoder thread runs at the idle scheduling priority "
        "(Linux SCHED_IDLE) while it is less than a quarter of buffer_s (1 s at most) behind, so encoding "
        "never delays detection, and at normal priority while it is further behind, so the recording "
        "never loses frames to detection on an overloaded machine. 'normal': always normal priority. "
        "Frames leave the rings on a drain thread at pipeline.realtime.priority either way",
    )
    buffer_s: float = Field(
        10.0,
        gt=0,
        le=120,
        description="seconds of frames held in RAM per camera while the encoder catches up (~255 MB per "
        "camera at 448x460 and 124 Hz); checked against free memory at start",
    )
    record_truth: bool = True


class BridgeConfig(Strict):
    enabled: bool = False
    bind: str = Field("tcp://127.0.0.1:0", description="tcp://0.0.0.0:0 to serve other machines")
    downscale: int = Field(1, ge=1, le=8)
    max_fps: float = Field(60.0, ge=0, description="frames/s per camera sent on; 0 = every frame")


class DisplayConfig(Strict):
    enabled: bool = False
    rate_hz: float = Field(40.0, gt=0, le=240, description="window refresh rate")
    trail_s: float = Field(5.0, gt=0, description="seconds of 3-D paw trace shown")


# the reaching task's states (rig/task.py), which a closed-loop rule may be gated on
TASK_STATES = ("dispense", "raise", "wait_response", "settle", "lower", "iti", "paused", "done")
ZONE_TRIGGERS = ("zone_enter", "zone_exit", "reach_onset", "reach_offset", "dwell")
SPEED_TRIGGERS = ("speed_above", "speed_below")


class ZoneConfig(Strict):
    """A region of the calibration's world frame (mm): a sphere (``radius_mm``) or an axis-aligned box
    (``size_mm``: its edge lengths along x, y, z), centred on ``center_mm``."""

    shape: Literal["sphere", "box"] = "sphere"
    center_mm: Vec3 = (0.0, 0.0, 0.0)
    radius_mm: float | None = Field(None, gt=0, description="sphere only")
    size_mm: Vec3 | None = Field(None, description="box only: edge lengths along x, y, z (mm)")

    @model_validator(mode="after")
    def _shape_fields(self) -> ZoneConfig:
        if self.shape == "sphere" and (self.radius_mm is None or self.size_mm is not None):
            raise ValueError("a sphere zone takes 'radius_mm' (and no 'size_mm')")
        if self.shape == "box" and (self.size_mm is None or self.radius_mm is not None):
            raise ValueError("a box zone takes 'size_mm' [x, y, z] (and no 'radius_mm')")
        if self.size_mm is not None and not min(self.size_mm) > 0:
            raise ValueError(f"size_mm={list(self.size_mm)}: every edge must be > 0")
        return self


class RuleOutputConfig(Strict):
    """What a rule does when it fires: ``ttl_pulse`` (closed-loop TTL, D6), ``ttl_train`` (``count``
    pulses ``period_ms`` apart), ``sync_mark`` (a mark on the sync line, D7) or ``task_event`` (a
    ``task.event`` named ``event`` in events.jsonl, no pin)."""

    kind: Literal["ttl_pulse", "ttl_train", "sync_mark", "task_event"]
    width_us: int = Field(
        0, ge=0, le=60000, description="pulse width; 0 = the Arduino's width (ttl) or 1000 us (mark)"
    )
    count: int = Field(1, ge=1, le=1000, description="ttl_train: pulses in the train")
    period_ms: float = Field(0.0, ge=0, le=60000, description="ttl_train: pulse start to pulse start")
    delay_ms: float = Field(
        0.0, ge=0, le=60000, description="send the (first) command this long after the rule fired"
    )
    event: str = Field("", description="task_event: the event's kind (default: the rule's name)")

    @model_validator(mode="after")
    def _train(self) -> RuleOutputConfig:
        if self.kind == "ttl_train":
            if self.count < 2 or self.period_ms <= 0:
                raise ValueError("a ttl_train needs count >= 2 and period_ms > 0")
            if self.width_us and self.width_us >= self.period_ms * 1000:
                raise ValueError(f"width_us={self.width_us} must be under period_ms={self.period_ms:g}")
        elif self.count != 1 or self.period_ms:
            raise ValueError(f"count and period_ms are for a ttl_train, not a {self.kind}")
        if self.event and self.kind != "task_event":
            raise ValueError(f"'event' names a task_event, not a {self.kind}")
        return self


class RuleConfig(Strict):
    """One closed-loop rule (``pipeline.closed_loop.rules.<name>``): when the paw does ``when``, do
    ``output``. ``zone_enter``/``zone_exit``: the paw crosses into / out of ``zone``; ``reach_onset`` /
    ``reach_offset``: the paw leaves / comes back into ``zone`` (its rest); ``dwell``: the paw has been
    in ``zone`` for ``dwell_s``; ``speed_above``/``speed_below``: its speed crosses ``speed_mm_s``."""

    when: Literal[
        "zone_enter", "zone_exit", "reach_onset", "reach_offset", "dwell", "speed_above", "speed_below"
    ]
    output: RuleOutputConfig
    zone: ZoneConfig | None = None
    speed_mm_s: float | None = Field(None, gt=0)
    dwell_s: float | None = Field(None, gt=0)
    hysteresis: float = Field(
        0.0,
        ge=0,
        description="zones: the paw is out again only beyond the boundary grown by this (mm); speed: "
        "below speed_mm_s minus this (mm/s)",
    )
    refractory_s: float = Field(0.0, ge=0, description="no second firing of this rule within this time")
    states: tuple[str, ...] = Field(
        (), description="the task states in which the rule may fire (e.g. [wait_response]); empty = any"
    )
    position: Literal["filtered", "raw", "predicted"] = Field(
        "filtered",
        description="filtered / raw 3-D, or 'predicted': where the paw will be when the command reaches "
        "the pin (pipeline.closed_loop.prediction)",
    )
    lead_ms: float | None = Field(
        None, ge=-1000, le=1000, description="position predicted: this rule's lead (null: prediction.lead_ms)"
    )

    @model_validator(mode="after")
    def _fields_of_when(self) -> RuleConfig:
        zone_kind = self.when in ZONE_TRIGGERS
        if zone_kind and self.zone is None:
            raise ValueError(f"'{self.when}' needs a 'zone'")
        if not zone_kind and self.zone is not None:
            raise ValueError(f"'zone' is for zone rules, not '{self.when}'")
        if (self.when in SPEED_TRIGGERS) != (self.speed_mm_s is not None):
            raise ValueError("'speed_mm_s' is needed by speed_above / speed_below, and only by them")
        if (self.when == "dwell") != (self.dwell_s is not None):
            raise ValueError("'dwell_s' is needed by dwell, and only by it")
        if self.lead_ms is not None and self.position != "predicted":
            raise ValueError("'lead_ms' is for a rule on the predicted position")
        for s in self.states:
            if s not in TASK_STATES:
                hint = difflib.get_close_matches(s, TASK_STATES, n=1)
                raise ValueError(
                    f"states: no task state {s!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; states: {', '.join(TASK_STATES)}"
                )
        return self


class PredictionConfig(Strict):
    """``position: predicted``: the rule acts on the filter's forward prediction (constant velocity,
    ``pipeline.triangulator.predict_ms`` > 0) extrapolated to when its command will reach the pin:
    ``latency_ms`` (trigger -> pin) + ``lead_ms`` after the observation's trigger. A zone crossing
    predicted between that and the next frame's horizon is sent at the predicted moment."""

    latency_ms: float | None = Field(
        None,
        ge=0,
        le=1000,
        description="trigger -> pin latency to cancel; null = measured online (median of the last 16 "
        "closed-loop commands' trigger -> pin times), initial_latency_ms until the first",
    )
    initial_latency_ms: float = Field(7.0, ge=0, le=1000)
    lead_ms: float = Field(0.0, ge=-1000, le=1000, description="added to the prediction horizon")
    anticipate: bool = Field(
        True,
        description="zone rules: a crossing predicted before the next frame's decision is sent at the "
        "predicted moment (host-timed) instead of one frame late",
    )


class ClosedLoopConfig(Strict):
    """Pure rules: 3-D paw observations -> firmware commands (rig/closed_loop.py).

    Without ``rules``, two built-in rules: the paw entering the sphere ``zone_center_mm`` /
    ``zone_radius_mm`` -> closed-loop TTL pulse (``ttl_width_us``, ``refractory_s``); the paw leaving
    the rest sphere (``rest_xyz_mm`` / ``rest_radius_mm``) -> sync mark (``sync_mark_on_reach``).
    ``rules`` (name -> rule) replaces them with the lab's own."""

    enabled: bool = False
    point: str = "paw"
    zone_center_mm: Vec3 = (0.0, 0.0, 0.0)
    zone_radius_mm: float = Field(6.0, gt=0)
    ttl_width_us: int = Field(0, ge=0, le=60000, description="0 = the Arduino's configured width")
    refractory_s: float = Field(0.5, ge=0, description="no second zone pulse within this time")
    rest_radius_mm: float = Field(12.0, gt=0, description="reach onset: paw leaves this sphere around rest")
    rest_xyz_mm: Vec3 = (2.0, -22.0, -14.0)
    sync_mark_on_reach: bool = True
    mark_width_us: int = Field(1000, ge=1, le=60000)
    use_filtered: bool = True
    predict: bool = Field(False, description="the built-in rules act on the predicted position")
    prediction: PredictionConfig = PredictionConfig()
    rules: dict[str, RuleConfig] = Field(
        default_factory=dict, description="the lab's rules by name; replace the built-in zone/reach rules"
    )

    @field_validator("rules")
    @classmethod
    def _rule_names(cls, rules: dict[str, RuleConfig]) -> dict[str, RuleConfig]:
        for name in rules:
            if not _NAME.match(name):
                raise ValueError(f"rule name {name!r} must be lower-case letters, digits and '_'")
        return rules

    def active_rules(self) -> dict[str, RuleConfig]:
        """The rules that run: ``rules``, or the built-in zone and reach rules."""
        if self.rules:
            return dict(self.rules)
        pos: Literal["filtered", "raw", "predicted"] = (
            "predicted" if self.predict else "filtered" if self.use_filtered else "raw"
        )
        out = {
            "zone": RuleConfig(
                when="zone_enter",
                zone=ZoneConfig(center_mm=self.zone_center_mm, radius_mm=self.zone_radius_mm),
                refractory_s=self.refractory_s,
                position=pos,
                output=RuleOutputConfig(kind="ttl_pulse", width_us=self.ttl_width_us),
            )
        }
        if self.sync_mark_on_reach:
            out["reach"] = RuleConfig(
                when="reach_onset",
                zone=ZoneConfig(center_mm=self.rest_xyz_mm, radius_mm=self.rest_radius_mm),
                position=pos,
                output=RuleOutputConfig(kind="sync_mark", width_us=self.mark_width_us),
            )
        return out

    @property
    def uses_prediction(self) -> bool:
        return any(r.position == "predicted" for r in self.active_rules().values())


# nodes pipeline.realtime may name, besides cam-<camera>
REALTIME_NODE_NAMES = ("cameras", "world", "arduino", "task", "detector", "bridge", "display")


class RealtimeConfig(Strict):
    """Linux real-time scheduling (SCHED_FIFO) for the nodes on the trigger -> frame -> 3-D -> TTL path, so
    a frame never waits behind encoding or drawing. Needs root, CAP_SYS_NICE or an ``rtprio`` limit
    (README, "Real-time priority"); without it each node says so once and runs at normal priority. The
    recorder is never on this list: it buffers (``recorder.buffer_s``) and catches up."""

    priority: int = Field(
        10, ge=0, le=98, description="SCHED_FIFO priority of the listed nodes; 0 = normal scheduling for all"
    )
    nodes: tuple[str, ...] = Field(
        ("cameras", "detector", "world", "arduino", "task"),
        description="node names: cameras (every camera node) or cam-<camera>, detector, world, arduino, "
        "task, display, bridge; names of nodes a session does not run are ignored",
    )


class PipelineConfig(Strict):
    detector: DetectorConfig = DetectorConfig()
    triangulator: TriangulatorConfig = TriangulatorConfig()
    recorder: RecorderConfig = RecorderConfig()
    bridge: BridgeConfig = BridgeConfig()
    display: DisplayConfig = DisplayConfig()
    closed_loop: ClosedLoopConfig = ClosedLoopConfig()
    realtime: RealtimeConfig = RealtimeConfig()
    stats_period_s: float = Field(1.0, gt=0)


# ----------------------------------------------------------------------------- simulation
class SimulationConfig(Strict):
    """The synthetic mouse and scene (used by the synthetic camera backend)."""

    seed: int = 1
    success_prob: float = Field(0.6, ge=0, le=1)
    miss_prob: float = Field(0.15, ge=0, le=1)
    reaches_per_trial_max: int = Field(3, ge=1)
    reach_latency_s: tuple[float, float] = (0.3, 1.2)
    reach_duration_s: tuple[float, float] = (0.18, 0.32)
    noise_sigma: float = Field(3.0, ge=0)
    trial_period_s: float = Field(3.0, gt=0, description="free-running trial period with no task")


class SessionConfig(Strict):
    output_dir: str = Field(
        "sessions", description="where session folders go (relative: to the current directory)"
    )
    name: str = Field(
        "{subject}_{date}_{time}",
        description="session folder name; fields {subject}, {date} (YYYYMMDD) and {time} (HHMMSS)",
    )

    @field_validator("name")
    @classmethod
    def _name_renders(cls, name: str) -> str:
        """Render with dummy values now, so a typo stops ``config`` and ``run`` before anything starts."""
        fields = ("subject", "date", "time")
        try:
            folder = name.format(subject="mouse", date="20260101", time="120000")
        except KeyError as exc:
            bad = str(exc.args[0])
            hint = difflib.get_close_matches(bad, fields, n=1)
            raise ValueError(
                f"unknown field {{{bad}}}"
                + (f" (did you mean {{{hint[0]}}}?)" if hint else "")
                + f"; fields: {', '.join('{' + f + '}' for f in fields)}"
            ) from None
        except (ValueError, IndexError, AttributeError) as exc:
            raise ValueError(
                f"not a valid name template ({exc}); fields: {{subject}}, {{date}}, {{time}}"
            ) from None
        if not folder.strip() or "/" in folder or folder in (".", ".."):
            raise ValueError(f"renders to {folder!r}: a session folder name must be one non-empty path part")
        return name


class Config(Strict):
    rig: RigConfig
    experiment: ExperimentConfig = ExperimentConfig()
    pipeline: PipelineConfig = PipelineConfig()
    simulation: SimulationConfig | None = None
    session: SessionConfig = SessionConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        rate = self.rig.trigger.rate_hz
        for name, cam in self.rig.cameras.items():
            if cam.hardware_trigger and cam.exposure_us >= 1e6 / rate:
                raise ValueError(
                    f"rig.cameras.{name}.exposure_us={cam.exposure_us:g} is not shorter than the "
                    f"trigger period {1e6 / rate:.0f} us at rig.trigger.rate_hz={rate:g}"
                )
        if self.rig.trigger.source == "firmware" and self.rig.arduino is None:
            raise ValueError("rig.trigger.source 'firmware' needs an 'arduino' section in rig")
        uses_synthetic = any(c.backend == "synthetic" for c in self.rig.cameras.values())
        if uses_synthetic and self.simulation is None:
            raise ValueError("synthetic cameras need a 'simulation' section")
        det = self.pipeline.detector
        n_cams = len(self.rig.cameras)
        if det.enabled and self.pipeline.triangulator.enabled and n_cams < 2:
            raise ValueError(
                f"pipeline.triangulator.enabled: 3-D needs two or more cameras, rig.cameras has {n_cams}: "
                "set pipeline.triangulator.enabled: false (the detector's boxes are recorded in 2-D)"
            )
        if self.pipeline.closed_loop.enabled and self.experiment.task == "none":
            raise ValueError(
                "pipeline.closed_loop.enabled: the closed-loop rule runs with the task; experiment.task "
                "'none' runs no task (set experiment.task: reaching, or closed_loop.enabled: false)"
            )
        tri, cl = self.pipeline.triangulator, self.pipeline.closed_loop
        if cl.enabled and cl.uses_prediction and (tri.filter != "kalman" or not tri.predict_ms > 0):
            raise ValueError(
                "pipeline.closed_loop: a rule acts on the predicted position, which needs "
                "pipeline.triangulator.filter: kalman and predict_ms > 0 (e.g. 8)"
            )
        if det.enabled and det.runner == "oracle" and not uses_synthetic:
            raise ValueError("pipeline.detector.runner 'oracle' only works with synthetic cameras")
        behind = det.recorder_behind_s
        buffer_s = self.pipeline.recorder.buffer_s
        if det.enabled and self.pipeline.recorder.enabled and behind is not None and 3 * behind >= buffer_s:
            raise ValueError(
                f"pipeline.detector.recorder_behind_s={behind:g}: three times it (where detection steps back "
                f"furthest) must be below pipeline.recorder.buffer_s={buffer_s:g}, or frames wait on disk "
                "(the spill) before detection steps back"
            )
        nodes = {*REALTIME_NODE_NAMES, *(f"cam-{c}" for c in self.rig.cameras)}
        for n in self.pipeline.realtime.nodes:
            replay = n.startswith("cam-") and getattr(self.rig.cameras.get(n[4:]), "backend", "") == "replay"
            if replay:
                raise ValueError(
                    f"pipeline.realtime.nodes: {n!r} replays a file (as fast as possible, if asked): it "
                    "must not run at real-time priority"
                )
            if n not in nodes:
                known = ", ".join(sorted(nodes))
                raise ValueError(f"pipeline.realtime.nodes: no node {n!r} (nodes: {known})")
        return self


class LoadedConfig(BaseModel):
    """A validated config plus where it came from (paths resolve against ``base_dir``)."""

    model_config = ConfigDict(frozen=True)
    config: Config
    source: str
    base_dir: Path
    raw: dict[str, Any]

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)


# ----------------------------------------------------------------------------- loading
def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml(path, "config file", ConfigError)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _model_at(loc: tuple[Any, ...], raw: dict[str, Any] | None = None) -> type[BaseModel] | None:
    """The pydantic model that owns the field at ``loc`` (for 'did you mean' hints). A camera's
    ``options`` is owned by its backend's options model, found through the backend named in ``raw``."""
    model: Any = Config
    node: Any = raw
    key_next = False  # the previous field was a dict of models: this part is a key (a camera name)
    for part in loc[:-1]:
        if key_next:
            key_next = False
        elif isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(str(part))
            if field is None:
                return None
            ann = field.annotation
            args = getattr(ann, "__args__", ())
            if ann is CameraOptions:
                backend = node.get("backend") if isinstance(node, dict) else None
                try:
                    from rig.cameras.base import backend_options_model

                    model = backend_options_model(str(backend))
                except ConfigError:
                    return None
            elif isinstance(ann, type) and issubclass(ann, BaseModel):
                model = ann
            elif args and isinstance(args[-1], type) and issubclass(args[-1], BaseModel):
                model = args[-1]  # dict[str, Model] -> Model (next loc part is the key)
                key_next = len(args) == 2 and getattr(ann, "__origin__", None) is dict
            elif args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
                model = args[0]  # Model | None
            else:
                return None
        node = node.get(part) if isinstance(node, dict) else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _format_errors(exc: ValidationError, files: dict[str, str], raw: dict[str, Any] | None = None) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        source = files["rig"] if loc[:1] == ("rig",) and "rig" in files else files[""]
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            model = _model_at(loc, raw)
            known = sorted(model.model_fields) if model else []
            hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
            msg = "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            if known:
                msg += f"; expected one of: {', '.join(known)}"
            elif model is not None and issubclass(model, CameraOptions):
                cam = (raw or {}).get("rig", {}).get("cameras", {}).get(loc[2], {}) if len(loc) > 3 else {}
                msg += f"; the {cam.get('backend')!r} backend takes no options"
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if "input" in err and not isinstance(err["input"], dict | list):
                msg += f" (got {err['input']!r})"
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> LoadedConfig:
    """Read, merge and validate a config file (default: the embedded simulated rig)."""
    cfg_path = Path(path) if path is not None else DEFAULT_CONFIG
    raw = _read_yaml(cfg_path)
    files = {"": str(cfg_path)}
    if isinstance(raw.get("rig"), str):
        rig_path = (cfg_path.parent / raw["rig"]).resolve()
        raw["rig"] = _read_yaml(rig_path)
        files["rig"] = str(rig_path)
    if overrides:
        raw = deep_merge(raw, overrides)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, files, raw)) from None
    return LoadedConfig(config=config, source=str(cfg_path), base_dir=cfg_path.parent.resolve(), raw=raw)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` (value parsed as YAML) -> nested dict; used by ``--set``."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY.PATH=VALUE")
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, dict) and parsed and all(v is None for v in parsed.values()):
        parsed = value  # '{subject}_x' is a name template, not a YAML mapping of empty keys
    out: dict[str, Any] = {parts[-1]: parsed}
    for p in reversed(parts[:-1]):
        out = {p: out}
    return out
