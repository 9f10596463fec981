"""Reaching task state machine: outcomes, statistics, timeouts, pause on link loss; and a complete
multi-trial session against the real firmware in the simulator."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rig.config import ArduinoConfig, ReachingTaskConfig
from rig.messages import (
    SERIAL_EVENTS,
    Command,
    Point3D,
    SerialEvent,
    TaskEvent,
)
from rig.task import ReachingTask, success_rate, trial_outcome

pytestmark = [pytest.mark.slow, pytest.mark.firmware]

S = 1_000_000_000
REPO = Path(__file__).resolve().parents[2]


def ev(kind: str, t: int, **values: Any) -> SerialEvent:
    return SERIAL_EVENTS[kind](fw_seq=0, t_fw_us=t // 1000, t_host_ns=t, **values)


def paw(t: int, xyz: tuple[float, float, float]) -> Point3D:
    return Point3D(
        name="paw", trigger_index=t // 8_000_000, xyz=xyz, xyz_filtered=xyz, xyz_predicted=xyz, valid=True,
        reproj_error_px=0.1, cameras=["front", "side"], t_frame_ns=t, t_trigger_ns=t, t_det_ns=t, t_out_ns=t,
    )  # fmt: skip


class FakeRig:
    """Answers the task's commands like the firmware would (pure, no timing)."""

    def __init__(self, task: ReachingTask) -> None:
        self.task = task
        self.t = 0
        self.commands: list[Command] = []
        self.events: list[TaskEvent] = []

    def feed(self, out: list[Command | TaskEvent]) -> None:
        for m in out:
            if isinstance(m, TaskEvent):
                self.events.append(m)
                continue
            self.commands.append(m)
            if m.name == "dispense":
                self.feed(self.task.on_serial(ev("ir", self.t, pellet_present=1), self.t))
                self.feed(self.task.on_serial(ev("dispense_done", self.t, steps=50), self.t))
            elif m.name == "platform":
                self.feed(self.task.on_serial(ev("servo_done", self.t, position_us=1000), self.t))

    def advance(self, dt_s: float) -> None:
        self.t += int(dt_s * S)
        self.feed(self.task.tick(self.t))

    def wait_state(self, state: str, limit_s: float = 30.0) -> None:
        for _ in range(int(limit_s * 100)):
            if self.task.state == state:
                return
            self.advance(0.01)
        raise AssertionError(f"never reached {state}; in {self.task.state}")


def run_trial(rig: FakeRig, kind: str) -> None:
    """One trial as the mouse plays it: ``success``/``knocked_off``/``miss``/``no_reach`` with the paw
    tracked; ``removed``/``not_taken``: the same without any 3-D of the paw (``deepbehavior record``)."""
    task = rig.task
    rig.wait_state("wait_response")
    rig.advance(0.4)
    if kind == "no_reach":  # the paw is seen, resting far from the pellet
        for _ in range(3):
            rig.feed(task.on_point(paw(rig.t, (0.0, -25.0, 0.0)), rig.t))
            rig.advance(0.1)
    if kind == "removed":
        rig.feed(task.on_serial(ev("ir", rig.t, pellet_present=0), rig.t))
    if kind in ("success", "knocked_off", "miss"):
        for d in (20.0, 10.0, 5.0, 2.0 if kind == "success" else 8.0):
            rig.feed(task.on_point(paw(rig.t, (0.0, -d, 0.0)), rig.t))
            rig.advance(0.02)
        if kind != "miss":
            rig.feed(task.on_serial(ev("ir", rig.t, pellet_present=0), rig.t))
        for d in (10.0, 20.0):
            rig.feed(task.on_point(paw(rig.t, (0.0, -d, 0.0)), rig.t))
            rig.advance(0.05)
    rig.wait_state("iti")


