# ruff: noqa: N802, N816  (names mirror PySpin's documented API)
"""A STAND-IN for FLIR's PySpin, for tests on machines without the Spinnaker SDK.

It is not PySpin and does not pretend to be: ``STANDIN = True`` marks it, and tests install it as
``sys.modules["PySpin"]`` only for their own duration. It follows the documented PySpin API for the
subset :mod:`rig.cameras.spinnaker` uses (System/CameraList/CameraPtr, INodeMap.GetNode, the
``IsAvailable``/``IsReadable``/``IsWritable`` functions, ``CIntegerPtr``/``CFloatPtr``/``CEnumerationPtr``/
``CEnumEntryPtr``/``CBooleanPtr``/``CCommandPtr``/``CStringPtr``, ``GetPrincipalInterfaceType`` with the
GenApi ``intfI*`` constants, ``GetNextImage(timeout_ms)`` raising ``SpinnakerException`` with
``errorcode == SPINNAKER_ERR_TIMEOUT`` (-1011), ImagePtr ``IsIncomplete/GetNDArray/GetFrameID/
GetTimeStamp/Release``, and the TL stream node map's ``StreamBufferHandlingMode``/``StreamBufferCount*``).

Underneath, the camera node map is a real GenICam node map: Aravis' in-process Fake camera. So what
the backend configures really is applied (and refused) by a GenICam device; only the PySpin surface is
imitated. The Fake camera has no chunk data and no TriggerOverlap, exactly like some real models.
"""

from __future__ import annotations

from typing import Any

import gi

gi.require_version("Aravis", "0.8")
from gi.repository import Aravis  # noqa: E402

STANDIN = True

# GenApi EInterfaceType values
intfIValue, intfIBase, intfIInteger, intfIBoolean, intfICommand, intfIFloat, intfIString = 0, 1, 2, 3, 4, 5, 6
intfIRegister, intfICategory, intfIEnumeration, intfIEnumEntry, intfIPort = 7, 8, 9, 10, 11

SPINNAKER_ERR_IO = -1010
SPINNAKER_ERR_TIMEOUT = -1011
SPINNAKER_ERR_NOT_AVAILABLE = -1014


class SpinnakerException(Exception):
    def __init__(self, message: str, errorcode: int):
        super().__init__(f"Spinnaker: {message} [{errorcode}]")
        self.message = message
        self.errorcode = errorcode


# ----------------------------------------------------------------------------------------- nodes
class _DictNode:
    """A transport-layer node held by the stand-in itself (device info, stream settings/counters)."""

    def __init__(self, name: str, intf: int, value: Any, entries: list[str] | None = None, rw: bool = True):
        self.name, self.intf, self.value, self.entries, self.rw = name, intf, value, entries, rw

    def GetName(self) -> str:
        return self.name

    def GetPrincipalInterfaceType(self) -> int:
        return self.intf

    # value interface (used through the C*Ptr wrappers)
    def GetValue(self) -> Any:
        return self.value

    def SetValue(self, v: Any) -> None:
        if not self.rw:
            raise SpinnakerException(f"{self.name} is read-only", -2006)
        self.value = v

    def GetMin(self) -> int:
        return 1

    def GetMax(self) -> int:
        return 4096

    def GetInc(self) -> int:
        return 1

    def GetEntries(self) -> list[_Entry]:
        return [_Entry(self, i, s) for i, s in enumerate(self.entries or [])]

    def GetEntryByName(self, name: str) -> _Entry | None:
        return next((e for e in self.GetEntries() if e.GetSymbolic() == name), None)

    def GetCurrentEntry(self) -> _Entry:
        return self.GetEntryByName(self.value)  # type: ignore[return-value]

    def SetIntValue(self, i: int) -> None:
        assert self.entries is not None
        self.SetValue(self.entries[i])


class _Entry:
    def __init__(self, owner: Any, value: int, symbolic: str):
        self.owner, self.value, self.symbolic = owner, value, symbolic

    def GetValue(self) -> int:
        return self.value

    def GetSymbolic(self) -> str:
        return self.symbolic

    def GetPrincipalInterfaceType(self) -> int:
        return intfIEnumEntry


