"""Provenance of a session: the code's git revision, the package versions, the machine (``versions.json``)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from typing import Any

from rig.config import REPO_ROOT

PACKAGES = (
    "numpy",
    "scipy",
    "pyzmq",
    "msgspec",
    "pydantic",
    "av",
    "opencv-python",
    "pyserial",
    "torch",
    "ultralytics",
    "onnxruntime",
    "pyqtgraph",
)


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, Any]:
    pk: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            pk[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pk[name] = None
    return {
        "deepbehavior": metadata.version("deepbehavior") if _installed() else "source",
        "git_revision": git_revision(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "packages": pk,
    }


def _installed() -> bool:
    try:
        metadata.version("deepbehavior")
        return True
    except metadata.PackageNotFoundError:
        return False
