"""The camera backend protocol.

A backend is a small object with ``open / configure / start / grab(timeout) / stop / close`` (after
Autopilot's camera template). It gets its settings as arguments, imports its vendor SDK lazily (inside
``open``), and ``close()`` leaves the device idle and un-triggered. ``grab`` returns one
:class:`GrabbedFrame` or raises :class:`~rig.errors.AcquisitionTimeout`.

Backends are found by name through :func:`make_backend`; a machine without a vendor SDK still imports
this package.
"""

from __future__ import annotations

import abc
import importlib
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import numpy as np

from rig.config import CameraConfig
from rig.config_base import CameraOptions
from rig.errors import ConfigError


@dataclass
class GrabbedFrame:
    """One frame as a backend delivers it.

    ``image`` is (H, W) uint8 (Mono8). ``frame_id`` is the camera's own counter (chunk data or driver
    block id); ``t_device_ns`` the camera's timestamp (-1 if it has none); ``t_host_ns`` host
    ``time.monotonic_ns()`` when the frame reached the host. ``trigger_index`` is known only to
    backends that see the trigger (synthetic, replay); -1 otherwise, and the camera node maps frame ids
    to trigger counts. ``lost_before`` counts frames the camera/driver reports lost since the previous
    grab; ``incomplete`` flags a frame with missing packets.
    """

    image: np.ndarray
    frame_id: int
    t_host_ns: int
    t_device_ns: int = -1
    trigger_index: int = -1
    t_trigger_ns: int = -1
    lost_before: int = 0
    incomplete: bool = False


@dataclass
class CameraInfo:
    backend: str
    model: str
    serial: str
    interface: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class CameraBackend(abc.ABC):
    """Base class of camera backends. Subclasses implement the abstract methods."""

    backend_name = "?"
    # the backend's ``options`` (rig.cameras.<name>.options): a CameraOptions subclass in its module
    options_model: ClassVar[type[CameraOptions]] = CameraOptions

    def __init__(self, name: str, config: CameraConfig, context: dict[str, Any] | None = None):
        self.name = name
        self.config = config
        self.context = context or {}

    @abc.abstractmethod
    def open(self) -> None:
        """Find and open the device (import the SDK here)."""

    @abc.abstractmethod
    def configure(self) -> None:
        """Apply ``self.config``: pixel format, ROI, exposure, gain, trigger."""

    @abc.abstractmethod
    def start(self) -> None:
        """Begin acquisition (armed for triggers when hardware-triggered)."""

    @abc.abstractmethod
    def grab(self, timeout_s: float) -> GrabbedFrame:
        """Return the next frame or raise AcquisitionTimeout naming the camera."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop acquisition."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device, leaving it idle and un-triggered. Safe to call twice."""

    def info(self) -> CameraInfo:
        return CameraInfo(backend=self.backend_name, model="unknown", serial=self.config.serial or "")

    def stream_stats(self) -> dict[str, float]:
        """Driver-level counters (lost frames, incomplete frames, ...) if the backend has them."""
        return {}

    def __enter__(self) -> CameraBackend:
        self.open()
        self.configure()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.close()


# name -> "module:Class"; modules are imported only when the backend is used.
BACKENDS: dict[str, str] = {
    "synthetic": "rig.cameras.synthetic:SyntheticCamera",
    "replay": "rig.cameras.replay:ReplayCamera",
    "spinnaker": "rig.cameras.spinnaker:SpinnakerCamera",
    "genicam": "rig.cameras.genicam:GenicamCamera",
    "aravis": "rig.cameras.aravis:AravisCamera",
    "basler": "rig.cameras.basler:BaslerCamera",
    "opencv": "rig.cameras.opencv:OpenCVCamera",
}


def backend_class(backend: str) -> type[CameraBackend]:
    try:
        target = BACKENDS[backend]
    except KeyError:
        raise ConfigError(f"unknown camera backend {backend!r} (known: {', '.join(BACKENDS)})") from None
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"camera backend {backend!r} is not available: {exc}") from None
    cls = getattr(module, cls_name)
    assert issubclass(cls, CameraBackend)
    return cast(type[CameraBackend], cls)


def backend_options_model(backend: str) -> type[CameraOptions]:
    """The options model of ``backend`` (imports the backend's module, never its vendor SDK)."""
    return backend_class(backend).options_model


def make_backend(name: str, config: CameraConfig, context: dict[str, Any] | None = None) -> CameraBackend:
    return backend_class(config.backend)(name, config, context)


def now_ns() -> int:
    return time.monotonic_ns()


class StreamEnded(Exception):
    """The source has no more frames (a replayed file ended, the simulated trigger source stopped)."""
