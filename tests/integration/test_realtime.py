"""Real-time scheduling of the latency-critical nodes (pipeline.realtime) and the detector stepping back
while the recording is behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rig.config import DEFAULT_CONFIG, load_config
from rig.errors import ConfigError
from rig.nodes.detector import RecordingFirst
from rig.supervisor import build_graph

REPO = Path(__file__).resolve().parents[2]


def _priorities(overrides: dict | None = None, path: Path | None = None) -> dict[str, int]:
    return {s.name: s.realtime_priority for s in build_graph(load_config(path, overrides))}


def test_default_graph_puts_the_trigger_to_ttl_path_at_fifo_and_not_the_recorder():
    prio = _priorities()
    fifo = {n for n, p in prio.items() if p}
    assert fifo == {"cam-front", "cam-side", "detector", "world", "arduino", "task"}
    assert prio["recorder"] == 0 and set(prio.values()) == {0, 10}
    assert not any(_priorities({"pipeline": {"realtime": {"priority": 0}}}).values())
    one = _priorities({"pipeline": {"realtime": {"nodes": ["cam-side"]}}})
    assert {n for n, p in one.items() if p} == {"cam-side"}


def test_a_replay_camera_is_not_a_live_camera(tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["rig"]["cameras"]["side"] = {"backend": "replay", "options": {"path": str(tmp_path)}}
    raw["pipeline"]["detector"]["model"] = str(REPO / "detection" / "models" / "paw-yolo11p-96.onnx")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    prio = _priorities(path=p)
    assert prio["cam-front"] == 10 and prio["cam-side"] == 0


def test_unknown_node_is_refused_with_the_key_and_the_choices(tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["pipeline"]["realtime"] = {"nodes": ["detector", "detectr"]}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "pipeline.realtime.nodes: no node 'detectr'" in msg and "cam-front" in msg


CHILD = """
import os, resource, sys, threading, time
sys.path.insert(0, {repo!r})
from rig.nodes.base import go_realtime
if {drop!r}:  # nobody, no CAP_SYS_NICE, no rtprio limit
    resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
stop = threading.Event()
t = threading.Thread(target=stop.wait, daemon=True); t.start()  # started before: switched
problem = go_realtime(7)
later = []
t2 = threading.Thread(target=lambda: later.append(os.sched_getscheduler(0))); t2.start(); t2.join()
policies = {{}}
for tid in os.listdir("/proc/self/task"):
    try:
        policies[int(tid)] = os.sched_getscheduler(int(tid))
    except ProcessLookupError:  # t2's entry, still listed for a moment after it ended
        pass
stop.set(); t.join()
print(repr(problem), sorted(set(policies.values()) | set(later)), len(policies))
"""


def _child(drop: bool) -> str:
    code = CHILD.format(repo=str(REPO), drop=drop)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _may_use_fifo() -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


@pytest.mark.skipif(not _may_use_fifo(), reason="this user may not use SCHED_FIFO (no rtprio right)")
def test_every_thread_of_the_process_goes_fifo():
    out = _child(drop=False)  # the policy of every thread, and of a thread started afterwards
    assert out.startswith("'' ") and f"[{os.SCHED_FIFO}]" in out, out
    assert int(out.rsplit(" ", 1)[1]) >= 2  # the main thread and the helper thread


def test_without_the_right_it_says_why_and_stays_normal():
    if os.geteuid() == 0:
        out = _child(drop=True)  # as root: the same process after dropping to nobody
    elif not _may_use_fifo():
        out = _child(drop=False)
    else:
        pytest.skip("this non-root user may use SCHED_FIFO (rtprio limit): no way to lose the right here")
    assert "Operation not permitted" in out and f"[{os.SCHED_OTHER}]" in out, out


def test_a_replay_camera_named_explicitly_is_refused(tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["rig"]["cameras"]["side"] = {"backend": "replay", "options": {"path": str(tmp_path)}}
    raw["pipeline"]["detector"]["model"] = str(REPO / "detection" / "models" / "paw-yolo11p-96.onnx")
    raw["pipeline"]["realtime"] = {"nodes": ["cam-side"]}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"pipeline\.realtime\.nodes: 'cam-side' replays a file"):
        load_config(p)


def test_recording_first_gives_up_more_detection_the_further_the_recorder_falls_behind():
    rf = RecordingFirst(124)  # 1 s at 124 Hz
    assert rf.update(100) == "" and not any(rf.skip(k) for k in range(10))
    assert rf.update(124) == "shed" and [rf.skip(k) for k in range(4)] == [False, True, False, True]
    assert rf.update(200) == ""  # still one in 2
    assert rf.update(250) == "shed" and [k for k in range(12) if not rf.skip(k)] == [0, 4, 8]
    assert rf.update(400) == "shed" and [k for k in range(20) if not rf.skip(k)] == [0, 8, 16]
    assert rf.update(900) == "" and rf.level == 3  # one in 8 at most
    assert rf.update(60) == "" and rf.behind  # hysteresis: no step back up until under a quarter
    assert rf.update(31) == "resume" and not any(rf.skip(k) for k in range(10))
    never = RecordingFirst(None)
    assert never.update(10**6) == "" and not any(never.skip(k) for k in range(10))
    with pytest.raises(ValueError, match="at least one frame"):
        RecordingFirst(0)


def test_stepping_back_must_come_before_the_recording_overflows(tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["pipeline"]["detector"]["recorder_behind_s"] = 3.5
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"recorder_behind_s=3\.5: three times it .* below pipeline"):
        load_config(p)
    raw["pipeline"]["detector"]["recorder_behind_s"] = 0
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"pipeline\.detector\.recorder_behind_s"):
        load_config(p)
