"""What every node (one process of the session graph) shares: bus sockets, logging, stats, lifecycle.

A node is started by the supervisor with :func:`run_node` in a fresh (spawned) process. It binds its
PUB socket, connects its SUB socket to the nodes it listens to, publishes ``node.<name>`` "ready",
then loops until it is done. Logs go over the bus as ``log.<name>`` (the supervisor writes them to the
console and the session log); stats go out once a second as ``stats.<name>``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zmq

from rig import messages as m
from rig.bus import Publisher, Subscriber
from rig.config import Config, LoadedConfig
from rig.errors import UserError

STOP_RECORDER = 6  # the stage the supervisor waits on for as long as it writes (Supervisor._wait_recorder)
STOP_LAST = 7


@dataclass(frozen=True)
class NodeSpec:
    """How to start one node: ``target`` is ``module:Class``; ``listens`` names the nodes it subscribes to."""

    name: str
    target: str
    listens: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    restartable: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    nice: int = 0  # > 0 yields the CPU to latency-critical nodes (the recorder buffers, so it can wait)
    realtime_priority: int = 0  # > 0: SCHED_FIFO once set up (pipeline.realtime)
    essential: bool = True  # False: if it dies for good the session goes on without it (display, bridge)
    # the supervisor stops nodes stage by stage, lowest first, each stage once the previous one has exited:
    # producers (task, board, world, cameras), then the detector, then the recorder (waited for while it
    # makes progress), then the watchers (bridge, display); see rig.supervisor.build_graph
    stop_stage: int = STOP_LAST


def failure_path(runtime_dir: str | Path, node: str) -> Path:
    """Where a node leaves the one-line reason it failed (read by the supervisor)."""
    return Path(runtime_dir) / f"{node}.failed"


def read_failure(runtime_dir: str | Path, node: str) -> str | None:
    """The reason ``node`` left on disk when it failed, or None."""
    try:
        return failure_path(runtime_dir, node).read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class Runtime:
    """Session-wide facts every node gets (passed once at process start, not over the bus)."""

    session_dir: str
    runtime_dir: str
    session_id: str
    supervisor_pid: int
    loaded: LoadedConfig  # the resolved config (config.yaml): never re-read from the user's file
    endpoints: dict[str, str]


class BusLogHandler(logging.Handler):
    def __init__(self, node: Node):
        super().__init__()
        self.node = node

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record) if record.exc_info else record.getMessage()
            self.node.publish(
                f"log.{self.node.name}",
                m.LogRecord(
                    node=self.node.name,
                    level=record.levelno,
                    logger=record.name,
                    message=msg,
                    t_wall=record.created,
                ),
            )
        except Exception:
            self.handleError(record)


class LatencyWindow:
    """Latencies (ms) over the last N samples, for p50/p99 in stats."""

    def __init__(self, n: int = 2000):
        self.values: deque[float] = deque(maxlen=n)

    def add(self, ms: float) -> None:
        self.values.append(ms)

    def percentiles(self) -> tuple[float, float]:
        if not self.values:
            return float("nan"), float("nan")
        a = np.fromiter(self.values, float)
        return float(np.percentile(a, 50)), float(np.percentile(a, 99))


class Node:
    """Base class. Subclasses implement :meth:`setup`, :meth:`step` and optionally :meth:`teardown`."""

    def __init__(self, spec: NodeSpec, rt: Runtime):
        self.spec = spec
        self.name = spec.name
        self.rt = rt
        self.params = spec.params
        self.loaded: LoadedConfig = rt.loaded  # a restarted node runs what the session started with
        self.cfg: Config = self.loaded.config
        self.log = logging.getLogger(f"rig.node.{self.name}")
        self.ctx = zmq.Context()
        self._pub_lock = threading.Lock()
        self.pub = Publisher(self.ctx, rt.endpoints[self.name])
        self.sub: Subscriber | None = None
        if spec.topics:
            eps = [rt.endpoints[n] for n in spec.listens if n in rt.endpoints]
            self.sub = Subscriber(self.ctx, eps, spec.topics)
        self.done = False
        self.stop_requested = False
        self.processed = 0
        self.drops = 0
        self.latency = LatencyWindow()
        self._stats_t = time.monotonic()
        self._stats_n = 0
        self.session_dir = Path(rt.session_dir)

    # -- bus ---------------------------------------------------------------------------------
    def publish(self, topic: str, msg: m.Msg) -> None:
        with self._pub_lock:
            self.pub.publish(topic, msg)

    def status(self, status: Literal["ready", "eos", "exiting", "failed"], detail: str = "") -> None:
        msg = m.NodeStatus(node=self.name, status=status, pid=os.getpid(), detail=detail)
        self.publish(f"node.{self.name}", msg)
        if status == "failed":
            # also on disk: a node that fails at once may be gone before the supervisor's subscription
            # to it is connected (a PUB socket drops what nobody receives yet)
            with contextlib.suppress(OSError):
                failure_path(self.rt.runtime_dir, self.name).write_text(detail)

    # -- stats -------------------------------------------------------------------------------
    def queue_depth(self) -> int:
        return 0

    def extra_stats(self) -> dict[str, float]:
        return {}

    def maybe_publish_stats(self, force: bool = False) -> None:
        now = time.monotonic()
        dt = now - self._stats_t
        if dt < self.cfg.pipeline.stats_period_s and not force:
            return
        p50, p99 = self.latency.percentiles()
        fps = (self.processed - self._stats_n) / dt if dt > 0 else 0.0
        self.publish(
            f"stats.{self.name}",
            m.Stats(
                node=self.name,
                t_host_ns=time.monotonic_ns(),
                fps=fps,
                processed=self.processed,
                drops=self.drops,
                queue_depth=self.queue_depth(),
                latency_p50_ms=p50,
                latency_p99_ms=p99,
                extra=self.extra_stats(),
            ),
        )
        self._stats_t = now
        self._stats_n = self.processed

    # -- lifecycle ---------------------------------------------------------------------------
    def setup(self) -> None:
        """Open devices and files. Called before 'ready' is announced."""

    def step(self) -> None:
        """One iteration of the main loop; set ``self.done`` when finished. Must not block long."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Close devices and files; leave hardware safe. Always called."""

    def on_terminate(self) -> bool:
        """SIGTERM arrived (the supervisor died, or a service manager stops every process). Default: end
        the loop now (teardown still runs). A node that must finish its work first (the recorder) starts
        that here and returns True: its loop goes on until it sets ``done``, and it exits 0."""
        return False

    def on_control(self, msg: m.Control) -> None:
        if msg.command == "stop" and msg.detail in ("", self.name):
            self.stop_requested = True

    def _go_realtime(self, priority: int) -> None:
        problem = go_realtime(priority)
        if problem:
            self.log.warning(
                "node %s: cannot use real-time priority (SCHED_FIFO %d): %s; running at normal priority "
                "(README: Real-time priority)",
                self.name, priority, problem,
            )  # fmt: skip
        else:
            self.log.info("node %s: real-time priority SCHED_FIFO %d", self.name, priority)

    def run(self) -> int:
        try:
            self.log.info("node %s starting (pid %d)", self.name, os.getpid())
            self.setup()
            # everything allocated by now lives for the whole session: keep it out of GC scans so a
            # full collection in the frame loop costs microseconds, not milliseconds
            gc.collect()
            gc.freeze()
            if self.spec.realtime_priority:
                self._go_realtime(self.spec.realtime_priority)
            self.status("ready")
            self._stats_t = time.monotonic() - self.cfg.pipeline.stats_period_s + 0.1  # first stats soon
            graceful = False
            while not self.done:
                if _terminated.is_set() and not graceful:
                    self.log.warning("node %s: SIGTERM: finishing", self.name)
                    graceful = self.on_terminate()
                    if not graceful:
                        break
                self.step()
                self.maybe_publish_stats()
            self.maybe_publish_stats(force=True)
            return 128 + signal.SIGTERM if _terminated.is_set() and not graceful else 0
        except UserError as exc:  # a problem the user can fix: one line, no traceback
            self.log.error("node %s failed: %s", self.name, exc)
            self.status("failed", f"{type(exc).__name__}: {exc}")
            return 1
        except Exception as exc:
            self.log.error("node %s failed: %s\n%s", self.name, exc, traceback.format_exc())
            self.status("failed", f"{type(exc).__name__}: {exc}")
            return 1
        finally:
            # SIGTERM only sets a flag, so teardown (closing files) is never cut short; SIGKILL still
            # ends a hung node
            try:
                self.teardown()
            finally:
                self.status("exiting")
                time.sleep(0.05)  # let the last messages leave
                self.pub.close()
                if self.sub is not None:
                    self.sub.close()
                self.ctx.term()


