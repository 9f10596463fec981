"""`deepbehavior session FOLDER --verify / --repair` on one real recorded session, damaged per test."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rig.session import hold_writer_lock
from rig.verify import (
    check_firmware_events,
    check_triggers,
    count_video_frames,
    ranges,
    verify_session,
)
from tests.sessions import CLI, run_session

pytestmark = [pytest.mark.slow, pytest.mark.firmware, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("verify-sessions")
    r, s = run_session(out, "--duration", "4")
    assert r.returncode == 0, r.stderr
    assert s is not None and s.complete
    return s.path


@pytest.fixture
def session(recorded: Path, tmp_path: Path) -> Path:
    dst = tmp_path / recorded.name
    shutil.copytree(recorded, dst)
    return dst


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "session", *args], capture_output=True, text=True, timeout=120)


def lines(out: str, level: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith(level + "  ")]


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def mark_running(path: Path, pid: int) -> None:
    meta = json.loads((path / "session.json").read_text())
    from rig.frames import process_identity

    meta.update(status="running", supervisor_pid=pid, host=socket.gethostname(), reason="")
    meta["supervisor_identity"] = process_identity(pid)  # None for a dead pid
    meta.pop("summary", None)
    meta.pop("ended", None)
    (path / "session.json").write_text(json.dumps(meta))


# ----------------------------------------------------------------------------- end to end (the CLI)
def test_clean_session_passes(session: Path):
    r = cli(str(session), "--verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not lines(r.stdout, "FAIL")
    assert r.stdout.strip().splitlines()[-1].startswith("OK")
    for check in ("status", "front seq", "front.mkv", "side summary", "firmware events", "triggers.csv"):
        assert any(ln.startswith(f"PASS  {check}:") for ln in r.stdout.splitlines()), (check, r.stdout)
    r = cli(str(session), "--verify", "--decode")
    assert r.returncode == 0 and "(decoded)" in r.stdout, r.stdout


def test_packet_count_agrees_with_decoding(session: Path):
    video = session / "front.mkv"
    data = video.read_bytes()
    for fraction in (1.0, 0.6, 0.25):
        video.write_bytes(data[: int(len(data) * fraction)])
        assert count_video_frames(video)[0] == count_video_frames(video, decode=True)[0]


def test_truncated_video_fails_then_repair_makes_it_pass(session: Path):
    table = session / "front.frames.csv"
    original = table.read_text()
    n_rows = len(original.splitlines()) - 1
    video = session / "front.mkv"
    video.write_bytes(video.read_bytes()[: int(video.stat().st_size * 0.6)])
    n_video, _ = count_video_frames(video, decode=True)
    assert n_video is not None and 0 < n_video < n_rows
    mark_running(session, dead_pid())
    stimuli = (session / "closed_loop.csv").read_text()
    (session / "closed_loop.csv").unlink()  # a crashed session never wrote it

    r = cli(str(session), "--verify")
    assert r.returncode == 1, r.stdout + r.stderr
    (fail,) = lines(r.stdout, "FAIL")
    assert fail.startswith("FAIL  front.mkv:"), r.stdout
    assert f"{n_rows - n_video} frames missing" in fail and f"seq {n_video}-{n_rows - 1}" in fail, fail
    assert "interrupted" in lines(r.stdout, "WARN")[0]

    r = cli(str(session), "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "front.frames.csv.orig" in r.stdout and "status running -> interrupted" in r.stdout
    assert (session / "front.frames.csv.orig").read_text() == original
    assert not (session / "side.frames.csv.orig").exists()  # nothing to change there
    assert "closed_loop.csv rebuilt from events.jsonl" in r.stdout
    assert (session / "closed_loop.csv").read_text() == stimuli
    meta = json.loads((session / "session.json").read_text())
    assert meta["status"] == "interrupted" and meta["reason"].startswith("repaired after a crash")
    assert meta["summary"]["frames"]["front"] == {
        "frames": n_rows,
        "recorded": n_video,
        "dropped": n_rows - n_video,
    }
    r = cli(str(session), "--verify")
    assert r.returncode == 0 and not lines(r.stdout, "FAIL"), r.stdout

    # while a recorder still holds the folder (finishing after its supervisor died), --repair waits
    fd = hold_writer_lock(session)
    try:
        r = cli(str(session), "--repair")
        assert r.returncode == 2 and "recorder is still writing" in r.stderr, r.stdout + r.stderr
        assert "WARN  recorder: still writing" in cli(str(session), "--verify").stdout
    finally:
        os.close(fd)

    # a second repair changes nothing and never overwrites the kept original
    r = cli(str(session), "--repair")
    assert r.returncode == 0 and "nothing to repair" in r.stdout, r.stdout
    assert (session / "front.frames.csv.orig").read_text() == original


def test_running_with_a_dead_supervisor_shows_interrupted(session: Path):
    mark_running(session, dead_pid())
    before = (session / "session.json").read_text()
    r = cli(str(session))
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["status"].startswith("interrupted (supervisor pid"), shown
    assert (session / "session.json").read_text() == before  # plain mode never rewrites it


def test_running_with_a_live_supervisor_is_running_and_repair_refuses(session: Path):
    import os

    mark_running(session, os.getpid())  # this Python process stands in for the supervisor
    r = cli(str(session))
    assert json.loads(r.stdout)["status"] == "running", r.stdout
    r = cli(str(session), "--repair")
    assert r.returncode == 2 and "still recording" in r.stderr, r.stderr


def test_a_reused_pid_is_not_the_supervisor(session: Path):
    """After a power cut the supervisor's pid may run another Python process: its identity (boot id and
    start time) tells them apart, so the session reads interrupted and can be repaired."""
    import os

    mark_running(session, os.getpid())
    meta = json.loads((session / "session.json").read_text())
    meta["supervisor_identity"] = "another-boot:12345"
    (session / "session.json").write_text(json.dumps(meta))
    assert json.loads(cli(str(session)).stdout)["status"].startswith("interrupted")


def test_not_a_session_folder_is_one_line_exit_2(tmp_path: Path):
    for args in (
        (str(tmp_path), "--verify"),
        (str(tmp_path), "--repair"),
        (str(tmp_path / "nope"), "--verify"),
    ):
        r = cli(*args)
        assert r.returncode == 2, r
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("deepbehavior: error:"), r.stderr


# ----------------------------------------------------------------------------- damage, in process
def test_a_deleted_row_is_a_seq_gap(session: Path):
    table = session / "side.frames.csv"
    rows = table.read_text().splitlines(keepends=True)
    gone = int(rows[201].split(",")[0])
    del rows[201]
    table.write_text("".join(rows))
    rep = verify_session(session)
    fails = {c.name: c.detail for c in rep.failed}
    assert fails["side seq"] == f"1 frames have no row: seq {gone}", rep.text()
    assert "side summary" in fails


def test_a_removed_firmware_event_is_a_gap(session: Path):
    path = session / "events.jsonl"
    lines_ = path.read_text().splitlines(keepends=True)
    events = [json.loads(ln) for ln in lines_]
    k = next(
        i for i, e in enumerate(events) if e.get("topic") == "serial.event" and e["kind"] == "servo_done"
    )
    lost = events[k]["fw_seq"]
    del lines_[k]
    path.write_text("".join(lines_))
    rep = verify_session(session)
    (fail,) = rep.failed
    assert fail.name == "firmware events" and "1 firmware frames lost" in fail.detail, rep.text()
    assert str(lost) in fail.detail


def test_a_bad_event_line_is_named_and_later_lines_still_read(session: Path):
    path = session / "events.jsonl"
    lines_ = path.read_text().splitlines(keepends=True)
    lines_.insert(2, "{not json\n")
    path.write_text("".join(lines_))
    rep = verify_session(session)
    assert [(c.name, c.detail) for c in rep.failed] == [
        ("events.jsonl", "1 lines are not JSON objects: line 3")
    ]


# ----------------------------------------------------------------------------- pure checks
def test_ranges():
    assert ranges([7, 1, 2, 3, 9, 10]) == "1-3, 7, 9-10"
    assert ranges(range(0, 40, 2), show=2) == "0, 2, ... (+18 more ranges)"


def _ev(fw: int, kind: str = "ir", cmd: int | None = None) -> dict:
    values = {} if cmd is None else {"cmd_seq": cmd, "cause_trigger_index": -1}
    return {"topic": "serial.event", "fw_seq": fw, "kind": kind, "values": values}


def test_firmware_sequence_accounts_for_unlogged_pings_and_wraps():
    # boot 0, HELLO ack (cmd 1, unlogged) = fw 1, config ack (cmd 2) = fw 2, ping acks (cmds 3, 4) = fw 4, 5
    events = [_ev(0, "boot"), _ev(2, "ack", 2), _ev(3), _ev(6, "ack", 5), _ev(7)]
    assert check_firmware_events(events).level == "PASS"
    lost = [_ev(0, "boot"), _ev(2, "ack", 2), _ev(6, "ack", 5)]  # fw 3 was an event: one frame lost
    c = check_firmware_events(lost)
    assert c.level == "FAIL" and "1 firmware frames lost among fw_seq 3-5" in c.detail, c
    # host command numbers are 16-bit and wrap; the host unwraps fw_seq itself
    wrap = [_ev(0, "boot"), _ev(1, "ack", 65535), _ev(3, "ack", 1)]  # cmd 0 (after the wrap) unlogged
    assert check_firmware_events(wrap).level == "PASS", check_firmware_events(wrap)
    gap = [
        *events,
        {"topic": "serial.event", "fw_seq": -1, "kind": "gap", "values": {"expected": 8, "got": 10}},
    ]
    c = check_firmware_events(gap)
    assert c.level == "FAIL" and "fw_seq 8-9" in c.detail, c
    tail = [*events, _ev(9)]  # fw 8 after the last reply: a ping reply or a lost event, cannot tell
    assert check_firmware_events(tail).level == "WARN"


def test_triggers_check():
    frames = {"front": np.array([0, 1, 2, 3]), "side": np.array([0, 1, -1, 3])}
    assert check_triggers(frames, np.array([], dtype=np.int64), True).detail.startswith("no clock record")
    assert check_triggers(frames, np.arange(4), True).level == "PASS"
    c = check_triggers(frames, np.array([0, 2, 3]), True)
    assert c.level == "FAIL" and "front: 1 (trigger_index 1)" in c.detail, c
    assert check_triggers(frames, np.array([0, 1, 2]), False).level == "WARN"  # crash window
    assert check_triggers(frames, np.array([0, 1, 2]), True).level == "FAIL"
