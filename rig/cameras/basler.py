"""Basler cameras through pypylon.

Config: ``backend: basler``, ``serial``. Features go through :mod:`rig.cameras.genicam_features`
(pylon's node map is GenApi). Grabbing uses ``GrabStrategy_OneByOne`` so frames are delivered in order
and none is silently overwritten; the frame id is the stream block id (or chunk ``Framecounter`` when
``options.chunk_data`` is on), the device timestamp the result's timestamp (camera ticks; ns on
current models). ``PYLON_CAMEMU=N`` (set before pypylon is first imported) adds N emulated cameras,
which is how the tests run it; the emulator has no chunk data.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

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


def import_pylon() -> tuple[Any, Any]:
    try:
        from pypylon import genicam, pylon
    except ImportError as exc:
        raise ConfigError(f"camera backend 'basler' needs pypylon (pip install pypylon): {exc}") from None
    return pylon, genicam


def list_cameras(options: dict[str, Any] | None = None) -> list[CameraInfo]:
    pylon, _ = import_pylon()
    return [
        CameraInfo("basler", d.GetModelName(), d.GetSerialNumber(), d.GetDeviceClass())
        for d in pylon.TlFactory.GetInstance().EnumerateDevices()
    ]


class BaslerOptions(GenICamOptions):
    """``rig.cameras.<name>.options`` of a Basler (pypylon) camera: the GenICam options (chunk data off
    unless ``chunk_data: true``; the emulator has none)."""


class BaslerCamera(CameraBackend):
    backend_name = "basler"
    options_model = BaslerOptions

    cam: Any = None

    def open(self) -> None:
        pylon, genicam = self.pylon, _ = import_pylon()
        tl = pylon.TlFactory.GetInstance()
        devices = list(tl.EnumerateDevices())
        match = [
            d for d in devices if self.config.serial is None or d.GetSerialNumber() == self.config.serial
        ]
        if not match:
            seen = ", ".join(f"{d.GetSerialNumber()} ({d.GetModelName()})" for d in devices) or "none"
            raise DeviceError(
                f"camera {self.name!r}: Basler serial {self.config.serial!r} is not connected (seen: {seen})"
            )
        d = match[0]
        self._info = CameraInfo("basler", d.GetModelName(), d.GetSerialNumber(), d.GetDeviceClass())
        try:
            self.cam = pylon.InstantCamera(tl.CreateDevice(d))
            self.cam.Open()
        except Exception as exc:  # pylon RuntimeException
            self.cam = None
            raise DeviceError(
                f"camera {self.name!r}: cannot open Basler {d.GetSerialNumber()}: {exc}"
            ) from exc
        self.features = GenApiAccess(self.name, self.cam.GetNodeMap(), genicam, pylon_style=True)
        self.counter = FrameCounter(bits=64)

    def configure(self) -> None:
        self.applied = apply_camera_config(
            self.features, self.config, trigger_rate_hz=self.context.get("trigger_rate_hz")
        )

    def start(self) -> None:
        self.cam.MaxNumBuffer.Value = self.config.ring_slots
        self.cam.StartGrabbing(self.pylon.GrabStrategy_OneByOne)

    def software_trigger(self) -> None:
        self.features.execute("TriggerSoftware")

    def grab(self, timeout_s: float) -> GrabbedFrame:
        pylon = self.pylon
        if self.cam.IsCameraDeviceRemoved():
            raise DeviceError(
                f"camera {self.name!r} (Basler {self._info.serial}): device removed (unplugged?)"
            )
        try:
            res = self.cam.RetrieveResult(max(1, int(timeout_s * 1000)), pylon.TimeoutHandling_Return)
        except Exception as exc:
            raise DeviceError(
                f"camera {self.name!r} (Basler {self._info.serial}): grab failed: {exc}"
            ) from exc
        t_host = now_ns()
        if res is None or not res.IsValid():
            if self.cam.IsCameraDeviceRemoved():
                raise DeviceError(
                    f"camera {self.name!r} (Basler {self._info.serial}): device removed (unplugged?)"
                )
            raise AcquisitionTimeout(timeout_message(self.name, self.config, self.applied, timeout_s))
        try:
            ok = bool(res.GrabSucceeded())
            h, w = self.config.height, self.config.width
            image = res.GetArray().copy() if ok else np.zeros((h, w), np.uint8)
            if self.applied.chunk_frame_id and ok:
                raw_id = int(self.features.get("Chunk" + self.applied.chunk_frame_id))
            else:
                raw_id = int(res.GetBlockID())
            t_dev = int(res.GetTimeStamp()) or -1  # the emulator reports 0: no clock
        finally:
            res.Release()
        fid, lost = self.counter.update(raw_id, not ok)
        return GrabbedFrame(image, fid, t_host, t_device_ns=t_dev, lost_before=lost, incomplete=not ok)

    def stop(self) -> None:
        if self.cam is not None and self.cam.IsGrabbing():
            self.cam.StopGrabbing()

    def close(self) -> None:
        if self.cam is None:
            return
        try:
            self.stop()
            disarm(self.features)
        finally:
            self.cam.Close()
            self.cam.DestroyDevice()
            self.cam = None

    def info(self) -> CameraInfo:
        return self._info

    def stream_stats(self) -> dict[str, float]:
        out = self.counter.stats()
        if self.cam is not None:
            nm = self.cam.GetStreamGrabberNodeMap()
            for name in (
                "Statistic_Total_Buffer_Count",
                "Statistic_Failed_Buffer_Count",
                "Statistic_Buffer_Underrun_Count",
                "Statistic_Missed_Frame_Count",
            ):
                node = nm.GetNode(name)
                if node is not None and self.pylon_genicam_readable(node):
                    out[name] = float(node.Value)
        return out

    def pylon_genicam_readable(self, node: Any) -> bool:
        from pypylon import genicam

        return bool(genicam.IsReadable(node))
