"""Shared test set-up: markers that skip with a reason when their resource is absent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DEEPBEHAVIOR_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _has_cuda() -> tuple[bool, str]:
    try:
        import torch

        if torch.cuda.is_available():
            return True, ""
        return False, "no CUDA device (torch.cuda.is_available() is False)"
    except ImportError:
        return False, "torch is not installed"


def _has_firmware() -> tuple[bool, str]:
    for tool in ("avr-gcc", "simavr"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found: run scripts/setup.sh"
    return True, ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    checks = {
        "gpu": _has_cuda,
        "hardware": lambda: (
            os.environ.get("DEEPBEHAVIOR_HARDWARE") == "1",
            "real rig hardware not declared (set DEEPBEHAVIOR_HARDWARE=1 on a rig)",
        ),
        "firmware": _has_firmware,
    }
    cache: dict[str, tuple[bool, str]] = {}
    for item in items:
        for marker, check in checks.items():
            if marker in item.keywords:
                if marker not in cache:
                    cache[marker] = check()
                ok, why = cache[marker]
                if not ok:
                    item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not found (set DEEPBEHAVIOR_SHARED_DATA)")
    return SHARED_DATA
