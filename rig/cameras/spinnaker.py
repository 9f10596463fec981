"""FLIR cameras (Blackfly S, Chameleon, ...) through PySpin, the Spinnaker SDK's Python binding.

PySpin is not on PyPI (the ``pyspin``/``PySpin`` names there are an unrelated terminal spinner): it
comes with FLIR's SDK download. This module imports it lazily in :meth:`SpinnakerCamera.open`, so the
rest of the package works without it. Written against FLIR's documented PySpin API (the SDK's
``Examples/Python3``: Acquisition, Trigger, ChunkData, BufferHandling, ExposureQS):

* open by serial: ``System.GetInstance()``, ``GetCameras()``, ``CameraList.GetBySerial``, ``Init()``;
* features through the GenICam node map (``CEnumerationPtr``/``CFloatPtr``/... with ``IsAvailable``/
  ``IsWritable``), shared with the other GenICam backends in :mod:`rig.cameras.genicam_features`
  (TriggerMode/TriggerSource/TriggerActivation/TriggerOverlap, or AcquisitionFrameRate in free run);
* chunk data FrameID and Timestamp (on by default: ``options.chunk_data: false`` to turn off), read
  with ``image.GetChunkData()``;
* the TL stream's ``StreamBufferHandlingMode`` set to ``OldestFirst`` (a full queue drops the new
  frame and counts it, it never re-delivers or overwrites an unread one), and the stream's counters
  (``StreamLostFrameCount``, ``StreamDroppedFrameCount``, ...) read back in :meth:`stream_stats`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from rig.cameras.base import CameraBackend, CameraInfo, GrabbedFrame, now_ns
from rig.cameras.genicam_features import (
    FeatureAccess,
    GenICamOptions,
    apply_camera_config,
    disarm,
    timeout_message,
)
from rig.cameras.sync import FrameCounter
from rig.errors import AcquisitionTimeout, ConfigError, DeviceError

log = logging.getLogger(__name__)

STREAM_COUNTERS = (
    "StreamTotalBufferCount",
    "StreamFailedBufferCount",
    "StreamBufferUnderrunCount",
    "StreamLostFrameCount",
    "StreamDroppedFrameCount",
    "StreamPacketResendRequestCount",
)


def import_pyspin() -> Any:
    try:
        import PySpin
    except ImportError as exc:
        raise ConfigError(
            "camera backend 'spinnaker' needs PySpin, which comes with FLIR's Spinnaker SDK (not PyPI): "
            f"{exc}"
        ) from None
    if not hasattr(PySpin, "System"):
        raise ConfigError("the installed 'PySpin' module is not FLIR's (no PySpin.System): remove it")
    return PySpin


class SpinAccess(FeatureAccess):
    """GenICam node access through PySpin's smart pointers."""

    def __init__(self, camera: str, node_map: Any, pyspin: Any):
        super().__init__(camera)
        self.nm = node_map
        self.ps = pyspin
        ps = pyspin
        self._kinds = {
            ps.intfIInteger: ("int", ps.CIntegerPtr),
            ps.intfIFloat: ("float", ps.CFloatPtr),
            ps.intfIEnumeration: ("enum", ps.CEnumerationPtr),
            ps.intfIBoolean: ("bool", ps.CBooleanPtr),
            ps.intfICommand: ("command", ps.CCommandPtr),
            ps.intfIString: ("string", ps.CStringPtr),
        }

    def _typed(self, name: str) -> tuple[str, Any] | None:
        node = self.nm.GetNode(name)
        if node is None or not self.ps.IsAvailable(node):
            return None
        kind, ptr = self._kinds.get(node.GetPrincipalInterfaceType(), ("other", None))
        return kind, (ptr(node) if ptr is not None else node)

    def kind(self, name: str) -> str | None:
        t = self._typed(name)
        return None if t is None else t[0]

    def writable(self, name: str) -> bool:
        return bool(self.ps.IsWritable(self.nm.GetNode(name)))

    def get(self, name: str) -> Any:
        t = self._typed(name)
        if t is None:
            return None
        kind, n = t
        if kind == "enum":
            return n.GetCurrentEntry().GetSymbolic()
        return n.GetValue()

    def _set(self, name: str, value: Any) -> None:
        t = self._typed(name)
        assert t is not None
        kind, n = t
        if kind == "enum":
            entry = n.GetEntryByName(str(value))
            n.SetIntValue(entry.GetValue())
        else:
            n.SetValue(value)

    def entries(self, name: str) -> list[str]:
        t = self._typed(name)
        assert t is not None
        out = []
        for e in t[1].GetEntries():
            if self.ps.IsAvailable(e) and self.ps.IsReadable(e):
                out.append(self.ps.CEnumEntryPtr(e).GetSymbolic())
        return out

    def _execute(self, name: str) -> None:
        t = self._typed(name)
        assert t is not None
        t[1].Execute()

    def bounds(self, name: str) -> tuple[float, float, int] | None:
        t = self._typed(name)
        if t is None:
            return None
        kind, n = t
        inc = int(n.GetInc()) if kind == "int" else 1
        return float(n.GetMin()), float(n.GetMax()), inc


def _tl_string(ps: Any, cam: Any, name: str) -> str:
    node = ps.CStringPtr(cam.GetTLDeviceNodeMap().GetNode(name))
    return str(node.GetValue()) if ps.IsAvailable(node) and ps.IsReadable(node) else ""