def go_realtime(priority: int) -> str:
    """Every thread of this process to SCHED_FIFO ``priority`` (ZeroMQ's I/O thread carries each message,
    so the calling thread alone is not enough; threads started later inherit it, and so would a process
    started later: nodes start their helpers, e.g. the simavr harness, in set-up, before this).
    Returns "" or what went wrong (no permission: needs root, CAP_SYS_NICE or an ``rtprio`` limit of at
    least ``priority``)."""
    if not hasattr(os, "SCHED_FIFO"):
        return "not supported on this system"
    try:
        for tid in sorted(int(t) for t in os.listdir("/proc/self/task")):
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


class _Flag:
    """A flag a signal handler may set: no lock. (``threading.Event.set`` takes a lock: a second SIGTERM
    landing while the handler is inside it ran the handler again in the same thread, which then waited
    for ever on the lock it held: a recorder that never finished its files after its supervisor died.)"""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


_terminated = _Flag()


def _term_handler(signum: int, frame: Any) -> None:
    # Only a flag: the node's loop looks at it between steps (steps never block long). Raising here
    # would land anywhere in the main thread, in the middle of closing a file included, and one SIGTERM
    # may come per exiting supervisor thread (PR_SET_PDEATHSIG) or from a service manager's stop: the
    # handler may run again while it runs, so it takes no lock.
    _terminated.set()


