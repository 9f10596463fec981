"""The preflight's recorder-rate check (issue 14, sizing): the encoding cost is measured on the machine,
set against the cores this process may use, and a rig the machine cannot encode at the trigger rate is
a loud warning for ``config`` naming the setting to change, refused by ``run``/``record`` where the
backlog would fill the RAM buffer and the disk before ``experiment.max_duration_s``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from rig import preflight
from rig.config import REPO_ROOT, LoadedConfig, RecorderConfig, load_config
from rig.errors import ConfigError
from rig.preflight import EncodeCost, backlog_bytes, check_recorder_rate, measure_encode_cost, sustained_rates

CONFIGS = REPO_ROOT / "configs"
Usage = namedtuple("Usage", "total used free")


def template(name: str, tmp_path: Path, **over: object) -> LoadedConfig:
    return load_config(CONFIGS / f"{name}.yaml", {"session": {"output_dir": str(tmp_path)}, **over})


def fixed_machine(monkeypatch: pytest.MonkeyPatch, cpu_ms: float, cores: int, free_bytes: float) -> None:
    """A machine with ``cores`` cores where every frame costs ``cpu_ms`` and the disk has ``free_bytes``."""
    monkeypatch.setattr(
        preflight, "measure_encode_cost", lambda w, h, rate, rc: EncodeCost(cpu_ms, cpu_ms, 1e5, 20)
    )
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(free_bytes, 0, free_bytes))


# ----------------------------------------------------------------------------- the model
def test_sustained_rates_are_capped_by_rate_threads_and_cores() -> None:
    two = {"left": 9.0, "right": 9.0}  # ms CPU per frame
    # one thread per camera: 1000 / 9 = 111 frames/s each, 2.0 cores in all: fits 2 cores
    assert sustained_rates(two, 170, threads=1, cores=2) == pytest.approx({"left": 1e3 / 9, "right": 1e3 / 9})
    # two threads each would need 2 x 170 x 9 ms = 3.06 cores: shared out over the 2 there are
    assert sustained_rates(two, 170, threads=2, cores=2) == pytest.approx({"left": 1e3 / 9, "right": 1e3 / 9})
    assert sustained_rates(two, 170, threads=2, cores=8) == {"left": 170, "right": 170}
    assert sustained_rates({"front": 1.3, "side": 1.3}, 124, threads=1, cores=2) == {
        "front": 124,
        "side": 124,
    }
    # b's one thread encodes 83.3 of 100 frames/s; a wants 0.4 core and b 1.0: 1.4 cores shared out over 1
    uneven = sustained_rates({"a": 4.0, "b": 12.0}, 100, threads=1, cores=1)
    assert uneven == pytest.approx({"a": 100 / 1.4, "b": 1e3 / 12 / 1.4})


def test_backlog_fills_ram_first_then_the_spill() -> None:
    frame = {"left": 1280 * 1024, "right": 1280 * 1024}
    deficit = {"left": 59.0, "right": 59.0}
    assert backlog_bytes(deficit, frame, ram_frames=1700, t_s=20) == 0  # 1180 frames: still in RAM
    assert backlog_bytes(deficit, frame, ram_frames=1700, t_s=100) == pytest.approx(2 * 4200 * 1280 * 1024)


# ----------------------------------------------------------------------------- the check (fixed costs)
def test_unsustainable_rig_warns_in_config_and_is_refused_by_run_when_the_disk_cannot_hold_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fixed_machine(monkeypatch, cpu_ms=9.0, cores=2, free_bytes=50e9)
    loaded = template("human", tmp_path)  # 2 x 1280x1024 at 170 Hz, 600 s
    (f,) = check_recorder_rate(loaded)
    assert f.warning and "CANNOT KEEP UP" in f.text and "`run` and `record` refuse it" in f.text, f.text
    assert "~111 of 170 frames/s per camera" in f.text and "frames are lost" in f.text, f.text
    assert "pipeline.recorder.codec: h264_nvenc" in f.text and "\n" not in f.text
    with pytest.raises(
        ConfigError, match=r"human\.yaml: pipeline\.recorder: CANNOT KEEP UP.*recorder\.codec"
    ):
        check_recorder_rate(loaded, session=True)


def test_unsustainable_rig_with_room_for_its_backlog_runs_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fixed_machine(monkeypatch, cpu_ms=9.0, cores=2, free_bytes=10e12)
    (f,) = check_recorder_rate(template("human", tmp_path), session=True)
    assert f.warning and "none lost while the disk lasts" in f.text and "refuse" not in f.text, f.text
    # 58.9 frames/s per camera behind, 1.31 MB each: 154 MB/s raw to the spill
    assert "raw on disk (154 MB/s" in f.text, f.text
    # a short session's backlog fits the RAM buffer (10 s of frames): a warning, never a refusal, even
    # where the video alone would fill the disk (that is the output check's warning, not this one's)
    fixed_machine(monkeypatch, cpu_ms=9.0, cores=2, free_bytes=1e8)
    short = template("human", tmp_path, experiment={"max_duration_s": 3})
    (f,) = check_recorder_rate(short, session=True)
    assert f.warning and "in RAM (buffer_s 10), where a 3 s session's backlog fits" in f.text, f.text


def test_the_named_setting_is_the_one_that_helps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fixed_machine(monkeypatch, cpu_ms=9.0, cores=8, free_bytes=10e12)
    (f,) = check_recorder_rate(template("human", tmp_path))  # 3.06 cores of 8, one thread per camera
    assert f.warning and "set pipeline.recorder.threads: 2" in f.text, f.text
    (f,) = check_recorder_rate(template("human", tmp_path, pipeline={"recorder": {"threads": 2}}))
    assert not f.warning and "~3.06 cores of encoding" in f.text, f.text
    slow = template("human", tmp_path, pipeline={"recorder": {"preset": "veryfast"}})
    (f,) = check_recorder_rate(slow)
    assert f.warning and "set pipeline.recorder.preset: ultrafast" in f.text, f.text


def test_a_recorder_that_is_off_or_cheap_is_fine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fixed_machine(monkeypatch, cpu_ms=1.3, cores=2, free_bytes=10e12)
    (f,) = check_recorder_rate(template("reaching", tmp_path), session=True)
    assert not f.warning and "~0.32 cores of encoding" in f.text, f.text
    off = template("human", tmp_path, pipeline={"recorder": {"enabled": False}})
    assert check_recorder_rate(off, session=True)[0].text == "off"


# ----------------------------------------------------------------------------- measured on this machine
def test_the_encode_cost_is_measured_and_grows_with_the_frame() -> None:
    small = measure_encode_cost(448, 460, 124, RecorderConfig())
    large = measure_encode_cost(1280, 1024, 170, RecorderConfig())
    assert small.frames >= 6 and large.frames >= 6
    assert 0 < small.cpu_ms < large.cpu_ms  # 6.4x the pixels
    # noisy frames do not compress like constant ones: crf 12 keeps the sensor noise (tens of kB a frame)
    assert large.video_bytes > 0.05 * 1280 * 1024


def test_an_encoder_the_machine_lacks_is_stated_and_refused(tmp_path: Path) -> None:
    nvenc = template("reaching", tmp_path, pipeline={"recorder": {"codec": "h264_nvenc"}})
    try:
        measure_encode_cost(448, 460, 124, nvenc.config.pipeline.recorder)
    except Exception:
        pass
    else:
        pytest.skip("h264_nvenc encodes on this machine (an NVIDIA GPU with NVENC)")
    (f,) = check_recorder_rate(nvenc)
    assert f.warning and "pipeline.recorder.codec: h264_nvenc does not encode on this machine" in f.text
    with pytest.raises(ConfigError, match=r"reaching\.yaml: pipeline\.recorder\.codec: h264_nvenc does not"):
        check_recorder_rate(nvenc, session=True)


def _cli_config(name: str, tmp_path: Path) -> str:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "rig.cli",
            "config",
            str(CONFIGS / f"{name}.yaml"),
            "--set",
            f"session.output_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    (line,) = [ln.strip() for ln in r.stdout.splitlines() if "recorder:" in ln]
    return line


def test_config_warns_for_the_human_template_on_this_machine(tmp_path: Path) -> None:
    cost = measure_encode_cost(1280, 1024, 170, load_config(CONFIGS / "human.yaml").config.pipeline.recorder)
    cores = len(os.sched_getaffinity(0))
    if cost.cpu_ms * 170 / 1e3 <= 1 and 2 * cost.cpu_ms * 170 / 1e3 <= cores:
        pytest.skip(f"this machine encodes 1280x1024 in {cost.cpu_ms:.1f} ms on {cores} cores: it keeps up")
    line = _cli_config("human", tmp_path)
    assert line.startswith("WARN  recorder: CANNOT KEEP UP: 2 camera(s) at 170 Hz"), line
    assert "pipeline.recorder.codec" in line or "pipeline.recorder.preset" in line, line


def test_config_is_quiet_for_the_reaching_template(tmp_path: Path) -> None:
    line = _cli_config("reaching", tmp_path)
    assert line.startswith(
        "ok  recorder: 2 camera(s) at 124 Hz, libx264 ultrafast crf 12: measured 448x460"
    ), line
