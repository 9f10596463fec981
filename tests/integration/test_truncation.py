"""Truncated inputs are reported as such: a replay source whose video lacks frames its frame table lists
ends the session "failed" with how many frames are missing; ``reanalyze --detect`` of a truncated video
fails, or with ``--accept-partial`` reports the missing frames in its summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "session-v1"  # 5 frames per camera
MODEL = REPO / "detection" / "models" / "paw-yolo11p-96.onnx"

pytestmark = [pytest.mark.slow, pytest.mark.firmware, pytest.mark.timeout(300)]


def write_video(path: Path, n: int, size: tuple[int, int] = (448, 460)) -> None:
    """``n`` grey frames (W x H) encoded as the recorder does (H.264 in Matroska)."""
    import av

    w, h = size
    with av.open(str(path), "w") as c:
        stream = c.add_stream("libx264", rate=124)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = np.full((h, w), 60 + 20 * i, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="gray").reformat(format="yuv420p")
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)


def golden_with_videos(d: Path, front_frames: int) -> Path:
    """The golden session with videos: 'side' holds its 5 frames, 'front' only ``front_frames`` of them."""
    s = Path(shutil.copytree(GOLDEN, d / "s"))
    write_video(s / "front.mkv", front_frames)
    write_video(s / "side.mkv", 5)
    return s


def cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rig.cli", *argv],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"},
    )


def test_truncated_video_fails_reanalysis_unless_partial_is_accepted(tmp_path):
    from rig.errors import InputError
    from rig.reanalyze import Options, reanalyze_session

    s = golden_with_videos(tmp_path, front_frames=1)
    opts = Options(detect=True, model=str(MODEL), analyses=False)
    with pytest.raises(InputError) as exc:
        reanalyze_session(s, options=opts)
    assert str(exc.value) == (
        f"{s / 'front.mkv'}: truncated: the video ends after 1 of the 5 frames front.frames.csv lists "
        "(4 missing); --accept-partial reanalyses what is there"
    )
    assert not (s / "reanalysis").exists()

    r = reanalyze_session(s, options=replace(opts, accept_partial=True))
    assert r["frames_missing_from_video"] == {"front": 4, "side": 0} and r["partial"] is True
    assert r["frames_detected"] == 6  # 1 front + 5 side
    on_disk = json.loads((s / "reanalysis" / "summary.json").read_text())
    assert on_disk["frames_missing_from_video"] == {"front": 4, "side": 0}
    assert on_disk["options"]["accept_partial"] is True

    whole = golden_with_videos(tmp_path / "whole", front_frames=5)
    r = reanalyze_session(whole, options=opts)
    assert r["frames_missing_from_video"] == {"front": 0, "side": 0} and r["partial"] is False
    assert "accept_partial" not in r["options"]  # earlier results (without the option) stay valid


def test_reanalyze_command_exits_non_zero_on_a_truncated_video(tmp_path):
    s = golden_with_videos(tmp_path, front_frames=1)
    argv = ["reanalyze", "--quiet", "--workers", "1", "--no-analyses", "--model", str(MODEL), str(s)]
    r = cli(*argv, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert (
        f"FAILED  {s}: InputError: {s / 'front.mkv'}: truncated: the video ends after 1 of the 5" in r.stdout
    )
    r = cli(*argv, "--accept-partial", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PARTIAL: frames missing from the videos {'front': 4} (--accept-partial)" in r.stdout


def test_truncated_replay_source_ends_the_session_failed(tmp_path):
    from rig.session import load_session

    src = golden_with_videos(tmp_path, front_frames=2)
    cams = {
        n: {"backend": "replay", "options": {"path": str(src), "realtime": False}} for n in ("front", "side")
    }
    cfg = {
        "rig": {"name": "replay", "calibration": str(src / "calibration.yaml"), "cameras": cams},
        "experiment": {"n_trials": None},
        "pipeline": {"detector": {"enabled": False}},
    }
    (tmp_path / "replay.yaml").write_text(yaml.safe_dump(cfg))
    r = cli("record", "replay.yaml", "--quiet", "--duration", "3", "--output", "out", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    out = load_session(next((tmp_path / "out").iterdir()))
    assert out.meta["status"] == "failed" and not out.complete
    assert (
        f"InputError: {src / 'front.mkv'}: truncated: the video ends after 2 of the 5 frames its frame table "
        "front.frames.csv lists (3 missing; camera 'front')"
    ) in out.meta["reason"]
    assert "session failed" in r.stdout