def _die_with_parent() -> None:
    """Linux: get SIGTERM if the supervisor dies, so no node outlives it (teardown still runs)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_node(spec: NodeSpec, rt: Runtime) -> None:
    """Process entry point used by the supervisor (spawn start method)."""
    # Ctrl-C, Ctrl-backslash and a closed terminal reach the whole process group: the supervisor handles them
    # (an orderly stop, producers first) and tells each node when to stop
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _term_handler)
    _die_with_parent()
    if os.getppid() != rt.supervisor_pid:  # it died before PR_SET_PDEATHSIG was set: nobody would stop us
        raise SystemExit(1)
    if spec.nice:
        os.nice(spec.nice)
    module_name, cls_name = spec.target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    root = logging.getLogger()
    # every node appends to the session log itself (nothing is lost if the bus is not connected yet)
    file_handler = logging.FileHandler(Path(rt.session_dir) / "session.log", mode="a")
    file_handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)-7s [{spec.name}] %(name)s: %(message)s")
    )
    root.handlers[:] = [file_handler]
    root.setLevel(logging.INFO)
    try:
        node: Node = cls(spec, rt)
    except Exception:
        logging.getLogger(f"rig.node.{spec.name}").exception("node %s could not start", spec.name)
        raise SystemExit(1) from None
    root.addHandler(BusLogHandler(node))  # and to the supervisor's console
    code = node.run()
    # every file is closed: leave now, without the interpreter's shutdown, during which Python restores
    # the default SIGTERM action and a late SIGTERM (a second Ctrl-C) would end a finished node with -15
    logging.shutdown()
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)
