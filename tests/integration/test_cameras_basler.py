"""The basler backend against pypylon's camera emulator (PYLON_CAMEMU, set before pypylon loads)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PYLON_CAMEMU", "2")

from rig.cameras.genicam_features import CameraFeatureError
from rig.config import CameraConfig
from rig.errors import AcquisitionTimeout, DeviceError

pytestmark = pytest.mark.timeout(60)
pytest.importorskip("pypylon.pylon")
basler = pytest.importorskip("rig.cameras.basler")
EMU = [c for c in basler.list_cameras() if c.interface == "BaslerCamEmu"]
if len(EMU) < 1:
    pytest.skip("pypylon camera emulator not visible (PYLON_CAMEMU set too late?)", allow_module_level=True)
SERIAL = EMU[0].serial


def cfg(**kw: object) -> CameraConfig:
    base: dict[str, object] = {"backend": "basler", "serial": SERIAL}
    base.update(kw)
    return CameraConfig(**base)  # type: ignore[arg-type]


def test_free_run_frames_and_stream_statistics() -> None:
    cam = basler.BaslerCamera("side", cfg(hardware_trigger=False, options={"fps": 50}))
    with cam:
        frames = [cam.grab(2.0) for _ in range(20)]
        stats = cam.stream_stats()
    assert all(f.image.shape == (460, 448) and f.image.dtype.name == "uint8" for f in frames)
    ids = [f.frame_id for f in frames]
    assert ids == list(range(ids[0], ids[0] + 20))
    assert stats["Statistic_Total_Buffer_Count"] >= 20 and stats["Statistic_Failed_Buffer_Count"] == 0
    assert all(f.t_device_ns == -1 for f in frames)  # the emulator reports timestamp 0: no clock


def test_software_trigger_and_close_disarms() -> None:
    c = cfg(options={"trigger_source": "Software", "trigger_rate_hz": 50})
    cam = basler.BaslerCamera("front", c)
    with cam:
        with pytest.raises(AcquisitionTimeout, match="camera 'front': no trigger pulse on Software"):
            cam.grab(0.2)
        ids = []
        for _ in range(4):
            cam.software_trigger()
            ids.append(cam.grab(2.0).frame_id)
        assert ids == list(range(ids[0], ids[0] + 4))
    probe = basler.BaslerCamera("probe", c)
    probe.open()
    try:
        assert probe.features.get("TriggerMode") == "Off"
    finally:
        probe.close()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (
            {"options": {"chunk_data": True, "trigger_source": "Line1"}},
            r"camera 'front': chunk data has no frame counter",
        ),
        ({"options": {"trigger_source": "Line9"}}, r"'TriggerSource' has no entry 'Line9'"),
        ({"exposure_us": 5000, "options": {"trigger_rate_hz": 250}}, r"ExposureTime 5000 us is longer"),
    ],
)
def test_feature_errors(kw: dict[str, object], match: str) -> None:
    cam = basler.BaslerCamera("front", cfg(**kw))
    cam.open()
    try:
        with pytest.raises(CameraFeatureError, match=match):
            cam.configure()
    finally:
        cam.close()


def test_serial_not_connected() -> None:
    with pytest.raises(
        DeviceError, match=r"camera 'front': Basler serial '1234' is not connected.*Emulation"
    ):
        basler.BaslerCamera("front", cfg(serial="1234")).open()
