"""The spinnaker backend. PySpin ships only with FLIR's SDK, so these tests run where it is installed
(and, for the grabbing test, where a FLIR camera is attached and DEEPBEHAVIOR_HARDWARE=1)."""

from __future__ import annotations

import os

import pytest

from rig.cameras.base import backend_class
from rig.config import CameraConfig
from rig.errors import ConfigError, DeviceError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def _has_pyspin() -> bool:
    try:
        import PySpin
    except ImportError:
        return False
    return hasattr(PySpin, "System")


needs_pyspin = pytest.mark.skipif(
    not _has_pyspin(), reason="PySpin (FLIR Spinnaker SDK) is not installed; it is not on PyPI"
)


def test_backend_module_imports_without_pyspin() -> None:
    cls = backend_class("spinnaker")  # lazy: no PySpin needed to import
    if not _has_pyspin():
        with pytest.raises(ConfigError, match="needs PySpin"):
            cls("front", CameraConfig(backend="spinnaker", serial="123")).open()


@needs_pyspin
def test_serial_not_connected() -> None:
    from rig.cameras.spinnaker import SpinnakerCamera

    with pytest.raises(DeviceError, match=r"camera 'front': FLIR serial '00000000' is not connected"):
        SpinnakerCamera("front", CameraConfig(backend="spinnaker", serial="00000000")).open()


@needs_pyspin
@pytest.mark.hardware
def test_free_run_grab_with_chunk_ids() -> None:
    from rig.cameras.spinnaker import SpinnakerCamera, list_cameras

    cams = list_cameras()
    if not cams:
        pytest.skip("no FLIR camera attached")
    serial = os.environ.get("DEEPBEHAVIOR_FLIR_SERIAL", cams[0].serial)
    c = CameraConfig(backend="spinnaker", serial=serial, hardware_trigger=False, options={"fps": 30})
    cam = SpinnakerCamera("front", c)
    with cam:
        frames = [cam.grab(2.0) for _ in range(30)]
        stats = cam.stream_stats()
    ids = [f.frame_id for f in frames]
    assert ids == list(range(ids[0], ids[0] + 30))
    assert all(f.t_device_ns > 0 for f in frames)
    assert stats["lost_frames"] == 0


# --------------------------------------------------------------------------- with the named stand-in
@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> object:
    """Install tests/pyspin_standin.py (PySpin's documented API over Aravis' in-process Fake camera)
    as ``PySpin`` for this test only; skipped where real PySpin is installed (the tests above run)."""
    if _has_pyspin():
        pytest.skip("real PySpin installed: the stand-in is not needed")
    pytest.importorskip("gi")
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
    try:
        import pyspin_standin
    finally:
        sys.path.pop(0)
    monkeypatch.setitem(sys.modules, "PySpin", pyspin_standin)
    return pyspin_standin


def test_standin_free_run_and_stream_settings(standin: object) -> None:
    from rig.cameras.spinnaker import SpinnakerCamera, list_cameras

    assert [c.serial for c in list_cameras()] == ["1"]
    c = CameraConfig(
        backend="spinnaker", serial="1", hardware_trigger=False, options={"fps": 124, "chunk_data": False}
    )
    cam = SpinnakerCamera("front", c)
    with cam:
        assert cam.stream.get("StreamBufferHandlingMode") == "OldestFirst"  # never re-delivers a frame
        assert cam.stream.get("StreamBufferCountManual") == c.ring_slots
        frames = [cam.grab(2.0) for _ in range(12)]
        stats = cam.stream_stats()
    assert all(f.image.shape == (460, 448) for f in frames)
    ids = [f.frame_id for f in frames]
    assert ids == list(range(ids[0], ids[0] + 12))
    assert stats["StreamTotalBufferCount"] == 12 and stats["StreamLostFrameCount"] == 0
    assert cam.cam is None and cam.system is None


def test_standin_errors_name_camera_and_feature(standin: object) -> None:
    from rig.cameras.genicam_features import CameraFeatureError
    from rig.cameras.spinnaker import SpinnakerCamera

    with pytest.raises(DeviceError, match=r"camera 'front': FLIR serial '99' is not connected \(seen: 1\)"):
        SpinnakerCamera("front", CameraConfig(backend="spinnaker", serial="99")).open()
    cam = SpinnakerCamera(
        "front", CameraConfig(backend="spinnaker", serial="1", options={"trigger_rate_hz": 50})
    )
    cam.open()
    try:  # chunk data is on by default for FLIR cameras; this model has none
        with pytest.raises(
            CameraFeatureError, match=r"camera 'front'.*no chunk data feature \(ChunkModeActive\)"
        ):
            cam.configure()
    finally:
        cam.close()


def test_standin_trigger_timeout_and_disarm(standin: object) -> None:
    """Line0 trigger: the Fake camera simulates pulses on Line0; slowed to one per 2 s, a 0.3 s grab
    right after a frame must time out with the GetNextImage timeout mapped to AcquisitionTimeout."""
    from rig.cameras.spinnaker import SpinnakerCamera
    from rig.errors import AcquisitionTimeout

    opts = {"trigger_source": "Line0", "chunk_data": False, "trigger_rate_hz": 50}
    cam = SpinnakerCamera("front", CameraConfig(backend="spinnaker", serial="1", options=opts))
    cam.open()
    cam.configure()
    assert cam.features.get("TriggerMode") == "On" and cam.features.get("TriggerSource") == "Line0"
    cam.cam.dev.get_fake_camera().set_trigger_frequency(0.5)
    try:
        cam.start()
        assert cam.grab(3.0).image.shape == (460, 448)
        with pytest.raises(
            AcquisitionTimeout, match=r"camera 'front': no trigger pulse on Line0 within 0.300 s"
        ):
            cam.grab(0.3)
        features = cam.features
    finally:
        cam.stop()
        cam.close()
        # leave the process-wide Fake camera as other tests expect it
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis

        Aravis.Camera.new("Fake_1").get_device().get_fake_camera().set_trigger_frequency(25.0)
    assert features.get("TriggerMode") == "Off"  # close() left it un-triggered