def list_cameras(options: dict[str, Any] | None = None) -> list[CameraInfo]:
    ps = import_pyspin()
    system = ps.System.GetInstance()
    cams = system.GetCameras()
    try:
        out = []
        for i in range(cams.GetSize()):
            cam = cams.GetByIndex(i)
            out.append(
                CameraInfo(
                    "spinnaker",
                    f"{_tl_string(ps, cam, 'DeviceVendorName')} {_tl_string(ps, cam, 'DeviceModelName')}",
                    _tl_string(ps, cam, "DeviceSerialNumber"),
                    _tl_string(ps, cam, "DeviceType") or "Spinnaker",
                )
            )
            del cam
        return out
    finally:
        cams.Clear()
        system.ReleaseInstance()


class SpinnakerOptions(GenICamOptions):
    """``rig.cameras.<name>.options`` of a Spinnaker (PySpin) camera: the GenICam options; chunk data
    (the camera's FrameID and Timestamp) is on unless ``chunk_data: false``."""


class SpinnakerCamera(CameraBackend):
    backend_name = "spinnaker"
    options_model = SpinnakerOptions

    cam: Any = None
    system: Any = None

    def open(self) -> None:
        ps = self.ps = import_pyspin()
        self.system = ps.System.GetInstance()
        cams = self.system.GetCameras()
        try:
            serials = [
                _tl_string(ps, cams.GetByIndex(i), "DeviceSerialNumber") for i in range(cams.GetSize())
            ]
            if self.config.serial is None:
                if len(serials) != 1:
                    raise ConfigError(
                        f"rig.cameras.{self.name}.serial: needed when {len(serials)} FLIR cameras are "
                        f"connected ({', '.join(serials) or 'none'})"
                    )
                serial = serials[0]
            else:
                serial = self.config.serial
            if serial not in serials:
                raise DeviceError(
                    f"camera {self.name!r}: FLIR serial {serial!r} is not connected "
                    f"(seen: {', '.join(serials) or 'none'})"
                )
            self.cam = cams.GetBySerial(serial)
        except BaseException:
            cams.Clear()
            self.system.ReleaseInstance()
            self.system = None
            raise
        cams.Clear()
        self._info = CameraInfo(
            "spinnaker",
            _tl_string(ps, self.cam, "DeviceModelName"),
            serial,
            _tl_string(ps, self.cam, "DeviceType") or "Spinnaker",
        )
        try:
            self.cam.Init()
        except ps.SpinnakerException as exc:
            raise DeviceError(f"camera {self.name!r}: FLIR {serial} Init() failed: {exc}") from exc
        self.features = SpinAccess(self.name, self.cam.GetNodeMap(), ps)
        self.stream = SpinAccess(self.name, self.cam.GetTLStreamNodeMap(), ps)
        self.counter = FrameCounter(bits=64)

    def configure(self) -> None:
        self.applied = apply_camera_config(
            self.features,
            self.config,
            trigger_rate_hz=self.context.get("trigger_rate_hz"),
            chunk_default=True,
        )
        if self.stream.has("StreamBufferHandlingMode"):
            self.stream.set("StreamBufferHandlingMode", "OldestFirst")
        else:
            log.warning("camera %s: no StreamBufferHandlingMode; driver default kept", self.name)
        if self.stream.has("StreamBufferCountMode"):
            self.stream.set("StreamBufferCountMode", "Manual")
            self.stream.set("StreamBufferCountManual", self.config.ring_slots)
        self.features.try_set("AcquisitionMode", "Continuous")

    def start(self) -> None:
        self.cam.BeginAcquisition()

    def software_trigger(self) -> None:
        self.features.execute("TriggerSoftware")

    def grab(self, timeout_s: float) -> GrabbedFrame:
        ps = self.ps
        try:
            image = self.cam.GetNextImage(max(1, int(timeout_s * 1000)))
        except ps.SpinnakerException as exc:
            timeout_code = getattr(ps, "SPINNAKER_ERR_TIMEOUT", -1011)
            if getattr(exc, "errorcode", None) == timeout_code and self.cam.IsValid():
                raise AcquisitionTimeout(
                    timeout_message(self.name, self.config, self.applied, timeout_s)
                ) from None
            raise DeviceError(
                f"camera {self.name!r} (FLIR {self._info.serial}): acquisition failed (unplugged?): {exc}"
            ) from exc
        t_host = now_ns()
        try:
            incomplete = bool(image.IsIncomplete())
            h, w = self.config.height, self.config.width
            pixels = np.zeros((h, w), np.uint8) if incomplete else np.array(image.GetNDArray(), np.uint8)
            if self.applied.chunk_frame_id:
                chunk = image.GetChunkData()
                raw_id = int(chunk.GetFrameID())
                t_dev = (
                    int(chunk.GetTimestamp()) if self.applied.chunk_timestamp else int(image.GetTimeStamp())
                )
            else:
                raw_id = int(image.GetFrameID())
                t_dev = int(image.GetTimeStamp())
        finally:
            image.Release()
        fid, lost = self.counter.update(raw_id, incomplete)
        return GrabbedFrame(pixels, fid, t_host, t_device_ns=t_dev, lost_before=lost, incomplete=incomplete)

    def stop(self) -> None:
        if self.cam is not None and self.cam.IsStreaming():
            self.cam.EndAcquisition()

    def close(self) -> None:
        if self.cam is not None:
            try:
                self.stop()
                disarm(self.features)
                self.cam.DeInit()
            except self.ps.SpinnakerException as exc:
                log.warning("camera %s: close failed (already gone?): %s", self.name, exc)
            del self.cam
            self.cam = None
        if self.system is not None:
            self.system.ReleaseInstance()
            self.system = None

    def info(self) -> CameraInfo:
        return self._info

    def stream_stats(self) -> dict[str, float]:
        out = self.counter.stats()
        if self.cam is not None:
            for name in STREAM_COUNTERS:
                value = self.stream.get_or(name)
                if value is not None:
                    out[name] = float(value)
        return out