def test_outcomes_and_statistics() -> None:
    cfg = ReachingTaskConfig(n_trials=4, iti_s=0.5, response_window_s=2.0, settle_s=0.2)
    task = ReachingTask(cfg)
    rig = FakeRig(task)
    rig.feed(task.start(0))
    for kind in ("success", "knocked_off", "miss", "no_reach"):
        run_trial(rig, kind)
    rig.wait_state("done")
    ends = [e for e in rig.events if e.kind == "trial_end"]
    assert [e.outcome for e in ends] == ["success", "knocked_off", "miss", "no_reach"]
    s = task.stats.summary()
    assert s["trials"] == 4 and s["success_rate"] == 0.25
    assert s["reaches_per_trial"] == pytest.approx(3 / 4)
    assert 0.4 <= s["latency_first_reach_s_median"] <= 0.5
    assert task.done and rig.events[-1].kind == "session_end"
    # every trial: dispense, raise, lower; the platform ends down
    names = [c.name for c in rig.commands]
    assert names.count("dispense") == 4 and rig.commands[-1].args == {"up": 0}


def test_without_3d_the_outcome_is_what_the_apparatus_knows() -> None:
    """``deepbehavior record``: no paw position at all. The IR sensor still tells removed from not taken;
    taken vs knocked off, miss vs no reach are unknown, and so is the success rate (None, not 0 %)."""
    cfg = ReachingTaskConfig(n_trials=3, iti_s=0.5, response_window_s=2.0, settle_s=0.2)
    task = ReachingTask(cfg)
    rig = FakeRig(task)
    rig.feed(task.start(0))
    for kind in ("removed", "not_taken", "removed"):
        run_trial(rig, kind)
    rig.wait_state("done")
    assert [e.outcome for e in rig.events if e.kind == "trial_end"] == [
        "pellet_removed",
        "pellet_not_taken",
        "pellet_removed",
    ]
    s = task.stats.summary()
    assert s["trials"] == 3 and s["unclassified"] == 3
    assert s["success_rate"] is None  # unknown, never 0 %
    assert math.isnan(s["reaches_per_trial"])  # no trial saw the paw: 0 reaches would be invented
    assert rig.events[-1].kind == "session_end" and rig.events[-1].detail["success_rate"] is None


