"""Matplotlib helpers shared by the analyses: a headless pyplot and a save-and-close."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: str | Path, tight: bool = True) -> Path:
    """Write ``fig`` to ``path`` (PNG at 100 dpi), close it, return the path."""
    if tight:
        fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path
