"""GenICam cameras through Harvesters and a GenTL producer (``.cti``) the user names.

Config: ``backend: genicam``, ``serial`` (the GenTL device serial number; or ``options.device_id``),
``options.cti`` (path to the producer, several allowed as a list; default: env ``GENICAM_GENTL64_PATH``).
Features are set through :mod:`rig.cameras.genicam_features`. Frame ids are the GenTL buffer frame ids
(the camera's block ids); the device timestamp is the buffer timestamp when the producer has one.

Tested against ``viky.cti`` (the virtual camera in the ``genicam`` wheel): it offers Mono8 at any size
up to 800x800 and AcquisitionFrameRate, but no ExposureTime, Gain or trigger features and no buffer
timestamps, so a config for it needs ``hardware_trigger: false`` and
``options.ignore_missing: [ExposureTime]``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from rig.cameras.base import CameraBackend, CameraInfo, GrabbedFrame, now_ns
from rig.cameras.genicam_features import (
    GenApiAccess,
    GenICamOptions,
    apply_camera_config,
    disarm,
    timeout_message,
)
from rig.cameras.sync import FrameCounter
from rig.errors import AcquisitionTimeout, ConfigError, DeviceError

log = logging.getLogger(__name__)


class GenicamOptions(GenICamOptions):
    """``rig.cameras.<name>.options`` of a GenTL camera through Harvesters: the GenICam options, plus
    the producer and the device."""

    cti: str | list[str] | None = Field(
        None, description="GenTL producer (.cti) path(s) (default: env GENICAM_GENTL64_PATH)"
    )
    device_id: str | None = Field(None, description="the GenTL device id, instead of 'serial'")


def cti_paths(options: dict[str, Any] | GenicamOptions) -> list[Path]:
    cti = options.cti if isinstance(options, GenicamOptions) else options.get("cti")
    raw = cti or os.environ.get("GENICAM_GENTL64_PATH", "")
    items = raw if isinstance(raw, list) else [p for p in str(raw).split(os.pathsep) if p]
    paths: list[Path] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            paths.extend(sorted(p.glob("*.cti")))
        elif p.is_file():
            paths.append(p)
        else:
            raise ConfigError(f"options.cti: GenTL producer {str(p)!r} not found")
    return paths


def viky_cti() -> Path | None:
    """The virtual GenTL producer bundled with the ``genicam`` wheel, if installed."""
    try:
        import genicam
    except ImportError:
        return None
    p = Path(genicam.__file__).parent / "viky.cti"
    return p if p.is_file() else None


def make_harvester(paths: list[Path]) -> Any:
    from harvesters.core import Harvester

    h = Harvester()
    for p in paths:
        h.add_file(str(p), check_existence=True)
    h.update()
    return h


def list_cameras(options: dict[str, Any] | None = None) -> list[CameraInfo]:
    paths = cti_paths(options or {})
    if not paths:
        raise ConfigError("no GenTL producer named (--cti PATH or GENICAM_GENTL64_PATH)")
    h = make_harvester(paths)
    try:
        return [
            CameraInfo(
                "genicam", f"{d.vendor} {d.model}", d.serial_number, f"GenTL {d.tl_type}", {"id": d.id_}
            )
            for d in h.device_info_list
        ]
    finally:
        h.reset()


class GenicamCamera(CameraBackend):
    backend_name = "genicam"
    options_model = GenicamOptions

    harvester: Any = None
    ia: Any = None

    def open(self) -> None:
        opts = self.config.options
        assert isinstance(opts, GenicamOptions)
        paths = cti_paths(opts)
        if not paths:
            raise ConfigError(
                f"rig.cameras.{self.name}.options.cti: no GenTL producer named "
                "(and GENICAM_GENTL64_PATH unset)"
            )
        self.harvester = make_harvester(paths)
        devices = self.harvester.device_info_list
        key = opts.device_id
        if key is not None:
            match = [d for d in devices if d.id_ == key]
        else:
            match = [
                d for d in devices if self.config.serial is None or d.serial_number == self.config.serial
            ]
        if not match:
            seen = ", ".join(f"{d.serial_number} ({d.model})" for d in devices) or "none"
            self.close()
            raise DeviceError(
                f"camera {self.name!r}: GenTL serial {self.config.serial or key!r} is not connected "
                f"(producers {', '.join(p.name for p in paths)} see: {seen})"
            )
        self.device_info = match[0]
        try:
            self.ia = self.harvester.create(self.device_info)
        except Exception as exc:  # GenTL access errors
            self.close()
            raise DeviceError(
                f"camera {self.name!r}: cannot open GenTL device {self.device_info.id_}: {exc}"
            ) from exc
        from genicam import genapi

        self.features = GenApiAccess(self.name, self.ia.remote_device.node_map, genapi, pylon_style=False)
        self.counter = FrameCounter(bits=64)
        self._has_ts = True

    def configure(self) -> None:
        rate = self.context.get("trigger_rate_hz")
        self.applied = apply_camera_config(self.features, self.config, trigger_rate_hz=rate)
        self.ia.num_buffers = max(self.config.ring_slots // 4, 8)

    def start(self) -> None:
        self.ia.start()

    def grab(self, timeout_s: float) -> GrabbedFrame:
        try:
            buf = self.ia.try_fetch(timeout=timeout_s)
        except Exception as exc:  # a vanished device raises GenTL errors
            raise DeviceError(f"camera {self.name!r}: GenTL fetch failed (unplugged?): {exc}") from exc
        t_host = now_ns()
        if buf is None:
            raise AcquisitionTimeout(timeout_message(self.name, self.config, self.applied, timeout_s))
        try:
            comp = buf.payload.components[0]
            h, w = int(comp.height), int(comp.width)
            data = comp.data
            incomplete = data.size < h * w
            if comp.data_format != "Mono8":
                raise DeviceError(
                    f"camera {self.name!r}: got pixel format {comp.data_format}, expected Mono8"
                )
            image = (
                np.array(data[: h * w], dtype=np.uint8).reshape(h, w)
                if not incomplete
                else np.zeros((h, w), np.uint8)
            )
            raw_id = int(buf.frame_id)
            t_dev = -1
            if self._has_ts:
                try:
                    t_dev = int(buf.timestamp_ns)
                except Exception:  # producer has no timestamps
                    self._has_ts = False
        finally:
            buf.queue()
        fid, lost = self.counter.update(raw_id, incomplete)
        return GrabbedFrame(image, fid, t_host, t_device_ns=t_dev, lost_before=lost, incomplete=incomplete)

    def stop(self) -> None:
        if self.ia is not None and self.ia.is_acquiring():
            self.ia.stop()

    def close(self) -> None:
        if self.ia is not None:
            try:
                self.stop()
            except Exception as exc:
                log.warning("camera %s: stop failed: %s", self.name, exc)
            disarm(self.features)
            self.ia.destroy()
            self.ia = None
        if self.harvester is not None:
            self.harvester.reset()
            self.harvester = None

    def info(self) -> CameraInfo:
        d = self.device_info
        return CameraInfo("genicam", f"{d.vendor} {d.model}", d.serial_number, f"GenTL {d.tl_type}")

    def stream_stats(self) -> dict[str, float]:
        out = self.counter.stats()
        try:
            mod = self.ia.data_streams[0].module
            out["num_delivered"] = mod.num_delivered
            out["num_underrun"] = mod.num_underrun
        except Exception:  # producer may not report these
            pass
        return out
