"""The rig's session folder as files (layout: ``rig/SESSION.md``): the reading primitives every reader of
one uses — :func:`rig.session.load_session`, ``session --verify``, the NWB export — so that a folder is
accepted or refused the same way, with the same message, whoever reads it.

No ``rig`` import (analysis does not depend on the rig); the error class is the caller's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analysis.textfile import read_text

SESSION_FORMAT = "deepbehavior-session"


def read_session_meta(folder: Path, error: type[Exception]) -> dict[str, Any]:
    """``session.json`` of a session folder, checked: a folder, the file there, JSON, an object, this
    format, ``cameras`` a list of names. ``error`` names the folder or file at fault."""
    meta_path = folder / "session.json"
    if not folder.is_dir():
        raise error(f"{folder}: not a session folder (no such folder)")
    if not meta_path.exists():
        raise error(f"{folder}: not a session folder (no session.json)")
    try:
        meta = json.loads(read_text(meta_path, "session file", error))
    except json.JSONDecodeError as exc:
        raise error(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise error(f"{meta_path}: expected a JSON object, got a {type(meta).__name__}")
    if meta.get("format") != SESSION_FORMAT:
        raise error(f"{meta_path}: not a {SESSION_FORMAT} file (format {meta.get('format')!r})")
    cameras = meta.get("cameras", [])
    if not isinstance(cameras, list) or not all(isinstance(c, str) and c for c in cameras):
        raise error(f"{meta_path}: cameras: expected a list of camera names, got {cameras!r}")
    return meta


def parse_events(text: str) -> tuple[list[dict[str, Any]], list[tuple[int, str]], int]:
    """The lines of ``events.jsonl``: ``(events, [(line number, problem)], torn line number or 0)``. A
    malformed line is left out and reading goes on; a last line without its newline that does not parse
    is a crash mid-write (torn), not a malformed line."""
    lines = text.split("\n")
    events: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    torn = 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError as exc:
            if n == len(lines):  # the last line has no newline: torn
                torn = n
                continue
            bad.append((n, f"not valid JSON ({exc.msg}, column {exc.colno})"))
            continue
        if isinstance(ev, dict):
            events.append(ev)
        else:
            bad.append((n, f"not a JSON object (a {type(ev).__name__})"))
    return events, bad, torn
