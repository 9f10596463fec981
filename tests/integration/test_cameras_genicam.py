"""The genicam backend for real, through Harvesters and the viky.cti GenTL producer from the genicam wheel.

viky offers Mono8 at any size up to 800x800 and AcquisitionFrameRate, but no exposure, gain or trigger
features and no buffer timestamps; the tests use exactly that.
"""

from __future__ import annotations

import itertools

import pytest

from rig.cameras.genicam_features import CameraFeatureError
from rig.config import CameraConfig
from rig.errors import DeviceError

pytestmark = pytest.mark.timeout(60)
pytest.importorskip("harvesters.core")
genicam_mod = pytest.importorskip("rig.cameras.genicam")
CTI = genicam_mod.viky_cti()
if CTI is None:
    pytest.skip("the genicam wheel's viky.cti is not installed", allow_module_level=True)


def cfg(**kw: object) -> CameraConfig:
    opts = {"cti": str(CTI), "fps": 124, "ignore_missing": ["ExposureTime"]}
    opts.update(kw.pop("options", {}))  # type: ignore[arg-type]
    base: dict[str, object] = {
        "backend": "genicam",
        "serial": "1",
        "hardware_trigger": False,
        "options": opts,
    }
    base.update(kw)
    return CameraConfig(**base)  # type: ignore[arg-type]


def test_list_sees_the_three_viky_devices() -> None:
    cams = genicam_mod.list_cameras({"cti": str(CTI)})
    assert sorted(c.serial for c in cams) == ["0", "1", "2"]
    assert all("Viky" in c.model for c in cams)


def test_grab_mono8_448x460_with_consecutive_frame_ids() -> None:
    cam = genicam_mod.GenicamCamera("side", cfg())
    with cam:
        frames = [cam.grab(2.0) for _ in range(30)]
        stats = cam.stream_stats()
    assert cam.ia is None and cam.harvester is None  # closed
    assert all(f.image.shape == (460, 448) and f.image.dtype.name == "uint8" for f in frames)
    ids = [f.frame_id for f in frames]
    assert ids == list(range(ids[0], ids[0] + 30))
    assert all(f.lost_before == 0 and not f.incomplete for f in frames)
    assert all(f.t_device_ns == -1 for f in frames)  # viky has no timestamps: said so, not invented
    t = [f.t_host_ns for f in frames]
    assert all(b > a for a, b in itertools.pairwise(t))
    assert stats["lost_frames"] == 0 and stats["num_delivered"] >= 30
    assert any(f.image.std() > 0 for f in frames)


def test_serial_not_connected_names_camera_and_seen_devices() -> None:
    with pytest.raises(DeviceError, match=r"camera 'front'.*'9' is not connected.*0 \(Viky\)"):
        genicam_mod.GenicamCamera("front", cfg(serial="9")).open()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"options": {"ignore_missing": []}}, r"camera 'front'.*no exposure feature"),
        ({"hardware_trigger": True}, r"camera 'front'.*no feature 'TriggerMode'"),
        (
            {"options": {"chunk_data": True, "ignore_missing": ["ExposureTime"]}},
            r"chunk data has no frame counter",
        ),
        ({"width": 1000}, r"camera 'front': Width=1000 is outside"),
        ({"gain_db": 3.0}, r"camera 'front'.*no gain \(dB\) feature"),
    ],
)
def test_feature_errors_name_camera_and_feature(kw: dict[str, object], match: str) -> None:
    cam = genicam_mod.GenicamCamera("front", cfg(**kw))
    cam.open()
    try:
        with pytest.raises(CameraFeatureError, match=match):
            cam.configure()
    finally:
        cam.close()
    cam.close()  # twice is safe


def test_extra_features_are_set_and_checked() -> None:
    cam = genicam_mod.GenicamCamera("side", cfg(options={"features": {"AcquisitionFrameRate": 60.0}}))
    with cam:
        assert cam.features.get("AcquisitionFrameRate") == 60.0
        assert cam.applied.set["AcquisitionFrameRate"] == 60.0
    bad = genicam_mod.GenicamCamera("side", cfg(options={"features": {"BlackLevel": 3}}))
    bad.open()
    try:
        with pytest.raises(CameraFeatureError, match="camera 'side': the model has no feature 'BlackLevel'"):
            bad.configure()
    finally:
        bad.close()
