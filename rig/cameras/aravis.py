"""GigE Vision / USB3 Vision cameras through Aravis 0.8 (PyGObject).

Config: ``backend: aravis``, ``serial`` (Aravis' serial number; or ``options.device_id``, e.g.
``Aravis-Fake-PAW01``). ``options.fake_interface: true`` also enables Aravis' in-process "Fake"
interface (test only), whose Line0 trigger is simulated as pulses at ``options.fake_line_hz`` (Aravis'
default 25 Hz); both are for tests and demos only. Features go through
:mod:`rig.cameras.genicam_features`; frame ids are the GVSP block ids (16-bit, wrapping, unwrapped
here), device timestamps the buffer timestamps, and lost packets/frames come from the stream's
statistics. ``trigger_source: Software`` with
:meth:`AravisCamera.software_trigger` drives a camera without trigger hardware.
"""

from __future__ import annotations

import gc
import logging
import threading
from typing import Any

import numpy as np
from pydantic import Field

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

_lock = threading.Lock()
FAKE_DEFAULT_LINE_HZ = 25.0  # Aravis' Fake camera's simulated trigger rate


def import_aravis() -> Any:
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis
    except (ImportError, ValueError) as exc:
        raise ConfigError(
            f"camera backend 'aravis' needs PyGObject and gir1.2-aravis-0.8 (scripts/setup.sh): {exc}"
        ) from None
    return Aravis


class AravisAccess(FeatureAccess):
    def __init__(self, camera: str, device: Any, aravis: Any):
        super().__init__(camera)
        self.dev = device
        self.arv = aravis

    def _node(self, name: str) -> Any:
        return self.dev.get_feature(name)

    def kind(self, name: str) -> str | None:
        n = self._node(name)
        if n is None or not n.is_implemented() or not n.is_available():
            return None
        a = self.arv
        for cls, k in (
            (a.GcEnumeration, "enum"),
            (a.GcCommand, "command"),
            (a.GcBoolean, "bool"),
            (a.GcInteger, "int"),
            (a.GcFloat, "float"),
            (a.GcString, "string"),
        ):
            if isinstance(n, cls):
                return k
        return "other"

    def writable(self, name: str) -> bool:
        mode = self._node(name).get_actual_access_mode()
        return mode in (self.arv.GcAccessMode.RW, self.arv.GcAccessMode.WO)

    def get(self, name: str) -> Any:
        k = self.kind(name)
        d = self.dev
        if k == "int":
            return d.get_integer_feature_value(name)
        if k == "float":
            return d.get_float_feature_value(name)
        if k == "bool":
            return d.get_boolean_feature_value(name)
        return d.get_string_feature_value(name)

    def _set(self, name: str, value: Any) -> None:
        k = self.kind(name)
        d = self.dev
        if k == "int":
            d.set_integer_feature_value(name, int(value))
        elif k == "float":
            d.set_float_feature_value(name, float(value))
        elif k == "bool":
            d.set_boolean_feature_value(name, bool(value))
        else:
            d.set_string_feature_value(name, str(value))

    def entries(self, name: str) -> list[str]:
        return list(self.dev.dup_available_enumeration_feature_values_as_strings(name))

    def _execute(self, name: str) -> None:
        self.dev.execute_command(name)

    def bounds(self, name: str) -> tuple[float, float, int] | None:
        if self.kind(name) == "int":
            lo, hi = self.dev.get_integer_feature_bounds(name)
            return float(lo), float(hi), int(self.dev.get_integer_feature_increment(name))
        lo, hi = self.dev.get_float_feature_bounds(name)
        return float(lo), float(hi), 1


def _drop(refs: list[Any]) -> None:
    refs.clear()
    gc.collect()


class AravisOptions(GenICamOptions):
    """``rig.cameras.<name>.options`` of an Aravis camera: the GenICam options, plus the device and
    Aravis' in-process Fake camera (tests)."""

    device_id: str | None = Field(
        None, description="Aravis device id (e.g. Aravis-Fake-PAW01), instead of 'serial'"
    )
    fake_interface: bool = Field(False, description="also enable Aravis' in-process Fake interface (tests)")
    fake_line_hz: float | None = Field(
        None, gt=0, description="Fake camera only: simulated Line0 trigger pulses per second"
    )


def list_cameras(options: dict[str, Any] | None = None) -> list[CameraInfo]:
    arv = import_aravis()
    with _lock:
        if (options or {}).get("fake_interface"):
            arv.enable_interface("Fake")
        arv.update_device_list()
        return [
            CameraInfo(
                "aravis",
                f"{arv.get_device_vendor(i)} {arv.get_device_model(i)}",
                arv.get_device_serial_nbr(i) or "",
                f"{arv.get_device_protocol(i)} {arv.get_device_address(i) or ''}".strip(),
                {"id": arv.get_device_id(i)},
            )
            for i in range(arv.get_n_devices())
        ]