def test_outcome_rule_needs_the_paw_around_the_removal() -> None:
    cfg = ReachingTaskConfig(grasp_radius_mm=4.0, grasp_window_s=0.3)
    t0 = 10 * S
    near = [(t0 - S // 10, 2.0)]  # the paw 2 mm from the pellet 0.1 s before it went
    assert trial_outcome(cfg, t0, 1, near) == "success"
    assert trial_outcome(cfg, t0, 1, [(t0, 8.0)]) == "knocked_off"
    # the paw was seen, but not within grasp_window_s of the removal (3-D lost there): unknown
    assert trial_outcome(cfg, t0, 1, [(t0 - 2 * S, 1.0)]) == "pellet_removed"
    assert trial_outcome(cfg, t0, 0, []) == "pellet_removed"
    assert trial_outcome(cfg, None, 2, [(t0, 8.0)]) == "miss"
    assert trial_outcome(cfg, None, 0, [(t0, 30.0)]) == "no_reach"
    assert trial_outcome(cfg, None, 0, []) == "pellet_not_taken"
    assert success_rate({"success": 1, "knocked_off": 1, "aborted": 3}) == 0.5
    assert success_rate({"success": 1, "pellet_removed": 1}) is None
    assert success_rate({"aborted": 2}) is None and success_rate({}) is None


def test_stops_after_max_duration() -> None:
    task = ReachingTask(
        ReachingTaskConfig(n_trials=None, max_duration_s=10.0, iti_s=0.1, response_window_s=1.0)
    )
    rig = FakeRig(task)
    rig.feed(task.start(0))
    rig.wait_state("done", limit_s=20)
    assert 10 * S <= rig.t <= 12 * S
    assert all(t.outcome == "pellet_not_taken" for t in task.stats.trials)  # no paw was ever seen


def test_pause_on_link_loss_and_resume() -> None:
    task = ReachingTask(ReachingTaskConfig(n_trials=2, iti_s=0.1, response_window_s=1.0))
    rig = FakeRig(task)
    rig.feed(task.start(0))
    rig.wait_state("wait_response")
    rig.feed(task.on_serial(ev("disconnected", rig.t, reason="unplugged"), rig.t))
    assert task.state == "paused"
    rig.advance(5.0)
    assert task.state == "paused"
    rig.feed(task.on_serial(ev("reconnected", rig.t, port="/dev/ttyACM0"), rig.t))
    rig.wait_state("done")
    kinds = [e.kind for e in rig.events]
    assert "paused" in kinds and "resumed" in kinds
    assert [t.outcome for t in task.stats.trials] == ["aborted", "pellet_not_taken"]  # no paw fed


def test_user_pause_waits_for_the_trial_then_holds_until_resume() -> None:
    task = ReachingTask(ReachingTaskConfig(n_trials=3, iti_s=0.5, response_window_s=2.0, settle_s=0.2))
    rig = FakeRig(task)
    rig.feed(task.start(0))
    rig.wait_state("wait_response")
    rig.feed(task.pause(rig.t))  # mid-trial: the trial plays out, scored as usual
    assert task.state == "wait_response"
    assert rig.events[-1].kind == "pause_pending" and rig.events[-1].detail["after_trial"] == 1
    run_trial(rig, "success")
    rig.wait_state("paused")
    n_commands = len(rig.commands)
    rig.advance(60.0)  # a long pause: nothing dispensed, the platform stays down
    assert task.state == "paused" and len(rig.commands) == n_commands
    assert rig.commands[-1].name == "platform" and rig.commands[-1].args == {"up": 0}
    rig.feed(task.resume(rig.t))
    assert task.trial == 2 and rig.commands[n_commands].name == "dispense"
    # a pause between trials takes effect at once; a resume before a pending pause cancels it
    rig.wait_state("iti")
    rig.feed(task.pause(rig.t))
    assert task.state == "paused"
    rig.feed(task.resume(rig.t))
    rig.wait_state("wait_response")
    rig.feed(task.pause(rig.t))
    rig.feed(task.resume(rig.t))
    rig.wait_state("done")
    kinds = [e.kind for e in rig.events]
    assert kinds.count("paused") == 2 and kinds.count("resumed") == 2 and "pause_cancelled" in kinds
    assert [t.outcome for t in task.stats.trials] == ["success", "pellet_not_taken", "pellet_not_taken"]


def test_user_pause_during_link_loss_holds_after_reconnect() -> None:
    task = ReachingTask(ReachingTaskConfig(n_trials=2, iti_s=0.1, response_window_s=1.0))
    rig = FakeRig(task)
    rig.feed(task.start(0))
    rig.wait_state("wait_response")
    rig.feed(task.on_serial(ev("disconnected", rig.t, reason="unplugged"), rig.t))
    rig.feed(task.pause(rig.t))
    rig.feed(task.resume(rig.t + 1))  # a user's resume cannot end a link-loss pause
    rig.feed(task.pause(rig.t + 2))
    assert task.state == "paused"
    rig.feed(task.on_serial(ev("reconnected", rig.t, port="/dev/ttyACM0"), rig.t))
    rig.wait_state("paused")  # lowered, then held by the user's pause
    assert task.trial == 1 and rig.events[-1].detail["reason"] == "paused by user"
    rig.feed(task.resume(rig.t))
    rig.wait_state("done")
    assert [t.outcome for t in task.stats.trials] == ["aborted", "pellet_not_taken"]  # no paw fed


def test_dispenser_failure_stops_session() -> None:
    task = ReachingTask(ReachingTaskConfig(n_trials=3, dispense_timeout_s=0.5))
    out = task.start(0)
    assert [c.name for c in out if isinstance(c, Command)] == ["dispense"]
    t = 0
    while not task.done and t < 5 * S:
        t += S // 10
        task.tick(t)
    assert task.done and task.stats.trials[0].outcome == "aborted"


class SimSession:
    """The task driven against the real firmware in simavr, the way the serial node will drive it; a
    scripted mouse reaches and takes (or knocks off) the pellet by driving the IR pin. An act of
    "vanish" kills the simulator mid-trial and brings a fresh one back on the same port path."""

    def __init__(self, port: Path, cfg: ReachingTaskConfig, plan: list[str]) -> None:
        import subprocess

        from rig.firmware_sim import FirmwareSim
        from rig.serial_link import SerialLink

        subprocess.run(["make", "-s", "-C", str(REPO / "firmware"), "all"], check=True)
        self.ard = ArduinoConfig(
            servo={"speed_us_per_s": 20000}, stepper={"steps_per_pellet": 20, "step_rate_hz": 2000}
        )
        self.port = port
        self.sim = FirmwareSim(realtime=True, link_path=port)
        self.link = SerialLink(port, watchdog_ms=self.ard.watchdog_ms, reconnect_interval_s=0.1)
        threading.Timer(0.2, self.sim.release).start()
        self.link.open()
        self.link.configure(**self.ard.firmware_config())
        self.task = ReachingTask(cfg)
        self.plan = iter(plan)
        self.events: list[TaskEvent] = []
        self.serial: list[SerialEvent] = []
        self.steps = 0

    def run(self, timeout_s: float = 40.0) -> None:
        from rig.errors import DeviceError
        from rig.firmware_sim import PIN_STEP, FirmwareSim, pulses

        task, link = self.task, self.link
        presented_at: float | None = None
        act = ""
        pending = list(task.start(time.monotonic_ns()))
        deadline = time.monotonic() + timeout_s
        while not task.done and time.monotonic() < deadline:
            for m in pending:
                if isinstance(m, Command):
                    try:
                        link.send_command(m)
                    except DeviceError:
                        pass  # the port is gone: the task pauses on 'disconnected'
                    if m.name == "dispense":
                        self.sim.set_ir(True)  # the pellet lands on the platform
                else:
                    self.events.append(m)
            pending = []
            now = time.monotonic_ns()
            for e in link.poll():
                self.serial.append(e)
                if e.kind == "reconnected":  # a fresh board: configure it again (the node's job)
                    link.configure(**self.ard.firmware_config())
                pending += task.on_serial(e, e.t_host_ns if e.t_host_ns > 0 else now)
            pending += task.tick(time.monotonic_ns())
            if task.state == "wait_response" and presented_at is None:
                presented_at, act = time.monotonic(), next(self.plan)
                if act == "vanish":
                    self.steps += len(pulses(self.sim.edges(PIN_STEP)))
                    self.sim.stop()
                    self.sim = FirmwareSim(realtime=True, link_path=self.port)
                    threading.Timer(0.5, self.sim.release).start()
            waited = presented_at is not None and time.monotonic() - presented_at > 0.3
            if task.state == "wait_response" and waited and act != "vanish":
                t = time.monotonic_ns()
                d = 1.0 if act == "success" else 9.0
                pending += task.on_point(paw(t, (0.0, -d, 0.0)), t)
                self.sim.set_ir(False)  # the pellet leaves the platform
                presented_at = -1.0
            if task.state == "iti":
                presented_at = None
        link.close()
        self.steps += len(pulses(self.sim.edges(PIN_STEP)))
        self.sim.stop()


@pytest.mark.firmware
def test_complete_session_with_real_firmware(tmp_path: Path) -> None:
    cfg = ReachingTaskConfig(n_trials=3, iti_s=0.1, response_window_s=3.0, settle_s=0.1, grasp_window_s=0.3)
    run = SimSession(tmp_path / "arduino", cfg, ["success", "knocked_off", "success"])
    run.run()
    task = run.task
    assert task.done, f"stuck in {task.state}"
    assert [e.outcome for e in run.events if e.kind == "trial_end"] == ["success", "knocked_off", "success"]
    s = task.stats.summary()
    assert s["success_rate"] == pytest.approx(2 / 3) and s["reaches_per_trial"] == 1.0
    assert not math.isnan(s["latency_first_reach_s_median"])
    assert run.steps == 3 * 20
    assert run.link.stats.gaps == 0


@pytest.mark.firmware
def test_session_survives_port_vanishing(tmp_path: Path) -> None:
    """The board vanishes mid-trial: the task pauses (trial aborted), the link reconnects to the new
    board, the task lowers the platform and carries on; the event log shows it all, with no gap."""
    cfg = ReachingTaskConfig(n_trials=3, iti_s=0.1, response_window_s=3.0, settle_s=0.1, grasp_window_s=0.3)
    run = SimSession(tmp_path / "arduino", cfg, ["success", "vanish", "success"])
    run.run()
    assert run.task.done, f"stuck in {run.task.state}"
    ends = [e.outcome for e in run.events if e.kind == "trial_end"]
    assert ends == ["success", "aborted", "success"]
    kinds = [e.kind for e in run.events]
    assert kinds.index("paused") < kinds.index("resumed")
    link_log = [e.kind for e in run.serial if e.kind in ("disconnected", "reconnected", "boot")]
    assert link_log == ["boot", "disconnected", "reconnected", "boot"]
    assert run.link.stats.gaps == 0 and run.link.stats.reconnects == 1
