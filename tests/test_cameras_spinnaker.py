"""The spinnaker backend. PySpin ships only with FLIR's SDK, so these tests run where it is installed
(and, for the grabbing test, where a FLIR camera is attached and DEEPBEHAVIOR_HARDWARE=1)."""

from __future__ import annotations

import os

import pytest

from rig.cameras.base import backend_class
from rig.config import CameraConfig
from rig.errors import ConfigError, DeviceError

pytestmark = pytest.mark.timeout(60)


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
