"""GenICam standard features, set once for every SDK (Spinnaker, Harvesters/GenTL, Aravis, pylon).

Every GenICam camera exposes the same Standard Features Naming Convention (SFNC) names: ``PixelFormat``,
``Width``/``Height``/``OffsetX``/``OffsetY``, ``ExposureTime`` (µs), ``Gain`` (dB), ``TriggerSelector``/
``TriggerMode``/``TriggerSource``/``TriggerActivation``/``TriggerOverlap``, ``AcquisitionFrameRate``,
``ChunkModeActive``/``ChunkSelector``/``ChunkEnable``. Only the way a node is reached differs between SDKs,
so each backend supplies a small :class:`FeatureAccess` adapter and :func:`apply_camera_config` does the
rest, in the order the SFNC requires (trigger off before its source changes, offsets to 0 before the
size grows, ...). Every error names the camera and the feature.

The options these backends share are :class:`GenICamOptions` (``rig.cameras.<name>.options``; each
backend's own model adds its keys): ``trigger_source``, ``trigger_activation``, ``trigger_overlap``,
``trigger_rate_hz``, ``fps``, ``offset_x``/``offset_y``, ``chunk_data``, ``ignore_missing``, ``features``.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, field_validator

from rig.config import CameraConfig
from rig.config_base import CameraOptions
from rig.errors import ConfigError, DeviceError

log = logging.getLogger(__name__)

# Alternative names of one SFNC feature, newest first (older GigE cameras use the *Abs names).
EXPOSURE_NAMES = ("ExposureTime", "ExposureTimeAbs")
FRAME_RATE_NAMES = ("AcquisitionFrameRate", "AcquisitionFrameRateAbs")
FRAME_RATE_ENABLE_NAMES = ("AcquisitionFrameRateEnable", "AcquisitionFrameRateEnabled")
# Chunk selector entries for the frame counter and the timestamp (SFNC first, then vendor spellings).
CHUNK_FRAME_ID_ENTRIES = ("FrameID", "FrameId", "Framecounter", "FrameCounter")
CHUNK_TIMESTAMP_ENTRIES = ("Timestamp",)


class CameraFeatureError(ConfigError):
    """A configured setting cannot be applied: the camera lacks the feature or refuses the value."""


class FeatureAccess(abc.ABC):
    """Uniform access to one camera's GenICam node map. ``kind`` is None when the node is absent or
    not available in the camera's current state."""

    def __init__(self, camera: str):
        self.camera = camera

    @abc.abstractmethod
    def kind(self, name: str) -> str | None:
        """'int', 'float', 'enum', 'bool', 'command', 'string', or None (absent / not available)."""

    @abc.abstractmethod
    def writable(self, name: str) -> bool: ...

    @abc.abstractmethod
    def get(self, name: str) -> Any: ...

    @abc.abstractmethod
    def _set(self, name: str, value: Any) -> None:
        """Write a value (enum values are symbolic strings)."""

    @abc.abstractmethod
    def entries(self, name: str) -> list[str]:
        """Available symbolic entries of an enumeration."""

    @abc.abstractmethod
    def _execute(self, name: str) -> None: ...

    def bounds(self, name: str) -> tuple[float, float, int] | None:
        """(min, max, increment) of a numeric feature, or None when the SDK does not say."""
        return None

    # ------------------------------------------------------------------ checked helpers
    def has(self, name: str) -> bool:
        try:
            return self.kind(name) is not None
        except Exception:  # some SDKs raise for unknown names
            return False

    def first_present(self, names: Sequence[str]) -> str | None:
        return next((n for n in names if self.has(n)), None)

    def set(self, name: str, value: Any) -> None:
        """Set a feature, checking that it exists, is writable, and (enums) has the entry."""
        kind = self.kind(name) if self.has(name) else None
        if kind is None:
            raise CameraFeatureError(f"camera {self.camera!r}: the model has no feature {name!r}")
        if not self.writable(name):
            raise CameraFeatureError(
                f"camera {self.camera!r}: feature {name!r} is not writable now (value {self.get(name)!r})"
            )
        if kind == "enum":
            avail = self.entries(name)
            if str(value) not in avail:
                raise CameraFeatureError(
                    f"camera {self.camera!r}: feature {name!r} has no entry {value!r} (available: "
                    f"{', '.join(avail)})"
                )
        elif kind in ("int", "float"):
            b = self.bounds(name)
            if b is not None:
                lo, hi, inc = b
                if not lo <= float(value) <= hi:
                    raise CameraFeatureError(
                        f"camera {self.camera!r}: {name}={value} is outside the camera's range "
                        f"[{lo:g}, {hi:g}]"
                    )
                if kind == "int" and inc > 1 and (int(value) - int(lo)) % inc:
                    raise CameraFeatureError(
                        f"camera {self.camera!r}: {name}={value} must be {lo:g} + a multiple of {inc}"
                    )
            value = int(value) if kind == "int" else float(value)
        elif kind == "bool":
            value = bool(value)
        try:
            self._set(name, value)
        except CameraFeatureError:
            raise
        except Exception as exc:  # SDK exceptions differ per vendor
            raise DeviceError(f"camera {self.camera!r}: setting {name}={value!r} failed: {exc}") from exc
        log.debug("camera %s: %s = %r", self.camera, name, value)

    def execute(self, name: str) -> None:
        if not self.has(name):
            raise CameraFeatureError(f"camera {self.camera!r}: the model has no command {name!r}")
        try:
            self._execute(name)
        except Exception as exc:
            raise DeviceError(f"camera {self.camera!r}: command {name} failed: {exc}") from exc

    def try_set(self, name: str, value: Any) -> bool:
        """Set when present and writable; return whether it was set (for optional features)."""
        if self.has(name) and self.writable(name):
            self.set(name, value)
            return True
        return False

    def get_or(self, name: str, default: Any = None) -> Any:
        try:
            return self.get(name) if self.has(name) else default
        except Exception:
            return default


