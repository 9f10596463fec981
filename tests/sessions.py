"""Helpers to run real simulated sessions (real processes, sockets, files) from tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from rig.session import Session, load_session

CLI = [sys.executable, "-m", "rig.cli"]


def run_session(
    out: Path, *args: str, timeout: float = 240
) -> tuple[subprocess.CompletedProcess, Session | None]:
    r = subprocess.run(
        [*CLI, "run", "--quiet", "--output", str(out), *args], capture_output=True, text=True, timeout=timeout
    )
    folders = sorted(p for p in out.glob("*") if p.is_dir()) if out.exists() else []
    return r, (load_session(folders[-1]) if folders else None)


def start_session(out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "run", "--quiet", "--output", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_log(out: Path, pattern: str, timeout: float = 60) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in out.glob("*/session.log"):
            hit = re.search(pattern, log.read_text())
            if hit:
                return hit
        time.sleep(0.2)
    raise TimeoutError(f"{pattern!r} not in session.log after {timeout} s")


def wait_for_frames(out: Path, n: int, timeout: float = 120) -> None:
    """Until every camera's frame table in the session under ``out`` has ``n`` rows (settled frames): the
    session's own progress, whatever the machine's load."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tables = list(out.glob("*/*.frames.csv"))
        if tables and all(t.read_bytes().count(b"\n") - 1 >= n for t in tables):
            return
        time.sleep(0.2)
    raise TimeoutError(f"fewer than {n} frames per camera under {out} after {timeout} s")


def ctrl_c(proc: subprocess.Popen) -> None:
    """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group."""
    os.killpg(proc.pid, signal.SIGINT)
