"""The supervisor: starts the session graph from one validated config, relays logs and stats, restarts
what may restart, and stops everything cleanly.

Stop order (so nothing in flight is lost): trigger source -> cameras (they publish end-of-stream) ->
detector (it drains, triangulates and exits on end-of-stream) -> recorder (told to stop only after
every producer has exited; it drains its queue, closes and fsyncs every file). Then ``session.json``
gets its final status: ``complete`` (ran to its end), ``stopped`` (Ctrl-C or a stop request, all files
closed) or ``failed`` (a fatal node crash or error, with the reason).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import msgspec
import numpy as np
import zmq

from rig import messages as m
from rig.bus import Publisher, Subscriber, ipc_endpoint
from rig.closed_loop_report import closed_loop_summary
from rig.config import LoadedConfig
from rig.errors import ConfigError, RigError
from rig.frames import pid_alive, remove_stale_rings, ring_name, ring_path
from rig.nodes.base import (
    STOP_LAST,
    STOP_RECORDER,
    NodeSpec,
    Runtime,
    failure_path,
    read_failure,
    run_node,
)
from rig.recorder import available_memory, buffer_bytes
from rig.session import (
    CameraFrames,
    ErrorVsTruth,
    PointsSummary,
    PulseSummary,
    SessionSummary,
    load_session,
)
from rig.session_folder import create_session, finish_session, resolve_calibration, storage_error
from rig.session_metrics import closed_loop_latencies_ms, error_vs_truth_mm
from rig.task import success_rate

log = logging.getLogger("rig.supervisor")

READY_TIMEOUT_S = 120.0
UI_CONTROL_TOPIC = "ui.control"  # requests from a display: stop / pause / resume (only the supervisor acts)
MAX_RESTARTS = 3
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
GROUP_SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)  # what a terminal sends the whole group


class StoppedDuringStartup(RigError):
    """A stop signal arrived before every node was ready."""


RECORDER_STALL_S = 30.0  # stopping: the recorder may take as long as it needs while it makes progress


RUNTIME_PREFIX = "deepbehavior-"  # runtime folders (sockets) in the temp dir; rings in /dev/shm
OWNER_FILE = "supervisor.pid"


def remove_stale_runtime() -> None:
    """Rings and runtime folders left by sessions whose processes are gone (a supervisor killed with
    SIGKILL cannot clean up): removed at the next start. Those of a live session are kept."""
    for ring in remove_stale_rings(RUNTIME_PREFIX):
        log.info("removed the stale frame ring %s", ring)
    for folder in Path(tempfile.gettempdir()).glob(RUNTIME_PREFIX + "*"):
        try:
            pid = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not pid_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed the stale runtime folder %s", folder)


def check_recorder_memory(loaded: LoadedConfig) -> None:
    """The recorder's RAM buffer (pipeline.recorder.buffer_s of every camera) must fit in the memory
    available now, with room to spare, or a slow encoder would push the machine into swap or the OOM
    killer instead of buffering."""
    cfg = loaded.config
    if not cfg.pipeline.recorder.enabled:
        return
    need, free = buffer_bytes(cfg), available_memory()
    if free is not None and need > free // 2:
        raise ConfigError(
            f"{loaded.source}: pipeline.recorder.buffer_s={cfg.pipeline.recorder.buffer_s:g} needs up to "
            f"{need / 1e6:.0f} MB of RAM for {len(cfg.rig.cameras)} camera(s), more than half of the "
            f"{free / 1e6:.0f} MB available now: lower buffer_s or free memory"
        )


def build_graph(loaded: LoadedConfig) -> list[NodeSpec]:
    """The nodes a config asks for, with who listens to whom."""
    cfg = loaded.config
    cams = list(cfg.rig.cameras)
    cam_nodes = [f"cam-{c}" for c in cams]
    synthetic = any(c.backend == "synthetic" for c in cfg.rig.cameras.values())
    specs: list[NodeSpec] = []
    arduino = cfg.rig.arduino is not None
    if arduino:
        specs.append(
            NodeSpec(
                "arduino",
                "rig.nodes.arduino:ArduinoNode",
                ("supervisor", "task", "world"),
                ("ctl", "cmd.arduino", "sim.input"),
                stop_stage=2,
            )
        )
    if arduino and cfg.experiment.task != "none":  # task 'none': the board only triggers and syncs
        specs.append(
            NodeSpec(
                "task",
                "rig.nodes.task:TaskNode",
                ("supervisor", "arduino", "detector"),
                ("ctl", "serial.event", "point3d."),
                stop_stage=1,
            )
        )
    if synthetic:
        specs.append(
            NodeSpec(
                "world",
                "rig.nodes.world:WorldNode",
                ("supervisor", *(("arduino", "task") if arduino else ())),
                ("ctl", "trigger", "serial.event", "cmd.arduino", "node.arduino"),
                stop_stage=3,
            )
        )
    for cam, node in zip(cams, cam_nodes):
        specs.append(
            NodeSpec(
                node,
                "rig.nodes.camera:CameraNode",
                ("supervisor",),
                ("ctl",),
                params={"camera": cam},
                stop_stage=4,
            )
        )
    pipe = cfg.pipeline
    if pipe.detector.enabled:
        oracle = pipe.detector.runner == "oracle"  # the only one that reads the world's truth
        specs.append(
            NodeSpec(
                "detector",
                "rig.nodes.detector:DetectorNode",
                (
                    *cam_nodes,
                    "supervisor",
                    *(("world",) if oracle and synthetic else ()),
                    *(("recorder",) if pipe.recorder.enabled else ()),
                ),
                # the recorder's stats: detection steps back while the recording is behind
                ("frame.", "ctl", "stats.recorder", *(("sim.truth",) if oracle else ())),
                restartable=True,
                stop_stage=5,
            )
        )
    # bridge and display come before the recorder, which listens to them (user marks); they listen to all
    watched = (*(s.name for s in specs), *(("recorder",) if pipe.recorder.enabled else ()), "supervisor")
    if pipe.bridge.enabled:
        specs.append(
            NodeSpec(
                "bridge",
                "rig.nodes.bridge:BridgeNode",
                watched,
                (
                    "frame.",
                    "det.",
                    "point3d.",
                    "sim.truth",
                    "task.",
                    "stats.",
                    "node.",
                    "log.",
                    "ctl",
                    "serial.",
                    "cmd.",
                    "ui.",
                ),
                nice=10,  # a remote consumer's needs come after the pipeline's
                essential=False,
            )
        )
    if pipe.display.enabled:
        specs.append(
            NodeSpec(
                "display",
                "rig.nodes.display:DisplayNode",
                (*watched, *(("bridge",) if pipe.bridge.enabled else ())),
                ("frame.", "det.", "point3d.", "sim.truth", "task.", "stats.", "node.", "ctl"),
                restartable=True,
                nice=10,  # drawing yields the CPU to the pipeline; the display samples, it can wait
                essential=False,
            )
        )
    if pipe.recorder.enabled:
        everyone = tuple(s.name for s in specs) + ("supervisor",)
        specs.append(
            NodeSpec(
                "recorder",
                "rig.nodes.recorder:RecorderNode",
                everyone,
                # frame headers go to its drain thread's own socket (frames leave the rings at
                # pipeline.realtime.priority); the main loop, at normal priority (never niced: niced 5, one
                # full-rig session lost 502 frames), writes the tables; the encoder threads run in the
                # background (recorder.encoder_priority); the detector steps back when it falls behind
                # (detector.recorder_behind_s)
                ("det.", "point3d.", "sim.truth", "task.", "serial.", "cmd.", "ctl", "trigger"),
                stop_stage=STOP_RECORDER,
            )
        )
    rt = cfg.pipeline.realtime
    if rt.priority:
        # "cameras": the live ones; a replay reads a file (as fast as possible, if asked) and may wait
        live = {n for c, n in zip(cams, cam_nodes) if cfg.rig.cameras[c].backend != "replay"}
        names = set(rt.nodes) | (live if "cameras" in rt.nodes else set())
        specs = [replace(s, realtime_priority=rt.priority) if s.name in names else s for s in specs]
    return specs


@dataclass
class NodeProc:
    spec: NodeSpec
    proc: Any
    restarts: int = 0
    ready: bool = False
    exited: bool = False
    last_stats: m.Stats | None = None


@dataclass
class SessionResult:
    path: Path
    status: str
    reason: str
    summary: SessionSummary | None = None


class Supervisor:
    def __init__(
        self,
        loaded: LoadedConfig,
        progress: bool = True,
        session_name: str | None = None,
        progress_stream: TextIO | None = None,
        console_level: int = logging.WARNING,
    ):
        self.loaded = loaded
        self.cfg = loaded.config
        self.progress = progress
        self.console_level = console_level
        self.out = progress_stream or sys.stdout
        self.calib = resolve_calibration(loaded)  # before anything starts: a bad calibration stops here
        check_recorder_memory(loaded)
        self.session_name = session_name
        self.nodes: dict[str, NodeProc] = {}
        self.trials_done = 0
        self.outcomes: dict[str, int] = {}
        self.stop_reason = ""
        self.status = "complete"
        self.restarts: list[str] = []
        self.failures: dict[str, str] = {}
        self.mp = mp.get_context("spawn")
        # numpy's OpenBLAS in the nodes: one thread. Nodes multiply small matrices only, and an idle
        # OpenBLAS worker spins for a while after each threaded call: at real-time priority
        # (pipeline.realtime) that would hold a CPU from the recorder. A value the user set is kept.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    # ------------------------------------------------------------------------------ set-up
    def _start_node(self, spec: NodeSpec) -> NodeProc:
        failure_path(self.rt.runtime_dir, spec.name).unlink(missing_ok=True)  # an earlier instance's words
        proc = self.mp.Process(
            target=run_node, args=(spec, self.rt), name=f"deepbehavior-{spec.name}", daemon=False
        )
        # the child starts with these ignored (an ignored signal survives exec, a handler does not), so
        # a Ctrl-C or closed terminal while it imports reaches the supervisor only; run_node keeps them
        saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in GROUP_SIGNALS}
        try:
            proc.start()
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
        return NodeProc(spec, proc)

    def run(self) -> SessionResult:
        remove_stale_runtime()
        self.session_id = uuid.uuid4().hex[:8]  # names the frame rings and runtime sockets
        self.session_dir = create_session(self.loaded, self.calib, self.session_name, self.session_id)
        self.runtime_dir = Path(tempfile.mkdtemp(prefix=RUNTIME_PREFIX))
        (self.runtime_dir / OWNER_FILE).write_text(str(os.getpid()))
        file_handler = logging.FileHandler(self.session_dir / "session.log")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        file_handler.setLevel(logging.INFO)
        root = logging.getLogger()
        root.addHandler(file_handler)
        self.stats_file = open(self.session_dir / "stats.jsonl", "w", buffering=1)  # noqa: SIM115
        specs = build_graph(self.loaded)
        endpoints = {s.name: ipc_endpoint(self.runtime_dir, s.name) for s in specs}
        endpoints["supervisor"] = ipc_endpoint(self.runtime_dir, "supervisor")
        self.rt = Runtime(
            session_dir=str(self.session_dir),
            runtime_dir=str(self.runtime_dir),
            session_id=self.session_id,
            supervisor_pid=os.getpid(),
            loaded=self.loaded,
            endpoints=endpoints,
        )
        self.ctx = zmq.Context()
        self.pub = Publisher(self.ctx, endpoints["supervisor"])
        self.sub = Subscriber(
            self.ctx,
            [endpoints[s.name] for s in specs],
            ("log.", "stats.", "node.", "task.event", UI_CONTROL_TOPIC),
        )
        self._interrupts = 0
        old_handlers = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        log.info("session %s: starting %d nodes", self.session_dir, len(specs))
        try:
            for s in specs:
                self.nodes[s.name] = self._start_node(s)
            self._wait_ready()
            time.sleep(0.3)  # let every subscription reach its publisher
            self.t_start = time.monotonic()
            self.pub.publish("ctl", m.Control(command="start", t_host_ns=time.monotonic_ns()))
            self._main_loop()
        except StoppedDuringStartup as exc:
            self.status, self.stop_reason = "stopped", f"{exc} (during start-up)"
            log.warning("%s", self.stop_reason)
        except RigError as exc:
            self.status, self.stop_reason = "failed", str(exc)
            log.error("%s", exc)
        finally:
            self._shutdown()
            summary = self._summary()
            finish_session(self.session_dir, self.status, summary, self.stop_reason)
            log.info("session %s: %s %s", self.session_dir.name, self.status, self.stop_reason)
            root.removeHandler(file_handler)
            file_handler.close()
            with contextlib.suppress(OSError):
                self.stats_file.close()
            self.pub.close()
            self.sub.close()
            self.ctx.term()
            for cam in self.cfg.rig.cameras:
                ring_path(ring_name(self.session_id, cam)).unlink(missing_ok=True)
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            # only now: a Ctrl-C before this point must not cut the final status or the clean-up short
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        return SessionResult(self.session_dir, self.status, self.stop_reason, summary)

    def _on_signal(self, signum: int, frame: Any) -> None:
        """Ctrl-C, SIGTERM, SIGHUP (the terminal closed), SIGQUIT: one orderly stop (producers first, the
        recorder drains and closes every file, status ``stopped``). A second Ctrl-C hurries it: every
        node gets SIGTERM at once, which each still answers by closing its files (the recorder first
        takes every frame already announced)."""
        name = signal.Signals(signum).name
        self._interrupts += 1
        if self._interrupts == 1:
            why = "Ctrl-C" if signum == signal.SIGINT else name
            self.stop_reason = self.stop_reason or f"stopped by the user ({why})"
            if self.status == "complete":
                self.status = "stopped"
            log.warning("%s: stopping", name)
            self._say(
                f"\nstopping ({why}): closing every file"
                + (" (Ctrl-C again to hurry)" if signum == signal.SIGINT else "")
            )
        elif signum == signal.SIGINT and self._interrupts == 2:  # hurry once; more Ctrl-C change nothing
            log.warning("second Ctrl-C: every node told to finish now (SIGTERM)")
            for n in self.nodes.values():
                if n.proc.is_alive():
                    n.proc.terminate()

    def _say(self, text: str, stream: Any = None) -> None:
        """A line on the console; a closed terminal (SIGHUP, EIO) or pipe only costs the console."""
        try:
            print(text, file=stream or sys.stderr, flush=True)
        except (OSError, ValueError, RuntimeError):  # RuntimeError: a signal landed inside a print
            pass

    def _failure(self, node: str) -> str:
        """Why ``node`` failed: its last words on the bus, else those it left on disk."""
        return self.failures.get(node) or read_failure(self.rt.runtime_dir, node) or "see session.log"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(n.ready for n in self.nodes.values()):
            self._pump(100)
            for n in self.nodes.values():
                if not n.ready and not n.proc.is_alive():
                    end = time.monotonic() + 1.0  # its last words (why it failed) may still be on the way
                    while n.spec.name not in self.failures and time.monotonic() < end:
                        self._pump(50)
                    why = self._failure(n.spec.name)
                    raise RigError(
                        f"node {n.spec.name} exited during start-up (exit code {n.proc.exitcode}): {why}"
                    )
            if self._interrupts:
                raise StoppedDuringStartup(self.stop_reason or "stopped during start-up")
            if time.monotonic() > deadline:
                late = [n.spec.name for n in self.nodes.values() if not n.ready]
                raise RigError(f"nodes not ready after {READY_TIMEOUT_S:.0f} s: {', '.join(late)}")

    # ------------------------------------------------------------------------------ running
    def _pump(self, timeout_ms: float) -> None:
        for topic, msg in self.sub.recv_all(timeout_ms, limit=2000):
            if isinstance(msg, m.LogRecord):
                # nodes write the session log themselves; here they only reach the console
                if msg.level >= self.console_level:
                    self._say(f"{logging.getLevelName(msg.level)} [{msg.node}] {msg.message}")
            elif isinstance(msg, m.Stats):
                if msg.node in self.nodes:  # stats also say "alive and set up" (a lost 'ready' is harmless)
                    self.nodes[msg.node].last_stats = msg
                    self.nodes[msg.node].ready = True
                self._write_stats(msg)
            elif isinstance(msg, m.NodeStatus):
                n = self.nodes.get(msg.node)
                if n is not None and msg.status == "ready":
                    n.ready = True
                elif n is not None and msg.status == "failed":
                    log.error("node %s failed: %s", msg.node, msg.detail)
                    self.failures[msg.node] = msg.detail
            elif isinstance(msg, m.Control) and topic == UI_CONTROL_TOPIC:
                self._user_request(msg)
            elif isinstance(msg, m.TaskEvent):
                if msg.kind == "trial_end":
                    self.trials_done += 1
                    self.outcomes[msg.outcome] = self.outcomes.get(msg.outcome, 0) + 1
                elif msg.kind == "session_end" and not self.stop_reason:
                    self.stop_reason = "task finished"

    def _write_stats(self, msg: m.Stats) -> None:
        if self.stats_file.closed:
            return
        try:
            self.stats_file.write(json.dumps(m.to_builtins(msg)) + "\n")
        except OSError as exc:  # disk full: stop the session, keep what is written
            with contextlib.suppress(OSError):
                self.stats_file.close()
            err = storage_error(exc, self.session_dir / "stats.jsonl")
            log.error("%s", err)
            if not self.stop_reason:
                self.status, self.stop_reason = "failed", str(err)

    def _user_request(self, msg: m.Control) -> None:
        """A user's request from a display (topic ``ui.control``): stop the session, pause/resume the task."""
        now = time.monotonic_ns()
        self.pub.publish(
            "task.event",
            m.TaskEvent(
                kind=f"user_{msg.command}", trial=self.trials_done, t_host_ns=now, detail={"from": msg.detail}
            ),
        )
        if msg.command == "stop" and not self.stop_reason:
            log.warning("stop requested from %s", msg.detail or "the display")
            self.stop_reason = f"stopped by the user from {msg.detail or 'the display'}"
            if self.status == "complete":
                self.status = "stopped"
        elif msg.command in ("pause", "resume"):
            self.pub.publish(
                "ctl", m.Control(command=msg.command, t_host_ns=now, detail=msg.detail or "display")
            )

    def _main_loop(self) -> None:
        last_print = time.monotonic()
        max_s = self.cfg.experiment.max_duration_s
        while True:
            self._pump(50)
            if self.stop_reason:
                return
            if time.monotonic() - self.t_start > max_s:
                self.stop_reason = f"max_duration_s={max_s:g} reached"
                return
            for name, n in list(self.nodes.items()):
                if n.proc.is_alive() or n.exited:
                    continue
                code = n.proc.exitcode
                if code == 0 and name.startswith("cam-"):
                    # a camera whose source ended (a replayed file) closes normally
                    n.exited = True
                    if all(p.exited for k, p in self.nodes.items() if k.startswith("cam-")):
                        self.stop_reason = "every camera's stream ended"
                        return
                    continue
                if n.spec.restartable and n.restarts < MAX_RESTARTS:
                    n.restarts += 1
                    msg = f"node {name} died (exit code {code}); restarting ({n.restarts}/{MAX_RESTARTS})"
                    log.warning(msg)
                    self.restarts.append(msg)
                    self.pub.publish(
                        "task.event",
                        m.TaskEvent(
                            kind="node_restart",
                            trial=self.trials_done,
                            t_host_ns=time.monotonic_ns(),
                            detail={"node": name, "exit_code": code},
                        ),
                    )
                    new = self._start_node(n.spec)
                    new.restarts = n.restarts
                    self.nodes[name] = new
                elif not n.spec.essential:
                    n.exited = True
                    msg = f"node {name} died (exit code {code}); the session goes on without it"
                    log.warning(msg)
                    self.restarts.append(msg)
                else:
                    self._pump(200)  # collect the node's last words
                    self.status = "failed"
                    why = self._failure(name)
                    self.stop_reason = f"node {name} died (exit code {code}): {why}"
                    log.error(self.stop_reason)
                    return
            if self.progress and time.monotonic() - last_print >= 1.0:
                last_print = time.monotonic()
                self._say(self._progress_line(), self.out)

    def _progress_line(self) -> str:
        el = time.monotonic() - self.t_start
        n_trials = self.cfg.experiment.n_trials
        parts = [f"[{el:6.1f} s] trials {self.trials_done}/{n_trials if n_trials else '-'}"]
        fps = []
        drops = 0
        for name, n in self.nodes.items():
            s = n.last_stats
            if s is None:
                continue
            drops += s.drops
            if name.startswith("cam-"):
                fps.append(f"{name[4:]} {s.fps:5.1f}")
        parts.append("fps " + " ".join(fps))
        parts.append(f"drops {drops}")
        det = self.nodes.get("detector")  # it triangulates too: its latency is frame -> 3-D
        if det is not None and det.last_stats is not None:
            parts.append(
                f"frame->3D p50 {det.last_stats.latency_p50_ms:.1f} ms "
                f"p99 {det.last_stats.latency_p99_ms:.1f} ms"
            )
        return " | ".join(parts)

    # ------------------------------------------------------------------------------ stopping
    def _wait_exit(self, names: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(
            self.nodes[n].proc.is_alive() for n in names if n in self.nodes
        ):
            self._pump(50)
        for n in names:
            p = self.nodes.get(n)
            if p is not None and p.proc.is_alive():
                log.warning("node %s did not stop within %.0f s: terminating it", n, timeout_s)
                p.proc.terminate()
                p.proc.join(3)
                if p.proc.is_alive():
                    p.proc.kill()
                    p.proc.join(2)

    def _wait_recorder(self) -> None:
        """Wait for the recorder to write everything it holds: as long as it makes progress (frames
        written, its queue shrinking: its 1 Hz stats), however long that takes on a busy machine; only a
        recorder that makes no progress for RECORDER_STALL_S is terminated (it still closes its files)."""
        n = self.nodes.get("recorder")
        if n is None:
            return

        def progress() -> tuple[object, ...]:
            st = n.last_stats
            if st is None:
                return ()
            return (st.processed, st.queue_depth, *sorted(st.extra.items()))

        last, last_change = progress(), time.monotonic()
        while n.proc.is_alive() and time.monotonic() - last_change < RECORDER_STALL_S:
            self._pump(100)
            now = progress()
            if now != last:
                last, last_change = now, time.monotonic()
        if n.proc.is_alive():
            log.warning(
                "recorder made no progress for %.0f s while stopping: terminating it", RECORDER_STALL_S
            )
            n.proc.terminate()  # it still closes its files, unless it is stuck
            n.proc.join(5)
            if n.proc.is_alive():
                n.proc.kill()
                n.proc.join(2)

    def _shutdown(self) -> None:
        if not self.nodes:
            return
        now = time.monotonic_ns
        stages: dict[int, list[str]] = {}
        for n, proc in self.nodes.items():
            stages.setdefault(proc.spec.stop_stage, []).append(n)
        for stage in sorted(stages):
            names = stages[stage]
            for n in names:
                self.pub.publish("ctl", m.Control(command="stop", t_host_ns=now(), detail=n))
            if stage == STOP_RECORDER:
                self._wait_recorder()
            else:
                self._wait_exit(names, 10.0 if stage == STOP_LAST else 15.0)
        self._pump(100)
        for proc in self.nodes.values():
            proc.proc.join(1)
            code = proc.proc.exitcode
            if proc.spec.name == "recorder" and code not in (0, None) and self.status != "failed":
                self.status = "failed"
                self.stop_reason = f"recorder exited with code {code}; see session.log"

    # ------------------------------------------------------------------------------ summary
    def _summary(self) -> SessionSummary:
        rate = success_rate(self.outcomes)  # None while a trial is unclassified (no 3-D: `record`)
        base = SessionSummary(
            trials=self.trials_done,
            outcomes=self.outcomes,
            restarts=self.restarts,
            duration_s=round(time.monotonic() - getattr(self, "t_start", time.monotonic()), 2),
            success_rate=None if rate is None else round(rate, 3),
        )
        try:
            s = load_session(self.session_dir)
        except RigError as exc:
            return msgspec.structs.replace(base, read_back_error=str(exc))
        frames = {}
        for cam, t in s.frames.items():
            n = len(t.get("seq", []))
            dropped = int(np.sum(t["dropped"])) if n else 0
            frames[cam] = CameraFrames(frames=n, recorded=n - dropped, dropped=dropped)
        points = None
        p = s.points3d
        if p and len(p.get("trigger_index", [])):
            lat = (p["t_out_ns"] - p["t_frame_ns"]) / 1e6
            err = error_vs_truth_mm(p, s.truth)["raw"]
            points = PointsSummary(
                n=len(lat),
                valid=int(np.sum(p["valid"])),
                latency_ms_p50=round(float(np.percentile(lat, 50)), 3),
                latency_ms_p99=round(float(np.percentile(lat, 99)), 3),
                # a simulated rig knows where the paw really was
                error_vs_truth_mm=ErrorVsTruth(
                    median=round(float(np.median(err)), 3), p95=round(float(np.percentile(err, 95)), 3)
                )
                if len(err)
                else None,
            )
        cl = closed_loop_latencies_ms(s)
        pulses = None
        if len(cl):
            pulses = PulseSummary(
                pulses=len(cl),
                trigger_to_ttl_ms_p50=round(float(np.percentile(cl, 50)), 3),
                trigger_to_ttl_ms_p99=round(float(np.percentile(cl, 99)), 3),
            )
        det = self.nodes.get("detector")
        extra = det.last_stats.extra if det is not None and det.last_stats is not None else {}
        return msgspec.structs.replace(
            base,
            frames=frames,
            points3d=points,
            closed_loop=pulses,
            # closed_loop.csv, and in simulation the truth's verdict
            closed_loop_report=closed_loop_summary(s) or None,
            detector_skipped_late=int(extra["skipped_late"]) if extra.get("skipped_late") else None,
            detector_shed_for_recording=(
                int(extra["shed_for_recording"]) if extra.get("shed_for_recording") else None
            ),
            # every node's last 1 Hz stats: counters a lab may want after the fact (detector's incomplete
            # sets and late frames, each encoder's returns to normal priority, ...)
            nodes={
                name: {
                    "processed": st.processed,
                    "drops": st.drops,
                    **{k: round(v, 3) for k, v in st.extra.items() if math.isfinite(v)},
                }
                for name, n in self.nodes.items()
                if (st := n.last_stats) is not None
            },
        )