class _ArvNode:
    """A node of the camera's GenICam node map (Aravis Fake), with PySpin's method names."""

    def __init__(self, dev: Any, name: str, gc: Any):
        self.dev, self.name, self.gc = dev, name, gc

    def GetName(self) -> str:
        return self.name

    def GetPrincipalInterfaceType(self) -> int:
        for cls, intf in (
            (Aravis.GcEnumeration, intfIEnumeration),
            (Aravis.GcCommand, intfICommand),
            (Aravis.GcBoolean, intfIBoolean),
            (Aravis.GcInteger, intfIInteger),
            (Aravis.GcFloat, intfIFloat),
            (Aravis.GcString, intfIString),
        ):
            if isinstance(self.gc, cls):
                return intf
        return intfIValue

    def _wrap(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except gi.repository.GLib.Error as exc:
            raise SpinnakerException(f"{self.name}: {exc.message}", SPINNAKER_ERR_IO) from None

    def GetValue(self) -> Any:
        d, t = self.dev, self.GetPrincipalInterfaceType()
        get = {
            intfIInteger: d.get_integer_feature_value,
            intfIFloat: d.get_float_feature_value,
            intfIBoolean: d.get_boolean_feature_value,
        }.get(t, d.get_string_feature_value)
        return self._wrap(get, self.name)

    def SetValue(self, v: Any) -> None:
        d, t = self.dev, self.GetPrincipalInterfaceType()
        lo_hi = self._bounds()
        if lo_hi and not lo_hi[0] <= v <= lo_hi[1]:  # GenApi refuses out-of-range writes
            raise SpinnakerException(f"{self.name}: value {v} out of range {lo_hi}", -2001)
        if t == intfIInteger:
            self._wrap(d.set_integer_feature_value, self.name, int(v))
        elif t == intfIFloat:
            self._wrap(d.set_float_feature_value, self.name, float(v))
        elif t == intfIBoolean:
            self._wrap(d.set_boolean_feature_value, self.name, bool(v))
        else:
            self._wrap(d.set_string_feature_value, self.name, str(v))

    def _bounds(self) -> tuple[float, float] | None:
        t = self.GetPrincipalInterfaceType()
        if t == intfIInteger:
            return tuple(self.dev.get_integer_feature_bounds(self.name))  # type: ignore[return-value]
        if t == intfIFloat:
            return tuple(self.dev.get_float_feature_bounds(self.name))  # type: ignore[return-value]
        return None

    def GetMin(self) -> float:
        return self._bounds()[0]  # type: ignore[index]

    def GetMax(self) -> float:
        return self._bounds()[1]  # type: ignore[index]

    def GetInc(self) -> int:
        return int(self.dev.get_integer_feature_increment(self.name))

    # enumeration
    def GetEntries(self) -> list[_Entry]:
        values = self.dev.dup_available_enumeration_feature_values(self.name)
        names = self.dev.dup_available_enumeration_feature_values_as_strings(self.name)
        return [_Entry(self, int(v), s) for v, s in zip(values, names, strict=True)]

    def GetEntryByName(self, name: str) -> _Entry | None:
        return next((e for e in self.GetEntries() if e.GetSymbolic() == name), None)

    def GetCurrentEntry(self) -> _Entry:
        return self.GetEntryByName(self.dev.get_string_feature_value(self.name))  # type: ignore[return-value]

    def SetIntValue(self, v: int) -> None:
        self._wrap(self.dev.set_integer_feature_value, self.name, int(v))

    def Execute(self) -> None:
        self._wrap(self.dev.execute_command, self.name)


class _NodeMap:
    def __init__(self, dev: Any = None, nodes: dict[str, _DictNode] | None = None):
        self.dev, self.nodes = dev, nodes or {}

    def GetNode(self, name: str) -> Any:
        if name in self.nodes:
            return self.nodes[name]
        if self.dev is None:
            return None
        gc = self.dev.get_feature(name)
        return None if gc is None else _ArvNode(self.dev, name, gc)


def IsAvailable(node: Any) -> bool:
    if node is None:
        return False
    if isinstance(node, _ArvNode):
        return bool(node.gc.is_implemented() and node.gc.is_available())
    return True


def IsReadable(node: Any) -> bool:
    return IsAvailable(node)


def IsWritable(node: Any) -> bool:
    if not IsAvailable(node):
        return False
    if isinstance(node, _ArvNode):
        return node.gc.get_actual_access_mode() in (Aravis.GcAccessMode.RW, Aravis.GcAccessMode.WO)
    return bool(getattr(node, "rw", False))


def _ptr(node: Any) -> Any:  # PySpin's C*Ptr(node) casts; the stand-in nodes carry every method
    return node


CIntegerPtr = CFloatPtr = CEnumerationPtr = CEnumEntryPtr = CBooleanPtr = CCommandPtr = CStringPtr = _ptr


# ----------------------------------------------------------------------------------------- images
class _Image:
    def __init__(self, cam: _Camera, buf: Any):
        self.cam, self.buf = cam, buf
        self.data = bytes(buf.get_data()) if buf.get_status() == Aravis.BufferStatus.SUCCESS else b""

    def IsIncomplete(self) -> bool:
        return self.buf.get_status() != Aravis.BufferStatus.SUCCESS

    def GetImageStatus(self) -> int:
        return int(self.buf.get_status())

    def GetNDArray(self) -> Any:
        import numpy as np

        w = self.cam.dev.get_integer_feature_value("Width")
        h = self.cam.dev.get_integer_feature_value("Height")
        return np.frombuffer(self.data, np.uint8, w * h).reshape(h, w)

    def GetFrameID(self) -> int:
        return int(self.buf.get_frame_id())

    def GetTimeStamp(self) -> int:
        return int(self.buf.get_timestamp())

    def GetChunkData(self) -> Any:
        raise SpinnakerException("chunk data not available", SPINNAKER_ERR_NOT_AVAILABLE)

    def Release(self) -> None:
        if self.buf is not None:
            self.cam.stream.push_buffer(self.buf)
            self.buf = None


# ----------------------------------------------------------------------------------------- camera
class _Camera:
    def __init__(self, device_id: str, serial: str, model: str):
        self.device_id = device_id
        self.arv_cam: Any = None
        self.dev: Any = None
        self.stream: Any = None
        self.valid = True
        s = lambda n, v: _DictNode(n, intfIString, v, rw=False)  # noqa: E731
        self.tl_device = _NodeMap(
            nodes={
                "DeviceSerialNumber": s("DeviceSerialNumber", serial),
                "DeviceModelName": s("DeviceModelName", model),
                "DeviceVendorName": s("DeviceVendorName", "Aravis (stand-in)"),
                "DeviceType": s("DeviceType", "Fake"),
            }
        )
        self.tl_stream = _NodeMap(
            nodes={
                "StreamBufferHandlingMode": _DictNode(
                    "StreamBufferHandlingMode",
                    intfIEnumeration,
                    "OldestFirst",
                    ["OldestFirst", "OldestFirstOverwrite", "NewestFirst", "NewestOnly"],
                ),
                "StreamBufferCountMode": _DictNode(
                    "StreamBufferCountMode", intfIEnumeration, "Auto", ["Auto", "Manual"]
                ),
                "StreamBufferCountManual": _DictNode("StreamBufferCountManual", intfIInteger, 10),
                "StreamTotalBufferCount": _DictNode("StreamTotalBufferCount", intfIInteger, 0, rw=False),
                "StreamLostFrameCount": _DictNode("StreamLostFrameCount", intfIInteger, 0, rw=False),
            }
        )

    def IsValid(self) -> bool:
        return self.valid

    def Init(self) -> None:
        self.arv_cam = Aravis.Camera.new(self.device_id)
        self.dev = self.arv_cam.get_device()

    def IsInitialized(self) -> bool:
        return self.dev is not None

    def DeInit(self) -> None:
        self.stream = self.dev = self.arv_cam = None

    def GetNodeMap(self) -> _NodeMap:
        if self.dev is None:
            raise SpinnakerException("camera not initialized", -1002)
        return _NodeMap(self.dev)

    def GetTLDeviceNodeMap(self) -> _NodeMap:
        return self.tl_device

    def GetTLStreamNodeMap(self) -> _NodeMap:
        return self.tl_stream

    def BeginAcquisition(self) -> None:
        self.stream = self.arv_cam.create_stream(None, None)
        n = self.tl_stream.nodes["StreamBufferCountManual"].value
        for _ in range(n):
            self.stream.push_buffer(Aravis.Buffer.new_allocate(self.arv_cam.get_payload()))
        self.arv_cam.start_acquisition()

    def IsStreaming(self) -> bool:
        return self.stream is not None

    def EndAcquisition(self) -> None:
        self.arv_cam.stop_acquisition()
        self.stream = None

    def GetNextImage(self, timeout_ms: int = 0xFFFFFFFF) -> _Image:
        if self.stream is None:
            raise SpinnakerException("camera is not streaming", -1002)
        buf = self.stream.timeout_pop_buffer(int(timeout_ms) * 1000)
        if buf is None:
            raise SpinnakerException(
                "Failed waiting for EventData on NEW_BUFFER_DATA event.", SPINNAKER_ERR_TIMEOUT
            )
        self.tl_stream.nodes["StreamTotalBufferCount"].value += 1
        return _Image(self, buf)


class CameraList:
    def __init__(self, cams: list[_Camera]):
        self.cams = cams

    def GetSize(self) -> int:
        return len(self.cams)

    def GetByIndex(self, i: int) -> _Camera:
        return self.cams[i]

    def GetBySerial(self, serial: str) -> _Camera:
        for c in self.cams:
            if c.tl_device.nodes["DeviceSerialNumber"].value == serial:
                return c
        raise SpinnakerException(f"no camera with serial {serial}", -1007)

    def Clear(self) -> None:
        self.cams = []


class System:
    _instance: System | None = None

    @classmethod
    def GetInstance(cls) -> System:
        if cls._instance is None:
            cls._instance = System()
        return cls._instance

    def GetCameras(self) -> CameraList:
        Aravis.enable_interface("Fake")
        Aravis.update_device_list()
        cams = []
        for i in range(Aravis.get_n_devices()):
            if Aravis.get_device_protocol(i) == "Fake":
                cams.append(
                    _Camera(
                        Aravis.get_device_id(i), Aravis.get_device_serial_nbr(i), "Fake (PySpin stand-in)"
                    )
                )
        return CameraList(cams)

    def ReleaseInstance(self) -> None:
        pass
