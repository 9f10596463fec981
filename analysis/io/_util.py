"""Helpers shared by the importers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analysis.errors import ImportFormatError


def load_json(path: Path) -> Any:
    """Parse a JSON file; errors name the file, line and column."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ImportFormatError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except OSError as exc:
        raise ImportFormatError(f"{path}: cannot read ({exc.strerror})") from None
