"""The dependency direction: rig -> detection -> analysis. analysis/ is pure computation and file
formats (no rig, no detection, no GUI, no model runner); detection/ never imports rig/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(package: str) -> dict[str, set[str]]:
    """Top-level module names each file of ``package`` imports (module path -> names)."""
    out: dict[str, set[str]] = {}
    for f in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
        out[str(f.relative_to(ROOT))] = names
    return out


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("analysis", ("rig", "detection", "pyqtgraph", "PySide6", "PyQt5", "mediapipe", "onnxruntime")),
        ("detection", ("rig",)),
    ],
)
def test_package_imports_nothing_above_it(package: str, forbidden: tuple[str, ...]) -> None:
    bad = {
        f: sorted(n for n in names if n.split(".")[0] in forbidden)
        for f, names in _imports(package).items()
        if any(n.split(".")[0] in forbidden for n in names)
    }
    assert not bad, f"{package}/ imports what it must not: {bad}"
