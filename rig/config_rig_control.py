"""Config models for the Arduino, the reaching task and the closed-loop rule (proposed for rig.config).

The lead hooks these into :mod:`rig.config`: ``RigConfig.arduino: ArduinoConfig | None`` (wiring),
``ExperimentConfig.reaching: ReachingTaskConfig`` (task parameters) and
``PipelineConfig.closed_loop: ClosedLoopConfig`` (rule). Wiring stays out of the task.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rig.config_base import Strict

# The firmware's fixed wiring (firmware/PROTOCOL.md). The config states it so a rig file documents the
# cabling; a different value is refused (rebuild the firmware to change a pin).
FIRMWARE_PINS = {"ir": 2, "step": 3, "dir": 4, "servo": 5, "ttl": 6, "sync": 7, "trigger": 9}


class ArduinoPins(Strict):
    ir: int = 2
    step: int = 3
    dir: int = 4
    servo: int = 5
    ttl: int = 6
    sync: int = 7
    trigger: int = 9

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


class SimulatorConfig(Strict):
    realtime: bool = True
    elf: str | None = Field(None, description="firmware ELF (default firmware/build/rig_firmware.elf)")


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
        return self

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


class ClosedLoopConfig(Strict):
    """Pure rule: 3-D paw observations -> firmware commands."""

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
