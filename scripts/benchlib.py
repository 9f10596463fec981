"""Shared helpers for scripts/bench_*.py: machine info, percentiles, and BENCHMARKS.md blocks."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "BENCHMARKS.md"


def machine(load_before: float | None = None) -> str:
    """One line: CPU, cores, memory, OS, Python, git revision, time, and the 1-min load average (pass
    ``load_before``, read before the benchmark started its own processes, else it is read now)."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = float("nan")
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if load_before is None:
        load = f", load average {os.getloadavg()[0]:.1f} at start"
    else:
        load = f", load average {load_before:.1f} before the run (1-min; includes the previous minute)"
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, {platform.system()} {platform.release()}, "
        f"Python {sys.version.split()[0]}, git {rev or 'unknown'}, "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}{load}"
    )


def pct(values, qs=(50, 99)) -> list[float]:
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    return [float(np.percentile(a, q)) if a.size else float("nan") for q in qs]


def write_block(name: str, text: str) -> None:
    """Replace (or append) the ``<!-- bench:NAME -->`` block of BENCHMARKS.md."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    doc = (
        BENCHMARKS.read_text()
        if BENCHMARKS.exists()
        else "# Benchmarks\n\nMeasured numbers only: each block names the machine, the command and the git "
        "revision.\n"
    )
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in doc and end in doc:
        doc = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(doc)
