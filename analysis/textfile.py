"""Reading a text file a user gave: every way it can fail becomes one error naming the file (and, for
bad encoding, the byte and line at fault).

A leaf module (the standard library; PyYAML once a YAML file is read), shared by ``rig``, ``detection``
and ``analysis``: each caller passes its own error class (``ConfigError``, ``InputError``,
``DatasetError``, ``AnalysisError``...).
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisError


def decode_problem(data: bytes, exc: UnicodeDecodeError, offset: int = 0) -> str:
    """``byte N (line L): 0xXX is not UTF-8 text`` for ``exc`` raised decoding ``data[offset:]``."""
    start = offset + exc.start
    line = data.count(b"\n", 0, start) + 1
    return f"byte {start} (line {line}): 0x{data[start]:02x} is not UTF-8 text"


def decode_utf8(
    data: bytes, path: str | Path, what: str = "file", error: type[Exception] = AnalysisError
) -> str:
    """``data`` (a file's bytes) as text; a UTF-8 byte-order mark is dropped. ``error`` names ``path``
    and the first byte that is not UTF-8."""
    offset = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {decode_problem(data, exc, offset)}; save the {what} as UTF-8") from None


def read_text(path: str | Path, what: str = "file", error: type[Exception] = AnalysisError) -> str:
    """The whole text of ``path`` (UTF-8). Raises ``error`` with one line naming the file: not found,
    a folder, unreadable, or the byte that is not UTF-8. ``what`` names the file's role ("config file")."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise error(f"{p}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{p}: is a folder, expected a {what}") from None
    except OSError as exc:
        raise error(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    return decode_utf8(data, p, what, error)


def yaml_problem(exc: Exception) -> str:
    """One line for a PyYAML error, ``line L, column C: not valid YAML: <problem>`` (its own text spans
    several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {problem}"
    reason = getattr(exc, "reason", None)  # a ReaderError: a character YAML does not allow
    if reason is not None:
        return f"character {getattr(exc, 'position', '?')}: not valid YAML: {reason}"
    return f"not valid YAML: {problem}"


def read_yaml(path: str | Path, what: str = "file", error: type[Exception] = AnalysisError) -> Any:
    """``path`` parsed as YAML (``None`` for an empty file); ``error`` names the file and the line."""
    import yaml

    text = read_text(path, what, error)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: {yaml_problem(exc)}") from None
