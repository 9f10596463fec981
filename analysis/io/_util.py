"""Helpers shared by the importers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analysis.errors import ImportFormatError
from analysis.textfile import read_text


def load_json(path: Path) -> Any:
    """Parse a JSON file; errors name the file, line and column."""
    text = read_text(path, "JSON file", ImportFormatError)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