@dataclass
class AppliedSettings:
    """What :func:`apply_camera_config` did, for the session log and ``cameras check``."""

    set: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    chunk_frame_id: str | None = None
    chunk_timestamp: bool = False


class GenICamOptions(CameraOptions):
    """Options every GenICam backend (spinnaker, genicam, aravis, basler) reads through
    :func:`apply_camera_config`."""

    trigger_source: str = Field("Line0", description="TriggerSource of the hardware trigger (or 'Software')")
    trigger_activation: str = Field("RisingEdge", description="TriggerActivation")
    trigger_overlap: str = Field("ReadOut", description="TriggerOverlap (skipped when the model lacks it)")
    trigger_rate_hz: float | None = Field(
        None, gt=0, description="the trigger rate, for the exposure check (default: rig.trigger.rate_hz)"
    )
    fps: float | None = Field(None, gt=0, description="free-run frame rate when hardware_trigger is false")
    offset_x: int | None = Field(None, ge=0, description="ROI origin x (px)")
    offset_y: int | None = Field(None, ge=0, description="ROI origin y (px)")
    chunk_data: bool | None = Field(
        None, description="chunk FrameID/Timestamp with each image (null: the backend's default)"
    )
    ignore_missing: tuple[str, ...] = Field(
        (), description="feature names the model lacks and may stay unset, e.g. [ExposureTime, Gain]"
    )
    features: dict[str, Any] = Field(
        default_factory=dict, description="further GenICam features, set last and in order, e.g. {Gamma: 1.0}"
    )

    @field_validator("ignore_missing", mode="before")
    @classmethod
    def _one_name(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


def genicam_options(cfg: CameraConfig) -> GenICamOptions:
    """``cfg.options`` as the GenICam options (a CameraConfig of a GenICam backend always has them)."""
    opts = cfg.options
    if not isinstance(opts, GenICamOptions):
        raise ConfigError(f"camera backend {cfg.backend!r} has no GenICam options")
    return opts


def _missing(
    acc: FeatureAccess, names: Iterable[str], what: str, ignore: set[str], out: AppliedSettings
) -> None:
    names = list(names)
    if ignore.intersection(names):
        out.skipped[names[0]] = "model lacks it; listed in options.ignore_missing"
        log.warning(
            "camera %s: no %s feature (%s); left unset as options.ignore_missing says",
            acc.camera,
            what,
            "/".join(names),
        )
        return
    raise CameraFeatureError(
        f"camera {acc.camera!r}: the model has no {what} feature ({' or '.join(names)}); add "
        f"{names[0]!r} to rig.cameras.{acc.camera}.options.ignore_missing to run without it"
    )


def check_exposure_period(camera: str, exposure_us: float, rate_hz: float | None, what: str) -> None:
    """Refuse an exposure that cannot fit in one trigger (or frame) period."""
    if rate_hz is None or rate_hz <= 0:
        return
    period_us = 1e6 / rate_hz
    if exposure_us >= period_us:
        raise CameraFeatureError(
            f"camera {camera!r}: ExposureTime {exposure_us:g} us is longer than the {what} period "
            f"{period_us:.0f} us ({rate_hz:g} Hz); lower exposure_us or the rate"
        )


def apply_camera_config(
    acc: FeatureAccess,
    cfg: CameraConfig,
    *,
    trigger_rate_hz: float | None = None,
    chunk_default: bool = False,
) -> AppliedSettings:
    """Apply ``cfg`` through the SFNC features. The camera must not be acquiring.

    ``trigger_rate_hz``: the hardware trigger rate (from the rig's trigger config) for the exposure
    check; ``options.trigger_rate_hz`` overrides it. ``chunk_default``: turn chunk data on unless
    ``options.chunk_data`` says otherwise.
    """
    out = AppliedSettings()
    opts = genicam_options(cfg)
    ignore = set(opts.ignore_missing)
    cam = acc.camera

    # Trigger off first: many cameras lock format/ROI/source changes while a trigger is armed.
    if acc.has("TriggerSelector") and "FrameStart" in acc.entries("TriggerSelector"):
        acc.set("TriggerSelector", "FrameStart")
    if acc.has("TriggerMode"):
        acc.set("TriggerMode", "Off")

    # Pixel format.
    if acc.has("PixelFormat"):
        acc.set("PixelFormat", cfg.pixel_format)
        out.set["PixelFormat"] = cfg.pixel_format
    else:
        _missing(acc, ["PixelFormat"], "pixel format", ignore, out)

    # ROI: offsets to 0, size, then offsets.
    for name in ("OffsetX", "OffsetY"):
        acc.try_set(name, 0)
    for name, value in (("Width", cfg.width), ("Height", cfg.height)):
        if acc.has(name):
            acc.set(name, value)
            out.set[name] = value
        else:
            _missing(acc, [name], "image size", ignore, out)
    for name, offset in (("OffsetX", opts.offset_x), ("OffsetY", opts.offset_y)):
        if offset is not None:
            acc.set(name, offset)
            out.set[name] = offset

    # Exposure (µs) with auto exposure off.
    acc.try_set("ExposureAuto", "Off")
    if acc.has("ExposureMode") and "Timed" in acc.entries("ExposureMode"):
        acc.set("ExposureMode", "Timed")
    exp_name = acc.first_present(EXPOSURE_NAMES)
    if exp_name:
        acc.set(exp_name, cfg.exposure_us)
        out.set[exp_name] = cfg.exposure_us
    else:
        _missing(acc, EXPOSURE_NAMES, "exposure", ignore, out)

    # Gain (dB) with auto gain off. A camera with only raw gain units cannot take a dB value.
    if acc.has("GainAuto"):
        acc.try_set("GainAuto", "Off")
    if acc.has("Gain"):
        acc.set("Gain", cfg.gain_db)
        out.set["Gain"] = cfg.gain_db
    elif cfg.gain_db == 0.0:
        out.skipped["Gain"] = "no Gain (dB) feature; gain_db is 0 so nothing was asked"
    else:
        _missing(acc, ["Gain"], "gain (dB)", ignore, out)

    # Trigger or free run.
    rate = opts.trigger_rate_hz if opts.trigger_rate_hz is not None else trigger_rate_hz
    if cfg.hardware_trigger:
        check_exposure_period(cam, cfg.exposure_us, rate, "trigger")
        if not acc.has("TriggerMode"):
            raise CameraFeatureError(
                f"camera {cam!r}: hardware_trigger is true but the model has no feature 'TriggerMode'"
            )
        fre = acc.first_present(FRAME_RATE_ENABLE_NAMES)
        if fre:
            acc.try_set(fre, False)  # the trigger, not an internal clock, sets the rate
        source = opts.trigger_source
        acc.set("TriggerSource", source)
        out.set["TriggerSource"] = source
        activation = opts.trigger_activation
        if acc.has("TriggerActivation"):
            acc.set("TriggerActivation", activation)
            out.set["TriggerActivation"] = activation
        elif "trigger_activation" in opts.model_fields_set:
            _missing(acc, ["TriggerActivation"], "trigger activation", ignore, out)
        overlap = opts.trigger_overlap
        if acc.has("TriggerOverlap") and overlap in acc.entries("TriggerOverlap"):
            acc.set("TriggerOverlap", overlap)
            out.set["TriggerOverlap"] = overlap
        else:
            out.skipped["TriggerOverlap"] = "not offered by the model"
        acc.set("TriggerMode", "On")
        out.set["TriggerMode"] = "On"
    else:
        fps = opts.fps
        if fps is not None:
            check_exposure_period(cam, cfg.exposure_us, float(fps), "frame")
            fre = acc.first_present(FRAME_RATE_ENABLE_NAMES)
            if fre:
                acc.set(fre, True)
            fr_name = acc.first_present(FRAME_RATE_NAMES)
            if fr_name is None:
                _missing(acc, FRAME_RATE_NAMES, "frame rate", ignore, out)
            else:
                acc.set(fr_name, float(fps))
                out.set[fr_name] = float(fps)

    # Chunk data: the camera's own frame counter and timestamp travel with each image.
    if opts.chunk_data if opts.chunk_data is not None else chunk_default:
        if not acc.has("ChunkModeActive"):
            _missing(acc, ["ChunkModeActive"], "chunk data", ignore, out)
        else:
            acc.set("ChunkModeActive", True)
            out.set["ChunkModeActive"] = True
            sel = acc.entries("ChunkSelector") if acc.has("ChunkSelector") else []
            fid = next((e for e in CHUNK_FRAME_ID_ENTRIES if e in sel), None)
            ts = next((e for e in CHUNK_TIMESTAMP_ENTRIES if e in sel), None)
            if fid is None:
                raise CameraFeatureError(
                    f"camera {cam!r}: chunk data has no frame counter entry in ChunkSelector "
                    f"(available: {', '.join(sel) or 'none'})"
                )
            for entry in (fid, ts):
                if entry is not None:
                    acc.set("ChunkSelector", entry)
                    acc.set("ChunkEnable", True)
            out.chunk_frame_id = fid
            out.chunk_timestamp = ts is not None
    for name, value in opts.features.items():
        acc.set(str(name), value)
        out.set[str(name)] = value
    log.info("camera %s configured: %s; skipped: %s", cam, out.set, out.skipped)
    return out


def timeout_message(camera: str, cfg: CameraConfig, applied: AppliedSettings, timeout_s: float) -> str:
    """The AcquisitionTimeout text: which trigger line gave no pulse (or no free-run frame)."""
    what = f"no trigger pulse on {applied.set.get('TriggerSource')}" if cfg.hardware_trigger else "no frame"
    return f"camera {camera!r}: {what} within {timeout_s:.3f} s"


def disarm(acc: FeatureAccess) -> None:
    """Leave the camera un-triggered (TriggerMode Off); never raises (used from close())."""
    try:
        if acc.has("TriggerMode") and acc.writable("TriggerMode"):
            acc._set("TriggerMode", "Off")
    except Exception as exc:
        log.warning("camera %s: could not turn TriggerMode off: %s", acc.camera, exc)


class GenApiAccess(FeatureAccess):
    """Adapter for GenApi node maps wrapped by SWIG: Harvesters' ``genicam.genapi`` (snake_case,
    ``node.value``) and pypylon's (``node.Value``); both expose the GenApi interfaces by class."""

    def __init__(self, camera: str, node_map: Any, genapi: Any, pylon_style: bool):
        super().__init__(camera)
        self.nm = node_map
        self.ga = genapi
        self.pylon = pylon_style

    def _node(self, name: str) -> Any:
        if self.pylon:
            return self.nm.GetNode(name)
        return self.nm.get_node(name) if self.nm.has_node(name) else None

    def kind(self, name: str) -> str | None:
        n = self._node(name)
        if n is None:
            return None
        if self.pylon:
            if not self.ga.IsAvailable(n):
                return None
        else:
            mode = n.node.get_access_mode()
            if mode in (self.ga.EAccessMode.NI, self.ga.EAccessMode.NA):
                return None
        for cls, k in (
            ("IInteger", "int"),
            ("IFloat", "float"),
            ("IEnumeration", "enum"),
            ("IBoolean", "bool"),
            ("ICommand", "command"),
            ("IString", "string"),
        ):
            if isinstance(n, getattr(self.ga, cls)):
                return k
        return "other"

    def writable(self, name: str) -> bool:
        n = self._node(name)
        if self.pylon:
            return bool(self.ga.IsWritable(n))
        return bool(n.node.get_access_mode() in (self.ga.EAccessMode.RW, self.ga.EAccessMode.WO))

    def get(self, name: str) -> Any:
        n = self._node(name)
        if self.pylon:
            return n.ToString() if isinstance(n, self.ga.IEnumeration) else n.Value
        return n.value

    def _set(self, name: str, value: Any) -> None:
        n = self._node(name)
        if self.pylon:
            n.SetValue(value)
        else:
            n.value = value

    def entries(self, name: str) -> list[str]:
        n = self._node(name)
        if self.pylon:
            return [e.GetSymbolic() for e in n.GetEntries() if self.ga.IsAvailable(e)]
        return list(n.symbolics)

    def _execute(self, name: str) -> None:
        n = self._node(name)
        n.Execute() if self.pylon else n.execute()

    def bounds(self, name: str) -> tuple[float, float, int] | None:
        n = self._node(name)
        try:
            if self.pylon:
                inc = n.GetInc() if isinstance(n, self.ga.IInteger) else 1
                return float(n.GetMin()), float(n.GetMax()), int(inc)
            inc = n.inc if isinstance(n, self.ga.IInteger) else 1
            return float(n.min), float(n.max), int(inc)
        except Exception:  # not every node reports limits
            return None