class AravisCamera(CameraBackend):
    backend_name = "aravis"
    options_model = AravisOptions

    cam: Any = None
    stream: Any = None
    _dead = False  # the device stopped answering: close() must not wait on it

    def open(self) -> None:
        arv = self.arv = import_aravis()
        opts = self._options()
        cams = list_cameras({"fake_interface": opts.fake_interface})
        key = opts.device_id
        if key is not None:
            match = [c for c in cams if c.extra["id"] == key]
        else:
            match = [c for c in cams if self.config.serial is None or c.serial == self.config.serial]
        if not match:
            seen = ", ".join(f"{c.serial} ({c.model}, {c.interface})" for c in cams) or "none"
            raise DeviceError(
                f"camera {self.name!r}: Aravis serial {self.config.serial or key!r} is not connected "
                f"(seen: {seen})"
            )
        self._info = match[0]
        try:
            self.cam = arv.Camera.new(match[0].extra["id"])
        except Exception as exc:  # GLib.GError
            raise DeviceError(f"camera {self.name!r}: cannot open {match[0].extra['id']}: {exc}") from exc
        self.dev = self.cam.get_device()
        self._lost_control = threading.Event()
        self.dev.connect("control-lost", lambda *_: self._lost_control.set())
        self.features = AravisAccess(self.name, self.dev, arv)
        gv = self._info.interface.startswith("GigEVision")
        self.counter = FrameCounter(bits=16, skip_zero=True) if gv else FrameCounter(bits=64)

    def configure(self) -> None:
        self.applied = apply_camera_config(
            self.features, self.config, trigger_rate_hz=self.context.get("trigger_rate_hz")
        )
        if self.cam.is_gv_device() and "GevSCPSPacketSize" not in self._options().features:
            try:  # the largest packet the path to the host carries (jumbo frames when the NIC allows)
                size = self.cam.gv_auto_packet_size()
                log.info("camera %s: GigE packet size %d bytes", self.name, size)
            except Exception as exc:  # GError: keep the camera's setting
                log.warning(
                    "camera %s: packet size negotiation failed (%s); kept %d",
                    self.name,
                    exc,
                    self.cam.gv_get_packet_size(),
                )
        line_hz = self._options().fake_line_hz
        if line_hz is not None:
            if not hasattr(self.dev, "get_fake_camera"):
                raise ConfigError(
                    f"rig.cameras.{self.name}.options.fake_line_hz: only Aravis' in-process Fake camera "
                    "simulates trigger pulses"
                )
            self.dev.get_fake_camera().set_trigger_frequency(float(line_hz))
            self._fake_line_set = True

    def start(self) -> None:
        self.cam.set_acquisition_mode(self.arv.AcquisitionMode.CONTINUOUS)
        payload = self.cam.get_payload()
        self.stream = self.cam.create_stream(None, None)
        for _ in range(self.config.ring_slots):
            self.stream.push_buffer(self.arv.Buffer.new_allocate(payload))
        self.cam.start_acquisition()

    def _options(self) -> AravisOptions:
        opts = self.config.options
        assert isinstance(opts, AravisOptions)
        return opts

    def software_trigger(self) -> None:
        """Fire one software trigger (``options.trigger_source: Software``)."""
        self.features.execute("TriggerSoftware")

    def _check_alive(self) -> None:
        try:
            self.dev.get_integer_feature_value("Width")
            alive = not self._lost_control.is_set()
        except Exception:  # GError when the device does not answer
            alive = False
        if not alive:
            self._dead = True
            raise DeviceError(f"camera {self.name!r} ({self._info.extra['id']}): control lost (unplugged?)")

    def grab(self, timeout_s: float) -> GrabbedFrame:
        if self._lost_control.is_set():
            self._check_alive()
        buf = self.stream.timeout_pop_buffer(max(1, int(timeout_s * 1e6)))
        t_host = now_ns()
        if buf is None:
            self._check_alive()
            raise AcquisitionTimeout(timeout_message(self.name, self.config, self.applied, timeout_s))
        try:
            ok = buf.get_status() == self.arv.BufferStatus.SUCCESS
            raw_id = int(buf.get_frame_id())
            t_dev = int(buf.get_timestamp())
            w, h = self.config.width, self.config.height
            data = buf.get_data() if ok else b""
            if ok and len(data) >= w * h:
                image = np.frombuffer(data, np.uint8, w * h).reshape(h, w).copy()
            else:
                ok = False
                image = np.zeros((h, w), np.uint8)
        finally:
            self.stream.push_buffer(buf)
        fid, lost = self.counter.update(raw_id, not ok)
        return GrabbedFrame(image, fid, t_host, t_device_ns=t_dev, lost_before=lost, incomplete=not ok)

    def stop(self) -> None:
        if self.cam is not None and not self._dead:
            try:
                self.cam.stop_acquisition()
            except Exception as exc:
                log.warning("camera %s: stop_acquisition failed: %s", self.name, exc)

    def close(self) -> None:
        if self.cam is None:
            return
        if self._dead:
            log.warning("camera %s: device lost; released without stopping it", self.name)
        self.stop()
        if not self._dead:
            disarm(self.features)
        if getattr(self, "_fake_line_set", False):
            self.dev.get_fake_camera().set_trigger_frequency(FAKE_DEFAULT_LINE_HZ)  # process-wide object
        refs = [self.stream, self.features, self.dev, self.cam]
        self.stream = self.features = self.dev = self.cam = None  # type: ignore[assignment]
        if self._dead:
            # Releasing a vanished GigE device waits on control-channel timeouts (~10 s): do it off the
            # caller's thread so the node can stop and close its files at once.
            threading.Thread(target=_drop, args=(refs,), name=f"arv-release-{self.name}", daemon=True).start()
        else:
            _drop(refs)  # release the GigE control channel now, not at interpreter exit

    def info(self) -> CameraInfo:
        return self._info

    def stream_stats(self) -> dict[str, float]:
        out = self.counter.stats()
        if self.stream is not None:
            for i in range(self.stream.get_n_infos()):
                name = self.stream.get_info_name(i)
                is_int = self.stream.get_info_type(i).name == "guint64"
                get = self.stream.get_info_uint64 if is_int else self.stream.get_info_double
                out[name] = float(get(i))
        return out
