"""Typed settings (detector options, camera options per backend) and the preflight that checks everything
a session needs before any process starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from analysis.calibration_check import camera_problems, close_cameras, outside_images
from analysis.camera import Calibration, CameraModel, load_calibration, save_calibration
from detection.base import DetectionError
from detection.settings import DetectorOptions, DetectorSettings
from rig.config import CameraConfig, load_config
from rig.errors import CalibrationError, ConfigError, InputError, StorageError

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "detection" / "models" / "paw-yolo11p-96.onnx"
GOLDEN_CALIB = REPO / "tests" / "golden" / "session-v1" / "calibration.yaml"
BASE = REPO / "tests" / "bad_inputs" / "base.yaml"


def loaded_with(tmp_path: Path, calib: Calibration | None = None, **over: Any):
    """A config in ``tmp_path`` (synthetic cameras; ``calib`` saved next to it) with overrides."""
    raw = yaml.safe_load(BASE.read_text())
    if calib is not None:
        save_calibration(calib, tmp_path / "calib.yaml")
        raw["rig"]["calibration"] = "calib.yaml"
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    return load_config(p, {"session": {"output_dir": str(tmp_path / "out")}, **over})


# ----------------------------------------------------------------------------- detector options
def test_detector_options_have_types_and_defaults():
    o = DetectorOptions()
    assert (o.roi_size, o.search_scale, o.lost_frames, o.search_every, o.track_class) == (
        64,
        0.5,
        10,
        4,
        None,
    )
    assert (o.input_size, o.threads, o.iou, o.providers, o.fp16, o.cpu_fallback) == (
        None,
        1,
        0.5,
        None,
        True,
        True,
    )
    assert DetectorOptions.from_options({"roi_size": 96}).roi_size == 96
    assert DetectorOptions.from_options(o) is o


def test_unknown_detector_option_is_refused_with_a_hint():
    with pytest.raises(
        DetectionError, match=r"^options\.roi_sise: unknown key \(did you mean 'roi_size'\?\)"
    ):
        DetectorOptions.from_options({"roi_sise": 96})
    with pytest.raises(
        ConfigError, match=r"pipeline\.detector\.options\.roi_sise: unknown key \(did you mean 'roi_size'"
    ):
        load_config(None, {"pipeline": {"detector": {"options": {"roi_sise": 96}}}})
    with pytest.raises(
        ConfigError, match=r"pipeline\.detector\.options\.search_scale: Input should be less than"
    ):
        load_config(None, {"pipeline": {"detector": {"options": {"search_scale": 2}}}})


def test_the_rig_detector_config_is_the_detection_settings():
    dc = load_config(None).config.pipeline.detector
    assert isinstance(dc, DetectorSettings) and isinstance(dc.options, DetectorOptions)
    assert dc.options.roi_size == 64  # configs/sim-reaching.yaml


# ----------------------------------------------------------------------------- camera options
CAMERA_OPTIONS = {  # backend -> (a valid key and value, a misspelt key, the key it should suggest)
    "synthetic": (None, "devce_id", None),
    "replay": (("path", "x"), "pth", "path"),
    "spinnaker": (("chunk_data", False), "chunk_date", "chunk_data"),
    "genicam": (("cti", "/x.cti"), "devce_id", "device_id"),
    "aravis": (("fake_line_hz", 50), "devce_id", "device_id"),
    "basler": (("trigger_source", "Line1"), "trigger_sorce", "trigger_source"),
    "opencv": (("device", 0), "devise", "device"),
}


@pytest.mark.parametrize("backend", sorted(CAMERA_OPTIONS))
def test_each_backend_has_its_own_options(backend):
    from rig.cameras.base import backend_class

    good, bad, hint = CAMERA_OPTIONS[backend]
    model = backend_class(backend).options_model
    assert model.__module__.startswith("rig.cameras.")
    extra = {} if backend != "replay" else {"path": "x"}
    if good is not None:
        cfg = CameraConfig(backend=backend, hardware_trigger=False, options={**extra, good[0]: good[1]})
        assert isinstance(cfg.options, model) and getattr(cfg.options, good[0]) == good[1]
    raw = {
        "rig": {
            "cameras": {
                "front": {"backend": backend, "hardware_trigger": False, "options": {**extra, bad: 1}}
            }
        }
    }
    with pytest.raises(ConfigError) as exc:
        load_config(BASE, raw)
    line = str(exc.value).splitlines()[0]
    assert f"rig.cameras.front.options.{bad}: unknown key" in line
    if hint:
        assert f"(did you mean {hint!r}?)" in line
    else:
        assert "the 'synthetic' backend takes no options" in line


def test_camera_options_keep_their_values_in_the_resolved_config():
    cfg = CameraConfig(
        backend="aravis", hardware_trigger=False, options={"device_id": "X", "ignore_missing": "Gain"}
    )
    dumped = cfg.model_dump(mode="json")["options"]
    assert dumped["device_id"] == "X" and dumped["ignore_missing"] == ["Gain"]
    assert CameraConfig.model_validate(cfg.model_dump()).options == cfg.options
    with pytest.raises(ValueError, match=r"options\.path\s+Field required"):
        CameraConfig(backend="replay")


# ----------------------------------------------------------------------------- calibration checks
def test_calibration_checks_are_pure_and_name_the_field():
    calib = load_calibration(GOLDEN_CALIB)
    assert all(not camera_problems(c) for c in calib.cameras.values())
    assert close_cameras(calib) == [] and outside_images(calib, {"pellet": (0, 0, 0)}) == []
    front = calib["front"]
    nan = CameraModel("front", front.size, np.full((3, 3), np.nan), front.dist, front.rvec, front.tvec)
    assert camera_problems(nan) == ["cameras.front.matrix: not finite (9 NaN/inf)"]
    zero = CameraModel("front", front.size, np.zeros((3, 3)), front.dist, front.rvec, front.tvec)
    assert camera_problems(zero)[0] == "cameras.front.matrix: focal lengths fx=0, fy=0 px must be positive"
    off = front.matrix.copy()
    off[0, 2] = -5
    assert (
        "principal point (-5, 226) px is outside the 448x460 image"
        in camera_problems(CameraModel("front", front.size, off, front.dist, front.rvec, front.tvec))[0]
    )
    copy = Calibration(
        {
            "front": front,
            "side": CameraModel("side", front.size, front.matrix, front.dist, front.rvec, front.tvec),
        }
    )
    assert [(a, b) for a, b, *_ in close_cameras(copy, same_direction_deg=5)] == [("front", "side")]
    far = outside_images(calib, {"pellet": (0, 0, 60)})
    assert far and far[0].startswith("pellet (0.0, 0.0, 60.0) projects to (")


# ----------------------------------------------------------------------------- preflight
def test_preflight_of_the_default_config_lists_what_it_checked(tmp_path):
    from rig.preflight import preflight

    loaded = load_config(None, {"session": {"output_dir": str(tmp_path)}})
    text = "\n".join(str(f) for f in preflight(loaded))
    assert "calibration: builtin:synthetic: front 448x460" in text
    assert "experiment.reaching.pellet_xyz_mm" in text
    assert (
        f"detector model: {MODEL} loads in ONNX Runtime (runner onnxruntime): input (batch, 3, height, width)"
        in text
    )
    assert "classes: paw" in text and "trained at [96, 96]" in text
    assert f"output: {tmp_path} writable;" in text


def test_preflight_refuses_broken_models(tmp_path):
    from rig.preflight import check_detector

    def det(model: str, runner: str = "onnxruntime", **opts: Any):
        over = {"pipeline": {"detector": {"runner": runner, "model": model, "options": opts}}}
        return check_detector(loaded_with(tmp_path, **over))

    (tmp_path / "random.onnx").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(
        ConfigError,
        match=rf"pipeline\.detector\.model: {tmp_path / 'random.onnx'}: not a loadable ONNX model",
    ):
        det("random.onnx")
    with pytest.raises(
        ConfigError, match=rf"pipeline\.detector\.model: {tmp_path / 'none.onnx'}: model file not found$"
    ):
        det("none.onnx")
    (tmp_path / "paw.engine").write_bytes(b"ftrt" + bytes(64))
    with pytest.raises(ConfigError, match=r"paw\.engine: a serialized TensorRT engine"):
        det("paw.engine", "tensorrt")
    (tmp_path / "ultra.engine").write_bytes((2).to_bytes(4, "little") + b"{}" + b"ftrt" + bytes(8))
    with pytest.raises(ConfigError, match=r"ultra\.engine: a serialized TensorRT engine"):
        det("ultra.engine", "tensorrt")
    from detection.runners import gpu_visible

    found = det(str(MODEL), "tensorrt")
    if not gpu_visible():
        assert found[-1].warning and "no NVIDIA GPU is visible" in found[-1].text
        with pytest.raises(ConfigError, match=r"options\.cpu_fallback is false"):
            det(str(MODEL), "tensorrt", cpu_fallback=False)
    with pytest.raises(ConfigError, match="disagrees with the configured input_size 64"):
        _fixed_shape_model(tmp_path, det)


def _fixed_shape_model(tmp_path: Path, det: Any) -> None:
    """A fixed 96-px ONNX model asked to letterbox to 64 px is refused by its runner, in preflight."""
    onnx = pytest.importorskip("onnx")
    m = onnx.load(str(MODEL))
    for d, v in zip(m.graph.input[0].type.tensor_type.shape.dim, (1, 3, 96, 96)):
        d.dim_value = v
    onnx.save(m, str(tmp_path / "fixed.onnx"))
    det("fixed.onnx", input_size=64)


def test_preflight_refuses_implausible_calibrations(tmp_path):
    from rig.preflight import check_calibration

    calib = load_calibration(GOLDEN_CALIB)
    front, side = calib["front"], calib["side"]

    def with_front(**kw: Any) -> Calibration:
        args = {"matrix": front.matrix, "rvec": front.rvec, "tvec": front.tvec, **kw}
        return Calibration({"front": CameraModel("front", front.size, dist=front.dist, **args), "side": side})

    where = str(tmp_path / "calib.yaml")
    with pytest.raises(CalibrationError, match=rf"^{where}: cameras\.front\.matrix: not finite"):
        check_calibration(loaded_with(tmp_path, with_front(matrix=np.full((3, 3), np.nan))))
    with pytest.raises(
        CalibrationError, match=r"cameras\.front\.matrix: focal lengths fx=0, fy=0 px must be positive"
    ):
        check_calibration(loaded_with(tmp_path, with_front(matrix=np.zeros((3, 3)))))
    same = Calibration(
        {
            "front": front,
            "side": CameraModel("side", side.size, side.matrix, side.dist, front.rvec, front.tvec),
        }
    )
    with pytest.raises(CalibrationError, match=r"cameras 'front' and 'side' are 0\.00 mm apart"):
        check_calibration(loaded_with(tmp_path, same))
    with pytest.raises(
        ConfigError, match=r"experiment\.reaching\.pellet_xyz_mm \(0\.0, 0\.0, 60\.0\) projects to"
    ):
        check_calibration(
            loaded_with(tmp_path, calib, experiment={"reaching": {"pellet_xyz_mm": [0, 0, 60]}})
        )
    assert check_calibration(loaded_with(tmp_path, calib))[0].text.startswith(f"{where}: front 448x460")


def test_preflight_checks_the_output_folder_and_its_free_space(tmp_path):
    from rig.preflight import BYTES_PER_PIXEL_LOSSY, bytes_per_frame, check_output, needed_bytes

    loaded = loaded_with(tmp_path)
    cfg = loaded.config
    assert bytes_per_frame(cfg, "front") == 448 * 460 * BYTES_PER_PIXEL_LOSSY + 1024
    assert needed_bytes(cfg) == pytest.approx(
        cfg.experiment.max_duration_s * 124 * 2 * bytes_per_frame(cfg, "front")
    )
    assert "writable" in check_output(loaded)[0].text and not (tmp_path / "out").exists()  # nothing created
    (tmp_path / "file").write_text("")
    with pytest.raises(
        StorageError, match=rf"session\.output_dir: {tmp_path / 'file'} is a file, not a folder"
    ):
        check_output(
            load_config(tmp_path / "c.yaml", {"session": {"output_dir": str(tmp_path / "file" / "x")}})
        )
    # max_duration_s is an upper bound: room for less is a warning, room for less than a minute refused
    long = check_output(loaded_with(tmp_path, experiment={"max_duration_s": 1e9}))
    assert long[0].warning and "it stops with 'disk full' after about" in long[0].text
    import shutil

    real = shutil.disk_usage
    per_s = needed_bytes(cfg) / cfg.experiment.max_duration_s
    try:
        shutil.disk_usage = lambda p: real(p)._replace(free=int(per_s * 30))  # type: ignore[assignment]
        with pytest.raises(StorageError, match=r"[GM]B free, not enough for the first 60 s at 124 Hz"):
            check_output(loaded)
    finally:
        shutil.disk_usage = real


def test_preflight_checks_replay_sources(tmp_path):
    from rig.preflight import check_replay_sources

    raw = {"rig": {"calibration": str(GOLDEN_CALIB), "cameras": {
        "front": {"backend": "replay", "options": {"path": "gone"}},
        "side": {"backend": "replay", "options": {"path": "gone"}},
    }}, "pipeline": {"detector": {"enabled": False}}}  # fmt: skip
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(
        InputError, match=rf"rig\.cameras\.front\.options\.path: {tmp_path / 'gone'} not found$"
    ):
        check_replay_sources(load_config(p))
